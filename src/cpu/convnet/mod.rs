//! The CPU twin of the convnet's training kernels (the net is `model::convnet`): the
//! forward and backward of every layer, the pair loss and Adam, on plain slices.
//!
//! These functions are the oracle of the GPU kernels and the building blocks of the CPU
//! trainer and the CPU forward (`train::cpu`, `model::convnet_cpu`). Activations are NHWC
//! `f32`, convolution kernels HWIO,
//! the dense kernel `[inputs, outputs]`. Each function that allocates its result has an
//! `_into` sibling inside the crate that writes into a caller's buffers, which the trainer
//! reuses from step to step.
//!
//! The shapes are the caller's to get right: a slice of the wrong length panics.

mod conv;
mod dense;
mod gemm;
mod loss;

pub use conv::{conv_backward, conv_forward, ConvGrads};
pub(crate) use conv::{conv_backward_into, conv_forward_into, ConvScratch};
pub use dense::{dense_backward, dense_forward, DenseGrads};
pub(crate) use dense::{dense_backward_into, dense_forward_into};
pub use loss::{l2_normalize_backward, l2_normalize_rows, pair_loss, MAX_INV_NORM, MIN_SQUARED_NORM};
pub(crate) use loss::{l2_normalize_backward_into, l2_normalize_rows_into, pair_loss_into};

use crate::shape::adam::AdamRates;

/// Mean over the `pixels` of each image: `[batch, pixels, channels]` -> `[batch, channels]`.
pub fn global_avg_pool(input: &[f32], batch: usize, pixels: usize, channels: usize) -> Vec<f32> {
    let mut out = vec![0.0; batch * channels];
    global_avg_pool_into(input, batch, pixels, channels, &mut out);
    out
}

/// [`global_avg_pool`] into `out` (`[batch, channels]`).
pub(crate) fn global_avg_pool_into(input: &[f32], batch: usize, pixels: usize, channels: usize, out: &mut [f32]) {
    assert_eq!(input.len(), batch * pixels * channels, "global_avg_pool: input length");
    assert_eq!(out.len(), batch * channels, "global_avg_pool: output length");
    if channels == 0 {
        return;
    }
    for (image, mean) in input.chunks_exact(pixels * channels).zip(out.chunks_exact_mut(channels)) {
        mean.fill(0.0);
        for pixel in image.chunks_exact(channels) {
            mean.iter_mut().zip(pixel).for_each(|(m, &x)| *m += x);
        }
        mean.iter_mut().for_each(|m| *m /= pixels as f32);
    }
}

/// Gradient of [`global_avg_pool`]: each pixel of an image receives its channel's
/// `grad_output / pixels`. `[batch, channels]` -> `[batch, pixels, channels]`.
pub fn global_avg_pool_backward(grad_output: &[f32], batch: usize, pixels: usize, channels: usize) -> Vec<f32> {
    let mut out = vec![0.0; batch * pixels * channels];
    global_avg_pool_backward_into(grad_output, batch, pixels, channels, &mut out);
    out
}

/// [`global_avg_pool_backward`] into `out` (`[batch, pixels, channels]`).
pub(crate) fn global_avg_pool_backward_into(
    grad_output: &[f32], batch: usize, pixels: usize, channels: usize, out: &mut [f32],
) {
    assert_eq!(grad_output.len(), batch * channels, "global_avg_pool_backward: gradient length");
    assert_eq!(out.len(), batch * pixels * channels, "global_avg_pool_backward: output length");
    if channels == 0 || pixels == 0 {
        return;
    }
    for (image, grad) in out.chunks_exact_mut(pixels * channels).zip(grad_output.chunks_exact(channels)) {
        for pixel in image.chunks_exact_mut(channels) {
            pixel.iter_mut().zip(grad).for_each(|(d, &g)| *d = g / pixels as f32);
        }
    }
}

/// One Adam step over all weights, as Keras applies it:
/// `m += (g − m)(1 − β1)`, `v += (g² − v)(1 − β2)`, `w −= α_t · m / (√v + ε)` with
/// `α_t = step_size` (the bias-corrected step size of that step, `TrainConfig::adam_step_size`).
/// All arithmetic is `f32`.
pub fn adam_update(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], rates: AdamRates, step_size: f32) {
    let len = params.len();
    assert!(grads.len() == len && m.len() == len && v.len() == len, "adam_update: {len} weights, lengths differ");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above).
        unsafe { adam_avx(params, grads, m, v, rates, step_size) };
        return;
    }
    adam(params, grads, m, v, rates, step_size);
}

/// [`adam`] compiled for 8-wide vectors. Without FMA, so the results are the same bits.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn adam_avx(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], rates: AdamRates, step: f32) {
    adam(params, grads, m, v, rates, step);
}

#[inline(always)]
fn adam(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], rates: AdamRates, step: f32) {
    let (keep1, keep2) = (1.0 - rates.beta1, 1.0 - rates.beta2);
    let eps = rates.epsilon;
    for (((w, &g), m), v) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m += (g - *m) * keep1;
        *v += (g * g - *v) * keep2;
        *w -= step * *m / (v.sqrt() + eps);
    }
}
