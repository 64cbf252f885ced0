//! Rust twin of `shaders/conv2d_coop.wgsl`: the implicit-GEMM convolution of
//! [`crate::ops::conv2d`] on the GPU's matrix units, input and weight rounded to f16 as they
//! are staged, sums in f32, the same fused scale / bias / residual / ReLU epilogue.
//!
//! Same shapes, buffers and epilogue as [`conv2d`](crate::ops::conv2d::conv2d); the CPU
//! oracle is [`crate::cpu::conv2d()`] on [`round_to_f16`](crate::ops::coop::round_to_f16)
//! input and weight. Needs a context with matrix units
//! ([`crate::Context::cooperative_matrix`]).

use crate::error::{Error, Result};
use crate::gpu::{shaders::ShaderFile, Context, Dispatch, PipelineKey};
use crate::ops::conv2d::{dispatch, params, Conv2dBuffers, Conv2dShape, BINDINGS};
use crate::ops::coop::{self, CoopTiles};

/// Prepares one convolution launch on the matrix units with `tiles`, whose invocations
/// (`sg_rows * sg_cols` subgroups) must be a multiple of `tile_k`: each stages one depth
/// of several rows per slice.
pub fn conv2d_coop(
    ctx: &Context, shape: &Conv2dShape, buffers: &Conv2dBuffers, relu: bool, tiles: CoopTiles,
) -> Result<Dispatch> {
    let coop = coop::units(ctx, "conv2d_coop")?;
    let params = params(shape, buffers, relu)?;
    tiles.validate(ctx, coop)?;
    let invocations = tiles.sg_rows * tiles.sg_cols * coop.subgroup;
    if !invocations.is_multiple_of(tiles.tile_k) {
        return Err(Error::InvalidArgument(format!(
            "conv2d_coop: {tiles:?} on {coop}: {invocations} invocations are not a multiple of tile_k"
        )));
    }
    let shader = coop::shader(coop, ShaderFile::Conv2dCoop8, ShaderFile::Conv2dCoop16);
    let kernel = ctx.kernel(&PipelineKey::new(shader, "main", &tiles.constants(coop, false)), &BINDINGS)?;
    dispatch(ctx, "conv2d_coop", kernel, &params, buffers, tiles.grid(coop, shape.m(), shape.out_c))
}
