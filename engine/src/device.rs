//! Devices: the CPU (reference kernels plus the fast matmul) and a wgpu adapter running our WGSL.
//!
//! Automatic choice: a real GPU when there is one, else the CPU. A software adapter (lavapipe,
//! llvmpipe) is used only when asked for (`MAE_DEVICE=gpu`, the tests), because on a CPU our own CPU
//! backend is far faster than WGSL under a software rasteriser. `MAE_DEVICE=cpu|gpu|auto` overrides
//! an automatic choice; `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` narrow which adapter is used.
//!
//! Without the `gpu` feature there is no `Device::Gpu`: asking for a GPU is an error that says how
//! to get one, and the automatic choice is the CPU, with a note saying why.

use std::str::FromStr;

use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::Gpu;

/// What a GPU context has done since it was opened: a running count of each kind of work, the same
/// on a software adapter as on hardware. Subtract two readings for a span of work (a training step):
/// `after - before`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounters {
    /// Kernel launches recorded.
    pub dispatches: u64,
    /// Batches handed to the GPU queue.
    pub submissions: u64,
    /// Storage buffers created (the pool had none of that size free), and their bytes.
    pub buffers_created: u64,
    /// Bytes of those buffers.
    pub bytes_created: u64,
    /// Host-to-device writes of tensor or index data, and their bytes.
    pub uploads: u64,
    /// Bytes of those writes.
    pub bytes_uploaded: u64,
    /// Device-to-host copies, and their bytes.
    pub read_backs: u64,
    /// Bytes of those copies.
    pub bytes_read_back: u64,
    /// Kernel parameters written to the uniform arena.
    pub uniform_bytes: u64,
    /// Device-side buffer-to-buffer copies recorded (commands, but not dispatches), and their bytes.
    pub copies: u64,
    /// Bytes of those copies.
    pub bytes_copied: u64,
    /// Bind groups created: the first dispatch of each set of bindings. Cached after that, so a
    /// steady-state training step creates none.
    pub bind_groups_created: u64,
    /// Host time spent recording dispatches (finding the pipeline, reserving the parameter slot,
    /// finding or creating the bind group), in nanoseconds. Unlike the counts, a time differs
    /// between adapters and runs.
    pub recording_ns: u64,
    /// Host time spent encoding recorded batches and handing them to the queue, in nanoseconds.
    pub submitting_ns: u64,
}

impl std::ops::Sub for GpuCounters {
    type Output = GpuCounters;
    fn sub(self, o: GpuCounters) -> GpuCounters {
        GpuCounters {
            dispatches: self.dispatches - o.dispatches,
            submissions: self.submissions - o.submissions,
            buffers_created: self.buffers_created - o.buffers_created,
            bytes_created: self.bytes_created - o.bytes_created,
            uploads: self.uploads - o.uploads,
            bytes_uploaded: self.bytes_uploaded - o.bytes_uploaded,
            read_backs: self.read_backs - o.read_backs,
            bytes_read_back: self.bytes_read_back - o.bytes_read_back,
            uniform_bytes: self.uniform_bytes - o.uniform_bytes,
            copies: self.copies - o.copies,
            bytes_copied: self.bytes_copied - o.bytes_copied,
            bind_groups_created: self.bind_groups_created - o.bind_groups_created,
            recording_ns: self.recording_ns - o.recording_ns,
            submitting_ns: self.submitting_ns - o.submitting_ns,
        }
    }
}

impl std::fmt::Display for GpuCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kib = |b: u64| b as f64 / 1024.0;
        write!(
            f,
            "{} dispatches, {} copies ({:.1} KiB), {} submissions, {} buffers created ({:.1} KiB), {} uploads ({:.1} KiB), {} read-backs ({} B), {:.1} KiB of kernel parameters, {} bind groups created; host time: {:.0} µs recording ({:.1} µs a dispatch), {:.0} µs encoding and submitting",
            self.dispatches,
            self.copies,
            kib(self.bytes_copied),
            self.submissions,
            self.buffers_created,
            kib(self.bytes_created),
            self.uploads,
            kib(self.bytes_uploaded),
            self.read_backs,
            self.bytes_read_back,
            kib(self.uniform_bytes),
            self.bind_groups_created,
            self.recording_ns as f64 / 1e3,
            self.recording_ns as f64 / 1e3 / self.dispatches.max(1) as f64,
            self.submitting_ns as f64 / 1e3
        )
    }
}

