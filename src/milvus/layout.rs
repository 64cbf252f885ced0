//! What a collection holds and records: its fields, and the provenance, precision and
//! centring mean of its rows, kept as collection properties.

use std::collections::HashMap;

use base64::Engine;

use crate::error::{Error, Result};
use crate::index::{same_weights, Index, Provenance};
use crate::shape::Precision;
use crate::shape::Preprocess;

/// The primary key: the row's id (its row in an exported index, a hash of the path for
/// images embedded straight into the collection).
pub(crate) const ID: &str = "id";
/// The unit row (centred first, where the collection records a mean).
pub(crate) const EMBEDDING: &str = "embedding";
/// The image file, as text.
pub(crate) const PATH: &str = "path";
/// The image's class (its sub-folder), null when it has none.
pub(crate) const LABEL: &str = "label";
/// Longest path and label the collection takes, in bytes: Milvus's largest VARCHAR.
pub(crate) const MAX_TEXT: u32 = 65_535;

const FORMAT: &str = "lookalike-collection";
const VERSION: &str = "1";

/// Property keys, all under `lookalike.`.
mod key {
    pub const FORMAT: &str = "lookalike.format";
    pub const VERSION: &str = "lookalike.version";
    pub const MODEL: &str = "lookalike.model";
    pub const WEIGHTS_PATH: &str = "lookalike.weights_path";
    pub const WEIGHTS_SHA256: &str = "lookalike.weights_sha256";
    pub const RESIZE: &str = "lookalike.resize";
    pub const CROP: &str = "lookalike.crop";
    pub const MEAN_RGB: &str = "lookalike.mean_rgb";
    pub const STD_RGB: &str = "lookalike.std_rgb";
    pub const DIM: &str = "lookalike.dim";
    pub const PRECISION: &str = "lookalike.precision";
    pub const CENTERED: &str = "lookalike.centered";
    pub const MEAN: &str = "lookalike.mean";
    pub const MEAN_SHA256: &str = "lookalike.mean_sha256";
}

/// How the rows are stored on the server: as float vectors, or as float16 vectors where
/// the rows are f16 and the server takes them (Milvus does; milvus-lite does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorType {
    /// `FLOAT_VECTOR`: f32 values (f16 rows widened exactly).
    Float,
    /// `FLOAT16_VECTOR`: half the bytes; queries are rounded to f16 too, so scores move by
    /// about 1e-3 from lookalike's own scan (which keeps queries in f32).
    Float16,
}

/// What a collection records of its rows: their width and precision, the mean subtracted
/// before normalising (centred collections), and the network and preprocessing that made
/// them. Kept as collection properties (`lookalike.*`); the mean as the base64 of its
/// little-endian f32 bytes, with its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Width of each row.
    pub dim: usize,
    /// The precision lookalike rounded the rows to (f16 rows may still travel as float
    /// vectors: [`VectorType`]).
    pub precision: Precision,
    /// The mean subtracted from rows and queries before normalising, when centred.
    pub mean: Option<Vec<f32>>,
    /// The network and preprocessing.
    pub provenance: Provenance,
}

impl Layout {
    /// What a collection holding `index`'s rows records.
    pub fn of_index(index: &Index) -> Self {
        Self {
            dim: index.dim,
            precision: index.embeddings.precision(),
            mean: index.mean.clone(),
            provenance: index.provenance.clone(),
        }
    }

