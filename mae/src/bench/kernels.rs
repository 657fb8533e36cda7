//! The kernel table of `mae bench`: the kernels of one training step on MAE's shapes (the
//! Fashion-MNIST preset at batch 256: 12 visible patches + cls in the encoder, 50 tokens in the
//! decoder) on the CPU reference, the fast CPU backend and the GPU when there is one. Each is timed
//! as the median of repeated batches of calls, with the GPU synchronised at the end of each batch
//! (wall time); where the adapter has timestamp queries the GPU's own kernel time is shown too. Work
//! is counted in FLOPs for products and attention, in bytes moved for memory-bound kernels.

use std::fmt::Write as _;
use std::time::Instant;

use engine::backend::*;
use engine::cpu::reference;
use engine::storage::Storage;
use engine::{Device, Indices, Rng};

use crate::error::Result;
use crate::model::config::ModelConfig;

/// A kernel's amount of work.
#[derive(Clone, Copy, Debug)]
pub enum Work {
    /// Floating-point operations per call (products and attention).
    Flops(f64),
    /// Bytes moved per call (memory-bound kernels).
    Bytes(f64),
}

/// One call of a kernel on prepared inputs.
pub type Timed = Box<dyn FnMut() -> engine::Result<()>>;
/// Uploads a case's inputs to a device and returns the call to time.
type Prepare = Box<dyn Fn(&Device) -> engine::Result<Timed>>;
/// Makes a case's host inputs and returns the reference call to time.
type PrepareReference = Box<dyn Fn() -> Box<dyn FnMut()>>;

/// A kernel on one of MAE's shapes, ready to time on any device.
pub struct Case {
    /// The kernel's name, as the table shows it.
    pub name: &'static str,
    /// The shapes it runs on, e.g. `[m,k] x [n,k]^T`.
    pub shape: String,
    /// What one call does, to turn a time into a rate.
    pub work: Work,
    prepare: Prepare,
    reference: Option<PrepareReference>,
}

impl Case {
    /// Upload the inputs to `dev`; the returned closure runs the kernel once (not waiting for a GPU).
    pub fn prepare(&self, dev: &Device) -> engine::Result<Timed> {
        (self.prepare)(dev)
    }

    /// The CPU reference on host inputs, when the case has one.
    pub fn reference(&self) -> Option<Box<dyn FnMut()>> {
        self.reference.as_ref().map(|r| r())
    }
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform_range(-1.0, 1.0)).collect()
}

fn up(dev: &Device, v: &[f32]) -> engine::Result<Storage> {
    dev.backend().upload(v)
}

/// A case of one kernel on one input `x`: `kernel` on a device, `reference` on the host.
fn one_input_case(
    name: &'static str,
    shape: String,
    work: Work,
    x: Vec<f32>,
    kernel: impl Fn(&dyn Backend, &Storage) -> engine::Result<Storage> + Clone + 'static,
    reference: impl Fn(&[f32]) + Clone + 'static,
) -> Case {
    let host = x.clone();
    Case {
        name,
        shape,
        work,
        prepare: Box::new(move |dev| {
            let (x, dev, kernel) = (up(dev, &host)?, dev.clone(), kernel.clone());
            Ok(Box::new(move || kernel(dev.backend(), &x).map(drop)))
        }),
        reference: Some(Box::new(move || {
            let (x, reference) = (x.clone(), reference.clone());
            Box::new(move || reference(&x))
        })),
    }
}

/// A linear layer's weight gradient over `m` rows, `k` in, `n` out: `dw[n, k] = dy[m, n]^T x[m, k]`.
fn weight_grad_spec(m: usize, k: usize, n: usize) -> MatmulSpec {
    MatmulSpec { batch: 1, m: n, n: k, k: m, trans_a: true, trans_b: false, a_batch_stride: 0, b_batch_stride: 0 }
}

fn linear_case(name: &'static str, m: usize, k: usize, n: usize, weight_grad: bool) -> Case {
    // Forward: y[m, n] = x[m, k] w[n, k]^T. Weight gradient: dw[n, k] = dy[m, n]^T x[m, k].
    let spec = if weight_grad {
        weight_grad_spec(m, k, n)
    } else {
        MatmulSpec { batch: 1, m, n, k, trans_a: false, trans_b: true, a_batch_stride: 0, b_batch_stride: 0 }
    };
    let (la, lb) = (spec.a_len(), spec.b_len());
    Case {
        name,
        shape: if weight_grad { format!("[{m},{n}]^T x [{m},{k}]") } else { format!("[{m},{k}] x [{n},{k}]^T") },
        work: Work::Flops(spec.flops()),
        prepare: Box::new(move |dev| {
            let (a, b) = (up(dev, &values(la, 1))?, up(dev, &values(lb, 2))?);
            let dev = dev.clone();
            Ok(Box::new(move || dev.backend().matmul(&a, &b, None, &spec).map(drop)))
        }),
        reference: Some(Box::new(move || {
            let (a, b) = (values(la, 1), values(lb, 2));
            Box::new(move || drop(reference::matmul(&a, &b, None, &spec)))
        })),
    }
}

