//! AVX2 / FMA / F16C kernels of the CPU k-NN scan and of [`super::panels`] (callers check
//! the features at run time).

use std::arch::x86_64::*;
use std::ops::Range;

use super::panels::Panels;

/// `row · query` over their common length, four 8-wide FMA chains (f16 rows widened in
/// registers).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot<T: Lanes>(row: &[T], query: &[f32]) -> f32 {
    let len = row.len().min(query.len());
    let (r, f) = (row.as_ptr(), query.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): i + 32 <= len, resp. i + 8 <= len, elements of both slices;
    // unaligned loads.
    unsafe {
        while i + 32 <= len {
            for (lane, sum) in acc.iter_mut().enumerate() {
                let at = i + 8 * lane;
                *sum = _mm256_fmadd_ps(T::load8(r.add(at)), _mm256_loadu_ps(f.add(at)), *sum);
            }
            i += 32;
        }
        while i + 8 <= len {
            acc[0] = _mm256_fmadd_ps(T::load8(r.add(i)), _mm256_loadu_ps(f.add(i)), acc[0]);
            i += 8;
        }
    }
    let tail: f32 = row[i..len].iter().zip(&query[i..len]).map(|(x, y)| x.to_f32() * y).sum();
    horizontal_sum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + tail
}

/// The sum of a vector's 8 lanes.
#[target_feature(enable = "avx")]
fn horizontal_sum(sum: __m256) -> f32 {
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds the 8 values stored.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// Rows per pass over the query panels: their current depth slice (96 x 256 f32, 96 KB)
/// stays in L2 while each panel's slice (16 KB) is reused from L1. Measured
/// on the 2-core Zen 3 (one core, 64 queries x 2048): 96 rows 67-69 GFLOP/s, 48 rows 62-65,
/// 192 or 512 rows 59.
const BLOCK_ROWS: usize = 96;

/// Depth (K) per pass: 256 beat 128, 512 and all of 2048 by 3-10%.
const DEPTH: usize = 256;

/// Rows per micro-kernel call: 6 rows x 16 queries = 12 accumulators, plus the two panel
/// vectors and a broadcast, of the 16 AVX2 registers. (12 rows x 8 queries measured 1.6x
/// slower: twelve rows 8 KB apart share one L1 set, which has 8 ways.)
const KERNEL_ROWS: usize = 6;

/// [`super::panels::Multiply`] by a 6x16 register-blocked kernel: each step loads 16
/// columns' values once and broadcasts one value of each of 6 rows, 12 FMAs for 8 loads.
/// Rows are read in place (packing them cost more than it saved).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn multiply_panels(
    lhs: &[f32], rhs: &Panels, panels: Range<usize>, out: &mut [f32], out_stride: usize,
) {
    let (width, dim) = (Panels::WIDTH, rhs.depth());
    assert!(
        width == 16 && lhs.len().is_multiple_of(dim) && panels.end <= rhs.count() && panels.len() * width <= out_stride
    );
    let m = lhs.len() / dim;
    if m == 0 || panels.is_empty() {
        return;
    }
    assert!(out.len() >= (m - 1) * out_stride + panels.len() * width, "output too small");
    for block0 in (0..m).step_by(BLOCK_ROWS) {
        let block_end = (block0 + BLOCK_ROWS).min(m);
        for k0 in (0..dim).step_by(DEPTH) {
            let depth = DEPTH.min(dim - k0);
            for (column, p) in panels.clone().enumerate() {
                let panel = rhs.panel(p, k0, depth).as_ptr();
                let mut i0 = block0;
                while i0 < block_end {
                    // A block's last rows go 4, 2, then 1 at a time.
                    let r = [KERNEL_ROWS, 4, 2, 1].into_iter().find(|&r| r <= block_end - i0).unwrap_or(1);
                    // In bounds: rows i0..i0 + r hold `depth` values from k0 (k0 + depth
                    // <= dim); the panel slice holds depth x 16; output rows i0..i0 + r
                    // have 16 columns from 16 * column (< out_stride).
                    let a = lhs[i0 * dim + k0..(i0 + r - 1) * dim + k0 + depth].as_ptr();
                    let c = out[i0 * out_stride + column * width..(i0 + r - 1) * out_stride + (column + 1) * width]
                        .as_mut_ptr();
                    let first = k0 == 0;
                    // SAFETY: the bounds above, with the kernel reading r rows of `depth`
                    // at stride `dim`, `depth` panel steps of 16, and r output rows of 16
                    // at stride `out_stride`; the CPU features are the caller's promise.
                    unsafe {
                        match r {
                            KERNEL_ROWS => kernel::<KERNEL_ROWS>(depth, a, dim, panel, c, out_stride, first),
                            4 => kernel::<4>(depth, a, dim, panel, c, out_stride, first),
                            2 => kernel::<2>(depth, a, dim, panel, c, out_stride, first),
                            _ => kernel::<1>(depth, a, dim, panel, c, out_stride, first),
                        }
                    }
                    i0 += r;
                }
            }
        }
    }
}

/// `c[i][0..16] (+)= Σ_k a[i][k] · b[k][0..16]` for `R` rows: `a` rows at stride `lda`,
/// `b` 16 values per step, `c` rows at stride `ldc`; `first` overwrites instead of adding.
///
/// # Safety
/// AVX2 and FMA; `a`, `b` and `c` valid for those reads and writes.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn kernel<const R: usize>(
    depth: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize, first: bool,
) {
    // SAFETY (all accesses): within the ranges the caller promises.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if !first {
            for (i, row) in acc.iter_mut().enumerate() {
                *row = [_mm256_loadu_ps(c.add(i * ldc)), _mm256_loadu_ps(c.add(i * ldc + 8))];
            }
        }
        for k in 0..depth {
            let (b0, b1) = (_mm256_loadu_ps(b.add(16 * k)), _mm256_loadu_ps(b.add(16 * k + 8)));
            for (i, row) in acc.iter_mut().enumerate() {
                let value = _mm256_broadcast_ss(&*a.add(i * lda + k));
                row[0] = _mm256_fmadd_ps(value, b0, row[0]);
                row[1] = _mm256_fmadd_ps(value, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.add(i * ldc), row[0]);
            _mm256_storeu_ps(c.add(i * ldc + 8), row[1]);
        }
    }
}

