//! The reference database: L2-normalised embeddings plus what produced them, in one
//! safetensors file that numpy / safetensors users can read.
//!
//! Build one from a folder of images or from features, or add to one, with
//! [`IndexBuilder`]; the network and what the index records of it (file, SHA-256, or seed)
//! are a [`LoadedWeights`] ([`provenance`]). [`Index::save`] and [`Index::load`] write and
//! read the file.
//!
//! File layout:
//! - `embeddings` `[N, D]` F32 or F16: unit-norm rows (after subtracting `mean` when the
//!   index is centred), so a query's cosine similarity to row i is `q_unit · embeddings[i]`.
//! - `mean` `[D]` F32, only in centred indexes: subtracted from every feature (database
//!   rows and queries) before normalising.
//! - metadata (`__metadata__`, strings): `format` = `lookalike-index`, `version`, `model`,
//!   `weights_path`, `weights_sha256`, `resize`, `crop`, `mean_rgb`, `std_rgb`, `dim`,
//!   `count`, `centered`, and `paths` / `labels` as JSON arrays (label `null` when a file sat
//!   directly in the indexed folder).
//! - Since version 2 (`paths_base` = `index_dir`), a relative path is relative to the folder
//!   holding the index file: images at or below that folder are stored that way, so the
//!   index and its images can move together; others are stored absolute. `index_dir` is
//!   that folder when the file was written: an index file copied elsewhere alone still finds
//!   images that are missing beside it but present there (left out when that folder's name
//!   is not UTF-8). Version 1 files stored paths as given (relative ones to the working
//!   directory of the build).
//! - `weights_path_base` = `index_dir` (written since it was added; readers that predate
//!   it ignore it): `weights_path` is stored as `paths` are, relative to the index's folder
//!   where the weights file lies below it, else absolute, and found the same way (beside the
//!   index, else under `index_dir`); [`Index::load`] gives it back absolute. Without the
//!   key, as in older files and for seed tags (`seed:N`), `weights_path` is as recorded,
//!   a relative one being relative to the working directory.
//! - A path that is not valid UTF-8 is stored losslessly, as Python's `os.fsdecode` names it
//!   (undecodable bytes as `\udcXX` escapes): `os.fsencode(json.loads(meta["paths"])[i])`
//!   gives its bytes back.
//! - Checksums: tensor `embeddings_crc32` `[N]` U32, the zlib CRC-32 of each `embeddings`
//!   row's little-endian bytes, and metadata `crc32`, a JSON object `{"metadata": {KEY:
//!   CRC-32}, "tensors": {NAME: CRC-32}}` over every other metadata value (its UTF-8) and
//!   over `mean` and `embeddings_crc32`. Readers that predate them ignore both, so the
//!   version stays 2; version 2 files written before them load on the invariants alone, and
//!   version 1 files are read without them.
//!
//! [`Index::load`] checks what every well-formed index holds (finite values, unit-norm or
//! all-zero rows within their dtype's rounding, a finite `mean`, consistent shapes) and the
//! checksums when present: a damaged file is an error naming the tensor and row.
//!
//! Writers of one index file take turns through [`WriteLock`]; readers never wait and never
//! see a torn file (every write replaces the file by an atomic rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod builder;
mod embeddings;
mod file;
mod lock;
// for the command line and the fuzz tests
#[doc(hidden)]
pub mod paths;
pub mod provenance;
mod scan;
// for the index_load example
#[doc(hidden)]
pub mod verify;

pub use builder::{IndexBuilder, Skipped};
pub use embeddings::{mean_row, normalize_rows, Centring, Embeddings};
use file::{TensorData, TensorFile};
pub use lock::{Wait, WriteLock};
use paths::index_dir;
pub use provenance::{same_weights, sha256_file, LoadedWeights, Provenance};
pub use scan::{is_image_name, scan_folder, scan_folder_with, FileId, FolderScan, ScanOptions};
use verify::{damaged, Checksums, ROW_CRC32};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::shape::Precision;
use crate::shape::Preprocess;

