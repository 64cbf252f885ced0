//! Images to ResNet50 features on the GPU or the CPU reference: what `lookalike embed` runs.

use std::path::PathBuf;
use std::sync::mpsc;

use image::RgbImage;
use rayon::prelude::*;

use crate::cpu::preprocess::{decode_file, preprocess_image, Preprocess};
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch};
use crate::index::Entry;
use crate::model::{BatchNormMode, CpuResNet50, GpuResNet50, ResNet50, FEATURE_DIM};
use crate::npy::NhwcBatch;
use crate::ops::preprocess::PreprocessBatch;

enum Engine {
    Gpu { ctx: Box<Context>, net: Box<GpuResNet50> },
    Cpu(Box<CpuResNet50>),
}

/// A ResNet50 feature extractor on one device.
pub struct Embedder {
    engine: Engine,
}

impl Embedder {
    /// The GPU forward (batch-norm folded) on `ctx`.
    pub fn gpu(ctx: Context, net: &ResNet50) -> Result<Self> {
        let gpu = GpuResNet50::new(&ctx, net, BatchNormMode::Folded)?;
        Ok(Self { engine: Engine::Gpu { ctx: Box::new(ctx), net: Box::new(gpu) } })
    }

    /// The GPU forward with every convolution on `ctx`'s matrix units (f16 inputs, f32
    /// sums; see [`GpuResNet50::on_matrix_units`]); an error where it has none.
    pub fn gpu_on_matrix_units(ctx: Context, net: &ResNet50) -> Result<Self> {
        let gpu = GpuResNet50::new(&ctx, net, BatchNormMode::Folded)?.on_matrix_units(&ctx)?;
        Ok(Self { engine: Engine::Gpu { ctx: Box::new(ctx), net: Box::new(gpu) } })
    }

    /// The multi-threaded CPU reference.
    pub fn cpu(net: &ResNet50) -> Result<Self> {
        Ok(Self { engine: Engine::Cpu(Box::new(CpuResNet50::new(net)?)) })
    }

    /// The GPU context, when running on one.
    pub fn context(&self) -> Option<&Context> {
        match &self.engine {
            Engine::Gpu { ctx, .. } => Some(ctx),
            Engine::Cpu(_) => None,
        }
    }

    /// `[batch, 2048]` features of an NHWC batch of normalised images.
    pub fn embed(&mut self, images: &NhwcBatch) -> Result<Vec<f32>> {
        let NhwcBatch { batch, height, width, data } = images;
        match &mut self.engine {
            Engine::Gpu { ctx, net } => net.forward(ctx, data, *batch, *height, *width),
            Engine::Cpu(net) => net.forward(data, *batch, *height, *width),
        }
    }

    /// `[n, 2048]` features of decoded images; on the GPU the preprocessing runs there too,
    /// in the same submit as the backbone.
    pub fn embed_decoded(&mut self, images: &[RgbImage], preprocess: &Preprocess) -> Result<Vec<f32>> {
        preprocess.validate()?;
        let side = preprocess.crop as usize;
        match &mut self.engine {
            Engine::Gpu { ctx, net } => {
                let mut features = Vec::with_capacity(images.len() * FEATURE_DIM);
                for chunk in images.chunks(GpuResNet50::max_batch(ctx, side, side).max(1)) {
                    let (input, output, backbone) = net.prepared(ctx, chunk.len(), side, side)?;
                    let prepare = PreprocessBatch::new(ctx, chunk, preprocess, input)?;
                    let dispatches: Vec<&Dispatch> = prepare.dispatches().iter().chain(backbone).collect();
                    let part = ctx.run_and_read(&dispatches, output, chunk.len() * FEATURE_DIM)?;
                    crate::model::check_features(&part, features.len() / FEATURE_DIM, net.overflow_cause())?;
                    features.extend(part);
                }
                Ok(features)
            }
            Engine::Cpu(net) => {
                let parts =
                    images.par_iter().map(|img| preprocess_image(img, preprocess)).collect::<Result<Vec<_>>>()?;
                net.forward(&parts.concat(), images.len(), side, side)
            }
        }
    }

    /// Embeds a folder's files for an index: a producer thread decodes each batch in
    /// parallel on the CPU while this thread runs the previous batch on the device.
    /// Unreadable files are skipped and reported, never fatal.
    pub fn embed_labelled_files(
        &mut self, files: &[(PathBuf, Option<String>)], preprocess: &Preprocess, batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<LabelledFeatures> {
        let batch_size = batch_size.max(1);
        let mut out = LabelledFeatures::default();
        std::thread::scope(|scope| {
            let (sender, receiver) = mpsc::sync_channel::<Vec<(usize, Result<RgbImage>)>>(1);
            scope.spawn(move || {
                for (start, chunk) in (0..files.len()).step_by(batch_size).zip(files.chunks(batch_size)) {
                    let decoded =
                        chunk.par_iter().enumerate().map(|(i, (path, _))| (start + i, decode_file(path))).collect();
                    if sender.send(decoded).is_err() {
                        return; // the consumer stopped on an error
                    }
                }
            });
            let mut done = 0;
            for decoded in receiver {
                done += decoded.len();
                let mut images = Vec::with_capacity(decoded.len());
                for (i, result) in decoded {
                    let (path, label) = &files[i];
                    match result {
                        Ok(img) if img.width() > 0 && img.height() > 0 => {
                            images.push(img);
                            out.entries.push(Entry::new(path.clone(), label.clone()));
                        }
                        Ok(_) => out.skipped.push((path.clone(), "empty image".into())),
                        Err(e) => out.skipped.push((path.clone(), e.reason())),
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

    /// Decodes (in parallel) and embeds image files, `batch_size` at a time, in the order
    /// given, preprocessing as [`Embedder::embed_decoded`] does; the first unreadable file
    /// in that order is the error. `progress` hears how many are done after each batch.
    pub fn embed_files(
        &mut self, paths: &[PathBuf], preprocess: &Preprocess, batch_size: usize, mut progress: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        preprocess.validate()?;
        let mut features = Vec::with_capacity(paths.len() * FEATURE_DIM);
        for chunk in paths.chunks(batch_size.max(1)) {
            let decoded: Vec<Result<RgbImage>> = chunk.par_iter().map(|p| decode_file(p)).collect();
            let images = decoded.into_iter().collect::<Result<Vec<_>>>()?;
            features.extend(self.embed_decoded(&images, preprocess)?);
            progress(features.len() / FEATURE_DIM);
        }
        Ok(features)
    }
}

/// Features of the readable files of a folder, with the files that were skipped.
#[derive(Debug, Default)]
pub struct LabelledFeatures {
    /// `[entries.len(), 2048]`, rows in the order of `entries`.
    pub features: Vec<f32>,
    pub entries: Vec<Entry>,
    /// Files that could not be read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}
