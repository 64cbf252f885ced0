//! What a well-formed index file guarantees, checked on load, so a damaged file is an error
//! naming the tensor and row, never scores.
//!
//! Two layers:
//! - Invariants every index holds, whoever wrote it (older lookalike versions, Python):
//!   finite values, unit-norm `embeddings` rows within what their dtype's rounding allows
//!   (or all-zero rows, which normalising a row equal to `mean` gives), a finite `mean`.
//!   They catch flipped exponent bits, scaled rows, NaN and infinity.
//! - CRC-32s (zlib's, as Python's `zlib.crc32` computes them), written by
//!   [`Index::save`](super::Index::save) and verified when present: `embeddings_crc32` `[N]` U32 holds each row's CRC-32
//!   of its little-endian bytes, and metadata `crc32` a JSON object
//!   `{"metadata": {KEY: CRC of the value's UTF-8}, "tensors": {NAME: CRC of its bytes}}`
//!   covering every other metadata value, `mean` and `embeddings_crc32`. They catch what the
//!   invariants cannot: a flipped low mantissa or sign bit, a spliced row, edited metadata.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use super::Embeddings;
use crate::error::{Error, Result};
use crate::shape::Precision;

/// The tensor of per-row CRC-32s of `embeddings`.
pub(crate) const ROW_CRC32: &str = "embeddings_crc32";
/// The metadata key holding the CRC-32s of everything else.
pub(crate) const CRC32_KEY: &str = "crc32";

/// The metadata an index's loader reads: in a file with checksums, each present must be
/// covered by them (keys the loader ignores may come and go).
pub(crate) const COVERED_KEYS: [&str; 17] = [
    "format",
    "version",
    "paths_base",
    "index_dir",
    "model",
    "weights_path",
    "weights_path_base",
    "weights_sha256",
    "resize",
    "crop",
    "mean_rgb",
    "std_rgb",
    "dim",
    "count",
    "centered",
    "paths",
    "labels",
];

/// zlib CRC-32 of `values`' little-endian bytes.
pub(crate) fn crc32_le<T: bytemuck::Pod>(values: &[T]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if cfg!(target_endian = "little") {
        hasher.update(bytemuck::cast_slice(values));
    } else {
        for v in values {
            let mut bytes = bytemuck::bytes_of(v).to_vec();
            bytes.reverse();
            hasher.update(&bytes);
        }
    }
    hasher.finalize()
}

/// The CRC-32 of each `dim`-wide row of `embeddings`, as `embeddings_crc32` stores them.
pub fn row_crc32(embeddings: &Embeddings, dim: usize) -> Vec<u32> {
    match embeddings {
        Embeddings::F32(v) => v.par_chunks(dim.max(1)).map(crc32_le).collect(),
        Embeddings::F16(v) => v.par_chunks(dim.max(1)).map(crc32_le).collect(),
    }
}

/// The `crc32` metadata value.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checksums {
    pub metadata: BTreeMap<String, u32>,
    pub tensors: BTreeMap<String, u32>,
}

