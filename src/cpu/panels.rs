//! The right-hand side of a GEMM packed once into panels of 16 columns, and the AVX2 kernel
//! that multiplies rows read in place by it. The k-NN scan packs its queries once per scan,
//! the CPU ResNet50 its convolution weights once at load; the `gemm` crate would pack them
//! again for every block of rows.

use std::ops::Range;

use crate::error::{Error, Result};

/// Columns of `depth` values in panels of [`Panels::WIDTH`]: value `k` of column
/// `p * WIDTH + lane` at `(p * depth + k) * WIDTH + lane`, zero past the last column.
#[derive(Debug, Clone)]
pub struct Panels {
    values: Vec<f32>,
    depth: usize,
    columns: usize,
}

impl Panels {
    /// Columns per panel: two AVX2 registers.
    pub const WIDTH: usize = 16;

    /// Columns given as rows of `depth` values (`[columns, depth]`, as queries are stored).
    pub fn from_rows(rows: &[f32], depth: usize) -> Result<Self> {
        Self::check(rows.len(), depth)?;
        let columns = rows.len() / depth;
        let mut values = vec![0.0; columns.div_ceil(Self::WIDTH) * Self::WIDTH * depth];
        for (column, row) in rows.chunks_exact(depth).enumerate() {
            let (p, lane) = (column / Self::WIDTH, column % Self::WIDTH);
            for (k, &value) in row.iter().enumerate() {
                values[(p * depth + k) * Self::WIDTH + lane] = value;
            }
        }
        Ok(Self { values, depth, columns })
    }

    /// A row-major `[depth, columns]` matrix (HWIO convolution weights, `K x N`).
    pub fn from_columns(matrix: &[f32], depth: usize, columns: usize) -> Result<Self> {
        Self::check(matrix.len(), depth)?;
        if matrix.len() != depth * columns {
            return Err(Error::shape(
                "panels",
                format!("{depth} x {columns} values"),
                format!("{} values", matrix.len()),
            ));
        }
        // Each panel step is a run of up to 16 adjacent values of one matrix row; the matrix
        // is read in order (reading it a panel at a time, 16 values per row, missed the
        // cache and TLB on every row: 5.5 ms for 1024 x 1024).
        let mut values = vec![0.0; columns.div_ceil(Self::WIDTH) * Self::WIDTH * depth];
        for (k, row) in matrix.chunks_exact(columns).enumerate() {
            for (p, run) in row.chunks(Self::WIDTH).enumerate() {
                let at = (p * depth + k) * Self::WIDTH;
                values[at..at + run.len()].copy_from_slice(run);
            }
        }
        Ok(Self { values, depth, columns })
    }

    fn check(len: usize, depth: usize) -> Result<()> {
        if depth == 0 || len == 0 || !len.is_multiple_of(depth) {
            return Err(Error::shape(
                "panels",
                format!("a non-empty multiple of {depth} values"),
                format!("{len} values"),
            ));
        }
        Ok(())
    }

    /// Values per column (the GEMM's K).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Columns (the GEMM's N).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Panels, the last one zero-padded.
    pub fn count(&self) -> usize {
        self.columns.div_ceil(Self::WIDTH)
    }

    /// Panel `p`'s `len` steps from depth `k0`.
    pub(crate) fn panel(&self, p: usize, k0: usize, len: usize) -> &[f32] {
        let from = (p * self.depth + k0) * Self::WIDTH;
        &self.values[from..from + len * Self::WIDTH]
    }
}

/// `out[j * out_stride + (p - panels.start) * WIDTH + lane]` = row `j` of `lhs` (`[m, depth]`)
/// · column `p * WIDTH + lane`, for the panels in `panels` (padding columns give 0). Needs
/// `panels.len() * WIDTH <= out_stride`; panics on slices too short for that.
pub type Multiply = fn(lhs: &[f32], rhs: &Panels, panels: Range<usize>, out: &mut [f32], out_stride: usize);

/// The panel kernel where this CPU has one (x86-64 with AVX2 and FMA); `None` sends callers
/// to the `gemm` crate.
pub fn multiply() -> Option<Multiply> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the kernel is compiled for (checked above).
        return Some(|lhs, rhs, panels, out, out_stride| unsafe {
            crate::cpu::x86::multiply_panels(lhs, rhs, panels, out, out_stride)
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(lhs: &[f32], rhs_kn: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n).map(|at| (0..k).map(|kk| lhs[at / n * k + kk] * rhs_kn[kk * n + at % n]).sum()).collect()
    }

    /// Odd shapes (columns not a panel multiple, depth across several slices, rows ending
    /// in partial kernel blocks), both packings, a panel sub-range written at an offset.
    #[test]
    fn multiply_matches_a_naive_gemm() {
        let Some(multiply) = multiply() else {
            eprintln!("no AVX2 + FMA on this CPU: the gemm crate path is tested instead");
            return;
        };
        let mut rng = Rng::new(9);
        for (m, k, n) in [(1, 1, 1), (7, 3, 17), (97, 530, 40), (203, 256, 16), (13, 1000, 33)] {
            // Quarter-rounded values: every sum is exact, so any order must agree bit for bit.
            let round = |v: Vec<f32>| v.into_iter().map(|x| (x * 4.0).round() / 4.0).collect::<Vec<f32>>();
            let (lhs, rhs) = (round(rng.normals(m * k, 1.0)), round(rng.normals(k * n, 1.0)));
            let expected = naive(&lhs, &rhs, m, k, n);
            let transposed: Vec<f32> = (0..n * k).map(|at| rhs[(at % k) * n + at / k]).collect();
            for packed in [Panels::from_columns(&rhs, k, n).unwrap(), Panels::from_rows(&transposed, k).unwrap()] {
                let stride = packed.count() * Panels::WIDTH;
                let mut out = vec![f32::NAN; m * stride];
                multiply(&lhs, &packed, 0..packed.count(), &mut out, stride);
                for (at, want) in expected.iter().enumerate() {
                    let got = out[at / n * stride + at % n];
                    assert_eq!(got, *want, "{m}x{k}x{n}: row {} column {}: {got} vs {want}", at / n, at % n);
                }
                // Only the last panel, into a buffer one panel wide.
                let last = packed.count() - 1;
                let mut part = vec![f32::NAN; m * Panels::WIDTH];
                multiply(&lhs, &packed, last..last + 1, &mut part, Panels::WIDTH);
                for row in 0..m {
                    for c in last * Panels::WIDTH..n {
                        assert_eq!(
                            part[row * Panels::WIDTH + c - last * Panels::WIDTH],
                            expected[row * n + c],
                            "{m}x{k}x{n} last panel"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packing_rejects_mismatched_shapes() {
        assert!(Panels::from_rows(&[1.0; 5], 2).is_err());
        assert!(Panels::from_rows(&[], 2).is_err());
        assert!(Panels::from_columns(&[1.0; 6], 2, 4).is_err());
        assert!(Panels::from_columns(&[1.0; 6], 0, 4).is_err());
    }
}
