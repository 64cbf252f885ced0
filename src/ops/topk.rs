//! Rust twin of `shaders/topk.wgsl`: exact top-k per row of a score matrix, as a chain of
//! passes that each reduce blocks of 2048 candidates to their best k in workgroup memory
//! (the shader's header has the algorithm) until one list per row is left. Long rows of
//! dense scores with a small k first get a floor (the k-th best of their chunk maxima), and
//! the passes sort only the candidates at or above it.
//!
//! Ranking: scores descending, NaN as -inf, -0 equal to +0, ties to the lower index. When a
//! row has fewer than k candidates the remaining results are padding ([`PAD_SCORE`],
//! [`PAD_INDEX`]), which ranks below every real candidate; so per-chunk results of a scan,
//! packed side by side with [`TopKOutput::row_stride`] / [`TopKOutput::offset`], merge through
//! [`TopKInput::Pairs`] into exactly the top-k of the whole row.

use crate::error::{Error, Result};
use crate::gpu::{shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::check_len;
pub use crate::shape::topk::{MAX_K, PAD_INDEX, PAD_SCORE};

/// Candidates one workgroup sorts (the shader's `BLOCK`). At least `2 * MAX_K`, so every pass
/// shrinks its input at least 2x.
const BLOCK: usize = 2048;

/// Where candidates come from: a dense `[rows, len]` score matrix whose column j has index
/// `index_base + j`, or explicit (score, index) pairs, `[rows, len]` each (indices as u32;
/// [`PAD_INDEX`] marks padding, as in the op's own output).
#[derive(Debug, Clone, Copy)]
pub enum TopKInput<'a> {
    /// A dense score matrix.
    Scores {
        /// `[rows, len]` f32 scores.
        scores: &'a wgpu::Buffer,
        /// The index of column 0 (a chunk's first row in the whole reference matrix).
        index_base: u32,
    },
    /// Scored candidates, such as per-chunk results to merge.
    Pairs {
        /// `[rows, len]` f32 scores.
        scores: &'a wgpu::Buffer,
        /// `[rows, len]` u32 indices, one per score.
        indices: &'a wgpu::Buffer,
    },
}

/// Where the k results of each row go: row r's j-th best at `r * row_stride + offset + j` in
/// both buffers, so per-chunk results can be packed side by side for a later merge.
#[derive(Debug, Clone, Copy)]
pub struct TopKOutput<'a> {
    /// f32 scores, best first per row.
    pub scores: &'a wgpu::Buffer,
    /// u32 indices of those scores.
    pub indices: &'a wgpu::Buffer,
    /// Elements from one row's results to the next's (at least `offset + k`).
    pub row_stride: usize,
    /// Where each row's results start within its stride.
    pub offset: usize,
}

impl<'a> TopKOutput<'a> {
    /// Dense `[rows, k]` results.
    pub fn dense(scores: &'a wgpu::Buffer, indices: &'a wgpu::Buffer, k: usize) -> Self {
        Self { scores, indices, row_stride: k, offset: 0 }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    k: u32,
    span: u32,
    blocks: u32,
    out_stride: u32,
    out_offset: u32,
    index_base: u32,
    pairs: u32,
    run_log2: u32,
    floored: u32,
    _pad: u32,
}

const BINDINGS: [Binding; 6] =
    [Binding::Uniform, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadWrite, Binding::ReadWrite, Binding::ReadOnly];

/// One pass: each row's `len` candidates in `blocks` blocks of `span`, each reduced to k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    len: usize,
    blocks: usize,
    span: usize,
}

/// The passes for `len` candidates per row: full blocks while more than one is needed, then
/// one block of the next power of two (the bitonic sort's size).
fn plan(len: usize, k: usize) -> Vec<Pass> {
    let mut passes = Vec::new();
    let mut len = len;
    while len > BLOCK {
        let blocks = len.div_ceil(BLOCK);
        passes.push(Pass { len, blocks, span: BLOCK });
        len = blocks * k;
    }
    passes.push(Pass { len, blocks: 1, span: len.next_power_of_two() });
    passes
}

/// The prefilter's chunking of a row: `chunks` chunks of `chunk` candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunking {
    chunk: usize,
    chunks: usize,
}

