//! The kernel interface every device implements. A `Backend` knows nothing of autograd: each method
//! is one kernel (or a short fixed sequence of them) over flat `Storage` with explicit sizes, the way
//! a WGSL dispatch sees its buffers. The ops in `ops/` add shapes, checks and backward rules on top,
//! so one autograd graph runs unchanged on either device.
//!
//! Layout convention everywhere: row-major, contiguous, the last axis fastest.

use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::pending::PendingRead;
use crate::storage::Storage;

/// `C[b] = op(A[b]) · op(B[b]) (+ bias)` for `b` in `0..batch`, every matrix row-major.
/// `op(A)` is `[m, k]` (stored `[k, m]` when `trans_a`), `op(B)` is `[k, n]` (stored `[n, k]` when
/// `trans_b`), `C` is a fresh contiguous `[batch, m, n]`, `bias` is `[n]` added to every row.
/// A batch stride of 0 broadcasts that operand over the batch (a shared weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    /// Number of products.
    pub batch: usize,
    /// Rows of `op(A)` and of `C`.
    pub m: usize,
    /// Columns of `op(B)` and of `C`.
    pub n: usize,
    /// The inner dimension that the product sums over.
    pub k: usize,
    /// `A` is stored transposed, as `[k, m]`.
    pub trans_a: bool,
    /// `B` is stored transposed, as `[n, k]`.
    pub trans_b: bool,
    /// Elements between the starts of consecutive batches of `A` (0 shares one `A`).
    pub a_batch_stride: usize,
    /// Elements between the starts of consecutive batches of `B` (0 shares one `B`).
    pub b_batch_stride: usize,
}

impl MatmulSpec {
    /// A single `[m, k] x [k, n]` product, no transposes.
    pub fn plain(m: usize, n: usize, k: usize) -> Self {
        MatmulSpec { batch: 1, m, n, k, trans_a: false, trans_b: false, a_batch_stride: m * k, b_batch_stride: k * n }
    }

    /// Floating-point operations of the product, `2 * batch * m * n * k` (the bias not counted).
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Index of `op(A)[i, p]` inside one batch's A.
    #[inline]
    pub fn a_index(&self, i: usize, p: usize) -> usize {
        if self.trans_a { p * self.m + i } else { i * self.k + p }
    }

    /// Index of `op(B)[p, j]` inside one batch's B.
    #[inline]
    pub fn b_index(&self, p: usize, j: usize) -> usize {
        if self.trans_b { j * self.k + p } else { p * self.n + j }
    }

    /// Elements each operand must hold for this spec.
    pub fn a_len(&self) -> usize {
        (self.batch - 1) * self.a_batch_stride + self.m * self.k
    }
    /// Elements `B` must hold for this spec.
    pub fn b_len(&self) -> usize {
        (self.batch - 1) * self.b_batch_stride + self.k * self.n
    }
}

/// `out[i] = x[i] (op) y[i % len(y)]`: `y` repeats over the leading axes of `x` (a bias row, a
/// position table, a scalar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `x + y`
    Add,
    /// `x - y`
    Sub,
    /// `x * y`
    Mul,
    /// `x / y`
    Div,
}

impl BinaryOp {
    /// `a (op) b` for one pair of values.
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }
    /// The op's number in the WGSL kernels' parameters (its discriminant, 0 to 3).
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// Element-wise maps of one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `s * x`
    Scale(f32),
    /// `x + s`
    AddScalar(f32),
    /// Exact GELU, `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `x * x`
    Square,
    /// `sqrt(x)`
    Sqrt,
}

/// Multi-head scaled-dot-product self-attention over `heads = batch * num_heads` independent
/// sequences: `q, k, v, out: [heads, seq, dim]`, `out = softmax(q k^T * scale) v`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Independent sequences, `batch * num_heads`.
    pub heads: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Values per head and token.
    pub dim: usize,
    /// Multiplier of the scores `q k^T` before the softmax (`1 / sqrt(dim)` in the model).
    pub scale: f32,
}

