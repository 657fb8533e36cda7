//! Launcher for `shaders/matmul.wgsl` (64 x 64 tiles) and `shaders/matmul_large.wgsl` (128 x 128
//! tiles), choosing between them per product, and for `shaders/matmul_coop.wgsl` (f16 tensor cores),
//! which every product at `Precision::F16` runs on where the adapter has them.

use bytemuck::{Pod, Zeroable};

use super::{holds, u32_of};
use crate::backend::{AxisSpec, GradHomes, MatmulSpec};
use crate::cpu::matmul::Precision;
use crate::error::{Error, Result};
use crate::gpu::context::PipelineKey;
use crate::gpu::{Gpu, GpuBuffer, PACK_ALIGN};
use crate::storage::Storage;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::OnceLock;

/// The three kernels' parameters, laid out as `shaders/lib/matmul_params.wgsl` declares them.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_stride: u32,
    b_stride: u32,
    has_bias: u32,
    k_chunk: u32,
    c_stride: u32,
    sums_at: u32,
    _pad: [u32; 2],
}

impl Params {
    /// The parameters of product `s` over `batch` (or, under `split`, `(slices, k_chunk)` slices of
    /// K with strides 0), each batch or slice writing `c_stride` values of C (and the A sums at
    /// `sums_at` past its start).
    fn new(
        s: &MatmulSpec,
        split: Option<(usize, usize)>,
        has_bias: bool,
        c_stride: usize,
        sums_at: usize,
    ) -> Result<Params> {
        let (slices, k_chunk) = split.unwrap_or((s.batch, s.k));
        let stride = |v: usize| u32_of(if split.is_some() { 0 } else { v }, "batch stride");
        Ok(Params {
            m: u32_of(s.m, "M")?,
            n: u32_of(s.n, "N")?,
            k: u32_of(s.k, "K")?,
            batch: u32_of(slices, "batch")?,
            a_stride: stride(s.a_batch_stride)?,
            b_stride: stride(s.b_batch_stride)?,
            has_bias: has_bias as u32,
            k_chunk: u32_of(k_chunk, "K")?,
            c_stride: u32_of(c_stride, "C stride")?,
            sums_at: u32_of(sums_at, "C")?,
            _pad: [0; 2],
        })
    }
}

/// What the kernels bind as the bias and as Y (the GELU output, or GELU's input for its derivative):
/// the ones given, or a small stand-in buffer for each that is missing (one each: a buffer bound read-only and read-write in one
/// dispatch is refused).
fn bias_and_y(g: &Gpu, bias: Option<&Storage>, y: Option<&Storage>) -> Result<[Storage; 2]> {
    let or_stand_in = |given: Option<&Storage>| given.cloned().map_or_else(|| g.alloc(1), Ok);
    Ok([or_stand_in(bias)?, or_stand_in(y)?])
}

/// `out` as it is, or under split-K (`split`) its slices' partial products (each `c_stride`
/// values) added up by one `reduce.wgsl` pass, into `into` when given.
fn sum_slices(
    g: &Gpu,
    out: Storage,
    split: Option<(usize, usize)>,
    c_stride: usize,
    into: Option<&Storage>,
) -> Result<Storage> {
    match split {
        Some((slices, _)) => {
            super::reduce::sum_axis_into(g, &out, &AxisSpec { outer: 1, axis: slices, inner: c_stride }, into)
        }
        None => Ok(out),
    }
}

const TILE: usize = 64;
/// K step of the kernel's loop: split-K slices are multiples of it.
const BK: usize = 16;
/// When a kernel splits a product's K range into slices (`split_k`), and how.
struct SplitRule {
    /// The kernel's output tile side.
    tile: usize,
    /// Split-K is for products of fewer output tiles than this ...
    max_tiles: usize,
    /// ... and aims for about this many workgroups ...
    target_groups: usize,
    /// ... giving each slice at least this many values of K ...
    min_k: usize,
    /// ... in at least this many slices (fewer would not pay for the second pass) and at most 64 ...
    min_slices: usize,
    /// ... each a multiple of the kernel's K step.
    k_step: usize,
}

/// `matmul.wgsl`'s: fewer tiles than an eighth of a 256-workgroup wave, aiming at two workgroups
/// per core on a 100+ core GPU, at least 4 slices of 256.
const SPLIT_F32: SplitRule =
    SplitRule { tile: TILE, max_tiles: 32, target_groups: 256, min_k: 256, min_slices: 4, k_step: BK };
