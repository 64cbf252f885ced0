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
//!
//! A [`Searcher`] answers through `&self`: share one between threads (it is `Send + Sync`)
//! and each search takes a set of scratch buffers of its own from a small pool inside.
//!
//! Search by file path, by decoded image and by features (here a small untrained convnet
//! stands in for ResNet50, whose weights [`crate::model::Backbone::load`] reads):
//!
//! ```
//! use lookalike::image::{Rgb, RgbImage};
//! use lookalike::index::{Centring, Entry, Index, Provenance};
//! use lookalike::ops::matmul::Precision;
//! use lookalike::train::{ConvNet, ConvNetSpec};
//! use lookalike::{Backbone, Context, Embedder, SearchOptions, Searcher};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = Context::new()?;
//! let spec = ConvNetSpec { widths: [8, 8, 8], dim: 8, ..ConvNetSpec::recipe(16, 16, 3) };
//! let net = Backbone::ConvNet(ConvNet::glorot(spec, 7)?);
//! let preprocess = net.default_preprocess()?;
//!
//! // Six small pictures, embedded and indexed.
//! let picture = |i: u32| RgbImage::from_fn(16, 16, |x, y| Rgb([(x * 16) as u8, (y * i * 9) as u8, (i * 40) as u8]));
//! let images: Vec<RgbImage> = (0..6).map(picture).collect();
//! let features = Embedder::gpu(ctx.clone(), &net)?.embed_decoded(&images, &preprocess)?;
//! let entries = (0..6).map(|i| Entry::new(format!("picture-{i}.png"), None)).collect();
//! let provenance = Provenance {
//!     model: net.name().into(),
//!     weights_path: "in memory".into(),
//!     weights_sha256: "in memory".into(),
//!     preprocess,
//! };
//! let index = Index::from_features(&features, net.feature_dim(), entries, Precision::F32, Centring::Off, provenance)?;
//! let searcher = Searcher::new(ctx, &net, &index, SearchOptions::default())?;
//!
//! // By decoded image: each picture finds itself first.
//! let found = searcher.search_images(&images[2..4], 3)?;
//! assert_eq!((found[0][0].index, found[1][0].index), (2, 3));
//!
//! // By path: decoded and preprocessed as the index's images were.
//! let path = std::env::temp_dir().join(format!("lookalike-search-doc-{}.png", std::process::id()));
//! images[4].save(&path)?;
//! let by_path = searcher.search_paths(&[&path], 1)?;
//! std::fs::remove_file(&path)?;
//! assert_eq!(by_path[0][0].index, 4);
//!
//! // By features: raw rows of the index's width, normalised (and centred) on the GPU.
//! let by_features = searcher.search_features(&features[5 * 8..6 * 8], 1)?;
//! assert_eq!(by_features[0][0].index, 5);
//! assert!(by_features[0][0].score > 0.999);
//! # Ok(())
//! # }
//! ```

mod json;
mod plan;

use std::path::Path;

use image::RgbImage;

use crate::cpu;
use crate::cpu::preprocess::Preprocess;
use crate::embed::for_each_decoded_run;
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch};
use crate::index::{Embeddings, Index, LoadedWeights};
use crate::model::{BackboneRef, GpuBackbone};
use crate::ops::matmul::Precision;
use crate::ops::preprocess::{submit_runs, PreprocessBatch};
use crate::ops::topk::MAX_K;
use crate::ops::Tuning;
#[doc(hidden)]
pub use json::{neighbours_json, rows_json, NeighbourRow};
use plan::{read_results, QuerySource, RefChunk, Scratch, ScratchPool};

/// One neighbour: its row in the index and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// Its row in the index (and in the index's `entries`).
    pub index: usize,
    /// Cosine similarity of the (centred) query and row, in [-1, 1]; higher is nearer.
    pub score: f32,
}

