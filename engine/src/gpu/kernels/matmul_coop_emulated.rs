//! `shaders/matmul_coop.wgsl` on an adapter without cooperative matrices (lavapipe, in CI): its
//! source with each cooperative-matrix operation replaced by plain WGSL that computes the same
//! block from workgroup memory, everything else (the launcher, the grid, split-K, the staging and
//! its f16 rounding, the layouts each transpose picks, the strides and offsets of every block
//! load, the epilogue) left as it is. What only a device checks is what the replacement assumes:
//! that `coopLoadT` reads a block row-major and `coopLoad` column-major with the given stride (as
//! naga emits them: `RowMajorKHR` / `ColumnMajorKHR`), and that a subgroup is 32 consecutive
//! invocations (`gpu_tensor_cores.rs` runs the real kernel there).
//!
//! The emulation: a block of op(A) or op(B) is its address in `As` or `Bs`, its stride and its
//! layout; an accumulator is 8 values per invocation, lane l holding elements `e * 32 + l` of the
//! row-major 16 x 16 block, which `coopStoreT` into the subgroup's scratch lays out where the
//! epilogue reads them.

use crate::cpu::matmul::{Precision, with_precision};
use crate::{Device, Rng, Tensor, backward, ops};

/// The emulated kernel's name for the pipeline cache and the launcher.
pub(crate) const SHADER: &str = "matmul_coop_emulated";

/// Plain-WGSL stand-ins for the cooperative-matrix types and operations the kernel uses.
const EMULATION: &str = r#"
struct FragA { at: u32, stride: u32, row_major: u32 }
struct FragB { at: u32, stride: u32, row_major: u32 }
struct Acc { v: array<f32, 8> }
var<private> emu_lane: u32;

// Element (r, k) of a block of op(A); (k, c) of a block of op(B).
fn a_at(f: FragA, r: u32, k: u32) -> f32 {
    if (f.row_major != 0u) { return f32(As[f.at + r * f.stride + k]); }
    return f32(As[f.at + k * f.stride + r]);
}
fn b_at(f: FragB, k: u32, c: u32) -> f32 {
    if (f.row_major != 0u) { return f32(Bs[f.at + k * f.stride + c]); }
    return f32(Bs[f.at + c * f.stride + k]);
}
fn emu_mma(a: FragA, b: FragB, c: Acc) -> Acc {
    var out = c;
    for (var e = 0u; e < 8u; e++) {
        let idx = e * 32u + emu_lane;
        var s = 0.0;
        for (var k = 0u; k < 16u; k++) { s += a_at(a, idx / 16u, k) * b_at(b, k, idx % 16u); }
        out.v[e] += s;
    }
    return out;
}
fn emu_store(c: Acc, at: u32) {
    for (var e = 0u; e < 8u; e++) { scratch[at + e * 32u + emu_lane] = c.v[e]; }
}
"#;

/// f32 to f16 and back, to nearest even (`cpu/matmul/f16.rs` in WGSL), for adapters without f16.
const ROUND_F16: &str = r#"
fn round_f16(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let mag = bits & 0x7fffffffu;
    let sign = bits & 0x80000000u;
    if (mag > 0x7f800000u) { return x; }
    if (mag >= 0x477ff000u) { return bitcast<f32>(sign | 0x7f800000u); }
    if (mag < 0x38800000u) {
        let q = round(bitcast<f32>(mag) * 16777216.0) / 16777216.0;
        return bitcast<f32>(sign | bitcast<u32>(q));
    }
    return bitcast<f32>((bits + 0xfffu + ((bits >> 13u) & 1u)) & ~0x1fffu);
}
"#;

/// Replaces every `name<T>(&array[index], stride)` or `name(x, &array[index], stride)` call in the
/// code (not the comments) of `src` with what `with` makes of (the text between `name` and `&`, the
/// array, the index, the stride). A call lies on one line.
fn replace_calls(src: &str, name: &str, with: impl Fn(&str, &str, &str, &str) -> String) -> String {
    let lines: Vec<String> = src
        .lines()
        .map(|l| if l.trim_start().starts_with("//") { l.to_string() } else { replace_in_line(l, name, &with) })
        .collect();
    lines.join("\n")
}

