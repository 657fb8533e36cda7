//! Reusing the CPU backend's freed buffers: a steady-state training step allocates nothing new.
//!
//! A training step makes the same buffers every time: each op's output, of the same sizes, in the
//! same order. Freed to `malloc`, a buffer comes back as uninitialised memory, which the backend's
//! element-wise kernels zero-fill before writing (`parallel::Uninit`: sound, but a pass over the
//! output; 4 - 5% of a micro-preset step went to `memset`), and big ones come back as fresh pages
//! that fault in one by one. Kept here instead, a freed buffer goes to the next output of the same
//! length still holding its old values: valid floats, which the kernel overwrites without zeroing
//! them first (`Uninit::written`).
//!
//! Opt-in for the process, like `allocator::keep_freed_memory` (the `mae` binary turns both on):
//! the memory a step freed stays in the process until the next step takes it. Buffers are kept per
//! thread (a CPU storage never leaves the thread that made it) and by exact length; small ones
//! (under `MIN_LEN` values) go back to `malloc`, which serves them well. A thread holds at most
//! `MAX_HELD_BYTES`: when a buffer would pass that, the thread's whole pool is let go first (a
//! program whose sizes changed, say from training to probing, does not keep the old ones).
//!
//! The pool keeps a buffer only where there is demand for it: at most as many buffers of a length
//! as the backend has asked for that length and not found one (its misses). A buffer of a length
//! no output ever has, such as a batch a program builds itself each step and hands over with
//! `Tensor::from_vec`, goes back to `malloc` (and so is reused there next step) instead of piling
//! up here: kept, it was never taken, and every step took fresh pages for the next one (the
//! linear probe's fits ran 1.7x slower, at 1.9 GB instead of 145 MB).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Buffers shorter than this are not kept.
const MIN_LEN: usize = 4096;
/// The most a thread keeps.
const MAX_HELD_BYTES: usize = 4 << 30;

#[derive(Default)]
struct Pool {
    by_len: HashMap<usize, Vec<Vec<f32>>>,
    /// Values held, over all lengths.
    held: usize,
    /// Per length, how many times a `take` found no buffer: the most buffers of it worth keeping.
    misses: HashMap<usize, usize>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Turns recycling on or off for the whole process (off by default). Turning it off lets go of
/// this thread's pool; other threads' pools go when they next give or take.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
    if !on {
        clear();
    }
}

/// Whether freed CPU buffers are kept for reuse.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Bytes this thread holds for reuse.
pub fn held_bytes() -> usize {
    POOL.try_with(|p| p.borrow().held * 4).unwrap_or(0)
}

/// How many times this thread asked the pool for a buffer and found none (since it started or
/// last let go of its pool): a steady state asks for nothing new.
pub fn misses() -> usize {
    POOL.try_with(|p| p.borrow().misses.values().sum()).unwrap_or(0)
}

/// Lets go of every buffer this thread holds.
pub fn clear() {
    let _ = POOL.try_with(|p| *p.borrow_mut() = Pool::default());
}

/// A kept buffer of exactly `len` values, holding what its last user left there; `None` when there
/// is none (or recycling is off).
pub(crate) fn take(len: usize) -> Option<Vec<f32>> {
    if len < MIN_LEN || !is_enabled() {
        return None;
    }
    POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        match p.by_len.get_mut(&len).and_then(|kept| kept.pop()) {
            Some(v) => {
                p.held -= len;
                Some(v)
            }
            None => {
                *p.misses.entry(len).or_default() += 1;
                None
            }
        }
    })
    .ok()
    .flatten()
}

/// Keeps `v` for a later [`take`] of its length (or frees it, see the module comment).
pub(crate) fn give(v: Vec<f32>) {
    let len = v.len();
    if len < MIN_LEN || !is_enabled() {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        let wanted = p.misses.get(&len).copied().unwrap_or(0);
        if p.by_len.get(&len).map_or(0, |kept| kept.len()) >= wanted {
            return; // no demand for another of this length: `v` goes back to malloc
        }
        if (p.held + len) * 4 > MAX_HELD_BYTES {
            *p = Pool::default();
            // The demand for this length is why it is kept; the rest starts over.
            p.misses.insert(len, wanted);
        }
        p.held += len;
        p.by_len.entry(len).or_default().push(v);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_comes_back_for_its_length_only() {
        // The flag is process-wide; the pool is this test's thread's own.
        ENABLED.store(true, Ordering::Relaxed);
        assert!(take(MIN_LEN).is_none(), "an empty pool: one miss of this length");
        give(vec![7.0; MIN_LEN]);
        assert_eq!(held_bytes(), MIN_LEN * 4);
        assert!(take(MIN_LEN + 1).is_none());
        let v = take(MIN_LEN).expect("the buffer given back");
        assert!(v.len() == MIN_LEN && v[0] == 7.0);
        assert_eq!(held_bytes(), 0);
        give(vec![0.0; 10]);
        assert_eq!(held_bytes(), 0, "small buffers are not kept");
    }

    #[test]
    fn the_pool_keeps_no_more_buffers_of_a_length_than_were_asked_for_and_missed() {
        ENABLED.store(true, Ordering::Relaxed);
        let n = MIN_LEN + 3;
        // Handed in but never asked for (a program's own batch, say): not kept, step after step.
        for _ in 0..10 {
            give(vec![1.0; n]);
        }
        assert_eq!(held_bytes(), 0);
        // Asked for twice and not found: two are kept, a third goes back to malloc.
        assert!(take(n).is_none() && take(n).is_none());
        for _ in 0..3 {
            give(vec![2.0; n]);
        }
        assert_eq!(held_bytes(), 2 * n * 4);
        assert!(take(n).is_some() && take(n).is_some() && held_bytes() == 0);
        clear();
    }
}
