//! The process-wide GPU context under several threads at once: every thread runs many small,
//! independent computations (matmul, softmax, mean, attention, AdamW) on the shared context and
//! compares every result with the CPU reference (`cpu::reference`, f64 sums). Each thread's shapes
//! and constants differ from every other thread's, so a kernel that ran with another thread's
//! parameters or read another thread's buffer gives a visibly wrong answer, not a lucky equal one.
//!
//! Sized to run in seconds on lavapipe. Before the fix of the recording race in
//! `GpuContext::dispatch` this failed in most runs on a loaded 2-core machine.

mod common;

use std::sync::Barrier;

use common::*;
use engine::backend::{AdamWSpec, AttentionSpec, AxisSpec, MatmulSpec, UnaryOp};
use engine::cpu::reference;
use engine::{Device, Rng, Tensor, ops};

const THREADS: usize = 6;
const ROUNDS: usize = 40;
/// The length of one job in every thread: its buffers are reused across threads.
const SHARED_LEN: usize = 1031;

/// The GPU tests take turns: a rejected batch fails the work of every thread in it, those of a test
/// running beside it included.
#[cfg(feature = "gpu")]
static GPU_TURNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One computation: its inputs and what the reference says it gives.
struct Job {
    what: String,
    inputs: Vec<(Vec<f32>, Vec<usize>)>,
    want: Vec<f32>,
    atol: f32,
    rtol: f32,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Matmul,
    Softmax,
    Mean,
    Attention { heads: usize },
    AdamW(AdamWSpec),
    Scale(f32),
}

/// The jobs of thread `t`: shapes and constants depend on `t`, none is a tile multiple, except one
/// size that every thread shares so that buffers pass between threads through the pool.
fn jobs_for(t: usize) -> Vec<Job> {
    let mut rng = Rng::new(1000 + t as u64);
    let mut jobs = Vec::new();

    let (m, n, k) = (3 + 2 * t, 17 + 5 * t, 9 + 3 * t);
    let a = wide_values(m * k, -2.0, 2.0, &mut rng);
    let b = wide_values(k * n, -2.0, 2.0, &mut rng);
    let bias = wide_values(n, -2.0, 2.0, &mut rng);
    let want = reference::matmul(&a, &b, Some(&bias), &MatmulSpec::plain(m, n, k));
    let atol = 1e-5 * (k as f32).sqrt() * max_abs(&a).max(1.0) * max_abs(&b).max(1.0);
    jobs.push(Job {
        what: format!("matmul {m}x{n}x{k} + bias"),
        inputs: vec![(a, vec![m, k]), (b, vec![k, n]), (bias, vec![n])],
        want,
        atol,
        rtol: 1e-4,
        kind: Kind::Matmul,
    });

    let (rows, cols) = (1 + t, 37 + 11 * t);
    let x = uniform_values(rows * cols, -20.0, 20.0, &mut rng);
    let want = reference::softmax(&x, rows, cols);
    jobs.push(Job {
        what: format!("softmax [{rows}, {cols}]"),
        inputs: vec![(x, vec![rows, cols])],
        want,
        atol: 1e-6,
        rtol: 1e-4,
        kind: Kind::Softmax,
    });

    // Lengths far apart, so a mean scaled by another thread's 1/n is off by orders of magnitude.
    let len = 100 * (1 + t * t * 7) + t;
    let x = uniform_values(len, -1.0, 3.0, &mut rng);
    let sum = reference::sum_axis(&x, &AxisSpec { outer: 1, axis: len, inner: 1 });
    jobs.push(Job {
        what: format!("mean of {len}"),
        inputs: vec![(x, vec![len])],
        want: vec![sum[0] / len as f32],
        atol: 1e-5,
        rtol: 1e-4,
        kind: Kind::Mean,
    });

    let (batch, seq, heads, dim) = (1 + t % 2, 3 + 2 * t, 1 + t % 3, 8 + 4 * (t % 2));
    let qkv = uniform_values(batch * seq * 3 * heads * dim, -2.0, 2.0, &mut rng);
    let spec = AttentionSpec { heads: batch * heads, seq, dim, scale: 1.0 / (dim as f32).sqrt() };
    let (want, _) = reference::attention_qkv(&qkv, heads, &spec);
    jobs.push(Job {
        what: format!("attention_qkv batch={batch} seq={seq} heads={heads} dim={dim}"),
        inputs: vec![(qkv, vec![batch, seq, 3 * heads * dim])],
        want,
        atol: 1e-5,
        rtol: 1e-4,
        kind: Kind::Attention { heads },
    });

    let len = 50 + 31 * t;
    let p = uniform_values(len, -1.0, 1.0, &mut rng);
    let g = wide_values(len, -3.0, 1.0, &mut rng);
    let m0 = uniform_values(len, -0.1, 0.1, &mut rng);
    let v0 = uniform_values(len, 0.0, 0.01, &mut rng);
    let spec = AdamWSpec {
        lr: 1e-3 * (1 + t) as f32,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.05 * t as f32,
        bias_correction1: 1.0 - 0.9f32.powi(1 + t as i32),
        bias_correction2: 1.0 - 0.95f32.powi(1 + t as i32),
        grad_scale: 1.0 / (1 + t) as f32,
    };
    let (mut pw, mut mw, mut vw) = (p.clone(), m0.clone(), v0.clone());
    reference::adamw_step(&mut pw, &g, &mut mw, &mut vw, &spec);
    let want = [pw, mw, vw].concat();
    jobs.push(Job {
        what: format!("adamw of {len}"),
        inputs: vec![(p, vec![len]), (g, vec![len]), (m0, vec![len]), (v0, vec![len])],
        want,
        atol: 1e-6,
        rtol: 1e-5,
        kind: Kind::AdamW(spec),
    });

    let x = wide_values(SHARED_LEN, -3.0, 3.0, &mut rng);
    let factor = 1.5 * (1 + t) as f32;
    jobs.push(Job {
        what: format!("scale by {factor} (the size every thread uses)"),
        want: reference::unary(UnaryOp::Scale(factor), &x),
        inputs: vec![(x, vec![SHARED_LEN])],
        atol: 0.0,
        rtol: 1e-6,
        kind: Kind::Scale(factor),
    });
    jobs
}

