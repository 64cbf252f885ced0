//! Each GPU kernel family beside its CPU twin, on the shapes ResNet50 and the k-NN scan run.
//! GPU timing wraps submit + wait (`iter_custom`). Throughput "elements" are FLOPs for conv
//! and matmul, scores for top-k, input values for pooling and L2 normalisation, output pixels
//! for preprocessing. The metric-learning group times the convnet's backward kernels at the
//! recipe's batch (20 images of 28x28x1) and whole training steps, GPU beside CPU twin.
//! With `LOOKALIKE_BENCH_COOP=1`, on an adapter with matrix units, the convolutions and the
//! matmul also run on them (`gpu_coop/...`).

mod common;

use common::{context, timed, tuning};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lookalike::cpu;
use lookalike::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use lookalike::ops::conv2d_coop::conv2d_coop;
use lookalike::ops::coop::CoopTiles;
use lookalike::ops::gemv::scores;
use lookalike::ops::matmul::{matmul, MatmulShape, Precision};
use lookalike::ops::matmul_coop::matmul_coop;
use lookalike::ops::Tiles;
use lookalike::rng::Rng;

/// The stem and, for the first block of each stage at a 224x224 input, its 1x1 reduce, its
/// 3x3 (stride 2 from layer2 on) and its downsample projection. Batch 1.
fn resnet50_convs() -> Vec<(&'static str, Conv2dShape)> {
    let sq = Conv2dShape::square;
    vec![
        ("stem_7x7s2", sq(1, 224, 224, 3, 64, 7, 2, 3)),
        ("layer1_1x1", sq(1, 56, 56, 64, 64, 1, 1, 0)),
        ("layer1_3x3", sq(1, 56, 56, 64, 64, 3, 1, 1)),
        ("layer1_downsample", sq(1, 56, 56, 64, 256, 1, 1, 0)),
        ("layer2_1x1", sq(1, 56, 56, 256, 128, 1, 1, 0)),
        ("layer2_3x3s2", sq(1, 56, 56, 128, 128, 3, 2, 1)),
        ("layer2_downsample", sq(1, 56, 56, 256, 512, 1, 2, 0)),
        ("layer3_1x1", sq(1, 28, 28, 512, 256, 1, 1, 0)),
        ("layer3_3x3s2", sq(1, 28, 28, 256, 256, 3, 2, 1)),
        ("layer3_downsample", sq(1, 28, 28, 512, 1024, 1, 2, 0)),
        ("layer4_1x1", sq(1, 14, 14, 1024, 512, 1, 1, 0)),
        ("layer4_3x3s2", sq(1, 14, 14, 512, 512, 3, 2, 1)),
        ("layer4_downsample", sq(1, 14, 14, 1024, 2048, 1, 2, 0)),
    ]
}