const SPLIT_MAX: usize = 64;

/// The tile side of `matmul_large.wgsl`.
const LARGE_TILE: usize = 128;
/// `matmul_large.wgsl`'s split-K, for products of fewer of its tiles than `LARGE_MIN_TILES`: about
/// four workgroups per SM of an H100 or H200, slices of at least 256 (32 of its K steps of 8).
/// ViT-B's weight gradients at batch 64 ([768, 2304] from K = 3200: 108 tiles, 5 slices; the
/// decoder's [512, 512] from K = 12608: 16 tiles, 33 slices), which on 64 x 64 tiles in one pass
/// ran at 4 - 14 TFLOP/s on an H200 (2026-12-04) and were a quarter of the step's kernel time.
const SPLIT_LARGE: SplitRule = SplitRule {
    tile: LARGE_TILE,
    max_tiles: LARGE_MIN_TILES,
    target_groups: 528,
    min_k: 256,
    min_slices: 2,
    k_step: 8,
};
/// `matmul_large.wgsl` runs products of at least this many of its tiles (over the batch too): two
/// waves of an H200's 132 SMs, two resident workgroups each. Below it, 4x as many 64 x 64 tiles keep
/// more of a large GPU busy (ViT-B's [3200, 768] outputs are 150 large tiles, 600 small ones) and
/// MAE's tall thin products at small batch need the workgroups.
const LARGE_MIN_TILES: usize = 2 * 132;

/// Which kernel the products run on: chosen per product, or one forced (for tests, which force the
/// large kernel onto small shapes, and for benchmarks that compare the two on one shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulTiles {
    /// `matmul_large.wgsl` for products of at least `LARGE_MIN_TILES` tiles of 128 x 128 whose
    /// padding to them adds at most a quarter to the outputs computed, and for products that its
    /// split-K (`SPLIT_LARGE`) gives at least as many workgroups; else `matmul.wgsl`.
    Auto,
    /// Always `matmul.wgsl`'s 64 x 64 tiles (with its own split-K).
    Small,
    /// `matmul_large.wgsl` for every product, however small, split over K where `SPLIT_LARGE` says.
    Large,
}

impl MatmulTiles {
    /// `MAE_GPU_MATMUL_TILES` (`auto`, `small`, `large`), read once; `Auto` when unset. For A/B runs
    /// of a whole training step on a device.
    fn from_env() -> MatmulTiles {
        static FROM_ENV: OnceLock<MatmulTiles> = OnceLock::new();
        *FROM_ENV.get_or_init(|| match std::env::var("MAE_GPU_MATMUL_TILES") {
            Err(_) => MatmulTiles::Auto,
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "auto" => MatmulTiles::Auto,
                "small" => MatmulTiles::Small,
                "large" => MatmulTiles::Large,
                _ => {
                    eprintln!("MAE_GPU_MATMUL_TILES={v}: not auto, small or large; choosing per product");
                    MatmulTiles::Auto
                }
            },
        })
    }
}

thread_local! {
    /// This thread's forced choice (see `force_matmul_tiles`), per thread so that tests running
    /// beside each other in one process do not take each other's.
    static FORCED_TILES: Cell<Option<MatmulTiles>> = const { Cell::new(None) };
}

/// For tests and benchmarks: the products this thread records from now on run on `tiles` (`None`:
/// back to `MAE_GPU_MATMUL_TILES`, else the choice per product). Returns the previous setting.
pub fn force_matmul_tiles(tiles: Option<MatmulTiles>) -> Option<MatmulTiles> {
    FORCED_TILES.with(|f| f.replace(tiles))
}

/// Whether a product of `s` without bias or GELU (a weight gradient, say) runs on
/// `matmul_large.wgsl`'s 128 x 128 tiles, as this thread's launches would choose now: for
/// benchmarks, to label a timing.
pub fn runs_on_large_tiles(s: &MatmulSpec) -> bool {
    plan(s, false).large
}

/// Which kernel runs a product, and whether it splits K.
struct Plan {
    /// `matmul_large.wgsl` (else `matmul.wgsl`).
    large: bool,
    /// `(slices, k_chunk)` under split-K.
    split: Option<(usize, usize)>,
}

