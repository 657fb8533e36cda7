//! The CPU backend: fast kernels so that training on a CPU is practical. The matrix product goes
//! through the blocked, packed and threaded `matmul/`; every other hot kernel through `fast/`
//! (vectorised f32, an AVX2 + FMA copy chosen at run time, threaded with `parallel.rs`). Softmax
//! and cross-entropy, which MAE pre-training does not use, still run the reference. The plain loops
//! of `reference.rs` stay the ground truth that the fast paths are tested against
//! (`engine/tests/cpu_fast.rs`, `engine/tests/cpu_matmul.rs`).
//!
//! Every method is timed by `profile.rs` when profiling is switched on (`profile::start`), and
//! gives the same bits from run to run and for any thread count.

pub mod allocator;
pub mod fast;
pub mod interleave;
pub mod matmul;
pub mod parallel;
pub mod pool;
pub mod profile;
pub mod recycle;
pub mod reference;

use crate::backend::*;
use crate::error::{Error, Result};
use crate::indices::Indices;
use crate::storage::Storage;
use parallel::Uninit;

/// The CPU backend, the `Backend` of `Device::Cpu`. It has no state of its own: one static
/// value serves every CPU tensor.
pub struct CpuBackend;

fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "binary add",
        BinaryOp::Sub => "binary sub",
        BinaryOp::Mul => "binary mul",
        BinaryOp::Div => "binary div",
    }
}

fn unary_name(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Scale(_) => "unary scale",
        UnaryOp::AddScalar(_) => "unary add_scalar",
        UnaryOp::Gelu => "unary gelu",
        UnaryOp::Square => "unary square",
        UnaryOp::Sqrt => "unary sqrt",
    }
}

fn new(v: Vec<f32>) -> Result<Storage> {
    Ok(Storage::from_vec(v))
}

