//! GPU plumbing: context, pipeline cache, buffers and submission.

mod context;
#[doc(hidden)]
pub mod known;
mod pipeline;
mod profile;
// for the shader validation test
#[doc(hidden)]
pub mod shaders;

pub use context::{Context, ContextBuilder, CooperativeMatrix};
pub(crate) use pipeline::scoped;
pub use pipeline::Dispatch;
pub(crate) use pipeline::PipelineKey;
pub(crate) use pipeline::{Binding, Kernel};
pub use profile::Stage;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};

/// A mappable buffer that results are copied into (see [`Context::readback`]).
#[derive(Debug)]
pub struct Readback {
    buffer: wgpu::Buffer,
}

/// Workgroups for a 1-D launch of `invocations` threads in groups of `group_size`, folded
/// into a 2-D grid when x would exceed `max_per_dim` (kernels flatten it back).
pub(crate) fn grid_1d(invocations: usize, group_size: u32, max_per_dim: u32) -> [u32; 3] {
    let groups = invocations.div_ceil(group_size as usize).max(1);
    let max = max_per_dim as usize;
    if groups <= max {
        [groups as u32, 1, 1]
    } else {
        [max as u32, groups.div_ceil(max) as u32, 1]
    }
}

impl Context {
    fn check_binding_size(&self, label: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding_bytes() {
            return Err(Error::InvalidArgument(format!(
                "{label}: {bytes} bytes exceed this device's largest storage binding ({} bytes); \
                 use a smaller batch or resolution",
                self.max_binding_bytes()
            )));
        }
        Ok(())
    }

    /// A storage buffer holding `data`.
    pub fn upload(&self, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
        self.upload_pod(label, data)
    }

    /// A storage buffer holding any plain-old-data slice (u32 indices, packed f16, bytes).
    /// Its size is rounded up to 4 bytes, as storage bindings require.
    pub fn upload_pod<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        let raw: &[u8] = bytemuck::cast_slice(data);
        let mut padded;
        let bytes: &[u8] = if raw.is_empty() || !raw.len().is_multiple_of(4) {
            padded = raw.to_vec();
            padded.resize(raw.len().div_ceil(4).max(1) * 4, 0);
            &padded
        } else {
            raw
        };
        self.check_binding_size(label, bytes.len() as u64)?;
        scoped(
            self,
            || format!("uploading {label}"),
            || {
                self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                })
            },
        )
    }

    /// An uninitialised storage buffer of `len` f32s.
    pub fn storage(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let bytes = (len.max(1) * 4) as u64;
        self.check_binding_size(label, bytes)?;
        scoped(
            self,
            || format!("allocating {label}"),
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: bytes,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            },
        )
    }

    /// A uniform buffer holding one `Pod` parameter block.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, params: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Overwrites the start of `buffer` with `data`.
    pub fn write(&self, buffer: &wgpu::Buffer, data: &[f32]) {
        self.queue.write_buffer(buffer, 0, bytemuck::cast_slice(data));
    }

    /// Records `dispatches` into one compute pass of one encoder, copies `len` f32s of
    /// `result` into a staging buffer, submits once and reads them back.
    pub fn run_and_read(&self, dispatches: &[&Dispatch], result: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let mut out = self.run_and_read_many(dispatches, &[(result, len)])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// [`Context::run_and_read`] for several results, all copied after the dispatches in
    /// the same submit.
    pub fn run_and_read_many(
        &self, dispatches: &[&Dispatch], results: &[(&wgpu::Buffer, usize)],
    ) -> Result<Vec<Vec<f32>>> {
        let staging: Vec<Readback> = results.iter().map(|&(_, len)| self.readback(len)).collect();
        let targets: Vec<_> =
            results.iter().zip(&staging).map(|(&(buffer, len), stage)| (buffer, stage, len)).collect();
        self.run_and_read_into(dispatches, &targets)
    }

    /// A mappable buffer for `len` f32 results: made once (with a plan) and reused by every
    /// submit, rather than allocated per read.
    pub fn readback(&self, len: usize) -> Readback {
        Readback {
            buffer: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: (len * 4).max(4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    /// Runs `dispatches` in one submit, copying the first `len` f32s of each source buffer
    /// into its readback buffer after them, and returns what was read.
    pub fn run_and_read_into(
        &self, dispatches: &[&Dispatch], results: &[(&wgpu::Buffer, &Readback, usize)],
    ) -> Result<Vec<Vec<f32>>> {
        self.record_and_read(
            |encoder| {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for d in dispatches {
                    d.encode(&mut pass);
                }
            },
            results,
        )
    }

    /// Records `record` into one encoder, then copies the first `len` f32s of each source
    /// buffer into its readback buffer, submits once and returns what was read: for work
    /// that needs several passes or buffer copies between them (a run of training steps).
    pub(crate) fn record_and_read(
        &self, record: impl FnOnce(&mut wgpu::CommandEncoder), results: &[(&wgpu::Buffer, &Readback, usize)],
    ) -> Result<Vec<Vec<f32>>> {
        for &(buffer, stage, len) in results {
            let bytes = (len * 4) as u64;
            if bytes > buffer.size() || bytes > stage.buffer.size() {
                return Err(Error::InvalidArgument(format!(
                    "reading {bytes} bytes from a buffer of {} bytes into a readback of {} bytes",
                    buffer.size(),
                    stage.buffer.size()
                )));
            }
        }
        scoped(
            self,
            || "recording and submitting".into(),
            || {
                let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                record(&mut encoder);
                for &(buffer, stage, len) in results {
                    if len > 0 {
                        encoder.copy_buffer_to_buffer(buffer, 0, &stage.buffer, 0, (len * 4) as u64);
                    }
                }
                self.queue.submit([encoder.finish()]);
            },
        )?;
        results.iter().map(|&(_, stage, len)| self.read_staging(&stage.buffer, len)).collect()
    }

    /// Runs `dispatches` in one submit and waits.
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<()> {
        self.run_and_read_many(dispatches, &[])?;
        self.wait()
    }

    /// Copies the first `len` f32s of a storage buffer back (for tests and tools); the
    /// buffer needs `COPY_SRC` usage, as [`Context::storage`]'s have.
    pub fn read(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        self.run_and_read(&[], buffer, len)
    }

    /// Copies the first `len` u32s of a storage buffer back.
    pub fn read_u32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<u32>> {
        Ok(self.read(buffer, len)?.into_iter().map(f32::to_bits).collect())
    }

    fn read_staging(&self, staging: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        let map_error = |m: String| Error::Gpu { context: "reading results back".into(), message: m };
        rx.recv().map_err(|e| map_error(e.to_string()))?.map_err(|e| map_error(e.to_string()))?;
        let data = {
            let view = slice.get_mapped_range();
            let view = view.map_err(|e| map_error(format!("{e:?}")))?;
            bytemuck::cast_slice::<u8, f32>(&view)[..len].to_vec()
        };
        staging.unmap();
        Ok(data)
    }
}
