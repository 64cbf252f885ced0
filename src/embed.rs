//! Images to ResNet50 features on the GPU or the CPU reference: what `lookalike embed` runs.

use std::path::PathBuf;

use crate::cpu::preprocess::{preprocess_files, Preprocess};
use crate::error::Result;
use crate::gpu::Context;
use crate::model::{BatchNormMode, CpuResNet50, GpuResNet50, ResNet50, FEATURE_DIM};
use crate::npy::NhwcBatch;

enum Engine {
    Gpu { ctx: Context, net: Box<GpuResNet50> },
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
        Ok(Self { engine: Engine::Gpu { ctx, net: Box::new(gpu) } })
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

    /// Decodes, preprocesses and embeds image files, `batch_size` at a time, in the order
    /// given; `progress` hears how many are done after each batch.
    pub fn embed_files(
        &mut self,
        paths: &[PathBuf],
        preprocess: &Preprocess,
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        preprocess.validate()?;
        let side = preprocess.crop as usize;
        let mut features = Vec::with_capacity(paths.len() * FEATURE_DIM);
        for chunk in paths.chunks(batch_size.max(1)) {
            let data = preprocess_files(chunk, preprocess)?;
            let batch = NhwcBatch { batch: chunk.len(), height: side, width: side, data };
            features.extend(self.embed(&batch)?);
            progress(features.len() / FEATURE_DIM);
        }
        Ok(features)
    }
}
