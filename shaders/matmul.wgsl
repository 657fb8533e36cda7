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
// Algorithm (shared-memory tiling, 4 x 4 register blocking, double-buffered):
// - a workgroup of 16 x 16 invocations computes a 64 x 64 tile of C; grid (ceil(N/64), ceil(M/64), batch);
// - per step of BK = 16 along K the workgroup stages a 64 x 16 tile of op(A) and a 16 x 64 tile of
//   op(B) in workgroup memory as As[s][kk][q], Bs[s][kk][q]: row kk of the step, elements
//   4q..4q+3 of the tile's M (or N) axis as one vec4, so that the inner loop reads 128-bit vectors.
//   Two stages s (16 KiB in all): while step i is multiplied out of stage i % 2, each invocation
//   holds step i + 1's values (one vec4 of each operand) in registers, loaded before the arithmetic
//   so that the global loads' latency hides behind it, and stores them into the other stage after
//   it: one barrier a step. Zero outside the matrices, so any M, N, K works;
// - staging, as in matmul_large.wgsl: each invocation stages one whole vector of each operand (4
//   values of the M or N axis at one k; no two invocations write parts of one vector, which WGSL
//   would let rewrite the whole vector). Where M (or N) is memory's contiguous axis (TRANS_A; B not
//   TRANS_B) invocation t takes row kk = t / 16, vector q = t % 16: one 128-bit load with VEC4 (4
//   scalars without), 16 lanes reading 256 consecutive bytes. Where K is contiguous it loads 4
//   scalars down a column of 4 rows at kk = (t / 8) % 16, q = 8 (t / 128) + t % 8: each load of 32
//   lanes reads 16 consecutive bytes from each of 8 rows (the rest of those sectors by the
//   neighbouring warps, from L1), and each 8 lanes store 8 consecutive vectors (no bank conflicts).
//   VEC4 needs the contiguous axis and the batch strides to be multiples of 4 (every MAE product);
// - each invocation (tx, ty) accumulates the 4 x 4 block at rows 4 ty + i, columns 4 tx .. 4 tx + 3
//   in four named vec4 c0..c3 (row i in c_i). Per kk it reads one vec4 of As (2 addresses a 32-lane
//   group: a broadcast) and one of Bs (16 consecutive vectors) and does 16 FMAs. Named vectors, not
//   an indexed array: the first version kept `array<array<f32, 4>, 4>` and passed it to helper
//   functions, which NVIDIA's Vulkan compiler left in local memory (36x slower steps on an H200,
//   docs/journal/benchmarks.md); no private value here is indexed at all;
// - the epilogue adds the bias and writes C (and gelu(C) into Y; or multiplies by gelu'(H)) for the
//   4 x 4 block, skipping rows >= M and columns >= N;
// - split-K: a product with few output tiles and a long K (a weight gradient: [3328, 128]^T x
//   [3328, 512] is 2 x 8 tiles) would leave most of a large GPU idle, so the launcher gives each of
//   S z-slices k_chunk values of K (a multiple of BK), writes S partial products [S, M, N] and sums
//   them with reduce.wgsl's sum_cols (a fixed order: deterministic);
// - with the override A_SUMS (TRANS_A: A is a linear layer's output gradient dY stored [K, M]) the
//   workgroups of the first column also add up the op(A) vectors their invocations stage (in
//   registers, as they stage them: no workgroup-memory read), so the product's dispatch also yields
//   the bias gradient sum_k dY[k, m], written after C (at sums_at of each slice). At the end the 16
//   partials of each vector q (one per row kk) meet in workgroup memory and 16 invocations add them
//   in a fixed order (deterministic).
// Napkin math: per kk an invocation reads 2 vec4 (2 workgroup-memory instructions; a 32-lane group
// touches 3 x 128 bytes of banks) for 16 FMAs: 8 FMAs per instruction, where the scalar version read
// 8 values (8 instructions, 8 x 128 bytes) for the same 16. On an SM (4 FMA warp-instructions and
// 128 bytes of workgroup memory a clock) 8 warps' kk costs 32 clocks of FMAs and 24 of workgroup
// memory: FMA-bound, where the scalar version needed 64 clocks of workgroup memory (half the FMA
// rate at best). One tile step moves 8 KiB from global memory (L2) for 2 x 64 x 64 x 16 = 131 kFLOP,
// 16 FLOP/byte. The micro preset's products at batch 256 ([4352, 128] x [128, 128]: 136 workgroups,
// about one an SM) ran at 46 us each on an H200, K / BK steps of ~1.5 us each: a global load's
// latency, then the arithmetic, then two barriers; with the next step's loads issued before the
// arithmetic, a step costs about the larger of the two. ViT-B's [3200, 768] x [768, 768] (600
// workgroups) ran at 6.6 TFLOP/s (0.57 ms); FMA-bound it would be ~3x that.
//
// Bounds: unchecked. Every global read is guarded by gm < M, gn < N, gk < k_hi <= K, so it lands inside
// batch b's [M, K] (or [N, K]) matrix, which ends at (batch - 1) * stride + M K <= the operand's
// length (the launcher checks A, B >= that, bias >= N, and that all of it fits u32, so no index
// wraps). A vec4 load starts at a multiple of 4 (the launcher sets VEC4 only when the
// contiguous axis and the batch strides are multiples of 4) with its 4 elements in one row, so it
// ends inside the same matrix. Workgroup memory is indexed by stage step % 2 < 2, row kk < 16 (a loop
// counter, t / 16 or (t / 8) % 16 for t < 256) and vector q < 16 (ty, tx < 16; t % 16;
// 8 (t / 128) + t % 8 <= 15; the A_SUMS partials at the invocation's own (kk, q), read back at t < 16).
// C (and Y, which the launcher sizes as C) is written only at gm < M, gn < N of batch b < batch;
// with GELU_GRAD, H (binding 7, which the launcher checks holds C's values) is read at the index of C
// being written.
// Under split-K, batch is the slice count S with strides 0 (every slice
// reads the one matrix) and C is the [S, M, N] partials the launcher allocates. Slice z's C starts
// at z * c_stride with c_stride >= M N, and with A_SUMS c_stride >= sums_at + M, sums_at >= M N:
// the sums, written at gm = row0 + 4 t + j < M (t < 16, j < 4), land after that slice's C and
// before the next slice's (the launcher allocates batch * c_stride).
//
// Loops: finite. The K loop counts step up by 1 to steps = ceil((k_hi - k_lo) / BK), kk by 1 to BK
// (each bound at most a buffer's length in values, below 2^30 since the context makes no buffer of
// 4 GiB, so no counter wraps past it).
//
// Launcher: engine/src/gpu/kernels/matmul.rs. Reference: engine/src/cpu/reference.rs (matmul).

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
// Multiply C by gelu'(h), h bound at binding 7 (no bias; not with GELU).
override GELU_GRAD: bool = false;
// Stage with 128-bit loads where memory's contiguous axis is M or N (bindings 5 and 6 instead of 1
// and 2): the launcher sets it when the contiguous axis of each operand and its batch stride are
// multiples of 4.
override VEC4: bool = false;
// Also sum op(A)'s rows over K (TRANS_A only: A stored [K, M], a linear layer's output gradient,
// whose row sums are its bias gradient): the first column of workgroups adds the A vectors it stages
// anyway and writes the M sums into c at sums_at (one dispatch and one read of dY fewer).
override A_SUMS: bool = false;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

