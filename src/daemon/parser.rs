//! The parser: the process that reads untrusted packets, sandboxed as tightly as the
//! platform allows (Capsicum capability mode on FreeBSD; on Linux no capabilities at all
//! and no_new_privs), holding nothing but one socket to the worker.
//!
//! Owns the [`Engine`] and this process's side of the worker link. The worker does all
//! I/O — it cannot enter Capsicum, because reinjecting a diverted packet is a `sendto(2)`
//! with an address, which capability mode refuses — and sends each packet's bytes here; the
//! parser answers with the firewall actions the packet needs (then `Done`), sends timer
//! actions on its own, and logs the engine's events itself. It opens nothing, signals
//! nobody and touches no firewall.
//!
//! Messages are datagrams on a `SOCK_SEQPACKET` socketpair; an action travels in the same
//! 48-byte form the monitor checks (`privsep::Request`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ftp6proxy_core::engine::{Checksum, Engine};
use ftp6proxy_core::FwAction;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use super::privsep::{Invalid, Request, REQUEST_LEN};
use super::worker::log_event;

/// Largest message: a packet of 64 KiB plus the header (NFQUEUE copies at most 0xffff
/// bytes; divert hands over at most an IP packet).
pub const MAX_MESSAGE: usize = 65_536 + 16;

const TO_PARSER_PACKET: u8 = 1;
const TO_PARSER_ANSWER: u8 = 2;
const TO_PARSER_STATUS: u8 = 3;
const TO_PARSER_SHUTDOWN: u8 = 4;

const TO_WORKER_PACKET_ACTION: u8 = 1;
const TO_WORKER_TIMER_ACTION: u8 = 2;
const TO_WORKER_DONE: u8 = 3;
const TO_WORKER_CLOSED: u8 = 4;

/// Worker → parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToParser<'a> {
    /// Read this packet (`id` is the worker's handle for it).
    Packet {
        /// The worker's handle.
        id: u64,
        /// Whether the TCP checksum can be verified.
        checksum: Checksum,
        /// The packet, from the IP header.
        bytes: &'a [u8],
    },
    /// The firewall's answer to an action the parser asked for.
    Answer {
        /// The action.
        action: FwAction,
        /// Whether it was applied.
        ok: bool,
    },
    /// Log the status line (SIGUSR1/SIGINFO reached the worker).
    Status,
    /// Close every hole and exit.
    Shutdown,
}

/// Parser → worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToWorker {
    /// Apply `action` before passing packet `packet` on (or, with `None`, just apply it:
    /// a timer or shutdown action).
    Action {
        /// The packet that caused it, if any.
        packet: Option<u64>,
        /// What to do.
        action: FwAction,
    },
    /// Everything packet `packet` needs has been sent.
    Done {
        /// The worker's handle.
        packet: u64,
    },
    /// Shutdown: every close has been sent; the parser exits.
    Closed,
}

fn encode_action(action: FwAction) -> [u8; REQUEST_LEN] {
    Request { id: 0, action }.encode()
}

fn decode_action(bytes: &[u8]) -> Result<FwAction, Invalid> {
    Request::decode(bytes).map(|r| r.action)
}

fn id_at(bytes: &[u8]) -> Result<u64, Invalid> {
    let id: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(Invalid::Malformed)?;
    Ok(u64::from_be_bytes(id))
}

impl ToParser<'_> {
    /// Appends the datagram to `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        match *self {
            ToParser::Packet {
                id,
                checksum,
                bytes,
            } => {
                out.push(TO_PARSER_PACKET);
                out.extend_from_slice(&id.to_be_bytes());
                out.push(u8::from(checksum == Checksum::Verify));
                out.extend_from_slice(bytes);
            }
            ToParser::Answer { action, ok } => {
                out.push(TO_PARSER_ANSWER);
                out.push(u8::from(ok));
                out.extend_from_slice(&encode_action(action));
            }
            ToParser::Status => out.push(TO_PARSER_STATUS),
            ToParser::Shutdown => out.push(TO_PARSER_SHUTDOWN),
        }
    }

    /// Parses a datagram.
    ///
    /// # Errors
    /// [`Invalid::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<ToParser<'_>, Invalid> {
        let (&tag, rest) = bytes.split_first().ok_or(Invalid::Malformed)?;
        match (tag, rest) {
            (TO_PARSER_PACKET, rest) if rest.len() >= 9 => Ok(ToParser::Packet {
                id: id_at(rest)?,
                checksum: match rest[8] {
                    1 => Checksum::Verify,
                    0 => Checksum::NotReady,
                    _ => return Err(Invalid::Malformed),
                },
                bytes: &rest[9..],
            }),
            (TO_PARSER_ANSWER, [ok @ (0 | 1), action @ ..]) => Ok(ToParser::Answer {
                action: decode_action(action)?,
                ok: *ok == 1,
            }),
            (TO_PARSER_STATUS, []) => Ok(ToParser::Status),
            (TO_PARSER_SHUTDOWN, []) => Ok(ToParser::Shutdown),
            _ => Err(Invalid::Malformed),
        }
    }
}

