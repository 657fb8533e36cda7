// Losses: the MAE reconstruction loss (per patch, optional norm-pix target) and softmax
// cross-entropy (for the linear probe and fine-tuning), with their gradients.
//
// Layouts: pred, target, dpred [rows, patch] (rows = N * L patches); mask, drow, row_loss [rows]
// (mask 1 = removed); loss, dloss, count [1]; logits, probs, dlogits [rows, classes]; labels [rows] u32.
// - mae_loss_rows: row_loss[r] = mask[r] * mean_c (pred[r, c] - t[r, c])^2 with t the target, or with
//   norm_pix t = (target - mean) / sqrt(var + 1e-6), var the unbiased variance of the patch (the
//   official norm_pix_loss).
// - mae_loss_mean: the loss, the mean over masked patches: loss = sum(row_loss) / count and
//   count = sum(mask), both sums in one workgroup (each invocation strides over the rows, then a
//   tree): one dispatch where two sums of two passes and a division took five.
// - mae_loss_backward: dpred[r, c] = (dloss / count) * mask[r] * 2 (pred[r, c] - t[r, c]) / patch,
//   the mean's backward folded in (dloss and count are read once per workgroup).
// - cross_entropy: loss[r] = logsumexp(logits[r]) - logits[r, label[r]], probs = softmax(logits[r]).
// - cross_entropy_backward: dlogits[r, c] = drow[r] * (probs[r, c] - [c == label[r]]).
// Algorithm: one workgroup of 64 per row with tree reductions (patch and class counts are small);
// the cross-entropy gradient is one invocation per element.
// Napkin math: the loss of [256, 49, 16] reads 2 x 0.8 MB: microseconds; it is never the bottleneck.
// Its mean reads 2 x 12544 values for ViT-B at batch 64: 196 strided loads an invocation, a few us.
//
// Bounds: unchecked. Row r < rows (checked first, or r = j / cols with j < n = rows * cols) and
// column c < cols (the loops' bound), so pred, target, out and dlogits are indexed below rows * cols
// and mask, drow, labels, the row losses below rows (mae_loss_mean's r < rows by its loop bound;
// it writes out[0] and out2[0], dloss[0] and count[0] are read, each buffer at least 1 long); the
// one value read through an index,
// pred[base + labels[r]], has labels[r] < classes. The launchers check every input's length, that
// every label is below the class count, and that rows * cols fits u32. Workgroup memory at lid < 64
// and lid + s with lid < s <= 32.
//
// Loops: finite. Columns c count up by the workgroup width (64) to cols (rows, in mae_loss_mean),
// and the tree sums halve s
// from 32 to 0 (each bound is at most a buffer's length in values, below 2^30 since the context
// makes no buffer of 4 GiB, so a counter stepping up by at most 256 never wraps past it).
//
// Launcher: engine/src/gpu/kernels/loss.rs. Reference: engine/src/cpu/reference.rs.

struct Params {
    rows: u32,
    cols: u32,
    norm_pix: u32,
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> target_values: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read> drow: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> out2: array<f32>;
// mae_loss_backward: the count of masked rows the loss divided by (mae_loss_mean's out2).
@group(0) @binding(8) var<storage, read> count: array<f32>;

const WG: u32 = 64u;
const NORM_PIX_EPS: f32 = 1e-6;
var<workgroup> red: array<f32, 64>;

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn workgroup_max(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// (mean, 1 / std) of the row's target when norm_pix, else (0, 1): t' = (t - a) * b.
fn target_stats(base: u32, lid: u32) -> vec2<f32> {
    if (p.norm_pix == 0u) { return vec2<f32>(0.0, 1.0); }
    var s = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) { s = s + target_values[base + c]; }
    let mu = workgroup_sum(s, lid) / f32(p.cols);
    var q = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) {
        let d = target_values[base + c] - mu;
        q = q + d * d;
    }
    let var_unbiased = workgroup_sum(q, lid) / f32(p.cols - 1u);
    return vec2<f32>(mu, 1.0 / sqrt(var_unbiased + NORM_PIX_EPS));
}

@compute @workgroup_size(64)
fn mae_loss_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let st = target_stats(base, lid);
    var e = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) {
        let d = pred[base + c] - (target_values[base + c] - st.x) * st.y;
        e = e + d * d;
    }
    let mse = workgroup_sum(e, lid) / f32(p.cols);
    if (lid == 0u) { out[r] = mse * mask[r]; }
}

// One workgroup: out[0] = sum(row_loss) / sum(mask), out2[0] = sum(mask); pred binds row_loss.
@compute @workgroup_size(64)
fn mae_loss_mean(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    var m = 0.0;
    for (var r = lid; r < p.rows; r = r + WG) {
        s = s + pred[r];
        m = m + mask[r];
    }
    let total = workgroup_sum(s, lid);
    let masked = workgroup_sum(m, lid);
    if (lid == 0u) {
        out[0] = total / masked;
        out2[0] = masked;
    }
}

@compute @workgroup_size(64)
fn mae_loss_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let st = target_stats(base, lid);
    // drow binds dloss [1]: every row's loss has the gradient dloss / count.
    let k = drow[0] / count[0] * mask[r] * 2.0 / f32(p.cols);
    for (var c = lid; c < p.cols; c = c + WG) {
        out[base + c] = k * (pred[base + c] - (target_values[base + c] - st.x) * st.y);
    }
}

// pred binds the logits; out receives the probabilities, out2 the per-row loss.
@compute @workgroup_size(64)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var m = -3.4028235e38;
    for (var c = lid; c < p.cols; c = c + WG) { m = max(m, pred[base + c]); }
    m = workgroup_max(m, lid);
    var s = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) { s = s + exp(pred[base + c] - m); }
    let lse = m + log(workgroup_sum(s, lid));
    for (var c = lid; c < p.cols; c = c + WG) { out[base + c] = exp(pred[base + c] - lse); }
    if (lid == 0u) { out2[r] = lse - pred[base + labels[r]]; }
}

// pred binds the probabilities.
@compute @workgroup_size(256)
fn cross_entropy_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * 256u;
    if (j >= p.n) { return; }
    let r = j / p.cols;
    let c = j % p.cols;
    let onehot = select(0.0, 1.0, labels[r] == c);
    out[j] = drow[r] * (pred[j] - onehot);
}
