//! Numerical comparison for tests and checks: an element-wise tolerance and relative L2
//! error, both reporting where and by how much two tensors differ.

use std::fmt;

/// `|x - y| <= max(rel * |y|, abs)` element-wise, `y` being the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub rel: f32,
    pub abs: f32,
}

/// The worst element of a failed comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub index: usize,
    pub got: f32,
    pub expected: f32,
    pub failures: usize,
    pub len: usize,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} elements out of tolerance; worst at index {}: got {}, expected {} (diff {})",
            self.failures,
            self.len,
            self.index,
            self.got,
            self.expected,
            (self.got - self.expected).abs()
        )
    }
}

impl Tolerance {
    pub const fn new(rel: f32, abs: f32) -> Self {
        Self { rel, abs }
    }

    /// Every element within `fraction` of the largest magnitude in `expected`: for sums whose
    /// small elements carry the rounding of large terms.
    pub fn of_largest(fraction: f32, expected: &[f32]) -> Self {
        Self::new(0.0, fraction * expected.iter().fold(0.0f32, |m, v| m.max(v.abs())))
    }

    /// A GPU result against the CPU reference's where only the order of summation differs
    /// (GPU tiles, CPU panels): every element within 1e-4 of the largest. Reordered f32 sums
    /// of ResNet50's and a 1024-deep matmul's sizes differ by 1e-7 to 1e-5 of it; a race, a
    /// wrong tile edge or a missed barrier moves elements by their own size.
    pub fn reordered(expected: &[f32]) -> Self {
        Self::of_largest(1e-4, expected)
    }

    /// Checks every element; on failure reports the element that exceeds its bound most.
    pub fn check(&self, got: &[f32], expected: &[f32]) -> Result<(), Mismatch> {
        if got.len() != expected.len() {
            return Err(Mismatch {
                index: got.len().min(expected.len()),
                got: f32::NAN,
                expected: f32::NAN,
                failures: 1,
                len: expected.len(),
            });
        }
        let mut worst: Option<(usize, f32)> = None;
        let mut failures = 0;
        for (i, (&x, &y)) in got.iter().zip(expected).enumerate() {
            let bound = (self.rel * y.abs()).max(self.abs);
            let excess = (x - y).abs() / bound.max(f32::MIN_POSITIVE);
            // Written so that NaN fails too.
            if excess.is_nan() || excess > 1.0 {
                failures += 1;
                let excess = if excess.is_nan() { f32::INFINITY } else { excess };
                if worst.is_none_or(|(_, w)| excess > w) {
                    worst = Some((i, excess));
                }
            }
        }
        match worst {
            None => Ok(()),
            Some((index, _)) => {
                Err(Mismatch { index, got: got[index], expected: expected[index], failures, len: expected.len() })
            }
        }
    }
}

/// A top-k against the expected one: the same rows in the same order with the same score
/// bits (the ranking is exact, so nothing less is right). The error names the first rank
/// that differs.
pub fn same_ranking(got: (&[f32], &[u32]), expected: (&[f32], &[u32])) -> Result<(), String> {
    let (len, want) = (got.0.len(), expected.0.len());
    if len != want || got.1.len() != len || expected.1.len() != want {
        return Err(format!("{len} scores and {} rows, expected {want} and {}", got.1.len(), expected.1.len()));
    }
    let same = |at: usize| got.0[at].to_bits() == expected.0[at].to_bits() && got.1[at] == expected.1[at];
    match (0..len).find(|&at| !same(at)) {
        None => Ok(()),
        Some(at) => Err(format!(
            "rank {at}: row {} score {}, expected row {} score {}",
            got.1[at], got.0[at], expected.1[at], expected.0[at]
        )),
    }
}

/// `||got - expected|| / ||expected||` in f64 (0 when both are zero, infinite on length
/// mismatch).
pub fn relative_l2(got: &[f32], expected: &[f32]) -> f64 {
    if got.len() != expected.len() {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in got.iter().zip(expected) {
        diff += (x as f64 - y as f64).powi(2);
        norm += (y as f64).powi(2);
    }
    if norm == 0.0 {
        if diff == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (diff / norm).sqrt()
    }
}

/// Subtracts the mean row from each of `rows` rows of `dim` values: the part of a batch of
/// features that tells its images apart.
pub fn batch_centred(data: &[f32], rows: usize, dim: usize) -> Vec<f32> {
    let mut mean = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64 / rows as f64;
        }
    }
    data.chunks_exact(dim).flat_map(|row| row.iter().zip(&mean).map(|(&x, &m)| (x as f64 - m) as f32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_reports_the_worst_index() {
        let t = Tolerance::new(1e-3, 1e-6);
        assert!(t.check(&[1.0, 2.0], &[1.0, 2.0005]).is_ok());
        let err = t.check(&[1.0, 2.1, 3.5], &[1.0, 2.0, 3.0]).unwrap_err();
        assert_eq!((err.index, err.failures), (2, 2));
        assert!(t.check(&[f32::NAN], &[1.0]).is_err());
    }

    #[test]
    fn the_largest_magnitude_sets_the_bound_for_every_element() {
        let expected = [100.0, -300.0, 0.001];
        let t = Tolerance::reordered(&expected);
        assert_eq!(t.abs, 300.0 * 1e-4);
        assert!(t.check(&[100.02, -300.02, 0.02], &expected).is_ok());
        let worst = t.check(&[100.0, -300.0, 0.05], &expected).unwrap_err();
        assert_eq!((worst.index, worst.failures), (2, 1));
    }

    #[test]
    fn rankings_match_bit_for_bit() {
        let (scores, rows) = ([0.5f32, 0.0, -1.0], [3u32, 1, 2]);
        assert!(same_ranking((&scores, &rows), (&scores, &rows)).is_ok());
        // -0 is not +0: the exact bits are the output.
        let err = same_ranking((&[0.5, -0.0, -1.0], &rows), (&scores, &rows)).unwrap_err();
        assert!(err.starts_with("rank 1:"), "{err}");
        assert!(same_ranking((&scores, &[3, 2, 1]), (&scores, &rows)).is_err());
        assert!(same_ranking((&scores[..2], &rows[..2]), (&scores, &rows)).is_err());
    }

    #[test]
    fn relative_l2_and_centring() {
        assert_eq!(relative_l2(&[3.0, 4.0], &[3.0, 4.0]), 0.0);
        assert!((relative_l2(&[3.0, 4.5], &[3.0, 4.0]) - 0.1).abs() < 1e-9);
        assert_eq!(batch_centred(&[1.0, 2.0, 3.0, 6.0], 2, 2), vec![-1.0, -2.0, 1.0, 2.0]);
    }
}
