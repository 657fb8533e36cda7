//! Launcher for `shaders/attention.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{grid_1d, grid_groups, holds, u32_of};
use crate::backend::{AttentionSpec, CopyRowsSpec, HeadLayout};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::context::PipelineKey;
use crate::storage::Storage;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    heads: u32,
    seq: u32,
    dim: u32,
    scale: f32,
    lay_q: [u32; 4],
    lay_k: [u32; 4],
    lay_v: [u32; 4],
    lay_o: [u32; 4],
    lay_dq: [u32; 4],
    lay_dk: [u32; 4],
    lay_dv: [u32; 4],
    off: [u32; 4],
    off_grad: [u32; 4],
}

/// The row kernels keep one query's row in registers of at most this many values.
pub const MAX_HEAD_DIM: usize = 128;
/// Rows a workgroup owns in the row kernels (one an invocation) and their streamed tile.
const ROWS_PER_GROUP: usize = 64;
const TILE_ROWS: usize = 16;
/// The tiled kernels: rows a workgroup owns (queries; keys in dkdv), rows of a streamed tile, and
/// the largest head dim their registers hold (two vec4 of columns per owned row and invocation).
const TILE_OWN: usize = 32;
const TILE_STREAM: usize = 16;
const TILED_MAX_DIM: usize = 64;

/// Which kernels run a spec: the tiled ones (`*_tiles`: 32 rows a workgroup, register-blocked tile
/// products) for head dims that are a multiple of 4 up to 64, the row kernels (one row an
/// invocation) for every other dim up to [`MAX_HEAD_DIM`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Tiles,
    Rows,
}

impl Path {
    /// `MAE_GPU_ATTENTION_ROWS=1` runs the row kernels for every dim: the A/B switch for timing the
    /// tiles against them on one device (read once).
    fn of(dim: usize) -> Path {
        static ROWS_ONLY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let rows_only = *ROWS_ONLY.get_or_init(|| std::env::var("MAE_GPU_ATTENTION_ROWS").is_ok_and(|v| v == "1"));
        if !rows_only && dim.is_multiple_of(4) && dim <= TILED_MAX_DIM { Path::Tiles } else { Path::Rows }
    }

    /// Bytes of workgroup memory of this path's largest entry point.
    fn shared_bytes(self, dim: usize) -> usize {
        match self {
            // backward_dkdv_tiles: four staged tiles of dim / 4 + 1 vec4 a row (own 32 rows each for
            // k and v, 16 each for q and dout), two [16, 32] blocks (P, dS), lse and delta of 16 rows.
            Path::Tiles => 16 * ((2 * TILE_OWN + 2 * TILE_STREAM) * (dim / 4 + 1) + 2 * 128) + 2 * 4 * TILE_STREAM,
            Path::Rows => (2 * TILE_ROWS * dim + 2 * TILE_ROWS) * 4,
        }
    }

    fn rows_per_group(self) -> usize {
        match self {
            Path::Tiles => TILE_OWN,
            Path::Rows => ROWS_PER_GROUP,
        }
    }

    fn entry(self, kernel: &'static str) -> &'static str {
        match (self, kernel) {
            (Path::Tiles, "forward") => "forward_tiles",
            (Path::Tiles, "backward_dq") => "backward_dq_tiles",
            (Path::Tiles, "backward_dkdv") => "backward_dkdv_tiles",
            _ => kernel,
        }
    }
}

/// Where q, k, v, out (and dout), dq, dk and dv live.
struct Layouts {
    q: HeadLayout,
    k: HeadLayout,
    v: HeadLayout,
    o: HeadLayout,
    dq: HeadLayout,
    dk: HeadLayout,
    dv: HeadLayout,
}

impl Layouts {
    fn separate(s: &AttentionSpec) -> Self {
        let c = HeadLayout::contiguous(s.seq, s.dim);
        // dk and dv share one buffer: dv in its second half.
        let dv = HeadLayout { offset: s.heads * s.seq * s.dim, ..c };
        Layouts { q: c, k: c, v: c, o: c, dq: c, dk: c, dv }
    }

