// LayerNorm over the last axis: y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps),
// var the biased variance (PyTorch's nn.LayerNorm; MAE uses eps = 1e-6).
//
// Layout: x, y, dy, dx [rows, cols] row-major; gamma, beta [cols]; mean, rstd [rows] (saved by the
// forward for the backward).
// Algorithms:
// - forward: one workgroup of 64 per row; mean by a tree reduction, then the variance as the mean of
//   squared deviations (two passes over the row: exact where E[x^2] - E[x]^2 would cancel).
// - add_forward: the residual add before it fused in, s = x + res written in the first pass (each
//   invocation reads back only the values it wrote), then the forward over s: one dispatch and one
//   read of x instead of an add kernel and a second read.
// - backward (and backward_acc) in one dispatch of two kinds of workgroups of 64 x 4, as dx and
//   the parameter partials read the same inputs and write apart:
//   - dx: 64 invocations per row, 4 rows a workgroup; with xhat = (x - mean) * rstd and
//     g = dy * gamma, dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); backward_acc adds the
//     gradient already accumulated for x (its other uses: the residual stream) in the same pass;
//   - dgamma = sum_rows dy * xhat, dbeta = sum_rows dy: a workgroup takes 64 adjacent columns
//     (coalesced) and a chunk of rows, writing partial sums [chunks, 2, cols_pad] (dgamma's, then
//     dbeta's, each row padded to 64 values, the padding zeros) that the launcher sums with one
//     reduce.wgsl pass: enough workgroups for a big GPU, deterministic order. The sums land in a
//     fresh buffer or straight in gamma's and beta's ranges of a packed gradient buffer, which lie
//     as far apart.
// Napkin math: [3328, 128] (the Fashion-MNIST encoder at batch 256) is 1.7 MB in, 1.7 MB out:
// bandwidth-bound, about a microsecond of traffic on an H100; launches dominate.
//
// Bounds: unchecked. Every row index r < rows (checked first) and column c < cols (the loops'
// bound), so x, res, s, y, dy, dx are read and written at r * cols + c < rows * cols, gamma and beta
// at c, mean and rstd at r; the parameter partials read rows start..min(start + chunk, rows) and
// write partial sums at chunk * 2 * cols_pad + c (and + cols_pad) with chunk < chunks,
// c < cols_pad (the column block q % (cols_pad / 64) < cols_pad / 64); workgroup arrays at
// lid < 64, [lid.y < 4][lid.x < 64] and lid.x + s with lid.x < s <= 32. The launcher dispatches
// ceil(rows / 4) + (cols_pad / 64) chunks workgroups. The launchers check that every input holds those sizes and that
// rows * cols fits u32 (and allocate the outputs at exactly them).
//
// Loops: finite. Columns c count up by the workgroup width (64) to cols, rows r by 4 to min(start +
// chunk, rows), and the tree sums halve s from 32 to 0 (each bound is at most a buffer's length in
// values, below 2^30 since the context makes no buffer of 4 GiB, so a counter stepping up by at
// most 256 never wraps past it).
//
// Launcher: engine/src/gpu/kernels/layernorm.rs. Reference: engine/src/cpu/reference.rs.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    chunk: u32,
    chunks: u32,
    cols_pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;
@group(0) @binding(9) var<storage, read_write> partial: array<f32>;
@group(0) @binding(11) var<storage, read> res: array<f32>;
@group(0) @binding(12) var<storage, read_write> s: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;
var<workgroup> cols4: array<array<f32, 64>, 4>;
var<workgroup> cols4b: array<array<f32, 64>, 4>;

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

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) { s = s + x[base + c]; }
    let mu = workgroup_sum(s, lid) / n;
    var q = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) {
        let d = x[base + c] - mu;
        q = q + d * d;
    }
    let rs = inverseSqrt(workgroup_sum(q, lid) / n + p.eps);
    for (var c = lid; c < p.cols; c = c + WG) {
        y[base + c] = (x[base + c] - mu) * rs * gamma[c] + beta[c];
    }
    if (lid == 0u) {
        mean[r] = mu;
        rstd[r] = rs;
    }
}

@compute @workgroup_size(64)
fn add_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let n = f32(p.cols);
    var t = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) {
        let v = x[base + c] + res[base + c];
        s[base + c] = v;
        t = t + v;
    }
    let mu = workgroup_sum(t, lid) / n;
    var q = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) {
        let d = s[base + c] - mu;
        q = q + d * d;
    }
    let rs = inverseSqrt(workgroup_sum(q, lid) / n + p.eps);
    for (var c = lid; c < p.cols; c = c + WG) {
        y[base + c] = (s[base + c] - mu) * rs * gamma[c] + beta[c];
    }
    if (lid == 0u) {
        mean[r] = mu;
        rstd[r] = rs;
    }
}

