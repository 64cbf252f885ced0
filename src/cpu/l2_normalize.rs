//! CPU row-wise L2 normalisation with optional centring.

use rayon::prelude::*;

use crate::cpu::check_slice;
use crate::error::Result;

/// Row-wise `(x - mean) / max(||x - mean||, 1e-12)`, accumulated in f64.
pub fn l2_normalize(data: &[f32], rows: usize, dim: usize, mean: Option<&[f32]>) -> Result<Vec<f32>> {
    check_slice("cpu l2_normalize input", data, rows * dim)?;
    if let Some(m) = mean {
        check_slice("cpu l2_normalize mean", m, dim)?;
    }
    let mut out = data.to_vec();
    out.par_chunks_mut(dim.max(1)).for_each(|row| {
        if let Some(m) = mean {
            row.iter_mut().zip(m).for_each(|(x, m)| *x -= m);
        }
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    });
    Ok(out)
}
