//! Finite-difference gradient checks: the judge of every backward rule.
//!
//! For `y = f(x_1, .., x_k)` we take a fixed random weighting `w` of the output and compare the
//! gradient that `backward` gives for `L = sum(w * y)` with central differences
//! `(L(x + eps e_j) - L(x - eps e_j)) / 2 eps`, summed in f64, element by element:
//! `|analytic - numeric| <= atol + rtol * |numeric|`.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tape::{self, no_grad};
use crate::tensor::Tensor;

/// A finite-difference gradient check: its step, tolerances and sampling (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// The finite-difference step.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f32,
    /// Relative tolerance, a multiple of the numeric gradient's magnitude.
    pub rtol: f32,
    /// Check at most this many elements per input (a seeded random subset beyond it).
    pub max_elements: usize,
    /// Seed of the output weighting and of the element subset.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck { eps: 1e-3, atol: 1e-3, rtol: 1e-3, max_elements: 96, seed: 12345 }
    }
}

/// `L = sum(w * y)` in f64 on the host.
fn weighted(y: &Tensor, w: &[f32]) -> Result<f64> {
    Ok(y.to_vec()?.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum())
}

impl GradCheck {
    /// Checks every input's gradient; the error message names the input, the element and both values.
    pub fn run(&self, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
        let dev: Device = inputs[0].device();
        let mut rng = Rng::new(self.seed);
        // Analytic gradients through the tape.
        let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach().with_grad()).collect();
        let y = f(&leaves)?;
        let w: Vec<f32> = (0..y.numel()).map(|_| rng.normal()).collect();
        let wt = Tensor::from_vec(w.clone(), y.shape(), &dev)?;
        let loss = y.mul(&wt)?.sum()?;
        tape::backward(&loss)?;
        for (i, leaf) in leaves.iter().enumerate() {
            let analytic = match leaf.grad() {
                Some(g) => g.to_vec()?,
                None => vec![0.0; leaf.numel()],
            };
            let base = inputs[i].to_vec()?;
            let mut elems: Vec<usize> = (0..base.len()).collect();
            if elems.len() > self.max_elements {
                rng.shuffle(&mut elems);
                elems.truncate(self.max_elements);
            }
            for &j in &elems {
                let eval = |delta: f32| -> Result<f64> {
                    no_grad(|| {
                        let mut v = base.clone();
                        v[j] += delta;
                        let xs: Vec<Tensor> = inputs
                            .iter()
                            .enumerate()
                            .map(
                                |(k, t)| {
                                    if k == i { Tensor::from_vec(v.clone(), t.shape(), &dev) } else { Ok(t.detach()) }
                                },
                            )
                            .collect::<Result<_>>()?;
                        weighted(&f(&xs)?, &w)
                    })
                };
                let numeric = (eval(self.eps)? - eval(-self.eps)?) / (2.0 * self.eps as f64);
                let a = analytic[j] as f64;
                if (a - numeric).abs() > self.atol as f64 + self.rtol as f64 * numeric.abs() {
                    return Err(Error::Invalid(format!(
                        "gradient mismatch: input {i} {:?}, element {j}: backward gives {a:.6e}, finite differences {numeric:.6e}",
                        inputs[i].shape()
                    )));
                }
            }
        }
        Ok(())
    }
}
