//! Rust twin of `shaders/pool.wgsl`: max pooling and global average pooling over NHWC, and
//! the gradient of global average pooling.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::{check_len, ELEMENTWISE_WG};
pub use crate::shape::pool::MaxPoolShape;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    in_h: u32,
    in_w: u32,
    channels: u32,
    out_h: u32,
    out_w: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
    len: u32,
    _pad: [u32; 2],
}

const BINDINGS: [Binding; 3] = Binding::uniform_reads_writes(1);

fn launch(
    ctx: &Context, entry: &'static str, params: Params, input: &wgpu::Buffer, output: &wgpu::Buffer,
) -> Result<Dispatch> {
    let key = PipelineKey::new(ShaderFile::Pool, entry, &[("WG", ELEMENTWISE_WG as f64)]);
    let kernel = ctx.kernel(&key, &BINDINGS)?;
    let uniform = ctx.uniform("pool params", &params);
    let grid = grid_1d(params.len as usize, ELEMENTWISE_WG, ctx.limits().max_compute_workgroups_per_dimension);
    Dispatch::new(ctx, entry, kernel, &[&uniform, input, output], grid)
}

/// Prepares one max-pool launch.
pub fn max_pool(ctx: &Context, shape: &MaxPoolShape, input: &wgpu::Buffer, output: &wgpu::Buffer) -> Result<Dispatch> {
    shape.validate()?;
    check_len("max_pool input", input, shape.input_len())?;
    check_len("max_pool output", output, shape.output_len())?;
    let params = Params {
        batch: shape.batch as u32,
        in_h: shape.in_h as u32,
        in_w: shape.in_w as u32,
        channels: shape.channels as u32,
        out_h: shape.out_h() as u32,
        out_w: shape.out_w() as u32,
        kernel: shape.kernel as u32,
        stride: shape.stride as u32,
        pad: shape.pad as u32,
        len: shape.output_len() as u32,
        _pad: [0; 2],
    };
    launch(ctx, "max_pool", params, input, output)
}

/// Prepares a global average pool: `[batch, h, w, channels]` → `[batch, channels]`.
pub fn global_avg_pool(
    ctx: &Context, batch: usize, h: usize, w: usize, channels: usize, input: &wgpu::Buffer, output: &wgpu::Buffer,
) -> Result<Dispatch> {
    if [batch, h, w, channels].contains(&0) {
        return Err(Error::InvalidArgument("global_avg_pool: zero-sized dimension".into()));
    }
    check_len("global_avg_pool input", input, batch * h * w * channels)?;
    check_len("global_avg_pool output", output, batch * channels)?;
    let params = Params {
        batch: batch as u32,
        in_h: h as u32,
        in_w: w as u32,
        channels: channels as u32,
        out_h: 1,
        out_w: 1,
        kernel: 0,
        stride: 1,
        pad: 0,
        len: (batch * channels) as u32,
        _pad: [0; 2],
    };
    launch(ctx, "global_avg_pool", params, input, output)
}

/// Prepares the gradient of a global average pool over `pixels` pixels: `grad_output`
/// `[batch, channels]` → `grad_input` `[batch, pixels, channels]`, each pixel receiving its
/// channel's gradient over `pixels`.
pub fn global_avg_pool_backward(
    ctx: &Context, batch: usize, pixels: usize, channels: usize, grad_output: &wgpu::Buffer, grad_input: &wgpu::Buffer,
) -> Result<Dispatch> {
    if [batch, pixels, channels].contains(&0) {
        return Err(Error::InvalidArgument("global_avg_pool_backward: zero-sized dimension".into()));
    }
    let len = batch * pixels * channels;
    if len > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!("global_avg_pool_backward: {len} values exceed 32-bit indexing")));
    }
    check_len("global_avg_pool_backward grad_output", grad_output, batch * channels)?;
    check_len("global_avg_pool_backward grad_input", grad_input, len)?;
    let params = Params {
        batch: batch as u32,
        in_h: pixels as u32,
        in_w: 1,
        channels: channels as u32,
        out_h: 1,
        out_w: 1,
        kernel: 0,
        stride: 1,
        pad: 0,
        len: len as u32,
        _pad: [0; 2],
    };
    launch(ctx, "global_avg_pool_backward", params, grad_output, grad_input)
}
