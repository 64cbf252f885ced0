//! Strided matrix products through the `gemm` crate: the convolutions' im2col GEMMs and
//! their transposes, without copying a transposed operand.

/// A matrix read in place: element `(i, j)` at `data[i * row + j * col]`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub data: &'a [f32],
    pub row: usize,
    pub col: usize,
}

impl<'a> Strided<'a> {
    /// A row-major matrix of `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, row: cols, col: 1 }
    }

    /// The transpose of a row-major matrix of `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, row: 1, col: cols }
    }

    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row + (cols - 1) * self.col < self.data.len()
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`; `dst` is row-major `[m, n]`,
/// `lhs` `[m, k]`, `rhs` `[k, n]`.
#[allow(clippy::too_many_arguments)]
#[rustfmt::skip] // the gemm call's arguments grouped by operand
pub(crate) fn gemm(
    dst: &mut [f32], accumulate: bool, m: usize, n: usize, k: usize, lhs: Strided, rhs: Strided,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // The unsafe call below relies on this: keep it a real assert (it costs nothing per GEMM).
    assert!(
        dst.len() >= m * n && lhs.holds(m, k) && rhs.holds(k, n),
        "gemm: operands smaller than {m}x{k} * {k}x{n}"
    );
    // SAFETY: dst holds m*n values row-major, and the last element of each operand read at
    // its strides lies inside it (asserted above).
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.as_mut_ptr(), 1, n as isize, accumulate,
            lhs.data.as_ptr(), lhs.col as isize, lhs.row as isize,
            rhs.data.as_ptr(), rhs.col as isize, rhs.row as isize,
            1.0, 1.0, false, false, false,
            parallelism,
        );
    }
}
