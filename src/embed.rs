//! Images to backbone features (ResNet50's, or a trained convnet's unit embeddings) on
//! the GPU or the CPU reference: what `lookalike embed` and `lookalike index` run.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use image::RgbImage;
use rayon::prelude::*;

use crate::cpu::preprocess::{check_image, decode_file, decoded_bytes, preprocess_image, Preprocess};
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch};
use crate::model::{BackboneRef, CpuBackbone, GpuBackbone};
use crate::npy::NhwcBatch;
use crate::ops::l2_normalize::l2_normalize;
use crate::ops::preprocess::{submit_runs, PreprocessBatch};
use crate::ops::Tuning;

enum Engine {
    Gpu { ctx: Box<Context>, net: Box<GpuBackbone> },
    Cpu(Box<CpuBackbone>),
}

/// A feature extractor on one device: ResNet50 or a trained convnet (anything that
/// converts into a [`BackboneRef`]: `&Backbone`, `&ResNet50`, `&ConvNet`).
///
/// Decoded images of any size in, feature rows out, on the GPU and on the CPU reference
/// (here a small untrained convnet stands in for ResNet50, whose weights
/// [`crate::Backbone::load`] reads):
///
/// ```
/// use lookalike::image::{Rgb, RgbImage};
/// use lookalike::train::{ConvNet, ConvNetSpec};
/// use lookalike::{Backbone, Context, Embedder};
///
/// # fn main() -> lookalike::Result<()> {
/// let spec = ConvNetSpec { widths: [8, 8, 8], dim: 8, ..ConvNetSpec::recipe(16, 16, 3) };
/// let net = Backbone::ConvNet(ConvNet::glorot(spec, 3)?);
/// let preprocess = net.default_preprocess()?; // resize and crop to 16x16, pixels / 255
/// let images: Vec<RgbImage> =
///     (0..3).map(|i| RgbImage::from_fn(20 + i, 16, |x, y| Rgb([(x * 12) as u8, (y * 15) as u8, (i * 80) as u8]))).collect();
///
/// let mut gpu = Embedder::gpu(Context::new()?, &net)?;
/// let features = gpu.embed_decoded(&images, &preprocess)?; // [3, 8], unit rows for a convnet
/// assert_eq!(features.len(), 3 * gpu.feature_dim());
///
/// let reference = Embedder::cpu(&net)?.embed_decoded(&images, &preprocess)?;
/// let worst = features.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
/// assert!(worst < 1e-4, "GPU and CPU differ by {worst}");
/// # Ok(())
/// # }
/// ```
///
/// [`Embedder::embed_files`] and [`Embedder::embed_labelled_files`] decode files (in
/// parallel, in bounded runs) on the way.
pub struct Embedder {
    engine: Engine,
}