fn replace_in_line(src: &str, name: &str, with: &impl Fn(&str, &str, &str, &str) -> String) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(at) = rest.find(name) {
        out.push_str(&rest[..at]);
        let call = &rest[at + name.len()..];
        let open = call.find('&').expect("a pointer argument");
        let (generic, after) = (&call[..open], &call[open + 1..]);
        let bracket = after.find('[').expect("an indexed array");
        let array = &after[..bracket];
        let close = after.find(']').expect("the index's end");
        let index = &after[bracket + 1..close];
        let tail = &after[close + 1..];
        let end = tail.find(')').expect("the call's end");
        let stride = tail[..end].trim_start_matches(',').trim();
        out.push_str(&with(generic, array, index, stride));
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The kernel's source with the cooperative-matrix operations emulated; with `f16` the staged
/// tiles stay f16 (the adapter has f16), else f32 holding f16 values.
fn emulated_source(f16: bool) -> String {
    let mut s = super::super::shaders::source("matmul_coop").expect("registered").to_string();
    s = s.replace("// Bounds: unchecked.", "// Bounds: checked (the emulation, under wgpu's checks).");
    s = s.replace("// Loops: finite.", "// Loops: bounded (the emulation, under wgpu's checks).");
    s = s.replace("enable wgpu_cooperative_matrix;", "");
    if !f16 {
        s = s
            .replace("enable f16;", "")
            .replace("array<f16, 5120>", "array<f32, 5120>")
            .replace("f16(v)", "round_f16(v)");
        s.push_str(ROUND_F16);
    }
    s = s
        .replace("coop_mat16x16<f16, A>", "FragA")
        .replace("coop_mat16x16<f16, B>", "FragB")
        .replace("coop_mat16x16<f32, C>", "Acc")
        .replace("coopMultiplyAdd(", "emu_mma(");
    // coopStoreT first: "coopLoad" is not a prefix of it, but keep the order obvious.
    s = replace_calls(&s, "coopStoreT(", |acc, _, index, _| {
        format!("emu_store({}, {index})", acc.trim_end_matches(", "))
    });
    s = replace_calls(&s, "coopLoadT", |ty, _, index, stride| {
        format!("{}({index}, {stride}, 1u)", ty.trim_matches(['<', '>', '(']))
    });
    s = replace_calls(&s, "coopLoad", |ty, _, index, stride| {
        format!("{}({index}, {stride}, 0u)", ty.trim_matches(['<', '>', '(']))
    });
    let entry = s.find("fn matmul_coop(").expect("the entry point");
    let body = entry + s[entry..].find('{').expect("its body") + 1;
    s.insert_str(body, "\n    emu_lane = t % 32u;");
    s.push_str(EMULATION);
    let code = s.lines().filter(|l| !l.trim_start().starts_with("//"));
    let unknown: Vec<&str> = code.filter(|l| l.contains("coop") && !l.contains("fn matmul_coop(")).collect();
    assert!(unknown.is_empty(), "operations the emulation does not know: {unknown:#?}");
    s
}

/// The GPU with the emulated kernel registered, or `None` (after saying why) when it has real
/// tensor cores (`gpu_tensor_cores.rs` covers it) or no adapter (`CI` makes that fail).
fn emulating_gpu() -> Option<Device> {
    let dev = crate::gpu::test_device()?;
    let Device::Gpu(g) = &dev else { unreachable!() };
    if g.context().has_f16_tensor_cores() {
        eprintln!("SKIPPED: this adapter has tensor cores; gpu_tensor_cores.rs tests the real kernel");
        return None;
    }
    super::super::shaders::add_test_source(
        SHADER,
        emulated_source(g.context().features.contains(wgpu::Features::SHADER_F16)),
    );
    Some(dev)
}

/// `f` at f16 on `dev`, forward and backward (a fixed weighting of the output), the emulated kernel
/// taking every product on a GPU: the output and each input's gradient.
fn at_f16(
    dev: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> crate::Result<Tensor>,
) -> Vec<Vec<f32>> {
    at_f16_packed(dev, inputs, f, false).0
}

/// `at_f16`, and with `packed` the inputs after the first (a layer's parameters) packed on the
/// GPU, each with its range of a gradient buffer laid out alike as its gradient home, as the
/// packed AdamW sets them; also whether each input's gradient lies in its home.
fn at_f16_packed(
    dev: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> crate::Result<Tensor>,
    packed: bool,
) -> (Vec<Vec<f32>>, Vec<bool>) {
    let emulate = dev.is_gpu();
    super::matmul::emulate_tensor_cores(emulate);
    let result = with_precision(Precision::F16, || {
        let mut ts: Vec<Tensor> =
            inputs.iter().map(|(v, s)| Tensor::from_slice(v, s, dev).unwrap().with_grad()).collect();
        let mut homes = vec![None; ts.len()];
        if packed {
            let params = crate::packing::pack(&ts[1..], dev).unwrap();
            let (_, views) = crate::packing::Packed::of(&params).expect("packed on a GPU").zeros_like().unwrap();
            for (i, (p, home)) in params.into_iter().zip(views).enumerate() {
                p.set_grad_home(Some(home.clone())).unwrap();
                (ts[i + 1], homes[i + 1]) = (p, Some(home));
            }
        }
        let y = f(&ts).unwrap();
        let mut rng = Rng::new(99);
        let w: Vec<f32> = (0..y.numel()).map(|_| rng.normal()).collect();
        backward(&y.mul(&Tensor::from_vec(w, y.shape(), dev).unwrap()).unwrap().sum().unwrap()).unwrap();
        let mut out = vec![y.to_vec().unwrap()];
        out.extend(ts.iter().map(|t| t.grad().map(|g| g.to_vec().unwrap()).unwrap_or_default()));
        let at_home = ts
            .iter()
            .zip(&homes)
            .map(|(t, h)| h.as_ref().zip(t.grad()).is_some_and(|(h, g)| g.storage().same_as(h)))
            .collect();
        (out, at_home)
    });
    super::matmul::emulate_tensor_cores(false);
    result
}

/// Values of magnitude 10^-2 .. 10^2 and both signs (inside f16's normal range).
fn wide(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = 10f32.powf(rng.uniform_range(-2.0, 2.0));
            if rng.uniform() < 0.5 { -v } else { v }
        })
        .collect()
}

