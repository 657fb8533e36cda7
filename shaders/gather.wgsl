// Data movement: the masked patch gather and its scatter-add, row copies (concatenation and slicing
// along the token axis) and axis permutations.
//
// Layouts: x [batch, rows, width], idx [batch, picks] (u32), out [batch, picks, width], fill [width].
// - gather_rows:      out[n, i, :] = x[n, idx[n, i], :], or fill where idx[n, i] == rows (MAE: the
//                     encoder's visible tokens by ids_keep behind the cls token, the decoder's
//                     unshuffle by ids_restore with the mask token filling the removed places; a
//                     gather without a fill binds x there and has no pick equal to rows)
// - scatter_add_rows: dx[n, t, :] = sum over i with idx[n, i] == t of dy[n, i, :] (t < rows: a
//                     fill's picks are left out)
//   Each output element loops over the sample's picks: no atomics (WGSL has no float atomics), a
//   fixed order (deterministic), and correct with repeated indices. Cost O(rows * picks * width)
//   compares per sample: on the H200, ViT-B's unshuffle ([64, 196, 512], 196 picks) took 0.9 ms.
// - scatter_rows:     the same where no sample picks a row twice (MAE's ids_keep and ids_restore),
//   as a gather: dx[n, t, :] = dy[n, inv[n, t], :], or 0 where inv[n, t] = NOT_PICKED (u32 max),
//   inv being the [batch, rows] table of which pick holds each row (Indices::inverse_rows, made on
//   the host) bound where idx is. One read per value.
// - sum_fill_rows:    the fill's gradient, in two passes: this one writes, for each slice of
//                     FILL_CHUNK consecutive picks (over the flattened [batch * picks]) and column c,
//                     the sum of dy[r, c] over its picks r with idx[r] == rows, [slices, width];
//                     reduce.wgsl's sum_cols adds the slices. A fixed order, no atomics.
// - copy_rows:        dst[n, dst_offset + r, :] = src[n, src_offset + r, :]
// - place_rows:       the same into a new dst, zeros in its other rows, each value written once (a
//                     slice's backward, where a fill then a copy wrote the copied rows twice)
// - permute:          out[j] = x[sum_a j_a * stride_in[perm[a]]], rank <= 8
// All are one invocation per output element, 256 per workgroup, folded over y past 65535 groups.
// Napkin math: pure bandwidth; unshuffling [256, 50, 64] f32 reads and writes 3.3 MB each. ViT-B's
// decoder input at batch 64, [64, 197, 512] with 147 mask tokens a sample, is written once (26 MB,
// ~9 us at 3 TB/s) where slices, a repeat, two concatenations and a gather moved it five times;
// its fill gradient reads the 19 MB of mask-token rows once, in 197 x 512 invocations.
//
// Bounds: unchecked. Each invocation's j < n, the output's size. gather_rows reads idx below batch
// x picks and x at row idx[..] < rows: the one indirect read, after the launcher checks on the host
// (the values are uploaded from there) that every index is below rows, or at most rows with a fill,
// which is read at c < width (the launcher checks it holds width values). scatter_add_rows only
// compares indices and reads dy below batch x picks x width; sum_fill_rows reads idx and dy at
// picks r < batch x picks (its slice's end is clamped there) and column c < width; scatter_rows reads inv below batch x
// rows (Indices::inverse_rows makes it exactly that long) and dy at pick inv[..] < picks only. copy_rows (and
// place_rows, for the rows it copies): r < the copied rows and the launcher checks offset + rows <=
// each side's rows. permute: the launcher checks that perm is a permutation, so the source index is
// the same element's place in x, below n. The launchers check every buffer's length against these
// sizes and that the largest index fits u32.
//
// Loops: finite. scatter_add_rows counts i up by 1 to picks (the index tensor's columns);
// sum_fill_rows counts r up by 1 to its slice's end, at most FILL_CHUNK past its start; permute
// counts the signed axis a down by 1 from rank - 1 (at most 8) to 0 (each bound is at most a
// buffer's length in values, below 2^30 since the context makes no buffer of 4 GiB, so a counter
// stepping up by at most 256 never wraps past it).
//
// Launcher: engine/src/gpu/kernels/gather.rs. Reference: engine/src/cpu/reference.rs.

