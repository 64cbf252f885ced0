//! The training kernels against their CPU twins on odd sizes, and GPU training steps against
//! the CPU trainer's. Fails without an adapter (tests/common).

mod common;

use std::path::Path;

use common::ctx;
use lookalike::compare::Tolerance;
use lookalike::cpu::convnet::{adam_update, l2_normalize_backward, l2_normalize_rows, pair_loss};
use lookalike::data::{ClassGrouped, LabelledImages};
use lookalike::gpu::ContextBuilder;
use lookalike::model::convnet_cpu::embed;
use lookalike::ops::adam::{adam, advance_step, AdamBuffers, AdamRates};
use lookalike::ops::metric_loss::{l2_normalize_rows as gpu_l2_normalize_rows, metric_loss, MetricLossBuffers};
use lookalike::ops::train_sample::{train_sample, TrainingSet};
use lookalike::rng::Rng;
use lookalike::train::cpu::gather_batch;
use lookalike::train::cpu::CpuTrainer;
use lookalike::train::gpu::GpuTrainer;
use lookalike::train::sampler::pair_batch;
use lookalike::train::{ConvNet, ConvNetSpec, TrainConfig};
use lookalike::{Context, Error};

/// A class-grouped set of random u8 images with the given class sizes (shuffled labels, so
/// grouping reorders them).
fn synthetic_set(counts: &[usize], h: usize, w: usize, c: usize, seed: u64) -> ClassGrouped {
    let mut rng = Rng::new(seed);
    let mut labels: Vec<u32> = counts.iter().enumerate().flat_map(|(k, &n)| vec![k as u32; n]).collect();
    for i in (1..labels.len()).rev() {
        labels.swap(i, rng.int(0, i));
    }
    let pixels = (0..labels.len() * h * w * c).map(|_| rng.int(0, 255) as u8).collect();
    let images = LabelledImages {
        pixels,
        height: h,
        width: w,
        channels: c,
        labels,
        class_names: (0..counts.len()).map(|k| format!("class{k}")).collect(),
    };
    images.grouped_by_class(Path::new("synthetic")).expect("a valid synthetic set")
}

fn state(ctx: &Context, step: u32) -> wgpu::Buffer {
    ctx.upload_pod("state", &[step, 0u32]).expect("state buffer")
}

fn check(what: &str, tol: Tolerance, got: &[f32], expected: &[f32]) {
    if let Err(m) = tol.check(got, expected) {
        panic!("{what}: {m}");
    }
}

/// The GPU draws the rows `sampler::pair_batch` draws and gathers their pixels / 255,
/// for many steps and seeds, with the set split across several storage bindings.
fn sample_matches_cpu(ctx: &Context, data: &ClassGrouped, expect_bindings: usize) {
    let set = TrainingSet::upload(ctx, data).unwrap();
    assert_eq!(set.pixel_bindings(), expect_bindings);
    let classes = data.class_counts.len();
    let image_len = data.images.image_len();
    let batch = ctx.storage("batch", 2 * classes * image_len).unwrap();
    let rows = ctx.storage("rows", 2 * classes).unwrap();
    for (seed, steps) in [(0u64, 0..40u32), (0x1234_5678_9abc_def0, 1_000_000..1_000_020), (u64::MAX, 7..12)] {
        for step in steps {
            let state = state(ctx, step);
            let d = train_sample(ctx, &set, seed, &state, &batch, &rows).unwrap();
            ctx.run(&[&d]).unwrap();
            let got_rows = ctx.read_u32(&rows, 2 * classes).unwrap();
            let expected = pair_batch(seed, step, &data.class_offsets, &data.class_counts);
            assert_eq!(got_rows, expected, "seed {seed:#x} step {step}");
            let got = ctx.read(&batch, 2 * classes * image_len).unwrap();
            assert_eq!(got, gather_batch(&data.images, &expected), "pixels, seed {seed:#x} step {step}");
        }
    }
}

#[test]
fn sampling_draws_the_cpu_pairs_and_gathers_their_pixels() {
    let data = synthetic_set(&[3, 7, 2, 5, 11], 17, 19, 3, 1);
    sample_matches_cpu(ctx(), &data, 1);
}

#[test]
fn sampling_reads_a_set_split_across_bindings() {
    // 100 images of 5x7x1 = 3500 bytes: bindings of 1100 bytes (275 words) make 4, and
    // images straddle them.
    let small = ContextBuilder::from_env().max_binding_bytes(1100).build().unwrap();
    sample_matches_cpu(&small, &synthetic_set(&[40, 25, 35], 5, 7, 1, 2), 4);
    // 200 images would take 7.
    let err = TrainingSet::upload(&small, &synthetic_set(&[100, 100], 5, 7, 1, 2)).unwrap_err().to_string();
    assert!(err.contains("7000 pixel bytes need 7 storage bindings") && err.contains("at most 4"), "{err}");
}

