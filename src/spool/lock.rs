//! One process per spool directory: two appenders in one log would interleave frames.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::SpoolError;

/// An exclusive `flock` on `dir/lock`, released when dropped or when the process dies
/// (so a `kill -9` never leaves a stale lock behind).
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, SpoolError> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| SpoolError::io(&path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
            let locked =
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if !locked {
                return Err(SpoolError::Locked(dir.to_owned()));
            }
        }
        Ok(DirLock { _file: file })
    }
}
