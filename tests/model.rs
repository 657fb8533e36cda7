//! The MAE model: official names and shapes, the encoder's view, gradients against finite
//! differences, and the same numbers on both devices.

use engine::gradcheck::GradCheck;
use engine::{Device, Rng, Tensor};
use mae::config::ModelConfig;
use mae::masking::{MaskStrategy, make_masking};
use mae::model::{DeviceMasking, MaskedAutoencoder};
use mae::patch::{patchify, patchify_embed_order};

fn tiny() -> ModelConfig {
    ModelConfig {
        name: "test_tiny".into(),
        img_size: 8,
        patch_size: 4,
        in_chans: 2,
        embed_dim: 8,
        depth: 1,
        num_heads: 2,
        decoder_embed_dim: 4,
        decoder_depth: 1,
        decoder_num_heads: 1,
        mlp_ratio: 2,
        norm_pix_loss: true,
    }
}

struct Batch {
    patches: Vec<f32>,
    target: Vec<f32>,
    masking: mae::masking::Masking,
}

fn batch(c: &ModelConfig, n: usize, ratio: f32, seed: u64) -> Batch {
    let mut rng = Rng::new(seed);
    let s = c.img_size;
    let images: Vec<f32> = (0..n * c.in_chans * s * s).map(|_| rng.normal()).collect();
    Batch {
        patches: patchify_embed_order(&images, n, c.in_chans, s, c.patch_size),
        target: patchify(&images, n, c.in_chans, s, c.patch_size),
        masking: make_masking(MaskStrategy::Random, n, c.grid_size(), ratio, &mut rng).unwrap(),
    }
}

fn loss_on(model: &MaskedAutoencoder, b: &Batch, dev: &Device) -> engine::Result<Tensor> {
    let c = &model.config;
    let n = b.masking.batch;
    let patches = Tensor::from_slice(&b.patches, &[n, c.num_patches(), c.patch_dim()], dev)?;
    let target = Tensor::from_slice(&b.target, &[n, c.num_patches(), c.patch_dim()], dev)?;
    let m = DeviceMasking::new(&b.masking, dev).unwrap();
    Ok(model.forward(&patches, &target, &m).unwrap().loss)
}

#[test]
fn the_state_dict_uses_the_official_names_and_layouts() {
    let c = ModelConfig::by_name("mae_vit_micro_patch4_28").unwrap();
    let m = MaskedAutoencoder::new(&c, 0, &Device::Cpu).unwrap();
    let sd = m.state_dict();
    let shape =
        |name: &str| sd.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{name}")).tensor.shape().to_vec();
    assert_eq!(shape("patch_embed.proj.weight"), vec![128, 1, 4, 4]);
    assert_eq!(shape("pos_embed"), vec![1, 50, 128]);
    assert_eq!(shape("blocks.5.attn.qkv.weight"), vec![384, 128]);
    assert_eq!(shape("blocks.0.mlp.fc1.weight"), vec![512, 128]);
    assert_eq!(shape("decoder_embed.weight"), vec![64, 128]);
    assert_eq!(shape("decoder_pred.weight"), vec![16, 64]);
    assert_eq!(shape("mask_token"), vec![1, 1, 64]);
    let trainable: usize = m.trainable().iter().map(|p| p.tensor.numel()).sum();
    assert_eq!(trainable, c.num_params());
    assert!(!sd.iter().find(|p| p.name == "pos_embed").unwrap().tensor.requires_grad(), "pos_embed is fixed");
}

#[test]
fn the_encoder_sees_only_the_visible_patches() {
    let c = ModelConfig::by_name("mae_vit_micro_patch4_28").unwrap();
    let m = MaskedAutoencoder::new(&c, 0, &Device::Cpu).unwrap();
    let b = batch(&c, 3, 0.75, 1);
    let patches = Tensor::from_slice(&b.patches, &[3, 49, 16], &Device::Cpu).unwrap();
    let dm = DeviceMasking::new(&b.masking, &Device::Cpu).unwrap();
    let latent = engine::no_grad(|| m.forward_encoder(&patches, &dm)).unwrap();
    assert_eq!(latent.shape(), &[3, 1 + 12, 128]);
    let pred = engine::no_grad(|| m.forward_decoder(&latent, &dm)).unwrap();
    assert_eq!(pred.shape(), &[3, 49, 16]);
}