/// A linear layer's weight and bias gradients, `dw[n, k] = dy[m, n]^T x[m, k]` and `db = sum_m dy`:
/// one fused call (`Backend::matmul_with_a_sums`: on the GPU the product's dispatch also sums dy)
/// or the product, then the column sums, to be read side by side.
fn linear_grads_case(name: &'static str, m: usize, k: usize, n: usize, fused: bool) -> Case {
    let spec = weight_grad_spec(m, k, n);
    let (la, lb) = (spec.a_len(), spec.b_len());
    Case {
        name,
        shape: format!("[{m},{n}]^T x [{m},{k}], sum over {m}"),
        work: Work::Flops(spec.flops()),
        prepare: Box::new(move |dev| {
            let (a, b) = (up(dev, &values(la, 1))?, up(dev, &values(lb, 2))?);
            let dev = dev.clone();
            Ok(Box::new(move || {
                let be = dev.backend();
                if fused { be.matmul_with_a_sums(&a, &b, &spec, None) } else { matmul_then_a_sums(be, &a, &b, &spec) }
                    .map(drop)
            }))
        }),
        reference: Some(Box::new(move || {
            let (a, b) = (values(la, 1), values(lb, 2));
            let sums = AxisSpec { outer: 1, axis: m, inner: n };
            Box::new(move || drop((reference::matmul(&a, &b, None, &spec), reference::sum_axis(&a, &sums))))
        })),
    }
}

/// An MLP's backward through GELU, `(dy w2) * gelu'(h)` with `dy: [m, k]`, `w2: [k, n]` (fc2's input
/// gradient, `h` fc1's output): the fused backend call, or the product and then the element-wise
/// derivative it replaces, to be read side by side.
fn mlp_input_grad_case(name: &'static str, m: usize, k: usize, n: usize, fused: bool) -> Case {
    let spec = MatmulSpec { batch: 1, m, n, k, trans_a: false, trans_b: false, a_batch_stride: 0, b_batch_stride: 0 };
    let (la, lb) = (spec.a_len(), spec.b_len());
    Case {
        name,
        shape: format!("([{m},{k}] x [{k},{n}]) * gelu'([{m},{n}])"),
        work: Work::Flops(spec.flops()),
        prepare: Box::new(move |dev| {
            let (a, b, h) = (up(dev, &values(la, 1))?, up(dev, &values(lb, 2))?, up(dev, &values(m * n, 3))?);
            let dev = dev.clone();
            Ok(Box::new(move || {
                let be = dev.backend();
                if fused {
                    be.matmul_gelu_backward(&a, &b, &h, &spec).map(drop)
                } else {
                    let c = be.matmul(&a, &b, None, &spec)?;
                    be.gelu_backward(&h, &c, m * n).map(drop)
                }
            }))
        }),
        reference: Some(Box::new(move || {
            let (a, b, h) = (values(la, 1), values(lb, 2), values(m * n, 3));
            Box::new(move || drop(reference::gelu_backward(&h, &reference::matmul(&a, &b, None, &spec))))
        })),
    }
}

/// fc1 and its GELU, `gelu(x w^T + b)`: the fused backend call, or the unfused pair it replaces
/// (the product with its bias, then the element-wise GELU), to be read side by side.
fn linear_gelu_case(name: &'static str, m: usize, k: usize, n: usize, fused: bool) -> Case {
    let spec = MatmulSpec { batch: 1, m, n, k, trans_a: false, trans_b: true, a_batch_stride: 0, b_batch_stride: 0 };
    let (la, lb) = (spec.a_len(), spec.b_len());
    Case {
        name,
        shape: format!("gelu([{m},{k}] x [{n},{k}]^T + [{n}])"),
        work: Work::Flops(spec.flops()),
        prepare: Box::new(move |dev| {
            let (a, b, bias) = (up(dev, &values(la, 1))?, up(dev, &values(lb, 2))?, up(dev, &values(n, 3))?);
            let dev = dev.clone();
            Ok(Box::new(move || {
                let be = dev.backend();
                if fused {
                    be.matmul_gelu(&a, &b, Some(&bias), &spec).map(drop)
                } else {
                    let h = be.matmul(&a, &b, Some(&bias), &spec)?;
                    be.unary(UnaryOp::Gelu, &h, m * n).map(drop)
                }
            }))
        }),
        reference: Some(Box::new(move || {
            let (a, b, bias) = (values(la, 1), values(lb, 2), values(n, 3));
            Box::new(move || drop(reference::unary(UnaryOp::Gelu, &reference::matmul(&a, &b, Some(&bias), &spec))))
        })),
    }
}

/// Which matmul kernel a ViT-B case runs on the GPU: the launcher's choice for the shape, or one
/// forced, to read the two side by side (the CPU ignores it), or the f16 products
/// (`Precision::F16`: tensor cores where the adapter has them, else the f32 kernels again).
#[derive(Clone, Copy, Debug)]
enum Tiles {
    Chosen,
    Small,
    Large,
    F16,
}

