//! Running out of GPU memory is survived by one retry or reported as what it is, and never leaves a
//! broken buffer behind for later work. Real exhaustion cannot be provoked on a software adapter, so
//! the context's test hook makes the next creations fail as out-of-memory does. The tests take turns
//! (one lock): the hook drops the spare uniform arenas so that the next dispatch creates one, which
//! holds only while no other test's batch has an arena.
#![cfg(feature = "gpu")]

mod common;

use std::sync::{Mutex, mpsc};

use common::*;
use engine::{Device, Rng, Tensor, ops};

static TURNS: Mutex<()> = Mutex::new(());

fn values(len: usize, seed: u64) -> Vec<f32> {
    uniform_values(len, -3.0, 3.0, &mut Rng::new(seed))
}

fn doubled(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| 2.0 * v).collect()
}

#[test]
fn a_uniform_arena_out_of_memory_once_is_retried() {
    let _turn = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = engine::gpu::test_device() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let ctx = g.context();
    let x = values(1001, 1);
    let t = Tensor::from_slice(&x, &[x.len()], &gpu).unwrap();
    ctx.flush().unwrap();
    ctx.inject_out_of_memory_for_test(1, 0);
    let y = ops::scale(&t, 2.0).and_then(|y| y.to_vec());
    assert_eq!(ctx.inject_out_of_memory_for_test(0, 0), (0, 0), "the dispatch created no arena");
    assert_eq!(y.unwrap(), doubled(&x));
    for seed in 2..5 {
        let x = values(1001, seed);
        let y = Tensor::from_slice(&x, &[x.len()], &gpu).and_then(|t| ops::scale(&t, 2.0)?.to_vec());
        assert_eq!(y.unwrap(), doubled(&x), "a dispatch after the retried one");
    }
}

#[test]
fn a_uniform_arena_that_stays_out_of_memory_fails_its_dispatch_only() {
    let _turn = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = engine::gpu::test_device() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let ctx = g.context();
    let x = values(1003, 5);
    let t = Tensor::from_slice(&x, &[x.len()], &gpu).unwrap();
    ctx.flush().unwrap();
    ctx.inject_out_of_memory_for_test(2, 0);
    let err = ops::scale(&t, 2.0).map(|_| ()).expect_err("both tries ran out of memory").to_string();
    assert_eq!(ctx.inject_out_of_memory_for_test(0, 0), (0, 0), "the dispatch did not retry once");
    assert!(err.contains("out of GPU memory creating a uniform arena"), "{err}");
    // No broken arena was kept: every later dispatch works, through many arenas' worth of slots.
    for round in 0..600 {
        let y = ops::scale(&t, 2.0).and_then(|y| y.to_vec());
        assert_eq!(y.unwrap(), doubled(&x), "dispatch {round} after the failed one");
    }
}

#[test]
fn an_out_of_memory_retry_reports_its_own_outcome_not_another_threads_fault() {
    let _turn = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = engine::gpu::test_device() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let ctx = g.context();
    let (recorded_tx, recorded) = mpsc::channel();
    let (go_tx, go) = mpsc::channel();
    std::thread::scope(|scope| {
        let go_tx = go_tx; // dropped if this thread panics, so that A does not wait forever
        // Thread A records a dispatch that wgpu will reject, and reads its output only later.
        let (gpu, recorded_tx) = (&gpu, recorded_tx);
        let a = scope.spawn(move || {
            let t = Tensor::full(&[555], 1.0, gpu).unwrap();
            ctx.oversize_next_dispatch_for_test();
            let y = ops::scale(&t, 2.0).unwrap();
            recorded_tx.send(()).unwrap();
            let _ = go.recv();
            y.to_vec().map(|_| ()).expect_err("the rejected dispatch's output read back as a result").to_string()
        });
        recorded.recv().unwrap();
        // This thread submits A's batch: it lost nothing of this thread's, so the flush succeeds.
        ctx.flush().expect("a batch holding none of this thread's work failed this thread's flush");
        // Its allocations meet out-of-memory while A's fault is pending: each reports its own outcome.
        ctx.inject_out_of_memory_for_test(0, 2);
        let err = Tensor::zeros(&[12345], gpu).map(|_| ()).expect_err("both tries ran out of memory").to_string();
        assert!(err.contains("out of GPU memory creating a tensor"), "{err}");
        ctx.inject_out_of_memory_for_test(0, 1);
        let z = Tensor::zeros(&[12347], gpu).and_then(|z| z.to_vec());
        assert_eq!(z.expect("the retry had memory"), vec![0.0; 12347]);
        go_tx.send(()).unwrap();
        let a_err = a.join().unwrap();
        assert!(a_err.contains("rejected a batch"), "{a_err}");
    });
}
