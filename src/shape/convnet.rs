//! The trained convnet's convolution geometry, shared by its GPU kernels and their CPU
//! twin (`cpu::convnet`); the net itself is `model::convnet`.

/// Kernel size and stride of every convolution.
pub const KERNEL: usize = 3;
/// Stride of every convolution (no padding).
pub const STRIDE: usize = 2;

/// One convolution's geometry (NHWC, per image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Output channels.
    pub out_c: usize,
}

impl ConvGeometry {
    /// Rows of the implicit GEMM per image (output pixels).
    pub fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Depth of the implicit GEMM: taps times input channels.
    pub fn k(&self) -> usize {
        KERNEL * KERNEL * self.in_c
    }
}
