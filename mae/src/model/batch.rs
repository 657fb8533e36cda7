//! From a batch of normalised images `[B, C, S, S]` (`data::loader::make_batch`) to the two patch
//! layouts the model takes (the embedding's `(c,i,j)` and the target's `(i,j,c)`), on the device.

use engine::{Device, Tensor};

use crate::error::Result;
use crate::model::config::ModelConfig;
use crate::model::patch::{patchify, patchify_embed_order};

/// `(patches [B, L, C*p*p], target [B, L, p*p*C])` on `device`.
pub fn model_inputs(cfg: &ModelConfig, images: &[f32], n: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let (c, s, p) = (cfg.in_chans, cfg.img_size, cfg.patch_size);
    let shape = [n, cfg.num_patches(), cfg.patch_dim()];
    let target = patchify(images, n, c, s, p);
    let patches = if c == 1 {
        // The two orders coincide for one channel: upload once.
        Tensor::from_slice(&target, &shape, device)?
    } else {
        Tensor::from_vec(patchify_embed_order(images, n, c, s, p), &shape, device)?
    };
    let target = if c == 1 { patches.detach() } else { Tensor::from_vec(target, &shape, device)? };
    Ok((patches, target))
}
