//! Metric learning: training a small embedding net ([`crate::model::convnet`]) so that images of one
//! class embed close together, by the recipe of Keras's "Metric learning for image
//! similarity search" example.
//!
//! One training step: for each of the C classes an anchor and a different positive image
//! of that class are drawn ([`sampler`]); all 2C images are embedded (unit rows); the
//! logits are anchors · positivesᵀ / T and the loss is the softmax cross-entropy of each
//! anchor row against its own positive (the diagonal), averaged over the C rows; Adam
//! updates every weight.
//!
//! [`Trainer`] runs steps on the GPU ([`gpu::GpuTrainer`]: many steps per submission,
//! no host round trip) or on the CPU twin ([`cpu::CpuTrainer`]); [`evaluate`] scores a
//! net by exact k-NN on a test set. A trained [`ConvNet`] is a backbone of the search
//! pipeline like ResNet50 ([`crate::model::Backbone`]).
//!
//! Train a tiny net a few steps and evaluate it by exact k-NN on a test set (random pixels
//! here, so the scores mean nothing; [`crate::data::load`] reads real sets):
//!
//! ```
//! use lookalike::data::LabelledImages;
//! use lookalike::train::run::{evaluate, Trainer};
//! use lookalike::train::{ConvNet, ConvNetSpec, TrainConfig};
//! use lookalike::Context;
//!
//! # fn main() -> lookalike::Result<()> {
//! let train = LabelledImages::random(4, 6, 16, 16, 1, 1); // 4 classes of 6 grey 16x16 images
//! let test = LabelledImages::random(4, 3, 16, 16, 1, 2);
//! let ctx = Context::new()?;
//! let config = TrainConfig { epochs: 1, steps_per_epoch: 5, ..TrainConfig::default() };
//! let spec = ConvNetSpec { widths: [8, 8, 8], dim: 4, ..ConvNetSpec::recipe(16, 16, 1) };
//! let data = train.grouped_by_class("random".as_ref())?;
//! let mut trainer = Trainer::new(Some(ctx.clone()), ConvNet::glorot(spec, config.seed)?, &data, config)?;
//! let losses = trainer.run(config.steps_per_epoch)?;
//! assert!(losses.iter().all(|loss| loss.is_finite()));
//! let evaluation = evaluate(Some(&ctx), &trainer.net()?, &test)?;
//! assert!((0.0..=1.0).contains(&evaluation.metrics.precision_at_1));
//! assert_eq!(evaluation.neighbours.len(), test.len());
//! # Ok(())
//! # }
//! ```
//!
//! Train a few steps on images in memory, index them, and search by image:
//!
//! ```
//! use lookalike::image::{Rgb, RgbImage};
//! use lookalike::data::LabelledImages;
//! use lookalike::index::{Centring, Entry, Index, Provenance};
//! use lookalike::model::Backbone;
//! use lookalike::ops::matmul::Precision;
//! use lookalike::search::{SearchOptions, Searcher};
//! use lookalike::train::run::{embed_images, Trainer};
//! use lookalike::train::{ConvNet, ConvNetSpec, TrainConfig};
//! use lookalike::Context;
//!
//! # fn main() -> lookalike::Result<()> {
//! // Three classes of 16x16 grey stripes (rows, columns, diagonals), four phases each.
//! let stripe = |class: usize, phase: usize, x: usize, y: usize| [y, x, x + y][class] + phase;
//! let mut images = LabelledImages {
//!     pixels: Vec::new(),
//!     height: 16,
//!     width: 16,
//!     channels: 1,
//!     labels: Vec::new(),
//!     class_names: vec!["rows".into(), "columns".into(), "diagonals".into()],
//! };
//! for class in 0..3 {
//!     for phase in 0..4 {
//!         let pixel = |i: usize| if stripe(class, phase, i % 16, i / 16) % 4 < 2 { 220 } else { 30 };
//!         images.pixels.extend((0..256).map(pixel));
//!         images.labels.push(class as u32);
//!     }
//! }
//! let data = images.grouped_by_class("in memory".as_ref())?;
//!
//! // 30 steps on the GPU (`None` instead of the context: the CPU twin, same pairs).
//! let ctx = Context::new()?;
//! let config = TrainConfig { epochs: 1, steps_per_epoch: 30, ..TrainConfig::default() };
//! let spec = ConvNetSpec { widths: [8, 8, 8], dim: 4, ..ConvNetSpec::recipe(16, 16, 1) };
//! let mut trainer = Trainer::new(Some(ctx.clone()), ConvNet::glorot(spec, config.seed)?, &data, config)?;
//! let losses = trainer.run(config.steps_per_epoch)?;
//! assert!(losses.iter().all(|l| l.is_finite()));
//! let net = trainer.net()?;
//!
//! // Index the images by their unit embeddings...
//! let features = embed_images(Some(&ctx), &net, &data.images)?;
//! let entries = (0..data.images.len())
//!     .map(|i| Entry::new(format!("image-{i}"), Some(images.class_names[data.images.labels[i] as usize].clone())))
//!     .collect();
//! let backbone = Backbone::ConvNet(net);
//! let provenance = Provenance {
//!     model: backbone.name().into(),
//!     weights_path: "in memory".into(),
//!     weights_sha256: "in memory".into(),
//!     preprocess: backbone.default_preprocess()?,
//! };
//! let index = Index::from_features(&features, backbone.feature_dim(), entries, Precision::F32, Centring::Off, provenance)?;
//!
//! // ...and search with a picture of the first one: decode → preprocess → convnet →
//! // normalise → matmul → top-k in one GPU submission.
//! let first = data.images.image(0);
//! let query = RgbImage::from_fn(16, 16, |x, y| Rgb([first[(y * 16 + x) as usize]; 3]));
//! let searcher = Searcher::new(ctx, &backbone, &index, SearchOptions::default())?;
//! let found = &searcher.search_images(&[query], 3)?[0];
//! assert_eq!(found[0].index, 0);
//! assert!(found[0].score > 0.999);
//! # Ok(())
//! # }
//! ```

