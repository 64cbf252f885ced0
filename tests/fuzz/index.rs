//! `Index::load`: index files written by `Index::save`, mutated and read back from disk.
//!
//! Ok must be right: the test parses the mutant's safetensors header itself and checks that
//! the rows and mean are bit for bit the bytes the header points at, that counts, shapes,
//! labels and provenance match the metadata, and that the invariants `Index::from_features`
//! guarantees hold (at least one row, a positive width, finite values, a valid
//! preprocessing). A file with checksums (all but the version 1 one) must refuse a mutation
//! of its tensor bytes alone that changes them, as damage naming the file; the version 1
//! file may load it (the values then equal the bytes) or refuse it as damage. Bound: the file's length (header and tensors are read once) plus 8 times the
//! header (its JSON parsed into values, the paths and labels decoded) plus 64 KiB.

use std::path::{Path, PathBuf};

use lookalike::cpu::preprocess::Preprocess;
use lookalike::index::{Centring, Embeddings, Entry, Index, Provenance};
use lookalike::ops::matmul::Precision;
use lookalike::rng::Rng;
use lookalike::Error;
use serde_json::{json, Map, Value};

use crate::harness::{self, Case};
use crate::mutate::{self, Changed};

const SLACK: u64 = 64 << 10;

/// A safetensors file split into its header and the bytes after it.
struct Parsed {
    header: Map<String, Value>,
    data_start: usize,
}

fn parse(bytes: &[u8]) -> Option<Parsed> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(len).ok()?)?;
    let header = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    Some(Parsed { header, data_start: end })
}

/// A file with `header` (padded to 8 bytes, as writers do) followed by `data`.
fn rebuild(header: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let mut text = serde_json::to_vec(header).expect("a JSON map serialises");
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(data);
    bytes
}

struct Valid {
    bytes: Vec<u8>,
    header_end: usize,
}

/// Indexes written by `Index::save`: f32 and f16, centred or not, a few sizes, paths inside
/// and outside the index's folder; plus one rewritten as a version 1 file.
fn valid_files(dir: &Path) -> Vec<Valid> {
    let mut rng = Rng::new(5);
    let mut files = Vec::new();
    for (i, (count, dim, precision, center)) in [
        (3, 5, Precision::F32, false),
        (4, 7, Precision::F16, true),
        (1, 16, Precision::F32, false), // centring one row leaves no direction
        (6, 3, Precision::F16, false),
    ]
    .into_iter()
    .enumerate()
    {
        let entries = (0..count)
            .map(|r| Entry {
                path: if r % 3 == 2 {
                    format!("/elsewhere/img{r}.png").into()
                } else {
                    dir.join(format!("c{}/img{r}.jpg", r % 2))
                },
                label: (r % 2 == 0).then(|| format!("class {}", r % 3)),
            })
            .collect();
        let features = rng.normals(count * dim, 1.0);
        let provenance = Provenance {
            model: "resnet50".into(),
            weights_path: "weights.safetensors".into(),
            weights_sha256: format!("{:064x}", i),
            preprocess: Preprocess::imagenet(40 + i as u32, 32),
        };
        let index = Index::from_features(
            &features,
            dim,
            entries,
            precision,
            if center { Centring::Mean } else { Centring::Off },
            provenance,
        )
        .expect("an index");
        let path = dir.join(format!("valid-{i}.index"));
        index.save(&path).expect("save");
        let bytes = std::fs::read(&path).expect("read it back");
        files.push(Valid { header_end: parse(&bytes).expect("a safetensors file").data_start, bytes });
    }
    // Version 1: paths as given, no `paths_base`, no checksums (a stray row checksum tensor
    // is ignored there).
    let v2 = parse(&files[0].bytes).expect("parsed");
    let mut header = v2.header.clone();
    let meta = header["__metadata__"].as_object_mut().expect("metadata");
    meta.insert("version".into(), "1".into());
    meta.remove("paths_base");
    meta.remove("index_dir");
    meta.remove("crc32");
    let bytes = rebuild(&header, &files[0].bytes[v2.data_start..]);
    files.push(Valid { header_end: parse(&bytes).expect("parsed").data_start, bytes });
    files
}

