// Batched matrix product with optional transposes and a fused bias epilogue:
//   C[b] = op(A[b]) * op(B[b]) (+ bias),  op(A): [M, K], op(B): [K, N], C: [batch, M, N]
// and, with the override GELU, also Y = gelu(C) (an MLP's fc1 and its activation in one dispatch;
// C is kept for the backward). gelu() comes from shaders/lib/gelu.wgsl, appended by shaders.rs.
// It serves the forward of every linear layer and both backward products (dA = dC * op(B)^T,
// dB = op(A)^T * dC) through the transpose switches.
//
// Layouts (row-major): A is [M, K], or [K, M] when TRANS_A; B is [K, N], or [N, K] when TRANS_B;
// batch b of A starts at b * a_stride (0 shares one A over the batch), likewise B; bias is [N].
// TRANS_A and TRANS_B are pipeline-override constants, so each of the four cases compiles to its own
// branch-free pipeline.
//
// Algorithm (classic shared-memory tiling with register blocking):
// - a workgroup of 16 x 16 invocations computes a 64 x 64 tile of C; grid (ceil(N/64), ceil(M/64), batch);
// - per step of BK = 16 along K, the workgroup stages a 64 x 16 tile of op(A) and a 16 x 64 tile of
//   op(B) in workgroup memory (As[k][m], Bs[k][n]: 8 KiB), zero-padded at the edges so any M, N, K
//   works; the loads are coalesced along whichever axis is contiguous in memory;
// - each invocation accumulates a 4 x 4 block of C in registers: rows ly + 16 i, columns lx + 16 j
//   (strided, so the 16 lanes of a row read 16 consecutive Bs entries: no bank conflicts, and the
//   stores to C are coalesced);
// - `matmul_vec4` is the same with 128-bit loads: one vec4 of A and one of B per invocation per step.
//   The launcher picks it when the contiguous axis of each operand (and its batch stride) is a multiple
//   of 4, which holds for every MAE shape.
// Napkin math: per BK step an invocation does 8 workgroup-memory reads for 16 FMAs; one tile step moves
// 8 KiB from global memory for 2 x 64 x 64 x 16 = 131 kFLOP, 16 FLOP/byte of global traffic. The
// encoder's qkv product at batch 256 ([3328, 128] x [128, 384]) is 0.33 GFLOP over 2.1 MB of
// operands: compute-bound; at a plausible 15-25 TFLOP/s for this design on an H100 it takes ~20 us.
//
// Bounds: unchecked. Every global read is guarded by gm < M, gn < N, gk < K, so it lands inside
// batch b's [M, K] (or [N, K]) matrix, which ends at (batch - 1) * stride + M K <= the operand's
// length (the launcher checks A, B >= that, bias >= N, and that all of it fits u32, so no index
// wraps). A vec4 load starts at a multiple of 4 (the launcher picks matmul_vec4 only when the
// contiguous axis and the batch strides are multiples of 4) with its 4 elements in one row, so it
// ends inside the same matrix. Workgroup tiles are indexed by lane and loop counters below their
// sizes (kk < 16, m, n < 64); C (and Y, which the launcher sizes as C) is written only at gm < M,
// gn < N of batch b < batch.
//
// Launcher: engine/src/gpu/kernels/matmul.rs. Reference: engine/src/cpu/reference.rs (matmul).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_stride: u32,
    b_stride: u32,
    has_bias: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// Also write y = gelu(c) (binding 7).
override GELU: bool = false;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> As: array<array<f32, 64>, 16>;
var<workgroup> Bs: array<array<f32, 64>, 16>;

// acc[i][j] += As[kk][ly + 16 i] * Bs[kk][lx + 16 j] over the staged BK slice.
fn multiply_tile(lx: u32, ly: u32, acc: ptr<function, array<array<f32, 4>, 4>>) {
    for (var kk = 0u; kk < BK; kk = kk + 1u) {
        var ar: array<f32, 4>;
        var br: array<f32, 4>;
        for (var i = 0u; i < 4u; i = i + 1u) {
            ar[i] = As[kk][ly + 16u * i];
            br[i] = Bs[kk][lx + 16u * i];
        }
        for (var i = 0u; i < 4u; i = i + 1u) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                (*acc)[i][j] = fma(ar[i], br[j], (*acc)[i][j]);
            }
        }
    }
}

