//! ResNet50: architecture, weights (safetensors), seeded random weights, and the forward
//! on the CPU and the GPU.

pub mod cpu;
pub mod gpu;
pub mod random;
pub mod resnet50;
mod weights;

pub use cpu::CpuResNet50;
pub use gpu::{BatchNormMode, ConvMath, GpuResNet50};
pub use random::RandomResNet50;
pub use resnet50::{ResNet50, FEATURE_DIM, MIN_INPUT};

use crate::error::{Error, Result};

/// Fails with [`Error::NonFiniteOutput`] if `features` (rows of [`FEATURE_DIM`], the first
/// being image `first_image`) hold a NaN or an infinity, naming the image and `cause`.
pub(crate) fn check_features(features: &[f32], first_image: usize, cause: &str) -> Result<()> {
    match crate::cpu::first_non_finite(features) {
        Some((at, value)) => Err(Error::NonFiniteOutput {
            what: format!("the ResNet50 features of image {}", first_image + at / FEATURE_DIM),
            index: at % FEATURE_DIM,
            value,
            cause: cause.to_string(),
        }),
        None => Ok(()),
    }
}

/// Why f32 features can come out non-finite: the weights are checked when loaded.
pub(crate) const F32_OVERFLOW: &str = "an activation outgrew f32 (the input is far outside the normalised range)";