const FORMAT: &str = "lookalike-index";
const VERSION: &str = "2";
/// The `paths_base` value of version 2: relative paths start at the index file's folder.
const PATHS_BASE_INDEX_DIR: &str = "index_dir";
/// The metadata key saying that `weights_path` is stored as `paths` are (its value is
/// [`PATHS_BASE_INDEX_DIR`]); files without it recorded the path as given.
const WEIGHTS_PATH_BASE: &str = "weights_path_base";

/// One indexed image.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Absolute, or relative to the working directory ([`Index::load`] returns absolute
    /// paths for version 2 files; [`Index::save`] stores them relative to the index's folder
    /// where they lie below it, and losslessly when they are not UTF-8: see the module docs).
    pub path: PathBuf,
    /// Its class (the name of its sub-folder when indexed from a folder), if any.
    pub label: Option<String>,
}

impl Entry {
    /// The entry of `path`, with `label`.
    pub fn new(path: impl Into<PathBuf>, label: Option<String>) -> Self {
        Self { path: path.into(), label }
    }
}

/// A searchable reference database.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    /// Width of each row.
    pub dim: usize,
    /// The rows, unit-norm (after centring, where `mean` is set).
    pub embeddings: Embeddings,
    /// The mean subtracted from every row and query before normalisation, if centred.
    pub mean: Option<Vec<f32>>,
    /// The image of each row, in row order.
    pub entries: Vec<Entry>,
    /// How the rows were made.
    pub provenance: Provenance,
}

impl Index {
    /// A new index from raw (unnormalised) `[entries.len(), dim]` features, stored in
    /// `precision`, centred as `centring` says. [`IndexBuilder`] does the same from a
    /// folder of images or from features, with named options.
    pub fn from_features(
        features: &[f32], dim: usize, entries: Vec<Entry>, precision: Precision, centring: Centring,
        provenance: Provenance,
    ) -> Result<Self> {
        if dim == 0 || features.len() != entries.len() * dim {
            return Err(Error::shape(
                "index features",
                format!("{} x {dim}", entries.len()),
                format!("{} values", features.len()),
            ));
        }
        if entries.is_empty() {
            return Err(Error::InvalidArgument("an index needs at least one image".into()));
        }
        let center = centring == Centring::Mean;
        let mean = center.then(|| mean_row(features, dim));
        let unit = normalize_rows(features, dim, mean.as_deref());
        if center && unit.iter().all(|&x| x == 0.0) {
            // One image, or only identical ones: every row is the mean, with no direction, and
            // every query would score 0 against all of them.
            return Err(Error::InvalidArgument(format!(
                "centring needs images whose features differ: all {} equal their mean, so no row would \
                 have a direction; leave centring off (--center) or add other images",
                entries.len()
            )));
        }
        Ok(Self { dim, embeddings: Embeddings::from_f32(unit, precision), mean, entries, provenance })
    }

    /// Adds raw features of new images, normalised with this index's stored mean.
    pub fn add(&mut self, features: &[f32], entries: Vec<Entry>) -> Result<()> {
        if features.len() != entries.len() * self.dim {
            return Err(Error::shape(
                "added features",
                format!("{} x {}", entries.len(), self.dim),
                format!("{} values", features.len()),
            ));
        }
        let unit = normalize_rows(features, self.dim, self.mean.as_deref());
        self.embeddings.extend(&unit);
        self.entries.extend(entries);
        Ok(())
    }