/// Header edits the random mutations rarely reach: sizes that are huge, zero or wrap,
/// offsets beyond the file, other dtypes, metadata that disagrees, a shrunken but
/// consistent index.
fn targeted(rng: &mut Rng, base: &Valid) -> (&'static str, Vec<u8>) {
    let parsed = parse(&base.bytes).expect("valid files parse");
    let data = &base.bytes[parsed.data_start..];
    let mut header = parsed.header;
    let big = |rng: &mut Rng| -> Value {
        let picks = [
            json!(0),
            json!(1),
            json!(-1),
            json!(1u64 << 32),
            json!((1u64 << 32) + 3),
            json!(1u64 << 62),
            json!(u64::MAX),
            json!(1e30),
            json!("18446744073709551616"),
        ];
        picks[rng.int(0, picks.len() - 1)].clone()
    };
    let kind = match rng.int(0, 8) {
        0 => {
            let shape = json!([big(rng), big(rng)]);
            header["embeddings"]["shape"] = shape;
            "huge embeddings shape"
        }
        1 => {
            let offsets = json!([big(rng), big(rng)]);
            let tensor = if header.contains_key("mean") && rng.uniform() < 0.5 { "mean" } else { "embeddings" };
            header[tensor]["data_offsets"] = offsets;
            "huge data offsets"
        }
        2 => {
            let dtypes = ["F16", "F32", "BF16", "F64", "I8", "f32", ""];
            header["embeddings"]["dtype"] = json!(dtypes[rng.int(0, dtypes.len() - 1)]);
            "another dtype"
        }
        3 => {
            let keys = ["count", "dim", "resize", "crop"];
            let key = keys[rng.int(0, keys.len() - 1)];
            let value = match big(rng) {
                Value::String(s) => s,
                v => v.to_string(),
            };
            header["__metadata__"][key] = json!(value);
            "huge metadata sizes"
        }
        4 => {
            // Numbers that are finite in JSON but not in f32.
            let key = if rng.uniform() < 0.5 { "mean_rgb" } else { "std_rgb" };
            let values = [1e39, -1e39, 3e38, 1e-46, 0.0];
            let triple: Vec<f64> = (0..3).map(|_| values[rng.int(0, values.len() - 1)]).collect();
            header["__metadata__"][key] = json!(serde_json::to_string(&triple).expect("json"));
            "out-of-range preprocessing"
        }
        5 => {
            // Paths and labels that disagree with the rows.
            let key = if rng.uniform() < 0.5 { "paths" } else { "labels" };
            let values = [json!([]), json!([null]), json!([1, 2]), json!({}), json!(vec!["a"; 40])];
            let value = values[rng.int(0, values.len() - 1)].to_string();
            header["__metadata__"][key] = json!(value);
            "paths and labels"
        }
        6 => {
            // A consistent index with no rows, or rows of width zero.
            let meta = header["__metadata__"].as_object_mut().expect("metadata");
            let count: usize = meta["count"].as_str().and_then(|c| c.parse().ok()).unwrap_or(0);
            let dim: usize = meta["dim"].as_str().and_then(|c| c.parse().ok()).unwrap_or(0);
            let (count, dim) = if rng.uniform() < 0.5 { (0, dim) } else { (count, 0) };
            meta.insert("count".into(), count.to_string().into());
            meta.insert("dim".into(), dim.to_string().into());
            meta.insert("paths".into(), serde_json::to_string(&vec!["x.png"; count]).expect("json").into());
            meta.insert("labels".into(), serde_json::to_string(&vec![None::<String>; count]).expect("json").into());
            header["embeddings"]["shape"] = json!([count, dim]);
            header["embeddings"]["data_offsets"] = json!([0, 0]);
            if header.contains_key("mean") {
                header["mean"]["shape"] = json!([dim]);
                header["mean"]["data_offsets"] = json!([0, 4 * dim]);
            }
            "no rows or zero width"
        }
        7 => {
            // Unknown metadata and whitespace: must load as the original.
            header["__metadata__"]["zz_unknown"] = json!("ignored");
            "unknown metadata"
        }
        _ => {
            let mut bytes = base.bytes.clone();
            let value: u64 = match rng.int(0, 4) {
                0 => u64::MAX,
                1 => 1 << 63,
                2 => 100_000_001,
                3 => (bytes.len() - 8 + 1) as u64,
                _ => 0,
            };
            bytes[..8].copy_from_slice(&value.to_le_bytes());
            return ("header length field", bytes);
        }
    };
    (kind, rebuild(&header, data))
}

