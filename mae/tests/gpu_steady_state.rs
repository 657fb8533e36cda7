//! What a steady-state training step asks of the GPU. Its own test binary: the context's counters
//! count the work of every thread, so no other test may use the GPU meanwhile.
#![cfg(feature = "gpu")]

use std::path::PathBuf;

use mae::config::ModelConfig;
use mae::source::DataSource;
use mae::train::{Budget, TrainOptions, Trainer};

#[test]
fn a_steady_state_gpu_step_creates_no_buffer_and_reads_back_only_the_loss() {
    let Some(gpu) = engine::gpu::test_device() else { return };
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
    assert_eq!((last.read_backs, last.bytes_read_back), (1, 4), "only the loss comes back: {last}");
    assert!(last.dispatches > 0 && last.submissions > 0, "{last}");
    // What a step uploads is its batch (patches, targets, masks, indices), the same every step.
    assert!(per_step[per_step.len() - 2].bytes_uploaded == last.bytes_uploaded, "{per_step:?}");
    std::fs::remove_dir_all(out).unwrap();
}
