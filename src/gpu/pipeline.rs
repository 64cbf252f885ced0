//! One cache of compute pipelines keyed by (shader, entry point, override constants), each
//! with an explicit bind-group layout, and the [`Dispatch`] that ops hand back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::shaders::ShaderFile;
use crate::gpu::Context;

/// What one binding of a kernel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binding {
    /// A uniform buffer (the kernel's parameters).
    Uniform,
    /// A storage buffer the kernel only reads.
    ReadOnly,
    /// A storage buffer the kernel writes.
    ReadWrite,
}

impl Binding {
    /// The common layout of `N` bindings: the uniform, then `reads` storage buffers the
    /// kernel only reads, then the ones it writes. (Too many reads fails to compile.)
    pub(crate) const fn uniform_reads_writes<const N: usize>(reads: usize) -> [Binding; N] {
        let mut layout = [Binding::ReadWrite; N];
        layout[0] = Binding::Uniform;
        let mut i = 1;
        while i <= reads {
            layout[i] = Binding::ReadOnly;
            i += 1;
        }
        layout
    }
}

/// Identifies a compiled pipeline. Constants are stored as bit patterns so the key hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// The WGSL file.
    pub shader: ShaderFile,
    /// Its entry point.
    pub entry: &'static str,
    /// Override constants by name, as `f64` bit patterns.
    pub constants: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    /// The key of `entry` in `shader` with these override constants.
    pub fn new(shader: ShaderFile, entry: &'static str, constants: &[(&'static str, f64)]) -> Self {
        let constants = constants.iter().map(|&(name, value)| (name, value.to_bits())).collect();
        Self { shader, entry, constants }
    }
}

/// A compiled pipeline and the layout its bind groups are made with.
#[derive(Debug)]
pub struct Kernel {
    /// The compiled pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Its bind group layout, one binding per [`Binding`].
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<ShaderFile, wgpu::ShaderModule>>,
    kernels: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.kernels.lock().map(|k| k.len()).unwrap_or(0)
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::Gpu { context: "pipeline cache".into(), message: "lock poisoned by a panic elsewhere".into() }
}

/// Runs `f` inside validation and out-of-memory error scopes and returns what they caught.
pub(crate) fn scoped<T>(ctx: &Context, what: impl FnOnce() -> String, f: impl FnOnce() -> T) -> Result<T> {
    let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let errors = pollster::block_on(async { (validation.pop().await, oom.pop().await) });
    match errors {
        (None, None) => Ok(value),
        (Some(e), _) | (None, Some(e)) => Err(Error::Gpu { context: what(), message: e.to_string() }),
    }
}

impl Context {
    /// The cached pipeline for `key`, compiling it on first use. Compile and validation
    /// errors come back as [`Error::Shader`] naming the file and entry point.
    pub(crate) fn kernel(&self, key: &PipelineKey, bindings: &[Binding]) -> Result<Arc<Kernel>> {
        if let Some(kernel) = self.pipelines.kernels.lock().map_err(poisoned)?.get(key) {
            return Ok(kernel.clone());
        }
        let shader_error = |e: Error| match e {
            Error::Gpu { message, .. } => Error::Shader { shader: key.shader.name(), entry: key.entry, message },
            other => other,
        };
        let module = {
            let mut modules = self.pipelines.modules.lock().map_err(poisoned)?;
            match modules.get(&key.shader) {
                Some(m) => m.clone(),
                None => {
                    let m = scoped(self, String::new, || {
                        self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(key.shader.name()),
                            source: wgpu::ShaderSource::Wgsl(key.shader.source().into()),
                        })
                    })
                    .map_err(shader_error)?;
                    modules.insert(key.shader, m.clone());
                    m
                }
            }
        };
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match b {
                    Binding::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::ReadOnly | Binding::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: *b == Binding::ReadOnly },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let constants: Vec<(&str, f64)> =
            key.constants.iter().map(|&(name, bits)| (name, f64::from_bits(bits))).collect();
        let kernel = scoped(self, String::new, || {
            let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(key.entry),
                entries: &entries,
            });
            let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(key.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key.shader.name()),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            Kernel { pipeline, layout }
        })
        .map_err(shader_error)?;
        let kernel = Arc::new(kernel);
        self.pipelines.kernels.lock().map_err(poisoned)?.insert(key.clone(), kernel.clone());
        Ok(kernel)
    }

    /// Number of distinct pipelines compiled so far.
    pub fn cached_pipelines(&self) -> usize {
        self.pipelines.len()
    }
}

/// One recorded kernel launch: pipeline, bound buffers and grid, ready to encode any number
/// of times.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub(crate) label: &'static str,
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) bind_group: wgpu::BindGroup,
    pub(crate) workgroups: [u32; 3],
}

impl Dispatch {
    /// Builds the bind group for `kernel` from `buffers` in binding order; the grid must
    /// fit the device's per-dimension limit.
    pub(crate) fn new(
        ctx: &Context, label: &'static str, kernel: Arc<Kernel>, buffers: &[&wgpu::Buffer], workgroups: [u32; 3],
    ) -> Result<Self> {
        let max = ctx.limits().max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::InvalidArgument(format!(
                "{label}: grid {workgroups:?} exceeds the device limit of {max} workgroups per dimension; use a smaller batch"
            )));
        }
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        let bind_group = scoped(
            ctx,
            || format!("binding buffers for {label}"),
            || {
                ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(label),
                    layout: &kernel.layout,
                    entries: &entries,
                })
            },
        )?;
        Ok(Self { label, kernel, bind_group, workgroups })
    }

    /// Records this launch into a compute pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.kernel.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups[0], self.workgroups[1], self.workgroups[2]);
    }

    /// The kernel's name, for profiling.
    pub fn label(&self) -> &'static str {
        self.label
    }
}

#[cfg(test)]
mod tests {
    use super::Binding::{self, ReadOnly, ReadWrite, Uniform};

    #[test]
    fn the_common_layout_is_uniform_then_reads_then_writes() {
        assert_eq!(Binding::uniform_reads_writes::<5>(2), [Uniform, ReadOnly, ReadOnly, ReadWrite, ReadWrite]);
        assert_eq!(Binding::uniform_reads_writes::<3>(2), [Uniform, ReadOnly, ReadOnly]);
        assert_eq!(Binding::uniform_reads_writes::<2>(0), [Uniform, ReadWrite]);
    }
}
