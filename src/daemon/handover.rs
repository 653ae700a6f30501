//! The state file a stopping instance leaves for the next one (the graceful-restart
//! hand-over, DESIGN.md invariant 9): where it lives, how it is taken at start, and how
//! the parser gets a place to write it at stop.
//!
//! Owns only the file. The format and its validation are the core's
//! (`ftp6proxy_core::tracker::handover`); the parser writes it, sandboxed, into a
//! descriptor the monitor opened before anything was forked.
//!
//! Lifecycle: at start the monitor reads `<pidfile>.state` (bounded in size, ignored when
//! older than [`MAX_AGE`]: a hand-over is for a restart, not for a start much later) and
//! removes it at once, so this instance can never hand the same state over twice; then it
//! creates a fresh, empty file there for this instance's stop. A crash leaves that file
//! empty, and the next start then joins every connection mid-stream, which is always
//! safe.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The oldest hand-over taken: a restart takes seconds (rc.d waits for the old instance).
pub const MAX_AGE: Duration = Duration::from_secs(120);

/// The state file that belongs to `pidfile`: same directory and name, `.state`.
pub fn path_for(pidfile: &Path) -> PathBuf {
    pidfile.with_extension("state")
}

/// What was found at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No file: the first start, or the previous instance ran without a pidfile.
    Nothing,
    /// An empty file: the previous instance did not stop gracefully.
    Empty,
    /// A file older than [`MAX_AGE`], or larger than allowed: not taken.
    Stale(String),
    /// The previous instance's hand-over, not yet validated (the core does that).
    State(Vec<u8>),
}

/// Takes the hand-over at `path` (at most `max_bytes`) and removes the file.
///
/// # Errors
/// When the file exists but cannot be read or removed.
pub fn take(path: &Path, max_bytes: u64, now: SystemTime) -> io::Result<Found> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    fs::remove_file(path)?;
    if !meta.is_file() {
        return Ok(Found::Stale("not a regular file".into()));
    }
    if meta.len() == 0 {
        return Ok(Found::Empty);
    }
    if meta.len() > max_bytes {
        return Ok(Found::Stale(format!(
            "{} bytes, more than {max_bytes}",
            meta.len()
        )));
    }
    let age = now
        .duration_since(meta.modified()?)
        .unwrap_or(Duration::ZERO);
    if age > MAX_AGE {
        return Ok(Found::Stale(format!(
            "written {}s ago, more than {}s",
            age.as_secs(),
            MAX_AGE.as_secs()
        )));
    }
    let mut bytes = Vec::new();
    file.by_ref().take(max_bytes).read_to_end(&mut bytes)?;
    Ok(Found::State(bytes))
}

/// Creates this instance's (empty) hand-over file at `path`, mode 0600, for the parser to
/// write at a graceful stop.
///
/// # Errors
/// When the file cannot be created.
pub fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The largest hand-over this instance accepts: generous per connection, bounded by the
/// table size.
pub fn max_bytes(max_connections: usize) -> u64 {
    u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(512)
        .saturating_add(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("f6p-handover-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn state_file_sits_next_to_the_pidfile() {
        assert_eq!(
            path_for(Path::new("/var/run/ftp6proxy.gw1.pid")),
            PathBuf::from("/var/run/ftp6proxy.gw1.state")
        );
    }

    #[test]
    fn a_hand_over_is_taken_once_and_the_file_removed() {
        let d = dir("take");
        let path = d.join("f.state");
        assert_eq!(take(&path, 100, SystemTime::now()).unwrap(), Found::Nothing);
        create(&path).unwrap().write_all(b"F6PSTATE...").unwrap();
        assert_eq!(
            take(&path, 100, SystemTime::now()).unwrap(),
            Found::State(b"F6PSTATE...".to_vec())
        );
        assert!(!path.exists(), "removed: never handed over twice");
        create(&path).unwrap();
        assert_eq!(take(&path, 100, SystemTime::now()).unwrap(), Found::Empty);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn old_or_oversized_hand_overs_are_not_taken() {
        let d = dir("stale");
        let path = d.join("f.state");
        create(&path).unwrap().write_all(&[1; 200]).unwrap();
        assert!(matches!(
            take(&path, 100, SystemTime::now()).unwrap(),
            Found::Stale(_)
        ));
        create(&path).unwrap().write_all(b"x").unwrap();
        let later = SystemTime::now() + MAX_AGE + Duration::from_secs(5);
        assert!(matches!(take(&path, 100, later).unwrap(), Found::Stale(_)));
        let _ = fs::remove_dir_all(d);
    }
}
