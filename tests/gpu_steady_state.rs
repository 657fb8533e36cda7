//! What a steady-state training step asks of the GPU. Its own test binary: the context's counters
//! count the work of every thread, so no other test may use the GPU meanwhile (the tests here take
//! `ONE_AT_A_TIME` in turn).
#![cfg(feature = "gpu")]

use std::path::PathBuf;

use mae::config::ModelConfig;
use mae::source::DataSource;
use mae::train::{Budget, TrainOptions, Trainer};

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_steady_state_gpu_step_creates_no_buffer_and_reads_back_only_the_loss() {
    let Some(gpu) = engine::gpu::test_device() else { return };
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out: PathBuf = std::env::temp_dir().join(format!("mae-gpu-steady-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut o = TrainOptions::new(
        ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap(),
        DataSource::Builtin { count: 512 },
        out.clone(),
    );
    o.budget = Budget { steps: Some(6), ..Default::default() };
    (o.batch_size, o.verbose, o.pictures) = (32, false, false);
    let mut t = Trainer::new(&o, &gpu).unwrap();
    let mut per_step = Vec::new();
    while !t.is_done() {
        t.step().unwrap();
        per_step.push(t.last_step_gpu_counters().expect("counters on a GPU"));
    }
    // The first steps fill the buffer pool; from then on a step allocates nothing.
    let last = per_step.last().unwrap();
    eprintln!("steady-state step on {}: {last}", gpu.name());
    assert_eq!(last.buffers_created, 0, "a steady-state step created buffers: {last}");
    // The pool hands the step the same buffers in the same places, so every bind group is cached.
    assert_eq!(last.bind_groups_created, 0, "a steady-state step created bind groups: {last}");
    assert_eq!((last.read_backs, last.bytes_read_back), (1, 4), "only the loss comes back: {last}");
    assert!(last.dispatches > 0 && last.submissions > 0, "{last}");
    // The parameters are packed and one AdamW dispatch updates them all, reading the gradients
    // from one buffer: the linear layers' and LayerNorms' backward kernels write theirs there
    // (their gradient homes); only the cls and mask tokens' are copied in (a copy, not a kernel).
    assert_eq!(last.copies, 2, "only the two tokens' gradients are copied into the packed buffer: {last}");
    // Without the homes (`MAE_GPU_GRAD_HOMES=0`) every gradient is copied in.
    let trainable = mae::model::MaskedAutoencoder::new(&o.model, 0, &engine::Device::Cpu).unwrap().trainable().len();
    let copied = out.join("copied");
    let mut o = TrainOptions { grad_homes: false, out_dir: copied, ..o };
    o.budget = Budget { steps: Some(4), ..Default::default() };
    let mut t = Trainer::new(&o, &gpu).unwrap();
    while !t.is_done() {
        t.step().unwrap();
    }
    let last = t.last_step_gpu_counters().unwrap();
    assert_eq!(last.copies, trainable as u64, "without the homes, one gradient copy per parameter: {last}");
    // What a step uploads is its batch (patches, targets, masks, indices), the same every step.
    assert!(per_step[per_step.len() - 2].bytes_uploaded == last.bytes_uploaded, "{per_step:?}");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn adamw_updates_a_packed_model_in_one_dispatch_as_the_cpu_does_tensor_by_tensor() {
    use engine::{Device, Tensor};
    use mae::model::MaskedAutoencoder;
    use mae::optim::{AdamW, AdamWConfig};
    let Some(gpu) = engine::gpu::test_device() else { return };
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Device::Gpu(handle) = &gpu else { unreachable!() };
    let cfg = ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap();
    let mut updated = Vec::new();
    for dev in [Device::Cpu, gpu.clone()] {
        let mut model = MaskedAutoencoder::new(&cfg, 3, &dev).unwrap();
        model.pack().unwrap();
        let params = model.trainable();
        // Gradients 2p + 1 (of sum(p^2 + p)), different for every value.
        let mut loss = Tensor::scalar(0.0, &dev).unwrap();
        for p in &params {
            loss = loss.add(&p.tensor.mul(&p.tensor).unwrap().add(&p.tensor).unwrap().sum().unwrap()).unwrap();
        }
        engine::backward(&loss).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default(), &params, &dev).unwrap();
        assert_eq!(opt.is_packed(), dev != Device::Cpu, "packed on the GPU only");
        let before = handle.context().counters();
        opt.step(&params, 1e-2, 0.5).unwrap();
        if dev != Device::Cpu {
            let work = handle.context().counters() - before;
            assert_eq!((work.dispatches, work.copies), (1, params.len() as u64), "{work}");
        }
        assert!(params.iter().all(|p| p.tensor.grad().is_none()), "the step clears the gradients");
        updated.push(params.iter().map(|p| p.tensor.to_vec().unwrap()).collect::<Vec<_>>());
    }
    for (cpu, gpu) in updated[0].iter().zip(&updated[1]) {
        for (c, g) in cpu.iter().zip(gpu) {
            assert!((c - g).abs() <= 1e-6 + 1e-5 * c.abs(), "cpu {c} gpu {g}");
        }
    }
}
