//! Training the convnet on the CPU: the twin of the GPU trainer, built from the layer
//! functions of [`crate::cpu::convnet`], and a trainer in its own right.

use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::convnet::{self as ops, ConvScratch};
use crate::data::{ClassGrouped, LabelledImages};
use crate::error::{Error, Result};
use crate::model::convnet::{ConvNet, ConvNetSpec};
use crate::train::sampler::pair_batch;
use crate::train::TrainConfig;

/// The images at `rows` (indices into `images`) as one NHWC batch, each pixel `u8 / 255`.
///
/// Panics if a row is out of range.
pub fn gather_batch(images: &LabelledImages, rows: &[u32]) -> Vec<f32> {
    let mut out = vec![0.0; rows.len() * images.image_len()];
    gather_batch_into(images, rows, &mut out);
    out
}

/// [`gather_batch`] into `out` (`rows.len()` images).
pub(crate) fn gather_batch_into(images: &LabelledImages, rows: &[u32], out: &mut [f32]) {
    let n = images.image_len();
    assert_eq!(out.len(), rows.len() * n, "gather_batch: output length");
    for (dst, &row) in out.chunks_exact_mut(n).zip(rows) {
        for (d, &p) in dst.iter_mut().zip(images.image(row as usize)) {
            *d = p as f32 / 255.0;
        }
    }
}

/// Trains a [`ConvNet`] by the recipe of [`crate::train`]: each step draws one anchor and
/// one positive per class ([`pair_batch`] with the 0-based step index), embeds all 2C
/// images as one batch, takes the pair loss's gradient w.r.t. every weight and applies one
/// Adam step (t = step index + 1). Every buffer is allocated once, in [`CpuTrainer::new`].
#[derive(Debug)]
pub struct CpuTrainer {
    net: ConvNet,
    data: ClassGrouped,
    config: TrainConfig,
    /// Adam's first and second moments, one per weight.
    m: Vec<f32>,
    v: Vec<f32>,
    grads: Vec<f32>,
    steps: u64,
    work: Workspace,
}

/// Where each tensor lies in the flat weight vector, in [`ConvNetSpec::layout`] order.
#[derive(Debug, Clone)]
struct Ranges {
    conv_kernel: [Range<usize>; 3],
    conv_bias: [Range<usize>; 3],
    dense_kernel: Range<usize>,
    dense_bias: Range<usize>,
}

impl Ranges {
    fn of(spec: &ConvNetSpec) -> Result<Self> {
        let layout = spec.layout();
        let range = |name: &str| {
            layout.tensor(name).map(|t| t.range()).ok_or_else(|| Error::MissingTensor { name: name.to_string() })
        };
        Ok(Self {
            conv_kernel: [range("conv1.kernel")?, range("conv2.kernel")?, range("conv3.kernel")?],
            conv_bias: [range("conv1.bias")?, range("conv2.bias")?, range("conv3.bias")?],
            dense_kernel: range("dense.kernel")?,
            dense_bias: range("dense.bias")?,
        })
    }
}

/// Images per part of a batch at most: the batch is split into parts of at most this many
/// images (and at least two parts), run on the threads side by side. The split depends on
/// the batch size only, so a run's results do not depend on the thread count.
const PART_IMAGES: usize = 16;

/// The images of each part: `batch` split into near-equal contiguous ranges.
fn parts_of(batch: usize) -> Vec<Range<usize>> {
    let parts = batch.div_ceil(PART_IMAGES).max(2).min(batch);
    (0..parts).map(|p| p * batch / parts..(p + 1) * batch / parts).collect()
}

/// Everything one step computes, sized once for 2C images: the parts of the batch (which
/// run the layers up to the embeddings and back on their own threads) and the pair loss
/// over all of them.
#[derive(Debug)]
struct Workspace {
    spec: ConvNetSpec,
    ranges: Ranges,
    classes: usize,
    rows: Vec<u32>,
    parts: Vec<Part>,
    embeddings: Vec<f32>,
    grad_embeddings: Vec<f32>,
    units: Vec<f32>,
    grad_units: Vec<f32>,
    inv_norm: Vec<f32>,
    dlogits: Vec<f64>,
}

/// The layers' activations, their gradients and a partial weight gradient for one part of
/// the batch.
#[derive(Debug)]
struct Part {
    images: Range<usize>,
    input: Vec<f32>,
    /// Post-ReLU outputs of the three convolutions.
    conv_out: [Vec<f32>; 3],
    /// Gradients w.r.t. the convolutions' outputs.
    grad_conv_out: [Vec<f32>; 3],
    pooled: Vec<f32>,
    grad_pooled: Vec<f32>,
    embeddings: Vec<f32>,
    /// This part's share of the gradient w.r.t. the flat weights.
    grads: Vec<f32>,
    conv: ConvScratch,
}

