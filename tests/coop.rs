//! The kernels on matrix units (`ops::matmul_coop`, `ops::conv2d_coop`) against their CPU
//! twins on the same f16-rounded inputs.
//!
//! Needs an adapter with cooperative matrices: lavapipe of Mesa 26 has 8x8x8 ones, Debian
//! 12's Mesa 25.0 none (`.ci/run` brings a newer lavapipe for this binary when it can).
//! Where the adapter has none, these tests check that the op refuses with the reason and
//! say loudly that the product itself went untested; with `LOOKALIKE_REQUIRE_COOP=1` that
//! is a failure instead.

mod common;

use std::sync::OnceLock;

use common::{assert_close, ctx, images, random_conv_shape};
use lookalike::compare::{batch_centred, relative_l2};
use lookalike::gpu::ContextBuilder;
use lookalike::index::{Embeddings, Entry, Index, Provenance};
use lookalike::model::{BatchNormMode, CpuResNet50, GpuResNet50, RandomResNet50, FEATURE_DIM};
use lookalike::ops::conv2d::{Conv2dBuffers, Conv2dShape};
use lookalike::ops::conv2d_coop::conv2d_coop;
use lookalike::ops::coop::{round_to_f16, CoopTiles};
use lookalike::ops::matmul::{MatmulShape, Precision};
use lookalike::ops::matmul_coop::{matmul_coop, matmul_coop_with};
use lookalike::rng::Rng;
use lookalike::search::{SearchOptions, Searcher};
use lookalike::{cpu, Context, Error};

/// Relative L2 of ResNet50 features on matrix units from the f32 CPU reference. Measured
/// on lavapipe's 8x8x8 units, 64x64 batch 2: 1.8e-3 and 2.4e-3 per image (1 - cosine
/// 2e-6, 3e-6), 8.6e-3 batch-centred (the centred features are the small differences).
const RESNET50_LIMIT: f64 = 1e-2;
const RESNET50_CENTRED_LIMIT: f64 = 5e-2;

/// The shared device, opened with the experimental feature where the adapter has it.
fn coop_ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        // SAFETY: tests accept wgpu's experimental-feature risk for this device.
        let builder = unsafe { ContextBuilder::from_env().experimental_cooperative_matrices() };
        match builder.build() {
            Ok(ctx) => ctx,
            Err(e) => panic!("GPU tests need an adapter and none could be opened: {e}"),
        }
    })
}

/// The context when it has matrix units; `None` after checking that `matmul_coop` refuses
/// and saying so, or a panic when `LOOKALIKE_REQUIRE_COOP=1` demands them.
fn with_units(test: &str) -> Option<&'static Context> {
    let ctx = coop_ctx();
    if let Some(coop) = ctx.cooperative_matrix() {
        eprintln!("{test}: matrix units {coop} on {}", ctx.adapter_info().name);
        return Some(ctx);
    }
    let why = ctx.cooperative_matrix_unavailable().unwrap_or_default().to_string();
    let required = std::env::var("LOOKALIKE_REQUIRE_COOP").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "LOOKALIKE_REQUIRE_COOP is set but {} has no usable matrix units: {why}",
        ctx.adapter_info().name
    );
    let shape = MatmulShape { m: 4, n: 4, k: 4, b_transposed: false };
    let buf = ctx.upload("x", &[0.0; 16]).unwrap();
    let refused = matmul_coop(ctx, &shape, &buf, &buf, Precision::F32, &buf);
    assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains(&why)), "{refused:?}");
    eprintln!("{test}: NOT RUN on {}: {why} (only the refusal was checked)", ctx.adapter_info().name);
    None
}

#[test]
fn matmul_coop_matches_cpu_on_rounded_inputs() {
    let Some(ctx) = with_units("matmul_coop_matches_cpu_on_rounded_inputs") else { return };
    let mut rng = Rng::new(21);
    for case in 0..8 {
        // Odd sizes, not multiples of any tile; one vector (m = 1) and one long K.
        // Also shapes whose rows are read four values per load (K, N multiples of 4).
        let (m, n, k) = match case {
            0 => (1, 1, 1),
            1 => (1, 300, 2048),
            2 => (33, 68, 40),
            _ => (rng.int(1, 150), rng.int(1, 170), rng.int(1, 300)),
        };
        let shape = MatmulShape { m, n, k, b_transposed: case % 2 == 1 };
        let a = rng.normals(m * k, 1.0);
        let b = rng.normals(k * n, 1.0);
        let expected = cpu::matmul(&shape, &round_to_f16(&a), &round_to_f16(&b)).unwrap();
        let (a_buf, b_buf) = (ctx.upload("a", &a).unwrap(), ctx.upload("b", &b).unwrap());
        let c = ctx.storage("c", m * n).unwrap();
        let dispatch = matmul_coop(ctx, &shape, &a_buf, &b_buf, Precision::F32, &c).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &c, m * n).unwrap();
        assert_close(&format!("matmul_coop case {case} {shape:?}"), &got, &expected, 1e-5);
    }
}

