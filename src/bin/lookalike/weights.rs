//! Where a command's network comes from: a safetensors file (ResNet50 or a trained
//! convnet, told apart by the file's metadata) or a seed (ResNet50).

use std::path::{Path, PathBuf};

use lookalike::index::{sha256_file, Index};
use lookalike::model::{Backbone, RandomResNet50};
use lookalike::{Error, Result};

/// A loaded network and how an index records it.
pub struct LoadedWeights {
    pub net: Backbone,
    /// The file as given, or `seed:N`.
    pub path: String,
    /// SHA-256 of the file, or `seed:N`.
    pub sha256: String,
}

/// `--weights FILE` (either network) or `--seed N` (seeded random ResNet50 weights).
pub fn load(weights: Option<&Path>, seed: Option<u64>) -> Result<LoadedWeights> {
    match (weights, seed) {
        (Some(path), _) => {
            // An index records it as text; a lossy spelling would name another file.
            let text = path.to_str().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the weights path {} is not valid UTF-8, and an index records it as text: rename the file \
                     or pass a link to it",
                    lookalike::index::paths::display(path)
                ))
            })?;
            let net = Backbone::load(path)?;
            Ok(LoadedWeights { net, path: text.to_string(), sha256: sha256_file(path)? })
        }
        (None, Some(seed)) => {
            let tag = format!("seed:{seed}");
            let net = Backbone::ResNet50(RandomResNet50::generate(seed)?.net);
            Ok(LoadedWeights { net, path: tag.clone(), sha256: tag })
        }
        (None, None) => {
            Err(Error::InvalidArgument("give --weights FILE (or --seed N for seeded random weights)".into()))
        }
    }
}

/// The weights an index was built with, or `override_path`; either way they must hash to
/// what the index recorded.
pub fn for_index(index: &Index, override_path: Option<&PathBuf>) -> Result<LoadedWeights> {
    let recorded = &index.provenance;
    let loaded = match (override_path, recorded.weights_sha256.strip_prefix("seed:")) {
        (Some(path), _) => load(Some(path), None)?,
        (None, Some(seed)) => {
            let seed = seed.parse().map_err(|_| {
                Error::InvalidArgument(format!("index records unreadable weights {:?}", recorded.weights_sha256))
            })?;
            load(None, Some(seed))?
        }
        (None, None) => load(Some(Path::new(&recorded.weights_path)), None).map_err(|e| match e {
            Error::Io { path, source } => Error::InvalidArgument(format!(
                "the index's weights file {} cannot be read ({source}); pass --weights",
                path.display()
            )),
            other => other,
        })?,
    };
    check_model(&loaded, index)?;
    if !same_network(&loaded, &recorded.weights_sha256)? {
        return Err(Error::InvalidArgument(format!(
            "the index was built with other weights: it records {} ({}), but {} has {}",
            recorded.weights_path, recorded.weights_sha256, loaded.path, loaded.sha256
        )));
    }
    Ok(loaded)
}

/// Refuses weights of another network than the one the index records as its `model`
/// (`resnet50` or `convnet`), naming both, before their hashes are compared.
pub fn check_model(loaded: &LoadedWeights, index: &Index) -> Result<()> {
    let recorded = &index.provenance;
    if recorded.model == loaded.net.name() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "the index was built with a {} ({}), but {} holds a {}: give the {} weights the index was built with",
        recorded.model,
        recorded.weights_path,
        loaded.path,
        loaded.net.name(),
        recorded.model
    )))
}

/// Whether `loaded` is the network an index recorded as `recorded_sha256`: the same hash,
/// or a seed on one side and, on the other, the file `lookalike weights random --seed N`
/// writes for it (hashed without writing it, only when the tags differ).
pub fn same_network(loaded: &LoadedWeights, recorded_sha256: &str) -> Result<bool> {
    if loaded.sha256 == recorded_sha256 {
        return Ok(true);
    }
    let seed_of = |tag: &str| tag.strip_prefix("seed:").and_then(|s| s.parse::<u64>().ok());
    let (seed, file_sha256) = match (seed_of(&loaded.sha256), seed_of(recorded_sha256)) {
        (Some(seed), None) => (seed, recorded_sha256),
        (None, Some(seed)) => (seed, loaded.sha256.as_str()),
        _ => return Ok(false),
    };
    let random = RandomResNet50::generate(seed)?;
    Ok(random.net.file_sha256(Some((&random.fc_weight, &random.fc_bias)))? == file_sha256)
}