/// The kernel and split for product `s` (`epilogue`: with a bias or GELU, which rule out split-K).
fn plan(s: &MatmulSpec, epilogue: bool) -> Plan {
    let small = || Plan { large: false, split: split_k(s, epilogue, &SPLIT_F32) };
    match FORCED_TILES.with(Cell::get).unwrap_or_else(MatmulTiles::from_env) {
        MatmulTiles::Small => small(),
        MatmulTiles::Large => Plan { large: true, split: split_k(s, epilogue, &SPLIT_LARGE) },
        MatmulTiles::Auto => {
            let tiles = s.batch * s.m.div_ceil(LARGE_TILE) * s.n.div_ceil(LARGE_TILE);
            // The outputs each kernel computes, padding included: the large tiles may add at most a
            // quarter to the small tiles' (a [64, 2048] product would compute twice its outputs).
            let padded = |tile: usize| s.m.next_multiple_of(tile) * s.n.next_multiple_of(tile);
            if 4 * padded(LARGE_TILE) > 5 * padded(TILE) {
                return small();
            }
            if tiles >= LARGE_MIN_TILES {
                return Plan { large: true, split: None };
            }
            // Few tiles and a K longer than either side of the output (the weight gradients,
            // dY^T X over every token): split K over enough workgroups to fill the GPU, or leave it
            // to the small tiles (4x as many of them; the micro preset's weight gradients have 2 - 4
            // large tiles). Products with a shorter K keep the small tiles' 4x more workgroups.
            if s.k < s.m.max(s.n) {
                return small();
            }
            match split_k(s, epilogue, &SPLIT_LARGE) {
                Some((slices, k_chunk)) if tiles * slices >= LARGE_MIN_TILES => {
                    Plan { large: true, split: Some((slices, k_chunk)) }
                }
                _ => small(),
            }
        }
    }
}

/// `(slices, k_chunk)` for split-K under `rule`: a batch-1 product without bias or GELU whose output
/// has too few of the kernel's tiles to fill a large GPU and whose K is long (the micro preset's weight gradients:
/// [3328, 128]^T x [3328, 512] is 16 tiles) runs its K range as slices of `k_chunk` (a multiple of
/// `BK`) in parallel, one partial product each, summed after. `None` when one pass is better: many
/// tiles already, or too short a K to repay the pass that adds the partials. On an H200 the micro
/// step's weight gradients (1 - 16 workgroups each) were 72% of its kernel time in one pass.
fn split_k(s: &MatmulSpec, epilogue: bool, rule: &SplitRule) -> Option<(usize, usize)> {
    let tiles = s.m.div_ceil(rule.tile) * s.n.div_ceil(rule.tile);
    if s.batch != 1 || epilogue || tiles >= rule.max_tiles {
        return None;
    }
    let want = (s.k / rule.min_k).min(rule.target_groups.div_ceil(tiles)).min(SPLIT_MAX);
    if want < rule.min_slices {
        return None;
    }
    let k_chunk = s.k.div_ceil(want).next_multiple_of(rule.k_step);
    let slices = s.k.div_ceil(k_chunk);
    (slices >= 2).then_some((slices, k_chunk))
}

/// True when every 4-element group the vec4 loads read is aligned and inside one row.
fn vec4_ok(s: &MatmulSpec) -> bool {
    let a_contig = if s.trans_a { s.m } else { s.k };
    let b_contig = if s.trans_b { s.k } else { s.n };
    [a_contig, b_contig, s.a_batch_stride, s.b_batch_stride].iter().all(|v| v.is_multiple_of(4))
}

pub fn matmul(g: &Gpu, a: &Storage, b: &Storage, bias: Option<&Storage>, s: &MatmulSpec) -> Result<Storage> {
    Ok(launch(g, a, b, bias, s, Extra::None, None)?.0)
}

/// `C gelu'(h)` in one dispatch: the store of each C tile multiplies it by GELU's derivative at `h`
/// (an MLP's backward: fc2's input gradient carried through the GELU after fc1).
pub fn matmul_gelu_backward(g: &Gpu, a: &Storage, b: &Storage, h: &Storage, s: &MatmulSpec) -> Result<Storage> {
    Ok(launch(g, a, b, None, s, Extra::GeluGrad(h), None)?.0)
}

/// `(C, gelu(C))` in one dispatch: the store of each C tile also writes its GELU.
pub fn matmul_gelu(
    g: &Gpu,
    a: &Storage,
    b: &Storage,
    bias: Option<&Storage>,
    s: &MatmulSpec,
) -> Result<(Storage, Storage)> {
    let (c, y) = launch(g, a, b, bias, s, Extra::Gelu, None)?;
    Ok((c, y.expect("asked for gelu")))
}

