//! One `Searcher` shared by several threads: every concurrent search gives exactly what the
//! same search gives alone, by features (several reference chunks) and by image.

mod common;

use std::sync::Barrier;

use common::ctx;
use lookalike::image::{Rgb, RgbImage};
use lookalike::index::{Centring, Entry, Provenance};
use lookalike::ops::matmul::Precision;
use lookalike::rng::Rng;
use lookalike::train::{ConvNet, ConvNetSpec};
use lookalike::{Backbone, Embedder, Index, Neighbor, SearchOptions, Searcher};

/// Compile-time: a searcher can be shared between threads.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Searcher>();
};

const THREADS: usize = 4;

/// Results as exact bits, so "the same" means bit for bit.
fn bits(found: &[Vec<Neighbor>]) -> Vec<Vec<(usize, u32)>> {
    found.iter().map(|row| row.iter().map(|n| (n.index, n.score.to_bits())).collect()).collect()
}

fn index(features: &[f32], dim: usize, model: &str, preprocess: lookalike::cpu::preprocess::Preprocess) -> Index {
    let n = features.len() / dim;
    let entries = (0..n).map(|i| Entry::new(format!("row-{i}"), None)).collect();
    let provenance =
        Provenance { model: model.into(), weights_path: "test".into(), weights_sha256: "test".into(), preprocess };
    Index::from_features(features, dim, entries, Precision::F32, Centring::Mean, provenance).unwrap()
}

/// Runs each thread's list of searches at once (all threads start together), and checks
/// every answer against the same search run alone beforehand.
fn check_concurrent<Q: Sync>(searcher: &Searcher, work: &[Vec<Q>], search: impl Fn(&Q) -> Vec<Vec<Neighbor>> + Sync) {
    let alone: Vec<Vec<_>> = work.iter().map(|list| list.iter().map(|q| bits(&search(q))).collect()).collect();
    let start = Barrier::new(work.len());
    let together: Vec<Vec<_>> = std::thread::scope(|scope| {
        let threads: Vec<_> = work
            .iter()
            .map(|list| {
                let (start, search) = (&start, &search);
                scope.spawn(move || {
                    start.wait();
                    list.iter().map(|q| bits(&search(q))).collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (thread, (got, want)) in together.iter().zip(&alone).enumerate() {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g, w, "thread {thread}, search {i}");
        }
    }
    let idle = searcher.idle_scratch_sets();
    assert!((1..=THREADS).contains(&idle), "{idle} idle scratch sets");
}

#[test]
fn concurrent_feature_searches_match_single_thread() {
    let mut rng = Rng::new(11);
    let (n, dim) = (701, 48);
    let features = rng.normals(n * dim, 1.0);
    let index = index(&features, dim, "test", Default::default());
    let options = SearchOptions { chunk_rows: Some(150), ..Default::default() };
    let searcher = Searcher::for_features(ctx().clone(), &index, options).unwrap();
    assert!(searcher.chunk_count() > 1);
    // Each thread: several (queries, k) of its own, some shared with other threads.
    let work: Vec<Vec<(Vec<f32>, usize)>> = (0..THREADS)
        .map(|t| {
            [(1, 1), (3, 5), (2 + t, 10), (7, 3 + t)].iter().map(|&(q, k)| (rng.normals(q * dim, 1.0), k)).collect()
        })
        .collect();
    check_concurrent(&searcher, &work, |(q, k)| searcher.search_features(q, *k).unwrap());
}

#[test]
fn concurrent_image_searches_match_single_thread() {
    let spec = ConvNetSpec { widths: [8, 8, 8], dim: 8, ..ConvNetSpec::recipe(16, 16, 3) };
    let net = Backbone::ConvNet(ConvNet::glorot(spec, 5).unwrap());
    let preprocess = net.default_preprocess().unwrap();
    let mut rng = Rng::new(12);
    // Odd sizes, so each image is resized and cropped.
    let mut picture = |i: u32| {
        let f: Vec<f32> = (0..6).map(|_| rng.range(0.5, 6.0)).collect();
        let (w, h) = (17 + 3 * i, 16 + 2 * (i % 4));
        RgbImage::from_fn(w, h, |x, y| {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            Rgb(std::array::from_fn(|c| (127.5 + 127.0 * (f[2 * c] * u + f[2 * c + 1] * v).sin()) as u8))
        })
    };
    let images: Vec<RgbImage> = (0..24).map(&mut picture).collect();
    let features = Embedder::gpu(ctx().clone(), &net).unwrap().embed_decoded(&images[..16], &preprocess).unwrap();
    let index = index(&features, net.feature_dim(), net.name(), preprocess);
    let searcher = Searcher::new(ctx().clone(), &net, &index, SearchOptions::default()).unwrap();
    // Each thread: runs of 1 to 5 queries, from the indexed images and the others.
    let work: Vec<Vec<(std::ops::Range<usize>, usize)>> =
        (0..THREADS).map(|t| vec![(t..t + 1, 1), (t + 14..t + 19, 4), (2 * t..2 * t + 3, 2 + t)]).collect();
    check_concurrent(&searcher, &work, |(range, k)| searcher.search_images(&images[range.clone()], *k).unwrap());
    // An indexed image still finds itself first.
    assert_eq!(searcher.search_images(&images[3..4], 1).unwrap()[0][0].index, 3);
}
