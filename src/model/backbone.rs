//! The networks the search pipeline embeds images with: ResNet50 or a trained convnet
//! ([`crate::model::convnet`]), behind one [`Backbone`] that `embed`, `index` and `search`
//! take, with its GPU and CPU forwards.

use std::path::Path;

use crate::cpu::preprocess::Preprocess;
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch};
use crate::model::convnet::{ConvNet, ARCHITECTURE};
use crate::model::convnet_gpu::{self, GpuConvNet};
use crate::model::{BatchNormMode, CpuResNet50, GpuResNet50, ResNet50, FEATURE_DIM};
use crate::ops::Tuning;

/// A feature extractor: ResNet50 (torchvision's layout) or a trained convnet.
#[derive(Debug, Clone, PartialEq)]
pub enum Backbone {
    /// ResNet50.
    ResNet50(ResNet50),
    /// A trained convnet.
    ConvNet(ConvNet),
}

/// A borrowed [`Backbone`], what the embedder and the searcher
/// take: `&Backbone`, `&ResNet50` and `&ConvNet` all convert into it.
#[derive(Debug, Clone, Copy)]
pub enum BackboneRef<'a> {
    /// ResNet50.
    ResNet50(&'a ResNet50),
    /// A trained convnet.
    ConvNet(&'a ConvNet),
}

impl Backbone {
    /// Reads a safetensors weights file of either network: a file whose metadata names the
    /// convnet architecture ([`ConvNet::is_convnet_file`]) is a convnet, any other one is
    /// read as ResNet50. Errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if ConvNet::is_convnet_file(&bytes) {
            ConvNet::from_safetensors(&bytes, path).map(Backbone::ConvNet)
        } else {
            ResNet50::from_safetensors(&bytes, path).map(Backbone::ResNet50)
        }
        .map_err(|e| e.in_file(path))
    }

    /// This backbone, borrowed.
    pub fn borrowed(&self) -> BackboneRef<'_> {
        match self {
            Backbone::ResNet50(net) => BackboneRef::ResNet50(net),
            Backbone::ConvNet(net) => BackboneRef::ConvNet(net),
        }
    }

    /// What an index records as its `model`: `resnet50` or `convnet`.
    pub fn name(&self) -> &'static str {
        self.borrowed().name()
    }

    /// Width of its feature rows: 2048, or the convnet's embedding width.
    pub fn feature_dim(&self) -> usize {
        self.borrowed().feature_dim()
    }

    /// The preprocessing its features are meant for (see [`BackboneRef::default_preprocess`]).
    pub fn default_preprocess(&self) -> Result<Preprocess> {
        self.borrowed().default_preprocess()
    }

    /// Refuses an input size the network cannot take.
    pub fn check_input(&self, height: usize, width: usize) -> Result<()> {
        self.borrowed().check_input(height, width)
    }
}

impl From<ResNet50> for Backbone {
    fn from(net: ResNet50) -> Self {
        Backbone::ResNet50(net)
    }
}

impl From<ConvNet> for Backbone {
    fn from(net: ConvNet) -> Self {
        Backbone::ConvNet(net)
    }
}

impl<'a> From<&'a Backbone> for BackboneRef<'a> {
    fn from(net: &'a Backbone) -> Self {
        net.borrowed()
    }
}

impl<'a> From<&'a ResNet50> for BackboneRef<'a> {
    fn from(net: &'a ResNet50) -> Self {
        BackboneRef::ResNet50(net)
    }
}

impl<'a> From<&'a ConvNet> for BackboneRef<'a> {
    fn from(net: &'a ConvNet) -> Self {
        BackboneRef::ConvNet(net)
    }
}

/// The `model` an index built with ResNet50 records.
pub const RESNET50: &str = "resnet50";

