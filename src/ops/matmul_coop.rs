//! Rust twin of `shaders/matmul_coop.wgsl`: the GEMM on the GPU's matrix units (tensor
//! cores), f16 inputs and f32 sums.
//!
//! Same shapes, layouts and bindings as [`crate::ops::matmul`]; A and B are rounded to f16 on
//! their way into workgroup memory, so the result is the exact-f32 product of the rounded
//! inputs up to summation order (the CPU oracle: [`crate::cpu::matmul()`] on
//! [`round_to_f16`](crate::ops::coop::round_to_f16) inputs). Needs a context opened with
//! [`crate::gpu::ContextBuilder::experimental_cooperative_matrices`] on an adapter that has
//! the matrix units ([`crate::Context::cooperative_matrix`]).

use crate::error::Result;
use crate::gpu::{shaders::ShaderFile, Context, Dispatch, PipelineKey};
use crate::ops::coop::{self, CoopTiles};
use crate::ops::matmul::{check_buffers, dispatch, MatmulShape, Precision, VEC4_BINDINGS};

/// The uniform of `matmul_coop.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    b_f16: u32,
}

/// Prepares one launch of `C = A * B` on the matrix units, B stored in `b_precision`,
/// with [`CoopTiles::default_for`] the adapter's units.
pub fn matmul_coop(
    ctx: &Context, shape: &MatmulShape, a: &wgpu::Buffer, b: &wgpu::Buffer, b_precision: Precision, c: &wgpu::Buffer,
) -> Result<Dispatch> {
    let coop = coop::units(ctx, "matmul_coop")?;
    matmul_coop_with(ctx, shape, a, b, b_precision, c, CoopTiles::default_for(coop))
}

/// [`matmul_coop`] with chosen tiles.
pub fn matmul_coop_with(
    ctx: &Context, shape: &MatmulShape, a: &wgpu::Buffer, b: &wgpu::Buffer, b_precision: Precision, c: &wgpu::Buffer,
    tiles: CoopTiles,
) -> Result<Dispatch> {
    let coop = coop::units(ctx, "matmul_coop")?;
    shape.validate()?;
    tiles.validate(ctx, coop)?;
    check_buffers("matmul_coop", shape, [a, b, c], b_precision)?;
    let shader = coop::shader(coop, ShaderFile::MatmulCoop8, ShaderFile::MatmulCoop16);
    let kernel =
        ctx.kernel(&PipelineKey::new(shader, "main", &tiles.constants(coop, shape.b_transposed)), &VEC4_BINDINGS)?;
    let params = Params {
        m: shape.m as u32,
        n: shape.n as u32,
        k: shape.k as u32,
        b_f16: (b_precision == Precision::F16) as u32,
    };
    dispatch(ctx, "matmul_coop", kernel, &params, [a, b, c], tiles.grid(coop, shape.m, shape.n))
}
