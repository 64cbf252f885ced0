//! 3x3 stride-2 valid convolution with bias and ReLU, and its backward.

use super::gemm::{gemm, Strided};
use crate::shape::convnet::{ConvGeometry, KERNEL, STRIDE};

/// Gradients of one convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvGrads {
    /// Gradient w.r.t. the input (NHWC, shaped like it), when asked for.
    pub input: Option<Vec<f32>>,
    /// Gradient w.r.t. the HWIO kernel, summed over the batch.
    pub kernel: Vec<f32>,
    /// Gradient w.r.t. the bias, summed over the batch.
    pub bias: Vec<f32>,
}

/// Buffers a convolution reuses between calls, and whether its GEMMs may use all threads.
#[derive(Debug, Default)]
pub(crate) struct ConvScratch {
    /// im2col rows, then their gradient.
    cols: Vec<f32>,
    /// The gradient before the ReLU, shaped like the output.
    dz: Vec<f32>,
    /// Keeps every GEMM on the calling thread (the caller splits the work itself).
    serial: bool,
}

impl ConvScratch {
    /// Scratch for a caller that runs convolutions on several threads at once.
    pub(crate) fn serial() -> Self {
        Self { serial: true, ..Self::default() }
    }

    /// How a GEMM of `work` multiply-adds runs.
    fn parallelism(&self, work: usize) -> gemm::Parallelism {
        let threads = rayon::current_num_threads();
        if !self.serial && threads > 1 && work >= PARALLEL_MIN_WORK {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        }
    }
}

fn check_shapes(what: &str, input: &[f32], batch: usize, g: &ConvGeometry, kernel: &[f32]) {
    assert_eq!(input.len(), batch * g.in_h * g.in_w * g.in_c, "{what}: input length for {g:?}");
    assert_eq!(kernel.len(), g.k() * g.out_c, "{what}: kernel length for {g:?}");
    assert!(g.out_h == 0 || (g.out_h - 1) * STRIDE + KERNEL <= g.in_h, "{what}: {g:?} reads past the input");
    assert!(g.out_w == 0 || (g.out_w - 1) * STRIDE + KERNEL <= g.in_w, "{what}: {g:?} reads past the input");
}

/// `ReLU(conv3x3_stride2_valid(input, kernel) + bias)`: NHWC `[batch, in_h, in_w, in_c]` ->
/// `[batch, out_h, out_w, out_c]`, kernel HWIO.
pub fn conv_forward(input: &[f32], batch: usize, g: &ConvGeometry, kernel: &[f32], bias: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; batch * g.out_pixels() * g.out_c];
    conv_forward_into(input, batch, g, kernel, bias, &mut ConvScratch::default(), &mut out);
    out
}

/// [`conv_forward`] into `out`: one GEMM of the im2col rows (`[batch · out pixels, 9 · in_c]`)
/// by the kernel (`[9 · in_c, out_c]`), onto rows of the bias.
pub(crate) fn conv_forward_into(
    input: &[f32], batch: usize, g: &ConvGeometry, kernel: &[f32], bias: &[f32], scratch: &mut ConvScratch,
    out: &mut [f32],
) {
    check_shapes("conv_forward", input, batch, g, kernel);
    assert_eq!(bias.len(), g.out_c, "conv_forward: bias length");
    let (m, k, n) = (batch * g.out_pixels(), g.k(), g.out_c);
    assert_eq!(out.len(), m * n, "conv_forward: output length");
    if n == 0 {
        return;
    }
    let parallelism = scratch.parallelism(m * n * k);
    let cols = im2col(input, batch, g, &mut scratch.cols);
    out.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(bias));
    gemm(out, true, m, n, k, Strided::rows(cols, k), Strided::rows(kernel, n), parallelism);
    out.iter_mut().for_each(|y| *y = relu(*y));
}

/// Multiply-adds above which a GEMM is split across threads.
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// The im2col rows of a 3x3 stride-2 valid convolution (`[batch · out pixels, 9 · in_c]`,
/// columns ordered (kh, kw, ic) as the HWIO kernel's rows) in `cols`. The three taps of a
/// kernel row are adjacent in NHWC memory: one copy each.
fn im2col<'a>(input: &[f32], batch: usize, g: &ConvGeometry, cols: &'a mut Vec<f32>) -> &'a [f32] {
    let (m, k, span) = (batch * g.out_pixels(), g.k(), KERNEL * g.in_c);
    cols.resize(m * k, 0.0);
    for (row, at) in cols.chunks_exact_mut(k).zip(patches(batch, g)) {
        for (kh, dst) in row.chunks_exact_mut(span).enumerate() {
            let from = at + kh * g.in_w * g.in_c;
            dst.copy_from_slice(&input[from..from + span]);
        }
    }
    &cols[..m * k]
}

