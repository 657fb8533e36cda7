//! The WGSL sources, compiled into the binary so that it needs no files at run time.

/// `(name, source)` of every kernel family in `shaders/`.
pub const SHADERS: &[(&str, &str)] = &[
    ("adamw", include_str!("../../../shaders/adamw.wgsl")),
    ("attention", include_str!("../../../shaders/attention.wgsl")),
    ("elementwise", include_str!("../../../shaders/elementwise.wgsl")),
    ("gather", include_str!("../../../shaders/gather.wgsl")),
    ("layernorm", include_str!("../../../shaders/layernorm.wgsl")),
    ("loss", include_str!("../../../shaders/loss.wgsl")),
    ("matmul", include_str!("../../../shaders/matmul.wgsl")),
    ("reduce", include_str!("../../../shaders/reduce.wgsl")),
];

/// The WGSL source of kernel family `name`, if there is one.
pub fn source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
