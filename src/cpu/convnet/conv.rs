//! 3x3 stride-2 valid convolution with bias and ReLU, and its backward.

use crate::train::convnet::{ConvGeometry, KERNEL, STRIDE};

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

/// Buffers a convolution reuses between calls.
#[derive(Debug, Default)]
pub(crate) struct ConvScratch {
    /// The gradient before the ReLU, shaped like the output.
    dz: Vec<f32>,
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

/// [`conv_forward`] into `out`.
pub(crate) fn conv_forward_into(
    input: &[f32], batch: usize, g: &ConvGeometry, kernel: &[f32], bias: &[f32], _scratch: &mut ConvScratch,
    out: &mut [f32],
) {
    check_shapes("conv_forward", input, batch, g, kernel);
    assert_eq!(bias.len(), g.out_c, "conv_forward: bias length");
    assert_eq!(out.len(), batch * g.out_pixels() * g.out_c, "conv_forward: output length");
    let n = g.out_c;
    if n == 0 {
        return;
    }
    for (m, acc) in out.chunks_exact_mut(n).enumerate() {
        let (b, oh, ow) = (m / g.out_pixels(), (m / g.out_w) % g.out_h, m % g.out_w);
        acc.copy_from_slice(bias);
        for kh in 0..KERNEL {
            for kw in 0..KERNEL {
                let at = ((b * g.in_h + oh * STRIDE + kh) * g.in_w + ow * STRIDE + kw) * g.in_c;
                for (ic, &x) in input[at..at + g.in_c].iter().enumerate() {
                    let w = &kernel[((kh * KERNEL + kw) * g.in_c + ic) * n..][..n];
                    acc.iter_mut().zip(w).for_each(|(a, &w)| *a += x * w);
                }
            }
        }
        acc.iter_mut().for_each(|a| *a = relu(*a));
    }
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
    grad_kernel.fill(0.0);
    grad_bias.fill(0.0);
    let mut grad_input = grad_input;
    if let Some(d) = grad_input.as_deref_mut() {
        assert_eq!(d.len(), input.len(), "conv_backward: input gradient length");
        d.fill(0.0);
    }
    if n == 0 {
        return;
    }
    scratch.dz.clear();
    scratch.dz.extend(output.iter().zip(grad_output).map(|(&y, &dy)| if y > 0.0 { dy } else { 0.0 }));
    for (m, dz) in scratch.dz.chunks_exact(n).enumerate() {
        let (b, oh, ow) = (m / g.out_pixels(), (m / g.out_w) % g.out_h, m % g.out_w);
        grad_bias.iter_mut().zip(dz).for_each(|(d, &z)| *d += z);
        for kh in 0..KERNEL {
            for kw in 0..KERNEL {
                let at = ((b * g.in_h + oh * STRIDE + kh) * g.in_w + ow * STRIDE + kw) * g.in_c;
                for ic in 0..g.in_c {
                    let row = ((kh * KERNEL + kw) * g.in_c + ic) * n;
                    let x = input[at + ic];
                    grad_kernel[row..row + n].iter_mut().zip(dz).for_each(|(d, &z)| *d += x * z);
                    if let Some(d) = grad_input.as_deref_mut() {
                        d[at + ic] += kernel[row..row + n].iter().zip(dz).map(|(&w, &z)| w * z).sum::<f32>();
                    }
                }
            }
        }
    }
}