impl Part {
    fn new(spec: &ConvNetSpec, images: Range<usize>) -> Self {
        let batch = images.len();
        let activations = spec.convs().map(|g| vec![0.0; batch * g.out_pixels() * g.out_c]);
        Self {
            images,
            input: vec![0.0; batch * spec.input_len()],
            grad_conv_out: activations.clone(),
            conv_out: activations,
            pooled: vec![0.0; batch * spec.widths[2]],
            grad_pooled: vec![0.0; batch * spec.widths[2]],
            embeddings: vec![0.0; batch * spec.dim],
            grads: vec![0.0; spec.layout().len],
            conv: ConvScratch::serial(),
        }
    }

    /// Gathers this part's `rows` of `images` and embeds them (before normalisation).
    fn forward(&mut self, spec: &ConvNetSpec, r: &Ranges, params: &[f32], images: &LabelledImages, rows: &[u32]) {
        let batch = self.images.len();
        gather_batch_into(images, rows, &mut self.input);
        let convs = spec.convs();
        for (i, g) in convs.iter().enumerate() {
            let (done, rest) = self.conv_out.split_at_mut(i);
            let input = if i == 0 { &self.input } else { &done[i - 1] };
            let (kernel, bias) = (&params[r.conv_kernel[i].clone()], &params[r.conv_bias[i].clone()]);
            ops::conv_forward_into(input, batch, g, kernel, bias, &mut self.conv, &mut rest[0]);
        }
        let w3 = spec.widths[2];
        ops::global_avg_pool_into(&self.conv_out[2], batch, convs[2].out_pixels(), w3, &mut self.pooled);
        let (kernel, bias) = (&params[r.dense_kernel.clone()], &params[r.dense_bias.clone()]);
        ops::dense_forward_into(&self.pooled, batch, w3, spec.dim, kernel, bias, &mut self.embeddings);
    }

    /// This part's gradient w.r.t. the weights, from the gradient w.r.t. its embeddings.
    fn backward(&mut self, spec: &ConvNetSpec, r: &Ranges, params: &[f32], grad_embeddings: &[f32]) {
        let (batch, convs, w3) = (self.images.len(), spec.convs(), spec.widths[2]);
        let (before_dense, dense_grads) = self.grads.split_at_mut(r.dense_kernel.start);
        let (grad_dense_kernel, grad_dense_bias) = dense_grads.split_at_mut(r.dense_kernel.len());
        ops::dense_backward_into(
            &self.pooled,
            grad_embeddings,
            batch,
            w3,
            spec.dim,
            &params[r.dense_kernel.clone()],
            &mut self.grad_pooled,
            grad_dense_kernel,
            &mut grad_dense_bias[..r.dense_bias.len()],
        );
        let pixels = convs[2].out_pixels();
        ops::global_avg_pool_backward_into(&self.grad_pooled, batch, pixels, w3, &mut self.grad_conv_out[2]);
        for (i, g) in convs.iter().enumerate().rev() {
            let input = if i == 0 { &self.input } else { &self.conv_out[i - 1] };
            let (below, from_here) = self.grad_conv_out.split_at_mut(i);
            let grad_input = (i > 0).then(|| &mut below[i - 1][..]);
            // Kernel and bias are adjacent in the layout.
            let (grad_kernel, grad_bias) =
                before_dense[r.conv_kernel[i].start..r.conv_bias[i].end].split_at_mut(r.conv_kernel[i].len());
            ops::conv_backward_into(
                input,
                &self.conv_out[i],
                &from_here[0],
                batch,
                g,
                &params[r.conv_kernel[i].clone()],
                &mut self.conv,
                grad_input,
                grad_kernel,
                grad_bias,
            );
        }
    }
}

/// Weights per task when partial gradients are summed and Adam runs on all threads.
const WEIGHTS_PER_TASK: usize = 1 << 14;

impl Workspace {
    fn new(spec: ConvNetSpec, classes: usize) -> Result<Self> {
        let (batch, dim) = (2 * classes, spec.dim);
        Ok(Self {
            spec,
            ranges: Ranges::of(&spec)?,
            classes,
            rows: Vec::with_capacity(batch),
            parts: parts_of(batch).into_iter().map(|images| Part::new(&spec, images)).collect(),
            embeddings: vec![0.0; batch * dim],
            grad_embeddings: vec![0.0; batch * dim],
            units: vec![0.0; batch * dim],
            grad_units: vec![0.0; batch * dim],
            inv_norm: vec![0.0; batch],
            dlogits: Vec::with_capacity(classes * classes),
        })
    }