    fn packed(s: &AttentionSpec, heads: usize) -> Self {
        let part = |w| HeadLayout::qkv(s.seq, heads, s.dim, w);
        Layouts {
            q: part(0),
            k: part(1),
            v: part(2),
            o: HeadLayout::merged(s.seq, heads, s.dim),
            dq: part(0),
            dk: part(1),
            dv: part(2),
        }
    }
}

fn lay(l: &HeadLayout) -> Result<[u32; 4]> {
    Ok([
        u32_of(l.group.max(1), "head group")?,
        u32_of(l.sample_stride, "sample stride")?,
        u32_of(l.head_stride, "head stride")?,
        u32_of(l.row_stride, "row stride")?,
    ])
}

/// One past the largest index a kernel touches through layout `l`: the last column of the last row
/// of the farthest head (`(h / group)` and `(h % group)` each at their largest).
fn extent(l: &HeadLayout, s: &AttentionSpec) -> usize {
    if s.heads == 0 || s.seq == 0 {
        return 0;
    }
    let group = l.group.max(1);
    ((s.heads - 1) / group) * l.sample_stride
        + (group - 1).min(s.heads - 1) * l.head_stride
        + l.offset
        + (s.seq - 1) * l.row_stride
        + s.dim
}

/// What the shader's in-bounds proof rests on (its header's `Bounds:` line): every buffer holds
/// its layout's extent, and every extent fits u32.
fn check(buffers: &[(&Storage, usize, &str)]) -> Result<()> {
    for &(buf, n, what) in buffers {
        u32_of(n, what)?;
        holds(buf, n, what)?;
    }
    Ok(())
}

fn setup(g: &Gpu, s: &AttentionSpec, l: &Layouts) -> Result<(Params, [u32; 3], Path)> {
    if s.dim == 0 || s.dim > MAX_HEAD_DIM {
        return Err(Error::Gpu(format!(
            "attention: head dim {} is outside the GPU kernel's 1..={MAX_HEAD_DIM}; \
             use more heads (a smaller width per head)",
            s.dim
        )));
    }
    let limit = g.ctx.limits.max_compute_workgroup_storage_size as usize;
    // A device with less workgroup memory than the tiles need runs the row kernels.
    let path = match Path::of(s.dim) {
        Path::Tiles if Path::Tiles.shared_bytes(s.dim) <= limit => Path::Tiles,
        _ => Path::Rows,
    };
    let shared = path.shared_bytes(s.dim);
    if shared > limit {
        return Err(Error::Gpu(format!(
            "attention: head dim {} needs {shared} bytes of workgroup memory, the device offers {limit} \
             (max_compute_workgroup_storage_size); use more heads",
            s.dim
        )));
    }
    let off = |l: &HeadLayout| u32_of(l.offset, "offset");
    let p = Params {
        heads: u32_of(s.heads, "heads")?,
        seq: u32_of(s.seq, "seq")?,
        dim: s.dim as u32,
        scale: s.scale,
        lay_q: lay(&l.q)?,
        lay_k: lay(&l.k)?,
        lay_v: lay(&l.v)?,
        lay_o: lay(&l.o)?,
        lay_dq: lay(&l.dq)?,
        lay_dk: lay(&l.dk)?,
        lay_dv: lay(&l.dv)?,
        off: [off(&l.q)?, off(&l.k)?, off(&l.v)?, off(&l.o)?],
        off_grad: [off(&l.dq)?, off(&l.dk)?, off(&l.dv)?, 0],
    };
    let [y, z, _] = grid_groups(s.heads)?;
    Ok((p, [u32_of(s.seq.div_ceil(path.rows_per_group()), "row blocks")?, y, z], path))
}

fn key(entry: &'static str, dim: usize) -> PipelineKey {
    PipelineKey { shader: "attention", entry, constants: vec![("HEAD_DIM", dim as u32)] }
}

fn run_forward(g: &Gpu, src: [&Storage; 3], l: &Layouts, s: &AttentionSpec) -> Result<(Storage, Storage)> {
    let n = s.heads * s.seq * s.dim;
    let (out, lse) = (g.alloc(n)?, g.alloc(s.heads * s.seq)?);
    if n == 0 {
        return Ok((out, lse));
    }
    let (p, groups, path) = setup(g, s, l)?;
    check(&[
        (src[0], extent(&l.q, s), "attention q"),
        (src[1], extent(&l.k, s), "attention k"),
        (src[2], extent(&l.v, s), "attention v"),
        (&out, extent(&l.o, s), "attention output"),
    ])?;
    g.ctx.dispatch(
        &key(path.entry("forward"), s.dim),
        bytemuck::bytes_of(&p),
        &[(1, g.buf(src[0])?), (2, g.buf(src[1])?), (3, g.buf(src[2])?), (4, g.buf(&out)?), (5, g.buf(&lse)?)],
        groups,
    )?;
    Ok((out, lse))
}

/// Runs the three backward kernels, writing dq into `dq` and dk, dv into `dkv` at their layouts.
#[allow(clippy::too_many_arguments)]
fn run_backward(
    g: &Gpu,
    src: [&Storage; 3],
    out: &Storage,
    lse: &Storage,
    dout: &Storage,
    l: &Layouts,
    s: &AttentionSpec,
    dq: &Storage,
    dkv: &Storage,
) -> Result<()> {
    let (p, groups, path) = setup(g, s, l)?;
    check(&[
        (src[0], extent(&l.q, s), "attention q"),
        (src[1], extent(&l.k, s), "attention k"),
        (src[2], extent(&l.v, s), "attention v"),
        (out, extent(&l.o, s), "attention output"),
        (dout, extent(&l.o, s), "attention output gradient"),
        (lse, s.heads * s.seq, "attention log-sum-exp"),
        (dq, extent(&l.dq, s), "attention dq"),
        (dkv, extent(&l.dk, s).max(extent(&l.dv, s)), "attention dk, dv"),
    ])?;
    let params = bytemuck::bytes_of(&p);
    let delta = g.alloc(s.heads * s.seq)?;
    // delta = rowwise dout . out: its own pass before the row kernels; the tiled dq pass makes it
    // for its rows (reading out) and writes it for the dkdv pass.
    if path != Path::Tiles {
        g.ctx.dispatch(
            &key("backward_prep", s.dim),
            params,
            &[(4, g.buf(out)?), (6, g.buf(dout)?), (7, g.buf(&delta)?)],
            grid_1d(s.heads * s.seq, 64)?,
        )?;
    }
    let inputs = [
        (1, g.buf(src[0])?),
        (2, g.buf(src[1])?),
        (3, g.buf(src[2])?),
        (5, g.buf(lse)?),
        (6, g.buf(dout)?),
        (7, g.buf(&delta)?),
    ];
    let mut bindings = inputs.to_vec();
    bindings.push((8, g.buf(dq)?));
    if path == Path::Tiles {
        bindings.push((4, g.buf(out)?));
    }
    g.ctx.dispatch(&key(path.entry("backward_dq"), s.dim), params, &bindings, groups)?;
    let mut bindings = inputs.to_vec();
    bindings.push((9, g.buf(dkv)?));
    g.ctx.dispatch(&key(path.entry("backward_dkdv"), s.dim), params, &bindings, groups)
}

pub fn forward(g: &Gpu, q: &Storage, k: &Storage, v: &Storage, s: &AttentionSpec) -> Result<(Storage, Storage)> {
    run_forward(g, [q, k, v], &Layouts::separate(s), s)
}

pub fn forward_qkv(g: &Gpu, qkv: &Storage, heads: usize, s: &AttentionSpec) -> Result<(Storage, Storage)> {
    run_forward(g, [qkv, qkv, qkv], &Layouts::packed(s, heads), s)
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &Gpu,
    q: &Storage,
    k: &Storage,
    v: &Storage,
    out: &Storage,
    lse: &Storage,
    dout: &Storage,
    s: &AttentionSpec,
) -> Result<(Storage, Storage, Storage)> {
    let n = s.heads * s.seq * s.dim;
    let (dq, dk, dv) = (g.alloc(n)?, g.alloc(n)?, g.alloc(n)?);
    if n == 0 {
        return Ok((dq, dk, dv));
    }
    let dkv = g.alloc(2 * n)?;
    run_backward(g, [q, k, v], out, lse, dout, &Layouts::separate(s), s, &dq, &dkv)?;
    // dk and dv out of their shared buffer `[2, n]`.
    for (half, dst) in [(0, &dk), (1, &dv)] {
        let spec =
            CopyRowsSpec { batch: 1, rows: 1, width: n, src_rows: 2, src_offset: half, dst_rows: 1, dst_offset: 0 };
        super::gather::copy_rows_into(g, &dkv, dst, &spec)?;
    }
    Ok((dq, dk, dv))
}

#[allow(clippy::too_many_arguments)]
pub fn backward_qkv(
    g: &Gpu,
    qkv: &Storage,
    out: &Storage,
    lse: &Storage,
    dout: &Storage,
    heads: usize,
    s: &AttentionSpec,
) -> Result<Storage> {
    let n = s.heads * s.seq * s.dim;
    let dqkv = g.alloc(3 * n)?;
    if n == 0 {
        return Ok(dqkv);
    }
    // dq in one dispatch, dk and dv in another: never two writable bindings of one buffer at once.
    run_backward(g, [qkv, qkv, qkv], out, lse, dout, &Layouts::packed(s, heads), s, &dqkv, &dqkv)?;
    Ok(dqkv)
}