fn store_tile(batch: u32, row0: u32, col0: u32, lx: u32, ly: u32, acc: ptr<function, array<array<f32, 4>, 4>>) {
    let c_off = batch * p.m * p.n;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let gm = row0 + ly + 16u * i;
        if (gm >= p.m) { continue; }
        for (var j = 0u; j < 4u; j = j + 1u) {
            let gn = col0 + lx + 16u * j;
            if (gn >= p.n) { continue; }
            var v = (*acc)[i][j];
            if (p.has_bias != 0u) { v = v + bias[gn]; }
            c[c_off + gm * p.n + gn] = v;
            if (GELU) { y[c_off + gm * p.n + gn] = gelu(v); }
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_off = batch * p.a_stride;
    let b_off = batch * p.b_stride;
    let t = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + BK) {
        for (var i = 0u; i < 4u; i = i + 1u) {
            let e = t + 256u * i;
            // op(A) tile element (m, kk); walk memory's contiguous axis with consecutive lanes.
            var m: u32;
            var kk: u32;
            if (TRANS_A) { kk = e / BM; m = e % BM; } else { m = e / BK; kk = e % BK; }
            let gm = row0 + m;
            let gk = k0 + kk;
            var va = 0.0;
            if (gm < p.m && gk < p.k) {
                if (TRANS_A) { va = a[a_off + gk * p.m + gm]; } else { va = a[a_off + gm * p.k + gk]; }
            }
            As[kk][m] = va;
            // op(B) tile element (kb, n).
            var n: u32;
            var kb: u32;
            if (TRANS_B) { n = e / BK; kb = e % BK; } else { kb = e / BN; n = e % BN; }
            let gn = col0 + n;
            let gkb = k0 + kb;
            var vb = 0.0;
            if (gn < p.n && gkb < p.k) {
                if (TRANS_B) { vb = b[b_off + gn * p.k + gkb]; } else { vb = b[b_off + gkb * p.n + gn]; }
            }
            Bs[kb][n] = vb;
        }
        workgroupBarrier();
        multiply_tile(lid.x, lid.y, &acc);
        workgroupBarrier();
    }
    store_tile(batch, row0, col0, lid.x, lid.y, &acc);
}

@compute @workgroup_size(16, 16)
fn matmul_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_off = batch * p.a_stride;
    let b_off = batch * p.b_stride;
    let t = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    let zero = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 = k0 + BK) {
        // One vec4 of op(A) per invocation: 4 consecutive elements along memory's contiguous axis.
        if (TRANS_A) {
            let kk = t / 16u;
            let mq = (t % 16u) * 4u;
            let gk = k0 + kk;
            let gm = row0 + mq;
            var v = zero;
            if (gk < p.k && gm < p.m) { v = a4[(a_off + gk * p.m + gm) / 4u]; }
            As[kk][mq] = v.x;
            As[kk][mq + 1u] = v.y;
            As[kk][mq + 2u] = v.z;
            As[kk][mq + 3u] = v.w;
        } else {
            let m = t / 4u;
            let kq = (t % 4u) * 4u;
            let gm = row0 + m;
            let gk = k0 + kq;
            var v = zero;
            if (gm < p.m && gk < p.k) { v = a4[(a_off + gm * p.k + gk) / 4u]; }
            As[kq][m] = v.x;
            As[kq + 1u][m] = v.y;
            As[kq + 2u][m] = v.z;
            As[kq + 3u][m] = v.w;
        }
        if (TRANS_B) {
            let n = t / 4u;
            let kq = (t % 4u) * 4u;
            let gn = col0 + n;
            let gk = k0 + kq;
            var v = zero;
            if (gn < p.n && gk < p.k) { v = b4[(b_off + gn * p.k + gk) / 4u]; }
            Bs[kq][n] = v.x;
            Bs[kq + 1u][n] = v.y;
            Bs[kq + 2u][n] = v.z;
            Bs[kq + 3u][n] = v.w;
        } else {
            let kk = t / 16u;
            let nq = (t % 16u) * 4u;
            let gk = k0 + kk;
            let gn = col0 + nq;
            var v = zero;
            if (gk < p.k && gn < p.n) { v = b4[(b_off + gk * p.n + gn) / 4u]; }
            Bs[kk][nq] = v.x;
            Bs[kk][nq + 1u] = v.y;
            Bs[kk][nq + 2u] = v.z;
            Bs[kk][nq + 3u] = v.w;
        }
        workgroupBarrier();
        multiply_tile(lid.x, lid.y, &acc);
        workgroupBarrier();
    }
    store_tile(batch, row0, col0, lid.x, lid.y, &acc);
}
