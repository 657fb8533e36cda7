//! Devices: the CPU (reference kernels plus the fast matmul) and a wgpu adapter running our WGSL.
//!
//! Automatic choice: a real GPU when there is one, else the CPU. A software adapter (lavapipe,
//! llvmpipe) is used only when asked for (`MAE_DEVICE=gpu`, the tests), because on a CPU our own CPU
//! backend is far faster than WGSL under a software rasteriser. `MAE_DEVICE=cpu|gpu|auto` overrides
//! an automatic choice; `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` narrow which adapter is used.

use std::str::FromStr;

use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

#[derive(Clone)]
pub enum Device {
    Cpu,
    Gpu(Gpu),
}

static CPU: CpuBackend = CpuBackend;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A hardware GPU if there is one, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// Any GPU adapter, software ones included; an error when there is none.
    Gpu,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "gpu" => Ok(DeviceChoice::Gpu),
            other => Err(Error::Invalid(format!("unknown device '{other}': use auto, cpu or gpu"))),
        }
    }
}

impl DeviceChoice {
    /// `Auto` yields to `MAE_DEVICE` when it is set; an explicit choice stands.
    pub fn with_env(self) -> Result<Self> {
        match (self, std::env::var("MAE_DEVICE")) {
            (DeviceChoice::Auto, Ok(v)) => v.parse(),
            (c, _) => Ok(c),
        }
    }
}

impl Device {
    /// Any GPU adapter, software included.
    pub fn gpu() -> Result<Device> {
        Ok(Device::Gpu(Gpu::open(true)?))
    }

    /// The device for `choice` (after `MAE_DEVICE`), and a line that says what was chosen and why.
    pub fn select(choice: DeviceChoice) -> Result<(Device, String)> {
        match choice.with_env()? {
            DeviceChoice::Cpu => Ok((Device::Cpu, format!("device: {}", CPU.name()))),
            DeviceChoice::Gpu => {
                let d = Device::gpu()?;
                let note = format!("device: {}", d.name());
                Ok((d, note))
            }
            DeviceChoice::Auto => match Gpu::open(false) {
                Ok(g) => {
                    let d = Device::Gpu(g);
                    let note = format!("device: {}", d.name());
                    Ok((d, note))
                }
                Err(e) => Ok((Device::Cpu, format!("device: {} (no GPU used: {e})", CPU.name()))),
            },
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        match self {
            Device::Cpu => &CPU,
            Device::Gpu(g) => g,
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    pub fn name(&self) -> String {
        self.backend().name()
    }

    /// Wait until every kernel recorded so far has run (a no-op on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.context().synchronize(),
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => a.same(b),
            _ => false,
        }
    }
}

impl Eq for Device {}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "Cpu"),
            Device::Gpu(g) => write!(f, "Gpu({})", g.context().adapter.name),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}