impl Tiles {
    fn label(self, spec: &MatmulSpec) -> &'static str {
        #[cfg(feature = "gpu")]
        let large = engine::gpu::runs_on_large_tiles(spec);
        #[cfg(not(feature = "gpu"))]
        let large = {
            let _ = spec;
            false
        };
        match self {
            Tiles::F16 => "f16 products (see the table's header)",
            Tiles::Chosen if large => "chosen: 128x128 tiles",
            Tiles::Chosen => "chosen: 64x64 tiles",
            Tiles::Small => "64x64 tiles",
            Tiles::Large => "128x128 tiles",
        }
    }

    /// `f` with this thread's products on these tiles.
    fn run<T>(self, f: impl FnOnce() -> T) -> T {
        if let Tiles::F16 = self {
            return engine::cpu::matmul::with_precision(engine::cpu::matmul::Precision::F16, f);
        }
        #[cfg(feature = "gpu")]
        {
            use engine::gpu::{MatmulTiles, force_matmul_tiles};
            let forced = match self {
                Tiles::Chosen | Tiles::F16 => None,
                Tiles::Small => Some(MatmulTiles::Small),
                Tiles::Large => Some(MatmulTiles::Large),
            };
            let before = force_matmul_tiles(forced);
            let out = f();
            force_matmul_tiles(before);
            out
        }
        #[cfg(not(feature = "gpu"))]
        f()
    }
}

/// One of ViT-B's large products at batch 64, `rows` tokens, `k` in, `n` out: the forward
/// `x[rows, k] w[n, k]^T` (with its bias and fused GELU when `gelu`), or with `input_grad` the
/// backward `dy[rows, k] w[k, n]` (no transposes; there `k` is the layer's out and `n` its in), or
/// the weight gradient `dy[rows, k]^T x[rows, n]` with its bias sums (`k` the layer's out, `n` its
/// in). No CPU reference (minutes a call).
fn vit_b_matmul_case(name: &'static str, rows: usize, k: usize, n: usize, op: VitOp, tiles: Tiles) -> Case {
    let spec = match op {
        VitOp::WeightGrad => MatmulSpec { trans_a: true, ..MatmulSpec::plain(k, n, rows) },
        _ => MatmulSpec {
            batch: 1,
            m: rows,
            n,
            k,
            trans_a: false,
            trans_b: !matches!(op, VitOp::InputGrad | VitOp::InputGradGelu { .. }),
            a_batch_stride: 0,
            b_batch_stride: 0,
        },
    };
    let (la, lb) = (spec.a_len(), spec.b_len());
    let shape = match op {
        VitOp::Forward => format!("[{rows},{k}] x [{n},{k}]^T, {}", tiles.label(&spec)),
        VitOp::ForwardGelu => format!("gelu([{rows},{k}] x [{n},{k}]^T + [{n}]), {}", tiles.label(&spec)),
        VitOp::InputGrad => format!("[{rows},{k}] x [{k},{n}], {}", tiles.label(&spec)),
        VitOp::InputGradGelu { fused } => format!(
            "([{rows},{k}] x [{k},{n}]) * gelu'([{rows},{n}]), {}, {}",
            if fused { "fused" } else { "then gelu_backward" },
            tiles.label(&spec)
        ),
        VitOp::WeightGrad => format!("[{rows},{k}]^T x [{rows},{n}] + sums, {}", tiles.label(&spec)),
    };
    Case {
        name,
        shape,
        work: Work::Flops(spec.flops()),
        prepare: Box::new(move |dev| {
            let (a, b, bias) = (up(dev, &values(la, 1))?, up(dev, &values(lb, 2))?, up(dev, &values(n, 3))?);
            let h = match op {
                VitOp::InputGradGelu { .. } => Some(up(dev, &values(rows * n, 4))?),
                _ => None,
            };
            let dev = dev.clone();
            Ok(Box::new(move || {
                let be = dev.backend();
                tiles.run(|| match (op, &h) {
                    (VitOp::ForwardGelu, _) => be.matmul_gelu(&a, &b, Some(&bias), &spec).map(drop),
                    (VitOp::Forward | VitOp::InputGrad, _) => be.matmul(&a, &b, None, &spec).map(drop),
                    (VitOp::WeightGrad, _) => be.matmul_with_a_sums(&a, &b, &spec, None).map(drop),
                    (VitOp::InputGradGelu { fused: true }, Some(h)) => {
                        be.matmul_gelu_backward(&a, &b, h, &spec).map(drop)
                    }
                    (VitOp::InputGradGelu { .. }, h) => {
                        let c = be.matmul(&a, &b, None, &spec)?;
                        be.gelu_backward(h.as_ref().expect("made above"), &c, rows * n).map(drop)
                    }
                })
            }))
        }),
        reference: None,
    }
}

#[derive(Clone, Copy)]
enum VitOp {
    Forward,
    ForwardGelu,
    InputGrad,
    /// An MLP's backward through GELU: the input gradient times `gelu'(h)`, in the product's store
    /// (`fused`) or by `gelu_backward` after it.
    InputGradGelu {
        fused: bool,
    },
    WeightGrad,
}

