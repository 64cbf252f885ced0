//! The GEMM on matrix units (`ops::matmul_coop`) against the CPU product of the same
//! f16-rounded inputs.
//!
//! Needs an adapter with cooperative matrices: lavapipe of Mesa 26 has 8x8x8 ones, Debian
//! 12's Mesa 25.0 none (`.ci/run` brings a newer lavapipe for this binary when it can).
//! Where the adapter has none, these tests check that the op refuses with the reason and
//! say loudly that the product itself went untested; with `LOOKALIKE_REQUIRE_COOP=1` that
//! is a failure instead.

mod common;

use std::sync::OnceLock;

use common::{assert_close, ctx};
use lookalike::ops::matmul::{MatmulShape, Precision};
use lookalike::ops::matmul_coop::{matmul_coop, matmul_coop_with, round_to_f16, CoopTiles};
use lookalike::rng::Rng;
use lookalike::{cpu, Context, Error};

/// The shared device, opened with the experimental feature where the adapter has it.
fn coop_ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        // SAFETY: tests accept wgpu's experimental-feature risk for this device.
        let builder = unsafe { Context::builder().experimental_cooperative_matrices() };
        match builder.build() {
            Ok(ctx) => ctx,
            Err(e) => panic!("GPU tests need an adapter and none could be opened: {e}"),
        }
    })
}

/// The context when it has matrix units; `None` after checking that `matmul_coop` refuses
/// and saying so, or a panic when `LOOKALIKE_REQUIRE_COOP=1` demands them.
fn with_units(test: &str) -> Option<&'static Context> {
    let ctx = coop_ctx();
    if let Some(coop) = ctx.cooperative_matrix() {
        eprintln!("{test}: matrix units {coop} on {}", ctx.adapter_info().name);
        return Some(ctx);
    }
    let why = ctx.cooperative_matrix_unavailable().unwrap_or_default().to_string();
    let required = std::env::var("LOOKALIKE_REQUIRE_COOP").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(!required, "LOOKALIKE_REQUIRE_COOP is set but {} has no usable matrix units: {why}", ctx.adapter_info().name);
    let shape = MatmulShape { m: 4, n: 4, k: 4, b_transposed: false };
    let buf = ctx.upload("x", &[0.0; 16]).unwrap();
    let refused = matmul_coop(ctx, &shape, &buf, &buf, Precision::F32, &buf);
    assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains(&why)), "{refused:?}");
    eprintln!("{test}: NOT RUN on {}: {why} (only the refusal was checked)", ctx.adapter_info().name);
    None
}

#[test]
fn matmul_coop_matches_cpu_on_rounded_inputs() {
    let Some(ctx) = with_units("matmul_coop_matches_cpu_on_rounded_inputs") else { return };
    let mut rng = Rng::new(21);
    for case in 0..8 {
        // Odd sizes, not multiples of any tile; one vector (m = 1) and one long K.
        let (m, n, k) = match case {
            0 => (1, 1, 1),
            1 => (1, 300, 2048),
            _ => (rng.int(1, 150), rng.int(1, 170), rng.int(1, 300)),
        };
        let shape = MatmulShape { m, n, k, b_transposed: case % 2 == 1 };
        let a = rng.normals(m * k, 1.0);
        let b = rng.normals(k * n, 1.0);
        let expected = cpu::matmul(&shape, &round_to_f16(&a), &round_to_f16(&b)).unwrap();
        let (a_buf, b_buf) = (ctx.upload("a", &a).unwrap(), ctx.upload("b", &b).unwrap());
        let c = ctx.storage("c", m * n).unwrap();
        let dispatch = matmul_coop(ctx, &shape, &a_buf, &b_buf, Precision::F32, &c).unwrap();
        let got = ctx.run_and_read(&[&dispatch], &c, m * n).unwrap();
        assert_close(&format!("matmul_coop case {case} {shape:?}"), &got, &expected, 1e-5);
    }
}

#[test]
fn matmul_coop_takes_f16_b_and_other_tiles() {
    let Some(ctx) = with_units("matmul_coop_takes_f16_b_and_other_tiles") else { return };
    let Some(coop) = ctx.cooperative_matrix() else { return };
    let mut rng = Rng::new(22);
    // The k-NN shape (queries x reference rows stored f16) and a plain one.
    for (m, n, k, transposed) in [(7, 333, 67, true), (70, 9, 131, false)] {
        let shape = MatmulShape { m, n, k, b_transposed: transposed };
        let a = rng.normals(m * k, 1.0);
        let b: Vec<half::f16> = rng.normals(k * n, 1.0).into_iter().map(half::f16::from_f32).collect();
        let b_f32: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
        let expected = cpu::matmul(&shape, &round_to_f16(&a), &b_f32).unwrap();
        let (a_buf, b_buf) = (ctx.upload("a", &a).unwrap(), ctx.upload_pod("b", &b).unwrap());
        let c = ctx.storage("c", m * n).unwrap();
        let tall = CoopTiles { sg_rows: 1, sg_cols: 2, tile_k: coop.size };
        let deep = CoopTiles { sg_rows: 2, sg_cols: 1, tile_k: 4 * coop.size };
        for tiles in [CoopTiles::default_for(coop), tall, deep] {
            let dispatch = matmul_coop_with(ctx, &shape, &a_buf, &b_buf, Precision::F16, &c, tiles).unwrap();
            let got = ctx.run_and_read(&[&dispatch], &c, m * n).unwrap();
            assert_close(&format!("f16 matmul_coop {shape:?} {tiles:?}"), &got, &expected, 1e-5);
        }
        let odd = CoopTiles { tile_k: coop.size + 1, ..CoopTiles::default_for(coop) };
        let refused = matmul_coop_with(ctx, &shape, &a_buf, &b_buf, Precision::F16, &c, odd);
        assert!(matches!(refused, Err(Error::InvalidArgument(_))), "{refused:?}");
    }
}

#[test]
fn matmul_coop_is_refused_without_the_experimental_feature() {
    // The plain context never asks for it.
    let ctx = ctx();
    assert!(ctx.cooperative_matrix().is_none());
    let why = ctx.cooperative_matrix_unavailable().unwrap();
    assert!(why.contains("not requested"), "{why}");
    let shape = MatmulShape { m: 4, n: 4, k: 4, b_transposed: false };
    let buf = ctx.upload("x", &[0.0; 16]).unwrap();
    let refused = matmul_coop(ctx, &shape, &buf, &buf, Precision::F32, &buf);
    assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains("not requested")), "{refused:?}");
}
