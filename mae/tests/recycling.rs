//! Recycled CPU buffers (`engine::cpu::recycle`) change nothing: training with them gives the same
//! bits as training without. A test binary of its own, because turning recycling on is
//! process-wide: here no other test runs beside it.

use engine::Device;
use engine::cpu::recycle;
use mae::config::ModelConfig;
use mae::source::DataSource;
use mae::train::{Budget, TrainOptions, train};

fn run(name: &str) -> Vec<f32> {
    let out = std::env::temp_dir().join(format!("mae-recycling-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut o = TrainOptions::new(
        ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap(),
        DataSource::Builtin { count: 512 },
        out.clone(),
    );
    o.budget = Budget { steps: Some(4), ..Default::default() };
    // Big enough that most activations are over the recycler's smallest length.
    o.batch_size = 128;
    o.base_lr = 1e-2;
    o.verbose = false;
    o.pictures = false;
    let r = train(&o, &Device::Cpu, None).unwrap();
    std::fs::remove_dir_all(out).unwrap();
    r.losses.iter().map(|l| l.1).collect()
}

#[test]
fn training_with_recycled_buffers_gives_the_same_bits() {
    recycle::set_enabled(false);
    let fresh = run("off");
    recycle::set_enabled(true);
    // The first run fills the pool; the second reuses buffers that hold the first one's values.
    let first = run("on-1");
    assert!(recycle::held_bytes() > 0, "nothing was kept for reuse");
    let reused = run("on-2");
    recycle::set_enabled(false);
    assert_eq!(fresh, first);
    assert_eq!(fresh, reused);
}
