// The parameters of the three matrix-product kernels (matmul.wgsl, matmul_large.wgsl,
// matmul_coop.wgsl), which one launcher fills (engine/src/gpu/kernels/matmul.rs, `Params`), and
// their uniform binding. Not a kernel: engine/src/gpu/shaders.rs appends it to those sources.
// Fields a kernel does not use are there all the same, so the layout is one.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_stride: u32,
    b_stride: u32,
    has_bias: u32,
    // K values each z-slice sums: K itself, or (split-K) a multiple of the kernel's K step below
    // it, when z indexes K slices instead of batches (batch 1, strides 0, C holding one partial
    // product per slice). matmul_coop.wgsl, matmul.wgsl and matmul_large.wgsl all split.
    k_chunk: u32,
    // Values from one z-slice's C to the next: M N, or more when A_SUMS puts the sums after each.
    c_stride: u32,
    // With A_SUMS (matmul.wgsl and matmul_large.wgsl): where in a slice the M sums of op(A)'s rows
    // start (past C, 64-aligned).
    sums_at: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
