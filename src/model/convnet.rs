//! The "convnet" embedding net: three 3x3 convolutions with stride 2 and no padding, each
//! with bias and ReLU; global average pooling; a dense layer to `dim`; L2 normalisation.
//! Pixels enter scaled to [0, 1] (u8 / 255).
//!
//! All weights live in one flat `f32` vector ([`ParamLayout`]), so one Adam launch updates
//! them all and one buffer holds them on the GPU. Kernels are HWIO (`[3, 3, in, out]`) and
//! the dense kernel is `[in, out]`, as Keras stores them.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::rng::Rng;
pub use crate::shape::convnet::{ConvGeometry, KERNEL, STRIDE};

/// The architecture: input size and channels, the three convolution widths, embedding width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ConvNetSpec {
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Input channels: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Output channels of conv1..3.
    pub widths: [usize; 3],
    /// Width of the embeddings.
    pub dim: usize,
}

/// Valid (unpadded) output length of a 3x3 stride-2 convolution over `n` pixels.
fn valid_out(n: usize) -> usize {
    if n < KERNEL {
        0
    } else {
        (n - KERNEL) / STRIDE + 1
    }
}

impl ConvNetSpec {
    /// The recipe's net for images of `height` x `width` x `channels`: widths 32, 64, 128
    /// and 8-wide embeddings.
    pub fn recipe(height: usize, width: usize, channels: usize) -> Self {
        Self { height, width, channels, widths: [32, 64, 128], dim: 8 }
    }

    /// The three convolutions in order.
    pub fn convs(&self) -> [ConvGeometry; 3] {
        let mut h = self.height;
        let mut w = self.width;
        let mut c = self.channels;
        self.widths.map(|out_c| {
            let g = ConvGeometry { in_h: h, in_w: w, in_c: c, out_h: valid_out(h), out_w: valid_out(w), out_c };
            (h, w, c) = (g.out_h, g.out_w, out_c);
            g
        })
    }

    /// Smallest side the three valid convolutions leave at least one pixel of.
    pub const MIN_SIDE: usize = 15;

    /// Most channels of any layer (widths, dim, input): 4096 keeps every weight tensor
    /// under 150 M values, far beyond what this net is for, and far below what would fail
    /// to allocate.
    pub const MAX_WIDTH: usize = 4096;

    /// Rejects empty widths and inputs too small to leave a pixel after the third
    /// convolution.
    pub fn validate(&self) -> Result<()> {
        if self.channels == 0 || self.dim == 0 || self.widths.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "convnet: widths {:?}, dim {} and {} input channels must all be at least 1",
                self.widths, self.dim, self.channels
            )));
        }
        let widest = self.widths.iter().chain([&self.dim, &self.channels]).copied().max().unwrap_or(0);
        if widest > Self::MAX_WIDTH {
            return Err(Error::InvalidArgument(format!(
                "convnet: {widest} channels in one layer (widths {:?}, dim {}, {} input channels); at most {}",
                self.widths,
                self.dim,
                self.channels,
                Self::MAX_WIDTH
            )));
        }
        if self.height < Self::MIN_SIDE || self.width < Self::MIN_SIDE {
            return Err(Error::InputTooSmall {
                height: self.height,
                width: self.width,
                min: Self::MIN_SIDE,
                what: "the convnet's three 3x3 stride-2 convolutions".into(),
            });
        }
        Ok(())
    }

    /// Values of one input image.
    pub fn input_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Where each tensor lies in the flat weight vector.
    pub fn layout(&self) -> ParamLayout {
        let [c1, c2, c3] = self.convs();
        let shapes: Vec<(&'static str, Vec<usize>)> = vec![
            ("conv1.kernel", vec![KERNEL, KERNEL, c1.in_c, c1.out_c]),
            ("conv1.bias", vec![c1.out_c]),
            ("conv2.kernel", vec![KERNEL, KERNEL, c2.in_c, c2.out_c]),
            ("conv2.bias", vec![c2.out_c]),
            ("conv3.kernel", vec![KERNEL, KERNEL, c3.in_c, c3.out_c]),
            ("conv3.bias", vec![c3.out_c]),
            ("dense.kernel", vec![c3.out_c, self.dim]),
            ("dense.bias", vec![self.dim]),
        ];
        let mut offset = 0;
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let len = shape.iter().product::<usize>();
                let t = ParamTensor { name, shape, offset, len };
                offset += len;
                t
            })
            .collect();
        ParamLayout { tensors, len: offset }
    }

    /// Multiply-adds of one image's forward pass, counted twice (as FLOPs).
    pub fn forward_flops(&self) -> f64 {
        let convs: f64 = self.convs().iter().map(|g| 2.0 * (g.out_pixels() * g.k() * g.out_c) as f64).sum();
        convs + 2.0 * (self.widths[2] * self.dim) as f64
    }
}

