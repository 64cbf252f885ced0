//! The backward kernels of the convnet's training step (conv + ReLU, global average pooling,
//! dense) and the dense forward against their CPU twins, on odd shapes: sizes that are not
//! tile multiples, odd channel counts, batch > 1. Convolutions of other geometries (kernels 1
//! to 5, strides 1 to 3, padding) are checked against a plain f64 sum by definition.

mod common;

use common::ctx;
use lookalike::compare::Tolerance;
use lookalike::cpu::convnet as twin;
use lookalike::model::convnet::{ConvGeometry, ConvNet, ConvNetSpec, KERNEL, STRIDE};
use lookalike::ops::conv2d::Conv2dShape;
use lookalike::ops::conv2d_backward::{conv2d_backward_input, conv2d_backward_weight, BackwardTiles, ConvActivations};
use lookalike::ops::dense::{dense_backward_input, dense_backward_weight, dense_forward, DenseShape};
use lookalike::ops::pool::global_avg_pool_backward;
use lookalike::ops::At;
use lookalike::rng::Rng;
use lookalike::{cpu, Error};

/// Reordered f32 sums against their reference: within 1e-4 relative, or 1e-5 of the
/// largest magnitude for elements that cancel to near zero.
fn check(what: &str, got: &[f32], expected: &[f32]) {
    let largest = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if let Err(e) = Tolerance::new(1e-4, 1e-5 * largest.max(1e-30)).check(got, expected) {
        panic!("{what}: {e}");
    }
}

/// The gradients of `relu(conv(input, weight) + bias)` by their definition, summed in f64:
/// (d_weight, d_bias, d_input).
fn reference_backward(
    s: &Conv2dShape, input: &[f32], output: &[f32], grad: &[f32], weight: &[f32], relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut dw, mut db, mut dx) = (vec![0.0f64; s.weight_len()], vec![0.0f64; s.out_c], vec![0.0f64; s.input_len()]);
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    for n in 0..s.batch {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for (co, db) in db.iter_mut().enumerate() {
                    let at = ((n * oh_n + oh) * ow_n + ow) * s.out_c + co;
                    let dz = if relu && output[at] <= 0.0 { 0.0 } else { grad[at] as f64 };
                    *db += dz;
                    for kh in 0..s.kernel_h {
                        for kw in 0..s.kernel_w {
                            let ih = (oh * s.stride + kh) as isize - s.pad_h as isize;
                            let iw = (ow * s.stride + kw) as isize - s.pad_w as isize;
                            if ih < 0 || iw < 0 || ih >= s.in_h as isize || iw >= s.in_w as isize {
                                continue;
                            }
                            for ci in 0..s.in_c {
                                let x = ((n * s.in_h + ih as usize) * s.in_w + iw as usize) * s.in_c + ci;
                                let w = ((kh * s.kernel_w + kw) * s.in_c + ci) * s.out_c + co;
                                dw[w] += input[x] as f64 * dz;
                                dx[x] += weight[w] as f64 * dz;
                            }
                        }
                    }
                }
            }
        }
    }
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    (f32s(dw), f32s(db), f32s(dx))
}

/// A convolution's tensors: input, weight, bias, forward output (ReLU'd) and a gradient.
struct ConvCase {
    input: Vec<f32>,
    weight: Vec<f32>,
    output: Vec<f32>,
    grad: Vec<f32>,
}

fn conv_case(rng: &mut Rng, shape: &Conv2dShape) -> ConvCase {
    let input = rng.normals(shape.input_len(), 1.0);
    let weight = rng.normals(shape.weight_len(), (2.0 / shape.k() as f32).sqrt());
    // Biases around zero so about half of the outputs are masked by the ReLU.
    let bias = rng.normals(shape.out_c, 0.3);
    let output = cpu::conv2d(shape, &input, &weight, None, Some(&bias), None, true).unwrap();
    let grad = rng.normals(shape.output_len(), 1.0);
    ConvCase { input, weight, output, grad }
}