#[test]
fn model_gradients_match_finite_differences() {
    let c = tiny();
    let dev = Device::Cpu;
    let template = MaskedAutoencoder::new(&c, 3, &dev).unwrap();
    let b = batch(&c, 2, 0.5, 4);
    let params: Vec<Tensor> = template.state_dict().iter().map(|p| p.tensor.detach()).collect();
    let check = GradCheck { max_elements: 6, ..Default::default() };
    check
        .run(&params, |ts| {
            let mut m = MaskedAutoencoder::new(&c, 3, &dev).unwrap();
            // The checker marks its leaves as requiring gradients; keep them all differentiable.
            let slots = m.tensors_mut();
            for (slot, t) in slots.into_iter().zip(ts) {
                *slot = t.clone();
            }
            loss_on(&m, &b, &dev)
        })
        .unwrap();
}

#[test]
#[cfg(feature = "gpu")]
fn the_model_gives_the_same_loss_and_gradients_on_cpu_and_gpu() {
    let Some(gpu) = engine::gpu::test_device() else { return };
    let c = ModelConfig { norm_pix_loss: true, ..ModelConfig::by_name("mae_vit_nano_patch4_16").unwrap() };
    let b = batch(&c, 4, 0.75, 5);
    let run = |dev: &Device| {
        let m = MaskedAutoencoder::new(&c, 6, dev).unwrap();
        let loss = loss_on(&m, &b, dev).unwrap();
        engine::backward(&loss).unwrap();
        let grads: Vec<(String, Vec<f32>)> =
            m.trainable().iter().map(|p| (p.name.clone(), p.tensor.grad().unwrap().to_vec().unwrap())).collect();
        (loss.item().unwrap(), grads)
    };
    let (cpu_loss, cpu_grads) = run(&Device::Cpu);
    let (gpu_loss, gpu_grads) = run(&gpu);
    assert!((cpu_loss - gpu_loss).abs() <= 1e-5 + 1e-4 * cpu_loss.abs(), "{cpu_loss} vs {gpu_loss}");
    for ((name, c), (_, g)) in cpu_grads.iter().zip(&gpu_grads) {
        let scale = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in c.iter().zip(g) {
            assert!((a - b).abs() <= 1e-4 * scale + 1e-6, "{name}: cpu {a} gpu {b} (max |grad| {scale})");
        }
    }
}

#[test]
fn a_plain_autoencoder_with_nothing_masked_has_a_finite_loss() {
    let c = tiny();
    let m = MaskedAutoencoder::new(&c, 0, &Device::Cpu).unwrap();
    let b = batch(&c, 2, 0.0, 7);
    let loss = loss_on(&m, &b, &Device::Cpu).unwrap().item().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    engine::tape::clear_tape();
}

#[test]
fn features_of_the_last_blocks_end_with_the_encoder_output() {
    let c = ModelConfig { depth: 3, ..tiny() };
    let model = MaskedAutoencoder::new(&c, 5, &Device::Cpu).unwrap();
    let b = batch(&c, 2, 0.0, 1);
    let patches = Tensor::from_slice(&b.patches, &[2, c.num_patches(), c.patch_dim()], &Device::Cpu).unwrap();
    let output = model.encode_all(&patches).unwrap().to_vec().unwrap();
    let blocks = model.encode_all_blocks(&patches, 3).unwrap();
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[2].to_vec().unwrap(), output, "the last is the normed output");
    assert_ne!(blocks[1].to_vec().unwrap(), output);
    for bad in [0, 4] {
        let e = model.encode_all_blocks(&patches, bad).unwrap_err().to_string();
        assert!(e.contains("use 1 to 3"), "{e}");
    }
}
