//! GPU kernels beside their CPU twins on ResNet50 shapes, and the whole forward.
//! Timing wraps submit + wait (`iter_custom`); throughput is in FLOPs (as "elements").

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lookalike::cpu;
use lookalike::model::{BatchNormMode, CpuResNet50, GpuResNet50, RandomResNet50};
use lookalike::model::resnet50::ShapeWalk;
use lookalike::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use lookalike::ops::matmul::{matmul, MatmulShape};
use lookalike::ops::Tiles;
use lookalike::rng::Rng;
use lookalike::Context;

fn context() -> Context {
    Context::new().unwrap_or_else(|e| panic!("benchmarks need a GPU adapter: {e}"))
}

fn bench_conv(c: &mut Criterion) {
    let ctx = context();
    let mut rng = Rng::new(1);
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10);
    // layer2 3x3 and layer3 1x1 at a 112x112 input (a quarter of 224 per side, to stay quick
    // on software adapters).
    for (name, shape) in [
        ("layer2_3x3", Conv2dShape::square(1, 14, 14, 128, 128, 3, 1, 1)),
        ("layer3_1x1", Conv2dShape::square(1, 7, 7, 1024, 256, 1, 1, 0)),
        ("stem_7x7s2", Conv2dShape::square(1, 112, 112, 3, 64, 7, 2, 3)),
    ] {
        group.throughput(Throughput::Elements(shape.flops() as u64));
        let input = rng.normals(shape.input_len(), 1.0);
        let weight = rng.normals(shape.weight_len(), 0.1);
        let bias = rng.normals(shape.out_c, 0.1);
        let (ib, wb, bb) = (ctx.upload("i", &input).unwrap(), ctx.upload("w", &weight).unwrap(), ctx.upload("b", &bias).unwrap());
        let out = ctx.storage("o", shape.output_len()).unwrap();
        let bufs = Conv2dBuffers { input: &ib, weight: &wb, scale: None, bias: Some(&bb), residual: None, output: &out };
        let d = conv2d(&ctx, &shape, &bufs, true, Tiles::default()).unwrap();
        group.bench_function(format!("gpu/{name}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    ctx.run(&[&d]).unwrap();
                }
                start.elapsed()
            })
        });
        group.bench_function(format!("cpu/{name}"), |b| {
            b.iter(|| cpu::conv2d(&shape, &input, &weight, None, Some(&bias), None, true).unwrap())
        });
    }
    group.finish();
}

fn bench_matmul(c: &mut Criterion) {
    let ctx = context();
    let mut rng = Rng::new(2);
    let shape = MatmulShape { m: 1024, n: 1024, k: 1024, b_transposed: false };
    let a = rng.normals(shape.m * shape.k, 1.0);
    let b = rng.normals(shape.k * shape.n, 1.0);
    let (ab, bb) = (ctx.upload("a", &a).unwrap(), ctx.upload("b", &b).unwrap());
    let cb = ctx.storage("c", shape.m * shape.n).unwrap();
    let mut group = c.benchmark_group("matmul_1024");
    group.sample_size(10).throughput(Throughput::Elements(shape.flops() as u64));
    for tile_k in [16, 32] {
        let tiles = Tiles { tile_k, ..Tiles::default() };
        let d = matmul(&ctx, &shape, &ab, &bb, &cb, tiles).unwrap();
        group.bench_function(format!("gpu/tile_k{tile_k}"), |bch| {
            bch.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    ctx.run(&[&d]).unwrap();
                }
                start.elapsed()
            })
        });
    }
    group.bench_function("cpu", |bch| bch.iter(|| cpu::matmul(&shape, &a, &b).unwrap()));
    group.finish();
}

