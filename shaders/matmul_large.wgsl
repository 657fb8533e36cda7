// Batched matrix product on 128 x 128 tiles, for the large products (ViT-B's linear layers at batch 64):
//   C[b] = op(A[b]) * op(B[b]) (+ bias),  op(A): [M, K], op(B): [K, N], C: [batch, M, N]
// and, with the override GELU, also Y = gelu(C). It computes what shaders/matmul.wgsl computes, with
// the same bindings, parameters and overrides (TRANS_A, TRANS_B, GELU, GELU_GRAD, VEC4, A_SUMS), split-K
// included, but each workgroup makes a 4x larger tile of C, so each value staged in workgroup memory
// feeds twice the FMAs. The launcher runs it where the product has enough of these tiles to fill a
// large GPU, or gets enough workgroups by splitting K (the weight gradients: few tiles, a long K);
// a tall thin product at small batch still needs matmul.wgsl's 4x more workgroups.
//
// Layouts (row-major): A is [M, K], or [K, M] when TRANS_A; B is [K, N], or [N, K] when TRANS_B;
// batch b of A starts at b * a_stride (0 shares one A over the batch), likewise B; bias is [N];
// batch b of C (and Y) starts at b * c_stride (= M N, or more with A_SUMS).
// Split-K: when k_chunk < K, z indexes slices of K instead of batches (batch 1, strides 0): slice z
// sums K range [z k_chunk, min(K, (z + 1) k_chunk)) into its own partial C at z c_stride, and the
// launcher adds the slices with reduce.wgsl afterwards (k_chunk is a multiple of BK).
// A_SUMS (a weight gradient dY^T X and its bias gradient, A = dY stored [K, M]): the workgroups of
// column tile 0 also sum the op(A) rows they stage, over their K range, and write the M sums at
// z c_stride + sums_at + m: a linear layer's bias gradient from the tiles the product stages anyway.
//
// Algorithm (shared-memory tiling, 8 x 8 register blocking, double-buffered):
// - a workgroup of 16 x 16 invocations computes a 128 x 128 tile of C; grid
//   (ceil(N/128), ceil(M/128), batch);
// - per step of BK = 8 along K the workgroup stages a 128 x 8 tile of op(A) and an 8 x 128 tile of
//   op(B) in workgroup memory as As[s][kk][q], Bs[s][kk][q]: row kk of the step, elements 4q..4q+3
//   of the tile's M (or N) axis as one vec4, so the inner loop reads 128-bit vectors. Two stages s
//   (16 KiB in all): while the tile of step i is multiplied out of stage i % 2, the invocations hold
//   step i + 1's values (one vec4 of op(A) and one of op(B) each) in registers, loaded before the
//   arithmetic so that the global loads' latency hides behind it, and store them into the other
//   stage after it: one barrier a step;
// - staging: each invocation stages one vector of each operand a step (4 values of the tile's M or
//   N axis at one k), so that it writes one whole vector of workgroup memory: no two invocations
//   write parts of one vector (WGSL lets a component's write rewrite its whole vector). Where M (or
//   N) is memory's contiguous axis (TRANS_A; B not TRANS_B) it is one 128-bit load with VEC4 (4
//   scalars without), invocation t at row kk = t / 32, vector q = t % 32: 32 lanes read 512
//   consecutive bytes. Where K is contiguous it is 4 scalar loads down a column of 4 rows, at
//   row kk = (t / 8) % 8, vector q = 8 (t / 64) + t % 8: a load of 32 lanes reads 16 consecutive
//   bytes from each of 8 rows (the sectors' other halves by the neighbouring 32, from L1), and each
//   8 lanes store 8 consecutive vectors (no bank conflicts). VEC4 needs the contiguous axis and
//   batch strides to be multiples of 4, which every MAE product has. Outside the matrices the
//   values are 0, so any M, N, K works;
// - each invocation (tx, ty) accumulates an 8 x 8 block of C in 16 named vec4 registers: rows
//   4 ty + i (i < 4, c{i}l and c{i}h) and 64 + 4 ty + (i - 4) (i >= 4), columns 4 tx .. 4 tx + 3 (the
//   l vector) and 64 + 4 tx .. + 3 (the h vector). Per kk it reads two vec4 of As (a 32-lane group
//   reads 2 addresses: a broadcast) and two of Bs (16 consecutive vectors: no bank conflicts) and
//   does 64 FMAs. Named vectors, not an indexed array: matmul.wgsl's header tells of the private
//   array that NVIDIA's compiler left in local memory (36x slower); no private value here is
//   indexed at all;
// - the epilogue adds the bias and writes C (and gelu(C) into Y) for the 8 x 8 block, skipping
//   rows >= M and columns >= N;
// - A_SUMS: in the workgroups of column tile 0, invocation t < 128 adds row t of each staged op(A)
//   tile (8 values of K, one vec4 lane) after the step's FMAs, before the stage is overwritten, and
//   writes its sum at the end: 8 workgroup-memory reads a step for half the invocations of one
//   workgroup in N / 128.
// Napkin math: per kk an invocation reads 4 vec4 (16 floats, 4 shared-memory instructions) from
// workgroup memory for 64 FMAs: 4 FMAs per float, 16 per instruction (matmul.wgsl: 2 per float,
// 8 per instruction). One BK step moves 2 x 128 x 8 x 4 = 8 KiB from global memory (L2) for
// 2 x 128 x 128 x 8 = 262 kFLOP: 32 FLOP/byte (matmul.wgsl: 16). ViT-B's decoder fc1 at batch 64,
// [12608, 512] x [512, 2048], is 26.4 GFLOP in 99 x 16 = 1584 tiles (6 waves of 264: 2 resident
// workgroups on each of an H200's 132 SMs); at half the f32 peak (~33 TFLOP/s) it takes 0.8 ms,
// and reads 8 KiB x 64 steps x 1584 tiles = 0.83 GB from L2 (~1 TB/s over 0.8 ms, well inside
// L2's bandwidth) while the operands themselves are 30 MB. The encoder's qkv, [3200, 768] x
// [768, 2304], is 11.3 GFLOP in 450 tiles: 0.34 ms at 33 TFLOP/s. Its weight gradient, the same
// 11.3 GFLOP as [2304, 768] over K = 3200, is only 108 tiles: split into 5 slices of 640 (540
// workgroups), it adds 5 partial products of 7 MB, written and read once more by the sum (~25 us
// at 3 TB/s beside 0.34 ms); on 64 x 64 tiles in one pass it ran at 14 TFLOP/s on an H200, and the
// decoder's [512, 512] from K = 12608 (64 workgroups) at 4. Registers: 64 accumulators,
// 16 operands, 8 staged values and a few indices, ~100 per invocation: 2 workgroups of 256 fit
// an SM's 64 Ki registers.
//
// Bounds: unchecked. Every global read is guarded: gm < M (or gn < N) and gk < k_hi <= K, so it lands inside
// batch b's [M, K] (or [K, M], [N, K], [K, N]) matrix, which ends at (batch - 1) * stride + M K <=
// the operand's length (the launcher checks A, B >= that, bias >= N, and that all of it fits u32,
// so no index wraps). A vec4 read starts at a multiple of 4 (the launcher sets VEC4 only when the
// contiguous axis and the batch strides are multiples of 4, so the guard's first element decides
// for all 4) with its 4 elements in one row, so it ends inside the same matrix. Workgroup memory
// is indexed by stage step % 2 < 2, row kk < 8 (a loop counter, t / 32 or (t / 8) % 8 for t < 256)
// and vector q < 32 (ty, tx, ty + 16, tx + 16 with tx, ty < 16; t % 32; 8 (t / 64) + t % 8 <= 31;
// t / 4 for the sums' t < 128), lane t % 4 < 4.
// With GELU_GRAD, H (binding 7, which the launcher checks holds C's values) is read at the index of C
// being written. C and Y (which the launcher sizes as C) are written only at gm < M, gn < N of batch (or slice)
// b < batch, at b * c_stride + gm N + gn with c_stride >= M N; bias is read at gn < N. The sums go
// to b * c_stride + sums_at + m for m < M, where the launcher makes c_stride >= sums_at + M and the
// buffer batch * c_stride long. Under split-K, k_lo = z k_chunk < K for every slice z < batch
// (the launcher makes batch = ceil(K / k_chunk)), so k_hi = min(K, k_lo + k_chunk) >= k_lo.
//
// Loops: finite. The K loop counts step up by 1 to steps = ceil((k_hi - k_lo) / BK); kk counts up
// by 1 to BK, a constant.
//
// Launcher: engine/src/gpu/kernels/matmul.rs (which also chooses between this and matmul.wgsl).
// Reference: engine/src/cpu/reference.rs (matmul).

