//! Training and evaluation on either twin: [`Trainer`] runs steps on the GPU (many per
//! submission) or on the CPU, and [`evaluate`] scores a net's embeddings of a test set.

use crate::data::{ClassGrouped, LabelledImages};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::model::GpuConvNet;
use crate::ops::Tuning;
use crate::search::Neighbor;
use crate::train::cpu::CpuTrainer;
use crate::train::eval::{all_neighbours, neighbours_needed, retrieval_metrics, RetrievalMetrics, K};
use crate::train::gpu::GpuTrainer;
use crate::train::{ConvNet, TrainConfig};

/// A training run on the GPU or on the CPU twin; both draw the same pairs for a seed.
pub enum Trainer {
    /// Many steps per submission on the GPU.
    Gpu(Box<GpuTrainer>),
    /// The CPU twin.
    Cpu(Box<CpuTrainer>),
}

impl Trainer {
    /// On the GPU of `ctx`, or on the CPU twin when `ctx` is `None`. `data` must hold at
    /// least two classes of at least two images each ([`LabelledImages::grouped_by_class`]).
    pub fn new(ctx: Option<Context>, net: ConvNet, data: &ClassGrouped, config: TrainConfig) -> Result<Self> {
        Ok(match ctx {
            Some(ctx) => Trainer::Gpu(Box::new(GpuTrainer::new(ctx, net, data, config)?)),
            None => Trainer::Cpu(Box::new(CpuTrainer::new(net, data.clone(), config)?)),
        })
    }

    /// The same run with these launch shapes on the GPU (an autotune result,
    /// `tune::load_for`; see [`GpuTrainer::with_tuning`]); the CPU twin is unchanged.
    pub fn with_tuning(self, tuning: Tuning) -> Result<Self> {
        Ok(match self {
            Trainer::Gpu(gpu) => Trainer::Gpu(Box::new(gpu.with_tuning(tuning)?)),
            cpu => cpu,
        })
    }

    /// Runs `steps` more steps and returns the loss of each. On the GPU all of them go in
    /// one submission and the losses are read back once at the end.
    pub fn run(&mut self, steps: usize) -> Result<Vec<f32>> {
        match self {
            Trainer::Gpu(gpu) => gpu.run(steps),
            Trainer::Cpu(cpu) => Ok((0..steps).map(|_| cpu.step()).collect()),
        }
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        match self {
            Trainer::Gpu(gpu) => gpu.steps_done(),
            Trainer::Cpu(cpu) => cpu.steps_done(),
        }
    }

    /// The net as trained so far (read back from the GPU).
    pub fn net(&self) -> Result<ConvNet> {
        match self {
            Trainer::Gpu(gpu) => gpu.net(),
            Trainer::Cpu(cpu) => Ok(cpu.net().clone()),
        }
    }
}

/// Refuses images whose size or channels differ from the net's input.
pub fn check_input(net: &ConvNet, images: &LabelledImages) -> Result<()> {
    let s = &net.spec;
    if (images.height, images.width, images.channels) != (s.height, s.width, s.channels) {
        return Err(Error::shape(
            "convnet input",
            format!("{}x{}x{} images", s.height, s.width, s.channels),
            format!("{}x{}x{}", images.height, images.width, images.channels),
        ));
    }
    Ok(())
}

/// Unit embeddings (`[images, dim]`) of every image, on the GPU of `ctx` or on the CPU.
pub fn embed_images(ctx: Option<&Context>, net: &ConvNet, images: &LabelledImages) -> Result<Vec<f32>> {
    check_input(net, images)?;
    match ctx {
        Some(ctx) => {
            // The pipeline's forward takes RGB: grey images are spread over the three channels,
            // which a one-channel net reads through its luma-weighted first kernel.
            let mut gpu = GpuConvNet::new(ctx, net)?;
            let rgb_len = images.height * images.width * 3;
            let mut out = Vec::with_capacity(images.len() * net.spec.dim);
            for chunk in images.pixels.chunks(4096 * images.image_len()) {
                let count = chunk.len() / images.image_len();
                let rgb: Vec<f32> = if images.channels == 3 {
                    chunk.iter().map(|&p| f32::from(p) / 255.0).collect()
                } else {
                    chunk.iter().flat_map(|&p| [f32::from(p) / 255.0; 3]).collect()
                };
                debug_assert_eq!(rgb.len(), count * rgb_len);
                out.extend(gpu.forward(ctx, &rgb, count, images.height, images.width)?);
            }
            Ok(out)
        }
        None => {
            let mut out = Vec::with_capacity(images.len() * net.spec.dim);
            for chunk in images.pixels.chunks(256 * images.image_len()) {
                let input: Vec<f32> = chunk.iter().map(|&p| f32::from(p) / 255.0).collect();
                out.extend(crate::model::convnet_cpu::embed(net, &input, chunk.len() / images.image_len())?);
            }
            Ok(out)
        }
    }
}

/// A net's retrieval scores on a test set, with the neighbours they came from.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The retrieval scores (precision at 1 and 10, vote accuracy, mean average precision).
    pub metrics: RetrievalMetrics,
    /// Each test image's 10 nearest other test images, best first.
    pub neighbours: Vec<Vec<Neighbor>>,
    /// The unit embeddings scored, `[images, dim]` in the test set's order.
    pub embeddings: Vec<f32>,
}

/// Embeds `test` and scores exact k-NN among its images (each query excluded from its own
/// list). With `ctx`, the embeddings and every image's 10 nearest neighbours come from the
/// GPU (its matmul and top-k); MAP@R, which needs each query's R nearest (R up to a class's
/// size), is ranked by the CPU reference search on the same embeddings, which a software
/// adapter would take minutes over.
pub fn evaluate(ctx: Option<&Context>, net: &ConvNet, test: &LabelledImages) -> Result<Evaluation> {
    if test.len() < 2 {
        return Err(Error::InvalidArgument(format!("{} test image(s): evaluation needs at least 2", test.len())));
    }
    let embeddings = embed_images(ctx, net, test)?;
    let dim = net.spec.dim;
    let ranked = all_neighbours(None, &embeddings, dim, neighbours_needed(&test.labels))?;
    let neighbours = match ctx {
        Some(ctx) => all_neighbours(Some(ctx), &embeddings, dim, K.min(test.len() - 1))?,
        None => ranked.iter().map(|list| list[..K.min(list.len())].to_vec()).collect(),
    };
    let metrics = retrieval_metrics(&neighbours, &ranked, &test.labels)?;
    Ok(Evaluation { metrics, neighbours, embeddings })
}
