//! The pool's handshake between one calling thread and the workers, written against the `sync`
//! module of whoever includes it: `std` in the engine (`pool.rs`), `loom` in the model tests
//! (`engine/tests/loom_pool.rs` includes this very file), so what is model-checked is what runs.
//!
//! # The protocol
//!
//! One atomic word, `claim`, holds `(epoch, next task, task count)`. The caller that owns the pool
//! publishes a job by storing its address in `job` and then a new epoch in `claim`. A thread runs
//! task `i` only after a compare-and-swap moves `next` from `i` to `i + 1` *within the same epoch*;
//! the job cannot finish while a claimed task is unfinished, so the job (on the caller's stack) is
//! alive whenever a thread that claimed a task reads it, and a thread that was late for one job can
//! never run a task of the next one.
//!
//! Finishing is a drop guard ([`Finish`]): it closes the job (no task can be claimed after it) and
//! waits until every claimed task is done, so the job outlives its readers even when the call
//! unwinds early.
//!
//! # Sleeping without lost wake-ups
//!
//! A worker that parks first counts itself in `sleepers`, then re-reads `claim` under the `sleep`
//! lock; a caller first publishes the epoch, then reads `sleepers` and notifies under the same lock
//! if anyone sleeps. All four accesses are read-modify-writes: two RMWs on `sleepers` are ordered
//! by its modification order, and the later one reads (and synchronises with) the earlier, so
//! either the caller sees the sleeper and notifies, or the sleeper sees the new epoch. (With plain
//! SeqCst store-then-load the argument needs the total order of SeqCst operations, which loom
//! does not model.)
//!
//! # Panics
//!
//! A panicking task is caught where it runs; the first payload travels to the caller, which
//! re-raises it after the job has finished and after it gave up the pool, so the `owner` lock is
//! never poisoned by a task (and is recovered if it ever is).

use super::sync::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Condvar, Mutex, MutexGuard, Spinner, UnsafeCell, back_off,
};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, TryLockError};

/// A task: called with the task index.
pub type Task<'a> = dyn Fn(usize) + Sync + 'a;

type Payload = Box<dyn Any + Send + 'static>;

/// Tasks per job at most (they count in 16 bits of `claim`).
pub const MAX_TASKS: usize = u16::MAX as usize;

/// One call's work, on the calling thread's stack for the duration of the call.
struct Job<'a> {
    /// Read by every thread that claimed a task; in an `UnsafeCell` so that the model tests see
    /// each read, and the caller's last write (`Finish`) proves no read comes after the call.
    task: UnsafeCell<&'a Task<'a>>,
    /// Tasks finished (run or panicked).
    done: AtomicUsize,
    /// The first panic's payload, for the caller to re-raise.
    panic: Mutex<Option<Payload>>,
}

/// The handshake's shared state. The engine keeps one for the process (`pool.rs`); each model
/// test makes its own.
pub struct Pool {
    /// Threads running [`Pool::work`] besides the callers.
    workers: usize,
    /// `epoch << 32 | next << 16 | count`.
    claim: AtomicU64,
    /// The job of the current epoch (valid while any of its tasks is claimed and unfinished).
    job: AtomicPtr<Job<'static>>,
    /// Held by the call that owns the pool.
    owner: Mutex<()>,
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Set by [`Pool::stop`]: workers return instead of waiting for the next epoch.
    stopping: AtomicBool,
}

fn pack(epoch: u32, next: usize, count: usize) -> u64 {
    ((epoch as u64) << 32) | ((next as u64) << 16) | count as u64
}

fn epoch_of(word: u64) -> u32 {
    (word >> 32) as u32
}

fn next_and_count(word: u64) -> (usize, usize) {
    (((word >> 16) & 0xffff) as usize, (word & 0xffff) as usize)
}

