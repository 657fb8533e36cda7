// Batched matrix product on tensor cores, f16 inputs and f32 sums (the f16 product precision):
//   C[b] = op(A[b]) * op(B[b]) (+ bias),  op(A): [M, K], op(B): [K, N], C: [batch, M, N]
// and, with the override GELU, also Y = gelu(C). It computes what shaders/matmul.wgsl computes, with
// its parameters and overrides (TRANS_A, TRANS_B, GELU, GELU_GRAD) and bindings 1 - 4 and 7 (no vec4 views),
// but rounds both operands to f16 as it stages them and multiplies 16 x 16 x 16 blocks with
// cooperative matrices (wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX: `coop_mat16x16<f16, A>` and
// `<f16, B>` into `<f32, C>`; VK_KHR_cooperative_matrix on NVIDIA's Vulkan driver, the tensor
// cores). The launcher runs it only where the adapter lists that configuration and has 32-wide
// subgroups (below), at Precision::F16; the CPU reference of what it computes is the f32 product
// of the operands rounded to f16 (engine/src/cpu/matmul/f16.rs).
//
// Layouts (row-major): A is [M, K], or [K, M] when TRANS_A; B is [K, N], or [N, K] when TRANS_B;
// batch b of A starts at b * a_stride (0 shares one A over the batch), likewise B; bias is [N];
// batch (or K slice) z of C and Y starts at z * c_stride. Split-K as in matmul.wgsl: when
// k_chunk < K, workgroup z sums K range [z k_chunk, min(K, (z + 1) k_chunk)) with strides 0 and the
// launcher adds the slices' partial products after.
//
// Algorithm (shared-memory tiling, cooperative-matrix blocks):
// - a workgroup of 256 invocations, 8 subgroups of 32 (the launcher requires the adapter's
//   subgroups to be exactly 32 wide, as NVIDIA's are, so that subgroup w is invocations
//   32 w .. 32 w + 31), computes a 128 x 128 tile of C; grid (ceil(N/128), ceil(M/128), batch).
//   Subgroup w owns the 64 x 32 block at rows 64 (w / 4), columns 32 (w % 4) of the tile: 4 x 2
//   accumulators of 16 x 16 f32 (c00 .. c31, named: no array of cooperative matrices);
// - per step of BK = 32 along K the workgroup stages op(A)'s 128 x 32 tile and op(B)'s 32 x 128
//   tile in workgroup memory as f16, each invocation 16 values of each, converted from f32 as they
//   are stored (the only rounding: the sums stay f32). Each operand is stored with memory's
//   contiguous axis contiguous, so that 32 lanes read 128 consecutive bytes of global memory and
//   write 64 consecutive bytes of workgroup memory: op(A) as [m][k] with row stride 40 (A plain,
//   K contiguous; loaded row-major, coopLoadT) or [k][m] with stride 136 (TRANS_A; loaded
//   column-major, coopLoad); op(B) as [k][n] stride 136 (B plain, coopLoadT) or [n][k] stride 40
//   (TRANS_B, coopLoad). The padded strides (40 and 136 halves: 80 and 272 bytes, multiples of 16
//   as the loads want) spread a block's rows over the banks. Outside the matrices (and the K
//   slice) the staged values are 0, so any M, N, K works;
// - per 16-deep half of a step, subgroup w loads its 4 blocks of op(A) and 2 of op(B) and does
//   8 coopMultiplyAdd; one barrier after staging, one after the arithmetic (single-buffered: the
//   several workgroups an SM holds overlap one's staging with another's products);
// - the epilogue: each subgroup stores one accumulator at a time (row-major, coopStoreT) into its
//   own 16 x 16 f32 scratch, and its 32 lanes add the bias and write 8 values each to C (and
//   gelu(C) to Y), skipping rows >= M and columns >= N; workgroup barriers around each (all
//   subgroups store alike, so the barriers are uniform). No subgroup builtin is used: NVIDIA's
//   compiler is reported to crash on a module that mixes them with cooperative matrices.
// Napkin math: per BK step a subgroup does 2 x 8 = 16 MMAs of 16 x 16 x 16 (131 kFLOP) and the
// workgroup 1.05 MFLOP, for 2 x 128 x 32 x 4 = 32 KiB read from global memory (L2) as f32: 32
// FLOP/byte. An H100's f16 tensor cores peak near 990 TFLOP/s dense, far above what the f32 staging
// feeds: at ~5 TB/s of L2 bandwidth the staging caps this kernel near 160 TFLOP/s, the issue's
// 150 TFLOP/s target; the fix past that is operands kept in f16 (half the bytes). ViT-B's decoder
// fc1 at batch 64, [12608, 512] x [512, 2048], is 26.4 GFLOP in 99 x 16 = 1584 tiles: 0.18 ms at
// 150 TFLOP/s against 0.8 ms for matmul_large.wgsl at half the f32 peak. Workgroup memory:
// 2 x 5120 halves (10 KiB each) for the operands and 8 x 256 f32 (8 KiB) of scratch: 28 KiB, so
// several workgroups share an SM.
//
// Bounds: unchecked. Every global read is guarded: gm < M (or gn < N) and gk < k_hi <= K, so it lands
// inside batch b's [M, K] (or [K, M], [N, K], [K, N]) matrix, which ends at (batch - 1) * stride + M K
// <= the operand's length (the launcher checks A, B >= that, bias >= N, and that all of it fits
// u32). Workgroup memory: As and Bs hold 5120 halves; a stored index is m * 40 + k < 127 * 40 + 32,
// k * 136 + m < 31 * 136 + 128 (4344), n * 40 + k or k * 136 + n likewise (m, n < 128, k < 32 by the
// staging's t % 32, t / 32 + 8 i, t % 128, t / 128 + 2 i with t < 256, i < 16); a block loaded at
// (row r0, column k0) with stride 40 spans up to (r0 + 15) * 40 + k0 + 15 <= 127 * 40 + 31, with
// stride 136 up to (k0 + 15) * 136 + r0 + 15 <= 31 * 136 + 127. Scratch: subgroup w < 8 stores
// and reads 256 values at 256 w. C and Y (which the launcher sizes as C) are written only at
// gm < M, gn < N of z < batch, at z * c_stride + gm N + gn with c_stride >= M N; bias is read at
// gn < N; with GELU_GRAD, H (binding 7, which the launcher checks holds C's values) is read at the
// index of C being written.
//
// Loops: finite. K steps count k0 up by BK (32) from the slice's start to k_hi <= K; the staging,
// half-step and epilogue loops count up by a constant to a constant (each bound is at most a
// buffer's length in values, below 2^30 since the context makes no buffer of 4 GiB, so a counter
// stepping up by at most 256 never wraps past it).
//
// Launcher: engine/src/gpu/kernels/matmul.rs (which chooses it at Precision::F16 where the adapter
// has f16 cooperative matrices).
// Reference: engine/src/cpu/reference.rs (matmul), on operands rounded by engine/src/cpu/matmul/f16.rs.

