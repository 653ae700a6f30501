//! Linux nftables backend: holes are elements of two sets with per-element timeouts, written
//! over raw netlink (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_NFTABLES`), no `nft` process.
//!
//! Owns the elements of exactly two sets in the admin's table: `<prefix>6`
//! (`ipv6_addr . ipv6_addr . inet_service`) and `<prefix>4` (`ipv4_addr . ipv4_addr .
//! inet_service`), both `flags timeout`. One element is one hole, `src . dst . dport`.
//! Must not touch anything else: it never creates, changes or deletes tables, chains, rules
//! or sets (the admin owns them and the rule that matches `@<prefix>6`/`@<prefix>4`); it
//! only reads the sets' definitions in [`Firewall::check`].
//!
//! Every change is one nfnetlink batch (`NFNL_MSG_BATCH_BEGIN` … `NFNL_MSG_BATCH_END`), so
//! the kernel applies it as one transaction, and every message in it carries `NLM_F_ACK`:
//! [`Firewall::apply`] returns only after the kernel confirmed each message, which is the
//! confirmation that the hole is in place before the announcing packet is passed on
//! (DESIGN.md invariant 2).
//!
//! This module is the transaction: the socket, the requests in order, the kernel's answers
//! and what they mean. Every message it sends or reads is built or parsed in
//! [`super::nft_msg`] (pure, golden-tested; constants and layouts from the uapi header
//! `linux/netfilter/nf_tables.h`, element comments in libnftnl's udata TLV, as `nft`
//! writes them).
//! The matching rules, as an admin types them (the `delete` uses a hole up on its data
//! connection's first packet; [`Firewall::used`] then finds it gone and its slot frees
//! at once — the kernel announces such deletions to nobody, so the monitor asks):
//! ```text
//! nft add set inet filter ftp6proxy6 '{ type ipv6_addr . ipv6_addr . inet_service; flags timeout; }'
//! nft add rule inet filter forward ct state new ct status confirmed accept
//! nft add rule inet filter forward ct state new ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6 \
//!     delete @ftp6proxy6 '{ ip6 saddr . ip6 daddr . tcp dport }' accept
//! ```

use std::io;
use std::time::Duration;

use ftp6proxy_core::{Family, FwAction, HoleSpec, Slot};

use super::nft_msg::{
    build_close, build_delete_keys, build_dump_elems, build_flush, build_get_set, build_get_table,
    build_open, element_key, elems_msg, parse_set_msg, set_problem, ttl_ms, Batch, ListedElem,
    NftConfig, SetInfo, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM,
};
use super::nft_ruleset::{self, AnonSets, Chain, Needs, Rule};
use super::{during, Error, ErrorKind, Feed, Firewall, Op, TakeOver};
use crate::netlink::{
    self, messages, nfnl_type, Socket, NFNL_SUBSYS_NFTABLES, NLMSG_DONE, NLMSG_ERROR,
};

/// The answers to one request or batch.
#[derive(Debug, Default)]
struct Answers {
    /// (seq, errno) for every `NLMSG_ERROR`; errno 0 is an acknowledgement.
    errors: Vec<(u32, i32)>,
}

impl Answers {
    fn errno(&self, seq: u32) -> Option<i32> {
        self.errors.iter().find(|(s, _)| *s == seq).map(|&(_, e)| e)
    }

    /// The first real error, if any.
    fn first_error(&self) -> Option<(u32, i32)> {
        self.errors.iter().copied().find(|&(_, e)| e != 0)
    }
}

/// The nftables backend.
#[derive(Debug)]
pub struct Nft {
    cfg: NftConfig,
    sock: Socket,
    buf: Vec<u8>,
}

/// How long to wait for the kernel's answer. The kernel processes nfnetlink requests while
/// `sendto` runs, so the answer is normally queued before we wait; this only bounds a
/// kernel that never answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

