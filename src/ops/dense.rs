//! Rust twin of `shaders/dense.wgsl`: a dense layer `y = x W + b` (`x` `[batch, inputs]`,
//! `W` `[inputs, outputs]`) and the gradients of its input, weight and bias, each one launch
//! of the same tiled GEMM over strided views.
//!
//! The weight, the bias and their gradients sit at element offsets into their buffers
//! ([`At`]): one flat vector can hold every layer's parameters and another their gradients.

use crate::error::{Error, Result};
use crate::gpu::{shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::{check_len, At};

/// A dense layer applied to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DenseShape {
    /// Rows of input.
    pub batch: usize,
    /// Values per input row.
    pub inputs: usize,
    /// Values per output row.
    pub outputs: usize,
}

impl DenseShape {
    /// Refuses empty dimensions and sizes past 32-bit indexing.
    pub fn validate(&self) -> Result<()> {
        if [self.batch, self.inputs, self.outputs].contains(&0) {
            return Err(Error::InvalidArgument(format!("dense: zero-sized dimension in {self:?}")));
        }
        let largest = [self.batch * self.inputs, self.batch * self.outputs, (self.inputs + 1) * self.outputs];
        if largest.into_iter().any(|len| len > u32::MAX as usize) {
            return Err(Error::InvalidArgument(format!("dense: {self:?} exceeds 32-bit indexing")));
        }
        Ok(())
    }

    /// Multiply-adds of the forward, counted twice; each of the two weight-sized gradients
    /// costs as much.
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.inputs * self.outputs) as f64
    }
}

/// The uniform of `dense.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    depth: u32,
    a_offset: u32,
    a_row: u32,
    a_depth: u32,
    b_offset: u32,
    b_depth: u32,
    b_col: u32,
    c_offset: u32,
    bias_offset: u32,
    mode: u32,
}

/// Modes, as in the shader.
const MODE_PLAIN: u32 = 0;
const MODE_BIAS: u32 = 1;
const MODE_BIAS_ROW: u32 = 2;

/// Depth of one reduction slice.
const DEPTH: u32 = 16;

/// Uniform, a, b, bias, c, d_bias.
const BINDINGS: [Binding; 6] = Binding::uniform_reads_writes(3);

/// Invocations along a tile side of at most `n` outputs (4 each): 1 to 16.
fn side(n: usize) -> u32 {
    [1, 2, 4, 8].into_iter().find(|&s| 4 * s as usize >= n).unwrap_or(16)
}

fn offset(op: &str, what: &str, at: At, len: usize) -> Result<u32> {
    check_len(&format!("{op} {what}"), at.buffer, at.offset + len)?;
    u32::try_from(at.offset + len)
        .map(|_| at.offset as u32)
        .map_err(|_| Error::InvalidArgument(format!("{op}: {what} ends past 32-bit indexing")))
}

/// One launch: `rows` rows of C (the ones row included), `params.n` columns. Buffers in
/// binding order after the uniform.
fn launch(
    ctx: &Context, label: &'static str, params: Params, rows: usize, bound: [&wgpu::Buffer; 5],
) -> Result<Dispatch> {
    let (wg_x, wg_y) = (side(params.n as usize), side(rows));
    let constants = [("WG_X", wg_x as f64), ("WG_Y", wg_y as f64), ("DEPTH", DEPTH as f64)];
    let kernel = ctx.kernel(&PipelineKey::new(ShaderFile::Dense, "main", &constants), &BINDINGS)?;
    let uniform = ctx.uniform(&format!("{label} params"), &params);
    let grid = [(params.n as usize).div_ceil(4 * wg_x as usize) as u32, rows.div_ceil(4 * wg_y as usize) as u32, 1];
    let [a, b, bias, c, d_bias] = bound;
    Dispatch::new(ctx, label, kernel, &[&uniform, a, b, bias, c, d_bias], grid)
}

