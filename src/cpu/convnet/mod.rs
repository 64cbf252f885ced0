//! The CPU twin of the convnet's training kernels (see [`crate::train::convnet`]): the
//! forward and backward of every layer, the pair loss, Adam, and inference ([`embed`]).
//!
//! These functions are the oracle of the GPU kernels and the building blocks of
//! [`crate::train::cpu::CpuTrainer`]. Activations are NHWC `f32`, convolution kernels HWIO,
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

use crate::cpu::check_slice;
use crate::data::LabelledImages;
use crate::error::{Error, Result};
use crate::train::convnet::ConvNet;
use crate::train::TrainConfig;

/// The images at `rows` (indices into `images`) as one NHWC batch, each pixel `u8 / 255`.
///
/// Panics if a row is out of range.
pub fn gather_batch(images: &LabelledImages, rows: &[u32]) -> Vec<f32> {
    let mut out = vec![0.0; rows.len() * images.image_len()];
    gather_batch_into(images, rows, &mut out);
    out
}

/// [`gather_batch`] into `out` (`rows.len()` images).
pub(crate) fn gather_batch_into(images: &LabelledImages, rows: &[u32], out: &mut [f32]) {
    let n = images.image_len();
    assert_eq!(out.len(), rows.len() * n, "gather_batch: output length");
    for (dst, &row) in out.chunks_exact_mut(n).zip(rows) {
        for (d, &p) in dst.iter_mut().zip(images.image(row as usize)) {
            *d = p as f32 / 255.0;
        }
    }
}

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

/// One Adam step at step `t` (1-based) over all weights, as Keras applies it:
/// `m += (g − m)(1 − β1)`, `v += (g² − v)(1 − β2)`, `w −= α_t · m / (√v + ε)` with
/// `α_t = config.adam_step_size(t)`. All arithmetic but `α_t` is `f32`.
pub fn adam_update(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], config: &TrainConfig, t: u64) {
    let len = params.len();
    assert!(grads.len() == len && m.len() == len && v.len() == len, "adam_update: {len} weights, lengths differ");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above).
        unsafe { adam_avx(params, grads, m, v, config, t) };
        return;
    }
    adam(params, grads, m, v, config, t);
}

/// [`adam`] compiled for 8-wide vectors. Without FMA, so the results are the same bits.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn adam_avx(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], config: &TrainConfig, t: u64) {
    adam(params, grads, m, v, config, t);
}

#[inline(always)]
fn adam(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], config: &TrainConfig, t: u64) {
    let step = config.adam_step_size(t);
    let (keep1, keep2) = (1.0 - config.beta1, 1.0 - config.beta2);
    let eps = config.epsilon;
    for (((w, &g), m), v) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m += (g - *m) * keep1;
        *v += (g * g - *v) * keep2;
        *w -= step * *m / (v.sqrt() + eps);
    }
}

/// Unit embeddings (`[batch, dim]`) of `batch` NHWC images already scaled to [0, 1]: the
/// inference forward (three convolutions, pooling, dense, L2 normalisation).
pub fn embed(net: &ConvNet, input: &[f32], batch: usize) -> Result<Vec<f32>> {
    let spec = &net.spec;
    spec.validate()?;
    let layout = spec.layout();
    check_slice("cpu convnet weights", &net.params, layout.len)?;
    check_slice("cpu convnet embed input", input, batch * spec.input_len())?;
    let tensor = |name: &str| {
        layout
            .tensor(name)
            .map(|t| &net.params[t.range()])
            .ok_or_else(|| Error::MissingTensor { name: name.to_string() })
    };
    let mut x = input.to_vec();
    for (i, g) in spec.convs().iter().enumerate() {
        x = conv_forward(
            &x,
            batch,
            g,
            tensor(&format!("conv{}.kernel", i + 1))?,
            tensor(&format!("conv{}.bias", i + 1))?,
        );
    }
    let last = spec.convs()[2];
    let pooled = global_avg_pool(&x, batch, last.out_pixels(), last.out_c);
    let e = dense_forward(&pooled, batch, last.out_c, spec.dim, tensor("dense.kernel")?, tensor("dense.bias")?);
    Ok(l2_normalize_rows(&e, spec.dim).0)
}