/// Tuning knobs of a [`Searcher`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchOptions {
    /// Reference rows per scanned chunk; default: as many as one storage binding holds.
    pub chunk_rows: Option<usize>,
    /// Use the context's matrix units: [`Searcher::new`]'s ResNet50 runs its convolutions
    /// on them ([`crate::model::GpuResNet50::on_matrix_units`]; a convnet refuses), and
    /// scans of more than [`crate::ops::gemv::MAX_QUERIES`] queries are scored on them
    /// ([`crate::ops::matmul_coop`]): the normalised queries and f32 index rows are rounded
    /// to f16 (f16 rows already are), sums stay f32, so scores move by ~1e-4 and near-ties
    /// may reorder. The searcher refuses to open where the context has no matrix units.
    pub matrix_units: bool,
    /// Launch shapes for the backbone and the scan (an autotune result, `tune::load_for`);
    /// `None`: the built-in ones for the context's adapter ([`Tuning::for_adapter`]).
    pub tuning: Option<Tuning>,
}

/// Decoded query files held at once by [`Searcher::search_paths`], at most (fewer where
/// large: [`crate::embed::decode_run_len`]).
const PATH_RUN: usize = 32;

/// A GPU-resident index with its backbone, answering k-NN queries.
///
/// Searches take `&self` and may run from many threads at once: each takes a scratch set
/// (the backbone's activations and the recorded scans) from a pool inside, or makes one
/// when all are in use, and gives it back when done; a few idle sets are kept. The GPU
/// work of concurrent searches is submitted to the one device queue.
pub struct Searcher {
    ctx: Context,
    /// The uploaded network; each scratch set runs a copy that shares its weights.
    net: Option<GpuBackbone>,
    preprocess: Preprocess,
    dim: usize,
    count: usize,
    precision: Precision,
    chunks: Vec<RefChunk>,
    mean: Option<wgpu::Buffer>,
    matrix_units: bool,
    tuning: Tuning,
    scratch: ScratchPool,
}

// Searches from many threads share one searcher.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Searcher>();
};

