//! Rust twin of `shaders/gemv.wgsl`: the scores of up to four queries against the rows of a
//! reference matrix, reading the matrix once. A single-query scan is bound by its bytes; the
//! tiled matmul would compute (and stage) three padding rows for each real one.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Context, Dispatch, PipelineKey};
use crate::ops::matmul::{check_buffers, matmul_with, MatmulShape, Params, Precision, BINDINGS};
use crate::ops::Tuning;

/// Most queries one launch scores.
pub const MAX_QUERIES: usize = 4;

/// Invocations per workgroup and per reference row. Set through WGSL override constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GemvTiles {
    /// Invocations per workgroup.
    pub workgroup: u32,
    /// Invocations that share one reference row.
    pub lanes: u32,
}

impl Default for GemvTiles {
    fn default() -> Self {
        Self { workgroup: 256, lanes: 16 }
    }
}

impl GemvTiles {
    pub(crate) fn validate(&self) -> Result<()> {
        if !self.lanes.is_power_of_two() || !self.workgroup.is_multiple_of(self.lanes) || self.workgroup > 1024 {
            return Err(Error::InvalidArgument(format!(
                "gemv: {self:?} needs power-of-two lanes dividing a workgroup of at most 1024"
            )));
        }
        Ok(())
    }
}

/// Whether [`gemv`] takes this product: queries times transposed rows, at most
/// [`MAX_QUERIES`] queries, and a depth of whole 16-byte words.
pub fn supports(shape: &MatmulShape, precision: Precision) -> bool {
    let per_word = match precision {
        Precision::F32 => 4,
        Precision::F16 => 8,
    };
    shape.b_transposed && shape.m <= MAX_QUERIES && shape.k.is_multiple_of(per_word)
}

/// Prepares `C[m, n] = A[m, k] * B[n, k]ᵀ` (see [`supports`]) with B stored in `precision`.
pub fn gemv(
    ctx: &Context, shape: &MatmulShape, a: &wgpu::Buffer, b: &wgpu::Buffer, precision: Precision, c: &wgpu::Buffer,
    tiles: GemvTiles,
) -> Result<Dispatch> {
    shape.validate()?;
    tiles.validate()?;
    if !supports(shape, precision) {
        return Err(Error::InvalidArgument(format!(
            "gemv: {shape:?} with {precision:?} rows needs transposed B, at most {MAX_QUERIES} queries and a depth of whole 16-byte words"
        )));
    }
    check_buffers("gemv", shape, [a, b, c], precision)?;
    let params = Params::of(shape);
    let constants = [
        ("WG", tiles.workgroup as f64),
        ("LANES", tiles.lanes as f64),
        ("B_F16", if precision == Precision::F16 { 1.0 } else { 0.0 }),
        ("QUERIES", shape.m as f64),
    ];
    let kernel = ctx.kernel(&PipelineKey::new(ShaderFile::Gemv, "main", &constants), &BINDINGS)?;
    let uniform = ctx.uniform("gemv params", &params);
    let rows_per_group = tiles.workgroup / tiles.lanes;
    let grid = grid_1d(shape.n, rows_per_group, ctx.limits().max_compute_workgroups_per_dimension);
    Dispatch::new(ctx, "gemv", kernel, &[&uniform, a, b, c], grid)
}

/// The scores of queries against reference rows (`shape.b_transposed`) as the k-NN scan
/// computes them: [`gemv`] where it applies, else the tiled matmul, with the launch shapes
/// of `tuning`.
pub fn scores(
    ctx: &Context, shape: &MatmulShape, a: &wgpu::Buffer, b: &wgpu::Buffer, precision: Precision, c: &wgpu::Buffer,
    tuning: &Tuning,
) -> Result<Dispatch> {
    if supports(shape, precision) {
        gemv(ctx, shape, a, b, precision, c, tuning.gemv)
    } else {
        matmul_with(ctx, shape, a, b, precision, c, tuning.gemm_tiles(shape.m, shape.n))
    }
}