// Params and its uniform `p` (binding 0): shaders/lib/matmul_params.wgsl, appended by shaders.rs.
// stage_a, stage_b (the operands' staging loads), store_one and bias4 (the epilogue):
// shaders/lib/matmul_tiles.wgsl, appended by shaders.rs.
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
// Multiply C by gelu'(h), h bound at binding 7 (an MLP's backward; no bias; not with GELU).
override GELU_GRAD: bool = false;
// Also write the M sums of op(A)'s rows over K after C (see the header).
override A_SUMS: bool = false;
// Stage the operands with 128-bit loads (bindings 5 and 6 instead of 1 and 2): the launcher sets it
// when the contiguous axis of each operand and its batch stride are multiples of 4.
override VEC4: bool = false;

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 8u;

// [stage][kk][q]: elements 4q..4q+3 of the tile's M (As) or N (Bs) axis at K step row kk.
var<workgroup> As: array<array<array<vec4<f32>, 32>, 8>, 2>;
var<workgroup> Bs: array<array<array<vec4<f32>, 32>, 8>, 2>;

// Where invocation t stages its vector when memory's contiguous axis is K (op(A) not TRANS_A, op(B)
// TRANS_B): k row (t / 8) % 8, vector (t / 64) * 8 + t % 8. Eight lanes in a row write 8 consecutive
// vectors (the 128 bytes a phase of a 128-bit store covers: no bank conflicts).
fn across_k(t: u32) -> vec2<u32> {
    return vec2<u32>((t / 8u) % 8u, (t / 64u) * 8u + t % 8u);
}

