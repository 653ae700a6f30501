//! The pidfile, with pidfile(3) semantics: created and locked before the daemon detaches,
//! so a second instance on the same file refuses to start and names the running pid; the
//! pid is written once it is final; the file is removed at exit.
//!
//! Owns only that file. The lock is a flock(2) on the open file, which FreeBSD's pidfile(3)
//! also uses, and which the forked children share.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// A locked pidfile.
#[derive(Debug)]
pub struct Pidfile {
    file: File,
    path: PathBuf,
}

impl Pidfile {
    /// Opens and locks `path`.
    ///
    /// # Errors
    /// When another process holds the lock ("already running as pid N"), or the file
    /// cannot be created.
    pub fn lock(path: &Path) -> anyhow::Result<Pidfile> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .with_context(|| format!("open pidfile {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                bail!(
                    "{}: another ftp6proxy is running (pid {})",
                    path.display(),
                    text.trim()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("lock pidfile {}", path.display()))
            }
        }
        Ok(Pidfile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes the current process id.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_pid(&mut self) -> anyhow::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(self.file, "{}", std::process::id())?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Removes the file (at exit).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_instance_is_refused_with_the_running_pid() {
        let dir = std::env::temp_dir().join(format!("f6p-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("test.pid");
        let mut first = Pidfile::lock(&path).unwrap();
        first.write_pid().unwrap();
        let error = Pidfile::lock(&path).unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "another ftp6proxy is running (pid {})",
                std::process::id()
            )),
            "{error}"
        );
        first.remove();
        assert!(!path.exists());
        let again = Pidfile::lock(&path).unwrap();
        again.remove();
        let _ = std::fs::remove_dir(&dir);
    }
}