/// Adds the im2col-shaped `cols` back onto the input pixels they were read from.
fn col2im_add(cols: &[f32], batch: usize, g: &ConvGeometry, grad_input: &mut [f32]) {
    let span = KERNEL * g.in_c;
    for (row, at) in cols.chunks_exact(g.k()).zip(patches(batch, g)) {
        for (kh, src) in row.chunks_exact(span).enumerate() {
            let to = at + kh * g.in_w * g.in_c;
            grad_input[to..to + span].iter_mut().zip(src).for_each(|(d, &s)| *d += s);
        }
    }
}

/// Where each output pixel's 3x3 patch starts in the NHWC input, in output order.
fn patches(batch: usize, g: &ConvGeometry) -> impl Iterator<Item = usize> + '_ {
    (0..batch * g.out_pixels()).map(move |m| {
        let (b, oh, ow) = (m / g.out_pixels(), (m / g.out_w) % g.out_h, m % g.out_w);
        ((b * g.in_h + oh * STRIDE) * g.in_w + ow * STRIDE) * g.in_c
    })
}

/// ReLU that keeps NaN, as the GPU epilogue does.
fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Gradients of [`conv_forward`]. `output` is the forward's post-ReLU output: the gradient
/// before the ReLU is `grad_output` where `output > 0`, else 0. The input gradient is
/// computed only when `need_input_grad` (the first layer's input is the data).
pub fn conv_backward(
    input: &[f32], output: &[f32], grad_output: &[f32], batch: usize, g: &ConvGeometry, kernel: &[f32],
    need_input_grad: bool,
) -> ConvGrads {
    let mut grads = ConvGrads {
        input: need_input_grad.then(|| vec![0.0; input.len()]),
        kernel: vec![0.0; kernel.len()],
        bias: vec![0.0; g.out_c],
    };
    conv_backward_into(
        input,
        output,
        grad_output,
        batch,
        g,
        kernel,
        &mut ConvScratch::default(),
        grads.input.as_deref_mut(),
        &mut grads.kernel,
        &mut grads.bias,
    );
    grads
}

/// [`conv_backward`] into the caller's buffers (overwritten).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_backward_into(
    input: &[f32], output: &[f32], grad_output: &[f32], batch: usize, g: &ConvGeometry, kernel: &[f32],
    scratch: &mut ConvScratch, grad_input: Option<&mut [f32]>, grad_kernel: &mut [f32], grad_bias: &mut [f32],
) {
    check_shapes("conv_backward", input, batch, g, kernel);
    let out_len = batch * g.out_pixels() * g.out_c;
    assert!(output.len() == out_len && grad_output.len() == out_len, "conv_backward: output lengths for {g:?}");
    assert!(grad_kernel.len() == kernel.len() && grad_bias.len() == g.out_c, "conv_backward: gradient lengths");
    let n = g.out_c;
    grad_bias.fill(0.0);
    let mut grad_input = grad_input;
    if let Some(d) = grad_input.as_deref_mut() {
        assert_eq!(d.len(), input.len(), "conv_backward: input gradient length");
        d.fill(0.0);
    }
    if n == 0 {
        return;
    }
    // From here the GEMM overwrites grad_kernel (it is all zeros for an empty batch).
    let (m, k) = (batch * g.out_pixels(), g.k());
    scratch.dz.clear();
    scratch.dz.extend(output.iter().zip(grad_output).map(|(&y, &dy)| if y > 0.0 { dy } else { 0.0 }));
    let dz = &scratch.dz[..];
    for row in dz.chunks_exact(n) {
        grad_bias.iter_mut().zip(row).for_each(|(d, &z)| *d += z);
    }
    let parallelism = scratch.parallelism(m * n * k);
    let cols = im2col(input, batch, g, &mut scratch.cols);
    // d_kernel = colsᵀ · dz.
    gemm(grad_kernel, false, k, n, m, Strided::transposed(cols, k), Strided::rows(dz, n), parallelism);
    if let Some(grad_input) = grad_input {
        // d_cols = dz · kernelᵀ, then each patch's gradient goes back to its pixels.
        let grad_cols = &mut scratch.cols[..m * k];
        gemm(grad_cols, false, m, k, n, Strided::rows(dz, n), Strided::transposed(kernel, n), parallelism);
        col2im_add(grad_cols, batch, g, grad_input);
    }
}