// [stage][kk][q]: elements 4q..4q+3 of the tile's M (As) or N (Bs) axis at K step row kk.
var<workgroup> As: array<array<array<vec4<f32>, 16>, 16>, 2>;
var<workgroup> Bs: array<array<array<vec4<f32>, 16>, 16>, 2>;

// Where invocation t stages its vector, (kk, q). Along M or N, memory's contiguous axis: row
// t / 16, vector t % 16 (16 lanes read 256 consecutive bytes). Across K (K contiguous): row
// (t / 8) % 16, vector 8 (t / 128) + t % 8, so that 8 lanes in a row write 8 consecutive vectors.
fn place(t: u32, mn_contiguous: bool) -> vec2<u32> {
    if (mn_contiguous) { return vec2<u32>(t / 16u, t % 16u); }
    return vec2<u32>((t / 8u) % 16u, (t / 128u) * 8u + t % 8u);
}

// Row gm of batch b's C at columns gn0 .. gn0 + 3 from v, with their biases.
fn store_row(batch: u32, gm: u32, gn0: u32, v: vec4<f32>, bias_v: vec4<f32>) {
    if (gm >= p.m) { return; }
    let row = batch * p.c_stride + gm * p.n;
    store_one(row, gn0, v.x, bias_v.x);
    store_one(row, gn0 + 1u, v.y, bias_v.y);
    store_one(row, gn0 + 2u, v.z, bias_v.z);
    store_one(row, gn0 + 3u, v.w, bias_v.w);
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_off = batch * p.a_stride;
    let b_off = batch * p.b_stride;
    let tx = lid.x;
    let ty = lid.y;
    let t = ty * 16u + tx;
    // c_i: row 4 ty + i of the tile, columns 4 tx + j in lane j. Four named vectors, not an
    // indexed array, so that no compiler is tempted to keep them in (slow) local memory.
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    // This workgroup's K range: all of it, or its slice under split-K.
    let k_lo = select(0u, wid.z * p.k_chunk, p.k_chunk < p.k);
    let k_hi = min(p.k, k_lo + p.k_chunk);
    let steps = (k_hi - k_lo + BK - 1u) / BK;
    // A_SUMS: the column-0 workgroups add up every op(A) vector their invocations stage.
    let summing = A_SUMS && wid.x == 0u;
    var a_sum = vec4<f32>(0.0);
    // The vectors this invocation stages every step, (kk, q) in each stage: va = op(A)[gm + i,
    // k0 + kk] and vb = op(B)[k0 + kk, gn + i] in lane i (0 outside the matrices or past k_hi).
    let pa = place(t, TRANS_A);
    let pb = place(t, !TRANS_B);
    let gm = row0 + 4u * pa.y;
    let gn = col0 + 4u * pb.y;
    // Stage the first step (zeros when K = 0: the loop below then does not run).
    var va = stage_a(k_lo + pa.x, gm, k_hi, a_off);
    var vb = stage_b(k_lo + pb.x, gn, k_hi, b_off);
    if (summing) { a_sum = a_sum + va; }
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
            let av = As[s][kk][ty];
            let bv = Bs[s][kk][tx];
            c0 = fma(vec4<f32>(av.x), bv, c0);
            c1 = fma(vec4<f32>(av.y), bv, c1);
            c2 = fma(vec4<f32>(av.z), bv, c2);
            c3 = fma(vec4<f32>(av.w), bv, c3);
        }
        // Stage 1 - s was last read in the previous step, before the barrier that ended it.
        if (more) {
            if (summing) { a_sum = a_sum + va; }
            As[1u - s][pa.x][pa.y] = va;
            Bs[1u - s][pb.x][pb.y] = vb;
        }
        workgroupBarrier();
    }
    let gn0 = col0 + 4u * tx;
    let bias_v = bias4(gn0);
    let r0 = row0 + 4u * ty;
    store_row(batch, r0, gn0, c0, bias_v);
    store_row(batch, r0 + 1u, gn0, c1, bias_v);
    store_row(batch, r0 + 2u, gn0, c2, bias_v);
    store_row(batch, r0 + 3u, gn0, c3, bias_v);
    if (A_SUMS) {
        // The loop ended on a barrier, so stage 0 is free: each vector q's 16 partials (one per row
        // kk) meet there and invocation q adds them in a fixed order (deterministic). A_SUMS is a
        // pipeline constant, so the barrier is in uniform control flow.
        if (summing) { As[0u][pa.x][pa.y] = a_sum; }
        workgroupBarrier();
        if (summing && t < 16u) {
            var total = As[0u][0u][t];
            for (var kk = 1u; kk < BK; kk = kk + 1u) { total = total + As[0u][kk][t]; }
            let at_sums = batch * p.c_stride + p.sums_at + row0 + 4u * t;
            if (row0 + 4u * t < p.m) { c[at_sums] = total.x; }
            if (row0 + 4u * t + 1u < p.m) { c[at_sums + 1u] = total.y; }
            if (row0 + 4u * t + 2u < p.m) { c[at_sums + 2u] = total.z; }
            if (row0 + 4u * t + 3u < p.m) { c[at_sums + 3u] = total.w; }
        }
    }
}