/// Where the rows of every head live in a buffer: row `i` of head `h` starts at
/// `(h / group) * sample_stride + (h % group) * head_stride + offset + i * row_stride` and holds
/// `dim` values. It lets attention read the fused qkv projection `[N, T, 3, H, hd]` and write the
/// merged heads `[N, T, H, hd]` directly, with no permutation or slicing copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    /// Heads per sample (consecutive heads that share a sample block).
    pub group: usize,
    /// Values between the starts of consecutive samples.
    pub sample_stride: usize,
    /// Values between the starts of consecutive heads within one sample.
    pub head_stride: usize,
    /// Values between the starts of consecutive rows of one head.
    pub row_stride: usize,
    /// Values before the first row of the first head of each sample.
    pub offset: usize,
}

impl HeadLayout {
    /// `[heads, seq, dim]`, each head's rows contiguous.
    pub fn contiguous(seq: usize, dim: usize) -> Self {
        HeadLayout { group: 1, sample_stride: seq * dim, head_stride: 0, row_stride: dim, offset: 0 }
    }

    /// Part `which` (0 = q, 1 = k, 2 = v) of the fused projection `qkv: [N, seq, 3, heads, dim]`.
    pub fn qkv(seq: usize, heads: usize, dim: usize, which: usize) -> Self {
        let width = heads * dim;
        HeadLayout {
            group: heads,
            sample_stride: seq * 3 * width,
            head_stride: dim,
            row_stride: 3 * width,
            offset: which * width,
        }
    }

    /// The merged heads `[N, seq, heads, dim]`, i.e. `[N, seq, heads * dim]`.
    pub fn merged(seq: usize, heads: usize, dim: usize) -> Self {
        let width = heads * dim;
        HeadLayout { group: heads, sample_stride: seq * width, head_stride: dim, row_stride: width, offset: 0 }
    }

    /// Index of the first value of row `i` of head `h`.
    #[inline]
    pub fn row(&self, h: usize, i: usize) -> usize {
        (h / self.group) * self.sample_stride + (h % self.group) * self.head_stride + self.offset + i * self.row_stride
    }
}

/// Rows of `x: [batch, rows, width]` picked per sample: `out[n, i, :] = x[n, idx[n, i], :]`,
/// `idx: [batch, picks]`; with a fill row, a pick equal to `rows` stands for it (a row one past x's
/// of every sample, shared by all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherSpec {
    /// Samples.
    pub batch: usize,
    /// Rows of `x` per sample.
    pub rows: usize,
    /// Rows picked per sample (the second axis of `idx`).
    pub picks: usize,
    /// Values per row.
    pub width: usize,
}

/// Copy `rows` rows of `width` values per sample, from `src` (with `src_rows` rows per sample,
/// starting at `src_offset`) into `dst` (with `dst_rows` per sample, starting at `dst_offset`).
/// Concatenation along the token axis is two of these; its backward, a slice, is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRowsSpec {
    /// Samples.
    pub batch: usize,
    /// Rows copied per sample.
    pub rows: usize,
    /// Values per row.
    pub width: usize,
    /// Rows per sample in `src`.
    pub src_rows: usize,
    /// First row copied from each sample of `src`.
    pub src_offset: usize,
    /// Rows per sample in `dst`.
    pub dst_rows: usize,
    /// First row written in each sample of `dst`.
    pub dst_offset: usize,
}

/// `x` viewed as `[outer, axis, inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisSpec {
    /// Product of the axes before `axis`.
    pub outer: usize,
    /// Length of the axis summed over or broadcast along.
    pub axis: usize,
    /// Product of the axes after `axis`.
    pub inner: usize,
}

/// The MAE reconstruction loss per patch: `pred, target: [rows, patch]`, `mask: [rows]` (1 where the
/// patch was removed). `row_loss[r] = mask[r] * mean_p (pred[r,p] - t[r,p])^2`, where `t` is the
/// target, normalised per patch by its mean and unbiased variance (`+ 1e-6`) when `norm_pix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaeLossSpec {
    /// Number of patches: rows of `pred`, `target` and `mask`.
    pub rows: usize,
    /// Values per patch.
    pub patch: usize,
    /// Normalise each target patch by its own mean and variance first.
    pub norm_pix: bool,
}

/// The variance floor of the norm-pix target, as in the official code.
pub const NORM_PIX_EPS: f32 = 1e-6;

