//! Launchers: one file per WGSL kernel family. Each checks sizes, picks a grid, packs the kernel's
//! uniform parameters and records the dispatch; none waits for the GPU.

pub mod adamw;
pub mod attention;
pub mod elementwise;
pub mod gather;
pub mod layernorm;
pub mod loss;
pub mod matmul;
#[cfg(test)]
mod matmul_coop_emulated;
pub mod reduce;

use super::context::PipelineKey;
use crate::error::{Error, Result};

pub(crate) fn key(shader: &'static str, entry: &'static str) -> PipelineKey {
    PipelineKey { shader, entry, constants: Vec::new() }
}

const MAX_GROUPS: usize = 65535;

/// Workgroups for one invocation per element, `wg` invocations per group, folded into y beyond
/// 65535 groups (kernels compute `gid.x + gid.y * num_workgroups.x * wg`).
pub(crate) fn grid_1d(n: usize, wg: usize) -> Result<[u32; 3]> {
    grid_groups(n.div_ceil(wg))
}

/// `groups` workgroups laid out over x then y (kernels compute `wid.x + wid.y * num_workgroups.x`).
pub(crate) fn grid_groups(groups: usize) -> Result<[u32; 3]> {
    if groups == 0 {
        return Ok([0, 1, 1]);
    }
    let x = groups.min(MAX_GROUPS);
    let y = groups.div_ceil(x);
    if y > MAX_GROUPS {
        return Err(Error::Gpu(format!("{groups} workgroups are more than one dispatch can address")));
    }
    Ok([x as u32, y as u32, 1])
}

/// Every size a kernel sees is a u32 inside the shader.
pub(crate) fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Gpu(format!("{what} = {n} does not fit the kernels' 32-bit indices")))
}

/// Fails unless `s` holds at least `n` values: the size that a kernel's in-bounds proof (its
/// header's `Bounds:` line) rests on.
pub(crate) fn holds(s: &crate::storage::Storage, n: usize, what: &str) -> Result<()> {
    if s.len() < n {
        return Err(Error::Shape(format!("{what}: a buffer of {} values where {n} are needed", s.len())));
    }
    Ok(())
}
