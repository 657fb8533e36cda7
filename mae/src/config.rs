//! Model shapes: the paper's presets and small ones that train on two CPU cores. A configuration is
//! checked before any work, with a message that says what to change.

use crate::error::{Error, Result};

/// The shape of a masked autoencoder (the arguments of `MaskedAutoencoderViT` in the official code).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub decoder_embed_dim: usize,
    pub decoder_depth: usize,
    pub decoder_num_heads: usize,
    pub mlp_ratio: usize,
    pub norm_pix_loss: bool,
}

/// LayerNorm epsilon of every norm in the model (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LN_EPS: f32 = 1e-6;

impl ModelConfig {
    #[allow(clippy::too_many_arguments)]
    fn preset(
        name: &str,
        img_size: usize,
        patch_size: usize,
        in_chans: usize,
        (embed_dim, depth, num_heads): (usize, usize, usize),
        (decoder_embed_dim, decoder_depth, decoder_num_heads): (usize, usize, usize),
    ) -> Self {
        ModelConfig {
            name: name.to_string(),
            img_size,
            patch_size,
            in_chans,
            embed_dim,
            depth,
            num_heads,
            decoder_embed_dim,
            decoder_depth,
            decoder_num_heads,
            mlp_ratio: 4,
            norm_pix_loss: true,
        }
    }

    /// Every preset by name: the paper's ViT-B/L/H and two small ones.
    pub fn presets() -> Vec<ModelConfig> {
        vec![
            Self::preset("mae_vit_base_patch16", 224, 16, 3, (768, 12, 12), (512, 8, 16)),
            Self::preset("mae_vit_large_patch16", 224, 16, 3, (1024, 24, 16), (512, 8, 16)),
            Self::preset("mae_vit_huge_patch14", 224, 14, 3, (1280, 32, 16), (512, 8, 16)),
            // Fashion-MNIST: 28x28 grey, 49 patches of 4x4; 12 visible at 75% masking.
            Self::preset("mae_vit_micro_patch4_28", 28, 4, 1, (128, 6, 4), (64, 2, 4)),
            // The built-in images: 32x32 RGB, 64 patches of 4x4.
            Self::preset("mae_vit_micro_patch4_32", 32, 4, 3, (128, 6, 4), (64, 2, 4)),
            // A tiny model for tests and smoke runs.
            Self::preset("mae_vit_nano_patch4_16", 16, 4, 3, (32, 2, 2), (16, 1, 2)),
        ]
    }

    pub fn by_name(name: &str) -> Result<ModelConfig> {
        Self::presets().into_iter().find(|c| c.name == name).ok_or_else(|| {
            let names: Vec<String> = Self::presets().into_iter().map(|c| c.name).collect();
            Error::Config(format!("unknown model preset '{name}'; choose one of: {}", names.join(", ")))
        })
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// `L`, the number of patches.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Values per patch, `p * p * C`.
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.in_chans
    }

