//! The search pipeline: GPU against the CPU brute force, chunked scans, f16 storage with
//! centring, the index file, and the whole image-to-neighbours path.

mod common;

use common::ctx;
use lookalike::cpu::preprocess::{preprocess_image, Preprocess};
use lookalike::index::{Centring, Entry, Index, Provenance};
use lookalike::model::{CpuResNet50, RandomResNet50, FEATURE_DIM};
use lookalike::ops::matmul::Precision;
use lookalike::rng::Rng;
use lookalike::search::{search_features_cpu, Neighbor, SearchOptions, Searcher};
use lookalike::{Context, Error};

fn provenance(preprocess: Preprocess) -> Provenance {
    Provenance { model: "resnet50".into(), weights_path: "test".into(), weights_sha256: "seed:1".into(), preprocess }
}

fn entries(n: usize) -> Vec<Entry> {
    (0..n).map(|i| Entry::new(format!("img{i}.png"), Some(format!("class{}", i % 3)))).collect()
}

/// Features like a random ResNet's: a large shared direction plus small per-image parts,
/// some rows duplicated (tied scores).
fn concentrated_features(n: usize, dim: usize, rng: &mut Rng) -> Vec<f32> {
    let common: Vec<f32> = (0..dim).map(|_| rng.range(0.5, 1.5)).collect();
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        if i % 50 == 49 {
            let copy = out[(i - 1) * dim..i * dim].to_vec();
            out.extend(copy);
            continue;
        }
        out.extend(common.iter().map(|c| c * 10.0 + 0.5 * rng.normal()));
    }
    out
}

/// Scores agree rank by rank, and wherever the ids differ the two scores are within `tie`.
fn assert_same_up_to_near_ties(got: &[Vec<Neighbor>], expected: &[Vec<Neighbor>], tie: f32) {
    assert_eq!(got.len(), expected.len());
    for (q, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g.len(), e.len());
        for (rank, (a, b)) in g.iter().zip(e).enumerate() {
            assert!((a.score - b.score).abs() <= 1e-4, "query {q} rank {rank}: score {} vs {}", a.score, b.score);
            assert!(
                a.index == b.index || (a.score - b.score).abs() <= tie,
                "query {q} rank {rank}: id {} ({}) vs {} ({})",
                a.index,
                a.score,
                b.index,
                b.score
            );
        }
    }
}

fn ids(results: &[Vec<Neighbor>]) -> Vec<Vec<usize>> {
    results.iter().map(|r| r.iter().map(|n| n.index).collect()).collect()
}

/// A handle on the shared test device for a searcher (each owns one): a clone shares the
/// compiled pipelines.
fn context() -> Context {
    ctx().clone()
}

#[test]
fn gpu_search_matches_cpu_brute_force_and_chunking_changes_nothing() {
    let mut rng = Rng::new(1);
    let (n, dim) = (1237, 256);
    let features = concentrated_features(n, dim, &mut rng);
    let queries = concentrated_features(5, dim, &mut rng);
    for center in [false, true] {
        let index = Index::from_features(
            &features,
            dim,
            entries(n),
            Precision::F32,
            if center { Centring::Mean } else { Centring::Off },
            provenance(Preprocess::default()),
        )
        .unwrap();
        for k in [1, 10, 300] {
            let expected = search_features_cpu(&index, &queries, k).unwrap();
            let whole = Searcher::for_features(context(), &index, SearchOptions::default()).unwrap();
            let got = whole.search_features(&queries, k).unwrap();
            if center {
                // Centred cosines are well separated: the exact ids.
                assert_eq!(ids(&got), ids(&expected), "center={center} k={k}");
            }
            // Uncentred cosines of concentrated features sit within f32 rounding of each
            // other: only such near-ties may swap.
            assert_same_up_to_near_ties(&got, &expected, 1e-6);
            let chunked =
                Searcher::for_features(context(), &index, SearchOptions { chunk_rows: Some(97), ..Default::default() })
                    .unwrap();
            assert!(chunked.chunk_count() > 10);
            assert_eq!(
                ids(&chunked.search_features(&queries, k).unwrap()),
                ids(&got),
                "chunked, center={center} k={k}"
            );
        }
    }
}

