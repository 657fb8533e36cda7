//! Recycled CPU buffers (`engine::cpu::recycle`) change nothing: training with them gives the same
//! bits as training without. A test binary of its own, because turning recycling on is
//! process-wide: here no other test runs beside it.

use engine::Device;
use engine::cpu::recycle;
use mae::config::ModelConfig;
use mae::source::DataSource;
use mae::train::{Budget, TrainOptions, train};

/// The switch is process-wide: the tests of this binary take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(name: &str) -> Vec<f32> {
    run_with_batch(name, 128)
}

fn run_with_batch(name: &str, batch: usize) -> Vec<f32> {
    let out = std::env::temp_dir().join(format!("mae-recycling-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut o = TrainOptions::new(
        ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap(),
        DataSource::Builtin { count: 512 },
        out.clone(),
    );
    o.budget = Budget { steps: Some(4), ..Default::default() };
    // Big enough that most activations are over the recycler's smallest length.
    o.batch_size = batch;
    o.base_lr = 1e-2;
    o.verbose = false;
    o.pictures = false;
    let r = train(&o, &Device::Cpu, None).unwrap();
    std::fs::remove_dir_all(out).unwrap();
    r.losses.iter().map(|l| l.1).collect()
}

#[test]
fn training_with_recycled_buffers_gives_the_same_bits() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    recycle::set_enabled(false);
    let fresh = run("off");
    recycle::set_enabled(true);
    // The first run fills the pool; the second reuses buffers that hold the first one's values.
    let first = run("on-1");
    assert!(recycle::held_bytes() > 0, "nothing was kept for reuse");
    let misses = recycle::misses();
    let reused = run("on-2");
    // The second run, of the same shapes, found every buffer it asked for in the pool.
    assert_eq!(recycle::misses(), misses, "the second run allocated outputs anew");
    recycle::set_enabled(false);
    assert_eq!(fresh, first);
    assert_eq!(fresh, reused);
}

#[test]
fn runs_on_many_threads_at_once_each_give_their_own_bits() {
    // Each thread keeps its own pool (a CPU storage never leaves its thread): four runs of two
    // batch sizes at once, sharing the worker pool, give what each gives alone.
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    recycle::set_enabled(false);
    let alone = [run_with_batch("alone-64", 64), run_with_batch("alone-128", 128)];
    recycle::set_enabled(true);
    let together: Vec<Vec<f32>> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|i| {
                let batch = if i % 2 == 0 { 64 } else { 128 };
                s.spawn(move || run_with_batch(&format!("thread-{i}"), batch))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    recycle::set_enabled(false);
    for (i, got) in together.iter().enumerate() {
        assert_eq!(got, &alone[i % 2], "thread {i}");
    }
}
