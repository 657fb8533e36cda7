//! With no usable adapter the automatic choice is the CPU, with a notice; asking for the GPU is a
//! clear error. (Its own test binary: it changes the environment before any context exists.)

use engine::Device;

#[test]
fn without_an_adapter_the_automatic_choice_is_the_cpu_with_a_notice() {
    // SAFETY: the only test in this binary; no other thread reads the environment.
    unsafe {
        std::env::set_var("WGPU_ADAPTER_NAME", "no adapter has this name");
        std::env::remove_var("MAE_DEVICE");
    }
    let (dev, note) = Device::select(engine::DeviceChoice::Auto).unwrap();
    assert!(dev.is_cpu());
    let err = Device::select(engine::DeviceChoice::Gpu).map(|_| ()).unwrap_err().to_string();
    if cfg!(feature = "gpu") {
        assert!(note.contains("no GPU used"), "{note}");
        assert!(err.contains("matches no adapter"), "{err}");
    } else {
        // Built without the GPU backend: the note and the error say so, and how to get it.
        assert!(note.contains("no GPU backend"), "{note}");
        assert!(err.contains("`gpu` feature"), "{err}");
    }
}
