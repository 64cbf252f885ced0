//! What produced an index's rows, and the weights that can add to or search it.
//!
//! An index records its network as a [`Provenance`]: the model's name, the weights file
//! and its SHA-256, and the preprocessing. Seeded random ResNet50 weights, which exist in
//! no file, are recorded as a seed tag (`seed:N`) in place of both the path and the hash.
//! [`LoadedWeights`] is a network together with that record: load one from a file or a
//! seed, turn it into a [`Provenance`] with [`LoadedWeights::provenance`], and get back the
//! weights an index was built with by [`LoadedWeights::for_index`], which refuses any
//! other network.

use std::io::Read;
use std::path::Path;

use sha2::Digest;

use super::{paths, Index};
use crate::cpu::preprocess::Preprocess;
use crate::error::{Error, Result};
use crate::model::convnet::ConvNet;
use crate::model::{Backbone, RandomResNet50};

/// Which network and preprocessing produced an index's embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The network: `resnet50` or `convnet` ([`crate::model::Backbone::name`]).
    pub model: String,
    /// The weights file, or a seed tag (`seed:N`). A relative path is relative to the
    /// working directory. [`Index::save`] stores a file below the index's folder relative to
    /// that folder and any other file absolute, and [`Index::load`] gives it back absolute,
    /// so an index and its weights can move together (see the [module docs](super)).
    pub weights_path: String,
    /// SHA-256 of the weights file (lowercase hex), or the seed tag `seed:N`.
    pub weights_sha256: String,
    /// How images were turned into network inputs.
    pub preprocess: Preprocess,
}

impl Provenance {
    /// Whether the weights are seeded ones (`seed:N`), held by no file.
    pub fn is_seeded(&self) -> bool {
        seed_of(&self.weights_sha256).is_some()
    }
}

/// The tag that stands for seeded random ResNet50 weights ([`RandomResNet50::generate`]) in
/// place of a path and a hash: `seed:N`.
pub(crate) fn seed_tag(seed: u64) -> String {
    format!("seed:{seed}")
}

/// The seed of a tag [`seed_tag`] wrote; `None` for anything else (a file's hash).
pub(crate) fn seed_of(tag: &str) -> Option<u64> {
    tag.strip_prefix("seed:").and_then(|seed| seed.parse().ok())
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::model::canonical::hex(&hasher.finalize()))
}

/// A network with where it came from: what an index records of it.
#[derive(Debug, Clone)]
pub struct LoadedWeights {
    /// The network.
    pub net: Backbone,
    /// The file as given, or the seed tag `seed:N`.
    pub path: String,
    /// SHA-256 of the file, or the seed tag `seed:N`.
    pub sha256: String,
}

impl LoadedWeights {
    /// A weights file of either network ([`Backbone::load`]), hashed. The path must be
    /// valid UTF-8, since an index records it as text.
    pub fn from_file(path: &Path) -> Result<Self> {
        // A lossy spelling would name another file.
        let text = path.to_str().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the weights path {} is not valid UTF-8, and an index records it as text: rename the file or \
                 pass a link to it",
                paths::display(path)
            ))
        })?;
        let net = Backbone::load(path)?;
        Ok(Self { net, path: text.to_string(), sha256: sha256_file(path)? })
    }

    /// Seeded random ResNet50 weights ([`RandomResNet50::generate`]), recorded as `seed:N`.
    pub fn from_seed(seed: u64) -> Result<Self> {
        let tag = seed_tag(seed);
        let net = Backbone::ResNet50(RandomResNet50::generate(seed)?.net);
        Ok(Self { net, path: tag.clone(), sha256: tag })
    }

    /// A convnet held in memory (just trained, say), hashed as the file [`ConvNet::save`]
    /// writes (one net always gives the same bytes), so an index built with it accepts that
    /// file later. `path` is what the
    /// index records as the weights' location (where the caller saves the net, or a name).
    pub fn from_convnet(net: ConvNet, path: impl Into<String>) -> Result<Self> {
        let sha256 = net.file_sha256()?;
        Ok(Self { net: Backbone::ConvNet(net), path: path.into(), sha256 })
    }

    /// What an index built with these weights and `preprocess` records.
    pub fn provenance(&self, preprocess: Preprocess) -> Provenance {
        Provenance {
            model: self.net.name().to_string(),
            weights_path: self.path.clone(),
            weights_sha256: self.sha256.clone(),
            preprocess,
        }
    }

    /// The weights `index` was built with: the file `override_path` names, else the file it
    /// records (see [`Provenance::weights_path`]), else its seed. Either way they must be
    /// the network the index records ([`LoadedWeights::check_matches`]).
    pub fn for_index(index: &Index, override_path: Option<&Path>) -> Result<Self> {
        Self::for_provenance(&index.provenance, override_path, "index")
    }

    /// The weights of rows recorded as `recorded` (by an index, or a collection on a
    /// server, which `holder` names in errors), found as [`LoadedWeights::for_index`] finds
    /// them, and refused unless they are that network ([`LoadedWeights::check_recorded`]).
    pub fn for_provenance(recorded: &Provenance, override_path: Option<&Path>, holder: &str) -> Result<Self> {
        let loaded = match (override_path, seed_of(&recorded.weights_sha256)) {
            (Some(path), _) => Self::from_file(path)?,
            (None, Some(seed)) => Self::from_seed(seed)?,
            (None, None) if recorded.weights_sha256.starts_with("seed:") => {
                return Err(Error::InvalidArgument(format!(
                    "the {holder} records unreadable weights {:?}: give the weights file it was built with",
                    recorded.weights_sha256
                )))
            }
            (None, None) => Self::from_file(Path::new(&recorded.weights_path)).map_err(|e| match e {
                Error::Io { path, source } => Error::InvalidArgument(format!(
                    "the {holder}'s weights file {} cannot be read ({source}); give the weights file it was built \
                     with (--weights)",
                    paths::display(&path)
                )),
                other => other,
            })?,
        };
        loaded.check_recorded(recorded, holder)?;
        Ok(loaded)
    }

    /// Refuses weights that are not the network `index` records: another model, or other
    /// weights ([`LoadedWeights::same_network`]). Errors name both.
    pub fn check_matches(&self, index: &Index) -> Result<()> {
        self.check_recorded(&index.provenance, "index")
    }

    /// Refuses weights that are not the network `recorded` names (an index's or a
    /// collection's, which `holder` names in errors): another model, or other weights.
    pub fn check_recorded(&self, recorded: &Provenance, holder: &str) -> Result<()> {
        self.check_model_of(recorded, holder)?;
        if !self.same_network(&recorded.weights_sha256)? {
            // A seed tag is both the path and the hash: said once.
            let named = |path: &str, sha256: &str| match path == sha256 {
                true => sha256.to_string(),
                false => format!("{path} ({sha256})"),
            };
            return Err(Error::InvalidArgument(format!(
                "the {holder} was built with other weights: it records {}, but {} has {}",
                named(&recorded.weights_path, &recorded.weights_sha256),
                self.path,
                self.sha256
            )));
        }
        Ok(())
    }

    /// Refuses weights of another network than the one `index` records as its `model`
    /// (`resnet50` or `convnet`), naming both.
    pub fn check_model(&self, index: &Index) -> Result<()> {
        self.check_model_of(&index.provenance, "index")
    }

    fn check_model_of(&self, recorded: &Provenance, holder: &str) -> Result<()> {
        if recorded.model == self.net.name() {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "the {holder} was built with a {} ({}), but {} holds a {}: give the {} weights the {holder} was built with",
            recorded.model,
            recorded.weights_path,
            self.path,
            self.net.name(),
            recorded.model
        )))
    }

    /// Whether these are the weights an index recorded as `recorded_sha256`: the same hash,
    /// or a seed on one side and, on the other, the file `lookalike weights random --seed N`
    /// ([`crate::model::ResNet50::save`] of [`RandomResNet50`]) writes for it ([`same_weights`]).
    pub fn same_network(&self, recorded_sha256: &str) -> Result<bool> {
        same_weights(&self.sha256, recorded_sha256)
    }
}

