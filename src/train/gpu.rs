//! Training the convnet on the GPU with no host round trip between steps: the training set
//! lives on the GPU, each step's pairs are drawn there from a step counter the GPU keeps,
//! and a run of many steps is one submission whose losses are read back once at its end.
//! The twin of [`crate::train::cpu::CpuTrainer`]: the same pairs, maths and Adam.

use crate::data::ClassGrouped;
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Stage};
use crate::ops::adam::{adam, advance_step, AdamBuffers, AdamRates};
use crate::ops::conv2d_backward::{conv2d_backward_input, conv2d_backward_weight, BackwardTiles, ConvActivations};
use crate::ops::dense::{dense_backward_input, dense_backward_weight, DenseShape};
use crate::ops::metric_loss::{metric_loss, MetricLossBuffers};
use crate::ops::pool::global_avg_pool_backward;
use crate::ops::train_sample::{train_sample, TrainingSet, STATE_WORDS};
use crate::train::convnet::ConvNet;
use crate::train::gpu_forward::{conv_shape, Forward, GpuWeights};
use crate::train::TrainConfig;

/// Trains a [`ConvNet`] on the GPU by the recipe of [`crate::train`]. Every launch of a step
/// (sampling, forward, loss, backward, Adam, step counter) is prepared once, in
/// [`GpuTrainer::new`]; [`GpuTrainer::run`] records them once per step into one submission.
pub struct GpuTrainer {
    ctx: Context,
    net: ConvNet,
    config: TrainConfig,
    classes: usize,
    steps: u64,
    _set: TrainingSet,
    weights: GpuWeights,
    /// [steps done, steps done in this submission] (see `ops::train_sample::STATE_WORDS`).
    state: wgpu::Buffer,
    grads: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    _rows: wgpu::Buffer,
    _input: wgpu::Buffer,
    forward: Forward,
    unit: wgpu::Buffer,
    d_embeddings: wgpu::Buffer,
    /// Gradients w.r.t. the pooled features and the three convolutions' outputs.
    _d_activations: [wgpu::Buffer; 3],
    _d_pooled: wgpu::Buffer,
    /// Steps one submission has room for: the sizes of `step_sizes` and `loss_history`.
    capacity: usize,
    step_sizes: wgpu::Buffer,
    loss_history: wgpu::Buffer,
    loss: Dispatch,
    backward: Vec<Dispatch>,
    adam: Dispatch,
    advance: Dispatch,
}

