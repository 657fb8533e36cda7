//! The layers of a ViT, with the official parameter names: `Linear` (PyTorch's `[out, in]` weight),
//! `LayerNorm`, and the pre-norm transformer `Block` (timm's, as the official MAE uses it):
//! `x = x + proj(attn(norm1(x)))`, `x = x + fc2(gelu(fc1(norm2(x))))`, qkv with bias, exact GELU.

use engine::{Device, Rng, Tensor, ops};

use crate::error::Result;
use crate::model::config::LN_EPS;

/// A named parameter as the state dict holds it.
#[derive(Clone, Debug)]
pub struct Param {
    /// The official name, e.g. `blocks.0.attn.qkv.weight`.
    pub name: String,
    /// The tensor, shared with the model (not a copy).
    pub tensor: Tensor,
}

impl Param {
    /// Trainable parameters get weight decay unless they are biases or 1-D (timm's
    /// `add_weight_decay`, as `main_pretrain.py` uses it).
    pub fn decays(&self) -> bool {
        self.tensor.rank() > 1 && !self.name.ends_with(".bias")
    }
}

fn push(params: &mut Vec<Param>, name: String, t: &Tensor) {
    params.push(Param { name, tensor: t.clone() });
}

/// A fully connected layer, `y = x W^T + b`.
pub struct Linear {
    /// `[out, in]`
    pub weight: Tensor,
    /// `[out]`
    pub bias: Tensor,
}

impl Linear {
    /// Xavier-uniform weight, zero bias (`_init_weights` in the official code).
    pub fn new(inp: usize, out: usize, rng: &mut Rng, dev: &Device) -> Result<Linear> {
        Ok(Linear {
            weight: Tensor::xavier_uniform(&[out, inp], rng, dev)?.with_grad(),
            bias: Tensor::zeros(&[out], dev)?.with_grad(),
        })
    }

    /// `x: [.., in] -> [.., out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::linear(x, &self.weight, Some(&self.bias))?)
    }

    /// Appends `{prefix}.weight` and `{prefix}.bias` to `out`.
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        push(out, format!("{prefix}.weight"), &self.weight);
        push(out, format!("{prefix}.bias"), &self.bias);
    }

    /// Weight and bias, in the order of `params`.
    pub fn tensors_mut(&mut self) -> [&mut Tensor; 2] {
        [&mut self.weight, &mut self.bias]
    }
}

/// Layer normalisation over the last axis, with `eps = LN_EPS`.
pub struct LayerNorm {
    /// Scale `gamma`, `[dim]`.
    pub weight: Tensor,
    /// Shift `beta`, `[dim]`.
    pub bias: Tensor,
}

impl LayerNorm {
    /// Weight 1, bias 0, as PyTorch initialises it.
    pub fn new(dim: usize, dev: &Device) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: Tensor::ones(&[dim], dev)?.with_grad(), bias: Tensor::zeros(&[dim], dev)?.with_grad() })
    }

    /// `x: [.., dim] -> [.., dim]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::layer_norm(x, &self.weight, &self.bias, LN_EPS)?)
    }

    /// Appends `{prefix}.weight` and `{prefix}.bias` to `out`.
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        push(out, format!("{prefix}.weight"), &self.weight);
        push(out, format!("{prefix}.bias"), &self.bias);
    }

    /// Weight and bias, in the order of `params`.
    pub fn tensors_mut(&mut self) -> [&mut Tensor; 2] {
        [&mut self.weight, &mut self.bias]
    }
}

/// A pre-norm transformer block (timm's `Block`): attention, then the MLP, each with a residual.
pub struct Block {
    /// `norm1`, before the attention.
    pub norm1: LayerNorm,
    /// `attn.qkv`: `[3D, D]`, rows ordered q, k, v, each split into heads.
    pub qkv: Linear,
    /// `attn.proj`
    pub proj: Linear,
    /// `norm2`, before the MLP.
    pub norm2: LayerNorm,
    /// `mlp.fc1`: `[mlp_ratio * D, D]`.
    pub fc1: Linear,
    /// `mlp.fc2`: `[D, mlp_ratio * D]`.
    pub fc2: Linear,
    /// Attention heads; divides `D`.
    pub num_heads: usize,
}

impl Block {
    /// A block of width `dim` with an MLP of `mlp_ratio * dim` hidden units, initialised as
    /// `Linear::new` and `LayerNorm::new` do.
    pub fn new(dim: usize, num_heads: usize, mlp_ratio: usize, rng: &mut Rng, dev: &Device) -> Result<Block> {
        Ok(Block {
            norm1: LayerNorm::new(dim, dev)?,
            qkv: Linear::new(dim, 3 * dim, rng, dev)?,
            proj: Linear::new(dim, dim, rng, dev)?,
            norm2: LayerNorm::new(dim, dev)?,
            fc1: Linear::new(dim, mlp_ratio * dim, rng, dev)?,
            fc2: Linear::new(mlp_ratio * dim, dim, rng, dev)?,
            num_heads,
        })
    }

