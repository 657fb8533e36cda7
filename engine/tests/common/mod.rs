//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use engine::storage::Storage;
use engine::{Device, Result, Rng, Tensor, backward};

/// Values spread over many orders of magnitude: sign * 10^u, u uniform in [lo_exp, hi_exp].
pub fn wide_values(n: usize, lo_exp: f32, hi_exp: f32, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let mag = 10f32.powf(rng.uniform_range(lo_exp, hi_exp));
            if rng.uniform() < 0.5 { -mag } else { mag }
        })
        .collect()
}

pub fn uniform_values(n: usize, lo: f32, hi: f32, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_range(lo, hi)).collect()
}

/// `|got - want| <= atol + rtol * |want|` element by element, with a message naming the worst one.
pub fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if (excess > 0.0 || excess.is_nan()) && worst.is_none_or(|(_, e)| excess > e || excess.is_nan()) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!("{what}: element {i} of {}: got {}, want {} (atol {atol}, rtol {rtol})", got.len(), got[i], want[i]);
    }
}

/// What a function gave on one device: its output and the gradient of every input.
pub struct Run {
    pub out: Vec<f32>,
    pub grads: Vec<Vec<f32>>,
}

/// Evaluate `f` on `device` with every input requiring gradients, and backpropagate a fixed random
/// weighting of the output, so the backward kernels run too.
pub fn run_on(device: &Device, inputs: &[(Vec<f32>, Vec<usize>)], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) -> Run {
    let ts: Vec<Tensor> = inputs.iter().map(|(v, s)| Tensor::from_slice(v, s, device).unwrap().with_grad()).collect();
    run_tensors(device, &ts, f)
}

/// Parameters packed on a GPU as an optimizer packs a model (`engine::packing::pack`), each with
/// its range of a second buffer laid out alike as its gradient home (`Tensor::set_grad_home`), as
/// the packed AdamW sets them.
pub struct PackedParams {
    pub params: Vec<Tensor>,
    pub homes: Vec<Storage>,
    /// The whole gradient buffer.
    pub grads: Tensor,
    /// Each parameter's `(offset, len)` in both buffers, in values.
    pub segments: Vec<(usize, usize)>,
}

pub fn packed_with_grad_homes(values: &[(Vec<f32>, Vec<usize>)], gpu: &Device) -> PackedParams {
    use engine::packing::{Packed, pack};
    let leaves: Vec<Tensor> =
        values.iter().map(|(v, s)| Tensor::from_slice(v, s, &Device::Cpu).unwrap().with_grad()).collect();
    let params = pack(&leaves, gpu).unwrap();
    let packed = Packed::of(&params).expect("packed on a GPU");
    let (grads, homes) = packed.zeros_like().unwrap();
    for (p, home) in params.iter().zip(&homes) {
        p.set_grad_home(Some(home.clone())).unwrap();
    }
    let len = grads.len();
    PackedParams { params, homes, grads: Tensor::from_storage(grads, &[len]).unwrap(), segments: packed.segments }
}

/// `run_on` with the inputs from index `first` on packed with gradient homes: the run, whether
/// each input's gradient lies in its home (never for those before `first`), and the parameters.
pub fn run_on_packed(
    gpu: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    first: usize,
) -> (Run, Vec<bool>, PackedParams) {
    let packed = packed_with_grad_homes(&inputs[first..], gpu);
    let mut ts: Vec<Tensor> =
        inputs[..first].iter().map(|(v, s)| Tensor::from_slice(v, s, gpu).unwrap().with_grad()).collect();
    ts.extend(packed.params.iter().cloned());
    let run = run_tensors(gpu, &ts, f);
    let at_home = ts
        .iter()
        .enumerate()
        .map(|(i, t)| i >= first && t.grad().is_some_and(|g| g.storage().same_as(&packed.homes[i - first])))
        .collect();
    (run, at_home, packed)
}

/// `f` on `ts` forward, and backward from a fixed random weighting of its output.
fn run_tensors(device: &Device, ts: &[Tensor], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) -> Run {
    let y = f(ts).unwrap();
    let mut rng = Rng::new(99);
    let w: Vec<f32> = (0..y.numel()).map(|_| rng.normal()).collect();
    let wt = Tensor::from_vec(w, y.shape(), device).unwrap();
    backward(&y.mul(&wt).unwrap().sum().unwrap()).unwrap();
    Run {
        out: y.to_vec().unwrap(),
        grads: ts.iter().map(|t| t.grad().map(|g| g.to_vec().unwrap()).unwrap_or_default()).collect(),
    }
}

/// The same computation on the CPU backend (the fast kernels, themselves tested against
/// `cpu::reference`) and on `gpu`: outputs and every gradient must agree.
pub fn assert_devices_agree(
    gpu: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    atol: f32,
    rtol: f32,
    what: &str,
) {
    let cpu = run_on(&Device::Cpu, inputs, f);
    let gpu = run_on(gpu, inputs, f);
    assert_close(&gpu.out, &cpu.out, atol, rtol, &format!("{what}: forward"));
    for (i, (g, c)) in gpu.grads.iter().zip(&cpu.grads).enumerate() {
        assert_close(g, c, atol, rtol, &format!("{what}: gradient of input {i}"));
    }
}

pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}
