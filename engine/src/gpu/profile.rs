//! Per-kernel GPU time from timestamp queries: while profiling, every dispatch runs in its own
//! compute pass whose beginning and end write a timestamp; at each synchronisation the resolved
//! timestamps are read back and summed per kernel entry point (or, by shape, per entry point, override
//! constants and workgroup grid: one row per distinct matrix product of a step).

use std::collections::HashMap;

/// Timestamp pairs per query set; a batch never holds more dispatches than this.
const PAIRS: u32 = 256;

/// One row of a profile: a kernel (or, by shape, one of its configurations) over the profiled work.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The entry point, or by shape its override constants and grid as well.
    pub name: String,
    /// How many of its dispatches ran.
    pub dispatches: u64,
    /// GPU time from the timestamps around its dispatches, in nanoseconds.
    pub ns: f64,
    /// The matrix-product FLOPs its dispatches did (`2 m n k batch` each; 0 for other kernels).
    pub flops: u64,
}

impl KernelTime {
    /// The products' rate over their own kernel time, in TFLOP/s (0 for other kernels).
    pub fn tflops(&self) -> f64 {
        if self.ns > 0.0 { self.flops as f64 / self.ns * 1e-3 } else { 0.0 }
    }
}

/// A dispatch being timed: its row's name and its FLOPs.
type Timed = (String, u64);

pub(crate) struct Profiler {
    period_ns: f64,
    current: Option<(wgpu::QuerySet, Vec<Timed>)>,
    pending: Vec<(wgpu::Buffer, Vec<Timed>)>,
    totals: HashMap<String, KernelTime>,
    /// Key the totals by entry point, constants and grid rather than by entry point alone.
    pub(crate) by_shape: bool,
}

impl Profiler {
    pub(crate) fn new(period_ns: f32, by_shape: bool) -> Self {
        Profiler { period_ns: period_ns as f64, current: None, pending: Vec::new(), totals: HashMap::new(), by_shape }
    }

    /// Timestamp writes for the next dispatch, named `name`, doing `flops` of products.
    pub(crate) fn next_writes(
        &mut self,
        name: String,
        flops: u64,
        device: &wgpu::Device,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let (set, names) = self.current.get_or_insert_with(|| {
            let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PAIRS,
            });
            (set, Vec::new())
        });
        if names.len() as u32 >= PAIRS {
            return None; // more dispatches than pairs: leave the rest untimed
        }
        let i = names.len() as u32;
        names.push((name, flops));
        Some(wgpu::ComputePassTimestampWrites {
            query_set: set,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Resolve this batch's timestamps into a buffer that `collect` reads later.
    pub(crate) fn resolve(&mut self, encoder: &mut wgpu::CommandEncoder, device: &wgpu::Device) {
        let Some((set, names)) = self.current.take() else {
            return;
        };
        if names.is_empty() {
            return;
        }
        let bytes = names.len() as u64 * 16;
        let device_buf = |usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolved = device_buf(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let readback = device_buf(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        encoder.resolve_query_set(&set, 0..2 * names.len() as u32, &resolved, 0);
        encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, bytes);
        self.pending.push((readback, names));
    }

    /// The resolved batches not yet read: `(read-back buffer, kernel names)`, for the context to
    /// read once their submissions have completed.
    pub(crate) fn take_pending(&mut self) -> Vec<(wgpu::Buffer, Vec<Timed>)> {
        std::mem::take(&mut self.pending)
    }

    /// Add one batch's timestamps (`ticks[2i]`, `ticks[2i + 1]` bracket dispatch `i`) to the totals.
    pub(crate) fn add(&mut self, names: &[Timed], ticks: &[u64]) {
        for (i, (name, flops)) in names.iter().enumerate() {
            let dt = ticks[2 * i + 1].wrapping_sub(ticks[2 * i]) as f64 * self.period_ns;
            let e = self.totals.entry(name.clone()).or_insert_with(|| KernelTime {
                name: name.clone(),
                dispatches: 0,
                ns: 0.0,
                flops: 0,
            });
            e.dispatches += 1;
            e.ns += dt;
            e.flops += flops;
        }
    }

    /// Every row, the most expensive first.
    pub(crate) fn report(&self) -> Vec<KernelTime> {
        let mut v: Vec<KernelTime> = self.totals.values().cloned().collect();
        v.sort_by(|a, b| b.ns.total_cmp(&a.ns));
        v
    }
}