impl BackboneRef<'_> {
    /// `resnet50` or `convnet` (as an index's `model` records it).
    pub fn name(&self) -> &'static str {
        match self {
            BackboneRef::ResNet50(_) => RESNET50,
            BackboneRef::ConvNet(_) => ARCHITECTURE,
        }
    }

    /// Width of its feature rows: 2048, or the convnet's embedding width.
    pub fn feature_dim(&self) -> usize {
        match self {
            BackboneRef::ResNet50(_) => FEATURE_DIM,
            BackboneRef::ConvNet(net) => net.spec.dim,
        }
    }

    /// ResNet50: the ImageNet evaluation transform ([`Preprocess::default`]). Convnet: its
    /// input side for both resize and crop, mean 0 and std 1, so pixels enter as u8 / 255
    /// as it was trained (an image of that size passes through unchanged). Pipeline crops
    /// are square, so a convnet of non-square input is refused.
    pub fn default_preprocess(&self) -> Result<Preprocess> {
        match self {
            BackboneRef::ResNet50(_) => Ok(Preprocess::default()),
            BackboneRef::ConvNet(net) => {
                let (height, width) = (net.spec.height, net.spec.width);
                if height != width {
                    return Err(Error::InvalidArgument(format!(
                        "the convnet takes {height}x{width} images, and the image pipeline crops squares: \
                         train the net on square images"
                    )));
                }
                let side = u32::try_from(height)
                    .map_err(|_| Error::InvalidArgument(format!("the convnet's input side {height} is too large")))?;
                Ok(Preprocess { resize: side, crop: side, mean: [0.0; 3], std: [1.0; 3] })
            }
        }
    }

    /// Refuses an input size the network cannot take: ResNet50 takes any from
    /// [`crate::model::MIN_INPUT`], a convnet only the size it was trained on.
    pub fn check_input(&self, height: usize, width: usize) -> Result<()> {
        match self {
            BackboneRef::ResNet50(_) => ResNet50::check_input(height, width),
            BackboneRef::ConvNet(net) => convnet_gpu::check_input(&net.spec, height, width),
        }
    }
}

/// A [`Backbone`] resident on the GPU, its forward ready to run alone or to be recorded
/// into a larger submit (the search pipeline).
// One per embedder or searcher, never moved in a hot loop: the size difference is harmless.
#[allow(clippy::large_enum_variant)]
pub enum GpuBackbone {
    /// ResNet50.
    ResNet50(GpuResNet50),
    /// A trained convnet.
    ConvNet(GpuConvNet),
}

