//! ResNet50 (torchvision v1.5: the stride sits on the 3x3 convolution): the architecture,
//! its parameters in the file layout, and one walk of the forward shared by every executor.

use crate::error::{Error, Result};
use crate::ops::conv2d::Conv2dShape;
use crate::ops::pool::MaxPoolShape;

/// Feature dimension after global average pooling.
pub const FEATURE_DIM: usize = 2048;
/// Smallest input side accepted: the network downsamples by 32, so this keeps at least
/// one real pixel at the last stage.
pub const MIN_INPUT: usize = 32;
/// PyTorch's batch-norm epsilon.
pub const BN_EPS: f32 = 1e-5;
/// (planes, blocks, first stride) of layer1..layer4.
pub const STAGES: [(usize, usize, usize); 4] = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)];
/// Inference batch-norm parameters of one layer (the `bn*` tensors).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Per-channel scale (γ).
    pub weight: Vec<f32>,
    /// Per-channel shift (β).
    pub bias: Vec<f32>,
    /// Per-channel mean of the training activations.
    pub running_mean: Vec<f32>,
    /// Per-channel variance of the training activations.
    pub running_var: Vec<f32>,
}

impl BatchNorm {
    /// The identity-like layer (weight 1, bias 0, mean 0, var 1 - eps).
    pub fn identity(channels: usize) -> Self {
        Self {
            weight: vec![1.0; channels],
            bias: vec![0.0; channels],
            running_mean: vec![0.0; channels],
            running_var: vec![1.0 - BN_EPS; channels],
        }
    }

    /// Per-channel `(scale, shift)` with `bn(x) = x * scale + shift`.
    pub fn affine(&self) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self.weight.iter().zip(&self.running_var).map(|(w, v)| w / (v + BN_EPS).sqrt()).collect();
        let shift = self.bias.iter().zip(&self.running_mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        (scale, shift)
    }
}

/// A convolution (no bias, as in every ResNet50 conv) followed by its batch-norm.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBn {
    /// Tensor prefix of the convolution, e.g. `layer1.0.conv1`.
    pub conv_name: String,
    /// Tensor prefix of the batch-norm, e.g. `layer1.0.bn1`.
    pub bn_name: String,
    /// Input channels.
    pub in_c: usize,
    /// Output channels.
    pub out_c: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// Stride along both sides.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// `[out_c, in_c, kernel, kernel]` (OIHW), as stored in the file; empty in
    /// [`ResNet50::architecture`].
    pub weight: Vec<f32>,
    /// The batch-norm after it.
    pub bn: BatchNorm,
}

impl ConvBn {
    fn new(conv_name: String, bn_name: String, in_c: usize, out_c: usize, kernel: usize, stride: usize) -> Self {
        Self {
            conv_name,
            bn_name,
            in_c,
            out_c,
            kernel,
            stride,
            pad: kernel / 2,
            weight: Vec::new(),
            bn: BatchNorm::identity(out_c),
        }
    }

    /// Elements of the weight.
    pub fn weight_len(&self) -> usize {
        self.out_c * self.in_c * self.kernel * self.kernel
    }

    /// The file shape of the weight.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.out_c, self.in_c, self.kernel, self.kernel]
    }

    /// The convolution's geometry on a `batch x h x w` input.
    pub fn shape(&self, batch: usize, h: usize, w: usize) -> Conv2dShape {
        Conv2dShape::square(batch, h, w, self.in_c, self.out_c, self.kernel, self.stride, self.pad)
    }

    /// The weight as HWIO (`[kh, kw, in, out]`, a K x out matrix), the kernels' layout.
    pub fn weight_hwio(&self) -> Result<Vec<f32>> {
        if self.weight.len() != self.weight_len() {
            let expected = format!("{:?} ({} values)", self.weight_shape(), self.weight_len());
            return Err(Error::shape(
                format!("{}.weight", self.conv_name),
                expected,
                format!("{} values", self.weight.len()),
            ));
        }
        let (o, i, k) = (self.out_c, self.in_c, self.kernel);
        let mut hwio = vec![0.0; self.weight.len()];
        for co in 0..o {
            for ci in 0..i {
                for kh in 0..k {
                    for kw in 0..k {
                        hwio[((kh * k + kw) * i + ci) * o + co] = self.weight[((co * i + ci) * k + kh) * k + kw];
                    }
                }
            }
        }
        Ok(hwio)
    }

    /// Batch-norm folded into the convolution, as ONNX Runtime does at load: HWIO weight
    /// scaled per output channel, and the bias the epilogue adds.
    pub fn folded(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (scale, shift) = self.bn.affine();
        let mut hwio = self.weight_hwio()?;
        for row in hwio.chunks_exact_mut(self.out_c) {
            for (w, s) in row.iter_mut().zip(&scale) {
                *w *= s;
            }
        }
        Ok((hwio, shift))
    }
}

