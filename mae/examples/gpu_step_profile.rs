//! What a training step asks of the GPU, kernel by kernel: runs `mae train`'s steps (the trainer
//! itself: packing, masking, forward, backward, the packed AdamW) on any GPU adapter, software ones
//! included, with timestamp queries around every dispatch after the warm-up steps, and prints each
//! kernel's dispatches per step and its share of the kernel time.
//!
//! ```text
//! cargo run --release -p mae --example gpu_step_profile -- [DATA] [BATCH] [STEPS] [MODEL] [--by-shape] [--matmul-precision=P]
//! ```
//! `--by-shape` gives one row per entry point, override constants and workgroup grid (each distinct
//! product of a step) instead of one per entry point. `--matmul-precision=f16` trains with f16
//! products (tensor cores where the adapter has them) as `mae train --matmul-precision` does; f32 by
//! default.
//! `DATA` as `mae train --data` takes it (default `fashion-mnist`), `BATCH` (default 32), `STEPS`
//! the profiled steps (default 2, after four warm-up steps: a steady step creates no bind group from
//! the third or fourth on), `MODEL` a preset (default: the data's).
//! The dispatch counts are the same on every adapter; the times mean something on hardware only.

/// Steps before any is measured: the caching pool settles and every bind group is cached.
#[cfg(feature = "gpu")]
const WARM_UP: u64 = 4;