/// One AdamW step, in place; bias corrections are computed on the host from the step number.
/// `g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;`
/// `p = p (1 - lr wd) - lr (m / bc1) / (sqrt(v / bc2) + eps)` (PyTorch's AdamW).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWSpec {
    /// Learning rate.
    pub lr: f32,
    /// Decay rate of the first moment `m`.
    pub beta1: f32,
    /// Decay rate of the second moment `v`.
    pub beta2: f32,
    /// Added to the denominator so that it is never zero.
    pub eps: f32,
    /// Decoupled weight decay, applied as `p * (1 - lr * weight_decay)`.
    pub weight_decay: f32,
    /// `1 - beta1^t` at step `t`.
    pub bias_correction1: f32,
    /// `1 - beta2^t` at step `t`.
    pub bias_correction2: f32,
    /// Multiplies the gradient before anything else (1 / accumulation steps in training).
    pub grad_scale: f32,
}

/// The gradient homes (`Tensor::set_grad_home`) of a layer's two parameters (a linear layer's
/// weight and bias, a LayerNorm's gamma and beta), which a backward kernel may write their
/// gradients into instead of fresh buffers: their ranges of the packed buffer an optimizer reads.
/// A backend writes there only where its output's layout is theirs (the GPU's: the two ranges of
/// one buffer, as far apart as its kernel writes the two results) and then returns these very
/// storages; otherwise fresh ones, which the optimizer copies in.
pub type GradHomes<'a> = Option<[&'a Storage; 2]>;

/// Values per chunk of a packed AdamW step: the unit in which `packed_adamw_layout` numbers the
/// chunks of each parameter (a GPU workgroup updates one chunk).
pub const ADAMW_CHUNK: usize = 256;

/// The layout of a packed AdamW step (`Backend::adamw_step_packed`) over parameters at `(offset,
/// len)` in the packed buffers, one flat table: `3 x segments` values (offset, len, first chunk),
/// then, for each chunk of `ADAMW_CHUNK` values, the segment it belongs to. A segment's chunks
/// follow the previous segment's; the chunk table lets a GPU workgroup find its segment with one
/// load instead of a search.
pub fn packed_adamw_layout(segments: &[(usize, usize)]) -> Result<Indices> {
    let mut values = Vec::with_capacity(3 * segments.len());
    let mut owners = Vec::new();
    for (i, &(offset, len)) in segments.iter().enumerate() {
        for (x, what) in [(offset, "offset"), (len, "length"), (owners.len(), "chunk")] {
            values.push(u32::try_from(x).map_err(|_| Error::Shape(format!("packed AdamW: {what} {x} over 32 bits")))?);
        }
        owners.extend(std::iter::repeat_n(i as u32, len.div_ceil(ADAMW_CHUNK)));
    }
    values.extend(owners);
    let n = values.len();
    Indices::new(values, &[n])
}

/// The segments `(offset, len, first chunk)` of a packed AdamW `layout` of `segments` entries,
/// checked: each lies inside every one of `buffers` (`(len, name)`), none overlaps another, the
/// chunks and the chunk table follow `packed_adamw_layout`, and `hyper` holds two values per
/// segment. The GPU kernel's in-bounds proof rests on these checks.
pub(crate) fn packed_adamw_segments(
    layout: &Indices,
    segments: usize,
    hyper: usize,
    buffers: &[(usize, &str)],
) -> Result<Vec<(usize, usize, usize)>> {
    let bad = |why: String| Err(Error::Shape(format!("packed AdamW: {why}")));
    let v = layout.values();
    if v.len() < 3 * segments {
        return bad(format!("a layout of {} values for {segments} segments", v.len()));
    }
    let segs: Vec<(usize, usize, usize)> =
        v[..3 * segments].chunks(3).map(|c| (c[0] as usize, c[1] as usize, c[2] as usize)).collect();
    if hyper < 2 * segs.len() {
        return bad(format!("{hyper} hyper-parameter values for {} segments (two each)", segs.len()));
    }
    let mut chunk = 0;
    for &(offset, len, first) in &segs {
        if first != chunk {
            return bad(format!("a segment's first chunk is {first} where {chunk} follows the previous ones"));
        }
        chunk += len.div_ceil(ADAMW_CHUNK);
        for &(n, what) in buffers {
            if offset + len > n {
                return bad(format!("values {offset}..{} of a {what} buffer of {n}", offset + len));
            }
        }
    }
    let owners = &v[3 * segments..];
    let expected = segs.iter().enumerate().flat_map(|(i, s)| std::iter::repeat_n(i as u32, s.1.div_ceil(ADAMW_CHUNK)));
    if owners.len() != chunk || !owners.iter().copied().eq(expected) {
        return bad("the chunk table does not match the segments".into());
    }
    let mut sorted = segs.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return bad("two segments overlap".into());
    }
    Ok(segs)
}

