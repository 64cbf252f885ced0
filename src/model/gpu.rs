//! The whole ResNet50 forward on the GPU.
//!
//! Weights are uploaded once. For each (batch, height, width) a plan is built once:
//! activation buffers from a small pool (reused as soon as an activation is dead) and every
//! dispatch with its bind group. A forward then writes the input, records all dispatches
//! into one encoder, submits once and reads back only the `[batch, 2048]` features.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Readback};
use crate::model::resnet50::{Act, ConvBn, Executor, ResNet50, ShapeWalk, BN_EPS, FEATURE_DIM, MIN_INPUT};
use crate::model::{check_features, F32_OVERFLOW};
use crate::ops::batch_norm::{batch_norm, BatchNormBuffers, BatchNormShape};
use crate::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use crate::ops::conv2d_coop::conv2d_coop;
use crate::ops::coop::{self, CoopTiles};
use crate::ops::pool::{global_avg_pool, max_pool, MaxPoolShape};
use crate::ops::Tuning;

/// How batch-norm runs on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchNormMode {
    /// Folded into the conv weights and bias at load (the fast path).
    Folded,
    /// Raw conv, then the standalone batch-norm kernel (the reference path).
    Separate,
}

/// What the convolutions run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvMath {
    /// f32 FMA kernels (`conv2d`): the exact path, within 1e-5 of the CPU reference.
    F32,
    /// The matrix units (`conv2d_coop`): activations and weights rounded to f16 as they
    /// are staged, sums in f32, like tensor-core "mixed precision". An activation past
    /// f16's +-65504 becomes infinite there; ReLU keeps the NaNs that follow, so the forward
    /// fails with [`Error::NonFiniteOutput`] instead of returning its features.
    MatrixUnits(CoopTiles),
}

#[derive(Clone)]
enum LayerBuffers {
    Folded { weight: wgpu::Buffer, bias: wgpu::Buffer },
    Separate { weight: wgpu::Buffer, bn: [wgpu::Buffer; 4] },
}

/// One prepared (batch, height, width): buffers and recorded dispatches.
struct Plan {
    /// Input at index 0, then the activation pool and the features.
    buffers: Vec<wgpu::Buffer>,
    features: usize,
    readback: Readback,
    dispatches: Vec<Dispatch>,
    /// [`GpuResNet50::uses`] when last handed out.
    last_used: u64,
}

/// Plans kept per network (see [`GpuResNet50::plan`]).
const MAX_PLANS: usize = 4;

/// ResNet50 resident on the GPU.
pub struct GpuResNet50 {
    arch: ResNet50,
    mode: BatchNormMode,
    math: ConvMath,
    /// The launch shapes of the f32 convolutions (and of the matrix-unit ones where
    /// [`GpuResNet50::on_matrix_units`] took them from here).
    tuning: Tuning,
    /// Whether the matrix-unit layout came from `tuning` (else it was chosen by the caller).
    coop_from_tuning: bool,
    layers: HashMap<String, LayerBuffers>,
    plans: HashMap<(usize, usize, usize), Plan>,
    /// Plans handed out so far, to find the least recently used.
    uses: u64,
}

impl GpuResNet50 {
    /// Uploads the weights (folded or raw, per `mode`). The convolutions use the built-in
    /// launch shapes for `ctx`'s adapter ([`Tuning::for_adapter`]) unless
    /// [`GpuResNet50::with_tuning`] gives others.
    pub fn new(ctx: &Context, net: &ResNet50, mode: BatchNormMode) -> Result<Self> {
        let mut layers = HashMap::new();
        for layer in net.convs() {
            let buffers = match mode {
                BatchNormMode::Folded => {
                    let (weight, bias) = layer.folded()?;
                    LayerBuffers::Folded {
                        weight: ctx.upload(&layer.conv_name, &weight)?,
                        bias: ctx.upload(&layer.bn_name, &bias)?,
                    }
                }
                BatchNormMode::Separate => {
                    let bn = &layer.bn;
                    let up = |v: &[f32]| ctx.upload(&layer.bn_name, v);
                    LayerBuffers::Separate {
                        weight: ctx.upload(&layer.conv_name, &layer.weight_hwio()?)?,
                        bn: [up(&bn.weight)?, up(&bn.bias)?, up(&bn.running_mean)?, up(&bn.running_var)?],
                    }
                }
            };
            layers.insert(layer.conv_name.clone(), buffers);
        }
        Ok(Self {
            arch: ResNet50::architecture(),
            mode,
            math: ConvMath::F32,
            tuning: Tuning::for_adapter(ctx.adapter_info()),
            coop_from_tuning: false,
            layers,
            plans: HashMap::new(),
            uses: 0,
        })
    }