impl GpuBackbone {
    /// Uploads `net` (ResNet50 with batch-norm folded). With `matrix_units`, ResNet50's
    /// convolutions run on `ctx`'s matrix units ([`GpuResNet50::on_matrix_units`]); the
    /// convnet has no such path and refuses them.
    pub fn new<'a>(ctx: &Context, net: impl Into<BackboneRef<'a>>, matrix_units: bool) -> Result<Self> {
        match net.into() {
            BackboneRef::ResNet50(net) => {
                let gpu = GpuResNet50::new(ctx, net, BatchNormMode::Folded)?;
                Ok(GpuBackbone::ResNet50(if matrix_units { gpu.on_matrix_units(ctx)? } else { gpu }))
            }
            BackboneRef::ConvNet(_) if matrix_units => Err(Error::InvalidArgument(
                "the convnet runs in f32 only; its convolutions have no matrix-unit path: leave out \
                 --experimental-coop"
                    .into(),
            )),
            BackboneRef::ConvNet(net) => Ok(GpuBackbone::ConvNet(GpuConvNet::new(ctx, net)?)),
        }
    }

    /// The same network with no prepared forwards, sharing the uploaded weights: a
    /// second set of activations, so two threads can run it at once.
    pub(crate) fn sharing_weights(&self) -> Self {
        match self {
            GpuBackbone::ResNet50(net) => GpuBackbone::ResNet50(net.sharing_weights()),
            GpuBackbone::ConvNet(net) => GpuBackbone::ConvNet(net.sharing_weights()),
        }
    }

    /// The same network with these launch shapes (an autotune result, `tune::load_for`);
    /// without this call, the built-in ones for the context's adapter.
    pub fn with_tuning(self, tuning: Tuning) -> Self {
        match self {
            GpuBackbone::ResNet50(net) => GpuBackbone::ResNet50(net.with_tuning(tuning)),
            GpuBackbone::ConvNet(net) => GpuBackbone::ConvNet(net.with_tuning(tuning)),
        }
    }

    /// `resnet50` or `convnet`.
    pub fn name(&self) -> &'static str {
        match self {
            GpuBackbone::ResNet50(_) => RESNET50,
            GpuBackbone::ConvNet(_) => ARCHITECTURE,
        }
    }

    /// Width of its feature rows.
    pub fn feature_dim(&self) -> usize {
        match self {
            GpuBackbone::ResNet50(_) => FEATURE_DIM,
            GpuBackbone::ConvNet(net) => net.dim(),
        }
    }

    /// Largest batch one submit can take at `height x width`.
    pub fn max_batch(&self, ctx: &Context, height: usize, width: usize) -> usize {
        match self {
            GpuBackbone::ResNet50(_) => GpuResNet50::max_batch(ctx, height, width),
            GpuBackbone::ConvNet(net) => net.max_batch(ctx),
        }
    }

    /// An error saying what to do where `height x width` inputs cannot run: a size the
    /// network does not take, or activations larger than the device's largest binding.
    pub fn check_fits(&self, ctx: &Context, height: usize, width: usize) -> Result<()> {
        match self {
            GpuBackbone::ResNet50(_) => {
                ResNet50::check_input(height, width)?;
                GpuResNet50::check_fits(ctx, height, width)
            }
            GpuBackbone::ConvNet(net) => {
                net.check_input(height, width)?;
                net.check_fits(ctx)
            }
        }
    }

    /// Why its features can come out non-finite, for the error that says so.
    pub(crate) fn overflow_cause(&self) -> &'static str {
        match self {
            GpuBackbone::ResNet50(net) => net.overflow_cause(),
            GpuBackbone::ConvNet(_) => crate::model::F32_OVERFLOW,
        }
    }

    /// `[batch, h, w, 3]` NHWC preprocessed images → `[batch, feature_dim]` features
    /// (ResNet50's pooled features; the convnet's unit embeddings).
    pub fn forward(
        &mut self, ctx: &Context, input: &[f32], batch: usize, height: usize, width: usize,
    ) -> Result<Vec<f32>> {
        match self {
            GpuBackbone::ResNet50(net) => net.forward(ctx, input, batch, height, width),
            GpuBackbone::ConvNet(net) => net.forward(ctx, input, batch, height, width),
        }
    }

    /// The prepared forward for `batch` images: its NHWC input buffer, its `[batch,
    /// feature_dim]` features buffer and its dispatches (see [`GpuResNet50::prepared`]).
    pub fn prepared(
        &mut self, ctx: &Context, batch: usize, height: usize, width: usize,
    ) -> Result<(&wgpu::Buffer, &wgpu::Buffer, &[Dispatch])> {
        match self {
            GpuBackbone::ResNet50(net) => net.prepared(ctx, batch, height, width),
            GpuBackbone::ConvNet(net) => net.prepared(ctx, batch, height, width),
        }
    }
}

/// A [`Backbone`] prepared for the CPU reference.
pub enum CpuBackbone {
    /// ResNet50 with its weights laid out for the CPU.
    ResNet50(CpuResNet50),
    /// The RGB form of the net ([`ConvNet::for_rgb_input`]).
    ConvNet(ConvNet),
}

impl CpuBackbone {
    /// Prepares `net` for the CPU forward.
    pub fn new<'a>(net: impl Into<BackboneRef<'a>>) -> Result<Self> {
        match net.into() {
            BackboneRef::ResNet50(net) => Ok(CpuBackbone::ResNet50(CpuResNet50::new(net)?)),
            BackboneRef::ConvNet(net) => Ok(CpuBackbone::ConvNet(net.for_rgb_input()?)),
        }
    }

    /// Width of its feature rows.
    pub fn feature_dim(&self) -> usize {
        match self {
            CpuBackbone::ResNet50(_) => FEATURE_DIM,
            CpuBackbone::ConvNet(net) => net.spec.dim,
        }
    }

    /// `[batch, h, w, 3]` NHWC preprocessed images → `[batch, feature_dim]` features, as
    /// [`GpuBackbone::forward`] computes them.
    pub fn forward(&self, input: &[f32], batch: usize, height: usize, width: usize) -> Result<Vec<f32>> {
        match self {
            CpuBackbone::ResNet50(net) => net.forward(input, batch, height, width),
            CpuBackbone::ConvNet(net) => {
                convnet_gpu::check_input(&net.spec, height, width)?;
                crate::cpu::check_finite("convnet input", input)?;
                let features = crate::model::convnet_cpu::embed(net, input, batch)?;
                crate::model::check_features(&features, net.spec.dim, 0, "convnet", crate::model::F32_OVERFLOW)?;
                Ok(features)
            }
        }
    }
}