impl Nft {
    /// Opens the netlink socket for the table `table_spec` (`"inet filter"`) and the set
    /// prefix `prefix` (`--anchor`, default `ftp6proxy`). Talks to the kernel only in
    /// [`Firewall::check`], [`Firewall::flush_owned`] and [`Firewall::apply`].
    ///
    /// # Errors
    /// [`ErrorKind::Setup`] for a bad table spec or prefix, [`ErrorKind::Io`] if the
    /// socket fails; both [`Op::Configure`].
    pub fn open(table_spec: &str, prefix: &str) -> Result<Nft, Error> {
        let cfg = NftConfig::new(table_spec, prefix)?;
        let sock = Socket::open().map_err(|source| {
            let context = "open NETLINK_NETFILTER socket for nftables".to_owned();
            Error::new(Op::Configure, None, ErrorKind::Io { context, source })
        })?;
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(ANSWER_TIMEOUT.as_secs()).unwrap_or(2),
            tv_usec: 0,
        };
        // SAFETY: `tv` lives across the call and the length matches its type.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast::<libc::c_void>(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>())
                    .expect("timeval is small"),
            )
        };
        if rc < 0 {
            let kind = ErrorKind::Io {
                context: "set nftables socket timeout".to_owned(),
                source: io::Error::last_os_error(),
            };
            return Err(Error::new(Op::Configure, None, kind));
        }
        Ok(Nft {
            cfg,
            sock,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The configuration (table, set names).
    pub fn config(&self) -> &NftConfig {
        &self.cfg
    }

    /// Sends `bytes` and reads answers until every seq in `wait_for` got an `NLMSG_ERROR`
    /// (or `NLMSG_DONE`), or until an error arrives for `abort_seq` (a refused batch),
    /// or until the kernel reports ENOMEM (it then stops answering the rest of a batch).
    /// Data messages answering one of our seqs go to `on_msg`.
    fn talk(
        &mut self,
        bytes: &[u8],
        wait_for: &[u32],
        abort_seq: Option<u32>,
        mut on_msg: impl FnMut(netlink::Msg<'_>) -> Result<(), netlink::ParseError>,
        what: &str,
    ) -> Result<Answers, ErrorKind> {
        let io_err = |source: io::Error| ErrorKind::Io {
            context: what.to_owned(),
            source,
        };
        self.sock.send(bytes).map_err(io_err)?;
        let mut answers = Answers::default();
        let mut open: Vec<u32> = wait_for.to_vec();
        while !open.is_empty() {
            let n = match self.sock.recv(&mut self.buf, false) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io_err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the kernel did not confirm {} of {} messages",
                            open.len(),
                            wait_for.len()
                        ),
                    )))
                }
                Err(e) => return Err(io_err(e)),
            };
            for msg in messages(&self.buf[..n]) {
                let msg = msg.map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                let ours = wait_for.contains(&msg.seq) || Some(msg.seq) == abort_seq;
                if !ours {
                    // A late answer to an earlier request that timed out.
                    continue;
                }
                match msg.ty {
                    NLMSG_ERROR => {
                        let errno = netlink::parse_error(msg.payload)
                            .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                        answers.errors.push((msg.seq, errno));
                        open.retain(|&s| s != msg.seq);
                        if Some(msg.seq) == abort_seq || errno == libc::ENOMEM {
                            open.clear();
                        }
                    }
                    NLMSG_DONE => open.retain(|&s| s != msg.seq),
                    _ => on_msg(msg)
                        .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e)))?,
                }
            }
        }
        Ok(answers)
    }

    /// Sends a batch and returns the first error (seq, errno) if the kernel refused it.
    fn run_batch(&mut self, batch: &Batch, what: &str) -> Result<Option<(u32, i32)>, ErrorKind> {
        let answers = self.talk(
            &batch.bytes,
            &batch.acks,
            Some(batch.begin_seq),
            |_| Ok(()),
            what,
        )?;
        if let Some(err) = answers.first_error() {
            return Ok(Some(err));
        }
        // Without an error, every message must have been acknowledged: that is the
        // confirmation the hole is in place.
        if let Some(&missing) = batch.acks.iter().find(|&&s| answers.errno(s).is_none()) {
            return Err(ErrorKind::Io {
                context: what.to_owned(),
                source: io::Error::other(format!("no acknowledgement for message {missing}")),
            });
        }
        Ok(None)
    }

    /// Reserves `n` consecutive sequence numbers and returns the first.
    fn seqs(&mut self, n: u32) -> u32 {
        let first = self.sock.next_seq();
        for _ in 1..n {
            self.sock.next_seq();
        }
        first
    }

    fn element_text(&self, spec: &HoleSpec) -> String {
        format!(
            "{} {} {} {{ {} . {} . {} }}",
            self.cfg.family,
            self.cfg.table,
            self.cfg.set_name(spec.family()),
            spec.src,
            spec.dst,
            spec.dport
        )
    }

    /// GETTABLE: `Ok(false)` when the table does not exist.
    fn table_exists(&mut self) -> Result<bool, ErrorKind> {
        let seq = self.seqs(1);
        let bytes = build_get_table(&self.cfg, seq);
        let answers = self.talk(&bytes, &[seq], None, |_| Ok(()), "query nftables table")?;
        match answers.errno(seq) {
            Some(0) | None => Ok(true),
            Some(libc::ENOENT) => Ok(false),
            Some(errno) => Err(kernel_error("query nftables table", errno)),
        }
    }

    /// GETSET: `Ok(None)` when the set does not exist.
    fn get_set(&mut self, set: &str) -> Result<Option<SetInfo>, ErrorKind> {
        let seq = self.seqs(1);
        let bytes = build_get_set(&self.cfg, seq, set);
        let mut info = None;
        let newset = nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSET);
        let answers = self.talk(
            &bytes,
            &[seq],
            None,
            |msg| {
                if msg.ty == newset {
                    info = Some(parse_set_msg(msg.payload)?);
                }
                Ok(())
            },
            &format!("query nftables set {set}"),
        )?;
        match answers.errno(seq) {
            Some(0) | None => Ok(info),
            Some(libc::ENOENT) => Ok(None),
            Some(errno) => Err(kernel_error(&format!("query nftables set {set}"), errno)),
        }
    }

    /// Lists the elements of `set` with a GETSETELEM dump.
    fn list_elems(&mut self, set: &str) -> Result<Vec<ListedElem>, ErrorKind> {
        let seq = self.seqs(1);
        let bytes = build_dump_elems(&self.cfg, seq, set);
        let mut listed = Vec::new();
        let newsetelem = nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM);
        let answers = self.talk(
            &bytes,
            &[seq],
            None,
            |msg| {
                if msg.ty == newsetelem {
                    listed.extend(elems_msg(msg.payload)?);
                }
                Ok(())
            },
            &format!("list nftables set {set}"),
        )?;
        match answers.first_error() {
            None => Ok(listed),
            Some((_, errno)) => Err(kernel_error(&format!("list nftables set {set}"), errno)),
        }
    }

    /// Runs one dump request and returns the bodies of its `answer` messages.
    fn dump(
        &mut self,
        request: &[u8],
        seq: u32,
        answer: u8,
        what: &str,
    ) -> Result<Vec<Vec<u8>>, ErrorKind> {
        let ty = nfnl_type(NFNL_SUBSYS_NFTABLES, answer);
        let mut bodies = Vec::new();
        let answers = self.talk(
            request,
            &[seq],
            None,
            |msg| {
                if msg.ty == ty {
                    bodies.push(msg.payload.to_vec());
                }
                Ok(())
            },
            what,
        )?;
        match answers.first_error() {
            None => Ok(bodies),
            Some((_, errno)) => Err(kernel_error(what, errno)),
        }
    }

    /// Every chain and rule of every table, and the ports of the anonymous sets the rules
    /// look ports up in (`tcp dport { 21, 2121 }`).
    fn read_ruleset(&mut self) -> Result<(Vec<Chain>, Vec<Rule>, AnonSets), ErrorKind> {
        let bad = |what: &str, e: netlink::ParseError| ErrorKind::Io {
            context: what.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        };
        let seq = self.seqs(1);
        let request = nft_ruleset::build_dump(nft_ruleset::NFT_MSG_GETCHAIN, seq);
        let chains = self
            .dump(
                &request,
                seq,
                nft_ruleset::NFT_MSG_NEWCHAIN,
                "list nftables chains",
            )?
            .iter()
            .map(|b| nft_ruleset::parse_chain(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("read nftables chains", e))?;
        let seq = self.seqs(1);
        let request = nft_ruleset::build_dump(nft_ruleset::NFT_MSG_GETRULE, seq);
        let rules = self
            .dump(
                &request,
                seq,
                nft_ruleset::NFT_MSG_NEWRULE,
                "list nftables rules",
            )?
            .iter()
            .map(|b| nft_ruleset::parse_rule(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("read nftables rules", e))?;
        let mut anon = AnonSets::new();
        for (family, table, set) in nft_ruleset::anonymous_sets(&rules) {
            let seq = self.seqs(1);
            let request = nft_ruleset::build_dump_set(family, &table, &set, seq);
            let what = format!("list nftables set {set} of table {table}");
            let mut elems = Vec::new();
            for body in self.dump(&request, seq, nft_ruleset::NFT_MSG_NEWSETELEM, &what)? {
                elems.extend(nft_ruleset::parse_set_elems(&body).map_err(|e| bad(&what, e))?);
            }
            anon.insert((family, table, set), nft_ruleset::port_ranges(&elems));
        }
        Ok((chains, rules, anon))
    }

    /// Counts the elements of `set`.
    fn count_elems(&mut self, set: &str) -> Result<usize, ErrorKind> {
        Ok(self.list_elems(set)?.len())
    }
}

/// Turns a kernel errno into an [`ErrorKind`], naming CAP_NET_ADMIN for EPERM.
fn kernel_error(what: &str, errno: i32) -> ErrorKind {
    let source = io::Error::from_raw_os_error(errno);
    let context = if errno == libc::EPERM {
        format!("{what} (needs CAP_NET_ADMIN)")
    } else {
        what.to_owned()
    };
    ErrorKind::Io { context, source }
}

impl Firewall for Nft {
    /// Checks that the table and both sets exist with the key type
    /// `addr . addr . inet_service` (nft's concatenated datatype id and the 4-byte padded
    /// key length) and `flags timeout`. On failure the message lists the exact `nft`
    /// commands that fix it.
    fn check(&mut self) -> Result<(), Error> {
        during(Op::Check, None, || {
            let table = self.cfg.table_spec();
            if !self.table_exists()? {
                return Err(ErrorKind::Setup(format!(
                "nftables table {table} does not exist; create it and our sets with:\n  nft add table {table}\n  {}\n  {}",
                self.cfg.add_set_command(Family::V6),
                self.cfg.add_set_command(Family::V4)
            )));
            }
            let mut problems = Vec::new();
            let mut fixes = Vec::new();
            for family in [Family::V6, Family::V4] {
                let set = self.cfg.set_name(family);
                match self.get_set(&set)? {
                    None => {
                        problems.push(format!("set {set} is missing in table {table}"));
                        fixes.push(self.cfg.add_set_command(family));
                    }
                    Some(info) => {
                        if let Some(problem) = set_problem(&info, family) {
                            problems.push(format!("set {set} in table {table} has {problem}"));
                            fixes.push(format!("nft delete set {table} {set}"));
                            fixes.push(self.cfg.add_set_command(family));
                        }
                    }
                }
            }
            if problems.is_empty() {
                return Ok(());
            }
            Err(ErrorKind::Setup(format!(
                "{}; fix with:\n  {}",
                problems.join("; "),
                fixes.join("\n  ")
            )))
        })
    }

    /// Reads the whole ruleset over netlink (`nft_ruleset`): a rule must feed NFQUEUE `-p`
    /// (copy mode: NFLOG group `-p`) for both directions of every FTP port, and a rule in our table must accept new
    /// connections found in each hole set.
    fn check_ruleset(&mut self, feed: &Feed) -> Result<Vec<String>, Error> {
        during(Op::CheckRuleset, None, || {
            let (chains, rules, anon) = self.read_ruleset()?;
            let needs = Needs {
                queue: feed.queue,
                kind: feed.kind,
                ftp_ports: feed.ftp_ports.clone(),
                table_family: self.cfg.family_id,
                table: self.cfg.table.clone(),
                set6: self.cfg.set_name(Family::V6),
                set4: self.cfg.set_name(Family::V4),
            };
            let report = nft_ruleset::analyse(&needs, &chains, &rules, &anon);
            let mut lines = report.found;
            lines.extend(report.notes.iter().map(|n| format!("note: {n}")));
            if report.missing.is_empty() {
                return Ok(lines);
            }
            Err(ErrorKind::Setup(format!(
                "the ruleset is incomplete:\n  missing: {}{}",
                report.missing.join("\n  missing: "),
                lines.iter().map(|l| format!("\n  {l}")).collect::<String>()
            )))
        })
    }

    /// Counts the elements of both sets, then flushes both in one transaction. The sets are
    /// ours by name, so every element in them is ours. The count is the one just before
    /// the flush; elements timing out in between are counted anyway.
    fn flush_owned(&mut self) -> Result<usize, Error> {
        during(Op::Flush, None, || {
            let mut count = 0;
            for family in [Family::V6, Family::V4] {
                let set = self.cfg.set_name(family);
                count += self.count_elems(&set)?;
            }
            let seq = self.seqs(4);
            let batch = build_flush(&self.cfg, seq);
            let what = format!(
                "flush sets {} and {} in {}",
                self.cfg.set_name(Family::V6),
                self.cfg.set_name(Family::V4),
                self.cfg.table_spec()
            );
            if let Some((_, errno)) = self.run_batch(&batch, &what)? {
                return Err(refused(what, errno));
            }
            Ok(count)
        })
    }

    /// Set elements carry their own timeout: a hole left behind closes by itself.
    fn holes_expire(&self) -> bool {
        true
    }

    /// Adopts what a previous instance left: its live holes expire by their own element
    /// timeouts, at most `max_left` from now (no instance sets a longer one), so they stay
    /// — a transfer announced just before a restart keeps its hole. Anything with more time
    /// left, or no timeout at all, is no live hole of ours and goes.
    fn take_over(&mut self, max_left: Duration) -> Result<TakeOver, Error> {
        during(Op::TakeOver, None, || {
            // One second of slack for the kernel's rounding of what is left.
            let limit = u64::try_from(max_left.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_add(1000);
            let mut taken = TakeOver::default();
            for family in [Family::V6, Family::V4] {
                let set = self.cfg.set_name(family);
                let (keep, stale): (Vec<ListedElem>, Vec<ListedElem>) = self
                    .list_elems(&set)?
                    .into_iter()
                    .partition(|e| e.expires_ms.is_some_and(|ms| ms <= limit));
                taken.kept += keep.len();
                if stale.is_empty() {
                    continue;
                }
                let keys: Vec<Vec<u8>> = stale.into_iter().map(|e| e.key).collect();
                let seq = self.seqs(u32::try_from(keys.len() + 2).unwrap_or(u32::MAX));
                let batch = build_delete_keys(&self.cfg, seq, &set, &keys);
                let what = format!("delete {} stale elements of set {set}", keys.len());
                match self.run_batch(&batch, &what)? {
                    None | Some((_, libc::ENOENT)) => taken.removed += keys.len(),
                    Some((_, errno)) => return Err(refused(what, errno)),
                }
            }
            Ok(taken)
        })
    }

    fn reports_use(&self) -> bool {
        true
    }

    /// An element gone before its deadline was deleted by the rule that let its data
    /// connection through (`... @set delete @set { ... } accept`: the element is consumed on
    /// first match, which the kernel announces to nobody, hence this dump). With a rule
    /// that only looks elements up, every element stays to its timeout and none is
    /// reported.
    fn used(&mut self, holes: &[(Slot, HoleSpec)]) -> Result<Vec<Slot>, Error> {
        during(Op::Used, None, || {
            let mut used = Vec::new();
            for family in [Family::V6, Family::V4] {
                let mine: Vec<&(Slot, HoleSpec)> = holes
                    .iter()
                    .filter(|(_, spec)| spec.family() == family)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let set = self.cfg.set_name(family);
                let present: std::collections::HashSet<Vec<u8>> =
                    self.list_elems(&set)?.into_iter().map(|e| e.key).collect();
                used.extend(
                    mine.into_iter()
                        .filter(|(_, spec)| !present.contains(&element_key(spec)))
                        .map(|(slot, _)| *slot),
                );
            }
            Ok(used)
        })
    }

    fn apply(&mut self, action: &FwAction) -> Result<(), Error> {
        during(Op::of(action), Some(action.slot()), || {
            match *action {
                FwAction::Open { slot, spec, ttl } | FwAction::Refresh { slot, spec, ttl } => {
                    let seq = self.seqs(5);
                    let batch = build_open(&self.cfg, seq, slot, &spec, ttl);
                    let what = format!(
                        "add element {} timeout {}ms",
                        self.element_text(&spec),
                        ttl_ms(ttl)
                    );
                    match self.run_batch(&batch, &what)? {
                        None => Ok(()),
                        Some((_, errno)) => Err(refused(what, errno)),
                    }
                }
                FwAction::Close { spec, .. } => {
                    let seq = self.seqs(3);
                    let batch = build_close(&self.cfg, seq, &spec);
                    let what = format!("delete element {}", self.element_text(&spec));
                    match self.run_batch(&batch, &what)? {
                        // ENOENT: the kernel's timeout removed it already.
                        None | Some((_, libc::ENOENT)) => Ok(()),
                        Some((_, errno)) => Err(refused(what, errno)),
                    }
                }
            }
        })
    }
}

fn refused(what: String, errno: i32) -> ErrorKind {
    let err = io::Error::from_raw_os_error(errno);
    let hint = match errno {
        libc::EPERM => " (needs CAP_NET_ADMIN)",
        libc::ENOENT => " (table or set missing: run with --check)",
        libc::EINVAL => " (set definition does not match: run with --check)",
        _ => "",
    };
    ErrorKind::Refused {
        what,
        detail: format!("{err}{hint}"),
    }
}
