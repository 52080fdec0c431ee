//! A cache prefetch hint, for loops whose next inputs are cold: index
//! probes of a table of many MB, a commit's keys allocated a round earlier.

/// Prefetch the cache line at `p` into all cache levels.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn read<T>(p: *const T) {
    // SAFETY: PREFETCHT0 is a hint: it never faults, even for an address
    // outside any allocation, and neither reads into nor writes the program's
    // memory. SSE, which it belongs to, is part of every x86_64 CPU.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(super) fn read<T>(_: *const T) {}
