//! Read-backs requested now and waited for later (`Tensor::read_later`): the values are those at
//! request time whatever is recorded after the request, several may be pending at once, a dropped
//! one costs nothing later, and on the GPU a request is one read-back and one submission.
//!
//! The GPU tests take turns (one lock for the binary), so that the counting test sees only its own
//! work.

mod common;

use std::sync::{Barrier, Mutex, MutexGuard};

use common::*;
use engine::{Device, Rng, Tensor, ops};

static GPU_TURNS: Mutex<()> = Mutex::new(());

/// The GPU, with this binary's turn held while the guard lives; `None` (skipped) without one.
#[cfg(feature = "gpu")]
fn gpu_turn() -> Option<(MutexGuard<'static, ()>, Device)> {
    let turn = GPU_TURNS.lock().unwrap_or_else(|p| p.into_inner());
    Some((turn, engine::gpu::test_device()?))
}

#[cfg(not(feature = "gpu"))]
fn gpu_turn() -> Option<(MutexGuard<'static, ()>, Device)> {
    let _ = &GPU_TURNS;
    None
}

#[test]
fn a_read_requested_later_gives_what_to_vec_gives_on_an_uneven_shape() {
    let Some((_turn, gpu)) = gpu_turn() else { return };
    let mut rng = Rng::new(5);
    let values = wide_values(137, -3.0, 3.0, &mut rng);
    let x = Tensor::from_vec(values, &[1, 137], &gpu).unwrap();
    let y = x.scale(-1.5).unwrap();
    let read = y.read_later().unwrap();
    assert_eq!(read.shape(), &[1, 137]);
    assert_eq!(read.wait().unwrap(), y.to_vec().unwrap());

    let one = y.sum().unwrap();
    let want = one.item().unwrap();
    assert_eq!(one.read_later().unwrap().item().unwrap(), want);
    let err = y.read_later().unwrap().item().unwrap_err().to_string();
    assert!(err.contains("[1, 137]"), "{err}");
}

#[test]
fn a_read_gives_the_values_at_request_time_though_later_commands_overwrite_them() {
    let Some((_turn, gpu)) = gpu_turn() else { return };
    let old: Vec<f32> = (0..45 * 33).map(|i| i as f32 * 0.25 - 100.0).collect();
    let new: Vec<f32> = old.iter().map(|v| -v + 7.0).collect();
    let x = Tensor::from_vec(old.clone(), &[45, 33], &gpu).unwrap();
    let doubled = x.scale(2.0).unwrap();
    let read_x = x.read_later().unwrap();
    let read_doubled = doubled.read_later().unwrap();
    // More work than one batch holds, so that some of it is submitted before the waits: a backward
    // pass recorded while the loss is read.
    let mut busy = Tensor::from_vec(vec![1.0; 1031], &[1031], &gpu).unwrap();
    for _ in 0..500 {
        busy = busy.scale(1.0).unwrap();
    }
    x.assign(&Tensor::from_vec(new.clone(), &[45, 33], &gpu).unwrap()).unwrap();
    doubled.assign(&x.scale(3.0).unwrap()).unwrap();
    assert_eq!(read_x.wait().unwrap(), old, "the read holds the values before the assign");
    let want_doubled: Vec<f32> = old.iter().map(|v| v * 2.0).collect();
    assert_eq!(read_doubled.wait().unwrap(), want_doubled);
    assert_eq!(x.to_vec().unwrap(), new, "a fresh read sees the assign");
    let want_tripled: Vec<f32> = new.iter().map(|v| v * 3.0).collect();
    assert_eq!(doubled.to_vec().unwrap(), want_tripled);
    assert_eq!(busy.to_vec().unwrap(), vec![1.0; 1031]);
}

#[test]
fn pending_reads_waited_in_reverse_order_each_return_their_own_values() {
    let Some((_turn, gpu)) = gpu_turn() else { return };
    let x = Tensor::from_vec((0..257).map(|i| i as f32).collect(), &[257], &gpu).unwrap();
    let mut wants = Vec::new();
    let mut reads = Vec::new();
    let mut y = x.clone();
    for k in 1..=12 {
        y = ops::add_scalar(&y, k as f32).unwrap();
        wants.push(y.to_vec().unwrap());
        reads.push(y.read_later().unwrap());
    }
    // A read of the same storage each time would show a later value; these are different tensors,
    // but also one storage read at several points:
    let acc = Tensor::from_vec(vec![0.0; 19], &[19], &gpu).unwrap();
    let mut acc_reads = Vec::new();
    for k in 0..6 {
        acc.assign(&Tensor::from_vec(vec![k as f32; 19], &[19], &gpu).unwrap()).unwrap();
        acc_reads.push((k, acc.read_later().unwrap()));
    }
    for (read, want) in reads.into_iter().zip(wants).rev() {
        assert_eq!(read.wait().unwrap(), want);
    }
    for (k, read) in acc_reads.into_iter().rev() {
        assert_eq!(read.wait().unwrap(), vec![k as f32; 19], "the read requested after assign {k}");
    }
}

