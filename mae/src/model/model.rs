//! `MaskedAutoencoderViT` of the official code (`models_mae.py`), on our engine.
//!
//! Shapes: images `[N, C, H, W]`; patches `[N, L, P]` (`P = p*p*C`); encoder width `D`, decoder
//! width `Dd`; `K = len_keep` visible patches.
//! ```text
//! patches (c,i,j order) [N, L, P] --patch_embed--> [N, L, D] + pos_embed[1:]
//!   --gather ids_keep--> [N, K, D] --prepend cls--> [N, 1+K, D] --blocks, norm--> latent
//! latent --decoder_embed--> [N, 1+K, Dd] --append mask tokens, gather ids_restore--> [N, 1+L, Dd]
//!   + decoder_pos_embed --decoder blocks, norm, pred--> [N, 1+L, P] --drop cls--> pred [N, L, P]
//! loss = mean over removed patches of the per-patch MSE against the (norm-pix) target, (i,j,c) order
//! ```
//! The encoder sees only the visible patches: that is where the paper's 3x speed-up comes from.
//! Each "gather, then put the cls (and mask) tokens in" is one gather here whose fill row is that
//! token (`ops::gather_rows_with_fill`); a test holds both to the official ops.

use engine::{Device, Indices, Rng, Tensor, ops};

use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::masking::Masking;
use crate::model::nn::{Block, LayerNorm, Linear, Param, expand, run_blocks};
use crate::model::pos_embed::sincos_2d;

/// The masked autoencoder: encoder, decoder and their parameters, under the official names.
pub struct MaskedAutoencoder {
    /// The shape it was built with.
    pub config: ModelConfig,
    /// Where its tensors live.
    pub device: Device,
    /// `patch_embed.proj`: weight `[D, C, p, p]` (a convolution in the official code), bias `[D]`.
    pub patch_embed_weight: Tensor,
    /// `patch_embed.proj.bias`, `[D]`.
    pub patch_embed_bias: Tensor,
    /// `[1, 1, D]`
    pub cls_token: Tensor,
    /// `[1, 1 + L, D]`, fixed sin-cos.
    pub pos_embed: Tensor,
    /// The encoder's transformer blocks, `blocks.{i}`.
    pub blocks: Vec<Block>,
    /// The encoder's final `norm`.
    pub norm: LayerNorm,
    /// `decoder_embed`: the latent `[N, 1+K, D]` to the decoder's width `[N, 1+K, Dd]`.
    pub decoder_embed: Linear,
    /// `[1, 1, Dd]`
    pub mask_token: Tensor,
    /// `[1, 1 + L, Dd]`, fixed sin-cos.
    pub decoder_pos_embed: Tensor,
    /// The decoder's transformer blocks, `decoder_blocks.{i}`.
    pub decoder_blocks: Vec<Block>,
    /// The decoder's final `decoder_norm`.
    pub decoder_norm: LayerNorm,
    /// `decoder_pred`: each token `[Dd]` to its patch's `P` values.
    pub decoder_pred: Linear,
}

/// What one forward pass gives.
pub struct Output {
    /// The loss, shape `[]`.
    pub loss: Tensor,
    /// `[N, L, P]` in the target's (i, j, c) order (normalised patches when `norm_pix_loss`).
    pub pred: Tensor,
}

/// The masks of a batch, on the device: the official `ids_keep` and `ids_restore` as the picks of
/// the two token gathers, and the mask.
pub struct DeviceMasking {
    /// `[N, 1 + K]`: the encoder's tokens as rows of the patch embeddings `[N, L, D]`, the cls
    /// token being the fill row `L`: `[L, ids_keep[n, :]]` (see `ops::gather_rows_with_fill`).
    pub encoder_picks: Indices,
    /// `[N, 1 + L]`: the decoder's tokens as rows of the embedded latent `[N, 1 + K, Dd]`, the mask
    /// token being the fill row `1 + K`: its cls token (row 0), then for each patch `l` in raster
    /// order `1 + ids_restore[n, l]` where that is a visible token's rank (`< K`), else `1 + K`.
    /// This is the official unshuffle of `[x[:, 1:] | mask tokens]` with the cls token put back.
    pub decoder_picks: Indices,
    /// `[N, L]`, 1 = removed.
    pub mask: Tensor,
    /// `K`, visible patches per sample.
    pub len_keep: usize,
}

