//! What happens to the sink file's pages in the page cache once they are
//! on disk.
//!
//! Lines are fsynced before they are acknowledged, so the cached copy only
//! helps a reader of the same file. Left cached, every line lands in a
//! freshly allocated page; dropped after the fsync, the next lines reuse
//! pages just freed. On the VMs these benchmarks run on (free pages go back
//! to the host), writing into fresh pages cost ~10× the kernel time of
//! reused ones (BENCHMARKS.md, session 21).

use std::fs::File;

/// `[sinks.file] page_cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PageCache {
    /// Drop the synced pages (default): the file does not fill the page
    /// cache, and its writes reuse the same few pages.
    #[default]
    Drop,
    /// Leave them cached, for a reader that tails the file.
    Keep,
}

const PAGE: u64 = 4096;

/// Drops the whole pages written since the last drop, after each fsync.
pub(super) struct Dropper {
    policy: PageCache,
    /// Pages below this offset have been dropped already.
    dropped_to: u64,
}

impl Dropper {
    pub(super) fn new(policy: PageCache, file_len: u64) -> Self {
        Dropper {
            policy,
            dropped_to: file_len & !(PAGE - 1),
        }
    }

    /// `synced_len`: the file's length, all of it on disk. The page the file
    /// ends in is kept: the next write appends to it and would read it back.
    pub(super) fn after_sync(&mut self, file: &File, synced_len: u64) {
        let end = synced_len & !(PAGE - 1);
        if self.policy == PageCache::Keep || end <= self.dropped_to {
            return;
        }
        // Advice only: a refusal costs speed, never data (the pages are clean).
        if let Err(e) = advise_dont_need(file, self.dropped_to, end - self.dropped_to) {
            tracing::debug!("file sink: posix_fadvise(DONTNEED) refused: {e}");
        }
        // Dropping the same range again after a retry would be harmless.
        self.dropped_to = end;
    }
}

#[cfg(target_os = "linux")]
fn advise_dont_need(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Ok(());
    };
    // SAFETY: the fd is open for as long as `file` is borrowed;
    // POSIX_FADV_DONTNEED only evicts clean cached pages of that file.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    // posix_fadvise returns the error number instead of setting errno.
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_dont_need(_: &File, _: u64, _: u64) -> std::io::Result<()> {
    Ok(())
}