/// (d_weight, d_bias, d_input) from the GPU kernels.
fn gpu_backward(shape: &Conv2dShape, case: &ConvCase, relu: bool, tiles: Option<BackwardTiles>) -> [Vec<f32>; 3] {
    let ctx = ctx();
    let up = |name: &str, v: &[f32]| ctx.upload(name, v).unwrap();
    let (input, output, grad, weight) =
        (up("input", &case.input), up("output", &case.output), up("grad", &case.grad), up("weight", &case.weight));
    let acts = ConvActivations { input: &input, output: &output, grad_output: &grad };
    let d_weight = ctx.storage("d_weight", shape.weight_len()).unwrap();
    let d_bias = ctx.storage("d_bias", shape.out_c).unwrap();
    let d_input = ctx.storage("d_input", shape.input_len()).unwrap();
    let wt = tiles.unwrap_or(BackwardTiles::fitting(shape.k() + 1, shape.out_c));
    let it = tiles.unwrap_or(BackwardTiles::fitting(shape.input_len() / shape.in_c, shape.in_c));
    let dw = conv2d_backward_weight(ctx, shape, &acts, relu, (&d_weight).into(), (&d_bias).into(), wt).unwrap();
    let dx = conv2d_backward_input(ctx, shape, &acts, relu, (&weight).into(), &d_input, it).unwrap();
    let out = ctx
        .run_and_read_many(
            &[&dw, &dx],
            &[(&d_weight, shape.weight_len()), (&d_bias, shape.out_c), (&d_input, shape.input_len())],
        )
        .unwrap();
    out.try_into().unwrap()
}

#[test]
fn conv_backward_matches_its_definition_on_any_geometry() {
    let mut rng = Rng::new(18);
    // Kernels 1-5 (2: even), strides 1-3 (3 > kernel 2 leaves pixels no tap covers), padding.
    let shapes = [
        Conv2dShape::square(2, 11, 9, 5, 7, 3, 1, 1),
        Conv2dShape::square(1, 13, 12, 3, 20, 5, 2, 2),
        Conv2dShape::square(3, 10, 11, 6, 9, 2, 3, 0),
        Conv2dShape::square(2, 7, 8, 17, 5, 1, 2, 0),
        Conv2dShape { pad_h: 0, pad_w: 1, ..Conv2dShape::square(1, 9, 10, 4, 36, 3, 3, 0) },
        Conv2dShape { kernel_h: 3, kernel_w: 1, ..Conv2dShape::square(2, 8, 6, 2, 3, 3, 2, 1) },
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let case = conv_case(&mut rng, shape);
        let relu = i % 3 != 2;
        let (dw, db, dx) = reference_backward(shape, &case.input, &case.output, &case.grad, &case.weight, relu);
        let [gw, gb, gx] = gpu_backward(shape, &case, relu, None);
        check(&format!("d_weight {shape:?} relu {relu}"), &gw, &dw);
        check(&format!("d_bias {shape:?} relu {relu}"), &gb, &db);
        check(&format!("d_input {shape:?} relu {relu}"), &gx, &dx);
    }
}

#[test]
fn conv_backward_agrees_across_tile_sizes() {
    let mut rng = Rng::new(19);
    let shape = Conv2dShape::square(3, 17, 19, 5, 33, 3, 2, 0);
    let case = conv_case(&mut rng, &shape);
    let (dw, db, dx) = reference_backward(&shape, &case.input, &case.output, &case.grad, &case.weight, true);
    for (wg_x, wg_y) in [(4, 4), (16, 16), (8, 2), (1, 16), (16, 1)] {
        let tiles = BackwardTiles { wg_x, wg_y };
        let [gw, gb, gx] = gpu_backward(&shape, &case, true, Some(tiles));
        check(&format!("d_weight {tiles:?}"), &gw, &dw);
        check(&format!("d_bias {tiles:?}"), &gb, &db);
        check(&format!("d_input {tiles:?}"), &gx, &dx);
    }
}