#[test]
fn k_equal_to_n_and_bad_k_values() {
    let mut rng = Rng::new(2);
    let (n, dim) = (33, 16);
    let features = rng.normals(n * dim, 1.0);
    let index = Index::from_features(
        &features,
        dim,
        entries(n),
        Precision::F32,
        Centring::Off,
        provenance(Preprocess::default()),
    )
    .unwrap();
    let searcher =
        Searcher::for_features(context(), &index, SearchOptions { chunk_rows: Some(8), ..Default::default() }).unwrap();
    let q = rng.normals(dim, 1.0);
    let all = searcher.search_features(&q, n).unwrap();
    let mut seen: Vec<usize> = all[0].iter().map(|x| x.index).collect();
    assert!(all[0].windows(2).all(|w| w[0].score >= w[1].score));
    seen.sort();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    for k in [0, n + 1] {
        assert!(matches!(searcher.search_features(&q, k), Err(Error::InvalidArgument(_))), "k = {k}");
    }
    assert!(matches!(searcher.search_features(&q[..dim - 1], 1), Err(Error::ShapeMismatch { .. })));
    let mut two = rng.normals(2 * dim, 1.0);
    two[dim + 3] = f32::INFINITY;
    let refused = searcher.search_features(&two, 1);
    assert!(
        matches!(&refused, Err(Error::NonFinite { name, index, .. }) if name == "query features" && *index == dim + 3),
        "{refused:?}"
    );
}

#[test]
fn f16_index_with_centering_keeps_recall() {
    let mut rng = Rng::new(3);
    let (n, dim, queries) = (3000, 2048, 20);
    let features = concentrated_features(n, dim, &mut rng);
    let q = concentrated_features(queries, dim, &mut rng);
    let exact = Index::from_features(
        &features,
        dim,
        entries(n),
        Precision::F32,
        Centring::Mean,
        provenance(Preprocess::default()),
    )
    .unwrap();
    let half = Index::from_features(
        &features,
        dim,
        entries(n),
        Precision::F16,
        Centring::Mean,
        provenance(Preprocess::default()),
    )
    .unwrap();
    let truth = search_features_cpu(&exact, &q, 10).unwrap();
    let got =
        Searcher::for_features(context(), &half, SearchOptions::default()).unwrap().search_features(&q, 10).unwrap();
    let hits: usize =
        truth.iter().zip(&got).map(|(t, g)| g.iter().filter(|x| t.iter().any(|y| y.index == x.index)).count()).sum();
    let recall = hits as f64 / (queries * 10) as f64;
    assert!(recall >= 0.995, "f16 recall@10 with centring {recall}");
}