/// Run `job` on `device`: upload, compute, read back.
fn run(job: &Job, device: &Device) -> Vec<f32> {
    let ts: Vec<Tensor> = job.inputs.iter().map(|(v, s)| Tensor::from_slice(v, s, device).unwrap()).collect();
    let _guard = engine::NoGradGuard::new();
    match job.kind {
        Kind::Matmul => ops::matmul_ex(&ts[0], &ts[1], Some(&ts[2]), false, false),
        Kind::Softmax => ops::softmax(&ts[0]),
        Kind::Mean => ops::mean(&ts[0]),
        Kind::Attention { heads } => ops::attention_qkv(&ts[0], heads),
        Kind::Scale(factor) => ops::scale(&ts[0], factor),
        Kind::AdamW(spec) => {
            let [p, g, m, v] = &ts[..] else { unreachable!() };
            device.backend().adamw_step(p.storage(), g.storage(), m.storage(), v.storage(), p.numel(), &spec).unwrap();
            let parts: Vec<Vec<f32>> = [p, m, v].iter().map(|t| t.to_vec().unwrap()).collect();
            return parts.concat();
        }
    }
    .unwrap()
    .to_vec()
    .unwrap()
}

/// Each of `THREADS` threads runs its jobs `ROUNDS` times on `device` and checks every result.
fn run_everywhere_and_check(device: &Device, extra: impl FnOnce() + Send) {
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let start = &start;
            scope.spawn(move || {
                let jobs = jobs_for(t);
                start.wait();
                for round in 0..ROUNDS {
                    // Each thread walks its jobs in its own order, so different kernels overlap.
                    for j in 0..jobs.len() {
                        let job = &jobs[(j + t + round) % jobs.len()];
                        let got = run(job, device);
                        let what = format!("thread {t}, round {round}: {}", job.what);
                        assert_close(&got, &job.want, job.atol, job.rtol, &what);
                    }
                }
            });
        }
        scope.spawn(extra);
    });
}

#[cfg(feature = "gpu")]
#[test]
fn threads_sharing_the_gpu_context_each_get_the_reference_results() {
    let _turn = GPU_TURNS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = engine::gpu::test_device() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let ctx = g.context().clone();
    // Beside the workers, one thread switches the timestamp profiler on and off and reads it, as a
    // monitoring thread of a server would: the profiler's read-backs must not disturb the workers.
    let profile_beside = move || {
        if !ctx.has_timestamps() {
            eprintln!("note: {} has no timestamp queries; the profiler is not exercised", ctx.adapter.name);
            return;
        }
        for _ in 0..10 {
            ctx.start_profiling().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            ctx.synchronize().unwrap();
            ctx.stop_profiling().unwrap();
        }
    };
    run_everywhere_and_check(&gpu, profile_beside);
}

