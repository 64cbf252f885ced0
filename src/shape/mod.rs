//! The shapes and constants of each kernel family, and the configuration both the GPU
//! kernels (`ops`) and their CPU twins (`cpu`) read: one definition that both sides
//! import, so neither depends on the other for it.
//!
//! Each family's module mirrors the `ops` and `cpu` module of the same name, which re-export
//! what they take (`ops::conv2d::Conv2dShape` is [`Conv2dShape`]).

pub mod conv2d;
pub mod convnet;
pub mod matmul;
pub mod pool;
pub mod preprocess;

pub use conv2d::Conv2dShape;
pub use matmul::{MatmulShape, Precision};
pub use pool::MaxPoolShape;
pub use preprocess::Preprocess;

pub use batch_norm::BatchNormShape;

/// The standalone batch-norm kernel's geometry (`ops::batch_norm`, `cpu::conv2d`).
pub mod batch_norm {
    /// Batch-norm over `len` NHWC elements with `channels` innermost.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct BatchNormShape {
        /// Elements.
        pub len: usize,
        /// Channels, innermost.
        pub channels: usize,
        /// Added to the variance.
        pub eps: f32,
    }
}

/// The top-k selection's limits and padding (`ops::topk`, `cpu::topk`).
pub mod topk {
    /// Largest k the op accepts.
    pub const MAX_K: usize = 1024;
    /// Index of a padding result; reserved, so no real candidate may carry it.
    pub const PAD_INDEX: u32 = u32::MAX;
    /// Score of a padding result: the lowest finite f32.
    pub const PAD_SCORE: f32 = f32::MIN;
}

/// Adam's hyperparameters as the update kernel and its CPU twin take them (`ops::adam`,
/// `cpu::convnet::adam_update`).
pub mod adam {
    /// Adam's decay rates and ε (`TrainConfig`'s).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct AdamRates {
        /// Decay of the first moments.
        pub beta1: f32,
        /// Decay of the second moments.
        pub beta2: f32,
        /// Added to √v in the denominator.
        pub epsilon: f32,
    }
}
