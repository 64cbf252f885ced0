//! `lookalike demo`: the main job on an embedded default. No files needed: seeded weights,
//! procedurally generated labelled images, GPU features checked against the CPU reference,
//! and nearest neighbours by cosine similarity.

use std::time::Instant;

use image::{Rgb, RgbImage};
use lookalike::compare::{batch_centred, relative_l2};
use lookalike::cpu::preprocess::{preprocess_image, Preprocess};
use lookalike::embed::Embedder;
use lookalike::model::{RandomResNet50, ResNet50, FEATURE_DIM};
use lookalike::npy::NhwcBatch;
use lookalike::rng::Rng;
use lookalike::{Context, Result};

pub const CLASSES: [&str; 4] = ["stripes", "checkers", "rings", "blobs"];

/// One procedural image of class `class`, with seeded jitter in frequency, phase and colour.
pub fn procedural_image(class: usize, size: u32, rng: &mut Rng) -> RgbImage {
    let freq = rng.range(4.0, 9.0);
    let phase = rng.range(0.0, 6.3);
    let angle = rng.range(-0.4, 0.4);
    let fg = [rng.range(0.6, 1.0), rng.range(0.1, 0.9), rng.range(0.0, 0.5)];
    let bg = [rng.range(0.0, 0.3), rng.range(0.0, 0.4), rng.range(0.3, 0.9)];
    let centres: Vec<(f32, f32)> = (0..5).map(|_| (rng.range(0.1, 0.9), rng.range(0.1, 0.9))).collect();
    RgbImage::from_fn(size, size, |x, y| {
        let (u, v) = (x as f32 / size as f32, y as f32 / size as f32);
        let (ru, rv) = (u * angle.cos() - v * angle.sin(), u * angle.sin() + v * angle.cos());
        let t = match class {
            0 => (freq * std::f32::consts::TAU * rv + phase).sin(),
            1 => (freq * std::f32::consts::PI * ru).sin().signum() * (freq * std::f32::consts::PI * rv).sin().signum(),
            2 => (freq * std::f32::consts::TAU * ((u - 0.5).powi(2) + (v - 0.5).powi(2)).sqrt() + phase).sin(),
            _ => centres.iter().map(|(cx, cy)| (-((u - cx).powi(2) + (v - cy).powi(2)) * 60.0).exp()).sum::<f32>() * 2.0 - 1.0,
        };
        let a = (0.5 + 0.5 * t).clamp(0.0, 1.0);
        Rgb(std::array::from_fn(|c| ((a * fg[c] + (1.0 - a) * bg[c]) * 255.0) as u8))
    })
}

pub fn run(weights: Option<&std::path::Path>, per_class: usize) -> Result<()> {
    let ctx = Context::new()?;
    let info = ctx.adapter_info().clone();
    let size = if ctx.is_cpu() { 64 } else { 224 };
    println!("adapter: {} ({:?}, {:?})", info.name, info.backend, info.device_type);
    if ctx.is_cpu() {
        println!("software adapter: using {size}x{size} inputs so the demo finishes in about a minute (224x224 on a real GPU)");
    }
    let net = match weights {
        Some(path) => ResNet50::load(path)?,
        None => {
            println!("weights: seeded random ResNet50 (seed 0); pass --weights for real ones");
            RandomResNet50::generate(0)?.net
        }
    };

    let mut rng = Rng::new(42);
    let preprocess = Preprocess::imagenet(size, size);
    let mut labels = Vec::new();
    let mut data = Vec::new();
    for (class, _) in CLASSES.iter().enumerate() {
        for _ in 0..per_class {
            data.extend(preprocess_image(&procedural_image(class, size, &mut rng), &preprocess)?);
            labels.push(class);
        }
    }
    let n = labels.len();
    let batch = NhwcBatch { batch: n, height: size as usize, width: size as usize, data };
    println!("images: {n} procedural ({} classes x {per_class}) at {size}x{size}", CLASSES.len());

    let mut gpu = Embedder::gpu(ctx, &net)?;
    gpu.embed(&NhwcBatch { batch: 1, height: batch.height, width: batch.width, data: batch.data[..batch.data.len() / n].to_vec() })?;
    let start = Instant::now();
    let gpu_features = gpu.embed(&batch)?;
    let gpu_secs = start.elapsed().as_secs_f64();
    let mut cpu = Embedder::cpu(&net)?;
    let start = Instant::now();
    let cpu_features = cpu.embed(&batch)?;
    let cpu_secs = start.elapsed().as_secs_f64();
    let gflop = lookalike::model::resnet50::ShapeWalk::resnet50(size as usize, size as usize).flops * n as f64 / 1e9;
    println!("GPU forward: {:.1} img/s ({:.2} GFLOP/s)", n as f64 / gpu_secs, gflop / gpu_secs);
    println!("CPU forward: {:.1} img/s ({:.2} GFLOP/s)", n as f64 / cpu_secs, gflop / cpu_secs);
    let worst = (0..n)
        .map(|i| relative_l2(&gpu_features[i * FEATURE_DIM..][..FEATURE_DIM], &cpu_features[i * FEATURE_DIM..][..FEATURE_DIM]))
        .fold(0.0, f64::max);
    let centred = relative_l2(&batch_centred(&gpu_features, n, FEATURE_DIM), &batch_centred(&cpu_features, n, FEATURE_DIM));
    println!("GPU vs CPU: worst relative L2 per image {worst:.2e}, batch-centred {centred:.2e}");

    // Nearest neighbour by cosine of batch-centred features (random weights share a large
    // common direction that would otherwise dominate every cosine).
    let centred = batch_centred(&gpu_features, n, FEATURE_DIM);
    let unit: Vec<Vec<f32>> = centred
        .chunks_exact(FEATURE_DIM)
        .map(|row| {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter().map(|x| x / norm).collect()
        })
        .collect();
    let mut correct = 0;
    for i in 0..n {
        let (best, score) = (0..n)
            .filter(|&j| j != i)
            .map(|j| (j, unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum::<f32>()))
            .fold((i, f32::MIN), |b, c| if c.1 > b.1 { c } else { b });
        correct += usize::from(labels[best] == labels[i]);
        println!("  image {i:2} ({:8}) -> nearest {best:2} ({:8}) cosine {score:+.3}", CLASSES[labels[i]], CLASSES[labels[best]]);
    }
    println!("1-NN accuracy: {correct}/{n}");
    Ok(())
}
