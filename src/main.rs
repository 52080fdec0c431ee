// musl's allocator is the static binary's bottleneck (see Cargo.toml).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc keeps freed pages for 10 s by default, longer than a busy
// round's buffers need and enough to push a 10M-ID store past its 256 MiB
// RSS target (277 MB at the end of store-bench.sh prune). Return them
// after 1 s instead.
#[cfg(target_env = "musl")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    tally::cli::main()
}
