// Batched matrix product with optional transposes and a fused bias epilogue:
//   C[b] = op(A[b]) * op(B[b]) (+ bias),  op(A): [M, K], op(B): [K, N], C: [batch, M, N]
// and, with the override GELU, also Y = gelu(C) (an MLP's fc1 and its activation in one dispatch;
// C is kept for the backward); with GELU_GRAD instead C = (op(A) op(B)) * gelu'(H), H read from
// binding 7 (an MLP's backward: fc2's input gradient through GELU at fc1's output H, in the product
// that makes it, not a separate pass). gelu() and gelu_grad() come from shaders/lib/gelu.wgsl,
// appended by shaders.rs.
// It serves the forward of every linear layer and both backward products (dA = dC * op(B)^T,
// dB = op(A)^T * dC) through the transpose switches. Products of hundreds of 128 x 128 tiles run on
// shaders/matmul_large.wgsl instead (the launcher chooses); A_SUMS and split-K only run here.
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
// - each invocation accumulates a 4 x 4 block of C in four named vec4 registers c0..c3: row ly + 16 i
//   in c_i, columns lx + 16 j in its lane j (strided, so the 16 lanes of a row read 16 consecutive Bs
//   entries: no bank conflicts, and the stores to C are coalesced). Named vectors, not an indexed
//   array behind a pointer: the first version kept `array<array<f32, 4>, 4>` and passed it to helper
//   functions, which NVIDIA's Vulkan compiler left in local memory (36x slower steps on an H200,
//   docs/journal/benchmarks.md); no private array here is indexed at all;
// - split-K: a product with few output tiles and a long K (a weight gradient: [3328, 128]^T x
//   [3328, 512] is 2 x 8 tiles) would leave most of a large GPU idle, so the launcher gives each of
//   S z-slices k_chunk values of K (a multiple of BK), writes S partial products [S, M, N] and sums
//   them with reduce.wgsl's sum_cols (a fixed order: deterministic);
// - with the override A_SUMS (TRANS_A: A is a linear layer's output gradient dY stored [K, M]) the
//   workgroups of the first column also add up the A tiles they stage, so the product's dispatch
//   also yields the bias gradient sum_k dY[k, m], written after C (at sums_at of each slice). All
//   256 invocations share the adding (each 4 of a tile's 16 rows of one column, then the 4
//   partials of a column meet in workgroup memory at the end): left to 64 invocations, 16 rows
//   each, the sums held the whole workgroup at every barrier (docs/journal/benchmarks.md, the H200);
// - with the override VEC4 the tiles are staged with 128-bit loads, one vec4 of A and one of B per
//   invocation per step. The launcher sets it when the contiguous axis of each operand (and its batch
//   stride) is a multiple of 4, which holds for every MAE shape.
// Napkin math: per BK step an invocation does 8 workgroup-memory reads for 16 FMAs; one tile step moves
// 8 KiB from global memory for 2 x 64 x 64 x 16 = 131 kFLOP, 16 FLOP/byte of global traffic. The
// encoder's qkv product at batch 256 ([3328, 128] x [128, 384]) is 0.33 GFLOP over 2.1 MB of
// operands: compute-bound. A weight gradient ([3328, 128]^T x [3328, 512]) has K = 3328 but only
// 2 x 8 workgroups: 16 of a large GPU's 100+ cores, each walking 208 K steps; split 16 ways it is
// 256 workgroups of 13 K steps, plus a 4 MB pass adding the partials.
//
// Bounds: unchecked. Every global read is guarded by gm < M, gn < N, gk < k_hi <= K, so it lands inside
// batch b's [M, K] (or [N, K]) matrix, which ends at (batch - 1) * stride + M K <= the operand's
// length (the launcher checks A, B >= that, bias >= N, and that all of it fits u32, so no index
// wraps). A vec4 load starts at a multiple of 4 (the launcher sets VEC4 only when the
// contiguous axis and the batch strides are multiples of 4) with its 4 elements in one row, so it
// ends inside the same matrix. Workgroup tiles are indexed by lane and loop counters below their
// sizes (kk < 16, m, n < 64; the A_SUMS partials at rows 4 (t / 64) + 0..3 < 16, column t % 64).
// C (and Y, which the launcher sizes as C) is written only at gm < M, gn < N of batch b < batch;
// with GELU_GRAD, H (binding 7, which the launcher checks holds C's values) is read at the index of C
// being written.
// Under split-K, batch is the slice count S with strides 0 (every slice
// reads the one matrix) and C is the [S, M, N] partials the launcher allocates; k_hi is K or a
// multiple of 16, so a vec4 group along K never straddles it. Slice z's C starts at z * c_stride
// with c_stride >= M N, and with A_SUMS c_stride >= sums_at + M, sums_at >= M N: the sums, written at
// gm = row0 + t < M, land after that slice's C and before the next slice's (the launcher allocates
// batch * c_stride).
//
// Loops: finite. K steps count k0 up by BK from the slice's start to k_hi <= K; kk and the staging
// loop count up by 1 to a constant (each bound is at most a buffer's length in values, below 2^30
// since the context makes no buffer of 4 GiB, so a counter stepping up by at most 256 never wraps
// past it).
//
// Launcher: engine/src/gpu/kernels/matmul.rs. Reference: engine/src/cpu/reference.rs (matmul).

