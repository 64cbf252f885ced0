//! Max pooling's geometry (`ops::pool`, `cpu::pool`).

use crate::error::{Error, Result};

/// Max pooling with a square `kernel`, `stride` and `pad` (padded taps are ignored, as in
/// PyTorch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxPoolShape {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl MaxPoolShape {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad).saturating_sub(self.kernel) / self.stride.max(1) + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad).saturating_sub(self.kernel) / self.stride.max(1) + 1
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.channels
    }

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