pub mod cpu;
pub mod eval;
pub mod gpu;
pub(crate) mod gpu_forward;
pub mod run;
pub mod sampler;

pub use crate::model::convnet::{ConvNet, ConvNetSpec, ParamLayout};
pub use run::{evaluate, Evaluation, Trainer};

use crate::error::{Error, Result};
use crate::shape::adam::AdamRates;

/// The training recipe. [`TrainConfig::default`] is the Keras example's: 20 epochs of 1000
/// steps, Adam with learning rate 1e-3, β1 0.9, β2 0.999, ε 1e-7, temperature 0.2.
///
/// Adam as Keras applies it, at step t = 1, 2, ...:
/// `m += (g - m)(1 - β1)`, `v += (g² - v)(1 - β2)`,
/// `w -= lr·√(1 - β2ᵗ)/(1 - β1ᵗ) · m / (√v + ε)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Passes of `steps_per_epoch` steps.
    pub epochs: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Adam's learning rate.
    pub learning_rate: f32,
    /// T of the logits anchors · positivesᵀ / T.
    pub temperature: f32,
    /// Adam's decay of the first moments.
    pub beta1: f32,
    /// Adam's decay of the second moments.
    pub beta2: f32,
    /// Adam's ε.
    pub epsilon: f32,
    /// Seeds the initial weights and, with the step number, every step's pairs.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            steps_per_epoch: 1000,
            learning_rate: 1e-3,
            temperature: 0.2,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Rejects a learning rate or temperature that is not positive and finite, betas outside
    /// [0, 1) and an epsilon that is negative.
    pub fn validate(&self) -> Result<()> {
        let positive = |x: f32| x.is_finite() && x > 0.0;
        let beta = |x: f32| (0.0..1.0).contains(&x);
        if !positive(self.learning_rate) || !positive(self.temperature) {
            return Err(Error::InvalidArgument(format!(
                "learning rate ({}) and temperature ({}) must be positive and finite",
                self.learning_rate, self.temperature
            )));
        }
        if !(beta(self.beta1) && beta(self.beta2) && self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "Adam needs betas in [0, 1) and epsilon >= 0 (got {}, {}, {})",
                self.beta1, self.beta2, self.epsilon
            )));
        }
        Ok(())
    }

    /// Steps over all epochs.
    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch
    }

    /// Adam's decay rates and ε, as the update kernels take them.
    pub fn adam_rates(&self) -> AdamRates {
        AdamRates { beta1: self.beta1, beta2: self.beta2, epsilon: self.epsilon }
    }

    /// Adam's step size at step `t` (1-based) after bias correction:
    /// `lr·√(1 - β2ᵗ)/(1 - β1ᵗ)`, in f64 so both twins agree on it.
    pub fn adam_step_size(&self, t: u64) -> f32 {
        let t = t as i32;
        let (b1, b2) = (self.beta1 as f64, self.beta2 as f64);
        (self.learning_rate as f64 * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t))) as f32
    }
}

/// What both trainers check before anything runs: a valid architecture and weight vector,
/// images of the net's input size, a class-grouped set of at least 2 classes of at least 2
/// images each, the net's class names (taken from the data when it has none) and the recipe
/// ([`TrainConfig::validate`]).
pub(crate) fn check_training(net: &mut ConvNet, data: &crate::data::ClassGrouped, config: &TrainConfig) -> Result<()> {
    let spec = net.spec;
    spec.validate()?;
    crate::cpu::check_slice("convnet weights", &net.params, spec.layout().len)?;
    let images = &data.images;
    run::check_input(net, images)?;
    let classes = data.class_counts.len();
    if classes < 2 || data.class_offsets.len() != classes {
        return Err(Error::InvalidArgument(format!(
            "training needs at least 2 classes with an offset each; got {classes} counts and {} offsets",
            data.class_offsets.len()
        )));
    }
    for (c, (&offset, &count)) in data.class_offsets.iter().zip(&data.class_counts).enumerate() {
        if count < 2 || offset as usize + count as usize > images.len() {
            return Err(Error::InvalidArgument(format!(
                "class {c}: {count} images from {offset} in a set of {}; each class needs at least 2 \
                 (group the set with LabelledImages::grouped_by_class)",
                images.len()
            )));
        }
    }
    if net.class_names.is_empty() {
        net.class_names = images.class_names.clone();
    } else if net.class_names != images.class_names {
        return Err(Error::InvalidArgument(format!(
            "the net was trained on classes {:?} but the data has {:?}",
            net.class_names, images.class_names
        )));
    }
    // What a step holds per image (input, each convolution's output and its im2col
    // columns), for the 2C images of a batch: refused here rather than failing to allocate.
    let per_image: usize =
        spec.input_len() + spec.convs().iter().map(|g| g.out_pixels() * (g.out_c + g.k())).sum::<usize>();
    let values = per_image.saturating_mul(2 * data.class_counts.len());
    if values > MAX_STEP_VALUES {
        return Err(Error::InvalidArgument(format!(
            "a step over {} classes of {}x{}x{} images with widths {:?} needs {values} activation values, more \
             than {MAX_STEP_VALUES}: use smaller images (--size) or narrower --widths",
            data.class_counts.len(),
            spec.height,
            spec.width,
            spec.channels,
            spec.widths
        )));
    }
    config.validate()
}

/// Most activation values one training step may hold (2 GiB of f32).
pub(crate) const MAX_STEP_VALUES: usize = 1 << 29;