#[test]
fn matmul_coop_takes_f16_b_and_other_tiles() {
    let Some(ctx) = with_units("matmul_coop_takes_f16_b_and_other_tiles") else { return };
    let Some(coop) = ctx.cooperative_matrix() else { return };
    let mut rng = Rng::new(22);
    // The k-NN shape (queries x reference rows stored f16; with a depth of whole 8-half
    // loads, and without) and a plain one.
    for (m, n, k, transposed) in [(9, 100, 64, true), (7, 333, 67, true), (70, 9, 131, false)] {
        let shape = MatmulShape { m, n, k, b_transposed: transposed };
        let a = rng.normals(m * k, 1.0);
        let b: Vec<half::f16> = rng.normals(k * n, 1.0).into_iter().map(half::f16::from_f32).collect();
        let b_f32: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
        let expected = cpu::matmul(&shape, &round_to_f16(&a), &b_f32).unwrap();
        let (a_buf, b_buf) = (ctx.upload("a", &a).unwrap(), ctx.upload_pod("b", &b).unwrap());
        let c = ctx.storage("c", m * n).unwrap();
        let tall = CoopTiles { sg_rows: 1, sg_cols: 2, tile_k: coop.size };
        let deep = CoopTiles { sg_rows: 2, sg_cols: 1, tile_k: 4 * coop.size };
        for tiles in [CoopTiles::default_for(coop), tall, deep] {
            let dispatch = matmul_coop_with(ctx, &shape, &a_buf, &b_buf, Precision::F16, &c, tiles).unwrap();
            let got = ctx.run_and_read(&[&dispatch], &c, m * n).unwrap();
            assert_close(&format!("f16 matmul_coop {shape:?} {tiles:?}"), &got, &expected, 1e-5);
        }
        let odd = CoopTiles { tile_k: coop.size + 1, ..CoopTiles::default_for(coop) };
        let refused = matmul_coop_with(ctx, &shape, &a_buf, &b_buf, Precision::F16, &c, odd);
        assert!(matches!(refused, Err(Error::InvalidArgument(_))), "{refused:?}");
    }
}

