//! `mae attention`: the cls token's attention maps read out of the training kernels' backward pass
//! agree with an explicit softmax, sum to 1, agree between the CPU and the GPU, and the command
//! writes both pictures at their documented sizes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use engine::{Device, Rng, Tensor, no_grad, tape};
use mae::MaskedAutoencoder;
use mae::checkpoint::save_model;
use mae::config::ModelConfig;
use mae::eval::attention_maps::{ClsAttention, cls_attention, cls_attention_in_block};
use mae::eval::attention_view::{PAD, RATIO_LABEL_WIDTH, tile_scale};
use mae::io::plot::{heat_color, heat_overlay};

const NANO: &str = "mae_vit_nano_patch4_16";

fn nano(seed: u64, dev: &Device) -> MaskedAutoencoder {
    MaskedAutoencoder::new(&ModelConfig::by_name(NANO).unwrap(), seed, dev).unwrap()
}

/// Patches `[n, L, P]` with values over a wide range (the LayerNorms bring them back).
fn random_patches(model: &MaskedAutoencoder, n: usize, seed: u64, dev: &Device) -> Tensor {
    let c = &model.config;
    let mut rng = Rng::new(seed);
    Tensor::normal(&[n, c.num_patches(), c.patch_dim()], 0.3, 3.0, &mut rng, dev).unwrap()
}

/// The oracle: `softmax(q_cls . k_j / sqrt(hd))` for every image and head, in f64, from the block's
/// q and k as the model's own qkv projection gives them.
fn explicit_cls_softmax(model: &MaskedAutoencoder, patches: &Tensor, block: usize) -> Vec<f64> {
    let qkv = no_grad(|| {
        let normed = model.encoder_block_normed_input(patches, block).unwrap();
        model.blocks[block].qkv.forward(&normed).unwrap()
    });
    let (n, t, d) = (qkv.dim(0), qkv.dim(1), qkv.dim(2) / 3);
    let heads = model.blocks[block].num_heads;
    let hd = d / heads;
    let v = qkv.to_vec().unwrap();
    // `[N, T, 3, H, hd]`
    let at = |image: usize, token: usize, part: usize, h: usize, c: usize| {
        v[((image * t + token) * 3 + part) * d + h * hd + c] as f64
    };
    let mut out = Vec::new();
    for image in 0..n {
        for h in 0..heads {
            let scores: Vec<f64> = (0..t)
                .map(|j| {
                    (0..hd).map(|c| at(image, 0, 0, h, c) * at(image, j, 1, h, c)).sum::<f64>() / (hd as f64).sqrt()
                })
                .collect();
            let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exp: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
            let total: f64 = exp.iter().sum();
            out.extend(exp.iter().map(|e| e / total));
        }
    }
    out
}

fn assert_rows_sum_to_one(maps: &ClsAttention) {
    for n in 0..maps.batch {
        for h in 0..maps.heads {
            let row = maps.row(n, h);
            assert!(row.iter().all(|w| w.is_finite() && *w >= 0.0), "image {n} head {h}: {row:?}");
            let total: f64 = row.iter().map(|&w| w as f64).sum();
            assert!((total - 1.0).abs() < 1e-5, "image {n} head {h} sums to {total}");
        }
    }
}