enable f16;
enable wgpu_cooperative_matrix;

// Params and its uniform `p` (binding 0): shaders/lib/matmul_params.wgsl, appended by shaders.rs.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// Also write y = gelu(c) (binding 7).
override GELU: bool = false;
// Multiply C by gelu'(h), h bound at binding 7 (an MLP's backward; no bias; not with GELU).
override GELU_GRAD: bool = false;

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 32u;
// Row strides, in halves, of the staged tiles: along K (BK + 8) or along M or N (BM + 8).
const ALONG_K: u32 = 40u;
const ALONG_MN: u32 = 136u;

var<workgroup> As: array<f16, 5120>;
var<workgroup> Bs: array<f16, 5120>;
// One 16 x 16 f32 block per subgroup, for the epilogue.
var<workgroup> scratch: array<f32, 2048>;

// Stages step k0's tiles of op(A) (rows row0..) and op(B) (columns col0..) as f16, 0 outside the
// matrices and past k_hi.
fn stage(t: u32, row0: u32, col0: u32, k0: u32, k_hi: u32, a_off: u32, b_off: u32) {
    for (var i = 0u; i < 16u; i++) {
        if (TRANS_A) {
            // A is [K, M]: lanes along m.
            let m = t % BM;
            let kk = t / BM + 2u * i;
            let gm = row0 + m;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < p.m && gk < k_hi) { v = a[a_off + gk * p.m + gm]; }
            As[kk * ALONG_MN + m] = f16(v);
        } else {
            // A is [M, K]: lanes along k.
            let kk = t % BK;
            let m = t / BK + 8u * i;
            let gm = row0 + m;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < p.m && gk < k_hi) { v = a[a_off + gm * p.k + gk]; }
            As[m * ALONG_K + kk] = f16(v);
        }
        if (TRANS_B) {
            // B is [N, K]: lanes along k.
            let kk = t % BK;
            let n = t / BK + 8u * i;
            let gn = col0 + n;
            let gk = k0 + kk;
            var v = 0.0;
            if (gn < p.n && gk < k_hi) { v = b[b_off + gn * p.k + gk]; }
            Bs[n * ALONG_K + kk] = f16(v);
        } else {
            // B is [K, N]: lanes along n.
            let n = t % BN;
            let kk = t / BN + 2u * i;
            let gn = col0 + n;
            let gk = k0 + kk;
            var v = 0.0;
            if (gn < p.n && gk < k_hi) { v = b[b_off + gk * p.n + gn]; }
            Bs[kk * ALONG_MN + n] = f16(v);
        }
    }
}

