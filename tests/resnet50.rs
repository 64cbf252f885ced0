//! The whole ResNet50: GPU (folded and unfused batch-norm) against the CPU reference, and
//! weights files in and out.

mod common;

use std::sync::OnceLock;

use common::{assert_close, ctx, images};
use lookalike::compare::{batch_centred, relative_l2};
use lookalike::model::{BatchNormMode, CpuResNet50, GpuResNet50, RandomResNet50, FEATURE_DIM};
use lookalike::Error;

fn weights() -> &'static RandomResNet50 {
    static NET: OnceLock<RandomResNet50> = OnceLock::new();
    NET.get_or_init(|| RandomResNet50::generate(7).expect("seeded weights"))
}

fn compare_per_image(what: &str, got: &[f32], expected: &[f32], batch: usize, raw_limit: f64, centred_limit: f64) {
    for i in 0..batch {
        let r = i * FEATURE_DIM..(i + 1) * FEATURE_DIM;
        eprintln!("{what} image {i}: relative L2 {:.2e}", relative_l2(&got[r.clone()], &expected[r]));
        let range = i * FEATURE_DIM..(i + 1) * FEATURE_DIM;
        assert_close(&format!("{what} image {i}"), &got[range.clone()], &expected[range], raw_limit);
    }
    if batch > 1 {
        let (g, e) = (batch_centred(got, batch, FEATURE_DIM), batch_centred(expected, batch, FEATURE_DIM));
        eprintln!("{what} batch-centred: relative L2 {:.2e}", relative_l2(&g, &e));
        assert_close(&format!("{what} batch-centred"), &g, &e, centred_limit);
    }
}

fn gpu_vs_cpu(batch: usize, size: usize, seed: u64) {
    let ctx = ctx();
    let net = &weights().net;
    let input = images(batch, size, size, seed);
    let expected = CpuResNet50::new(net).unwrap().forward(&input, batch, size, size).unwrap();
    let norm = (expected.iter().map(|x| x * x).sum::<f32>() / batch as f32).sqrt();
    assert!(norm.is_finite() && norm > 1e-2 && norm < 1e4, "features should be O(1)-scaled, norm {norm}");

    let mut folded = GpuResNet50::new(ctx, net, BatchNormMode::Folded).unwrap();
    let fast = folded.forward(ctx, &input, batch, size, size).unwrap();
    compare_per_image(&format!("folded {size}x{size}"), &fast, &expected, batch, 1e-4, 1e-3);

    let mut separate = GpuResNet50::new(ctx, net, BatchNormMode::Separate).unwrap();
    let unfused = separate.forward(ctx, &input, batch, size, size).unwrap();
    compare_per_image(&format!("unfused {size}x{size}"), &unfused, &expected, batch, 1e-4, 1e-3);
    // The two GPU paths differ only in where batch-norm is rounded.
    compare_per_image(&format!("folded vs unfused {size}x{size}"), &fast, &unfused, batch, 1e-5, 1e-3);

    // A second forward reuses the plan and gives the same answer.
    let again = folded.forward(ctx, &input, batch, size, size).unwrap();
    assert_eq!(again, fast, "replaying a plan changed the result");
}

#[test]
fn gpu_matches_cpu_at_64_batch_2() {
    gpu_vs_cpu(2, 64, 11);
}

#[test]
fn gpu_matches_cpu_at_224_batch_1() {
    gpu_vs_cpu(1, 224, 12);
}

#[test]
fn odd_resolutions_and_batch_3_match() {
    let ctx = ctx();
    let net = &weights().net;
    let (batch, h, w) = (3, 45, 37);
    let input = images(batch, h, w, 13);
    let expected = CpuResNet50::new(net).unwrap().forward(&input, batch, h, w).unwrap();
    let mut gpu = GpuResNet50::new(ctx, net, BatchNormMode::Folded).unwrap();
    let got = gpu.forward(ctx, &input, batch, h, w).unwrap();
    compare_per_image("45x37 batch 3", &got, &expected, batch, 1e-4, 1e-3);
    // Images are independent: one alone gives the same features as inside the batch.
    let single = gpu.forward(ctx, &input[h * w * 3..2 * h * w * 3], 1, h, w).unwrap();
    assert!(relative_l2(&single, &got[FEATURE_DIM..2 * FEATURE_DIM]) < 1e-6);
}

#[test]
fn too_small_inputs_are_rejected() {
    let ctx = ctx();
    let mut gpu = GpuResNet50::new(ctx, &weights().net, BatchNormMode::Folded).unwrap();
    let err = gpu.forward(ctx, &vec![0.0; 16 * 16 * 3], 1, 16, 16).unwrap_err();
    assert!(matches!(err, lookalike::Error::InputTooSmall { .. }), "{err}");
    let err = gpu.forward(ctx, &[0.0; 10], 1, 64, 64).unwrap_err();
    assert!(matches!(err, lookalike::Error::ShapeMismatch { .. }), "{err}");
}

/// A NaN in the input is refused before anything runs; activations that outgrow f32 (an
/// input scaled far past the normalised range) surface as non-finite features, reported
/// with the image, on both devices (ReLU keeps NaN rather than zeroing it).
#[test]
fn non_finite_inputs_and_overflowing_activations_are_errors() {
    let ctx = ctx();
    let net = &weights().net;
    let (batch, size) = (2, 32);
    let mut input = images(batch, size, size, 5);
    let mut gpu = GpuResNet50::new(ctx, net, BatchNormMode::Folded).unwrap();
    let cpu = CpuResNet50::new(net).unwrap();
    input[7] = f32::NAN;
    for result in [gpu.forward(ctx, &input, batch, size, size), cpu.forward(&input, batch, size, size)] {
        assert!(
            matches!(&result, Err(Error::NonFinite { name, index: 7, .. }) if name == "resnet50 input"),
            "{result:?}"
        );
    }
    let image_len = size * size * 3;
    let huge: Vec<f32> = input
        .iter()
        .enumerate()
        .map(|(i, &x)| if i < image_len { 1.0 } else { (x * 1e38).clamp(-3e38, 3e38) })
        .collect();
    for result in [gpu.forward(ctx, &huge, batch, size, size), cpu.forward(&huge, batch, size, size)] {
        let message = result.as_ref().map(|_| String::new()).unwrap_or_else(|e| e.to_string());
        assert!(matches!(&result, Err(Error::NonFiniteOutput { what, .. }) if what.ends_with("image 1")), "{result:?}");
        assert!(message.contains("outgrew f32"), "{message}");
    }
}

#[test]
fn random_weights_are_deterministic_and_complete() {
    let net = &weights().net;
    assert_eq!(net.parameter_count() + 1000 * FEATURE_DIM + 1000, 25_557_032);
    let again = RandomResNet50::generate(7).unwrap();
    assert!(again.net == *net, "same seed, different weights");
    let other = RandomResNet50::generate(8).unwrap();
    assert!(other.net != *net);
}
