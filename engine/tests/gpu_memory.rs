//! The buffer pool: a repeated step allocates nothing new. (Its own test binary, so that no other
//! test shares the GPU context while memory is counted.)
#![cfg(feature = "gpu")]

use engine::Tensor;

#[test]
fn buffers_are_reused_from_step_to_step() {
    let Some(gpu) = engine::gpu::test_device() else {
        return;
    };
    let engine::Device::Gpu(g) = &gpu else { unreachable!() };
    let step = || {
        let x = Tensor::full(&[1000, 37], 1.0, &gpu).unwrap();
        let w = Tensor::full(&[37, 11], 0.5, &gpu).unwrap().with_grad();
        let loss = x.matmul(&w).unwrap().sum().unwrap();
        engine::backward(&loss).unwrap();
        loss.item().unwrap()
    };
    assert_eq!(step(), 1000.0 * 37.0 * 11.0 * 0.5);
    gpu.synchronize().unwrap();
    let (live_after_first, _) = g.context().memory();
    for _ in 0..3 {
        step();
    }
    gpu.synchronize().unwrap();
    let (live, _) = g.context().memory();
    assert_eq!(live, live_after_first, "live GPU memory grows from step to step");
}