/// Chunk maxima per k the floor is taken from: of random scores, about -ln(1 - k / chunks)
/// x chunks candidates reach the floor, so 4k to 8k chunks leave 7-15% more than k. More
/// chunks would cost the floor's sort more than they save.
const CHUNKS_PER_K: usize = 4;

/// The prefilter for rows of `len` dense scores, when it pays: rows that need more than one
/// pass, and enough chunks (at least 2k, at most one block) for a floor close to the k-th
/// best: power-of-two chunks, at least 4k of them where the block allows. Exactness needs at
/// least k chunks (entry k - 1 of the maxima's top k must be a real maximum, not padding).
fn chunking(len: usize, k: usize) -> Option<Chunking> {
    if len <= BLOCK {
        return None;
    }
    let mut chunk = 1usize << (len / (CHUNKS_PER_K * k)).max(1).ilog2();
    if len.div_ceil(chunk) > BLOCK {
        chunk = len.div_ceil(BLOCK).next_power_of_two();
    }
    let chunks = len.div_ceil(chunk);
    (chunks >= 2 * k).then_some(Chunking { chunk, chunks })
}

/// Workgroups for `blocks` x `rows`: that 2-D grid when it fits the per-dimension limit,
/// else the same count folded over three dimensions (the shader flattens it back).
fn grid(blocks: usize, rows: usize, max: u32) -> [u32; 3] {
    let max = max as usize;
    if blocks <= max && rows <= max {
        return [blocks as u32, rows as u32, 1];
    }
    let total = blocks * rows;
    let x = total.min(max);
    let rest = total.div_ceil(x);
    let y = rest.min(max);
    [x as u32, y as u32, rest.div_ceil(y) as u32]
}

/// A prepared multi-pass selection, scratch buffers included, encodable any number of times.
#[derive(Debug)]
pub struct TopK {
    dispatches: Vec<Dispatch>,
    /// Whether the first two dispatches are the prefilter's chunk maxima and floor.
    floored: bool,
    rows: usize,
    k: usize,
}