/// The loss kernel's outputs: (loss, unit rows, gradient w.r.t. the dense outputs).
fn gpu_loss(e: &[f32], classes: usize, dim: usize, temperature: f32, slot: u32) -> (f32, Vec<f32>, Vec<f32>) {
    let ctx = ctx();
    let state = ctx.upload_pod("state", &[17u32, slot]).unwrap();
    let embeddings = ctx.upload("e", e).unwrap();
    let (unit, d_embeddings) = (ctx.storage("u", e.len()).unwrap(), ctx.storage("de", e.len()).unwrap());
    let loss_history = ctx.upload("losses", &vec![-1.0; slot as usize + 2]).unwrap();
    let buffers = MetricLossBuffers {
        state: &state,
        embeddings: &embeddings,
        unit: &unit,
        d_embeddings: &d_embeddings,
        loss_history: &loss_history,
    };
    let d = metric_loss(ctx, classes, dim, temperature, &buffers).unwrap();
    let out = ctx
        .run_and_read_many(&[&d], &[(&loss_history, slot as usize + 2), (&unit, e.len()), (&d_embeddings, e.len())])
        .unwrap();
    let history = &out[0];
    assert!(
        history.iter().enumerate().all(|(i, &l)| i == slot as usize || l == -1.0),
        "other slots written: {history:?}"
    );
    (history[slot as usize], out[1].clone(), out[2].clone())
}

/// Within 1e-4 relative, or 1e-5 of the largest magnitude for elements that cancel.
fn reordered(expected: &[f32]) -> Tolerance {
    let largest = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    Tolerance::new(1e-4, 1e-5 * largest.max(1e-30))
}

#[test]
fn loss_kernel_matches_the_cpu_twin() {
    let mut rng = Rng::new(5);
    // Odd class counts and widths, a class count over the workgroup size, small and large
    // temperatures, rows that the norm floor clamps.
    for (classes, dim, temperature, slot) in
        [(2, 1, 0.2, 0), (3, 3, 0.2, 4), (10, 8, 0.2, 1), (37, 5, 0.7, 2), (300, 8, 0.05, 0), (5, 2, 0.2, 3)]
    {
        let mut e: Vec<f32> = rng.normals(2 * classes * dim, 1.0);
        if classes == 5 {
            // An anchor under the floor and a positive of zeros.
            e[..dim].iter_mut().for_each(|x| *x *= 1e-7);
            e[(classes + 1) * dim..(classes + 2) * dim].fill(0.0);
        }
        let (u, inv_norm) = l2_normalize_rows(&e, dim);
        let (loss, grad_u) = pair_loss(&u, classes, dim, temperature);
        let de = l2_normalize_backward(&u, &inv_norm, &grad_u, dim);
        let (gpu_loss, gpu_u, gpu_de) = gpu_loss(&e, classes, dim, temperature, slot);
        let what = format!("{classes} classes, dim {dim}, T {temperature}");
        // Absolute 1e-6 for losses near 0 (a log-sum-exp minus a logit of up to 1/T).
        check(&format!("loss, {what}"), Tolerance::new(1e-5, 1e-6), &[gpu_loss], &[loss]);
        check(&format!("unit rows, {what}"), Tolerance::new(2e-6, 1e-7), &gpu_u, &u);
        // Row by row: a clamped row's gradient is 1e6 times the others'.
        for (r, (got, want)) in gpu_de.chunks(dim).zip(de.chunks(dim)).enumerate() {
            check(&format!("de row {r}, {what}"), reordered(want), got, want);
        }
    }
}

#[test]
fn loss_kernel_refuses_what_one_workgroup_cannot_hold() {
    let ctx = ctx();
    let b = ctx.storage("b", 4).unwrap();
    let buffers = MetricLossBuffers { state: &b, embeddings: &b, unit: &b, d_embeddings: &b, loss_history: &b };
    let err = metric_loss(ctx, 1025, 8, 0.2, &buffers).unwrap_err().to_string();
    assert!(err.contains("1025 classes") && err.contains("2 to 1024"), "{err}");
    assert!(metric_loss(ctx, 4, 8, 0.0, &buffers).is_err());
}

