//! The matmul and GEMV kernels' geometry, and the element type of their B operand (also
//! the precision an index stores its rows in).

use crate::error::{Error, Result};

/// How rows of reference features are stored: in an index file, in GPU memory, and so as
/// the element type of B that the matmul and scan kernels read. F16 halves the bytes (and
/// the time of a scan bound by memory), with scores within about 1e-3 of F32's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    /// IEEE single.
    F32,
    /// IEEE half, two per 32-bit word, low half first (as `half::f16` slices are laid out
    /// on little-endian hosts); half the bytes of a scan.
    F16,
}

impl Precision {
    /// Bytes of `len` elements, rounded up to whole 32-bit words.
    pub fn bytes(self, len: usize) -> usize {
        match self {
            Precision::F32 => 4 * len,
            Precision::F16 => 4 * len.div_ceil(2),
        }
    }
}

/// `C[m, n] = A[m, k] * B`, where B is `[k, n]` row-major, or `[n, k]` row-major when
/// `b_transposed` (rows of a reference matrix). A and C are f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatmulShape {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of C (rows of B when transposed).
    pub n: usize,
    /// The summed dimension: columns of A.
    pub k: usize,
    /// B is `[n, k]` row-major (else `[k, n]`).
    pub b_transposed: bool,
}

impl MatmulShape {
    /// Multiply-adds counted as 2 FLOPs.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Refuses empty dimensions and sizes past 32-bit indexing.
    pub fn validate(&self) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return Err(Error::InvalidArgument(format!("matmul: zero-sized dimension in {self:?}")));
        }
        let largest = (self.m * self.k).max(self.k * self.n).max(self.m * self.n);
        if largest > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("matmul: {largest} elements exceed 32-bit indexing")));
        }
        Ok(())
    }
}
