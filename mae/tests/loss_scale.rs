//! Training with f16 products and a dynamic loss scale (`mae::train::loss_scale`): without the
//! scale the MAE's tiny gradients underflow in f16; with it they reach the optimizer unscaled and
//! whole, an overflow skips the update and backs the scale off, and a resumed run keeps its scale.

use std::path::PathBuf;

use engine::cpu::matmul::{Precision, PrecisionScope};
use engine::{Device, Tensor};
use mae::MaskedAutoencoder;
use mae::checkpoint::{CheckpointDir, TRAIN_STATE_FILE, read_checkpoint_metadata};
use mae::config::ModelConfig;
use mae::data::Split;
use mae::data::augment::Augment;
use mae::data::loader::make_batch;
use mae::io::safetensors::{read_safetensors, write_safetensors};
use mae::masking::{MaskStrategy, make_masking};
use mae::model::DeviceMasking;
use mae::nn::Param;
use mae::optim::{AdamW, AdamWConfig};
use mae::source::DataSource;
use mae::train::loss_scale::{INITIAL_SCALE, LossScaler};
use mae::train::{Budget, StepReport, TrainOptions, Trainer, train};

const PRESET: &str = "mae_vit_nano_patch4_16";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mae-loss-scale-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The small run of `tests/training.rs`: the nano preset on 512 built-in images, batch 32.
fn options(out: PathBuf, steps: u64, precision: Precision) -> TrainOptions {
    let mut o = TrainOptions::new(ModelConfig::by_name(PRESET).unwrap(), DataSource::Builtin { count: 512 }, out);
    o.budget = Budget { steps: Some(steps), ..Default::default() };
    o.batch_size = 32;
    o.base_lr = 1e-2;
    o.warmup_fraction = 0.1;
    o.verbose = false;
    o.pictures = false;
    o.matmul_precision = precision;
    o
}

fn values(params: &[Param]) -> Vec<Vec<f32>> {
    params.iter().map(|p| p.tensor.to_vec().unwrap()).collect()
}

fn first_moments(t: &Trainer) -> Vec<f32> {
    t.optimizer().moments.iter().flat_map(|m| m.m.to_vec().unwrap()).collect()
}

/// `|a - b| / |b|` over all values.
fn relative_distance(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

fn run_steps(t: &mut Trainer, n: usize) -> Vec<StepReport> {
    (0..n).map(|_| t.step().unwrap()).collect()
}

#[test]
fn an_f16_step_reaches_the_optimizer_unscaled_close_to_the_f32_step_but_not_equal() {
    let (a, b) = (scratch("unscaled-f16"), scratch("unscaled-f32"));
    let mut f16 = Trainer::new(&options(a.clone(), 5, Precision::F16), &Device::Cpu).unwrap();
    let mut f32 = Trainer::new(&options(b.clone(), 5, Precision::F32), &Device::Cpu).unwrap();
    let before = values(&f16.model().trainable());
    let (r16, r32) = (f16.step().unwrap(), f32.step().unwrap());
    assert_eq!((r16.loss_scale, r16.skipped), (INITIAL_SCALE, false));
    assert_eq!((r32.loss_scale, r32.skipped), (1.0, false));
    // AdamW's first moment after one step is (1 - beta1) * grad * grad_scale: were the gradients
    // left scaled, it would be 65536 times the f32 one.
    let (m16, m32) = (first_moments(&f16), first_moments(&f32));
    let moments_apart = relative_distance(&m16, &m32);
    assert!(moments_apart < 0.005, "first moments {moments_apart:.2e} apart");
    assert_ne!(m16, m32, "the f16 step must have rounded its products");
    // A few steps more (the first had learning rate 0, at the start of the warmup): finite losses
    // near f32's, parameters moved alike, every update applied, the scale unchanged.
    let l16: Vec<f32> = run_steps(&mut f16, 4).iter().map(|r| r.loss).collect();
    let l32: Vec<f32> = run_steps(&mut f32, 4).iter().map(|r| r.loss).collect();
    for (x, y) in l16.iter().zip(&l32) {
        assert!(x.is_finite() && (x - y).abs() <= 0.02 * y.abs(), "f16 losses {l16:?}, f32 losses {l32:?}");
    }
    let moved = |t: &Trainer| -> Vec<f32> {
        let after = values(&t.model().trainable());
        after.iter().zip(&before).flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y)).collect()
    };
    let updates_apart = relative_distance(&moved(&f16), &moved(&f32));
    eprintln!(
        "f16 against f32: first moments of step 1 {moments_apart:.2e} apart, updates of 5 steps {updates_apart:.2e}"
    );
    assert!(updates_apart < 0.01, "updates {updates_apart:.2e} apart");
    assert_eq!(
        (f16.optimizer().step, f16.loss_scaler().skipped_steps(), f16.loss_scaler().scale()),
        (5, 0, INITIAL_SCALE)
    );
    std::fs::remove_dir_all(a).unwrap();
    std::fs::remove_dir_all(b).unwrap();
}

