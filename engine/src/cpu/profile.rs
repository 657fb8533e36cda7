//! A per-kernel timer for the CPU backend, always compiled and off by default.
//!
//! Every `CpuBackend` method opens a [`scope`] named after its kernel. While profiling is off, a
//! scope is one relaxed atomic load and nothing else (no clock read, no lock). Between [`start`]
//! and [`stop`], each scope reads the clock when it opens and closes and adds the elapsed time and
//! one call to its kernel's row of a global table behind a `Mutex` (one uncontended lock per
//! kernel call: ~20 ns against kernels that run for microseconds or more).
//!
//! The times are wall-clock times of the calling thread: a kernel that runs on two threads counts
//! its elapsed time once. Only time spent inside the backend is counted; the difference between
//! the sum of the table and a step's wall time is the engine's own overhead (tape, allocation of
//! tensors, host-side data preparation).
//!
//! ```no_run
//! engine::cpu::profile::start();
//! // ... run some steps on the CPU ...
//! for row in engine::cpu::profile::stop() {
//!     println!("{:<24} {:>6} calls {:>8.3} s", row.name, row.calls, row.seconds);
//! }
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static DETAILED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<(&'static str, u64, u128)>> = Mutex::new(Vec::new());
/// The names of detailed scopes, each kept once for the life of the process.
static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// One kernel's accumulated time.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's scope name.
    pub name: &'static str,
    /// Calls recorded.
    pub calls: u64,
    /// Total wall-clock time of those calls, in seconds.
    pub seconds: f64,
}

/// Clears the table and starts recording.
pub fn start() {
    TABLE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    ENABLED.store(true, Ordering::SeqCst);
}

/// [`start`], with kernels that have a detailed name ([`scope_with`]: a matmul's shape) recorded
/// under it, one row per shape.
pub fn start_detailed() {
    start();
    DETAILED.store(true, Ordering::SeqCst);
}

/// Stops recording and returns the table, the most expensive kernel first.
pub fn stop() -> Vec<KernelTime> {
    ENABLED.store(false, Ordering::SeqCst);
    DETAILED.store(false, Ordering::SeqCst);
    let rows = std::mem::take(&mut *TABLE.lock().unwrap_or_else(|e| e.into_inner()));
    let mut out: Vec<KernelTime> =
        rows.into_iter().map(|(name, calls, nanos)| KernelTime { name, calls, seconds: nanos as f64 * 1e-9 }).collect();
    out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.name.cmp(b.name)));
    out
}

/// Whether recording is on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Times its own life when profiling is on; see [`scope`].
pub struct Scope {
    open: Option<(&'static str, Instant)>,
}

/// Opens a timed scope for kernel `name`; the time is recorded when the scope is dropped.
#[inline]
pub fn scope(name: &'static str) -> Scope {
    if ENABLED.load(Ordering::Relaxed) { Scope { open: Some((name, Instant::now())) } } else { Scope { open: None } }
}

/// [`scope`], named by `detail()` while detailed profiling is on ([`start_detailed`]).
#[inline]
pub fn scope_with(name: &'static str, detail: impl FnOnce() -> String) -> Scope {
    if !ENABLED.load(Ordering::Relaxed) {
        return Scope { open: None };
    }
    let name = if DETAILED.load(Ordering::Relaxed) { intern(detail()) } else { name };
    Scope { open: Some((name, Instant::now())) }
}

/// `name` as a `&'static str`, leaked once per distinct name (a profile has a few dozen).
#[cold]
fn intern(name: String) -> &'static str {
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    match names.iter().find(|n| **n == name) {
        Some(n) => n,
        None => {
            let n: &'static str = Box::leak(name.into_boxed_str());
            names.push(n);
            n
        }
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        if let Some((name, t0)) = self.open.take() {
            record(name, t0.elapsed().as_nanos());
        }
    }
}

#[cold]
fn record(name: &'static str, nanos: u128) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    match table.iter_mut().find(|row| row.0 == name) {
        Some(row) => {
            row.1 += 1;
            row.2 += nanos;
        }
        None => table.push((name, 1, nanos)),
    }
}

/// The table as aligned text: kernel, calls, seconds, milliseconds per call, share of the total.
pub fn format_table(rows: &[KernelTime]) -> String {
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    let mut s = format!("{:<26} {:>7} {:>9} {:>9} {:>6}\n", "kernel", "calls", "seconds", "ms/call", "share");
    for r in rows {
        s += &format!(
            "{:<26} {:>7} {:>9.3} {:>9.3} {:>5.1}%\n",
            r.name,
            r.calls,
            r.seconds,
            1e3 * r.seconds / r.calls.max(1) as f64,
            100.0 * r.seconds / total.max(1e-12)
        );
    }
    s += &format!("{:<26} {:>7} {:>9.3}\n", "total", rows.iter().map(|r| r.calls).sum::<u64>(), total);
    s
}