impl ToWorker {
    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + REQUEST_LEN);
        match *self {
            ToWorker::Action {
                packet: Some(id),
                action,
            } => {
                out.push(TO_WORKER_PACKET_ACTION);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&encode_action(action));
            }
            ToWorker::Action {
                packet: None,
                action,
            } => {
                out.push(TO_WORKER_TIMER_ACTION);
                out.extend_from_slice(&encode_action(action));
            }
            ToWorker::Done { packet } => {
                out.push(TO_WORKER_DONE);
                out.extend_from_slice(&packet.to_be_bytes());
            }
            ToWorker::Closed => out.push(TO_WORKER_CLOSED),
        }
        out
    }

    /// Parses a datagram.
    ///
    /// # Errors
    /// [`Invalid::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<ToWorker, Invalid> {
        let (&tag, rest) = bytes.split_first().ok_or(Invalid::Malformed)?;
        match tag {
            TO_WORKER_PACKET_ACTION if rest.len() == 8 + REQUEST_LEN => Ok(ToWorker::Action {
                packet: Some(id_at(rest)?),
                action: decode_action(&rest[8..])?,
            }),
            TO_WORKER_TIMER_ACTION => Ok(ToWorker::Action {
                packet: None,
                action: decode_action(rest)?,
            }),
            TO_WORKER_DONE if rest.len() == 8 => Ok(ToWorker::Done {
                packet: id_at(rest)?,
            }),
            TO_WORKER_CLOSED if rest.is_empty() => Ok(ToWorker::Closed),
            _ => Err(Invalid::Malformed),
        }
    }
}

/// Sends one message to the worker, retrying on EINTR. The worker always reads, so a
/// blocking send only waits for it to catch up.
fn tell(worker: &OwnedFd, message: ToWorker) -> nix::Result<()> {
    let bytes = message.encode();
    loop {
        match send(worker.as_raw_fd(), &bytes, MsgFlags::empty()) {
            Err(nix::errno::Errno::EINTR) => {}
            other => return other.map(drop),
        }
    }
}

/// Sends each of `actions` to the worker, for `packet` (or for none: timer, shutdown).
fn tell_actions(worker: &OwnedFd, packet: Option<u64>, actions: Vec<FwAction>) -> nix::Result<()> {
    for action in actions {
        tell(worker, ToWorker::Action { packet, action })?;
    }
    Ok(())
}

/// Runs the parser until the worker says shut down or goes away.
///
/// # Errors
/// When the link to the worker fails (the worker is gone).
pub fn run(
    mut engine: Engine,
    worker: &OwnedFd,
    mut handover: Option<std::fs::File>,
) -> nix::Result<()> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let timeout = engine.poll_timeout().map_or(PollTimeout::NONE, |at| {
            #[allow(clippy::disallowed_methods)]
            let left = at.saturating_duration_since(Instant::now());
            // Round up so the timer is never early; an early wake-up only costs a turn.
            let ms = left.as_millis().saturating_add(1).min(u128::from(u16::MAX));
            PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
        });
        let mut fds = [PollFd::new(worker.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        loop {
            let n = match recv(worker.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e),
            };
            match ToParser::decode(&buf[..n]) {
                Ok(ToParser::Packet {
                    id,
                    checksum,
                    bytes,
                }) => {
                    let outcome = engine.on_packet_with_checksum(now, bytes, checksum);
                    tell_actions(worker, Some(id), outcome.actions)?;
                    tell(worker, ToWorker::Done { packet: id })?;
                }
                Ok(ToParser::Answer { action, ok }) => {
                    if ok {
                        engine.action_done(action.handle());
                    } else {
                        engine.action_failed(action.handle());
                    }
                }
                Ok(ToParser::Status) => log::info!("{}", engine.status()),
                Ok(ToParser::Shutdown) => {
                    // No hole is closed here: the monitor lets each live to its deadline
                    // (see monitor::clean_up), and the next instance adopts them.
                    log::info!("terminating with {} holes open", engine.open_holes());
                    drain_events(&mut engine);
                    if let Some(mut file) = handover.take() {
                        hand_over(&engine, &mut file);
                    }
                    return tell(worker, ToWorker::Closed);
                }
                Err(e) => log::error!("parser: worker sent a {e}"),
            }
        }
        if engine.poll_timeout().is_some_and(|at| at <= now) {
            tell_actions(worker, None, engine.tick(now))?;
        }
        drain_events(&mut engine);
    }
}

