//! Rust twin of `shaders/matmul.wgsl`: tiled, register-blocked f32 GEMM.

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::gpu::{shaders::ShaderFile, Binding, Context, Dispatch, Kernel, PipelineKey};
use crate::ops::{check_len, vec4_placeholder, vec4_view, Tiles};
pub use crate::shape::matmul::{MatmulShape, Precision};

/// The uniform of `matmul.wgsl` and `gemv.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

impl Params {
    pub(crate) fn of(shape: &MatmulShape) -> Self {
        Self { m: shape.m as u32, n: shape.n as u32, k: shape.k as u32, _pad: 0 }
    }
}

/// Uniform, A, B, C: the layout of `gemv.wgsl`.
pub(crate) const BINDINGS: [Binding; 4] = Binding::uniform_reads_writes(2);

/// [`BINDINGS`], then A and B again as 16-byte vectors: the layout of `matmul.wgsl` and
/// `matmul_coop.wgsl`.
pub(crate) const VEC4_BINDINGS: [Binding; 6] =
    [BINDINGS[0], BINDINGS[1], BINDINGS[2], BINDINGS[3], Binding::ReadOnly, Binding::ReadOnly];

/// A matmul launch of either kernel, its buffers bound in [`VEC4_BINDINGS`] order.
pub(crate) fn dispatch<P: bytemuck::Pod>(
    ctx: &Context, label: &'static str, kernel: Arc<Kernel>, params: &P, [a, b, c]: [&wgpu::Buffer; 3], grid: [u32; 3],
) -> Result<Dispatch> {
    let uniform = ctx.uniform(&format!("{label} params"), params);
    let placeholder = vec4_placeholder(ctx, &[a, b])?;
    let [a4, b4] = [a, b].map(|buffer| vec4_view(buffer, placeholder.as_ref()));
    Dispatch::new(ctx, label, kernel, &[&uniform, a, b, c, a4, b4], grid)
}

/// Fails unless A, B (in `b_precision`) and C hold `shape`'s matrices.
pub(crate) fn check_buffers(
    op: &str, shape: &MatmulShape, [a, b, c]: [&wgpu::Buffer; 3], b_precision: Precision,
) -> Result<()> {
    check_len(&format!("{op} A"), a, shape.m * shape.k)?;
    check_len(&format!("{op} B"), b, b_precision.bytes(shape.k * shape.n).div_ceil(4))?;
    check_len(&format!("{op} C"), c, shape.m * shape.n)
}

/// Prepares one matmul launch with f32 B. C must be a buffer of its own: wgpu refuses a
/// buffer bound both for reading and writing, at submit.
pub fn matmul(
    ctx: &Context, shape: &MatmulShape, a: &wgpu::Buffer, b: &wgpu::Buffer, c: &wgpu::Buffer, tiles: Tiles,
) -> Result<Dispatch> {
    matmul_with(ctx, shape, a, b, Precision::F32, c, tiles)
}

/// Prepares one matmul launch with B stored in `b_precision`.
pub fn matmul_with(
    ctx: &Context, shape: &MatmulShape, a: &wgpu::Buffer, b: &wgpu::Buffer, b_precision: Precision, c: &wgpu::Buffer,
    tiles: Tiles,
) -> Result<Dispatch> {
    shape.validate()?;
    let entry = match tiles.block {
        4 => "main",
        // Half of TILE_K per slice: the same workgroup memory holds twice the rows and columns.
        8 if tiles.tile_k >= 2 && tiles.tile_k.is_multiple_of(2) => "main_8x8",
        _ => {
            return Err(Error::InvalidArgument(format!(
                "matmul: {tiles:?}; blocks are 4x4, or 8x8 with an even tile_k"
            )))
        }
    };
    check_buffers("matmul", shape, [a, b, c], b_precision)?;
    let params = Params::of(shape);
    let [wg_x, wg_y, tile_k] = tiles.constants();
    let transposed = ("B_TRANSPOSED", if shape.b_transposed { 1.0 } else { 0.0 });
    let half = ("B_F16", if b_precision == Precision::F16 { 1.0 } else { 0.0 });
    let key = PipelineKey::new(ShaderFile::Matmul, entry, &[wg_x, wg_y, tile_k, transposed, half]);
    let kernel = ctx.kernel(&key, &VEC4_BINDINGS)?;
    let grid = [shape.n.div_ceil(tiles.cols()) as u32, shape.m.div_ceil(tiles.rows()) as u32, 1];
    dispatch(ctx, "matmul", kernel, &params, [a, b, c], grid)
}