/// The f32 (or f16 widened) values of tensor `name` in the mutant, as the test reads it.
fn tensor_bits(parsed: &Parsed, bytes: &[u8], name: &str) -> Option<(String, Vec<usize>, Vec<u32>)> {
    let entry = parsed.header.get(name)?;
    let dtype = entry["dtype"].as_str()?.to_string();
    let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone()).ok()?;
    let [begin, end]: [usize; 2] = serde_json::from_value(entry["data_offsets"].clone()).ok()?;
    let raw = bytes.get(parsed.data_start.checked_add(begin)?..parsed.data_start.checked_add(end)?)?;
    let bits = match dtype.as_str() {
        "F32" => raw.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        "F16" => raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect(),
        _ => return None,
    };
    Some((dtype, shape, bits))
}

/// Checks a loaded index against the mutant's own header and against the invariants.
fn check_index(index: &Index, bytes: &[u8], problems: &mut Vec<String>) {
    let mut fail = |p: String| problems.push(p);
    let Some(parsed) = parse(bytes) else { return fail("loaded a file whose header does not parse".into()) };
    let meta = &parsed.header["__metadata__"];
    let text = |key: &str| meta[key].as_str().unwrap_or_default().to_string();
    if index.dim == 0 || index.is_empty() {
        fail(format!("loaded an index of {} rows of width {}", index.len(), index.dim));
    }
    if text("dim") != index.dim.to_string() || text("count") != index.len().to_string() {
        fail(format!("loaded {} x {}; the metadata says {} x {}", index.len(), index.dim, text("count"), text("dim")));
    }
    let rows: Vec<u32> = match &index.embeddings {
        Embeddings::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        Embeddings::F16(v) => v.iter().map(|x| x.to_bits() as u32).collect(),
    };
    match tensor_bits(&parsed, bytes, "embeddings") {
        Some((dtype, shape, bits)) => {
            if shape != [index.len(), index.dim]
                || bits != rows
                || dtype != format!("{:?}", index.embeddings.precision())
            {
                fail(format!("the rows are not the file's {dtype} {shape:?} tensor"));
            }
        }
        None => fail("loaded rows the file does not hold".into()),
    }
    let widened = index.embeddings.rows_f32(index.dim, 0, index.len());
    if let Some(at) = widened.iter().position(|v| !v.is_finite()) {
        fail(format!("loaded a non-finite row value {} at {at}", widened[at]));
    }
    match (&index.mean, tensor_bits(&parsed, bytes, "mean")) {
        (None, None) => {}
        (Some(mean), Some((_, shape, bits))) => {
            if shape != [index.dim] || mean.iter().map(|x| x.to_bits()).ne(bits) {
                fail("the mean is not the file's mean tensor".into());
            }
            if mean.iter().any(|v| !v.is_finite()) {
                fail("loaded a non-finite mean".into());
            }
        }
        _ => fail("the mean does not match the file's tensors".into()),
    }
    let labels: Option<Vec<Option<String>>> = serde_json::from_str(&text("labels")).ok();
    if labels.as_ref().map(|l| l.iter().eq(index.entries.iter().map(|e| &e.label))) != Some(true) {
        fail("labels differ from the metadata".into());
    }
    // Paths that are not UTF-8 are `\udcXX` escapes, which a `String` refuses.
    let paths = lookalike::index::paths::decode_array(&text("paths")).unwrap_or_default();
    if paths.len() != index.len() || !paths.iter().zip(&index.entries).all(|(p, e)| e.path.ends_with(p)) {
        fail("paths differ from the metadata".into());
    }
    let p = &index.provenance;
    if (p.model.as_str(), p.weights_path.as_str(), p.weights_sha256.as_str())
        != (&text("model")[..], &text("weights_path")[..], &text("weights_sha256")[..])
    {
        fail("provenance differs from the metadata".into());
    }
    let pre = &p.preprocess;
    if pre.validate().is_err() || pre.mean.iter().chain(&pre.std).any(|v| !v.is_finite()) {
        fail(format!("loaded an invalid preprocessing {pre:?}"));
    }
    if text("resize") != pre.resize.to_string() || text("crop") != pre.crop.to_string() {
        fail(format!("resize {} / crop {} loaded as {} / {}", text("resize"), text("crop"), pre.resize, pre.crop));
    }
}

