//! Training the convnet on the GPU with no host round trip between steps: the training set
//! lives on the GPU, each step's pairs are drawn there from a step counter the GPU keeps,
//! and a run of many steps is one submission whose losses are read back once at its end.
//! The twin of [`crate::train::cpu::CpuTrainer`]: the same pairs, maths and Adam.

use crate::data::ClassGrouped;
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Stage};
use crate::model::convnet::{ConvNet, ConvNetSpec};
use crate::ops::adam::{adam, advance_step, AdamBuffers};
use crate::ops::conv2d_backward::{conv2d_backward_input, conv2d_backward_weight, BackwardTiles, ConvActivations};
use crate::ops::dense::{dense_backward_input, dense_backward_weight, DenseShape};
use crate::ops::metric_loss::{metric_loss, MetricLossBuffers};
use crate::ops::pool::global_avg_pool_backward;
use crate::ops::train_sample::{train_sample, GroupedPixels, TrainingSet, STATE_WORDS};
use crate::ops::Tuning;
use crate::train::gpu_forward::{conv_shape, Forward, GpuWeights};
use crate::train::TrainConfig;

/// Trains a [`ConvNet`] on the GPU by the recipe of [`crate::train`]. Every launch of a step
/// (sampling, forward, loss, backward, Adam, step counter) is prepared once, in
/// [`GpuTrainer::new`]; [`GpuTrainer::run`] records them once per step into one submission.
pub struct GpuTrainer {
    ctx: Context,
    net: ConvNet,
    config: TrainConfig,
    steps: u64,
    weights: GpuWeights,
    optimiser: Optimiser,
    work: Workspace,
    /// Sampling, then the forward to the dense outputs.
    forward: Vec<Dispatch>,
    /// The loss and Adam, with the tables they bind.
    tables: Tables,
    backward: Vec<Dispatch>,
    advance: Dispatch,
}

/// What Adam keeps between steps, beside the weights.
struct Optimiser {
    /// [steps done, steps done in this submission] (`ops::train_sample::STATE_WORDS`).
    state: wgpu::Buffer,
    /// Every weight's gradient, in the flat layout: each step's backward writes all of it.
    grads: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
}

/// The training set and the activations of one step and their gradients, sized once for
/// 2C images. The launches bind them; the trainer holds them.
struct Workspace {
    classes: usize,
    _set: TrainingSet,
    _rows: wgpu::Buffer,
    input: wgpu::Buffer,
    forward: Forward,
    unit: wgpu::Buffer,
    d_embeddings: wgpu::Buffer,
    d_pooled: wgpu::Buffer,
    /// Gradients w.r.t. the three convolutions' outputs.
    d_conv_out: [wgpu::Buffer; 3],
}

/// The per-submission tables (one slot per step: Adam's step size in, the loss out) and the
/// two launches that bind them.
struct Tables {
    capacity: usize,
    step_sizes: wgpu::Buffer,
    loss_history: wgpu::Buffer,
    loss: Dispatch,
    adam: Dispatch,
}

impl Tables {
    fn new(
        ctx: &Context, capacity: usize, config: &TrainConfig, dim: usize, weights: &GpuWeights, opt: &Optimiser,
        work: &Workspace,
    ) -> Result<Self> {
        let step_sizes = ctx.storage("adam step sizes", capacity)?;
        let loss_history = ctx.storage("loss history", capacity)?;
        let loss_buffers = MetricLossBuffers {
            state: &opt.state,
            embeddings: &work.forward.embeddings,
            unit: &work.unit,
            d_embeddings: &work.d_embeddings,
            loss_history: &loss_history,
        };
        let loss = metric_loss(ctx, work.classes, dim, config.temperature, &loss_buffers)?;
        let rates = config.adam_rates();
        let adam_buffers = AdamBuffers {
            state: &opt.state,
            step_sizes: &step_sizes,
            grads: &opt.grads,
            params: &weights.flat,
            m: &opt.m,
            v: &opt.v,
        };
        let adam = adam(ctx, weights.len, rates, &adam_buffers)?;
        Ok(Self { capacity, step_sizes, loss_history, loss, adam })
    }
}

impl<'a> From<&'a ClassGrouped> for GroupedPixels<'a> {
    fn from(data: &'a ClassGrouped) -> Self {
        GroupedPixels {
            pixels: &data.images.pixels,
            image_len: data.images.image_len(),
            class_offsets: &data.class_offsets,
            class_counts: &data.class_counts,
        }
    }
}

