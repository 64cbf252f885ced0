//! Adapter selection and what the context reports.

use lookalike::gpu::ContextBuilder;
use lookalike::{Context, Error};

/// `Context::new` and the default builder read no environment; `from_env` reads
/// `WGPU_ADAPTER_NAME`. Run in a child process of this test binary, the one place the
/// variable is set, so that no other test sees it.
#[test]
fn only_from_env_reads_the_environment() {
    const CHILD: &str = "LOOKALIKE_CONTEXT_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "only_from_env_reads_the_environment", "--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .env("WGPU_ADAPTER_NAME", "no-adapter-is-named-this")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    assert!(format!("{:?}", ContextBuilder::default()).contains("adapter_name: None"));
    Context::new().unwrap_or_else(|e| panic!("Context::new followed WGPU_ADAPTER_NAME: {e}"));
    let err = Context::from_env().err().expect("from_env ignored WGPU_ADAPTER_NAME");
    assert!(matches!(err, Error::NoAdapter { .. }) && err.to_string().contains("no-adapter-is-named-this"), "{err}");
}

#[test]
fn default_context_opens_and_describes_itself() {
    let ctx = Context::from_env().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let text = ctx.to_string();
    for line in ["adapter:", "backend:", "driver:", "max_storage_buffer_binding_size"] {
        assert!(text.contains(line), "`lookalike info` text lacks {line:?}:\n{text}");
    }
    assert!(ctx.max_binding_bytes() >= 128 << 20);
}

#[test]
fn an_unknown_adapter_name_is_a_typed_error_with_a_hint() {
    let err = Context::builder().adapter_name("no-such-adapter-xyz").build().err().expect("no adapter should match");
    assert!(matches!(err, Error::NoAdapter { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("lavapipe") && text.contains("no-such-adapter-xyz"), "{text}");
}

#[test]
fn stage_times_run_every_stage_and_time_each_one() {
    use lookalike::cpu;
    use lookalike::ops::matmul::{matmul, MatmulShape};
    use lookalike::ops::Tiles;
    use lookalike::rng::Rng;
    let ctx = Context::from_env().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let mut rng = Rng::new(4);
    let shape = MatmulShape { m: 9, n: 21, k: 13, b_transposed: false };
    let (a, b) = (rng.normals(9 * 13, 1.0), rng.normals(13 * 21, 1.0));
    let (ab, bb) = (ctx.upload("a", &a).unwrap(), ctx.upload("b", &b).unwrap());
    let (c1, c2) = (ctx.storage("c1", 9 * 21).unwrap(), ctx.storage("c2", 9 * 21).unwrap());
    let first = matmul(&ctx, &shape, &ab, &bb, &c1, Tiles::default()).unwrap();
    let second = matmul(&ctx, &shape, &ab, &bb, &c2, Tiles::for_rows(9)).unwrap();
    let times = ctx.stage_times(&[("first", vec![&first]), ("second", vec![&second]), ("empty", vec![])]).unwrap();
    match times {
        Some(times) => {
            let names: Vec<&str> = times.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, ["first", "second", "empty"]);
            assert!(times.iter().all(|(_, ms)| ms.is_finite() && *ms >= 0.0), "{times:?}");
        }
        None => assert!(!ctx.has_timestamps(), "an adapter with timestamp queries returned no times"),
    }
    // Both stages ran: their outputs are the product.
    let expected = cpu::matmul(&shape, &a, &b).unwrap();
    for c in [&c1, &c2] {
        let got = ctx.read(c, 9 * 21).unwrap();
        lookalike::compare::Tolerance::new(1e-5, 1e-5).check(&got, &expected).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Clones share the device and its pipeline cache: a pipeline built through one is not
/// compiled again through the other, and buffers made by one are usable by the other.
#[test]
fn a_cloned_context_shares_device_and_pipelines() {
    use lookalike::ops::matmul::{matmul, MatmulShape};
    use lookalike::ops::Tiles;
    let ctx = Context::from_env().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let clone = ctx.clone();
    let shape = MatmulShape { m: 3, n: 5, k: 2, b_transposed: false };
    let (a, b) = (ctx.upload("a", &[1.0f32; 6]).unwrap(), ctx.upload("b", &[2.0f32; 10]).unwrap());
    let c = clone.storage("c", 15).unwrap();
    let first = matmul(&ctx, &shape, &a, &b, &c, Tiles::default()).unwrap();
    let built = ctx.cached_pipelines();
    assert!(built >= 1);
    assert_eq!(clone.cached_pipelines(), built, "the clone does not see the pipeline built through the original");
    let second = matmul(&clone, &shape, &a, &b, &c, Tiles::default()).unwrap();
    assert_eq!(ctx.cached_pipelines(), built, "the clone compiled the same pipeline again");
    // Work recorded through either handle runs in one submit on the one device.
    assert_eq!(clone.run_and_read(&[&first, &second], &c, 15).unwrap(), vec![4.0f32; 15]);
}
