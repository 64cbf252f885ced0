//! A trained convnet as the search pipeline's backbone: the GPU forward against the CPU twin
//! (`model::convnet_cpu::embed`) on odd-sized RGB and grey PNGs, a one-channel net seeing grey
//! images as it was trained to, and `embed`, `index`, `search`, `classify` through the CLI
//! with a convnet weights file, the index recording it, and a network of the other kind
//! refused.
//!
//! The nets are seeded Glorot initialisations (`ConvNet::glorot`), small enough for
//! lavapipe: 24x24 RGB inputs for the CLI, 20x20 grey ones for the one-channel net. GPU
//! tests fail, never skip, without an adapter ([`common::ctx`]; the CLI runs fail too).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{GrayImage, Luma, Rgb, RgbImage};
use lookalike::cpu::preprocess::{decode_file, preprocess_image};
use lookalike::embed::Embedder;
use lookalike::index::{sha256_file, Entry, Index, Provenance};
use lookalike::model::{Backbone, ResNet50};
use lookalike::npy;
use lookalike::ops::matmul::Precision;
use lookalike::search::{SearchOptions, Searcher};
use lookalike::train::{ConvNet, ConvNetSpec};

use common::cli::{lookalike, s, seed1_weights, Run, Scratch};
use common::{assert_close, ctx};

/// GPU vs the CPU twin, relative L2 over all unit rows.
const GPU_CPU_LIMIT: f64 = 1e-5;
/// Cosine of an indexed image with itself through the search pipeline.
const SELF_SCORE: f64 = 0.9999;

/// The CLI's net: 24x24 RGB in, 6-d embeddings.
fn rgb_spec() -> ConvNetSpec {
    ConvNetSpec { widths: [8, 12, 16], dim: 6, ..ConvNetSpec::recipe(24, 24, 3) }
}

/// A one-channel net (as trained on grey images): 20x20 in, 5-d embeddings.
fn grey_spec() -> ConvNetSpec {
    ConvNetSpec { widths: [6, 8, 10], dim: 5, ..ConvNetSpec::recipe(20, 20, 1) }
}

/// A busy colour pattern; `seed` makes different images.
fn pattern(width: u32, height: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = x.wrapping_mul(37 + seed) ^ y.wrapping_mul(11 + 3 * seed);
        Rgb([v as u8, (v >> 3) as u8 ^ (seed as u8).wrapping_mul(50), (x * 4 + y * seed) as u8])
    })
}

/// A smooth grey pattern; `seed` makes different images.
fn grey_pattern(width: u32, height: u32, seed: u32) -> GrayImage {
    GrayImage::from_fn(width, height, |x, y| {
        let t = (x as f32 * (0.3 + 0.1 * seed as f32)).sin() * (y as f32 * 0.45).cos();
        Luma([(127.5 + 120.0 * t) as u8 ^ (seed as u8 * 7)])
    })
}

/// Folder of this process's files.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("lookalike-convnet-pipeline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    })
}

fn unit_rows(rows: &[f32], dim: usize) {
    for (i, row) in rows.chunks_exact(dim).enumerate() {
        let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {i} has norm {norm}");
    }
}

