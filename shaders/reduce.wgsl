// Reductions: sums over one axis, its adjoint (broadcast along an axis), and softmax over rows.
//
// Layout: x viewed as [outer, axis, inner] (row-major), reduced to [outer, inner].
// Algorithms (deterministic: a fixed summation order, no atomics):
// - sum_rows (inner == 1, e.g. a full sum or per-row sums): one workgroup of 256 per output; each
//   invocation strides over the axis, then a tree reduction in workgroup memory.
// - sum_cols (inner > 1, e.g. bias gradients: [rows, n] -> [n]): a workgroup of 64 x 4 per 64
//   adjacent outputs; the 64 lanes read 64 adjacent columns (coalesced), the 4 rows of lanes split the
//   axis, and workgroup memory adds the 4 partial sums.
// - softmax / softmax_backward: one workgroup of 64 per row, max and sum by tree reduction.
// - Long axes with few outputs (a full sum, the bias gradient of [12800, 64]) would leave a big GPU
//   idle with a handful of workgroups, so the launcher splits the axis into `chunks` slices of `chunk`
//   rows: pass one writes [outer, chunks, inner] partial sums, pass two sums the chunks.
// Napkin math: the bias gradient of a [3328, 384] output reads 5.1 MB and adds 1.3 M values:
// bandwidth-bound, a few microseconds on an H100 (3.3 TB/s), launch overhead included.
//
// Bounds: unchecked. sum_rows / sum_cols: slice oc < outer * chunks, axis rows a < min(start +
// chunk, axis), columns i < inner (guarded), so x is read below outer * axis * inner and out is
// written below outer * chunks * inner, the size the launcher allocates. broadcast_axis: j < n =
// outer * axis * inner, reading x below outer * inner. softmax and its backward: row r < outer and
// c < inner. Workgroup memory: red[lid + s] with lid < s <= size / 2 and size at most the workgroup
// size; red4 at lid. The launchers check each input's length against those sizes, and `params`
// that outer * axis * inner fits u32.
//
// Loops: finite. Axis rows a count up by 256 (or 4) to min(start + chunk, axis), columns c by 64 to
// inner, and the tree sums halve s from size / 2 to 0 (each bound is at most a buffer's length in
// values, below 2^30 since the context makes no buffer of 4 GiB, so a counter stepping up by at
// most 256 never wraps past it).
//
// Launcher: engine/src/gpu/kernels/reduce.rs. Reference: engine/src/cpu/reference.rs.

struct Params {
    outer: u32,
    axis: u32,
    inner: u32,
    n: u32,
    // Rows of the axis each workgroup sums, and the number of such slices (sum_rows, sum_cols).
    chunk: u32,
    chunks: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, 256>;
var<workgroup> red4: array<array<f32, 64>, 4>;

// Sum of `v` over the first `size` invocations of the workgroup (size a power of two <= 256).
fn workgroup_sum(v: f32, lid: u32, size: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    var s = size / 2u;
    loop {
        if (s == 0u) { break; }
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
        s = s / 2u;
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn workgroup_max(v: f32, lid: u32, size: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    var s = size / 2u;
    loop {
        if (s == 0u) { break; }
        if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
        s = s / 2u;
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// One workgroup per (outer, chunk) slice: out[o * chunks + c] = sum of x[o, a] over the chunk.
@compute @workgroup_size(256)
fn sum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let oc = wid.x + wid.y * nwg.x;
    if (oc >= p.outer * p.chunks) { return; }
    let o = oc / p.chunks;
    let start = (oc % p.chunks) * p.chunk;
    let end = min(start + p.chunk, p.axis);
    var acc = 0.0;
    for (var a = start + lid; a < end; a = a + 256u) {
        acc = acc + x[o * p.axis + a];
    }
    let total = workgroup_sum(acc, lid, 256u);
    if (lid == 0u) { out[oc] = total; }
}

// Workgroup (column block wid.x, slice wid.y + wid.z * nwg.y = o * chunks + c):
// out[(o * chunks + c) * inner + i] = sum of x[o, a, i] over the chunk.
@compute @workgroup_size(64, 4)
fn sum_cols(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wid.x * 64u + lid.x;
    let oc = wid.y + wid.z * nwg.y;
    if (oc >= p.outer * p.chunks) { return; }
    let o = oc / p.chunks;
    let start = (oc % p.chunks) * p.chunk;
    let end = min(start + p.chunk, p.axis);
    var acc = 0.0;
    if (i < p.inner) {
        for (var a = start + lid.y; a < end; a = a + 4u) {
            acc = acc + x[(o * p.axis + a) * p.inner + i];
        }
    }
    red4[lid.y][lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && i < p.inner) {
        out[oc * p.inner + i] = red4[0][lid.x] + red4[1][lid.x] + red4[2][lid.x] + red4[3][lid.x];
    }
}

// out[o, a, i] = x[o, i]; one invocation per output element (n = outer * axis * inner).
@compute @workgroup_size(256)
fn broadcast_axis(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * 256u;
    if (j >= p.n) { return; }
    let i = j % p.inner;
    let o = j / (p.axis * p.inner);
    out[j] = x[o * p.inner + i];
}

// Softmax over rows of length p.inner; p.outer rows.
@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.outer) { return; }
    let base = r * p.inner;
    var m = -3.4028235e38;
    for (var c = lid; c < p.inner; c = c + 64u) { m = max(m, x[base + c]); }
    m = workgroup_max(m, lid, 64u);
    var s = 0.0;
    for (var c = lid; c < p.inner; c = c + 64u) { s = s + exp(x[base + c] - m); }
    s = workgroup_sum(s, lid, 64u);
    let inv = 1.0 / s;
    for (var c = lid; c < p.inner; c = c + 64u) { out[base + c] = exp(x[base + c] - m) * inv; }
}

// dx = y * (dy - sum(dy * y)); x binds the softmax output y, y binds dy.
@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.outer) { return; }
    let base = r * p.inner;
    var d = 0.0;
    for (var c = lid; c < p.inner; c = c + 64u) { d = d + x[base + c] * y[base + c]; }
    d = workgroup_sum(d, lid, 64u);
    for (var c = lid; c < p.inner; c = c + 64u) { out[base + c] = x[base + c] * (y[base + c] - d); }
}