/// The gradients of one batch's loss with `scaler`'s backward at `precision`, unscaled.
fn gradients(batch: usize, precision: Precision, scaler: &LossScaler) -> Vec<f32> {
    let cfg = ModelConfig::by_name(PRESET).unwrap();
    let data = DataSource::Builtin { count: batch };
    let set = data.load(Split::Train, &cfg, 0).unwrap();
    let model = MaskedAutoencoder::new(&cfg, 0, &Device::Cpu).unwrap();
    let mut rng = engine::Rng::new(7);
    let idx: Vec<usize> = (0..batch).collect();
    let (images, _) = make_batch(&set, &idx, cfg.img_size, &Augment::none(), &data.normalization(&set), &mut rng);
    let (patches, target) = mae::batch::model_inputs(&cfg, &images, idx.len(), &Device::Cpu).unwrap();
    let masking = make_masking(MaskStrategy::Random, idx.len(), cfg.grid_size(), 0.75, &mut rng).unwrap();
    let dm = DeviceMasking::new(&masking, &Device::Cpu).unwrap();
    let _precision = PrecisionScope::set(precision);
    let out = model.forward(&patches, &target, &dm).unwrap();
    scaler.backward(&out.loss).unwrap();
    let unscale = scaler.unscale(1.0);
    model.trainable().iter().flat_map(|p| p.tensor.grad().unwrap().to_vec().unwrap()).map(|g| g * unscale).collect()
}

#[test]
fn without_the_scale_f16_products_lose_the_small_gradients_and_with_it_they_keep_them() {
    // The loss's gradient is 2 (pred - target) / (N * masked patches * patch values) an element:
    // at batch 4096 the nano model's is about 3e-6, in f16's subnormals (below 2^-14 = 6.1e-5,
    // spaced 2^-24 = 6e-8), as ViT-Base's is at the paper's 64 images a GPU (7M elements). The
    // parameters' gradients, sums over the batch, are never exactly zero; what underflow does to
    // them is to lose their small terms, which puts many of them off by more than 10%.
    let batch = 4096;
    let exact = gradients(batch, Precision::F32, &LossScaler::disabled());
    let unscaled = gradients(batch, Precision::F16, &LossScaler::new(1.0).unwrap());
    let scaled = gradients(batch, Precision::F16, &LossScaler::new(INITIAL_SCALE).unwrap());
    let off = |g: &[f32]| g.iter().zip(&exact).filter(|(a, b)| (*a - *b).abs() > 0.1 * b.abs()).count();
    let (off_unscaled, off_scaled) = (off(&unscaled), off(&scaled));
    let (e_unscaled, e_scaled) = (relative_distance(&unscaled, &exact), relative_distance(&scaled, &exact));
    eprintln!(
        "of {} gradient values, off f32's by more than 10%: {off_unscaled} at f16 unscaled, {off_scaled} at f16 \
         scaled by 2^16; distance to f32: unscaled {e_unscaled:.2e}, scaled {e_scaled:.2e}",
        exact.len()
    );
    assert!(off_unscaled > exact.len() / 20, "unscaled, underflow spoils many gradient values");
    assert!(off_scaled * 5 < off_unscaled, "scaled, few values are far off (those near zero)");
    assert!(e_scaled * 2.0 < e_unscaled, "the scale keeps the gradients closer to f32's");
    assert!(e_scaled < 1e-3, "scaled f16 gradients are f32's within f16 rounding");
}

