//! Rust twin of `shaders/conv2d_backward.wgsl`: the gradients of a convolution followed by
//! ReLU (the forward is [`conv2d`](crate::ops::conv2d::conv2d) with bias and ReLU), with
//! respect to its weight and bias (one launch) and to its input (another).
//!
//! The weight and both gradients of the parameters sit at element offsets into their buffers
//! ([`At`]), so one flat vector can hold every layer's weights and another their gradients.

use crate::error::{Error, Result};
use crate::gpu::{shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::conv2d::{Conv2dShape, ConvUniform};
use crate::ops::{check_len, At};

/// Invocations per workgroup along the columns (`WG_X`) and rows (`WG_Y`) of a tile; each
/// computes a 4x4 block, and the reduction advances `2 * wg_x` deep per slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackwardTiles {
    /// Invocations across.
    pub wg_x: u32,
    /// Invocations down.
    pub wg_y: u32,
}

impl BackwardTiles {
    /// Tiles no larger than an output of `rows` x `cols` needs (4, 8 or 16 invocations per
    /// side): the convnet's first layer has 10 rows (9 taps and the bias) and 32 columns.
    pub fn fitting(rows: usize, cols: usize) -> Self {
        let side = |n: usize| match n {
            0..=16 => 4,
            17..=32 => 8,
            _ => 16,
        };
        Self { wg_x: side(cols), wg_y: side(rows) }
    }

    fn check(&self, op: &str) -> Result<()> {
        let ok = |n: u32| [1, 2, 4, 8, 16].contains(&n);
        if !ok(self.wg_x) || !ok(self.wg_y) {
            return Err(Error::InvalidArgument(format!(
                "{op}: workgroup {self:?}; each side must be 1, 2, 4, 8 or 16"
            )));
        }
        Ok(())
    }

    fn constants(&self) -> [(&'static str, f64); 2] {
        [("WG_X", self.wg_x as f64), ("WG_Y", self.wg_y as f64)]
    }
}

/// The forward's tensors the backward reads: its input, its post-ReLU output and the
/// gradient of the loss with respect to that output.
pub struct ConvActivations<'a> {
    /// The forward's input, NHWC.
    pub input: &'a wgpu::Buffer,
    /// The forward's output after ReLU, NHWC.
    pub output: &'a wgpu::Buffer,
    /// The loss's gradient with respect to that output.
    pub grad_output: &'a wgpu::Buffer,
}

/// The uniform of `conv2d_backward.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    shape: ConvUniform,
    relu: u32,
    weight_offset: u32,
    d_weight_offset: u32,
    d_bias_offset: u32,
    _pad: [u32; 2],
}

/// Uniform, input, output, grad_output, weight, d_weight, d_bias, d_input: one layout for
/// both entries, each binding what the other reads or writes to a buffer it already uses.
const BINDINGS: [Binding; 8] = Binding::uniform_reads_writes(4);

fn fits_u32(op: &str, what: &str, end: usize) -> Result<u32> {
    u32::try_from(end).map_err(|_| Error::InvalidArgument(format!("{op}: {what} ends past 32-bit indexing ({end})")))
}

fn params(op: &str, shape: &Conv2dShape, acts: &ConvActivations, relu: bool) -> Result<Params> {
    shape.validate()?;
    check_len(&format!("{op} grad_output"), acts.grad_output, shape.output_len())?;
    if relu {
        check_len(&format!("{op} output"), acts.output, shape.output_len())?;
    }
    Ok(Params {
        shape: shape.uniform(),
        relu: relu as u32,
        weight_offset: 0,
        d_weight_offset: 0,
        d_bias_offset: 0,
        _pad: [0; 2],
    })
}

/// Checks that `at` holds `len` values and that its end stays within 32-bit indexing.
fn check_at(op: &str, what: &str, at: At, len: usize) -> Result<u32> {
    check_len(&format!("{op} {what}"), at.buffer, at.offset + len)?;
    fits_u32(op, what, at.offset + len)?;
    Ok(at.offset as u32)
}

fn launch(
    ctx: &Context, entry: &'static str, tiles: BackwardTiles, params: &Params, bound: [&wgpu::Buffer; 7],
    grid: [u32; 3],
) -> Result<Dispatch> {
    tiles.check(entry)?;
    let key = PipelineKey::new(ShaderFile::Conv2dBackward, entry, &tiles.constants());
    let kernel = ctx.kernel(&key, &BINDINGS)?;
    let uniform = ctx.uniform(&format!("{entry} params"), params);
    let [a, b, c, d, e, f, g] = bound;
    Dispatch::new(ctx, entry, kernel, &[&uniform, a, b, c, d, e, f, g], grid)
}