impl TopK {
    /// Validates the shapes and buffers, allocates the scratch lists between passes and
    /// builds every pass's dispatch, with `workgroup` invocations per workgroup: a power of
    /// two up to [`TopK::max_workgroup`], usually the adapter's
    /// [`Tuning::topk_workgroup`](crate::ops::Tuning::topk_workgroup).
    pub fn new(
        ctx: &Context, input: TopKInput, rows: usize, len: usize, k: usize, output: &TopKOutput, workgroup: u32,
    ) -> Result<Self> {
        let limit = Self::max_workgroup(ctx);
        if !workgroup.is_power_of_two() || workgroup > limit {
            return Err(Error::InvalidArgument(format!(
                "topk: workgroups of {workgroup} invocations; a power of two up to {limit}"
            )));
        }
        if k == 0 || k > MAX_K {
            return Err(Error::InvalidArgument(format!("topk: k = {k} must be in 1..={MAX_K}")));
        }
        if rows == 0 || len == 0 {
            return Err(Error::InvalidArgument(format!("topk: empty input ({rows} rows of {len} candidates)")));
        }
        if output.offset + k > output.row_stride {
            return Err(Error::InvalidArgument(format!(
                "topk: {k} results at offset {} overflow a row stride of {}",
                output.offset, output.row_stride
            )));
        }
        let input_len = rows.checked_mul(len).filter(|&n| n <= u32::MAX as usize);
        let output_len = (rows - 1).checked_mul(output.row_stride).map(|n| n + output.offset + k);
        let (Some(input_len), Some(output_len)) = (input_len, output_len.filter(|&n| n <= u32::MAX as usize)) else {
            return Err(Error::InvalidArgument(format!("topk: {rows} rows of {len} exceed 32-bit indexing")));
        };
        let (scores, indices, index_base, pairs) = match input {
            TopKInput::Scores { scores, index_base } => {
                if index_base as usize + len > PAD_INDEX as usize {
                    return Err(Error::InvalidArgument(format!(
                        "topk: indices {index_base}..{} reach the reserved padding index {PAD_INDEX}",
                        index_base as usize + len
                    )));
                }
                check_len("topk scores", scores, input_len)?;
                // The shader never reads the indices binding for dense scores; any buffer will do.
                (scores, scores, index_base, 0)
            }
            TopKInput::Pairs { scores, indices } => {
                check_len("topk scores", scores, input_len)?;
                check_len("topk indices", indices, input_len)?;
                (scores, indices, 0, 1)
            }
        };
        check_len("topk output scores", output.scores, output_len)?;
        check_len("topk output indices", output.indices, output_len)?;
        if output.scores == output.indices
            || [scores, indices].iter().any(|&b| b == output.scores || b == output.indices)
        {
            return Err(Error::InvalidArgument(
                "topk: output buffers must be distinct from each other and the input".into(),
            ));
        }

        // A block's scores and indices live in workgroup memory: 16 KiB, WebGPU's default.
        let shared = ctx.limits().max_compute_workgroup_storage_size as usize;
        if shared < 8 * BLOCK {
            return Err(Error::InvalidArgument(format!(
                "topk: needs {} bytes of workgroup memory, this device has {shared}",
                8 * BLOCK
            )));
        }
        let constants = [("BLOCK", BLOCK as f64), ("WG", workgroup as f64)];
        let kernel = ctx.kernel(&PipelineKey::new(ShaderFile::TopK, "main", &constants), &BINDINGS)?;
        let max_groups = ctx.limits().max_compute_workgroups_per_dimension;
        let passes = plan(len, k);
        let params = |len: usize,
                      span: usize,
                      blocks: usize,
                      out_stride: usize,
                      out_offset: usize,
                      pairs: u32,
                      floored: bool| Params {
            rows: rows as u32,
            len: len as u32,
            k: k as u32,
            span: span as u32,
            blocks: blocks as u32,
            out_stride: out_stride as u32,
            out_offset: out_offset as u32,
            index_base,
            pairs,
            // Sorted runs: the shortest power of two that holds k, at most the block.
            run_log2: k.next_power_of_two().min(span).trailing_zeros(),
            floored: floored as u32,
            _pad: 0,
        };
        let mut dispatches = Vec::with_capacity(passes.len() + 2);

        // The prefilter's floor: chunk maxima, then their top k (entry k - 1 of each row).
        let chunking = if pairs == 0 { chunking(len, k) } else { None };
        let floor = match chunking {
            Some(Chunking { chunk, chunks }) => {
                let maxima = ctx.storage("topk chunk maxima", rows * chunks)?;
                let floor = (ctx.storage("topk floor scores", rows * k)?, ctx.storage("topk floor indices", rows * k)?);
                let chunk_max = ctx.kernel(&PipelineKey::new(ShaderFile::TopK, "chunk_max", &constants), &BINDINGS)?;
                let uniform = ctx.uniform("topk chunk max params", &params(len, chunk, chunks, chunks, 0, 0, false));
                // chunk_max writes only out_scores; out_indices takes any other writable buffer.
                let buffers = [&uniform, scores, scores, &maxima, &floor.1, scores];
                dispatches.push(Dispatch::new(
                    ctx,
                    "topk chunk max",
                    chunk_max,
                    &buffers,
                    grid(chunks, rows, max_groups),
                )?);
                let mut floor_params = params(chunks, chunks.next_power_of_two(), 1, k, 0, 0, false);
                floor_params.index_base = 0;
                let uniform = ctx.uniform("topk floor params", &floor_params);
                let buffers = [&uniform, &maxima, &maxima, &floor.0, &floor.1, &maxima];
                dispatches.push(Dispatch::new(ctx, "topk floor", kernel.clone(), &buffers, grid(1, rows, max_groups))?);
                Some(floor)
            }
            None => None,
        };

        // Intermediate lists ping-pong between two scratch pairs, each sized for the
        // largest list it holds.
        let mut scratch_len = [0usize; 2];
        for (i, pass) in passes[..passes.len() - 1].iter().enumerate() {
            scratch_len[i % 2] = scratch_len[i % 2].max(rows * pass.blocks * k);
        }
        let mut scratch = Vec::new();
        for n in scratch_len.into_iter().filter(|&n| n > 0) {
            scratch.push((ctx.storage("topk scratch scores", n)?, ctx.storage("topk scratch indices", n)?));
        }

        let mut source = (scores, indices);
        for (i, pass) in passes.iter().enumerate() {
            let last = i + 1 == passes.len();
            let (target, out_stride, out_offset) = if last {
                ((output.scores, output.indices), output.row_stride, output.offset)
            } else {
                let (s, ix) = &scratch[i % 2];
                ((s, ix), pass.blocks * k, 0)
            };
            let pairs = if i == 0 { pairs } else { 1 };
            let uniform = ctx.uniform(
                "topk params",
                &params(pass.len, pass.span, pass.blocks, out_stride, out_offset, pairs, floor.is_some()),
            );
            // Without a floor the binding is unread; the pass's own input fills it.
            let floor_scores = floor.as_ref().map_or(source.0, |f| &f.0);
            let buffers = [&uniform, source.0, source.1, target.0, target.1, floor_scores];
            dispatches.push(Dispatch::new(ctx, "topk", kernel.clone(), &buffers, grid(pass.blocks, rows, max_groups))?);
            source = target;
        }
        Ok(Self { dispatches, floored: floor.is_some(), rows, k })
    }

