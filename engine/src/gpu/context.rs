//! The GPU context: one wgpu adapter, device and queue, plus the machinery every kernel launch goes
//! through.
//!
//! - **Buffers** come from a pool keyed by exact byte size: a training step allocates the same shapes
//!   every step, so after the first step nothing is allocated at all. The pool keeps every buffer
//!   freed (a caching allocator, as PyTorch's CUDA one): a cap would make a step whose buffers
//!   exceed it create the excess anew every step (a 2 GiB cap did so for ~530 buffers, 9.4 GB, a
//!   base-preset step on an H200). When the driver runs out of memory, `alloc` empties the pool and
//!   tries once more; `release_cached` hands the pool back on request. A buffer freed while commands
//!   that may use it are still unsubmitted waits in a quarantine until that batch is submitted, so a
//!   later `write_buffer` (which wgpu runs at the start of the next submit) can never overwrite data
//!   an earlier command still needs.
//! - **Kernel parameters** go into 256-byte slots of one uniform "arena" buffer per batch, written
//!   once with `write_buffer` when the batch is submitted.
//! - **Dispatches** are recorded into a list and encoded at flush time into as few compute passes as
//!   possible; a batch is submitted when a read-back needs it, when the arena is full, or after
//!   `MAX_BATCH` dispatches. One training step is a handful of submissions.
//! - **Read-backs** copy into a host-visible staging buffer. `read_later` submits the batch holding
//!   the copy and returns a pending read whose wait polls for that submission only, so the host can
//!   record (and submit) the next work while the GPU computes the values; `read` is `read_later`
//!   waited for at once.
//! - **Pipelines** are compiled once per (shader, entry point, constants) and cached.
//! - **Bind groups** are cached by what they bind (the pipeline, the parameter slot, each buffer's
//!   range): the caching pool hands a steady training step the same buffers in the same order, so
//!   from its second step on a step creates none, and recording a dispatch is a hash lookup instead
//!   of a validated driver call. `GpuCounters` counts the bind groups created and the host's time
//!   recording and submitting.
//! - **Errors**: allocations are checked against the device's limits before wgpu sees them (a clear
//!   error naming the limit), out-of-memory is caught in an error scope (every buffer, the uniform
//!   arenas included), and waits have a timeout, so a lost device is reported instead of hanging.
//!   A fault reaches the threads whose work it lost: a batch that wgpu rejects at submit is charged
//!   to every thread with a command in it, other errors to the thread whose call caused them, each
//!   returned by that thread's next call; a device loss fails every later call of every thread.
//! - **Threads**: one context serves every thread of the process. Recording, submitting and freeing
//!   share one lock, and a dispatch records its command in the same hold of it that reserves the
//!   command's parameter slot (the invariant is spelled out on `State`); waits happen outside it.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Bytes per uniform slot: the largest `min_uniform_buffer_offset_alignment` wgpu allows.
const SLOT: u64 = 256;
/// Slots in one arena buffer; a full arena forces a submit.
const SLOTS: u64 = 256;
/// Dispatches per submit at most, so long forward passes start running on the GPU early.
const MAX_BATCH: usize = 192;

thread_local! {
    /// Test hooks (see `inject_out_of_memory_for_test` and `oversize_next_dispatch_for_test`), per
    /// thread so that tests running beside each other in one process do not take each other's.
    static FAIL_ARENAS: Cell<u32> = const { Cell::new(0) };
    static FAIL_BUFFERS: Cell<u32> = const { Cell::new(0) };
    static OVERSIZE_NEXT_DISPATCH: Cell<bool> = const { Cell::new(false) };
}

/// Use up one failure of a test hook's counter, if it has any left.
fn take_one(hook: &'static std::thread::LocalKey<Cell<u32>>) -> bool {
    hook.with(|n| {
        let left = n.get();
        n.set(left.saturating_sub(1));
        left > 0
    })
}

/// What wgpu reports about the chosen adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// The adapter's name.
    pub name: String,
    /// The wgpu backend it runs on (Vulkan, Metal, ...), as text.
    pub backend: String,
    /// Discrete, integrated, virtual, software (`Cpu`) or other.
    pub device_type: wgpu::DeviceType,
    /// The driver's name and details; empty when the adapter gives none.
    pub driver: String,
}

impl AdapterSummary {
    pub(crate) fn of(info: &wgpu::AdapterInfo) -> Self {
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: info.device_type,
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        }
    }

    /// A software rasteriser (lavapipe, llvmpipe, WARP, SwiftShader).
    pub fn is_software(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {:?}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

/// A compute pipeline's identity: the shader file, its entry point, and override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub shader: &'static str,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, u32)>,
}

enum Command {
    Dispatch {
        name: &'static str,
        /// While profiling by shape: entry point, override constants and grid.
        shape: Option<String>,
        pipeline: Arc<wgpu::ComputePipeline>,
        bind_group: wgpu::BindGroup,
        groups: [u32; 3],
        /// The matrix-product FLOPs this dispatch does (`2 m n k batch`; 0 for other kernels).
        flops: u64,
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    },
}

