use crate::backend::{AxisSpec, MatmulSpec};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::tensor::{Tensor, numel};

use super::same_device;

/// `a · b` for `a: [.., m, k]` and `b: [k, n]` or `[.., k, n]`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_ex(a, b, None, false, false)
}

/// A linear layer with PyTorch's weight layout: `x: [.., in]`, `w: [out, in]`, `b: [out]`,
/// `y = x w^T + b`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    on_rows("linear", x, w, |x2| matmul_ex(x2, w, b, false, true))
}

/// `x: [.., in]` as the rows of `[N, in]`, through `f`, and the result's rows `[N, out]` back
/// into `[.., out]`: the shape handling of a linear layer with `w: [out, in]`.
fn on_rows(what: &str, x: &Tensor, w: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if x.rank() < 1 || w.rank() != 2 {
        return Err(Error::Shape(format!(
            "{what}: x {:?}, w {:?} (want [.., in] and [out, in])",
            x.shape(),
            w.shape()
        )));
    }
    let mut shape: Vec<usize> = x.shape()[..x.rank() - 1].to_vec();
    let y = f(&x.reshape(&[numel(&shape), x.dim(-1)])?)?;
    shape.push(w.dim(0));
    y.reshape(&shape)
}

/// `op(a) · op(b) + bias`, `op` a transpose of the last two axes where asked. Leading (batch) axes
/// must match, or one operand is a plain matrix shared over the other's batch.
pub fn matmul_ex(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    let (ins, spec, shape) = plan(a, b, bias, trans_a, trans_b)?;
    let dev = a.device();
    let c = dev.backend().matmul(a.storage(), b.storage(), bias.map(|t| t.storage()), &spec)?;
    let (sa, sb, sbias) = (a.clone(), b.clone(), bias.cloned());
    Ok(Tensor::from_op(c, shape, &ins, move |g| grads(&sa, &sb, &spec, sbias.as_ref(), g.storage())))
}

/// A linear layer followed by exact GELU, `gelu(x w^T + b)` (an MLP's `fc1` and `act`), as one
/// backend call (`Backend::matmul_gelu`, fused where the backend can): `x: [.., in]`, `w: [out, in]`.
/// The backward is GELU's (`dh = dy gelu'(h)`) then the linear layer's.
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    on_rows("linear_gelu", x, w, |x2| {
        let (ins, spec, shape) = plan(x2, w, b, false, true)?;
        let dev = x2.device();
        let (h, y) = dev.backend().matmul_gelu(x2.storage(), w.storage(), b.map(|t| t.storage()), &spec)?;
        let (sx, sw, sbias) = (x2.clone(), w.clone(), b.cloned());
        let n = spec.m * spec.n;
        Ok(Tensor::from_op(y, shape, &ins, move |g| {
            let dev = sx.device();
            let dh = dev.backend().gelu_backward(&h, g.storage(), n)?;
            grads(&sx, &sw, &spec, sbias.as_ref(), &dh)
        }))
    })
}

/// A ViT block's MLP, `fc2(gelu(fc1(x)))`: `x: [.., in]`, `w1: [hidden, in]`, `w2: [out, hidden]`
/// (PyTorch's layouts), biases `[hidden]` and `[out]`. The forward is `linear_gelu` then `linear`.
/// The backward carries fc2's input gradient through GELU in the product that makes it
/// (`Backend::matmul_gelu_backward`: on the GPU one dispatch and one pass over `[rows, hidden]`
/// fewer than the two ops would take), then takes both layers' weight and bias gradients as
/// `linear` does (into their gradient homes where an optimizer set them).
pub fn mlp(x: &Tensor, w1: &Tensor, b1: Option<&Tensor>, w2: &Tensor, b2: Option<&Tensor>) -> Result<Tensor> {
    on_rows("mlp", x, w2, |x2| {
        let (mut ins, spec1, hidden_shape) = plan(x2, w1, b1, false, true)?;
        let dev = x2.device();
        let be = dev.backend();
        let (h, act) = be.matmul_gelu(x2.storage(), w1.storage(), b1.map(|t| t.storage()), &spec1)?;
        // GELU's output, saved for fc2's weight gradient; no gradient flows through it on the tape.
        let act = Tensor::constant(act, hidden_shape);
        let (_, spec2, shape) = plan(&act, w2, b2, false, true)?;
        let y = be.matmul(act.storage(), w2.storage(), b2.map(|t| t.storage()), &spec2)?;
        ins.push(w2);
        ins.extend(b2);
        let (sx, sw1, sb1) = (x2.clone(), w1.clone(), b1.cloned());
        let (sw2, sb2) = (w2.clone(), b2.cloned());
        Ok(Tensor::from_op(y, shape, &ins, move |g| {
            let dev = sx.device();
            let fc2 = weight_grads(&act, &sw2, &spec2, sb2.as_ref(), g.storage())?;
            let dh = dev.backend().matmul_gelu_backward(g.storage(), sw2.storage(), &h, &input_grad_spec(&spec2))?;
            let mut grads = grads(&sx, &sw1, &spec1, sb1.as_ref(), &dh)?;
            grads.extend(fc2);
            Ok(grads)
        }))
    })
}

