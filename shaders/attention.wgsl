// Fused multi-head scaled-dot-product self-attention, forward and backward, without ever storing the
// [seq, seq] score matrix in global memory (FlashAttention-2's online softmax and its recomputing
// backward, sized for MAE's short sequences: tens to a couple of hundred tokens).
//
// Layout: every operand is addressed through a head layout (HeadLayout in engine/src/backend.rs):
// row i of head h starts at (h / group) * sample_stride + (h % group) * head_stride + offset
// + i * row_stride. So the same kernels read separate [heads, seq, dim] tensors, or q, k and v
// straight out of the fused projection qkv: [N, seq, 3, H, dim] and write the merged heads
// out: [N, seq, H, dim], with no permutation or slicing pass around them. lse, delta: [heads, seq].
// dout shares out's layout; dk and dv are written through one binding (dkv), at their own layouts.
// scale = 1 / sqrt(dim). HEAD_DIM (an override constant, = dim) sizes the workgroup tiles and fixes
// the trip count of the inner loops; dim <= MAX_D.
//
// Math: forward S = q k^T scale, out = softmax(S) v, lse = rowwise log-sum-exp of S (kept for the
// backward). Backward with P = exp(S - lse) recomputed: delta_i = dout_i . out_i (= sum_j P_ij dP_ij),
// dP = dout v^T, dS = P o (dP - delta), dq = scale dS k, dk = scale dS^T q, dv = P^T dout. The dq
// pass and the dk/dv pass each recompute S and dP, so no atomics and one fixed summation order per
// value (deterministic), at the price of computing P twice.
//
// Two families of kernels; the launcher (Path) picks one per head dim:
// - tiles (forward_tiles, backward_dq_tiles, backward_dkdv_tiles), for dim % 4 == 0 and dim <= 64
//   (every MAE preset: 16, 32, 64) when the device has the workgroup memory (30 KiB at dim 64):
//   a workgroup of 64 invocations (tx = lid % 8, ty = lid / 8) owns OWN = 32 rows of one head
//   (queries; keys in dkdv), staged once in workgroup memory, and streams the other side in tiles of
//   STREAM = 16 rows. Per streamed tile the [32, 16] score block is one register-blocked product:
//   invocation (tx, ty) owns rows ty + 8 r (r < 4) x streamed rows tx + 8 c (c < 2), two named vec4
//   s0, s1 whose components are its four rows, and walks dim in vec4 steps: 4 + 2 vec4 loads from
//   workgroup memory for 8 vec4 dot products (32 FMAs). The block (P or dS) then goes to workgroup
//   memory as [16, 8] vec4 (entry j * 8 + ty = the four rows of ty at streamed row j) and the second
//   product walks the 16 streamed rows: one vec4 of the block and one vec4 of v (or k, dout, q) per
//   column chunk, into named vec4 accumulators o_rc (row r, columns 4 (tx + 8 c) .. + 3, c < 2, the
//   second chunk only when dim > 32). No private array anywhere (NVIDIA's Vulkan compiler left
//   indexed private arrays in local memory: the matmul.wgsl header). Staged rows are padded to
//   dim / 4 + 1 vec4 so the 8 rows that 8 lanes read at once sit on distinct banks.
//   forward_tiles: per key tile, a row max over the tile (each lane's 2 keys, then the 8 lanes of a
//   row through red_max), m_new = max(m, tile max), P = exp(S - m_new), the row sums through red_sum,
//   l = l exp(m - m_new) + sum, o = o exp(m - m_new) + P v. Every lane of a row computes the same m
//   and l from the same partials in the same order, so they agree exactly. out = o / l, lse = m + log l.
//   backward_dq_tiles: owns 32 queries (q scale and dout staged, lse and delta in registers; it
//   computes delta = dout . out for them and writes it), streams keys (k and v): S and dP in one walk
//   over dim, dS to workgroup memory, dq += dS k.
//   backward_dkdv_tiles: owns 32 keys (k and v staged), streams queries (q scale, dout, their lse
//   and delta): S^T and dP^T blocks, P and dS to workgroup memory, dv += P^T dout, dk += dS^T (q scale).
// - rows (forward, backward_dq, backward_dkdv), for every other dim up to MAX_D (18, 96, 128, ..., or
//   a device with less workgroup memory): a workgroup of 64 invocations per (64 queries, head), each
//   invocation owning one query row (one key in dkdv) in private arrays of HEAD_DIM values, with keys
//   and values streamed through workgroup memory in tiles of BT = 16 rows; per tile 16 scores,
//   their max, a rescale, then o += exp(s - m) v. Those arrays are indexed by loop counters: slow on
//   NVIDIA (local memory) but any dim works.
// - backward_prep (rows): delta[i] = dout[i] . out[i], one invocation per row, before backward_dq.
//   The tiles compute it in backward_dq_tiles instead (its owned rows' dout . out, which it writes
//   to delta for backward_dkdv_tiles, dispatched after it): one dispatch fewer a backward.
//
// Napkin math (tiles; ViT-B at batch 64, the H200 profile in docs/journal/h200-2026-12-04/):
// FLOPs per head: forward 4 T^2 d (S and P v), dq pass 6 T^2 d (S, dP, dS k), dkdv pass 8 T^2 d
// (S, dP, P^T dout, dS^T q), plus T^2 exps a pass. Padding: queries to 32-row tiles, keys to 16.
// - decoder, 1024 heads x 197 x 32, 8 layers: forward 5.1 GFLOP a layer (41 a step), dq 61, dkdv
//   81 GFLOP a step; the tiles compute 224 x 208 of 197 x 197 (1.2x). Memory: q, k, v, out are
//   26 MB each a layer (~0.1 GB a pass, 20 us at 4.8 TB/s); each of a head's 7 query tiles reads its
//   k and v again (50 KB a tile, from L2). Per streamed tile a workgroup stages 2 x 16 x 32 floats
//   (4 KiB) for 2 x 32 x 16 x 32 x 2 = 65 kFLOP: compute-bound. The measured row kernels: 25, 42,
//   68 ms a step (1.6, 1.5, 1.2 TFLOP/s). At 30 - 50% of the H200's ~67 TFLOP/s f32 FMA peak
//   (20 - 33 TFLOP/s) with the 1.2x padding: forward 1.5 - 2.5 ms, dq 2.2 - 3.7, dkdv 3 - 5 ms.
// - encoder, 768 heads x 50 x 64, 12 layers: forward 5.9, dq 8.8, dkdv 11.8 GFLOP a step; tiles of
//   64 x 64 for 50 x 50 (1.64x). Measured row kernels: 10, 16, 28 ms (0.6, 0.55, 0.42 TFLOP/s).
//   At 20 - 33 TFLOP/s with the padding: forward 0.3 - 0.5 ms, dq 0.45 - 0.7, dkdv 0.6 - 1 ms.
// So about 8 - 14 ms a step for the six kernels against 189 ms: under 5% of the step's ~420 ms of
// kernel time, if the tiles reach that rate. What bounds them is workgroup-memory traffic: the score
// walk issues 6 vec4 loads per 32 FMAs a lane (the 4 owned rows are broadcasts: 4 distinct rows a warp),
// the second product 2 - 3 per 16 - 32; 3 - 4 barriers per streamed tile.
//
// Bounds: unchecked. Every entry returns for h >= heads (uniform across a workgroup, before any
// barrier). Global reads: rows are clamped to seq - 1 (and the value replaced by 0 past seq) and
// columns c < HEAD_DIM = dim (the vec4 helpers read 4 d4 + 0..3 with d4 < D4 = dim / 4, so
// < dim), so each global index is at most row_at(h, seq - 1) + dim - 1 under its layout; the launcher
// checks that every buffer holds its layout's extent (the farthest head's last row, `extent` in the
// launcher), that it fits u32, and that lse holds heads x seq (lse and delta are read at
// h * seq + min(i, seq - 1)). Global writes: only rows i < seq, columns < dim (tiles: column chunk
// tx + 8 c < D4, the has0 / has1 guards). Workgroup arrays: tiles: owned rows ty + 8 r < 32,
// streamed rows tx + 8 c < 16, staging rows e / D4 < 32 (or 16) at e % D4 < D4 < ROW4, column chunks
// tx + 8 c < D4, blocks at j * 8 + ty < 128, red_* at ty * 8 + t < 64, str_lse at lid < 16; rows:
// tile index e < BT x HEAD_DIM, row_lse / s at jj, lid < BT, private rows at c < HEAD_DIM <= MAX_D.
//
// Loops: finite. Streamed tiles count j0 (or i0) up by the tile's rows (16) to seq; staging loops
// count e up by the workgroup size to a constant (OWN or STREAM rows x D4, BT x HEAD_DIM); every
// other loop (c, d4, jj, ii, j, t) counts up by 1 (delta's d4 by 8) to a constant or to nt <= 16
// (each bound is at most a buffer's length in values, below 2^30 since the context makes no buffer
// of 4 GiB, so a counter stepping up by at most 256 never wraps past it).
//
// Launcher: engine/src/gpu/kernels/attention.rs. Reference: engine/src/cpu/reference.rs.