fn assert_close(got: &[f32], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= atol + rtol * w.abs(), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn cls_attention_from_the_backward_pass_matches_an_explicit_softmax_on_the_cpu() {
    let dev = Device::Cpu;
    let model = nano(3, &dev);
    let patches = random_patches(&model, 3, 7, &dev);
    let depth = model.blocks.len();
    for block in [0, depth - 1] {
        let maps = cls_attention_in_block(&model, &patches, block).unwrap();
        let c = &model.config;
        assert_eq!((maps.batch, maps.heads, maps.tokens), (3, c.num_heads, c.num_patches() + 1));
        assert_rows_sum_to_one(&maps);
        assert_close(&maps.weights, &explicit_cls_softmax(&model, &patches, block), 1e-6, 1e-4, "block {block}");
        // Not the uniform row a broken read-out could also sum to 1 with.
        let row = maps.row(0, 0);
        let spread = row.iter().fold(0f32, |a, &b| a.max(b)) - row.iter().fold(1f32, |a, &b| a.min(b));
        assert!(spread > 1e-3, "block {block}: a flat row {row:?}");
    }
    let last = cls_attention(&model, &patches).unwrap();
    assert_eq!(last, cls_attention_in_block(&model, &patches, depth - 1).unwrap());
    assert_eq!(last.to_patches(1, 1).len(), model.config.num_patches());
    assert_eq!(last.cls_to_cls(1, 1), last.row(1, 1)[0]);
    let mean = last.head_mean(2);
    let want: Vec<f64> =
        (0..mean.len()).map(|j| (0..last.heads).map(|h| last.to_patches(2, h)[j] as f64).sum::<f64>() / 2.0).collect();
    assert_close(&mean, &want, 1e-7, 1e-6, "head mean");
}

#[test]
fn the_last_block_reads_the_previous_blocks_output_normalised() {
    let dev = Device::Cpu;
    let model = nano(2, &dev);
    let patches = random_patches(&model, 2, 11, &dev);
    let last = model.blocks.len() - 1;
    let (fused, unfused) = no_grad(|| {
        let before_last = model.encode_all_blocks(&patches, 2).unwrap().remove(0);
        (
            model.encoder_block_normed_input(&patches, last).unwrap().to_vec().unwrap(),
            model.blocks[last].norm1.forward(&before_last).unwrap().to_vec().unwrap(),
        )
    });
    let unfused: Vec<f64> = unfused.iter().map(|&v| v as f64).collect();
    assert_close(&fused, &unfused, 1e-5, 1e-4, "norm1 input of the last block");
}

#[test]
fn reading_the_attention_leaves_the_tape_empty_and_the_parameters_without_gradients() {
    let dev = Device::Cpu;
    let model = nano(4, &dev);
    let patches = random_patches(&model, 2, 8, &dev);
    cls_attention(&model, &patches).unwrap();
    assert_eq!(tape::tape_len(), 0);
    assert!(model.trainable().iter().all(|p| p.tensor.grad().is_none()), "a parameter got a gradient");
}

#[test]
fn reading_the_attention_inside_no_grad_or_over_a_pending_tape_is_refused() {
    let dev = Device::Cpu;
    let model = nano(5, &dev);
    let patches = random_patches(&model, 1, 9, &dev);
    let err = no_grad(|| cls_attention(&model, &patches)).unwrap_err().to_string();
    assert!(err.contains("outside no_grad"), "{err}");
    let pending = model.cls_token.scale(2.0).unwrap();
    let err = cls_attention(&model, &patches).unwrap_err().to_string();
    assert!(err.contains("ops already on the tape"), "{err}");
    tape::clear_tape();
    drop(pending);
    let err = cls_attention_in_block(&model, &patches, 9).unwrap_err().to_string();
    assert!(err.contains("use 0 to 1"), "{err}");
}

#[cfg(feature = "gpu")]
#[test]
fn the_gpu_kernels_give_the_cpu_maps() {
    let Some(gpu) = engine::gpu::test_device() else { return };
    let cpu_model = nano(6, &Device::Cpu);
    let gpu_model = nano(6, &gpu);
    let cpu_maps = cls_attention(&cpu_model, &random_patches(&cpu_model, 3, 10, &Device::Cpu)).unwrap();
    let gpu_maps = cls_attention(&gpu_model, &random_patches(&gpu_model, 3, 10, &gpu)).unwrap();
    assert_rows_sum_to_one(&gpu_maps);
    let want: Vec<f64> = cpu_maps.weights.iter().map(|&w| w as f64).collect();
    assert_close(&gpu_maps.weights, &want, 1e-5, 1e-3, "gpu vs cpu");
    let oracle = explicit_cls_softmax(&gpu_model, &random_patches(&gpu_model, 3, 10, &gpu), 1);
    assert_close(&gpu_maps.weights, &oracle, 1e-5, 1e-3, "gpu vs explicit softmax");
}

#[test]
fn a_heat_overlay_colours_each_patch_by_its_own_value_over_the_grey_image() {
    let image = image::RgbImage::from_pixel(8, 4, image::Rgb([200, 100, 0]));
    // A 4 x 2 map: one hot cell (column 2, row 1), the rest equal.
    let mut map = vec![0.1f32; 8];
    map[4 + 2] = 0.9;
    let out = heat_overlay(&image, &map, 4, 2, 1.0);
    assert_eq!(out.dimensions(), (8, 4));
    for (x, y, p) in out.enumerate_pixels() {
        let hot = (x / 2, y / 2) == (2, 1);
        assert_eq!(p.0, heat_color(if hot { 1.0 } else { 0.0 }), "pixel ({x}, {y})");
    }
    let half = heat_overlay(&image, &map, 4, 2, 0.5);
    let grey = (0.299f32 * 200.0 + 0.587 * 100.0).round();
    let want = heat_color(0.0).map(|c| ((grey + c as f32) / 2.0).round() as u8);
    assert_eq!(half.get_pixel(0, 0).0, want);
    assert_ne!(heat_color(0.0), heat_color(0.5));
    assert_eq!(heat_color(f32::NAN), heat_color(0.0));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mae-attention-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A nano model's checkpoint that records built-in data, as `mae train` would.
fn checkpoint(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    let meta = BTreeMap::from([("mae.data".to_string(), "builtin:64".to_string())]);
    save_model(&path, &nano(seed, &Device::Cpu), &meta).unwrap();
    path
}

fn mae(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mae")).env("MAE_DEVICE", "cpu").args(args).output().unwrap()
}

#[test]
fn the_command_draws_two_checkpoints_side_by_side_at_the_documented_sizes() {
    let dir = scratch("cli");
    let (a, b) = (checkpoint(&dir, "masked", 1), checkpoint(&dir, "plain", 2));
    let out = dir.join("attn.png");
    let o = mae(&[
        "attention",
        "--checkpoint",
        a.to_str().unwrap(),
        "--checkpoint",
        b.to_str().unwrap(),
        "--images",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let c = ModelConfig::by_name(NANO).unwrap();
    let tile = c.img_size as u32 * tile_scale(c.img_size);
    let cell = tile + PAD;
    let title_band = 9 + PAD;
    let attn = image::open(&out).unwrap();
    // Per checkpoint: the image, each head, the mean.
    let cols = 2 * (c.num_heads as u32 + 2);
    assert_eq!((attn.width(), attn.height()), (PAD + cols * cell, PAD + title_band + 3 * cell));
    let recon = image::open(dir.join("attn_reconstructions.png")).unwrap();
    // The ratio, the original, the masked input, then per checkpoint its reconstruction twice.
    let (width, height) = (PAD + RATIO_LABEL_WIDTH + PAD + (2 + 2 * 2) * cell, PAD + title_band + 4 * cell);
    assert_eq!((recon.width(), recon.height()), (width, height));
    // The summary: a row per head and one for the mean, per checkpoint, all numbers finite.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| masked") || l.starts_with("| plain")).collect();
    assert_eq!(rows.len(), 2 * (c.num_heads + 1), "{stdout}");
    for row in rows {
        for cell in row.split('|').map(str::trim).filter(|s| !s.is_empty()).skip(2) {
            let v: f64 = cell.parse().unwrap_or_else(|_| panic!("{row}"));
            assert!(v.is_finite() && (0.0..=1.0).contains(&v), "{row}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_command_takes_labels_ratios_and_a_second_output_and_refuses_bad_ones_clearly() {
    let dir = scratch("flags");
    let a = checkpoint(&dir, "one", 3);
    let (out, recon_out) = (dir.join("a.png"), dir.join("r.png"));
    let o = mae(&[
        "attention",
        "--checkpoint",
        a.to_str().unwrap(),
        "--labels",
        "mine",
        "--images",
        "1",
        "--reconstruct-ratios",
        "0,0.5",
        "--reconstruct-image",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--recon-out",
        recon_out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("| mine | mean |"));
    let c = ModelConfig::by_name(NANO).unwrap();
    let cell = c.img_size as u32 * tile_scale(c.img_size) + PAD;
    let recon = image::open(&recon_out).unwrap();
    assert_eq!(recon.height(), PAD + 9 + PAD + 2 * cell);
    assert!(out.exists());
    for (args, hint) in [
        (vec!["--labels", "x,y"], "2 labels for 1 checkpoints"),
        (vec!["--reconstruct-ratios", "0.5,1.2"], "outside [0, 1)"),
        (vec!["--reconstruct-image", "100000"], "pick indices below"),
    ] {
        let mut full = vec!["attention", "--checkpoint", a.to_str().unwrap(), "--out", out.to_str().unwrap()];
        full.extend(args.iter().copied());
        let o = mae(&full);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(String::from_utf8_lossy(&o.stderr).contains(hint), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let _ = std::fs::remove_dir_all(dir);
}
