//! The CPU exact k-NN scan, the twin of the GPU's chunked score + top-k: every query scored
//! against every reference row, the best k kept per query.

use std::cell::RefCell;
use std::cmp::Ordering;

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::cpu::matmul::gemm_serial;
use crate::cpu::panels::{self, Multiply, Panels};
use crate::cpu::topk::{best_k, rank};
use crate::error::{Error, Result};
use crate::shape::topk::MAX_K;

/// Reference rows as stored: f32, or f16 widened a task at a time.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// f32 rows.
    F32(&'a [f32]),
    /// f16 rows, widened to f32 as they are read.
    F16(&'a [half::f16]),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::F32(v) => v.len(),
            Rows::F16(v) => v.len(),
        }
    }
}

/// Reference rows per task. Each task reads its rows once for all queries: a GEMV for one
/// query (memory-bound, like faiss' IndexFlatIP), a single-threaded GEMM for several, whose
/// score block (queries x rows) stays in cache for the top-k.
const TASK_ROWS: usize = 512;

thread_local! {
    /// Widened f16 rows and the score block of the task running on this thread.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Top `k` of `queries · rowsᵀ` per query (queries `[q, dim]`, rows `[n, dim]`): for each
/// query, (score, row) pairs best first, ranked as [`crate::cpu::topk::topk`] ranks.
pub fn knn(rows: Rows, dim: usize, queries: &[f32], k: usize) -> Result<Vec<Vec<(f32, u32)>>> {
    if dim == 0 || !rows.len().is_multiple_of(dim) || !queries.len().is_multiple_of(dim) || queries.is_empty() {
        return Err(Error::shape(
            "cpu knn",
            format!("rows and queries of {dim} values"),
            format!("{} and {} values", rows.len(), queries.len()),
        ));
    }
    let (n, q) = (rows.len() / dim, queries.len() / dim);
    if k == 0 || k > n.min(MAX_K) {
        return Err(Error::InvalidArgument(format!("cpu knn: k = {k} outside 1..={}", n.min(MAX_K))));
    }
    if u32::try_from(n).is_err() {
        return Err(Error::InvalidArgument(format!("cpu knn: {n} rows exceed u32 indices")));
    }
    let plan = Plan::choose(rows, dim, queries)?;
    let stride = plan.stride(q);
    let best = (0..n.div_ceil(TASK_ROWS))
        .into_par_iter()
        .fold(
            || Running::new(q, k),
            |mut best, task| {
                let (start, end) = (task * TASK_ROWS, ((task + 1) * TASK_ROWS).min(n));
                SCRATCH.with_borrow_mut(|(widened, scores)| {
                    score_block(&plan, rows, dim, queries, start..end, widened, scores);
                    for (j, row_scores) in scores.chunks_exact(stride).enumerate() {
                        best.offer_row(&row_scores[..q], (start + j) as u32);
                    }
                });
                best
            },
        )
        .reduce(|| Running::new(q, k), Running::merge);
    Ok(best.finish())
}

/// Up to this many queries, rows are dotted directly (f16 widened in registers) instead of
/// going through a GEMM: a scan for few queries is bound by reading the rows, and widening
/// f16 rows in bulk first writes and re-reads twice the bytes that f16 storage saves.
/// 100k x 2048 on 2 cores (ms, GEMM / direct): f16 1 query 52-71 / 25-28, 4 queries 81-100 /
/// 46-52; f32 1 query 47-57 / 50-52, 2 queries 76-85 / 59-60, 4 queries 74-75 / 77-81 (four
/// 8 KB f32 queries and the row no longer fit L1 together).
const DIRECT_F16_MAX_QUERIES: usize = 4;
const DIRECT_F32_MAX_QUERIES: usize = 2;

/// Up to this many queries (past the direct ones), two rows are dotted with up to four
/// queries at a time, loading (and widening) each row once per four queries. 100k x 2048,
/// medians of 7, GEMM / this, two alternating rounds (ms): f16 6 queries 75-89 / 54, 8
/// queries 77-79 / 54-60; f32 3 queries 75-90 / 55-72, 4 queries 80-90 / 61-62, but 6
/// queries 69-77 / 76-84 (six 8 KB f32 queries stream from L2 for every pair of rows).
const FEW_F16_MAX_QUERIES: usize = 8;
const FEW_F32_MAX_QUERIES: usize = 4;

/// From this many queries on, the 6x16 kernel over packed queries ([`Panels`])
/// replaces the `gemm` crate. 100k x 2048 on 2 cores, alternating runs (ms, GEMM / panels):
/// f32 64 queries 252-282 / 226-228, 16 queries 83-96 / 70-77; f16 64 queries 268-310 /
/// 240-257, 16 queries 108-128 / 80-93. For 8 queries or fewer a kernel over 8-query panels
/// was tried: f32 no faster (8 queries 71-83 / 80-107).
const PANELS_MIN_QUERIES: usize = 9;

/// How a scan scores its rows, chosen once for all tasks.
struct Plan {
    scoring: Scoring,
    /// The x86 kernels, where this CPU has them.
    avx2: Option<Avx2Kernels>,
}

enum Scoring {
    /// Each row dotted with each query (one to four).
    Direct,
    /// Two rows dotted with up to four queries at a time (a few more).
    Few,
    /// The register-blocked kernel over the queries packed once.
    Panels(Panels, Multiply),
    /// The `gemm` crate.
    Gemm,
}

impl Plan {
    fn choose(rows: Rows, dim: usize, queries: &[f32]) -> Result<Plan> {
        let q = queries.len() / dim;
        let avx2 = avx2_kernels();
        let (direct_max, few_max) = match rows {
            Rows::F32(_) => (DIRECT_F32_MAX_QUERIES, FEW_F32_MAX_QUERIES),
            Rows::F16(_) => (DIRECT_F16_MAX_QUERIES, FEW_F16_MAX_QUERIES),
        };
        let scoring = match (&avx2, panels::multiply()) {
            (Some(_), _) if q <= direct_max => Scoring::Direct,
            (Some(_), _) if q <= few_max => Scoring::Few,
            (_, Some(multiply)) if q >= PANELS_MIN_QUERIES => {
                Scoring::Panels(Panels::from_rows(queries, dim)?, multiply)
            }
            _ => Scoring::Gemm,
        };
        Ok(Plan { scoring, avx2 })
    }

    /// Values per row of a task's score block (the queries, padded to whole panels).
    fn stride(&self, queries: usize) -> usize {
        match &self.scoring {
            Scoring::Panels(panels, _) => panels.count() * Panels::WIDTH,
            Scoring::Direct | Scoring::Few | Scoring::Gemm => queries,
        }
    }
}

/// `scores[j * stride + qi]` = query `qi` · row `rows_range.start + j` (see [`Plan::stride`]).
fn score_block(
    plan: &Plan, rows: Rows, dim: usize, queries: &[f32], rows_range: std::ops::Range<usize>, widened: &mut Vec<f32>,
    scores: &mut Vec<f32>,
) {
    let (q, len) = (queries.len() / dim, rows_range.len());
    let (start, end) = (rows_range.start * dim, rows_range.end * dim);
    scores.resize(plan.stride(q) * len, 0.0);
    let avx2 = plan.avx2.as_ref();
    match (&plan.scoring, avx2) {
        (Scoring::Direct, Some(kernels)) => {
            return match rows {
                Rows::F32(v) => each_row(&v[start..end], dim, queries, scores, kernels.dot_f32),
                Rows::F16(v) => each_row(&v[start..end], dim, queries, scores, kernels.dot_f16),
            }
        }
        (Scoring::Few, Some(kernels)) => {
            return match rows {
                Rows::F32(v) => (kernels.few_f32)(&v[start..end], dim, queries, scores),
                Rows::F16(v) => (kernels.few_f16)(&v[start..end], dim, queries, scores),
            }
        }
        _ => {}
    }
    let block = match rows {
        Rows::F32(v) => &v[start..end],
        Rows::F16(v) => {
            widened.resize(end - start, 0.0);
            match avx2 {
                Some(kernels) => (kernels.widen_f16)(&v[start..end], widened),
                None => v[start..end].convert_to_f32_slice(widened),
            }
            &widened[..]
        }
    };
    match &plan.scoring {
        Scoring::Panels(panels, multiply) => {
            multiply(block, panels, 0..panels.count(), scores, panels.count() * Panels::WIDTH)
        }
        // Rows as the GEMM's M, which its micro-kernels block well (with the scores written
        // query-major, the GEMM runs as slowly as with queries as M).
        _ => gemm_serial(scores, block, queries, len, q, dim, true),
    }
}

/// `scores[j * q + qi] = dot(row j, query qi)` for consecutive rows.
fn each_row<T>(rows: &[T], dim: usize, queries: &[f32], scores: &mut [f32], dot: fn(&[T], &[f32]) -> f32) {
    let q = queries.len() / dim;
    for (row, row_scores) in rows.chunks_exact(dim).zip(scores.chunks_exact_mut(q)) {
        for (score, query) in row_scores.iter_mut().zip(queries.chunks_exact(dim)) {
            *score = dot(row, query);
        }
    }
}

/// The scan's x86 kernels, as safe function pointers once the CPU's features are known.
struct Avx2Kernels {
    dot_f32: fn(&[f32], &[f32]) -> f32,
    dot_f16: fn(&[half::f16], &[f32]) -> f32,
    widen_f16: fn(&[half::f16], &mut [f32]),
    few_f32: fn(&[f32], usize, &[f32], &mut [f32]),
    few_f16: fn(&[half::f16], usize, &[f32], &mut [f32]),
}

/// x86-64 with AVX2, FMA and F16C; `None` sends callers to the `gemm` crate (f16 rows
/// widened by `half`).
fn avx2_kernels() -> Option<Avx2Kernels> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has the features the kernels are compiled for (checked above).
        return Some(Avx2Kernels {
            dot_f32: |row, query| unsafe { crate::cpu::x86::dot(row, query) },
            dot_f16: |row, query| unsafe { crate::cpu::x86::dot(row, query) },
            widen_f16: |src, dst| unsafe { crate::cpu::x86::widen_f16(src, dst) },
            few_f32: |rows, dim, queries, scores| unsafe { crate::cpu::x86::dots_few(rows, dim, queries, scores) },
            few_f16: |rows, dim, queries, scores| unsafe { crate::cpu::x86::dots_few(rows, dim, queries, scores) },
        });
    }
    None
}

