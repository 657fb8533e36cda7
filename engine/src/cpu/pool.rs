//! The worker threads of the fast CPU kernels: started once, parked between calls.
//!
//! Spawning threads per kernel call (`std::thread::scope`) costs waking an idle core plus a join,
//! tens of microseconds each on a VM, on each of the ~200 threaded calls of a training step; a late
//! worker also makes the whole call wait (docs/benchmarks.md has the before and after). Here `available_parallelism() - 1` workers live for the whole process. A call
//! publishes a job (a task function and a task count), wakes the workers if they sleep, and works on
//! the tasks itself; every thread claims task indices one at a time from a shared counter until
//! none is left, and the call returns when all are done. After a job a worker spins briefly for the
//! next one (the kernels of a step follow each other within microseconds), then parks on a condvar.
//!
//! # The protocol
//!
//! One atomic word, `claim`, holds `(epoch, next task, task count)`. A call bumps the epoch when it
//! publishes a job. A thread runs task `i` only after a compare-and-swap moves `next` from `i` to
//! `i + 1` *within the same epoch*; the job cannot finish while its claimed task is unfinished, so
//! the job (on the caller's stack) is alive whenever a thread that claimed a task reads it, and a
//! thread that was late for one job can never run a task of the next one.
//!
//! # Who gets the pool
//!
//! One job at a time: a call that finds the pool busy (another thread's kernel, or a kernel called
//! from inside a task) runs its tasks itself, one after the other. Results never depend on this:
//! every kernel computes the same bits whatever thread runs which task (see `parallel.rs`).
//!
//! A task that panics is caught on the worker and re-raised on the calling thread once the job has
//! finished, so no worker dies and no call hangs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a worker spins for the next job before it parks.
const SPIN: Duration = Duration::from_micros(200);

type Task<'a> = dyn Fn(usize) + Sync + 'a;

/// One call's work, on the calling thread's stack for the duration of the call.
struct Job<'a> {
    task: &'a Task<'a>,
    done: AtomicUsize,
    panicked: AtomicBool,
}

struct Pool {
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
}

fn pack(epoch: u32, next: usize, count: usize) -> u64 {
    ((epoch as u64) << 32) | ((next as u64) << 16) | count as u64
}

fn epoch_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// Tasks per job at most (they count in 16 bits of `claim`).
const MAX_TASKS: usize = u16::MAX as usize;

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = super::matmul::threads().saturating_sub(1);
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            workers,
            claim: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            owner: Mutex::new(()),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        }));
        for i in 0..workers {
            let spawned = std::thread::Builder::new().name(format!("engine-cpu-{i}")).spawn(move || pool.work());
            if spawned.is_err() {
                // No thread to be had: the calls still complete, on their own threads.
                break;
            }
        }
        pool
    })
}

impl Pool {
    /// Claim and run tasks of `epoch` until none is left.
    fn help(&self, epoch: u32) {
        let mut word = self.claim.load(Ordering::Acquire);
        loop {
            let (next, count) = (((word >> 16) & 0xffff) as usize, (word & 0xffff) as usize);
            if epoch_of(word) != epoch || next >= count {
                return;
            }
            match self.claim.compare_exchange_weak(word, word + (1 << 16), Ordering::AcqRel, Ordering::Acquire) {
                Err(now) => word = now,
                Ok(_) => {
                    // SAFETY: task `next` of this epoch is claimed and unfinished, so the call that
                    // published the job is still waiting and the job is alive (module comment).
                    let job = unsafe { &*self.job.load(Ordering::Acquire) };
                    if catch_unwind(AssertUnwindSafe(|| (job.task)(next))).is_err() {
                        job.panicked.store(true, Ordering::Relaxed);
                    }
                    // The last touch of the job: after this the caller may return.
                    job.done.fetch_add(1, Ordering::Release);
                    word = self.claim.load(Ordering::Acquire);
                }
            }
        }
    }

    /// A worker's life: wait for a new epoch, help with it, repeat.
    fn work(&self) {
        let mut seen = epoch_of(self.claim.load(Ordering::Acquire));
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            while epoch_of(self.claim.load(Ordering::Acquire)) == seen {
                std::hint::spin_loop();
                spins += 1;
                if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                    self.sleepers.fetch_add(1, Ordering::SeqCst);
                    let mut guard = self.sleep.lock().unwrap_or_else(|p| p.into_inner());
                    while epoch_of(self.claim.load(Ordering::SeqCst)) == seen {
                        guard = self.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(guard);
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                }
            }
            seen = epoch_of(self.claim.load(Ordering::Acquire));
            self.help(seen);
        }
    }
}

/// The worker threads there are besides the calling one.
pub fn workers() -> usize {
    pool().workers
}

/// Runs `task(i)` for every `i` in `0..tasks`, each exactly once, on the calling thread and the
/// pool's workers, and returns when all have finished. Which thread runs which task is not fixed;
/// callers must not let results depend on it. A panic in any task is raised here.
pub fn run(tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    let owner = if tasks > 1 && pool.workers > 0 && tasks <= MAX_TASKS { pool.owner.try_lock().ok() } else { None };
    let Some(_owner) = owner else {
        // Busy, nested, or nothing to share: this thread runs every task.
        (0..tasks).for_each(task);
        return;
    };
    let job = Job { task, done: AtomicUsize::new(0), panicked: AtomicBool::new(false) };
    // SAFETY (of the lifetime erasure): the job is only read by threads that hold a claimed,
    // unfinished task of this epoch, and this function does not return before every task is done.
    let ptr = &job as *const Job<'_> as *mut Job<'static>;
    pool.job.store(ptr, Ordering::Release);
    let epoch = epoch_of(pool.claim.load(Ordering::Relaxed)).wrapping_add(1);
    pool.claim.store(pack(epoch, 0, tasks), Ordering::SeqCst);
    if pool.sleepers.load(Ordering::SeqCst) > 0 {
        let _guard = pool.sleep.lock().unwrap_or_else(|p| p.into_inner());
        pool.wake.notify_all();
    }
    pool.help(epoch);
    let mut spins = 0u32;
    while job.done.load(Ordering::Acquire) < tasks {
        spins += 1;
        if spins < 1 << 14 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    if job.panicked.load(Ordering::Relaxed) {
        panic!("a task of a CPU kernel panicked on a worker thread (its message is above)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_exactly_once() {
        for tasks in [0, 1, 2, 3, 17, 1000] {
            let counts: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
            run(tasks, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{tasks} tasks");
        }
    }

    #[test]
    fn nested_and_concurrent_calls_complete_and_run_every_task_once() {
        let total = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        run(3, &|_| {
                            run(2, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 3 * 2);
    }

    #[test]
    fn a_panicking_task_is_raised_on_the_caller_and_the_pool_keeps_working() {
        let caught = catch_unwind(|| {
            run(4, &|i| {
                if i == 3 {
                    panic!("task 3 fails on purpose");
                }
            })
        });
        assert!(caught.is_err());
        let n = AtomicU32::new(0);
        run(5, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn calls_after_the_workers_parked_still_complete() {
        for _ in 0..3 {
            std::thread::sleep(SPIN * 5);
            let n = AtomicU32::new(0);
            run(2, &|_| {
                n.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(n.load(Ordering::Relaxed), 2);
        }
    }
}