/// Prepares the gradients of the weight (`[kh, kw, cin, cout]`, at `d_weight`) and of the
/// bias (`[cout]`, at `d_bias`) of `shape`'s convolution: the implicit-im2col input times dz,
/// reduced over batch x output pixels, and the column sums of dz, in one launch. With `relu`,
/// dz is `grad_output` where `output` (the forward's post-ReLU output) is positive; without,
/// `grad_output` itself (`output` is not read).
pub fn conv2d_backward_weight(
    ctx: &Context, shape: &Conv2dShape, acts: &ConvActivations, relu: bool, d_weight: At, d_bias: At,
    tiles: BackwardTiles,
) -> Result<Dispatch> {
    let op = "conv2d_backward_weight";
    let mut params = params(op, shape, acts, relu)?;
    check_len(&format!("{op} input"), acts.input, shape.input_len())?;
    params.d_weight_offset = check_at(op, "d_weight", d_weight, shape.weight_len())?;
    params.d_bias_offset = check_at(op, "d_bias", d_bias, shape.out_c)?;
    // The bias is the reduction's row K.
    let rows = shape.k() + 1;
    let grid = [shape.out_c.div_ceil(4 * tiles.wg_x as usize) as u32, rows.div_ceil(4 * tiles.wg_y as usize) as u32, 1];
    // The weight binding is not read here: the input stands in; d_input is d_weight's buffer.
    let bound =
        [acts.input, acts.output, acts.grad_output, acts.input, d_weight.buffer, d_bias.buffer, d_weight.buffer];
    launch(ctx, "d_weight_main", tiles, &params, bound, grid)
}

/// Pixels of `in_size` with `(i + pad) % stride == phase`.
fn phase_count(in_size: usize, pad: usize, stride: usize, phase: usize) -> usize {
    let first = (phase + stride - pad % stride) % stride;
    if first < in_size {
        (in_size - 1 - first) / stride + 1
    } else {
        0
    }
}

/// Prepares the gradient of `shape`'s convolution input (NHWC, written whole to `d_input`):
/// each input value gathers dz of the output pixels whose windows cover it, times the weight
/// at `weight` (HWIO). dz as in [`conv2d_backward_weight`].
pub fn conv2d_backward_input(
    ctx: &Context, shape: &Conv2dShape, acts: &ConvActivations, relu: bool, weight: At, d_input: &wgpu::Buffer,
    tiles: BackwardTiles,
) -> Result<Dispatch> {
    let op = "conv2d_backward_input";
    let mut params = params(op, shape, acts, relu)?;
    params.weight_offset = check_at(op, "weight", weight, shape.weight_len())?;
    check_len(&format!("{op} d_input"), d_input, shape.input_len())?;
    let s = shape.stride;
    let rows = (0..s)
        .flat_map(|ph| (0..s).map(move |pw| (ph, pw)))
        .map(|(ph, pw)| {
            shape.batch * phase_count(shape.in_h, shape.pad_h, s, ph) * phase_count(shape.in_w, shape.pad_w, s, pw)
        })
        .max()
        .unwrap_or(0);
    let phases = u32::try_from(s * s).map_err(|_| Error::InvalidArgument(format!("{op}: stride {s} too large")))?;
    let grid =
        [shape.in_c.div_ceil(4 * tiles.wg_x as usize) as u32, rows.div_ceil(4 * tiles.wg_y as usize) as u32, phases];
    // The input is not read here: the gradient stands in; d_weight and d_bias are d_input.
    let bound = [acts.grad_output, acts.output, acts.grad_output, weight.buffer, d_input, d_input, d_input];
    launch(ctx, "d_input_main", tiles, &params, bound, grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_partition_every_axis() {
        for (size, pad, stride) in [(28, 0, 2), (13, 0, 2), (7, 1, 2), (10, 2, 3), (5, 0, 1), (9, 1, 4)] {
            let total: usize = (0..stride).map(|ph| phase_count(size, pad, stride, ph)).sum();
            assert_eq!(total, size, "{size} {pad} {stride}");
        }
        assert_eq!(phase_count(28, 0, 2, 0), 14);
        assert_eq!(phase_count(7, 1, 2, 0), 3, "(i + 1) % 2 == 0: i = 1, 3, 5");
    }

    #[test]
    fn tiles_fit_the_convnet() {
        assert_eq!(BackwardTiles::fitting(10, 32), BackwardTiles { wg_x: 8, wg_y: 4 });
        assert_eq!(BackwardTiles::fitting(577, 128), BackwardTiles { wg_x: 16, wg_y: 16 });
    }
}