    /// The collection properties that record it.
    pub(crate) fn properties(&self) -> HashMap<String, String> {
        let p = &self.provenance;
        let json = |v: serde_json::Value| v.to_string();
        let mut map: HashMap<String, String> = [
            (key::FORMAT, FORMAT.to_string()),
            (key::VERSION, VERSION.to_string()),
            (key::MODEL, p.model.clone()),
            (key::WEIGHTS_PATH, p.weights_path.clone()),
            (key::WEIGHTS_SHA256, p.weights_sha256.clone()),
            (key::RESIZE, p.preprocess.resize.to_string()),
            (key::CROP, p.preprocess.crop.to_string()),
            (key::MEAN_RGB, json(serde_json::json!(p.preprocess.mean))),
            (key::STD_RGB, json(serde_json::json!(p.preprocess.std))),
            (key::DIM, self.dim.to_string()),
            (key::PRECISION, precision_name(self.precision).to_string()),
            (key::CENTERED, self.mean.is_some().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(mean) = &self.mean {
            let bytes: Vec<u8> = mean.iter().flat_map(|v| v.to_le_bytes()).collect();
            map.insert(key::MEAN.into(), base64::engine::general_purpose::STANDARD.encode(&bytes));
            map.insert(key::MEAN_SHA256.into(), mean_sha256(mean));
        }
        map
    }

    /// The layout collection `name` records in `properties`; an error naming what is
    /// missing or malformed, or saying it is no lookalike collection.
    pub(crate) fn from_properties(properties: &HashMap<String, String>, name: &str) -> Result<Self> {
        let bad =
            |what: String| Error::InvalidArgument(format!("collection `{name}` is not one lookalike can use: {what}"));
        let get = |k: &str| properties.get(k).ok_or_else(|| bad(format!("property `{k}` is missing")));
        if properties.get(key::FORMAT).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("it has no `{}` = `{FORMAT}` property (lookalike did not make it)", key::FORMAT)));
        }
        let version = get(key::VERSION)?;
        if version != VERSION {
            return Err(bad(format!("layout version {version}; this lookalike reads version {VERSION}")));
        }
        let number =
            |k: &str| -> Result<u64> { get(k)?.parse().map_err(|_| bad(format!("property `{k}` is not a number"))) };
        let rgb = |k: &str| -> Result<[f32; 3]> {
            serde_json::from_str(get(k)?).map_err(|e| bad(format!("property `{k}`: {e}")))
        };
        let side = |k: &str| -> Result<u32> {
            u32::try_from(number(k)?).map_err(|_| bad(format!("property `{k}` is out of range")))
        };
        let preprocess = Preprocess {
            resize: side(key::RESIZE)?,
            crop: side(key::CROP)?,
            mean: rgb(key::MEAN_RGB)?,
            std: rgb(key::STD_RGB)?,
        };
        preprocess.validate()?;
        let dim =
            usize::try_from(number(key::DIM)?).map_err(|_| bad("property `lookalike.dim` is out of range".into()))?;
        let precision = match get(key::PRECISION)?.as_str() {
            "f32" => Precision::F32,
            "f16" => Precision::F16,
            other => return Err(bad(format!("property `{}` is `{other}`, not f32 or f16", key::PRECISION))),
        };
        let mean = match get(key::CENTERED)?.as_str() {
            "false" => None,
            "true" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(get(key::MEAN)?)
                    .map_err(|e| bad(format!("property `{}`: {e}", key::MEAN)))?;
                if bytes.len() != dim * 4 {
                    return Err(bad(format!("its mean holds {} bytes where {dim} f32 values belong", bytes.len())));
                }
                let mean: Vec<f32> =
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                if mean_sha256(&mean) != *get(key::MEAN_SHA256)? || mean.iter().any(|v| !v.is_finite()) {
                    return Err(bad(format!(
                        "its mean does not match `{}`: the property is damaged",
                        key::MEAN_SHA256
                    )));
                }
                Some(mean)
            }
            other => return Err(bad(format!("property `{}` is `{other}`", key::CENTERED))),
        };
        let provenance = Provenance {
            model: get(key::MODEL)?.clone(),
            weights_path: get(key::WEIGHTS_PATH)?.clone(),
            weights_sha256: get(key::WEIGHTS_SHA256)?.clone(),
            preprocess,
        };
        Ok(Self { dim, precision, mean, provenance })
    }

    /// How `self` differs from `stored` (what a collection records), one phrase each;
    /// empty when rows of `self` belong in it. The weights' path is not compared (one file
    /// may sit anywhere); their SHA-256 is, a seed and the file it writes being the same.
    pub(crate) fn differences(&self, stored: &Layout) -> Result<Vec<String>> {
        let (a, b) = (&self.provenance, &stored.provenance);
        let mut out = Vec::new();
        if self.dim != stored.dim {
            out.push(format!("width {} (the collection holds {}-d rows)", self.dim, stored.dim));
        }
        if a.model != b.model {
            out.push(format!("model {} (the collection's rows come from a {})", a.model, b.model));
        } else if !same_weights(&a.weights_sha256, &b.weights_sha256)? {
            let name = |p: &Provenance| match p.is_seeded() {
                true => p.weights_sha256.clone(),
                false => format!("{} (SHA-256 {})", p.weights_path, p.weights_sha256),
            };
            out.push(format!("weights {} where the collection records {}", name(a), name(b)));
        }
        let (x, y) = (&a.preprocess, &b.preprocess);
        if x.resize != y.resize {
            out.push(format!("resize {} (the collection's: {})", x.resize, y.resize));
        }
        if x.crop != y.crop {
            out.push(format!("crop {} (the collection's: {})", x.crop, y.crop));
        }
        if (x.mean, x.std) != (y.mean, y.std) {
            out.push(format!(
                "pixel mean {:?} and std {:?} (the collection's: {:?} and {:?})",
                x.mean, x.std, y.mean, y.std
            ));
        }
        if self.precision != stored.precision {
            out.push(format!(
                "precision {} (the collection's rows are {})",
                precision_name(self.precision),
                precision_name(stored.precision)
            ));
        }
        match (&self.mean, &stored.mean) {
            (None, None) => {}
            (Some(_), None) => out.push("centring on a mean (the collection is not centred)".into()),
            (None, Some(_)) => out.push("no centring (the collection's rows are centred on a mean)".into()),
            (Some(x), Some(y)) if x.len() != y.len() || x.iter().zip(y).any(|(p, q)| p.to_bits() != q.to_bits()) => out
                .push(format!(
                    "a centring mean of SHA-256 {} (the collection's is {})",
                    mean_sha256(x),
                    mean_sha256(y)
                )),
            (Some(_), Some(_)) => {}
        }
        Ok(out)
    }
}