// Params and its uniform `p` (binding 0): shaders/lib/matmul_params.wgsl, appended by shaders.rs.
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
// Multiply C by gelu'(h), h bound at binding 7 (no bias; not with GELU).
override GELU_GRAD: bool = false;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> As: array<array<f32, 64>, 16>;
var<workgroup> Bs: array<array<f32, 64>, 16>;

// Also stage the operands as vec4 (bindings 5 and 6 instead of 1 and 2): the launcher sets it when
// the contiguous axis of each operand and its batch stride are multiples of 4.
override VEC4: bool = false;
// Also sum op(A)'s rows over K (TRANS_A only: A stored [K, M], a linear layer's output gradient,
// whose row sums are its bias gradient): the first column of workgroups adds the A tiles it stages
// anyway and writes the M sums into c at sums_at (one dispatch and one read of dY fewer).
override A_SUMS: bool = false;

// Stage op(A)[row0.., k0..] into As[kk][m] and op(B)[k0.., col0..] into Bs[kk][n] (zero outside
// the matrices); t is the invocation's index in the workgroup (0..256).
fn load_tiles(t: u32, row0: u32, col0: u32, k0: u32, k_hi: u32, a_off: u32, b_off: u32) {
    let zero = vec4<f32>(0.0);
    if (VEC4) {
        // One vec4 of op(A) and one of op(B) per invocation, along memory's contiguous axis.
        if (TRANS_A) {
            let kk = t / 16u;
            let mq = (t % 16u) * 4u;
            var v = zero;
            if (k0 + kk < k_hi && row0 + mq < p.m) { v = a4[(a_off + (k0 + kk) * p.m + row0 + mq) / 4u]; }
            As[kk][mq] = v.x;
            As[kk][mq + 1u] = v.y;
            As[kk][mq + 2u] = v.z;
            As[kk][mq + 3u] = v.w;
        } else {
            let m = t / 4u;
            let kq = (t % 4u) * 4u;
            var v = zero;
            if (row0 + m < p.m && k0 + kq < k_hi) { v = a4[(a_off + (row0 + m) * p.k + k0 + kq) / 4u]; }
            As[kq][m] = v.x;
            As[kq + 1u][m] = v.y;
            As[kq + 2u][m] = v.z;
            As[kq + 3u][m] = v.w;
        }
        if (TRANS_B) {
            let n = t / 4u;
            let kq = (t % 4u) * 4u;
            var v = zero;
            if (col0 + n < p.n && k0 + kq < k_hi) { v = b4[(b_off + (col0 + n) * p.k + k0 + kq) / 4u]; }
            Bs[kq][n] = v.x;
            Bs[kq + 1u][n] = v.y;
            Bs[kq + 2u][n] = v.z;
            Bs[kq + 3u][n] = v.w;
        } else {
            let kk = t / 16u;
            let nq = (t % 16u) * 4u;
            var v = zero;
            if (k0 + kk < k_hi && col0 + nq < p.n) { v = b4[(b_off + (k0 + kk) * p.n + col0 + nq) / 4u]; }
            Bs[kk][nq] = v.x;
            Bs[kk][nq + 1u] = v.y;
            Bs[kk][nq + 2u] = v.z;
            Bs[kk][nq + 3u] = v.w;
        }
    } else {
        for (var i = 0u; i < 4u; i = i + 1u) {
            let e = t + 256u * i;
            // op(A) tile element (m, kk); consecutive lanes walk memory's contiguous axis.
            var m: u32;
            var kk: u32;
            if (TRANS_A) { kk = e / BM; m = e % BM; } else { m = e / BK; kk = e % BK; }
            let gm = row0 + m;
            let gk = k0 + kk;
            var va = 0.0;
            if (gm < p.m && gk < k_hi) {
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
            if (gn < p.n && gkb < k_hi) {
                if (TRANS_B) { vb = b[b_off + gn * p.k + gkb]; } else { vb = b[b_off + gkb * p.n + gn]; }
            }
            Bs[kb][n] = vb;
        }
    }
}

// C[row + gn] = x (+ bias[gn]) (or x gelu'(H[row + gn])), and Y = gelu of it, when gn < N.
fn store_one(row: u32, gn: u32, x: f32) {
    if (gn >= p.n) { return; }
    var v = x;
    if (p.has_bias != 0u) { v = v + bias[gn]; }
    if (GELU_GRAD) { v = v * gelu_grad(y[row + gn]); }
    c[row + gn] = v;
    if (GELU) { y[row + gn] = gelu(v); }
}

// Row gm of batch b's C at columns gn0 + 16 j from lane j of v.
fn store_row(batch: u32, gm: u32, gn0: u32, v: vec4<f32>) {
    if (gm >= p.m) { return; }
    let row = batch * p.c_stride + gm * p.n;
    store_one(row, gn0, v.x);
    store_one(row, gn0 + 16u, v.y);
    store_one(row, gn0 + 32u, v.z);
    store_one(row, gn0 + 48u, v.w);
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_off = batch * p.a_stride;
    let b_off = batch * p.b_stride;
    let lx = lid.x;
    let ly = lid.y;
    // Accumulators: c_i holds C's row ly + 16 i at columns lx + 16 j in lane j. Four named vectors,
    // not an indexed array, so that no compiler is tempted to keep them in (slow) local memory.
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    // This workgroup's K range: all of it, or its slice under split-K.
    let k_lo = select(0u, wid.z * p.k_chunk, p.k_chunk < p.k);
    let k_hi = min(p.k, k_lo + p.k_chunk);
    let t = ly * 16u + lx;
    // A_SUMS: this invocation adds rows 4 part .. 4 part + 3 of column t % BM of each staged A tile.
    let summing = A_SUMS && wid.x == 0u;
    let sum_col = t % BM;
    let sum_part = t / BM;
    let sum_row0 = sum_part * 4u;
    var a_sum = 0.0;
    for (var k0 = k_lo; k0 < k_hi; k0 = k0 + BK) {
        load_tiles(t, row0, col0, k0, k_hi, a_off, b_off);
        workgroupBarrier();
        if (summing) {
            a_sum = a_sum + As[sum_row0][sum_col] + As[sum_row0 + 1u][sum_col] + As[sum_row0 + 2u][sum_col]
                + As[sum_row0 + 3u][sum_col];
        }
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let bv = vec4<f32>(Bs[kk][lx], Bs[kk][lx + 16u], Bs[kk][lx + 32u], Bs[kk][lx + 48u]);
            c0 = fma(vec4<f32>(As[kk][ly]), bv, c0);
            c1 = fma(vec4<f32>(As[kk][ly + 16u]), bv, c1);
            c2 = fma(vec4<f32>(As[kk][ly + 32u]), bv, c2);
            c3 = fma(vec4<f32>(As[kk][ly + 48u]), bv, c3);
        }
        workgroupBarrier();
    }
    store_row(batch, row0 + ly, col0 + lx, c0);
    store_row(batch, row0 + ly + 16u, col0 + lx, c1);
    store_row(batch, row0 + ly + 32u, col0 + lx, c2);
    store_row(batch, row0 + ly + 48u, col0 + lx, c3);
    if (A_SUMS) {
        // The loop ended on a barrier, so As is free: each column's 4 partials meet in its rows
        // 0..3, added in a fixed order (deterministic). A_SUMS is a pipeline constant, so the
        // barrier is in uniform control flow.
        if (summing) { As[sum_part][sum_col] = a_sum; }
        workgroupBarrier();
        if (summing && t < BM && row0 + t < p.m) {
            c[batch * p.c_stride + p.sums_at + row0 + t] = As[0u][t] + As[1u][t] + As[2u][t] + As[3u][t];
        }
    }
}