// Where invocation t stages its vector, (kk, q) in each stage: va = op(A)[row0 + 4q + i, k0 + kk]
// in lane i, vb = op(B)[k0 + kk, col0 + 4q + i]. Where M (or N) is
// memory's contiguous axis (TRANS_A; B not TRANS_B): kk = t / 32, q = t % 32, one 128-bit load with
// VEC4 (32 lanes read 512 consecutive bytes). Where K is, (kk, q) = across_k(t) and 4 scalar loads
// down a column: each load of 32 lanes reads 8 rows x 16 consecutive bytes, the other halves of
// those 32-byte sectors by the next group of 32, from L1. Loading 4 rows at one k (not a vec4 along
// k, scattered into 4 vectors) lets each invocation write one whole vector: no two invocations
// write parts of one vector (a component's write may rewrite its whole vector).
fn place(t: u32, mn_contiguous: bool) -> vec2<u32> {
    if (mn_contiguous) { return vec2<u32>(t / 32u, t % 32u); }
    return across_k(t);
}

// Row gm of batch b's C: lo at columns gn0 .. gn0 + 3, hi at gn0 + 64 .. gn0 + 67, with their biases.
fn store_row(batch: u32, gm: u32, gn0: u32, lo: vec4<f32>, hi: vec4<f32>, bias_lo: vec4<f32>, bias_hi: vec4<f32>) {
    if (gm >= p.m) { return; }
    let row = batch * p.c_stride + gm * p.n;
    store_one(row, gn0, lo.x, bias_lo.x);
    store_one(row, gn0 + 1u, lo.y, bias_lo.y);
    store_one(row, gn0 + 2u, lo.z, bias_lo.z);
    store_one(row, gn0 + 3u, lo.w, bias_lo.w);
    store_one(row, gn0 + 64u, hi.x, bias_hi.x);
    store_one(row, gn0 + 65u, hi.y, bias_hi.y);
    store_one(row, gn0 + 66u, hi.z, bias_hi.z);
    store_one(row, gn0 + 67u, hi.w, bias_hi.w);
}