/// ViT-B's products at batch 64 (50 visible tokens an image in the encoder, 197 in the decoder;
/// docs/journal/h200-2026-12-04/base-splitk.txt): where the launcher picks the 128 x 128 kernel,
/// each also forced onto the 64 x 64 one, and the encoder's fc2 (150 large tiles, left on 64 x 64)
/// also forced onto the large one, to check the choice on a device.
fn vit_b_matmul_cases() -> Vec<Case> {
    let (enc, dec) = (64 * 50, 64 * 197);
    let mut cases = Vec::new();
    for tiles in [Tiles::Chosen, Tiles::Small, Tiles::F16] {
        cases.push(vit_b_matmul_case("matmul qkv (ViT-B encoder, batch 64)", enc, 768, 2304, VitOp::Forward, tiles));
        cases.push(vit_b_matmul_case(
            "fc1 + gelu (ViT-B encoder, batch 64)",
            enc,
            768,
            3072,
            VitOp::ForwardGelu,
            tiles,
        ));
        cases.push(vit_b_matmul_case("matmul fc1 (ViT-B decoder, batch 64)", dec, 512, 2048, VitOp::Forward, tiles));
        cases.push(vit_b_matmul_case(
            "fc2 input grad (ViT-B decoder, batch 64)",
            dec,
            2048,
            512,
            VitOp::InputGrad,
            tiles,
        ));
    }
    for tiles in [Tiles::Chosen, Tiles::Large, Tiles::F16] {
        cases.push(vit_b_matmul_case("matmul fc2 (ViT-B encoder, batch 64)", enc, 3072, 768, VitOp::Forward, tiles));
    }
    // The decoder MLP's backward through GELU ([12608, 512] x [512, 2048]), fused and apart.
    for tiles in [Tiles::Chosen, Tiles::F16] {
        for fused in [false, true] {
            let op = VitOp::InputGradGelu { fused };
            cases.push(vit_b_matmul_case(
                "fc2 input grad + gelu' (ViT-B decoder, batch 64)",
                dec,
                512,
                2048,
                op,
                tiles,
            ));
        }
    }
    // The weight gradients (with the bias sums), the step's third kind of product.
    for tiles in [Tiles::Chosen, Tiles::F16] {
        cases.push(vit_b_matmul_case(
            "fc1 weight + bias grad (ViT-B encoder, batch 64)",
            enc,
            3072,
            768,
            VitOp::WeightGrad,
            tiles,
        ));
        cases.push(vit_b_matmul_case(
            "fc1 weight + bias grad (ViT-B decoder, batch 64)",
            dec,
            2048,
            512,
            VitOp::WeightGrad,
            tiles,
        ));
    }
    cases
}

fn attention_case(name: &'static str, heads: usize, seq: usize, dim: usize, backward: bool) -> Case {
    let spec = AttentionSpec { heads, seq, dim, scale: 1.0 / (dim as f32).sqrt() };
    let n = heads * seq * dim;
    let flops = 4.0 * (heads * seq * seq * dim) as f64 * if backward { 2.5 } else { 1.0 };
    Case {
        name,
        shape: format!("{heads} heads x {seq} x {dim}"),
        work: Work::Flops(flops),
        prepare: Box::new(move |dev| {
            let (q, k, v) = (up(dev, &values(n, 3))?, up(dev, &values(n, 4))?, up(dev, &values(n, 5))?);
            let be = dev.backend();
            let (o, lse) = be.attention(&q, &k, &v, &spec)?;
            let d = up(dev, &values(n, 6))?;
            let dev = dev.clone();
            Ok(Box::new(move || {
                let be = dev.backend();
                if backward {
                    be.attention_backward(&q, &k, &v, &o, &lse, &d, &spec).map(drop)
                } else {
                    be.attention(&q, &k, &v, &spec).map(drop)
                }
            }))
        }),
        reference: Some(Box::new(move || {
            let (q, k, v, d) = (values(n, 3), values(n, 4), values(n, 5), values(n, 6));
            let (o, _) = reference::attention(&q, &k, &v, &spec);
            Box::new(move || {
                if backward {
                    drop(reference::attention_backward(&q, &k, &v, &o, &d, &spec))
                } else {
                    drop(reference::attention(&q, &k, &v, &spec))
                }
            })
        })),
    }
}

fn layernorm_case(name: &'static str, rows: usize, cols: usize, backward: bool) -> Case {
    let n = rows * cols;
    Case {
        name,
        shape: format!("[{rows},{cols}]"),
        work: Work::Bytes(4.0 * n as f64 * if backward { 4.0 } else { 2.0 }),
        prepare: Box::new(move |dev| {
            let x = up(dev, &values(n, 7))?;
            let (g, b) = (up(dev, &vec![1.0; cols])?, up(dev, &vec![0.0; cols])?);
            let (_, mean, rstd) = dev.backend().layernorm(&x, &g, &b, rows, cols, 1e-6)?;
            let dy = up(dev, &values(n, 8))?;
            let dev = dev.clone();
            Ok(Box::new(move || {
                let be = dev.backend();
                if backward {
                    be.layernorm_backward(&x, &g, &mean, &rstd, &dy, None, rows, cols, None).map(drop)
                } else {
                    be.layernorm(&x, &g, &b, rows, cols, 1e-6).map(drop)
                }
            }))
        }),
        reference: Some(Box::new(move || {
            let (x, g, b, dy) = (values(n, 7), vec![1.0; cols], vec![0.0; cols], values(n, 8));
            let (_, mean, rstd) = reference::layernorm(&x, &g, &b, rows, cols, 1e-6);
            Box::new(move || {
                if backward {
                    drop(reference::layernorm_backward(&x, &g, &mean, &rstd, &dy, rows, cols))
                } else {
                    drop(reference::layernorm(&x, &g, &b, rows, cols, 1e-6))
                }
            })
        })),
    }
}