    /// Every impossible combination is refused here, before any work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.img_size == 0 || self.patch_size == 0 || self.in_chans == 0 {
            return bad("image size, patch size and channels must be positive".into());
        }
        if !self.img_size.is_multiple_of(self.patch_size) {
            return bad(format!(
                "patch size {} does not divide the image size {}; choose a patch size among {:?}",
                self.patch_size,
                self.img_size,
                (1..=self.img_size).filter(|&p| self.img_size.is_multiple_of(p)).collect::<Vec<_>>()
            ));
        }
        for (what, dim, heads, depth) in [
            ("encoder", self.embed_dim, self.num_heads, self.depth),
            ("decoder", self.decoder_embed_dim, self.decoder_num_heads, self.decoder_depth),
        ] {
            if dim == 0 || heads == 0 || depth == 0 {
                return bad(format!("the {what} needs a positive width, head count and depth"));
            }
            if dim % heads != 0 {
                return bad(format!(
                    "the {what}'s {heads} heads do not divide its width {dim}; use a head count that divides {dim}"
                ));
            }
            if dim % 4 != 0 {
                return bad(format!(
                    "the {what}'s width {dim} must be a multiple of 4 for the 2-D sin-cos position embedding"
                ));
            }
        }
        if self.norm_pix_loss && self.patch_dim() < 2 {
            return bad("norm-pix loss needs at least two values per patch".into());
        }
        if self.mlp_ratio == 0 {
            return bad("the MLP ratio must be positive".into());
        }
        Ok(())
    }

    /// Parameters that train (the fixed position tables excluded).
    pub fn num_params(&self) -> usize {
        let block = |d: usize| {
            4 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * (self.mlp_ratio * d * d) + self.mlp_ratio * d + d
        };
        let (d, dd) = (self.embed_dim, self.decoder_embed_dim);
        d * self.patch_dim()
            + d
            + d
            + self.depth * block(d)
            + 2 * d
            + (d * dd + dd)
            + dd
            + self.decoder_depth * block(dd)
            + 2 * dd
            + (dd * self.patch_dim() + self.patch_dim())
    }

    /// `key=value;...`, stored in checkpoint metadata.
    pub fn to_metadata(&self) -> String {
        format!(
            "name={};img_size={};patch_size={};in_chans={};embed_dim={};depth={};num_heads={};\
             decoder_embed_dim={};decoder_depth={};decoder_num_heads={};mlp_ratio={};norm_pix_loss={}",
            self.name,
            self.img_size,
            self.patch_size,
            self.in_chans,
            self.embed_dim,
            self.depth,
            self.num_heads,
            self.decoder_embed_dim,
            self.decoder_depth,
            self.decoder_num_heads,
            self.mlp_ratio,
            self.norm_pix_loss
        )
    }

    pub fn from_metadata(s: &str) -> Result<ModelConfig> {
        let mut c = ModelConfig::preset("", 0, 0, 0, (0, 0, 0), (0, 0, 0));
        for kv in s.split(';').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| Error::Config(format!("bad model entry '{kv}'")))?;
            let num = || v.parse::<usize>().map_err(|_| Error::Config(format!("bad number for {k}: '{v}'")));
            match k {
                "name" => c.name = v.to_string(),
                "img_size" => c.img_size = num()?,
                "patch_size" => c.patch_size = num()?,
                "in_chans" => c.in_chans = num()?,
                "embed_dim" => c.embed_dim = num()?,
                "depth" => c.depth = num()?,
                "num_heads" => c.num_heads = num()?,
                "decoder_embed_dim" => c.decoder_embed_dim = num()?,
                "decoder_depth" => c.decoder_depth = num()?,
                "decoder_num_heads" => c.decoder_num_heads = num()?,
                "mlp_ratio" => c.mlp_ratio = num()?,
                "norm_pix_loss" => c.norm_pix_loss = v == "true",
                _ => return Err(Error::Config(format!("unknown model entry '{k}'"))),
            }
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_metadata() {
        for c in ModelConfig::presets() {
            c.validate().unwrap();
            assert_eq!(ModelConfig::from_metadata(&c.to_metadata()).unwrap(), c);
        }
    }

    #[test]
    fn vit_base_has_the_official_parameter_count() {
        // The official mae_vit_base_patch16 holds 111,907,840 values: our trainable count plus the
        // two fixed sin-cos tables of (L + 1) rows.
        let c = ModelConfig::by_name("mae_vit_base_patch16").unwrap();
        let fixed = (c.num_patches() + 1) * (c.embed_dim + c.decoder_embed_dim);
        assert_eq!(c.num_params() + fixed, 111_907_840);
    }

    #[test]
    fn impossible_shapes_are_refused_with_what_to_change() {
        let mut c = ModelConfig::by_name("mae_vit_micro_patch4_28").unwrap();
        c.patch_size = 5;
        assert!(c.validate().unwrap_err().to_string().contains("does not divide the image size 28"));
        let mut c = ModelConfig::by_name("mae_vit_micro_patch4_28").unwrap();
        c.num_heads = 3;
        assert!(c.validate().unwrap_err().to_string().contains("heads do not divide"));
        assert!(ModelConfig::by_name("vit_giant").unwrap_err().to_string().contains("mae_vit_base_patch16"));
    }
}
