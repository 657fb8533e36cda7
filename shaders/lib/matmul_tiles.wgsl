// The staging loads and the epilogue's stores that shaders/matmul.wgsl and shaders/matmul_large.wgsl
// share. Not a kernel: engine/src/gpu/shaders.rs appends it to those two sources, whose bindings
// (a, b, a4, b4, bias, c, y), parameters `p` and overrides (TRANS_A, TRANS_B, VEC4, GELU, GELU_GRAD)
// it uses. Each kernel's header proves the indices it passes in bounds.

// op(A)[gm + i, gk] in lane i, 0 past M or where gk >= k_end; batch b's A starts at a_off. Where M is
// memory's contiguous axis (TRANS_A) 4 consecutive values of a row, one 128-bit load with VEC4;
// where K is, 4 scalar loads down a column (4 rows at one k, so the caller stores one whole vector).
fn stage_a(gk: u32, gm: u32, k_end: u32, a_off: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (gk >= k_end) { return v; }
    if (TRANS_A) {
        let at = a_off + gk * p.m + gm;
        if (VEC4) {
            if (gm < p.m) { v = a4[at / 4u]; }
        } else {
            if (gm < p.m) { v.x = a[at]; }
            if (gm + 1u < p.m) { v.y = a[at + 1u]; }
            if (gm + 2u < p.m) { v.z = a[at + 2u]; }
            if (gm + 3u < p.m) { v.w = a[at + 3u]; }
        }
    } else {
        let at = a_off + gm * p.k + gk;
        if (gm < p.m) { v.x = a[at]; }
        if (gm + 1u < p.m) { v.y = a[at + p.k]; }
        if (gm + 2u < p.m) { v.z = a[at + 2u * p.k]; }
        if (gm + 3u < p.m) { v.w = a[at + 3u * p.k]; }
    }
    return v;
}

// op(B)[gk, gn + i] in lane i, as stage_a with N for M: N contiguous unless TRANS_B.
fn stage_b(gk: u32, gn: u32, k_end: u32, b_off: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (gk >= k_end) { return v; }
    if (TRANS_B) {
        let at = b_off + gn * p.k + gk;
        if (gn < p.n) { v.x = b[at]; }
        if (gn + 1u < p.n) { v.y = b[at + p.k]; }
        if (gn + 2u < p.n) { v.z = b[at + 2u * p.k]; }
        if (gn + 3u < p.n) { v.w = b[at + 3u * p.k]; }
    } else {
        let at = b_off + gk * p.n + gn;
        if (VEC4) {
            if (gn < p.n) { v = b4[at / 4u]; }
        } else {
            if (gn < p.n) { v.x = b[at]; }
            if (gn + 1u < p.n) { v.y = b[at + 1u]; }
            if (gn + 2u < p.n) { v.z = b[at + 2u]; }
            if (gn + 3u < p.n) { v.w = b[at + 3u]; }
        }
    }
    return v;
}

// C[row + gn] = x + bias[gn] (or x gelu'(H[row + gn])), and Y = gelu of it, when gn < N.
fn store_one(row: u32, gn: u32, x: f32, bias_n: f32) {
    if (gn >= p.n) { return; }
    var v = x + bias_n;
    if (GELU_GRAD) { v = v * gelu_grad(y[row + gn]); }
    c[row + gn] = v;
    if (GELU) { y[row + gn] = gelu(v); }
}

// The bias at columns gn0 .. gn0 + 3 (0 past N or without a bias).
fn bias4(gn0: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        if (gn0 < p.n) { v.x = bias[gn0]; }
        if (gn0 + 1u < p.n) { v.y = bias[gn0 + 1u]; }
        if (gn0 + 2u < p.n) { v.z = bias[gn0 + 2u]; }
        if (gn0 + 3u < p.n) { v.w = bias[gn0 + 3u]; }
    }
    return v;
}