/// A block's residual add and the LayerNorm after it, `s = x + r; layernorm(s)`: the fused backend
/// call, or the unfused pair it replaces (same bytes counted for both: x, r in; s, y out).
fn add_layernorm_case(name: &'static str, rows: usize, cols: usize, fused: bool) -> Case {
    let n = rows * cols;
    Case {
        name,
        shape: format!("[{rows},{cols}] + [{rows},{cols}]"),
        work: Work::Bytes(16.0 * n as f64),
        prepare: Box::new(move |dev| {
            let (x, r) = (up(dev, &values(n, 7))?, up(dev, &values(n, 9))?);
            let (g, b) = (up(dev, &vec![1.0; cols])?, up(dev, &vec![0.0; cols])?);
            let dev = dev.clone();
            Ok(Box::new(move || {
                let be = dev.backend();
                if fused {
                    be.add_layernorm(&x, &r, &g, &b, rows, cols, 1e-6).map(drop)
                } else {
                    let s = be.binary(BinaryOp::Add, &x, &r, n, n)?;
                    be.layernorm(&s, &g, &b, rows, cols, 1e-6).map(drop)
                }
            }))
        }),
        reference: Some(Box::new(move || {
            let (x, r, g, b) = (values(n, 7), values(n, 9), vec![1.0; cols], vec![0.0; cols]);
            Box::new(move || drop(reference::add_layernorm(&x, &r, &g, &b, rows, cols, 1e-6)))
        })),
    }
}

fn gelu_case(n: usize) -> Case {
    one_input_case(
        "gelu",
        format!("[{n}]"),
        Work::Bytes(8.0 * n as f64),
        values(n, 9),
        move |b, x| b.unary(UnaryOp::Gelu, x, n),
        |x| drop(reference::unary(UnaryOp::Gelu, x)),
    )
}

fn add_case(n: usize, row: usize) -> Case {
    Case {
        name: "add (broadcast row)",
        shape: format!("[{}, {row}] + [{row}]", n / row),
        work: Work::Bytes(8.0 * n as f64),
        prepare: Box::new(move |dev| {
            let (x, y) = (up(dev, &values(n, 10))?, up(dev, &values(row, 11))?);
            let dev = dev.clone();
            Ok(Box::new(move || dev.backend().binary(BinaryOp::Add, &x, &y, n, row).map(drop)))
        }),
        reference: Some(Box::new(move || {
            let (x, y) = (values(n, 10), values(row, 11));
            Box::new(move || drop(reference::binary(BinaryOp::Add, &x, &y)))
        })),
    }
}

fn gather_case(batch: usize, rows: usize, picks: usize, width: usize) -> Case {
    let spec = GatherSpec { batch, rows, picks, width };
    let idx: Vec<u32> = (0..batch * picks).map(|i| ((i * 7) % rows) as u32).collect();
    let idx2 = idx.clone();
    Case {
        name: "masked patch gather",
        shape: format!("[{batch},{rows},{width}] -> {picks}"),
        work: Work::Bytes(8.0 * (batch * picks * width) as f64),
        prepare: Box::new(move |dev| {
            let x = up(dev, &values(batch * rows * width, 12))?;
            let ids = Indices::new(idx.clone(), &[batch, picks])?;
            let dev = dev.clone();
            Ok(Box::new(move || dev.backend().gather_rows(&x, None, &ids, &spec).map(drop)))
        }),
        reference: Some(Box::new(move || {
            let x = values(batch * rows * width, 12);
            let idx = idx2.clone();
            Box::new(move || drop(reference::gather_rows(&x, None, &idx, &spec)))
        })),
    }
}

/// The AdamW settings of the kernel-table cases (mid-training bias corrections).
fn bench_adamw_spec() -> AdamWSpec {
    AdamWSpec {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.05,
        bias_correction1: 0.5,
        bias_correction2: 0.5,
        grad_scale: 1.0,
    }
}

fn adamw_case(n: usize) -> Case {
    let spec = bench_adamw_spec();
    Case {
        name: "adamw",
        shape: format!("{:.2} M parameters", n as f64 / 1e6),
        work: Work::Bytes(28.0 * n as f64),
        prepare: Box::new(move |dev| {
            let (p, g, m, v) =
                (up(dev, &values(n, 13))?, up(dev, &values(n, 14))?, up(dev, &vec![0.0; n])?, up(dev, &vec![0.0; n])?);
            let dev = dev.clone();
            Ok(Box::new(move || dev.backend().adamw_step(&p, &g, &m, &v, n, &spec)))
        }),
        reference: Some(Box::new(move || {
            let (mut p, g, mut m, mut v) = (values(n, 13), values(n, 14), vec![0.0; n], vec![0.0; n]);
            Box::new(move || reference::adamw_step(&mut p, &g, &mut m, &mut v, &spec))
        })),
    }
}