#[test]
fn conv_backward_reads_and_writes_at_offsets_in_flat_vectors() {
    let ctx = ctx();
    let mut rng = Rng::new(20);
    let shape = Conv2dShape::square(2, 9, 11, 3, 6, 3, 2, 0);
    let case = conv_case(&mut rng, &shape);
    let (dw, db, dx) = reference_backward(&shape, &case.input, &case.output, &case.grad, &case.weight, true);
    // A flat parameter vector with the weight at 13 and a flat gradient vector with the
    // weight's gradient at 5 and the bias's right after it; sentinels everywhere else.
    let (w_at, dw_at) = (13, 5);
    let db_at = dw_at + shape.weight_len();
    let mut params = vec![7.0f32; w_at + shape.weight_len() + 3];
    params[w_at..w_at + shape.weight_len()].copy_from_slice(&case.weight);
    let grads_len = db_at + shape.out_c + 4;
    let (params_buf, grads) =
        (ctx.upload("params", &params).unwrap(), ctx.upload("grads", &vec![-3.0; grads_len]).unwrap());
    let up = |name: &str, v: &[f32]| ctx.upload(name, v).unwrap();
    let (input, output, grad) = (up("input", &case.input), up("output", &case.output), up("grad", &case.grad));
    let acts = ConvActivations { input: &input, output: &output, grad_output: &grad };
    let d_input = ctx.storage("d_input", shape.input_len()).unwrap();
    let tiles = BackwardTiles { wg_x: 4, wg_y: 4 };
    let d_w = conv2d_backward_weight(ctx, &shape, &acts, true, At::new(&grads, dw_at), At::new(&grads, db_at), tiles)
        .unwrap();
    let d_x = conv2d_backward_input(ctx, &shape, &acts, true, At::new(&params_buf, w_at), &d_input, tiles).unwrap();
    let out = ctx.run_and_read_many(&[&d_w, &d_x], &[(&grads, grads_len), (&d_input, shape.input_len())]).unwrap();
    let flat = &out[0];
    check("d_weight at an offset", &flat[dw_at..db_at], &dw);
    check("d_bias at an offset", &flat[db_at..db_at + shape.out_c], &db);
    check("d_input from a weight at an offset", &out[1], &dx);
    assert!(flat[..dw_at].iter().chain(&flat[db_at + shape.out_c..]).all(|&v| v == -3.0), "wrote outside its tensors");

    // A tensor that would run past its buffer is refused.
    let short = At::new(&grads, grads_len - shape.out_c + 1);
    let err = conv2d_backward_weight(ctx, &shape, &acts, true, At::new(&grads, 0), short, tiles).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err =
        conv2d_backward_input(ctx, &shape, &acts, true, At::new(&params_buf, w_at + 4), &d_input, tiles).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let odd = BackwardTiles { wg_x: 3, wg_y: 4 };
    assert!(matches!(
        conv2d_backward_input(ctx, &shape, &acts, true, (&params_buf).into(), &d_input, odd),
        Err(Error::InvalidArgument(_))
    ));
}

/// The convnet's convolution (3x3, stride 2, valid) of `g` over `batch` images.
fn conv_shape(batch: usize, g: &ConvGeometry) -> Conv2dShape {
    let shape = Conv2dShape::square(batch, g.in_h, g.in_w, g.in_c, g.out_c, KERNEL, STRIDE, 0);
    assert_eq!((shape.out_h(), shape.out_w()), (g.out_h, g.out_w), "{g:?}");
    shape
}

fn geometry(in_h: usize, in_w: usize, in_c: usize, out_c: usize) -> ConvGeometry {
    let out = |n: usize| (n - KERNEL) / STRIDE + 1;
    ConvGeometry { in_h, in_w, in_c, out_h: out(in_h), out_w: out(in_w), out_c }
}

#[test]
fn conv_backward_matches_the_cpu_twin() {
    let mut rng = Rng::new(21);
    // Odd shapes, then the recipe's three layers at 28x28x1 and 32x32x3, batch 20.
    let mut cases = vec![(3, geometry(17, 19, 3, 7)), (3, geometry(17, 19, 5, 33)), (2, geometry(15, 16, 33, 9))];
    for (h, c) in [(28, 1), (32, 3)] {
        cases.extend(ConvNetSpec::recipe(h, h, c).convs().map(|g| (20, g)));
    }
    for (batch, g) in cases {
        let shape = conv_shape(batch, &g);
        let input = rng.normals(shape.input_len(), 1.0);
        let kernel = rng.normals(shape.weight_len(), (2.0 / shape.k() as f32).sqrt());
        let bias = rng.normals(g.out_c, 0.3);
        let output = twin::conv_forward(&input, batch, &g, &kernel, &bias);
        let grad = rng.normals(output.len(), 1.0);
        let expected = twin::conv_backward(&input, &output, &grad, batch, &g, &kernel, true);
        let case = ConvCase { input, weight: kernel, output, grad };
        let [gw, gb, gx] = gpu_backward(&shape, &case, true, None);
        check(&format!("d_weight batch {batch} {g:?}"), &gw, &expected.kernel);
        check(&format!("d_bias batch {batch} {g:?}"), &gb, &expected.bias);
        check(&format!("d_input batch {batch} {g:?}"), &gx, expected.input.as_deref().unwrap());
    }
}