    /// Rows (images) in the index.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it has no rows.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Mean pairwise cosine of (up to 512 evenly spaced) rows: near 1 means the embeddings
    /// share a dominant direction and `--center` will rank far better, above all in f16.
    pub fn mean_pairwise_cosine(&self) -> f64 {
        let n = self.len();
        let picks: Vec<usize> = (0..n.min(512)).map(|i| i * n / n.min(512)).collect();
        let rows: Vec<Vec<f32>> = picks.iter().map(|&i| self.embeddings.rows_f32(self.dim, i, i + 1)).collect();
        let (mut sum, mut count) = (0.0f64, 0usize);
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                sum += rows[i].iter().zip(&rows[j]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
                count += 1;
            }
        }
        if count == 0 {
            1.0
        } else {
            sum / count as f64
        }
    }

    /// Writes the index atomically: an interrupted write never destroys an existing file.
    /// A read-modify-write (load, add, save) that other processes may run at the same time
    /// holds a [`WriteLock`] on `path` from before the load until after the save.
    pub fn save(&self, path: &Path) -> Result<()> {
        let p = &self.provenance;
        let json = |v: serde_json::Value| v.to_string();
        let labels: Vec<Option<&str>> = self.entries.iter().map(|e| e.label.as_deref()).collect();
        let base = index_dir(path)?;
        let stored: Vec<PathBuf> = self.entries.iter().map(|e| paths::stored_path(&e.path, &base)).collect();
        let mut metadata: BTreeMap<&str, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("paths_base", PATHS_BASE_INDEX_DIR.to_string()),
            ("model", p.model.clone()),
            ("weights_path", p.weights_path.clone()),
            ("weights_sha256", p.weights_sha256.clone()),
            ("resize", p.preprocess.resize.to_string()),
            ("crop", p.preprocess.crop.to_string()),
            ("mean_rgb", json(serde_json::json!(p.preprocess.mean))),
            ("std_rgb", json(serde_json::json!(p.preprocess.std))),
            ("dim", self.dim.to_string()),
            ("count", self.len().to_string()),
            ("centered", self.mean.is_some().to_string()),
            ("paths", paths::encode_array(stored.iter().map(PathBuf::as_path))),
            ("labels", json(serde_json::json!(labels))),
        ]
        .into_iter()
        .collect();
        // A plain string: left out (the fallback it serves with it) where it is not UTF-8.
        if let Some(dir) = base.to_str() {
            metadata.insert("index_dir", dir.to_string());
        }
        // A weights file is stored as the images are, so the index finds it from any working
        // directory; a seed tag is no file, and a stored form that is not text stays as given.
        let weights_file = !p.is_seeded() && !p.weights_path.is_empty();
        let stored_weights = weights_file.then(|| {
            let stored = paths::stored_path(Path::new(&p.weights_path), &base);
            // Outside the folder: the real path, since a `..` stored lexically would lead
            // nowhere once the folder it climbs out of has moved.
            match std::fs::canonicalize(&stored) {
                Ok(real) if stored.is_absolute() => paths::stored_path(&real, &base),
                _ => stored,
            }
        });
        if let Some(text) = stored_weights.as_deref().and_then(Path::to_str) {
            metadata.insert("weights_path", text.to_string());
            metadata.insert(WEIGHTS_PATH_BASE, PATHS_BASE_INDEX_DIR.to_string());
        }
        let shape = vec![self.len(), self.dim];
        let mut tensors = vec![(
            "embeddings",
            shape,
            match &self.embeddings {
                Embeddings::F32(v) => TensorData::F32(v),
                Embeddings::F16(v) => TensorData::F16(v),
            },
        )];
        if let Some(mean) = &self.mean {
            tensors.push(("mean", vec![self.dim], TensorData::F32(mean)));
        }
        let row_crc32 = verify::row_crc32(&self.embeddings, self.dim);
        let mut checksummed = vec![(ROW_CRC32, verify::crc32_le(&row_crc32))];
        if let Some(mean) = &self.mean {
            checksummed.push(("mean", verify::crc32_le(mean)));
        }
        metadata.insert(verify::CRC32_KEY, Checksums::json(&metadata, &checksummed));
        tensors.push((ROW_CRC32, vec![self.len()], TensorData::U32(&row_crc32)));
        write_atomic(path, |w| file::write(w, &tensors, &metadata))
    }

    /// Reads an index file and verifies it (see the module docs): a damaged file is an
    /// error naming the tensor and row.
    pub fn load(path: &Path) -> Result<Self> {
        let mut file = TensorFile::open(path)?;
        let bad = |reason: String| Error::Safetensors { path: path.to_path_buf(), reason };
        let meta = std::mem::take(&mut file.metadata);
        let get = |key: &str| {
            meta.get(key).cloned().ok_or_else(|| bad(format!("not a lookalike index: metadata `{key}` is missing")))
        };
        if get("format")? != FORMAT {
            return Err(bad(format!("not a lookalike index (format is not `{FORMAT}`)")));
        }
        let version = get("version")?;
        if !["1", VERSION].contains(&version.as_str()) {
            return Err(bad(format!("index format version {version}; this lookalike reads versions 1 and {VERSION}")));
        }
        // Before the rest is read, so damaged metadata is reported as damage, not as whatever
        // it now says. Version 1 predates checksums, but a file that carries them is checked
        // whatever its `version` says (which they cover: an edit to "1" is damage too).
        let version_1 = version == "1";
        let checksums = Checksums::verify_metadata(path, &meta)?;
        let parse_json = |key: &str| -> Result<serde_json::Value> {
            serde_json::from_str(&get(key)?).map_err(|e| bad(format!("metadata `{key}`: {e}")))
        };
        let number = |key: &str| -> Result<usize> {
            get(key)?.parse().map_err(|_| bad(format!("metadata `{key}` is not a number")))
        };
        let paths: Vec<PathBuf> =
            paths::decode_array(&get("paths")?).map_err(|e| bad(format!("metadata `paths`: {e}")))?;
        let labels: Vec<Option<String>> =
            serde_json::from_value(parse_json("labels")?).map_err(|e| bad(format!("metadata `labels`: {e}")))?;
        let rgb = |key: &str| -> Result<[f32; 3]> {
            serde_json::from_value(parse_json(key)?).map_err(|e| bad(format!("metadata `{key}`: {e}")))
        };
        let dim = number("dim")?;
        let count = number("count")?;
        if dim == 0 || count == 0 {
            return Err(bad(format!("{count} rows of {dim} values: an index holds at least one non-empty row")));
        }
        if paths.len() != count || labels.len() != count {
            return Err(bad(format!(
                "metadata lists {} paths and {} labels for {count} rows",
                paths.len(),
                labels.len()
            )));
        }
        let (embeddings, mean) = read_tensors(&mut file, path, checksums.as_ref(), version_1, count, dim)?;
        if (get("centered")? == "true") != mean.is_some() {
            return Err(bad("metadata `centered` disagrees with the presence of the `mean` tensor".into()));
        }
        let side = |key: &str| -> Result<u32> {
            u32::try_from(number(key)?).map_err(|_| bad(format!("metadata `{key}` is out of range")))
        };
        let preprocess =
            Preprocess { resize: side("resize")?, crop: side("crop")?, mean: rgb("mean_rgb")?, std: rgb("std_rgb")? };
        preprocess.validate()?;
        let base = index_dir(path)?;
        // Moved or copied: beside the index first, else where it was written.
        let written_in = meta.get("index_dir").map(PathBuf::from);
        let relative_to_index = |key: &str| match meta.get(key).map(String::as_str) {
            None => Ok(false),
            Some(PATHS_BASE_INDEX_DIR) => Ok(true),
            Some(other) => Err(bad(format!("metadata `{key}` is `{other}`; expected `{PATHS_BASE_INDEX_DIR}`"))),
        };
        let paths = match relative_to_index("paths_base")? {
            true => paths.into_iter().map(|p| paths::locate(&p, &base, written_in.as_deref())).collect(),
            false => paths,
        };
        let mut weights_path = get("weights_path")?;
        if relative_to_index(WEIGHTS_PATH_BASE)? {
            // Text in, text out, unless the index's folder is not UTF-8: then as stored.
            let located = paths::locate(Path::new(&weights_path), &base, written_in.as_deref());
            if let Some(text) = located.to_str() {
                weights_path = text.to_string();
            }
        }
        let entries = paths.into_iter().zip(labels).map(|(path, label)| Entry { path, label }).collect();
        let provenance =
            Provenance { model: get("model")?, weights_path, weights_sha256: get("weights_sha256")?, preprocess };
        Ok(Self { dim, embeddings, mean, entries, provenance })
    }
}

