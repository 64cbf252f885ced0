//! Every GPU kernel against its CPU twin on seeded random shapes: odd channel counts, sizes
//! that are not tile multiples, stride 2, padding, batch > 1.

mod common;

use common::{assert_close, ctx, random_conv_shape};
use lookalike::ops::batch_norm::{batch_norm, BatchNormBuffers, BatchNormShape};
use lookalike::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use lookalike::ops::matmul::{matmul, MatmulShape};
use lookalike::ops::pool::{global_avg_pool, max_pool, MaxPoolShape};
use lookalike::ops::Tiles;
use lookalike::rng::Rng;
use lookalike::{cpu, Error};

const KERNEL_LIMIT: f64 = 1e-5;

#[test]
fn conv2d_matches_cpu_on_random_shapes() {
    let ctx = ctx();
    let mut rng = Rng::new(1);
    for case in 0..14 {
        let shape = random_conv_shape(&mut rng, &[1, 3, 5, 7], 19, 23, 37);
        let (relu, with_scale, with_bias, with_residual) = (case % 2 == 0, case % 3 != 0, case % 4 != 1, case % 5 >= 2);
        let input = rng.normals(shape.input_len(), 1.0);
        let weight = rng.normals(shape.weight_len(), (2.0 / shape.k() as f32).sqrt());
        let scale = rng.normals(shape.out_c, 1.0);
        let bias = rng.normals(shape.out_c, 0.5);
        let residual = rng.normals(shape.output_len(), 1.0);
        let pick = |on: bool, v: &[f32]| if on { Some(v.to_vec()) } else { None };
        let (scale, bias, residual) =
            (pick(with_scale, &scale), pick(with_bias, &bias), pick(with_residual, &residual));

        let expected =
            cpu::conv2d(&shape, &input, &weight, scale.as_deref(), bias.as_deref(), residual.as_deref(), relu).unwrap();

        let up = |name: &str, v: &Option<Vec<f32>>| v.as_ref().map(|v| ctx.upload(name, v).unwrap());
        let input_buf = ctx.upload("input", &input).unwrap();
        let weight_buf = ctx.upload("weight", &weight).unwrap();
        let (scale_buf, bias_buf, residual_buf) = (up("scale", &scale), up("bias", &bias), up("residual", &residual));
        let output = ctx.storage("output", shape.output_len()).unwrap();
        let buffers = Conv2dBuffers {
            input: &input_buf,
            weight: &weight_buf,
            scale: scale_buf.as_ref(),
            bias: bias_buf.as_ref(),
            residual: residual_buf.as_ref(),
            output: &output,
        };
        let dispatch = conv2d(ctx, &shape, &buffers, relu, Tiles::default()).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &output, shape.output_len()).unwrap();
        assert_close(&format!("conv2d case {case} {shape:?}"), &got, &expected, KERNEL_LIMIT);
    }
}