/// Everything that recording, submitting and freeing share, behind one lock.
///
/// **The invariant.** A recorded, unsubmitted `Command` points at
/// - its slot of the *current* arena, whose bytes (`arena_bytes`) are written to the GPU by the
///   submit that sends the command, after which the arena is recycled for a later batch; and
/// - storage buffers, which must not be handed out again (and so overwritten by an upload, which
///   wgpu runs at the start of the *next* submit) before the command has been submitted.
///
/// So a dispatch reserves its arena slot, builds its bind group and pushes its command in **one**
/// hold of this lock, and `submit` takes every command, writes the arena and empties the quarantine
/// in one hold too. If a submit (another thread's read-back, say) could run between the reservation
/// and the push, the slot's bytes would leave with the earlier batch, the recycled arena would get
/// the next batch's parameters at the same offset, and the command would run with another kernel's
/// parameters; and with the command list momentarily empty, a buffer freed meanwhile would skip the
/// quarantine and could be overwritten before the command read it. Both happened (issue 10).
/// A buffer released while `commands` is empty is safe to reuse at once: everything that may read
/// it has been submitted, and wgpu orders later writes after earlier submissions.
///
/// `owners` lists the threads with a command in the batch: if wgpu rejects the batch, none of its
/// commands runs, and each of them must hear so (see `Faults`).
struct State {
    commands: Vec<Command>,
    owners: Vec<ThreadId>,
    dispatches: usize,
    arena: Option<wgpu::Buffer>,
    arena_bytes: Vec<u8>,
    spare_arenas: Vec<wgpu::Buffer>,
    /// Free buffers by size. Each size hands out its least buffer (in wgpu's fixed order of
    /// buffers), not the last one freed: then what is free depends only on which buffers are, not
    /// on the order they came back, so a step that allocates and frees as the step before it gets
    /// the same buffers in the same places, and with them the same cached bind groups.
    pool: HashMap<u64, BTreeSet<wgpu::Buffer>>,
    pooled_bytes: u64,
    quarantine: Vec<wgpu::Buffer>,
    live_bytes: u64,
    peak_bytes: u64,
    submissions: u64,
    /// What `queue.submit` returned for the latest batch: a read requested in it waits for this
    /// submission only, not for work submitted after it (see `read_later`).
    last_submission: Option<wgpu::SubmissionIndex>,
    counters: crate::device::GpuCounters,
    profiler: Option<super::profile::Profiler>,
    /// Bind groups by what they bind. Each holds its buffers alive, so the cache is emptied
    /// whenever the pool hands buffers back to the driver (`release_cached`).
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
}

/// Bind groups kept at most; past it the cache starts again (a steady step needs one per
/// dispatch, a few hundred for the presets).
const BIND_GROUPS_KEPT: usize = 1 << 14;

/// What a bind group binds: its pipeline's layout and, per binding, a buffer range (binding 0 is
/// the parameter slot when the kernel has parameters). Buffers and pipelines compare by identity.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    entries: Vec<(u32, wgpu::Buffer, u64, Option<wgpu::BufferSize>)>,
}

/// One wgpu adapter, device and queue, shared by every thread, with the buffer pool, the
/// dispatch recorder and the pipeline cache (see the module docs).
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    /// What wgpu reports about the adapter.
    pub adapter: AdapterSummary,
    /// The device's limits: the adapter's own, not wgpu's defaults.
    pub limits: wgpu::Limits,
    /// The optional features enabled: those of timestamp queries, f16, subgroups and f16
    /// cooperative matrices (see `has_f16_tensor_cores`) that the adapter has.
    pub features: wgpu::Features,
    state: Mutex<State>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    /// `MAE_GPU_BOUNDS_CHECKS` was set when the context opened: every shader keeps wgpu's checks.
    bounds_checks_forced: bool,
    /// `MAE_GPU_LOOP_BOUNDING` was set when the context opened: every loop keeps wgpu's counter.
    loop_bounding_forced: bool,
    /// Reuse bind groups (see the module docs); `MAE_GPU_BIND_GROUP_CACHE=0` when the context
    /// opened turns it off, to measure what the cache saves on a given adapter.
    cache_bind_groups: bool,
    /// The faults wgpu reported, kept for the threads they belong to (taken only inside the state
    /// lock or with no other lock held, and never held around a wgpu call).
    faults: Arc<Mutex<Faults>>,
    wait_timeout: Duration,
}

/// What went wrong, kept until the threads concerned ask.
#[derive(Default)]
struct Faults {
    /// The device is lost or hung: sticky, every later call of every thread fails with it.
    lost: Option<String>,
    /// Per thread, the first error of its work that wgpu rejected, returned once by that thread's
    /// next call: only the thread that recorded the work holds the tensors it left unwritten.
    pending: HashMap<ThreadId, String>,
}

impl Faults {
    fn lock(slot: &Mutex<Faults>) -> MutexGuard<'_, Faults> {
        slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lose(slot: &Mutex<Faults>, message: String) {
        Self::lock(slot).lost.get_or_insert(message);
    }

    fn charge(&mut self, thread: ThreadId, message: &str) {
        self.pending.entry(thread).or_insert_with(|| message.to_string());
    }
}

/// Features we use when the adapter has them.
fn wanted_features(available: wgpu::Features) -> wgpu::Features {
    let wanted = wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP;
    available & wanted
}

/// Workgroup memory `shaders/matmul_coop.wgsl` declares: two 5120-half tiles and 2048 f32.
const COOP_WORKGROUP_BYTES: u32 = 2 * 5120 * 2 + 2048 * 4;