// The 16 x 16 block of op(A) at tile row r0 and step column k0.
fn load_a(r0: u32, k0: u32) -> coop_mat16x16<f16, A> {
    if (TRANS_A) {
        return coopLoad<coop_mat16x16<f16, A>>(&As[k0 * ALONG_MN + r0], ALONG_MN);
    }
    return coopLoadT<coop_mat16x16<f16, A>>(&As[r0 * ALONG_K + k0], ALONG_K);
}

// The 16 x 16 block of op(B) at step row k0 and tile column c0.
fn load_b(k0: u32, c0: u32) -> coop_mat16x16<f16, B> {
    if (TRANS_B) {
        return coopLoad<coop_mat16x16<f16, B>>(&Bs[c0 * ALONG_K + k0], ALONG_K);
    }
    return coopLoadT<coop_mat16x16<f16, B>>(&Bs[k0 * ALONG_MN + c0], ALONG_MN);
}

// Writes subgroup w's accumulator block at C rows gm0.., columns gn0.. of slice z, from lane l:
// the block goes through the subgroup's scratch, then each lane writes 8 of its values.
fn store_block(w: u32, l: u32, acc: coop_mat16x16<f32, C>, z: u32, gm0: u32, gn0: u32) {
    coopStoreT(acc, &scratch[w * 256u], 16u);
    workgroupBarrier();
    for (var e = 0u; e < 8u; e++) {
        let idx = e * 32u + l;
        let gm = gm0 + idx / 16u;
        let gn = gn0 + idx % 16u;
        if (gm < p.m && gn < p.n) {
            var v = scratch[w * 256u + idx];
            if (p.has_bias != 0u) { v += bias[gn]; }
            let at = z * p.c_stride + gm * p.n + gn;
            if (GELU_GRAD) { v = v * gelu_grad(y[at]); }
            c[at] = v;
            if (GELU) { y[at] = gelu(v); }
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn matmul_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let z = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_off = z * p.a_stride;
    let b_off = z * p.b_stride;
    let k_lo = select(0u, z * p.k_chunk, p.k_chunk < p.k);
    let k_hi = min(p.k, k_lo + p.k_chunk);
    // Subgroup w (invocations 32 w ..) owns rows wr .. wr + 63 and columns wc .. wc + 31 of the tile.
    let w = t / 32u;
    let l = t % 32u;
    let wr = (w / 4u) * 64u;
    let wc = (w % 4u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();
    for (var k0 = k_lo; k0 < k_hi; k0 += BK) {
        stage(t, row0, col0, k0, k_hi, a_off, b_off);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 16u) {
            let b0 = load_b(kk, wc);
            let b1 = load_b(kk, wc + 16u);
            let a0 = load_a(wr, kk);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = load_a(wr + 16u, kk);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            let a2 = load_a(wr + 32u, kk);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            let a3 = load_a(wr + 48u, kk);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();
    }
    let gm = row0 + wr;
    let gn = col0 + wc;
    store_block(w, l, c00, z, gm, gn);
    store_block(w, l, c01, z, gm, gn + 16u);
    store_block(w, l, c10, z, gm + 16u, gn);
    store_block(w, l, c11, z, gm + 16u, gn + 16u);
    store_block(w, l, c20, z, gm + 32u, gn);
    store_block(w, l, c21, z, gm + 32u, gn + 16u);
    store_block(w, l, c30, z, gm + 48u, gn);
    store_block(w, l, c31, z, gm + 48u, gn + 16u);
}