/// AdamW over every parameter tensor of a model (`lens`): one call per tensor, or one packed call
/// for all (`Backend::adamw_step_packed`, what the trainer does on the GPU). The same values move
/// either way; the difference is the launches.
fn adamw_model_case(name: &'static str, lens: Vec<usize>, packed: bool) -> Case {
    let spec = bench_adamw_spec();
    let total: usize = lens.iter().sum();
    Case {
        name,
        shape: format!("{} tensors, {:.2} M parameters", lens.len(), total as f64 / 1e6),
        work: Work::Bytes(28.0 * total as f64),
        prepare: Box::new(move |dev| {
            let dev = dev.clone();
            if packed {
                let mut segments = Vec::with_capacity(lens.len());
                let mut at = 0;
                for &n in &lens {
                    segments.push((at, n));
                    at += n.next_multiple_of(ADAMW_CHUNK);
                }
                let layout = packed_adamw_layout(&segments)?;
                let hyper = up(&dev, &lens.iter().flat_map(|_| [1.0, 0.05]).collect::<Vec<f32>>())?;
                let (p, g, m, v) = (
                    up(&dev, &values(at, 13))?,
                    up(&dev, &values(at, 14))?,
                    up(&dev, &vec![0.0; at])?,
                    up(&dev, &vec![0.0; at])?,
                );
                let n = lens.len();
                Ok(Box::new(move || dev.backend().adamw_step_packed(&p, &g, &m, &v, &layout, n, &hyper, &spec)))
            } else {
                let tensors = lens
                    .iter()
                    .map(|&n| {
                        Ok((
                            up(&dev, &values(n, 13))?,
                            up(&dev, &values(n, 14))?,
                            up(&dev, &vec![0.0; n])?,
                            up(&dev, &vec![0.0; n])?,
                            n,
                        ))
                    })
                    .collect::<engine::Result<Vec<_>>>()?;
                Ok(Box::new(move || {
                    let be = dev.backend();
                    tensors.iter().try_for_each(|(p, g, m, v, n)| be.adamw_step(p, g, m, v, *n, &spec))
                }))
            }
        }),
        reference: Some(Box::new(move || {
            let (mut p, g, mut m, mut v) = (values(total, 13), values(total, 14), vec![0.0; total], vec![0.0; total]);
            Box::new(move || reference::adamw_step(&mut p, &g, &mut m, &mut v, &spec))
        })),
    }
}

/// The sizes of a preset's trainable tensors, in the optimizer's order.
fn parameter_sizes(preset: &str) -> Vec<usize> {
    let config = ModelConfig::by_name(preset).expect("a built-in preset");
    let model = crate::model::MaskedAutoencoder::new(&config, 0, &Device::Cpu).expect("a CPU model");
    model.trainable().iter().map(|p| p.tensor.numel()).collect()
}

/// The kernels of one training step of `mae_vit_micro_patch4_28` at `batch` (256 in the tables).
pub fn cases(batch: usize) -> Vec<Case> {
    let (enc_rows, dec_rows) = (batch * 13, batch * 50);
    vec![
        linear_case("matmul qkv (encoder)", enc_rows, 128, 384, false),
        linear_case("matmul fc1 (encoder)", enc_rows, 128, 512, false),
        linear_gelu_case("fc1 + gelu, unfused (encoder)", enc_rows, 128, 512, false),
        linear_gelu_case("fc1 + gelu, fused (encoder)", enc_rows, 128, 512, true),
        linear_case("matmul fc2 (encoder)", enc_rows, 512, 128, false),
        mlp_input_grad_case("fc2 input grad + gelu', unfused (encoder)", enc_rows, 128, 512, false),
        mlp_input_grad_case("fc2 input grad + gelu', fused (encoder)", enc_rows, 128, 512, true),
        linear_case("matmul fc1 weight grad", enc_rows, 128, 512, true),
        linear_case("matmul qkv (decoder)", dec_rows, 64, 192, false),
        // ViT-B's encoder fc1 at batch 8 (50 visible tokens an image): 576 output tiles, so one
        // pass, not split over K, where the fused bias sums cost the most (docs/kernels.md).
        linear_grads_case("fc1 weight + bias grad, unfused (ViT-B, batch 8)", 8 * 50, 768, 3072, false),
        linear_grads_case("fc1 weight + bias grad, fused (ViT-B, batch 8)", 8 * 50, 768, 3072, true),
        attention_case("attention fwd (encoder)", batch * 4, 13, 32, false),
        attention_case("attention bwd (encoder)", batch * 4, 13, 32, true),
        attention_case("attention fwd (decoder)", batch * 4, 50, 16, false),
        attention_case("attention bwd (decoder)", batch * 4, 50, 16, true),
        // ViT-B's decoder at the batch of 8 (16 heads of 197 x 32): the per-head kernel.
        attention_case("attention fwd (ViT-B decoder, batch 8)", 8 * 16, 197, 32, false),
        attention_case("attention bwd (ViT-B decoder, batch 8)", 8 * 16, 197, 32, true),
        // ViT-B's encoder at batch 8 (12 heads of 50 visible tokens x 64): the other tiled shape.
        attention_case("attention fwd (ViT-B encoder, batch 8)", 8 * 12, 50, 64, false),
        attention_case("attention bwd (ViT-B encoder, batch 8)", 8 * 12, 50, 64, true),
        layernorm_case("layernorm fwd", enc_rows, 128, false),
        layernorm_case("layernorm bwd", enc_rows, 128, true),
        add_layernorm_case("residual + layernorm, unfused", enc_rows, 128, false),
        add_layernorm_case("residual + layernorm, fused", enc_rows, 128, true),
        gelu_case(enc_rows * 512),
        add_case(enc_rows * 128, 128),
        gather_case(batch, 49, 12, 128),
        scatter_case(batch, 50, 50, 64),
        decoder_tokens_case(batch, 12, 49, 64, false),
        decoder_tokens_case(batch, 12, 49, 64, true),
        concat_case(batch, 49, 64),
        permute_case(batch, 50, 4, 16),
        bias_grad_case(dec_rows, 192),
        loss_case(batch * 49, 16, false),
        loss_case(batch * 49, 16, true),
        adamw_case(1_300_000),
        adamw_model_case("adamw, per tensor (model)", parameter_sizes("mae_vit_micro_patch4_28"), false),
        adamw_model_case("adamw, packed (model)", parameter_sizes("mae_vit_micro_patch4_28"), true),
    ]
}

