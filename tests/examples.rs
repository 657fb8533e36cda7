//! The examples of `mae/examples/` run as a program would run them, on tiny budgets: they are the
//! documentation of the library use, so they must keep working.

#[allow(dead_code)]
#[path = "../mae/examples/train_in_memory.rs"]
mod train_in_memory;

#[test]
fn the_in_memory_example_trains_saves_loads_and_embeds_new_images() {
    let out = std::env::temp_dir().join(format!("mae-example-in-memory-{}", std::process::id()));
    let features = train_in_memory::run(2, out.clone()).unwrap();
    // 5 new images, cls + mean of the micro preset's 128-wide output.
    assert_eq!(features.len(), 5 * 256);
    assert!(features.iter().all(|v| v.is_finite()));
    assert!(out.join("checkpoints").is_dir(), "the run saved no checkpoint");
    let _ = std::fs::remove_dir_all(&out);
}
