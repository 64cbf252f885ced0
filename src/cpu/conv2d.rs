//! CPU convolution: im2col + GEMM with the GPU kernel's fused epilogue.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::cpu::check_slice;
use crate::cpu::matmul::{gemm_into, gemm_strided, parallelism};
use crate::cpu::panels::{self, Multiply, Panels};
use crate::error::{Error, Result};
use crate::shape::Conv2dShape;

/// Copies rows `m0..m0 + rows` of the implicit im2col matrix (K = (kh, kw, ci)) into `out`.
/// The `kernel_w * cin` taps of one kernel row are adjacent in NHWC memory, so each kernel row
/// is one copy unless it straddles the padding.
fn im2col(shape: &Conv2dShape, input: &[f32], m0: usize, out: &mut [f32]) {
    let (oh_n, ow_n, k) = (shape.out_h(), shape.out_w(), shape.k());
    let (cin, span) = (shape.in_c, shape.kernel_w * shape.in_c);
    for (r, row) in out.chunks_exact_mut(k).enumerate() {
        let m = m0 + r;
        let ow = m % ow_n;
        let oh = (m / ow_n) % oh_n;
        let n = m / (ow_n * oh_n);
        let iw0 = (ow * shape.stride) as isize - shape.pad_w as isize;
        let whole_row = iw0 >= 0 && iw0 as usize + shape.kernel_w <= shape.in_w;
        for (kh, dst) in row.chunks_exact_mut(span).enumerate() {
            let ih = (oh * shape.stride + kh) as isize - shape.pad_h as isize;
            if ih < 0 || ih as usize >= shape.in_h {
                dst.fill(0.0);
                continue;
            }
            let pixel = |iw: usize| ((n * shape.in_h + ih as usize) * shape.in_w + iw) * cin;
            if whole_row {
                let at = pixel(iw0 as usize);
                dst.copy_from_slice(&input[at..at + span]);
                continue;
            }
            for (kw, tap) in dst.chunks_exact_mut(cin).enumerate() {
                let iw = iw0 + kw as isize;
                if iw < 0 || iw as usize >= shape.in_w {
                    tap.fill(0.0);
                } else {
                    let at = pixel(iw as usize);
                    tap.copy_from_slice(&input[at..at + cin]);
                }
            }
        }
    }
}

/// What a convolution applies to its output, `relu?(y * scale + bias + residual)`, to each
/// task's rows while they are in cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Per output channel.
    pub scale: Option<&'a [f32]>,
    /// Per output channel.
    pub bias: Option<&'a [f32]>,
    /// Shaped like the output.
    pub residual: Option<&'a [f32]>,
    /// Whether ReLU follows.
    pub relu: bool,
}

impl Epilogue<'_> {
    fn is_identity(&self) -> bool {
        self.scale.is_none() && self.bias.is_none() && self.residual.is_none() && !self.relu
    }

    fn apply(&self, out: &mut [f32], m0: usize, n: usize) {
        if self.is_identity() {
            return;
        }
        for (r, y) in out.chunks_exact_mut(n).enumerate() {
            if let Some(s) = self.scale {
                y.iter_mut().zip(s).for_each(|(v, s)| *v *= s);
            }
            if let Some(b) = self.bias {
                y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
            if let Some(res) = self.residual {
                y.iter_mut().zip(&res[(m0 + r) * n..]).for_each(|(v, r)| *v += r);
            }
            if self.relu {
                // Keeps NaN, as the GPU epilogue does (see relu).
                y.iter_mut().for_each(|v| *v = relu(*v));
            }
        }
    }
}

/// ReLU that keeps NaN (`f32::max` drops it): an overflow upstream then reaches the
/// features, where it is reported, instead of vanishing into zeros.
pub(crate) fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Output rows per task when the convolution is split over rows: each task gathers its
/// im2col rows, runs a single-threaded GEMM and the epilogue while the rows are in cache.
/// Fewer rows than this make the GEMM re-pack the weights too often per FLOP.
fn task_rows(k: usize) -> usize {
    ((1usize << 18) / k).clamp(128, 1024)
}

/// Convolution with the same epilogue as the GPU kernel:
/// `y = relu?(conv * scale + bias + residual)`. NHWC input, HWIO weight.
pub fn conv2d(
    shape: &Conv2dShape, input: &[f32], weight: &[f32], scale: Option<&[f32]>, bias: Option<&[f32]>,
    residual: Option<&[f32]>, relu: bool,
) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; shape.output_len()];
    conv2d_into(shape, input, weight, &Epilogue { scale, bias, residual, relu }, &mut out)?;
    Ok(out)
}

