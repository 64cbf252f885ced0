//! The convolution kernels' geometry (`ops::conv2d`, `ops::conv2d_backward`,
//! `ops::conv2d_coop` and their CPU twin `cpu::conv2d`).

use crate::error::{Error, Result};

/// A convolution's geometry. Activations are NHWC; the weight is HWIO (`[kh, kw, cin,
/// cout]`, a K x Cout matrix). Dilation 1, groups 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dShape {
    /// Images.
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Output channels.
    pub out_c: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Stride along both sides.
    pub stride: usize,
    /// Zero rows above and below.
    pub pad_h: usize,
    /// Zero columns left and right.
    pub pad_w: usize,
}

impl Conv2dShape {
    /// A square kernel with equal padding on both axes.
    #[allow(clippy::too_many_arguments)]
    pub fn square(
        batch: usize, in_h: usize, in_w: usize, in_c: usize, out_c: usize, kernel: usize, stride: usize, pad: usize,
    ) -> Self {
        Self { batch, in_h, in_w, in_c, out_c, kernel_h: kernel, kernel_w: kernel, stride, pad_h: pad, pad_w: pad }
    }

    /// Output height.
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad_h).saturating_sub(self.kernel_h) / self.stride.max(1) + 1
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad_w).saturating_sub(self.kernel_w) / self.stride.max(1) + 1
    }

    /// Rows of the implicit GEMM: output pixels.
    pub fn m(&self) -> usize {
        self.batch * self.out_h() * self.out_w()
    }

    /// Depth of the implicit GEMM: kernel taps times input channels.
    pub fn k(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_c
    }

    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }

    /// Elements of the weight.
    pub fn weight_len(&self) -> usize {
        self.k() * self.out_c
    }

    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.m() * self.out_c
    }

    /// Multiply-adds count twice.
    pub fn flops(&self) -> f64 {
        2.0 * self.m() as f64 * self.k() as f64 * self.out_c as f64
    }

    /// Rejects empty dimensions and kernels larger than the padded input.
    pub fn validate(&self) -> Result<()> {
        let dims = [self.batch, self.in_h, self.in_w, self.in_c, self.out_c, self.kernel_h, self.kernel_w, self.stride];
        if dims.contains(&0) {
            return Err(Error::InvalidArgument(format!("conv2d: zero-sized dimension in {self:?}")));
        }
        if self.kernel_h > self.in_h + 2 * self.pad_h || self.kernel_w > self.in_w + 2 * self.pad_w {
            return Err(Error::InputTooSmall {
                height: self.in_h,
                width: self.in_w,
                min: self.kernel_h.max(self.kernel_w).saturating_sub(2 * self.pad_h.min(self.pad_w)),
                what: format!("a {}x{} convolution", self.kernel_h, self.kernel_w),
            });
        }
        let largest = [self.input_len(), self.weight_len(), self.output_len()].into_iter().max().unwrap_or(0);
        if largest > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("conv2d: {largest} elements exceed 32-bit indexing")));
        }
        Ok(())
    }
}
