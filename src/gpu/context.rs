//! The GPU context: adapter choice, device, limits and features, and the pipeline cache.

use std::fmt;

use crate::error::{Error, Result};
use crate::gpu::pipeline::PipelineCache;

/// Which adapters a [`ContextBuilder`] may pick and what it asks of them.
///
/// [`ContextBuilder::default`] reads nothing from the environment: the primary backends
/// (Vulkan, Metal, DX12, browser WebGPU), any adapter name. [`ContextBuilder::from_env`]
/// starts from `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` instead, as the command line does.
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    backends: wgpu::Backends,
    adapter_name: Option<String>,
    allow_cpu: bool,
    cooperative_matrices: bool,
    max_binding_bytes: Option<u64>,
}

impl Default for ContextBuilder {
    fn default() -> Self {
        Self {
            backends: wgpu::Backends::PRIMARY,
            adapter_name: None,
            allow_cpu: true,
            cooperative_matrices: false,
            max_binding_bytes: None,
        }
    }
}

impl ContextBuilder {
    /// The default builder with the backends of `WGPU_BACKEND` (a comma-separated list such
    /// as `vulkan,metal`; wgpu's own syntax) and the adapter name filter of
    /// `WGPU_ADAPTER_NAME`, where they are set and not empty. Later calls override them.
    pub fn from_env() -> Self {
        let mut builder = Self::default();
        if let Some(backends) = wgpu::Backends::from_env() {
            builder.backends = backends;
        }
        builder.adapter_name = std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty());
        builder
    }

    /// Restricts the backends (overrides `WGPU_BACKEND` under [`ContextBuilder::from_env`]).
    pub fn backends(mut self, backends: wgpu::Backends) -> Self {
        self.backends = backends;
        self
    }

    /// Picks only adapters whose name contains `name`, case-insensitively (overrides
    /// `WGPU_ADAPTER_NAME` under [`ContextBuilder::from_env`]).
    pub fn adapter_name(mut self, name: impl Into<String>) -> Self {
        self.adapter_name = Some(name.into());
        self
    }

    /// Whether a CPU (software) adapter such as lavapipe may be chosen. Default true.
    pub fn allow_cpu(mut self, allow: bool) -> Self {
        self.allow_cpu = allow;
        self
    }

    /// Caps the storage binding and buffer sizes the device is opened with at `bytes`
    /// (rounded down to a multiple of 4; the adapter's own limits still apply), so that
    /// lookalike leaves room on a shared GPU. Work is split to fit, as on a device with
    /// these limits: smaller batches, reference chunks and uploads, and photos whose rows
    /// exceed one binding preprocessed on the CPU.
    pub fn max_binding_bytes(mut self, bytes: u64) -> Self {
        self.max_binding_bytes = Some(bytes & !3);
        self
    }

    /// Also opens the device with wgpu's experimental cooperative-matrix feature where the
    /// adapter has what [`CooperativeMatrix`] needs, so that the matrix-unit kernels
    /// (`ops::matmul_coop`, `ops::conv2d_coop`) can run on them (tensor cores). Without this
    /// call the feature is never requested.
    ///
    /// # Safety
    ///
    /// wgpu marks the feature experimental: its implementation may have bugs that cause
    /// undefined behaviour through otherwise safe calls on this device. The caller accepts
    /// that risk (see `wgpu::ExperimentalFeatures::enabled`).
    pub unsafe fn experimental_cooperative_matrices(mut self) -> Self {
        self.cooperative_matrices = true;
        self
    }

    /// Opens the best matching adapter: discrete > integrated > virtual > CPU.
    pub async fn build_async(self) -> Result<Context> {
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
        descriptor.backends = self.backends;
        let instance = wgpu::Instance::new(descriptor);
        let mut adapters = instance.enumerate_adapters(self.backends).await;
        let seen: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
        adapters.retain(|a| {
            let info = a.get_info();
            let name_ok =
                self.adapter_name.as_ref().is_none_or(|want| info.name.to_lowercase().contains(&want.to_lowercase()));
            let type_ok = self.allow_cpu || info.device_type != wgpu::DeviceType::Cpu;
            name_ok && type_ok && a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        });
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        let Some(adapter) = adapters.into_iter().next() else {
            let mut filter = format!(" for backends {:?}", self.backends);
            if let Some(name) = &self.adapter_name {
                filter.push_str(&format!(" and adapter name containing {name:?}"));
            }
            let hint = if seen.is_empty() {
                "No adapter at all was visible.".to_string()
            } else {
                format!("Adapters seen but not matching: {}.", seen.join("; "))
            };
            return Err(Error::NoAdapter { filter, hint });
        };
        Context::from_adapter(adapter, self.cooperative_matrices, self.max_binding_bytes).await
    }

    /// Blocking [`ContextBuilder::build_async`].
    pub fn build(self) -> Result<Context> {
        pollster::block_on(self.build_async())
    }
}

fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// An open GPU device with the limits and features lookalike asked for, and the one
/// pipeline cache all ops share.
///
/// Cloning is cheap and shares the device, its queue and the pipeline cache: give an
/// embedder and a searcher clones of one context, and each pipeline is compiled once (a
/// fresh `Context::new()` compiles them all again).
///
/// A context holds no launch shapes: whoever dispatches is given them (`ops::Tuning`).
#[derive(Clone)]
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    /// The matrix units, or why they are not used.
    cooperative: std::result::Result<CooperativeMatrix, String>,
    pub(crate) pipelines: std::sync::Arc<PipelineCache>,
}

/// Features used where the adapter has them; none is required.
const OPTIONAL_FEATURES: wgpu::Features =
    wgpu::Features::TIMESTAMP_QUERY.union(wgpu::Features::SHADER_F16).union(wgpu::Features::SUBGROUP);

impl Context {
    /// A builder that reads no environment ([`ContextBuilder::default`]).
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// The best adapter of the primary backends; reads no environment variable and no file.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// The best adapter that `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` allow (see
    /// [`ContextBuilder::from_env`]).
    pub fn from_env() -> Result<Self> {
        ContextBuilder::from_env().build()
    }

    async fn from_adapter(adapter: wgpu::Adapter, cooperative_matrices: bool, cap: Option<u64>) -> Result<Self> {
        let info = adapter.get_info();
        let mut have = adapter.limits();
        if let Some(cap) = cap {
            have.max_storage_buffer_binding_size = have.max_storage_buffer_binding_size.min(cap);
            have.max_buffer_size = have.max_buffer_size.min(cap);
        }
        // Ask for the large-buffer limits the adapter offers (big activations and reference
        // matrices), keep the rest at wgpu's defaults clamped to what the adapter has.
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: have.max_storage_buffer_binding_size,
            max_buffer_size: have.max_buffer_size,
            max_storage_buffers_per_shader_stage: have.max_storage_buffers_per_shader_stage.min(16),
            max_compute_workgroup_storage_size: have.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: have.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: have.max_compute_workgroup_size_x,
            max_compute_workgroup_size_y: have.max_compute_workgroup_size_y,
            max_compute_workgroups_per_dimension: have.max_compute_workgroups_per_dimension,
            ..wgpu::Limits::downlevel_defaults()
        };
        let mut features = adapter.features() & OPTIONAL_FEATURES;
        let mut cooperative = match cooperative_matrices {
            true => CooperativeMatrix::of_adapter(&adapter),
            false => Err("not requested (ContextBuilder::experimental_cooperative_matrices)".to_string()),
        };
        let open = |features: wgpu::Features, experimental_features| {
            adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("lookalike"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features,
                ..Default::default()
            })
        };
        let opened = match cooperative {
            Ok(_) => {
                // SAFETY: only reached through the unsafe
                // `ContextBuilder::experimental_cooperative_matrices`, whose caller accepted
                // the experimental feature's risks.
                let experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
                match open(features | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX, experimental).await {
                    Ok(opened) => {
                        features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
                        Ok(opened)
                    }
                    // An experimental feature may fail where the rest would not: open
                    // without it and say why.
                    Err(e) => {
                        cooperative = Err(format!("the device could not be opened with them: {e}"));
                        open(features, wgpu::ExperimentalFeatures::disabled()).await
                    }
                }
            }
            Err(_) => open(features, wgpu::ExperimentalFeatures::disabled()).await,
        };
        let (device, queue) =
            opened.map_err(|e| Error::RequestDevice { adapter: describe(&info), reason: e.to_string() })?;
        Ok(Self { device, queue, info, limits, features, cooperative, pipelines: Default::default() })
    }

    /// The adapter's name, backend, type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The matrix units the `*_coop` kernels run on, where the device was opened
    /// with them (see [`ContextBuilder::experimental_cooperative_matrices`]).
    pub fn cooperative_matrix(&self) -> Option<CooperativeMatrix> {
        self.cooperative.as_ref().ok().copied()
    }

    /// Why [`Context::cooperative_matrix`] is `None` (`None` when it is not).
    pub fn cooperative_matrix_unavailable(&self) -> Option<&str> {
        self.cooperative.as_ref().err().map(String::as_str)
    }

    /// The limits the device was opened with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The optional features the device was opened with.
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// True for software adapters (lavapipe, llvmpipe, WARP).
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The wgpu device, for callers that add their own work.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Largest byte size one storage binding may have on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Waits for all submitted work, turning a device loss into an error.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu { context: "waiting for the queue".into(), message: e.to_string() })
    }
}

