//! GPU preprocessing (resize, centre crop, normalise) against the CPU oracle
//! `cpu::preprocess::preprocess_image`: landscape and portrait odd sizes, down- and
//! upscaling, the pass-through, batches written to their slots, noise and gradients.

mod common;

use std::time::Instant;

use common::ctx;
use image::{Rgb, RgbImage};
use lookalike::cpu::preprocess::{preprocess_image, Preprocess};
use lookalike::gpu::Dispatch;
use lookalike::ops::preprocess::{PreprocessBatch, MAX_RESIZED_SIDE};
use lookalike::rng::Rng;
use lookalike::Error;

/// Largest absolute difference allowed; the kernel does the CPU's f32 operations in the
/// CPU's order, so on drivers that do not fuse multiply-adds it is usually zero.
const LIMIT: f32 = 1e-6;

fn pattern(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, 255 - (x * 5) as u8]))
}

fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    RgbImage::from_fn(width, height, |_, _| Rgb([0; 3].map(|_: u8| rng.next_u64() as u8)))
}

fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / (width - 1) as f32, y as f32 / (height - 1) as f32);
        Rgb([(255.0 * u) as u8, (255.0 * v) as u8, (255.0 * (1.0 - u * v)) as u8])
    })
}

/// Runs the GPU preprocessing in one submit into a buffer pre-filled with NaN, one slot
/// larger than the batch; returns the batch and checks the spare slot was not touched.
fn gpu(images: &[RgbImage], p: &Preprocess) -> Vec<f32> {
    let ctx = ctx();
    let len = images.len() * p.image_len();
    let output = ctx.upload("batch", &vec![f32::NAN; len + p.image_len()]).unwrap();
    let batch = PreprocessBatch::new(ctx, images, p, &output).unwrap();
    assert_eq!((batch.len(), batch.output_len(), batch.dispatches().len()), (images.len(), len, 2 * images.len()));
    let dispatches: Vec<&Dispatch> = batch.dispatches().iter().collect();
    let mut got = ctx.run_and_read(&dispatches, &output, len + p.image_len()).unwrap();
    assert!(got[len..].iter().all(|v| v.is_nan()), "a write landed past the batch");
    got.truncate(len);
    got
}

/// Compares every slot with the CPU oracle; returns the largest absolute difference.
fn check(what: &str, images: &[RgbImage], p: &Preprocess) -> f32 {
    let got = gpu(images, p);
    let mut worst = 0.0f32;
    for (slot, (img, got)) in images.iter().zip(got.chunks_exact(p.image_len())).enumerate() {
        let expected = preprocess_image(img, p).unwrap();
        let (mut max, mut at, mut differing) = (0.0f32, 0, 0);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            let d = (g - e).abs();
            differing += usize::from(g.to_bits() != e.to_bits());
            if d > max || d.is_nan() {
                (max, at) = (d, i);
            }
        }
        eprintln!(
            "{what} slot {slot} ({}x{}): max abs diff {max:e}, {differing} of {} values not bit-identical",
            img.width(),
            img.height(),
            expected.len()
        );
        assert!(
            max <= LIMIT,
            "{what} slot {slot}: index {at}: got {}, expected {} (diff {max:e})",
            got[at],
            expected[at]
        );
        worst = worst.max(max);
    }
    worst
}

#[test]
fn landscape_and_portrait_odd_sizes() {
    check("landscape 301x187", &[pattern(301, 187)], &Preprocess::imagenet(128, 112));
    check("portrait 97x150", &[pattern(97, 150)], &Preprocess::imagenet(64, 56));
}

#[test]
fn upscaling_and_crop_equal_to_resize() {
    check("upscale 40x30 -> 64", &[gradient(40, 30)], &Preprocess::imagenet(64, 64));
    check("upscale 23x41 -> 50", &[noise(23, 41, 7)], &Preprocess::imagenet(50, 33));
}

#[test]
fn image_at_target_size_passes_through_exactly() {
    let p = Preprocess::imagenet(64, 48);
    for img in [noise(91, 64, 3), noise(64, 64, 4), pattern(64, 75)] {
        let got = gpu(std::slice::from_ref(&img), &p);
        assert_eq!(got, preprocess_image(&img, &p).unwrap(), "{}x{}", img.width(), img.height());
    }
}