    /// Multi-head self-attention: `x: [N, T, D] -> [N, T, D]`. The fused projection's output
    /// `[N, T, 3D]` is read by the attention kernel as `[N, T, 3, H, hd]` (the official
    /// `reshape(B, N, 3, H, hd)`), which writes the heads merged, `[N, T, H * hd]`.
    pub fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        self.proj.forward(&ops::attention_qkv(&qkv, self.num_heads)?)
    }

    /// `x: [N, T, D] -> [N, T, D]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_chained(x, &self.norm1.forward(x)?, None)?.0)
    }

    /// The block on `x`, given `normed = norm1(x)` (which the block before computed with its last
    /// residual add). Each residual add is fused with the LayerNorm after it: the first with
    /// `norm2`, the last with `next` when given (the next block's `norm1` or the final norm), whose
    /// output comes back beside the block's.
    pub fn forward_chained(
        &self,
        x: &Tensor,
        normed: &Tensor,
        next: Option<&LayerNorm>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (x, normed2) =
            ops::add_layer_norm(x, &self.attention(normed)?, &self.norm2.weight, &self.norm2.bias, LN_EPS)?;
        // fc1 and GELU in one backend call, fc2 after it; in the backward GELU's derivative is
        // taken in the product that carries the gradient back through fc2 (fused where the
        // backend can).
        let mlp = ops::mlp(&normed2, &self.fc1.weight, Some(&self.fc1.bias), &self.fc2.weight, Some(&self.fc2.bias))?;
        match next {
            Some(n) => {
                let (x, y) = ops::add_layer_norm(&x, &mlp, &n.weight, &n.bias, LN_EPS)?;
                Ok((x, Some(y)))
            }
            None => Ok((x.add(&mlp)?, None)),
        }
    }

    /// Appends the block's parameters to `out` under `{prefix}.norm1.weight` and so on.
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        self.norm1.params(&format!("{prefix}.norm1"), out);
        self.qkv.params(&format!("{prefix}.attn.qkv"), out);
        self.proj.params(&format!("{prefix}.attn.proj"), out);
        self.norm2.params(&format!("{prefix}.norm2"), out);
        self.fc1.params(&format!("{prefix}.mlp.fc1"), out);
        self.fc2.params(&format!("{prefix}.mlp.fc2"), out);
    }

    /// The tensors of `params`, in the same order.
    pub fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = Vec::with_capacity(12);
        v.extend(self.norm1.tensors_mut());
        v.extend(self.qkv.tensors_mut());
        v.extend(self.proj.tensors_mut());
        v.extend(self.norm2.tensors_mut());
        v.extend(self.fc1.tensors_mut());
        v.extend(self.fc2.tensors_mut());
        v
    }
}

/// `blocks` in turn on `x`, then `final_norm` (when given) on the last output, each residual add
/// fused with the LayerNorm that follows it. Returns every block's output (`outputs[i]` after block
/// `i`) and the normalised last one.
pub fn run_blocks(
    blocks: &[Block],
    x: &Tensor,
    final_norm: Option<&LayerNorm>,
) -> Result<(Vec<Tensor>, Option<Tensor>)> {
    let Some(first) = blocks.first() else {
        return Ok((Vec::new(), final_norm.map(|n| n.forward(x)).transpose()?));
    };
    let mut outputs = Vec::with_capacity(blocks.len());
    let (mut x, mut normed) = (x.clone(), first.norm1.forward(x)?);
    for (i, b) in blocks.iter().enumerate() {
        let next = blocks.get(i + 1).map(|n| &n.norm1).or(final_norm);
        let (out, out_normed) = b.forward_chained(&x, &normed, next)?;
        outputs.push(out.clone());
        x = out;
        match out_normed {
            Some(y) if i + 1 < blocks.len() => normed = y,
            last => return Ok((outputs, last)),
        }
    }
    Ok((outputs, None))
}

/// `t: [1, 1, D]` or `[1, rows, D]` repeated to `[n, rows, D]` (gradients sum back into `t`):
/// `cls_token.expand(N, -1, -1)` and `mask_token.repeat(N, rows, 1)` of the official code.
pub fn expand(t: &Tensor, n: usize, rows: usize) -> Result<Tensor> {
    let d = t.dim(-1);
    // One pass writing the copies (its backward sums them): a [1, 1, D] token repeated n x rows
    // times, or a [1, rows, D] block n times.
    let repeated = if t.dim(1) == 1 {
        ops::broadcast_axis(&t.reshape(&[d])?, 0, n * rows)?
    } else {
        ops::broadcast_axis(&t.reshape(&[rows, d])?, 0, n)?
    };
    Ok(repeated.reshape(&[n, rows, d])?)
}
