//! lookalike: image similarity search on the GPU with handwritten WGSL kernels.
//!
//! An image becomes its k nearest images in a database, entirely on the GPU: decode →
//! preprocess → backbone (ResNet50, or a small convnet trained by [`train`]) → centring +
//! L2 normalisation → one matmul against the normalised reference matrix (cosine k-NN as a
//! dense layer) → top-k; only k ids and scores come back. Every kernel has a CPU twin in
//! [`cpu`], the oracle of the tests, and is usable on its own buffers ([`ops`]).
//!
//! # The common path
//!
//! Open an index and the network it was built with (checked against the SHA-256 the index
//! records), then search by image path, here from two threads at once: a [`Searcher`]
//! answers through `&self`.
//!
//! ```no_run
//! use lookalike::{Context, Index, LoadedWeights, SearchOptions, Searcher};
//!
//! # fn main() -> lookalike::Result<()> {
//! let index = Index::load("photos.index".as_ref())?;
//! // The weights file the index records (or pass Some(path) for one moved elsewhere).
//! let weights = LoadedWeights::for_index(&index, None)?;
//! let searcher = Searcher::with_weights(Context::new()?, &weights, &index, SearchOptions::default())?;
//! let [a, b] = std::thread::scope(|s| {
//!     let a = s.spawn(|| searcher.search_paths(&["query-a.jpg"], 5));
//!     let b = s.spawn(|| searcher.search_paths(&["query-b.jpg"], 5));
//!     [a.join(), b.join()].map(|answer| answer.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
//! });
//! for neighbour in a?[0].iter().chain(&b?[0]) {
//!     println!("{:.3} {}", neighbour.score, index.entries[neighbour.index].path.display());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! An index from features computed elsewhere (`[rows, dim]`, raw: centring and
//! normalisation happen inside), searched by features; [`search`] shows the image paths:
//!
//! ```
//! use lookalike::index::{Centring, Entry, Provenance};
//! use lookalike::{Context, Index, Precision, SearchOptions, Searcher};
//!
//! # fn main() -> lookalike::Result<()> {
//! let (rows, dim) = (100, 16);
//! let features: Vec<f32> = (0..rows * dim).map(|i| ((i * 7919 % 1009) as f32).sin()).collect();
//! let entries = (0..rows).map(|i| Entry::new(format!("row-{i}"), None)).collect();
//! let provenance = Provenance { model: "features".into(), weights_path: String::new(), weights_sha256: String::new(), preprocess: Default::default() };
//! let index = Index::from_features(&features, dim, entries, Precision::F16, Centring::Mean, provenance)?;
//! let searcher = Searcher::for_features(Context::new()?, &index, SearchOptions::default())?;
//! let found = searcher.search_features(&features[42 * dim..43 * dim], 3)?;
//! assert_eq!(found[0][0].index, 42);
//! # Ok(())
//! # }
//! ```
//!
//! A folder of images becomes an index through an [`IndexBuilder`]: named options, the
//! network's own preprocessing unless told otherwise, and the weights' SHA-256 recorded so
//! that a search can check it runs the same network (see [`index`] for extending one):
//!
//! ```no_run
//! use lookalike::{Context, IndexBuilder, LoadedWeights, Precision};
//!
//! # fn main() -> lookalike::Result<()> {
//! let weights = LoadedWeights::from_file("resnet50.safetensors".as_ref())?;
//! let index = IndexBuilder::new(Context::new()?, &weights)
//!     .precision(Precision::F16)
//!     .centred(true)
//!     .progress(|done, total| eprint!("\r{done}/{total}"))
//!     .from_folder("photos".as_ref())?;
//! index.save("photos.index".as_ref())?;
//! # Ok(())
//! # }
//! ```
//!
//! # Modules
//!
//! - [`search`]: the [`Searcher`]: image paths, decoded images or features in, neighbours out.
//! - [`index`]: the reference database ([`Index`], built by [`IndexBuilder`]): rows, entries,
//!   provenance (the weights as [`LoadedWeights`]), the file.
//! - [`embed`]: images to features ([`Embedder`]), on the GPU or the CPU.
//! - [`model`]: the backbones ([`Backbone`]): ResNet50 and the trained convnet.
//! - [`train`]: metric learning of a convnet on labelled images, and its evaluation.
//! - [`data`]: labelled image sets (IDX, CIFAR, folders) for training.
//! - [`classify`]: a label by vote of the neighbours', and the confusion matrix.
//! - [`ops`]: the GPU kernels as building blocks on your own buffers.
//! - [`cpu`]: the CPU twin of every kernel, and image decoding and preprocessing.
//! - [`shape`]: the kernels' shapes and the settings both twins share (preprocessing, precision).
//! - [`gpu`]: the [`Context`] (device, queue, limits, pipeline cache) and dispatches.
//! - [`tune`]: measuring the kernels' launch shapes for an adapter.
//! - [`npy`]: reading and writing `.npy` arrays.
//! - [`error`]: the one [`Error`] type.
//!
//! Activations are NHWC f32 throughout (channels innermost); the public `.npy` inputs are
//! NCHW, as numpy and PyTorch write them, and are transposed on load.

#![warn(missing_docs)]

mod atomic;
pub mod classify;
#[doc(hidden)]
pub mod compare;
pub mod cpu;
pub mod data;
pub mod embed;
pub mod error;
pub mod gpu;
pub mod index;
#[cfg(feature = "milvus")]
pub mod milvus;
pub mod model;
pub mod npy;
pub mod ops;
// the command line's figures
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod render;
#[doc(hidden)]
pub mod rng;
pub mod search;
pub mod shape;
pub mod train;
pub mod tune;

/// The wgpu version lookalike is built on, whose types appear in its signatures (buffers,
/// backends, limits): use `lookalike::wgpu` to name them without a dependency of your own.
pub use wgpu;

/// The image crate lookalike decodes with, whose [`image::RgbImage`] the searches and
/// [`Embedder`] take: use `lookalike::image` to make or load one.
pub use image;

/// The f16 type of the crate `half`, which f16 indexes store their rows in
/// ([`index::Embeddings::F16`]).
pub use half;

/// The crate `bytemuck`, whose `Pod` bound [`Context::upload_pod`] and [`Context::uniform`]
/// take (the type of a uniform block of one's own kernels must be `Pod`; its derive macro
/// wants `bytemuck` as a direct dependency).
pub use bytemuck;

pub use embed::Embedder;
pub use error::{Error, Result};
pub use gpu::Context;
pub use index::{Index, IndexBuilder, LoadedWeights};
pub use model::Backbone;
pub use search::{Neighbor, SearchOptions, Searcher};
pub use shape::matmul::Precision;
pub use shape::preprocess::Preprocess;