impl Checksums {
    /// The checksums of `metadata` (every key) and of `tensors`' bytes, as JSON.
    pub fn json(metadata: &BTreeMap<&str, String>, tensors: &[(&str, u32)]) -> String {
        let checksums = Checksums {
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), crc32fast::hash(v.as_bytes()))).collect(),
            tensors: tensors.iter().map(|&(name, crc)| (name.to_string(), crc)).collect(),
        };
        // Maps of strings to integers always serialise.
        serde_json::to_string(&checksums).unwrap_or_default()
    }

    /// The checksums `metadata` carries (`None` for files written without them), after
    /// checking every metadata value they cover.
    pub fn verify_metadata(path: &Path, metadata: &BTreeMap<String, String>) -> Result<Option<Self>> {
        let Some(text) = metadata.get(CRC32_KEY) else { return Ok(None) };
        let checksums: Checksums = serde_json::from_str(text)
            .map_err(|e| damaged(path, format!("metadata `{CRC32_KEY}`"), format!("is not the checksum map ({e})")))?;
        // Whatever the loader reads must be covered: a key dropped from the map together
        // with an edit to its value is damage, not a file without that checksum.
        if let Some(key) =
            COVERED_KEYS.iter().find(|k| metadata.contains_key(**k) && !checksums.metadata.contains_key(**k))
        {
            let what = format!("metadata `{key}`");
            return Err(damaged(path, what, format!("is not covered by `{CRC32_KEY}`")));
        }
        for (key, &crc) in &checksums.metadata {
            let what = format!("metadata `{key}`");
            match metadata.get(key) {
                None => return Err(damaged(path, what, format!("is missing though `{CRC32_KEY}` lists it"))),
                Some(value) if crc32fast::hash(value.as_bytes()) != crc => {
                    return Err(damaged(path, what, "fails its CRC-32".into()))
                }
                Some(_) => {}
            }
        }
        Ok(Some(checksums))
    }

    /// Checks tensor `name`'s bytes against its listed CRC-32; a tensor the checksums do not
    /// list is damage too, since the writer lists every tensor it writes.
    pub fn verify_tensor<T: bytemuck::Pod>(&self, path: &Path, name: &str, values: &[T]) -> Result<()> {
        match self.tensors.get(name) {
            None => Err(damaged(path, format!("tensor `{name}`"), format!("is not listed in `{CRC32_KEY}`"))),
            Some(&crc) if crc32_le(values) != crc => {
                Err(damaged(path, format!("tensor `{name}`"), "fails its CRC-32".into()))
            }
            Some(_) => Ok(()),
        }
    }
}

pub(crate) fn damaged(path: &Path, what: String, problem: String) -> Error {
    Error::DamagedIndex { path: path.to_path_buf(), what, problem }
}

/// Checks that `mean` (subtracted before normalising) is finite.
pub(crate) fn check_mean(path: &Path, mean: &[f32]) -> Result<()> {
    match mean.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(damaged(path, "`mean`".into(), format!("holds {} at element {i}", mean[i]))),
        None => Ok(()),
    }
}

/// Widest `|‖row‖² − 1|` a unit row of `dim` values can show once stored in `precision`,
/// whether lookalike (which normalises in f64) or an f32 normaliser (numpy, torch) made it.
pub(crate) fn squared_norm_tolerance(precision: Precision, dim: usize) -> f64 {
    let dim = dim as f64;
    // Each stored element is within a relative `u` of the exact unit row's: ‖row‖² within
    // (1 ± u)². f16 values first rounded to f32 carry both roundings.
    let u = match precision {
        Precision::F32 => 2f64.powi(-24),
        Precision::F16 => 2f64.powi(-11) + 2f64.powi(-24),
    };
    let storage = 2.0 * u + u * u;
    // f16 values below 2^-14 are subnormal: an absolute error up to 2^-25 instead, which
    // moves their square by less than 2^-38.
    let subnormal = match precision {
        Precision::F32 => 0.0,
        Precision::F16 => dim * 2f64.powi(-37),
    };
    // An f32 normaliser sums dim squares with relative error up to dim·2^-24 (recursive
    // summation's bound, for any order), then takes a square root and divides: twice that
    // covers it.
    let normaliser = 2.0 * (dim + 2.0) * 2f64.powi(-24);
    storage + subnormal + normaliser
}

/// What is wrong with one row.
enum Fault {
    NotFinite { column: usize, value: f32 },
    NotUnit { norm: f64 },
    Checksum,
}

