//! Image bytes in, k nearest neighbours out, as one GPU pipeline.
//!
//! Per batch of queries one encoder records: preprocessing (resize, crop, normalise) →
//! the backbone (ResNet50 or a trained convnet, see [`crate::model::Backbone`]) →
//! centring + L2 normalisation → for each chunk of the reference matrix, a matmul against
//! the normalised rows (cosine k-NN as one dense layer; a GEMV that reads the rows once for
//! up to four queries) and a per-chunk top-k → a GPU merge of the chunks' lists. One
//! submit; only k indices and scores per query come back. Everything but the
//! preprocessing (which depends on each image's size) is recorded once per (queries, k)
//! and replayed.

use std::collections::HashMap;
use std::path::Path;

use image::RgbImage;
use serde_json::value::RawValue;

use crate::cpu;
use crate::cpu::preprocess::Preprocess;
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Readback};
use crate::index::{Embeddings, Entry, Index};
use crate::model::{BackboneRef, GpuBackbone};
use crate::ops::gemv;
use crate::ops::l2_normalize::l2_normalize;
use crate::ops::matmul::{MatmulShape, Precision};
use crate::ops::matmul_coop::matmul_coop;
use crate::ops::preprocess::{submit_runs, PreprocessBatch};
use crate::ops::topk::{TopK, TopKInput, TopKOutput, MAX_K};

/// One neighbour: its row in the index and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub index: usize,
    pub score: f32,
}

/// One query's results as `lookalike search --json` prints them, as JSON text: `{"query":
/// NAME, "neighbors": [{"rank", "index", "path", "label", "score"}, ...]}`, ranks from 1,
/// paths and labels from the index's `entries`. Paths (and the query's name) are written
/// losslessly as the index stores them ([`crate::index::paths`]): Python's `json.loads`
/// and `os.fsencode` give back the exact bytes of a name that is not UTF-8.
pub fn neighbours_json(query: &Path, neighbours: &[Neighbor], entries: &[Entry]) -> Result<String> {
    // Fields in the order serde_json's maps print them, as earlier versions did.
    #[derive(serde::Serialize)]
    struct JsonNeighbor<'a> {
        index: usize,
        label: &'a Option<String>,
        path: Box<RawValue>,
        rank: usize,
        /// Widened as earlier versions printed it.
        score: f64,
    }
    #[derive(serde::Serialize)]
    struct JsonQuery<'a> {
        neighbors: Vec<JsonNeighbor<'a>>,
        query: Box<RawValue>,
    }
    let json_error = |e: serde_json::Error| Error::InvalidArgument(format!("results as JSON: {e}"));
    // `paths::encode` gives one valid JSON string literal, which this checks again.
    let literal = |path: &Path| RawValue::from_string(crate::index::paths::encode(path)).map_err(json_error);
    let neighbors = neighbours
        .iter()
        .enumerate()
        .map(|(rank, n)| {
            let entry = entries.get(n.index).ok_or_else(|| {
                Error::InvalidArgument(format!("neighbour row {} beyond the {} entries", n.index, entries.len()))
            })?;
            Ok(JsonNeighbor {
                index: n.index,
                label: &entry.label,
                path: literal(&entry.path)?,
                rank: rank + 1,
                score: n.score as f64,
            })
        })
        .collect::<Result<_>>()?;
    serde_json::to_string(&JsonQuery { neighbors, query: literal(query)? }).map_err(json_error)
}

/// Tuning knobs of a [`Searcher`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchOptions {
    /// Reference rows per scanned chunk; default: as many as one storage binding holds.
    pub chunk_rows: Option<usize>,
    /// Use the context's matrix units: [`Searcher::new`]'s ResNet50 runs its convolutions
    /// on them ([`crate::model::GpuResNet50::on_matrix_units`]; a convnet refuses), and
    /// scans of more than [`gemv::MAX_QUERIES`] queries are scored on them
    /// ([`crate::ops::matmul_coop`]): the normalised queries and f32 index rows are rounded
    /// to f16 (f16 rows already are), sums stay f32, so scores move by ~1e-4 and near-ties
    /// may reorder. The searcher refuses to open where the context has no matrix units.
    pub matrix_units: bool,
}

struct RefChunk {
    buffer: wgpu::Buffer,
    start: usize,
    rows: usize,
}

/// Where a plan's query features come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum QuerySource {
    /// The backbone's features buffer for this batch size.
    Images,
    /// Features uploaded by the caller.
    Features,
}