/// Whether two recorded weights (a file's SHA-256, or a seed tag `seed:N`) are one
/// network: the same hash, or a seed and the hash of the file `lookalike weights random
/// --seed N` writes for it (generated and hashed, without writing it, only then).
pub fn same_weights(a_sha256: &str, b_sha256: &str) -> Result<bool> {
    if a_sha256 == b_sha256 {
        return Ok(true);
    }
    let (seed, file_sha256) = match (seed_of(a_sha256), seed_of(b_sha256)) {
        (Some(seed), None) => (seed, b_sha256),
        (None, Some(seed)) => (seed, a_sha256),
        _ => return Ok(false),
    };
    let random = RandomResNet50::generate(seed)?;
    Ok(random.net.file_sha256(Some((&random.fc_weight, &random.fc_bias)))? == file_sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_tags_round_trip_and_hashes_are_not_seeds() {
        assert_eq!(seed_of(&seed_tag(0)), Some(0));
        assert_eq!(seed_of(&seed_tag(u64::MAX)), Some(u64::MAX));
        for other in ["", "seed:", "seed:-1", "seed:x", "Seed:1", "e3b0c44298fc1c149afbf4c8996fb924"] {
            assert_eq!(seed_of(other), None, "{other}");
        }
    }

    #[test]
    fn sha256_is_the_standard_digest_and_errors_name_the_file() {
        let path = std::env::temp_dir().join(format!("lookalike-sha256-{}", std::process::id()));
        std::fs::write(&path, b"abc").unwrap();
        let digest = sha256_file(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(digest.unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let err = sha256_file(&path).unwrap_err().to_string();
        assert!(err.contains("lookalike-sha256-"), "{err}");
    }

    #[test]
    fn a_convnet_in_memory_hashes_as_its_saved_file() {
        use crate::model::convnet::ConvNetSpec;
        let spec = ConvNetSpec { widths: [4, 4, 4], dim: 4, ..ConvNetSpec::recipe(16, 16, 1) };
        let net = ConvNet::glorot(spec, 3).unwrap();
        let path = std::env::temp_dir().join(format!("lookalike-convnet-sha-{}.safetensors", std::process::id()));
        net.save(&path).unwrap();
        let from_file = LoadedWeights::from_file(&path);
        std::fs::remove_file(&path).unwrap();
        let in_memory = LoadedWeights::from_convnet(net.clone(), "net.safetensors").unwrap();
        assert_eq!(in_memory.sha256, from_file.unwrap().sha256);
        assert_eq!(in_memory.path, "net.safetensors");
        let other = LoadedWeights::from_convnet(ConvNet::glorot(spec, 4).unwrap(), "other").unwrap();
        assert_ne!(other.sha256, in_memory.sha256);
    }
}
