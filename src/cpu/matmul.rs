//! CPU matmul, and the dense GEMMs the other twins build on (the `gemm` crate's packed
//! SIMD kernels).

use crate::cpu::check_slice;
use crate::error::Result;
use crate::shape::MatmulShape;

/// All threads of rayon's pool where there are several.
pub(crate) fn parallelism() -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// `dst[m, n] = lhs[m, k] * rhs`, all row-major; `rhs` is `[k, n]`, or `[n, k]` when
/// `rhs_transposed`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into(
    dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, n: usize, k: usize, rhs_transposed: bool,
    parallelism: gemm::Parallelism,
) {
    let rhs_strides = if rhs_transposed { (1, k) } else { (n, 1) };
    gemm_strided(dst, lhs, rhs, rhs_strides, m, n, k, parallelism);
}

/// [`gemm_into`] with `rhs[kk, j]` at `rhs[kk * rhs_strides.0 + j * rhs_strides.1]`.
#[allow(clippy::too_many_arguments)]
#[rustfmt::skip] // the gemm call's arguments grouped by operand
pub(crate) fn gemm_strided(
    dst: &mut [f32], lhs: &[f32], rhs: &[f32], rhs_strides: (usize, usize), m: usize, n: usize, k: usize,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 || k == 0 {
        dst[..m * n].fill(0.0);
        return;
    }
    // The unsafe call below relies on this: keep it a real assert (it costs nothing per GEMM).
    let rhs_last = (k - 1) * rhs_strides.0 + (n - 1) * rhs_strides.1;
    assert!(
        dst.len() >= m * n && lhs.len() >= m * k && rhs.len() > rhs_last,
        "gemm: slices shorter than {m}x{k} * {k}x{n}"
    );
    // SAFETY: dst and lhs hold dense row-major m*n and m*k values and the last rhs element
    // read lies inside rhs (asserted above).
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.as_mut_ptr(), 1, n as isize, false,
            lhs.as_ptr(), 1, k as isize,
            rhs.as_ptr(), rhs_strides.1 as isize, rhs_strides.0 as isize,
            0.0, 1.0, false, false, false,
            parallelism,
        );
    }
}

/// [`gemm_into`] on the calling thread only, for callers that split work across threads.
pub(crate) fn gemm_serial(
    dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, n: usize, k: usize, rhs_transposed: bool,
) {
    gemm_into(dst, lhs, rhs, m, n, k, rhs_transposed, gemm::Parallelism::None);
}

/// `C = A * B` (see [`MatmulShape`]).
pub fn matmul(shape: &MatmulShape, a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
    shape.validate()?;
    check_slice("cpu matmul A", a, shape.m * shape.k)?;
    check_slice("cpu matmul B", b, shape.k * shape.n)?;
    let mut c = vec![0.0; shape.m * shape.n];
    gemm_into(&mut c, a, b, shape.m, shape.n, shape.k, shape.b_transposed, parallelism());
    Ok(c)
}