#[test]
fn gpu_embeddings_match_the_cpu_twin_on_rgb_and_grey_images() {
    let dir = Scratch::at(root().join("gpu-vs-cpu"));
    let net = ConvNet::glorot(rgb_spec(), 11).unwrap();
    let backbone = Backbone::ConvNet(net.clone());
    let preprocess = backbone.default_preprocess().unwrap();
    assert_eq!((preprocess.resize, preprocess.crop, preprocess.mean, preprocess.std), (24, 24, [0.0; 3], [1.0; 3]));
    // Odd sizes (down- and upsampled), the net's own size (passed through), grey files.
    let mut paths = Vec::new();
    for (i, (w, h)) in [(37, 29), (24, 24), (53, 41), (17, 30), (24, 31)].into_iter().enumerate() {
        let path = dir.path(&format!("rgb{i}.png"));
        pattern(w, h, i as u32 + 1).save(&path).unwrap();
        paths.push(path);
    }
    for (i, (w, h)) in [(33, 27), (24, 24)].into_iter().enumerate() {
        let path = dir.path(&format!("grey{i}.png"));
        grey_pattern(w, h, i as u32 + 2).save(&path).unwrap();
        paths.push(path);
    }
    let mut gpu = Embedder::gpu(ctx().clone(), &backbone).unwrap();
    assert_eq!(gpu.feature_dim(), 6);
    let on_gpu = gpu.embed_files(&paths, &preprocess, 3, |_| {}).unwrap();
    let on_cpu = Embedder::cpu(&net).unwrap().embed_files(&paths, &preprocess, 4, |_| {}).unwrap();
    // The oracle itself, on the CPU's preprocessing.
    let input: Vec<f32> =
        paths.iter().flat_map(|p| preprocess_image(&decode_file(p).unwrap(), &preprocess).unwrap()).collect();
    let twin = lookalike::model::convnet_cpu::embed(&net, &input, paths.len()).unwrap();
    assert_eq!(on_gpu.len(), paths.len() * 6);
    unit_rows(&on_gpu, 6);
    assert_close("GPU vs model::convnet_cpu::embed", &on_gpu, &twin, GPU_CPU_LIMIT);
    assert_close("CPU embedder vs model::convnet_cpu::embed", &on_cpu, &twin, 1e-6);
    // Images differ, so their embeddings do (the test would pass on a constant otherwise).
    assert!(lookalike::compare::relative_l2(&on_gpu[..6], &on_gpu[6..12]) > 1e-3);
    // A preprocessed batch through `embed`, whose plan is another batch size.
    let batch = lookalike::npy::NhwcBatch { batch: paths.len(), height: 24, width: 24, data: input };
    assert_close("GPU embed of a tensor", &gpu.embed(&batch).unwrap(), &twin, GPU_CPU_LIMIT);
    // Another crop is refused by either engine, naming the net's size.
    let other = lookalike::cpu::preprocess::Preprocess { resize: 30, crop: 30, ..preprocess };
    for engine in [&mut gpu, &mut Embedder::cpu(&net).unwrap()] {
        let err = engine.embed_files(&paths[..1], &other, 1, |_| {}).unwrap_err().to_string();
        assert!(err.contains("24x24") && err.contains("30x30"), "{err}");
    }
}

/// A one-channel net runs on the RGB pipeline through the luma of its input: on grey files
/// (decoded to R = G = B) it gives what the one-channel net gives on the grey pixels.
#[test]
fn a_one_channel_net_sees_grey_images_as_trained() {
    let dir = Scratch::at(root().join("grey-net"));
    let net = ConvNet::glorot(grey_spec(), 3).unwrap();
    let backbone = Backbone::ConvNet(net.clone());
    let preprocess = backbone.default_preprocess().unwrap();
    let mut paths = Vec::new();
    for (i, (w, h)) in [(20, 20), (27, 23), (20, 35), (41, 20)].into_iter().enumerate() {
        let path = dir.path(&format!("g{i}.png"));
        grey_pattern(w, h, i as u32).save(&path).unwrap();
        paths.push(path);
    }
    // The one-channel oracle on the grey values: one channel of the preprocessed image.
    let grey: Vec<f32> = paths
        .iter()
        .flat_map(|p| preprocess_image(&decode_file(p).unwrap(), &preprocess).unwrap().into_iter().step_by(3))
        .collect();
    // The net's own size passes through: exactly u8 / 255, as training fed it.
    let first = image::open(&paths[0]).unwrap().to_luma8();
    assert!(grey[..400].iter().zip(first.as_raw()).all(|(&g, &p)| g == p as f32 / 255.0));
    let expected = lookalike::model::convnet_cpu::embed(&net, &grey, paths.len()).unwrap();
    for mut engine in [Embedder::gpu(ctx().clone(), &backbone).unwrap(), Embedder::cpu(&backbone).unwrap()] {
        let got = engine.embed_files(&paths, &preprocess, 4, |_| {}).unwrap();
        assert_close("RGB pipeline vs the one-channel net", &got, &expected, GPU_CPU_LIMIT);
    }
}

/// The library refuses to search an index with the other kind of network.
#[test]
fn searcher_refuses_an_index_of_the_other_network() {
    let net = ConvNet::glorot(rgb_spec(), 1).unwrap();
    let preprocess = Backbone::ConvNet(net.clone()).default_preprocess().unwrap();
    let index = |model: &str, dim: usize| {
        let features: Vec<f32> = (0..2 * dim).map(|i| (i % 7) as f32 - 3.0).collect();
        let entries = vec![Entry::new("a.png", None), Entry::new("b.png", None)];
        let provenance =
            Provenance { model: model.into(), weights_path: "w".into(), weights_sha256: "x".into(), preprocess };
        Index::from_features(&features, dim, entries, Precision::F32, false, provenance).unwrap()
    };
    let refused = |result: lookalike::Result<Searcher>| result.err().map(|e| e.to_string()).unwrap_or_default();
    let err =
        refused(Searcher::new(ctx().clone(), &ResNet50::architecture(), &index("convnet", 6), Default::default()));
    assert!(err.contains("built with a convnet") && err.contains("resnet50"), "{err}");
    let err = refused(Searcher::new(ctx().clone(), &net, &index("resnet50", 6), SearchOptions::default()));
    assert!(err.contains("built with a resnet50") && err.contains("convnet"), "{err}");
    let err = refused(Searcher::new(ctx().clone(), &net, &index("convnet", 7), SearchOptions::default()));
    assert!(err.contains("6-d rows") && err.contains("7-d rows"), "{err}");
    assert!(Searcher::new(ctx().clone(), &net, &index("convnet", 6), SearchOptions::default()).is_ok());
}

