//! Beyond one machine: a lookalike index handed to a Milvus server, images embedded
//! straight into a collection (in shards, from many machines), and queries embedded here
//! and searched there. Behind the `milvus` cargo feature, through the official Milvus Rust
//! SDK.
//!
//! lookalike keeps the GPU work (pixels to unit embeddings); the server keeps the rows and
//! searches them. A collection holds:
//! - `id` INT64, the primary key: the row of an exported index, or for images embedded
//!   straight into it a 62-bit hash of the path (see [`fill`]);
//! - `embedding`: the unit row (centred first in a centred collection), a FLOAT_VECTOR
//!   of the rows' width, or FLOAT16_VECTOR for f16 rows where the server takes it
//!   ([`VectorType`]);
//! - `path` and `label` VARCHARs (label null where an image has no class);
//! - properties `lookalike.*` recording the [`Layout`]: the network (model, weights
//!   SHA-256), preprocessing, precision and centring mean, so any machine embeds queries
//!   and new rows exactly as the rows in it were, and refuses where it would not.
//!
//! The metric is inner product over unit rows: cosine similarity, lookalike's score. With
//! the exact structure ([`AnnKind::Flat`]) the server returns what lookalike's own scan
//! returns.
//!
//! Export an index, then search it by image through the server (the queries are embedded,
//! centred and normalised on this machine's GPU, as for the index file):
//!
//! ```no_run
//! # fn main() -> lookalike::Result<()> {
//! use lookalike::milvus::{export_index, CollectionSearcher, CreateOptions, Server};
//! use lookalike::{Context, Index, LoadedWeights};
//!
//! let server = Server::new("http://127.0.0.1:19530");
//! let index = Index::load("photos.index".as_ref())?;
//! let options = CreateOptions::default(); // FLAT: exact
//! let (collection, report) =
//!     export_index(&index, &server, "photos", &options, 1000, |done, total| eprintln!("{done}/{total} rows"))?;
//! eprintln!("{} rows written, {} already there", report.written, report.already_there);
//!
//! // The weights the rows were made with (the collection records their SHA-256).
//! let weights = LoadedWeights::for_provenance(&collection.layout().provenance, None, "collection")?;
//! let mut searcher = CollectionSearcher::new(Context::new()?, &weights, collection, None)?;
//! for hit in &searcher.search_paths(&["query.jpg"], 5)?[0] {
//!     println!("{:+.4} {} {:?}", hit.score, hit.path, hit.label);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`fill_from_folder`] embeds one [`Shard`] of a folder straight into a collection, so N
//! machines fill one collection; see [`fill`].

mod ann;
mod collection;
mod connection;
mod export;
pub mod fill;
mod layout;
mod search;

pub use ann::{AnnIndex, AnnKind};
pub use collection::{Collection, CreateOptions, Hit};
pub use connection::Server;
pub use export::{export_index, ExportReport};
pub use fill::{fill_from_folder, FillOptions, FillReport, Shard};
pub use layout::{Layout, VectorType};
pub use search::CollectionSearcher;