/// A lock whose holder panicked is still a lock: the data behind these mutexes (`()`, or a
/// payload slot written in one statement) cannot be left half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool for `workers` threads, which the owner starts, each running [`Pool::work`].
    pub fn new(workers: usize) -> Self {
        Pool {
            workers,
            claim: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            owner: Mutex::new(()),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// The worker threads there are besides the calling one.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `task(i)` for every `i` in `0..tasks`, each exactly once, on the calling thread and the
    /// workers, and returns when all have finished. A call that finds the pool owned by another
    /// call (another thread's, or its own caller's: a nested call) runs its tasks itself. The first
    /// panic of a task is re-raised here, with its payload, once every task has finished.
    pub fn run(&self, tasks: usize, task: &Task<'_>) {
        let owner = if tasks > 1 && self.workers > 0 && tasks <= MAX_TASKS { self.try_own() } else { None };
        let Some(owner) = owner else {
            // Busy, nested, or nothing to share: this thread runs every task.
            (0..tasks).for_each(task);
            return;
        };
        let job = Job { task: UnsafeCell::new(task), done: AtomicUsize::new(0), panic: Mutex::new(None) };
        // Lifetime erasure: the job is only read by threads that hold a claimed, unfinished task
        // of this epoch, and `finish` below does not let this frame go before those are done.
        let erased = &job as *const Job<'_> as *mut Job<'static>;
        self.job.store(erased, Ordering::Release);
        let epoch = self.publish(tasks);
        let finish = Finish { pool: self, job: &job, epoch };
        self.help(epoch);
        drop(finish);
        drop(owner);
        let payload = job.panic.into_inner().unwrap_or_else(PoisonError::into_inner);
        if let Some(payload) = payload {
            resume_unwind(payload);
        }
    }

    /// The pool, if no other call owns it. A poisoned lock is taken over: poisoning says a holder
    /// panicked, and there is no state behind it to distrust.
    fn try_own(&self) -> Option<MutexGuard<'_, ()>> {
        match self.owner.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Starts a new epoch with `tasks` unclaimed tasks and wakes sleeping workers. Only the owner
    /// publishes, so reading the old epoch and swapping in the new one need not be one step.
    fn publish(&self, tasks: usize) -> u32 {
        let epoch = epoch_of(self.claim.load(Ordering::Relaxed)).wrapping_add(1);
        self.claim.swap(pack(epoch, 0, tasks), Ordering::AcqRel);
        // An RMW, not a load: see "Sleeping without lost wake-ups" above.
        if self.sleepers.fetch_add(0, Ordering::AcqRel) > 0 {
            let _guard = lock(&self.sleep);
            self.wake.notify_all();
        }
        epoch
    }

    /// Claims and runs tasks of `epoch` until none is left.
    fn help(&self, epoch: u32) {
        let mut word = self.claim.load(Ordering::Acquire);
        loop {
            let (next, count) = next_and_count(word);
            if epoch_of(word) != epoch || next >= count {
                return;
            }
            match self.claim.compare_exchange_weak(word, word + (1 << 16), Ordering::AcqRel, Ordering::Acquire) {
                Err(now) => word = now,
                Ok(_) => {
                    // SAFETY: task `next` of this epoch is claimed and unfinished, so the call that
                    // published the job is still inside `Finish::drop` or before it, and the job
                    // (stored before the epoch we claimed in) is alive.
                    let job = unsafe { &*self.job.load(Ordering::Acquire) };
                    // SAFETY: the caller writes the cell only in `Finish::drop`, after every
                    // claimed task (this one included) is done.
                    let task = job.task.with(|task| unsafe { *task });
                    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| task(next))) {
                        job.keep_panic(payload);
                    }
                    // The last touch of the job: after this the caller may return.
                    job.done.fetch_add(1, Ordering::Release);
                    word = self.claim.load(Ordering::Acquire);
                }
            }
        }
    }

    /// No task of `epoch` can be claimed after this; returns how many were.
    fn close(&self, epoch: u32) -> usize {
        let mut word = self.claim.load(Ordering::Acquire);
        loop {
            let (next, count) = next_and_count(word);
            if epoch_of(word) != epoch || next >= count {
                return next.min(count);
            }
            match self.claim.compare_exchange_weak(word, pack(epoch, count, count), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(now) => word = now,
            }
        }
    }

    /// A worker's life: wait for a new epoch, help with it, repeat, until [`Pool::stop`].
    pub fn work(&self) {
        // The epoch the pool was made with, not the current one: a worker that starts after the
        // first job was published still helps with it.
        let mut seen = 0;
        loop {
            let mut spinner = Spinner::new();
            let mut epoch = epoch_of(self.claim.load(Ordering::Acquire));
            while epoch == seen {
                if !spinner.keep_spinning() {
                    self.park(seen);
                }
                epoch = epoch_of(self.claim.load(Ordering::Acquire));
            }
            // `stop` sets the flag before it publishes, so the epoch just read shows it. (Reading
            // the epoch again after this check could skip the stopping epoch and sleep forever.)
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            seen = epoch;
            self.help(seen);
        }
    }

    /// Sleeps until the epoch is no longer `seen`.
    fn park(&self, seen: u32) {
        self.sleepers.fetch_add(1, Ordering::AcqRel);
        let mut guard = lock(&self.sleep);
        // An RMW, not a load: see "Sleeping without lost wake-ups" above.
        while epoch_of(self.claim.fetch_add(0, Ordering::AcqRel)) == seen {
            guard = self.wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Makes every worker return from [`Pool::work`] once it finishes what it is doing. For pools
    /// whose workers are joined (the tests); the engine's pool lives as long as the process.
    #[cfg_attr(not(test), allow(dead_code, reason = "the engine's pool never stops; the model tests' pools do"))]
    pub fn stop(&self) {
        let _owner = lock(&self.owner);
        self.stopping.store(true, Ordering::Release);
        self.publish(0);
    }
}

impl Job<'_> {
    /// Keeps the first panic's payload for the caller. Later ones are leaked, not dropped: a
    /// payload's `Drop` may itself panic, and nothing here may unwind before `done` is counted.
    fn keep_panic(&self, payload: Payload) {
        let mut slot = lock(&self.panic);
        if slot.is_none() {
            *slot = Some(payload);
        } else {
            std::mem::forget(payload);
        }
    }
}

/// Ends a published job, also when the call unwinds: closes it to new claims and waits until every
/// claimed task is done, so no thread reads the job after its frame is gone.
struct Finish<'p, 'j> {
    pool: &'p Pool,
    job: &'p Job<'j>,
    epoch: u32,
}

impl Drop for Finish<'_, '_> {
    fn drop(&mut self) {
        let claimed = self.pool.close(self.epoch);
        let mut round = 0u32;
        while self.job.done.load(Ordering::Acquire) < claimed {
            back_off(&mut round);
        }
        // The job's last use: a write, which the model tests check against every task's read.
        self.job.task.with_mut(|_| ());
    }
}