/// The CLI fixture: a convnet weights file, a labelled folder (RGB and grey PNGs of odd
/// sizes) and its centred index, built once.
struct Fixture {
    weights: PathBuf,
    db: PathBuf,
    images: Vec<(PathBuf, String)>,
    index: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = root().join("cli");
        std::fs::create_dir_all(&dir).unwrap();
        let weights = dir.join("convnet.safetensors");
        let mut net = ConvNet::glorot(rgb_spec(), 7).unwrap();
        net.class_names = vec!["bars".into(), "waves".into()];
        net.save(&weights).unwrap();
        let db = dir.join("db");
        let mut images = Vec::new();
        for (class, sizes) in [("bars", [(31, 26), (24, 24), (45, 33)]), ("waves", [(26, 38), (29, 29), (24, 40)])] {
            std::fs::create_dir_all(db.join(class)).unwrap();
            for (i, (w, h)) in sizes.into_iter().enumerate() {
                let path = db.join(class).join(format!("{i}.png"));
                match class {
                    "bars" => pattern(w, h, 3 * i as u32 + 1).save(&path).unwrap(),
                    _ => grey_pattern(w, h, i as u32 + 1).save(&path).unwrap(),
                }
                images.push((std::path::absolute(&path).unwrap(), class.to_string()));
            }
        }
        let index = dir.join("index.safetensors");
        lookalike(&["index", s(&db), "--weights", s(&weights), "-o", s(&index), "--center", "--batch", "4"])
            .assert_success();
        Fixture { weights, db, images, index }
    })
}

fn assert_fails(run: &Run, needles: &[&str]) {
    run.assert_error(1, None, needles);
}

#[test]
fn index_records_the_convnet_and_matches_embed() {
    let f = fixture();
    let index = Index::load(&f.index).unwrap();
    let p = &index.provenance;
    assert_eq!(p.model, "convnet");
    assert_eq!(p.weights_sha256, sha256_file(&f.weights).unwrap());
    assert_eq!(p.weights_path, s(&f.weights));
    assert_eq!(
        (p.preprocess.resize, p.preprocess.crop, p.preprocess.mean, p.preprocess.std),
        (24, 24, [0.0; 3], [1.0; 3])
    );
    assert_eq!((index.dim, index.len()), (6, f.images.len()));

    // `embed` writes the unit embeddings; the index holds them centred and normalised.
    let out = root().join("cli-embed.npy");
    let paths: Vec<&str> = index.entries.iter().map(|e| s(&e.path)).collect();
    for engine in [&[][..], &["--cpu"]] {
        let run = lookalike(&[&["embed", "--weights", s(&f.weights), "-o", s(&out)][..], engine, &paths].concat());
        run.assert_success();
        let array = npy::read_f32(&out).unwrap();
        assert_eq!(array.shape, [index.len(), 6], "{}", run.describe());
        unit_rows(&array.data, 6);
        let rows = lookalike::index::normalize_rows(&array.data, 6, index.mean.as_deref());
        assert_close("embed, centred, vs the index's rows", &rows, &index.embeddings.rows_f32(6, 0, index.len()), 1e-4);
    }
    // Another crop than the net's is refused before any work.
    let run = lookalike(&["embed", "--weights", s(&f.weights), "--crop", "20", "-o", s(&out), paths[0]]);
    assert_fails(&run, &["24x24", "20x20"]);
}

#[test]
fn search_finds_each_indexed_image_first_and_classify_votes() {
    let f = fixture();
    let queries: Vec<&str> = f.images.iter().map(|(p, _)| s(p)).collect();
    let run = lookalike(&[&["search", s(&f.index), "-k", "3", "--json"][..], &queries].concat());
    run.assert_success();
    let results = run.json();
    assert_eq!(results.len(), queries.len(), "{}", run.describe());
    for (item, (path, label)) in results.iter().zip(&f.images) {
        let best = &item["neighbors"][0];
        assert_eq!(best["path"].as_str(), Some(s(path)), "{}", run.describe());
        assert_eq!(best["label"].as_str(), Some(label.as_str()));
        assert!(best["score"].as_f64().unwrap() > SELF_SCORE, "{}", run.describe());
        assert!(item["neighbors"][1]["score"].as_f64().unwrap() < SELF_SCORE, "{}", run.describe());
    }
    // With k = 1 each image votes for its own label.
    let run = lookalike(&[&["classify", s(&f.index), "-k", "1"][..], &queries].concat());
    run.assert_success();
    for (path, label) in &f.images {
        assert!(run.stdout.contains(&format!("{} -> {label}", s(path))), "{}", run.describe());
    }
    let confusion = root().join("cli-confusion.png");
    let run = lookalike(&["classify", s(&f.index), "-k", "1", "--eval", s(&f.db), "--confusion", s(&confusion)]);
    run.assert_success();
    assert!(run.stdout.contains("accuracy 100.0% (6 of 6)"), "{}", run.describe());
}