impl fmt::Display for Context {
    /// What `lookalike info` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        let l = &self.limits;
        writeln!(f, "adapter:  {}", i.name)?;
        writeln!(f, "backend:  {:?}", i.backend)?;
        writeln!(f, "type:     {:?}", i.device_type)?;
        writeln!(f, "driver:   {} {}", i.driver, i.driver_info)?;
        writeln!(f, "vendor:   0x{:04x}  device: 0x{:04x}", i.vendor, i.device)?;
        writeln!(f, "limits:")?;
        writeln!(f, "  max_buffer_size                    {}", l.max_buffer_size)?;
        writeln!(f, "  max_storage_buffer_binding_size    {}", l.max_storage_buffer_binding_size)?;
        writeln!(f, "  max_compute_workgroup_storage_size {}", l.max_compute_workgroup_storage_size)?;
        writeln!(f, "  max_compute_invocations_per_wg     {}", l.max_compute_invocations_per_workgroup)?;
        writeln!(f, "  max_compute_workgroups_per_dim     {}", l.max_compute_workgroups_per_dimension)?;
        writeln!(f, "features: {:?}", self.features)?;
        match &self.cooperative {
            Ok(coop) => writeln!(f, "matrix units: {coop} (experimental, enabled)")?,
            Err(why) => write!(f, "matrix units: unused: {why}")?,
        }
        Ok(())
    }
}

/// The adapter's matrix units as lookalike uses them: `size` x `size` x `size` products of
/// f16 matrices summed into f32 ones, each matrix held by one subgroup of `subgroup`
/// invocations (NVIDIA: 16 and 32; lavapipe of Mesa 26: 8 and 8; Mesa 25.0 has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooperativeMatrix {
    /// Side of the square matrices one operation takes: 8 or 16.
    pub size: u32,
    /// Invocations of the subgroup that holds one matrix.
    pub subgroup: u32,
}

impl CooperativeMatrix {
    /// The largest square f16 x f16 -> f32 configuration the adapter lists, or why none
    /// can be used.
    fn of_adapter(adapter: &wgpu::Adapter) -> std::result::Result<Self, String> {
        let needed = [
            (wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX, "cooperative matrices"),
            (wgpu::Features::SHADER_F16, "f16 in shaders"),
            (wgpu::Features::SUBGROUP, "subgroups"),
        ];
        let missing: Vec<&str> =
            needed.iter().filter(|(f, _)| !adapter.features().contains(*f)).map(|(_, name)| *name).collect();
        if !missing.is_empty() {
            return Err(format!("the adapter has no {}", missing.join(", no ")));
        }
        let listed = adapter.cooperative_matrix_properties();
        let size = [16, 8].into_iter().find(|&size| {
            listed.iter().any(|p| {
                (p.m_size, p.n_size, p.k_size) == (size, size, size)
                    && p.ab_type == wgpu::CooperativeScalarType::F16
                    && p.cr_type == wgpu::CooperativeScalarType::F32
            })
        });
        let Some(size) = size else {
            return Err(format!("no 8x8x8 or 16x16x16 f16 x f16 -> f32 configuration among {listed:?}"));
        };
        // The kernels lay out whole subgroups per workgroup, so the size must not vary.
        let info = adapter.get_info();
        if info.subgroup_min_size != info.subgroup_max_size {
            return Err(format!("the subgroup size varies ({}..{})", info.subgroup_min_size, info.subgroup_max_size));
        }
        Ok(Self { size, subgroup: info.subgroup_min_size })
    }
}

impl fmt::Display for CooperativeMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.size;
        write!(f, "{s}x{s}x{s} f16 -> f32, subgroups of {}", self.subgroup)
    }
}
