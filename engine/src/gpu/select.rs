//! Choosing an adapter. Hardware first (discrete, then integrated, then virtual); a software adapter
//! (lavapipe, llvmpipe: `DeviceType::Cpu`) only when the caller allows it, because on a CPU our own
//! CPU backend is much faster than WGSL under a software rasteriser. `WGPU_BACKEND` (through wgpu)
//! and `WGPU_ADAPTER_NAME` (a case-insensitive substring of the adapter's name) narrow the choice.

use std::sync::{Arc, Mutex};

use super::context::{AdapterSummary, GpuContext};
use crate::error::{Error, Result};

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The backends asked: `WGPU_BACKEND` when set, else the primary ones (Vulkan, Metal, DX12). GL is
/// left out unless named: compute needs none of it, and probing it on a headless machine prints
/// "XDG_RUNTIME_DIR is invalid or not set" on every command.
fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends();
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see (after `WGPU_BACKEND`), best first.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let mut v: Vec<AdapterSummary> = pollster::block_on(instance().enumerate_adapters(backends()))
        .iter()
        .map(|a| AdapterSummary::of(&a.get_info()))
        .collect();
    v.sort_by_key(|a| rank(a.device_type));
    v
}

fn pick(allow_software: bool) -> Result<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance().enumerate_adapters(backends()));
    if adapters.is_empty() {
        return Err(Error::Gpu(
            "no GPU adapter found (no Vulkan, Metal or DX12 driver answered; WGPU_BACKEND=gl tries OpenGL)".into(),
        ));
    }
    if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
        let want = name.to_lowercase();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&want));
        if adapters.is_empty() {
            let names: Vec<String> = list_adapters().into_iter().map(|a| a.name).collect();
            return Err(Error::Gpu(format!("WGPU_ADAPTER_NAME={name} matches no adapter; found: {names:?}")));
        }
    }
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    let best = adapters.remove(0);
    let info = best.get_info();
    if info.device_type == wgpu::DeviceType::Cpu && !allow_software {
        return Err(Error::Gpu(format!(
            "only a software adapter was found ({}); the CPU backend is faster on this machine \
             (set MAE_DEVICE=gpu to use the software adapter anyway)",
            info.name
        )));
    }
    Ok(best)
}

/// The process-wide context: adapters are opened once and shared by every tensor and thread.
static CONTEXT: Mutex<Option<Arc<GpuContext>>> = Mutex::new(None);

/// The shared GPU context, opened on first use.
pub fn context(allow_software: bool) -> Result<Arc<GpuContext>> {
    let mut slot = CONTEXT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = slot.as_ref() {
        if ctx.adapter.is_software() && !allow_software {
            return Err(Error::Gpu(format!(
                "only a software adapter is available ({}); set MAE_DEVICE=gpu to use it",
                ctx.adapter.name
            )));
        }
        return Ok(ctx.clone());
    }
    let ctx = GpuContext::open(pick(allow_software)?)?;
    *slot = Some(ctx.clone());
    Ok(ctx)
}