/// The kernels. Every method allocates its output on the same device as its inputs; in-place
/// methods say so in their names.
pub trait Backend {
    /// A one-line description of the device, for logs.
    fn name(&self) -> String;

    /// A new storage holding a copy of `data`.
    fn upload(&self, data: &[f32]) -> Result<Storage>;
    /// All values of `s`, copied to the host (waits for the device).
    fn download(&self, s: &Storage) -> Result<Vec<f32>>;
    /// Request all values of `s` without waiting: the read holds the values `s` has after the
    /// work recorded so far, whatever is recorded after it (see `PendingRead`). This default copies
    /// them now, as a device that computes at once (the CPU) can; the GPU submits the copy and
    /// waits for it only in `PendingRead::wait`.
    fn download_later(&self, s: &Storage) -> Result<PendingRead> {
        Ok(PendingRead::ready(self.download(s)?))
    }
    /// A new storage of `len` values, every one `value`.
    fn full(&self, len: usize, value: f32) -> Result<Storage>;
    /// A new storage of `len` values that the caller overwrites entirely before reading any (no
    /// fill kernel on the GPU; zeros on the CPU, whose storage is always initialised).
    fn empty(&self, len: usize) -> Result<Storage> {
        self.full(len, 0.0)
    }
    /// A new storage holding a copy of `s`.
    fn copy(&self, s: &Storage) -> Result<Storage>;

    /// `C = op(A) · op(B) (+ bias)` as `spec` describes (see `MatmulSpec`).
    fn matmul(&self, a: &Storage, b: &Storage, bias: Option<&Storage>, spec: &MatmulSpec) -> Result<Storage>;

    /// `h = op(A) · op(B) + bias` and `y = gelu(h)`, returned as `(h, y)`: an MLP's first layer
    /// and its activation (`h` is what the backward needs). This default runs the two kernels;
    /// a backend may fuse them so that `h` is turned into `y` while it is still in cache (CPU) or
    /// in registers (GPU), one pass and one dispatch fewer.
    fn matmul_gelu(
        &self,
        a: &Storage,
        b: &Storage,
        bias: Option<&Storage>,
        spec: &MatmulSpec,
    ) -> Result<(Storage, Storage)> {
        let h = self.matmul(a, b, bias, spec)?;
        let y = self.unary(UnaryOp::Gelu, &h, spec.batch * spec.m * spec.n)?;
        Ok((h, y))
    }

    /// `(op(A) · op(B)) ⊙ gelu'(h)`, `h` as large as the product: the gradient at the input of a
    /// GELU whose output gradient is the product (an MLP's backward: fc2's input gradient carried
    /// through the activation after fc1). This default runs the product, then `gelu_backward`; the
    /// GPU multiplies as it stores the product (one dispatch and one pass over `[rows, hidden]`
    /// fewer).
    fn matmul_gelu_backward(&self, a: &Storage, b: &Storage, h: &Storage, spec: &MatmulSpec) -> Result<Storage> {
        let c = self.matmul(a, b, None, spec)?;
        self.gelu_backward(h, &c, spec.batch * spec.m * spec.n)
    }

    /// A linear layer's weight and bias gradients from one read of its output gradient:
    /// `(op(A) · op(B), sum_k A[k, m])` for `A = dY` stored `[K, M]` (`spec.trans_a`, batch 1) and
    /// `B` the layer's input, so `dW = dY^T X` and `db[m] = sum_k dY[k, m]`. This default runs the
    /// product and a column sum; the GPU makes the sums from the tiles of `dY` its product stages
    /// anyway (one dispatch fewer per linear layer).
    /// `into`: the weight's and the bias's gradient homes, which a backend may write instead of
    /// fresh buffers (see `GradHomes`); this default does not.
    fn matmul_with_a_sums(
        &self,
        a: &Storage,
        b: &Storage,
        spec: &MatmulSpec,
        into: GradHomes<'_>,
    ) -> Result<(Storage, Storage)> {
        let _ = into;
        matmul_then_a_sums(self, a, b, spec)
    }