/// Everything after the backbone for one (queries, k), recorded once.
struct ScanPlan {
    uploaded_features: wgpu::Buffer,
    /// The backbone's features buffer it reads, for [`QuerySource::Images`].
    source: Option<wgpu::Buffer>,
    result_scores: wgpu::Buffer,
    result_indices: wgpu::Buffer,
    readback_scores: Readback,
    readback_indices: Readback,
    dispatches: Vec<Dispatch>,
    // Keep the scratch of every selection alive while the dispatches exist.
    _selections: Vec<TopK>,
    _buffers: Vec<wgpu::Buffer>,
}

/// A GPU-resident index with its backbone, answering k-NN queries.
pub struct Searcher {
    ctx: Context,
    net: Option<GpuBackbone>,
    preprocess: Preprocess,
    dim: usize,
    count: usize,
    precision: Precision,
    chunks: Vec<RefChunk>,
    mean: Option<wgpu::Buffer>,
    matrix_units: bool,
    plans: HashMap<(usize, usize, QuerySource), ScanPlan>,
}

impl Searcher {
    /// Uploads the network (`&Backbone`, `&ResNet50` or `&ConvNet`) and the index's
    /// reference matrix (in chunks that each fit one storage binding, or
    /// `options.chunk_rows`). Refuses a network whose features are not the index's: rows of
    /// another width, or an index whose `model` names the other backbone.
    pub fn new<'a>(
        ctx: Context, net: impl Into<BackboneRef<'a>>, index: &Index, options: SearchOptions,
    ) -> Result<Self> {
        let net = net.into();
        check_backbone(net, index)?;
        let mut searcher = Self::for_features(ctx, index, options)?;
        searcher.net = Some(GpuBackbone::new(&searcher.ctx, net, options.matrix_units)?);
        Ok(searcher)
    }

    /// A searcher over precomputed features only ([`Searcher::search_features`]); it has no
    /// network, so [`Searcher::search_images`] is an error.
    pub fn for_features(ctx: Context, index: &Index, options: SearchOptions) -> Result<Self> {
        if index.is_empty() {
            return Err(Error::InvalidArgument("the index is empty".into()));
        }
        if options.matrix_units {
            crate::ops::coop::units(&ctx, "search on matrix units")?;
        }
        let dim = index.dim;
        let precision = index.embeddings.precision();
        let row_bytes = precision.bytes(dim).max(1);
        let fit = (ctx.max_binding_bytes() as usize / row_bytes).max(1);
        let chunk_rows = options.chunk_rows.unwrap_or(fit).clamp(1, fit);
        let mut chunks = Vec::new();
        for start in (0..index.len()).step_by(chunk_rows) {
            let rows = chunk_rows.min(index.len() - start);
            let buffer = match &index.embeddings {
                Embeddings::F32(v) => ctx.upload("reference rows", &v[start * dim..(start + rows) * dim])?,
                Embeddings::F16(v) => ctx.upload_pod("reference rows (f16)", &v[start * dim..(start + rows) * dim])?,
            };
            chunks.push(RefChunk { buffer, start, rows });
        }
        let mean = index.mean.as_ref().map(|m| ctx.upload("database mean", m)).transpose()?;
        Ok(Self {
            ctx,
            net: None,
            preprocess: index.provenance.preprocess,
            dim,
            count: index.len(),
            precision,
            chunks,
            mean,
            matrix_units: options.matrix_units,
            plans: HashMap::new(),
        })
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Number of reference chunks scanned per query batch.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn check_k(&self, k: usize) -> Result<()> {
        if k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        if k > self.count {
            return Err(Error::InvalidArgument(format!("k = {k} exceeds the {} images in the index", self.count)));
        }
        if k > MAX_K {
            return Err(Error::InvalidArgument(format!("k = {k} exceeds the largest supported k, {MAX_K}")));
        }
        Ok(())
    }

    /// Most queries one submit takes: the score matrix of the largest chunk must fit one
    /// binding, and so must the backbone's activations.
    fn max_queries(&self) -> usize {
        let largest_chunk = self.chunks.iter().map(|c| c.rows).max().unwrap_or(1);
        let by_scores = self.ctx.max_binding_bytes() as usize / (4 * largest_chunk).max(1);
        let crop = self.preprocess.crop as usize;
        let by_backbone = self.net.as_ref().map_or(usize::MAX, |net| net.max_batch(&self.ctx, crop, crop));
        by_scores.min(by_backbone).clamp(1, 256)
    }

    /// The k nearest index rows of each decoded image, best first. Images of any size:
    /// submits are split by uploaded bytes, and an image whose rows exceed one storage
    /// binding is preprocessed on the CPU ([`PreprocessBatch::with_cpu_fallback`]). Fails on
    /// an empty image ([`crate::cpu::preprocess::check_image`] finds those first), and where
    /// the crop does not suit the network ([`GpuBackbone::check_fits`]).
    pub fn search_images(&mut self, images: &[RgbImage], k: usize) -> Result<Vec<Vec<Neighbor>>> {
        self.check_k(k)?;
        let crop = self.preprocess.crop as usize;
        let net = self.net.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this searcher has no network: build it with Searcher::new".into())
        })?;
        if self.dim != net.feature_dim() {
            return Err(Error::shape(
                "index",
                format!("{}-d {} features", net.feature_dim(), net.name()),
                format!("{}-d rows", self.dim),
            ));
        }
        net.check_fits(&self.ctx, crop, crop)?;
        let mut results = Vec::with_capacity(images.len());
        for run in submit_runs(&self.ctx, images, &self.preprocess, self.max_queries()) {
            let batch = &images[run];
            let q = batch.len();
            let net = self.net.as_mut().ok_or_else(|| Error::InvalidArgument("no network".into()))?;
            let (input, features) = {
                let (input, features, _) = net.prepared(&self.ctx, q, crop, crop)?;
                (input.clone(), features.clone())
            };
            self.ensure_plan(q, k, QuerySource::Images, Some(&features))?;
            let preprocess = PreprocessBatch::with_cpu_fallback(&self.ctx, batch, &self.preprocess, &input)?;
            let net = self.net.as_mut().ok_or_else(|| Error::InvalidArgument("no network".into()))?;
            let cause = net.overflow_cause();
            let (_, _, backbone) = net.prepared(&self.ctx, q, crop, crop)?;
            let plan = &self.plans[&(q, k, QuerySource::Images)];
            let dispatches: Vec<&Dispatch> =
                preprocess.dispatches().iter().chain(backbone).chain(&plan.dispatches).collect();
            let found = read_results(&self.ctx, plan, &dispatches, q, k)?;
            check_scores(&found, results.len(), "the image", cause)?;
            results.extend(found);
        }
        Ok(results)
    }

    /// The k nearest index rows of each raw (unnormalised) `[queries, dim]` feature row.
    pub fn search_features(&mut self, features: &[f32], k: usize) -> Result<Vec<Vec<Neighbor>>> {
        self.check_k(k)?;
        if features.is_empty() || !features.len().is_multiple_of(self.dim) {
            return Err(Error::shape(
                "query features",
                format!("rows of {} values", self.dim),
                format!("{} values", features.len()),
            ));
        }
        crate::cpu::check_finite("query features", features)?;
        let mut results = Vec::new();
        for batch in features.chunks(self.max_queries() * self.dim) {
            let q = batch.len() / self.dim;
            self.ensure_plan(q, k, QuerySource::Features, None)?;
            let plan = &self.plans[&(q, k, QuerySource::Features)];
            self.ctx.write(&plan.uploaded_features, batch);
            let dispatches: Vec<&Dispatch> = plan.dispatches.iter().collect();
            let found = read_results(&self.ctx, plan, &dispatches, q, k)?;
            check_scores(&found, results.len(), "the query row", "the index holds NaN or infinite rows")?;
            results.extend(found);
        }
        Ok(results)
    }

    fn ensure_plan(
        &mut self, q: usize, k: usize, source: QuerySource, backbone_features: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        // The network keeps a few plans only: a scan recorded on a features buffer it has
        // since dropped is stale, and is recorded again.
        if self.plans.get(&(q, k, source)).is_some_and(|plan| plan.source.as_ref() == backbone_features) {
            return Ok(());
        }
        let ctx = &self.ctx;
        let dim = self.dim;
        let uploaded_features = ctx.storage("query features", q * dim)?;
        let features = backbone_features.unwrap_or(&uploaded_features);
        let queries = ctx.storage("normalised queries", q * dim)?;
        let largest_chunk = self.chunks.iter().map(|c| c.rows).max().unwrap_or(1);
        let scores = ctx.storage("scores", q * largest_chunk)?;
        let result_scores = ctx.storage("top-k scores", q * k)?;
        let result_indices = ctx.storage("top-k indices", q * k)?;
        let mut dispatches = vec![l2_normalize(ctx, q, dim, features, self.mean.as_ref(), &queries)?];
        let mut selections = Vec::new();
        let single = self.chunks.len() == 1;
        let stride = self.chunks.len() * k;
        let candidate_scores = ctx.storage("candidate scores", q * stride)?;
        let candidate_indices = ctx.storage("candidate indices", q * stride)?;
        for (c, chunk) in self.chunks.iter().enumerate() {
            let shape = MatmulShape { m: q, n: chunk.rows, k: dim, b_transposed: true };
            let score = match self.matrix_units && !gemv::supports(&shape, self.precision) {
                true => matmul_coop(ctx, &shape, &queries, &chunk.buffer, self.precision, &scores)?,
                false => gemv::scores(ctx, &shape, &queries, &chunk.buffer, self.precision, &scores)?,
            };
            dispatches.push(score);
            let output = if single {
                TopKOutput::dense(&result_scores, &result_indices, k)
            } else {
                TopKOutput { scores: &candidate_scores, indices: &candidate_indices, row_stride: stride, offset: c * k }
            };
            let input = TopKInput::Scores { scores: &scores, index_base: chunk.start as u32 };
            let selection = TopK::new(ctx, input, q, chunk.rows, k, &output)?;
            dispatches.extend_from_slice(selection.dispatches());
            selections.push(selection);
        }
        if !single {
            let input = TopKInput::Pairs { scores: &candidate_scores, indices: &candidate_indices };
            let merge = TopK::new(ctx, input, q, stride, k, &TopKOutput::dense(&result_scores, &result_indices, k))?;
            dispatches.extend_from_slice(merge.dispatches());
            selections.push(merge);
        }
        let plan = ScanPlan {
            uploaded_features,
            source: backbone_features.cloned(),
            result_scores,
            result_indices,
            readback_scores: ctx.readback(q * k),
            readback_indices: ctx.readback(q * k),
            dispatches,
            _selections: selections,
            _buffers: vec![queries, scores, candidate_scores, candidate_indices],
        };
        self.plans.insert((q, k, source), plan);
        Ok(())
    }
}