impl GpuTrainer {
    /// Uploads `net`'s weights and `data` (once) and prepares every launch of a step. Fails
    /// as [`crate::train::cpu::CpuTrainer::new`] does, and when the set or the batch exceeds
    /// what the kernels take (more than 4 storage bindings of pixels, more than
    /// `ops::metric_loss::MAX_CLASSES` classes).
    pub fn new(ctx: Context, mut net: ConvNet, data: &ClassGrouped, config: TrainConfig) -> Result<Self> {
        let spec = net.spec;
        spec.validate()?;
        let images = &data.images;
        if (images.height, images.width, images.channels) != (spec.height, spec.width, spec.channels) {
            return Err(Error::shape(
                "training images",
                format!("{}x{}x{} (the net's input)", spec.height, spec.width, spec.channels),
                format!("{}x{}x{}", images.height, images.width, images.channels),
            ));
        }
        if net.class_names.is_empty() {
            net.class_names = images.class_names.clone();
        } else if net.class_names != images.class_names {
            return Err(Error::InvalidArgument(format!(
                "the net was trained on classes {:?} but the data has {:?}",
                net.class_names, images.class_names
            )));
        }
        let set = TrainingSet::upload(&ctx, data)?;
        let classes = set.classes();
        let batch = 2 * classes;
        let weights = GpuWeights::upload(&ctx, &net)?;
        let len = weights.len;
        let state = ctx.upload_pod("step counter", &[0u32; STATE_WORDS])?;
        let grads = ctx.storage("weight gradients", len)?;
        let m = ctx.upload("adam m", &vec![0.0; len])?;
        let v = ctx.upload("adam v", &vec![0.0; len])?;
        let rows = ctx.storage("batch rows", batch)?;
        let input = ctx.storage("training batch", batch * spec.input_len())?;
        let sample = train_sample(&ctx, &set, config.seed, &state, &input, &rows)?;
        let mut forward = Forward::new(&ctx, &spec, &weights, batch, &input)?;
        forward.dispatches.insert(0, sample);

        let (w3, dim) = (spec.widths[2], spec.dim);
        let unit = ctx.storage("unit embeddings", batch * dim)?;
        let d_embeddings = ctx.storage("embedding gradients", batch * dim)?;
        let d_pooled = ctx.storage("pooled gradients", batch * w3)?;
        let convs = spec.convs();
        let d_activations = [0, 1, 2].map(|i| {
            ctx.storage(&format!("conv{} output gradients", i + 1), batch * convs[i].out_pixels() * convs[i].out_c)
        });
        let [d1, d2, d3] = d_activations;
        let d_activations = [d1?, d2?, d3?];

        let dense = DenseShape { batch, inputs: w3, outputs: dim };
        let mut backward = vec![
            dense_backward_weight(
                &ctx,
                &dense,
                &forward.pooled,
                &d_embeddings,
                weights.at(&grads, "dense.kernel")?,
                weights.at(&grads, "dense.bias")?,
            )?,
            dense_backward_input(&ctx, &dense, &d_embeddings, weights.at(&weights.flat, "dense.kernel")?, &d_pooled)?,
            global_avg_pool_backward(&ctx, batch, convs[2].out_pixels(), w3, &d_pooled, &d_activations[2])?,
        ];
        for (i, g) in convs.iter().enumerate().rev() {
            let shape = conv_shape(batch, g);
            let acts = ConvActivations {
                input: if i == 0 { &input } else { &forward.conv_out[i - 1] },
                output: &forward.conv_out[i],
                grad_output: &d_activations[i],
            };
            let (kernel, bias) = (format!("conv{}.kernel", i + 1), format!("conv{}.bias", i + 1));
            let tiles = BackwardTiles::fitting(shape.k() + 1, shape.out_c);
            let (d_kernel, d_bias) = (weights.at(&grads, &kernel)?, weights.at(&grads, &bias)?);
            backward.push(conv2d_backward_weight(&ctx, &shape, &acts, true, d_kernel, d_bias, tiles)?);
            if i > 0 {
                let tiles = BackwardTiles::fitting(shape.input_len() / shape.in_c, shape.in_c);
                let weight = weights.at(&weights.flat, &kernel)?;
                backward.push(conv2d_backward_input(&ctx, &shape, &acts, true, weight, &d_activations[i - 1], tiles)?);
            }
        }

        let capacity = config.steps_per_epoch.clamp(1, 1 << 16);
        let step_sizes = ctx.storage("adam step sizes", capacity)?;
        let loss_history = ctx.storage("loss history", capacity)?;
        let rates = AdamRates { beta1: config.beta1, beta2: config.beta2, epsilon: config.epsilon };
        let loss = metric_loss(
            &ctx,
            classes,
            dim,
            config.temperature,
            &MetricLossBuffers {
                state: &state,
                embeddings: &forward.embeddings,
                unit: &unit,
                d_embeddings: &d_embeddings,
                loss_history: &loss_history,
            },
        )?;
        let adam = adam(
            &ctx,
            len,
            rates,
            &AdamBuffers { state: &state, step_sizes: &step_sizes, grads: &grads, params: &weights.flat, m: &m, v: &v },
        )?;
        let advance = advance_step(&ctx, &state)?;
        Ok(Self {
            ctx,
            net,
            config,
            classes,
            steps: 0,
            _set: set,
            weights,
            state,
            grads,
            m,
            v,
            _rows: rows,
            _input: input,
            forward,
            unit,
            d_embeddings,
            _d_activations: d_activations,
            _d_pooled: d_pooled,
            capacity,
            step_sizes,
            loss_history,
            loss,
            backward,
            adam,
            advance,
        })
    }

    /// Room for `steps` steps in one submission: the step-size table and the loss history
    /// grow (and the two launches that bind them are prepared again) when a run is longer
    /// than any before.
    fn ensure_capacity(&mut self, steps: usize) -> Result<()> {
        if steps <= self.capacity {
            return Ok(());
        }
        let ctx = &self.ctx;
        self.step_sizes = ctx.storage("adam step sizes", steps)?;
        self.loss_history = ctx.storage("loss history", steps)?;
        self.loss = metric_loss(
            ctx,
            self.classes,
            self.net.spec.dim,
            self.config.temperature,
            &MetricLossBuffers {
                state: &self.state,
                embeddings: &self.forward.embeddings,
                unit: &self.unit,
                d_embeddings: &self.d_embeddings,
                loss_history: &self.loss_history,
            },
        )?;
        let c = &self.config;
        self.adam = adam(
            ctx,
            self.weights.len,
            AdamRates { beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon },
            &AdamBuffers {
                state: &self.state,
                step_sizes: &self.step_sizes,
                grads: &self.grads,
                params: &self.weights.flat,
                m: &self.m,
                v: &self.v,
            },
        )?;
        self.capacity = steps;
        Ok(())
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
        self.ensure_capacity(steps)?;
        let sizes: Vec<f32> = (1..=steps as u64).map(|k| self.config.adam_step_size(first + k)).collect();
        self.ctx.write(&self.step_sizes, &sizes);
        self.ctx.queue().write_buffer(&self.state, 0, bytemuck::cast_slice(&[first as u32, 0]));
        Ok(())
    }

    /// The launches of one step in order.
    fn step_dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        let tail = [&self.adam, &self.advance];
        self.forward.dispatches.iter().chain([&self.loss]).chain(&self.backward).chain(tail)
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
            &[(&self.loss_history, &readback, steps)],
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
