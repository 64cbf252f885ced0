//! Rust twin of `shaders/l2_normalize.wgsl`: row-wise L2 normalisation with optional
//! centring (subtracting the database mean first).

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::check_len;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    center: u32,
    _pad: u32,
}

/// Workgroup size: one workgroup per row; a power of two for the tree reduction.
const WG: u32 = 256;

const BINDINGS: [Binding; 4] = Binding::uniform_reads_writes(2);

/// Prepares `output[r] = (input[r] - mean) / ||input[r] - mean||` for `rows` rows of `dim`
/// (no centring when `mean` is `None`). `output` must not be `input`. Scale-safe: any finite
/// row, from subnormal values to f32::MAX, gives its unit vector (a row whose plain f32 sum
/// of squares overflows or vanishes is summed again, rescaled by powers of two before it is
/// centred and squared); a zero row stays zero, a row with a NaN or an infinity comes out NaN.
pub fn l2_normalize(
    ctx: &Context, rows: usize, dim: usize, input: &wgpu::Buffer, mean: Option<&wgpu::Buffer>, output: &wgpu::Buffer,
) -> Result<Dispatch> {
    if rows == 0 || dim == 0 || rows * dim > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!("l2_normalize: cannot take {rows} rows of {dim}")));
    }
    check_len("l2_normalize input", input, rows * dim)?;
    check_len("l2_normalize output", output, rows * dim)?;
    if let Some(m) = mean {
        check_len("l2_normalize mean", m, dim)?;
    }
    let params = Params { rows: rows as u32, dim: dim as u32, center: u32::from(mean.is_some()), _pad: 0 };
    let key = PipelineKey::new(ShaderFile::L2Normalize, "main", &[("WG", WG as f64)]);
    let kernel = ctx.kernel(&key, &BINDINGS)?;
    let uniform = ctx.uniform("l2_normalize params", &params);
    // One workgroup per row.
    let grid = grid_1d(rows, 1, ctx.limits().max_compute_workgroups_per_dimension);
    Dispatch::new(ctx, "l2_normalize", kernel, &[&uniform, input, mean.unwrap_or(input), output], grid)
}