/// Checks the operands and says what product they make: the inputs (for the tape), the spec and the
/// result's shape.
fn plan<'t>(
    a: &'t Tensor,
    b: &'t Tensor,
    bias: Option<&'t Tensor>,
    trans_a: bool,
    trans_b: bool,
) -> Result<(Vec<&'t Tensor>, MatmulSpec, Vec<usize>)> {
    let mut ins = vec![a, b];
    if let Some(bias) = bias {
        ins.push(bias);
    }
    same_device("matmul", &ins)?;
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::Shape(format!("matmul: operands need rank >= 2, got {:?} and {:?}", a.shape(), b.shape())));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, ka) = if trans_a { (a.dim(-1), a.dim(-2)) } else { (a.dim(-2), a.dim(-1)) };
    let (kb, n) = if trans_b { (b.dim(-1), b.dim(-2)) } else { (b.dim(-2), b.dim(-1)) };
    if ka != kb {
        return Err(Error::Shape(format!(
            "matmul: inner sizes differ: {:?}{} x {:?}{}",
            a.shape(),
            if trans_a { "^T" } else { "" },
            b.shape(),
            if trans_b { "^T" } else { "" }
        )));
    }
    if let Some(bias) = bias
        && bias.shape() != [n]
    {
        return Err(Error::Shape(format!("matmul: bias {:?} does not match n = {n}", bias.shape())));
    }
    let a_batch = &a.shape()[..ra - 2];
    let b_batch = &b.shape()[..rb - 2];
    let (batch_shape, spec) = if rb == 2 && !trans_a {
        // A shared weight: fold a's batch into its rows, one big product.
        let rows = numel(a_batch) * m;
        (
            a_batch.to_vec(),
            MatmulSpec { batch: 1, m: rows, n, k: ka, trans_a, trans_b, a_batch_stride: 0, b_batch_stride: 0 },
        )
    } else if rb == 2 {
        let batch = numel(a_batch);
        (
            a_batch.to_vec(),
            MatmulSpec { batch, m, n, k: ka, trans_a, trans_b, a_batch_stride: m * ka, b_batch_stride: 0 },
        )
    } else if ra == 2 {
        let batch = numel(b_batch);
        (
            b_batch.to_vec(),
            MatmulSpec { batch, m, n, k: ka, trans_a, trans_b, a_batch_stride: 0, b_batch_stride: ka * n },
        )
    } else if a_batch == b_batch {
        let batch = numel(a_batch);
        (
            a_batch.to_vec(),
            MatmulSpec { batch, m, n, k: ka, trans_a, trans_b, a_batch_stride: m * ka, b_batch_stride: ka * n },
        )
    } else {
        return Err(Error::Shape(format!("matmul: batch axes differ: {:?} and {:?}", a.shape(), b.shape())));
    };
    let mut shape = batch_shape;
    shape.extend([m, n]);
    Ok((ins, spec, shape))
}

/// The gradients of `op(a) · op(b) (+ bias)` for the incoming gradient `dc` of the product: `[da,
/// db]` (each `None` where it needs none), then the bias's.
fn grads(sa: &Tensor, sb: &Tensor, s: &MatmulSpec, bias: Option<&Tensor>, dc: &Storage) -> Result<Vec<Option<Tensor>>> {
    let mut grads = vec![input_grad(sa, sb, s, dc)?];
    grads.extend(weight_grads(sa, sb, s, bias, dc)?);
    Ok(grads)
}

