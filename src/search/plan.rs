//! The scan half of a search, recorded once per (queries, k, source) and replayed: centring
//! and L2 normalisation, then for each reference chunk a score matmul and a top-k, then a
//! merge of the chunks' lists. Plans and the backbone's activations are scratch: each
//! search takes a set of its own from the searcher's pool, so one [`Searcher`] answers from
//! many threads.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::error::Result;
use crate::gpu::{Context, Dispatch, Readback};
use crate::model::GpuBackbone;
use crate::ops::gemv;
use crate::ops::l2_normalize::l2_normalize;
use crate::ops::matmul::MatmulShape;
use crate::ops::matmul_coop::matmul_coop;
use crate::ops::topk::{TopK, TopKInput, TopKOutput};
use crate::search::{Neighbor, Searcher};

/// One storage binding's share of the reference matrix.
pub(super) struct RefChunk {
    pub buffer: wgpu::Buffer,
    /// Its first row in the index.
    pub start: usize,
    pub rows: usize,
}

/// Where a plan's query features come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum QuerySource {
    /// The backbone's features buffer for this batch size.
    Images,
    /// Features uploaded by the caller.
    Features,
}

/// Everything after the backbone for one (queries, k, source), recorded once.
pub(super) struct ScanPlan {
    /// Where [`QuerySource::Features`] queries are written.
    pub uploaded_features: wgpu::Buffer,
    /// The backbone's features buffer it reads, for [`QuerySource::Images`].
    source: Option<wgpu::Buffer>,
    result_scores: wgpu::Buffer,
    result_indices: wgpu::Buffer,
    readback_scores: Readback,
    readback_indices: Readback,
    pub dispatches: Vec<Dispatch>,
    /// [`ScanPlans::uses`] when last handed out.
    last_used: u64,
    // Keep the scratch of every selection alive while the dispatches exist.
    _selections: Vec<TopK>,
    _buffers: Vec<wgpu::Buffer>,
}

/// Scan plans kept per scratch set: batches split by bytes come in a few sizes.
const MAX_SCAN_PLANS: usize = 8;

/// The scan plans of one scratch set, the least recently used dropped past
/// [`MAX_SCAN_PLANS`].
#[derive(Default)]
pub(super) struct ScanPlans {
    plans: HashMap<(usize, usize, QuerySource), ScanPlan>,
    uses: u64,
}

impl ScanPlans {
    /// The plan for `q` queries and `k` results from `source`, recorded on first use, or
    /// again where it was recorded on a backbone features buffer other than
    /// `backbone_features` (the backbone keeps a few plans only, and drops the rest).
    pub fn get(
        &mut self, searcher: &Searcher, q: usize, k: usize, source: QuerySource,
        backbone_features: Option<&wgpu::Buffer>,
    ) -> Result<&ScanPlan> {
        let key = (q, k, source);
        self.uses += 1;
        let fresh = self.plans.get(&key).is_some_and(|plan| plan.source.as_ref() == backbone_features);
        if !self.plans.contains_key(&key) && self.plans.len() >= MAX_SCAN_PLANS {
            let oldest = self.plans.iter().min_by_key(|(_, plan)| plan.last_used).map(|(key, _)| *key);
            oldest.and_then(|oldest| self.plans.remove(&oldest));
        }
        let plan = match self.plans.entry(key) {
            Entry::Occupied(mut stored) => {
                if !fresh {
                    stored.insert(record(searcher, q, k, backbone_features)?);
                }
                stored.into_mut()
            }
            Entry::Vacant(slot) => slot.insert(record(searcher, q, k, backbone_features)?),
        };
        plan.last_used = self.uses;
        Ok(plan)
    }
}

