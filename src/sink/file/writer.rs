//! The single writer task behind the file sink.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::page_cache::Dropper;
use super::spare::Spares;
use super::{FileSinkError, SinkError, WriteRequest};

/// The file, open for appending, and its length after the repair.
pub(super) fn open_repaired(path: &Path) -> Result<(File, u64), FileSinkError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| FileSinkError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| FileSinkError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let repair = |source| FileSinkError::Repair {
        path: path.to_path_buf(),
        source,
    };
    let keep = complete_prefix_len(&mut file).map_err(repair)?;
    let len = file.metadata().map_err(repair)?.len();
    if keep < len {
        tracing::warn!(
            path = %path.display(),
            dropped_bytes = len - keep,
            "file sink: cutting off a torn last line left by a crash (it was never acknowledged)"
        );
        file.set_len(keep).map_err(repair)?;
        file.sync_all().map_err(repair)?;
    }
    Ok((file, keep))
}

/// Length of the file up to and including its last newline.
fn complete_prefix_len(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(pos) = chunk[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + pos as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

pub(super) fn spawn(
    file: File,
    path: PathBuf,
    mut rx: mpsc::Receiver<WriteRequest>,
    spares: Arc<Spares>,
    mut pages: Dropper,
) {
    std::thread::Builder::new()
        .name("tally-file-sink".into())
        .spawn(move || {
            let mut file = file;
            // Blocking thread: writes and fsyncs must not stall the async runtime.
            while let Some(first) = rx.blocking_recv() {
                let mut group = vec![first];
                while let Ok(next) = rx.try_recv() {
                    group.push(next);
                }
                let result = write_group(&mut file, &path, &group).map(|synced_len| {
                    pages.after_sync(&file, synced_len);
                });
                for (buf, ack) in group {
                    spares.give(buf);
                    let _ = ack.send(result.clone());
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!("file sink: cannot start writer thread: {e}"));
}

/// Appends the group and fsyncs it; returns the file's length, all on disk.
fn write_group(file: &mut File, path: &Path, group: &[WriteRequest]) -> Result<u64, SinkError> {
    let start = file
        .metadata()
        .map_err(|e| SinkError::io("stat", path, &e))?
        .len();
    let mut len = start;
    for (buf, _) in group {
        len += buf.len() as u64;
        if let Err(e) = file.write_all(buf) {
            // Do not leave a partial batch behind for the next write to follow.
            let _ = file.set_len(start);
            return Err(SinkError::io("write", path, &e));
        }
    }
    file.sync_data()
        .map_err(|e| SinkError::io("fsync", path, &e))?;
    Ok(len)
}
