//! Model shapes: the paper's presets and small ones that train on two CPU cores. A configuration is
//! checked before any work, with a message that says what to change.

use crate::error::{Error, Result};

/// The shape of a masked autoencoder (the arguments of `MaskedAutoencoderViT` in the official code).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The preset's name (`mae_vit_base_patch16`...), or the user's own.
    pub name: String,
    /// Side of the square input image, in pixels.
    pub img_size: usize,
    /// Side of a square patch, in pixels; divides `img_size`.
    pub patch_size: usize,
    /// Input channels `C` (1 grey, 3 RGB).
    pub in_chans: usize,
    /// Encoder width `D`.
    pub embed_dim: usize,
    /// Transformer blocks in the encoder.
    pub depth: usize,
    /// Attention heads per encoder block; divides `embed_dim`.
    pub num_heads: usize,
    /// Decoder width `Dd`.
    pub decoder_embed_dim: usize,
    /// Transformer blocks in the decoder.
    pub decoder_depth: usize,
    /// Attention heads per decoder block; divides `decoder_embed_dim`.
    pub decoder_num_heads: usize,
    /// Hidden width of each MLP as a multiple of its block's width (4 in every preset).
    pub mlp_ratio: usize,
    /// Predict each patch normalised by its own mean and variance (on in every preset).
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

    /// The preset called `name`; the error lists every preset.
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

    /// The configuration as JSON (`{"name": ..., "img_size": 224, ...}`, the field names of this
    /// struct and of `models_mae.py`'s constructor), stored in checkpoint metadata.
    pub fn to_metadata(&self) -> String {
        serde_json::to_string(self).expect("a ModelConfig always serialises")
    }

    /// The inverse of [`ModelConfig::to_metadata`]; also reads the `key=value;...` text of
    /// checkpoints written before the JSON form, so that they still load.
    pub fn from_metadata(s: &str) -> Result<ModelConfig> {
        let c: ModelConfig = if s.trim_start().starts_with('{') {
            serde_json::from_str(s).map_err(|e| Error::Config(format!("the model configuration is unreadable: {e}")))?
        } else {
            use serde_json::Value;
            let mut map = serde_json::Map::new();
            for kv in s.split(';').filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| Error::Config(format!("bad model entry '{kv}'")))?;
                let value = match (v.parse::<u64>(), v) {
                    (Ok(n), _) => Value::from(n),
                    (_, "true" | "false") => Value::Bool(v == "true"),
                    _ => Value::String(v.to_string()),
                };
                map.insert(k.to_string(), value);
            }
            serde_json::from_value(Value::Object(map))
                .map_err(|e| Error::Config(format!("the model configuration is unreadable: {e}")))?
        };
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
    fn the_key_value_text_of_older_checkpoints_still_reads() {
        let old = "name=mae_vit_micro_patch4_28;img_size=28;patch_size=4;in_chans=1;embed_dim=128;depth=6;\
                   num_heads=4;decoder_embed_dim=64;decoder_depth=2;decoder_num_heads=4;mlp_ratio=4;norm_pix_loss=true";
        assert_eq!(ModelConfig::from_metadata(old).unwrap(), ModelConfig::by_name("mae_vit_micro_patch4_28").unwrap());
        let err = ModelConfig::from_metadata(r#"{"name": "x", "colour": 3}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
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