struct Params {
    heads: u32,
    seq: u32,
    dim: u32,
    scale: f32,
    // Layouts as (group, sample_stride, head_stride, row_stride); offsets beside them.
    lay_q: vec4<u32>,
    lay_k: vec4<u32>,
    lay_v: vec4<u32>,
    lay_o: vec4<u32>,
    lay_dq: vec4<u32>,
    lay_dk: vec4<u32>,
    lay_dv: vec4<u32>,
    // q, k, v, out
    off: vec4<u32>,
    // dq, dk, dv, unused
    off_grad: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;
@group(0) @binding(9) var<storage, read_write> dkv: array<f32>;

override HEAD_DIM: u32 = 64u;
const MAX_D: u32 = 128u;
const BQ: u32 = 64u;
const BT: u32 = 16u;
const NEG_BIG: f32 = -3.4028235e38;

// Two streamed tiles of BT rows: (k, v) in the forward and dq, (q, dout) in dkdv.
var<workgroup> tile_a: array<f32, BT * HEAD_DIM>;
var<workgroup> tile_b: array<f32, BT * HEAD_DIM>;
var<workgroup> row_lse: array<f32, BT>;
var<workgroup> row_delta: array<f32, BT>;

fn head_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y + wid.z * nwg.y;
}

// Index of the first value of row i of head h under layout l and offset off.
fn row_at(l: vec4<u32>, off: u32, h: u32, i: u32) -> u32 {
    return (h / l.x) * l.y + (h % l.x) * l.z + off + i * l.w;
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let h = head_of(wid, nwg);
    if (h >= p.heads) { return; }
    let i = wid.x * BQ + lid;
    let valid = i < p.seq;
    var qi: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    if (valid) {
        let qr = row_at(p.lay_q, p.off.x, h, i);
        for (var c = 0u; c < HEAD_DIM; c = c + 1u) {
            qi[c] = q[qr + c] * p.scale;
            acc[c] = 0.0;
        }
    }
    var m = NEG_BIG;
    var l = 0.0;
    for (var j0 = 0u; j0 < p.seq; j0 = j0 + BT) {
        for (var e = lid; e < BT * HEAD_DIM; e = e + BQ) {
            let gj = min(j0 + e / HEAD_DIM, p.seq - 1u);
            let inside = j0 + e / HEAD_DIM < p.seq;
            let c = e % HEAD_DIM;
            tile_a[e] = select(0.0, k[min(row_at(p.lay_k, p.off.y, h, gj) + c, arrayLength(&k) - 1u)], inside);
            tile_b[e] = select(0.0, v[min(row_at(p.lay_v, p.off.z, h, gj) + c, arrayLength(&v) - 1u)], inside);
        }
        workgroupBarrier();
        if (valid) {
            let nt = min(BT, p.seq - j0);
            var s: array<f32, BT>;
            var mt = m;
            for (var jj = 0u; jj < nt; jj = jj + 1u) {
                var d = 0.0;
                for (var c = 0u; c < HEAD_DIM; c = c + 1u) { d = fma(qi[c], tile_a[jj * HEAD_DIM + c], d); }
                s[jj] = d;
                mt = max(mt, d);
            }
            let corr = exp(m - mt);
            l = l * corr;
            for (var c = 0u; c < HEAD_DIM; c = c + 1u) { acc[c] = acc[c] * corr; }
            for (var jj = 0u; jj < nt; jj = jj + 1u) {
                let pj = exp(s[jj] - mt);
                l = l + pj;
                for (var c = 0u; c < HEAD_DIM; c = c + 1u) { acc[c] = fma(pj, tile_b[jj * HEAD_DIM + c], acc[c]); }
            }
            m = mt;
        }
        workgroupBarrier();
    }
    if (valid) {
        let inv = 1.0 / l;
        let orow = row_at(p.lay_o, p.off.w, h, i);
        for (var c = 0u; c < HEAD_DIM; c = c + 1u) { o[orow + c] = acc[c] * inv; }
        lse[h * p.seq + i] = m + log(l);
    }
}

