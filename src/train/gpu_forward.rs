//! The convnet's training forward on the GPU: its weights there (a flat vector Adam updates,
//! with copies the convolutions bind) and the launches from a batch of images to the dense
//! outputs, keeping every activation the backward reads. Inference runs through
//! [`crate::model::GpuConvNet`].

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch};
use crate::model::convnet::{ConvGeometry, ConvNet, ConvNetSpec, ParamLayout, ParamTensor, KERNEL, STRIDE};
use crate::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use crate::ops::dense::{dense_forward, DenseShape};
use crate::ops::pool::global_avg_pool;
use crate::ops::{At, Tuning};

/// The weights on the GPU: the flat vector (what Adam updates and the dense layer and the
/// backward kernels read at offsets) and a copy of each convolution's kernel and bias in
/// buffers of their own, which the forward convolutions bind whole
/// ([`crate::ops::conv2d::conv2d`] takes no offsets).
#[derive(Debug)]
pub(crate) struct GpuWeights {
    pub flat: wgpu::Buffer,
    pub len: usize,
    layout: ParamLayout,
    /// Kernel and bias of each convolution: where they lie in the flat vector, and their copy.
    convs: [[(ParamTensor, wgpu::Buffer); 2]; 3],
}

impl GpuWeights {
    pub fn upload(ctx: &Context, net: &ConvNet) -> Result<Self> {
        let layout = net.spec.layout();
        if net.params.len() != layout.len {
            return Err(Error::shape("convnet weights", layout.len, net.params.len()));
        }
        let copy = |name: String| -> Result<(ParamTensor, wgpu::Buffer)> {
            let t = layout.tensor(&name).ok_or_else(|| Error::MissingTensor { name: name.clone() })?;
            Ok((t.clone(), ctx.upload(&name, &net.params[t.range()])?))
        };
        let conv = |i: usize| -> Result<[(ParamTensor, wgpu::Buffer); 2]> {
            Ok([copy(format!("conv{i}.kernel"))?, copy(format!("conv{i}.bias"))?])
        };
        let convs = [conv(1)?, conv(2)?, conv(3)?];
        Ok(Self { flat: ctx.upload("convnet weights", &net.params)?, len: layout.len, layout, convs })
    }

    /// Tensor `name`, at its offset into `buffer` (the flat vector or one laid out like it).
    pub fn at<'a>(&self, buffer: &'a wgpu::Buffer, name: &str) -> Result<At<'a>> {
        let t = self.layout.tensor(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        Ok(At::new(buffer, t.offset))
    }

    /// The kernel and bias buffers of convolution `i` (0-based).
    fn conv(&self, i: usize) -> (&wgpu::Buffer, &wgpu::Buffer) {
        (&self.convs[i][0].1, &self.convs[i][1].1)
    }

    /// Records the copies that bring the convolutions' own buffers up to the flat vector
    /// (after an update).
    pub fn record_sync(&self, encoder: &mut wgpu::CommandEncoder) {
        for (t, copy) in self.convs.iter().flatten() {
            encoder.copy_buffer_to_buffer(&self.flat, (t.offset * 4) as u64, copy, 0, (t.len * 4) as u64);
        }
    }
}

/// The launch shape of convolution `g` over `batch` images.
pub(crate) fn conv_shape(batch: usize, g: &ConvGeometry) -> Conv2dShape {
    Conv2dShape::square(batch, g.in_h, g.in_w, g.in_c, g.out_c, KERNEL, STRIDE, 0)
}

/// The activations of a forward over `batch` images and the launches that compute them
/// from `input` (NHWC f32 in [0, 1]): post-ReLU outputs of the three convolutions, the
/// pooled features and the dense outputs (not yet normalised).
#[derive(Debug)]
pub(crate) struct Forward {
    pub batch: usize,
    pub conv_out: [wgpu::Buffer; 3],
    pub pooled: wgpu::Buffer,
    pub embeddings: wgpu::Buffer,
    pub dispatches: Vec<Dispatch>,
}

impl Forward {
    pub fn new(
        ctx: &Context, spec: &ConvNetSpec, weights: &GpuWeights, batch: usize, input: &wgpu::Buffer, tuning: &Tuning,
    ) -> Result<Self> {
        spec.validate()?;
        let convs = spec.convs();
        let conv_out = [0, 1, 2]
            .map(|i| ctx.storage(&format!("conv{} output", i + 1), batch * convs[i].out_pixels() * convs[i].out_c));
        let [c1, c2, c3] = conv_out;
        let conv_out = [c1?, c2?, c3?];
        let (w3, dim) = (spec.widths[2], spec.dim);
        let pooled = ctx.storage("pooled features", batch * w3)?;
        let embeddings = ctx.storage("dense outputs", batch * dim)?;
        let mut forward = Self { batch, conv_out, pooled, embeddings, dispatches: Vec::with_capacity(5) };
        forward.dispatches = forward.convolutions(ctx, spec, weights, input, tuning)?;
        let (conv_out, pooled) = (&forward.conv_out[2], &forward.pooled);
        forward.dispatches.push(global_avg_pool(ctx, batch, convs[2].out_h, convs[2].out_w, w3, conv_out, pooled)?);
        let dense = DenseShape { batch, inputs: w3, outputs: dim };
        let (kernel, bias) = (weights.at(&weights.flat, "dense.kernel")?, weights.at(&weights.flat, "dense.bias")?);
        forward.dispatches.push(dense_forward(ctx, &dense, pooled, kernel, bias, &forward.embeddings)?);
        Ok(forward)
    }

    /// The launches of the three convolutions (the first three of [`Forward::dispatches`])
    /// with the tiles `tuning` gives them.
    pub fn convolutions(
        &self, ctx: &Context, spec: &ConvNetSpec, weights: &GpuWeights, input: &wgpu::Buffer, tuning: &Tuning,
    ) -> Result<Vec<Dispatch>> {
        let (batch, conv_out) = (self.batch, &self.conv_out);
        let mut dispatches = Vec::with_capacity(3);
        for (i, g) in spec.convs().iter().enumerate() {
            let shape = conv_shape(batch, g);
            let (kernel, bias) = weights.conv(i);
            let buffers = Conv2dBuffers {
                input: if i == 0 { input } else { &conv_out[i - 1] },
                weight: kernel,
                scale: None,
                bias: Some(bias),
                residual: None,
                output: &conv_out[i],
            };
            dispatches.push(conv2d(ctx, &shape, &buffers, true, tuning.gemm_tiles(shape.m(), shape.out_c))?);
        }
        Ok(dispatches)
    }
}
