//! The deterministic heart of ftp6proxy.
//!
//! This crate performs no I/O whatsoever and takes no timestamps from the OS: bytes and time
//! go in as parameters, firewall actions and log events come out as values. Everything that
//! decides whether a hole is opened lives here, so all of it is tested on any platform.
//!
//! Layers, in the order one packet passes through them:
//! [`wire`] (IP + TCP view) → [`tracker`] (connection table, per-direction line assembly,
//! FTP session state) → [`ftp`] (pure line parsers) → [`policy`] (is this hole allowed?) →
//! [`holes`] (slot table and deadlines). [`engine::Engine`] ties them together and is the only
//! type the daemon calls.
#![forbid(unsafe_code)]

pub mod engine;
pub mod ftp;
pub mod holes;
pub mod limiter;
pub mod policy;
pub mod tracker;
pub mod wire;

use std::net::IpAddr;

pub use engine::{Config, Counters, Engine, Event, Outcome};
pub use holes::{ActionHandle, FwAction, HoleSpec, Mode, Slot};

/// Address family of a packet, a connection or a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        })
    }
}

/// Identifies one control connection in log lines (`#17`) and in the hole table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The origin of the fake clocks in unit tests: the only place the core reads the OS clock.
#[cfg(test)]
mod test_clock {
    use std::time::Instant;

    #[allow(clippy::disallowed_methods)] // one real origin; tests then add Durations to it
    pub fn t0() -> Instant {
        Instant::now()
    }
}