#[test]
fn global_avg_pool_backward_matches_the_cpu_twin() {
    let ctx = ctx();
    let mut rng = Rng::new(22);
    for (batch, pixels, channels) in [(3, 35, 33), (20, 4, 128), (1, 1, 1), (7, 9, 5)] {
        let grad = rng.normals(batch * channels, 1.0);
        let expected = twin::global_avg_pool_backward(&grad, batch, pixels, channels);
        let grad_buf = ctx.upload("grad", &grad).unwrap();
        let out = ctx.storage("d_input", expected.len()).unwrap();
        let d = global_avg_pool_backward(ctx, batch, pixels, channels, &grad_buf, &out).unwrap();
        let got = ctx.run_and_read(&[&d], &out, expected.len()).unwrap();
        check(&format!("global_avg_pool_backward {batch} x {pixels} x {channels}"), &got, &expected);
    }
    let small = ctx.storage("small", 3).unwrap();
    let err = global_avg_pool_backward(ctx, 2, 3, 2, &small, &small).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

/// (y, d_x, d_kernel, d_bias) of one dense layer on the GPU, weight and bias at the start of
/// their own buffers.
fn gpu_dense(shape: &DenseShape, x: &[f32], kernel: &[f32], bias: &[f32], grad_y: &[f32]) -> [Vec<f32>; 4] {
    let ctx = ctx();
    let up = |name: &str, v: &[f32]| ctx.upload(name, v).unwrap();
    let (x_buf, k_buf, b_buf, gy_buf) = (up("x", x), up("kernel", kernel), up("bias", bias), up("grad_y", grad_y));
    let DenseShape { batch, inputs, outputs } = *shape;
    let y = ctx.storage("y", batch * outputs).unwrap();
    let d_x = ctx.storage("d_x", batch * inputs).unwrap();
    let d_k = ctx.storage("d_kernel", inputs * outputs).unwrap();
    let d_b = ctx.storage("d_bias", outputs).unwrap();
    let forward = dense_forward(ctx, shape, &x_buf, (&k_buf).into(), (&b_buf).into(), &y).unwrap();
    let back_x = dense_backward_input(ctx, shape, &gy_buf, (&k_buf).into(), &d_x).unwrap();
    let back_w = dense_backward_weight(ctx, shape, &x_buf, &gy_buf, (&d_k).into(), (&d_b).into()).unwrap();
    let reads = [(&y, batch * outputs), (&d_x, batch * inputs), (&d_k, inputs * outputs), (&d_b, outputs)];
    ctx.run_and_read_many(&[&forward, &back_x, &back_w], &reads).unwrap().try_into().unwrap()
}

#[test]
fn dense_matches_the_cpu_twin() {
    let mut rng = Rng::new(23);
    // Odd sizes, the recipe's head (batch 20, 128 -> 8), one value, and a batch of
    // embeddings; none a tile multiple but the recipe's.
    for (batch, inputs, outputs) in [(5, 129, 9), (20, 128, 8), (1, 1, 1), (3, 17, 70), (33, 5, 2), (1500, 128, 8)] {
        let shape = DenseShape { batch, inputs, outputs };
        let x = rng.normals(batch * inputs, 1.0);
        let kernel = rng.normals(inputs * outputs, (1.0 / inputs as f32).sqrt());
        let bias = rng.normals(outputs, 0.5);
        let grad_y = rng.normals(batch * outputs, 1.0);
        let y = twin::dense_forward(&x, batch, inputs, outputs, &kernel, &bias);
        let grads = twin::dense_backward(&x, &grad_y, batch, inputs, outputs, &kernel);
        let [gy, gx, gk, gb] = gpu_dense(&shape, &x, &kernel, &bias, &grad_y);
        check(&format!("dense y {shape:?}"), &gy, &y);
        check(&format!("dense d_x {shape:?}"), &gx, &grads.input);
        check(&format!("dense d_kernel {shape:?}"), &gk, &grads.kernel);
        check(&format!("dense d_bias {shape:?}"), &gb, &grads.bias);
    }
}

#[test]
fn dense_refuses_bad_shapes_and_short_buffers() {
    let ctx = ctx();
    let buf = ctx.storage("buf", 12).unwrap();
    let shape = DenseShape { batch: 2, inputs: 3, outputs: 2 };
    let at = At::new(&buf, 8);
    let err = dense_forward(ctx, &shape, &buf, at, (&buf).into(), &buf).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "kernel past the end: {err}");
    let empty = DenseShape { batch: 0, ..shape };
    assert!(matches!(dense_backward_input(ctx, &empty, &buf, (&buf).into(), &buf), Err(Error::InvalidArgument(_))));
}