/// Whether the f16 tensor-core products (`shaders/matmul_coop.wgsl`) can run on `adapter`: it lists
/// 16 x 16 x 16 cooperative matrices of f16 inputs with f32 sums, has f16 in shaders, subgroups of
/// exactly 32 (the kernel finds its subgroup as `local_invocation_index / 32` without subgroup
/// builtins, which NVIDIA's compiler is reported to crash on beside cooperative matrices) and the
/// workgroup memory. `MAE_GPU_COOPERATIVE_MATRIX=0` says no, for A/B runs against the f32 kernels.
fn has_f16_tensor_cores(adapter: &wgpu::Adapter) -> bool {
    if std::env::var("MAE_GPU_COOPERATIVE_MATRIX").is_ok_and(|v| v.trim() == "0") {
        return false;
    }
    let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    let (info, limits) = (adapter.get_info(), adapter.limits());
    adapter.features().contains(needed)
        && info.subgroup_min_size == 32
        && info.subgroup_max_size == 32
        && limits.max_compute_workgroup_storage_size >= COOP_WORKGROUP_BYTES
        && limits.max_compute_invocations_per_workgroup >= 256
        && adapter.cooperative_matrix_properties().iter().any(|c| {
            use wgpu::CooperativeScalarType::{F16, F32};
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16) && c.ab_type == F16 && c.cr_type == F32
        })
}

/// The largest storage buffer a context makes, whatever the adapter allows: 4 GiB less 4 bytes,
/// fewer than 2^30 f32 values.
pub const MAX_BINDING_BYTES: u64 = (1 << 32) - 4;

