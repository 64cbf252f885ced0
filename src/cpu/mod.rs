//! The CPU twin of every kernel: the oracle for tests and the benchmark baseline.
//!
//! Same layouts as the GPU (NHWC activations, HWIO conv weights), multi-threaded with rayon,
//! GEMMs through the `gemm` crate (packed, SIMD micro-kernels), or, on x86-64 with AVX2, an
//! own kernel over a right-hand side packed once ([`panels`]: k-NN queries, the CPU
//! ResNet50's convolution weights).

pub mod batch_norm;
pub mod conv2d;
pub mod convnet;
mod crop;
pub mod decode;
mod filter_taps;
pub mod knn;
pub mod l2_normalize;
pub mod matmul;
pub mod panels;
pub mod pool;
pub mod preprocess;
pub mod topk;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use batch_norm::batch_norm;
pub use conv2d::{conv2d, conv2d_into};
pub use l2_normalize::l2_normalize;
pub use matmul::matmul;
pub use pool::{global_avg_pool, max_pool};

use crate::error::{Error, Result};

/// The first value of `data` that is NaN or infinite, with its index.
pub(crate) fn first_non_finite(data: &[f32]) -> Option<(usize, f32)> {
    data.iter().position(|v| !v.is_finite()).map(|i| (i, data[i]))
}

/// Fails with [`Error::NonFinite`] naming `name` if `data` holds a NaN or an infinity.
pub(crate) fn check_finite(name: &str, data: &[f32]) -> Result<()> {
    match first_non_finite(data) {
        Some((index, value)) => Err(Error::NonFinite { name: name.to_string(), index, value }),
        None => Ok(()),
    }
}

/// Fails unless `data` holds exactly `len` values.
pub(crate) fn check_slice(what: &str, data: &[f32], len: usize) -> Result<()> {
    if data.len() != len {
        return Err(Error::shape(what, format!("{len} values"), format!("{} values", data.len())));
    }
    Ok(())
}