@compute @workgroup_size(16, 16)
fn matmul_large(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_off = batch * p.a_stride;
    let b_off = batch * p.b_stride;
    let tx = lid.x;
    let ty = lid.y;
    let t = ty * 16u + tx;
    // c{i}l, c{i}h: row 4 ty + i (i < 4) or 64 + 4 ty + i - 4 (i >= 4) of the tile, columns
    // 4 tx + j (l) and 64 + 4 tx + j (h) in lane j.
    var c0l = vec4<f32>(0.0);
    var c0h = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1h = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2h = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3h = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4h = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5h = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6h = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7h = vec4<f32>(0.0);
    // This workgroup's K range: all of it, or its slice under split-K.
    let k_lo = select(0u, wid.z * p.k_chunk, p.k_chunk < p.k);
    let k_hi = min(p.k, k_lo + p.k_chunk);
    let steps = (k_hi - k_lo + BK - 1u) / BK;
    // A_SUMS: invocation t < BM of a column-0 workgroup sums row t of op(A)'s tile.
    let summing = A_SUMS && wid.x == 0u && t < BM;
    var a_sum = 0.0;
    // The vectors this invocation stages every step, at (kk, q) of each stage (see place).
    let pa = place(t, TRANS_A);
    let pb = place(t, !TRANS_B);
    let gm = row0 + 4u * pa.y;
    let gn = col0 + 4u * pb.y;
    // Stage the first step (zeros when K = 0: the loop below then does not run).
    var va = stage_a(k_lo + pa.x, gm, k_hi, a_off);
    var vb = stage_b(k_lo + pb.x, gn, k_hi, b_off);
    As[0u][pa.x][pa.y] = va;
    Bs[0u][pb.x][pb.y] = vb;
    workgroupBarrier();
    for (var step = 0u; step < steps; step = step + 1u) {
        let s = step % 2u;
        // steps comes from a uniform, so every invocation takes the same branches and barriers.
        let more = step + 1u < steps;
        if (more) {
            let k_next = k_lo + (step + 1u) * BK;
            va = stage_a(k_next + pa.x, gm, k_hi, a_off);
            vb = stage_b(k_next + pb.x, gn, k_hi, b_off);
        }
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let a_lo = As[s][kk][ty];
            let a_hi = As[s][kk][ty + 16u];
            let b_lo = Bs[s][kk][tx];
            let b_hi = Bs[s][kk][tx + 16u];
            c0l = fma(vec4<f32>(a_lo.x), b_lo, c0l);
            c0h = fma(vec4<f32>(a_lo.x), b_hi, c0h);
            c1l = fma(vec4<f32>(a_lo.y), b_lo, c1l);
            c1h = fma(vec4<f32>(a_lo.y), b_hi, c1h);
            c2l = fma(vec4<f32>(a_lo.z), b_lo, c2l);
            c2h = fma(vec4<f32>(a_lo.z), b_hi, c2h);
            c3l = fma(vec4<f32>(a_lo.w), b_lo, c3l);
            c3h = fma(vec4<f32>(a_lo.w), b_hi, c3h);
            c4l = fma(vec4<f32>(a_hi.x), b_lo, c4l);
            c4h = fma(vec4<f32>(a_hi.x), b_hi, c4h);
            c5l = fma(vec4<f32>(a_hi.y), b_lo, c5l);
            c5h = fma(vec4<f32>(a_hi.y), b_hi, c5h);
            c6l = fma(vec4<f32>(a_hi.z), b_lo, c6l);
            c6h = fma(vec4<f32>(a_hi.z), b_hi, c6h);
            c7l = fma(vec4<f32>(a_hi.w), b_lo, c7l);
            c7h = fma(vec4<f32>(a_hi.w), b_hi, c7h);
        }
        if (summing) {
            for (var kk = 0u; kk < BK; kk = kk + 1u) {
                a_sum = a_sum + As[s][kk][t / 4u][t % 4u];
            }
        }
        // Stage 1 - s was last read in the previous step, before the barrier that ended it.
        if (more) {
            As[1u - s][pa.x][pa.y] = va;
            Bs[1u - s][pb.x][pb.y] = vb;
        }
        workgroupBarrier();
    }
    let gn0 = col0 + 4u * tx;
    let bias_lo = bias4(gn0);
    let bias_hi = bias4(gn0 + 64u);
    let r0 = row0 + 4u * ty;
    let r4 = row0 + 64u + 4u * ty;
    store_row(batch, r0, gn0, c0l, c0h, bias_lo, bias_hi);
    store_row(batch, r0 + 1u, gn0, c1l, c1h, bias_lo, bias_hi);
    store_row(batch, r0 + 2u, gn0, c2l, c2h, bias_lo, bias_hi);
    store_row(batch, r0 + 3u, gn0, c3l, c3h, bias_lo, bias_hi);
    store_row(batch, r4, gn0, c4l, c4h, bias_lo, bias_hi);
    store_row(batch, r4 + 1u, gn0, c5l, c5h, bias_lo, bias_hi);
    store_row(batch, r4 + 2u, gn0, c6l, c6h, bias_lo, bias_hi);
    store_row(batch, r4 + 3u, gn0, c7l, c7h, bias_lo, bias_hi);
    if (summing && row0 + t < p.m) {
        c[batch * p.c_stride + p.sums_at + row0 + t] = a_sum;
    }
}
