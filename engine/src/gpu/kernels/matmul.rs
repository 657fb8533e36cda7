//! Launcher for `shaders/matmul.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{holds, u32_of};
use crate::backend::MatmulSpec;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::context::PipelineKey;
use crate::storage::Storage;

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
    _pad: u32,
}

const TILE: usize = 64;

/// True when every 4-element group the vec4 loads read is aligned and inside one row.
fn vec4_ok(s: &MatmulSpec) -> bool {
    let a_contig = if s.trans_a { s.m } else { s.k };
    let b_contig = if s.trans_b { s.k } else { s.n };
    [a_contig, b_contig, s.a_batch_stride, s.b_batch_stride].iter().all(|v| v.is_multiple_of(4))
}

pub fn matmul(g: &Gpu, a: &Storage, b: &Storage, bias: Option<&Storage>, s: &MatmulSpec) -> Result<Storage> {
    Ok(launch(g, a, b, bias, s, false)?.0)
}

/// `(C, gelu(C))` in one dispatch: the store of each C tile also writes its GELU.
pub fn matmul_gelu(
    g: &Gpu,
    a: &Storage,
    b: &Storage,
    bias: Option<&Storage>,
    s: &MatmulSpec,
) -> Result<(Storage, Storage)> {
    let (c, y) = launch(g, a, b, bias, s, true)?;
    Ok((c, y.expect("asked for gelu")))
}

fn launch(
    g: &Gpu,
    a: &Storage,
    b: &Storage,
    bias: Option<&Storage>,
    s: &MatmulSpec,
    gelu: bool,
) -> Result<(Storage, Option<Storage>)> {
    let len = s.batch * s.m * s.n;
    let out = g.alloc(len)?;
    let y = if gelu { Some(g.alloc(len)?) } else { None };
    if len == 0 {
        return Ok((out, y));
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
    let p = Params {
        m: u32_of(s.m, "M")?,
        n: u32_of(s.n, "N")?,
        k: u32_of(s.k, "K")?,
        batch: u32_of(s.batch, "batch")?,
        a_stride: u32_of(s.a_batch_stride, "batch stride")?,
        b_stride: u32_of(s.b_batch_stride, "batch stride")?,
        has_bias: bias.is_some() as u32,
        _pad: 0,
    };
    // Without a bias (or a GELU output) the kernel still binds one; any small buffer will do, one
    // each (a buffer bound read-only and read-write in one dispatch is refused).
    let no_bias = if bias.is_none() { Some(g.alloc(1)?) } else { None };
    let no_y = if y.is_none() { Some(g.alloc(1)?) } else { None };
    let bias_buf = g.buf(bias.or(no_bias.as_ref()).expect("a bias or its stand-in"))?;
    let y_buf = g.buf(y.as_ref().or(no_y.as_ref()).expect("a GELU output or its stand-in"))?;
    let vec4 = vec4_ok(s);
    let key = PipelineKey {
        shader: "matmul",
        entry: "matmul",
        constants: vec![
            ("TRANS_A", s.trans_a as u32),
            ("TRANS_B", s.trans_b as u32),
            ("GELU", gelu as u32),
            ("VEC4", vec4 as u32),
        ],
    };
    let (ab, bb) = (g.buf(a)?, g.buf(b)?);
    // The shader names both views of each operand (scalar and vec4; its VEC4 branch is chosen at
    // pipeline creation, after the bind group layout is fixed), so both are bound, to the same buffer.
    let bindings: Vec<(u32, wgpu::BufferBinding)> =
        vec![(1, ab.clone()), (2, bb.clone()), (3, bias_buf), (4, g.buf(&out)?), (5, ab), (6, bb), (7, y_buf)];
    let groups = [u32_of(s.n.div_ceil(TILE), "column tiles")?, u32_of(s.m.div_ceil(TILE), "row tiles")?, p.batch];
    g.ctx.dispatch(&key, bytemuck::bytes_of(&p), &bindings, groups)?;
    Ok((out, y))
}