    /// The same network with these launch shapes (an autotune result, `tune::load_for`).
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        if let (ConvMath::MatrixUnits(tiles), true) = (&mut self.math, self.coop_from_tuning) {
            *tiles = tuning.coop_tiles.unwrap_or(*tiles);
        }
        self.tuning = tuning;
        self.plans.clear();
        self
    }

    /// The same network with its convolutions on the context's matrix units (see
    /// [`ConvMath::MatrixUnits`]); an error naming the reason where it has none.
    /// Their workgroup layout is its tuning's (`lookalike tune --experimental-coop`
    /// measures one), else [`CoopTiles::default_for`] its units.
    pub fn on_matrix_units(self, ctx: &Context) -> Result<Self> {
        let units = coop::units(ctx, "resnet50 on matrix units")?;
        let tiles = self.tuning.coop_tiles.unwrap_or(CoopTiles::default_for(units));
        let mut net = self.on_matrix_units_with(ctx, tiles)?;
        net.coop_from_tuning = true;
        Ok(net)
    }

    /// [`GpuResNet50::on_matrix_units`] with chosen workgroup layouts (checked when the
    /// first forward builds its dispatches).
    pub fn on_matrix_units_with(mut self, ctx: &Context, tiles: CoopTiles) -> Result<Self> {
        coop::units(ctx, "resnet50 on matrix units")?;
        self.math = ConvMath::MatrixUnits(tiles);
        self.coop_from_tuning = false;
        self.plans.clear();
        Ok(self)
    }

    /// The same network with no plans, sharing the uploaded weights (wgpu buffers are
    /// shared handles).
    pub(crate) fn sharing_weights(&self) -> Self {
        Self {
            arch: self.arch.clone(),
            mode: self.mode,
            math: self.math,
            layers: self.layers.clone(),
            tuning: self.tuning,
            coop_from_tuning: self.coop_from_tuning,
            plans: HashMap::new(),
            uses: 0,
        }
    }

    /// How its batch-norms run.
    pub fn mode(&self) -> BatchNormMode {
        self.mode
    }

    /// What its convolutions run on.
    pub fn math(&self) -> ConvMath {
        self.math
    }

    /// Why this forward's features can come out non-finite, for the error that says so.
    pub(crate) fn overflow_cause(&self) -> &'static str {
        match self.math {
            ConvMath::F32 => F32_OVERFLOW,
            ConvMath::MatrixUnits(_) => {
                "the convolutions ran on the matrix units, whose f16 inputs stop at +-65504, and an activation \
                 outgrew that; without them (no --experimental-coop) the forward stays in f32"
            }
        }
    }

    /// Largest batch one submit can take at this resolution: every activation must fit one
    /// storage binding. 0 where one image's do not ([`GpuResNet50::check_fits`] says why).
    pub fn max_batch(ctx: &Context, height: usize, width: usize) -> usize {
        (ctx.max_binding_bytes() / Self::image_bytes(height, width).max(1)) as usize
    }

    /// Bytes of one image's largest activation (or its input, if larger).
    fn image_bytes(height: usize, width: usize) -> u64 {
        ShapeWalk::resnet50(height, width).largest_activation.max(height * width * 3) as u64 * 4
    }

    /// An error naming the limit and what to do where one `height x width` image's
    /// activations exceed the device's largest storage binding.
    pub fn check_fits(ctx: &Context, height: usize, width: usize) -> Result<()> {
        let (needed, limit) = (Self::image_bytes(height, width), ctx.max_binding_bytes());
        if needed <= limit {
            return Ok(());
        }
        // Activations grow with the side, so the largest square that fits is a bisection away.
        let fits = (MIN_INPUT..height.max(width)).collect::<Vec<_>>();
        let largest = fits.partition_point(|&side| Self::image_bytes(side, side) <= limit);
        let advice = match largest {
            0 => "no input size fits: use a device with larger limits".to_string(),
            n => {
                format!("use a smaller crop (--crop {} or less fits here) or a device with larger limits", fits[n - 1])
            }
        };
        Err(Error::InvalidArgument(format!(
            "a {height}x{width} input needs {needed} bytes for one image's largest ResNet50 activation, more than \
             this device's largest storage binding ({limit} bytes): {advice}"
        )))
    }

    /// `[batch, h, w, 3]` NHWC normalised images → `[batch, 2048]` features. Batches larger
    /// than [`GpuResNet50::max_batch`] run as several submits.
    pub fn forward(
        &mut self, ctx: &Context, input: &[f32], batch: usize, height: usize, width: usize,
    ) -> Result<Vec<f32>> {
        ResNet50::check_input(height, width)?;
        let image_len = height * width * 3;
        crate::cpu::check_slice("resnet50 input", input, batch * image_len)?;
        crate::cpu::check_finite("resnet50 input", input)?;
        Self::check_fits(ctx, height, width)?;
        let max_batch = Self::max_batch(ctx, height, width);
        let mut features = Vec::with_capacity(batch * FEATURE_DIM);
        for (chunk_index, chunk) in input.chunks(max_batch * image_len).enumerate() {
            let n = chunk.len() / image_len;
            let plan = self.plan(ctx, n, height, width)?;
            ctx.write(&plan.buffers[0], chunk);
            let refs: Vec<&Dispatch> = plan.dispatches.iter().collect();
            let features_buffer = &plan.buffers[plan.features];
            let part = ctx
                .run_and_read_into(&refs, &[(features_buffer, &plan.readback, n * FEATURE_DIM)])
                .map(|mut v| v.pop().unwrap_or_default())
                .map_err(|e| match e {
                    Error::Gpu { context, message } => {
                        Error::Gpu { context: format!("{context} (resnet50 chunk {chunk_index})"), message }
                    }
                    other => other,
                })?;
            check_features(&part, FEATURE_DIM, features.len() / FEATURE_DIM, "ResNet50", self.overflow_cause())?;
            features.extend_from_slice(&part);
        }
        Ok(features)
    }

    /// The prepared forward for `batch` images of `height x width`: its NHWC input buffer,
    /// its `[batch, 2048]` features buffer and its dispatches, for callers that record the
    /// backbone into a larger submit (the search pipeline). `batch` must not exceed
    /// [`GpuResNet50::max_batch`].
    pub fn prepared(
        &mut self, ctx: &Context, batch: usize, height: usize, width: usize,
    ) -> Result<(&wgpu::Buffer, &wgpu::Buffer, &[Dispatch])> {
        ResNet50::check_input(height, width)?;
        Self::check_fits(ctx, height, width)?;
        let max_batch = Self::max_batch(ctx, height, width);
        if batch == 0 || batch > max_batch {
            return Err(Error::InvalidArgument(format!(
                "a batch of {batch} images of {height}x{width}: between 1 and {max_batch} fit this device's largest \
                 storage binding ({} bytes); split the batch (GpuResNet50::max_batch)",
                ctx.max_binding_bytes()
            )));
        }
        let plan = self.plan(ctx, batch, height, width)?;
        Ok((&plan.buffers[0], &plan.buffers[plan.features], &plan.dispatches))
    }

    /// The plan for `(batch, height, width)`, built on first use. Batches split by bytes
    /// come in many sizes, so only the [`MAX_PLANS`] most recently used plans are kept: a
    /// caller that binds a plan's buffers elsewhere must check they are still the plan's.
    fn plan(&mut self, ctx: &Context, batch: usize, height: usize, width: usize) -> Result<&Plan> {
        let key = (batch, height, width);
        self.uses += 1;
        if !self.plans.contains_key(&key) {
            if self.plans.len() >= MAX_PLANS {
                let oldest = self.plans.iter().min_by_key(|(_, plan)| plan.last_used).map(|(key, _)| *key);
                oldest.and_then(|oldest| self.plans.remove(&oldest));
            }
            let plan = self.build_plan(ctx, batch, height, width)?;
            self.plans.insert(key, plan);
        }
        let plan = self.plans.get_mut(&key).ok_or_else(|| Error::InvalidArgument("plan cache".into()))?;
        plan.last_used = self.uses;
        Ok(plan)
    }

    fn build_plan(&self, ctx: &Context, batch: usize, height: usize, width: usize) -> Result<Plan> {
        let slot_len = batch * ShapeWalk::resnet50(height, width).largest_activation;
        let mut builder = PlanBuilder {
            ctx,
            layers: &self.layers,
            math: self.math,
            tuning: &self.tuning,
            slot_len,
            buffers: vec![ctx.storage("resnet50 input", batch * height * width * 3)?],
            free: Vec::new(),
            dispatches: Vec::new(),
        };
        let features = self.arch.walk(&mut builder, Act { id: 0, h: height, w: width, c: 3 }, batch)?;
        let readback = ctx.readback(batch * FEATURE_DIM);
        Ok(Plan {
            buffers: builder.buffers,
            features: features.id,
            readback,
            dispatches: builder.dispatches,
            last_used: 0,
        })
    }
}

