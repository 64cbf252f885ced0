//! The backward kernels of the convnet's training step (conv + ReLU, global average pooling,
//! dense) and the dense forward against their CPU twins, on odd shapes: sizes that are not
//! tile multiples, odd channel counts, batch > 1. Convolutions of other geometries (kernels 1
//! to 5, strides 1 to 3, padding) are checked against a plain f64 sum by definition.

mod common;

use common::ctx;
use lookalike::compare::Tolerance;
use lookalike::ops::conv2d::Conv2dShape;
use lookalike::ops::conv2d_backward::{conv2d_backward_input, conv2d_backward_weight, BackwardTiles, ConvActivations};
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
                for co in 0..s.out_c {
                    let at = ((n * oh_n + oh) * ow_n + ow) * s.out_c + co;
                    let dz = if relu && output[at] <= 0.0 { 0.0 } else { grad[at] as f64 };
                    db[co] += dz;
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