#[test]
fn a_huge_initial_scale_skips_the_first_updates_backs_off_and_training_recovers() {
    let out = scratch("overflow");
    let mut o = options(out.clone(), 40, Precision::F16);
    o.initial_loss_scale = 2f32.powi(40);
    let mut t = Trainer::new(&o, &Device::Cpu).unwrap();
    let before = values(&t.model().trainable());
    let first = t.step().unwrap();
    assert!(first.skipped, "2^40 times the gradients overflows f16's 65504");
    assert_eq!(values(&t.model().trainable()), before, "a skipped step changes no parameter");
    assert_eq!((t.optimizer().step, t.loss_scaler().scale()), (0, 2f32.powi(39)));
    let mut reports = vec![first];
    reports.extend(run_steps(&mut t, 39));
    let skipped = reports.iter().filter(|r| r.skipped).count();
    let applied = reports.len() - skipped;
    // The scale halves once per skip until the gradients fit, then holds (40 steps < 2000).
    assert!(reports[..skipped].iter().all(|r| r.skipped), "the skips come first");
    eprintln!("from 2^40: {skipped} of 40 steps skipped, scale now 2^{}", 40 - skipped);
    assert!(applied >= 10, "{skipped} of 40 steps skipped");
    assert_eq!(t.loss_scaler().scale(), 2f32.powi(40 - skipped as i32));
    assert_eq!(t.optimizer().step, applied as u64, "AdamW's t counts applied updates only");
    assert!(reports.iter().all(|r| r.loss.is_finite()));
    let last = reports[reports.len() - 5..].iter().map(|r| r.loss).sum::<f32>() / 5.0;
    assert!(last < 0.9 * reports[0].loss, "training recovered: loss {} -> {last}", reports[0].loss);
    let report = t.finish().unwrap();
    assert_eq!((report.skipped_steps, report.steps), (skipped as u64, 40));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_resumed_f16_run_restores_its_loss_scale_and_continues_exactly() {
    let (whole, split) = (scratch("resume-whole"), scratch("resume-split"));
    // A scale that backs off in the first steps, so that it has moved when the run is stopped.
    let mut o = options(whole.clone(), 8, Precision::F16);
    o.initial_loss_scale = 2f32.powi(36);
    let uninterrupted = train(&o, &Device::Cpu, None).unwrap();
    assert!(uninterrupted.skipped_steps >= 2, "{} skipped", uninterrupted.skipped_steps);

    let mut first = options(split.clone(), 8, Precision::F16);
    first.initial_loss_scale = o.initial_loss_scale;
    first.stop_after_steps = Some(2);
    assert!(matches!(train(&first, &Device::Cpu, None), Err(mae::Error::Interrupted)));
    let state_file = CheckpointDir::new(&split).latest().unwrap().join(TRAIN_STATE_FILE);
    let meta = read_checkpoint_metadata(&state_file).unwrap();
    assert_eq!(meta.get("mae.loss_scale").map(String::as_str), Some(&*2f32.powi(34).to_string()));
    assert_eq!(meta.get("mae.loss_scale_skipped_steps").map(String::as_str), Some("2"));

    let mut second = first.clone();
    (second.stop_after_steps, second.resume) = (None, true);
    let t = Trainer::new(&second, &Device::Cpu).unwrap();
    assert_eq!((t.loss_scaler().scale(), t.loss_scaler().skipped_steps()), (2f32.powi(34), 2));
    drop(t);
    let resumed = train(&second, &Device::Cpu, None).unwrap();
    let losses = |r: &mae::train::TrainReport| r.losses.iter().map(|l| l.1).collect::<Vec<_>>();
    assert_eq!(losses(&resumed), losses(&uninterrupted)[2..], "bit-exact continuation");
    assert_eq!((resumed.skipped_steps, resumed.loss_scale), (uninterrupted.skipped_steps, uninterrupted.loss_scale));
    std::fs::remove_dir_all(whole).unwrap();
    std::fs::remove_dir_all(split).unwrap();
}

#[test]
fn a_checkpoint_without_a_loss_scale_resumes_at_f16_with_the_initial_scale() {
    let out = scratch("old-checkpoint");
    let mut o = options(out.clone(), 2, Precision::F16);
    o.initial_loss_scale = 2f32.powi(36);
    train(&o, &Device::Cpu, None).unwrap();
    // What a checkpoint from before loss scaling holds: the same state without the scaler's keys.
    let state_file = CheckpointDir::new(&out).latest().unwrap().join(TRAIN_STATE_FILE);
    let (tensors, mut meta) = read_safetensors(&state_file).unwrap();
    meta.retain(|k, _| !k.starts_with("mae.loss_scale"));
    write_safetensors(&state_file, &tensors, &meta).unwrap();
    (o.resume, o.budget.steps, o.initial_loss_scale) = (true, Some(3), INITIAL_SCALE);
    let t = Trainer::new(&o, &Device::Cpu).unwrap();
    assert_eq!((t.loss_scaler().scale(), t.loss_scaler().skipped_steps()), (INITIAL_SCALE, 0));
    std::fs::remove_dir_all(out).unwrap();
}

/// Two parameters (a weight that decays, a bias) on `device`, packed as the trainer leaves them.
fn two_params(device: &Device) -> Vec<Param> {
    let w = Tensor::from_slice(&[0.5, -1.0, 2.0, 0.25, 1.5, -0.75], &[2, 3], device).unwrap();
    let b = Tensor::from_slice(&[0.1, -0.2], &[2], device).unwrap();
    w.set_requires_grad(true);
    b.set_requires_grad(true);
    let packed = engine::packing::pack(&[w, b], device).unwrap();
    ["w.weight", "w.bias"].iter().zip(packed).map(|(name, t)| Param { name: name.to_string(), tensor: t }).collect()
}

fn set_grads(params: &[Param], grads: [&[f32]; 2]) {
    for (p, g) in params.iter().zip(grads) {
        let g = Tensor::from_slice(g, p.tensor.shape(), &p.tensor.device()).unwrap();
        engine::tape::backward_with(&p.tensor, &g).unwrap();
    }
}

fn a_non_finite_gradient_skips_the_update_and_keeps_t(device: &Device, packed: bool) -> Vec<Vec<f32>> {
    let params = two_params(device);
    let mut opt = AdamW::new(AdamWConfig::default(), &params, device).unwrap();
    assert_eq!(opt.is_packed(), packed);
    let start = values(&params);
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        set_grads(&params, [&[1.0, 2.0, bad, 4.0, 5.0, 6.0], &[0.5, 0.5]]);
        assert!(!opt.step_if_finite(&params, 0.1, 1.0).unwrap(), "gradient {bad} must skip");
        assert_eq!((opt.step, values(&params)), (0, start.clone()), "nothing changes on a skip");
        assert!(params.iter().all(|p| p.tensor.grad().is_none()), "the gradients are cleared");
        assert!(opt.moments.iter().all(|m| m.m.to_vec().unwrap().iter().all(|v| *v == 0.0)));
    }
    // The bias alone has a gradient next: the skipped weight gradient must not linger.
    set_grads(&params, [&[1.0, 2.0, f32::INFINITY, 4.0, 5.0, 6.0], &[0.5, 0.5]]);
    assert!(!opt.step_if_finite(&params, 0.1, 1.0).unwrap());
    let g = Tensor::from_slice(&[0.5, -0.5], &[2], device).unwrap();
    engine::tape::backward_with(&params[1].tensor, &g).unwrap();
    assert!(opt.step_if_finite(&params, 0.1, 1.0).unwrap(), "a finite gradient is applied");
    assert_eq!(opt.step, 1);
    let after = values(&params);
    assert_eq!(after[0], start[0], "the weight had no gradient");
    // Adam's first step moves each value by lr against its gradient's sign.
    for (a, (s, g)) in after[1].iter().zip(start[1].iter().zip([0.5f32, -0.5])) {
        assert!((a - (s - 0.1 * g.signum())).abs() < 1e-5, "{a} from {s}");
    }
    // Then the parameters as a linear layer: on the GPU its backward writes both gradients into
    // their ranges of the packed gradient buffer (their homes, which each skip replaced).
    let x = Tensor::from_slice(&[1.0, -2.0, 0.5, 3.0, 0.25, -1.0], &[2, 3], device).unwrap();
    let y = engine::ops::linear(&x, &params[0].tensor, Some(&params[1].tensor)).unwrap();
    engine::backward(&y.mul(&y).unwrap().sum().unwrap()).unwrap();
    assert!(opt.step_if_finite(&params, 0.1, 1.0).unwrap());
    values(&params)
}