#[test]
fn normalisation_alone_matches_the_cpu_twin() {
    let ctx = ctx();
    let mut rng = Rng::new(6);
    for (rows, dim) in [(1, 1), (7, 3), (300, 8), (1000, 5)] {
        let mut e = rng.normals(rows * dim, 2.0);
        e[..dim].fill(1e-8);
        let (u, _) = l2_normalize_rows(&e, dim);
        let (eb, ub) = (ctx.upload("e", &e).unwrap(), ctx.storage("u", e.len()).unwrap());
        let d = gpu_l2_normalize_rows(ctx, rows, dim, &eb, &ub).unwrap();
        check(
            &format!("{rows} rows of {dim}"),
            Tolerance::new(2e-6, 1e-7),
            &ctx.run_and_read(&[&d], &ub, e.len()).unwrap(),
            &u,
        );
    }
}

/// Three Adam steps over odd-sized weights in one submission, each reading its step size
/// from the table by the GPU's step counter, against `adam_update`.
#[test]
fn adam_matches_the_cpu_twin_over_steps_counted_on_the_gpu() {
    let ctx = ctx();
    let mut rng = Rng::new(7);
    let config = TrainConfig { learning_rate: 3e-3, ..TrainConfig::default() };
    let rates = AdamRates { beta1: config.beta1, beta2: config.beta2, epsilon: config.epsilon };
    for (len, first) in [(1usize, 0u32), (1003, 41), (70_001, 5)] {
        let mut params = rng.normals(len, 0.5);
        let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.normals(len, 0.01)).collect();
        // A weight with no gradient and one with a tiny one.
        let (gpu_params, m, v) = (
            ctx.upload("params", &params).unwrap(),
            ctx.upload("m", &vec![0.0; len]).unwrap(),
            ctx.upload("v", &vec![0.0; len]).unwrap(),
        );
        let state = ctx.upload_pod("state", &[first, 0]).unwrap();
        let sizes: Vec<f32> = (1..=3).map(|k| config.adam_step_size(first as u64 + k)).collect();
        let step_sizes = ctx.upload("step sizes", &sizes).unwrap();
        let grad_bufs: Vec<wgpu::Buffer> = grads.iter().map(|g| ctx.upload("grads", g).unwrap()).collect();
        let mut dispatches = Vec::new();
        for g in &grad_bufs {
            let buffers =
                AdamBuffers { state: &state, step_sizes: &step_sizes, grads: g, params: &gpu_params, m: &m, v: &v };
            dispatches.push(adam(ctx, len, rates, &buffers).unwrap());
            dispatches.push(advance_step(ctx, &state).unwrap());
        }
        let refs: Vec<&lookalike::gpu::Dispatch> = dispatches.iter().collect();
        let out = ctx.run_and_read_many(&refs, &[(&gpu_params, len), (&m, len), (&v, len)]).unwrap();
        let (mut cm, mut cv) = (vec![0.0; len], vec![0.0; len]);
        for (k, g) in grads.iter().enumerate() {
            adam_update(
                &mut params,
                g,
                &mut cm,
                &mut cv,
                config.adam_rates(),
                config.adam_step_size(first as u64 + k as u64 + 1),
            );
        }
        let tol = Tolerance::new(1e-6, 1e-9);
        check(&format!("weights, {len}"), tol, &out[0], &params);
        check(&format!("m, {len}"), tol, &out[1], &cm);
        check(&format!("v, {len}"), tol, &out[2], &cv);
        assert_eq!(ctx.read_u32(&state, 2).unwrap(), [first + 3, 3]);
    }
}

/// 4 classes of 17x19x3 images (widths 4/6/8, 8-wide ... 3-wide embeddings).
fn small_net_and_set(seed: u64) -> (ConvNet, ClassGrouped, TrainConfig) {
    let data = synthetic_set(&[5, 3, 7, 4], 17, 19, 3, seed);
    let spec = ConvNetSpec { height: 17, width: 19, channels: 3, widths: [4, 6, 8], dim: 3 };
    let config = TrainConfig { seed: seed ^ 0xabcdef, steps_per_epoch: 4, ..TrainConfig::default() };
    (ConvNet::glorot(spec, seed).unwrap(), data, config)
}

/// Weights after GPU steps against the CPU trainer's: within 1e-4 of each weight's size
/// or 1e-6 absolute (measured on lavapipe: at most 1.3e-7 absolute after 10 steps, while
/// each step moves a weight by about lr = 1e-3). The twins sum in different orders, and
/// Adam's first steps move a weight by about ±lr whatever its gradient's size, so a
/// rounding difference is amplified only where a gradient is within rounding of zero.
const WEIGHTS: Tolerance = Tolerance::new(1e-4, 1e-6);

