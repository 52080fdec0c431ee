//! One process per store directory. We take an exclusive lock on
//! `tally.lock` before sled opens anything, so a second tally fails at once
//! with the holder's pid instead of hanging or racing on sled's files.
//! std's `File::try_lock` is `flock(2)` on Linux: the lock belongs to the
//! open file description, so even a second open inside the same process
//! conflicts, and the kernel releases it when the process dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::StoreError;

pub(crate) const LOCK_FILE: &str = "tally.lock";

#[derive(Debug)]
pub(crate) struct DirLock {
    // Held for the lifetime of the store; dropping it releases the lock.
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let lock_path = dir.join(LOCK_FILE);
        let io = |op: &'static str| {
            let p = lock_path.clone();
            move |source| StoreError::Io {
                path: p,
                op,
                source,
            }
        };
        // Owner-only, like everything in the store (see perms.rs).
        let mut file = OpenOptions::new()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io("open lock file"))?;
        // File::try_lock is std since Rust 1.89 (Cargo.toml's rust-version).
        let locked = file.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                    pid: read_pid(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        // Record who holds it, for the next opener's error message.
        file.set_len(0).map_err(io("truncate lock file"))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io("seek lock file"))?;
        writeln!(file, "{}", std::process::id()).map_err(io("write pid to lock file"))?;
        Ok(DirLock { _file: file })
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Pid recorded in a directory's lock file, if any (for sled's own lock error).
pub(crate) fn recorded_pid(dir: &Path) -> Option<u32> {
    let mut f = File::open(dir.join(LOCK_FILE)).ok()?;
    read_pid(&mut f)
}

/// Whether a live process holds the store directory's lock, and its pid.
/// Opens nothing of sled's and takes no lock that outlives the call, so it
/// is safe to run beside the daemon (a container health check does).
pub fn lock_holder(dir: &Path) -> std::io::Result<Option<Option<u32>>> {
    let mut file = match File::open(dir.join(LOCK_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        // Nobody holds it exclusively: no daemon. Dropping `file` unlocks.
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => Ok(Some(read_pid(&mut file))),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
