//! Max pooling's geometry (`ops::pool`, `cpu::pool`).

use crate::error::{Error, Result};

/// Max pooling with a square `kernel`, `stride` and `pad` (padded taps are ignored, as in
/// PyTorch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxPoolShape {
    /// Images.
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Channels.
    pub channels: usize,
    /// Side of the window.
    pub kernel: usize,
    /// Stride along both sides.
    pub stride: usize,
    /// Padding on every side.
    pub pad: usize,
}

impl MaxPoolShape {
    /// Output height.
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad).saturating_sub(self.kernel) / self.stride.max(1) + 1
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad).saturating_sub(self.kernel) / self.stride.max(1) + 1
    }

    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.channels
    }

    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.channels
    }

    /// Every window must hold a real tap: PyTorch requires `pad <= kernel / 2`.
    pub fn validate(&self) -> Result<()> {
        if [self.batch, self.in_h, self.in_w, self.channels, self.kernel, self.stride].contains(&0) {
            return Err(Error::InvalidArgument(format!("max_pool: zero-sized dimension in {self:?}")));
        }
        if 2 * self.pad > self.kernel {
            return Err(Error::InvalidArgument(format!(
                "max_pool: pad {} exceeds half the kernel {}",
                self.pad, self.kernel
            )));
        }
        if self.kernel > self.in_h + 2 * self.pad || self.kernel > self.in_w + 2 * self.pad {
            return Err(Error::InputTooSmall {
                height: self.in_h,
                width: self.in_w,
                min: self.kernel - 2 * self.pad,
                what: "max pooling".into(),
            });
        }
        Ok(())
    }
}