/// An index and the images below its folder can move together; a version 1 file keeps its
/// paths as stored.
#[test]
fn index_paths_follow_the_index_folder() {
    let root = std::env::temp_dir().join(format!("lookalike-move-{}", std::process::id()));
    let (old, new) = (root.join("old"), root.join("new"));
    std::fs::create_dir_all(&old).unwrap();
    let mut moved = entries(3);
    for e in &mut moved {
        e.path = old.join("images").join(&e.path);
    }
    let features = Rng::new(5).normals(3 * 8, 1.0);
    let index =
        Index::from_features(&features, 8, moved, Precision::F32, Centring::Off, provenance(Preprocess::default()))
            .unwrap();
    index.save(&old.join("index.safetensors")).unwrap();
    std::fs::rename(&old, &new).unwrap();
    let loaded = Index::load(&new.join("index.safetensors")).unwrap();
    assert_eq!(loaded.entries[2].path, new.join("images").join("img2.png"));

    // The index file copied alone finds the images where it was written, if they are not
    // beside it.
    loaded.save(&new.join("index.safetensors")).unwrap();
    std::fs::create_dir_all(new.join("images")).unwrap();
    std::fs::write(new.join("images").join("img2.png"), b"").unwrap();
    std::fs::create_dir_all(root.join("copy")).unwrap();
    std::fs::copy(new.join("index.safetensors"), root.join("copy").join("index.safetensors")).unwrap();
    let copied = Index::load(&root.join("copy").join("index.safetensors")).unwrap();
    assert_eq!(copied.entries[2].path, new.join("images").join("img2.png"));
    assert_eq!(
        copied.entries[1].path,
        root.join("copy").join("images").join("img1.png"),
        "missing everywhere: beside the index"
    );

    // Version 1: the same file without `paths_base`, paths as typed at build time.
    let bytes = std::fs::read(new.join("index.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    metadata.remove("paths_base");
    metadata.remove("crc32"); // version 1 predates checksums
    metadata.insert("version".into(), "1".into());
    let v1 = safetensors::serialize(st.tensors(), Some(metadata.clone())).unwrap();
    std::fs::write(new.join("v1.safetensors"), v1).unwrap();
    assert_eq!(
        Index::load(&new.join("v1.safetensors")).unwrap().entries[2].path,
        std::path::Path::new("images/img2.png")
    );
    // A newer version is refused with the versions this build reads.
    metadata.insert("version".into(), "3".into());
    std::fs::write(new.join("v3.safetensors"), safetensors::serialize(st.tensors(), Some(metadata)).unwrap()).unwrap();
    let err = Index::load(&new.join("v3.safetensors")).unwrap_err().to_string();
    assert!(err.contains("version 3"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn index_file_round_trips_and_is_written_atomically() {
    let dir = std::env::temp_dir().join(format!("lookalike-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("index.safetensors");
    let mut rng = Rng::new(4);
    let features = rng.normals(20 * 8, 1.0);
    // Loading returns absolute paths: the entries start absolute (below the index's folder
    // and elsewhere) for the round trip to be exact.
    let mut absolute = entries(20);
    for (i, e) in absolute.iter_mut().enumerate() {
        e.path = if i == 7 { "/elsewhere/img7.png".into() } else { dir.join("images").join(&e.path) };
    }
    for (precision, center) in [(Precision::F32, false), (Precision::F16, true)] {
        let index = Index::from_features(
            &features,
            8,
            absolute.clone(),
            precision,
            if center { Centring::Mean } else { Centring::Off },
            provenance(Preprocess::imagenet(72, 64)),
        )
        .unwrap();
        index.save(&path).unwrap();
        let loaded = Index::load(&path).unwrap();
        assert_eq!(loaded, index);
        // The same content gives the same bytes (metadata keys in a fixed order), also after
        // a load; the header is what the safetensors crate reads, data 8-byte aligned.
        let bytes = std::fs::read(&path).unwrap();
        loaded.save(&path).unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes, "saving the same index twice gave other bytes");
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(header % 8, 0);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let metadata = meta.metadata().as_ref().unwrap();
        assert_eq!(metadata["format"], "lookalike-index");
        // Stored relative to the index's folder where possible (Python users join them to it).
        let stored: Vec<String> = serde_json::from_str(&metadata["paths"]).unwrap();
        assert_eq!(
            (stored[0].as_str(), stored[7].as_str(), metadata["paths_base"].as_str()),
            ("images/img0.png", "/elsewhere/img7.png", "index_dir")
        );
        assert_eq!(st.tensor("embeddings").unwrap().shape(), [20, 8]);
        assert_eq!(st.names().len(), if center { 3 } else { 2 }, "embeddings, mean when centred, embeddings_crc32");
    }
    // A failed save (the target is a directory) leaves no temporary file behind and the
    // existing index untouched.
    let before = std::fs::read(&path).unwrap();
    let index = Index::load(&path).unwrap();
    assert!(index.save(&dir).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Truncated and foreign files are errors, not panics.
    std::fs::write(dir.join("cut.safetensors"), &before[..before.len() / 2]).unwrap();
    assert!(Index::load(&dir.join("cut.safetensors")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn images_to_neighbours_on_the_gpu_match_the_cpu_pipeline() {
    let weights = RandomResNet50::generate(1).unwrap().net;
    let preprocess = Preprocess::imagenet(64, 64);
    let mut rng = Rng::new(5);
    // Eight smooth random images of different sizes.
    let images: Vec<image::RgbImage> = (0..8)
        .map(|i| {
            let (w, h) = (64 + 7 * i, 64 + 3 * (i % 3));
            let f: Vec<f32> = (0..6).map(|_| rng.range(1.0, 8.0)).collect();
            image::RgbImage::from_fn(w, h, |x, y| {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                image::Rgb(std::array::from_fn(|c| (127.5 + 127.0 * (f[2 * c] * u + f[2 * c + 1] * v).sin()) as u8))
            })
        })
        .collect();
    let cpu = CpuResNet50::new(&weights).unwrap();
    let mut data = Vec::new();
    for img in &images {
        data.extend(preprocess_image(img, &preprocess).unwrap());
    }
    let features = cpu.forward(&data, images.len(), 64, 64).unwrap();
    let index = Index::from_features(
        &features[..6 * FEATURE_DIM],
        FEATURE_DIM,
        entries(6),
        Precision::F32,
        Centring::Mean,
        provenance(preprocess),
    )
    .unwrap();
    let expected = search_features_cpu(&index, &features[6 * FEATURE_DIM..], 4).unwrap();
    let searcher =
        Searcher::new(context(), &weights, &index, SearchOptions { chunk_rows: Some(4), ..Default::default() })
            .unwrap();
    let got = searcher.search_images(&images[6..], 4).unwrap();
    assert_eq!(ids(&got), ids(&expected));
    for (g, e) in got.iter().flatten().zip(expected.iter().flatten()) {
        assert!((g.score - e.score).abs() <= 1e-4, "score {} vs {}", g.score, e.score);
    }
    // An indexed image finds itself first with cosine 1.
    let own = searcher.search_images(&images[..1], 1).unwrap();
    assert_eq!(own[0][0].index, 0);
    assert!((own[0][0].score - 1.0).abs() < 1e-4, "{}", own[0][0].score);
}

/// `Searcher::with_weights` refuses a net of the index's architecture and shape but other
/// weights, which `Searcher::new` cannot tell apart, and takes the index's own.
#[test]
fn with_weights_refuses_another_net_of_the_same_shape() {
    use lookalike::index::{IndexBuilder, LoadedWeights};
    use lookalike::model::convnet::{ConvNet, ConvNetSpec};
    let spec = ConvNetSpec { widths: [4, 4, 4], dim: 4, ..ConvNetSpec::recipe(16, 16, 3) };
    let own = LoadedWeights::from_convnet(ConvNet::glorot(spec, 1).unwrap(), "own.safetensors").unwrap();
    let other = LoadedWeights::from_convnet(ConvNet::glorot(spec, 2).unwrap(), "other.safetensors").unwrap();
    let features = Rng::new(3).normals(5 * 4, 1.0);
    let index = IndexBuilder::on_cpu(&own).from_features(&features, entries(5)).unwrap();

    let err = Searcher::with_weights(ctx().clone(), &other, &index, SearchOptions::default())
        .err()
        .expect("other weights of the same shape must be refused")
        .to_string();
    assert!(err.contains("other weights") && err.contains("other.safetensors"), "{err}");
    // `new` checks only the shape, so it takes the wrong net: what with_weights guards against.
    assert!(Searcher::new(ctx().clone(), &other.net, &index, SearchOptions::default()).is_ok());

    let searcher = Searcher::with_weights(ctx().clone(), &own, &index, SearchOptions::default()).unwrap();
    let found = searcher.search_features(&features[2 * 4..3 * 4], 1).unwrap();
    assert_eq!(found[0][0].index, 2);
}

#[test]
fn unit_query_rows_score_as_the_searcher_scores() {
    use lookalike::model::convnet::{ConvNet, ConvNetSpec};
    use lookalike::{Backbone, Embedder};
    let spec = ConvNetSpec { widths: [6, 6, 6], dim: 8, ..ConvNetSpec::recipe(16, 16, 3) };
    let net = Backbone::ConvNet(ConvNet::glorot(spec, 5).unwrap());
    let pre = net.default_preprocess().unwrap();
    let picture = |i: u32| {
        image::RgbImage::from_fn(17 + i, 15 + 2 * i, |x, y| {
            image::Rgb([(x * 13 + i * 30) as u8, (y * 11) as u8, (x * y + i) as u8])
        })
    };
    let images: Vec<image::RgbImage> = (0..7).map(picture).collect();
    let mut gpu = Embedder::gpu(ctx().clone(), &net).unwrap();
    let features = gpu.embed_decoded(&images, &pre).unwrap();
    let provenance = Provenance { model: net.name().into(), ..provenance(pre) };
    let index = Index::from_features(&features, 8, entries(7), Precision::F32, Centring::Mean, provenance).unwrap();
    let mean = index.mean.as_deref();

    // The GPU's unit rows are the CPU reference's normalisation of its features, and the CPU
    // embedder's unit rows.
    let unit = gpu.embed_decoded_unit(&images[..3], &pre, mean).unwrap();
    let reference = lookalike::cpu::l2_normalize(&features[..3 * 8], 3, 8, mean).unwrap();
    let worst = unit.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-6, "GPU unit rows differ from the CPU normalisation by {worst}");
    let cpu = Embedder::cpu(&net).unwrap().embed_decoded_unit(&images[..3], &pre, mean).unwrap();
    let worst = unit.iter().zip(&cpu).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-4, "GPU and CPU unit rows differ by {worst}");

    // Their dot products with the index's rows are the searcher's scores.
    let searcher = Searcher::new(ctx().clone(), &net, &index, SearchOptions::default()).unwrap();
    let found = searcher.search_images(&images[..3], 7).unwrap();
    for (q, neighbours) in found.iter().enumerate() {
        for n in neighbours {
            let row = index.embeddings.rows_f32(8, n.index, n.index + 1);
            let dot: f32 = row.iter().zip(&unit[q * 8..(q + 1) * 8]).map(|(a, b)| a * b).sum();
            assert!((dot - n.score).abs() < 1e-5, "query {q} row {}: {dot} vs {}", n.index, n.score);
        }
    }
    let err = gpu.embed_decoded_unit(&images[..1], &pre, Some(&[0.0; 5])).unwrap_err().to_string();
    assert!(err.contains("query mean") && err.contains("8 values"), "{err}");
}
