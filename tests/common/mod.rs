//! Shared by the test binaries: one GPU device per binary, opened loudly; running the
//! `lookalike` binary ([`cli`]), the index tests' image set and index, and editable
//! weights files in the modules below.

#![allow(dead_code)]

pub mod cli;
#[cfg(feature = "cli")]
pub mod index_fixture;
#[cfg(feature = "milvus")]
pub mod milvus_server;
pub mod weights_file;

use std::sync::OnceLock;

use lookalike::compare::relative_l2;
use lookalike::ops::conv2d::Conv2dShape;
use lookalike::ops::Tuning;
use lookalike::rng::Rng;
use lookalike::Context;

/// The device all tests of a binary share, chosen as the command line chooses it
/// (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`). No adapter is a test failure, never a skip.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| match Context::from_env() {
        Ok(ctx) => {
            eprintln!("GPU tests on: {} ({:?})", ctx.adapter_info().name, ctx.adapter_info().backend);
            ctx
        }
        Err(e) => panic!("GPU tests need an adapter and none could be opened: {e}"),
    })
}

/// The built-in launch shapes for the tests' adapter (never a cached autotune result).
pub fn tuning() -> Tuning {
    Tuning::for_adapter(ctx().adapter_info())
}

/// Asserts relative L2 error within `limit`, printing the worst element on failure.
pub fn assert_close(what: &str, got: &[f32], expected: &[f32], limit: f64) {
    let err = relative_l2(got, expected);
    if err.is_nan() || err > limit {
        let (i, _) = got
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .enumerate()
            .fold((0, -1.0f32), |best, (i, d)| if d > best.1 || d.is_nan() { (i, d) } else { best });
        panic!(
            "{what}: relative L2 error {err:.3e} > {limit:.1e}; worst at index {i}: got {}, expected {}",
            got.get(i).copied().unwrap_or(f32::NAN),
            expected.get(i).copied().unwrap_or(f32::NAN)
        );
    }
}

/// Smooth seeded "images" in normalised units: features of real-looking inputs, not noise.
pub fn images(batch: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(batch * h * w * 3);
    for _ in 0..batch {
        let f: Vec<f32> = (0..9).map(|_| rng.range(0.5, 6.0)).collect();
        let phase: Vec<f32> = (0..9).map(|_| rng.range(0.0, 6.3)).collect();
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                for c in 0..3 {
                    let s = (f[3 * c] * u + phase[3 * c]).sin() * (f[3 * c + 1] * v + phase[3 * c + 1]).cos()
                        + 0.3 * (f[3 * c + 2] * (u + v) + phase[3 * c + 2]).sin();
                    out.push(1.5 * s + 0.1 * rng.normal());
                }
            }
        }
    }
    out
}

/// A seeded odd convolution: a kernel from `kernels`, batch 1-3, up to `max_h x max_w`
/// input, 1..=`max_in_c` input and 1-75 output channels, stride 1-2, any padding up to half
/// the kernel.
pub fn random_conv_shape(rng: &mut Rng, kernels: &[usize], max_h: usize, max_w: usize, max_in_c: usize) -> Conv2dShape {
    let kernel = kernels[rng.int(0, kernels.len() - 1)];
    Conv2dShape {
        batch: rng.int(1, 3),
        in_h: rng.int(kernel.max(2), max_h),
        in_w: rng.int(kernel.max(2), max_w),
        in_c: rng.int(1, max_in_c),
        out_c: rng.int(1, 75),
        kernel_h: kernel,
        kernel_w: kernel,
        stride: rng.int(1, 2),
        pad_h: rng.int(0, kernel / 2),
        pad_w: rng.int(0, kernel / 2),
    }
}
