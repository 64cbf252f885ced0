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
//! use lookalike::cpu::preprocess::{decode_file, Preprocess};
//! use lookalike::embed::Embedder;
//! use lookalike::index::{scan_folder, Index, Provenance};
//! use lookalike::model::Backbone;
//! use lookalike::ops::matmul::Precision;
//! use lookalike::search::{SearchOptions, Searcher};
//! use lookalike::Context;
//!
//! # fn main() -> lookalike::Result<()> {
//! // ResNet50 or a trained convnet, told apart by the file's metadata.
//! let net = Backbone::load("resnet50.safetensors".as_ref())?;
//! let preprocess = net.default_preprocess()?; // ResNet50: resize 256, crop 224, ImageNet mean/std
//!
//! // Index a folder (labels from its sub-folders), centred, stored as f16. Clones of one
//! // context share its device and compiled pipelines.
//! let ctx = Context::new()?;
//! let mut embedder = Embedder::gpu(ctx.clone(), &net)?;
//! let files = scan_folder("photos".as_ref())?;
//! let found = embedder.embed_labelled_files(&files, &preprocess, 32, |_| {})?;
//! let provenance = Provenance {
//!     model: net.name().into(),
//!     weights_path: "resnet50.safetensors".into(),
//!     weights_sha256: lookalike::index::sha256_file("resnet50.safetensors".as_ref())?,
//!     preprocess,
//! };
//! let dim = net.feature_dim();
//! let index = Index::from_features(&found.features, dim, found.entries, Precision::F16, true, provenance)?;
//! index.save("photos.index".as_ref())?;
//!
//! // Query: pixels in, the 5 nearest rows out.
//! let searcher = Searcher::new(ctx, &net, &index, SearchOptions::default())?;
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
pub mod render;
pub mod rng;
pub mod search;
pub mod train;
pub mod tune;

/// The wgpu version lookalike is built on, whose types appear in its signatures (buffers,
/// backends, limits): use `lookalike::wgpu` to name them without a dependency of your own.
pub use wgpu;

/// The image crate lookalike decodes with, whose [`image::RgbImage`] the searches and
/// [`Embedder`] take: use `lookalike::image` to make or load one.
pub use image;

pub use embed::Embedder;
pub use error::{Error, Result};
pub use gpu::Context;
pub use index::Index;
pub use model::Backbone;
pub use search::{Neighbor, SearchOptions, Searcher};
