//! What the benches share: the adapter, and GPU timing around submit + wait.

use std::time::{Duration, Instant};

use lookalike::gpu::{ContextBuilder, Dispatch};
use lookalike::ops::Tuning;
use lookalike::Context;

/// The adapter `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` choose; with `LOOKALIKE_BENCH_COOP=1`
/// also its matrix units, for the `gpu_coop` rows (wgpu's experimental cooperative
/// matrices).
pub fn context() -> Context {
    let builder = ContextBuilder::from_env();
    let built = match std::env::var("LOOKALIKE_BENCH_COOP").is_ok_and(|v| v == "1") {
        // SAFETY: asked for by the person running the benchmarks, who accepts wgpu's
        // experimental-feature risk.
        true => unsafe { builder.experimental_cooperative_matrices() }.build(),
        false => builder.build(),
    };
    built.unwrap_or_else(|e| panic!("benchmarks need a GPU adapter: {e}"))
}

/// The built-in launch shapes for `ctx`'s adapter (an autotune cache is never read here).
#[allow(dead_code)] // each bench binary compiles this module; not all of them dispatch tuned kernels
pub fn tuning(ctx: &Context) -> Tuning {
    Tuning::for_adapter(ctx.adapter_info())
}

/// Wall time of `iters` submits of `dispatches`, each waited for (criterion's `iter_custom`).
#[allow(dead_code)] // each bench binary compiles this module; not all of them time dispatches
pub fn timed(ctx: &Context, dispatches: &[&Dispatch], iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        ctx.run(dispatches).unwrap();
    }
    start.elapsed()
}
