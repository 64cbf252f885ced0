//! CPU inference batch-norm: the twin of `ops::batch_norm`, the reference path of the
//! unfused ResNet50.

use rayon::prelude::*;

use crate::cpu::check_slice;
use crate::cpu::conv2d::relu;
use crate::error::Result;
use crate::shape::BatchNormShape;

/// Inference batch-norm, `relu?((x - mean) / sqrt(var + eps) * weight + bias + residual)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    shape: &BatchNormShape, input: &[f32], weight: &[f32], bias: &[f32], running_mean: &[f32], running_var: &[f32],
    residual: Option<&[f32]>, relu: bool,
) -> Result<Vec<f32>> {
    let c = shape.channels;
    check_slice("cpu batch_norm input", input, shape.len)?;
    for (what, v) in [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)]
    {
        check_slice(&format!("cpu batch_norm {what}"), v, c)?;
    }
    if let Some(r) = residual {
        check_slice("cpu batch_norm residual", r, shape.len)?;
    }
    let inv_std: Vec<f32> = running_var.iter().map(|v| 1.0 / (v + shape.eps).sqrt()).collect();
    let mut out = input.to_vec();
    out.par_chunks_mut(c.max(1)).enumerate().for_each(|(row, y)| {
        for (ch, v) in y.iter_mut().enumerate() {
            let mut x = (*v - running_mean[ch]) * inv_std[ch] * weight[ch] + bias[ch];
            if let Some(r) = residual {
                x += r[row * c + ch];
            }
            *v = if relu { self::relu(x) } else { x };
        }
    });
    Ok(out)
}
