//! lookalike: image similarity search on the GPU with handwritten WGSL kernels.
//!
//! Activations are NHWC f32 throughout (channels innermost, as fast engines use); the
//! public `.npy` inputs are NCHW, as numpy and PyTorch write them, and are transposed on
//! load.

mod atomic;
pub mod classify;
pub mod compare;
pub mod cpu;
pub mod embed;
pub mod error;
pub mod gpu;
pub mod index;
pub mod model;
pub mod npy;
pub mod ops;
pub mod rng;
pub mod render;
pub mod search;

pub use error::{Error, Result};
pub use gpu::Context;
