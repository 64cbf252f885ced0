//! The preprocessing recipe both the GPU kernel (`ops::preprocess`) and its CPU twin
//! (`cpu::preprocess`) apply, and that an index records.

use crate::error::{Error, Result};

/// Colour channels per pixel; every buffer of the preprocessing is interleaved RGB.
const CHANNELS: usize = 3;

/// Preprocessing parameters: resize the shorter side to `resize`, centre-crop `crop`×`crop`,
/// then normalise each channel as `(x - mean) / std` with `x` in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Target length of the shorter image side after resizing.
    pub resize: u32,
    /// Side of the square centre crop taken from the resized image.
    pub crop: u32,
    /// Per-channel (R, G, B) mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
}

impl Default for Preprocess {
    /// The torchvision ImageNet evaluation transform: resize 256, crop 224.
    fn default() -> Self {
        Self::imagenet(256, 224)
    }
}

impl Preprocess {
    /// ImageNet mean and std with the given resize and crop sizes.
    pub fn imagenet(resize: u32, crop: u32) -> Self {
        Self { resize, crop, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }

    /// Checks `0 < crop <= resize`, that every mean is finite and every std finite and non-zero.
    pub fn validate(&self) -> Result<()> {
        if self.crop == 0 || self.resize == 0 {
            return Err(Error::InvalidArgument(format!(
                "resize ({}) and crop ({}) must both be positive",
                self.resize, self.crop
            )));
        }
        if self.resize < self.crop {
            return Err(Error::InvalidArgument(format!(
                "resize ({}) must be at least crop ({})",
                self.resize, self.crop
            )));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(Error::InvalidArgument(format!("std {:?} must be finite and non-zero", self.std)));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::InvalidArgument(format!("mean {:?} must be finite", self.mean)));
        }
        Ok(())
    }

    /// Number of f32 values in one preprocessed image: crop × crop × 3.
    pub fn image_len(&self) -> usize {
        self.crop as usize * self.crop as usize * CHANNELS
    }
}
