//! The CPU training twin against finite differences in f64: every layer's backward, the
//! whole net's gradient, Adam by hand, and training that learns.
//!
//! Each gradient is compared with [`fd_tolerance`]: within 1e-3 of each element or 1e-4 of
//! the largest. f32 rounding of these small sums stays near 1e-6; a gradient off by a
//! factor of 2 or of the wrong sign misses by 100% and fails, which every comparison also
//! checks on the spot.

#[path = "common/convnet_reference.rs"]
mod reference;

use std::path::Path;

use lookalike::compare::Tolerance;
use lookalike::cpu::convnet::{self as ops, MAX_INV_NORM};
use lookalike::data::{ClassGrouped, LabelledImages};
use lookalike::model::convnet::{ConvGeometry, ConvNet, ConvNetSpec};
use lookalike::model::convnet_cpu::embed;
use lookalike::rng::Rng;
use lookalike::train::cpu::{gather_batch, CpuTrainer};
use lookalike::train::sampler::pair_batch;
use lookalike::train::TrainConfig;

/// The bound of an analytic f32 gradient against central differences in f64.
fn fd_tolerance(expected: &[f32]) -> Tolerance {
    let largest = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    Tolerance::new(1e-3, 1e-4 * largest)
}

/// Asserts `got` matches the finite differences `fd`, and that the same gradient doubled
/// or negated would not: the comparison can tell a wrong scale or sign.
fn assert_gradient(what: &str, got: &[f32], fd: &[f32]) {
    let tol = fd_tolerance(fd);
    assert!(fd.iter().any(|&g| g != 0.0), "{what}: the finite differences are all zero, nothing is checked");
    if let Err(m) = tol.check(got, fd) {
        panic!("{what}: {m}");
    }
    let doubled: Vec<f32> = got.iter().map(|g| 2.0 * g).collect();
    let negated: Vec<f32> = got.iter().map(|g| -g).collect();
    assert!(tol.check(&doubled, fd).is_err() && tol.check(&negated, fd).is_err(), "{what}: tolerance too loose");
}

/// Central differences of `f` at `x` with step `h`, in f64.
fn finite_differences(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f32> {
    let mut at = x.to_vec();
    (0..x.len())
        .map(|i| {
            at[i] = x[i] + h;
            let up = f(&at);
            at[i] = x[i] - h;
            let down = f(&at);
            at[i] = x[i];
            ((up - down) / (2.0 * h)) as f32
        })
        .collect()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `Σ r ⊙ y`: turns a layer's output into a scalar whose gradient w.r.t. the output is `r`.
fn project(r: &[f32], y: &[f64]) -> f64 {
    assert_eq!(r.len(), y.len());
    r.iter().zip(y).map(|(&r, &y)| r as f64 * y).sum()
}

const H: f64 = 1e-5;

/// Odd sizes: 17x19 inputs, 3 channels, batch 3.
fn odd_conv() -> ConvGeometry {
    ConvGeometry { in_h: 17, in_w: 19, in_c: 3, out_h: 8, out_w: 9, out_c: 5 }
}

#[test]
fn conv_forward_and_backward_match_f64() {
    let (g, batch) = (odd_conv(), 3);
    let mut rng = Rng::new(1);
    let x = rng.normals(batch * g.in_h * g.in_w * g.in_c, 1.0);
    let kernel = rng.normals(g.k() * g.out_c, 0.3);
    let bias = rng.normals(g.out_c, 0.2);
    let y = ops::conv_forward(&x, batch, &g, &kernel, &bias);
    let y64 = reference::conv(&wide(&x), batch, &g, &wide(&kernel), &wide(&bias));
    let yw: Vec<f32> = y64.iter().map(|&v| v as f32).collect();
    Tolerance::new(1e-5, 1e-6).check(&y, &yw).unwrap();
    assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0), "both sides of the ReLU are exercised");

    let r = rng.normals(y.len(), 1.0);
    let grads = ops::conv_backward(&x, &y, &r, batch, &g, &kernel, true);
    let (xw, kw, bw) = (wide(&x), wide(&kernel), wide(&bias));
    let fd_x = finite_differences(&xw, H, |x| project(&r, &reference::conv(x, batch, &g, &kw, &bw)));
    let fd_k = finite_differences(&kw, H, |k| project(&r, &reference::conv(&xw, batch, &g, k, &bw)));
    let fd_b = finite_differences(&bw, H, |b| project(&r, &reference::conv(&xw, batch, &g, &kw, b)));
    assert_gradient("conv d_input", grads.input.as_deref().unwrap(), &fd_x);
    assert_gradient("conv d_kernel", &grads.kernel, &fd_k);
    assert_gradient("conv d_bias", &grads.bias, &fd_b);

    let without = ops::conv_backward(&x, &y, &r, batch, &g, &kernel, false);
    assert_eq!((without.input, &without.kernel, &without.bias), (None, &grads.kernel, &grads.bias));
}