/// The convnet's backward from the dense output to the first kernel, every gradient written
/// at its place in one flat gradient vector (`ParamLayout` order) and every weight read from
/// the flat parameter vector: the whole vector against the CPU twin's chain.
#[test]
fn the_convnet_backward_fills_a_flat_gradient_vector() {
    let ctx = ctx();
    let mut rng = Rng::new(24);
    let spec = ConvNetSpec { height: 19, width: 17, channels: 3, widths: [5, 7, 9], dim: 6 };
    let net = ConvNet::glorot(spec, 7).unwrap();
    let layout = spec.layout();
    let batch = 3;
    let convs = spec.convs();
    let at = |name: &str| layout.tensor(name).unwrap().clone();
    let param = |name: &str| net.tensor(name).unwrap().to_vec();
    // Random biases: zero ones would mask every output of a zero input alike.
    let biases: Vec<Vec<f32>> = (0..3).map(|i| rng.normals(spec.widths[i], 0.2)).collect();

    // Forward and backward on the CPU.
    let mut acts = vec![rng.normals(batch * spec.input_len(), 1.0)];
    for (i, g) in convs.iter().enumerate() {
        let next = twin::conv_forward(&acts[i], batch, g, &param(&format!("conv{}.kernel", i + 1)), &biases[i]);
        acts.push(next);
    }
    let g3 = convs[2];
    let pooled = twin::global_avg_pool(&acts[3], batch, g3.out_pixels(), g3.out_c);
    let grad_e = rng.normals(batch * spec.dim, 1.0);
    let dense = twin::dense_backward(&pooled, &grad_e, batch, g3.out_c, spec.dim, &param("dense.kernel"));
    let mut expected = vec![0.0f32; layout.len];
    expected[at("dense.kernel").range()].copy_from_slice(&dense.kernel);
    expected[at("dense.bias").range()].copy_from_slice(&dense.bias);
    let mut grad = twin::global_avg_pool_backward(&dense.input, batch, g3.out_pixels(), g3.out_c);
    for i in (0..3).rev() {
        let kernel = param(&format!("conv{}.kernel", i + 1));
        let grads = twin::conv_backward(&acts[i], &acts[i + 1], &grad, batch, &convs[i], &kernel, i > 0);
        expected[at(&format!("conv{}.kernel", i + 1)).range()].copy_from_slice(&grads.kernel);
        expected[at(&format!("conv{}.bias", i + 1)).range()].copy_from_slice(&grads.bias);
        grad = grads.input.unwrap_or_default();
    }

    // The same chain on the GPU, from the same activations.
    let params = ctx.upload("params", &net.params).unwrap();
    let grads = ctx.upload("grads", &vec![f32::NAN; layout.len]).unwrap();
    let act_bufs: Vec<_> = acts.iter().map(|a| ctx.upload("activation", a).unwrap()).collect();
    let pooled_buf = ctx.upload("pooled", &pooled).unwrap();
    let grad_e_buf = ctx.upload("grad_e", &grad_e).unwrap();
    let d_pooled = ctx.storage("d_pooled", pooled.len()).unwrap();
    let d_acts: Vec<_> = acts.iter().map(|a| ctx.storage("d_activation", a.len()).unwrap()).collect();
    let flat = |buffer, name: &str| At::new(buffer, at(name).offset);
    let dense_shape = DenseShape { batch, inputs: g3.out_c, outputs: spec.dim };
    let mut dispatches = vec![
        dense_backward_weight(
            ctx,
            &dense_shape,
            &pooled_buf,
            &grad_e_buf,
            flat(&grads, "dense.kernel"),
            flat(&grads, "dense.bias"),
        )
        .unwrap(),
        dense_backward_input(ctx, &dense_shape, &grad_e_buf, flat(&params, "dense.kernel"), &d_pooled).unwrap(),
        global_avg_pool_backward(ctx, batch, g3.out_pixels(), g3.out_c, &d_pooled, &d_acts[3]).unwrap(),
    ];
    for i in (0..3).rev() {
        let shape = conv_shape(batch, &convs[i]);
        let conv_acts = ConvActivations { input: &act_bufs[i], output: &act_bufs[i + 1], grad_output: &d_acts[i + 1] };
        let (kernel, bias) = (format!("conv{}.kernel", i + 1), format!("conv{}.bias", i + 1));
        let tiles = BackwardTiles::fitting(shape.k() + 1, shape.out_c);
        dispatches.push(
            conv2d_backward_weight(ctx, &shape, &conv_acts, true, flat(&grads, &kernel), flat(&grads, &bias), tiles)
                .unwrap(),
        );
        if i > 0 {
            let tiles = BackwardTiles::fitting(shape.input_len() / shape.in_c, shape.in_c);
            dispatches.push(
                conv2d_backward_input(ctx, &shape, &conv_acts, true, flat(&params, &kernel), &d_acts[i], tiles)
                    .unwrap(),
            );
        }
    }
    let refs: Vec<_> = dispatches.iter().collect();
    let got = ctx.run_and_read(&refs, &grads, layout.len).unwrap();
    for t in &layout.tensors {
        check(&format!("flat gradient {}", t.name), &got[t.range()], &expected[t.range()]);
    }
}
