//! Splitting a kernel's work over the cores, the way the fast matmul does it: a call spawns its
//! workers with `std::thread::scope` (the calling thread works as one of them), hands each a
//! contiguous range of independent units (rows, heads, blocks of values) together with the parts of
//! the outputs that those units write, and joins them before returning. No pool outlives a call,
//! no lock or atomic is touched while the workers run, and no result depends on how the units were
//! split: every unit is computed by the same code whatever thread runs it, and reductions across
//! units (column sums) go through per-block partial results of a fixed block size that are added
//! up in block order afterwards. So the CPU backend gives the same bits whatever the thread count.
//!
//! # When to spawn
//! On this 2-core VM a spawned thread starts 45 - 90 us after `spawn` when the other core is idle,
//! and the join adds ~20 us (measured for the matmul, see `matmul/mod.rs`); when the other core is
//! busy with another process, the worker may wait milliseconds for a time slice. So a kernel gets
//! one thread per [`NS_PER_THREAD`] of estimated single-core work: under 2 x 150 us it stays on the
//! calling thread. Each kernel estimates its work from a per-unit cost measured on this machine.
//!
//! Matmul's own splitting (equal contiguous ranges of row or column slivers, per-thread packing
//! workspaces) is the same scheme; it could call [`for_each_units`] with its sliver count and a
//! cost of `2 k MR n` flops per sliver, but keeps its own code for its thread-local workspaces.

use std::cell::Cell;
use std::ops::Range;

/// Estimated single-core work worth one more thread, in nanoseconds (see the module comment).
pub const NS_PER_THREAD: f64 = 150_000.0;

thread_local! {
    static FORCED_THREADS: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The most threads a kernel may use: the available parallelism (as `matmul::threads`).
pub fn max_threads() -> usize {
    super::matmul::threads()
}

/// Runs `f` with the fast kernels that it calls from this thread split over exactly `n` threads
/// (at least 1; fewer only where a kernel has fewer units of work), whatever the size of the work
/// and the core count. The tests use it to check that the split changes no result, the benchmarks
/// to compare one thread with two. Matmul keeps its own choice.
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED_THREADS.set(self.0);
        }
    }
    let _restore = Restore(FORCED_THREADS.replace(Some(n.max(1))));
    f()
}

/// How many threads `units` units of `ns_per_unit` estimated nanoseconds each deserve: one per
/// [`NS_PER_THREAD`], at most [`max_threads`], or what [`with_threads`] forces.
pub fn threads_for(units: usize, ns_per_unit: f64) -> usize {
    let n = match FORCED_THREADS.get() {
        Some(n) => n,
        None => ((units as f64 * ns_per_unit / NS_PER_THREAD) as usize).clamp(1, max_threads()),
    };
    n.min(units.max(1))
}

/// Outputs that can be cut between units: a worker gets the part that its units write.
pub trait Split: Send + Sized {
    /// Cuts after the first `units` units (relative to the start of `self`).
    fn split_at_unit(self, units: usize) -> (Self, Self);
}

/// A mutable slice seen as consecutive units of `per_unit` values (the last one may be shorter).
pub struct Units<'a, T> {
    pub data: &'a mut [T],
    pub per_unit: usize,
}

/// `data` as units of `per_unit` values, for [`for_each_units`].
pub fn units<T>(data: &mut [T], per_unit: usize) -> Units<'_, T> {
    Units { data, per_unit }
}

impl<T: Send> Split for Units<'_, T> {
    fn split_at_unit(self, units: usize) -> (Self, Self) {
        let at = (units * self.per_unit).min(self.data.len());
        let (a, b) = self.data.split_at_mut(at);
        (Units { data: a, per_unit: self.per_unit }, Units { data: b, per_unit: self.per_unit })
    }
}

impl Split for () {
    fn split_at_unit(self, _: usize) -> ((), ()) {
        ((), ())
    }
}

impl<A: Split, B: Split> Split for (A, B) {
    fn split_at_unit(self, units: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split_at_unit(units);
        let (b0, b1) = self.1.split_at_unit(units);
        ((a0, b0), (a1, b1))
    }
}

impl<A: Split, B: Split, C: Split> Split for (A, B, C) {
    fn split_at_unit(self, units: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split_at_unit(units);
        let (b0, b1) = self.1.split_at_unit(units);
        let (c0, c1) = self.2.split_at_unit(units);
        ((a0, b0, c0), (a1, b1, c1))
    }
}

/// Runs `f(range, parts)` for contiguous ranges of `0..units` covering it, on as many threads as
/// [`threads_for`] gives (the calling thread takes the first range), where `parts` are the pieces
/// of `outputs` that belong to the units of `range`. Returns when every range is done.
pub fn for_each_units<S: Split>(units: usize, ns_per_unit: f64, outputs: S, f: impl Fn(Range<usize>, S) + Sync) {
    let workers = threads_for(units, ns_per_unit);
    if workers <= 1 {
        f(0..units, outputs);
        return;
    }
    let bound = |t: usize| units * t / workers;
    std::thread::scope(|scope| {
        let f = &f;
        let (mine, mut rest) = outputs.split_at_unit(bound(1));
        for t in 1..workers {
            let (part, next) = rest.split_at_unit(bound(t + 1) - bound(t));
            rest = next;
            let range = bound(t)..bound(t + 1);
            scope.spawn(move || f(range, part));
        }
        f(0..bound(1), mine);
    });
}

/// [`for_each_units`] over one output cut in chunks of `chunk` values (the last may be shorter):
/// `f(first, part)` gets the index of its first value in `out` and a slice of whole chunks.
pub fn for_each_chunk<T: Send>(out: &mut [T], chunk: usize, ns_per_chunk: f64, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    let n = out.len().div_ceil(chunk);
    for_each_units(n, ns_per_chunk, units(out, chunk), |range, part| f(range.start * chunk, part.data));
}
