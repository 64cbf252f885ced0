//! Rust twin of `shaders/conv2d.wgsl`: implicit-GEMM convolution over NHWC with a fused
//! scale / bias / residual / ReLU epilogue.

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::gpu::{shaders::ShaderFile, Binding, Context, Dispatch, Kernel, PipelineKey};
use crate::ops::{check_len, vec4_placeholder, vec4_view, Tiles};
pub use crate::shape::conv2d::Conv2dShape;

/// The buffers one convolution reads and writes. Optional epilogue inputs are applied when
/// present: `y = relu?(acc * scale[c] + bias[c] + residual)`.
pub struct Conv2dBuffers<'a> {
    /// NHWC input.
    pub input: &'a wgpu::Buffer,
    /// HWIO weight.
    pub weight: &'a wgpu::Buffer,
    /// Per output channel.
    pub scale: Option<&'a wgpu::Buffer>,
    /// Per output channel.
    pub bias: Option<&'a wgpu::Buffer>,
    /// Shaped like the output.
    pub residual: Option<&'a wgpu::Buffer>,
    /// NHWC output.
    pub output: &'a wgpu::Buffer,
}

/// A convolution's geometry as the first fields of every convolution uniform (forward and
/// backward), in the order the shaders declare them.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ConvUniform {
    batch: u32,
    in_h: u32,
    in_w: u32,
    in_c: u32,
    out_h: u32,
    out_w: u32,
    out_c: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    pad_h: u32,
    pad_w: u32,
    m: u32,
    k: u32,
}

impl Conv2dShape {
    /// The geometry fields of the convolution uniforms (sizes already checked by
    /// [`Conv2dShape::validate`] to fit 32 bits).
    pub(crate) fn uniform(&self) -> ConvUniform {
        ConvUniform {
            batch: self.batch as u32,
            in_h: self.in_h as u32,
            in_w: self.in_w as u32,
            in_c: self.in_c as u32,
            out_h: self.out_h() as u32,
            out_w: self.out_w() as u32,
            out_c: self.out_c as u32,
            kernel_h: self.kernel_h as u32,
            kernel_w: self.kernel_w as u32,
            stride: self.stride as u32,
            pad_h: self.pad_h as u32,
            pad_w: self.pad_w as u32,
            m: self.m() as u32,
            k: self.k() as u32,
        }
    }
}

/// The uniform of `conv2d.wgsl` and `conv2d_coop.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    shape: ConvUniform,
    flags: u32,
    _pad: u32,
}

/// Epilogue flags, as in the shader.
const FLAG_SCALE: u32 = 1;
const FLAG_BIAS: u32 = 2;
const FLAG_RESIDUAL: u32 = 4;
const FLAG_RELU: u32 = 8;

/// Uniform, input, weight, scale, bias, residual, output, then the input and the weight
/// again as `vec4`s (`conv2d_io.wgsl`).
pub(crate) const BINDINGS: [Binding; 9] = [
    Binding::Uniform,
    Binding::ReadOnly,
    Binding::ReadOnly,
    Binding::ReadOnly,
    Binding::ReadOnly,
    Binding::ReadOnly,
    Binding::ReadWrite,
    Binding::ReadOnly,
    Binding::ReadOnly,
];

/// Validates a convolution's shape and buffers and builds the uniform the conv kernels read.
pub(crate) fn params(shape: &Conv2dShape, buffers: &Conv2dBuffers, relu: bool) -> Result<Params> {
    shape.validate()?;
    check_len("conv2d input", buffers.input, shape.input_len())?;
    check_len("conv2d weight", buffers.weight, shape.weight_len())?;
    check_len("conv2d output", buffers.output, shape.output_len())?;
    let mut flags = if relu { FLAG_RELU } else { 0 };
    if let Some(b) = buffers.scale {
        check_len("conv2d scale", b, shape.out_c)?;
        flags |= FLAG_SCALE;
    }
    if let Some(b) = buffers.bias {
        check_len("conv2d bias", b, shape.out_c)?;
        flags |= FLAG_BIAS;
    }
    if let Some(b) = buffers.residual {
        check_len("conv2d residual", b, shape.output_len())?;
        flags |= FLAG_RESIDUAL;
    }
    Ok(Params { shape: shape.uniform(), flags, _pad: 0 })
}

/// A convolution launch of either kernel, its buffers bound in [`BINDINGS`] order. Unused
/// epilogue inputs still need a binding: the input stands in, and the flags keep the kernel
/// from reading it.
pub(crate) fn dispatch(
    ctx: &Context, label: &'static str, kernel: Arc<Kernel>, params: &Params, buffers: &Conv2dBuffers, grid: [u32; 3],
) -> Result<Dispatch> {
    let uniform = ctx.uniform(&format!("{label} params"), params);
    let (input, weight, unused) = (buffers.input, buffers.weight, buffers.input);
    let placeholder = vec4_placeholder(ctx, &[input, weight])?;
    let [input4, weight4] = [input, weight].map(|buffer| vec4_view(buffer, placeholder.as_ref()));
    let bound = [
        &uniform,
        input,
        weight,
        buffers.scale.unwrap_or(unused),
        buffers.bias.unwrap_or(unused),
        buffers.residual.unwrap_or(unused),
        buffers.output,
        input4,
        weight4,
    ];
    Dispatch::new(ctx, label, kernel, &bound, grid)
}

/// Prepares one convolution launch (validated, pipeline from the cache, bind group built).
pub fn conv2d(
    ctx: &Context, shape: &Conv2dShape, buffers: &Conv2dBuffers, relu: bool, tiles: Tiles,
) -> Result<Dispatch> {
    let params = params(shape, buffers, relu)?;
    // The conv kernel's K slice follows WG_X (see the shader): tile_k does not apply.
    let entry = match tiles.block {
        4 => "main",
        8 => "main_8x8",
        other => {
            return Err(Error::InvalidArgument(format!("conv2d: {other}x{other} blocks per invocation; 4 or 8 exist")))
        }
    };
    let [wg_x, wg_y, _] = tiles.constants();
    // Four input channels per load where they come in fours and the slice splits into
    // quads evenly (the shader's A_VEC4).
    let a_vec4 = shape.in_c.is_multiple_of(4) && tiles.wg_x.is_multiple_of(4);
    let key = PipelineKey::new(ShaderFile::Conv2d, entry, &[wg_x, wg_y, ("A_VEC4", a_vec4 as u8 as f64)]);
    let kernel = ctx.kernel(&key, &BINDINGS)?;
    let grid = [shape.out_c.div_ceil(tiles.cols()) as u32, shape.m().div_ceil(tiles.rows()) as u32, 1];
    dispatch(ctx, "conv2d", kernel, &params, buffers, grid)
}
