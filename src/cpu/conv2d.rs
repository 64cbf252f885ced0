//! CPU convolution (im2col + GEMM), matmul and batch-norm.

use rayon::prelude::*;

use crate::cpu::check_slice;
use crate::error::Result;
use crate::ops::batch_norm::BatchNormShape;
use crate::ops::conv2d::Conv2dShape;
use crate::ops::matmul::MatmulShape;

/// Rows of im2col built at once: bounds the scratch memory (rows * K floats) while keeping
/// each GEMM large enough to run at full speed.
const IM2COL_ROWS: usize = 8192;

fn parallelism() -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// `dst[m, n] = lhs[m, k] * rhs`, all row-major; `rhs` is `[k, n]`, or `[n, k]` when
/// `rhs_transposed`.
fn gemm_into(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, n: usize, k: usize, rhs_transposed: bool) {
    debug_assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let (rhs_cs, rhs_rs) = if rhs_transposed { (k as isize, 1) } else { (1, n as isize) };
    // SAFETY: the slices hold at least m*n, m*k and k*n elements (checked by callers and
    // asserted above), and the strides describe row-major layouts inside them.
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.as_mut_ptr(), 1, n as isize, false,
            lhs.as_ptr(), 1, k as isize,
            rhs.as_ptr(), rhs_cs, rhs_rs,
            0.0, 1.0, false, false, false,
            parallelism(),
        );
    }
}

/// `C = A * B` (see [`MatmulShape`]).
pub fn matmul(shape: &MatmulShape, a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
    shape.validate()?;
    check_slice("cpu matmul A", a, shape.m * shape.k)?;
    check_slice("cpu matmul B", b, shape.k * shape.n)?;
    let mut c = vec![0.0; shape.m * shape.n];
    gemm_into(&mut c, a, b, shape.m, shape.n, shape.k, shape.b_transposed);
    Ok(c)
}

/// Gathers rows `m0..m0 + rows` of the implicit im2col matrix (K = (kh, kw, ci)).
fn im2col(shape: &Conv2dShape, input: &[f32], m0: usize, rows: usize, out: &mut [f32]) {
    let (oh_n, ow_n, k) = (shape.out_h(), shape.out_w(), shape.k());
    let cin = shape.in_c;
    out[..rows * k].par_chunks_mut(k).enumerate().for_each(|(r, row)| {
        let m = m0 + r;
        let ow = m % ow_n;
        let oh = (m / ow_n) % oh_n;
        let n = m / (ow_n * oh_n);
        for kh in 0..shape.kernel_h {
            let ih = (oh * shape.stride + kh) as isize - shape.pad_h as isize;
            for kw in 0..shape.kernel_w {
                let iw = (ow * shape.stride + kw) as isize - shape.pad_w as isize;
                let dst = &mut row[(kh * shape.kernel_w + kw) * cin..][..cin];
                if ih < 0 || iw < 0 || ih as usize >= shape.in_h || iw as usize >= shape.in_w {
                    dst.fill(0.0);
                } else {
                    let at = ((n * shape.in_h + ih as usize) * shape.in_w + iw as usize) * cin;
                    dst.copy_from_slice(&input[at..at + cin]);
                }
            }
        }
    });
}

/// Convolution with the same epilogue as the GPU kernel:
/// `y = relu?(conv * scale + bias + residual)`. NHWC input, HWIO weight.
pub fn conv2d(
    shape: &Conv2dShape,
    input: &[f32],
    weight: &[f32],
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    relu: bool,
) -> Result<Vec<f32>> {
    shape.validate()?;
    check_slice("cpu conv2d input", input, shape.input_len())?;
    check_slice("cpu conv2d weight", weight, shape.weight_len())?;
    for (what, v, len) in [("scale", scale, shape.out_c), ("bias", bias, shape.out_c), ("residual", residual, shape.output_len())] {
        if let Some(v) = v {
            check_slice(&format!("cpu conv2d {what}"), v, len)?;
        }
    }
    let (m, k, n) = (shape.m(), shape.k(), shape.out_c);
    let mut out = vec![0.0f32; m * n];
    let pointwise = shape.kernel_h == 1 && shape.kernel_w == 1 && shape.stride == 1 && shape.pad_h == 0 && shape.pad_w == 0;
    if pointwise {
        // A 1x1 stride-1 convolution over NHWC is already a GEMM on the input.
        gemm_into(&mut out, input, weight, m, n, k, false);
    } else {
        let block = IM2COL_ROWS.min(m);
        let mut cols = vec![0.0f32; block * k];
        for m0 in (0..m).step_by(block) {
            let rows = block.min(m - m0);
            im2col(shape, input, m0, rows, &mut cols);
            gemm_into(&mut out[m0 * n..(m0 + rows) * n], &cols, weight, rows, n, k, false);
        }
    }
    if scale.is_some() || bias.is_some() || residual.is_some() || relu {
        out.par_chunks_mut(n).enumerate().for_each(|(row, y)| {
            for (c, v) in y.iter_mut().enumerate() {
                let mut x = *v;
                if let Some(s) = scale {
                    x *= s[c];
                }
                if let Some(b) = bias {
                    x += b[c];
                }
                if let Some(r) = residual {
                    x += r[row * n + c];
                }
                *v = if relu { x.max(0.0) } else { x };
            }
        });
    }
    Ok(out)
}

/// Inference batch-norm, `relu?((x - mean) / sqrt(var + eps) * weight + bias + residual)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    shape: &BatchNormShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
) -> Result<Vec<f32>> {
    let c = shape.channels;
    check_slice("cpu batch_norm input", input, shape.len)?;
    for (what, v) in [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)] {
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
            *v = if relu { x.max(0.0) } else { x };
        }
    });
    Ok(out)
}