struct Params {
    batch: u32,
    rows: u32,
    picks: u32,
    width: u32,
    n: u32,
    src_rows: u32,
    src_offset: u32,
    dst_rows: u32,
    dst_offset: u32,
    copy_rows: u32,
    rank: u32,
    // sum_fill_rows: picks per slice (FILL_CHUNK, from the launcher).
    chunk: u32,
    // permute: the output's shape, and for each output axis the input stride it walks.
    shape: array<vec4<u32>, 2>,
    stride: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> fill: array<f32>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if (j >= p.n) { return; }
    let c = j % p.width;
    let ni = j / p.width;          // n * picks + i
    let n = ni / p.picks;
    let src_row = idx[ni];
    if (src_row < p.rows) {
        out[j] = x[(n * p.rows + src_row) * p.width + c];
    } else {
        out[j] = fill[c];
    }
}

@compute @workgroup_size(256)
fn scatter_add_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if (j >= p.n) { return; }
    let c = j % p.width;
    let nt = j / p.width;          // n * rows + t
    let n = nt / p.rows;
    let t = nt % p.rows;
    var acc = 0.0;
    for (var i = 0u; i < p.picks; i = i + 1u) {
        if (idx[n * p.picks + i] == t) {
            acc = acc + x[(n * p.picks + i) * p.width + c];
        }
    }
    out[j] = acc;
}

@compute @workgroup_size(256)
fn scatter_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if (j >= p.n) { return; }
    let c = j % p.width;
    let nt = j / p.width;          // n * rows + t
    let n = nt / p.rows;
    let i = idx[nt];               // the pick that holds row t, or NOT_PICKED
    var v = 0.0;
    if (i < p.picks) { v = x[(n * p.picks + i) * p.width + c]; }
    out[j] = v;
}

@compute @workgroup_size(256)
fn sum_fill_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if (j >= p.n) { return; }
    let c = j % p.width;
    let start = (j / p.width) * p.chunk;
    let end = min(start + p.chunk, p.batch * p.picks);
    var acc = 0.0;
    for (var r = start; r < end; r = r + 1u) {
        if (idx[r] == p.rows) { acc = acc + x[r * p.width + c]; }
    }
    out[j] = acc;
}

@compute @workgroup_size(256)
fn copy_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if (j >= p.n) { return; }
    let c = j % p.width;
    let nr = j / p.width;
    let r = nr % p.copy_rows;
    let n = nr / p.copy_rows;
    out[(n * p.dst_rows + p.dst_offset + r) * p.width + c] = x[(n * p.src_rows + p.src_offset + r) * p.width + c];
}

@compute @workgroup_size(256)
fn place_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if (j >= p.n) { return; }
    let c = j % p.width;
    let nt = j / p.width;          // n * dst_rows + t
    let t = nt % p.dst_rows;
    let n = nt / p.dst_rows;
    var v = 0.0;
    // Rows dst_offset .. dst_offset + copy_rows come from src (t - dst_offset wraps past them).
    let r = t - p.dst_offset;
    if (t >= p.dst_offset && r < p.copy_rows) { v = x[(n * p.src_rows + p.src_offset + r) * p.width + c]; }
    out[j] = v;
}

@compute @workgroup_size(256)
fn permute(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if (j >= p.n) { return; }
    var rest = j;
    var src = 0u;
    for (var a = i32(p.rank) - 1; a >= 0; a = a - 1) {
        let ua = u32(a);
        let len = p.shape[ua / 4u][ua % 4u];
        src = src + (rest % len) * p.stride[ua / 4u][ua % 4u];
        rest = rest / len;
    }
    out[j] = x[src];
}