#[test]
fn threads_requesting_and_waiting_reads_at_once_each_get_their_own_values() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 50;
    let Some((_turn, gpu)) = gpu_turn() else { return };
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (gpu, start) = (&gpu, &start);
            scope.spawn(move || {
                // Lengths differ per thread (none a tile multiple) except one that all share, so
                // buffers pass between threads through the pool.
                let len = if t % 2 == 0 { 1031 } else { 67 + 13 * t };
                let base: Vec<f32> = (0..len).map(|i| (t * 10_000 + i) as f32).collect();
                let x = Tensor::from_vec(base.clone(), &[len], gpu).unwrap();
                start.wait();
                for round in 0..ROUNDS {
                    let shift = (round * THREADS + t) as f32;
                    let y = ops::add_scalar(&x, shift).unwrap();
                    let read = y.read_later().unwrap();
                    let sum_read = y.sum().unwrap().read_later().unwrap();
                    // Work recorded after the request, overwriting what was read.
                    y.assign(&x.scale(-1.0).unwrap()).unwrap();
                    let got = read.wait().unwrap();
                    let want: Vec<f32> = base.iter().map(|v| v + shift).collect();
                    assert_eq!(got, want, "thread {t}, round {round}");
                    let sum: f64 = want.iter().map(|&v| v as f64).sum();
                    let got_sum = sum_read.item().unwrap() as f64;
                    assert!(
                        (got_sum - sum).abs() <= 1e-5 * sum.abs(),
                        "thread {t}, round {round}: sum {got_sum} vs {sum}"
                    );
                }
            });
        }
    });
}

#[test]
fn a_read_dropped_without_waiting_does_not_hang_later_reads() {
    let Some((_turn, gpu)) = gpu_turn() else { return };
    let x = Tensor::from_vec((0..137).map(|i| i as f32).collect(), &[137], &gpu).unwrap();
    for k in 0..20 {
        drop(x.scale(k as f32).unwrap().read_later().unwrap());
    }
    let y = x.scale(2.0).unwrap();
    let want: Vec<f32> = (0..137).map(|i| 2.0 * i as f32).collect();
    assert_eq!(y.to_vec().unwrap(), want);
    assert_eq!(y.read_later().unwrap().wait().unwrap(), want);
    gpu.synchronize().unwrap();
}

#[cfg(feature = "gpu")]
#[test]
fn a_request_is_one_read_back_and_one_submission_and_its_wait_submits_nothing() {
    let Some((_turn, gpu)) = gpu_turn() else { return };
    let x = Tensor::from_vec((0..137).map(|i| i as f32).collect(), &[1, 137], &gpu).unwrap();
    let y = x.scale(3.0).unwrap();
    gpu.synchronize().unwrap();
    let before = gpu.gpu_counters().unwrap();
    let z = ops::add_scalar(&y, 1.0).unwrap();
    let read = z.read_later().unwrap();
    let requested = gpu.gpu_counters().unwrap() - before;
    assert_eq!((requested.read_backs, requested.bytes_read_back), (1, 137 * 4), "{requested}");
    assert_eq!(requested.submissions, 1, "the add and the copy go in one batch: {requested}");
    // Recorded after the request and left unsubmitted: the wait must not need it.
    let later = z.scale(5.0).unwrap();
    let values = read.wait().unwrap();
    let waited = gpu.gpu_counters().unwrap() - before;
    assert_eq!((waited.submissions, waited.read_backs), (1, 1), "the wait submitted nothing: {waited}");
    let want: Vec<f32> = (0..137).map(|i| 3.0 * i as f32 + 1.0).collect();
    assert_eq!(values, want);
    assert_eq!(later.to_vec().unwrap(), want.iter().map(|v| v * 5.0).collect::<Vec<_>>());
}

#[test]
fn on_the_cpu_a_read_requested_later_is_ready_at_once() {
    let cpu = Device::Cpu;
    let x = Tensor::from_vec((0..137).map(|i| i as f32 - 60.0).collect(), &[1, 137], &cpu).unwrap();
    let read = x.read_later().unwrap();
    assert!(read.is_ready());
    x.assign(&x.scale(2.0).unwrap()).unwrap();
    let want: Vec<f32> = (0..137).map(|i| i as f32 - 60.0).collect();
    assert_eq!(read.wait().unwrap(), want, "the values at request time");
    assert_eq!(x.to_vec().unwrap(), want.iter().map(|v| v * 2.0).collect::<Vec<_>>());
    let one = x.sum().unwrap();
    assert_eq!(one.read_later().unwrap().item().unwrap(), one.item().unwrap());
    let err = x.read_later().unwrap().item().unwrap_err().to_string();
    assert!(err.contains("[1, 137]"), "{err}");
}
