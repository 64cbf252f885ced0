//! Rust twin of `shaders/batch_norm.wgsl`: the standalone inference batch-norm layer
//! (with optional residual add and ReLU), used by the unfused ResNet path.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::{check_len, ELEMENTWISE_WG};
pub use crate::shape::batch_norm::BatchNormShape;

/// The layer's parameters as stored in the model, plus input and output.
pub struct BatchNormBuffers<'a> {
    /// NHWC input.
    pub input: &'a wgpu::Buffer,
    /// Per-channel scale (γ).
    pub weight: &'a wgpu::Buffer,
    /// Per-channel shift (β).
    pub bias: &'a wgpu::Buffer,
    /// Per-channel mean.
    pub running_mean: &'a wgpu::Buffer,
    /// Per-channel variance.
    pub running_var: &'a wgpu::Buffer,
    /// Added before the ReLU, shaped like the output.
    pub residual: Option<&'a wgpu::Buffer>,
    /// NHWC output.
    pub output: &'a wgpu::Buffer,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    channels: u32,
    eps: f32,
    flags: u32,
}

const FLAG_RESIDUAL: u32 = 4;
const FLAG_RELU: u32 = 8;

const BINDINGS: [Binding; 8] = Binding::uniform_reads_writes(6);

/// Prepares one batch-norm launch: `y = relu?((x - mean) / sqrt(var + eps) * w + b + residual)`.
pub fn batch_norm(ctx: &Context, shape: &BatchNormShape, buffers: &BatchNormBuffers, relu: bool) -> Result<Dispatch> {
    if shape.channels == 0 || !shape.len.is_multiple_of(shape.channels) || shape.len > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "batch_norm: {} elements are not whole rows of {} channels",
            shape.len, shape.channels
        )));
    }
    check_len("batch_norm input", buffers.input, shape.len)?;
    check_len("batch_norm output", buffers.output, shape.len)?;
    for (what, b) in [
        ("batch_norm weight", buffers.weight),
        ("batch_norm bias", buffers.bias),
        ("batch_norm running_mean", buffers.running_mean),
        ("batch_norm running_var", buffers.running_var),
    ] {
        check_len(what, b, shape.channels)?;
    }
    let mut flags = if relu { FLAG_RELU } else { 0 };
    if let Some(r) = buffers.residual {
        check_len("batch_norm residual", r, shape.len)?;
        flags |= FLAG_RESIDUAL;
    }
    let params = Params { len: shape.len as u32, channels: shape.channels as u32, eps: shape.eps, flags };
    let key = PipelineKey::new(ShaderFile::BatchNorm, "main", &[("WG", ELEMENTWISE_WG as f64)]);
    let kernel = ctx.kernel(&key, &BINDINGS)?;
    let uniform = ctx.uniform("batch_norm params", &params);
    let grid = grid_1d(shape.len, ELEMENTWISE_WG, ctx.limits().max_compute_workgroups_per_dimension);
    Dispatch::new(
        ctx,
        "batch_norm",
        kernel,
        &[
            &uniform,
            buffers.input,
            buffers.weight,
            buffers.bias,
            buffers.running_mean,
            buffers.running_var,
            buffers.residual.unwrap_or(buffers.input),
            buffers.output,
        ],
        grid,
    )
}