impl Embedder {
    /// The GPU forward (ResNet50 with batch-norm folded) on `ctx`.
    pub fn gpu<'a>(ctx: Context, net: impl Into<BackboneRef<'a>>) -> Result<Self> {
        let gpu = GpuBackbone::new(&ctx, net, false)?;
        Ok(Self { engine: Engine::Gpu { ctx: Box::new(ctx), net: Box::new(gpu) } })
    }

    /// The GPU forward with every convolution on `ctx`'s matrix units (f16 inputs, f32
    /// sums; see [`crate::model::GpuResNet50::on_matrix_units`]); an error where it has
    /// none, and for a convnet, which has no such path.
    pub fn gpu_on_matrix_units<'a>(ctx: Context, net: impl Into<BackboneRef<'a>>) -> Result<Self> {
        let gpu = GpuBackbone::new(&ctx, net, true)?;
        Ok(Self { engine: Engine::Gpu { ctx: Box::new(ctx), net: Box::new(gpu) } })
    }

    /// The same embedder with these launch shapes on the GPU (an autotune result,
    /// `tune::load_for`); without this call, the built-in ones for the context's adapter.
    /// The CPU reference has none and is unchanged.
    pub fn with_tuning(self, tuning: Tuning) -> Self {
        match self.engine {
            Engine::Gpu { ctx, net } => Self { engine: Engine::Gpu { ctx, net: Box::new(net.with_tuning(tuning)) } },
            cpu => Self { engine: cpu },
        }
    }

    /// The CPU reference (multi-threaded for ResNet50).
    pub fn cpu<'a>(net: impl Into<BackboneRef<'a>>) -> Result<Self> {
        Ok(Self { engine: Engine::Cpu(Box::new(CpuBackbone::new(net)?)) })
    }

    /// Width of the feature rows it returns: 2048 for ResNet50, the convnet's embedding
    /// width for a convnet (whose rows are unit-norm).
    pub fn feature_dim(&self) -> usize {
        match &self.engine {
            Engine::Gpu { net, .. } => net.feature_dim(),
            Engine::Cpu(net) => net.feature_dim(),
        }
    }

    /// The GPU context, when running on one.
    pub fn context(&self) -> Option<&Context> {
        match &self.engine {
            Engine::Gpu { ctx, .. } => Some(ctx),
            Engine::Cpu(_) => None,
        }
    }

    /// `[batch, feature_dim]` features of an NHWC batch of preprocessed images.
    pub fn embed(&mut self, images: &NhwcBatch) -> Result<Vec<f32>> {
        let NhwcBatch { batch, height, width, data } = images;
        match &mut self.engine {
            Engine::Gpu { ctx, net } => net.forward(ctx, data, *batch, *height, *width),
            Engine::Cpu(net) => net.forward(data, *batch, *height, *width),
        }
    }

    /// `[n, feature_dim]` features of decoded images of any size; on the GPU the
    /// preprocessing runs there too, in the same submit as the backbone. Submits are split
    /// by count ([`GpuBackbone::max_batch`]) and by uploaded bytes; an image whose
    /// rows exceed one storage binding is preprocessed on the CPU, to the same numbers
    /// ([`PreprocessBatch::with_cpu_fallback`]). Fails on an empty image ([`check_image`]
    /// finds those first) and where the crop's activations exceed the device's limits.
    pub fn embed_decoded(&mut self, images: &[RgbImage], preprocess: &Preprocess) -> Result<Vec<f32>> {
        self.embed_decoded_as(images, preprocess, None)
    }

    /// Unit query rows of decoded images: [`Embedder::embed_decoded`], then centred on
    /// `mean` (an index's, where it is centred) and L2-normalised, on the GPU in the same
    /// submit, as a [`crate::Searcher`] treats its image queries: the rows whose dot
    /// products with an index's rows are its cosine scores (what a vector database takes
    /// as queries). `mean` must have `feature_dim` values.
    pub fn embed_decoded_unit(
        &mut self, images: &[RgbImage], preprocess: &Preprocess, mean: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        if let Some(mean) = mean {
            if mean.len() != self.feature_dim() {
                return Err(Error::shape(
                    "query mean",
                    format!("{} values", self.feature_dim()),
                    mean.len().to_string(),
                ));
            }
        }
        self.embed_decoded_as(images, preprocess, Some(mean))
    }

    /// Features, or (`unit` = `Some(mean)`) unit rows centred on `mean`.
    fn embed_decoded_as(
        &mut self, images: &[RgbImage], preprocess: &Preprocess, unit: Option<Option<&[f32]>>,
    ) -> Result<Vec<f32>> {
        preprocess.validate()?;
        let side = preprocess.crop as usize;
        match &mut self.engine {
            Engine::Gpu { ctx, net } => {
                net.check_fits(ctx, side, side)?;
                let (dim, name, cause) = (net.feature_dim(), net.name(), net.overflow_cause());
                let mean = unit.flatten().map(|mean| ctx.upload("query mean", mean)).transpose()?;
                let mut features = Vec::with_capacity(images.len() * dim);
                for run in submit_runs(ctx, images, preprocess, net.max_batch(ctx, side, side)) {
                    let chunk = &images[run];
                    let (input, output, backbone) = net.prepared(ctx, chunk.len(), side, side)?;
                    let prepare = PreprocessBatch::with_cpu_fallback(ctx, chunk, preprocess, input)?;
                    let mut dispatches: Vec<&Dispatch> = prepare.dispatches().iter().chain(backbone).collect();
                    let normalized = match unit {
                        Some(_) => {
                            let rows = ctx.storage("unit queries", chunk.len() * dim)?;
                            let normalize = l2_normalize(ctx, chunk.len(), dim, output, mean.as_ref(), &rows)?;
                            Some((rows, normalize))
                        }
                        None => None,
                    };
                    if let Some((_, normalize)) = &normalized {
                        dispatches.push(normalize);
                    }
                    let result = normalized.as_ref().map_or(output, |(rows, _)| rows);
                    let part = ctx.run_and_read(&dispatches, result, chunk.len() * dim)?;
                    crate::model::check_features(&part, dim, features.len() / dim, name, cause)?;
                    features.extend(part);
                }
                Ok(features)
            }
            Engine::Cpu(net) => {
                let parts =
                    images.par_iter().map(|img| preprocess_image(img, preprocess)).collect::<Result<Vec<_>>>()?;
                let features = net.forward(&parts.concat(), images.len(), side, side)?;
                match unit {
                    Some(mean) => crate::cpu::l2_normalize(&features, images.len(), net.feature_dim(), mean),
                    None => Ok(features),
                }
            }
        }
    }

    /// Embeds a folder's files for an index: a producer thread decodes each run of files
    /// ([`decode_run_len`]: at most `batch_size`, decoded pixels within
    /// [`DECODE_BUDGET_BYTES`]) in parallel on the CPU while this thread runs the previous
    /// run on the device. Files that cannot be read or used are skipped and reported, never
    /// fatal.
    pub fn embed_labelled_files(
        &mut self, files: &[(PathBuf, Option<String>)], preprocess: &Preprocess, batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<LabelledFeatures> {
        preprocess.validate()?;
        let mut out = LabelledFeatures::default();
        std::thread::scope(|scope| {
            let (sender, receiver) = mpsc::sync_channel::<Vec<(usize, Result<RgbImage>)>>(1);
            scope.spawn(move || {
                let mut start = 0;
                while start < files.len() {
                    let end = start + decode_run_len(files[start..].iter().map(|(path, _)| path.as_path()), batch_size);
                    let decoded = files[start..end]
                        .par_iter()
                        .enumerate()
                        .map(|(i, (path, _))| (start + i, decode_file(path)))
                        .collect();
                    if sender.send(decoded).is_err() {
                        return; // the consumer stopped on an error
                    }
                    start = end;
                }
            });
            let mut done = 0;
            for decoded in receiver {
                done += decoded.len();
                let mut images = Vec::with_capacity(decoded.len());
                for (i, result) in decoded {
                    let (path, label) = &files[i];
                    match result.and_then(|img| check_image(&img, preprocess).map(|()| img)) {
                        Ok(img) => {
                            images.push(img);
                            out.files.push((path.clone(), label.clone()));
                        }
                        Err(e) => out.skipped.push((path.clone(), e.without_path())),
                    }
                }
                if !images.is_empty() {
                    out.features.extend(self.embed_decoded(&images, preprocess)?);
                }
                progress(done);
            }
            Ok::<(), Error>(())
        })?;
        Ok(out)
    }

    /// Decodes (in parallel) and embeds image files in the order given, in runs of at most
    /// `batch_size` files and [`DECODE_BUDGET_BYTES`] of decoded pixels, preprocessing as
    /// [`Embedder::embed_decoded`] does; the first unreadable file in that order is the
    /// error. `progress` hears how many are done after each run.
    pub fn embed_files(
        &mut self, paths: &[PathBuf], preprocess: &Preprocess, batch_size: usize, mut progress: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        preprocess.validate()?;
        let mut features = Vec::with_capacity(paths.len() * self.feature_dim());
        let mut start = 0;
        while start < paths.len() {
            let end = start + decode_run_len(paths[start..].iter().map(PathBuf::as_path), batch_size);
            let decoded: Vec<Result<RgbImage>> = paths[start..end].par_iter().map(|p| decode_file(p)).collect();
            let images = decoded.into_iter().collect::<Result<Vec<_>>>()?;
            features.extend(self.embed_decoded(&images, preprocess)?);
            progress(end);
            start = end;
        }
        Ok(features)
    }
}

