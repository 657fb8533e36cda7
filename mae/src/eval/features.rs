//! Frozen-encoder features: the encoder on every patch of unaugmented images, no masking, in
//! no-grad mode; per image the cls token and the mean of the patch tokens (after the final norm,
//! as the official linear probe reads them). Optionally the same summary of each of the last few
//! blocks, concatenated (as iGPT and BEiT probe several layers): the encoder's last blocks serve
//! the pixel reconstruction when the decoder is small, so earlier ones can be more linear in the
//! classes.

use engine::{Tensor, no_grad, ops};

use crate::data::augment::Augment;
use crate::data::image_set::{ImageSet, Normalization};
use crate::data::loader::make_batch;
use crate::error::Result;
use crate::model::MaskedAutoencoder;
use crate::model::batch::model_inputs;

/// Which token summary to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The cls token.
    Cls,
    /// The mean of the patch tokens.
    Mean,
    /// `[cls | mean]`, twice the width.
    Both,
}

impl std::str::FromStr for Pool {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cls" => Ok(Pool::Cls),
            "mean" => Ok(Pool::Mean),
            "both" | "cls+mean" => Ok(Pool::Both),
            _ => Err(crate::Error::Config(format!("unknown pooling '{s}': use cls, mean or both"))),
        }
    }
}

impl Pool {
    /// Values per summary for tokens of width `dim`: `2 * dim` for `Both`.
    pub fn width(self, dim: usize) -> usize {
        if self == Pool::Both { 2 * dim } else { dim }
    }
}

/// What a feature vector is made of: a token summary of each of the encoder's last `blocks`
/// blocks (1: the encoder's output, the paper's probe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureSpec {
    /// The token summary of each block.
    pub pool: Pool,
    /// How many of the encoder's last blocks are summarised (1: its output).
    pub blocks: usize,
}

impl FeatureSpec {
    /// The paper's probe features: the summary of the encoder's output only.
    pub fn output(pool: Pool) -> Self {
        FeatureSpec { pool, blocks: 1 }
    }

    /// Values per feature vector for an encoder of width `dim`: the pool width times `blocks`.
    pub fn width(self, dim: usize) -> usize {
        self.pool.width(dim) * self.blocks
    }

    /// How many token summaries of the encoder's width a feature vector concatenates.
    pub fn parts(self) -> usize {
        self.pool.width(1) * self.blocks
    }
}

impl std::fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pool = match self.pool {
            Pool::Cls => "cls",
            Pool::Mean => "mean",
            Pool::Both => "cls+mean",
        };
        if self.blocks == 1 { write!(f, "{pool}") } else { write!(f, "{pool}, last {} blocks", self.blocks) }
    }
}

/// Features of the encoder's output `[N, 1 + L, D]`: `[N, width]`.
pub fn pool_tokens(tokens: &Tensor, pool: Pool) -> Result<Tensor> {
    let (n, t, d) = (tokens.dim(0), tokens.dim(1), tokens.dim(2));
    let cls = || -> Result<Tensor> { Ok(ops::slice_tokens(tokens, 0, 1)?.reshape(&[n, d])?) };
    let mean = || -> Result<Tensor> { Ok(ops::mean_axis(&ops::slice_tokens(tokens, 1, t - 1)?, 1)?) };
    Ok(match pool {
        Pool::Cls => cls()?,
        Pool::Mean => mean()?,
        Pool::Both => {
            let both = ops::concat_tokens(&[&cls()?.reshape(&[n, 1, d])?, &mean()?.reshape(&[n, 1, d])?])?;
            both.reshape(&[n, 2 * d])?
        }
    })
}

/// Features of every image of `set`, `[N, width]` row-major on the host.
pub fn extract(
    model: &MaskedAutoencoder,
    set: &ImageSet,
    norm: &Normalization,
    spec: FeatureSpec,
    batch: usize,
) -> Result<Vec<f32>> {
    let cfg = &model.config;
    let (n_blocks, width) = (spec.blocks, spec.pool.width(cfg.embed_dim));
    let mut out = Vec::with_capacity(set.len() * spec.width(cfg.embed_dim));
    let mut rng = engine::Rng::new(0);
    let all: Vec<usize> = (0..set.len()).collect();
    for chunk in all.chunks(batch.max(1)) {
        let (images, _) = make_batch(set, chunk, cfg.img_size, &Augment::none(), norm, &mut rng);
        let feats = no_grad(|| -> Result<Vec<Vec<f32>>> {
            let (patches, _) = model_inputs(cfg, &images, chunk.len(), &model.device)?;
            let outputs = model.encode_all_blocks(&patches, n_blocks)?;
            outputs.iter().map(|t| Ok(pool_tokens(t, spec.pool)?.to_vec()?)).collect::<Result<Vec<_>>>()
        })?;
        // Per image, the blocks side by side: [block 1 | block 2 | ...].
        for i in 0..chunk.len() {
            for f in &feats {
                out.extend_from_slice(&f[i * width..(i + 1) * width]);
            }
        }
    }
    Ok(out)
}

/// The `pool` summary of every layer of the encoder for every image of `set`, from one encoder
/// pass per batch ([`MaskedAutoencoder::encode_all_layers`]): `depth + 1` x `[N, pool width]`
/// row-major on the host, block 0 (the embedded patches) first, the output (after the final
/// norm, as [`extract`] gives it) last.
pub fn extract_every_layer(
    model: &MaskedAutoencoder,
    set: &ImageSet,
    norm: &Normalization,
    pool: Pool,
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let cfg = &model.config;
    let width = pool.width(cfg.embed_dim);
    let mut out = vec![Vec::with_capacity(set.len() * width); model.blocks.len() + 1];
    let mut rng = engine::Rng::new(0);
    let all: Vec<usize> = (0..set.len()).collect();
    for chunk in all.chunks(batch.max(1)) {
        let (images, _) = make_batch(set, chunk, cfg.img_size, &Augment::none(), norm, &mut rng);
        let feats = no_grad(|| -> Result<Vec<Vec<f32>>> {
            let (patches, _) = model_inputs(cfg, &images, chunk.len(), &model.device)?;
            let layers = model.encode_all_layers(&patches)?;
            layers.iter().map(|t| Ok(pool_tokens(t, pool)?.to_vec()?)).collect()
        })?;
        for (layer, f) in out.iter_mut().zip(feats) {
            layer.extend_from_slice(&f);
        }
    }
    Ok(out)
}