/// One thread records a dispatch that wgpu rejects at submit, round after round, while the others
/// scale vectors: a rejected batch runs none of its commands, so every thread with work in it must
/// get an error (the saboteur every round, whichever thread submits the batch), and a thread that
/// gets values must get the right ones. Each worker's factor is new every round, so an output left
/// unwritten (holding an earlier round's values from the pool) cannot pass for a result.
#[cfg(feature = "gpu")]
#[test]
fn a_rejected_batch_fails_every_thread_whose_work_it_held() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _turn = GPU_TURNS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gpu) = engine::gpu::test_device() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let ctx = g.context().clone();
    let lost = AtomicUsize::new(0);
    let start = Barrier::new(THREADS + 1);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (gpu, start, lost) = (&gpu, &start, &lost);
            scope.spawn(move || {
                let len = SHARED_LEN + 7 * t;
                let x = uniform_values(len, -3.0, 3.0, &mut Rng::new(3000 + t as u64));
                start.wait();
                for round in 0..ROUNDS {
                    let factor = 1.0 + (t * ROUNDS + round) as f32;
                    let got = Tensor::from_slice(&x, &[len], gpu).and_then(|x| ops::scale(&x, factor)?.to_vec());
                    match got {
                        Ok(v) => assert_close(
                            &v,
                            &reference::unary(UnaryOp::Scale(factor), &x),
                            0.0,
                            1e-6,
                            &format!("thread {t}, round {round}: scale by {factor}"),
                        ),
                        Err(e) => {
                            let e = e.to_string();
                            assert!(e.contains("rejected a batch"), "thread {t}, round {round}: {e}");
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let (gpu, start) = (&gpu, &start);
        scope.spawn(move || {
            let x = Tensor::full(&[777], 1.0, gpu).unwrap();
            start.wait();
            for round in 0..ROUNDS {
                ctx.oversize_next_dispatch_for_test();
                // Recorded without complaint: wgpu finds the dispatch invalid when the batch is encoded.
                let y = ops::scale(&x, 2.0).unwrap();
                // Give the workers time to put work into the same batch and submit it.
                std::thread::sleep(std::time::Duration::from_millis(2));
                let err =
                    y.to_vec().map(|_| ()).expect_err("a rejected dispatch's output read back as a result").to_string();
                assert!(err.contains("rejected a batch"), "saboteur, round {round}: {err}");
            }
        });
    });
    // Not a property of the context, but of this test: it must have made workers share the batch.
    assert!(
        lost.load(Ordering::Relaxed) > 0,
        "no worker ever had work in a rejected batch; the test exercised nothing"
    );
}

#[test]
fn threads_sharing_the_cpu_backend_each_get_the_reference_results() {
    // The CPU backend keeps no state between calls but thread-locals and read-only tables, so
    // concurrent callers cannot disturb each other; the profiler beside them is one locked table.
    run_everywhere_and_check(&Device::Cpu, || {
        for _ in 0..10 {
            engine::cpu::profile::start();
            std::thread::sleep(std::time::Duration::from_millis(5));
            let _ = engine::cpu::profile::stop();
        }
    });
}

/// A small two-layer network's loss and gradients, through the tape.
fn mlp_gradients(device: &Device, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let x = Tensor::uniform(&[13, 21], -1.0, 1.0, &mut rng, device).unwrap();
    let w1 = Tensor::uniform(&[34, 21], -0.5, 0.5, &mut rng, device).unwrap().with_grad();
    let b1 = Tensor::uniform(&[34], -0.5, 0.5, &mut rng, device).unwrap().with_grad();
    let w2 = Tensor::uniform(&[34, 5], -0.5, 0.5, &mut rng, device).unwrap().with_grad();
    let h = ops::gelu(&ops::linear(&x, &w1, Some(&b1)).unwrap()).unwrap();
    let y = ops::softmax(&h.matmul(&w2).unwrap()).unwrap();
    engine::backward(&ops::square(&y).unwrap().mean().unwrap()).unwrap();
    [&w1, &b1, &w2].iter().map(|t| t.grad().unwrap().to_vec().unwrap()).collect()
}

#[test]
fn tapes_of_concurrent_threads_stay_apart_and_give_the_bits_of_a_lone_run() {
    // The tape is per thread and tensors cannot cross threads (they are not `Send`), so threads
    // training at once must each get exactly the gradients they get alone.
    let alone: Vec<_> = (0..THREADS as u64).map(|s| mlp_gradients(&Device::Cpu, s)).collect();
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for (t, want) in alone.iter().enumerate() {
            let start = &start;
            scope.spawn(move || {
                start.wait();
                for round in 0..ROUNDS {
                    let got = mlp_gradients(&Device::Cpu, t as u64);
                    assert_eq!(&got, want, "thread {t}, round {round}: gradients differ from a lone run");
                }
            });
        }
    });
}