#[cfg(feature = "gpu")]
fn main() -> mae::Result<()> {
    use engine::Device;
    use mae::config::ModelConfig;
    use mae::source::DataSource;
    use mae::train::{Budget, TrainOptions, Trainer};

    let all: Vec<String> = std::env::args().skip(1).collect();
    let by_shape = all.iter().any(|a| a == "--by-shape");
    let precision: engine::cpu::matmul::Precision = match all.iter().find_map(|a| a.strip_prefix("--matmul-precision="))
    {
        Some(p) => p.parse().map_err(mae::Error::Config)?,
        None => engine::cpu::matmul::Precision::F32,
    };
    let args: Vec<String> = all.into_iter().filter(|a| !a.starts_with("--")).collect();
    let data: DataSource = args.first().map(String::as_str).unwrap_or("fashion-mnist").parse()?;
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let steps: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let model = ModelConfig::by_name(match (args.get(3), &data) {
        (Some(name), _) => name.as_str(),
        (None, DataSource::FashionMnist { .. } | DataSource::Idx { .. }) => "mae_vit_micro_patch4_28",
        (None, _) => "mae_vit_micro_patch4_32",
    })?;
    let dev = Device::gpu()?;
    let Device::Gpu(gpu) = &dev else { unreachable!("Device::gpu gives a GPU") };
    let ctx = gpu.context();
    if !ctx.has_timestamps() {
        eprintln!("note: this adapter has no timestamp queries; counting dispatches only");
    }
    let out = std::env::temp_dir().join(format!("mae-gpu-step-profile-{}", std::process::id()));
    let mut o = TrainOptions::new(model.clone(), data.clone(), out.clone());
    o.budget = Budget { steps: Some(WARM_UP + 2 * steps), ..Default::default() };
    (o.batch_size, o.verbose, o.pictures, o.matmul_precision) = (batch, false, false, precision);
    let mut t = Trainer::new(&o, &dev)?;
    println!("{} on {data}, batch {batch}, {}", model.name, dev.name());
    println!("matrix products: {}", dev.describe_products(precision));
    println!(
        "matmul.wgsl's runtime checks: bounds {}, wgpu's loop counter {} (MAE_GPU_BOUNDS_CHECKS, MAE_GPU_LOOP_BOUNDING)",
        if ctx.runs_unchecked("matmul") { "off" } else { "on" },
        if ctx.runs_unbounded_loops("matmul") { "off" } else { "on" }
    );
    for _ in 0..WARM_UP {
        t.step()?;
    }
    // Wall-clock images/s over the same number of steps, before any timestamp query slows them.
    // No synchronisation first: the step before the clock left the GPU as far behind as each timed
    // step leaves it (so the tails cancel), and a wait here would hand the pool its buffers in
    // another order, making the next steps create bind groups again.
    let clock = std::time::Instant::now();
    let unprofiled = ctx.counters();
    let (mut waited_for_device, mut waited_for_batch) = (0.0, 0.0);
    for _ in 0..steps {
        let r = t.step()?;
        (waited_for_device, waited_for_batch) =
            (waited_for_device + r.waited_for_device_secs, waited_for_batch + r.waited_for_batch_secs);
    }
    dev.synchronize()?;
    let secs = clock.elapsed().as_secs_f64() / steps as f64;
    let host = ctx.counters() - unprofiled;
    println!("wall clock, unprofiled: {:.1} ms per step, {:.0} images/s", secs * 1e3, batch as f64 / secs);
    // Where the step's thread spent the wall clock: blocked on the GPU (the loss, and with f16 the
    // gradient check), blocked on the prefetch thread's batch, or working. The GPU runs the
    // backward while the thread works, so a GPU-bound step mostly waits.
    let (device_ms, batch_ms) = (waited_for_device * 1e3 / steps as f64, waited_for_batch * 1e3 / steps as f64);
    println!(
        "the step's thread: waiting for the GPU {device_ms:.2} ms, waiting for its batch {batch_ms:.2} ms, working {:.2} ms \
         per step",
        secs * 1e3 - device_ms - batch_ms
    );
    // The host's own part of a step in the GPU context (recording dispatches, encoding and
    // submitting batches), beside the wall clock; the rest of the host's time (the tape, the
    // trainer) and the GPU's run between and around it.
    let (record, submit) = (host.recording_ns as f64 / steps as f64, host.submitting_ns as f64 / steps as f64);
    println!(
        "host, recording: {:.2} ms per step ({:.1} us a dispatch, {} bind groups created per step), encoding and \
         submitting: {:.2} ms per step; together {:.0}% of the wall clock",
        record * 1e-6,
        record * 1e-3 / (host.dispatches as f64 / steps as f64).max(1.0),
        host.bind_groups_created / steps,
        submit * 1e-6,
        100.0 * (record + submit) * 1e-9 / secs
    );
    if ctx.adapter.is_software() {
        println!(
            "note: a software adapter runs the kernels inside the submission, so its submitting time is the GPU's"
        );
    }
    let before = ctx.counters();
    if ctx.has_timestamps() {
        if by_shape { ctx.start_profiling_by_shape()? } else { ctx.start_profiling()? }
    }
    for _ in 0..steps {
        t.step()?;
    }
    dev.synchronize()?;
    let work = ctx.counters() - before;
    let kernels = if ctx.has_timestamps() { ctx.stop_profiling_kernels()? } else { Vec::new() };
    let _ = std::fs::remove_dir_all(&out);

    let per_step = |n: f64| n / steps as f64;
    println!("\nall {steps} profiled steps: {work}\n");
    let total_ns: f64 = kernels.iter().map(|k| k.ns).sum();
    if ctx.has_timestamps() {
        // Issue 42's host share: the unprofiled wall clock minus the kernels' own time, which is
        // the host's recording and waiting plus the GPU's idle gaps between kernels.
        let kernel_ms = per_step(total_ns) * 1e-6;
        println!(
            "kernel time: {kernel_ms:.2} ms per step; wall clock minus kernel time: {:.2} ms, {:.0}% of the wall clock",
            secs * 1e3 - kernel_ms,
            100.0 * (1.0 - kernel_ms * 1e-3 / secs)
        );
        // Issue 42's product rate: the matrix products' FLOPs over their own kernel time (split-K's
        // sums of slices, a reduction kernel, not included).
        let products =
            kernels.iter().filter(|k| k.flops > 0).fold(
                engine::gpu::KernelTime { name: "products".into(), dispatches: 0, ns: 0.0, flops: 0 },
                |sum, k| engine::gpu::KernelTime { flops: sum.flops + k.flops, ns: sum.ns + k.ns, ..sum },
            );
        println!(
            "products: {:.1} GFLOP per step in {:.2} ms of kernel time ({:.0}% of it): {:.1} TFLOP/s\n",
            per_step(products.flops as f64) * 1e-9,
            per_step(products.ns) * 1e-6,
            100.0 * products.ns / total_ns.max(1.0),
            products.tflops()
        );
    }
    let mut rows = kernels;
    rows.sort_by(|a, b| b.dispatches.cmp(&a.dispatches).then(b.ns.total_cmp(&a.ns)));
    println!("| kernel | dispatches per step | kernel time per step | share | TFLOP/s |");
    println!("|---|---:|---:|---:|---:|");
    for k in &rows {
        let rate = if k.flops > 0 { format!("{:.1}", k.tflops()) } else { String::new() };
        println!(
            "| {} | {:.0} | {:.3} ms | {:.1}% | {rate} |",
            k.name,
            per_step(k.dispatches as f64),
            per_step(k.ns) * 1e-6,
            100.0 * k.ns / total_ns.max(1.0)
        );
    }
    Ok(())
}

#[cfg(not(feature = "gpu"))]
fn main() {
    eprintln!("{}", engine::device::NO_GPU_BACKEND);
}