impl DeviceMasking {
    /// Uploads the host masks `m` to `dev`.
    pub fn new(m: &Masking, dev: &Device) -> Result<Self> {
        let (n, l, k) = (m.batch, m.num_patches, m.len_keep);
        let ids_keep = m.ids_keep(); // [N, K]: the visible patches, in the order the encoder sees them
        let (mut encoder_picks, mut decoder_picks) = (Vec::with_capacity(n * (1 + k)), Vec::with_capacity(n * (1 + l)));
        for s in 0..n {
            encoder_picks.push(l as u32);
            encoder_picks.extend_from_slice(&ids_keep[s * k..(s + 1) * k]);
            decoder_picks.push(0);
            decoder_picks.extend(m.ids_restore[s * l..(s + 1) * l].iter().map(|&r| 1 + r.min(k as u32)));
        }
        Ok(DeviceMasking {
            encoder_picks: Indices::new(encoder_picks, &[n, 1 + k])?,
            decoder_picks: Indices::new(decoder_picks, &[n, 1 + l])?,
            mask: Tensor::from_slice(&m.mask, &[n, l], dev)?,
            len_keep: k,
        })
    }
}

impl MaskedAutoencoder {
    /// A freshly initialised model, as the official `initialize_weights`: xavier-uniform linears
    /// (the patch embedding as a linear over its `C*p*p` inputs) with zero biases, LayerNorms 1 and
    /// 0, cls and mask tokens normal(0, 0.02), fixed sin-cos position tables. The patch embedding's
    /// bias is a convolution bias that the official code leaves at PyTorch's default,
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; so is ours.
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let c = config;
        let dev = device;
        let mut rng = Rng::new(seed);
        let (d, dd, p) = (c.embed_dim, c.decoder_embed_dim, c.patch_size);
        let fan_in = c.in_chans * p * p;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let patch_embed_weight = Tensor::xavier_uniform(&[d, c.in_chans, p, p], &mut rng, dev)?.with_grad();
        let patch_embed_bias = Tensor::uniform(&[d], -bound, bound, &mut rng, dev)?.with_grad();
        let cls_token = Tensor::normal(&[1, 1, d], 0.0, 0.02, &mut rng, dev)?.with_grad();
        let l1 = c.num_patches() + 1;
        let pos_embed = Tensor::from_vec(sincos_2d(d, c.grid_size(), true), &[1, l1, d], dev)?;
        let blocks =
            (0..c.depth).map(|_| Block::new(d, c.num_heads, c.mlp_ratio, &mut rng, dev)).collect::<Result<_>>()?;
        let norm = LayerNorm::new(d, dev)?;
        let decoder_embed = Linear::new(d, dd, &mut rng, dev)?;
        let mask_token = Tensor::normal(&[1, 1, dd], 0.0, 0.02, &mut rng, dev)?.with_grad();
        let decoder_pos_embed = Tensor::from_vec(sincos_2d(dd, c.grid_size(), true), &[1, l1, dd], dev)?;
        let decoder_blocks = (0..c.decoder_depth)
            .map(|_| Block::new(dd, c.decoder_num_heads, c.mlp_ratio, &mut rng, dev))
            .collect::<Result<_>>()?;
        let decoder_norm = LayerNorm::new(dd, dev)?;
        let decoder_pred = Linear::new(dd, c.patch_dim(), &mut rng, dev)?;
        Ok(MaskedAutoencoder {
            config: c.clone(),
            device: dev.clone(),
            patch_embed_weight,
            patch_embed_bias,
            cls_token,
            pos_embed,
            blocks,
            norm,
            decoder_embed,
            mask_token,
            decoder_pos_embed,
            decoder_blocks,
            decoder_norm,
            decoder_pred,
        })
    }

    /// Every tensor of the state dict, under its official name, trainable or not.
    pub fn state_dict(&self) -> Vec<Param> {
        let mut out = Vec::new();
        let mut push = |name: &str, t: &Tensor| out.push(Param { name: name.to_string(), tensor: t.clone() });
        push("cls_token", &self.cls_token);
        push("pos_embed", &self.pos_embed);
        push("patch_embed.proj.weight", &self.patch_embed_weight);
        push("patch_embed.proj.bias", &self.patch_embed_bias);
        for (i, b) in self.blocks.iter().enumerate() {
            b.params(&format!("blocks.{i}"), &mut out);
        }
        self.norm.params("norm", &mut out);
        self.decoder_embed.params("decoder_embed", &mut out);
        out.push(Param { name: "mask_token".into(), tensor: self.mask_token.clone() });
        out.push(Param { name: "decoder_pos_embed".into(), tensor: self.decoder_pos_embed.clone() });
        for (i, b) in self.decoder_blocks.iter().enumerate() {
            b.params(&format!("decoder_blocks.{i}"), &mut out);
        }
        self.decoder_norm.params("decoder_norm", &mut out);
        self.decoder_pred.params("decoder_pred", &mut out);
        out
    }

    /// The tensors of `state_dict`, in the same order, to replace them (loading weights).
    pub fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v: Vec<&mut Tensor> =
            vec![&mut self.cls_token, &mut self.pos_embed, &mut self.patch_embed_weight, &mut self.patch_embed_bias];
        for b in &mut self.blocks {
            v.extend(b.tensors_mut());
        }
        v.extend(self.norm.tensors_mut());
        v.extend(self.decoder_embed.tensors_mut());
        v.push(&mut self.mask_token);
        v.push(&mut self.decoder_pos_embed);
        for b in &mut self.decoder_blocks {
            v.extend(b.tensors_mut());
        }
        v.extend(self.decoder_norm.tensors_mut());
        v.extend(self.decoder_pred.tensors_mut());
        v
    }

    /// Replace every state-dict tensor by `values` (same order, names and shapes as `state_dict`),
    /// keeping which ones train.
    pub fn set_state(&mut self, values: Vec<Tensor>) -> Result<()> {
        let names: Vec<String> = self.state_dict().into_iter().map(|p| p.name).collect();
        let slots = self.tensors_mut();
        if values.len() != slots.len() {
            return Err(Error::Config(format!("{} tensors for a state dict of {}", values.len(), slots.len())));
        }
        for ((slot, v), name) in slots.into_iter().zip(values).zip(names) {
            if v.shape() != slot.shape() {
                return Err(Error::Config(format!("{name}: shape {:?} where {:?} belongs", v.shape(), slot.shape())));
            }
            let train = slot.requires_grad();
            let v = v.to_device(&slot.device())?;
            v.set_requires_grad(train);
            *slot = v;
        }
        Ok(())
    }

    /// Move every state-dict tensor into one buffer on the model's device (`engine::packing`; a
    /// no-op on the CPU), so that the optimizer updates all of them with one kernel launch.
    pub fn pack(&mut self) -> Result<()> {
        let dev = self.cls_token.device();
        let tensors: Vec<Tensor> = self.state_dict().into_iter().map(|p| p.tensor).collect();
        let packed = engine::packing::pack(&tensors, &dev)?;
        self.set_state(packed)
    }

    /// The parameters the optimizer updates (the position tables are fixed).
    pub fn trainable(&self) -> Vec<Param> {
        self.state_dict().into_iter().filter(|p| p.tensor.requires_grad()).collect()
    }

    /// Only the encoder's parameters (for fine-tuning and feature extraction).
    pub fn encoder_trainable(&self) -> Vec<Param> {
        self.trainable().into_iter().filter(|p| !(p.name.starts_with("decoder") || p.name == "mask_token")).collect()
    }

    /// `patches: [N, L, C*p*p]` (embedding order) -> tokens `[N, L, D]` with position embeddings.
    fn embed(&self, patches: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (l, d) = (c.num_patches(), c.embed_dim);
        if patches.rank() != 3 || patches.dim(1) != l || patches.dim(2) != c.patch_dim() {
            return Err(Error::Config(format!(
                "the model {} expects patches [N, {l}, {}], got {:?}",
                c.name,
                c.patch_dim(),
                patches.shape()
            )));
        }
        let w = self.patch_embed_weight.reshape(&[d, c.patch_dim()])?;
        let x = ops::linear(patches, &w, Some(&self.patch_embed_bias))?;
        let pos = ops::slice_tokens(&self.pos_embed, 1, l)?.reshape(&[l, d])?;
        Ok(x.add(&pos)?)
    }

    /// Prepend `cls_token + pos_embed[:, :1]` and run the blocks (and the final norm).
    fn encode_tokens(&self, x: &Tensor, final_norm: bool) -> Result<Tensor> {
        let mut outputs = self.encode_tokens_keeping(x, 1, final_norm)?;
        Ok(outputs.pop().expect("one output"))
    }

    /// `cls_token + pos_embed[:, :1]`, `[1, 1, D]`: the token in front of the patches.
    fn cls_with_pos(&self) -> Result<Tensor> {
        Ok(self.cls_token.add(&ops::slice_tokens(&self.pos_embed, 0, 1)?)?)
    }

    /// `x: [N, K, D]` -> `[N, 1 + K, D]` with `cls_token + pos_embed[:, :1]` in front.
    fn prepend_cls(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::concat_tokens(&[&expand(&self.cls_with_pos()?, x.dim(0), 1)?, x])?)
    }

    /// As `encode_tokens`, returning the outputs of the last `keep` blocks, oldest first; the
    /// final norm, when asked, applies to the last one only (as in the model).
    fn encode_tokens_keeping(&self, x: &Tensor, keep: usize, final_norm: bool) -> Result<Vec<Tensor>> {
        self.run_encoder(self.prepend_cls(x)?, keep, final_norm)
    }

    /// The blocks on `x: [N, 1 + K, D]` (cls token in front), keeping the outputs of the last `keep`.
    fn run_encoder(&self, x: Tensor, keep: usize, final_norm: bool) -> Result<Vec<Tensor>> {
        let (mut outputs, normed) = run_blocks(&self.blocks, &x, final_norm.then_some(&self.norm))?;
        let last = match normed {
            Some(y) => y,
            None => outputs.pop().unwrap_or(x),
        };
        if final_norm {
            outputs.pop();
        }
        let mut kept: Vec<Tensor> = outputs.split_off(outputs.len().saturating_sub(keep.saturating_sub(1)));
        kept.push(last);
        Ok(kept)
    }

    /// `forward_encoder`: the visible patches only. Returns the latent `[N, 1 + K, D]`.
    pub fn forward_encoder(&self, patches: &Tensor, masking: &DeviceMasking) -> Result<Tensor> {
        let mut outputs = self.run_encoder(self.encoder_tokens(patches, masking)?, 1, true)?;
        Ok(outputs.pop().expect("one output"))
    }

    /// The encoder's input `[N, 1 + K, D]`: the cls token (with its position), then the visible
    /// patches' embeddings by `ids_keep`. The official gather and cat as one gather whose fill row
    /// is the cls token.
    fn encoder_tokens(&self, patches: &Tensor, masking: &DeviceMasking) -> Result<Tensor> {
        let cls = self.cls_with_pos()?.reshape(&[self.config.embed_dim])?;
        Ok(ops::gather_rows_with_fill(&self.embed(patches)?, &cls, &masking.encoder_picks)?)
    }

    /// The decoder's tokens `[N, 1 + L, Dd]` before their positions, from the embedded latent
    /// `x: [N, 1 + K, Dd]`: its cls token, then the patches in raster order, the visible ones
    /// from `x` and mask tokens in the removed places. The official cat of `x[:, 1:]` with the mask
    /// tokens, gather by `ids_restore` and cat behind `x[:, :1]`, as one gather whose fill row is
    /// the mask token. With nothing removed no pick is the fill's, and the mask token takes no
    /// part (nor gets a gradient), as there.
    fn decoder_tokens(&self, x: &Tensor, masking: &DeviceMasking) -> Result<Tensor> {
        if x.dim(1) - 1 < self.config.num_patches() {
            let mask_token = self.mask_token.reshape(&[self.config.decoder_embed_dim])?;
            Ok(ops::gather_rows_with_fill(x, &mask_token, &masking.decoder_picks)?)
        } else {
            Ok(ops::gather_rows(x, &masking.decoder_picks)?)
        }
    }

    /// The encoder on every patch, no masking (features for probes): `[N, 1 + L, D]`.
    pub fn encode_all(&self, patches: &Tensor) -> Result<Tensor> {
        self.encode_tokens(&self.embed(patches)?, true)
    }

    /// The encoder on every patch, no masking, keeping the outputs of its last `blocks` blocks
    /// (`1..=depth`; the last one after the final norm): `blocks` x `[N, 1 + L, D]`, oldest first.
    pub fn encode_all_blocks(&self, patches: &Tensor, blocks: usize) -> Result<Vec<Tensor>> {
        let depth = self.blocks.len();
        if blocks == 0 || blocks > depth {
            return Err(Error::Config(format!(
                "features from the last {blocks} blocks: the encoder has {depth}; use 1 to {depth}"
            )));
        }
        self.encode_tokens_keeping(&self.embed(patches)?, blocks, true)
    }

    /// The encoder on every patch, no masking, keeping every layer in one pass: the tokens that
    /// enter the first block (patch embedding + position, cls prepended: "block 0"), then each
    /// block's output, the last after the final norm: `depth + 1` x `[N, 1 + L, D]`.
    pub fn encode_all_layers(&self, patches: &Tensor) -> Result<Vec<Tensor>> {
        let x = self.prepend_cls(&self.embed(patches)?)?;
        let (mut outputs, normed) = run_blocks(&self.blocks, &x, Some(&self.norm))?;
        if let Some(last) = normed {
            outputs.pop();
            outputs.push(last);
        }
        outputs.insert(0, x);
        Ok(outputs)
    }

    /// What encoder block `block` (`0..depth`) reads on every patch, no masking: its input after
    /// its `norm1`, `[N, 1 + L, D]`, which its attention projects to q, k and v. Computed by the
    /// blocks before it with the fused residual-and-norm kernels of the forward pass, so it is the
    /// very tensor the full forward hands that block (attention maps read it).
    pub fn encoder_block_normed_input(&self, patches: &Tensor, block: usize) -> Result<Tensor> {
        let depth = self.blocks.len();
        if block >= depth {
            return Err(Error::Config(format!(
                "encoder block {block}: the encoder has {depth}; use 0 to {}",
                depth.saturating_sub(1)
            )));
        }
        let x = self.prepend_cls(&self.embed(patches)?)?;
        let (_, normed) = run_blocks(&self.blocks[..block], &x, Some(&self.blocks[block].norm1))?;
        Ok(normed.expect("run_blocks normalises its output when given a norm"))
    }

    /// The encoder on every patch without its final norm (fine-tuning with global pooling puts a
    /// norm after the pooling instead, as the official `models_vit.py` does).
    pub fn encode_all_unnormalized(&self, patches: &Tensor) -> Result<Tensor> {
        self.encode_tokens(&self.embed(patches)?, false)
    }

    /// `forward_decoder`: latent `[N, 1 + K, D]` -> predictions `[N, L, P]`.
    pub fn forward_decoder(&self, latent: &Tensor, masking: &DeviceMasking) -> Result<Tensor> {
        let c = &self.config;
        let (l, dd) = (c.num_patches(), c.decoder_embed_dim);
        let x = self.decoder_tokens(&self.decoder_embed.forward(latent)?, masking)?;
        let x = x.add(&self.decoder_pos_embed.reshape(&[l + 1, dd])?)?;
        let (_, normed) = run_blocks(&self.decoder_blocks, &x, Some(&self.decoder_norm))?;
        let pred = self.decoder_pred.forward(&normed.expect("a final norm"))?;
        Ok(ops::slice_tokens(&pred, 1, l)?)
    }

    /// The whole forward with the loss. `patches`: embedding order; `target`: `[N, L, P]` in the
    /// official patchify order. With nothing masked (ratio 0, a plain autoencoder) the loss is the
    /// mean over every patch instead of the empty masked set.
    pub fn forward(&self, patches: &Tensor, target: &Tensor, masking: &DeviceMasking) -> Result<Output> {
        let latent = self.forward_encoder(patches, masking)?;
        let pred = self.forward_decoder(&latent, masking)?;
        let everything;
        let mask = if masking.len_keep == self.config.num_patches() {
            everything = Tensor::ones(masking.mask.shape(), &self.device)?;
            &everything
        } else {
            &masking.mask
        };
        let loss = ops::mae_loss(&pred, target, mask, self.config.norm_pix_loss)?;
        Ok(Output { loss, pred })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::masking::{MaskStrategy, make_masking};

    fn tiny() -> ModelConfig {
        ModelConfig {
            name: "test_tiny".into(),
            img_size: 12,
            patch_size: 4,
            in_chans: 2,
            embed_dim: 8,
            depth: 1,
            num_heads: 2,
            decoder_embed_dim: 12,
            decoder_depth: 1,
            decoder_num_heads: 1,
            mlp_ratio: 2,
            norm_pix_loss: true,
        }
    }

    /// `models_mae.py`'s encoder input, op by op: gather by ids_keep, cat behind the cls token.
    fn official_encoder_tokens(m: &MaskedAutoencoder, patches: &Tensor, masking: &Masking) -> Tensor {
        let ids_keep = Indices::new(masking.ids_keep(), &[masking.batch, masking.len_keep]).unwrap();
        m.prepend_cls(&ops::gather_rows(&m.embed(patches).unwrap(), &ids_keep).unwrap()).unwrap()
    }

    /// `models_mae.py`'s decoder tokens, op by op: cat x[:, 1:] with the mask tokens, unshuffle by
    /// ids_restore, cat behind x[:, :1].
    fn official_decoder_tokens(m: &MaskedAutoencoder, x: &Tensor, masking: &Masking) -> Tensor {
        let (n, k1, l) = (x.dim(0), x.dim(1), m.config.num_patches());
        let visible = ops::slice_tokens(x, 1, k1 - 1).unwrap();
        let x_ = if k1 - 1 < l {
            ops::concat_tokens(&[&visible, &expand(&m.mask_token, n, l + 1 - k1).unwrap()]).unwrap()
        } else {
            visible
        };
        let ids_restore = Indices::new(masking.ids_restore.clone(), &[n, l]).unwrap();
        let x_ = ops::gather_rows(&x_, &ids_restore).unwrap();
        ops::concat_tokens(&[&ops::slice_tokens(x, 0, 1).unwrap(), &x_]).unwrap()
    }

    /// The output and the gradients of `params` under a fixed random weighting of it.
    fn run(out: &Tensor, params: &[&Tensor]) -> (Vec<f32>, Vec<Option<Vec<f32>>>) {
        let w = Tensor::normal(out.shape(), 0.0, 1.0, &mut Rng::new(3), &out.device()).unwrap();
        engine::backward(&out.mul(&w).unwrap().sum().unwrap()).unwrap();
        let grads = params.iter().map(|p| p.grad().map(|g| g.to_vec().unwrap())).collect();
        params.iter().for_each(|p| p.zero_grad());
        (out.to_vec().unwrap(), grads)
    }

    fn assert_grads_close(ours: &[Option<Vec<f32>>], official: &[Option<Vec<f32>>], what: &str) {
        for (i, (a, b)) in ours.iter().zip(official).enumerate() {
            let (Some(a), Some(b)) = (a, b) else {
                assert_eq!(a.is_some(), b.is_some(), "{what}: gradient {i} given on one side only");
                continue;
            };
            for (x, y) in a.iter().zip(b) {
                // Sums of the same terms in another order.
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{what}: gradient {i}: {x} against {y}");
            }
        }
    }

    #[test]
    fn token_sequences_are_the_official_ones_assembled_in_one_gather_each() {
        let c = tiny();
        let dev = Device::Cpu;
        let model = MaskedAutoencoder::new(&c, 1, &dev).unwrap();
        let mut rng = Rng::new(2);
        let (n, l) = (3, c.num_patches());
        // 0.95 keeps no patch at all (floor(9 x 0.05) = 0): the cls token alone.
        for ratio in [0.75, 0.4, 0.95, 0.0] {
            let masking = make_masking(MaskStrategy::Random, n, c.grid_size(), ratio, &mut rng).unwrap();
            let dm = DeviceMasking::new(&masking, &dev).unwrap();
            let k = dm.len_keep;
            let what = format!("ratio {ratio}");

            let patches = Tensor::normal(&[n, l, c.patch_dim()], 0.0, 1.0, &mut rng, &dev).unwrap().with_grad();
            let params = [&patches, &model.cls_token, &model.patch_embed_bias];
            let ours = run(&model.encoder_tokens(&patches, &dm).unwrap(), &params);
            let official = run(&official_encoder_tokens(&model, &patches, &masking), &params);
            assert_eq!(ours.0, official.0, "{what}: the encoder's tokens");
            assert_grads_close(&ours.1, &official.1, &format!("{what}, encoder"));

            let x = Tensor::normal(&[n, 1 + k, c.decoder_embed_dim], 0.0, 1.0, &mut rng, &dev).unwrap().with_grad();
            let params = [&x, &model.mask_token];
            let ours = run(&model.decoder_tokens(&x, &dm).unwrap(), &params);
            let official = run(&official_decoder_tokens(&model, &x, &masking), &params);
            assert_eq!(ours.0, official.0, "{what}: the decoder's tokens");
            assert_grads_close(&ours.1, &official.1, &format!("{what}, decoder"));
            assert_eq!(ours.1[1].is_some(), k < l, "{what}: the mask token's gradient where it is used");
        }
    }
}