/// Each query's best k so far. Candidates that do not beat the k-th best seen (its rank,
/// the floor) are dropped on arrival; a list is cut back to k whenever it reaches 2k.
struct Running {
    lists: Vec<Vec<(f32, u32)>>,
    floors: Vec<Floor>,
    k: usize,
}

/// The k-th best so far: its rank, and its score for a cheap first test (a score below it
/// cannot rank above it; NaN on either side is incomparable and goes on to the exact test).
#[derive(Clone, Copy)]
struct Floor {
    rank: u64,
    score: f32,
}

impl Floor {
    const NONE: Floor = Floor { rank: 0, score: f32::NEG_INFINITY };
}

impl Running {
    fn new(queries: usize, k: usize) -> Self {
        Self { lists: vec![Vec::new(); queries], floors: vec![Floor::NONE; queries], k }
    }

    /// Offers one row's scores against every query (`scores[qi]`).
    fn offer_row(&mut self, scores: &[f32], row: u32) {
        for (query, &score) in scores.iter().enumerate() {
            if score.partial_cmp(&self.floors[query].score) != Some(Ordering::Less) {
                self.offer(query, score, row);
            }
        }
    }

    fn offer(&mut self, query: usize, score: f32, index: u32) {
        let (list, floor) = (&mut self.lists[query], &mut self.floors[query]);
        if rank(score, index) > floor.rank {
            list.push((score, index));
            if list.len() >= 2 * self.k {
                *list = best_k(list.drain(..), self.k);
                let (s, i) = list[self.k - 1];
                *floor = Floor { rank: rank(s, i), score: s };
            }
        }
    }