impl Searcher {
    /// Uploads the network (`&Backbone`, `&ResNet50` or `&ConvNet`) and the index's
    /// reference matrix (in chunks that each fit one storage binding, or
    /// `options.chunk_rows`). Refuses a network whose features are not the index's: rows of
    /// another width, or an index whose `model` names the other backbone. It cannot tell
    /// two nets of one architecture apart: [`Searcher::with_weights`] can, and
    /// [`LoadedWeights::for_index`] loads the very weights an index records.
    ///
    /// Every search takes `k` from 1 to the index's row count, at most
    /// [`MAX_K`] (1024); other values are an error.
    pub fn new<'a>(
        ctx: Context, net: impl Into<BackboneRef<'a>>, index: &Index, options: SearchOptions,
    ) -> Result<Self> {
        let net = net.into();
        check_backbone(net, index)?;
        let mut searcher = Self::for_features(ctx, index, options)?;
        let backbone = GpuBackbone::new(&searcher.ctx, net, options.matrix_units)?;
        searcher.net = Some(backbone.with_tuning(searcher.tuning));
        Ok(searcher)
    }

    /// [`Searcher::new`] with weights that know their SHA-256 (or seed), refused unless
    /// they are the network the index records ([`LoadedWeights::check_matches`]): queries
    /// embedded by another net of the same shape would be answered, wrongly, without it.
    pub fn with_weights(ctx: Context, weights: &LoadedWeights, index: &Index, options: SearchOptions) -> Result<Self> {
        weights.check_matches(index)?;
        Self::new(ctx, &weights.net, index, options)
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
        let tuning = options.tuning.unwrap_or_else(|| Tuning::for_adapter(ctx.adapter_info()));
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
            tuning,
            scratch: ScratchPool::default(),
        })
    }

    /// The GPU context it runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The preprocessing its image queries get: the index's ([`Index::provenance`]).
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Number of rows in the index it searches.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always false: an empty index is refused when a searcher is made.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Width of the index's rows, and of the feature rows [`Searcher::search_features`] takes.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of reference chunks scanned per query batch.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Scratch sets idle in its pool (at most a few; more are made while more searches run
    /// at once).
    pub fn idle_scratch_sets(&self) -> usize {
        self.scratch.idle()
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

    /// The k nearest index rows of each image file, best first: files are decoded (JPEG or
    /// PNG, in parallel, a bounded run at a time) and searched as
    /// [`Searcher::search_images`] does, with the index's preprocessing. The first file, in
    /// the order given, that cannot be read, decoded or preprocessed is the error, naming it.
    pub fn search_paths<P: AsRef<Path> + Sync>(&self, paths: &[P], k: usize) -> Result<Vec<Vec<Neighbor>>> {
        self.check_k(k)?;
        let mut results = Vec::with_capacity(paths.len());
        for_each_decoded_run(paths, &self.preprocess, PATH_RUN, |images| {
            results.extend(self.search_images(&images, k)?);
            Ok(())
        })?;
        Ok(results)
    }

    /// The k nearest index rows of each decoded image, best first. Images of any size:
    /// submits are split by uploaded bytes, and an image whose rows exceed one storage
    /// binding is preprocessed on the CPU ([`PreprocessBatch::with_cpu_fallback`]). Fails on
    /// an empty image ([`crate::cpu::preprocess::check_image`] finds those first), and where
    /// the crop does not suit the network ([`GpuBackbone::check_fits`]).
    pub fn search_images(&self, images: &[RgbImage], k: usize) -> Result<Vec<Vec<Neighbor>>> {
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
        let cause = net.overflow_cause();
        let mut guard = self.scratch.take(self);
        let Scratch { net, scans } = &mut guard.scratch;
        let net = net.as_mut().ok_or_else(|| Error::InvalidArgument("this searcher has no network".into()))?;
        let mut results = Vec::with_capacity(images.len());
        for run in submit_runs(&self.ctx, images, &self.preprocess, self.max_queries()) {
            let batch = &images[run];
            let q = batch.len();
            let (input, features) = {
                let (input, features, _) = net.prepared(&self.ctx, q, crop, crop)?;
                (input.clone(), features.clone())
            };
            let plan = scans.get(self, q, k, QuerySource::Images, Some(&features))?;
            let preprocess = PreprocessBatch::with_cpu_fallback(&self.ctx, batch, &self.preprocess, &input)?;
            let (_, _, backbone) = net.prepared(&self.ctx, q, crop, crop)?;
            let dispatches: Vec<&Dispatch> =
                preprocess.dispatches().iter().chain(backbone).chain(&plan.dispatches).collect();
            let found = read_results(&self.ctx, plan, &dispatches, q, k)?;
            check_scores(&found, results.len(), "the image", cause)?;
            results.extend(found);
        }
        Ok(results)
    }

    /// The k nearest index rows of each raw (unnormalised) `[queries, dim]` feature row,
    /// best first: rows are centred on the index's mean (where it has one) and normalised
    /// on the GPU, as the index's rows were.
    pub fn search_features(&self, features: &[f32], k: usize) -> Result<Vec<Vec<Neighbor>>> {
        self.check_k(k)?;
        if features.is_empty() || !features.len().is_multiple_of(self.dim) {
            return Err(Error::shape(
                "query features",
                format!("rows of {} values", self.dim),
                format!("{} values", features.len()),
            ));
        }
        crate::cpu::check_finite("query features", features)?;
        let mut guard = self.scratch.take(self);
        let mut results = Vec::new();
        for batch in features.chunks(self.max_queries() * self.dim) {
            let q = batch.len() / self.dim;
            let plan = guard.scratch.scans.get(self, q, k, QuerySource::Features, None)?;
            self.ctx.write(&plan.uploaded_features, batch);
            let dispatches: Vec<&Dispatch> = plan.dispatches.iter().collect();
            let found = read_results(&self.ctx, plan, &dispatches, q, k)?;
            check_scores(&found, results.len(), "the query row", "the index holds NaN or infinite rows")?;
            results.extend(found);
        }
        Ok(results)
    }
}

/// Refuses to search `index` with `net` where its rows come from another network: another
/// width, or a `model` naming the other backbone (other names, from older tools or
/// synthetic indexes, are left to the width check).
fn check_backbone(net: BackboneRef, index: &Index) -> Result<()> {
    let recorded = index.provenance.model.as_str();
    let known = [crate::model::backbone::RESNET50, crate::model::convnet::ARCHITECTURE];
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