/// One tensor of the flat weight vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamTensor {
    /// Its name, e.g. `conv1.kernel`.
    pub name: &'static str,
    /// Its shape (HWIO for kernels).
    pub shape: Vec<usize>,
    /// Its first element in the flat vector.
    pub offset: usize,
    /// Its elements.
    pub len: usize,
}

impl ParamTensor {
    /// Its elements' range in the flat vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The tensors in the order of the flat vector: conv1..3 kernel and bias, dense kernel and
/// bias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    /// The tensors, in order.
    pub tensors: Vec<ParamTensor>,
    /// Elements of the whole vector.
    pub len: usize,
}

impl ParamLayout {
    /// Tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&ParamTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A convnet: its architecture, all weights (one flat vector in [`ParamLayout`] order), the
/// class names of the data it learned from and free-form provenance written with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvNet {
    /// The architecture.
    pub spec: ConvNetSpec,
    /// All weights, one flat vector in [`ParamLayout`] order.
    pub params: Vec<f32>,
    /// The class names of the data it learned from.
    pub class_names: Vec<String>,
    /// Extra metadata saved with the weights (recipe, steps, seed, data source).
    pub metadata: BTreeMap<String, String>,
}

/// The `architecture` metadata value of a convnet file.
pub const ARCHITECTURE: &str = "convnet";

impl ConvNet {
    /// Keras's initialisation from `seed`: Glorot-uniform kernels (limit √(6 / (fan_in +
    /// fan_out)), fans counting the 3x3 taps), zero biases. Tensors are drawn in layout
    /// order from one seeded SplitMix64 generator.
    pub fn glorot(spec: ConvNetSpec, seed: u64) -> Result<Self> {
        spec.validate()?;
        let layout = spec.layout();
        let mut params = vec![0.0f32; layout.len];
        let mut rng = Rng::new(seed);
        for t in layout.tensors.iter().filter(|t| t.shape.len() > 1) {
            let receptive: usize = t.shape[..t.shape.len() - 2].iter().product();
            let fan_in = receptive * t.shape[t.shape.len() - 2];
            let fan_out = receptive * t.shape[t.shape.len() - 1];
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            for w in &mut params[t.range()] {
                *w = rng.range(-limit, limit);
            }
        }
        Ok(Self { spec, params, class_names: Vec::new(), metadata: BTreeMap::new() })
    }

    /// Rec. 601 luma weights of R, G and B: how [`ConvNet::for_rgb_input`] folds a
    /// one-channel net's first kernel over three channels.
    pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

    /// The same net taking RGB input, as the search pipeline feeds it. A three-channel net
    /// is returned as it is. A one-channel net (trained on grey images) gets its first
    /// kernel `[3, 3, 1, w]` spread over R, G and B with the [`ConvNet::LUMA`] weights:
    /// the convolution is linear, so it then sees the luma of the RGB image, which for a
    /// grey image (R = G = B) is the grey value itself (up to rounding). Other channel
    /// counts are an error.
    pub fn for_rgb_input(&self) -> Result<Self> {
        match self.spec.channels {
            3 => return Ok(self.clone()),
            1 => {}
            other => {
                return Err(Error::InvalidArgument(format!(
                    "a convnet of {other} input channels cannot take RGB images: the pipeline feeds 1- or \
                     3-channel nets"
                )))
            }
        }
        let grey = self.spec.layout();
        if self.params.len() != grey.len {
            return Err(Error::shape("convnet weights", grey.len, self.params.len()));
        }
        let spec = ConvNetSpec { channels: 3, ..self.spec };
        let mut params = Vec::with_capacity(spec.layout().len);
        for t in &grey.tensors {
            let values = &self.params[t.range()];
            if t.name != "conv1.kernel" {
                params.extend_from_slice(values);
                continue;
            }
            // HWIO with one input channel: each tap's row of `w` outputs becomes three rows.
            let outputs = t.shape[3];
            for tap in values.chunks_exact(outputs) {
                for weight in Self::LUMA {
                    params.extend(tap.iter().map(|k| k * weight));
                }
            }
        }
        Ok(Self { spec, params, class_names: self.class_names.clone(), metadata: self.metadata.clone() })
    }