/// `dst[i] = src[i]` widened, 8 values an instruction (`half`'s slice conversion calls an
/// F16C routine per 8 values that cannot be inlined: 3x slower here).
///
/// # Safety
/// The CPU must support AVX and F16C.
#[target_feature(enable = "avx,f16c")]
pub(crate) unsafe fn widen_f16(src: &[half::f16], dst: &mut [f32]) {
    let len = src.len().min(dst.len());
    let (h, f) = (src.as_ptr() as *const u16, dst.as_mut_ptr());
    let mut i = 0;
    // SAFETY: i + 8 <= len elements of both slices; unaligned loads and stores.
    while i + 8 <= len {
        unsafe { _mm256_storeu_ps(f.add(i), _mm256_cvtph_ps(_mm_loadu_si128(h.add(i) as *const __m128i))) };
        i += 8;
    }
    for (d, s) in dst[i..len].iter_mut().zip(&src[i..len]) {
        *d = s.to_f32();
    }
}

/// A row element type the kernels load 8 at a time as f32.
pub(crate) trait Lanes: Copy {
    /// # Safety
    /// AVX2 and F16C; 8 elements readable at `at`.
    unsafe fn load8(at: *const Self) -> __m256;
    fn to_f32(self) -> f32;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load8(at: *const f32) -> __m256 {
        // SAFETY: the caller's promise.
        unsafe { _mm256_loadu_ps(at) }
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Lanes for half::f16 {
    #[inline(always)]
    unsafe fn load8(at: *const half::f16) -> __m256 {
        // SAFETY: the caller's promise; f16 is a u16 bit pattern.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(at as *const __m128i)) }
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

/// `scores[j * q + qi]` = row `j` · query `qi`, two rows by up to four queries at a time:
/// each step loads (and for f16 widens) two rows' 8 values once for four queries, 8 FMAs
/// for 6 loads, where dotting each query alone reloads the rows per query. For the scans
/// of a few queries too many for [`dot`] per query, too few for the panels.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dots_few<T: Lanes>(rows: &[T], dim: usize, queries: &[f32], scores: &mut [f32]) {
    assert!(dim > 0 && rows.len().is_multiple_of(dim) && queries.len().is_multiple_of(dim));
    let (m, q) = (rows.len() / dim, queries.len() / dim);
    assert!(scores.len() >= m * q, "score block too small");
    for j in (0..m).step_by(2) {
        for g in (0..q).step_by(4) {
            let (r, n) = ((m - j).min(2), (q - g).min(4));
            let (a, b) = (&rows[j * dim..(j + r) * dim], &queries[g * dim..(g + n) * dim]);
            let out = &mut scores[j * q + g..(j + r - 1) * q + g + n];
            // SAFETY: `a` holds r rows and `b` n queries of `dim` values; `out` reaches
            // r - 1 rows of q past its start plus n values; the features are the caller's.
            unsafe {
                match (r, n) {
                    (2, 4) => dots_block::<T, 2, 4>(a, b, dim, out, q),
                    (2, 3) => dots_block::<T, 2, 3>(a, b, dim, out, q),
                    (2, 2) => dots_block::<T, 2, 2>(a, b, dim, out, q),
                    (2, _) => dots_block::<T, 2, 1>(a, b, dim, out, q),
                    (_, 4) => dots_block::<T, 1, 4>(a, b, dim, out, q),
                    (_, 3) => dots_block::<T, 1, 3>(a, b, dim, out, q),
                    (_, 2) => dots_block::<T, 1, 2>(a, b, dim, out, q),
                    _ => dots_block::<T, 1, 1>(a, b, dim, out, q),
                }
            }
        }
    }
}

/// `out[i * stride + qi]` = row `i` of `rows` · query `qi`, for `R` rows and `Q` queries.
///
/// # Safety
/// AVX2, FMA and F16C; `rows` holds R x dim, `queries` Q x dim, `out` (R - 1) x stride + Q.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dots_block<T: Lanes, const R: usize, const Q: usize>(
    rows: &[T], queries: &[f32], dim: usize, out: &mut [f32], stride: usize,
) {
    let (a, b) = (rows.as_ptr(), queries.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); Q]; R];
    let mut i = 0;
    // SAFETY (all loads): i + 8 <= dim values of each row and query, as promised.
    unsafe {
        while i + 8 <= dim {
            let mut row = [_mm256_setzero_ps(); R];
            for (r, values) in row.iter_mut().enumerate() {
                *values = T::load8(a.add(r * dim + i));
            }
            for qi in 0..Q {
                let query = _mm256_loadu_ps(b.add(qi * dim + i));
                for (sums, values) in acc.iter_mut().zip(row) {
                    sums[qi] = _mm256_fmadd_ps(values, query, sums[qi]);
                }
            }
            i += 8;
        }
    }
    for (r, sums) in acc.iter().enumerate() {
        for (qi, sum) in sums.iter().enumerate() {
            let tail: f32 = rows[r * dim + i..(r + 1) * dim]
                .iter()
                .zip(&queries[qi * dim + i..(qi + 1) * dim])
                .map(|(x, y)| x.to_f32() * y)
                .sum();
            out[r * stride + qi] = horizontal_sum(*sum) + tail;
        }
    }
}