// The backward in one dispatch of 64 x 4 invocations a workgroup (dx and the parameter partials
// read the same inputs and write apart, so they need no order between them): workgroups
// w < dx_groups() take dx for rows 4 w .. 4 w + 3, one row to each 64 invocations of lid.y; the rest
// one (column block, chunk) of the parameter partial sums each.
fn dx_groups() -> u32 {
    return (p.rows + 3u) / 4u;
}

// mean(g) and mean(g * xhat) of row r, g = dy * gamma, for the 64 invocations of row lid.y (0 for a
// row past the last, whose invocations still meet every barrier).
fn dx_sums(r: u32, lid: vec3<u32>) -> vec2<f32> {
    var sg = 0.0;
    var sgx = 0.0;
    if (r < p.rows) {
        let base = r * p.cols;
        for (var c = lid.x; c < p.cols; c = c + WG) {
            let g = dy[base + c] * gamma[c];
            sg = sg + g;
            sgx = sgx + g * (x[base + c] - mean[r]) * rstd[r];
        }
    }
    cols4[lid.y][lid.x] = sg;
    cols4b[lid.y][lid.x] = sgx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            cols4[lid.y][lid.x] = cols4[lid.y][lid.x] + cols4[lid.y][lid.x + s];
            cols4b[lid.y][lid.x] = cols4b[lid.y][lid.x] + cols4b[lid.y][lid.x + s];
        }
        workgroupBarrier();
    }
    let sums = vec2<f32>(cols4[lid.y][0], cols4b[lid.y][0]) / f32(p.cols);
    workgroupBarrier();
    return sums;
}

fn dx_value(r: u32, c: u32, sums: vec2<f32>) -> f32 {
    let i = r * p.cols + c;
    let xhat = (x[i] - mean[r]) * rstd[r];
    return rstd[r] * (dy[i] * gamma[c] - sums.x - xhat * sums.y);
}

// dgamma's and dbeta's partial sums over the rows of one chunk for one block of 64 columns
// (invocations (lid.x, lid.y): column lid.x of the block, every 4th row from lid.y), at
// [chunk, 2, cols_pad]. Columns cols..cols_pad get zeros: the pass's sum may land in a packed
// gradient buffer, where they lie between gamma's and beta's gradients.
fn params_partials(q: u32, lid: vec3<u32>) {
    let blocks = p.cols_pad / 64u;
    let c = (q % blocks) * 64u + lid.x;
    let chunk = q / blocks;
    if (chunk >= p.chunks) { return; }
    let start = chunk * p.chunk;
    let end = min(start + p.chunk, p.rows);
    var sg = 0.0;
    var sb = 0.0;
    if (c < p.cols) {
        for (var r = start + lid.y; r < end; r = r + 4u) {
            let d = dy[r * p.cols + c];
            sg = sg + d * (x[r * p.cols + c] - mean[r]) * rstd[r];
            sb = sb + d;
        }
    }
    cols4[lid.y][lid.x] = sg;
    cols4b[lid.y][lid.x] = sb;
    workgroupBarrier();
    if (lid.y == 0u && c < p.cols_pad) {
        let at = chunk * 2u * p.cols_pad + c;
        partial[at] = cols4[0][lid.x] + cols4[1][lid.x] + cols4[2][lid.x] + cols4[3][lid.x];
        partial[at + p.cols_pad] = cols4b[0][lid.x] + cols4b[1][lid.x] + cols4b[2][lid.x] + cols4b[3][lid.x];
    }
}

// The dx row an invocation writes (r >= rows: none) and the row's mean(g), mean(g * xhat).
struct DxRow {
    r: u32,
    sums: vec2<f32>,
}

// A workgroup's share of the backward: the parameter partials (and no dx row), or the sums of the
// dx row 4 w + lid.y of each invocation, for the entry point to write.
fn backward_part(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> DxRow {
    let w = wid.x + wid.y * nwg.x;
    if (w >= dx_groups()) {
        params_partials(w - dx_groups(), lid);
        return DxRow(p.rows, vec2<f32>(0.0));
    }
    let r = 4u * w + lid.y;
    return DxRow(r, dx_sums(r, lid));
}

@compute @workgroup_size(64, 4)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = backward_part(wid, nwg, lid);
    if (row.r >= p.rows) { return; }
    for (var c = lid.x; c < p.cols; c = c + WG) {
        dx[row.r * p.cols + c] = dx_value(row.r, c, row.sums);
    }
}

// As backward, dx plus the gradient already accumulated for x (bound at `res`: the residual stream):
// one pass instead of backward and an add.
@compute @workgroup_size(64, 4)
fn backward_acc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = backward_part(wid, nwg, lid);
    if (row.r >= p.rows) { return; }
    for (var c = lid.x; c < p.cols; c = c + WG) {
        let i = row.r * p.cols + c;
        dx[i] = res[i] + dx_value(row.r, c, row.sums);
    }
}
