// Element-wise kernels: fill, binary ops with a broadcast right operand, unary maps, and the GELU
// derivative.
//
// Layout: flat f32 arrays. `binary` reads y[i % n_y], so y may be a bias row [D] against x [N, L, D],
// a table [L, D] against [N, L, D], or one value.
// Algorithm: one invocation per output element. Dispatch: ceil(n / 256) workgroups of 256, spread
// over x and y when there are more than 65535 (index = gid.x + gid.y * num_workgroups.x * 256).
// Napkin math: memory-bound; a binary op on [256, 50, 64] moves 3 x 3.3 MB and does 0.8 MFLOP, so it
// should run at the device's bandwidth (about 3 TB/s on an H100: ~3 us, all launch overhead).
//
// Bounds: unchecked. Each invocation touches only element i < n of x, dy and out, and
// y[i % n_y] (n_y >= 1); the launchers check that x, dy and out hold n values and y n_y.
//
// Loops: finite. It has no loop.
//
// Launcher: engine/src/gpu/kernels/elementwise.rs. Reference: engine/src/cpu/reference.rs.
// gelu() and gelu_grad() come from shaders/lib/gelu.wgsl, appended to this source by
// engine/src/gpu/shaders.rs (WGSL has no includes).

struct Params {
    n: u32,
    n_y: u32,
    op: u32,
    s: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = p.s;
}

// op: 0 add, 1 sub, 2 mul, 3 div (BinaryOp in engine/src/backend.rs).
@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let a = x[i];
    let b = y[i % p.n_y];
    var r: f32;
    switch p.op {
        case 0u: { r = a + b; }
        case 1u: { r = a - b; }
        case 2u: { r = a * b; }
        default: { r = a / b; }
    }
    out[i] = r;
}

// op: 0 scale (s * x), 1 add scalar (x + s), 2 GELU, 3 square, 4 sqrt (UnaryOp in backend.rs).
@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let v = x[i];
    var r: f32;
    switch p.op {
        case 0u: { r = p.s * v; }
        case 1u: { r = v + p.s; }
        case 2u: { r = gelu(v); }
        case 3u: { r = v * v; }
        default: { r = sqrt(v); }
    }
    out[i] = r;
}

// out = dy * gelu'(x), with dy bound as y.
@compute @workgroup_size(256)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = y[i] * gelu_grad(x[i]);
}