/// The product `dc · op(b)^T` that makes `a`'s gradient when `a` is not transposed: `[m, k]`.
fn input_grad_spec(s: &MatmulSpec) -> MatmulSpec {
    MatmulSpec {
        batch: s.batch,
        m: s.m,
        n: s.k,
        k: s.n,
        trans_a: false,
        trans_b: !s.trans_b,
        a_batch_stride: s.m * s.n,
        b_batch_stride: s.b_batch_stride,
    }
}

/// `da` of `grads` (`None` where `a` needs none).
fn input_grad(sa: &Tensor, sb: &Tensor, s: &MatmulSpec, dc: &Storage) -> Result<Option<Tensor>> {
    let s = *s;
    let dev = sa.device();
    let be = dev.backend();
    let da = if sa.requires_grad() {
        let st = if !s.trans_a {
            be.matmul(dc, sb.storage(), None, &input_grad_spec(&s))?
        } else {
            let sp = MatmulSpec {
                batch: s.batch,
                m: s.k,
                n: s.m,
                k: s.n,
                trans_a: s.trans_b,
                trans_b: true,
                a_batch_stride: s.b_batch_stride,
                b_batch_stride: s.m * s.n,
            };
            be.matmul(sb.storage(), dc, None, &sp)?
        };
        let st = if s.a_batch_stride == 0 && s.batch > 1 {
            be.sum_axis(&st, &AxisSpec { outer: 1, axis: s.batch, inner: s.m * s.k })?
        } else {
            st
        };
        Some(Tensor::constant(st, sa.shape().to_vec()))
    } else {
        None
    };
    Ok(da)
}

/// `[db]` of `grads` (`None` where `b` needs none), then the bias's when there is one.
fn weight_grads(
    sa: &Tensor,
    sb: &Tensor,
    s: &MatmulSpec,
    bias: Option<&Tensor>,
    dc: &Storage,
) -> Result<Vec<Option<Tensor>>> {
    let s = *s;
    let has_bias = bias.is_some();
    let dev = sa.device();
    let be = dev.backend();
    // A linear layer's bias gradient comes with its weight gradient (both from one read of dc).
    let mut bias_grad = None;
    let db = if sb.requires_grad() {
        let st = if !s.trans_b {
            let sp = MatmulSpec {
                batch: s.batch,
                m: s.k,
                n: s.n,
                k: s.m,
                trans_a: !s.trans_a,
                trans_b: false,
                a_batch_stride: s.a_batch_stride,
                b_batch_stride: s.m * s.n,
            };
            be.matmul(sa.storage(), dc, None, &sp)?
        } else {
            let sp = MatmulSpec {
                batch: s.batch,
                m: s.n,
                n: s.k,
                k: s.m,
                trans_a: true,
                trans_b: s.trans_a,
                a_batch_stride: s.m * s.n,
                b_batch_stride: s.a_batch_stride,
            };
            if let Some(bias) = bias.filter(|_| s.batch == 1) {
                // A linear layer: its weight's and bias's gradients may go straight to their
                // packed gradient ranges, when an optimizer set them as their homes.
                let homes = crate::tensor::take_grad_homes(sb, bias);
                let into = homes.as_ref().map(|[hw, hb]| [hw, hb]);
                let (dw, dbias) = be.matmul_with_a_sums(dc, sa.storage(), &sp, into)?;
                bias_grad = Some(dbias);
                dw
            } else {
                be.matmul(dc, sa.storage(), None, &sp)?
            }
        };
        let st = if s.b_batch_stride == 0 && s.batch > 1 {
            be.sum_axis(&st, &AxisSpec { outer: 1, axis: s.batch, inner: s.k * s.n })?
        } else {
            st
        };
        Some(Tensor::constant(st, sb.shape().to_vec()))
    } else {
        None
    };
    let mut grads = vec![db];
    if has_bias {
        let st = match bias_grad {
            Some(st) => st,
            None => be.sum_axis(dc, &AxisSpec { outer: 1, axis: s.batch * s.m, inner: s.n })?,
        };
        grads.push(Some(Tensor::constant(st, vec![s.n])));
    }
    Ok(grads)
}
