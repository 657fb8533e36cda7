//! Devices: the CPU (reference kernels plus the fast matmul) and, from `gpu`, a wgpu adapter.

use crate::backend::Backend;
use crate::cpu::CpuBackend;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
}

static CPU: CpuBackend = CpuBackend;

impl Device {
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Device::Cpu => &CPU,
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    pub fn name(&self) -> String {
        self.backend().name()
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}