impl GpuTrainer {
    /// Uploads `net`'s weights and `data` (once) and prepares every launch of a step. Fails
    /// as [`crate::train::cpu::CpuTrainer::new`] does, and when the set or the batch exceeds
    /// what the kernels take (more than 4 storage bindings of pixels, more than
    /// `ops::metric_loss::MAX_CLASSES` classes). The forward's convolutions use the built-in
    /// launch shapes for `ctx`'s adapter unless [`GpuTrainer::with_tuning`] gives others.
    pub fn new(ctx: Context, mut net: ConvNet, data: &ClassGrouped, config: TrainConfig) -> Result<Self> {
        crate::train::check_training(&mut net, data, &config)?;
        let tuning = Tuning::for_adapter(ctx.adapter_info());
        let spec = net.spec;
        let weights = GpuWeights::upload(&ctx, &net)?;
        let len = weights.len;
        let optimiser = Optimiser {
            state: ctx.upload_pod("step counter", &[0u32; STATE_WORDS])?,
            grads: ctx.storage("weight gradients", len)?,
            m: ctx.upload("adam m", &vec![0.0; len])?,
            v: ctx.upload("adam v", &vec![0.0; len])?,
        };
        let set = TrainingSet::upload(&ctx, data)?;
        let (classes, batch) = (set.classes(), 2 * set.classes());
        let (w3, dim) = (spec.widths[2], spec.dim);
        let convs = spec.convs();
        let d_conv_out = [0, 1, 2].map(|i| {
            ctx.storage(&format!("conv{} output gradients", i + 1), batch * convs[i].out_pixels() * convs[i].out_c)
        });
        let [d1, d2, d3] = d_conv_out;
        let rows = ctx.storage("batch rows", batch)?;
        let input = ctx.storage("training batch", batch * spec.input_len())?;
        let sample = train_sample(&ctx, &set, config.seed, &optimiser.state, &input, &rows)?;
        let work = Workspace {
            classes,
            forward: Forward::new(&ctx, &spec, &weights, batch, &input, &tuning)?,
            _set: set,
            _rows: rows,
            input,
            unit: ctx.storage("unit embeddings", batch * dim)?,
            d_embeddings: ctx.storage("embedding gradients", batch * dim)?,
            d_pooled: ctx.storage("pooled gradients", batch * w3)?,
            d_conv_out: [d1?, d2?, d3?],
        };
        let forward = [sample].into_iter().chain(work.forward.dispatches.iter().cloned()).collect();
        let backward = backward(&ctx, &spec, &weights, &optimiser, &work)?;
        let capacity = config.steps_per_epoch.clamp(1, 1 << 16);
        let tables = Tables::new(&ctx, capacity, &config, dim, &weights, &optimiser, &work)?;
        let advance = advance_step(&ctx, &optimiser.state)?;
        Ok(Self { ctx, net, config, steps: 0, weights, optimiser, work, forward, tables, backward, advance })
    }

    /// The same trainer with these launch shapes (an autotune result, `tune::load_for`): the
    /// forward's three convolutions are prepared again over the same buffers.
    pub fn with_tuning(mut self, tuning: Tuning) -> Result<Self> {
        let (work, spec) = (&self.work, &self.net.spec);
        let convs = work.forward.convolutions(&self.ctx, spec, &self.weights, &work.input, &tuning)?;
        // The step's launches start with the sampling, then the convolutions.
        self.forward.splice(1..1 + convs.len(), convs);
        Ok(self)
    }

    /// Sets up the GPU for `steps` steps from [`GpuTrainer::steps_done`]: each step's Adam
    /// step size and the step counter.
    fn prepare(&mut self, steps: usize) -> Result<()> {
        let first = self.steps;
        if first + steps as u64 > u32::MAX as u64 {
            return Err(Error::InvalidArgument(format!(
                "{steps} steps after {first}: the GPU counts steps in 32 bits"
            )));
        }
        if steps > self.tables.capacity {
            // A run longer than any before: larger tables, and the two launches that bind them.
            let t = Tables::new(
                &self.ctx,
                steps,
                &self.config,
                self.net.spec.dim,
                &self.weights,
                &self.optimiser,
                &self.work,
            )?;
            self.tables = t;
        }
        let sizes: Vec<f32> = (1..=steps as u64).map(|k| self.config.adam_step_size(first + k)).collect();
        self.ctx.write(&self.tables.step_sizes, &sizes);
        self.ctx.queue().write_buffer(&self.optimiser.state, 0, bytemuck::cast_slice(&[first as u32, 0]));
        Ok(())
    }

