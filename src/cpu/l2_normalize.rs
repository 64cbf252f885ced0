//! CPU row-wise L2 normalisation with optional centring.

use rayon::prelude::*;

use crate::cpu::check_slice;
use crate::error::Result;

/// Row-wise `(x - mean) / ||x - mean||`, in f64: the difference of two f32 values, its
/// square (2^-298 to 2^256) and their sum are all far inside f64's range, so every finite
/// row, from subnormal values to f32::MAX, comes out a unit vector without rescaling. A
/// zero row stays zero; a row holding a NaN or an infinity comes out NaN, as on the GPU.
pub fn l2_normalize(data: &[f32], rows: usize, dim: usize, mean: Option<&[f32]>) -> Result<Vec<f32>> {
    check_slice("cpu l2_normalize input", data, rows * dim)?;
    if let Some(m) = mean {
        check_slice("cpu l2_normalize mean", m, dim)?;
    }
    let mut out = data.to_vec();
    out.par_chunks_mut(dim.max(1)).for_each(|row| {
        let centre = |d: usize| mean.map_or(0.0, |m| m[d] as f64);
        let norm = row.iter().enumerate().map(|(d, &x)| (x as f64 - centre(d)).powi(2)).sum::<f64>().sqrt();
        let scale = match norm {
            0.0 => 0.0,
            n if n.is_finite() => 1.0 / n,
            _ => f64::NAN,
        };
        row.iter_mut().enumerate().for_each(|(d, x)| *x = ((*x as f64 - centre(d)) * scale) as f32);
    });
    Ok(out)
}
