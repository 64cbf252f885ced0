//! A damaged index file is an error naming the tensor and row, never results: flipped bits,
//! scaled and non-finite rows, a non-finite mean, truncations and splices, through the
//! library and the CLI; undamaged files, old ones without checksums included, load as
//! written.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::cli::Scratch;
#[cfg(feature = "cli")]
use common::cli::{lookalike, s};
use lookalike::cpu::preprocess::Preprocess;
use lookalike::index::{Centring, Embeddings, Entry, Index, Provenance};
#[cfg(feature = "cli")]
use lookalike::npy;
use lookalike::ops::matmul::Precision;
use lookalike::rng::Rng;
use lookalike::Error;

/// A small index of `rows` seeded rows of `dim`, its entries below `dir` (so a load gives
/// them back exactly).
fn build(dir: &Path, rows: usize, dim: usize, precision: Precision, center: bool) -> Index {
    let features = Rng::new(dim as u64 + rows as u64).normals(rows * dim, 2.0);
    let entries = (0..rows)
        .map(|i| Entry { path: dir.join(format!("images/c{}/img{i}.png", i % 3)), label: Some(format!("c{}", i % 3)) })
        .collect();
    let provenance = Provenance {
        model: "resnet50".into(),
        weights_path: "w.safetensors".into(),
        weights_sha256: "seed:1".into(),
        preprocess: Preprocess::imagenet(72, 64),
    };
    Index::from_features(
        &features,
        dim,
        entries,
        precision,
        if center { Centring::Mean } else { Centring::Off },
        provenance,
    )
    .unwrap()
}

/// Where each tensor's bytes lie in a safetensors file: `(dtype, first byte, end)`.
fn layout(bytes: &[u8]) -> BTreeMap<String, (String, usize, usize)> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, t)| {
            let offsets = &t["data_offsets"];
            let at = |i: usize| 8 + header_len + offsets[i].as_u64().unwrap() as usize;
            (name, (t["dtype"].as_str().unwrap().to_string(), at(0), at(1)))
        })
        .collect()
}