// delta[h, i] = dout[h, i, :] . out[h, i, :]; one invocation per row.
@compute @workgroup_size(64)
fn backward_prep(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 64u;
    if (r >= p.heads * p.seq) { return; }
    let orow = row_at(p.lay_o, p.off.w, r / p.seq, r % p.seq);
    var d = 0.0;
    for (var c = 0u; c < HEAD_DIM; c = c + 1u) { d = fma(dout[orow + c], o[orow + c], d); }
    delta[r] = d;
}

@compute @workgroup_size(64)
fn backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let h = head_of(wid, nwg);
    if (h >= p.heads) { return; }
    let i = wid.x * BQ + lid;
    let valid = i < p.seq;
    var qi: array<f32, MAX_D>;
    var doi: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    var lse_i = 0.0;
    var delta_i = 0.0;
    if (valid) {
        let qr = row_at(p.lay_q, p.off.x, h, i);
        let orow = row_at(p.lay_o, p.off.w, h, i);
        for (var c = 0u; c < HEAD_DIM; c = c + 1u) {
            qi[c] = q[qr + c] * p.scale;
            doi[c] = dout[orow + c];
            acc[c] = 0.0;
        }
        lse_i = lse[h * p.seq + i];
        delta_i = delta[h * p.seq + i];
    }
    for (var j0 = 0u; j0 < p.seq; j0 = j0 + BT) {
        for (var e = lid; e < BT * HEAD_DIM; e = e + BQ) {
            let gj = min(j0 + e / HEAD_DIM, p.seq - 1u);
            let inside = j0 + e / HEAD_DIM < p.seq;
            let c = e % HEAD_DIM;
            tile_a[e] = select(0.0, k[min(row_at(p.lay_k, p.off.y, h, gj) + c, arrayLength(&k) - 1u)], inside);
            tile_b[e] = select(0.0, v[min(row_at(p.lay_v, p.off.z, h, gj) + c, arrayLength(&v) - 1u)], inside);
        }
        workgroupBarrier();
        if (valid) {
            let nt = min(BT, p.seq - j0);
            for (var jj = 0u; jj < nt; jj = jj + 1u) {
                var s = 0.0;
                var dp = 0.0;
                for (var c = 0u; c < HEAD_DIM; c = c + 1u) {
                    s = fma(qi[c], tile_a[jj * HEAD_DIM + c], s);
                    dp = fma(doi[c], tile_b[jj * HEAD_DIM + c], dp);
                }
                let ds = exp(s - lse_i) * (dp - delta_i);
                for (var c = 0u; c < HEAD_DIM; c = c + 1u) { acc[c] = fma(ds, tile_a[jj * HEAD_DIM + c], acc[c]); }
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        let dr = row_at(p.lay_dq, p.off_grad.x, h, i);
        for (var c = 0u; c < HEAD_DIM; c = c + 1u) { dq[dr + c] = acc[c] * p.scale; }
    }
}

@compute @workgroup_size(64)
fn backward_dkdv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let h = head_of(wid, nwg);
    if (h >= p.heads) { return; }
    let j = wid.x * BQ + lid;
    let valid = j < p.seq;
    var kj: array<f32, MAX_D>;
    var vj: array<f32, MAX_D>;
    var dk_acc: array<f32, MAX_D>;
    var dv_acc: array<f32, MAX_D>;
    if (valid) {
        let kr = row_at(p.lay_k, p.off.y, h, j);
        let vr = row_at(p.lay_v, p.off.z, h, j);
        for (var c = 0u; c < HEAD_DIM; c = c + 1u) {
            kj[c] = k[kr + c];
            vj[c] = v[vr + c];
            dk_acc[c] = 0.0;
            dv_acc[c] = 0.0;
        }
    }
    for (var i0 = 0u; i0 < p.seq; i0 = i0 + BT) {
        for (var e = lid; e < BT * HEAD_DIM; e = e + BQ) {
            let gi = min(i0 + e / HEAD_DIM, p.seq - 1u);
            let inside = i0 + e / HEAD_DIM < p.seq;
            let c = e % HEAD_DIM;
            tile_a[e] = select(0.0, q[min(row_at(p.lay_q, p.off.x, h, gi) + c, arrayLength(&q) - 1u)], inside) * p.scale;
            tile_b[e] = select(0.0, dout[min(row_at(p.lay_o, p.off.w, h, gi) + c, arrayLength(&dout) - 1u)], inside);
        }
        if (lid < BT) {
            let gi = min(i0 + lid, p.seq - 1u);
            row_lse[lid] = lse[h * p.seq + gi];
            row_delta[lid] = delta[h * p.seq + gi];
        }
        workgroupBarrier();
        if (valid) {
            let nt = min(BT, p.seq - i0);
            for (var ii = 0u; ii < nt; ii = ii + 1u) {
                var s = 0.0;
                var dp = 0.0;
                for (var c = 0u; c < HEAD_DIM; c = c + 1u) {
                    s = fma(tile_a[ii * HEAD_DIM + c], kj[c], s);
                    dp = fma(tile_b[ii * HEAD_DIM + c], vj[c], dp);
                }
                let pij = exp(s - row_lse[ii]);
                let ds = pij * (dp - row_delta[ii]);
                for (var c = 0u; c < HEAD_DIM; c = c + 1u) {
                    dv_acc[c] = fma(pij, tile_b[ii * HEAD_DIM + c], dv_acc[c]);
                    // tile_a holds q * scale, so this is already scale * dS * q.
                    dk_acc[c] = fma(ds, tile_a[ii * HEAD_DIM + c], dk_acc[c]);
                }
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        let kr = row_at(p.lay_dk, p.off_grad.y, h, j);
        let vr = row_at(p.lay_dv, p.off_grad.z, h, j);
        for (var c = 0u; c < HEAD_DIM; c = c + 1u) {
            dkv[kr + c] = dk_acc[c];
            dkv[vr + c] = dv_acc[c];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiled kernels (dim % 4 == 0, dim <= 64): a workgroup of 64 invocations, tx = lid % 8,
// ty = lid / 8, owns OWN = 32 rows and streams the other operand in tiles of STREAM = 16 rows.
// Invocation (tx, ty) owns rows ty + 8 r (r < 4) and streamed rows tx + 8 c (c < 2) of the
// [32, 16] score block, held as two vec4 (one per c, its components the four r), and output
// columns 4 (tx + 8 cc) .. + 3 (cc < 2) of its four rows, one named vec4 per (r, cc).
// ---------------------------------------------------------------------------------------------

const OWN: u32 = 32u;
const STREAM: u32 = 16u;
// vec4s in a row of a head (D4) and in a staged row (ROW4, one vec4 of padding: rows that 8 lanes
// read at once then start 4 (D4 + 1) words apart, each lane on its own 4 of the 32 banks).
override D4: u32 = HEAD_DIM / 4u;
override ROW4: u32 = HEAD_DIM / 4u + 1u;

// Owned rows [OWN][ROW4]: q * scale and dout (forward, dq), k and v (dkdv).
var<workgroup> own_a: array<vec4<f32>, OWN * ROW4>;
var<workgroup> own_b: array<vec4<f32>, OWN * ROW4>;
// Streamed rows [STREAM][ROW4]: k and v (forward, dq), q * scale and dout (dkdv).
var<workgroup> str_a: array<vec4<f32>, STREAM * ROW4>;
var<workgroup> str_b: array<vec4<f32>, STREAM * ROW4>;
// A [STREAM, OWN] block of P or dS: entry j * 8 + ty holds owned rows ty, ty + 8, ty + 16, ty + 24
// at streamed row j (the vec4 one invocation needs at each step of the second product).
var<workgroup> blk_a: array<vec4<f32>, 128>;
var<workgroup> blk_b: array<vec4<f32>, 128>;
// Per-row partial max and sum of the forward's softmax: entry ty * 8 + tx, rows ty + 8 r.
var<workgroup> red_max: array<vec4<f32>, 64>;
var<workgroup> red_sum: array<vec4<f32>, 64>;
// lse and delta of the streamed queries (dkdv).
var<workgroup> str_lse: array<f32, STREAM>;
var<workgroup> str_delta: array<f32, STREAM>;

// Values at .. at + 3 (the index of row i, column 4 d4 of a head: the kernels compute the head's first
// row once, head_row0, then add i * row_stride + 4 d4; the launcher checks that row's extent).
fn q4(at: u32) -> vec4<f32> {
    return vec4<f32>(q[at], q[at + 1u], q[at + 2u], q[at + 3u]);
}
fn k4(at: u32) -> vec4<f32> {
    return vec4<f32>(k[at], k[at + 1u], k[at + 2u], k[at + 3u]);
}
fn v4(at: u32) -> vec4<f32> {
    return vec4<f32>(v[at], v[at + 1u], v[at + 2u], v[at + 3u]);
}
fn dout4(at: u32) -> vec4<f32> {
    return vec4<f32>(dout[at], dout[at + 1u], dout[at + 2u], dout[at + 3u]);
}
fn o4(at: u32) -> vec4<f32> {
    return vec4<f32>(o[at], o[at + 1u], o[at + 2u], o[at + 3u]);
}

// The four dot products of owned rows a0..a3 with streamed row b, as one vec4 (component r: row r).
fn dot4(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(a0, b), dot(a1, b), dot(a2, b), dot(a3, b));
}

// Writes values 4 d4 .. + 3 of row `at` (its first index) of dq or dkv.
fn store_dq(at: u32, d4: u32, x: vec4<f32>) {
    let b = at + 4u * d4;
    dq[b] = x.x;
    dq[b + 1u] = x.y;
    dq[b + 2u] = x.z;
    dq[b + 3u] = x.w;
}
fn store_dkv(at: u32, d4: u32, x: vec4<f32>) {
    let b = at + 4u * d4;
    dkv[b] = x.x;
    dkv[b + 1u] = x.y;
    dkv[b + 2u] = x.z;
    dkv[b + 3u] = x.w;
}
fn store_o(at: u32, d4: u32, x: vec4<f32>) {
    let b = at + 4u * d4;
    o[b] = x.x;
    o[b + 1u] = x.y;
    o[b + 2u] = x.z;
    o[b + 3u] = x.w;
}

// Stages keys j0 .. j0 + STREAM - 1 of a head (k at kh, v at vh) in str_a and str_b, zeros past
// seq: the streamed tile of forward_tiles and backward_dq_tiles. Every invocation calls it between
// the same two barriers.
fn stage_kv_stream(kh: u32, vh: u32, j0: u32, lid: u32) {
    for (var e = lid; e < STREAM * D4; e = e + 64u) {
        let r = e / D4;
        let j = j0 + r;
        let jc = min(j, p.seq - 1u);
        str_a[r * ROW4 + e % D4] = select(vec4<f32>(0.0), k4(kh + jc * p.lay_k.w + 4u * (e % D4)), j < p.seq);
        str_b[r * ROW4 + e % D4] = select(vec4<f32>(0.0), v4(vh + jc * p.lay_v.w + 4u * (e % D4)), j < p.seq);
    }
}

@compute @workgroup_size(64)
fn forward_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let h = head_of(wid, nwg);
    if (h >= p.heads) { return; }
    let tx = lid % 8u;
    let ty = lid / 8u;
    // Row 0 of head h under each operand's layout.
    let qh = row_at(p.lay_q, p.off.x, h, 0u);
    let kh = row_at(p.lay_k, p.off.y, h, 0u);
    let vh = row_at(p.lay_v, p.off.z, h, 0u);
    let oh = row_at(p.lay_o, p.off.w, h, 0u);
    let i0 = wid.x * OWN;
    for (var e = lid; e < OWN * D4; e = e + 64u) {
        let r = e / D4;
        let i = i0 + r;
        own_a[r * ROW4 + e % D4] = select(vec4<f32>(0.0), q4(qh + min(i, p.seq - 1u) * p.lay_q.w + 4u * (e % D4)) * p.scale, i < p.seq);
    }
    // Output columns 4 tx .. and 4 (8 + tx) ..: which of the two this invocation has.
    let has0 = tx < D4;
    let has1 = HEAD_DIM > 32u && 8u + tx < D4;
    var m = vec4<f32>(NEG_BIG);
    var l = vec4<f32>(0.0);
    var o00 = vec4<f32>(0.0); var o01 = vec4<f32>(0.0);
    var o10 = vec4<f32>(0.0); var o11 = vec4<f32>(0.0);
    var o20 = vec4<f32>(0.0); var o21 = vec4<f32>(0.0);
    var o30 = vec4<f32>(0.0); var o31 = vec4<f32>(0.0);
    for (var j0 = 0u; j0 < p.seq; j0 = j0 + STREAM) {
        // The previous tile's readers are done (and q is staged, the first time).
        workgroupBarrier();
        stage_kv_stream(kh, vh, j0, lid);
        workgroupBarrier();
        // s_c: scores of owned queries ty + 8 r against key j0 + tx + 8 c.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < D4; d4 = d4 + 1u) {
            let a0 = own_a[ty * ROW4 + d4];
            let a1 = own_a[(ty + 8u) * ROW4 + d4];
            let a2 = own_a[(ty + 16u) * ROW4 + d4];
            let a3 = own_a[(ty + 24u) * ROW4 + d4];
            s0 = s0 + dot4(a0, a1, a2, a3, str_a[tx * ROW4 + d4]);
            s1 = s1 + dot4(a0, a1, a2, a3, str_a[(tx + 8u) * ROW4 + d4]);
        }
        let in0 = j0 + tx < p.seq;
        let in1 = j0 + tx + 8u < p.seq;
        s0 = select(vec4<f32>(NEG_BIG), s0, in0);
        s1 = select(vec4<f32>(NEG_BIG), s1, in1);
        // The tile's row max: this lane's two keys, then the 8 lanes of the row through red_max.
        red_max[ty * 8u + tx] = max(s0, s1);
        workgroupBarrier();
        var tmax = red_max[ty * 8u];
        for (var t = 1u; t < 8u; t = t + 1u) { tmax = max(tmax, red_max[ty * 8u + t]); }
        let m_new = max(m, tmax);
        let corr = exp(m - m_new);
        let p0 = select(vec4<f32>(0.0), exp(s0 - m_new), in0);
        let p1 = select(vec4<f32>(0.0), exp(s1 - m_new), in1);
        blk_a[tx * 8u + ty] = p0;
        blk_a[(tx + 8u) * 8u + ty] = p1;
        red_sum[ty * 8u + tx] = p0 + p1;
        workgroupBarrier();
        var tsum = red_sum[ty * 8u];
        for (var t = 1u; t < 8u; t = t + 1u) { tsum = tsum + red_sum[ty * 8u + t]; }
        l = l * corr + tsum;
        m = m_new;
        o00 = o00 * corr.x; o01 = o01 * corr.x;
        o10 = o10 * corr.y; o11 = o11 * corr.y;
        o20 = o20 * corr.z; o21 = o21 * corr.z;
        o30 = o30 * corr.w; o31 = o31 * corr.w;
        // o += P v over the tile's keys (P and v are zero past seq).
        for (var j = 0u; j < STREAM; j = j + 1u) {
            let pj = blk_a[j * 8u + ty];
            if (has0) {
                let vv = str_b[j * ROW4 + tx];
                o00 = fma(vec4<f32>(pj.x), vv, o00);
                o10 = fma(vec4<f32>(pj.y), vv, o10);
                o20 = fma(vec4<f32>(pj.z), vv, o20);
                o30 = fma(vec4<f32>(pj.w), vv, o30);
            }
            if (has1) {
                let vv = str_b[j * ROW4 + 8u + tx];
                o01 = fma(vec4<f32>(pj.x), vv, o01);
                o11 = fma(vec4<f32>(pj.y), vv, o11);
                o21 = fma(vec4<f32>(pj.z), vv, o21);
                o31 = fma(vec4<f32>(pj.w), vv, o31);
            }
        }
    }
    let inv = 1.0 / l;
    let lse_rows = m + log(l);
    let rows = vec4<u32>(ty, ty + 8u, ty + 16u, ty + 24u) + vec4<u32>(i0);
    let in_rows = rows < vec4<u32>(p.seq);
    if (in_rows.x) {
        let at = row_at(p.lay_o, p.off.w, h, rows.x);
        if (has0) { store_o(at, tx, o00 * inv.x); }
        if (has1) { store_o(at, 8u + tx, o01 * inv.x); }
        if (tx == 0u) { lse[h * p.seq + rows.x] = lse_rows.x; }
    }
    if (in_rows.y) {
        let at = row_at(p.lay_o, p.off.w, h, rows.y);
        if (has0) { store_o(at, tx, o10 * inv.y); }
        if (has1) { store_o(at, 8u + tx, o11 * inv.y); }
        if (tx == 0u) { lse[h * p.seq + rows.y] = lse_rows.y; }
    }
    if (in_rows.z) {
        let at = row_at(p.lay_o, p.off.w, h, rows.z);
        if (has0) { store_o(at, tx, o20 * inv.z); }
        if (has1) { store_o(at, 8u + tx, o21 * inv.z); }
        if (tx == 0u) { lse[h * p.seq + rows.z] = lse_rows.z; }
    }
    if (in_rows.w) {
        let at = row_at(p.lay_o, p.off.w, h, rows.w);
        if (has0) { store_o(at, tx, o30 * inv.w); }
        if (has1) { store_o(at, 8u + tx, o31 * inv.w); }
        if (tx == 0u) { lse[h * p.seq + rows.w] = lse_rows.w; }
    }
}

@compute @workgroup_size(64)
fn backward_dq_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let h = head_of(wid, nwg);
    if (h >= p.heads) { return; }
    let tx = lid % 8u;
    let ty = lid / 8u;
    // Row 0 of head h under each operand's layout.
    let qh = row_at(p.lay_q, p.off.x, h, 0u);
    let kh = row_at(p.lay_k, p.off.y, h, 0u);
    let vh = row_at(p.lay_v, p.off.z, h, 0u);
    let oh = row_at(p.lay_o, p.off.w, h, 0u);
    let i0 = wid.x * OWN;
    for (var e = lid; e < OWN * D4; e = e + 64u) {
        let r = e / D4;
        let i = i0 + r;
        let ic = min(i, p.seq - 1u);
        own_a[r * ROW4 + e % D4] = select(vec4<f32>(0.0), q4(qh + ic * p.lay_q.w + 4u * (e % D4)) * p.scale, i < p.seq);
        own_b[r * ROW4 + e % D4] = select(vec4<f32>(0.0), dout4(oh + ic * p.lay_o.w + 4u * (e % D4)), i < p.seq);
    }
    let rows = vec4<u32>(ty, ty + 8u, ty + 16u, ty + 24u) + vec4<u32>(i0);
    let in_rows = rows < vec4<u32>(p.seq);
    let stat = vec4<u32>(h * p.seq) + min(rows, vec4<u32>(p.seq - 1u));
    let lse_r = vec4<f32>(lse[stat.x], lse[stat.y], lse[stat.z], lse[stat.w]);
    // delta_i = dout_i . out_i of the owned rows (backward_prep's value, summed in another order):
    // lane tx takes columns 4 (tx + 8 c), the 8 lanes of a row meet in red_sum and each adds the
    // 8 partials in the same order (so they agree exactly); written for the dkdv pass after this.
    let rc = min(rows, vec4<u32>(p.seq - 1u));
    var part = vec4<f32>(0.0);
    for (var d4 = tx; d4 < D4; d4 = d4 + 8u) {
        let c4 = 4u * d4;
        part = part + vec4<f32>(
            dot(dout4(oh + rc.x * p.lay_o.w + c4), o4(oh + rc.x * p.lay_o.w + c4)),
            dot(dout4(oh + rc.y * p.lay_o.w + c4), o4(oh + rc.y * p.lay_o.w + c4)),
            dot(dout4(oh + rc.z * p.lay_o.w + c4), o4(oh + rc.z * p.lay_o.w + c4)),
            dot(dout4(oh + rc.w * p.lay_o.w + c4), o4(oh + rc.w * p.lay_o.w + c4)));
    }
    red_sum[ty * 8u + tx] = part;
    workgroupBarrier();
    var delta_r = red_sum[ty * 8u];
    for (var t = 1u; t < 8u; t = t + 1u) { delta_r = delta_r + red_sum[ty * 8u + t]; }
    if (tx == 0u) {
        if (in_rows.x) { delta[stat.x] = delta_r.x; }
        if (in_rows.y) { delta[stat.y] = delta_r.y; }
        if (in_rows.z) { delta[stat.z] = delta_r.z; }
        if (in_rows.w) { delta[stat.w] = delta_r.w; }
    }
    let has0 = tx < D4;
    let has1 = HEAD_DIM > 32u && 8u + tx < D4;
    var a00 = vec4<f32>(0.0); var a01 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0); var a11 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0); var a21 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0); var a31 = vec4<f32>(0.0);
    for (var j0 = 0u; j0 < p.seq; j0 = j0 + STREAM) {
        workgroupBarrier();
        stage_kv_stream(kh, vh, j0, lid);
        workgroupBarrier();
        // s_c = (q scale) . k and dp_c = dout . v for owned queries ty + 8 r, key j0 + tx + 8 c.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var dp0 = vec4<f32>(0.0);
        var dp1 = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < D4; d4 = d4 + 1u) {
            let a0 = own_a[ty * ROW4 + d4];
            let a1 = own_a[(ty + 8u) * ROW4 + d4];
            let a2 = own_a[(ty + 16u) * ROW4 + d4];
            let a3 = own_a[(ty + 24u) * ROW4 + d4];
            s0 = s0 + dot4(a0, a1, a2, a3, str_a[tx * ROW4 + d4]);
            s1 = s1 + dot4(a0, a1, a2, a3, str_a[(tx + 8u) * ROW4 + d4]);
            let b0 = own_b[ty * ROW4 + d4];
            let b1 = own_b[(ty + 8u) * ROW4 + d4];
            let b2 = own_b[(ty + 16u) * ROW4 + d4];
            let b3 = own_b[(ty + 24u) * ROW4 + d4];
            dp0 = dp0 + dot4(b0, b1, b2, b3, str_b[tx * ROW4 + d4]);
            dp1 = dp1 + dot4(b0, b1, b2, b3, str_b[(tx + 8u) * ROW4 + d4]);
        }
        let ds0 = select(vec4<f32>(0.0), exp(s0 - lse_r) * (dp0 - delta_r), j0 + tx < p.seq);
        let ds1 = select(vec4<f32>(0.0), exp(s1 - lse_r) * (dp1 - delta_r), j0 + tx + 8u < p.seq);
        blk_a[tx * 8u + ty] = ds0;
        blk_a[(tx + 8u) * 8u + ty] = ds1;
        workgroupBarrier();
        // dq += dS k over the tile's keys.
        for (var j = 0u; j < STREAM; j = j + 1u) {
            let dsj = blk_a[j * 8u + ty];
            if (has0) {
                let kv = str_a[j * ROW4 + tx];
                a00 = fma(vec4<f32>(dsj.x), kv, a00);
                a10 = fma(vec4<f32>(dsj.y), kv, a10);
                a20 = fma(vec4<f32>(dsj.z), kv, a20);
                a30 = fma(vec4<f32>(dsj.w), kv, a30);
            }
            if (has1) {
                let kv = str_a[j * ROW4 + 8u + tx];
                a01 = fma(vec4<f32>(dsj.x), kv, a01);
                a11 = fma(vec4<f32>(dsj.y), kv, a11);
                a21 = fma(vec4<f32>(dsj.z), kv, a21);
                a31 = fma(vec4<f32>(dsj.w), kv, a31);
            }
        }
    }
    let sc = p.scale;
    if (in_rows.x) {
        let at = row_at(p.lay_dq, p.off_grad.x, h, rows.x);
        if (has0) { store_dq(at, tx, a00 * sc); }
        if (has1) { store_dq(at, 8u + tx, a01 * sc); }
    }
    if (in_rows.y) {
        let at = row_at(p.lay_dq, p.off_grad.x, h, rows.y);
        if (has0) { store_dq(at, tx, a10 * sc); }
        if (has1) { store_dq(at, 8u + tx, a11 * sc); }
    }
    if (in_rows.z) {
        let at = row_at(p.lay_dq, p.off_grad.x, h, rows.z);
        if (has0) { store_dq(at, tx, a20 * sc); }
        if (has1) { store_dq(at, 8u + tx, a21 * sc); }
    }
    if (in_rows.w) {
        let at = row_at(p.lay_dq, p.off_grad.x, h, rows.w);
        if (has0) { store_dq(at, tx, a30 * sc); }
        if (has1) { store_dq(at, 8u + tx, a31 * sc); }
    }
}