/// `(op(A) op(B), sum_k A[k, :])` for `A` stored `[K, M]` (`trans_a`, batch 1): a linear layer's
/// weight gradient `dY^T X` and its bias gradient, the sums made from the tiles of `dY` the product
/// stages anyway. One dispatch (two under split-K: the product's partials and the sums' share one
/// reduction) where the pair takes two or three. With `into` (the weight's and bias's gradient
/// homes) it writes them there where they lie as the launch writes C and the sums (`homes_span`)
/// and returns them; otherwise fresh storage.
pub fn matmul_with_a_sums(
    g: &Gpu,
    a: &Storage,
    b: &Storage,
    s: &MatmulSpec,
    into: GradHomes<'_>,
) -> Result<(Storage, Storage)> {
    assert!(s.trans_a && s.batch == 1, "row sums of op(A) are for A stored [K, M], batch 1: {s:?}");
    let (c, sums) = launch(g, a, b, None, s, Extra::ASums, into)?;
    Ok((c, sums.expect("asked for sums")))
}

/// What a launch writes besides C, or does to it.
#[derive(Clone, Copy)]
enum Extra<'a> {
    None,
    /// `gelu(C)`, as large as C.
    Gelu,
    /// C times `gelu'(H)` for this `H`, as large as C (bound where `gelu(C)` would be written).
    GeluGrad(&'a Storage),
    /// The M sums of op(A)'s rows over K, after C in one buffer (returned as views).
    ASums,
}

impl Extra<'_> {
    /// What the launch binds as Y (binding 7): the GELU output it allocated, or the `H` it reads.
    fn y<'s>(&'s self, gelu_out: Option<&'s Storage>) -> Option<&'s Storage> {
        match self {
            Extra::GeluGrad(h) => Some(h),
            _ => gelu_out,
        }
    }

    /// Whether C gets an epilogue that rules out split-K.
    fn has_epilogue(&self, bias: Option<&Storage>) -> bool {
        bias.is_some() || matches!(self, Extra::Gelu | Extra::GeluGrad(_))
    }
}

/// Where a slice's sums start past its `m n` values of C: a multiple of `PACK_ALIGN` values (256
/// bytes), so that a view there binds at an offset any device accepts, and where a packed bias
/// starts past its weight (`gpu::packed_starts`).
fn sums_at(m: usize, n: usize) -> usize {
    (m * n).next_multiple_of(PACK_ALIGN)
}

/// One view over a weight's and its bias's gradient homes, `c_stride` values from the weight's
/// start, when they lie as a launch with the sums writes C and the sums: the weight's `m n` values
/// in one buffer and the bias's `m` at `sums_at(m, n)` past them (as `pack` lays out a linear
/// layer's parameters). Under split-K the sum of the slices writes all `c_stride` values, so the
/// span must then hold nothing else: no gap after C, no room past the sums (`m >= 4`).
fn homes_span(into: GradHomes<'_>, s: &MatmulSpec, c_stride: usize, split: bool) -> Option<Storage> {
    let [Storage::Gpu(w), Storage::Gpu(bias)] = into? else { return None };
    let parent = w.parent()?;
    let (mn, at) = (s.m * s.n, sums_at(s.m, s.n));
    let start = w.offset() as usize / 4;
    let fits = bias.parent().is_some_and(|p| Rc::ptr_eq(p, parent))
        && w.len() == mn
        && bias.len() == s.m
        && bias.offset() as usize == 4 * (start + at)
        && start + c_stride <= parent.len()
        && (!split || (mn == at && c_stride == at + s.m));
    fits.then(|| Storage::Gpu(Rc::new(GpuBuffer::view(parent, start, c_stride))))
}

