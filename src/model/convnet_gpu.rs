//! The convnet's inference forward on the GPU, as the search pipeline and `embed` chain it:
//! three `conv2d` launches (3x3, stride 2, no padding, bias and ReLU in the epilogue),
//! global average pooling, the dense layer as a 1x1 `conv2d` over a 1x1 image (bias, no
//! ReLU) and `l2_normalize`: the unit embeddings [`crate::model::convnet_cpu::embed`] computes.
//!
//! Weights are uploaded once; for each batch size a plan (buffers and dispatches) is built
//! once and replayed, like [`crate::model::GpuResNet50`]'s.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Readback};
use crate::model::convnet::{ConvGeometry, ConvNet, ConvNetSpec, KERNEL, STRIDE};
use crate::model::{check_features, F32_OVERFLOW};
use crate::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use crate::ops::l2_normalize::l2_normalize;
use crate::ops::pool::global_avg_pool;
use crate::ops::Tuning;

/// One layer's weights on the GPU: an HWIO kernel and its bias.
#[derive(Clone)]
struct Layer {
    shape: Conv2dShape,
    kernel: wgpu::Buffer,
    bias: wgpu::Buffer,
}

/// One prepared batch size.
struct Plan {
    input: wgpu::Buffer,
    features: wgpu::Buffer,
    readback: Readback,
    dispatches: Vec<Dispatch>,
    /// [`GpuConvNet::uses`] when last handed out.
    last_used: u64,
    // The activations the dispatches bind.
    _activations: Vec<wgpu::Buffer>,
}

/// Plans kept per network (see [`GpuConvNet::prepared`]).
const MAX_PLANS: usize = 4;

/// A trained convnet resident on the GPU, taking RGB input (a one-channel net through
/// [`ConvNet::for_rgb_input`]).
pub struct GpuConvNet {
    /// The RGB net's architecture.
    spec: ConvNetSpec,
    /// conv1..3 at batch 1, then the dense layer as a 1x1 convolution.
    layers: [Layer; 4],
    tuning: Tuning,
    plans: HashMap<usize, Plan>,
    uses: u64,
}

impl GpuConvNet {
    /// Uploads the weights of `net` (of 1 or 3 input channels). Its convolutions use the
    /// built-in launch shapes for `ctx`'s adapter ([`Tuning::for_adapter`]) unless
    /// [`GpuConvNet::with_tuning`] gives others.
    pub fn new(ctx: &Context, net: &ConvNet) -> Result<Self> {
        let net = net.for_rgb_input()?;
        let spec = net.spec;
        spec.validate()?;
        if net.params.len() != spec.layout().len {
            return Err(Error::shape("convnet weights", spec.layout().len, net.params.len()));
        }
        let [c1, c2, c3] = spec.convs();
        let conv = |g: ConvGeometry| Conv2dShape::square(1, g.in_h, g.in_w, g.in_c, g.out_c, KERNEL, STRIDE, 0);
        let dense = Conv2dShape::square(1, 1, 1, c3.out_c, spec.dim, 1, 1, 0);
        let shapes = [("conv1", conv(c1)), ("conv2", conv(c2)), ("conv3", conv(c3)), ("dense", dense)];
        let upload = |name: String| {
            let values = net.tensor(&name).ok_or_else(|| Error::MissingTensor { name: name.clone() })?;
            ctx.upload(&format!("convnet {name}"), values)
        };
        let layers = shapes.map(|(name, shape)| {
            Ok(Layer { shape, kernel: upload(format!("{name}.kernel"))?, bias: upload(format!("{name}.bias"))? })
        });
        let [l1, l2, l3, l4] = layers;
        let tuning = Tuning::for_adapter(ctx.adapter_info());
        Ok(Self { spec, layers: [l1?, l2?, l3?, l4?], tuning, plans: HashMap::new(), uses: 0 })
    }