/// A copy of the file at `path` with `damage` done to its bytes, written beside it.
fn damaged(path: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(path).unwrap();
    damage(&mut bytes);
    let out = path.with_file_name(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

/// The file as a lookalike without checksums wrote it: no `embeddings_crc32`, no `crc32`.
fn without_checksums(bytes: &[u8]) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    metadata.remove("crc32");
    let tensors: Vec<_> = st.tensors().into_iter().filter(|(name, _)| name != "embeddings_crc32").collect();
    safetensors::serialize(tensors, Some(metadata)).unwrap()
}

/// Byte range of element `(row, column)` of `embeddings`.
fn element(bytes: &[u8], dim: usize, row: usize, column: usize) -> std::ops::Range<usize> {
    let (dtype, start, _) = &layout(bytes)["embeddings"];
    let width = if dtype == "F16" { 2 } else { 4 };
    let at = start + (row * dim + column) * width;
    at..at + width
}

/// Rewrites element `(row, column)` of `embeddings` through `f` (on its f32 value).
fn set(bytes: &mut [u8], dim: usize, row: usize, column: usize, f: impl Fn(f32) -> f32) {
    let range = element(bytes, dim, row, column);
    let slot = &mut bytes[range];
    if slot.len() == 2 {
        let old = half::f16::from_le_bytes([slot[0], slot[1]]).to_f32();
        slot.copy_from_slice(&half::f16::from_f32(f(old)).to_le_bytes());
    } else {
        let old = f32::from_le_bytes(slot.try_into().unwrap());
        slot.copy_from_slice(&f(old).to_le_bytes());
    }
}

/// Flips bit `bit` (0 = lowest) of element `(row, column)` of `embeddings`.
fn flip(bytes: &mut [u8], dim: usize, row: usize, column: usize, bit: usize) {
    let range = element(bytes, dim, row, column);
    bytes[range.start + bit / 8] ^= 1 << (bit % 8);
}

fn load_error(path: &Path) -> String {
    match Index::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_names(message: &str, path: &Path, needles: &[&str]) {
    assert!(message.contains(&path.display().to_string()), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{message}\ndoes not say {needle:?}");
    }
}

#[test]
fn damaged_embeddings_and_mean_are_errors_naming_tensor_and_row() {
    let dir = Scratch::at(std::env::temp_dir().join(format!("lookalike-integrity-{}", std::process::id())));
    for (dim, precision, center) in [
        (8, Precision::F32, true),
        (8, Precision::F16, false),
        (2048, Precision::F16, true),
        (2048, Precision::F32, false),
    ] {
        let rows = 13;
        let index = build(&dir.0, rows, dim, precision, center);
        let path = dir.path("index.safetensors");
        index.save(&path).unwrap();
        assert_eq!(Index::load(&path).unwrap(), index, "{dim} {precision:?}");
        let bytes = std::fs::read(&path).unwrap();
        // The same index as an older lookalike wrote it: invariants only.
        let legacy = dir.path("legacy.safetensors");
        std::fs::write(&legacy, without_checksums(&bytes)).unwrap();
        assert_eq!(Index::load(&legacy).unwrap(), index);

        let exponent_bit = if precision == Precision::F16 { 14 } else { 30 };
        let (row, column) = (rows / 2, dim - 1);
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Damage)> = vec![
            ("exponent", Box::new(move |b| flip(b, dim, row, column, exponent_bit))),
            ("scaled", Box::new(move |b| (0..dim).for_each(|c| set(b, dim, row, c, |x| x * 100.0)))),
            ("nan", Box::new(move |b| (0..dim).for_each(|c| set(b, dim, row, c, |_| f32::NAN)))),
            ("inf", Box::new(move |b| set(b, dim, row, column, |_| f32::INFINITY))),
            ("half zeroed", Box::new(move |b| (0..dim / 2).for_each(|c| set(b, dim, row, c, |_| 0.0)))),
        ];
        for (what, damage) in &cases {
            // Caught by the invariants, with and without checksums.
            for (source, name) in [(&path, "damaged.safetensors"), (&legacy, "damaged-legacy.safetensors")] {
                let file = damaged(source, name, damage);
                let message = load_error(&file);
                assert_names(&message, &file, &[&format!("row {row} of `embeddings`"), "damaged"]);
                if *what == "nan" {
                    assert!(message.contains("holds NaN at column 0"), "{message}");
                }
            }
        }

        // A low mantissa bit or a sign: only the checksum sees it; a file without one loads.
        for bit in [0, if precision == Precision::F16 { 15 } else { 31 }] {
            let file = damaged(&path, "mantissa.safetensors", |b| flip(b, dim, row, 3, bit));
            assert_names(&load_error(&file), &file, &[&format!("row {row} of `embeddings` fails its CRC-32")]);
            let file = damaged(&legacy, "mantissa-legacy.safetensors", |b| flip(b, dim, row, 3, bit));
            assert_ne!(Index::load(&file).unwrap().embeddings, index.embeddings);
        }

        // Two rows swapped (a splice): both unit-norm, the first fails its CRC-32.
        let file = damaged(&path, "swapped.safetensors", |b| {
            let (a, c) = (element(b, dim, 2, 0).start, element(b, dim, 5, 0).start);
            let width = element(b, dim, 0, 0).len() * dim;
            let row2 = b[a..a + width].to_vec();
            b.copy_within(c..c + width, a);
            b[c..c + width].copy_from_slice(&row2);
        });
        assert_names(&load_error(&file), &file, &["row 2 of `embeddings` fails its CRC-32"]);

        // The row checksums themselves, or the metadata they cover.
        let file = damaged(&path, "crc.safetensors", |b| {
            let (_, start, _) = layout(b)["embeddings_crc32"];
            b[start + 4 * 7] ^= 0x10;
        });
        assert_names(&load_error(&file), &file, &["tensor `embeddings_crc32` fails its CRC-32"]);
        let file = damaged(&path, "crop.safetensors", |b| {
            let at = b.windows(11).position(|w| w == br#""crop":"64""#).unwrap();
            b[at + 9] ^= 0x02; // "64" -> "66"
        });
        assert_names(&load_error(&file), &file, &["metadata `crop` fails its CRC-32"]);

        if center {
            let nan_mean = |b: &mut Vec<u8>| {
                let (_, start, _) = layout(b)["mean"];
                b[start + 4 * 3..start + 4 * 4].copy_from_slice(&f32::NAN.to_le_bytes());
            };
            let file = damaged(&path, "mean.safetensors", nan_mean);
            assert_names(&load_error(&file), &file, &["tensor `mean` fails its CRC-32"]);
            let file = damaged(&legacy, "mean-legacy.safetensors", nan_mean);
            assert_names(&load_error(&file), &file, &["`mean` holds NaN at element 3"]);
        }
    }
}

/// Someone who scales a row and writes matching checksums still meets the invariants.
#[test]
fn checksums_recomputed_over_bad_rows_do_not_help() {
    let dir = Scratch::at(std::env::temp_dir().join(format!("lookalike-integrity-crc-{}", std::process::id())));
    let dim = 16;
    let mut index = build(&dir.0, 9, dim, Precision::F32, false);
    let Embeddings::F32(values) = &mut index.embeddings else { unreachable!() };
    values[4 * dim..5 * dim].iter_mut().for_each(|x| *x *= 100.0);
    let path = dir.path("scaled.safetensors");
    index.save(&path).unwrap();
    assert_names(&load_error(&path), &path, &["row 4 of `embeddings` has norm 99.99", "damaged"]);
}

#[test]
fn every_truncation_and_half_checksummed_files_are_errors() {
    let dir = Scratch::at(std::env::temp_dir().join(format!("lookalike-integrity-cut-{}", std::process::id())));
    let index = build(&dir.0, 5, 8, Precision::F16, true);
    let path = dir.path("index.safetensors");
    index.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path("cut.safetensors");
    for len in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        assert!(Index::load(&cut).is_err(), "a file cut at {len} of {} bytes loaded", bytes.len());
    }
    // Checksum key without its tensor, and the tensor without its key.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    let no_rows: Vec<_> = st.tensors().into_iter().filter(|(n, _)| n != "embeddings_crc32").collect();
    std::fs::write(&cut, safetensors::serialize(no_rows, Some(metadata.clone())).unwrap()).unwrap();
    assert_names(&load_error(&cut), &cut, &["tensor `embeddings_crc32` is missing"]);
    let mut no_key = metadata.clone();
    no_key.remove("crc32");
    std::fs::write(&cut, safetensors::serialize(st.tensors(), Some(no_key)).unwrap()).unwrap();
    assert_names(&load_error(&cut), &cut, &["metadata `crc32` is missing"]);
    // Relabelled version 1 (which predates checksums) with a row damaged: the checksums it
    // still carries are checked, and they cover `version`.
    let relabelled = damaged(&path, "relabelled.safetensors", |b| {
        let at = b.windows(13).position(|w| w == b"\"version\":\"2\"").expect("the version entry");
        b[at + 11] = b'1';
        flip(b, 8, 3, 2, 3);
    });
    assert_names(&load_error(&relabelled), &relabelled, &["metadata `version`", "CRC-32"]);
    // Bytes after the last tensor are no part of a safetensors file.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"GARBAGE!GARBAGE!");
    std::fs::write(&cut, &longer).unwrap();
    assert_names(&load_error(&cut), &cut, &["16 bytes", "after"]);
    // A key the loader reads, dropped from the checksum map along with an edit of its value.
    let mut uncovered = metadata.clone();
    let mut map: serde_json::Value = serde_json::from_str(&uncovered["crc32"]).unwrap();
    map["metadata"].as_object_mut().unwrap().remove("labels");
    uncovered.insert("crc32".into(), map.to_string());
    uncovered.insert("labels".into(), serde_json::json!(vec!["dog"; 5]).to_string());
    std::fs::write(&cut, safetensors::serialize(st.tensors(), Some(uncovered)).unwrap()).unwrap();
    assert_names(&load_error(&cut), &cut, &["metadata `labels` is not covered by `crc32`"]);
    // A damaged `crc32` value names itself.
    let mut garbled = metadata.clone();
    garbled.insert("crc32".into(), "{\"metadata\":".into());
    std::fs::write(&cut, safetensors::serialize(st.tensors(), Some(garbled)).unwrap()).unwrap();
    assert_names(&load_error(&cut), &cut, &["metadata `crc32` is not the checksum map"]);
}

#[test]
fn foreign_dtypes_and_directories_name_the_file() {
    let dir = Scratch::at(std::env::temp_dir().join(format!("lookalike-integrity-dtype-{}", std::process::id())));
    let index = build(&dir.0, 3, 4, Precision::F32, false);
    let path = dir.path("index.safetensors");
    index.save(&path).unwrap();
    let bytes = without_checksums(&std::fs::read(&path).unwrap());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let wide: Vec<u8> = st.tensor("embeddings").unwrap().data().chunks(4).flat_map(|_| [0u8; 8]).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![3, 4], &wide).unwrap();
    let f64_path = dir.path("f64.safetensors");
    std::fs::write(&f64_path, safetensors::serialize([("embeddings", view)], header.metadata().clone()).unwrap())
        .unwrap();
    let err = Index::load(&f64_path).unwrap_err();
    assert!(matches!(&err, Error::UnsupportedDtype { expected: "F32 or F16", .. }), "{err:?}");
    assert_names(&err.to_string(), &f64_path, &["embeddings", "F64"]);
    let err = Index::load(&dir.0).unwrap_err().to_string();
    assert_eq!(err, format!("{} is a directory, not an index file", dir.0.display()));
}

