//! The buffer pool: a repeated step allocates nothing new. (Its own test binary, so that no other
//! test shares the GPU context while memory is counted.)
#![cfg(feature = "gpu")]

use engine::Tensor;

/// The tests of this binary count the one shared context's memory: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn buffers_are_reused_from_step_to_step() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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

#[test]
fn the_pool_keeps_what_a_step_frees_and_hands_it_back_on_request() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = engine::gpu::test_device() else {
        return;
    };
    let engine::Device::Gpu(g) = &gpu else { unreachable!() };
    let ctx = g.context();
    // Many buffers of many sizes, freed together: all of them are kept for the next step.
    let step = || {
        let xs: Vec<Tensor> = (1..40).map(|i| Tensor::full(&[1000 + i, 7], 1.0, &gpu).unwrap()).collect();
        let total: f32 = xs.iter().map(|x| x.sum().unwrap().item().unwrap()).sum();
        total
    };
    let first = step();
    gpu.synchronize().unwrap();
    let created = ctx.counters().buffers_created;
    assert!(ctx.cached_bytes() >= 39 * 1000 * 7 * 4, "the pool kept {} bytes", ctx.cached_bytes());
    assert_eq!(step(), first);
    assert_eq!(ctx.counters().buffers_created, created, "a repeated step created buffers");
    ctx.release_cached();
    assert_eq!(ctx.cached_bytes(), 0);
    assert_eq!(step(), first);
    assert!(ctx.counters().buffers_created > created, "after release_cached the step creates its buffers again");
}
