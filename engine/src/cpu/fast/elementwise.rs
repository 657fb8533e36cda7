//! Element-wise kernels: `binary` (with `y` repeating over `x`), `unary` (scale, add a scalar,
//! square, sqrt, GELU), GELU's backward, and `fill` and `copy`. Each is a map over contiguous slices, vectorised by
//! the compiler (see `simd.rs`), on both cores when the array is large (see `parallel.rs`).
//!
//! `binary` and the simple unary maps compute exactly what the reference computes (the same single
//! f32 operation per element), so they agree bit for bit; GELU uses `math.rs`.

use crate::backend::{BinaryOp, UnaryOp};
use crate::cpu::parallel::{self, Out};

use super::math;
use super::simd::{self, Isa, multiversion};

/// Values per unit of work handed to a thread.
const CHUNK: usize = 8192;
/// Estimated single-core cost per value (ns) of a memory-bound map over arrays that do not fit in
/// the cache (two or three 4-byte streams at ~10 GB/s), and of one that evaluates GELU.
const NS_MAP: f64 = 0.8;
const NS_GELU: f64 = 2.5;

/// Applies `f` element by element.
#[inline(always)]
fn map1(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

#[inline(always)]
fn map2(x: &[f32], y: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
        *o = f(a, b);
    }
}

#[inline(always)]
fn apply_binary(op: BinaryOp, x: &[f32], y: &[f32], out: &mut [f32]) {
    match op {
        BinaryOp::Add => map2(x, y, out, |a, b| a + b),
        BinaryOp::Sub => map2(x, y, out, |a, b| a - b),
        BinaryOp::Mul => map2(x, y, out, |a, b| a * b),
        BinaryOp::Div => map2(x, y, out, |a, b| a / b),
    }
}

#[inline(always)]
fn apply_scalar(op: BinaryOp, x: &[f32], s: f32, out: &mut [f32]) {
    match op {
        BinaryOp::Add => map1(x, out, |a| a + s),
        BinaryOp::Sub => map1(x, out, |a| a - s),
        BinaryOp::Mul => map1(x, out, |a| a * s),
        BinaryOp::Div => map1(x, out, |a| a / s),
    }
}

multiversion! {
    /// `out[i] = x[i] (op) y[(start + i) % y.len()]`: one chunk of `binary`, starting at value
    /// `start` of the whole array.
    fn binary_part<FMA>(op: BinaryOp, x: &[f32], y: &[f32], start: usize, out: &mut [f32]) {
        let ny = y.len();
        if ny == 1 {
            apply_scalar(op, x, y[0], out);
            return;
        }
        let (mut pos, mut phase) = (0, start % ny);
        while pos < out.len() {
            let len = (ny - phase).min(out.len() - pos);
            apply_binary(op, &x[pos..pos + len], &y[phase..phase + len], &mut out[pos..pos + len]);
            pos += len;
            phase = 0;
        }
    }
}

/// `out[i] = x[i] (op) y[i % y.len()]`, `out` as long as `x`.
pub fn binary<'a>(op: BinaryOp, x: &[f32], y: &[f32], out: impl Out<'a>) {
    assert!(out.len() == x.len() && (!y.is_empty() || x.is_empty()), "binary: sizes");
    let isa = Isa::current();
    parallel::for_each_chunk(out, CHUNK, NS_MAP * CHUNK as f64, |start, out| {
        binary_part(isa, op, &x[start..start + out.len()], y, start, out)
    });
}

multiversion! {
    fn unary_part<FMA>(op: UnaryOp, x: &[f32], out: &mut [f32]) {
        match op {
            UnaryOp::Scale(s) => map1(x, out, |v| s * v),
            UnaryOp::AddScalar(s) => map1(x, out, |v| v + s),
            UnaryOp::Square => map1(x, out, |v| v * v),
            UnaryOp::Sqrt => map1(x, out, |v| v.sqrt()),
            UnaryOp::Gelu => map1(x, out, math::gelu::<FMA>),
        }
    }
}

/// `out[i] = gelu(x[i])` on the calling thread, with `isa`: the fused matmul epilogue's GELU, the
/// same arithmetic as `unary`'s (so the fused and unfused pair agree bit for bit).
pub(crate) fn gelu_serial(isa: Isa, x: &[f32], out: &mut [f32]) {
    unary_part(isa, UnaryOp::Gelu, x, out)
}

/// `out[i] = op(x[i])`.
pub fn unary<'a>(op: UnaryOp, x: &[f32], out: impl Out<'a>) {
    assert_eq!(out.len(), x.len(), "unary: sizes");
    let isa = Isa::current();
    let ns = if op == UnaryOp::Gelu { NS_GELU } else { NS_MAP };
    parallel::for_each_chunk(out, CHUNK, ns * CHUNK as f64, |start, out| {
        unary_part(isa, op, &x[start..start + out.len()], out)
    });
}

multiversion! {
    fn gelu_backward_part<FMA>(x: &[f32], dy: &[f32], out: &mut [f32]) {
        map2(x, dy, out, |x, d| d * math::gelu_grad::<FMA>(x));
    }
}

/// `out[i] = dy[i] * gelu'(x[i])`.
pub fn gelu_backward<'a>(x: &[f32], dy: &[f32], out: impl Out<'a>) {
    assert!(out.len() == x.len() && dy.len() == x.len(), "gelu_backward: sizes");
    let isa = Isa::current();
    parallel::for_each_chunk(out, CHUNK, NS_GELU * CHUNK as f64, |start, out| {
        let end = start + out.len();
        gelu_backward_part(isa, &x[start..end], &dy[start..end], out)
    });
}

/// `out[i] = value`.
pub fn fill<'a>(value: f32, out: impl Out<'a>) {
    // Writing only: about half the cost per value of a map.
    parallel::for_each_chunk(out, CHUNK, 0.5 * NS_MAP * CHUNK as f64, |_, out| out.fill(value));
}

/// `out[i] = x[i]`.
pub fn copy<'a>(x: &[f32], out: impl Out<'a>) {
    assert_eq!(out.len(), x.len(), "copy: sizes");
    parallel::for_each_chunk(out, CHUNK, NS_MAP * CHUNK as f64, |start, out| simd::copy(&x[start..], out));
}
