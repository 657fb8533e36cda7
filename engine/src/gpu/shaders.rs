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
//!
//! # Loop bounding
//!
//! wgpu also gives every loop a hidden 64-bit counter (two u32, tested and carried each iteration)
//! that breaks out after 2^64 iterations, so that a driver may not assume an infinite loop away. In
//! a kernel's hot loops that is several integer instructions and a second exit per iteration (a
//! loop with an exit the compiler cannot count is one it may not unroll: wgpu issue 7698 reports a
//! compute shader 100x slower). Each header has a `Loops:` line: `Loops: finite` when every loop
//! provably ends (the header says why: a counter stepping towards a bound it cannot wrap past, or a
//! counter halving to zero), `Loops: bounded` otherwise. Finite shaders run without the counter,
//! unless `MAE_GPU_LOOP_BOUNDING=1` (or `MAE_GPU_BOUNDS_CHECKS=1`, which restores every check)
//! puts it back, for an A/B on hardware. Integer-division checks always stay.

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
            include_str!("../../../shaders/lib/matmul_tiles.wgsl"),
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
            include_str!("../../../shaders/lib/matmul_tiles.wgsl"),
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
    header_line(source, "Bounds:")
}

/// Whether the header of shader `name` proves every loop finite (`// Loops: finite`), so that it
/// may run without wgpu's loop bounding. Unknown names are `false`.
pub fn provably_finite(name: &str) -> bool {
    source(name).is_some_and(|src| loops_line(src).is_some_and(|l| l.starts_with("finite")))
}

/// The text after `Loops:` in a shader's header comment, if it has one.
pub fn loops_line(source: &str) -> Option<&str> {
    header_line(source, "Loops:")
}

/// The text after `key` on the first line of the header comment that starts with it.
fn header_line<'a>(source: &'a str, key: &str) -> Option<&'a str> {
    source
        .lines()
        .take_while(|l| l.starts_with("//"))
        .find_map(|l| l.trim_start_matches('/').trim().strip_prefix(key))
        .map(str::trim)
}

/// Whether `MAE_GPU_BOUNDS_CHECKS` asks for wgpu's runtime bounds checks on every shader (`1`,
/// `true`, `yes`, `on`); read when a GPU context opens.
pub fn bounds_checks_forced() -> bool {
    switched_on("MAE_GPU_BOUNDS_CHECKS")
}

/// Whether `MAE_GPU_LOOP_BOUNDING` asks for wgpu's loop bounding on every shader (`1`, `true`,
/// `yes`, `on`); read when a GPU context opens.
pub fn loop_bounding_forced() -> bool {
    switched_on("MAE_GPU_LOOP_BOUNDING")
}

fn switched_on(var: &str) -> bool {
    std::env::var(var)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The runtime checks that wgpu leaves out of shader `name`, by its header and the two switches
/// (`bounds_forced`: `MAE_GPU_BOUNDS_CHECKS`, which restores every check; `loops_forced`:
/// `MAE_GPU_LOOP_BOUNDING`). `None`: none left out (a plain, checked module).
pub fn trusted_checks(name: &str, bounds_forced: bool, loops_forced: bool) -> Option<wgpu::ShaderRuntimeChecks> {
    if bounds_forced {
        return None;
    }
    let bounds_checks = !provably_in_bounds(name);
    let force_loop_bounding = loops_forced || !provably_finite(name);
    (!bounds_checks || !force_loop_bounding).then(|| wgpu::ShaderRuntimeChecks {
        bounds_checks,
        force_loop_bounding,
        ..wgpu::ShaderRuntimeChecks::checked()
    })
}