/// The GPU's emulated tensor-core run and the CPU's f16 products agree to f32 summation order:
/// `|gpu - cpu| <= atol + 1e-4 |cpu|` with `atol` the f32 kernels' for sums of `depth` products.
fn assert_agree(
    gpu: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> crate::Result<Tensor>,
    depth: usize,
    what: &str,
) {
    let launched = super::matmul::coop_launches();
    let got = at_f16(gpu, inputs, f);
    assert!(super::matmul::coop_launches() > launched, "{what}: no product ran on the emulated kernel");
    assert_agrees_with_the_cpu(got, inputs, f, depth, what);
}

/// `got` (a GPU run of `at_f16`'s, on the emulated kernel) against the CPU's run, as `assert_agree`.
fn assert_agrees_with_the_cpu(
    got: Vec<Vec<f32>>,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> crate::Result<Tensor>,
    depth: usize,
    what: &str,
) {
    let want = at_f16(&Device::Cpu, inputs, f);
    let scale = inputs.iter().flat_map(|(v, _)| v.iter()).fold(1.0f32, |m, x| m.max(x.abs()));
    let atol = 2e-5 * (depth as f32).sqrt() * scale * scale;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: part {i}");
        for (j, (&g, &w)) in g.iter().zip(w).enumerate() {
            assert!(
                (g - w).abs() <= atol + 1e-4 * w.abs(),
                "{what}: part {i} (0 the output, then gradients) element {j}: GPU {g}, CPU {w}"
            );
        }
    }
}

#[test]
fn the_tensor_core_kernel_with_emulated_blocks_matches_the_cpu_at_f16_on_uneven_shapes() {
    let Some(gpu) = emulating_gpu() else { return };
    let mut rng = Rng::new(71);
    // Uneven shapes; over one 128 x 128 tile and one K step; split-K (few tiles, long K, no bias).
    for &(m, n, k) in &[(1, 1, 1), (1, 137, 3), (45, 65, 33), (129, 257, 63), (45, 65, 1100)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // With a bias no product splits K: the long-K shape runs without one only (the
            // emulation is slow on a software GPU).
            for with_bias in if k > 1000 { &[false][..] } else { &[false, true][..] } {
                let with_bias = *with_bias;
                let mut inputs = vec![
                    (wide(m * k, &mut rng), if ta { vec![k, m] } else { vec![m, k] }),
                    (wide(k * n, &mut rng), if tb { vec![n, k] } else { vec![k, n] }),
                ];
                if with_bias {
                    inputs.push((wide(n, &mut rng), vec![n]));
                }
                let what = format!("emulated f16 matmul {m}x{n}x{k} ta={ta} tb={tb} bias={with_bias}");
                assert_agree(
                    &gpu,
                    &inputs,
                    &|t| ops::matmul_ex(&t[0], &t[1], t.get(2), ta, tb),
                    m.max(n).max(k),
                    &what,
                );
            }
        }
    }
}