    /// `out[i] = x[i] (op) y[i % len_y]` for `i` in `0..len_x` (see `BinaryOp`).
    fn binary(&self, op: BinaryOp, x: &Storage, y: &Storage, len_x: usize, len_y: usize) -> Result<Storage>;
    /// `op` applied to each of the `len` values of `x`.
    fn unary(&self, op: UnaryOp, x: &Storage, len: usize) -> Result<Storage>;
    /// `dx = dy * gelu'(x)`.
    fn gelu_backward(&self, x: &Storage, dy: &Storage, len: usize) -> Result<Storage>;

    /// Softmax over the last axis of `[rows, cols]`.
    fn softmax(&self, x: &Storage, rows: usize, cols: usize) -> Result<Storage>;
    /// `dx = y * (dy - sum(dy * y))` per row.
    fn softmax_backward(&self, y: &Storage, dy: &Storage, rows: usize, cols: usize) -> Result<Storage>;

    /// LayerNorm over the last axis of `[rows, cols]`: returns `(y, mean, rstd)`, the last two `[rows]`.
    fn layernorm(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<(Storage, Storage, Storage)>;
    /// A residual add and the LayerNorm after it, `s = x + res` then LayerNorm of `s`, in one pass:
    /// returns `(s, y, mean, rstd)`. The default is the two kernels.
    #[allow(clippy::too_many_arguments)]
    fn add_layernorm(
        &self,
        x: &Storage,
        res: &Storage,
        gamma: &Storage,
        beta: &Storage,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<(Storage, Storage, Storage, Storage)> {
        let s = self.binary(BinaryOp::Add, x, res, rows * cols, rows * cols)?;
        let (y, mean, rstd) = self.layernorm(&s, gamma, beta, rows, cols, eps)?;
        Ok((s, y, mean, rstd))
    }
    /// Returns `(dx, dgamma, dbeta)`; with `acc` (the gradient already accumulated for `x` from its
    /// other uses, e.g. the residual stream) `dx` is `acc + dx`, one pass instead of a separate add.
    /// `into`: gamma's and beta's gradient homes, which a backend may write instead of fresh
    /// buffers (see `GradHomes`).
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        x: &Storage,
        gamma: &Storage,
        mean: &Storage,
        rstd: &Storage,
        dy: &Storage,
        acc: Option<&Storage>,
        rows: usize,
        cols: usize,
        into: GradHomes<'_>,
    ) -> Result<(Storage, Storage, Storage)>;

    /// Returns `(out, lse)`, `lse: [heads, seq]` the log-sum-exp of each row of scaled scores, which
    /// the backward uses to recompute the probabilities without storing them.
    fn attention(&self, q: &Storage, k: &Storage, v: &Storage, spec: &AttentionSpec) -> Result<(Storage, Storage)>;
    /// Returns `(dq, dk, dv)`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: &Storage,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        lse: &Storage,
        dout: &Storage,
        spec: &AttentionSpec,
    ) -> Result<(Storage, Storage, Storage)>;

    /// Self-attention on the fused projection `qkv: [N, seq, 3, H, dim]` (`spec.heads = N * H`):
    /// returns `(out: [N, seq, H, dim], lse: [N * H, seq])`, the heads already merged for the
    /// output projection.
    fn attention_qkv(&self, qkv: &Storage, num_heads: usize, spec: &AttentionSpec) -> Result<(Storage, Storage)>;
    /// The gradient `dqkv: [N, seq, 3, H, dim]` of `attention_qkv`, `dout` in the layout of `out`.
    fn attention_qkv_backward(
        &self,
        qkv: &Storage,
        out: &Storage,
        lse: &Storage,
        dout: &Storage,
        num_heads: usize,
        spec: &AttentionSpec,
    ) -> Result<Storage>;

    /// `out[n, i, :] = x[n, idx[n, i], :]` (see `GatherSpec`); with a `fill` row (`[width]`), picks
    /// equal to `spec.rows` take it instead: `out[n, i, :] = fill` (MAE's mask and cls tokens).
    fn gather_rows(&self, x: &Storage, fill: Option<&Storage>, idx: &Indices, spec: &GatherSpec) -> Result<Storage>;
    /// The backward of `gather_rows` for `x`: `dx = zeros; dx[n, idx[n, i], :] += dy[n, i, :]`,
    /// leaving out picks at or past `spec.rows` (the fill's).
    fn scatter_add_rows(&self, dy: &Storage, idx: &Indices, spec: &GatherSpec) -> Result<Storage>;
    /// The backward of `gather_rows` for its fill row: the sum of `dy[n, i, :]` over the picks
    /// equal to `spec.rows`, `[width]`.
    fn sum_fill_rows(&self, dy: &Storage, idx: &Indices, spec: &GatherSpec) -> Result<Storage>;

