//! The store holds billing IDs and dead-lettered payloads: owner-only.
//! The directory is created 0700 (schema::prepare_dir); sled creates its own
//! files with the process umask, so after opening, the directory is set to
//! 0700 and every file in it to 0600 (the 0700 directory already shuts
//! others out of files sled adds later).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::error::StoreError;

pub(crate) fn restrict(dir: &Path) -> Result<(), StoreError> {
    tighten(dir, 0o700)?;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, op, source }
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("list store directory", &d))? {
            let entry = entry.map_err(io("list store directory", &d))?;
            let kind = entry
                .file_type()
                .map_err(io("stat store file", &entry.path()))?;
            if kind.is_dir() {
                tighten(&entry.path(), 0o700)?;
                pending.push(entry.path());
            } else if kind.is_file() {
                tighten(&entry.path(), 0o600)?;
            }
        }
    }
    Ok(())
}

fn tighten(path: &Path, mode: u32) -> Result<(), StoreError> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, op, source }
    };
    let current = std::fs::metadata(path).map_err(io("stat store file"))?;
    if current.permissions().mode() & 0o777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io("restrict store permissions"))?;
    }
    Ok(())
}
