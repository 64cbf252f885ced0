//! The dense layer `y = x · kernel + bias` and its backward.

/// Gradients of one dense layer.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseGrads {
    /// Gradient w.r.t. the input, `[batch, inputs]`.
    pub input: Vec<f32>,
    /// Gradient w.r.t. the kernel, `[inputs, outputs]`, summed over the batch.
    pub kernel: Vec<f32>,
    /// Gradient w.r.t. the bias, summed over the batch.
    pub bias: Vec<f32>,
}

/// `y = x · kernel + bias`: `x` is `[batch, inputs]`, `kernel` `[inputs, outputs]`, `y`
/// `[batch, outputs]`.
pub fn dense_forward(x: &[f32], batch: usize, inputs: usize, outputs: usize, kernel: &[f32], bias: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; batch * outputs];
    dense_forward_into(x, batch, inputs, outputs, kernel, bias, &mut y);
    y
}

/// [`dense_forward`] into `y`.
pub(crate) fn dense_forward_into(
    x: &[f32], batch: usize, inputs: usize, outputs: usize, kernel: &[f32], bias: &[f32], y: &mut [f32],
) {
    assert_eq!(x.len(), batch * inputs, "dense_forward: input length");
    assert_eq!(kernel.len(), inputs * outputs, "dense_forward: kernel length");
    assert_eq!(bias.len(), outputs, "dense_forward: bias length");
    assert_eq!(y.len(), batch * outputs, "dense_forward: output length");
    if outputs == 0 {
        return;
    }
    for (row, out) in y.chunks_exact_mut(outputs).enumerate() {
        out.copy_from_slice(bias);
        for (i, &xv) in x[row * inputs..(row + 1) * inputs].iter().enumerate() {
            out.iter_mut().zip(&kernel[i * outputs..(i + 1) * outputs]).for_each(|(o, &w)| *o += xv * w);
        }
    }
}

/// Gradients of [`dense_forward`] given `grad_y` (`[batch, outputs]`): input
/// `grad_y · kernelᵀ`, kernel `xᵀ · grad_y`, bias the column sums of `grad_y`.
pub fn dense_backward(
    x: &[f32], grad_y: &[f32], batch: usize, inputs: usize, outputs: usize, kernel: &[f32],
) -> DenseGrads {
    let mut grads =
        DenseGrads { input: vec![0.0; batch * inputs], kernel: vec![0.0; inputs * outputs], bias: vec![0.0; outputs] };
    dense_backward_into(
        x,
        grad_y,
        batch,
        inputs,
        outputs,
        kernel,
        &mut grads.input,
        &mut grads.kernel,
        &mut grads.bias,
    );
    grads
}

/// [`dense_backward`] into the caller's buffers (overwritten).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_backward_into(
    x: &[f32], grad_y: &[f32], batch: usize, inputs: usize, outputs: usize, kernel: &[f32], grad_x: &mut [f32],
    grad_kernel: &mut [f32], grad_bias: &mut [f32],
) {
    assert_eq!(x.len(), batch * inputs, "dense_backward: input length");
    assert_eq!(grad_y.len(), batch * outputs, "dense_backward: gradient length");
    assert_eq!(kernel.len(), inputs * outputs, "dense_backward: kernel length");
    assert_eq!(grad_x.len(), batch * inputs, "dense_backward: input gradient length");
    assert!(grad_kernel.len() == inputs * outputs && grad_bias.len() == outputs, "dense_backward: gradient lengths");
    grad_kernel.fill(0.0);
    grad_bias.fill(0.0);
    if outputs == 0 {
        grad_x.fill(0.0);
        return;
    }
    for (row, gy) in grad_y.chunks_exact(outputs).enumerate() {
        grad_bias.iter_mut().zip(gy).for_each(|(d, &g)| *d += g);
        let xs = &x[row * inputs..(row + 1) * inputs];
        for (i, &xv) in xs.iter().enumerate() {
            let w = &kernel[i * outputs..(i + 1) * outputs];
            grad_x[row * inputs + i] = w.iter().zip(gy).map(|(&w, &g)| w * g).sum();
            grad_kernel[i * outputs..(i + 1) * outputs].iter_mut().zip(gy).for_each(|(d, &g)| *d += xv * g);
        }
    }
}