    /// Writes into `dst` in place.
    fn copy_rows_into(&self, src: &Storage, dst: &Storage, spec: &CopyRowsSpec) -> Result<()>;

    /// A new `[batch, dst_rows, width]` holding `src`'s rows as `copy_rows_into` places them and
    /// zeros in every other row (a slice's backward). The default fills, then copies; the GPU
    /// writes every value once, in one dispatch.
    fn place_rows(&self, src: &Storage, spec: &CopyRowsSpec) -> Result<Storage> {
        let dst = self.full(spec.batch * spec.dst_rows * spec.width, 0.0)?;
        if spec.batch * spec.rows * spec.width > 0 {
            self.copy_rows_into(src, &dst, spec)?;
        }
        Ok(dst)
    }

    /// Sum over the middle axis: `[outer, axis, inner] -> [outer, inner]`.
    fn sum_axis(&self, x: &Storage, spec: &AxisSpec) -> Result<Storage>;
    /// Repeat along a new middle axis: `[outer, inner] -> [outer, axis, inner]`.
    fn broadcast_axis(&self, x: &Storage, spec: &AxisSpec) -> Result<Storage>;

    /// `out = x.permute(perm)` for `x` of `shape` (rank at most 6).
    fn permute(&self, x: &Storage, shape: &[usize], perm: &[usize]) -> Result<Storage>;

    /// Per-patch masked loss, `[rows]`.
    fn mae_loss_rows(&self, pred: &Storage, target: &Storage, mask: &Storage, spec: &MaeLossSpec) -> Result<Storage>;
    /// The loss itself, the mean of the per-patch losses over the removed patches:
    /// `(sum(row_loss) / count [1], count = sum(mask) [1])` (0 / 0 when nothing is masked).
    fn mae_loss_mean(&self, row_loss: &Storage, mask: &Storage, spec: &MaeLossSpec) -> Result<(Storage, Storage)>;
    /// The loss's gradient from the mean's, `dloss [1]`, and the `count [1]` that the mean divided
    /// by: `dpred[r, p] = (dloss / count) * mask[r] * 2 (pred[r, p] - t[r, p]) / patch`.
    fn mae_loss_backward(
        &self,
        pred: &Storage,
        target: &Storage,
        mask: &Storage,
        dloss: &Storage,
        count: &Storage,
        spec: &MaeLossSpec,
    ) -> Result<Storage>;

    /// Softmax cross-entropy per row of `logits: [rows, classes]` against `labels: [rows]`; returns
    /// `(loss_rows [rows], probabilities [rows, classes])`.
    fn cross_entropy(
        &self,
        logits: &Storage,
        labels: &Indices,
        rows: usize,
        classes: usize,
    ) -> Result<(Storage, Storage)>;
    /// `dlogits[r, c] = drow[r] * (p[r, c] - [c == label[r]])`.
    fn cross_entropy_backward(
        &self,
        probs: &Storage,
        labels: &Indices,
        drow: &Storage,
        rows: usize,
        classes: usize,
    ) -> Result<Storage>;

    /// One AdamW step on `param` with moments `m`, `v`, all updated in place.
    fn adamw_step(
        &self,
        param: &Storage,
        grad: &Storage,
        m: &Storage,
        v: &Storage,
        len: usize,
        spec: &AdamWSpec,
    ) -> Result<()>;

    /// One AdamW step over several parameters packed in the buffers `param`, `grad`, `m` and `v`
    /// (one kernel launch for all): segment `i` of the `segments` in `layout`
    /// (`packed_adamw_layout`) is updated as `adamw_step` would update it alone, with
    /// `lr = spec.lr * hyper[i, 0]` and weight decay `hyper[i, 1]`; values outside the segments are
    /// left alone.
    #[allow(clippy::too_many_arguments)]
    fn adamw_step_packed(
        &self,
        param: &Storage,
        grad: &Storage,
        m: &Storage,
        v: &Storage,
        layout: &Indices,
        segments: usize,
        hyper: &Storage,
        spec: &AdamWSpec,
    ) -> Result<()>;