#[test]
fn the_tensor_core_kernel_with_emulated_blocks_runs_linear_layers_gelu_and_batches() {
    let Some(gpu) = emulating_gpu() else { return };
    let mut rng = Rng::new(72);
    let (rows, d_in, d_out) = (133, 36, 70);
    let inputs = [
        (wide(rows * d_in, &mut rng), vec![rows, d_in]),
        (wide(d_out * d_in, &mut rng), vec![d_out, d_in]),
        (wide(d_out, &mut rng), vec![d_out]),
    ];
    assert_agree(&gpu, &inputs, &|t| ops::linear(&t[0], &t[1], Some(&t[2])), rows, "emulated f16 linear");
    // GELU of values up to 10^4 is the identity or 0: keep these small.
    let small = |n: usize, rng: &mut Rng| (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect::<Vec<f32>>();
    let inputs = [
        (small(rows * d_in, &mut rng), vec![rows, d_in]),
        (small(d_out * d_in, &mut rng), vec![d_out, d_in]),
        (small(d_out, &mut rng), vec![d_out]),
    ];
    assert_agree(&gpu, &inputs, &|t| ops::linear_gelu(&t[0], &t[1], Some(&t[2])), rows, "emulated f16 linear_gelu");
    // An MLP, whose backward takes GELU's derivative in the store of fc2's input gradient: what
    // fc1 + GELU and fc2 apart give on the same kernel (each checked against the CPU above; the
    // two f16 products in a row put the CPU's and the GPU's summation orders a rounding apart).
    let mlp_inputs = [
        inputs[0].clone(),
        inputs[1].clone(),
        inputs[2].clone(),
        (small(d_in * d_out, &mut rng), vec![d_in, d_out]),
        (small(d_in, &mut rng), vec![d_in]),
    ];
    let fused = at_f16(&gpu, &mlp_inputs, &|t| ops::mlp(&t[0], &t[1], Some(&t[2]), &t[3], Some(&t[4])));
    let apart =
        at_f16(&gpu, &mlp_inputs, &|t| ops::linear(&ops::linear_gelu(&t[0], &t[1], Some(&t[2]))?, &t[3], Some(&t[4])));
    for (i, (f, a)) in fused.iter().zip(&apart).enumerate() {
        for (&f, &a) in f.iter().zip(a) {
            assert!((f - a).abs() <= 1e-6 + 1e-5 * a.abs(), "emulated f16 mlp, part {i}: fused {f}, apart {a}");
        }
    }
    let (batch, m, n, k) = (3, 17, 33, 40);
    let inputs = [(wide(batch * m * k, &mut rng), vec![batch, m, k]), (wide(k * n, &mut rng), vec![k, n])];
    assert_agree(&gpu, &inputs, &|t| ops::matmul(&t[0], &t[1]), 40, "emulated f16 batched matmul");
}

#[test]
fn the_emulated_kernel_is_valid_wgsl_with_and_without_f16() {
    for f16 in [false, true] {
        let source = emulated_source(f16);
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&source)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&source)));
    }
}

#[test]
fn the_tensor_core_kernel_with_emulated_blocks_writes_linear_gradients_into_their_packed_homes() {
    let Some(gpu) = emulating_gpu() else { return };
    let mut rng = Rng::new(73);
    // One pass, and a K long enough to split (1100 rows: two slices summed into the weight's home).
    for &(rows, d_in, d_out) in &[(133, 36, 70), (1100, 16, 20)] {
        let inputs = [
            (wide(rows * d_in, &mut rng), vec![rows, d_in]),
            (wide(d_out * d_in, &mut rng), vec![d_out, d_in]),
            (wide(d_out, &mut rng), vec![d_out]),
        ];
        let f = |t: &[Tensor]| ops::linear(&t[0], &t[1], Some(&t[2]));
        let launched = super::matmul::coop_launches();
        let (got, at_home) = at_f16_packed(&gpu, &inputs, &f, true);
        assert!(super::matmul::coop_launches() > launched, "no product ran on the emulated kernel");
        assert_eq!(at_home, [false, true, true], "the weight's and bias's gradients lie in their homes");
        assert_agrees_with_the_cpu(
            got,
            &inputs,
            &f,
            rows,
            &format!("emulated f16 linear {rows}x{d_in}->{d_out}, packed"),
        );
    }
}