/// Refuses to search `index` with `net` where its rows come from another network: another
/// width, or a `model` naming the other backbone (other names, from older tools or
/// synthetic indexes, are left to the width check).
fn check_backbone(net: BackboneRef, index: &Index) -> Result<()> {
    let recorded = index.provenance.model.as_str();
    let known = [crate::model::backbone::RESNET50, crate::train::convnet::ARCHITECTURE];
    if known.contains(&recorded) && recorded != net.name() {
        return Err(Error::InvalidArgument(format!(
            "the index was built with a {recorded}, and its rows cannot be searched with {} features: use the \
             {recorded} weights it records",
            net.name()
        )));
    }
    if index.dim != net.feature_dim() {
        return Err(Error::shape(
            "index",
            format!("{}-d rows, as the {} gives", net.feature_dim(), net.name()),
            format!("{}-d rows", index.dim),
        ));
    }
    Ok(())
}

/// Fails if a query's best score is NaN: top-k ranks NaN lowest, so every score of that
/// query is NaN, which a finite query and index cannot give. `first` numbers the first query.
fn check_scores(found: &[Vec<Neighbor>], first: usize, query: &str, cause: &str) -> Result<()> {
    match found.iter().position(|row| row.first().is_some_and(|n| n.score.is_nan())) {
        Some(row) => Err(Error::NonFiniteOutput {
            what: format!("every score of {query} {}", first + row),
            index: 0,
            value: f32::NAN,
            cause: cause.to_string(),
        }),
        None => Ok(()),
    }
}

fn read_results(
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

/// The CPU reference of [`Searcher::search_features`]: exact brute force over the index.
pub fn search_features_cpu(index: &Index, features: &[f32], k: usize) -> Result<Vec<Vec<Neighbor>>> {
    let dim = index.dim;
    if k == 0 || k > index.len() {
        return Err(Error::InvalidArgument(format!("k = {k} outside 1..={}", index.len())));
    }
    if features.is_empty() || !features.len().is_multiple_of(dim) {
        return Err(Error::shape(
            "query features",
            format!("rows of {dim} values"),
            format!("{} values", features.len()),
        ));
    }
    let q = features.len() / dim;
    let queries = cpu::l2_normalize(features, q, dim, index.mean.as_deref())?;
    let rows = match &index.embeddings {
        Embeddings::F32(v) => cpu::knn::Rows::F32(v),
        Embeddings::F16(v) => cpu::knn::Rows::F16(v),
    };
    Ok(cpu::knn::knn(rows, dim, &queries, k)?
        .into_iter()
        .map(|best| best.into_iter().map(|(score, index)| Neighbor { index: index as usize, score }).collect())
        .collect())
}