/// The `embeddings` and `mean` tensors of an index file of `count` rows of `dim`, checked
/// against the file's checksums when it has them and the invariants of `verify`.
/// `version_1` files predate checksums: a stray `embeddings_crc32` there is ignored.
fn read_tensors(
    file: &mut TensorFile, path: &Path, checksums: Option<&Checksums>, version_1: bool, count: usize, dim: usize,
) -> Result<(Embeddings, Option<Vec<f32>>)> {
    let tensor = |name: &str| format!("tensor `{name}`");
    if count == 0 || dim == 0 {
        return Err(damaged(path, "metadata `count` and `dim`".into(), format!("give {count} rows of {dim}")));
    }
    let (dtype, shape) = file.describe("embeddings").ok_or_else(|| Error::Safetensors {
        path: path.to_path_buf(),
        reason: "not a lookalike index: tensor `embeddings` is missing".into(),
    })?;
    if shape != [count, dim] {
        let problem = format!("has shape {shape:?} where metadata `count` and `dim` give [{count}, {dim}]");
        return Err(damaged(path, tensor("embeddings"), problem));
    }
    let embeddings = match dtype {
        "F32" => Embeddings::F32(file.read_f32("embeddings")?),
        "F16" => Embeddings::F16(file.read_f16("embeddings")?),
        other => {
            return Err(Error::UnsupportedDtype {
                path: path.to_path_buf(),
                name: "embeddings".into(),
                dtype: other.to_string(),
                expected: "F32 or F16",
            })
        }
    };
    let row_crc32 = match (checksums, file.describe(ROW_CRC32)) {
        (None, None) => None,
        (None, Some(_)) if version_1 => None,
        (None, Some(_)) => {
            let problem = format!("is missing though the file holds `{ROW_CRC32}`");
            return Err(damaged(path, format!("metadata `{}`", verify::CRC32_KEY), problem));
        }
        (Some(_), None) => return Err(damaged(path, tensor(ROW_CRC32), "is missing".into())),
        (Some(checksums), Some((dtype, shape))) => {
            if dtype != "U32" || shape != [count] {
                let problem = format!("is {dtype} {shape:?} where U32 [{count}] belongs");
                return Err(damaged(path, tensor(ROW_CRC32), problem));
            }
            let crcs = file.read_u32(ROW_CRC32)?;
            checksums.verify_tensor(path, ROW_CRC32, &crcs)?;
            Some(crcs)
        }
    };
    let mean = match file.describe("mean") {
        Some(("F32", shape)) if shape == [dim] => Some(file.read_f32("mean")?),
        Some((dtype, shape)) => {
            return Err(damaged(path, tensor("mean"), format!("is {dtype} {shape:?} where F32 [{dim}] belongs")))
        }
        None => None,
    };
    if let Some(checksums) = checksums {
        if let Some(missing) = checksums.tensors.keys().find(|name| file.describe(name).is_none()) {
            let problem = format!("is missing though `{}` lists it", verify::CRC32_KEY);
            return Err(damaged(path, tensor(missing), problem));
        }
        if let Some(mean) = &mean {
            checksums.verify_tensor(path, "mean", mean)?;
        }
    }
    if let Some(mean) = &mean {
        verify::check_mean(path, mean)?;
    }
    verify::check_rows(path, &embeddings, dim, row_crc32.as_deref())?;
    Ok((embeddings, mean))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centring_rows_that_all_equal_their_mean_is_refused() {
        let provenance = Provenance {
            model: "resnet50".into(),
            weights_path: "w".into(),
            weights_sha256: "seed:0".into(),
            preprocess: Preprocess::default(),
        };
        let entries = |n: usize| (0..n).map(|i| Entry::new(format!("{i}.png"), None)).collect::<Vec<_>>();
        let same = [0.5f32, -1.0, 2.0].repeat(3);
        let err =
            Index::from_features(&same, 3, entries(3), Precision::F32, Centring::Mean, provenance.clone()).unwrap_err();
        assert!(err.to_string().contains("all 3 equal their mean"), "{err}");
        // Not centred, or with rows that differ, it is an index.
        assert!(Index::from_features(&same, 3, entries(3), Precision::F32, Centring::Off, provenance.clone()).is_ok());
        let mut differ = same.clone();
        differ[4] = 1.0;
        assert!(Index::from_features(&differ, 3, entries(3), Precision::F32, Centring::Mean, provenance).is_ok());
    }
}
