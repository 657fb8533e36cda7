//! Model checks of the CPU worker pool's handshake (`engine/src/cpu/pool/protocol.rs`, included
//! here as it is, over loom's atomics and locks): loom runs each small program below under every
//! interleaving of its threads (up to a bound on preemptions) and every outcome its memory model
//! allows, and fails on a lost wake-up (a deadlock), a task run twice or never, or a read of a job
//! after its call returned (the job's `UnsafeCell` against the caller's last write).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p engine --no-default-features --test
//! loom_pool` (in a target directory of its own, as the README's test command does: the flag
//! rebuilds every crate). Without `--cfg loom` this file is empty.
#![cfg(loom)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// The names `protocol.rs` takes from its parent, as loom's types.
mod sync {
    pub use loom::cell::UnsafeCell;
    pub use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
    pub use loom::sync::{Condvar, Mutex, MutexGuard};

    /// A worker spins once (a yield, so loom can schedule the caller), then parks: both the path
    /// that sees the next job while spinning and the path through the sleep lock are explored.
    pub struct Spinner {
        spun: bool,
    }

    impl Spinner {
        pub fn new() -> Self {
            Spinner { spun: false }
        }
        pub fn keep_spinning(&mut self) -> bool {
            loom::thread::yield_now();
            !std::mem::replace(&mut self.spun, true)
        }
    }

    pub fn back_off(_round: &mut u32) {
        loom::thread::yield_now();
    }
}

#[path = "../src/cpu/pool/protocol.rs"]
#[allow(dead_code)]
mod protocol;

use protocol::Pool;

/// Explores `f` with at most `preemptions` forced switches per execution (loom's usual bound; every
/// bug below needs one or two), printing how many executions it checked.
fn model(name: &str, preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    println!("{name}: {} executions checked", runs.load(std::sync::atomic::Ordering::Relaxed));
}

/// A pool with `workers` loom threads running `Pool::work`; `body` gets it, then the pool is
/// stopped and its workers joined (loom requires every thread to end).
fn with_pool(workers: usize, body: impl FnOnce(&Arc<Pool>)) {
    let pool = Arc::new(Pool::new(workers));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let pool = pool.clone();
            thread::spawn(move || pool.work())
        })
        .collect();
    body(&pool);
    pool.stop();
    for handle in handles {
        handle.join().unwrap();
    }
}

/// Runs a job of `tasks` tasks that count their runs, and checks each ran once.
fn run_counted(pool: &Pool, tasks: usize) {
    let runs: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
    pool.run(tasks, &|i| {
        runs[i].fetch_add(1, Ordering::Relaxed);
    });
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.load(Ordering::Relaxed), 1, "task {i} of {tasks}");
    }
}

#[test]
fn one_caller_and_two_workers_run_every_task_once() {
    model("one job, two workers", 1, || with_pool(2, |pool| run_counted(pool, 3)));
}

#[test]
fn two_jobs_back_to_back_never_mix_their_tasks() {
    model("two jobs", 2, || {
        with_pool(1, |pool| {
            run_counted(pool, 2);
            run_counted(pool, 2);
        })
    });
}

#[test]
fn a_second_caller_runs_its_tasks_itself_while_the_pool_is_busy() {
    model("two callers", 2, || {
        with_pool(1, |pool| {
            let other = {
                let pool = pool.clone();
                thread::spawn(move || run_counted(&pool, 2))
            };
            run_counted(pool, 2);
            other.join().unwrap();
        })
    });
}

/// The message of the tasks that panic on purpose, kept out of the output (loom runs them in
/// thousands of executions); every other panic is printed as usual.
const ON_PURPOSE: &str = "task 0 fails on purpose";

fn quiet_about_panics_on_purpose() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&ON_PURPOSE) {
                previous(info);
            }
        }));
    });
}

#[test]
fn a_panicking_task_is_raised_after_every_task_finished_and_the_pool_goes_on() {
    quiet_about_panics_on_purpose();
    model("a panicking job", 2, || {
        with_pool(1, |pool| {
            let finished = AtomicUsize::new(0);
            let caught = catch_unwind(AssertUnwindSafe(|| {
                pool.run(2, &|i| {
                    finished.fetch_add(1, Ordering::Relaxed);
                    if i == 0 {
                        std::panic::panic_any(ON_PURPOSE);
                    }
                })
            }));
            assert!(caught.is_err(), "the task's panic reaches the caller");
            assert_eq!(finished.load(Ordering::Relaxed), 2, "both tasks ran before the call returned");
            run_counted(pool, 2);
        })
    });
}
