//! CPU max pooling and global average pooling over NHWC.

use rayon::prelude::*;

use crate::cpu::check_slice;
use crate::error::Result;
use crate::shape::MaxPoolShape;

/// Max pooling; padded taps are ignored.
pub fn max_pool(shape: &MaxPoolShape, input: &[f32]) -> Result<Vec<f32>> {
    shape.validate()?;
    check_slice("cpu max_pool input", input, shape.input_len())?;
    let (oh_n, ow_n, c) = (shape.out_h(), shape.out_w(), shape.channels);
    let mut out = vec![f32::MIN; shape.output_len()];
    out.par_chunks_mut(c).enumerate().for_each(|(pixel, y)| {
        let ow = pixel % ow_n;
        let oh = (pixel / ow_n) % oh_n;
        let n = pixel / (ow_n * oh_n);
        for kh in 0..shape.kernel {
            let ih = (oh * shape.stride + kh) as isize - shape.pad as isize;
            if ih < 0 || ih as usize >= shape.in_h {
                continue;
            }
            for kw in 0..shape.kernel {
                let iw = (ow * shape.stride + kw) as isize - shape.pad as isize;
                if iw < 0 || iw as usize >= shape.in_w {
                    continue;
                }
                let at = ((n * shape.in_h + ih as usize) * shape.in_w + iw as usize) * c;
                for (best, &x) in y.iter_mut().zip(&input[at..at + c]) {
                    *best = best.max(x);
                }
            }
        }
    });
    Ok(out)
}

/// Mean over H x W per (n, c): `[batch, h, w, c]` → `[batch, c]`, accumulated in f64.
pub fn global_avg_pool(batch: usize, h: usize, w: usize, channels: usize, input: &[f32]) -> Result<Vec<f32>> {
    check_slice("cpu global_avg_pool input", input, batch * h * w * channels)?;
    let plane = h * w;
    let mut out = vec![0.0f32; batch * channels];
    out.par_chunks_mut(channels.max(1)).enumerate().for_each(|(n, y)| {
        let mut sums = vec![0.0f64; channels];
        for pixel in input[n * plane * channels..(n + 1) * plane * channels].chunks_exact(channels) {
            for (s, &x) in sums.iter_mut().zip(pixel) {
                *s += x as f64;
            }
        }
        for (v, s) in y.iter_mut().zip(sums) {
            *v = (s / plane as f64) as f32;
        }
    });
    Ok(out)
}