/// The binary: `search --features`, `classify` and `index --add` on a damaged index fail
/// naming it and the row, print nothing and leave it as it was; a directory is named so.
#[test]
#[cfg(feature = "cli")]
fn cli_refuses_damaged_indexes() {
    let dir = Scratch::at(std::env::temp_dir().join(format!("lookalike-integrity-cli-{}", std::process::id())));
    let dim = lookalike::model::FEATURE_DIM;
    let index = build(&dir.0, 6, dim, Precision::F16, true);
    let path = dir.path("index.safetensors");
    index.save(&path).unwrap();
    let file = damaged(&path, "damaged.safetensors", |b| flip(b, dim, 4, 100, 14));
    let before = std::fs::read(&file).unwrap();
    let queries = dir.path("q.npy");
    npy::write_f32(&queries, &[1, dim], &Rng::new(3).normals(dim, 1.0)).unwrap();
    let image = dir.path("q.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([90, 120, 200])).save(&image).unwrap();
    let images = dir.path("images");
    std::fs::create_dir_all(&images).unwrap();
    let row = "row 4 of `embeddings`";
    for args in [
        vec!["search", s(&file), "--features", s(&queries), "-k", "1"],
        vec!["search", s(&file), s(&image), "-k", "1", "--json"],
        vec!["classify", s(&file), s(&image), "-k", "1"],
        vec!["index", s(&images), "--add", "-o", s(&file)],
    ] {
        lookalike(&args).assert_error(1, None, &[s(&file), row, "damaged"]);
        assert!(std::fs::read(&file).unwrap() == before, "{args:?} changed the index");
    }
    let message = "is a directory, not an index file";
    lookalike(&["search", s(&images), s(&image), "-k", "1"]).assert_error(1, None, &[s(&images), message]);
}
