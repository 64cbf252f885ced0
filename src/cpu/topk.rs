//! CPU top-k per row, the twin of `ops::topk`: same ranking (scores descending, NaN as -inf,
//! -0 equal to +0, ties to the lower index), same padding when a row has fewer than k
//! candidates, scores returned with their exact bits.

use rayon::prelude::*;

use crate::cpu::check_slice;
use crate::error::{Error, Result};
use crate::shape::topk::{MAX_K, PAD_INDEX, PAD_SCORE};

/// The ranking as one integer, larger is better: the score's order key (as in the shader's
/// `rank_key`) above the inverted index. Padding ranks with -inf, behind it on the index.
pub(crate) fn rank(score: f32, index: u32) -> u64 {
    let bits = score.to_bits();
    let magnitude = bits & 0x7fff_ffff;
    let key = if index == PAD_INDEX || magnitude > 0x7f80_0000 {
        0x007f_ffff // -inf's key
    } else if magnitude == 0 {
        0x8000_0000
    } else if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    (u64::from(key) << 32) | u64::from(!index)
}

fn validate(rows: usize, len: usize, k: usize) -> Result<usize> {
    if k == 0 || k > MAX_K {
        return Err(Error::InvalidArgument(format!("cpu topk: k = {k} must be in 1..={MAX_K}")));
    }
    if rows == 0 || len == 0 {
        return Err(Error::InvalidArgument(format!("cpu topk: empty input ({rows} rows of {len} candidates)")));
    }
    rows.checked_mul(len).ok_or_else(|| Error::InvalidArgument(format!("cpu topk: {rows} x {len} overflows")))
}

/// Top-k of each row of a `[rows, len]` score matrix (column j has index j): `[rows, k]`
/// scores and indices, best first.
pub fn topk(scores: &[f32], rows: usize, len: usize, k: usize) -> Result<(Vec<f32>, Vec<u32>)> {
    let total = validate(rows, len, k)?;
    check_slice("cpu topk scores", scores, total)?;
    Ok(select(scores, rows, len, k, |_, j| j as u32))
}

/// Top-k of each row of explicit (score, index) pairs, `[rows, len]` each, e.g. per-chunk
/// results to merge. Index [`PAD_INDEX`] marks padding.
pub fn topk_pairs(scores: &[f32], indices: &[u32], rows: usize, len: usize, k: usize) -> Result<(Vec<f32>, Vec<u32>)> {
    let total = validate(rows, len, k)?;
    check_slice("cpu topk scores", scores, total)?;
    if indices.len() != total {
        return Err(Error::shape("cpu topk indices", format!("{total} values"), format!("{} values", indices.len())));
    }
    Ok(select(scores, rows, len, k, |row, j| indices[row * len + j]))
}

fn select(
    scores: &[f32], rows: usize, len: usize, k: usize, index: impl Fn(usize, usize) -> u32 + Sync,
) -> (Vec<f32>, Vec<u32>) {
    let mut out_scores = vec![PAD_SCORE; rows * k];
    let mut out_indices = vec![PAD_INDEX; rows * k];
    out_scores.par_chunks_mut(k).zip(out_indices.par_chunks_mut(k)).enumerate().for_each(
        |(row, (best_scores, best_indices))| {
            let row_scores = &scores[row * len..(row + 1) * len];
            let best = best_k(row_scores.iter().enumerate().map(|(j, &s)| (s, index(row, j))), k);
            for ((score, index), (s, ix)) in best.into_iter().zip(best_scores.iter_mut().zip(best_indices)) {
                (*s, *ix) = (score, index);
            }
        },
    );
    (out_scores, out_indices)
}

/// The best `k` (score, index) candidates, best first, ranked as [`topk`] ranks them; fewer
/// when there are fewer candidates. Scores keep their exact bits.
pub fn best_k(candidates: impl IntoIterator<Item = (f32, u32)>, k: usize) -> Vec<(f32, u32)> {
    let mut ranked: Vec<(u64, f32, u32)> = candidates.into_iter().map(|(s, i)| (rank(s, i), s, i)).collect();
    // Partition around the k-th best, then sort only the head.
    let better = |a: &(u64, f32, u32), b: &(u64, f32, u32)| b.0.cmp(&a.0);
    if ranked.len() > k && k > 0 {
        ranked.select_nth_unstable_by(k - 1, better);
    }
    ranked.truncate(k);
    ranked.sort_unstable_by(better);
    ranked.into_iter().map(|(_, s, i)| (s, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_nan_low_ties_by_index_and_pads() {
        let nan = f32::NAN;
        let scores = [0.5, nan, 2.0, -0.0, f32::NEG_INFINITY, 2.0, 0.0, -1.0];
        let (s, i) = topk(&scores, 1, scores.len(), 8).unwrap();
        assert_eq!(i, [2, 5, 0, 3, 6, 7, 1, 4]);
        let bits: Vec<u32> = s.iter().map(|x| x.to_bits()).collect();
        let expected: Vec<u32> = i.iter().map(|&j| scores[j as usize].to_bits()).collect();
        assert_eq!(bits, expected);

        let (s, i) = topk(&[f32::NEG_INFINITY, 1.0], 1, 2, 4).unwrap();
        assert_eq!(i, [1, 0, PAD_INDEX, PAD_INDEX]);
        assert_eq!(s, [1.0, f32::NEG_INFINITY, PAD_SCORE, PAD_SCORE]);
        // Padding merged back in still ranks below -inf and NaN.
        let (_, i) = topk_pairs(&s, &i, 1, 4, 3).unwrap();
        assert_eq!(i, [1, 0, PAD_INDEX]);
        let (_, i) = topk_pairs(&[PAD_SCORE, nan], &[PAD_INDEX, 9], 1, 2, 2).unwrap();
        assert_eq!(i, [9, PAD_INDEX]);
    }

    #[test]
    fn selection_matches_a_full_sort_per_row() {
        let mut rng = crate::rng::Rng::new(7);
        let (rows, len) = (3, 5000);
        let scores: Vec<f32> = (0..rows * len).map(|_| (rng.normal() * 10.0).round() / 10.0).collect();
        for k in [1, 17, MAX_K] {
            let (s, i) = topk(&scores, rows, len, k).unwrap();
            for row in 0..rows {
                let mut order: Vec<u32> = (0..len as u32).collect();
                let at = |j: u32| scores[row * len + j as usize];
                // No NaNs here; partial_cmp keeps -0 == +0 as the twin does.
                order.sort_by(|&a, &b| at(b).partial_cmp(&at(a)).unwrap().then(a.cmp(&b)));
                assert_eq!(&i[row * k..(row + 1) * k], &order[..k]);
                assert!(s[row * k..(row + 1) * k].iter().zip(&order).all(|(&x, &j)| x.to_bits() == at(j).to_bits()));
            }
        }
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(matches!(topk(&[1.0], 1, 1, 0), Err(Error::InvalidArgument(_))));
        assert!(matches!(topk(&[1.0], 1, 1, MAX_K + 1), Err(Error::InvalidArgument(_))));
        assert!(matches!(topk(&[], 0, 1, 1), Err(Error::InvalidArgument(_))));
        assert!(matches!(topk(&[1.0], 1, 2, 1), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(topk_pairs(&[1.0], &[], 1, 1, 1), Err(Error::ShapeMismatch { .. })));
    }
}