#[test]
fn noise_and_gradients_with_other_statistics() {
    let p = Preprocess { resize: 72, crop: 61, mean: [0.1, 0.5, 0.9], std: [0.5, 0.25, 2.0] };
    check("noise 203x131", &[noise(203, 131, 11)], &p);
    check("gradient 160x333", &[gradient(160, 333)], &p);
}

#[test]
fn batch_of_three_sizes_fills_its_slots() {
    let images = [noise(150, 97, 21), gradient(64, 80), pattern(33, 29)];
    check("batch", &images, &Preprocess::imagenet(64, 56));
}

#[test]
fn photo_sized_image_to_resnet_input() {
    let ctx = ctx();
    let p = Preprocess::default();
    let img = noise(640, 480, 5);
    let worst = check("640x480 -> 224", std::slice::from_ref(&img), &p);
    eprintln!("640x480 -> 224: worst {worst:e}");

    // Timing on this adapter (pipelines already compiled): preparing (uploads, bind
    // groups) plus one submit, then the best of a few replays; the CPU oracle beside it.
    let output = ctx.storage("batch", p.image_len()).unwrap();
    let start = Instant::now();
    let batch = PreprocessBatch::new(ctx, std::slice::from_ref(&img), &p, &output).unwrap();
    let dispatches: Vec<&Dispatch> = batch.dispatches().iter().collect();
    ctx.run(&dispatches).unwrap();
    let first = start.elapsed();
    let replay = (0..5)
        .map(|_| {
            let start = Instant::now();
            ctx.run(&dispatches).unwrap();
            start.elapsed()
        })
        .min()
        .unwrap();
    let start = Instant::now();
    preprocess_image(&img, &p).unwrap();
    let cpu = start.elapsed();
    eprintln!(
        "640x480 -> 224 on {}: prepare + run {first:?}, replay {replay:?}; CPU oracle {cpu:?}",
        ctx.adapter_info().name
    );
}

#[test]
fn bad_inputs_are_errors() {
    let ctx = ctx();
    let p = Preprocess::imagenet(32, 24);
    let img = pattern(40, 30);
    let output = ctx.storage("batch", 2 * p.image_len()).unwrap();
    let err =
        |images: &[RgbImage], p: &Preprocess, output: &wgpu::Buffer| match PreprocessBatch::new(ctx, images, p, output)
        {
            Ok(_) => panic!("{p:?} on {} images was accepted", images.len()),
            Err(e) => e,
        };

    for bad in [Preprocess::imagenet(16, 24), Preprocess::imagenet(0, 0), Preprocess { std: [0.2, 0.0, 0.2], ..p }] {
        let e = err(std::slice::from_ref(&img), &bad, &output);
        assert!(matches!(e, Error::InvalidArgument(_)), "{bad:?}: {e}");
    }
    let e = err(&[], &p, &output);
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let e = err(&[img.clone(), img.clone(), img.clone()], &p, &output);
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = err(&[img.clone(), RgbImage::new(0, 5)], &p, &output);
    assert!(matches!(e, Error::InputTooSmall { min: 1, .. }), "{e}");
    // The CPU oracle agrees on the empty image.
    assert!(matches!(preprocess_image(&RgbImage::new(0, 5), &p), Err(Error::InputTooSmall { min: 1, .. })));
    // 3000x2 resized to shorter side 32 would be 48000 wide.
    let strip = RgbImage::new(3000, 2);
    let e = err(&[strip], &p, &output);
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains(&MAX_RESIZED_SIDE.to_string())), "{e}");
}

#[test]
fn replaying_the_dispatches_gives_the_same_batch() {
    let ctx = ctx();
    let p = Preprocess::imagenet(40, 36);
    let images = [noise(57, 45, 9), gradient(45, 57)];
    let output = ctx.storage("batch", images.len() * p.image_len()).unwrap();
    let batch = PreprocessBatch::new(ctx, &images, &p, &output).unwrap();
    let dispatches: Vec<&Dispatch> = batch.dispatches().iter().collect();
    let first = ctx.run_and_read(&dispatches, &output, batch.output_len()).unwrap();
    let second = ctx.run_and_read(&dispatches, &output, batch.output_len()).unwrap();
    assert_eq!(first, second);
    let expected: Vec<f32> = images.iter().flat_map(|img| preprocess_image(img, &p).unwrap()).collect();
    assert!(first.iter().zip(&expected).all(|(a, b)| (a - b).abs() <= LIMIT));
}