#[test]
fn conv2d_other_tile_sizes_agree() {
    let ctx = ctx();
    let mut rng = Rng::new(2);
    let small = Tiles { wg_x: 8, wg_y: 8, tile_k: 8, block: 4 };
    // Few 8x8 configurations: lavapipe's LLVM takes ~16 s to compile each (Mesa caches it).
    // 8x8 blocks in 128- and 64-column tiles (the narrow one is what 64-channel layers get).
    let tiles = [
        small,
        Tiles { wg_x: 16, wg_y: 8, tile_k: 32, block: 4 },
        Tiles::default().with_8x8_blocks(),
        Tiles::default().with_8x8_blocks_for(64),
    ];
    // Channels above and below the K slice (incremental and divided depth advance), an RGB
    // stem-like layer, a 1x1 with more channels than one tile, and 1x1s whose input or
    // weight is smaller than one vec4 (bound through a placeholder).
    let shapes = [
        Conv2dShape::square(2, 13, 11, 19, 45, 3, 2, 1),
        Conv2dShape::square(1, 23, 17, 3, 70, 7, 2, 3),
        Conv2dShape::square(3, 5, 7, 40, 133, 1, 1, 0),
        // Channels in fours (staged four per load): more and fewer than one K slice.
        Conv2dShape::square(2, 9, 10, 36, 20, 3, 2, 1),
        Conv2dShape::square(1, 7, 6, 8, 12, 5, 1, 2),
        Conv2dShape::square(1, 1, 1, 3, 4, 1, 1, 0),
        Conv2dShape::square(1, 2, 3, 1, 3, 1, 1, 0),
    ];
    for shape in shapes {
        let input = rng.normals(shape.input_len(), 1.0);
        let weight = rng.normals(shape.weight_len(), 0.2);
        let bias = rng.normals(shape.out_c, 0.2);
        let residual = rng.normals(shape.output_len(), 1.0);
        let expected = cpu::conv2d(&shape, &input, &weight, None, Some(&bias), Some(&residual), true).unwrap();
        let (input_buf, weight_buf) = (ctx.upload("input", &input).unwrap(), ctx.upload("weight", &weight).unwrap());
        let (bias_buf, residual_buf) = (ctx.upload("bias", &bias).unwrap(), ctx.upload("residual", &residual).unwrap());
        for tiles in tiles {
            let output = ctx.storage("output", shape.output_len()).unwrap();
            let buffers = Conv2dBuffers {
                input: &input_buf,
                weight: &weight_buf,
                scale: None,
                bias: Some(&bias_buf),
                residual: Some(&residual_buf),
                output: &output,
            };
            let dispatch = conv2d(ctx, &shape, &buffers, true, tiles).unwrap();
            let got = ctx.run_and_read(&[&dispatch], &output, shape.output_len()).unwrap();
            assert_close(&format!("conv2d {shape:?} {tiles:?}"), &got, &expected, KERNEL_LIMIT);
        }
    }
    let output = ctx.storage("output", 16).unwrap();
    let shape = Conv2dShape::square(1, 4, 4, 1, 1, 1, 1, 0);
    let buffers =
        Conv2dBuffers { input: &output, weight: &output, scale: None, bias: None, residual: None, output: &output };
    assert!(matches!(
        conv2d(ctx, &shape, &buffers, false, Tiles { block: 6, ..Tiles::default() }),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn conv2d_rejects_short_buffers() {
    let ctx = ctx();
    let shape = Conv2dShape::square(1, 8, 8, 3, 4, 3, 1, 1);
    let small = ctx.storage("small", 10).unwrap();
    let weight = ctx.storage("weight", shape.weight_len()).unwrap();
    let output = ctx.storage("output", shape.output_len()).unwrap();
    let buffers =
        Conv2dBuffers { input: &small, weight: &weight, scale: None, bias: None, residual: None, output: &output };
    let err = conv2d(ctx, &shape, &buffers, false, Tiles::default()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

#[test]
fn matmul_matches_cpu_on_random_shapes() {
    let ctx = ctx();
    let mut rng = Rng::new(3);
    for case in 0..10 {
        let shape =
            MatmulShape { m: rng.int(1, 150), n: rng.int(1, 170), k: rng.int(1, 300), b_transposed: case % 2 == 1 };
        let a = rng.normals(shape.m * shape.k, 1.0);
        let b = rng.normals(shape.k * shape.n, 1.0);
        let expected = cpu::matmul(&shape, &a, &b).unwrap();
        let (a_buf, b_buf) = (ctx.upload("a", &a).unwrap(), ctx.upload("b", &b).unwrap());
        let c = ctx.storage("c", shape.m * shape.n).unwrap();
        // 4x4 and 8x8 blocks per invocation, 8x8 also in 64-column tiles, in turn (lavapipe
        // compiles each pipeline once).
        let tiles = match case % 5 {
            0 | 1 => Tiles::default(),
            2 | 3 => Tiles::default().with_8x8_blocks(),
            _ => Tiles::default().with_8x8_blocks_for(64),
        };
        let dispatch = matmul(ctx, &shape, &a_buf, &b_buf, &c, tiles).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &c, shape.m * shape.n).unwrap();
        assert_close(&format!("matmul case {case} {shape:?} {tiles:?}"), &got, &expected, KERNEL_LIMIT);
    }
}

#[test]
fn batch_norm_matches_cpu() {
    let ctx = ctx();
    let mut rng = Rng::new(4);
    for case in 0..4 {
        let channels = rng.int(1, 70);
        let len = channels * rng.int(1, 400);
        let shape = BatchNormShape { len, channels, eps: 1e-5 };
        let input = rng.normals(len, 2.0);
        let weight = rng.normals(channels, 1.0);
        let bias = rng.normals(channels, 1.0);
        let mean = rng.normals(channels, 1.0);
        let var: Vec<f32> = (0..channels).map(|_| rng.range(0.01, 3.0)).collect();
        let residual = rng.normals(len, 1.0);
        let (relu, with_residual) = (case % 2 == 0, case >= 2);
        let residual = with_residual.then_some(residual);
        let expected = cpu::batch_norm(&shape, &input, &weight, &bias, &mean, &var, residual.as_deref(), relu).unwrap();
        let bufs: Vec<_> = [&input, &weight, &bias, &mean, &var].iter().map(|v| ctx.upload("bn", v).unwrap()).collect();
        let residual_buf = residual.as_ref().map(|r| ctx.upload("residual", r).unwrap());
        let output = ctx.storage("output", len).unwrap();
        let buffers = BatchNormBuffers {
            input: &bufs[0],
            weight: &bufs[1],
            bias: &bufs[2],
            running_mean: &bufs[3],
            running_var: &bufs[4],
            residual: residual_buf.as_ref(),
            output: &output,
        };
        let dispatch = batch_norm(ctx, &shape, &buffers, relu).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &output, len).unwrap();
        assert_close(&format!("batch_norm case {case}"), &got, &expected, KERNEL_LIMIT);
    }
}

#[test]
fn max_pool_matches_cpu() {
    let ctx = ctx();
    let mut rng = Rng::new(5);
    for case in 0..6 {
        let kernel = rng.int(1, 4);
        let shape = MaxPoolShape {
            batch: rng.int(1, 3),
            in_h: rng.int(kernel, 20),
            in_w: rng.int(kernel, 20),
            channels: rng.int(1, 33),
            kernel,
            stride: rng.int(1, 2),
            pad: rng.int(0, kernel / 2),
        };
        let input = rng.normals(shape.input_len(), 1.0);
        let expected = cpu::max_pool(&shape, &input).unwrap();
        let input_buf = ctx.upload("input", &input).unwrap();
        let output = ctx.storage("output", shape.output_len()).unwrap();
        let dispatch = max_pool(ctx, &shape, &input_buf, &output).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &output, shape.output_len()).unwrap();
        assert_eq!(got, expected, "max_pool case {case} {shape:?}");
    }
}

#[test]
fn global_avg_pool_matches_cpu() {
    let ctx = ctx();
    let mut rng = Rng::new(6);
    for &(batch, h, w, c) in &[(1, 7, 7, 2048), (3, 5, 3, 37), (2, 1, 1, 9)] {
        let input = rng.normals(batch * h * w * c, 1.0);
        let expected = cpu::global_avg_pool(batch, h, w, c, &input).unwrap();
        let input_buf = ctx.upload("input", &input).unwrap();
        let output = ctx.storage("output", batch * c).unwrap();
        let dispatch = global_avg_pool(ctx, batch, h, w, c, &input_buf, &output).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &output, batch * c).unwrap();
        assert_close(&format!("global_avg_pool {batch}x{h}x{w}x{c}"), &got, &expected, KERNEL_LIMIT);
    }
}

#[test]
fn large_elementwise_grids_fold_into_two_dimensions() {
    // More than 65535 * 256 outputs forces the 2-D grid path.
    let ctx = ctx();
    let shape = MaxPoolShape { batch: 1, in_h: 1, in_w: 70_000, channels: 256, kernel: 1, stride: 1, pad: 0 };
    let mut rng = Rng::new(7);
    let input = rng.normals(shape.input_len(), 1.0);
    let input_buf = ctx.upload("input", &input).unwrap();
    let output = ctx.storage("output", shape.output_len()).unwrap();
    let dispatch = max_pool(ctx, &shape, &input_buf, &output).unwrap();
    let got = ctx.run_and_read(&[&dispatch], &output, shape.output_len()).unwrap();
    assert_eq!(got, input);
}

#[test]
fn matmul_with_f16_b_matches_cpu_on_rounded_values() {
    use lookalike::ops::matmul::{matmul_with, Precision};
    let ctx = ctx();
    let mut rng = Rng::new(8);
    for (m, n, k, transposed) in [(1, 333, 67, true), (5, 130, 2048, true), (70, 9, 31, false)] {
        let shape = MatmulShape { m, n, k, b_transposed: transposed };
        let a = rng.normals(m * k, 1.0);
        let b: Vec<half::f16> = rng.normals(k * n, 1.0).into_iter().map(half::f16::from_f32).collect();
        let b_f32: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
        let expected = cpu::matmul(&shape, &a, &b_f32).unwrap();
        let (a_buf, b_buf) = (ctx.upload("a", &a).unwrap(), ctx.upload_pod("b", &b).unwrap());
        let c = ctx.storage("c", m * n).unwrap();
        for tiles in [Tiles::default(), Tiles::default().with_8x8_blocks()] {
            let dispatch = matmul_with(ctx, &shape, &a_buf, &b_buf, Precision::F16, &c, tiles).unwrap();
            let got = ctx.run_and_read(&[&dispatch], &c, m * n).unwrap();
            assert_close(&format!("f16 matmul {shape:?} {tiles:?}"), &got, &expected, KERNEL_LIMIT);
        }
        let odd = Tiles { tile_k: 7, ..Tiles::default().with_8x8_blocks() };
        assert!(matches!(
            matmul_with(ctx, &shape, &a_buf, &b_buf, Precision::F16, &c, odd),
            Err(lookalike::Error::InvalidArgument(_))
        ));
    }
}

/// Shapes whose slices are staged by 16-byte loads (K in fours or eights, N in fours), each
/// layout and B precision, with edge tiles and slices too shallow for a vector run.
#[test]
fn matmul_vec4_staging_matches_cpu() {
    use lookalike::ops::matmul::{matmul_with, Precision};
    let ctx = ctx();
    let mut rng = Rng::new(13);
    let tiles = [Tiles::default(), Tiles::default().with_8x8_blocks(), Tiles { wg_x: 8, wg_y: 8, tile_k: 8, block: 8 }];
    for (m, n, k) in [(37, 52, 72), (70, 20, 68), (3, 9, 4)] {
        for (transposed, precision) in [(false, Precision::F32), (true, Precision::F32), (true, Precision::F16)] {
            let shape = MatmulShape { m, n, k, b_transposed: transposed };
            let a = rng.normals(m * k, 1.0);
            let b16: Vec<half::f16> = rng.normals(k * n, 1.0).into_iter().map(half::f16::from_f32).collect();
            let b: Vec<f32> = b16.iter().map(|x| x.to_f32()).collect();
            let expected = cpu::matmul(&shape, &a, &b).unwrap();
            let a_buf = ctx.upload("a", &a).unwrap();
            let b_buf = match precision {
                Precision::F32 => ctx.upload("b", &b).unwrap(),
                Precision::F16 => ctx.upload_pod("b16", &b16).unwrap(),
            };
            let c = ctx.storage("c", m * n).unwrap();
            for t in tiles {
                let dispatch = matmul_with(ctx, &shape, &a_buf, &b_buf, precision, &c, t).unwrap();
                let got = ctx.run_and_read(&[&dispatch], &c, m * n).unwrap();
                assert_close(&format!("matmul {precision:?} {shape:?} {t:?}"), &got, &expected, KERNEL_LIMIT);
            }
        }
    }
}

#[test]
fn l2_normalize_matches_cpu_with_and_without_centring() {
    use lookalike::ops::l2_normalize::l2_normalize;
    let ctx = ctx();
    let mut rng = Rng::new(9);
    for (rows, dim) in [(1, 2048), (7, 37), (3, 1000), (2, 1)] {
        let data: Vec<f32> = rng.normals(rows * dim, 1.0).into_iter().map(|x| x + 5.0).collect();
        let mean = rng.normals(dim, 1.0);
        let input = ctx.upload("x", &data).unwrap();
        let mean_buf = ctx.upload("mean", &mean).unwrap();
        for centred in [false, true] {
            let m = centred.then_some(&mean[..]);
            let expected = cpu::l2_normalize(&data, rows, dim, m).unwrap();
            let out = ctx.storage("y", rows * dim).unwrap();
            let d = l2_normalize(ctx, rows, dim, &input, centred.then_some(&mean_buf), &out).unwrap();
            let got = ctx.run_and_read(&[&d], &out, rows * dim).unwrap();
            assert_close(&format!("l2_normalize {rows}x{dim} centred={centred}"), &got, &expected, KERNEL_LIMIT);
        }
    }
    // A zero row stays zero instead of becoming NaN.
    let zeros = ctx.upload("zeros", &[0.0; 8]).unwrap();
    let out = ctx.storage("y", 8).unwrap();
    let d = l2_normalize(ctx, 1, 8, &zeros, None, &out).unwrap();
    assert_eq!(ctx.run_and_read(&[&d], &out, 8).unwrap(), vec![0.0; 8]);
}

#[test]
fn gemv_matches_cpu_for_f32_and_f16_rows() {
    use lookalike::ops::gemv::{gemv, supports, GemvTiles};
    use lookalike::ops::matmul::Precision;
    let ctx = ctx();
    let mut rng = Rng::new(12);
    let tiles = [GemvTiles::default(), GemvTiles { workgroup: 64, lanes: 64 }, GemvTiles { workgroup: 128, lanes: 1 }];
    // Row counts that are not multiples of the rows per workgroup; depths of 1 to 256 words.
    for (case, (m, n, k)) in [(1, 333, 8), (2, 1000, 2048), (3, 77, 24), (4, 517, 1032)].into_iter().enumerate() {
        let shape = MatmulShape { m, n, k, b_transposed: true };
        let a = rng.normals(m * k, 1.0);
        let b = rng.normals(k * n, 1.0);
        let b16: Vec<half::f16> = b.iter().map(|&x| half::f16::from_f32(x)).collect();
        let b16_f32: Vec<f32> = b16.iter().map(|x| x.to_f32()).collect();
        let a_buf = ctx.upload("a", &a).unwrap();
        let c = ctx.storage("c", m * n).unwrap();
        for (precision, b_buf, reference) in [
            (Precision::F32, ctx.upload("b", &b).unwrap(), &b),
            (Precision::F16, ctx.upload_pod("b16", &b16).unwrap(), &b16_f32),
        ] {
            assert!(supports(&shape, precision));
            let expected = cpu::matmul(&shape, &a, reference).unwrap();
            let t = tiles[case % tiles.len()];
            let dispatch = gemv(ctx, &shape, &a_buf, &b_buf, precision, &c, t).unwrap();
            let got = ctx.run_and_read(&[&dispatch], &c, m * n).unwrap();
            assert_close(&format!("gemv {precision:?} {shape:?} {t:?}"), &got, &expected, KERNEL_LIMIT);
        }
    }
    // Every launch shape the autotuner may pick.
    let shape = MatmulShape { m: 1, n: 333, k: 24, b_transposed: true };
    let (a, b) = (rng.normals(shape.k, 1.0), rng.normals(shape.k * shape.n, 1.0));
    let expected = cpu::matmul(&shape, &a, &b).unwrap();
    let (a_buf, b_buf, c) =
        (ctx.upload("a", &a).unwrap(), ctx.upload("b", &b).unwrap(), ctx.storage("c", shape.n).unwrap());
    for lanes in lookalike::tune::GEMV_LANES {
        let t = GemvTiles { workgroup: 256, lanes };
        let dispatch = gemv(ctx, &shape, &a_buf, &b_buf, Precision::F32, &c, t).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &c, shape.n).unwrap();
        assert_close(&format!("gemv {t:?}"), &got, &expected, KERNEL_LIMIT);
    }
}

#[test]
fn gemv_refuses_what_it_does_not_cover() {
    use lookalike::ops::gemv::{gemv, GemvTiles};
    use lookalike::ops::matmul::Precision;
    let ctx = ctx();
    let buf = ctx.storage("x", 4096).unwrap();
    let run = |m, k, transposed, precision, tiles| {
        gemv(ctx, &MatmulShape { m, n: 16, k, b_transposed: transposed }, &buf, &buf, precision, &buf, tiles)
    };
    let t = GemvTiles::default();
    assert!(matches!(run(5, 8, true, Precision::F32, t), Err(Error::InvalidArgument(_))));
    assert!(matches!(run(1, 8, false, Precision::F32, t), Err(Error::InvalidArgument(_))));
    assert!(matches!(run(1, 6, true, Precision::F32, t), Err(Error::InvalidArgument(_))));
    assert!(matches!(run(1, 12, true, Precision::F16, t), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        run(1, 8, true, Precision::F32, GemvTiles { workgroup: 256, lanes: 3 }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(run(1, 8, true, Precision::F16, t).is_ok());
}
