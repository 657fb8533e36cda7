//! Keeping freed memory in the process, for programs that train on the CPU.
//!
//! A training step on the CPU backend allocates every activation and gradient afresh (hundreds of
//! MB for the micro MAE at batch 256) and frees them all by the end of the step. With glibc's
//! defaults, buffers above a (dynamic) threshold are `mmap`ped and given back on `free`, and the top
//! of the heap is trimmed: so each step faults its memory in again, page by page, with the kernel
//! zeroing every page, and unmaps it again (a TLB shootdown on every core each time): a large share
//! of a step (docs/journal/benchmarks.md, "Training step", has the figure).
//!
//! [`keep_freed_memory`] asks glibc to serve buffers up to 32 MiB (its maximum) from the heap and
//! never to trim it, so that after the first step the same pages are reused. The price is that the
//! process keeps its peak heap size. It is opt-in: the `mae` binary calls it at start-up.

/// On Linux with glibc, makes `malloc` keep freed memory for reuse (see the module comment); a
/// no-op elsewhere. Returns whether the settings were applied.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: `mallopt` only changes malloc's tunables, under malloc's own lock; any value is
        // valid (out-of-range ones are refused with a 0 return).
        unsafe { mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