fn bench_conv(c: &mut Criterion) {
    let ctx = context();
    let mut rng = Rng::new(1);
    let mut group = c.benchmark_group("conv2d_224");
    group.sample_size(10);
    for (name, shape) in resnet50_convs() {
        group.throughput(Throughput::Elements(shape.flops() as u64));
        let input = rng.normals(shape.input_len(), 1.0);
        let weight = rng.normals(shape.weight_len(), 0.1);
        let bias = rng.normals(shape.out_c, 0.1);
        let (ib, wb, bb) =
            (ctx.upload("i", &input).unwrap(), ctx.upload("w", &weight).unwrap(), ctx.upload("b", &bias).unwrap());
        let out = ctx.storage("o", shape.output_len()).unwrap();
        let bufs =
            Conv2dBuffers { input: &ib, weight: &wb, scale: None, bias: Some(&bb), residual: None, output: &out };
        // 4x4 and 8x8 blocks per invocation, with the workgroup rows the forward picks for
        // this many output rows (`ops::Tuning` chooses between the two per adapter).
        let d = conv2d(&ctx, &shape, &bufs, true, Tiles::for_rows(shape.m())).unwrap();
        group.bench_function(format!("gpu/{name}"), |b| b.iter_custom(|iters| timed(&ctx, &[&d], iters)));
        let d = conv2d(&ctx, &shape, &bufs, true, Tiles::for_rows(shape.m()).with_8x8_blocks_for(shape.out_c)).unwrap();
        group.bench_function(format!("gpu8x8/{name}"), |b| b.iter_custom(|iters| timed(&ctx, &[&d], iters)));
        if let Some(units) = ctx.cooperative_matrix() {
            // The default layout (2x2 subgroups) and 4x4 subgroups (half the staging per product).
            for (label, tiles) in
                [("gpu_coop", CoopTiles::default_for(units)), ("gpu_coop4x4", CoopTiles::four_by_four(units))]
            {
                let d = conv2d_coop(&ctx, &shape, &bufs, true, tiles).unwrap();
                group.bench_function(format!("{label}/{name}"), |b| b.iter_custom(|iters| timed(&ctx, &[&d], iters)));
            }
        }
        group.bench_function(format!("cpu/{name}"), |b| {
            b.iter(|| cpu::conv2d(&shape, &input, &weight, None, Some(&bias), None, true).unwrap())
        });
        // As the CPU ResNet50 runs it: weights prepared once (packed for the AVX2 kernel
        // where the CPU has it), output memory reused.
        let prepared = cpu::conv2d::ConvWeights::new(weight.clone(), shape.k(), shape.out_c).unwrap();
        let epilogue = cpu::conv2d::Epilogue { bias: Some(&bias), relu: true, ..Default::default() };
        let mut y = vec![0.0f32; shape.output_len()];
        group.bench_function(format!("cpu_prepared/{name}"), |b| {
            b.iter(|| cpu::conv2d::conv2d_prepared_into(&shape, &input, &prepared, &epilogue, &mut y).unwrap())
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
    for (name, tiles) in [
        ("tile_k16", Tiles { tile_k: 16, ..Tiles::default() }),
        ("tile_k32", Tiles::default()),
        ("8x8", Tiles::default().with_8x8_blocks()),
    ] {
        let d = matmul(&ctx, &shape, &ab, &bb, &cb, tiles).unwrap();
        group.bench_function(format!("gpu/{name}"), |bch| bch.iter_custom(|iters| timed(&ctx, &[&d], iters)));
    }
    if ctx.cooperative_matrix().is_some() {
        let d = matmul_coop(&ctx, &shape, &ab, &bb, Precision::F32, &cb).unwrap();
        group.bench_function("gpu_coop", |bch| bch.iter_custom(|iters| timed(&ctx, &[&d], iters)));
    }
    group.bench_function("cpu", |bch| bch.iter(|| cpu::matmul(&shape, &a, &b).unwrap()));
    group.finish();
}

/// The k-NN scoring shapes: 1 and 64 unit queries against 16k reference rows of 2048 (one
/// storage binding even on software adapters), f32 and f16 rows, the kernels search picks
/// (`ops::gemv::scores`).
fn bench_knn_scores(c: &mut Criterion) {
    let ctx = context();
    let mut rng = Rng::new(5);
    let (n, dim) = (16_000, 2048);
    let rows = rng.normals(n * dim, 1.0);
    let rows16: Vec<half::f16> = rows.iter().map(|&x| half::f16::from_f32(x)).collect();
    let rows16_f32: Vec<f32> = rows16.iter().map(|x| x.to_f32()).collect();
    let (rb, rb16) = (ctx.upload("rows", &rows).unwrap(), ctx.upload_pod("rows16", &rows16).unwrap());
    let mut group = c.benchmark_group("knn_scores_16k_x_2048");
    group.sample_size(10);
    for q in [1usize, 64] {
        let queries = rng.normals(q * dim, 1.0);
        let (qb, sb) = (ctx.upload("queries", &queries).unwrap(), ctx.storage("scores", q * n).unwrap());
        let shape = MatmulShape { m: q, n, k: dim, b_transposed: true };
        group.throughput(Throughput::Elements(shape.flops() as u64));
        for (precision, buffer, host) in [(Precision::F32, &rb, &rows), (Precision::F16, &rb16, &rows16_f32)] {
            let d = scores(&ctx, &shape, &qb, buffer, precision, &sb, &tuning(&ctx)).unwrap();
            let dtype = format!("{precision:?}").to_lowercase();
            group.bench_function(format!("gpu/q{q}_{dtype}"), |b| b.iter_custom(|iters| timed(&ctx, &[&d], iters)));
            group.bench_function(format!("cpu/q{q}_{dtype}"), |b| {
                b.iter(|| cpu::matmul(&shape, &queries, host).unwrap())
            });
        }
    }
    group.finish();
}

fn bench_topk(c: &mut Criterion) {
    use lookalike::ops::topk::{TopK, TopKInput, TopKOutput};
    let ctx = context();
    let mut rng = Rng::new(4);
    for len in [100_000usize, 1_000_000] {
        let scores = rng.normals(len, 1.0);
        let sb = ctx.upload("scores", &scores).unwrap();
        let mut group = c.benchmark_group(format!("topk_{}k", len / 1000));
        group.sample_size(10).throughput(Throughput::Elements(len as u64));
        for k in [10, 100] {
            let (os, oi) = (ctx.storage("s", k).unwrap(), ctx.storage("i", k).unwrap());
            let select = TopK::new(
                &ctx,
                TopKInput::Scores { scores: &sb, index_base: 0 },
                1,
                len,
                k,
                &TopKOutput::dense(&os, &oi, k),
                tuning(&ctx).topk_workgroup,
            )
            .unwrap();
            let refs: Vec<_> = select.dispatches().iter().collect();
            group.bench_function(format!("gpu/k{k}"), |b| b.iter_custom(|iters| timed(&ctx, &refs, iters)));
            group.bench_function(format!("cpu/k{k}"), |b| b.iter(|| cpu::topk::topk(&scores, 1, len, k).unwrap()));
        }
        group.finish();
    }
}

fn bench_pool_preprocess(c: &mut Criterion) {
    use lookalike::ops::pool::{max_pool, MaxPoolShape};
    use lookalike::ops::preprocess::PreprocessBatch;
    let ctx = context();
    let mut rng = Rng::new(6);

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

    // Preprocessing one 640x480 image to 224.
    let image = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let p = cpu::preprocess::Preprocess::default();
    let out = ctx.storage("nhwc", 224 * 224 * 3).unwrap();
    let prepared = PreprocessBatch::new(&ctx, std::slice::from_ref(&image), &p, &out).unwrap();
    let refs: Vec<_> = prepared.dispatches().iter().collect();
    let mut group = c.benchmark_group("preprocess_640x480_to_224");
    group.sample_size(10).throughput(Throughput::Elements(224 * 224));
    group.bench_function("gpu", |b| b.iter_custom(|iters| timed(&ctx, &refs, iters)));
    group.bench_function("cpu", |b| b.iter(|| cpu::preprocess::preprocess_image(&image, &p).unwrap()));
    group.finish();
}

/// Row-wise L2 normalisation of 1 and 256 raw feature rows of 2048 (the search's queries),
/// with and without the index mean subtracted; rows scaled by 1e30 take the kernel's
/// rescaled second pass.
fn bench_l2_normalize(c: &mut Criterion) {
    use lookalike::ops::l2_normalize::l2_normalize;
    let ctx = context();
    let mut rng = Rng::new(7);
    let dim = 2048;
    let mean = rng.normals(dim, 1.0);
    let mean_buffer = ctx.upload("mean", &mean).unwrap();
    let mut group = c.benchmark_group("l2_normalize_x_2048");
    group.sample_size(10);
    for (rows, scale) in [(1usize, 1.0f32), (256, 1.0), (256, 1e30)] {
        let data = rng.normals(rows * dim, scale);
        let (input, output) = (ctx.upload("x", &data).unwrap(), ctx.storage("y", rows * dim).unwrap());
        group.throughput(Throughput::Elements((rows * dim) as u64));
        for centred in [false, true] {
            let name =
                format!("r{rows}{}{}", if scale == 1.0 { "" } else { "_1e30" }, if centred { "_centred" } else { "" });
            let d = l2_normalize(&ctx, rows, dim, &input, centred.then_some(&mean_buffer), &output).unwrap();
            group.bench_function(format!("gpu/{name}"), |b| b.iter_custom(|iters| timed(&ctx, &[&d], iters)));
            let m = centred.then_some(&mean[..]);
            group.bench_function(format!("cpu/{name}"), |b| b.iter(|| cpu::l2_normalize(&data, rows, dim, m).unwrap()));
        }
    }
    group.finish();
}

/// The convnet's backward kernels at the recipe's batch (20 images of 28x28x1), each beside
/// its CPU twin, and whole training steps of both trainers.
fn bench_metric_learning(c: &mut Criterion) {
    use lookalike::ops::conv2d_backward::{
        conv2d_backward_input, conv2d_backward_weight, BackwardTiles, ConvActivations,
    };
    use lookalike::ops::At;
    use lookalike::train::{ConvNet, ConvNetSpec, TrainConfig};
    let ctx = context();
    let mut rng = Rng::new(9);
    let spec = ConvNetSpec::recipe(28, 28, 1);
    let batch = 20;
    let mut group = c.benchmark_group("metric_learning_28x28x1_b20");
    group.sample_size(10);
    for (i, g) in spec.convs().iter().enumerate() {
        let shape = Conv2dShape::square(batch, g.in_h, g.in_w, g.in_c, g.out_c, 3, 2, 0);
        let input = rng.normals(shape.input_len(), 1.0).iter().map(|x| x.abs()).collect::<Vec<_>>();
        let output = rng.normals(shape.output_len(), 1.0).iter().map(|x| x.max(0.0)).collect::<Vec<_>>();
        let grad = rng.normals(shape.output_len(), 1.0);
        let weight = rng.normals(shape.weight_len(), 0.1);
        let [bi, bo, bg, bw] = [&input, &output, &grad, &weight].map(|v| ctx.upload("x", v).unwrap());
        let (dw, db, dx) = (
            ctx.storage("dw", shape.weight_len()).unwrap(),
            ctx.storage("db", shape.out_c).unwrap(),
            ctx.storage("dx", shape.input_len()).unwrap(),
        );
        let acts = ConvActivations { input: &bi, output: &bo, grad_output: &bg };
        group.throughput(Throughput::Elements(shape.flops() as u64));
        let tiles = BackwardTiles::fitting(shape.k(), shape.out_c);
        let d = conv2d_backward_weight(&ctx, &shape, &acts, true, At::new(&dw, 0), At::new(&db, 0), tiles).unwrap();
        group.bench_function(format!("gpu/conv{}_weight_grad", i + 1), |b| {
            b.iter_custom(|iters| timed(&ctx, &[&d], iters))
        });
        if i > 0 {
            let tiles = BackwardTiles::fitting(shape.input_len() / g.in_c, g.in_c);
            let d = conv2d_backward_input(&ctx, &shape, &acts, true, At::new(&bw, 0), &dx, tiles).unwrap();
            group.bench_function(format!("gpu/conv{}_input_grad", i + 1), |b| {
                b.iter_custom(|iters| timed(&ctx, &[&d], iters))
            });
        }
        group.bench_function(format!("cpu/conv{}_backward", i + 1), |b| {
            b.iter(|| cpu::convnet::conv_backward(&input, &output, &grad, batch, g, &weight, i > 0))
        });
    }
    // Whole steps: 10 classes of 100 random images, the recipe's net and optimiser.
    let images = lookalike::data::LabelledImages::random(10, 100, 28, 28, 1, 1);
    let data = images.grouped_by_class(std::path::Path::new("synthetic")).unwrap();
    let net = ConvNet::glorot(spec, 0).unwrap();
    let config = TrainConfig::default();
    group.throughput(Throughput::Elements(lookalike::train::cpu::step_flops(&spec, 10) as u64));
    let mut gpu = lookalike::train::gpu::GpuTrainer::new(ctx.clone(), net.clone(), &data, config).unwrap();
    group.bench_function("gpu/training_step", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            gpu.run(iters as usize).unwrap();
            start.elapsed()
        })
    });
    let mut cpu_trainer = lookalike::train::cpu::CpuTrainer::new(net, data, config).unwrap();
    group.bench_function("cpu/training_step", |b| b.iter(|| cpu_trainer.step()));
    group.finish();
}

criterion_group!(
    benches,
    bench_conv,
    bench_matmul,
    bench_knn_scores,
    bench_topk,
    bench_pool_preprocess,
    bench_l2_normalize,
    bench_metric_learning
);
criterion_main!(benches);