/// `f32` or `f16`, as the property and the command line spell them.
pub(crate) fn precision_name(precision: Precision) -> &'static str {
    match precision {
        Precision::F32 => "f32",
        Precision::F16 => "f16",
    }
}

/// SHA-256 of a mean's little-endian f32 bytes, lowercase hex: how errors and the
/// properties name it.
pub(crate) fn mean_sha256(mean: &[f32]) -> String {
    use sha2::Digest;
    let bytes: Vec<u8> = mean.iter().flat_map(|v| v.to_le_bytes()).collect();
    crate::model::canonical::hex(&sha2::Sha256::digest(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(mean: Option<Vec<f32>>) -> Layout {
        Layout {
            dim: 3,
            precision: Precision::F16,
            mean,
            provenance: Provenance {
                model: "resnet50".into(),
                weights_path: "/w/resnet50.safetensors".into(),
                weights_sha256: "ab".repeat(32),
                preprocess: Preprocess::default(),
            },
        }
    }

    #[test]
    fn properties_round_trip_bit_for_bit() {
        for mean in [None, Some(vec![0.1f32, -3.5e-12, f32::MAX])] {
            let original = layout(mean);
            let back = Layout::from_properties(&original.properties(), "c").unwrap();
            assert_eq!(back, original);
            assert!(back.differences(&original).unwrap().is_empty());
        }
    }

    #[test]
    fn damaged_or_foreign_properties_are_named() {
        let mut props = layout(Some(vec![1.0, 2.0, 3.0])).properties();
        props.insert(key::MEAN_SHA256.into(), "00".repeat(32));
        let err = Layout::from_properties(&props, "photos").unwrap_err().to_string();
        assert!(err.contains("`photos`") && err.contains("damaged"), "{err}");
        let err = Layout::from_properties(&HashMap::new(), "other").unwrap_err().to_string();
        assert!(err.contains("lookalike did not make it"), "{err}");
        let mut props = layout(None).properties();
        props.remove(key::CROP);
        let err = Layout::from_properties(&props, "c").unwrap_err().to_string();
        assert!(err.contains("`lookalike.crop` is missing"), "{err}");
    }

    #[test]
    fn differences_name_width_weights_precision_and_mean() {
        let stored = layout(Some(vec![1.0, 2.0, 3.0]));
        let mut other = layout(Some(vec![1.0, 2.0, 3.5]));
        other.dim = 4;
        other.precision = Precision::F32;
        other.provenance.weights_sha256 = "cd".repeat(32);
        other.provenance.weights_path = "elsewhere".into();
        let found = other.differences(&stored).unwrap().join("; ");
        for needle in ["width 4", "weights elsewhere", "precision f32", "centring mean of SHA-256"] {
            assert!(found.contains(needle), "{needle} not in {found}");
        }
        // The weights' path alone is no difference.
        let mut moved = stored.clone();
        moved.provenance.weights_path = "/elsewhere/resnet50.safetensors".into();
        assert!(moved.differences(&stored).unwrap().is_empty());
        assert_eq!(layout(None).differences(&stored).unwrap().len(), 1);
    }
}