#[test]
fn conv2d_coop_matches_cpu_on_rounded_inputs() {
    let Some(ctx) = with_units("conv2d_coop_matches_cpu_on_rounded_inputs") else { return };
    let Some(coop) = ctx.cooperative_matrix() else { return };
    let mut rng = Rng::new(23);
    for case in 0..12 {
        // The RGB stem (3 channels, fewer than a K slice), 1x1 stride-1 convolutions (read as
        // a plain matrix) and a 3x3 one, with channel counts read one and four at a time,
        // then odd random shapes.
        let shape = match case {
            0 => Conv2dShape::square(2, 23, 19, 3, 64, 7, 2, 3),
            1 => Conv2dShape::square(3, 9, 7, 37, 45, 1, 1, 0),
            2 => Conv2dShape::square(2, 7, 5, 64, 33, 1, 1, 0),
            3 => Conv2dShape::square(2, 11, 9, 48, 40, 3, 2, 1),
            _ => random_conv_shape(&mut rng, &[1, 3, 5], 17, 21, 70),
        };
        let (relu, with_scale, with_bias, with_residual) = (case % 2 == 0, case % 3 != 0, case % 4 != 1, case % 5 >= 2);
        let input = rng.normals(shape.input_len(), 1.0);
        let weight = rng.normals(shape.weight_len(), (2.0 / shape.k() as f32).sqrt());
        let scale = with_scale.then(|| rng.normals(shape.out_c, 1.0));
        let bias = with_bias.then(|| rng.normals(shape.out_c, 0.5));
        let residual = with_residual.then(|| rng.normals(shape.output_len(), 1.0));
        let expected = cpu::conv2d(
            &shape,
            &round_to_f16(&input),
            &round_to_f16(&weight),
            scale.as_deref(),
            bias.as_deref(),
            residual.as_deref(),
            relu,
        )
        .unwrap();
        let upload = |v: &Option<Vec<f32>>| v.as_ref().map(|v| ctx.upload("epilogue", v).unwrap());
        let (scale_buf, bias_buf, residual_buf) = (upload(&scale), upload(&bias), upload(&residual));
        let (input_buf, weight_buf) = (ctx.upload("input", &input).unwrap(), ctx.upload("weight", &weight).unwrap());
        let output = ctx.storage("output", shape.output_len()).unwrap();
        let buffers = Conv2dBuffers {
            input: &input_buf,
            weight: &weight_buf,
            scale: scale_buf.as_ref(),
            bias: bias_buf.as_ref(),
            residual: residual_buf.as_ref(),
            output: &output,
        };
        let wide = CoopTiles { sg_rows: 1, sg_cols: 4, tile_k: coop.size };
        let tiles = if case % 3 == 2 { wide } else { CoopTiles::default_for(coop) };
        let dispatch = conv2d_coop(ctx, &shape, &buffers, relu, tiles).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &output, shape.output_len()).unwrap();
        assert_close(&format!("conv2d_coop case {case} {shape:?} {tiles:?}"), &got, &expected, 1e-5);
    }
    // Each invocation stages one depth per slice: a K slice wider than the workgroup is refused.
    let shape = Conv2dShape::square(1, 8, 8, 16, 16, 3, 1, 1);
    let (x, w, y) = (
        ctx.upload("x", &vec![0.0; shape.input_len()]).unwrap(),
        ctx.upload("w", &vec![0.0; shape.weight_len()]).unwrap(),
        ctx.storage("y", shape.output_len()).unwrap(),
    );
    let buffers = Conv2dBuffers { input: &x, weight: &w, scale: None, bias: None, residual: None, output: &y };
    let too_deep = CoopTiles { sg_rows: 1, sg_cols: 1, tile_k: 2 * coop.subgroup.max(coop.size) };
    let refused = conv2d_coop(ctx, &shape, &buffers, false, too_deep);
    assert!(matches!(refused, Err(Error::InvalidArgument(_))), "{refused:?}");
}

/// The whole forward with every convolution on the matrix units: f16 rounding at each of
/// the 53 layers, so close to the f32 reference but not within its 1e-4.
#[test]
fn resnet50_on_matrix_units_stays_close_to_f32() {
    let Some(ctx) = with_units("resnet50_on_matrix_units_stays_close_to_f32") else { return };
    let net = RandomResNet50::generate(7).unwrap().net;
    let (batch, size) = (2, 64);
    let input = images(batch, size, size, 31);
    let expected = CpuResNet50::new(&net).unwrap().forward(&input, batch, size, size).unwrap();
    let mut gpu = GpuResNet50::new(ctx, &net, BatchNormMode::Folded).unwrap().on_matrix_units(ctx).unwrap();
    let got = gpu.forward(ctx, &input, batch, size, size).unwrap();
    for i in 0..batch {
        let r = i * FEATURE_DIM..(i + 1) * FEATURE_DIM;
        let (g, e) = (&got[r.clone()], &expected[r]);
        let cosine = g.iter().zip(e).map(|(a, b)| a * b).sum::<f32>()
            / (g.iter().map(|a| a * a).sum::<f32>() * e.iter().map(|b| b * b).sum::<f32>()).sqrt();
        eprintln!("image {i}: relative L2 {:.2e}, 1 - cosine {:.2e}", relative_l2(g, e), 1.0 - cosine);
        assert_close(&format!("resnet50 on matrix units, image {i}"), g, e, RESNET50_LIMIT);
    }
    let (g, e) = (batch_centred(&got, batch, FEATURE_DIM), batch_centred(&expected, batch, FEATURE_DIM));
    eprintln!("batch-centred: relative L2 {:.2e}", relative_l2(&g, &e));
    assert_close("resnet50 on matrix units, batch-centred", &g, &e, RESNET50_CENTRED_LIMIT);
}

/// Activations past f16's range on the units become an error naming them, not features.
#[test]
fn resnet50_on_matrix_units_reports_f16_overflow() {
    let Some(ctx) = with_units("resnet50_on_matrix_units_reports_f16_overflow") else { return };
    let net = RandomResNet50::generate(7).unwrap().net;
    // Normalised images reach ~3; scaled by 1e5 they are past 65504 from the first layer.
    let input: Vec<f32> = images(1, 32, 32, 8).into_iter().map(|x| x * 1e5).collect();
    let mut gpu = GpuResNet50::new(ctx, &net, BatchNormMode::Folded).unwrap().on_matrix_units(ctx).unwrap();
    let result = gpu.forward(ctx, &input, 1, 32, 32);
    let message = result.as_ref().map(|_| String::new()).unwrap_or_else(|e| e.to_string());
    assert!(matches!(result, Err(Error::NonFiniteOutput { .. })) && message.contains("matrix units"), "{message}");
    // The same input in f32 is fine (the network is scale-equivariant up to its biases).
    assert!(CpuResNet50::new(&net).unwrap().forward(&input, 1, 32, 32).is_ok());
}