#[test]
fn index_load() {
    let scratch = harness::Scratch::new("index");
    let dir = &scratch.0;
    let valid = valid_files(dir);
    let originals: Vec<Index> = valid
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let path = dir.join(format!("original-{i}.index"));
            std::fs::write(&path, &v.bytes).expect("write");
            Index::load(&path).expect("a valid index loads")
        })
        .collect();
    let donors: Vec<&[u8]> = valid.iter().map(|v| &v.bytes[..]).collect();
    let path: PathBuf = dir.join("case.index");
    harness::fuzz("index", 0x1D3E8, harness::cases(11_000), |rng| {
        let which = rng.int(0, valid.len() - 1);
        let base = &valid[which];
        let (kind, bytes, data_only) = if rng.uniform() < 0.2 {
            let (kind, bytes) = targeted(rng, base);
            (kind, bytes, false)
        } else {
            let m = mutate::mutate(rng, &base.bytes, &donors, &(0..base.header_end));
            let data_only = matches!(&m.changed, Changed::InPlace(at) if at.iter().all(|&a| a >= base.header_end));
            // Only a file with checksums must refuse every change of its tensor bytes.
            let data_only =
                data_only && parse(&base.bytes).is_some_and(|p| p.header["__metadata__"].get("crc32").is_some());
            (m.kind, m.bytes, data_only)
        };
        std::fs::write(&path, &bytes).expect("write the case");
        let header_len = parse(&bytes).map_or(bytes.len(), |p| p.data_start) as u64;
        let bound = bytes.len() as u64 + 8 * header_len + SLACK;
        let mut problems = Vec::new();
        let run = harness::run("index", bound, || Index::load(&path));
        problems.extend(run.problems);
        let outcome = match run.value {
            Some(Ok(index)) => {
                if data_only && bytes != base.bytes {
                    problems.push("served a file whose tensor bytes changed (its checksums disagree)".into());
                }
                check_index(&index, &bytes, &mut problems);
                if index == originals[which] { "ok (as the original)" } else { "ok" }.to_string()
            }
            Some(Err(e)) => {
                if data_only && !matches!(&e, Error::DamagedIndex { .. }) {
                    problems.push(format!("tensor bytes changed, but not refused as damage: {e}"));
                }
                if kind == "unknown metadata" {
                    problems.push(format!("refused unknown metadata: {e}"));
                }
                if let Error::Io { .. } | Error::Safetensors { .. } | Error::DamagedIndex { .. } = &e {
                    let named = matches!(&e, Error::Io { path: p, .. } | Error::Safetensors { path: p, .. }
                        | Error::DamagedIndex { path: p, .. } if *p == path);
                    if !named {
                        problems.push(format!("the error does not name the file: {e}"));
                    }
                }
                harness::kind(&e)
            }
            None => "panic".into(),
        };
        Case { mutation: kind, outcome, problems }
    });
}