    /// The same net with these launch shapes (an autotune result, `tune::load_for`).
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self.plans.clear();
        self
    }

    /// The same network with no plans, sharing the uploaded weights (wgpu buffers are
    /// shared handles).
    pub(crate) fn sharing_weights(&self) -> Self {
        Self { spec: self.spec, layers: self.layers.clone(), tuning: self.tuning, plans: HashMap::new(), uses: 0 }
    }

    /// The architecture of the RGB net it runs.
    pub fn spec(&self) -> &ConvNetSpec {
        &self.spec
    }

    /// Width of its embeddings.
    pub fn dim(&self) -> usize {
        self.spec.dim
    }

    /// Refuses inputs of another size than the net's: it learned its embedding at that size.
    pub fn check_input(&self, height: usize, width: usize) -> Result<()> {
        check_input(&self.spec, height, width)
    }

    /// Bytes of one image's largest activation (or its input, if larger).
    fn image_bytes(&self) -> u64 {
        let largest = self.spec.convs().iter().map(|g| g.out_pixels() * g.out_c).max().unwrap_or(0);
        largest.max(self.spec.input_len()) as u64 * 4
    }

    /// Largest batch one submit can take: every activation must fit one storage binding.
    pub fn max_batch(&self, ctx: &Context) -> usize {
        (ctx.max_binding_bytes() / self.image_bytes().max(1)) as usize
    }

    /// An error naming the limit where one image's activations exceed the device's largest
    /// storage binding.
    pub fn check_fits(&self, ctx: &Context) -> Result<()> {
        let (needed, limit) = (self.image_bytes(), ctx.max_binding_bytes());
        if needed <= limit {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "one {}x{} image needs {needed} bytes for the convnet's largest activation, more than this device's \
             largest storage binding ({limit} bytes): use a device with larger limits",
            self.spec.height, self.spec.width
        )))
    }

    /// `[batch, h, w, 3]` NHWC images scaled as the net was trained (u8 / 255) → `[batch,
    /// dim]` unit embeddings. Batches larger than [`GpuConvNet::max_batch`] run as several
    /// submits.
    pub fn forward(
        &mut self, ctx: &Context, input: &[f32], batch: usize, height: usize, width: usize,
    ) -> Result<Vec<f32>> {
        self.check_input(height, width)?;
        let image_len = height * width * 3;
        crate::cpu::check_slice("convnet input", input, batch * image_len)?;
        crate::cpu::check_finite("convnet input", input)?;
        self.check_fits(ctx)?;
        let (dim, max_batch) = (self.spec.dim, self.max_batch(ctx));
        let mut features = Vec::with_capacity(batch * dim);
        for chunk in input.chunks(max_batch * image_len) {
            let n = chunk.len() / image_len;
            let plan = self.plan(ctx, n)?;
            ctx.write(&plan.input, chunk);
            let refs: Vec<&Dispatch> = plan.dispatches.iter().collect();
            let part = ctx
                .run_and_read_into(&refs, &[(&plan.features, &plan.readback, n * dim)])
                .map(|mut v| v.pop().unwrap_or_default())?;
            check_features(&part, dim, features.len() / dim, "convnet", F32_OVERFLOW)?;
            features.extend_from_slice(&part);
        }
        Ok(features)
    }

    /// The prepared forward for `batch` images of `height x width` (the net's size): its
    /// NHWC input buffer, its `[batch, dim]` unit embeddings buffer and its dispatches, for
    /// callers that record the backbone into a larger submit. `batch` must not exceed
    /// [`GpuConvNet::max_batch`]. Only the four most recently used plans are
    /// kept: a caller that binds a plan's buffers elsewhere must check they are still the
    /// plan's.
    pub fn prepared(
        &mut self, ctx: &Context, batch: usize, height: usize, width: usize,
    ) -> Result<(&wgpu::Buffer, &wgpu::Buffer, &[Dispatch])> {
        self.check_input(height, width)?;
        self.check_fits(ctx)?;
        let max_batch = self.max_batch(ctx);
        if batch == 0 || batch > max_batch {
            return Err(Error::InvalidArgument(format!(
                "a batch of {batch} images of {height}x{width}: between 1 and {max_batch} fit this device's largest \
                 storage binding ({} bytes); split the batch (GpuConvNet::max_batch)",
                ctx.max_binding_bytes()
            )));
        }
        let plan = self.plan(ctx, batch)?;
        Ok((&plan.input, &plan.features, &plan.dispatches))
    }

    fn plan(&mut self, ctx: &Context, batch: usize) -> Result<&Plan> {
        self.uses += 1;
        if !self.plans.contains_key(&batch) {
            if self.plans.len() >= MAX_PLANS {
                let oldest = self.plans.iter().min_by_key(|(_, plan)| plan.last_used).map(|(key, _)| *key);
                oldest.and_then(|oldest| self.plans.remove(&oldest));
            }
            let plan = self.build_plan(ctx, batch)?;
            self.plans.insert(batch, plan);
        }
        let plan = self.plans.get_mut(&batch).ok_or_else(|| Error::InvalidArgument("convnet plan cache".into()))?;
        plan.last_used = self.uses;
        Ok(plan)
    }

    fn build_plan(&self, ctx: &Context, batch: usize) -> Result<Plan> {
        let (spec, dim) = (&self.spec, self.spec.dim);
        let input = ctx.storage("convnet input", batch * spec.input_len())?;
        let mut activations = Vec::new();
        let mut dispatches = Vec::new();
        // conv1..3 and the dense layer, each reading the previous output (the pooled
        // features for the dense layer).
        for (i, layer) in self.layers.iter().enumerate() {
            let shape = Conv2dShape { batch, ..layer.shape };
            let source = activations.last().unwrap_or(&input);
            let output = ctx.storage("convnet activation", shape.output_len())?;
            let buffers = Conv2dBuffers {
                input: source,
                weight: &layer.kernel,
                scale: None,
                bias: Some(&layer.bias),
                residual: None,
                output: &output,
            };
            let relu = i < 3;
            dispatches.push(conv2d(ctx, &shape, &buffers, relu, self.tuning.gemm_tiles(shape.m(), shape.out_c))?);
            activations.push(output);
            if i == 2 {
                let pooled = ctx.storage("convnet pooled", batch * shape.out_c)?;
                let last = &activations[2];
                dispatches.push(global_avg_pool(ctx, batch, shape.out_h(), shape.out_w(), shape.out_c, last, &pooled)?);
                activations.push(pooled);
            }
        }
        let embeddings = activations.last().ok_or_else(|| Error::InvalidArgument("convnet plan".into()))?;
        let features = ctx.storage("convnet unit embeddings", batch * dim)?;
        dispatches.push(l2_normalize(ctx, batch, dim, embeddings, None, &features)?);
        Ok(Plan {
            input,
            features,
            readback: ctx.readback(batch * dim),
            dispatches,
            last_used: 0,
            _activations: activations,
        })
    }
}

/// Refuses inputs of another size than `spec`'s.
pub(crate) fn check_input(spec: &ConvNetSpec, height: usize, width: usize) -> Result<()> {
    if (height, width) == (spec.height, spec.width) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "the convnet takes {}x{} images (the size it was trained on), not {height}x{width}: preprocess to that \
         size (leave out --resize and --crop, or give --crop {})",
        spec.height, spec.width, spec.height
    )))
}