/// A fresh output of `len` values written by the kernel that `f` runs (see `parallel::Out`: the
/// buffer is not zeroed in a pass of its own; each worker zero-fills its pieces right before writing
/// them, in the cache).
fn out1(len: usize, f: impl FnOnce(Uninit<'_>)) -> Vec<f32> {
    parallel::new_output(len, f)
}

/// Two fresh outputs for one kernel, as [`out1`].
fn out2(lens: (usize, usize), f: impl FnOnce(Uninit<'_>, Uninit<'_>)) -> (Vec<f32>, Vec<f32>) {
    let mut b = Vec::new();
    let a = out1(lens.0, |ua| b = out1(lens.1, |ub| f(ua, ub)));
    (a, b)
}

/// Three fresh outputs for one kernel, as [`out1`].
fn out3(
    lens: (usize, usize, usize),
    f: impl FnOnce(Uninit<'_>, Uninit<'_>, Uninit<'_>),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut c = Vec::new();
    let (a, b) = out2((lens.0, lens.1), |ua, ub| c = out1(lens.2, |uc| f(ua, ub, uc)));
    (a, b, c)
}

fn check_len(what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::Shape(format!("{what}: the buffer holds {have} values, the op needs {need}")));
    }
    Ok(())
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        let (threads, kernel, isa) = (matmul::threads(), matmul::Kernel::best(), fast::simd::Isa::best());
        format!("cpu ({threads} threads, {kernel:?} matmul, {isa:?} kernels)").to_lowercase()
    }

    fn upload(&self, data: &[f32]) -> Result<Storage> {
        let _t = profile::scope("upload");
        new(data.to_vec())
    }

    fn download(&self, s: &Storage) -> Result<Vec<f32>> {
        let _t = profile::scope("download");
        Ok(s.cpu()?.clone())
    }

    fn full(&self, len: usize, value: f32) -> Result<Storage> {
        let _t = profile::scope("full");
        new(out1(len, |out| fast::elementwise::fill(value, out)))
    }

    fn copy(&self, s: &Storage) -> Result<Storage> {
        let _t = profile::scope("copy");
        let x = s.cpu()?;
        new(out1(x.len(), |out| fast::elementwise::copy(&x, out)))
    }

    fn matmul(&self, a: &Storage, b: &Storage, bias: Option<&Storage>, spec: &MatmulSpec) -> Result<Storage> {
        let _t = profile::scope_with("matmul", || {
            let t = |on: bool| if on { "T" } else { "N" };
            format!("matmul {}x{}x{}x{} {}{}", spec.batch, spec.m, spec.n, spec.k, t(spec.trans_a), t(spec.trans_b))
        });
        let (a, b) = (a.cpu()?, b.cpu()?);
        check_len("matmul A", a.len(), spec.a_len())?;
        check_len("matmul B", b.len(), spec.b_len())?;
        let bias = bias.map(|s| s.cpu()).transpose()?;
        // Not zeroed first: the product writes every value of C before it reads any.
        let len = spec.batch * spec.m * spec.n;
        let c = parallel::new_uninit_output(len, |c| {
            matmul::matmul_uninit(&a, &b, bias.as_deref().map(|v| v.as_slice()), spec, c)
        });
        new(c)
    }

    fn matmul_gelu(
        &self,
        a: &Storage,
        b: &Storage,
        bias: Option<&Storage>,
        spec: &MatmulSpec,
    ) -> Result<(Storage, Storage)> {
        let _t = profile::scope_with("matmul_gelu", || format!("matmul_gelu {}x{}x{}", spec.m, spec.n, spec.k));
        let (a, b) = (a.cpu()?, b.cpu()?);
        check_len("matmul A", a.len(), spec.a_len())?;
        check_len("matmul B", b.len(), spec.b_len())?;
        let bias = bias.map(|s| s.cpu()).transpose()?;
        let len = spec.batch * spec.m * spec.n;
        let mut y = Vec::new();
        let h = parallel::new_uninit_output(len, |h| {
            y = parallel::new_uninit_output(len, |y| {
                matmul::matmul_gelu_uninit(&a, &b, bias.as_deref().map(|v| v.as_slice()), spec, h, y)
            })
        });
        Ok((new(h)?, new(y)?))
    }

    fn binary(&self, op: BinaryOp, x: &Storage, y: &Storage, len_x: usize, len_y: usize) -> Result<Storage> {
        let _t = profile::scope(binary_name(op));
        let (x, y) = (x.cpu()?, y.cpu()?);
        check_len("binary x", x.len(), len_x)?;
        check_len("binary y", y.len(), len_y)?;
        new(out1(len_x, |out| fast::elementwise::binary(op, &x[..len_x], &y[..len_y], out)))
    }

    fn unary(&self, op: UnaryOp, x: &Storage, len: usize) -> Result<Storage> {
        let _t = profile::scope(unary_name(op));
        let x = x.cpu()?;
        check_len("unary x", x.len(), len)?;
        new(out1(len, |out| fast::elementwise::unary(op, &x[..len], out)))
    }

    fn gelu_backward(&self, x: &Storage, dy: &Storage, len: usize) -> Result<Storage> {
        let _t = profile::scope_with("gelu_backward", || format!("gelu_backward {len}"));
        let (x, dy) = (x.cpu()?, dy.cpu()?);
        check_len("gelu_backward x", x.len(), len)?;
        check_len("gelu_backward dy", dy.len(), len)?;
        new(out1(len, |out| fast::elementwise::gelu_backward(&x[..len], &dy[..len], out)))
    }

    fn softmax(&self, x: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        let _t = profile::scope("softmax");
        new(reference::softmax(&x.cpu()?, rows, cols))
    }

    fn softmax_backward(&self, y: &Storage, dy: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        let _t = profile::scope("softmax_backward");
        new(reference::softmax_backward(&y.cpu()?, &dy.cpu()?, rows, cols))
    }

    fn layernorm(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<(Storage, Storage, Storage)> {
        let _t = profile::scope("layernorm");
        let (x, gamma, beta) = (x.cpu()?, gamma.cpu()?, beta.cpu()?);
        check_len("layernorm x", x.len(), rows * cols)?;
        check_len("layernorm gamma", gamma.len(), cols)?;
        check_len("layernorm beta", beta.len(), cols)?;
        let (y, m, r) = out3((rows * cols, rows, rows), |y, m, r| {
            fast::layernorm::layernorm(&x, &gamma[..cols], &beta[..cols], eps, y, m, r)
        });
        Ok((new(y)?, new(m)?, new(r)?))
    }

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
        let _t = profile::scope_with("add_layernorm", || format!("add_layernorm {rows}x{cols}"));
        let (x, res, gamma, beta) = (x.cpu()?, res.cpu()?, gamma.cpu()?, beta.cpu()?);
        check_len("add_layernorm x", x.len(), rows * cols)?;
        check_len("add_layernorm res", res.len(), rows * cols)?;
        check_len("add_layernorm gamma", gamma.len(), cols)?;
        check_len("add_layernorm beta", beta.len(), cols)?;
        let mut sum = Vec::new();
        let (y, m, r) = out3((rows * cols, rows, rows), |y, m, r| {
            sum = out1(rows * cols, |s| {
                fast::layernorm::add_layernorm(&x, &res, &gamma[..cols], &beta[..cols], eps, s, y, m, r)
            })
        });
        Ok((new(sum)?, new(y)?, new(m)?, new(r)?))
    }

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
        _into: GradHomes<'_>,
    ) -> Result<(Storage, Storage, Storage)> {
        let _t = profile::scope_with("layernorm_backward", || format!("layernorm_backward {rows}x{cols}"));
        let (x, gamma, mean, rstd, dy) = (x.cpu()?, gamma.cpu()?, mean.cpu()?, rstd.cpu()?, dy.cpu()?);
        let acc = acc.map(Storage::cpu).transpose()?;
        check_len("layernorm_backward x", x.len(), rows * cols)?;
        check_len("layernorm_backward dy", dy.len(), rows * cols)?;
        if let Some(a) = &acc {
            check_len("layernorm_backward acc", a.len(), rows * cols)?;
        }
        check_len("layernorm_backward gamma", gamma.len(), cols)?;
        check_len("layernorm_backward mean", mean.len(), rows)?;
        check_len("layernorm_backward rstd", rstd.len(), rows)?;
        let (mut dg, mut db) = (vec![0.0; cols], vec![0.0; cols]);
        let dx = out1(rows * cols, |dx| {
            let (mean, rstd) = (&mean[..rows], &rstd[..rows]);
            let acc = acc.as_ref().map(|a| &a[..rows * cols]);
            fast::layernorm::layernorm_backward(&x, &gamma[..cols], mean, rstd, &dy, acc, dx, &mut dg, &mut db)
        });
        Ok((new(dx)?, new(dg)?, new(db)?))
    }

    fn attention(&self, q: &Storage, k: &Storage, v: &Storage, spec: &AttentionSpec) -> Result<(Storage, Storage)> {
        let _t = profile::scope("attention");
        let (q, k, v) = (q.cpu()?, k.cpu()?, v.cpu()?);
        let n = spec.heads * spec.seq * spec.dim;
        for (what, x) in [("attention q", &q), ("attention k", &k), ("attention v", &v)] {
            check_len(what, x.len(), n)?;
        }
        let (o, l) = out2((n, spec.heads * spec.seq), |o, l| fast::attention::attention(&q, &k, &v, spec, o, l));
        Ok((new(o)?, new(l)?))
    }

    fn attention_backward(
        &self,
        q: &Storage,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        lse: &Storage,
        dout: &Storage,
        spec: &AttentionSpec,
    ) -> Result<(Storage, Storage, Storage)> {
        let _t = profile::scope("attention_backward");
        let (q, k, v, out, lse, dout) = (q.cpu()?, k.cpu()?, v.cpu()?, out.cpu()?, lse.cpu()?, dout.cpu()?);
        let n = spec.heads * spec.seq * spec.dim;
        for (what, x) in [
            ("attention_backward q", &q),
            ("attention_backward k", &k),
            ("attention_backward v", &v),
            ("attention_backward out", &out),
            ("attention_backward dout", &dout),
        ] {
            check_len(what, x.len(), n)?;
        }
        check_len("attention_backward lse", lse.len(), spec.heads * spec.seq)?;
        let (dq, dk, dv) = out3((n, n, n), |dq, dk, dv| {
            fast::attention::attention_backward(&q, &k, &v, &out, &lse, &dout, spec, dq, dk, dv)
        });
        Ok((new(dq)?, new(dk)?, new(dv)?))
    }

    fn attention_qkv(&self, qkv: &Storage, num_heads: usize, spec: &AttentionSpec) -> Result<(Storage, Storage)> {
        let _t = profile::scope_with("attention", || format!("attention {}x{}x{}", spec.heads, spec.seq, spec.dim));
        let qkv = qkv.cpu()?;
        let n = spec.heads * spec.seq * spec.dim;
        check_len("attention qkv", qkv.len(), 3 * n)?;
        let (o, l) =
            out2((n, spec.heads * spec.seq), |o, l| fast::attention::attention_qkv(&qkv, num_heads, spec, o, l));
        Ok((new(o)?, new(l)?))
    }

    fn attention_qkv_backward(
        &self,
        qkv: &Storage,
        out: &Storage,
        lse: &Storage,
        dout: &Storage,
        num_heads: usize,
        spec: &AttentionSpec,
    ) -> Result<Storage> {
        let _t = profile::scope_with("attention_backward", || {
            format!("attention_backward {}x{}x{}", spec.heads, spec.seq, spec.dim)
        });
        let (qkv, out, lse, dout) = (qkv.cpu()?, out.cpu()?, lse.cpu()?, dout.cpu()?);
        let n = spec.heads * spec.seq * spec.dim;
        check_len("attention_backward qkv", qkv.len(), 3 * n)?;
        for (what, x) in [("attention_backward out", &out), ("attention_backward dout", &dout)] {
            check_len(what, x.len(), n)?;
        }
        check_len("attention_backward lse", lse.len(), spec.heads * spec.seq)?;
        let d = out1(3 * n, |d| fast::attention::attention_qkv_backward(&qkv, &out, &lse, &dout, num_heads, spec, d));
        new(d)
    }

    fn gather_rows(&self, x: &Storage, fill: Option<&Storage>, idx: &Indices, spec: &GatherSpec) -> Result<Storage> {
        let _t = profile::scope("gather_rows");
        let x = x.cpu()?;
        check_len("gather_rows x", x.len(), spec.batch * spec.rows * spec.width)?;
        check_len("gather_rows idx", idx.values().len(), spec.batch * spec.picks)?;
        let fill = fill.map(|f| f.cpu()).transpose()?;
        if let Some(f) = &fill {
            check_len("gather_rows fill", f.len(), spec.width)?;
        }
        idx.check_below(spec.rows + usize::from(fill.is_some()), "gather_rows")?;
        let out = out1(spec.batch * spec.picks * spec.width, |out| {
            fast::rows::gather_rows(&x, fill.as_ref().map(|f| f.as_slice()), idx.values(), spec, out)
        });
        new(out)
    }

    fn scatter_add_rows(&self, dy: &Storage, idx: &Indices, spec: &GatherSpec) -> Result<Storage> {
        let _t = profile::scope("scatter_add_rows");
        let dy = dy.cpu()?;
        check_len("scatter_add_rows dy", dy.len(), spec.batch * spec.picks * spec.width)?;
        check_len("scatter_add_rows idx", idx.values().len(), spec.batch * spec.picks)?;
        new(out1(spec.batch * spec.rows * spec.width, |out| fast::rows::scatter_add_rows(&dy, idx.values(), spec, out)))
    }

    fn sum_fill_rows(&self, dy: &Storage, idx: &Indices, spec: &GatherSpec) -> Result<Storage> {
        let _t = profile::scope("sum_fill_rows");
        let dy = dy.cpu()?;
        check_len("sum_fill_rows dy", dy.len(), spec.batch * spec.picks * spec.width)?;
        check_len("sum_fill_rows idx", idx.values().len(), spec.batch * spec.picks)?;
        new(out1(spec.width, |out| fast::rows::sum_fill_rows(&dy, idx.values(), spec, out)))
    }

    fn copy_rows_into(&self, src: &Storage, dst: &Storage, spec: &CopyRowsSpec) -> Result<()> {
        let _t = profile::scope("copy_rows_into");
        if src.same_as(dst) {
            return Err(Error::Invalid("copy_rows_into: source and destination are the same storage".into()));
        }
        let (src, mut dst) = (src.cpu()?, dst.cpu_mut()?);
        check_len("copy_rows_into src", src.len(), spec.batch * spec.src_rows * spec.width)?;
        check_len("copy_rows_into dst", dst.len(), spec.batch * spec.dst_rows * spec.width)?;
        if spec.src_offset + spec.rows > spec.src_rows || spec.dst_offset + spec.rows > spec.dst_rows {
            return Err(Error::Shape(format!("copy_rows_into: {spec:?} reads or writes past a sample's rows")));
        }
        fast::rows::copy_rows_into(&src, &mut dst, spec);
        Ok(())
    }

    fn sum_axis(&self, x: &Storage, spec: &AxisSpec) -> Result<Storage> {
        let _t = profile::scope("sum_axis");
        let x = x.cpu()?;
        check_len("sum_axis x", x.len(), spec.outer * spec.axis * spec.inner)?;
        let mut out = vec![0.0; spec.outer * spec.inner];
        fast::reduce::sum_axis(&x, spec, &mut out);
        new(out)
    }

    fn broadcast_axis(&self, x: &Storage, spec: &AxisSpec) -> Result<Storage> {
        let _t = profile::scope("broadcast_axis");
        let x = x.cpu()?;
        check_len("broadcast_axis x", x.len(), spec.outer * spec.inner)?;
        new(out1(spec.outer * spec.axis * spec.inner, |out| fast::reduce::broadcast_axis(&x, spec, out)))
    }

    fn permute(&self, x: &Storage, shape: &[usize], perm: &[usize]) -> Result<Storage> {
        let _t = profile::scope("permute");
        let x = x.cpu()?;
        let total: usize = shape.iter().product();
        check_len("permute x", x.len(), total)?;
        new(out1(total, |out| fast::permute::permute(&x, shape, perm, out)))
    }

    fn mae_loss_rows(&self, pred: &Storage, target: &Storage, mask: &Storage, spec: &MaeLossSpec) -> Result<Storage> {
        let _t = profile::scope("mae_loss_rows");
        let (pred, target, mask) = (pred.cpu()?, target.cpu()?, mask.cpu()?);
        check_len("mae_loss_rows pred", pred.len(), spec.rows * spec.patch)?;
        check_len("mae_loss_rows target", target.len(), spec.rows * spec.patch)?;
        check_len("mae_loss_rows mask", mask.len(), spec.rows)?;
        new(out1(spec.rows, |out| fast::loss::mae_loss_rows(&pred, &target, &mask, spec, out)))
    }

    fn mae_loss_mean(&self, row_loss: &Storage, mask: &Storage, spec: &MaeLossSpec) -> Result<(Storage, Storage)> {
        let _t = profile::scope("mae_loss_mean");
        let (row_loss, mask) = (row_loss.cpu()?, mask.cpu()?);
        check_len("mae_loss_mean row losses", row_loss.len(), spec.rows)?;
        check_len("mae_loss_mean mask", mask.len(), spec.rows)?;
        let (mean, count) = fast::loss::mae_loss_mean(&row_loss, &mask, spec);
        Ok((new(vec![mean])?, new(vec![count])?))
    }

    fn mae_loss_backward(
        &self,
        pred: &Storage,
        target: &Storage,
        mask: &Storage,
        dloss: &Storage,
        count: &Storage,
        spec: &MaeLossSpec,
    ) -> Result<Storage> {
        let _t = profile::scope("mae_loss_backward");
        let (pred, target, mask, dloss, count) = (pred.cpu()?, target.cpu()?, mask.cpu()?, dloss.cpu()?, count.cpu()?);
        check_len("mae_loss_backward pred", pred.len(), spec.rows * spec.patch)?;
        check_len("mae_loss_backward target", target.len(), spec.rows * spec.patch)?;
        check_len("mae_loss_backward mask", mask.len(), spec.rows)?;
        check_len("mae_loss_backward dloss", dloss.len(), 1)?;
        check_len("mae_loss_backward count", count.len(), 1)?;
        let scale = dloss[0] / count[0];
        new(out1(spec.rows * spec.patch, |out| fast::loss::mae_loss_backward(&pred, &target, &mask, scale, spec, out)))
    }

    fn cross_entropy(
        &self,
        logits: &Storage,
        labels: &Indices,
        rows: usize,
        classes: usize,
    ) -> Result<(Storage, Storage)> {
        let _t = profile::scope("cross_entropy");
        let logits = logits.cpu()?;
        check_len("cross_entropy logits", logits.len(), rows * classes)?;
        check_len("cross_entropy labels", labels.values().len(), rows)?;
        labels.check_below(classes, "cross_entropy labels")?;
        let (l, p) = out2((rows, rows * classes), |l, p| {
            fast::loss::cross_entropy(&logits, labels.values(), rows, classes, l, p)
        });
        Ok((new(l)?, new(p)?))
    }

    fn cross_entropy_backward(
        &self,
        probs: &Storage,
        labels: &Indices,
        drow: &Storage,
        rows: usize,
        classes: usize,
    ) -> Result<Storage> {
        let _t = profile::scope("cross_entropy_backward");
        new(reference::cross_entropy_backward(&probs.cpu()?, labels.values(), &drow.cpu()?, rows, classes))
    }

    fn adamw_step(
        &self,
        param: &Storage,
        grad: &Storage,
        m: &Storage,
        v: &Storage,
        len: usize,
        spec: &AdamWSpec,
    ) -> Result<()> {
        let _t = profile::scope("adamw_step");
        let g = grad.cpu()?;
        let (mut p, mut m, mut v) = (param.cpu_mut()?, m.cpu_mut()?, v.cpu_mut()?);
        check_len("adamw_step param", p.len(), len)?;
        check_len("adamw_step grad", g.len(), len)?;
        check_len("adamw_step m", m.len(), len)?;
        check_len("adamw_step v", v.len(), len)?;
        fast::adamw::adamw_step(&mut p[..len], &g[..len], &mut m[..len], &mut v[..len], spec);
        Ok(())
    }

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
    ) -> Result<()> {
        let _t = profile::scope("adamw_step");
        let lens = [(param.len(), "parameter"), (grad.len(), "gradient"), (m.len(), "m"), (v.len(), "v")];
        let segments = packed_adamw_segments(layout, segments, hyper.len(), &lens)?;
        let (h, g) = (hyper.cpu()?, grad.cpu()?);
        let (mut p, mut m, mut v) = (param.cpu_mut()?, m.cpu_mut()?, v.cpu_mut()?);
        for (i, &(o, n, _)) in segments.iter().enumerate() {
            let s = AdamWSpec { lr: spec.lr * h[2 * i], weight_decay: h[2 * i + 1], ..*spec };
            let r = o..o + n;
            fast::adamw::adamw_step(&mut p[r.clone()], &g[r.clone()], &mut m[r.clone()], &mut v[r], &s);
        }
        Ok(())
    }

    fn copy_into(&self, src: &Storage, dst: &Storage, len: usize) -> Result<()> {
        if src.same_as(dst) {
            return Err(Error::Invalid("copy_into: source and destination are the same storage".into()));
        }
        let (src, mut dst) = (src.cpu()?, dst.cpu_mut()?);
        check_len("copy_into src", src.len(), len)?;
        check_len("copy_into dst", dst.len(), len)?;
        dst[..len].copy_from_slice(&src[..len]);
        Ok(())
    }
}

/// The message of the panic of `f`, if it panicked: for tests that a kernel refuses bad input.
#[cfg(test)]
pub(crate) fn panic_message(f: impl FnOnce()) -> Option<String> {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).err()?;
    let text =
        payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
    Some(text.unwrap_or_default())
}