/// Checks every `dim`-wide row of `embeddings`: finite, unit-norm within
/// `squared_norm_tolerance` or all zero, and equal to its CRC-32 in `row_crc32` when
/// given. The first faulty row is the error.
pub fn check_rows(path: &Path, embeddings: &Embeddings, dim: usize, row_crc32: Option<&[u32]>) -> Result<()> {
    let rows = embeddings.len() / dim.max(1);
    if dim == 0 || embeddings.len() != rows * dim || row_crc32.is_some_and(|c| c.len() != rows) {
        return Err(Error::shape(
            "index rows",
            format!("{rows} x {dim} values and {rows} CRC-32s"),
            format!("{} values and {:?} CRC-32s", embeddings.len(), row_crc32.map(<[u32]>::len)),
        ));
    }
    let tolerance = squared_norm_tolerance(embeddings.precision(), dim);
    let crc_matches = |row: usize, crc: u32| row_crc32.is_none_or(|stored| stored[row] == crc);
    let fault = match embeddings {
        Embeddings::F32(v) => v.par_chunks(dim).enumerate().find_map_first(|(i, row)| {
            let fault = (!unit_or_zero(squared_norm(row), tolerance)).then(|| row_fault(row));
            fault.or_else(|| (!crc_matches(i, crc32_le(row))).then_some(Fault::Checksum)).map(|f| (i, f))
        }),
        Embeddings::F16(v) => v.par_chunks(dim).enumerate().find_map_first(|(i, row)| {
            // Widened for the message only, when the row is faulty.
            let fault = (!unit_or_zero(squared_norm_f16(row), tolerance))
                .then(|| row_fault(&row.iter().map(|x| x.to_f32()).collect::<Vec<_>>()));
            fault.or_else(|| (!crc_matches(i, crc32_le(row))).then_some(Fault::Checksum)).map(|f| (i, f))
        }),
    };
    let Some((row, fault)) = fault else { return Ok(()) };
    let problem = match fault {
        Fault::NotFinite { column, value } => format!("holds {value} at column {column}"),
        Fault::NotUnit { norm } => format!(
            "has norm {} where rows are unit-norm (|norm² − 1| ≤ {tolerance:.1e} for {:?} rows of {dim})",
            readable(norm),
            embeddings.precision()
        ),
        Fault::Checksum => "fails its CRC-32".into(),
    };
    Err(damaged(path, format!("row {row} of `embeddings`"), problem))
}

/// Six decimals near 1, scientific notation far from it.
fn readable(x: f64) -> String {
    if (1e-3..1e4).contains(&x) {
        format!("{x:.6}")
    } else {
        format!("{x:.3e}")
    }
}

/// Whether a row of squared norm `squared` is unit (within `tolerance`) or all zero. NaN
/// and infinity make the sum non-finite, so this one comparison covers them too.
fn unit_or_zero(squared: f64, tolerance: f64) -> bool {
    (squared - 1.0).abs() <= tolerance || squared == 0.0
}

/// What is wrong with a row that is neither unit nor zero.
fn row_fault(row: &[f32]) -> Fault {
    match row.iter().position(|x| !x.is_finite()) {
        Some(column) => Fault::NotFinite { column, value: row[column] },
        None => Fault::NotUnit { norm: squared_norm(row).sqrt() },
    }
}

/// Σ x² of f16 values in f64, without widening through a buffer: `|x|`'s bits shifted into
/// an f32's place and scaled by 2^112 are `|x|` exactly (subnormals included; the sign
/// does not matter to a square). Infinity and NaN, which this would make finite, give NaN.
fn squared_norm_f16(row: &[half::f16]) -> f64 {
    let (mut lanes, mut special) = ([0.0f64; 8], 0u16);
    let scale = 2f32.powi(112);
    let mut add = |lane: &mut f64, h: half::f16| {
        let bits = h.to_bits() & 0x7fff;
        special |= u16::from(bits >= 0x7c00);
        let x = (f32::from_bits(u32::from(bits) << 13) * scale) as f64;
        *lane += x * x;
    };
    let chunks = row.chunks_exact(8);
    let mut rest = 0.0f64;
    chunks.remainder().iter().for_each(|&h| add(&mut rest, h));
    for chunk in chunks {
        for (lane, &h) in lanes.iter_mut().zip(chunk) {
            add(lane, h);
        }
    }
    if special != 0 {
        return f64::NAN;
    }
    lanes.iter().sum::<f64>() + rest
}

