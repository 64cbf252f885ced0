//! The backbones: ResNet50 (architecture, weights in safetensors, seeded random weights,
//! the forward on the CPU and the GPU) and a trained convnet's forward on the GPU, behind
//! one [`Backbone`].

pub mod backbone;
pub(crate) mod canonical;
pub mod convnet;
pub mod convnet_cpu;
pub mod convnet_gpu;
pub mod cpu;
pub mod gpu;
pub mod random;
pub mod resnet50;
mod weights;

pub use backbone::{Backbone, BackboneRef, CpuBackbone, GpuBackbone};
pub use convnet::{ConvNet, ConvNetSpec};
pub use convnet_gpu::GpuConvNet;
pub use cpu::CpuResNet50;
pub use gpu::{BatchNormMode, ConvMath, GpuResNet50};
pub use random::RandomResNet50;
pub use resnet50::{ResNet50, FEATURE_DIM, MIN_INPUT};

use crate::error::{Error, Result};

/// Fails with [`Error::NonFiniteOutput`] if `features` (rows of `dim` from `network`, the
/// first being image `first_image`) hold a NaN or an infinity, naming the image and `cause`.
pub(crate) fn check_features(
    features: &[f32], dim: usize, first_image: usize, network: &str, cause: &str,
) -> Result<()> {
    let dim = dim.max(1);
    match crate::cpu::first_non_finite(features) {
        Some((at, value)) => Err(Error::NonFiniteOutput {
            what: format!("the {network} features of image {}", first_image + at / dim),
            index: at % dim,
            value,
            cause: cause.to_string(),
        }),
        None => Ok(()),
    }
}

/// Why f32 features can come out non-finite: the weights are checked when loaded.
pub(crate) const F32_OVERFLOW: &str = "an activation outgrew f32 (the input is far outside the normalised range)";