#[test]
fn a_non_finite_gradient_skips_the_cpu_update_and_keeps_adams_t() {
    a_non_finite_gradient_skips_the_update_and_keeps_t(&Device::Cpu, false);
}

#[test]
#[cfg(feature = "gpu")]
fn a_non_finite_gradient_in_the_packed_gpu_buffer_skips_the_update_and_keeps_adams_t() {
    let Some(gpu) = engine::gpu::test_device() else { return };
    let on_gpu = a_non_finite_gradient_skips_the_update_and_keeps_t(&gpu, true);
    let on_cpu = a_non_finite_gradient_skips_the_update_and_keeps_t(&Device::Cpu, false);
    for (g, c) in on_gpu.iter().flatten().zip(on_cpu.iter().flatten()) {
        assert!((g - c).abs() <= 1e-5 + 1e-5 * c.abs(), "after the skips the GPU's update is the CPU's: {g} {c}");
    }
}

#[test]
#[cfg(feature = "gpu")]
fn an_f16_gpu_run_checks_its_packed_gradients_and_follows_the_cpu_at_f32() {
    let Some(gpu) = engine::gpu::test_device() else { return };
    let (a, b) = (scratch("gpu-f16"), scratch("gpu-cpu-f32"));
    // Without f16 cooperative matrices (lavapipe) the GPU's products are f32, and a power-of-two
    // scale and its inverse are exact: the f16 run follows the CPU's f32 run.
    let mut t = Trainer::new(&options(a.clone(), 3, Precision::F16), &gpu).unwrap();
    assert!(t.optimizer().is_packed() && t.loss_scaler().is_enabled());
    let on_gpu: Vec<f32> = run_steps(&mut t, 3).iter().map(|r| r.loss).collect();
    assert_eq!((t.optimizer().step, t.loss_scaler().skipped_steps()), (3, 0));
    let cpu = train(&options(b.clone(), 3, Precision::F32), &Device::Cpu, None).unwrap();
    for (c, g) in cpu.losses.iter().map(|l| l.1).zip(&on_gpu) {
        assert!((c - g).abs() <= 1e-3 * c.abs(), "cpu {:?} gpu {on_gpu:?}", cpu.losses);
    }
    std::fs::remove_dir_all(a).unwrap();
    std::fs::remove_dir_all(b).unwrap();
}