    /// The largest workgroup size [`TopK::new`] takes on this device: at most
    /// half a block, as the prefilter scans per-invocation counts in 2 x workgroup slots.
    pub fn max_workgroup(ctx: &Context) -> u32 {
        let limits = ctx.limits();
        limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x).min(BLOCK as u32 / 2)
    }

    /// The passes, in order; encode them all into one compute pass.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// The dispatches by step, for profiling: `chunk_max` and `floor` (the prefilter, where
    /// it applies), then `passes`.
    pub fn steps(&self) -> Vec<(&'static str, &[Dispatch])> {
        let (floor, passes) = self.dispatches.split_at(if self.floored { 2 } else { 0 });
        let mut steps = Vec::with_capacity(3);
        if self.floored {
            steps.push(("chunk_max", &floor[..1]));
            steps.push(("floor", &floor[1..]));
        }
        steps.push(("passes", passes));
        steps
    }

    /// Rows it selects from.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Results per row.
    pub fn k(&self) -> usize {
        self.k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pass_shrinks_to_one_block() {
        for k in [1, 10, 100, 1000, MAX_K] {
            for len in [1, 7, BLOCK, BLOCK + 1, 100_003, 1_000_000] {
                let passes = plan(len, k);
                assert_eq!(passes[0].len, len);
                for pair in passes.windows(2) {
                    assert_eq!(pair[1].len, pair[0].blocks * k);
                    assert!(pair[1].len * 2 <= pair[0].len + BLOCK, "{pair:?}");
                }
                let last = passes.last().unwrap();
                assert!(last.blocks == 1 && last.len <= last.span && last.span <= BLOCK);
            }
        }
        assert_eq!(plan(1_000_000, 10).len(), 3);
        assert_eq!(plan(1_000_000, MAX_K).len(), 10);
    }

    #[test]
    fn chunkings_fit_one_block_and_give_a_close_floor() {
        for k in [1, 10, 100, 250, 1000, MAX_K] {
            for len in [BLOCK + 1, 5000, 20_011, 100_003, 1_000_000, 10_000_000] {
                let Some(Chunking { chunk, chunks }) = chunking(len, k) else {
                    continue;
                };
                assert!(chunk.is_power_of_two() && chunks == len.div_ceil(chunk), "{len} {k}");
                assert!(chunks <= BLOCK && chunks >= 2 * k, "{len} {k}: {chunks} chunks");
            }
        }
        assert_eq!(chunking(1_000_000, 100), Some(Chunking { chunk: 2048, chunks: 489 }));
        assert_eq!(chunking(100_000, 100), Some(Chunking { chunk: 128, chunks: 782 }));
        assert_eq!(chunking(100_000, 1000), None);
        assert_eq!(chunking(BLOCK, 1), None);
    }

    #[test]
    fn grids_fold_past_the_limit() {
        assert_eq!(grid(3, 5, 65535), [3, 5, 1]);
        let [x, y, z] = grid(2, 70_000, 65535);
        assert!(x <= 65535 && y <= 65535 && (x * y * z) as usize >= 140_000);
        let [x, y, z] = grid(1, 10, 4);
        assert_eq!((x, y, z), (4, 3, 1));
        let [x, y, z] = grid(1, 100, 4);
        assert!(x <= 4 && y <= 4 && z <= 7 && x * y * z >= 100);
    }
}