thread_local! {
    /// im2col rows of the task running on this thread, kept between layers.
    static IM2COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// [`conv2d`] into a caller's buffer of `shape.output_len()` values (its contents are
/// overwritten), so that a forward pass can reuse activation memory.
pub fn conv2d_into(
    shape: &Conv2dShape, input: &[f32], weight: &[f32], epilogue: &Epilogue, out: &mut [f32],
) -> Result<()> {
    check_slice("cpu conv2d weight", weight, shape.weight_len())?;
    convolve_checked(shape, input, Rhs::Plain(weight), epilogue, out)
}

/// Convolution weights as a network keeps them for many forwards: HWIO (`[k, out_c]`)
/// packed once into [`Panels`] where this CPU has the panel kernel and the output channels
/// fill whole panels, else HWIO as given (multiplied by the `gemm` crate, which packs them
/// again for every block of rows).
#[derive(Debug, Clone)]
pub enum ConvWeights {
    /// `[kh, kw, in_c, out_c]` as given.
    Hwio(Vec<f32>),
    /// Packed for the panel kernel.
    Packed(Panels),
}

impl ConvWeights {
    /// `hwio`: `[k, out_c]` row-major.
    pub fn new(hwio: Vec<f32>, k: usize, out_c: usize) -> Result<Self> {
        if panels::multiply().is_some() && out_c.is_multiple_of(Panels::WIDTH) && hwio.len() == k * out_c {
            return Ok(ConvWeights::Packed(Panels::from_columns(&hwio, k, out_c)?));
        }
        Ok(ConvWeights::Hwio(hwio))
    }
}

/// [`conv2d_into`] with weights prepared by [`ConvWeights::new`].
pub fn conv2d_prepared_into(
    shape: &Conv2dShape, input: &[f32], weights: &ConvWeights, epilogue: &Epilogue, out: &mut [f32],
) -> Result<()> {
    let rhs = match weights {
        ConvWeights::Hwio(hwio) => {
            check_slice("cpu conv2d weight", hwio, shape.weight_len())?;
            Rhs::Plain(hwio)
        }
        ConvWeights::Packed(packed) => {
            // The kernel writes whole panels into rows of out_c values.
            if (packed.depth(), packed.columns()) != (shape.k(), shape.out_c)
                || !shape.out_c.is_multiple_of(Panels::WIDTH)
            {
                let want = format!("{} x {} (channels a multiple of {})", shape.k(), shape.out_c, Panels::WIDTH);
                return Err(Error::shape(
                    "cpu conv2d packed weight",
                    want,
                    format!("{} x {}", packed.depth(), packed.columns()),
                ));
            }
            match panels::multiply() {
                Some(multiply) => Rhs::Packed(packed, multiply),
                None => return Err(Error::InvalidArgument("weights packed for a CPU kernel this CPU lacks".into())),
            }
        }
    };
    convolve_checked(shape, input, rhs, epilogue, out)
}

fn convolve_checked(shape: &Conv2dShape, input: &[f32], rhs: Rhs, epilogue: &Epilogue, out: &mut [f32]) -> Result<()> {
    shape.validate()?;
    check_slice("cpu conv2d input", input, shape.input_len())?;
    check_slice("cpu conv2d output", out, shape.output_len())?;
    let per_channel = [("scale", epilogue.scale, shape.out_c), ("bias", epilogue.bias, shape.out_c)];
    for (what, v, len) in per_channel.into_iter().chain([("residual", epilogue.residual, shape.output_len())]) {
        if let Some(v) = v {
            check_slice(&format!("cpu conv2d {what}"), v, len)?;
        }
    }
    let rows = task_rows(shape.k());
    let tasks = (shape.m() >= 2 * rows * rayon::current_num_threads()).then_some(rows);
    convolve(shape, input, rhs, epilogue, out, tasks);
    Ok(())
}

/// The right-hand side of a convolution's GEMM.
#[derive(Clone, Copy)]
enum Rhs<'a> {
    /// HWIO, `[k, n]`, for the `gemm` crate.
    Plain(&'a [f32]),
    Packed(&'a Panels, Multiply),
}

impl Rhs<'_> {
    /// `dst[m, n] = lhs[m, k] * rhs` on this thread.
    fn multiply_serial(&self, dst: &mut [f32], lhs: &[f32], m: usize, n: usize, k: usize) {
        match *self {
            Rhs::Plain(weight) => gemm_into(dst, lhs, weight, m, n, k, false, gemm::Parallelism::None),
            Rhs::Packed(packed, multiply) => multiply(&lhs[..m * k], packed, 0..packed.count(), &mut dst[..m * n], n),
        }
    }

    /// `dst[m, n] = lhs[m, k] * rhs` on all threads: split by columns for few rows, by rows
    /// otherwise.
    fn multiply_parallel(&self, dst: &mut [f32], lhs: &[f32], m: usize, n: usize, k: usize) {
        let threads = rayon::current_num_threads();
        match *self {
            Rhs::Plain(weight) if m <= COLUMN_SPLIT_MAX_ROWS && threads > 1 => {
                gemm_by_columns(dst, lhs, weight, m, n, k, threads)
            }
            Rhs::Plain(weight) => gemm_into(dst, lhs, weight, m, n, k, false, parallelism()),
            Rhs::Packed(packed, multiply) if m <= COLUMN_SPLIT_MAX_ROWS && threads > 1 => {
                let per_part = packed.count().div_ceil(threads);
                let blocks: Vec<(usize, Vec<f32>)> = (0..packed.count().div_ceil(per_part))
                    .into_par_iter()
                    .map(|part| {
                        let range = part * per_part..((part + 1) * per_part).min(packed.count());
                        let width = range.len() * Panels::WIDTH;
                        let mut block = vec![0.0f32; m * width];
                        multiply(&lhs[..m * k], packed, range.clone(), &mut block, width);
                        (range.start * Panels::WIDTH, block)
                    })
                    .collect();
                copy_column_blocks(dst, blocks, m, n);
            }
            Rhs::Packed(packed, multiply) => {
                dst[..m * n]
                    .par_chunks_mut(PARALLEL_ROWS * n)
                    .zip(lhs[..m * k].par_chunks(PARALLEL_ROWS * k))
                    .for_each(|(dst, lhs)| {
                        multiply(lhs, packed, 0..packed.count(), dst, n);
                    });
            }
        }
    }
}

/// Rows per thread task of [`Rhs::multiply_parallel`] over many rows.
const PARALLEL_ROWS: usize = 96;

/// Writes blocks of whole rows of columns `c0..` (`(c0, [m, width])`) into `dst` (`[m, n]`).
fn copy_column_blocks(dst: &mut [f32], blocks: Vec<(usize, Vec<f32>)>, m: usize, n: usize) {
    for (c0, block) in blocks {
        let w = block.len() / m;
        for (row, values) in block.chunks_exact(w).enumerate() {
            dst[row * n + c0..row * n + c0 + w].copy_from_slice(values);
        }
    }
}

/// The checked convolution: split into tasks of `task_rows` output rows, or one
/// multi-threaded GEMM when `None`.
fn convolve(
    shape: &Conv2dShape, input: &[f32], rhs: Rhs, epilogue: &Epilogue, out: &mut [f32], task_rows: Option<usize>,
) {
    let (m, k, n) = (shape.m(), shape.k(), shape.out_c);
    // A 1x1 stride-1 convolution over NHWC is already a GEMM on the input.
    let pointwise =
        shape.kernel_h == 1 && shape.kernel_w == 1 && shape.stride == 1 && shape.pad_h == 0 && shape.pad_w == 0;
    if let Some(rows) = task_rows {
        out.par_chunks_mut(rows * n).enumerate().for_each(|(task, out)| {
            let (m0, rows) = (task * rows, out.len() / n);
            if pointwise {
                rhs.multiply_serial(out, &input[m0 * k..(m0 + rows) * k], rows, n, k);
            } else {
                IM2COL.with_borrow_mut(|cols| {
                    cols.resize(rows * k, 0.0);
                    im2col(shape, input, m0, &mut cols[..rows * k]);
                    rhs.multiply_serial(out, &cols[..rows * k], rows, n, k);
                });
            }
            epilogue.apply(out, m0, n);
        });
    } else {
        // Few rows (late layers, small batches): all of them in one GEMM.
        let cols;
        let lhs = if pointwise {
            &input[..m * k]
        } else {
            let mut gathered = vec![0.0f32; m * k];
            gathered.par_chunks_mut(k).enumerate().for_each(|(row, col)| im2col(shape, input, row, col));
            cols = gathered;
            &cols[..]
        };
        rhs.multiply_parallel(out, lhs, m, n, k);
        out.par_chunks_mut(n).enumerate().for_each(|(row, y)| epilogue.apply(y, row, n));
    }
}

/// Up to this many rows, [`gemm_by_columns`] beats the `gemm` crate's own threading, which
/// splits few rows poorly. Measured on 2 cores (2026-12-02), GFLOP/s threaded vs by columns:
/// 49x4608x512 42 vs 94, 49x512x2048 45 vs 96, 196x2304x256 100 vs 110; but 784x1152x128
/// 116 vs 97.
const COLUMN_SPLIT_MAX_ROWS: usize = 256;

/// `dst = lhs * rhs` (`[m, k] x [k, n]`) as `parts` single-threaded GEMMs over disjoint
/// column ranges, each reading all of `lhs` and its own columns of `rhs`.
#[allow(clippy::too_many_arguments)]
fn gemm_by_columns(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, n: usize, k: usize, parts: usize) {
    // Whole 16-column runs (two AVX2 registers wide) per part.
    let width = n.div_ceil(parts).next_multiple_of(16).min(n);
    let blocks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(width))
        .into_par_iter()
        .map(|part| {
            let (c0, w) = (part * width, width.min(n - part * width));
            let mut block = vec![0.0f32; m * w];
            gemm_strided(&mut block, lhs, &rhs[c0..], (n, 1), m, w, k, gemm::Parallelism::None);
            (c0, block)
        })
        .collect();
    copy_column_blocks(dst, blocks, m, n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Tolerance;
    use crate::rng::Rng;

    /// The convolution sum written out directly, in f64: no im2col, no GEMM, no tasks.
    fn direct(shape: &Conv2dShape, input: &[f32], weight: &[f32], bias: &[f32], residual: &[f32]) -> Vec<f32> {
        let (oh_n, ow_n, cout) = (shape.out_h(), shape.out_w(), shape.out_c);
        let mut out = vec![0.0f32; shape.output_len()];
        for n in 0..shape.batch {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let m = (n * oh_n + oh) * ow_n + ow;
                    for co in 0..cout {
                        let mut acc = bias[co] as f64 + residual[m * cout + co] as f64;
                        for kh in 0..shape.kernel_h {
                            for kw in 0..shape.kernel_w {
                                let ih = (oh * shape.stride + kh) as isize - shape.pad_h as isize;
                                let iw = (ow * shape.stride + kw) as isize - shape.pad_w as isize;
                                if ih < 0 || iw < 0 || ih as usize >= shape.in_h || iw as usize >= shape.in_w {
                                    continue;
                                }
                                for ci in 0..shape.in_c {
                                    let x = input
                                        [((n * shape.in_h + ih as usize) * shape.in_w + iw as usize) * shape.in_c + ci];
                                    let w = weight[((kh * shape.kernel_w + kw) * shape.in_c + ci) * cout + co];
                                    acc += x as f64 * w as f64;
                                }
                            }
                        }
                        out[m * cout + co] = acc.max(0.0) as f32;
                    }
                }
            }
        }
        out
    }

    /// Both code paths (row tasks, the last one partial, and one GEMM over all rows),
    /// kernel rows that straddle the padding, strides, odd channel counts, pointwise, few rows;
    /// the `gemm` crate on HWIO weights and, for whole panels of channels, the panel kernel.
    #[test]
    fn conv2d_matches_the_direct_sum() {
        let shapes = [
            Conv2dShape::square(3, 37, 29, 3, 10, 7, 2, 3),
            Conv2dShape::square(2, 45, 31, 5, 7, 3, 1, 1),
            Conv2dShape::square(1, 23, 41, 6, 9, 1, 1, 0),
            Conv2dShape::square(2, 19, 17, 4, 5, 1, 2, 0),
            Conv2dShape::square(1, 5, 6, 3, 4, 3, 1, 1),
            Conv2dShape {
                kernel_h: 3,
                kernel_w: 5,
                pad_h: 1,
                pad_w: 2,
                ..Conv2dShape::square(2, 33, 27, 3, 6, 3, 1, 1)
            },
            // Few rows and enough channels for `gemm_by_columns` to split them unevenly.
            Conv2dShape::square(1, 9, 7, 5, 37, 3, 1, 1),
            Conv2dShape::square(1, 11, 13, 6, 40, 1, 1, 0),
            // Whole panels: few rows split by panels (3 panels over the threads), many rows
            // split by rows, and a depth of several kernel slices (3 x 3 x 37 = 333).
            Conv2dShape::square(1, 9, 7, 37, 48, 3, 1, 1),
            Conv2dShape::square(2, 21, 19, 37, 16, 3, 2, 1),
            Conv2dShape::square(3, 17, 15, 9, 32, 1, 1, 0),
        ];
        let mut rng = Rng::new(11);
        for shape in shapes {
            let input = rng.normals(shape.input_len(), 1.0);
            let weight = rng.normals(shape.weight_len(), 0.3);
            let bias = rng.normals(shape.out_c, 0.5);
            let residual = rng.normals(shape.output_len(), 0.5);
            let expected = direct(&shape, &input, &weight, &bias, &residual);
            let epilogue = Epilogue { scale: None, bias: Some(&bias), residual: Some(&residual), relu: true };
            let packed = Panels::from_columns(&weight, shape.k(), shape.out_c).unwrap();
            let mut sides = vec![("hwio", Rhs::Plain(&weight))];
            if let (Some(multiply), true) = (panels::multiply(), shape.out_c.is_multiple_of(Panels::WIDTH)) {
                sides.push(("panels", Rhs::Packed(&packed, multiply)));
            }
            for (side, rhs) in sides {
                for tasks in [None, Some(1), Some(7), Some(64)] {
                    let mut got = vec![f32::NAN; shape.output_len()];
                    convolve(&shape, &input, rhs, &epilogue, &mut got, tasks);
                    if let Err(e) = Tolerance::new(1e-4, 1e-4).check(&got, &expected) {
                        panic!("{shape:?} {side} (m {}, task rows {tasks:?}): {e}", shape.m());
                    }
                }
            }
        }
    }

    /// Prepared weights: packed where the channels fill panels, HWIO otherwise; both agree
    /// with [`conv2d_into`]; packed weights of the wrong shape are an error, not a panic.
    #[test]
    fn prepared_weights_match_and_are_checked() {
        let mut rng = Rng::new(12);
        for shape in [Conv2dShape::square(2, 13, 11, 8, 32, 3, 1, 1), Conv2dShape::square(1, 9, 9, 4, 12, 1, 1, 0)] {
            let (input, weight) = (rng.normals(shape.input_len(), 1.0), rng.normals(shape.weight_len(), 0.3));
            let prepared = ConvWeights::new(weight.clone(), shape.k(), shape.out_c).unwrap();
            let expect_packed = panels::multiply().is_some() && shape.out_c.is_multiple_of(Panels::WIDTH);
            assert_eq!(matches!(prepared, ConvWeights::Packed(_)), expect_packed, "{shape:?}");
            let (mut got, mut want) = (vec![0.0; shape.output_len()], vec![0.0; shape.output_len()]);
            conv2d_prepared_into(&shape, &input, &prepared, &Epilogue::default(), &mut got).unwrap();
            conv2d_into(&shape, &input, &weight, &Epilogue::default(), &mut want).unwrap();
            Tolerance::new(1e-5, 1e-5).check(&got, &want).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        }
        let shape = Conv2dShape::square(1, 5, 5, 4, 20, 1, 1, 0);
        let odd = ConvWeights::Packed(Panels::from_columns(&vec![0.5; 4 * 20], 4, 20).unwrap());
        let mut out = vec![0.0; shape.output_len()];
        assert!(matches!(
            conv2d_prepared_into(&shape, &vec![1.0; shape.input_len()], &odd, &Epilogue::default(), &mut out),
            Err(Error::ShapeMismatch { .. })
        ));
        let other = ConvWeights::Packed(Panels::from_columns(&vec![0.5; 8 * 16], 8, 16).unwrap());
        let shape = Conv2dShape::square(1, 5, 5, 4, 16, 1, 1, 0);
        assert!(matches!(
            conv2d_prepared_into(
                &shape,
                &vec![1.0; shape.input_len()],
                &other,
                &Epilogue::default(),
                &mut out[..shape.output_len()]
            ),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
