//! The WGSL sources, compiled into the binary so that it needs no files at run time.
//!
//! # Bounds checks
//!
//! wgpu makes every storage-buffer access of a shader safe by clamping or checking its index at
//! run time, unless the module is created as trusted. Each shader's header has a `Bounds:` line:
//! `Bounds: unchecked` when every index it computes is provably inside its buffers (the header says
//! why, and the launcher checks the buffer sizes that the proof rests on), `Bounds: checked`
//! otherwise. Unchecked shaders are created without wgpu's runtime bounds checks (the other
//! runtime checks stay), unless `MAE_GPU_BOUNDS_CHECKS=1` turns them all back on; CI runs the GPU
//! kernel tests in both modes.

/// `(name, source)` of every kernel family in `shaders/`. WGSL has no includes: functions that
/// several kernels share live in `shaders/lib/` and are appended to the sources that call them.
pub const SHADERS: &[(&str, &str)] = &[
    ("adamw", include_str!("../../../shaders/adamw.wgsl")),
    ("attention", include_str!("../../../shaders/attention.wgsl")),
    (
        "elementwise",
        concat!(
            include_str!("../../../shaders/elementwise.wgsl"),
            "\n",
            include_str!("../../../shaders/lib/gelu.wgsl")
        ),
    ),
    ("gather", include_str!("../../../shaders/gather.wgsl")),
    ("layernorm", include_str!("../../../shaders/layernorm.wgsl")),
    ("loss", include_str!("../../../shaders/loss.wgsl")),
    (
        "matmul",
        concat!(
            include_str!("../../../shaders/matmul.wgsl"),
            "\n",
            include_str!("../../../shaders/lib/matmul_params.wgsl"),
            "\n",
            include_str!("../../../shaders/lib/gelu.wgsl")
        ),
    ),
    (
        "matmul_large",
        concat!(
            include_str!("../../../shaders/matmul_large.wgsl"),
            "\n",
            include_str!("../../../shaders/lib/matmul_params.wgsl"),
            "\n",
            include_str!("../../../shaders/lib/gelu.wgsl")
        ),
    ),
    (
        "matmul_coop",
        concat!(
            include_str!("../../../shaders/matmul_coop.wgsl"),
            "\n",
            include_str!("../../../shaders/lib/matmul_params.wgsl"),
            "\n",
            include_str!("../../../shaders/lib/gelu.wgsl")
        ),
    ),
    ("reduce", include_str!("../../../shaders/reduce.wgsl")),
];

/// The WGSL source of kernel family `name`, if there is one.
pub fn source(name: &str) -> Option<&'static str> {
    #[cfg(test)]
    if let Some(s) = test_source(name) {
        return Some(s);
    }
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Sources the engine's own unit tests add under names of their own (the tensor-core kernel with
/// its cooperative-matrix operations emulated, `kernels/matmul_coop_emulated.rs`).
#[cfg(test)]
static TEST_SOURCES: std::sync::Mutex<Vec<(&'static str, &'static str)>> = std::sync::Mutex::new(Vec::new());

#[cfg(test)]
fn test_source(name: &str) -> Option<&'static str> {
    TEST_SOURCES.lock().unwrap().iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Registers `source` as shader `name` for this test process (once; later calls keep the first).
#[cfg(test)]
pub(crate) fn add_test_source(name: &'static str, source: String) {
    let mut sources = TEST_SOURCES.lock().unwrap();
    if !sources.iter().any(|(n, _)| *n == name) {
        sources.push((name, Box::leak(source.into_boxed_str())));
    }
}

/// Whether the header of shader `name` proves its indexing in bounds (`// Bounds: unchecked`), so
/// that it may run without wgpu's runtime bounds checks. Unknown names are `false`.
pub fn provably_in_bounds(name: &str) -> bool {
    source(name).is_some_and(|src| bounds_line(src).is_some_and(|l| l.starts_with("unchecked")))
}

/// The text after `Bounds:` in a shader's header comment, if it has one.
pub fn bounds_line(source: &str) -> Option<&str> {
    source
        .lines()
        .take_while(|l| l.starts_with("//"))
        .find_map(|l| l.trim_start_matches('/').trim().strip_prefix("Bounds:"))
        .map(str::trim)
}

/// Whether `MAE_GPU_BOUNDS_CHECKS` asks for wgpu's runtime bounds checks on every shader (`1`,
/// `true`, `yes`, `on`); read when a GPU context opens.
pub fn bounds_checks_forced() -> bool {
    std::env::var("MAE_GPU_BOUNDS_CHECKS")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}