#[test]
fn pooling_and_dense_backward_match_f64() {
    let (batch, pixels, channels, dim) = (3, 7, 5, 3);
    let mut rng = Rng::new(2);
    let x = rng.normals(batch * pixels * channels, 1.0);
    let pooled = ops::global_avg_pool(&x, batch, pixels, channels);
    let want: Vec<f32> = reference::gap(&wide(&x), batch, pixels, channels).iter().map(|&v| v as f32).collect();
    Tolerance::new(1e-6, 1e-7).check(&pooled, &want).unwrap();
    let r = rng.normals(batch * channels, 1.0);
    let fd = finite_differences(&wide(&x), H, |x| project(&r, &reference::gap(x, batch, pixels, channels)));
    assert_gradient("pool d_input", &ops::global_avg_pool_backward(&r, batch, pixels, channels), &fd);

    let kernel = rng.normals(channels * dim, 0.5);
    let bias = rng.normals(dim, 0.5);
    let y = ops::dense_forward(&pooled, batch, channels, dim, &kernel, &bias);
    let (xw, kw, bw) = (wide(&pooled), wide(&kernel), wide(&bias));
    let want: Vec<f32> = reference::dense(&xw, batch, dim, &kw, &bw).iter().map(|&v| v as f32).collect();
    Tolerance::new(1e-5, 1e-6).check(&y, &want).unwrap();
    let r = rng.normals(batch * dim, 1.0);
    let grads = ops::dense_backward(&pooled, &r, batch, channels, dim, &kernel);
    let fd_x = finite_differences(&xw, H, |x| project(&r, &reference::dense(x, batch, dim, &kw, &bw)));
    let fd_k = finite_differences(&kw, H, |k| project(&r, &reference::dense(&xw, batch, dim, k, &bw)));
    let fd_b = finite_differences(&bw, H, |b| project(&r, &reference::dense(&xw, batch, dim, &kw, b)));
    assert_gradient("dense d_input", &grads.input, &fd_x);
    assert_gradient("dense d_kernel", &grads.kernel, &fd_k);
    assert_gradient("dense d_bias", &grads.bias, &fd_b);
}