    /// The launches of one step in order.
    fn step_dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        let tail = [&self.tables.adam, &self.advance];
        self.forward.iter().chain([&self.tables.loss]).chain(&self.backward).chain(tail)
    }

    /// Takes `steps` training steps in one submission and returns each step's loss (before
    /// its update), read back once at the end.
    pub fn run(&mut self, steps: usize) -> Result<Vec<f32>> {
        if steps == 0 {
            return Ok(Vec::new());
        }
        self.prepare(steps)?;
        let readback = self.ctx.readback(steps);
        let losses = self.ctx.record_and_read(
            |encoder| {
                for _ in 0..steps {
                    {
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                        for d in self.step_dispatches() {
                            d.encode(&mut pass);
                        }
                    }
                    self.weights.record_sync(encoder);
                }
            },
            &[(&self.tables.loss_history, &readback, steps)],
        )?;
        self.steps += steps as u64;
        Ok(losses.into_iter().next().unwrap_or_default())
    }

    /// Takes one training step with each launch timed on its own (GPU timestamps), and
    /// returns each launch's name and milliseconds; `None` (and no step taken) when the
    /// adapter has no timestamps.
    pub fn profile_step(&mut self) -> Result<Option<Vec<(&'static str, f64)>>> {
        if !self.ctx.has_timestamps() {
            return Ok(None);
        }
        self.prepare(1)?;
        let stages: Vec<Stage> = self.step_dispatches().map(|d| (d.label(), vec![d])).collect();
        let times = self.ctx.stage_times(&stages)?;
        self.ctx.record_and_read(|encoder| self.weights.record_sync(encoder), &[])?;
        self.steps += 1;
        Ok(times)
    }

    /// Steps taken so far: the index of the next step.
    pub fn steps_done(&self) -> u64 {
        self.steps
    }

    /// Launches per step (copies not counted).
    pub fn launches_per_step(&self) -> usize {
        self.step_dispatches().count()
    }

    /// The net with its current weights, read back from the GPU.
    pub fn net(&self) -> Result<ConvNet> {
        let params = self.ctx.read(&self.weights.flat, self.weights.len)?;
        Ok(ConvNet { params, ..self.net.clone() })
    }

    /// The recipe being followed.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
}

/// The backward's launches, from the embeddings' gradient (the loss writes it) to every
/// weight's gradient: dense, pooling, then each convolution's weight and bias and, but for
/// the first, its input.
fn backward(
    ctx: &Context, spec: &ConvNetSpec, weights: &GpuWeights, opt: &Optimiser, work: &Workspace,
) -> Result<Vec<Dispatch>> {
    let batch = 2 * work.classes;
    let (w3, convs) = (spec.widths[2], spec.convs());
    let (grads, fwd) = (&opt.grads, &work.forward);
    let dense = DenseShape { batch, inputs: w3, outputs: spec.dim };
    let (d_kernel, d_bias) = (weights.at(grads, "dense.kernel")?, weights.at(grads, "dense.bias")?);
    let kernel = weights.at(&weights.flat, "dense.kernel")?;
    let mut launches = vec![
        dense_backward_weight(ctx, &dense, &fwd.pooled, &work.d_embeddings, d_kernel, d_bias)?,
        dense_backward_input(ctx, &dense, &work.d_embeddings, kernel, &work.d_pooled)?,
        global_avg_pool_backward(ctx, batch, convs[2].out_pixels(), w3, &work.d_pooled, &work.d_conv_out[2])?,
    ];
    for (i, g) in convs.iter().enumerate().rev() {
        let shape = conv_shape(batch, g);
        let acts = ConvActivations {
            input: if i == 0 { &work.input } else { &fwd.conv_out[i - 1] },
            output: &fwd.conv_out[i],
            grad_output: &work.d_conv_out[i],
        };
        let (kernel, bias) = (format!("conv{}.kernel", i + 1), format!("conv{}.bias", i + 1));
        let tiles = BackwardTiles::fitting(shape.k() + 1, shape.out_c);
        let (d_kernel, d_bias) = (weights.at(grads, &kernel)?, weights.at(grads, &bias)?);
        launches.push(conv2d_backward_weight(ctx, &shape, &acts, true, d_kernel, d_bias, tiles)?);
        if i > 0 {
            let tiles = BackwardTiles::fitting(shape.input_len() / shape.in_c, shape.in_c);
            let weight = weights.at(&weights.flat, &kernel)?;
            launches.push(conv2d_backward_input(ctx, &shape, &acts, true, weight, &work.d_conv_out[i - 1], tiles)?);
        }
    }
    Ok(launches)
}
