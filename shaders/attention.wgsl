// Fused multi-head scaled-dot-product self-attention, forward and backward, without ever storing the
// [seq, seq] score matrix in global memory (FlashAttention's online softmax, sized for MAE's short
// sequences: tens to a couple of hundred tokens).
//
// Layout: every operand is addressed through a head layout (HeadLayout in engine/src/backend.rs):
// row i of head h starts at (h / group) * sample_stride + (h % group) * head_stride + offset
// + i * row_stride. So the same kernels read separate [heads, seq, dim] tensors, or q, k and v
// straight out of the fused projection qkv: [N, seq, 3, H, dim] and write the merged heads
// out: [N, seq, H, dim], with no permutation or slicing pass around them. lse, delta: [heads, seq].
// dout shares out's layout; dk and dv are written through one binding (dkv), at their own layouts.
// scale = 1 / sqrt(dim). HEAD_DIM (an override constant, = dim) sizes the workgroup tiles and fixes
// the trip count of the inner loops; dim <= MAX_D.
// Algorithms:
// - forward: a workgroup of 64 invocations per (64 queries, head); each invocation owns one query row.
//   Keys and values stream through workgroup memory in tiles of BT = 16 rows. Per tile: 16 scores,
//   their max, a rescale of the running sum l and output accumulator o by exp(m_old - m_new), then
//   o += exp(s - m_new) v. At the end out = o / l and lse = m + log l (kept for the backward).
// - backward, with P = exp(q k^T scale - lse) recomputed from the saved lse:
//   prep:  delta[i] = dout[i] . out[i]                       (= sum_j P_ij dP_ij)
//   dq:    one invocation per query i, keys streamed in tiles:
//          dS_ij = P_ij (dout_i . v_j - delta_i);  dq_i = scale sum_j dS_ij k_j
//   dkdv:  one invocation per key j, queries streamed in tiles:
//          dv_j = sum_i P_ij dout_i;  dk_j = scale sum_i dS_ij q_i
//   Splitting dq from dk/dv means no atomics and a fixed summation order (deterministic), at the
//   price of computing P twice.
// Napkin math: the Fashion-MNIST encoder at batch 256 has 1024 heads x 13 tokens x 32 dims: 11 MFLOP
// forward, 1.7 MB of q, k, v: nothing next to its matmuls. The decoder (1024 heads x 50 x 16) is
// 0.16 GFLOP. Work per invocation grows with seq * dim, so at ViT-B scale (197 tokens, dim 64) this
// is compute-bound at a few TFLOP/s; tensor-core flash attention would be the next step.
//
// Bounds: unchecked. Every entry returns for h >= heads and touches rows only for i (or j) < seq
// (`valid`; the streamed tiles clamp their row to seq - 1 and their index to the buffer's end), and
// columns c < HEAD_DIM = dim <= MAX_D, so each global index is at most row_at(h, seq - 1) + dim - 1
// under its layout; the launcher checks that every buffer holds its layout's extent (the farthest
// head's last row, `extent` in the launcher) and that it fits u32, and that lse holds heads x seq.
// Workgroup and private arrays: tile index e < BT x HEAD_DIM, row_lse / s at jj, lid < BT, private
// rows at c < HEAD_DIM <= MAX_D.
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
