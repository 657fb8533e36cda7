//! A lost GPU device is reported, never a hang. (Its own test binary: it destroys the shared
//! context.)
#![cfg(feature = "gpu")]

use std::time::{Duration, Instant};

use engine::{Device, Tensor, ops};

#[test]
fn a_lost_device_is_reported_not_a_hang() {
    let Some(gpu) = engine::gpu::test_device() else { return };
    let Device::Gpu(g) = &gpu else { unreachable!() };
    let x = Tensor::full(&[1000], 2.0, &gpu).unwrap();
    assert_eq!(ops::sum(&x).unwrap().item().unwrap(), 2000.0);
    let pending = ops::scale(&x, 0.5).unwrap().read_later().unwrap();
    g.context().destroy_device_for_test();
    let start = Instant::now();
    // Requested before the loss: its copy may have run (then its values are right) or not (then
    // the wait fails), but the wait returns.
    if let Ok(values) = pending.wait() {
        assert_eq!(values, vec![1.0; 1000]);
    }
    let result = ops::scale(&x, 3.0).and_then(|y| y.to_vec());
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
    let err = result.expect_err("work on a destroyed device must fail").to_string();
    assert!(err.contains("GPU"), "{err}");
    // And it stays reported.
    assert!(Tensor::zeros(&[4], &gpu).and_then(|t| t.to_vec()).is_err());
}