/// One bottleneck block: 1x1 → 3x3 (stride) → 1x1, plus the projection shortcut in block 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottleneck {
    /// The 1x1 reduction.
    pub conv1: ConvBn,
    /// The 3x3 convolution (with the block's stride).
    pub conv2: ConvBn,
    /// The 1x1 expansion.
    pub conv3: ConvBn,
    /// The projection shortcut (first block of each stage).
    pub downsample: Option<ConvBn>,
}

/// ResNet50's feature extractor (everything before `fc`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResNet50 {
    /// The 7x7 stride-2 stem convolution.
    pub stem: ConvBn,
    /// The 16 bottleneck blocks of layer1..layer4, in order.
    pub blocks: Vec<Bottleneck>,
}

impl ResNet50 {
    /// The architecture, with no weights yet and identity batch-norms.
    pub fn architecture() -> Self {
        let stem = ConvBn::new("conv1".into(), "bn1".into(), 3, 64, 7, 2);
        let mut blocks = Vec::new();
        let mut in_c = 64;
        for (stage, &(planes, count, first_stride)) in STAGES.iter().enumerate() {
            for i in 0..count {
                let p = format!("layer{}.{i}", stage + 1);
                let stride = if i == 0 { first_stride } else { 1 };
                let named = |conv: &str, bn: &str| (format!("{p}.{conv}"), format!("{p}.{bn}"));
                let (c1, b1) = named("conv1", "bn1");
                let (c2, b2) = named("conv2", "bn2");
                let (c3, b3) = named("conv3", "bn3");
                let (cd, bd) = named("downsample.0", "downsample.1");
                blocks.push(Bottleneck {
                    conv1: ConvBn::new(c1, b1, in_c, planes, 1, 1),
                    conv2: ConvBn::new(c2, b2, planes, planes, 3, stride),
                    conv3: ConvBn::new(c3, b3, planes, 4 * planes, 1, 1),
                    downsample: (i == 0).then(|| ConvBn::new(cd, bd, in_c, 4 * planes, 1, stride)),
                });
                in_c = 4 * planes;
            }
        }
        Self { stem, blocks }
    }

    /// Every conv + batch-norm pair, in forward order.
    pub fn convs(&self) -> impl Iterator<Item = &ConvBn> {
        std::iter::once(&self.stem).chain(self.blocks.iter().flat_map(|b| {
            [Some(&b.conv1), Some(&b.conv2), Some(&b.conv3), b.downsample.as_ref()].into_iter().flatten()
        }))
    }

    /// Mutable [`ResNet50::convs`].
    pub fn convs_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        std::iter::once(&mut self.stem).chain(self.blocks.iter_mut().flat_map(|b| {
            [Some(&mut b.conv1), Some(&mut b.conv2), Some(&mut b.conv3), b.downsample.as_mut()].into_iter().flatten()
        }))
    }

    /// Number of parameters of the feature extractor (convs and batch-norms).
    pub fn parameter_count(&self) -> usize {
        self.convs().map(|c| c.weight_len() + 2 * c.out_c).sum()
    }

    /// Rejects inputs the network cannot take.
    pub fn check_input(height: usize, width: usize) -> Result<()> {
        if height < MIN_INPUT || width < MIN_INPUT {
            return Err(Error::InputTooSmall { height, width, min: MIN_INPUT, what: "ResNet50".into() });
        }
        Ok(())
    }

    /// Runs the forward through `exec`, from an NHWC `input` activation to `[batch, 2048]`
    /// features. Activations are released as soon as nothing reads them any more.
    pub(crate) fn walk<E: Executor>(&self, exec: &mut E, input: Act, batch: usize) -> Result<Act> {
        let stem = exec.conv(&self.stem, input, batch, None, true)?;
        let pool = MaxPoolShape { batch, in_h: stem.h, in_w: stem.w, channels: stem.c, kernel: 3, stride: 2, pad: 1 };
        let mut x = exec.max_pool(&pool, stem)?;
        exec.release(stem);
        for block in &self.blocks {
            let t1 = exec.conv(&block.conv1, x, batch, None, true)?;
            let t2 = exec.conv(&block.conv2, t1, batch, None, true)?;
            exec.release(t1);
            let shortcut = match &block.downsample {
                Some(ds) => exec.conv(ds, x, batch, None, false)?,
                None => x,
            };
            let out = exec.conv(&block.conv3, t2, batch, Some(shortcut), true)?;
            exec.release(t2);
            if block.downsample.is_some() {
                exec.release(shortcut);
            }
            exec.release(x);
            x = out;
        }
        let features = exec.global_avg_pool(x, batch)?;
        exec.release(x);
        Ok(features)
    }
}