/// The decoder's tokens from its embedded latent `[batch, 1 + kept, width]` in one gather whose fill
/// row is the mask token (`[batch, 1 + patches, width]`), or the backward's sum of the rows that
/// picked the mask token.
fn decoder_tokens_case(batch: usize, kept: usize, patches: usize, width: usize, backward: bool) -> Case {
    let spec = GatherSpec { batch, rows: 1 + kept, picks: 1 + patches, width };
    // Each sample: its cls token, then the kept tokens and mask tokens in a shuffled raster order.
    let picks: Vec<u32> = (0..batch)
        .flat_map(|_| std::iter::once(0).chain((0..patches).map(move |l| 1 + ((l * 11) % patches).min(kept) as u32)))
        .collect();
    let (picks2, n_in, n_out) = (picks.clone(), batch * (1 + kept) * width, batch * (1 + patches) * width);
    Case {
        name: if backward {
            "mask token's gradient (sum of its rows)"
        } else {
            "decoder tokens (gather, mask token fill)"
        },
        shape: format!("[{batch},{},{width}] -> {}", 1 + kept, 1 + patches),
        work: Work::Bytes(if backward { 4.0 * n_out as f64 } else { 4.0 * (n_in + n_out) as f64 }),
        prepare: Box::new(move |dev| {
            let (x, fill, dy) =
                (up(dev, &values(n_in, 16))?, up(dev, &values(width, 17))?, up(dev, &values(n_out, 18))?);
            let ids = Indices::new(picks.clone(), &[batch, 1 + patches])?;
            let dev = dev.clone();
            Ok(Box::new(move || {
                let b = dev.backend();
                if backward { b.sum_fill_rows(&dy, &ids, &spec) } else { b.gather_rows(&x, Some(&fill), &ids, &spec) }
                    .map(drop)
            }))
        }),
        reference: Some(Box::new(move || {
            let (x, fill, dy, idx) = (values(n_in, 16), values(width, 17), values(n_out, 18), picks2.clone());
            Box::new(move || {
                if backward {
                    drop(reference::sum_fill_rows(&dy, &idx, &spec))
                } else {
                    drop(reference::gather_rows(&x, Some(&fill), &idx, &spec))
                }
            })
        })),
    }
}

fn scatter_case(batch: usize, rows: usize, picks: usize, width: usize) -> Case {
    // The backward of the decoder's unshuffle: every token's gradient to its place.
    let spec = GatherSpec { batch, rows, picks, width };
    let idx: Vec<u32> = (0..batch * picks).map(|i| ((i * 7) % rows) as u32).collect();
    let idx2 = idx.clone();
    let n = batch * picks * width;
    Case {
        name: "unshuffle backward (scatter-add)",
        shape: format!("[{batch},{picks},{width}] -> {rows}"),
        work: Work::Bytes(8.0 * n as f64),
        prepare: Box::new(move |dev| {
            let dy = up(dev, &values(n, 15))?;
            let ids = Indices::new(idx.clone(), &[batch, picks])?;
            let dev = dev.clone();
            Ok(Box::new(move || dev.backend().scatter_add_rows(&dy, &ids, &spec).map(drop)))
        }),
        reference: Some(Box::new(move || {
            let (dy, idx) = (values(n, 15), idx2.clone());
            Box::new(move || drop(reference::scatter_add_rows(&dy, &idx, &spec)))
        })),
    }
}

fn concat_case(batch: usize, rows: usize, width: usize) -> Case {
    // The decoder's tokens after its cls token: [N, 49, 64] into rows 1.. of [N, 50, 64].
    let spec = CopyRowsSpec { batch, rows, width, src_rows: rows, src_offset: 0, dst_rows: rows + 1, dst_offset: 1 };
    let (ns, nd) = (batch * rows * width, batch * (rows + 1) * width);
    Case {
        name: "concat tokens (copy rows)",
        shape: format!("[{batch},{rows},{width}] -> [{batch},{},{width}]", rows + 1),
        work: Work::Bytes(8.0 * ns as f64),
        prepare: Box::new(move |dev| {
            let (src, dst) = (up(dev, &values(ns, 16))?, up(dev, &vec![0.0; nd])?);
            let dev = dev.clone();
            Ok(Box::new(move || dev.backend().copy_rows_into(&src, &dst, &spec)))
        }),
        reference: Some(Box::new(move || {
            let (src, mut dst) = (values(ns, 16), vec![0.0; nd]);
            Box::new(move || reference::copy_rows_into(&src, &mut dst, &spec))
        })),
    }
}

fn permute_case(batch: usize, seq: usize, heads: usize, dim: usize) -> Case {
    // The head split of the separate-q/k/v attention: [N, T, 3, H, d] -> [3, N, H, T, d].
    let shape = [batch, seq, 3, heads, dim];
    let perm = [2, 0, 3, 1, 4];
    let n: usize = shape.iter().product();
    one_input_case(
        "permute (head split)",
        format!("{shape:?} by {perm:?}"),
        Work::Bytes(8.0 * n as f64),
        values(n, 17),
        move |b, x| b.permute(x, &shape, &perm),
        move |x| drop(reference::permute(x, &shape, &perm)),
    )
}