    /// The values of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.spec.layout().tensor(name).map(|t| &self.params[t.range()])
    }

    /// Writes the weights as F32 safetensors a numpy or Keras user can read (`conv1.kernel`
    /// `[3, 3, C, 32]` HWIO, ..., `dense.kernel` `[in, out]`), with the architecture, the
    /// class names and [`ConvNet::metadata`] in the header. The file is replaced atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.safetensors_bytes()?;
        write_atomic(path, |w| w.write_all(&bytes))
    }

    /// SHA-256 (lowercase hex, as `index::sha256_file` gives) of the file [`ConvNet::save`]
    /// writes, without writing it: one net always gives the same bytes.
    pub fn file_sha256(&self) -> Result<String> {
        Ok(super::canonical::sha256_hex(&self.safetensors_bytes()?))
    }

    /// The bytes [`ConvNet::save`] writes.
    pub fn safetensors_bytes(&self) -> Result<Vec<u8>> {
        let layout = self.spec.layout();
        if self.params.len() != layout.len {
            return Err(Error::shape("convnet weights", layout.len, self.params.len()));
        }
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = layout
            .tensors
            .iter()
            .map(|t| (t.name.to_string(), t.shape.clone(), bytemuck::cast_slice(&self.params[t.range()]).to_vec()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::InvalidArgument(format!("convnet tensor {name}: {e}")))
            })
            .collect::<Result<_>>()?;
        let mut metadata = self.metadata.clone();
        let s = &self.spec;
        metadata.insert("architecture".into(), ARCHITECTURE.into());
        metadata.insert("height".into(), s.height.to_string());
        metadata.insert("width".into(), s.width.to_string());
        metadata.insert("channels".into(), s.channels.to_string());
        metadata.insert("widths".into(), s.widths.map(|w| w.to_string()).join(","));
        metadata.insert("dim".into(), s.dim.to_string());
        metadata.insert("class_names".into(), serde_json::to_string(&self.class_names).unwrap_or_default());
        let bytes = safetensors::serialize(views, Some(metadata.into_iter().collect()))
            .map_err(|e| Error::InvalidArgument(format!("convnet: cannot serialise the weights: {e}")))?;
        super::canonical::canonical_header(bytes)
    }

    /// Whether a safetensors file's header names the convnet architecture.
    pub fn is_convnet_file(bytes: &[u8]) -> bool {
        SafeTensors::read_metadata(bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().as_ref().and_then(|m| m.get("architecture").cloned()))
            .is_some_and(|a| a == ARCHITECTURE)
    }

    /// Reads a file [`ConvNet::save`] wrote (F32 tensors, architecture in the metadata).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_safetensors(&bytes, path)
    }

    /// [`ConvNet::load`] from bytes in memory; `path` names them in errors.
    pub fn from_safetensors(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Safetensors { path: path.to_path_buf(), reason };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let mut metadata: BTreeMap<String, String> =
            header.metadata().clone().unwrap_or_default().into_iter().collect();
        match metadata.get("architecture").map(String::as_str) {
            Some(ARCHITECTURE) => {}
            other => return Err(bad(format!("architecture {other:?} in the metadata; expected \"{ARCHITECTURE}\""))),
        }
        let number = |key: &str| -> Result<usize> {
            metadata
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(format!("metadata {key:?} is missing or not a whole number")))
        };
        let widths: Vec<usize> = metadata
            .get("widths")
            .map(|w| w.split(',').map(|x| x.trim().parse()).collect::<std::result::Result<_, _>>())
            .and_then(|r| r.ok())
            .filter(|w: &Vec<usize>| w.len() == 3)
            .ok_or_else(|| bad("metadata \"widths\" must be three whole numbers (e.g. \"32,64,128\")".into()))?;
        let spec = ConvNetSpec {
            height: number("height")?,
            width: number("width")?,
            channels: number("channels")?,
            widths: [widths[0], widths[1], widths[2]],
            dim: number("dim")?,
        };
        spec.validate().map_err(|e| e.in_file(path))?;
        let class_names: Vec<String> = match metadata.get("class_names") {
            Some(json) => serde_json::from_str(json).map_err(|e| bad(format!("metadata \"class_names\": {e}")))?,
            None => Vec::new(),
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let layout = spec.layout();
        let mut params = vec![0.0f32; layout.len];
        for t in &layout.tensors {
            let view =
                st.tensor(t.name).map_err(|_| Error::MissingTensor { name: t.name.to_string() }.in_file(path))?;
            if view.dtype() != Dtype::F32 {
                return Err(Error::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name: t.name.to_string(),
                    dtype: format!("{:?}", view.dtype()),
                    expected: "F32",
                });
            }
            if view.shape() != t.shape.as_slice() {
                return Err(Error::shape(t.name, format!("{:?}", t.shape), format!("{:?}", view.shape())).in_file(path));
            }
            let dst = &mut params[t.range()];
            for (d, b) in dst.iter_mut().zip(view.data().chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            crate::cpu::check_finite(t.name, dst).map_err(|e| e.in_file(path))?;
        }
        for key in ["architecture", "height", "width", "channels", "widths", "dim", "class_names"] {
            metadata.remove(key);
        }
        Ok(Self { spec, params, class_names, metadata })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_geometry_matches_keras() {
        let mnist = ConvNetSpec::recipe(28, 28, 1);
        let sides: Vec<usize> = mnist.convs().iter().map(|g| g.out_h).collect();
        assert_eq!(sides, [13, 6, 2]);
        let cifar = ConvNetSpec::recipe(32, 32, 3);
        assert_eq!(cifar.convs().map(|g| g.out_h), [15, 7, 3]);
        // Keras's model.summary() for 28x28x1: 320 + 18,496 + 73,856 + 1,032 parameters.
        assert_eq!(mnist.layout().len, 320 + 18_496 + 73_856 + 1_032);
        assert!(ConvNetSpec::recipe(14, 28, 1).validate().is_err());
        assert!(ConvNetSpec::recipe(15, 15, 1).validate().is_ok());
    }

    #[test]
    fn glorot_bounds_and_zero_biases() {
        let net = ConvNet::glorot(ConvNetSpec::recipe(28, 28, 1), 3).unwrap();
        let limit = (6.0f32 / (9.0 + 9.0 * 32.0)).sqrt();
        let k1 = net.tensor("conv1.kernel").unwrap();
        assert!(k1.iter().all(|w| w.abs() <= limit));
        assert!(k1.iter().map(|w| w.abs()).fold(0.0, f32::max) > 0.9 * limit);
        assert!(net.tensor("dense.bias").unwrap().iter().all(|&b| b == 0.0));
        assert_ne!(net.params, ConvNet::glorot(ConvNetSpec::recipe(28, 28, 1), 4).unwrap().params);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("lookalike-convnet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let mut net =
            ConvNet::glorot(ConvNetSpec { widths: [4, 5, 6], dim: 3, ..ConvNetSpec::recipe(17, 19, 3) }, 1).unwrap();
        net.class_names = vec!["a\"b".into(), "c".into()];
        net.metadata.insert("seed".into(), "1".into());
        net.save(&path).unwrap();
        let back = ConvNet::load(&path).unwrap();
        assert_eq!(back, net);
        assert!(ConvNet::is_convnet_file(&std::fs::read(&path).unwrap()));
        // One net, one file: the header's metadata map must not change order between saves
        // (each `safetensors_bytes` builds a new HashMap with its own random order).
        let bytes = std::fs::read(&path).unwrap();
        for _ in 0..8 {
            assert_eq!(net.safetensors_bytes().unwrap(), bytes);
            assert_eq!(back.safetensors_bytes().unwrap(), bytes);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rgb_version_of_a_grey_net_sees_grey_images_as_the_grey_net_does() {
        use crate::model::convnet_cpu::embed;
        let spec = ConvNetSpec { widths: [5, 6, 7], dim: 4, ..ConvNetSpec::recipe(19, 17, 1) };
        let grey_net = ConvNet::glorot(spec, 5).unwrap();
        let rgb_net = grey_net.for_rgb_input().unwrap();
        assert_eq!(rgb_net.spec, ConvNetSpec { channels: 3, ..spec });
        assert_eq!(rgb_net.params.len(), rgb_net.spec.layout().len);
        // Every tensor but the first kernel is carried over unchanged.
        for name in ["conv1.bias", "conv2.kernel", "conv3.bias", "dense.kernel", "dense.bias"] {
            assert_eq!(rgb_net.tensor(name), grey_net.tensor(name), "{name}");
        }
        let mut rng = Rng::new(9);
        let batch = 3;
        let grey: Vec<f32> = (0..batch * spec.input_len()).map(|_| rng.int(0, 255) as f32 / 255.0).collect();
        let rgb: Vec<f32> = grey.iter().flat_map(|&g| [g; 3]).collect();
        let expected = embed(&grey_net, &grey, batch).unwrap();
        let got = embed(&rgb_net, &rgb, batch).unwrap();
        let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}: {got:?} vs {expected:?}");
        // A colour image is seen through its luma, not through one channel.
        let colour: Vec<f32> = grey.iter().flat_map(|&g| [g, 1.0 - g, 0.5]).collect();
        let luma: Vec<f32> = colour.chunks_exact(3).map(|p| (0..3).map(|c| ConvNet::LUMA[c] * p[c]).sum()).collect();
        let got = embed(&rgb_net, &colour, batch).unwrap();
        let expected = embed(&grey_net, &luma, batch).unwrap();
        let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst} on a colour image");
        // An RGB net is its own RGB version; other channel counts are refused.
        assert_eq!(rgb_net.for_rgb_input().unwrap(), rgb_net);
        let two = ConvNet::glorot(ConvNetSpec { channels: 2, ..spec }, 1).unwrap();
        assert!(two.for_rgb_input().unwrap_err().to_string().contains("2 input channels"));
    }
}