fn launch(
    g: &Gpu,
    a: &Storage,
    b: &Storage,
    bias: Option<&Storage>,
    s: &MatmulSpec,
    extra: Extra<'_>,
    into: GradHomes<'_>,
) -> Result<(Storage, Option<Storage>)> {
    let len = s.batch * s.m * s.n;
    let gelu = matches!(extra, Extra::Gelu);
    let y = if gelu { Some(g.alloc(len)?) } else { None };
    if len == 0 {
        assert!(!matches!(extra, Extra::ASums), "row sums of an empty product: the caller sums directly");
        return Ok((g.alloc(0)?, y));
    }
    if let Extra::GeluGrad(h) = extra {
        holds(h, len, "matmul: GELU's input for its derivative")?;
    }
    // The sizes the shader's in-bounds proof rests on (its header's `Bounds:` line).
    if a.len() < s.a_len() || b.len() < s.b_len() {
        return Err(Error::Shape(format!("matmul: operands of {} and {} values for {s:?}", a.len(), b.len())));
    }
    if let Some(bias) = bias {
        holds(bias, s.n, "matmul bias")?;
    }
    for (len, what) in [(s.a_len(), "A"), (s.b_len(), "B"), (len, "C")] {
        u32_of(len, what)?;
    }
    if Precision::current() == Precision::F16 && (g.ctx.has_f16_tensor_cores() || emulating_tensor_cores()) {
        return launch_coop(g, a, b, bias, s, extra, y, into);
    }
    let Plan { large, split } = plan(s, extra.has_epilogue(bias));
    let slices = split.map_or(s.batch, |(slices, _)| slices);
    let a_sums = matches!(extra, Extra::ASums);
    // Per slice: C, then (with the sums) padding to a 64-value boundary and the M sums (room for at
    // least 4, the smallest binding).
    let c_stride = if a_sums { sums_at(s.m, s.n) + s.m.max(4) } else { s.m * s.n };
    let p = Params::new(s, split, bias.is_some(), c_stride, sums_at(s.m, s.n))?;
    // C (with the sums after it), or under split-K each slice's partial C (and sums), summed after:
    // into the gradient homes where they lie as C and the sums do.
    u32_of(slices * c_stride, "C")?;
    let homes = if a_sums { homes_span(into, s, c_stride, split.is_some()) } else { None };
    let out = match (&homes, split) {
        (Some(span), None) => span.clone(),
        _ => g.alloc(slices * c_stride)?,
    };
    let [bias_buf, y_buf] = bias_and_y(g, bias, extra.y(y.as_ref()))?;
    let vec4 = vec4_ok(s);
    let constants = vec![
        ("TRANS_A", s.trans_a as u32),
        ("TRANS_B", s.trans_b as u32),
        ("GELU", gelu as u32),
        ("GELU_GRAD", matches!(extra, Extra::GeluGrad(_)) as u32),
        ("VEC4", vec4 as u32),
        ("A_SUMS", a_sums as u32),
    ];
    let (shader, tile) = if large { ("matmul_large", LARGE_TILE) } else { ("matmul", TILE) };
    let key = PipelineKey { shader, entry: shader, constants };
    let (ab, bb) = (g.buf(a)?, g.buf(b)?);
    // The shader names both views of each operand (scalar and vec4; its VEC4 branch is chosen at
    // pipeline creation, after the bind group layout is fixed), so both are bound, to the same buffer.
    let bindings: Vec<(u32, wgpu::BufferBinding)> = vec![
        (1, ab.clone()),
        (2, bb.clone()),
        (3, g.buf(&bias_buf)?),
        (4, g.buf(&out)?),
        (5, ab),
        (6, bb),
        (7, g.buf(&y_buf)?),
    ];
    let groups = [u32_of(s.n.div_ceil(tile), "column tiles")?, u32_of(s.m.div_ceil(tile), "row tiles")?, p.batch];
    g.ctx.dispatch_with_flops(&key, bytemuck::bytes_of(&p), &bindings, groups, s.flops() as u64)?;
    let out = sum_slices(g, out, split, c_stride, homes.as_ref())?;
    if !a_sums {
        return Ok((out, y));
    }
    if let (Some(_), Some([w, bias])) = (&homes, into) {
        return Ok((w.clone(), Some(bias.clone())));
    }
    let Storage::Gpu(both) = &out else { unreachable!("a GPU kernel's output lives on the GPU") };
    let view = |start, len| Storage::Gpu(Rc::new(GpuBuffer::view(both, start, len)));
    Ok((view(0, s.m * s.n), Some(view(sums_at(s.m, s.n), s.m))))
}

/// The tile side of `matmul_coop.wgsl`.
const COOP_TILE: usize = 128;
/// The tensor-core kernel's split-K: fewer tiles than a wave of an H100's or H200's 132 SMs, aiming
/// at two waves, at least 2 slices of 512 (a multiple of its K step, 32): ViT-B's weight gradients
/// at batch 64 ([768, 2304] from K = 3200 is 108 tiles) and most of the micro preset's.
const SPLIT_COOP: SplitRule =
    SplitRule { tile: COOP_TILE, max_tiles: 132, target_groups: 264, min_k: 512, min_slices: 2, k_step: 32 };