impl GpuContext {
    /// Open a device on `adapter` with the adapter's own limits (the defaults cap storage bindings at
    /// 128 MiB and workgroup memory at 16 KiB) and the optional features it supports.
    pub(crate) fn open(adapter: wgpu::Adapter) -> Result<Arc<Self>> {
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        // No buffer of 4 GiB or more, even where the adapter would bind one: every buffer then holds
        // fewer than 2^30 values, which the shaders' headers rely on (`Loops: finite`: a counter
        // stepping towards such a bound cannot wrap).
        limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(MAX_BINDING_BYTES);
        let mut features = wanted_features(adapter.features());
        let mut experimental = wgpu::ExperimentalFeatures::disabled();
        if has_f16_tensor_cores(&adapter) {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: wgpu asks us to acknowledge that its experimental features may have bugs;
            // only `shaders/matmul_coop.wgsl` uses one, its parity tests run on every adapter
            // that has it, and `MAE_GPU_COOPERATIVE_MATRIX=0` leaves it off.
            experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("mae-engine"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Gpu(format!("could not open a device on {}: {e}", info.name)))?;
        let faults: Arc<Mutex<Faults>> = Arc::default();
        {
            let faults = faults.clone();
            // wgpu calls this on the thread whose call failed (an error no scope of ours caught).
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                Faults::lock(&faults).charge(std::thread::current().id(), &format!("wgpu error: {e}"));
            }));
        }
        {
            let faults = faults.clone();
            device.set_device_lost_callback(move |reason, msg| {
                Faults::lose(&faults, format!("the GPU device was lost ({reason:?}): {msg}"));
            });
        }
        let wait_timeout = std::env::var("MAE_GPU_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(600));
        Ok(Arc::new(GpuContext {
            device,
            queue,
            adapter: AdapterSummary::of(&info),
            limits,
            features,
            state: Mutex::new(State {
                commands: Vec::new(),
                owners: Vec::new(),
                dispatches: 0,
                arena: None,
                arena_bytes: Vec::new(),
                spare_arenas: Vec::new(),
                pool: HashMap::new(),
                pooled_bytes: 0,
                quarantine: Vec::new(),
                live_bytes: 0,
                peak_bytes: 0,
                submissions: 0,
                last_submission: None,
                counters: Default::default(),
                profiler: None,
                bind_groups: HashMap::new(),
            }),
            pipelines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            bounds_checks_forced: super::shaders::bounds_checks_forced(),
            loop_bounding_forced: super::shaders::loop_bounding_forced(),
            cache_bind_groups: std::env::var("MAE_GPU_BIND_GROUP_CACHE").map_or(true, |v| v != "0"),
            faults,
            wait_timeout,
        }))
    }

    /// The largest buffer one storage binding can cover on this device, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Whether shader `name` runs without wgpu's runtime bounds checks: its header proves its
    /// indexing in bounds and `MAE_GPU_BOUNDS_CHECKS` did not ask for them when the context opened.
    pub fn runs_unchecked(&self, name: &str) -> bool {
        self.trusted_checks(name).is_some_and(|c| !c.bounds_checks)
    }

    /// Whether shader `name`'s loops run without wgpu's loop bounding: its header proves them
    /// finite and neither `MAE_GPU_LOOP_BOUNDING` nor `MAE_GPU_BOUNDS_CHECKS` asked for it.
    pub fn runs_unbounded_loops(&self, name: &str) -> bool {
        self.trusted_checks(name).is_some_and(|c| !c.force_loop_bounding)
    }

    fn trusted_checks(&self, name: &str) -> Option<wgpu::ShaderRuntimeChecks> {
        super::shaders::trusted_checks(name, self.bounds_checks_forced, self.loop_bounding_forced)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails if the device is lost, or with the first error of this thread's earlier work that
    /// wgpu rejected (once: it is forgotten when returned).
    pub fn check_fault(&self) -> Result<()> {
        let mut f = Faults::lock(&self.faults);
        if let Some(lost) = &f.lost {
            return Err(Error::Gpu(lost.clone()));
        }
        match f.pending.remove(&std::thread::current().id()) {
            Some(message) => Err(Error::Gpu(message)),
            None => Ok(()),
        }
    }

    /// Fails if the device is lost; leaves this thread's pending errors for its next check.
    fn check_lost(&self) -> Result<()> {
        match &Faults::lock(&self.faults).lost {
            Some(lost) => Err(Error::Gpu(lost.clone())),
            None => Ok(()),
        }
    }

    /// Whether products at `Precision::F16` run on tensor cores (`shaders/matmul_coop.wgsl`): the
    /// adapter lists f16 16 x 16 x 16 cooperative matrices with f32 sums and 32-wide subgroups.
    pub fn has_f16_tensor_cores(&self) -> bool {
        self.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    }

    /// Whether the device has timestamp queries, which timing each dispatch needs.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Hand every free buffer of the pool back to the driver (as `torch.cuda.empty_cache()`), e.g.
    /// after a large model is dropped; the next steps create what they need again.
    pub fn release_cached(&self) {
        let mut s = self.state();
        s.pool.clear();
        s.pooled_bytes = 0;
        // Cached bind groups would keep the freed buffers alive.
        s.bind_groups.clear();
    }

    /// Bytes of free buffers the pool holds for reuse.
    pub fn cached_bytes(&self) -> u64 {
        self.state().pooled_bytes
    }

    /// Bytes held by live tensors now, and the most ever held at once.
    pub fn memory(&self) -> (u64, u64) {
        let s = self.state();
        (s.live_bytes, s.peak_bytes)
    }

    /// Batches submitted to the queue since the context was opened.
    pub fn submissions(&self) -> u64 {
        self.state().submissions
    }

    /// Everything counted since the context was opened (see `GpuCounters`), by every thread that
    /// uses the context: the difference over a span of work is that span's only when no other
    /// thread uses the GPU meanwhile.
    pub fn counters(&self) -> crate::device::GpuCounters {
        let s = self.state();
        crate::device::GpuCounters { submissions: s.submissions, ..s.counters }
    }

    // ----- buffers -------------------------------------------------------------------------------

    /// A storage buffer of at least `len` f32 (or u32) values, from the pool when one of that size
    /// is free. Its contents are undefined.
    pub(crate) fn alloc(&self, len: usize) -> Result<wgpu::Buffer> {
        self.check_fault()?;
        // At least 16 bytes, so any buffer can also be bound as an array of vec4.
        let bytes = (len.max(4) as u64) * 4;
        let limit = self.limits.max_storage_buffer_binding_size;
        if bytes > limit || bytes > self.limits.max_buffer_size {
            return Err(Error::Gpu(format!(
                "a tensor of {len} values ({:.1} MiB) exceeds this device's limit of {:.1} MiB per storage \
                 binding (max_storage_buffer_binding_size on {}); use a smaller batch or model",
                bytes as f64 / (1 << 20) as f64,
                limit.min(self.limits.max_buffer_size) as f64 / (1 << 20) as f64,
                self.adapter.name
            )));
        }
        let mut s = self.state();
        s.live_bytes += bytes;
        s.peak_bytes = s.peak_bytes.max(s.live_bytes);
        if let Some(buf) = s.pool.get_mut(&bytes).and_then(BTreeSet::pop_first) {
            s.pooled_bytes -= bytes;
            return Ok(buf);
        }
        s.counters.buffers_created += 1;
        s.counters.bytes_created += bytes;
        drop(s);
        let desc = wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        };
        let created = self.create_buffer(&desc, "a tensor", &FAIL_BUFFERS);
        if created.is_err() {
            self.state().live_bytes -= bytes;
        }
        created
    }

    /// Create a buffer, catching out-of-memory in an error scope so that an invalid buffer is never
    /// kept: on one, hand the pool's free buffers back to the driver, wait for the GPU, and try once
    /// more. `what` names the buffer in the error; `hook` is the test hook that fails it.
    fn create_buffer(
        &self,
        desc: &wgpu::BufferDescriptor,
        what: &str,
        hook: &'static std::thread::LocalKey<Cell<u32>>,
    ) -> Result<wgpu::Buffer> {
        let create = || {
            if take_one(hook) {
                return Err("Out of Memory (injected by a test hook)".to_string());
            }
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buf = self.device.create_buffer(desc);
            pollster::block_on(scope.pop()).map_or(Ok(buf), |e| Err(e.to_string()))
        };
        let e = match create() {
            Ok(buf) => return Ok(buf),
            Err(e) => e,
        };
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        self.release_cached();
        // Only a lost or hung device fails this wait: an error of this thread's earlier work stays
        // for its next check rather than passing for this allocation's.
        if let Err(lost) = self.poll_idle() {
            return Err(Error::Gpu(format!(
                "out of GPU memory creating {what} of {:.1} MiB, and waiting for the GPU before trying again failed: {lost}",
                mib(desc.size)
            )));
        }
        create().map_err(|_| {
            Error::Gpu(format!(
                "out of GPU memory creating {what} of {:.1} MiB ({:.1} MiB in use on {}), even after \
                 emptying the buffer pool: {e}; use a smaller batch or model",
                mib(desc.size),
                mib(self.state().live_bytes),
                self.adapter.name
            ))
        })
    }

    /// Return a buffer to the pool (through the quarantine while unsubmitted work may use it).
    pub(crate) fn release(&self, buf: wgpu::Buffer) {
        let bytes = buf.size();
        let mut s = self.state();
        s.live_bytes = s.live_bytes.saturating_sub(bytes);
        if !s.commands.is_empty() {
            s.quarantine.push(buf);
        } else {
            Self::pool_put(&mut s, buf);
        }
    }

    fn pool_put(s: &mut State, buf: wgpu::Buffer) {
        let bytes = buf.size();
        s.pooled_bytes += bytes;
        s.pool.entry(bytes).or_default().insert(buf);
    }

    /// Write host values into a buffer (runs at the start of the next submit; see the quarantine).
    pub(crate) fn write(&self, buf: &wgpu::BufferBinding, data: &[u8]) {
        if !data.is_empty() {
            let mut s = self.state();
            s.counters.uploads += 1;
            s.counters.bytes_uploaded += data.len() as u64;
            drop(s);
            self.queue.write_buffer(buf.buffer, buf.offset, data);
        }
    }

    /// A buffer holding `data` (for u32 indices and the like).
    pub(crate) fn upload_bytes(&self, data: &[u8]) -> Result<wgpu::Buffer> {
        let buf = self.alloc(data.len().div_ceil(4))?;
        self.write(&buf.as_entire_buffer_binding(), data);
        Ok(buf)
    }

    /// Record a device-side copy of `bytes` between two bindings' ranges (no dispatch).
    pub(crate) fn copy(&self, src: &wgpu::BufferBinding, dst: &wgpu::BufferBinding, bytes: u64) -> Result<()> {
        self.check_fault()?;
        if bytes == 0 {
            return Ok(());
        }
        let mut s = self.state();
        Self::record(
            &mut s,
            Command::Copy {
                src: src.buffer.clone(),
                src_offset: src.offset,
                dst: dst.buffer.clone(),
                dst_offset: dst.offset,
                bytes,
            },
        );
        s.counters.copies += 1;
        s.counters.bytes_copied += bytes;
        Ok(())
    }

    /// Copy `bytes` from `buf` back to the host, waiting for every recorded command first.
    pub(crate) fn read(self: &Arc<Self>, buf: &wgpu::BufferBinding, bytes: u64) -> Result<Vec<u8>> {
        self.read_later(buf, bytes)?.wait()
    }

    /// Request a copy of `bytes` from `buf` to the host without waiting for it: the copy is recorded
    /// after every command recorded so far and the batch holding it is submitted now (one
    /// submission), and the returned read waits only for that submission, not for the commands
    /// recorded after this call. Fails at once with an error of this thread's earlier work (see
    /// `check_fault`), as `read` does.
    pub(crate) fn read_later(self: &Arc<Self>, buf: &wgpu::BufferBinding, bytes: u64) -> Result<PendingGpuRead> {
        self.check_fault()?;
        if bytes == 0 {
            return Ok(PendingGpuRead { ctx: self.clone(), mapping: None });
        }
        let desc = wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        };
        let staging = self.create_buffer(&desc, "a read-back buffer", &FAIL_BUFFERS)?;
        let submission = {
            let mut s = self.state();
            Self::record(
                &mut s,
                Command::Copy {
                    src: buf.buffer.clone(),
                    src_offset: buf.offset,
                    dst: staging.clone(),
                    dst_offset: 0,
                    bytes,
                },
            );
            s.counters.read_backs += 1;
            s.counters.bytes_read_back += bytes;
            self.submit(&mut s)?;
            s.last_submission.clone().expect("the batch holding the copy was just submitted")
        };
        // Every batch that held this thread's earlier work has been submitted by now (batches go
        // in order), and a rejected one has been charged to this thread: never return stale bytes.
        self.check_fault()?;
        // Mapped only now: a buffer pending a map cannot be used in a submission, and the copy into
        // it has just been submitted.
        let done = Self::map_async(&staging);
        Ok(PendingGpuRead { ctx: self.clone(), mapping: Some(Mapping { staging, submission, done }) })
    }

    /// Start mapping a `MAP_READ` buffer whose filling copy has been submitted; the receiver gets the
    /// outcome.
    fn map_async(staging: &wgpu::Buffer) -> MapOutcome {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        rx
    }

    /// Map a `MAP_READ` buffer whose filling copy has been submitted, and return its bytes.
    fn map_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let done = Self::map_async(staging);
        self.mapped_bytes(staging, None, &done)
    }

    /// Wait until the map of `staging` (`done` gets its outcome) has happened, polling until
    /// `submission` has finished (every submission when `None`), and return its bytes, unmapping
    /// it. A wait past the timeout counts as a lost device.
    fn mapped_bytes(
        &self,
        staging: &wgpu::Buffer,
        submission: Option<&wgpu::SubmissionIndex>,
        done: &MapOutcome,
    ) -> Result<Vec<u8>> {
        // Another thread's poll may be the one that runs our callback, so wait on the channel too.
        let start = std::time::Instant::now();
        loop {
            self.poll_until(submission)?;
            match done.recv_timeout(Duration::from_millis(5)) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(Error::Gpu(format!("reading back a buffer failed: {e}"))),
                Err(_) if start.elapsed() < self.wait_timeout => continue,
                Err(_) => {
                    Faults::lose(&self.faults, "reading back a buffer timed out; the device may be hung".into());
                    return self.check_lost().map(|_| Vec::new());
                }
            }
        }
        let out = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("mapping the read-back buffer failed: {e}")))?;
            view.to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// Block until the GPU has finished everything submitted, or fail after the timeout; fails too
    /// with an error of this thread's earlier work (see `check_fault`).
    pub fn wait(&self) -> Result<()> {
        self.poll_idle()?;
        self.check_fault()
    }

    /// Block until the GPU has finished everything submitted; fails only if the device is lost or
    /// the wait times out (which counts as lost).
    fn poll_idle(&self) -> Result<()> {
        self.poll_until(None)
    }

    /// Block until the GPU has finished `submission` (everything submitted when `None`) and run the
    /// callbacks of what finished; fails only if the device is lost or the wait times out (which
    /// counts as lost).
    fn poll_until(&self, submission: Option<&wgpu::SubmissionIndex>) -> Result<()> {
        let poll = self
            .device
            .poll(wgpu::PollType::Wait { submission_index: submission.cloned(), timeout: Some(self.wait_timeout) });
        if let Err(e) = poll {
            Faults::lose(&self.faults, format!("waiting for the GPU failed ({e}); the device may be lost or hung"));
        }
        self.check_lost()
    }

    /// Submit every recorded command now and wait for the GPU to finish it.
    pub fn synchronize(&self) -> Result<()> {
        {
            let mut s = self.state();
            self.submit(&mut s)?;
        }
        self.wait()?;
        self.collect_profile()
    }

    // ----- pipelines and dispatches -------------------------------------------------------------

    pub(crate) fn pipeline(&self, key: &PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(p.clone());
        }
        let source =
            super::shaders::source(key.shader).ok_or_else(|| Error::Gpu(format!("no shader named {}", key.shader)))?;
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let module = modules
            .entry(key.shader)
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(key.shader),
                    source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(source)),
                };
                match self.trusted_checks(key.shader) {
                    // SAFETY: the shader's header proves what each dropped check would guard: every
                    // index it computes inside its buffers, given the sizes its launcher checks
                    // (`Bounds: unchecked`), and every loop finite (`Loops: finite`); see
                    // `shaders.rs`. The other runtime checks stay.
                    Some(checks) => unsafe { self.device.create_shader_module_trusted(desc, checks) },
                    None => self.device.create_shader_module(desc),
                }
            })
            .clone();
        drop(modules);
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry),
            layout: None,
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("compiling {}::{} failed: {e}", key.shader, key.entry)));
        }
        // Two threads may have compiled the same key at once: the first to get here wins.
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cache.entry(key.clone()).or_insert_with(|| Arc::new(pipeline)).clone())
    }

    /// Record one dispatch of `key` over `groups` workgroups. `params` (at most 256 bytes) is bound
    /// at binding 0 as a uniform when non-empty; `buffers` are `(binding, buffer)` pairs.
    pub(crate) fn dispatch(
        &self,
        key: &PipelineKey,
        params: &[u8],
        buffers: &[(u32, wgpu::BufferBinding)],
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_with_flops(key, params, buffers, groups, 0)
    }

    /// [`dispatch`](Self::dispatch) of a matrix product that does `flops` floating-point
    /// operations (`2 m n k batch`), which the profiler adds up beside the kernel's time.
    pub(crate) fn dispatch_with_flops(
        &self,
        key: &PipelineKey,
        params: &[u8],
        buffers: &[(u32, wgpu::BufferBinding)],
        groups: [u32; 3],
        flops: u64,
    ) -> Result<()> {
        self.check_fault()?;
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(Error::Gpu(format!(
                "{}::{}: {groups:?} workgroups exceed the device's {max} per dimension",
                key.shader, key.entry
            )));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let groups = match OVERSIZE_NEXT_DISPATCH.with(|o| o.replace(false)) {
            true => [max.saturating_add(1), groups[1], groups[2]],
            false => groups,
        };
        let started = Instant::now();
        let pipeline = self.pipeline(key)?;
        // One lock hold from the slot reservation to the push: see `State` for why.
        let mut s = self.state();
        if !params.is_empty() {
            loop {
                if s.arena_bytes.len() as u64 + SLOT > SLOT * SLOTS {
                    self.submit(&mut s)?;
                }
                if s.arena.is_none() {
                    s.arena = s.spare_arenas.pop();
                }
                if s.arena.is_some() {
                    break;
                }
                // A new arena is created outside the lock (an out-of-memory retry waits for the
                // GPU) and becomes a spare; the check above runs again in the hold that reserves.
                drop(s);
                let desc = wgpu::BufferDescriptor {
                    label: Some("uniform arena"),
                    size: SLOT * SLOTS,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                };
                let buf = self.create_buffer(&desc, "a uniform arena for kernel parameters", &FAIL_ARENAS)?;
                s = self.state();
                s.spare_arenas.push(buf);
            }
        }
        let mut bound = Vec::with_capacity(buffers.len() + 1);
        if !params.is_empty() {
            assert!(params.len() as u64 <= SLOT, "kernel parameters over {SLOT} bytes");
            let offset = s.arena_bytes.len() as u64;
            s.arena_bytes.extend_from_slice(params);
            s.arena_bytes.resize((offset + SLOT) as usize, 0);
            let arena = s.arena.clone().expect("arena set above");
            bound.push((0, arena, offset, wgpu::BufferSize::new(SLOT)));
        }
        for (binding, buf) in buffers {
            bound.push((*binding, buf.buffer.clone(), buf.offset, buf.size));
        }
        let bind_key = BindKey { pipeline: (*pipeline).clone(), entries: bound };
        let bind_group = match s.bind_groups.get(&bind_key) {
            Some(group) => group.clone(),
            None => {
                let group = self.create_bind_group(key, &pipeline, &bind_key.entries)?;
                s.counters.bind_groups_created += 1;
                if self.cache_bind_groups {
                    if s.bind_groups.len() >= BIND_GROUPS_KEPT {
                        s.bind_groups.clear();
                    }
                    s.bind_groups.insert(bind_key, group.clone());
                }
                group
            }
        };
        let shape = match &s.profiler {
            Some(p) if p.by_shape => {
                let consts: Vec<String> = key.constants.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let [x, y, z] = groups;
                Some(format!("{} [{}] grid {x}x{y}x{z}", key.entry, consts.join(",")))
            }
            _ => None,
        };
        Self::record(&mut s, Command::Dispatch { name: key.entry, shape, pipeline, bind_group, groups, flops });
        s.dispatches += 1;
        s.counters.dispatches += 1;
        s.counters.recording_ns += started.elapsed().as_nanos() as u64;
        if s.dispatches >= MAX_BATCH {
            self.submit(&mut s)?;
        }
        Ok(())
    }

    /// A new bind group of `entries` for `pipeline`. One that fails validation is reported to this
    /// thread, here, and never recorded: error scopes are per thread, so another thread's call
    /// cannot take the error.
    fn create_bind_group(
        &self,
        key: &PipelineKey,
        pipeline: &wgpu::ComputePipeline,
        entries: &[(u32, wgpu::Buffer, u64, Option<wgpu::BufferSize>)],
    ) -> Result<wgpu::BindGroup> {
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|(binding, buffer, offset, size)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset: *offset, size: *size }),
            })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(key.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(Error::Gpu(format!("{}::{}: binding its buffers failed: {e}", key.shader, key.entry))),
            None => Ok(group),
        }
    }

    /// Hand every recorded command to the GPU (does not wait); fails too with an error of this
    /// thread's earlier work (see `check_fault`).
    pub fn flush(&self) -> Result<()> {
        {
            let mut s = self.state();
            self.submit(&mut s)?;
        }
        self.check_fault()
    }

    /// Add `cmd`, recorded by the calling thread, to the batch.
    fn record(s: &mut State, cmd: Command) {
        let me = std::thread::current().id();
        if !s.owners.contains(&me) {
            s.owners.push(me);
        }
        s.commands.push(cmd);
    }

    /// Send the batch. If wgpu rejects it, none of its commands runs: every thread with a command in
    /// it is charged the error, and the caller gets it at once when it is one of them.
    fn submit(&self, s: &mut State) -> Result<()> {
        if s.commands.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // Encoding errors surface at `finish` and `submit`, in this thread's scopes.
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("mae-engine batch") });
        let commands = std::mem::take(&mut s.commands);
        let mut profiler = s.profiler.take();
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        for cmd in &commands {
            match cmd {
                Command::Dispatch { name, shape, pipeline, bind_group, groups, flops } => {
                    if let Some(prof) = profiler.as_mut() {
                        // One pass per dispatch, bracketed by timestamps.
                        drop(pass.take());
                        let row = shape.clone().unwrap_or_else(|| name.to_string());
                        let writes = prof.next_writes(row, *flops, &self.device);
                        let mut p = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some(name),
                            timestamp_writes: writes,
                        });
                        p.set_pipeline(pipeline);
                        p.set_bind_group(0, bind_group, &[]);
                        p.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        continue;
                    }
                    let p = pass.get_or_insert_with(|| {
                        encoder
                            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None })
                            .forget_lifetime()
                    });
                    p.set_pipeline(pipeline);
                    p.set_bind_group(0, bind_group, &[]);
                    p.dispatch_workgroups(groups[0], groups[1], groups[2]);
                }
                Command::Copy { src, src_offset, dst, dst_offset, bytes } => {
                    drop(pass.take());
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *bytes);
                }
            }
        }
        drop(pass);
        if let Some(prof) = profiler.as_mut() {
            prof.resolve(&mut encoder, &self.device);
        }
        s.profiler = profiler;
        if let Some(arena) = s.arena.take() {
            s.counters.uniform_bytes += s.arena_bytes.len() as u64;
            self.queue.write_buffer(&arena, 0, &s.arena_bytes);
            s.spare_arenas.push(arena);
        }
        s.arena_bytes.clear();
        s.last_submission = Some(self.queue.submit(Some(encoder.finish())));
        let error = pollster::block_on(oom.pop());
        let error = pollster::block_on(invalid.pop()).or(error);
        drop(commands);
        s.dispatches = 0;
        s.submissions += 1;
        for buf in std::mem::take(&mut s.quarantine) {
            Self::pool_put(s, buf);
        }
        let owners = std::mem::take(&mut s.owners);
        s.counters.submitting_ns += started.elapsed().as_nanos() as u64;
        let Some(e) = error else { return Ok(()) };
        let message = format!(
            "wgpu rejected a batch of GPU work holding this thread's commands, so none of them ran and \
             their results are unwritten: {e}"
        );
        let me = std::thread::current().id();
        let mut faults = Faults::lock(&self.faults);
        for &owner in owners.iter().filter(|&&o| o != me) {
            faults.charge(owner, &message);
        }
        match owners.contains(&me) {
            true => Err(Error::Gpu(message)),
            false => Ok(()),
        }
    }

    /// Destroy the device, as a driver reset or a removed GPU would: every later call must fail
    /// with a clear error instead of hanging. For tests of that path.
    #[doc(hidden)]
    pub fn destroy_device_for_test(&self) {
        self.device.destroy();
    }

    /// The next `arenas` uniform arenas and the next `buffers` other buffers that this thread
    /// creates fail as out of memory. The spare arenas are dropped, so that the next dispatch with
    /// parameters creates an arena unless another thread's batch has one. For tests of that path.
    /// Returns the failures of the previous call left unused.
    #[doc(hidden)]
    pub fn inject_out_of_memory_for_test(&self, arenas: u32, buffers: u32) -> (u32, u32) {
        self.state().spare_arenas.clear();
        (FAIL_ARENAS.with(|n| n.replace(arenas)), FAIL_BUFFERS.with(|n| n.replace(buffers)))
    }

    /// This thread's next dispatch asks for one workgroup more than the device allows, skipping
    /// the check that would refuse it, so that wgpu rejects the batch holding it at submit, as it
    /// would any invalid command. For tests of that path.
    #[doc(hidden)]
    pub fn oversize_next_dispatch_for_test(&self) {
        OVERSIZE_NEXT_DISPATCH.with(|o| o.set(true));
    }

    // ----- profiling -----------------------------------------------------------------------------

    /// Time every dispatch with timestamp queries from now on (needs `TIMESTAMP_QUERY`).
    pub fn start_profiling(&self) -> Result<()> {
        self.start_profiling_as(false)
    }

    /// Like [`start_profiling`](Self::start_profiling), with the times summed per entry point,
    /// override constants and workgroup grid (`matmul [TRANS_A=1,..] grid 2x6x1`): one row per
    /// distinct product of a training step, to find which shapes a kernel is slow on.
    pub fn start_profiling_by_shape(&self) -> Result<()> {
        self.start_profiling_as(true)
    }

    fn start_profiling_as(&self, by_shape: bool) -> Result<()> {
        if !self.has_timestamps() {
            return Err(Error::Gpu(format!("{} has no timestamp queries", self.adapter.name)));
        }
        self.flush()?;
        self.state().profiler = Some(super::profile::Profiler::new(self.queue.get_timestamp_period(), by_shape));
        Ok(())
    }

    /// Stop profiling and return `(kernel entry point, dispatches, total GPU nanoseconds)`, slowest first.
    pub fn stop_profiling(&self) -> Result<Vec<(String, u64, f64)>> {
        Ok(self.stop_profiling_kernels()?.into_iter().map(|k| (k.name, k.dispatches, k.ns)).collect())
    }

    /// As [`stop_profiling`](Self::stop_profiling), with the matrix-product FLOPs of each row.
    pub fn stop_profiling_kernels(&self) -> Result<Vec<super::KernelTime>> {
        self.synchronize()?;
        let prof = self.state().profiler.take();
        Ok(prof.map(|p| p.report()).unwrap_or_default())
    }

    /// Read the timestamps of every submitted batch into the profiler's totals. The resolved
    /// batches are taken out under the lock and read without it, so other threads keep recording.
    fn collect_profile(&self) -> Result<()> {
        let pending = match self.state().profiler.as_mut() {
            Some(p) => p.take_pending(),
            None => return Ok(()),
        };
        for (buf, names) in pending {
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.map_read(&buf)?);
            if let Some(p) = self.state().profiler.as_mut() {
                p.add(&names, &ticks);
            }
        }
        Ok(())
    }
}

