//! Splitting a kernel's work over the cores, the way the fast matmul does it: a call cuts its
//! independent units (rows, heads, blocks of values) into contiguous ranges, one per thread, hands
//! each range with the parts of the outputs that its units write to a task of the worker pool
//! (`pool.rs`; the calling thread works too), and returns when all are done. No lock or atomic is
//! touched while a task runs, and no result depends on how the units were
//! split: every unit is computed by the same code whatever thread runs it, and reductions across
//! units (column sums) go through per-block partial results of a fixed block size that are added
//! up in block order afterwards. So the CPU backend gives the same bits whatever the thread count.
//!
//! # When to use a second thread
//! Handing a task to a pool worker that is spinning for work costs little; one that has parked (no
//! kernel for a while) has to be woken, and when the other core is busy with another process, the
//! worker may wait a whole time slice (the call then waits with it). So a kernel gets one thread per [`NS_PER_THREAD`] of estimated single-core work: under
//! 2 x 40 us it stays on the calling thread. Each kernel estimates its work from a per-unit cost.
//!
//! Matmul's own splitting (equal contiguous ranges of row or column slivers, per-thread packing
//! workspaces) is the same scheme on the same pool; it could call [`for_each_units`] with its
//! sliver count and a cost of `2 k MR n` flops per sliver, but keeps its own code for its
//! thread-local workspaces.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Estimated single-core work worth one more thread, in nanoseconds (see the module comment).
pub const NS_PER_THREAD: f64 = 40_000.0;

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

/// An output buffer that a kernel writes in full: initialised values (`&mut [f32]`), or
/// uninitialised memory ([`Uninit`], the spare capacity of a fresh `Vec`), which is zero-filled
/// where and when a worker takes it ([`Out::init`]) and then overwritten by the kernel. The backend
/// uses the second: zeroing a fresh output with `vec![0.0; n]` is a pass over memory of its own, on
/// one thread (a visible share of a training step: docs/journal/benchmarks.md), whereas zeroing a piece right before writing
/// it costs little (the piece is then in the cache).
pub trait Out<'a>: Send + Sized {
    /// Number of values.
    fn len(&self) -> usize;
    /// True when there are no values.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first `at` values and the rest.
    fn split_at(self, at: usize) -> (Self, Self);
    /// The values, initialised (uninitialised memory is zero-filled first).
    fn init(self) -> &'a mut [f32];
}

impl<'a> Out<'a> for &'a mut [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn split_at(self, at: usize) -> (Self, Self) {
        self.split_at_mut(at)
    }
    fn init(self) -> &'a mut [f32] {
        self
    }
}

/// Output memory that may be uninitialised. It is initialised before it is gone: by
/// [`Out::init`], or, for a piece that no kernel took, zero-filled when it is dropped. Memory that
/// already holds floats (a recycled buffer, `Uninit::written`) is handed to the kernel by `init`
/// without zeroing: the kernel overwrites every value it takes.
pub struct Uninit<'a> {
    values: &'a mut [MaybeUninit<f32>],
    /// Whether `values` holds floats already (then `init` hands it over without zeroing).
    written: bool,
}

impl<'a> Uninit<'a> {
    /// Initialised memory, seen as an output: the kernel overwrites the old values.
    pub(crate) fn written(values: &'a mut [f32]) -> Self {
        // SAFETY: `MaybeUninit<f32>` has f32's layout, and only floats are ever written through
        // an `Uninit` (`MaybeUninit::write` in `init` and `drop`, or the kernel through `init`'s
        // `&mut [f32]`), so the memory still holds floats when the borrow ends.
        let values = unsafe { &mut *(values as *mut [f32] as *mut [MaybeUninit<f32>]) };
        Uninit { values, written: true }
    }
}

impl Drop for Uninit<'_> {
    /// A piece that no kernel took reads as zeros, whatever the memory held before (recycled or
    /// not), so that an output never shows another tensor's old values.
    fn drop(&mut self) {
        for x in self.values.iter_mut() {
            x.write(0.0);
        }
    }
}