#[test]
fn l2_normalisation_backward_matches_f64_on_both_branches() {
    let dim = 3;
    let mut rng = Rng::new(3);
    let mut e = rng.normals(4 * dim, 2.0);
    let (u, inv) = ops::l2_normalize_rows(&e, dim);
    for row in u.chunks_exact(dim) {
        assert!((row.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    }
    let r = rng.normals(e.len(), 1.0);
    let fd = finite_differences(&wide(&e), H, |e| project(&r, &reference::l2(e, dim)));
    assert_gradient("l2 d_e", &ops::l2_normalize_backward(&u, &inv, &r, dim), &fd);

    // A row below the floor: u = e · 1e6, so de = du · 1e6 (no projection).
    e[dim..2 * dim].copy_from_slice(&[1e-8, -2e-8, 3e-9]);
    let (u, inv) = ops::l2_normalize_rows(&e, dim);
    assert_eq!(inv[1], MAX_INV_NORM);
    let fd = finite_differences(&wide(&e), 1e-13, |e| project(&r, &reference::l2(e, dim)));
    let got = ops::l2_normalize_backward(&u, &inv, &r, dim);
    Tolerance::new(1e-3, 0.0).check(&got[dim..2 * dim], &fd[dim..2 * dim]).unwrap();
}

#[test]
fn pair_loss_and_gradient_match_f64() {
    let (classes, dim, t) = (5, 3, 0.2);
    let mut rng = Rng::new(4);
    let (u, _) = ops::l2_normalize_rows(&rng.normals(2 * classes * dim, 1.0), dim);
    let (loss, grad) = ops::pair_loss(&u, classes, dim, t);
    let uw = wide(&u);
    let want = reference::pair_loss(&uw, classes, dim, t as f64);
    assert!((loss as f64 - want).abs() < 1e-6 * want.abs().max(1.0), "loss {loss}, f64 {want}");
    let fd = finite_differences(&uw, H, |u| reference::pair_loss(u, classes, dim, t as f64));
    assert_gradient("pair loss d_u", &grad, &fd);
}

/// A tiny net with odd sizes: 23x21x2 inputs -> 11x10x3 -> 5x4x4 -> 2x1x5 -> 3.
fn tiny_spec() -> ConvNetSpec {
    ConvNetSpec { height: 23, width: 21, channels: 2, widths: [3, 4, 5], dim: 3 }
}

/// `classes` x `per_class` random images shaped for `spec`, grouped by class.
fn random_set(spec: &ConvNetSpec, classes: usize, per_class: usize, seed: u64) -> ClassGrouped {
    let mut rng = Rng::new(seed);
    let count = classes * per_class;
    let images = LabelledImages {
        pixels: (0..count * spec.input_len()).map(|_| rng.int(0, 255) as u8).collect(),
        height: spec.height,
        width: spec.width,
        channels: spec.channels,
        labels: (0..count).map(|i| (i % classes) as u32).collect(),
        class_names: (0..classes).map(|c| format!("class {c}")).collect(),
    };
    images.grouped_by_class(Path::new("random set")).unwrap()
}

#[test]
fn whole_net_gradient_matches_f64_finite_differences() {
    let (spec, classes) = (tiny_spec(), 3);
    let data = random_set(&spec, classes, 4, 5);
    let config = TrainConfig { seed: 9, ..TrainConfig::default() };
    let mut net = ConvNet::glorot(spec, 6).unwrap();
    // Non-zero biases so that every bias gradient is exercised away from its initial value.
    let mut rng = Rng::new(7);
    for t in spec.layout().tensors.iter().filter(|t| t.shape.len() == 1) {
        net.params[t.range()].iter_mut().for_each(|b| *b = rng.range(-0.05, 0.1));
    }
    let params = wide(&net.params);
    let rows = pair_batch(config.seed, 0, &data.class_offsets, &data.class_counts);
    let input = wide(&gather_batch(&data.images, &rows));
    let mut trainer = CpuTrainer::new(net, data, config).unwrap();
    let (loss, grad) = trainer.loss_and_gradient(0);
    let grad = grad.to_vec();

    let net_loss = |p: &[f64]| reference::net_loss(&spec, p, &input, classes, config.temperature as f64);
    let want = net_loss(&params);
    assert!((loss as f64 - want).abs() < 1e-5 * want, "loss {loss}, f64 {want}");
    let fd = finite_differences(&params, H, net_loss);
    assert_gradient("whole net d_params", &grad, &fd);
    for t in spec.layout().tensors {
        assert_gradient(t.name, &grad[t.range()], &fd[t.range()]);
    }

    // Plain gradient descent lowers the loss by η|g|² to first order: a wrong scale or sign
    // of the whole gradient changes the ratio by a factor of 2 or flips it.
    let norm2: f64 = grad.iter().map(|&g| g as f64 * g as f64).sum();
    let eta = 1e-3 * want / norm2;
    let stepped: Vec<f64> = params.iter().zip(&grad).map(|(&w, &g)| w - eta * g as f64).collect();
    let ratio = (want - net_loss(&stepped)) / (eta * norm2);
    assert!((0.95..1.05).contains(&ratio), "descent ratio {ratio}");
}

#[test]
fn one_adam_step_lowers_the_loss_of_its_batch() {
    let spec = tiny_spec();
    let net = ConvNet::glorot(spec, 11).unwrap();
    let mut trainer = CpuTrainer::new(net, random_set(&spec, 4, 3, 12), TrainConfig::default()).unwrap();
    let before = trainer.loss_and_gradient(0).0;
    assert_eq!(trainer.step(), before);
    assert_eq!(trainer.steps_done(), 1);
    let after = trainer.loss_and_gradient(0).0;
    assert!(after < before, "loss {before} -> {after}");
}

#[test]
fn adam_matches_a_hand_computed_two_step_example() {
    // Keras's Adam, lr 1e-3, β1 0.9, β2 0.999, ε 1e-7, worked by hand:
    // t = 1, g = (0.5, -1): m = 0.1 g, v = 0.001 g², α1 = 1e-3·√0.001/0.1 = 3.16228e-4,
    //   step = α1·m/(√v + ε) ≈ 1e-3·sign(g): w = (0.999, -1.999).
    // t = 2, g = (0.1, 0.3): m = (0.055, -0.06), v = (2.5975e-4, 1.089e-3),
    //   α2 = 1e-3·√(1 - 0.999²)/(1 - 0.9²) = 2.35317e-4: w = (0.998197, -1.998572).
    let config = TrainConfig::default();
    let (mut w, mut m, mut v) = (vec![1.0f32, -2.0], vec![0.0; 2], vec![0.0; 2]);
    ops::adam_update(&mut w, &[0.5, -1.0], &mut m, &mut v, config.adam_rates(), config.adam_step_size(1));
    Tolerance::new(1e-6, 0.0).check(&w, &[0.999, -1.999]).unwrap();
    ops::adam_update(&mut w, &[0.1, 0.3], &mut m, &mut v, config.adam_rates(), config.adam_step_size(2));
    Tolerance::new(1e-6, 0.0).check(&m, &[0.055, -0.06]).unwrap();
    // 1 − β2 in f32 is 0.000999987 (0.999 is not exact), as in Keras: v is off by 1e-5.
    Tolerance::new(1e-4, 0.0).check(&v, &[2.5975e-4, 1.089e-3]).unwrap();
    Tolerance::new(1e-6, 0.0).check(&w, &[0.998_197, -1.998_572]).unwrap();
}

#[test]
fn embed_gives_unit_rows_equal_to_the_f64_forward() {
    let spec = tiny_spec();
    let net = ConvNet::glorot(spec, 13).unwrap();
    let data = random_set(&spec, 2, 3, 14);
    let batch = 5;
    let input = gather_batch(&data.images, &[0, 1, 2, 3, 4]);
    let u = embed(&net, &input, batch).unwrap();
    for row in u.chunks_exact(spec.dim) {
        assert!((row.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    let want: Vec<f32> =
        reference::embed(&spec, &wide(&net.params), &wide(&input), batch).iter().map(|&v| v as f32).collect();
    Tolerance::new(1e-4, 1e-5).check(&u, &want).unwrap();
    assert!(embed(&net, &input[1..], batch).is_err());
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let spec = tiny_spec();
    let run = |seed: u64| {
        let config = TrainConfig { seed, ..TrainConfig::default() };
        let net = ConvNet::glorot(spec, seed).unwrap();
        let mut trainer = CpuTrainer::new(net, random_set(&spec, 3, 5, 15), config).unwrap();
        let losses: Vec<f32> = (0..4).map(|_| trainer.step()).collect();
        (losses, trainer.into_net().params)
    };
    let (a, b) = (run(1), run(1));
    assert_eq!(
        a.0.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        b.0.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        a.1.iter().map(|w| w.to_bits()).collect::<Vec<_>>(),
        b.1.iter().map(|w| w.to_bits()).collect::<Vec<_>>()
    );
    assert_ne!(run(2).0, a.0);
}

#[test]
fn training_does_not_depend_on_the_thread_count() {
    // 17 classes: a batch of 34 images in 3 parts.
    let spec = tiny_spec();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let net = ConvNet::glorot(spec, 3).unwrap();
            let mut trainer = CpuTrainer::new(net, random_set(&spec, 17, 2, 16), TrainConfig::default()).unwrap();
            let losses: Vec<u32> = (0..3).map(|_| trainer.step().to_bits()).collect();
            (losses, trainer.into_net().params.iter().map(|w| w.to_bits()).collect::<Vec<_>>())
        })
    };
    assert_eq!(run(1), run(3));
}

/// 3 classes of distinct patterns (horizontal stripes, vertical stripes, a checkerboard)
/// with noise.
fn patterns(side: usize, per_class: usize, seed: u64) -> ClassGrouped {
    let mut rng = Rng::new(seed);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 0..3 * per_class {
        let class = i % 3;
        let phase = rng.int(0, 3);
        let band = |v: usize| ((v + phase) / 2).is_multiple_of(2);
        for y in 0..side {
            for x in 0..side {
                let on = match class {
                    0 => band(y),
                    1 => band(x),
                    _ => band(x) != band(y),
                };
                let base = if on { 200 } else { 40 };
                pixels.push((base + rng.int(0, 50)) as u8 - 25);
            }
        }
        labels.push(class as u32);
    }
    let images = LabelledImages {
        pixels,
        height: side,
        width: side,
        channels: 1,
        labels,
        class_names: vec!["rows".into(), "columns".into(), "checks".into()],
    };
    images.grouped_by_class(Path::new("patterns")).unwrap()
}

#[test]
fn training_separates_distinct_patterns() {
    let spec = ConvNetSpec { height: 19, width: 19, channels: 1, widths: [8, 16, 16], dim: 4 };
    let config = TrainConfig { learning_rate: 3e-3, seed: 21, ..TrainConfig::default() };
    let net = ConvNet::glorot(spec, 21).unwrap();
    let mut trainer = CpuTrainer::new(net, patterns(19, 12, 22), config).unwrap();
    let losses: Vec<f32> = (0..240).map(|_| trainer.step()).collect();
    let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len() as f32;
    let (first, last) = (mean(&losses[..20]), mean(&losses[220..]));
    assert!(last < 0.3 * first, "loss {first} -> {last}");
    assert_eq!(trainer.net().class_names, ["rows", "columns", "checks"]);
}

#[test]
fn trainer_refuses_data_of_another_size() {
    let spec = tiny_spec();
    let other = ConvNetSpec { height: 25, ..spec };
    let err = CpuTrainer::new(ConvNet::glorot(spec, 1).unwrap(), random_set(&other, 2, 2, 1), TrainConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains("25x21x2"), "{err}");
}