#[test]
fn gpu_steps_take_the_cpu_trainers_steps() {
    let (net, data, config) = small_net_and_set(11);
    let mut cpu = CpuTrainer::new(net.clone(), data.clone(), config).unwrap();
    let mut gpu = GpuTrainer::new(ctx().clone(), net.clone(), &data, config).unwrap();
    // 10 steps in runs of 4 (the first capacity) and 6 (more than it): the step counter and
    // the Adam step sizes carry over from run to run.
    let mut gpu_losses = gpu.run(4).unwrap();
    assert_eq!(gpu.steps_done(), 4);
    gpu_losses.extend(gpu.run(6).unwrap());
    let cpu_losses: Vec<f32> = (0..10).map(|_| cpu.step()).collect();
    assert_eq!(gpu.steps_done(), cpu.steps_done());
    check("losses", Tolerance::new(1e-5, 0.0), &gpu_losses, &cpu_losses);
    let trained = gpu.net().unwrap();
    check("weights after 10 steps", WEIGHTS, &trained.params, &cpu.net().params);
    assert_eq!(trained.class_names, data.images.class_names);
    // The weights moved (by about lr per step): the comparison is not of the initial ones.
    let moved = trained.params.iter().zip(&net.params).filter(|(a, b)| (*a - *b).abs() > 1e-3).count();
    assert!(moved > trained.params.len() / 2, "{moved} of {} weights moved", trained.params.len());
}

#[test]
fn gpu_training_on_a_larger_set_follows_the_cpu() {
    // 5 classes of 28x28x1, widths 5/7/9, dim 4: a run of 10 in one submission.
    let data = synthetic_set(&[9, 2, 13, 5, 6], 28, 28, 1, 12);
    let spec = ConvNetSpec { height: 28, width: 28, channels: 1, widths: [5, 7, 9], dim: 4 };
    let config = TrainConfig { seed: 99, steps_per_epoch: 10, temperature: 0.3, ..TrainConfig::default() };
    let net = ConvNet::glorot(spec, 3).unwrap();
    let mut cpu = CpuTrainer::new(net.clone(), data.clone(), config).unwrap();
    let mut gpu = GpuTrainer::new(ctx().clone(), net, &data, config).unwrap();
    let gpu_losses = gpu.run(10).unwrap();
    let cpu_losses: Vec<f32> = (0..10).map(|_| cpu.step()).collect();
    check("losses", Tolerance::new(1e-5, 0.0), &gpu_losses, &cpu_losses);
    check("weights", WEIGHTS, &gpu.net().unwrap().params, &cpu.net().params);
}

#[test]
fn gpu_trainer_refuses_data_of_another_size_or_classes() {
    let (net, data, config) = small_net_and_set(13);
    let other = synthetic_set(&[3, 3], 19, 17, 3, 1);
    let err = GpuTrainer::new(ctx().clone(), net.clone(), &other, config).err().unwrap();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let named = ConvNet { class_names: vec!["a".into(), "b".into()], ..net.clone() };
    assert!(GpuTrainer::new(ctx().clone(), named, &data, config).is_err());
    let mut gpu = GpuTrainer::new(ctx().clone(), net, &data, config).unwrap();
    assert_eq!(gpu.run(0).unwrap(), Vec::<f32>::new());
    assert_eq!(gpu.steps_done(), 0);
}

#[test]
fn evaluation_embeddings_on_the_gpu_match_the_cpu_twin() {
    // Through the pipeline's forward (RGB input; a one-channel set is spread over R, G, B).
    let (net, data, _) = small_net_and_set(14);
    let images = &data.images;
    let input = gather_batch(images, &(0..images.len() as u32).collect::<Vec<_>>());
    let want = embed(&net, &input, images.len()).unwrap();
    let got = lookalike::train::run::embed_images(Some(ctx()), &net, images).unwrap();
    check("embeddings", Tolerance::new(1e-4, 1e-6), &got, &want);
    let on_cpu = lookalike::train::run::embed_images(None, &net, images).unwrap();
    check("CPU embeddings", Tolerance::new(1e-6, 1e-7), &on_cpu, &want);
}

#[test]
fn a_profiled_step_is_a_training_step() {
    let (net, data, config) = small_net_and_set(15);
    let mut plain = GpuTrainer::new(ctx().clone(), net.clone(), &data, config).unwrap();
    let mut profiled = GpuTrainer::new(ctx().clone(), net, &data, config).unwrap();
    let losses = plain.run(3).unwrap();
    let times = profiled.profile_step().unwrap().expect("lavapipe has timestamps");
    assert_eq!(times.len(), profiled.launches_per_step());
    assert!(times.iter().all(|(_, ms)| ms.is_finite() && *ms >= 0.0), "{times:?}");
    assert_eq!(profiled.steps_done(), 1);
    // The same launches in the same order: the same bits.
    assert_eq!(profiled.run(2).unwrap(), losses[1..]);
    assert_eq!(profiled.net().unwrap().params, plain.net().unwrap().params);
}