/// Decoded 8-bit RGB bytes one run of files may hold at once (a run holds at least one
/// file): with a run decoding while another is embedded, a few of these are in memory.
// for the command line and the tests
#[doc(hidden)]
pub const DECODE_BUDGET_BYTES: u64 = 512 << 20;

/// How many of `paths`, from the first, to decode together: at most `max_files` (at least
/// 1), with decoded pixels ([`decoded_bytes`], read from the headers) within
/// [`DECODE_BUDGET_BYTES`] unless the run is a single file.
// for the command line and the tests
#[doc(hidden)]
pub fn decode_run_len<'a>(paths: impl IntoIterator<Item = &'a Path>, max_files: usize) -> usize {
    let (mut files, mut bytes) = (0, 0);
    for path in paths {
        if files == max_files.max(1) {
            break;
        }
        let size = decoded_bytes(path);
        if files > 0 && bytes + size > DECODE_BUDGET_BYTES {
            break;
        }
        (files, bytes) = (files + 1, bytes + size);
    }
    files
}

/// Decodes image files in the order given, in parallel, in runs of at most `max_files`
/// ([`decode_run_len`]), each image checked against `preprocess` ([`check_image`]), and
/// hands each run to `each`. The first file in that order that cannot be read, decoded or
/// preprocessed is the error, naming it.
pub fn for_each_decoded_run<P: AsRef<Path> + Sync>(
    paths: &[P], preprocess: &Preprocess, max_files: usize, mut each: impl FnMut(Vec<RgbImage>) -> Result<()>,
) -> Result<()> {
    let mut start = 0;
    while start < paths.len() {
        let end = start + decode_run_len(paths[start..].iter().map(AsRef::as_ref), max_files);
        let decode = |path: &P| {
            let path = path.as_ref();
            let img = decode_file(path)?;
            check_image(&img, preprocess).map_err(|e| e.in_file(path))?;
            Ok(img)
        };
        each(paths[start..end].par_iter().map(decode).collect::<Result<Vec<RgbImage>>>()?)?;
        start = end;
    }
    Ok(())
}

/// Features of the readable files of a folder, with the files that were skipped.
#[derive(Debug, Default)]
pub struct LabelledFeatures {
    /// `[files.len(), feature_dim]`, rows in the order of `files`.
    pub features: Vec<f32>,
    /// The files embedded, with their labels as given, in the order given.
    pub files: Vec<(PathBuf, Option<String>)>,
    /// Files that could not be read or used, with the reason (without the path).
    pub skipped: Vec<(PathBuf, String)>,
}