/// Records dispatches; an [`Act::id`] indexes `buffers`, which are reused once released.
struct PlanBuilder<'a> {
    ctx: &'a Context,
    layers: &'a HashMap<String, LayerBuffers>,
    math: ConvMath,
    tuning: &'a Tuning,
    slot_len: usize,
    buffers: Vec<wgpu::Buffer>,
    free: Vec<usize>,
    dispatches: Vec<Dispatch>,
}

impl PlanBuilder<'_> {
    fn conv_dispatch(&self, shape: &Conv2dShape, buffers: &Conv2dBuffers, relu: bool) -> Result<Dispatch> {
        match self.math {
            ConvMath::F32 => conv2d(self.ctx, shape, buffers, relu, self.tuning.gemm_tiles(shape.m(), shape.out_c)),
            ConvMath::MatrixUnits(tiles) => conv2d_coop(self.ctx, shape, buffers, relu, tiles),
        }
    }

    fn alloc(&mut self, h: usize, w: usize, c: usize) -> Result<Act> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.buffers.push(self.ctx.storage("resnet50 activation", self.slot_len)?);
                self.buffers.len() - 1
            }
        };
        Ok(Act { id, h, w, c })
    }
}

impl Executor for PlanBuilder<'_> {
    fn conv(&mut self, layer: &ConvBn, x: Act, batch: usize, residual: Option<Act>, relu: bool) -> Result<Act> {
        let shape = layer.shape(batch, x.h, x.w);
        let (h, w) = (shape.out_h(), shape.out_w());
        let buffers =
            self.layers.get(&layer.conv_name).ok_or_else(|| Error::MissingTensor { name: layer.conv_name.clone() })?;
        match buffers {
            LayerBuffers::Folded { weight, bias } => {
                let out = self.alloc(h, w, layer.out_c)?;
                let b = &self.buffers;
                let conv_buffers = Conv2dBuffers {
                    input: &b[x.id],
                    weight,
                    scale: None,
                    bias: Some(bias),
                    residual: residual.map(|r| &b[r.id]),
                    output: &b[out.id],
                };
                let d = self.conv_dispatch(&shape, &conv_buffers, relu)?;
                self.dispatches.push(d);
                Ok(out)
            }
            LayerBuffers::Separate { weight, bn } => {
                let raw = self.alloc(h, w, layer.out_c)?;
                let out = self.alloc(h, w, layer.out_c)?;
                let b = &self.buffers;
                let conv_buffers = Conv2dBuffers {
                    input: &b[x.id],
                    weight,
                    scale: None,
                    bias: None,
                    residual: None,
                    output: &b[raw.id],
                };
                let conv = self.conv_dispatch(&shape, &conv_buffers, false)?;
                let bn_shape = BatchNormShape { len: shape.output_len(), channels: layer.out_c, eps: BN_EPS };
                let bn_buffers = BatchNormBuffers {
                    input: &b[raw.id],
                    weight: &bn[0],
                    bias: &bn[1],
                    running_mean: &bn[2],
                    running_var: &bn[3],
                    residual: residual.map(|r| &b[r.id]),
                    output: &b[out.id],
                };
                let norm = batch_norm(self.ctx, &bn_shape, &bn_buffers, relu)?;
                self.dispatches.extend([conv, norm]);
                self.release(raw);
                Ok(out)
            }
        }
    }

    fn max_pool(&mut self, shape: &MaxPoolShape, x: Act) -> Result<Act> {
        let out = self.alloc(shape.out_h(), shape.out_w(), x.c)?;
        let d = max_pool(self.ctx, shape, &self.buffers[x.id], &self.buffers[out.id])?;
        self.dispatches.push(d);
        Ok(out)
    }

    fn global_avg_pool(&mut self, x: Act, batch: usize) -> Result<Act> {
        // Features get a buffer of their own, never reused, so the plan can hand it out.
        self.buffers.push(self.ctx.storage("resnet50 features", batch * x.c)?);
        let out = Act { id: self.buffers.len() - 1, h: 1, w: 1, c: x.c };
        let d = global_avg_pool(self.ctx, batch, x.h, x.w, x.c, &self.buffers[x.id], &self.buffers[out.id])?;
        self.dispatches.push(d);
        Ok(out)
    }

    fn release(&mut self, x: Act) {
        // The input buffer (id 0) is never recycled: the next forward writes it.
        if x.id != 0 && !self.free.contains(&x.id) {
            self.free.push(x.id);
        }
    }
}