#[test]
fn the_other_network_is_refused_either_way_round() {
    let f = fixture();
    let query = s(&f.images[0].0);
    // A convnet index with ResNet50 weights.
    for command in ["search", "classify"] {
        let run = lookalike(&[command, s(&f.index), query, "-k", "1", "--weights", s(seed1_weights())]);
        assert_fails(&run, &["built with a convnet", "holds a resnet50"]);
    }
    // A ResNet50 index with convnet weights: searched, and added to.
    let dir = Scratch::at(root().join("other-way"));
    let resnet_index = dir.path("resnet50.safetensors");
    let provenance = Provenance {
        model: "resnet50".into(),
        weights_path: "seed:1".into(),
        weights_sha256: "seed:1".into(),
        preprocess: Default::default(),
    };
    let features: Vec<f32> = (0..2 * 2048).map(|i| (i % 13) as f32).collect();
    let entries = vec![Entry::new(query, None), Entry::new(s(&f.images[1].0), None)];
    Index::from_features(&features, 2048, entries, Precision::F32, false, provenance)
        .unwrap()
        .save(&resnet_index)
        .unwrap();
    let run = lookalike(&["search", s(&resnet_index), query, "-k", "1", "--weights", s(&f.weights)]);
    assert_fails(&run, &["built with a resnet50", "holds a convnet"]);
    let run = lookalike(&["index", s(&f.db), "--add", "--weights", s(&f.weights), "-o", s(&resnet_index)]);
    assert_fails(&run, &["built with a resnet50", "holds a convnet"]);
}

/// A one-channel net through the CLI: grey images index and find themselves.
#[test]
fn a_one_channel_net_indexes_and_searches_grey_images() {
    let dir = Scratch::at(root().join("grey-cli"));
    let weights = dir.path("grey.safetensors");
    ConvNet::glorot(grey_spec(), 5).unwrap().save(&weights).unwrap();
    let folder = dir.path("digits");
    std::fs::create_dir_all(&folder).unwrap();
    let images: Vec<PathBuf> = (0..4)
        .map(|i| {
            let path = folder.join(format!("{i}.png"));
            grey_pattern(20 + 3 * i, 20 + 5 * i, i + 4).save(&path).unwrap();
            std::path::absolute(&path).unwrap()
        })
        .collect();
    let index = dir.path("index.safetensors");
    lookalike(&["index", s(&folder), "--weights", s(&weights), "-o", s(&index), "--center"]).assert_success();
    let loaded = Index::load(&index).unwrap();
    assert_eq!((loaded.provenance.model.as_str(), loaded.dim, loaded.provenance.preprocess.crop), ("convnet", 5, 20));
    let run = lookalike(
        &[&["search", s(&index), "-k", "2", "--json"][..], &images.iter().map(|p| s(p)).collect::<Vec<_>>()].concat(),
    );
    run.assert_success();
    for (item, path) in run.json().iter().zip(&images) {
        assert_eq!(item["neighbors"][0]["path"].as_str(), Some(s(path)), "{}", run.describe());
        assert!(item["neighbors"][0]["score"].as_f64().unwrap() > SELF_SCORE, "{}", run.describe());
    }
}

/// A convnet of non-square input cannot take the pipeline's square crops.
#[test]
fn a_non_square_convnet_is_refused_for_images() {
    let dir = Scratch::at(root().join("non-square"));
    let weights = dir.path("wide.safetensors");
    ConvNet::glorot(ConvNetSpec { height: 20, width: 28, ..grey_spec() }, 1).unwrap().save(&weights).unwrap();
    let image = dir.path("a.png");
    pattern(30, 30, 1).save(&image).unwrap();
    let run = lookalike(&["embed", "--weights", s(&weights), "-o", s(&dir.path("f.npy")), s(&image)]);
    assert_fails(&run, &["20x28", "square"]);
    let run = lookalike(&["index", s(&dir.0), "--weights", s(&weights), "-o", s(&dir.path("i.safetensors"))]);
    assert_fails(&run, &["20x28", "square"]);
}