/// What a buffer's `map_async` callback sends: whether the map succeeded.
type MapOutcome = std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>;

/// A read-back requested with `GpuContext::read_later`: the copy into a host-visible staging buffer
/// has been submitted, and `wait` waits for that submission only, then returns the bytes. They are
/// the bytes at request time: commands recorded after the request run after the copy.
///
/// Dropped without `wait`, the staging buffer goes with it: wgpu aborts the pending map (the
/// callback gets an error no one listens for) and frees the buffer once the copy has run, so
/// nothing hangs or stays mapped.
pub(crate) struct PendingGpuRead {
    ctx: Arc<GpuContext>,
    /// `None` for a read of zero bytes, which has nothing to wait for.
    mapping: Option<Mapping>,
}

struct Mapping {
    staging: wgpu::Buffer,
    /// The submission holding the copy into `staging`.
    submission: wgpu::SubmissionIndex,
    done: MapOutcome,
}

impl PendingGpuRead {
    /// Block until the submission holding the copy has finished (not the work submitted after it),
    /// and return the bytes. Fails if the device is lost or the wait times out (which counts as
    /// lost); an error of work recorded after the request is left for that work's thread's next
    /// call.
    pub(crate) fn wait(self) -> Result<Vec<u8>> {
        match &self.mapping {
            None => Ok(Vec::new()),
            Some(m) => self.ctx.mapped_bytes(&m.staging, Some(&m.submission), &m.done),
        }
    }
}

impl Drop for GpuContext {
    fn drop(&mut self) {
        let mut s = self.state();
        let _ = self.submit(&mut s);
    }
}
