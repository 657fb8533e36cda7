//! The worker threads of the fast CPU kernels: started once, parked between calls.
//!
//! Spawning threads per kernel call (`std::thread::scope`) costs waking an idle core plus a join,
//! tens of microseconds each on a VM, on each of the ~200 threaded calls of a training step; a late
//! worker also makes the whole call wait (docs/journal/benchmarks.md has the before and after). Here
//! `available_parallelism() - 1` workers live for the whole process. A call publishes a job (a task
//! function and a task count), wakes the workers if they sleep, and works on the tasks itself;
//! every thread claims task indices one at a time from a shared counter until none is left, and the
//! call returns when all are done. After a job a worker spins briefly for the next one (the kernels
//! of a step follow each other within microseconds), then parks on a condvar. The handshake, and
//! why it is sound, is `pool/protocol.rs`; `engine/tests/loom_pool.rs` model-checks that file.
//!
//! # Who gets the pool
//!
//! One job at a time: a call that finds the pool busy (another thread's kernel, or a kernel called
//! from inside a task) runs its tasks itself, one after the other. Results never depend on this:
//! every kernel computes the same bits whatever thread runs which task (see `parallel.rs`).
//!
//! A task that panics is caught on the worker and re-raised on the calling thread once the job has
//! finished, so no worker dies, no call hangs, and the pool stays shared by every later call.

mod protocol;

use std::sync::OnceLock;

use protocol::Pool;

/// What the protocol is built from in the engine: `std`'s atomics and locks, a time-bounded spin.
/// (`engine/tests/loom_pool.rs` gives the same names loom's types.)
mod sync {
    pub(super) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
    pub(super) use std::sync::{Condvar, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    /// How long a worker spins for the next job before it parks.
    pub(super) const SPIN: Duration = Duration::from_micros(200);

    /// `std::cell::UnsafeCell` with loom's access API (`with`, `with_mut`), which costs nothing here.
    pub(super) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(super) fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }
        pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// A worker's wait for the next job: spin for [`SPIN`], then say it is time to park.
    pub(super) struct Spinner {
        start: Instant,
        spins: u32,
    }

    impl Spinner {
        pub(super) fn new() -> Self {
            Spinner { start: Instant::now(), spins: 0 }
        }
        /// Spins once; false once the spin has lasted [`SPIN`] (checked every 256 spins).
        pub(super) fn keep_spinning(&mut self) -> bool {
            std::hint::spin_loop();
            self.spins = self.spins.wrapping_add(1);
            !(self.spins.is_multiple_of(256) && self.start.elapsed() > SPIN)
        }
    }

    /// The caller's wait for the workers' last tasks: spin a while, then yield the core. `round`
    /// saturates, so however long the wait it cannot overflow.
    pub(super) fn back_off(round: &mut u32) {
        *round = round.saturating_add(1);
        if *round < 1 << 14 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Starts a pool with `workers` threads that live as long as the process.
fn start(workers: usize) -> &'static Pool {
    let pool: &'static Pool = Box::leak(Box::new(Pool::new(workers)));
    for i in 0..workers {
        let spawned = std::thread::Builder::new().name(format!("engine-cpu-{i}")).spawn(move || pool.work());
        if spawned.is_err() {
            // No thread to be had: the calls still complete, on their own threads.
            break;
        }
    }
    pool
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| start(super::matmul::threads().saturating_sub(1)))
}

/// The worker threads there are besides the calling one.
pub fn workers() -> usize {
    pool().workers()
}

/// Runs `task(i)` for every `i` in `0..tasks`, each exactly once, on the calling thread and the
/// pool's workers, and returns when all have finished. Which thread runs which task is not fixed;
/// callers must not let results depend on it. A panic in any task is raised here, with its payload.
pub fn run(tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    pool().run(tasks, task);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::{Mutex, mpsc};
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

    /// Runs a two-task job in which each task waits (up to a second) for the other to start, and
    /// returns the threads that ran them: two when the pool shares the job with its worker.
    fn threads_of_a_two_task_job(pool: &Pool) -> usize {
        let started = AtomicUsize::new(0);
        let threads = Mutex::new(HashSet::<ThreadId>::new());
        pool.run(2, &|_| {
            threads.lock().unwrap().insert(std::thread::current().id());
            started.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(1);
            while started.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                std::thread::yield_now();
            }
        });
        threads.into_inner().unwrap().len()
    }

    /// A panic payload whose own `Drop` panics: what a pool must not drop on a worker.
    struct PanicsWhenDropped;

    impl Drop for PanicsWhenDropped {
        fn drop(&mut self) {
            panic!("the payload's Drop panics on purpose");
        }
    }

    /// Runs `f` on a new thread and fails the test if it has not returned after `limit`.
    fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = send.send(f());
        });
        receive.recv_timeout(limit).expect("the call hung (or its thread died without an answer)")
    }

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
            std::thread::sleep(sync::SPIN * 5);
            let n = AtomicU32::new(0);
            run(2, &|_| {
                n.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(n.load(Ordering::Relaxed), 2);
        }
    }

    #[test]
    fn the_pool_still_shares_jobs_between_threads_after_a_task_panicked() {
        let pool = start(1);
        assert_eq!(threads_of_a_two_task_job(pool), 2, "a fresh pool shares a job with its worker");
        let caught = catch_unwind(AssertUnwindSafe(|| pool.run(2, &|i| assert_ne!(i, 1, "task 1 fails on purpose"))));
        assert!(caught.is_err());
        assert_eq!(threads_of_a_two_task_job(pool), 2, "after a panicking job the pool must still be shared");
        pool.stop();
    }

    #[test]
    fn a_task_panic_reaches_the_caller_with_its_own_payload() {
        let pool = start(1);
        let caught = catch_unwind(AssertUnwindSafe(|| pool.run(3, &|i| std::panic::panic_any(i as u64 + 100))));
        let payload = caught.expect_err("the job's panic is raised on the caller");
        assert!(payload.downcast_ref::<u64>().is_some_and(|&p| (100..103).contains(&p)));
        pool.stop();
    }

    #[test]
    fn a_payload_whose_drop_panics_neither_hangs_the_call_nor_kills_the_worker() {
        let pool = start(1);
        let outcome = within(Duration::from_secs(20), move || {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                pool.run(2, &|_| std::panic::panic_any(PanicsWhenDropped));
            }));
            // Dropping the payload would panic again: that is the test's own business, not the pool's.
            match caught {
                Ok(()) => false,
                Err(payload) => {
                    let ours = payload.is::<PanicsWhenDropped>();
                    std::mem::forget(payload);
                    ours
                }
            }
        });
        assert!(outcome, "the task's own payload is raised on the caller");
        assert_eq!(within(Duration::from_secs(20), move || threads_of_a_two_task_job(pool)), 2);
        pool.stop();
    }

    #[test]
    fn the_callers_back_off_counter_cannot_overflow() {
        let mut round = u32::MAX - 1;
        for _ in 0..3 {
            sync::back_off(&mut round);
        }
        assert_eq!(round, u32::MAX);
    }
}
