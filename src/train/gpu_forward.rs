//! The convnet's training forward on the GPU: its weights there (a flat vector Adam updates,
//! with copies the convolutions bind) and the launches from a batch of images to the dense
//! outputs, keeping every activation the backward reads. Inference runs through
//! [`crate::model::GpuConvNet`].

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch};
use crate::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use crate::ops::dense::{dense_forward, DenseShape};
use crate::ops::pool::global_avg_pool;
use crate::ops::At;
use crate::train::convnet::{ConvGeometry, ConvNet, ConvNetSpec, ParamTensor, KERNEL, STRIDE};

/// The weights on the GPU: the flat vector (what Adam updates and the dense layer and the
/// backward kernels read at offsets) and a copy of each convolution's kernel and bias in
/// buffers of their own, which the forward convolutions bind whole.
#[derive(Debug)]
pub(crate) struct GpuWeights {
    pub flat: wgpu::Buffer,
    pub len: usize,
    conv_kernels: [wgpu::Buffer; 3],
    conv_biases: [wgpu::Buffer; 3],
    /// (source tensor, destination) of each per-convolution copy.
    copies: Vec<(ParamTensor, usize)>,
    layout: crate::train::ParamLayout,
}

impl GpuWeights {
    pub fn upload(ctx: &Context, net: &ConvNet) -> Result<Self> {
        let layout = net.spec.layout();
        if net.params.len() != layout.len {
            return Err(Error::shape("convnet weights", layout.len, net.params.len()));
        }
        let tensor = |name: &str| layout.tensor(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() });
        let mut copies = Vec::with_capacity(6);
        let mut upload = |name: String, slot: usize| -> Result<wgpu::Buffer> {
            let t = tensor(&name)?;
            copies.push((t.clone(), slot));
            ctx.upload(&name, &net.params[t.range()])
        };
        let conv_kernels =
            [upload("conv1.kernel".into(), 0)?, upload("conv2.kernel".into(), 1)?, upload("conv3.kernel".into(), 2)?];
        let conv_biases =
            [upload("conv1.bias".into(), 3)?, upload("conv2.bias".into(), 4)?, upload("conv3.bias".into(), 5)?];
        Ok(Self {
            flat: ctx.upload("convnet weights", &net.params)?,
            len: layout.len,
            conv_kernels,
            conv_biases,
            copies,
            layout,
        })
    }

    /// Tensor `name` of the flat vector as a kernel argument.
    pub fn at<'a>(&'a self, buffer: &'a wgpu::Buffer, name: &str) -> Result<At<'a>> {
        let t = self.layout.tensor(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        Ok(At::new(buffer, t.offset))
    }

    /// Records the copies that bring the convolutions' own buffers up to the flat vector
    /// (after an update).
    pub fn record_sync(&self, encoder: &mut wgpu::CommandEncoder) {
        for (t, slot) in &self.copies {
            let dst = match slot {
                0..=2 => &self.conv_kernels[*slot],
                _ => &self.conv_biases[*slot - 3],
            };
            encoder.copy_buffer_to_buffer(&self.flat, (t.offset * 4) as u64, dst, 0, (t.len * 4) as u64);
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
    pub conv_out: [wgpu::Buffer; 3],
    pub pooled: wgpu::Buffer,
    pub embeddings: wgpu::Buffer,
    pub dispatches: Vec<Dispatch>,
}

impl Forward {
    pub fn new(
        ctx: &Context, spec: &ConvNetSpec, weights: &GpuWeights, batch: usize, input: &wgpu::Buffer,
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
        let mut dispatches = Vec::with_capacity(5);
        for (i, g) in convs.iter().enumerate() {
            let shape = conv_shape(batch, g);
            let buffers = Conv2dBuffers {
                input: if i == 0 { input } else { &conv_out[i - 1] },
                weight: &weights.conv_kernels[i],
                scale: None,
                bias: Some(&weights.conv_biases[i]),
                residual: None,
                output: &conv_out[i],
            };
            dispatches.push(conv2d(ctx, &shape, &buffers, true, ctx.tuning().gemm_tiles(shape.m(), shape.out_c))?);
        }
        dispatches.push(global_avg_pool(ctx, batch, convs[2].out_h, convs[2].out_w, w3, &conv_out[2], &pooled)?);
        let dense = DenseShape { batch, inputs: w3, outputs: dim };
        let (kernel, bias) = (weights.at(&weights.flat, "dense.kernel")?, weights.at(&weights.flat, "dense.bias")?);
        dispatches.push(dense_forward(ctx, &dense, &pooled, kernel, bias, &embeddings)?);
        Ok(Self { conv_out, pooled, embeddings, dispatches })
    }
}