/// Σ x² in f64, in eight lanes the compiler vectorises.
fn squared_norm(row: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&x| x as f64 * x as f64).sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x as f64 * x as f64;
        }
    }
    lanes.iter().sum::<f64>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn unit_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
        let raw = Rng::new(seed).normals(rows * dim, 3.0);
        crate::cpu::l2_normalize(&raw, rows, dim, None).unwrap()
    }

    #[test]
    fn f16_squares_without_widening_are_exact() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            let wide = h.to_f32() as f64;
            let got = squared_norm_f16(&[h]);
            if h.is_finite() {
                assert_eq!(got, wide * wide, "{bits:#06x}");
            } else {
                assert!(got.is_nan(), "{bits:#06x}");
            }
        }
        let row: Vec<half::f16> = Rng::new(3).normals(37, 1.0).into_iter().map(half::f16::from_f32).collect();
        let wide: Vec<f32> = row.iter().map(|x| x.to_f32()).collect();
        assert_eq!(squared_norm_f16(&row), squared_norm(&wide));
    }

    #[test]
    fn crc32_is_zlibs() {
        // zlib.crc32(b"123456789") == 0xCBF43926, the CRC-32 check value.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_le(&[1.0f32]), crc32fast::hash(&1.0f32.to_le_bytes()));
    }

    #[test]
    fn normalised_rows_of_odd_widths_pass_in_both_dtypes() {
        let path = Path::new("x.index");
        for (dim, seed) in [(1, 1), (3, 2), (8, 3), (61, 4), (2048, 5)] {
            let unit = unit_rows(37, dim, seed);
            for precision in [Precision::F32, Precision::F16] {
                let embeddings = Embeddings::from_f32(unit.clone(), precision);
                let crcs = row_crc32(&embeddings, dim);
                check_rows(path, &embeddings, dim, Some(&crcs)).unwrap();
                check_rows(path, &embeddings, dim, None).unwrap();
            }
        }
    }

    #[test]
    fn f32_normalisers_rounding_is_within_tolerance() {
        // Rows normalised entirely in f32, sums in the worst (largest-first) order, then
        // stored in each dtype.
        let dim = 2048;
        let mut raw = Rng::new(9).normals(16 * dim, 1.0);
        for row in raw.chunks_mut(dim) {
            row.sort_by(|a, b| b.abs().total_cmp(&a.abs()));
            let norm = row.iter().fold(0.0f32, |s, &x| s + x * x).sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        for precision in [Precision::F32, Precision::F16] {
            check_rows(Path::new("f32"), &Embeddings::from_f32(raw.clone(), precision), dim, None).unwrap();
        }
    }

    #[test]
    fn each_fault_names_its_row() {
        let dim = 24;
        let unit = unit_rows(50, dim, 7);
        let message = |values: Vec<f32>, precision: Precision, crcs: Option<&[u32]>| {
            check_rows(Path::new("idx"), &Embeddings::from_f32(values, precision), dim, crcs).unwrap_err().to_string()
        };
        for precision in [Precision::F32, Precision::F16] {
            let mut nan = unit.clone();
            nan[17 * dim + 5] = f32::NAN;
            assert!(message(nan, precision, None).contains("row 17 of `embeddings` holds NaN at column 5"));
            let mut scaled = unit.clone();
            scaled[30 * dim..31 * dim].iter_mut().for_each(|x| *x *= 1.01);
            let text = message(scaled, precision, None);
            assert!(text.contains("row 30 of `embeddings` has norm 1.0") && !text.contains("norm 1.000"), "{text}");
            // Two faults: the first row is named.
            let mut two = unit.clone();
            two[40 * dim] = f32::INFINITY;
            two[3 * dim] = 0.0;
            two[3 * dim + 1] *= -1.0;
            let crcs = row_crc32(&Embeddings::from_f32(unit.clone(), precision), dim);
            let text = message(two, precision, Some(&crcs));
            assert!(text.contains("row 3 of `embeddings`") && text.contains("idx"), "{text}");
        }
        // A sign flip keeps the norm: only the checksum sees it.
        let mut flipped = unit.clone();
        flipped[9 * dim + 2] *= -1.0;
        let crcs = row_crc32(&Embeddings::F32(unit.clone()), dim);
        check_rows(Path::new("idx"), &Embeddings::F32(flipped.clone()), dim, None).unwrap();
        assert!(message(flipped, Precision::F32, Some(&crcs)).contains("row 9 of `embeddings` fails its CRC-32"));
        // All-zero rows (a row equal to the mean) pass; a nearly-zero one does not.
        let mut zero = unit.clone();
        zero[..dim].fill(0.0);
        check_rows(Path::new("idx"), &Embeddings::F32(zero.clone()), dim, None).unwrap();
        zero[1] = 1e-20;
        assert!(message(zero, Precision::F32, None).contains("row 0"));
    }

    #[test]
    fn tolerance_is_tight_where_it_can_be() {
        assert!(squared_norm_tolerance(Precision::F16, 2048) < 1.3e-3);
        assert!(squared_norm_tolerance(Precision::F32, 2048) < 2.5e-4);
        assert!(squared_norm_tolerance(Precision::F32, 8) < 2e-6);
    }
}