/// Product `s` on `matmul_coop.wgsl` (f16 operands, f32 sums; the caller checked the operands and
/// that the adapter has f16 tensor cores). The bias-gradient sums (`Extra::ASums`) are summed from
/// A in f32 by a second pass, as the CPU backend does: the kernel has no A_SUMS. Being two
/// results, they go to the gradient homes `into` each on its own (of the right sizes).
#[allow(clippy::too_many_arguments)]
fn launch_coop(
    g: &Gpu,
    a: &Storage,
    b: &Storage,
    bias: Option<&Storage>,
    s: &MatmulSpec,
    extra: Extra<'_>,
    y: Option<Storage>,
    into: GradHomes<'_>,
) -> Result<(Storage, Option<Storage>)> {
    let gelu = matches!(extra, Extra::Gelu);
    let split = split_k(s, extra.has_epilogue(bias), &SPLIT_COOP);
    let slices = split.map_or(s.batch, |(slices, _)| slices);
    let c_stride = s.m * s.n;
    let p = Params::new(s, split, bias.is_some(), c_stride, 0)?;
    u32_of(slices * c_stride, "C")?;
    let into = into.filter(|[w, sums]| matches!(extra, Extra::ASums) && w.len() == c_stride && sums.len() == s.m);
    let out = match (into, split) {
        (Some([w, _]), None) => w.clone(),
        _ => g.alloc(slices * c_stride)?,
    };
    let [bias_buf, y_buf] = bias_and_y(g, bias, extra.y(y.as_ref()))?;
    let constants = vec![
        ("TRANS_A", s.trans_a as u32),
        ("TRANS_B", s.trans_b as u32),
        ("GELU", gelu as u32),
        ("GELU_GRAD", matches!(extra, Extra::GeluGrad(_)) as u32),
    ];
    #[cfg(test)]
    let shader = if emulating_tensor_cores() { super::matmul_coop_emulated::SHADER } else { "matmul_coop" };
    #[cfg(not(test))]
    let shader = "matmul_coop";
    #[cfg(test)]
    COOP_LAUNCHES.with(|n| n.set(n.get() + 1));
    let key = PipelineKey { shader, entry: "matmul_coop", constants };
    let bindings: Vec<(u32, wgpu::BufferBinding)> =
        vec![(1, g.buf(a)?), (2, g.buf(b)?), (3, g.buf(&bias_buf)?), (4, g.buf(&out)?), (7, g.buf(&y_buf)?)];
    let groups =
        [u32_of(s.n.div_ceil(COOP_TILE), "column tiles")?, u32_of(s.m.div_ceil(COOP_TILE), "row tiles")?, p.batch];
    g.ctx.dispatch_with_flops(&key, bytemuck::bytes_of(&p), &bindings, groups, s.flops() as u64)?;
    let out = sum_slices(g, out, split, c_stride, into.map(|[w, _]| w))?;
    if !matches!(extra, Extra::ASums) {
        return Ok((out, y));
    }
    // A is stored [K, M]: the sums over its K rows.
    let over_k = AxisSpec { outer: 1, axis: s.k, inner: s.m };
    let sums = super::reduce::sum_axis_into(g, a, &over_k, into.map(|[_, sums]| sums))?;
    Ok((out, Some(sums)))
}

#[cfg(test)]
thread_local! {
    /// Whether this thread's f16 products run `matmul_coop.wgsl` with its cooperative-matrix
    /// operations emulated in plain WGSL (`matmul_coop_emulated.rs`): the launcher, the staging,
    /// the layouts and the epilogue run on an adapter without tensor cores.
    static EMULATE_TENSOR_CORES: Cell<bool> = const { Cell::new(false) };
    /// Products this thread launched on `matmul_coop.wgsl` (or its emulation), for the tests.
    static COOP_LAUNCHES: Cell<usize> = const { Cell::new(0) };
}

/// How many products this thread has launched on the tensor-core kernel (or its emulation).
#[cfg(test)]
pub(crate) fn coop_launches() -> usize {
    COOP_LAUNCHES.with(Cell::get)
}

/// See `EMULATE_TENSOR_CORES`; always false outside the engine's unit tests.
fn emulating_tensor_cores() -> bool {
    #[cfg(test)]
    return EMULATE_TENSOR_CORES.with(Cell::get);
    #[cfg(not(test))]
    false
}

/// For the emulation's tests: this thread's f16 products run the emulated kernel while `on`.
#[cfg(test)]
pub(crate) fn emulate_tensor_cores(on: bool) {
    EMULATE_TENSOR_CORES.with(|e| e.set(on));
}