/// Records the scan of `q` queries for their `k` best rows: reading `backbone_features`,
/// or the plan's own upload buffer where that is `None`.
fn record(searcher: &Searcher, q: usize, k: usize, backbone_features: Option<&wgpu::Buffer>) -> Result<ScanPlan> {
    let Searcher { ctx, dim, chunks, precision, matrix_units, mean, tuning, .. } = searcher;
    let (dim, precision) = (*dim, *precision);
    let uploaded_features = ctx.storage("query features", q * dim)?;
    let features = backbone_features.unwrap_or(&uploaded_features);
    let queries = ctx.storage("normalised queries", q * dim)?;
    let largest_chunk = chunks.iter().map(|c| c.rows).max().unwrap_or(1);
    let scores = ctx.storage("scores", q * largest_chunk)?;
    let result_scores = ctx.storage("top-k scores", q * k)?;
    let result_indices = ctx.storage("top-k indices", q * k)?;
    let mut dispatches = vec![l2_normalize(ctx, q, dim, features, mean.as_ref(), &queries)?];
    let mut selections = Vec::new();
    let single = chunks.len() == 1;
    let stride = chunks.len() * k;
    let candidate_scores = ctx.storage("candidate scores", q * stride)?;
    let candidate_indices = ctx.storage("candidate indices", q * stride)?;
    for (c, chunk) in chunks.iter().enumerate() {
        let shape = MatmulShape { m: q, n: chunk.rows, k: dim, b_transposed: true };
        let score = match *matrix_units && !gemv::supports(&shape, precision) {
            true => matmul_coop(ctx, &shape, &queries, &chunk.buffer, precision, &scores)?,
            false => gemv::scores(ctx, &shape, &queries, &chunk.buffer, precision, &scores, tuning)?,
        };
        dispatches.push(score);
        let output = if single {
            TopKOutput::dense(&result_scores, &result_indices, k)
        } else {
            TopKOutput { scores: &candidate_scores, indices: &candidate_indices, row_stride: stride, offset: c * k }
        };
        let input = TopKInput::Scores { scores: &scores, index_base: chunk.start as u32 };
        let selection = TopK::new(ctx, input, q, chunk.rows, k, &output, tuning.topk_workgroup)?;
        dispatches.extend_from_slice(selection.dispatches());
        selections.push(selection);
    }
    if !single {
        let input = TopKInput::Pairs { scores: &candidate_scores, indices: &candidate_indices };
        let output = TopKOutput::dense(&result_scores, &result_indices, k);
        let merge = TopK::new(ctx, input, q, stride, k, &output, tuning.topk_workgroup)?;
        dispatches.extend_from_slice(merge.dispatches());
        selections.push(merge);
    }
    Ok(ScanPlan {
        uploaded_features,
        source: backbone_features.cloned(),
        result_scores,
        result_indices,
        readback_scores: ctx.readback(q * k),
        readback_indices: ctx.readback(q * k),
        dispatches,
        last_used: 0,
        _selections: selections,
        _buffers: vec![queries, scores, candidate_scores, candidate_indices],
    })
}

/// Runs `dispatches` (which end with `plan`'s) in one submit and reads back the `k` best
/// of each of the `q` queries.
pub(super) fn read_results(
    ctx: &Context, plan: &ScanPlan, dispatches: &[&Dispatch], q: usize, k: usize,
) -> Result<Vec<Vec<Neighbor>>> {
    let out = ctx.run_and_read_into(
        dispatches,
        &[(&plan.result_scores, &plan.readback_scores, q * k), (&plan.result_indices, &plan.readback_indices, q * k)],
    )?;
    let (scores, indices) = (&out[0], &out[1]);
    Ok((0..q)
        .map(|row| {
            (0..k)
                .map(|j| Neighbor { index: indices[row * k + j].to_bits() as usize, score: scores[row * k + j] })
                .collect()
        })
        .collect())
}

/// What one search at a time needs for itself: the backbone's activations and recorded
/// forwards (a copy of the searcher's network sharing its weights) and the scan plans.
#[derive(Default)]
pub(super) struct Scratch {
    pub net: Option<GpuBackbone>,
    pub scans: ScanPlans,
}

/// Idle scratch sets a searcher keeps: each holds activations of up to a few batch sizes,
/// so a burst of many threads does not leave that much memory behind.
const MAX_IDLE_SCRATCH: usize = 4;

/// The searcher's idle scratch sets. The lock is held only to take or return one, never
/// while GPU work is recorded or waited for.
#[derive(Default)]
pub(super) struct ScratchPool {
    idle: Mutex<Vec<Scratch>>,
}

impl ScratchPool {
    /// An idle scratch set, or a new one (no GPU work: its plans are recorded on first use)
    /// when all are taken; it returns to the pool when the guard drops.
    pub fn take<'a>(&'a self, searcher: &Searcher) -> ScratchGuard<'a> {
        // A panic elsewhere cannot leave the list half-changed: take the lock regardless.
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let scratch = idle.unwrap_or_else(|| Scratch {
            net: searcher.net.as_ref().map(GpuBackbone::sharing_weights),
            scans: ScanPlans::default(),
        });
        ScratchGuard { pool: self, scratch }
    }

    /// Scratch sets now idle in the pool.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A scratch set taken from a [`ScratchPool`], returned to it on drop.
pub(super) struct ScratchGuard<'a> {
    pool: &'a ScratchPool,
    pub scratch: Scratch,
}

impl Drop for ScratchGuard<'_> {
    fn drop(&mut self) {
        let scratch = std::mem::take(&mut self.scratch);
        let mut idle = self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_SCRATCH {
            idle.push(scratch);
        }
    }
}