/// A scan of more queries than the GEMV takes, scored on the matrix units, returns a true
/// top-k of the f16-rounded normalised queries and rows: each score matches that query's exact
/// product with the row, and nothing outside scores higher.
#[test]
fn search_on_matrix_units_is_a_top_k_of_the_rounded_queries() {
    let Some(ctx) = with_units("search_on_matrix_units_is_a_top_k_of_the_rounded_queries") else { return };
    let mut rng = Rng::new(24);
    let (n, dim, q, k) = (1237, 256, 9, 10);
    let features = rng.normals(n * dim, 1.0);
    let queries = rng.normals(q * dim, 1.0);
    let entries: Vec<Entry> = (0..n).map(|i| Entry::new(format!("{i}.png"), None)).collect();
    let provenance = Provenance {
        model: "resnet50".into(),
        weights_path: "test".into(),
        weights_sha256: "seed:1".into(),
        preprocess: Default::default(),
    };
    for precision in [Precision::F32, Precision::F16] {
        let index =
            Index::from_features(&features, dim, entries.clone(), precision, false, provenance.clone()).unwrap();
        let rows: Vec<f32> = match &index.embeddings {
            // The units take f16: f32 rows are rounded as they are staged.
            Embeddings::F32(v) => round_to_f16(v),
            Embeddings::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        };
        let options = SearchOptions { chunk_rows: Some(300), matrix_units: true, ..Default::default() };
        let got = Searcher::for_features(ctx.clone(), &index, options).unwrap().search_features(&queries, k).unwrap();
        for (qi, (query, found)) in queries.chunks(dim).zip(&got).enumerate() {
            let norm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
            let unit: Vec<f32> = round_to_f16(&query.iter().map(|x| x / norm).collect::<Vec<_>>());
            let exact: Vec<f64> =
                rows.chunks(dim).map(|r| r.iter().zip(&unit).map(|(a, b)| *a as f64 * *b as f64).sum()).collect();
            let mut sorted = exact.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(found.len(), k);
            for (rank, neighbor) in found.iter().enumerate() {
                let want = exact[neighbor.index];
                assert!(
                    (neighbor.score as f64 - want).abs() <= 1e-5,
                    "{precision:?} query {qi} rank {rank}: row {} scored {} on the units, {want} exactly",
                    neighbor.index,
                    neighbor.score
                );
                assert!(
                    want >= sorted[k - 1] - 1e-5,
                    "{precision:?} query {qi} rank {rank}: row {} ({want}) is not among the top {k} (k-th {})",
                    neighbor.index,
                    sorted[k - 1]
                );
            }
            assert!(found.windows(2).all(|w| w[0].score >= w[1].score), "{precision:?} query {qi}: not sorted");
        }
    }
}

#[test]
fn matmul_coop_is_refused_without_the_experimental_feature() {
    // The plain context never asks for it.
    let ctx = ctx();
    assert!(ctx.cooperative_matrix().is_none());
    let why = ctx.cooperative_matrix_unavailable().unwrap();
    assert!(why.contains("not requested"), "{why}");
    let shape = MatmulShape { m: 4, n: 4, k: 4, b_transposed: false };
    let buf = ctx.upload("x", &[0.0; 16]).unwrap();
    let refused = matmul_coop(ctx, &shape, &buf, &buf, Precision::F32, &buf);
    assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains("not requested")), "{refused:?}");
    let entries = vec![Entry::new("a.png", None)];
    let provenance = Provenance {
        model: "resnet50".into(),
        weights_path: "test".into(),
        weights_sha256: "seed:1".into(),
        preprocess: Default::default(),
    };
    let index = Index::from_features(&[1.0; 8], 8, entries, Precision::F32, false, provenance).unwrap();
    let options = SearchOptions { matrix_units: true, ..Default::default() };
    let refused = Searcher::for_features(ctx.clone(), &index, options).map(|_| ());
    assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains("not requested")), "{refused:?}");
}
