//! Queries embedded on this machine's GPU, searched by the server.

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbImage;

use super::collection::{Collection, Hit};
use crate::cpu::preprocess::check_image;
use crate::embed::{for_each_decoded_run, Embedder};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::index::LoadedWeights;
use crate::ops::Tuning;

/// Query files decoded at once, at most (fewer where large: [`crate::embed::decode_run_len`]).
const PATH_RUN: usize = 32;

/// Searches a [`Collection`] by image: each query is preprocessed, embedded, centred on the
/// collection's mean and normalised on the GPU ([`Embedder::embed_decoded_unit`]), exactly
/// as an index's queries are, and the server ranks the rows by inner product.
pub struct CollectionSearcher {
    collection: Collection,
    embedder: Embedder,
    params: BTreeMap<String, String>,
}

impl std::fmt::Debug for CollectionSearcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionSearcher")
            .field("collection", &self.collection)
            .field("params", &self.params)
            .finish()
    }
}

impl CollectionSearcher {
    /// Embeds with `weights` on `ctx` (the built-in launch shapes, or `tuning`); refused
    /// unless they are the network the collection records (model and SHA-256, a seed and
    /// the file it writes being the same).
    pub fn new(ctx: Context, weights: &LoadedWeights, collection: Collection, tuning: Option<Tuning>) -> Result<Self> {
        weights.check_recorded(&collection.layout().provenance, &format!("collection `{}`", collection.name()))?;
        if weights.net.feature_dim() != collection.layout().dim {
            return Err(Error::shape(
                "collection",
                format!("{}-d rows, as the {} gives", weights.net.feature_dim(), weights.net.name()),
                format!("{}-d rows", collection.layout().dim),
            ));
        }
        let mut embedder = Embedder::gpu(ctx, &weights.net)?;
        if let Some(tuning) = tuning {
            embedder = embedder.with_tuning(tuning);
        }
        Ok(Self { collection, embedder, params: BTreeMap::new() })
    }

    /// The same searcher passing `params` to the server's search (`ef` for HNSW, `nprobe`
    /// for IVF_FLAT; none for FLAT).
    pub fn with_search_params(mut self, params: BTreeMap<String, String>) -> Self {
        self.params = params;
        self
    }

    /// The collection it searches.
    pub fn collection(&self) -> &Collection {
        &self.collection
    }

    /// The unit query rows of decoded images, as the server receives them.
    pub fn embed_images(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
        let layout = self.collection.layout();
        let preprocess = layout.provenance.preprocess;
        for image in images {
            check_image(image, &preprocess)?;
        }
        self.embedder.embed_decoded_unit(images, &preprocess, layout.mean.as_deref())
    }

    /// The `k` nearest rows of each decoded image, best first.
    pub fn search_images(&mut self, images: &[RgbImage], k: usize) -> Result<Vec<Vec<Hit>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let queries = self.embed_images(images)?;
        self.collection.search_units(&queries, k, &self.params)
    }

    /// The `k` nearest rows of each image file, best first; files are decoded in parallel,
    /// a bounded run at a time. The first file that cannot be read or used is the error,
    /// naming it.
    pub fn search_paths<P: AsRef<Path> + Sync>(&mut self, paths: &[P], k: usize) -> Result<Vec<Vec<Hit>>> {
        let preprocess = self.collection.layout().provenance.preprocess;
        let mut results = Vec::with_capacity(paths.len());
        for_each_decoded_run(paths, &preprocess, PATH_RUN, |images| {
            results.extend(self.search_images(&images, k)?);
            Ok(())
        })?;
        Ok(results)
    }
}