/// Where tensors live and kernels run. Cheap to clone; two GPU devices are equal when they
/// share one context.
#[derive(Clone)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// A GPU context running our WGSL kernels.
    #[cfg(feature = "gpu")]
    Gpu(Gpu),
}

/// What this build says when a GPU is asked for and it was built without one.
#[cfg(not(feature = "gpu"))]
pub const NO_GPU_BACKEND: &str = "this build has no GPU backend (built without the `gpu` feature, which is on by default): use the CPU, or rebuild with it";

static CPU: CpuBackend = CpuBackend;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A hardware GPU if there is one, else the CPU.
    #[default]
    Auto,
    /// The CPU, even when a GPU is present.
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
        #[cfg(feature = "gpu")]
        return Ok(Device::Gpu(Gpu::open(true)?));
        #[cfg(not(feature = "gpu"))]
        Err(Error::Device(NO_GPU_BACKEND.into()))
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
            #[cfg(feature = "gpu")]
            DeviceChoice::Auto => match Gpu::open(false) {
                Ok(g) => {
                    let d = Device::Gpu(g);
                    let note = format!("device: {}", d.name());
                    Ok((d, note))
                }
                Err(e) => Ok((Device::Cpu, format!("device: {} (no GPU used: {e})", CPU.name()))),
            },
            #[cfg(not(feature = "gpu"))]
            DeviceChoice::Auto => Ok((Device::Cpu, format!("device: {} (this build has no GPU backend)", CPU.name()))),
        }
    }

    /// The kernels of this device.
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Device::Cpu => &CPU,
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => g,
        }
    }

    /// True for `Device::Cpu`.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// True for a GPU device.
    pub fn is_gpu(&self) -> bool {
        !self.is_cpu()
    }

    /// A one-line description of the backend (for the CPU, its threads and matmul kernel; for a
    /// GPU, its adapter).
    pub fn name(&self) -> String {
        self.backend().name()
    }

    /// What products at `precision` run as on this device, in words for a log line: the CPU's
    /// kernel (see `Precision::describe`), or on a GPU whether f16 runs on tensor cores. The GPU
    /// backend has no bf16 products, and f16 without f16 cooperative matrices is f32: precisions
    /// below f32 are permissions, as PyTorch's `set_float32_matmul_precision` is.
    pub fn describe_products(&self, precision: crate::cpu::matmul::Precision) -> String {
        #[cfg(feature = "gpu")]
        use crate::cpu::matmul::Precision;
        match self {
            Device::Cpu => precision.describe(),
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => match precision {
                Precision::F32 => "f32".into(),
                Precision::Bf16 => "f32 (bf16 allowed, but the GPU backend has no bf16 products; f16 has)".into(),
                Precision::F16 if g.context().has_f16_tensor_cores() => {
                    "f16 inputs, f32 sums (tensor cores: 16 x 16 x 16 cooperative matrices)".into()
                }
                Precision::F16 => format!(
                    "f32 (f16 allowed, but {} lists no f16 cooperative matrices with 32-wide subgroups)",
                    g.context().adapter.name
                ),
            },
        }
    }

    /// The GPU context's counters (`None` on the CPU).
    pub fn gpu_counters(&self) -> Option<GpuCounters> {
        match self {
            Device::Cpu => None,
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => Some(g.context().counters()),
        }
    }

    /// Hand the GPU's cached free buffers back to the driver (a no-op on the CPU): between jobs of
    /// different shapes in one process (the study's runs, say), so that the cache holds one job's
    /// buffers rather than the union of all of them.
    pub fn release_cached(&self) {
        match self {
            Device::Cpu => {}
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => g.context().release_cached(),
        }
    }

    /// Send every kernel recorded so far to the GPU without waiting for it (a no-op on the CPU):
    /// before the host blocks on a read, so that the GPU is not left without the work recorded
    /// after the read was requested.
    pub fn flush(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => g.context().flush(),
        }
    }

    /// Wait until every kernel recorded so far has run (a no-op on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => g.context().synchronize(),
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            #[cfg(feature = "gpu")]
            (Device::Gpu(a), Device::Gpu(b)) => a.same(b),
            #[cfg(feature = "gpu")]
            _ => false,
        }
    }
}

impl Eq for Device {}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "Cpu"),
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => write!(f, "Gpu({})", g.context().adapter.name),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}
