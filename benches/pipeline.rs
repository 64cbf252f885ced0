//! Whole paths, GPU beside the CPU reference: the ResNet50 forward (batch 1 and 8), the
//! k-NN scan (normalise, score, top-k) and image bytes to neighbours. On software adapters
//! (lavapipe) images are 64x64 and the index 20k rows so a run stays in minutes; the group
//! names say which.

mod common;

use std::time::Duration;

use common::context;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lookalike::cpu::preprocess::{preprocess_image, Preprocess};
use lookalike::index::{Centring, Entry, Index, Provenance};
use lookalike::model::resnet50::ShapeWalk;
use lookalike::model::{BatchNormMode, CpuResNet50, GpuResNet50, RandomResNet50, FEATURE_DIM};
use lookalike::ops::matmul::Precision;
use lookalike::rng::Rng;
use lookalike::search::{search_features_cpu, SearchOptions, Searcher};

fn bench_resnet50(c: &mut Criterion) {
    let ctx = context();
    let net = RandomResNet50::generate(0).unwrap().net;
    let size = if ctx.is_cpu() { 64 } else { 224 };
    let mut gpu = GpuResNet50::new(&ctx, &net, BatchNormMode::Folded).unwrap();
    let cpu = CpuResNet50::new(&net).unwrap();
    let mut group = c.benchmark_group(format!("resnet50_{size}"));
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for batch in [1, 8] {
        let input = Rng::new(3).normals(batch * size * size * 3, 1.0);
        gpu.forward(&ctx, &input, batch, size, size).unwrap();
        group.throughput(Throughput::Elements((ShapeWalk::resnet50(size, size).flops * batch as f64) as u64));
        group.bench_function(format!("gpu/batch{batch}"), |b| {
            b.iter(|| gpu.forward(&ctx, &input, batch, size, size).unwrap())
        });
        group.bench_function(format!("cpu/batch{batch}"), |b| {
            b.iter(|| cpu.forward(&input, batch, size, size).unwrap())
        });
    }
    group.finish();
}

fn index_of(rows: usize, precision: Precision, preprocess: Preprocess) -> Index {
    let features = Rng::new(7).normals(rows * FEATURE_DIM, 1.0);
    let entries = (0..rows).map(|i| Entry::new(i.to_string(), None)).collect();
    let provenance =
        Provenance { model: "bench".into(), weights_path: String::new(), weights_sha256: "seed:0".into(), preprocess };
    Index::from_features(&features, FEATURE_DIM, entries, precision, Centring::Mean, provenance).unwrap()
}

fn bench_knn_scan(c: &mut Criterion) {
    let ctx = context();
    let rows = if ctx.is_cpu() { 20_000 } else { 1_000_000 };
    let mut group = c.benchmark_group(format!("knn_scan_{}k_x_2048_k10", rows / 1000));
    group.sample_size(10);
    for precision in [Precision::F32, Precision::F16] {
        let index = index_of(rows, precision, Preprocess::default());
        let searcher = Searcher::for_features(context(), &index, SearchOptions::default()).unwrap();
        group.throughput(Throughput::Bytes(precision.bytes(rows * FEATURE_DIM) as u64));
        for q in [1usize, 64] {
            let queries = Rng::new(8).normals(q * FEATURE_DIM, 1.0);
            let dtype = format!("{precision:?}").to_lowercase();
            group.bench_function(format!("gpu/q{q}_{dtype}"), |b| {
                b.iter(|| searcher.search_features(&queries, 10).unwrap())
            });
            group.bench_function(format!("cpu/q{q}_{dtype}"), |b| {
                b.iter(|| search_features_cpu(&index, &queries, 10).unwrap())
            });
        }
    }
    group.finish();
}

fn bench_image_to_neighbours(c: &mut Criterion) {
    let ctx = context();
    let (rows, preprocess) =
        if ctx.is_cpu() { (20_000, Preprocess::imagenet(73, 64)) } else { (1_000_000, Preprocess::default()) };
    let net = RandomResNet50::generate(0).unwrap().net;
    let index = index_of(rows, Precision::F16, preprocess);
    let searcher = Searcher::new(ctx, &net, &index, SearchOptions::default()).unwrap();
    let cpu = CpuResNet50::new(&net).unwrap();
    let image = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let crop = preprocess.crop as usize;
    let mut group = c.benchmark_group(format!("image_to_10_neighbours_crop{crop}_{}k_f16", rows / 1000));
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Elements(1));
    group.bench_function("gpu", |b| b.iter(|| searcher.search_images(std::slice::from_ref(&image), 10).unwrap()));
    group.bench_function("cpu", |b| {
        b.iter(|| {
            let input = preprocess_image(&image, &preprocess).unwrap();
            let features = cpu.forward(&input, 1, crop, crop).unwrap();
            search_features_cpu(&index, &features, 10).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_resnet50, bench_knn_scan, bench_image_to_neighbours);
criterion_main!(benches);