    /// Copy the first `len` values of `src` into `dst`, in place (a device-side copy, no kernel).
    fn copy_into(&self, src: &Storage, dst: &Storage, len: usize) -> Result<()>;

    /// Make sure every recorded kernel has been handed to the device (a no-op on the CPU).
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// `Backend::matmul_with_a_sums` as two calls, the product then a column sum: the default, and what
/// a backend that fuses them falls back to on the shapes it does not fuse.
pub fn matmul_then_a_sums<B: Backend + ?Sized>(
    be: &B,
    a: &Storage,
    b: &Storage,
    spec: &MatmulSpec,
) -> Result<(Storage, Storage)> {
    let c = be.matmul(a, b, None, spec)?;
    let sums = be.sum_axis(a, &AxisSpec { outer: 1, axis: spec.k, inner: spec.m })?;
    Ok((c, sums))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::reference;
    use crate::device::Device;

    fn spec() -> AdamWSpec {
        AdamWSpec {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            bias_correction1: 0.1,
            bias_correction2: 0.05,
            grad_scale: 1.0,
        }
    }

    #[test]
    fn packed_adamw_on_the_cpu_is_the_per_tensor_step_on_each_segment() {
        let cpu = Device::Cpu;
        let b = cpu.backend();
        let segments = [(0usize, 3usize), (5, 300), (400, 1)];
        let n = 401;
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let grads: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let (p, g) = (Storage::from_vec(values.clone()), Storage::from_vec(grads.clone()));
        let (m, v) = (Storage::from_vec(vec![0.0; n]), Storage::from_vec(vec![0.0; n]));
        let hyper = Storage::from_vec(vec![1.0, 0.05, 0.5, 0.0, 2.0, 0.1]);
        let layout = packed_adamw_layout(&segments).unwrap();
        b.adamw_step_packed(&p, &g, &m, &v, &layout, 3, &hyper, &spec()).unwrap();
        let got = p.cpu().unwrap().clone();
        let h = hyper.cpu().unwrap().clone();
        for (i, &(o, len)) in segments.iter().enumerate() {
            let mut want = values[o..o + len].to_vec();
            let (mut mm, mut vv) = (vec![0.0; len], vec![0.0; len]);
            let s = AdamWSpec { lr: 0.1 * h[2 * i], weight_decay: h[2 * i + 1], ..spec() };
            reference::adamw_step(&mut want, &grads[o..o + len], &mut mm, &mut vv, &s);
            for (a, w) in got[o..o + len].iter().zip(&want) {
                assert!((a - w).abs() <= 1e-6 + 1e-5 * w.abs(), "segment {i}: {a} vs {w}");
            }
        }
        assert_eq!(got[3..5], values[3..5], "values between segments are left alone");
    }

    #[test]
    fn a_packed_adamw_layout_that_overlaps_or_overruns_is_refused() {
        let b = Device::Cpu.backend();
        let s = |n: usize| Storage::from_vec(vec![0.0; n]);
        let hyper = s(4);
        let run = |segments: &[(usize, usize)], n: usize| {
            let layout = packed_adamw_layout(segments).unwrap();
            b.adamw_step_packed(&s(n), &s(n), &s(n), &s(n), &layout, 2, &hyper, &spec()).unwrap_err().to_string()
        };
        assert!(run(&[(0, 10), (5, 10)], 20).contains("overlap"));
        assert!(run(&[(0, 10), (15, 10)], 20).contains("values 15..25"));
        let bad_chunks = Indices::new(vec![0, 10, 0, 10, 10, 0, 0, 1], &[8]).unwrap();
        let err = b.adamw_step_packed(&s(20), &s(20), &s(20), &s(20), &bad_chunks, 2, &hyper, &spec()).unwrap_err();
        assert!(err.to_string().contains("first chunk"), "{err}");
        let bad_owners = Indices::new(vec![0, 10, 0, 10, 10, 1, 1, 1], &[8]).unwrap();
        let err = b.adamw_step_packed(&s(20), &s(20), &s(20), &s(20), &bad_owners, 2, &hyper, &spec()).unwrap_err();
        assert!(err.to_string().contains("chunk table"), "{err}");
    }
}