/// A handle to one activation tensor (`[batch, h, w, c]`) owned by an executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Act {
    /// The executor's handle on its buffer.
    pub id: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

/// What runs (or records) the layers of [`ResNet50::walk`].
pub(crate) trait Executor {
    /// `relu?(bn(conv(x)) + residual)`.
    fn conv(&mut self, layer: &ConvBn, x: Act, batch: usize, residual: Option<Act>, relu: bool) -> Result<Act>;
    /// The stem's 3x3 stride-2 max pooling.
    fn max_pool(&mut self, shape: &MaxPoolShape, x: Act) -> Result<Act>;
    /// The final global average pooling: `[batch, 2048]` features.
    fn global_avg_pool(&mut self, x: Act, batch: usize) -> Result<Act>;
    /// `x` will not be read again.
    fn release(&mut self, x: Act);
}

/// The shape of every convolution of one forward, in order (see [`conv_shapes`]).
#[derive(Default)]
struct ConvShapes(Vec<Conv2dShape>);

impl Executor for ConvShapes {
    fn conv(&mut self, layer: &ConvBn, x: Act, batch: usize, _: Option<Act>, _: bool) -> Result<Act> {
        let s = layer.shape(batch, x.h, x.w);
        self.0.push(s);
        Ok(Act { id: 0, h: s.out_h(), w: s.out_w(), c: layer.out_c })
    }
    fn max_pool(&mut self, shape: &MaxPoolShape, x: Act) -> Result<Act> {
        Ok(Act { id: 0, h: shape.out_h(), w: shape.out_w(), c: x.c })
    }
    fn global_avg_pool(&mut self, x: Act, _: usize) -> Result<Act> {
        Ok(Act { id: 0, h: 1, w: 1, c: x.c })
    }
    fn release(&mut self, _: Act) {}
}

/// The convolutions ResNet50 runs on `batch` images of `height x width`, in order (53 of
/// them, with repeats): what the autotuner times.
pub(crate) fn conv_shapes(batch: usize, height: usize, width: usize) -> Vec<Conv2dShape> {
    let mut shapes = ConvShapes::default();
    // Shapes alone cannot fail.
    let _ = ResNet50::architecture().walk(&mut shapes, Act { id: 0, h: height, w: width, c: 3 }, batch);
    shapes.0
}

/// Walks shapes only: FLOPs and the largest activation of one image at a given input size.
// for the command line's and the benches' FLOP counts
#[doc(hidden)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ShapeWalk {
    /// Multiply-adds of the convolutions, counted as 2 FLOPs each.
    pub flops: f64,
    /// Elements of the largest activation.
    pub largest_activation: usize,
}

impl ShapeWalk {
    /// Shapes of one `height x width` image through ResNet50.
    pub fn resnet50(height: usize, width: usize) -> Self {
        let mut walk = Self::default();
        // Shapes alone cannot fail.
        let _ = ResNet50::architecture().walk(&mut walk, Act { id: 0, h: height, w: width, c: 3 }, 1);
        walk
    }

    fn output(&mut self, h: usize, w: usize, c: usize) -> Act {
        self.largest_activation = self.largest_activation.max(h * w * c);
        Act { id: 0, h, w, c }
    }
}

impl Executor for ShapeWalk {
    fn conv(&mut self, layer: &ConvBn, x: Act, _: usize, _: Option<Act>, _: bool) -> Result<Act> {
        let s = layer.shape(1, x.h, x.w);
        self.flops += s.flops();
        Ok(self.output(s.out_h(), s.out_w(), layer.out_c))
    }
    fn max_pool(&mut self, shape: &MaxPoolShape, x: Act) -> Result<Act> {
        Ok(self.output(shape.out_h(), shape.out_w(), x.c))
    }
    fn global_avg_pool(&mut self, x: Act, _: usize) -> Result<Act> {
        Ok(self.output(1, 1, x.c))
    }
    fn release(&mut self, _: Act) {}
}
