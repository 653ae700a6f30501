//! A minimal blocking FTP client for the load generator: one control connection that stays
//! logged in, NOOP round trips, and small downloads in passive (EPSV) or active (EPRT) mode,
//! each on a fresh data connection. No process per transfer, no retries: a failure is
//! returned so the caller can count it and start a fresh session.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long any single step may take before the transfer counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// One logged-in control connection.
pub struct Session {
    ctl: TcpStream,
    buf: Vec<u8>,
    server: IpAddr,
    local: IpAddr,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Session {
    /// Connects, reads the banner, logs in anonymously and switches to binary mode.
    pub fn open(server: SocketAddr) -> io::Result<Session> {
        let ctl = TcpStream::connect_timeout(&server, STEP_TIMEOUT)?;
        ctl.set_nodelay(true)?;
        ctl.set_read_timeout(Some(STEP_TIMEOUT))?;
        let local = ctl.local_addr()?.ip();
        let mut s = Session {
            ctl,
            buf: Vec::with_capacity(512),
            server: server.ip(),
            local,
        };
        s.expect(220)?;
        match s.cmd("USER anonymous")? {
            (230, _) => {}
            (331, _) => s.cmd_expect("PASS bench@", 230).map(drop)?,
            (code, text) => return Err(bad(format!("USER: {code} {text}"))),
        }
        s.cmd_expect("TYPE I", 200)?;
        Ok(s)
    }

    /// The control connection, e.g. to poll it.
    pub fn stream(&self) -> &TcpStream {
        &self.ctl
    }

    /// Reads one whole reply (multi-line replies included): its code and last line.
    pub fn reply(&mut self) -> io::Result<(u16, String)> {
        let mut first: Option<u16> = None;
        loop {
            let line = self.line()?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| bad(format!("not a reply: {line:?}")))?;
            let last = line.as_bytes().get(3) != Some(&b'-');
            match first {
                None if last => return Ok((code, line)),
                None => first = Some(code),
                Some(f) if f == code && last => return Ok((code, line)),
                Some(_) => {}
            }
        }
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            let mut chunk = [0u8; 1024];
            let n = self.ctl.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn expect(&mut self, code: u16) -> io::Result<String> {
        match self.reply()? {
            (c, text) if c == code => Ok(text),
            (_, text) => Err(bad(format!("expected {code}, got {text}"))),
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.ctl.write_all(format!("{line}\r\n").as_bytes())
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, line: &str) -> io::Result<(u16, String)> {
        self.send(line)?;
        self.reply()
    }

    fn cmd_expect(&mut self, line: &str, code: u16) -> io::Result<String> {
        self.send(line)?;
        self.expect(code)
    }

    /// One NOOP round trip.
    pub fn noop(&mut self) -> io::Result<Duration> {
        let t = Instant::now();
        self.cmd_expect("NOOP", 200)?;
        Ok(t.elapsed())
    }

    /// EPSV and its 229 reply, without using the port: the announcing exchange alone.
    pub fn epsv(&mut self) -> io::Result<(Duration, u16)> {
        let t = Instant::now();
        let text = self.cmd_expect("EPSV", 229)?;
        Ok((t.elapsed(), epsv_port(&text)?))
    }

    /// Downloads `path` over a passive data connection; returns its size.
    pub fn get_passive(&mut self, path: &str) -> io::Result<usize> {
        let (_, port) = self.epsv()?;
        let data = TcpStream::connect_timeout(&SocketAddr::new(self.server, port), STEP_TIMEOUT)?;
        self.cmd_retr(path)?;
        self.drain(data)
    }

    /// Downloads `path` over an active data connection (EPRT); returns its size.
    pub fn get_active(&mut self, path: &str) -> io::Result<usize> {
        let listener = TcpListener::bind(SocketAddr::new(self.local, 0))?;
        let port = listener.local_addr()?.port();
        let family = if self.local.is_ipv6() { 2 } else { 1 };
        self.cmd_expect(&format!("EPRT |{family}|{}|{port}|", self.local), 200)?;
        self.send(&format!("RETR {path}"))?;
        listener.set_nonblocking(true)?;
        if !wait_readable(listener.as_raw_fd(), STEP_TIMEOUT) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let (data, _) = listener.accept()?;
        data.set_nonblocking(false)?;
        self.expect_preliminary()?;
        self.drain(data)
    }

    fn cmd_retr(&mut self, path: &str) -> io::Result<()> {
        self.send(&format!("RETR {path}"))?;
        self.expect_preliminary()
    }

    fn expect_preliminary(&mut self) -> io::Result<()> {
        match self.reply()? {
            (125 | 150, _) => Ok(()),
            (_, text) => Err(bad(format!("RETR: {text}"))),
        }
    }

    fn drain(&mut self, mut data: TcpStream) -> io::Result<usize> {
        data.set_read_timeout(Some(STEP_TIMEOUT))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = data.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n;
        }
        let _ = data.shutdown(Shutdown::Both);
        self.expect(226)?;
        Ok(total)
    }

    /// Says goodbye (best effort).
    pub fn quit(mut self) {
        let _ = self.send("QUIT");
    }
}

/// The port of a 229 reply: `229 Entering Extended Passive Mode (|||port|)`.
pub fn epsv_port(text: &str) -> io::Result<u16> {
    let start = text
        .find("(|||")
        .ok_or_else(|| bad(format!("229 without port: {text}")))?;
    text[start + 4..]
        .split('|')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad(format!("229 with a bad port: {text}")))
}

/// Waits until `fd` is readable or `timeout` passes.
pub fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut p, 1, ms) > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsv_reply_gives_its_port() {
        let p = epsv_port("229 Entering Extended Passive Mode (|||50123|)").unwrap();
        assert_eq!(p, 50123);
        assert!(epsv_port("229 nothing").is_err());
    }
}