@compute @workgroup_size(64)
fn backward_dkdv_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let h = head_of(wid, nwg);
    if (h >= p.heads) { return; }
    let tx = lid % 8u;
    let ty = lid / 8u;
    // Row 0 of head h under each operand's layout.
    let qh = row_at(p.lay_q, p.off.x, h, 0u);
    let kh = row_at(p.lay_k, p.off.y, h, 0u);
    let vh = row_at(p.lay_v, p.off.z, h, 0u);
    let oh = row_at(p.lay_o, p.off.w, h, 0u);
    let j0 = wid.x * OWN;
    for (var e = lid; e < OWN * D4; e = e + 64u) {
        let r = e / D4;
        let j = j0 + r;
        let jc = min(j, p.seq - 1u);
        own_a[r * ROW4 + e % D4] = select(vec4<f32>(0.0), k4(kh + jc * p.lay_k.w + 4u * (e % D4)), j < p.seq);
        own_b[r * ROW4 + e % D4] = select(vec4<f32>(0.0), v4(vh + jc * p.lay_v.w + 4u * (e % D4)), j < p.seq);
    }
    let has0 = tx < D4;
    let has1 = HEAD_DIM > 32u && 8u + tx < D4;
    // dk_rc, dv_rc: owned key ty + 8 r, columns 4 (tx + 8 c) ..
    var dk00 = vec4<f32>(0.0); var dk01 = vec4<f32>(0.0);
    var dk10 = vec4<f32>(0.0); var dk11 = vec4<f32>(0.0);
    var dk20 = vec4<f32>(0.0); var dk21 = vec4<f32>(0.0);
    var dk30 = vec4<f32>(0.0); var dk31 = vec4<f32>(0.0);
    var dv00 = vec4<f32>(0.0); var dv01 = vec4<f32>(0.0);
    var dv10 = vec4<f32>(0.0); var dv11 = vec4<f32>(0.0);
    var dv20 = vec4<f32>(0.0); var dv21 = vec4<f32>(0.0);
    var dv30 = vec4<f32>(0.0); var dv31 = vec4<f32>(0.0);
    for (var i0 = 0u; i0 < p.seq; i0 = i0 + STREAM) {
        workgroupBarrier();
        for (var e = lid; e < STREAM * D4; e = e + 64u) {
            let r = e / D4;
            let i = i0 + r;
            let ic = min(i, p.seq - 1u);
            str_a[r * ROW4 + e % D4] = select(vec4<f32>(0.0), q4(qh + ic * p.lay_q.w + 4u * (e % D4)) * p.scale, i < p.seq);
            str_b[r * ROW4 + e % D4] = select(vec4<f32>(0.0), dout4(oh + ic * p.lay_o.w + 4u * (e % D4)), i < p.seq);
        }
        if (lid < STREAM) {
            let ic = min(i0 + lid, p.seq - 1u);
            str_lse[lid] = lse[h * p.seq + ic];
            str_delta[lid] = delta[h * p.seq + ic];
        }
        workgroupBarrier();
        // s_c = k . (q scale) and dp_c = v . dout for owned keys ty + 8 r, query i0 + tx + 8 c.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var dp0 = vec4<f32>(0.0);
        var dp1 = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < D4; d4 = d4 + 1u) {
            let a0 = own_a[ty * ROW4 + d4];
            let a1 = own_a[(ty + 8u) * ROW4 + d4];
            let a2 = own_a[(ty + 16u) * ROW4 + d4];
            let a3 = own_a[(ty + 24u) * ROW4 + d4];
            s0 = s0 + dot4(a0, a1, a2, a3, str_a[tx * ROW4 + d4]);
            s1 = s1 + dot4(a0, a1, a2, a3, str_a[(tx + 8u) * ROW4 + d4]);
            let b0 = own_b[ty * ROW4 + d4];
            let b1 = own_b[(ty + 8u) * ROW4 + d4];
            let b2 = own_b[(ty + 16u) * ROW4 + d4];
            let b3 = own_b[(ty + 24u) * ROW4 + d4];
            dp0 = dp0 + dot4(b0, b1, b2, b3, str_b[tx * ROW4 + d4]);
            dp1 = dp1 + dot4(b0, b1, b2, b3, str_b[(tx + 8u) * ROW4 + d4]);
        }
        let p0 = select(vec4<f32>(0.0), exp(s0 - vec4<f32>(str_lse[tx])), i0 + tx < p.seq);
        let p1 = select(vec4<f32>(0.0), exp(s1 - vec4<f32>(str_lse[tx + 8u])), i0 + tx + 8u < p.seq);
        blk_a[tx * 8u + ty] = p0;
        blk_a[(tx + 8u) * 8u + ty] = p1;
        blk_b[tx * 8u + ty] = p0 * (dp0 - vec4<f32>(str_delta[tx]));
        blk_b[(tx + 8u) * 8u + ty] = p1 * (dp1 - vec4<f32>(str_delta[tx + 8u]));
        workgroupBarrier();
        // dv += P^T dout, dk += dS^T (q scale) over the tile's queries.
        for (var i = 0u; i < STREAM; i = i + 1u) {
            let pi = blk_a[i * 8u + ty];
            let dsi = blk_b[i * 8u + ty];
            if (has0) {
                let dov = str_b[i * ROW4 + tx];
                let qv = str_a[i * ROW4 + tx];
                dv00 = fma(vec4<f32>(pi.x), dov, dv00);
                dv10 = fma(vec4<f32>(pi.y), dov, dv10);
                dv20 = fma(vec4<f32>(pi.z), dov, dv20);
                dv30 = fma(vec4<f32>(pi.w), dov, dv30);
                dk00 = fma(vec4<f32>(dsi.x), qv, dk00);
                dk10 = fma(vec4<f32>(dsi.y), qv, dk10);
                dk20 = fma(vec4<f32>(dsi.z), qv, dk20);
                dk30 = fma(vec4<f32>(dsi.w), qv, dk30);
            }
            if (has1) {
                let dov = str_b[i * ROW4 + 8u + tx];
                let qv = str_a[i * ROW4 + 8u + tx];
                dv01 = fma(vec4<f32>(pi.x), dov, dv01);
                dv11 = fma(vec4<f32>(pi.y), dov, dv11);
                dv21 = fma(vec4<f32>(pi.z), dov, dv21);
                dv31 = fma(vec4<f32>(pi.w), dov, dv31);
                dk01 = fma(vec4<f32>(dsi.x), qv, dk01);
                dk11 = fma(vec4<f32>(dsi.y), qv, dk11);
                dk21 = fma(vec4<f32>(dsi.z), qv, dk21);
                dk31 = fma(vec4<f32>(dsi.w), qv, dk31);
            }
        }
    }
    let rows = vec4<u32>(ty, ty + 8u, ty + 16u, ty + 24u) + vec4<u32>(j0);
    let in_rows = rows < vec4<u32>(p.seq);
    if (in_rows.x) {
        let ka = row_at(p.lay_dk, p.off_grad.y, h, rows.x);
        let va = row_at(p.lay_dv, p.off_grad.z, h, rows.x);
        if (has0) { store_dkv(ka, tx, dk00); store_dkv(va, tx, dv00); }
        if (has1) { store_dkv(ka, 8u + tx, dk01); store_dkv(va, 8u + tx, dv01); }
    }
    if (in_rows.y) {
        let ka = row_at(p.lay_dk, p.off_grad.y, h, rows.y);
        let va = row_at(p.lay_dv, p.off_grad.z, h, rows.y);
        if (has0) { store_dkv(ka, tx, dk10); store_dkv(va, tx, dv10); }
        if (has1) { store_dkv(ka, 8u + tx, dk11); store_dkv(va, 8u + tx, dv11); }
    }
    if (in_rows.z) {
        let ka = row_at(p.lay_dk, p.off_grad.y, h, rows.z);
        let va = row_at(p.lay_dv, p.off_grad.z, h, rows.z);
        if (has0) { store_dkv(ka, tx, dk20); store_dkv(va, tx, dv20); }
        if (has1) { store_dkv(ka, 8u + tx, dk21); store_dkv(va, 8u + tx, dv21); }
    }
    if (in_rows.w) {
        let ka = row_at(p.lay_dk, p.off_grad.y, h, rows.w);
        let va = row_at(p.lay_dv, p.off_grad.z, h, rows.w);
        if (has0) { store_dkv(ka, tx, dk30); store_dkv(va, tx, dv30); }
        if (has1) { store_dkv(ka, 8u + tx, dk31); store_dkv(va, 8u + tx, dv31); }
    }
}
