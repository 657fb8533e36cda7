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

/// True when every 4-element group the vec4 kernel loads is aligned and inside one row.
fn vec4_ok(s: &MatmulSpec) -> bool {
    let a_contig = if s.trans_a { s.m } else { s.k };
    let b_contig = if s.trans_b { s.k } else { s.n };
    [a_contig, b_contig, s.a_batch_stride, s.b_batch_stride].iter().all(|v| v.is_multiple_of(4))
}

pub fn matmul(g: &Gpu, a: &Storage, b: &Storage, bias: Option<&Storage>, s: &MatmulSpec) -> Result<Storage> {
    let out = g.alloc(s.batch * s.m * s.n)?;
    if s.batch * s.m * s.n == 0 {
        return Ok(out);
    }
    // The sizes the shader's in-bounds proof rests on (its header's `Bounds:` line).
    if a.len() < s.a_len() || b.len() < s.b_len() {
        return Err(Error::Shape(format!("matmul: operands of {} and {} values for {s:?}", a.len(), b.len())));
    }
    if let Some(bias) = bias {
        holds(bias, s.n, "matmul bias")?;
    }
    for (len, what) in [(s.a_len(), "A"), (s.b_len(), "B"), (s.batch * s.m * s.n, "C")] {
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
    // Without a bias the kernel still binds one; any small buffer will do.
    let dummy;
    let bias_buf = match bias {
        Some(bb) => g.buf(bb)?,
        None => {
            dummy = g.alloc(1)?;
            g.buf(&dummy)?
        }
    };
    let vec4 = vec4_ok(s);
    let key = PipelineKey {
        shader: "matmul",
        entry: if vec4 { "matmul_vec4" } else { "matmul" },
        constants: vec![("TRANS_A", s.trans_a as u32), ("TRANS_B", s.trans_b as u32)],
    };
    let (ab, bb) = (g.buf(a)?, g.buf(b)?);
    let bindings: Vec<(u32, &wgpu::Buffer)> = if vec4 {
        vec![(3, bias_buf), (4, g.buf(&out)?), (5, ab), (6, bb)]
    } else {
        vec![(1, ab), (2, bb), (3, bias_buf), (4, g.buf(&out)?)]
    };
    let groups = [u32_of(s.n.div_ceil(TILE), "column tiles")?, u32_of(s.m.div_ceil(TILE), "row tiles")?, p.batch];
    g.ctx.dispatch(&key, bytemuck::bytes_of(&p), &bindings, groups)?;
    Ok(out)
}