    fn merge(mut self, other: Running) -> Running {
        for (query, list) in other.lists.into_iter().enumerate() {
            for (score, index) in list {
                self.offer(query, score, index);
            }
        }
        self
    }

    fn finish(self) -> Vec<Vec<(f32, u32)>> {
        let k = self.k;
        self.lists.into_iter().map(|list| best_k(list, k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::topk::topk;
    use crate::rng::Rng;

    /// Against every score written out and one top-k over the whole row: several tasks, a
    /// partial last task, k larger than a task's rows, f16 rows, tied scores, NaN and infinite
    /// scores; every scoring path (direct dots, two rows by up to four queries with odd rows
    /// and depth tails, the GEMM, padded query panels over several depth slices, blocks
    /// ending in 4, 2 and 1 rows).
    #[test]
    fn knn_matches_a_full_score_matrix() {
        let mut rng = Rng::new(3);
        for (n, dim, q, k) in [
            (1, 5, 1, 1),
            (4, 3, 2, 4),
            (1300, 7, 3, 10),
            (2 * TASK_ROWS + 77, 33, 5, 700),
            (TASK_ROWS, 16, 65, 1),
            (TASK_ROWS + 101, 530, 9, 10),
            (700, 300, 6, 3),
            (1000, 270, 40, 5),
        ] {
            // Rounded values make exact ties between rows.
            let mut rows: Vec<f32> = rng.normals(n * dim, 1.0).iter().map(|x| (x * 4.0).round() / 4.0).collect();
            // Rows scoring NaN and ±inf, which rank lowest and by value: they pass the
            // floor's score test differently from ordinary scores.
            for (row, value) in [(n / 2, f32::NAN), (n / 3, f32::INFINITY), (n - 1, f32::NEG_INFINITY)] {
                rows[row * dim] = value;
            }
            let queries: Vec<f32> = rng.normals(q * dim, 1.0).iter().map(|x| (x * 4.0).round() / 4.0).collect();
            let rows16: Vec<half::f16> = rows.iter().map(|&x| half::f16::from_f32(x)).collect();
            let scores: Vec<f32> = (0..q * n)
                .map(|at| {
                    let (qi, r) = (at / n, at % n);
                    queries[qi * dim..(qi + 1) * dim]
                        .iter()
                        .zip(&rows[r * dim..(r + 1) * dim])
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect();
            let (top_scores, top_indices) = topk(&scores, q, n, k).unwrap();
            for (name, r) in [("f32", Rows::F32(&rows)), ("f16", Rows::F16(&rows16))] {
                let got = knn(r, dim, &queries, k).unwrap();
                for qi in 0..q {
                    let expected: Vec<(u32, u32)> =
                        (0..k).map(|j| (top_scores[qi * k + j].to_bits(), top_indices[qi * k + j])).collect();
                    let got: Vec<(u32, u32)> = got[qi].iter().map(|&(s, i)| (s.to_bits(), i)).collect();
                    assert_eq!(got, expected, "{name} n {n} dim {dim} query {qi} k {k}");
                }
            }
        }
    }

    /// A floor that is NaN (fewer ordinary scores than k) must still let ordinary scores in.
    #[test]
    fn knn_ranks_ordinary_scores_above_a_nan_floor() {
        let (n, dim, k) = (3 * TASK_ROWS, 2, 4);
        let mut rows = vec![f32::NAN; n * dim];
        for (row, value) in [(5, 1.0), (TASK_ROWS + 3, -2.0), (n - 1, 3.0)] {
            rows[row * dim] = value;
            rows[row * dim + 1] = 0.0;
        }
        let got = knn(Rows::F32(&rows), dim, &[1.0, 0.0], k).unwrap();
        let ranked: Vec<(u32, u32)> = got[0].iter().map(|&(s, i)| (s.to_bits(), i)).collect();
        let expected =
            [(3.0f32.to_bits(), n as u32 - 1), (1.0f32.to_bits(), 5), ((-2.0f32).to_bits(), TASK_ROWS as u32 + 3)];
        assert_eq!(ranked[..3], expected);
        assert!(got[0][3].0.is_nan(), "{:?}", got[0]);
    }

    #[test]
    fn knn_rejects_bad_arguments() {
        let rows = [0.0f32; 12];
        assert!(matches!(knn(Rows::F32(&rows), 4, &[1.0; 4], 0), Err(Error::InvalidArgument(_))));
        assert!(matches!(knn(Rows::F32(&rows), 4, &[1.0; 4], 4), Err(Error::InvalidArgument(_))));
        assert!(matches!(knn(Rows::F32(&rows), 5, &[1.0; 5], 1), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(knn(Rows::F32(&rows), 4, &[1.0; 3], 1), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(knn(Rows::F32(&rows), 4, &[], 1), Err(Error::ShapeMismatch { .. })));
    }
}