impl<'a> Out<'a> for Uninit<'a> {
    fn len(&self) -> usize {
        self.values.len()
    }
    fn split_at(mut self, at: usize) -> (Self, Self) {
        let (a, b) = std::mem::take(&mut self.values).split_at_mut(at);
        (Uninit { values: a, written: self.written }, Uninit { values: b, written: self.written })
    }
    fn init(mut self) -> &'a mut [f32] {
        let values = std::mem::take(&mut self.values);
        if !self.written {
            for x in values.iter_mut() {
                x.write(0.0);
            }
        }
        // SAFETY: every element holds a float (written just above, or before), and
        // `MaybeUninit<f32>` has f32's layout.
        unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
    }
}

/// A fresh `Vec` of `len` values, written by `fill` through an [`Uninit`] (so never zeroed in a
/// pass of its own): a recycled buffer of that length when there is one (`recycle.rs`), its old
/// values overwritten. `fill` must not `mem::forget` the `Uninit` (or a piece of it): every piece is
/// then initialised, by a kernel's `init` or by its drop.
pub(crate) fn new_output(len: usize, fill: impl FnOnce(Uninit<'_>)) -> Vec<f32> {
    if let Some(mut v) = super::recycle::take(len) {
        fill(Uninit::written(&mut v));
        return v;
    }
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(Uninit { values: &mut v.spare_capacity_mut()[..len], written: false });
    // SAFETY: the `Uninit` and all its pieces are gone, so every one of the `len` values has been
    // initialised (see `Uninit`); the crate's kernels never forget an output.
    unsafe { v.set_len(len) };
    v
}

/// A fresh `Vec` of `len` values for a kernel that writes every one of them through
/// `&mut [MaybeUninit<f32>]` (the matrix products): a recycled buffer when there is one, else new
/// memory, never zeroed.
pub(crate) fn new_uninit_output(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    if let Some(mut v) = super::recycle::take(len) {
        // SAFETY: as in `Uninit::written`: `fill` writes only floats.
        fill(unsafe { &mut *(v.as_mut_slice() as *mut [f32] as *mut [MaybeUninit<f32>]) });
        return v;
    }
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: `fill` writes all `len` values (its contract).
    unsafe { v.set_len(len) };
    v
}

/// Outputs that can be cut between units: a worker gets the part that its units write.
pub trait Split: Send + Sized {
    /// Cuts after the first `units` units (relative to the start of `self`).
    fn split_at_unit(self, units: usize) -> (Self, Self);
}

/// An output seen as consecutive units of `per_unit` values (the last one may be shorter).
pub struct Units<O> {
    /// The output values.
    pub data: O,
    /// Values per unit.
    pub per_unit: usize,
}

/// `data` as units of `per_unit` values, for [`for_each_units`].
pub fn units<'a, O: Out<'a>>(data: O, per_unit: usize) -> Units<O> {
    Units { data, per_unit }
}

impl<'a, O: Out<'a>> Split for Units<O> {
    fn split_at_unit(self, units: usize) -> (Self, Self) {
        let at = (units * self.per_unit).min(self.data.len());
        let (a, b) = self.data.split_at(at);
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
    // Each task takes its part of the outputs out of its own slot (an uncontended lock).
    let mut parts = Vec::with_capacity(workers);
    let mut rest = outputs;
    for t in 0..workers {
        let (part, next) = rest.split_at_unit(bound(t + 1) - bound(t));
        parts.push(std::sync::Mutex::new(Some(part)));
        rest = next;
    }
    super::pool::run(workers, &|t| {
        let part = parts[t].lock().unwrap_or_else(|p| p.into_inner()).take().expect("each task runs once");
        f(bound(t)..bound(t + 1), part);
    });
}

/// [`for_each_units`] over one output cut in chunks of `chunk` values (the last may be shorter):
/// `f(first, piece)` for every chunk, with the index of its first value in `out`. Each worker
/// takes (initialises) its chunks one at a time, right before `f` writes them.
pub fn for_each_chunk<'a, O: Out<'a>>(out: O, chunk: usize, ns_per_chunk: f64, f: impl Fn(usize, &mut [f32]) + Sync) {
    let chunk = chunk.max(1);
    let n = out.len().div_ceil(chunk);
    for_each_units(n, ns_per_chunk, units(out, chunk), |range, part| {
        let mut rest = part.data;
        for c in range {
            let at = chunk.min(rest.len());
            let (piece, tail) = rest.split_at(at);
            rest = tail;
            f(c * chunk, piece.init());
        }
    });
}
