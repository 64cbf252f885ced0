//! lookalike: image similarity search on the GPU with handwritten WGSL kernels.
//!
//! An image becomes its k nearest images in a database, entirely on the GPU: decode →
//! preprocess → backbone (ResNet50, or a convnet trained by [`train`]: see
//! [`model::Backbone`]) → centring + L2 normalisation → one matmul against the normalised
//! reference matrix (cosine k-NN as a dense layer) → top-k; only k ids and scores come back.
//! Every kernel has a CPU twin in [`cpu`], the oracle of the tests. [`train`] learns
//! embedding nets by metric learning, whole training steps on the GPU, and a trained net
//! serves as the pipeline's backbone in place of ResNet50 ([`model::Backbone`]).
//!
//! Activations are NHWC f32 throughout (channels innermost, as fast engines use); the
//! public `.npy` inputs are NCHW, as numpy and PyTorch write them, and are transposed on
//! load.
//!
//! ```no_run
//! use lookalike::cpu::preprocess::decode_file;
//! use lookalike::index::{IndexBuilder, LoadedWeights};
//! use lookalike::ops::matmul::Precision;
//! use lookalike::search::{SearchOptions, Searcher};
//! use lookalike::Context;
//!
//! # fn main() -> lookalike::Result<()> {
//! // ResNet50 or a trained convnet, told apart by the file's metadata, with its SHA-256.
//! let weights = LoadedWeights::from_file("resnet50.safetensors".as_ref())?;
//! let net = &weights.net;
//!
//! // Index a folder (labels from its sub-folders), centred, stored as f16, with the
//! // network's preprocessing (ResNet50: resize 256, crop 224, ImageNet mean/std). Clones
//! // of one context share its device and compiled pipelines.
//! let ctx = Context::new()?;
//! let index = IndexBuilder::new(ctx.clone(), &weights)
//!     .precision(Precision::F16)
//!     .centred(true)
//!     .from_folder("photos".as_ref())?;
//! index.save("photos.index".as_ref())?;
//!
//! // Query: pixels in, the 5 nearest rows out.
//! let mut searcher = Searcher::new(ctx, net, &index, SearchOptions::default())?;
//! for n in &searcher.search_images(&[decode_file("query.jpg".as_ref())?], 5)?[0] {
//!     println!("{:.3} {}", n.score, index.entries[n.index].path.display());
//! }
//! # Ok(())
//! # }
//! ```

mod atomic;
pub mod classify;
pub mod compare;
pub mod cpu;
pub mod data;
pub mod embed;
pub mod error;
pub mod gpu;
pub mod index;
pub mod model;
pub mod npy;
pub mod ops;
#[cfg(feature = "cli")]
pub mod render;
pub mod rng;
pub mod search;
pub mod shape;
pub mod train;
pub mod tune;

pub use error::{Error, Result};
pub use gpu::Context;