fn bias_grad_case(rows: usize, cols: usize) -> Case {
    // A bias gradient: the column sums of dy.
    let spec = AxisSpec { outer: 1, axis: rows, inner: cols };
    one_input_case(
        "bias gradient (column sums)",
        format!("[{rows},{cols}] -> [{cols}]"),
        Work::Bytes(4.0 * (rows * cols) as f64),
        values(rows * cols, 18),
        move |b, x| b.sum_axis(x, &spec),
        move |x| drop(reference::sum_axis(x, &spec)),
    )
}

fn loss_case(rows: usize, patch: usize, backward: bool) -> Case {
    // The norm-pix loss over every patch of the batch, and its gradient.
    let spec = MaeLossSpec { rows, patch, norm_pix: true };
    let n = rows * patch;
    let mask: Vec<f32> = (0..rows).map(|r| if r % 4 == 0 { 0.0 } else { 1.0 }).collect();
    let mask2 = mask.clone();
    Case {
        name: if backward { "mae loss bwd" } else { "mae loss fwd" },
        shape: format!("[{rows},{patch}]"),
        work: Work::Bytes(if backward { 12.0 } else { 8.0 } * n as f64),
        prepare: Box::new(move |dev| {
            let (p, t, m) = (up(dev, &values(n, 19))?, up(dev, &values(n, 20))?, up(dev, &mask)?);
            let (d, c) = (up(dev, &[1.0])?, up(dev, &[rows as f32])?);
            let dev = dev.clone();
            Ok(Box::new(move || {
                let b = dev.backend();
                if backward {
                    b.mae_loss_backward(&p, &t, &m, &d, &c, &spec)
                } else {
                    b.mae_loss_rows(&p, &t, &m, &spec)
                }
                .map(drop)
            }))
        }),
        reference: Some(Box::new(move || {
            let (p, t, m) = (values(n, 19), values(n, 20), mask2.clone());
            Box::new(move || {
                if backward {
                    drop(reference::mae_loss_backward(&p, &t, &m, 1.0 / rows as f32, &spec))
                } else {
                    drop(reference::mae_loss_rows(&p, &t, &m, &spec))
                }
            })
        })),
    }
}

/// Median seconds per call: batches of calls (doubling until one takes 50 ms), synchronised.
fn time_it(mut f: impl FnMut() -> engine::Result<()>, sync: &dyn Fn() -> engine::Result<()>) -> engine::Result<f64> {
    f()?;
    sync()?;
    let mut iters = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        sync()?;
        if t.elapsed().as_secs_f64() > 0.05 || iters >= 1 << 14 {
            break;
        }
        iters *= 2;
    }
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        sync()?;
        samples.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[2])
}

fn rate(work: Work, secs: f64) -> String {
    match work {
        Work::Flops(f) => format!("{:.1} GFLOP/s", f / secs / 1e9),
        Work::Bytes(b) => format!("{:.1} GB/s", b / secs / 1e9),
    }
}

/// The kernel table in markdown: columns CPU reference, fast CPU, and GPU when given.
pub fn kernel_table(gpu: Option<&Device>, with_reference: bool, batch: usize) -> Result<String> {
    let mut s = String::new();
    let mut header = String::from("| kernel | shape |");
    let mut rule = String::from("|---|---|");
    if with_reference {
        header.push_str(" CPU reference |");
        rule.push_str("---:|");
    }
    header.push_str(" fast CPU |");
    rule.push_str("---:|");
    if gpu.is_some() {
        header.push_str(" GPU (wall) | GPU (kernel) |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    // ViT-B's large products last: they do not depend on `batch`.
    for c in cases(batch).into_iter().chain(vit_b_matmul_cases()) {
        let mut row = format!("| {} | {} |", c.name, c.shape);
        if with_reference && let Some(r) = &c.reference {
            let mut f = r();
            let secs = time_it(
                || {
                    f();
                    Ok(())
                },
                &|| Ok(()),
            )?;
            let _ = write!(row, " {} |", rate(c.work, secs));
        } else if with_reference {
            row.push_str(" n/a |");
        }
        let cpu = Device::Cpu;
        let secs = time_it((c.prepare)(&cpu)?, &|| Ok(()))?;
        let _ = write!(row, " {} |", rate(c.work, secs));
        if let Some(dev) = gpu {
            let f = (c.prepare)(dev)?;
            let sync = || dev.synchronize();
            let secs = time_it(f, &sync)?;
            let _ = write!(row, " {} |", rate(c.work, secs));
            let kernel: String = match dev {
                #[cfg(feature = "gpu")]
                Device::Gpu(g) if g.context().has_timestamps() => {
                    let mut f = (c.prepare)(dev)?;
                    g.context().start_profiling()?;
                    for _ in 0..20 {
                        f()?;
                    }
                    // Every dispatch of these 20 calls belongs to this op (a backward may be several).
                    let prof = g.context().stop_profiling()?;
                    let total_ns: f64 = prof.iter().map(|(_, _, ns)| ns).sum();
                    if total_ns > 0.0 { rate(c.work, total_ns * 1e-9 / 20.0) } else { "n/a".into() }
                }
                _ => "n/a".into(),
            };
            let _ = write!(row, " {kernel} |");
        }
        let _ = writeln!(s, "{row}");
    }
    Ok(s)
}
