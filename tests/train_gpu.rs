//! The training kernels against their CPU twins on odd sizes, and GPU training steps against
//! the CPU trainer's. Fails without an adapter (tests/common).

mod common;

use std::path::Path;

use common::ctx;
use lookalike::compare::Tolerance;
use lookalike::data::{ClassGrouped, LabelledImages};
use lookalike::ops::train_sample::{train_sample, TrainingSet};
use lookalike::rng::Rng;
use lookalike::train::sampler::pair_batch;
use lookalike::Context;

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
            let want: Vec<f32> = expected
                .iter()
                .flat_map(|&r| data.images.image(r as usize).iter().map(|&b| b as f32 / 255.0))
                .collect();
            assert_eq!(got, want, "pixels, seed {seed:#x} step {step}");
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
    let small = Context::builder().max_binding_bytes(1100).build().unwrap();
    sample_matches_cpu(&small, &synthetic_set(&[40, 25, 35], 5, 7, 1, 2), 4);
    // 200 images would take 7.
    let err = TrainingSet::upload(&small, &synthetic_set(&[100, 100], 5, 7, 1, 2)).unwrap_err().to_string();
    assert!(err.contains("7000 pixel bytes need 7 storage bindings") && err.contains("at most 4"), "{err}");
}

mod scratch {
    /// f64 reference of the loss, for now.
    pub fn loss(e: &[f32], c: usize, dim: usize, t: f32) -> (f32, Vec<f32>, Vec<f32>) {
        let rows = 2 * c;
        let mut u = vec![0f64; rows * dim];
        let mut inv = vec![0f64; rows];
        let mut big = vec![false; rows];
        for r in 0..rows {
            let s: f64 = (0..dim).map(|d| (e[r * dim + d] as f64).powi(2)).sum();
            big[r] = s > 1e-12;
            inv[r] = 1.0 / s.max(1e-12).sqrt();
            for d in 0..dim {
                u[r * dim + d] = e[r * dim + d] as f64 * inv[r];
            }
        }
        let t = t as f64;
        let dot = |a: usize, b: usize| (0..dim).map(|d| u[a * dim + d] * u[b * dim + d]).sum::<f64>();
        let mut loss = 0.0;
        let mut dl = vec![0f64; c * c];
        for i in 0..c {
            let l: Vec<f64> = (0..c).map(|j| dot(i, c + j) / t).collect();
            let m = l.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + l.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            loss += lse - l[i];
            for j in 0..c {
                dl[i * c + j] = ((l[j] - lse).exp() - if i == j { 1.0 } else { 0.0 }) / c as f64;
            }
        }
        let mut du = vec![0f64; rows * dim];
        for i in 0..c {
            for j in 0..c {
                for d in 0..dim {
                    du[i * dim + d] += dl[i * c + j] * u[(c + j) * dim + d] / t;
                    du[(c + j) * dim + d] += dl[i * c + j] * u[i * dim + d] / t;
                }
            }
        }
        let mut de = vec![0f32; rows * dim];
        for r in 0..rows {
            let along: f64 = (0..dim).map(|d| u[r * dim + d] * du[r * dim + d]).sum();
            let along = if big[r] { along } else { 0.0 };
            for d in 0..dim {
                de[r * dim + d] = (inv[r] * (du[r * dim + d] - u[r * dim + d] * along)) as f32;
            }
        }
        ((loss / c as f64) as f32, u.iter().map(|&x| x as f32).collect(), de)
    }
}

#[test]
fn metric_loss_scratch() {
    use lookalike::ops::metric_loss::{metric_loss, MetricLossBuffers};
    let ctx = ctx();
    let mut rng = Rng::new(5);
    for (c, dim, t) in [(2, 1, 0.2), (3, 3, 0.2), (10, 8, 0.2), (37, 5, 0.7), (300, 8, 0.2)] {
        let mut e: Vec<f32> = rng.normals(2 * c * dim, 1.0);
        e[..dim].iter_mut().for_each(|x| *x *= 1e-8); // a degenerate row
        let st = ctx.upload_pod("state", &[0u32, 3]).unwrap();
        let eb = ctx.upload("e", &e).unwrap();
        let u = ctx.storage("u", e.len()).unwrap();
        let de = ctx.storage("de", e.len()).unwrap();
        let hist = ctx.storage("hist", 5).unwrap();
        let b = MetricLossBuffers { state: &st, embeddings: &eb, unit: &u, d_embeddings: &de, loss_history: &hist };
        let d = metric_loss(ctx, c, dim, t, &b).unwrap();
        ctx.run(&[&d]).unwrap();
        let (loss, uw, dew) = scratch::loss(&e, c, dim, t);
        let h = ctx.read(&hist, 5).unwrap();
        eprintln!("c {c} dim {dim}: loss {} vs {loss}", h[3]);
        check("u", Tolerance::new(1e-5, 1e-6), &ctx.read(&u, e.len()).unwrap(), &uw);
        check("de", Tolerance::of_largest(1e-5, &dew), &ctx.read(&de, e.len()).unwrap(), &dew);
        check("loss", Tolerance::new(1e-5, 1e-6), &h[3..4], &[loss]);
    }
}
