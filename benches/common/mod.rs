//! What the benches share: the adapter, and GPU timing around submit + wait.

use std::time::{Duration, Instant};

use lookalike::gpu::Dispatch;
use lookalike::Context;

pub fn context() -> Context {
    Context::new().unwrap_or_else(|e| panic!("benchmarks need a GPU adapter: {e}"))
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
