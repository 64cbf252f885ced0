//! AVX2 / FMA / F16C kernels of the CPU scan (callers check the features at run time).

use std::arch::x86_64::*;

/// `row · query` over their common length, four 8-wide FMA chains.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_f32_avx2(row: &[f32], query: &[f32]) -> f32 {
    let len = row.len().min(query.len());
    let (r, f) = (row.as_ptr(), query.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): i + 32 <= len, resp. i + 8 <= len, elements of both slices;
    // unaligned loads.
    while i + 32 <= len {
        for (lane, sum) in acc.iter_mut().enumerate() {
            let at = i + 8 * lane;
            *sum = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(at)), _mm256_loadu_ps(f.add(at)), *sum);
        }
        i += 32;
    }
    while i + 8 <= len {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(i)), _mm256_loadu_ps(f.add(i)), acc[0]);
        i += 8;
    }
    let tail: f32 = row[i..len].iter().zip(&query[i..len]).map(|(x, y)| x * y).sum();
    horizontal_sum(acc) + tail
}

/// `row · query` over their common length, four 8-wide FMA chains.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_f16_avx2(row: &[half::f16], query: &[f32]) -> f32 {
    let len = row.len().min(query.len());
    let (h, f) = (row.as_ptr() as *const u16, query.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): i + 32 <= len, resp. i + 8 <= len, elements of both slices;
    // unaligned loads.
    while i + 32 <= len {
        for (lane, sum) in acc.iter_mut().enumerate() {
            let at = i + 8 * lane;
            let widened = _mm256_cvtph_ps(_mm_loadu_si128(h.add(at) as *const __m128i));
            *sum = _mm256_fmadd_ps(widened, _mm256_loadu_ps(f.add(at)), *sum);
        }
        i += 32;
    }
    while i + 8 <= len {
        let widened = _mm256_cvtph_ps(_mm_loadu_si128(h.add(i) as *const __m128i));
        acc[0] = _mm256_fmadd_ps(widened, _mm256_loadu_ps(f.add(i)), acc[0]);
        i += 8;
    }
    let tail: f32 = row[i..len].iter().zip(&query[i..len]).map(|(x, y)| x.to_f32() * y).sum();
    horizontal_sum(acc) + tail
}

/// The sum of the four chains' lanes.
#[target_feature(enable = "avx")]
fn horizontal_sum(acc: [__m256; 4]) -> f32 {
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds the 8 values stored.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}
