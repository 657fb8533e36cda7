//! The AdamW update, fused: one pass over parameter, gradient and both moments, vectorised and on
//! both cores for large tensors. Per element it evaluates the reference's expression in the same
//! order with the same f32 operations, so it gives the same bits as the reference.

use crate::backend::AdamWSpec;
use crate::cpu::parallel::{self, units};

use super::simd::{Isa, multiversion};

const CHUNK: usize = 8192;
/// Four streams read, three written, one division and one square root per value.
const NS_PER_VALUE: f64 = 1.5;

multiversion! {
    fn adamw_part<FMA>(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWSpec) {
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        let (b1, b2) = (s.beta1, s.beta2);
        let decay = 1.0 - s.lr * s.weight_decay;
        for i in 0..n {
            let gi = g[i] * s.grad_scale;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mhat = m[i] / s.bias_correction1;
            let denom = (v[i] / s.bias_correction2).sqrt() + s.eps;
            p[i] = p[i] * decay - s.lr * mhat / denom;
        }
    }
}

/// One AdamW step in place (see `AdamWSpec`).
pub fn adamw_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWSpec) {
    let n = p.len();
    assert!(g.len() >= n && m.len() >= n && v.len() >= n, "adamw_step: sizes");
    let isa = Isa::current();
    let outputs = (units(p, CHUNK), units(&mut m[..n], CHUNK), units(&mut v[..n], CHUNK));
    parallel::for_each_units(n.div_ceil(CHUNK), NS_PER_VALUE * CHUNK as f64, outputs, |range, (p, m, v)| {
        let start = range.start * CHUNK;
        adamw_part(isa, p.data, &g[start..start + p.data.len()], m.data, v.data, s)
    });
}