    /// The loss of step `step`'s batch from `data` under `params`, and its gradient w.r.t.
    /// every weight written into `grads` (the flat layout).
    fn loss_and_gradient(
        &mut self, data: &ClassGrouped, seed: u64, step: u64, params: &[f32], temperature: f32, grads: &mut [f32],
    ) -> f32 {
        // The sampler counts steps in 32 bits, as the GPU does: step indices wrap at 2³².
        self.rows = pair_batch(seed, step as u32, &data.class_offsets, &data.class_counts);
        let (spec, r, rows, dim) = (&self.spec, &self.ranges, &self.rows, self.spec.dim);
        self.parts.par_iter_mut().for_each(|part| {
            let range = part.images.clone();
            part.forward(spec, r, params, &data.images, &rows[range]);
        });
        for part in &self.parts {
            self.embeddings[part.images.start * dim..part.images.end * dim].copy_from_slice(&part.embeddings);
        }
        ops::l2_normalize_rows_into(&self.embeddings, dim, &mut self.units, &mut self.inv_norm);
        let loss =
            ops::pair_loss_into(&self.units, self.classes, dim, temperature, &mut self.dlogits, &mut self.grad_units);
        ops::l2_normalize_backward_into(&self.units, &self.inv_norm, &self.grad_units, dim, &mut self.grad_embeddings);
        let grad_embeddings = &self.grad_embeddings;
        self.parts.par_iter_mut().for_each(|part| {
            let mine = &grad_embeddings[part.images.start * dim..part.images.end * dim];
            part.backward(spec, r, params, mine);
        });
        // The parts' gradients summed in part order, whatever thread computed them.
        let parts = &self.parts;
        grads.par_chunks_mut(WEIGHTS_PER_TASK).enumerate().for_each(|(task, sum)| {
            let at = task * WEIGHTS_PER_TASK;
            sum.copy_from_slice(&parts[0].grads[at..at + sum.len()]);
            for part in &parts[1..] {
                sum.iter_mut().zip(&part.grads[at..]).for_each(|(s, &g)| *s += g);
            }
        });
        loss
    }
}

impl CpuTrainer {
    /// A trainer of `net` on `data` by `config`. Fails when the images' size differs from
    /// the net's input, the weights do not fit the architecture, the net already names
    /// other classes than the data (a net with no class names takes the data's), or the
    /// temperature is not positive.
    pub fn new(mut net: ConvNet, data: ClassGrouped, config: TrainConfig) -> Result<Self> {
        crate::train::check_training(&mut net, &data, &config)?;
        let (spec, classes) = (net.spec, data.class_counts.len());
        let layout = spec.layout();
        let work = Workspace::new(spec, classes)?;
        Ok(Self {
            m: vec![0.0; layout.len],
            v: vec![0.0; layout.len],
            grads: vec![0.0; layout.len],
            steps: 0,
            net,
            data,
            config,
            work,
        })
    }

    /// One training step; returns its loss (before the update).
    pub fn step(&mut self) -> f32 {
        let (step, config) = (self.steps, self.config);
        let loss = self.work.loss_and_gradient(
            &self.data,
            config.seed,
            step,
            &self.net.params,
            config.temperature,
            &mut self.grads,
        );
        // Adam is element-wise: splitting it across threads changes nothing.
        self.net
            .params
            .par_chunks_mut(WEIGHTS_PER_TASK)
            .zip(self.grads.par_chunks(WEIGHTS_PER_TASK))
            .zip(self.m.par_chunks_mut(WEIGHTS_PER_TASK))
            .zip(self.v.par_chunks_mut(WEIGHTS_PER_TASK))
            .for_each(|(((w, g), m), v)| {
                ops::adam_update(w, g, m, v, config.adam_rates(), config.adam_step_size(step + 1))
            });
        self.steps += 1;
        loss
    }

    /// The loss and the gradient w.r.t. the flat weights on the batch of step `step` under
    /// the current weights, without updating anything.
    pub fn loss_and_gradient(&mut self, step: u64) -> (f32, &[f32]) {
        let config = &self.config;
        let loss = self.work.loss_and_gradient(
            &self.data,
            config.seed,
            step,
            &self.net.params,
            config.temperature,
            &mut self.grads,
        );
        (loss, &self.grads)
    }

    /// Steps taken so far: the index of the next step.
    pub fn steps_done(&self) -> u64 {
        self.steps
    }

    /// The net with its current weights.
    pub fn net(&self) -> &ConvNet {
        &self.net
    }

    /// The recipe being followed.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Adam's first and second moments, one of each per weight.
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// The trained net.
    pub fn into_net(self) -> ConvNet {
        self.net
    }
}

/// FLOPs of one training step over `classes` classes (2C images; a multiply-add counts
/// two): the forward, the kernel gradients (as many as the forward's convolutions and
/// dense layer) and the input gradients of every layer but the first convolution.
pub fn step_flops(spec: &ConvNetSpec, classes: usize) -> f64 {
    let [first, ..] = spec.convs();
    let first_conv = 2.0 * (first.out_pixels() * first.k() * first.out_c) as f64;
    let forward = spec.forward_flops();
    (2 * classes) as f64 * (3.0 * forward - first_conv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_batch_in_order() {
        for batch in 1..80 {
            let parts = parts_of(batch);
            assert_eq!(parts.len(), batch.div_ceil(PART_IMAGES).max(2).min(batch), "batch {batch}");
            assert_eq!((parts[0].start, parts[parts.len() - 1].end), (0, batch));
            assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
            assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= PART_IMAGES));
        }
    }
}
