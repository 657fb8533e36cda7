//! What the encoder looks at: the cls token's attention over the patches, each head's softmax row,
//! read out of the very attention kernels that train (CPU reference, fast CPU, GPU) rather than a
//! second implementation.
//!
//! The attention op is fused: its forward keeps only each row's log-sum-exp, never the
//! probabilities. But its backward computes `dv_j = sum_i P_ij dout_i`; seeded with `dout` zero
//! except `dout[n, i = 0 (cls), head h, channel 0] = 1` for every head, the gradient of the v part
//! of `qkv` (viewed `[N, T, 3, H, hd]`) at `[n, j, 2, h, 0]` is exactly `P^h_{0j}`, the cls row of
//! head `h`'s softmax, recomputed by the backward kernel from the saved log-sum-exp.
//!
//! Shapes: `N` images, `H` heads, `L` patches, `T = 1 + L` tokens (cls first).

use engine::{Tensor, no_grad, ops, tape};

use crate::error::{Error, Result};
use crate::model::MaskedAutoencoder;

/// The cls token's attention row in one encoder block, for each image and head.
#[derive(Debug, Clone, PartialEq)]
pub struct ClsAttention {
    /// Images, `N`.
    pub batch: usize,
    /// Heads, `H`.
    pub heads: usize,
    /// Tokens, `T = 1 + L` (the cls token first, then the patches in raster order).
    pub tokens: usize,
    /// `[N, H, T]`: `weights[(n * H + h) * T + j]` is how much the cls query of head `h` takes
    /// from token `j` of image `n`; each `(n, h)` row sums to 1.
    pub weights: Vec<f32>,
}

impl ClsAttention {
    /// The whole softmax row of image `n`, head `h`: `T` values, the cls token's own first.
    pub fn row(&self, n: usize, h: usize) -> &[f32] {
        let start = (n * self.heads + h) * self.tokens;
        &self.weights[start..start + self.tokens]
    }

    /// What the cls query of head `h` takes from itself in image `n`.
    pub fn cls_to_cls(&self, n: usize, h: usize) -> f32 {
        self.row(n, h)[0]
    }

    /// The row over the patches only, `L` values in raster order (a `[grid, grid]` map).
    pub fn to_patches(&self, n: usize, h: usize) -> &[f32] {
        &self.row(n, h)[1..]
    }

    /// The heads' mean of `to_patches` for image `n`, `L` values.
    pub fn head_mean(&self, n: usize) -> Vec<f32> {
        let l = self.tokens - 1;
        let mut mean = vec![0f64; l];
        for h in 0..self.heads {
            for (m, &w) in mean.iter_mut().zip(self.to_patches(n, h)) {
                *m += w as f64;
            }
        }
        mean.into_iter().map(|m| (m / self.heads as f64) as f32).collect()
    }
}

/// The cls token's attention in the encoder's last block, the model on every patch (no masking).
/// `patches: [N, L, C*p*p]` in embedding order (`model::batch::model_inputs`).
pub fn cls_attention(model: &MaskedAutoencoder, patches: &Tensor) -> Result<ClsAttention> {
    cls_attention_in_block(model, patches, model.blocks.len().saturating_sub(1))
}

/// As `cls_attention`, in encoder block `block` (`0..depth`).
///
/// Runs one attention forward and backward on the tape, so it needs gradient recording on
/// (not inside `no_grad`) and an empty tape (nothing recorded that a later `backward` wants);
/// it leaves the tape empty and the model's parameters without gradients.
pub fn cls_attention_in_block(model: &MaskedAutoencoder, patches: &Tensor, block: usize) -> Result<ClsAttention> {
    if !tape::is_grad_enabled() {
        return Err(Error::Config(
            "cls_attention reads the attention from its backward pass: call it outside no_grad".into(),
        ));
    }
    if tape::tape_len() != 0 {
        return Err(Error::Config(format!(
            "cls_attention runs its own backward pass, which would consume the {} ops already on the \
             tape: run their backward (or engine::tape::clear_tape) first",
            tape::tape_len()
        )));
    }
    let normed = no_grad(|| model.encoder_block_normed_input(patches, block))?;
    let attn = &model.blocks[block];
    let heads = attn.num_heads;
    // `[N, T, 3D]`, a leaf of its own so that its gradient lands in `qkv.grad()` and nothing
    // flows further back into the model.
    let qkv = no_grad(|| attn.qkv.forward(&normed))?.detach().with_grad();
    let (n, t, d) = (qkv.dim(0), qkv.dim(1), qkv.dim(2) / 3);
    let head_dim = d / heads;
    let out = ops::attention_qkv(&qkv, heads)?;
    // `dout: [N, T, D]` (heads merged, `[N, T, H, hd]`): 1 at the cls query, channel 0 of each head.
    let mut seed = vec![0f32; n * t * d];
    for image in 0..n {
        for h in 0..heads {
            seed[image * t * d + h * head_dim] = 1.0;
        }
    }
    let seed = Tensor::from_vec(seed, &[n, t, d], &model.device)?;
    tape::backward_with(&out, &seed)?;
    let grad =
        qkv.grad().ok_or_else(|| Error::Config("the attention backward gave qkv no gradient".into()))?.to_vec()?;
    // dv at `[n, j, 2, h, 0]` of the `[N, T, 3, H, hd]` view.
    let mut weights = Vec::with_capacity(n * heads * t);
    for image in 0..n {
        for h in 0..heads {
            weights.extend((0..t).map(|j| grad[((image * t + j) * 3 + 2) * d + h * head_dim]));
        }
    }
    Ok(ClsAttention { batch: n, heads, tokens: t, weights })
}