/// Prepares `y = x W + b`: `x` `[batch, inputs]`, `kernel` `[inputs, outputs]`, `bias`
/// `[outputs]`, `y` `[batch, outputs]`.
pub fn dense_forward(
    ctx: &Context, shape: &DenseShape, x: &wgpu::Buffer, kernel: At, bias: At, y: &wgpu::Buffer,
) -> Result<Dispatch> {
    let op = "dense_forward";
    shape.validate()?;
    let DenseShape { batch, inputs, outputs } = *shape;
    check_len("dense_forward x", x, batch * inputs)?;
    check_len("dense_forward y", y, batch * outputs)?;
    let params = Params {
        m: batch as u32,
        n: outputs as u32,
        depth: inputs as u32,
        a_offset: 0,
        a_row: inputs as u32,
        a_depth: 1,
        b_offset: offset(op, "kernel", kernel, inputs * outputs)?,
        b_depth: outputs as u32,
        b_col: 1,
        c_offset: 0,
        bias_offset: offset(op, "bias", bias, outputs)?,
        mode: MODE_BIAS,
    };
    launch(ctx, op, params, batch, [x, kernel.buffer, bias.buffer, y, y])
}

/// Prepares the gradient of the input, `d_x = grad_y Wᵀ` (`[batch, inputs]`).
pub fn dense_backward_input(
    ctx: &Context, shape: &DenseShape, grad_y: &wgpu::Buffer, kernel: At, d_x: &wgpu::Buffer,
) -> Result<Dispatch> {
    let op = "dense_backward_input";
    shape.validate()?;
    let DenseShape { batch, inputs, outputs } = *shape;
    check_len("dense_backward_input grad_y", grad_y, batch * outputs)?;
    check_len("dense_backward_input d_x", d_x, batch * inputs)?;
    let params = Params {
        m: batch as u32,
        n: inputs as u32,
        depth: outputs as u32,
        a_offset: 0,
        a_row: outputs as u32,
        a_depth: 1,
        b_offset: offset(op, "kernel", kernel, inputs * outputs)?,
        b_depth: 1,
        b_col: outputs as u32,
        c_offset: 0,
        bias_offset: 0,
        mode: MODE_PLAIN,
    };
    launch(ctx, op, params, batch, [grad_y, kernel.buffer, grad_y, d_x, d_x])
}

/// Prepares the gradients of the weight, `d_kernel = xᵀ grad_y` (`[inputs, outputs]`), and
/// of the bias, `d_bias = Σ_batch grad_y`, in one launch.
pub fn dense_backward_weight(
    ctx: &Context, shape: &DenseShape, x: &wgpu::Buffer, grad_y: &wgpu::Buffer, d_kernel: At, d_bias: At,
) -> Result<Dispatch> {
    let op = "dense_backward_weight";
    shape.validate()?;
    let DenseShape { batch, inputs, outputs } = *shape;
    check_len("dense_backward_weight x", x, batch * inputs)?;
    check_len("dense_backward_weight grad_y", grad_y, batch * outputs)?;
    let params = Params {
        m: inputs as u32,
        n: outputs as u32,
        depth: batch as u32,
        a_offset: 0,
        a_row: 1,
        a_depth: inputs as u32,
        b_offset: 0,
        b_depth: outputs as u32,
        b_col: 1,
        c_offset: offset(op, "d_kernel", d_kernel, inputs * outputs)?,
        bias_offset: offset(op, "d_bias", d_bias, outputs)?,
        mode: MODE_BIAS_ROW,
    };
    // The bias binding is not read: x stands in.
    launch(ctx, op, params, inputs + 1, [x, grad_y, x, d_kernel.buffer, d_bias.buffer])
}

#[cfg(test)]
mod tests {
    use super::side;

    #[test]
    fn tiles_are_no_wider_than_needed() {
        assert_eq!([1, 4, 5, 8, 9, 33, 64, 65, 1000].map(side), [1, 1, 2, 2, 4, 16, 16, 16, 16]);
    }
}
