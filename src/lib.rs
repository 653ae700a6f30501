//! ftp6proxy: the daemon around [`ftp6proxy_core`].
//!
//! The core decides; this crate does the I/O: it parses the command line ([`cli`]), receives
//! and passes on packets ([`intercept`]), applies firewall actions ([`firewall`]) and runs
//! the event loop, privilege separation and process plumbing ([`daemon`]).

pub mod cli;
mod daemon;
pub use daemon::run as run_daemon;
pub mod firewall;
pub mod intercept;
pub mod jail;
pub mod log_limit;
#[cfg(target_os = "linux")]
pub mod netlink;
pub mod replay;