fn bench_resnet50(c: &mut Criterion) {
    let ctx = context();
    let net = RandomResNet50::generate(0).unwrap().net;
    let size = if ctx.is_cpu() { 64 } else { 224 };
    let batch = 1;
    let input = Rng::new(3).normals(batch * size * size * 3, 1.0);
    let mut gpu = GpuResNet50::new(&ctx, &net, BatchNormMode::Folded).unwrap();
    let cpu = CpuResNet50::new(&net).unwrap();
    gpu.forward(&ctx, &input, batch, size, size).unwrap();
    let mut group = c.benchmark_group(format!("resnet50_{size}"));
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements((ShapeWalk::resnet50(size, size).flops * batch as f64) as u64));
    group.bench_function("gpu", |b| b.iter(|| gpu.forward(&ctx, &input, batch, size, size).unwrap()));
    group.bench_function("cpu", |b| b.iter(|| cpu.forward(&input, batch, size, size).unwrap()));
    group.finish();
}

fn bench_pool_topk_preprocess(c: &mut Criterion) {
    use lookalike::ops::pool::{max_pool, MaxPoolShape};
    use lookalike::ops::preprocess::PreprocessBatch;
    use lookalike::ops::topk::{TopK, TopKInput, TopKOutput};
    let ctx = context();
    let mut rng = Rng::new(4);
    let timed = |ctx: &Context, dispatches: &[&lookalike::gpu::Dispatch], iters: u64| {
        let start = Instant::now();
        for _ in 0..iters {
            ctx.run(dispatches).unwrap();
        }
        start.elapsed()
    };

    // The stem's max pool at 224: 112x112x64 -> 56x56x64.
    let shape = MaxPoolShape { batch: 1, in_h: 112, in_w: 112, channels: 64, kernel: 3, stride: 2, pad: 1 };
    let input = rng.normals(shape.input_len(), 1.0);
    let (ib, ob) = (ctx.upload("i", &input).unwrap(), ctx.storage("o", shape.output_len()).unwrap());
    let d = max_pool(&ctx, &shape, &ib, &ob).unwrap();
    let mut group = c.benchmark_group("max_pool_stem_224");
    group.sample_size(10).throughput(Throughput::Elements(shape.input_len() as u64));
    group.bench_function("gpu", |b| b.iter_custom(|iters| timed(&ctx, &[&d], iters)));
    group.bench_function("cpu", |b| b.iter(|| cpu::max_pool(&shape, &input).unwrap()));
    group.finish();

    // Top-k of one row of 100k scores.
    let len = 100_000;
    let scores = rng.normals(len, 1.0);
    let sb = ctx.upload("scores", &scores).unwrap();
    let mut group = c.benchmark_group("topk_100k");
    group.sample_size(10).throughput(Throughput::Elements(len as u64));
    for k in [10, 100] {
        let (os, oi) = (ctx.storage("s", k).unwrap(), ctx.storage("i", k).unwrap());
        let select = TopK::new(&ctx, TopKInput::Scores { scores: &sb, index_base: 0 }, 1, len, k, &TopKOutput::dense(&os, &oi, k)).unwrap();
        let refs: Vec<_> = select.dispatches().iter().collect();
        group.bench_function(format!("gpu/k{k}"), |b| b.iter_custom(|iters| timed(&ctx, &refs, iters)));
        group.bench_function(format!("cpu/k{k}"), |b| b.iter(|| cpu::topk::topk(&scores, 1, len, k).unwrap()));
    }
    group.finish();

    // Preprocessing one 640x480 image to 224.
    let image = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8]));
    let p = lookalike::cpu::preprocess::Preprocess::default();
    let out = ctx.storage("nhwc", 224 * 224 * 3).unwrap();
    let prepared = PreprocessBatch::new(&ctx, std::slice::from_ref(&image), &p, &out).unwrap();
    let refs: Vec<_> = prepared.dispatches().iter().collect();
    let mut group = c.benchmark_group("preprocess_640x480_to_224");
    group.sample_size(10).throughput(Throughput::Elements(224 * 224));
    group.bench_function("gpu", |b| b.iter_custom(|iters| timed(&ctx, &refs, iters)));
    group.bench_function("cpu", |b| b.iter(|| lookalike::cpu::preprocess::preprocess_image(&image, &p).unwrap()));
    group.finish();
}

criterion_group!(benches, bench_conv, bench_matmul, bench_resnet50, bench_pool_topk_preprocess);
criterion_main!(benches);