/// Writes the connections for the next instance into the hand-over file the monitor opened
/// before the sandbox was entered (a write on an inherited descriptor is all it takes).
fn hand_over(engine: &Engine, file: &mut std::fs::File) {
    use std::io::Write;
    let state = engine.export_state();
    match file.write_all(&state) {
        Ok(()) => log::info!(
            "handed over {} connections to the next instance ({} bytes)",
            engine.connections(),
            state.len()
        ),
        Err(e) => log::error!("writing the hand-over file: {e}"),
    }
}

fn drain_events(engine: &mut Engine) {
    while let Some(event) = engine.poll_event() {
        log_event(&event);
    }
}

/// How long the worker waits for the parser's `Closed` at shutdown.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::test_holes::{v4, v6};
    use ftp6proxy_core::{Config, Slot};
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    #[test]
    fn messages_round_trip() {
        let mut out = Vec::new();
        let open = FwAction::Open {
            slot: Slot(64000),
            spec: v6(),
            ttl: Duration::from_secs(2),
        };
        for message in [
            ToParser::Packet {
                id: 7,
                checksum: Checksum::NotReady,
                bytes: b"\x60abc",
            },
            ToParser::Packet {
                id: u64::MAX,
                checksum: Checksum::Verify,
                bytes: b"",
            },
            ToParser::Answer {
                action: open,
                ok: true,
            },
            ToParser::Status,
            ToParser::Shutdown,
        ] {
            message.encode(&mut out);
            assert_eq!(ToParser::decode(&out), Ok(message));
        }
        for message in [
            ToWorker::Action {
                packet: Some(3),
                action: open,
            },
            ToWorker::Action {
                packet: None,
                action: FwAction::Close {
                    slot: Slot(64001),
                    spec: v4(),
                },
            },
            ToWorker::Done { packet: 9 },
            ToWorker::Closed,
        ] {
            assert_eq!(ToWorker::decode(&message.encode()), Ok(message));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bytes in [
            &[][..],
            &[9],
            &[TO_PARSER_PACKET, 0, 0],
            &[TO_PARSER_PACKET, 0, 0, 0, 0, 0, 0, 0, 1, 7],
            &[TO_PARSER_ANSWER, 2],
            &[TO_PARSER_STATUS, 0],
        ] {
            assert_eq!(
                ToParser::decode(bytes),
                Err(Invalid::Malformed),
                "{bytes:?}"
            );
        }
        for bytes in [&[][..], &[TO_WORKER_DONE, 1], &[TO_WORKER_CLOSED, 0], &[7]] {
            assert_eq!(
                ToWorker::decode(bytes),
                Err(Invalid::Malformed),
                "{bytes:?}"
            );
        }
    }

    /// The parser answers every packet with its actions and then `Done`, in order, and
    /// closes no hole at shutdown (the monitor lets each live to its deadline), and writes
    /// the hand-over for the next instance.
    #[test]
    fn parser_answers_packets_and_closes_holes_on_shutdown() {
        let path = std::env::temp_dir().join(format!("f6p-parser-{}.state", std::process::id()));
        let handover = crate::daemon::handover::create(&path).unwrap();
        let (worker_end, parser_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let parser = std::thread::spawn(move || {
            run(Engine::new(Config::default()), &parser_end, Some(handover))
        });
        let packets = crate::daemon::worker::tests_support::conversation();
        let mut out = Vec::new();
        for (id, bytes) in packets.iter().enumerate() {
            ToParser::Packet {
                id: id as u64,
                checksum: Checksum::Verify,
                bytes,
            }
            .encode(&mut out);
            send(worker_end.as_raw_fd(), &out, MsgFlags::empty()).unwrap();
        }
        ToParser::Shutdown.encode(&mut out);
        send(worker_end.as_raw_fd(), &out, MsgFlags::empty()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = recv(worker_end.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            let message = ToWorker::decode(&buf[..n]).unwrap();
            got.push(message);
            if message == ToWorker::Closed {
                break;
            }
        }
        parser.join().unwrap().unwrap();
        let kinds: Vec<String> = got
            .iter()
            .map(|m| match m {
                ToWorker::Action {
                    packet: Some(p),
                    action: FwAction::Open { .. },
                } => format!("open#{p}"),
                ToWorker::Action {
                    packet: None,
                    action: FwAction::Close { .. },
                } => "close".into(),
                ToWorker::Done { packet } => format!("done#{packet}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["done#0", "done#1", "open#2", "done#2", "done#3", "Closed"],
            "no close at shutdown: the monitor lets the hole live to its deadline"
        );
        // The conversation's connection, handed over: a new engine takes it.
        let state = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut next = Engine::new(Config::default());
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        assert_eq!(next.import_state(now, &state), Ok(1));
    }
}
