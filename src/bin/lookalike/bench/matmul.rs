//! The 1024^3 matmul in GFLOP/s: the GPU beside the CPU reference, and on the matrix units
//! where the adapter has them.

use lookalike::compare::relative_l2;
use lookalike::cpu;
use lookalike::gpu::CooperativeMatrix;
use lookalike::ops::coop::{round_to_f16, CoopTiles};
use lookalike::ops::matmul::{matmul, MatmulShape, Precision};
use lookalike::ops::matmul_coop::matmul_coop_with;
use lookalike::rng::Rng;
use lookalike::{Context, Result};
use serde_json::{json, Value};

use super::{median_secs, say, Bench, BenchOptions};

/// One row per device (plus one per matrix-unit layout), the GPU's product checked against
/// the CPU's.
pub(super) fn figures(b: &mut Bench, rng: &mut Rng) -> Result<Vec<Value>> {
    let n = 1024;
    let shape = MatmulShape { m: n, n, k: n, b_transposed: false };
    let (a, bm) = (rng.normals(n * n, 1.0), rng.normals(n * n, 1.0));
    let ctx = &b.ctx;
    let (ab, bb, cb) = (ctx.upload("a", &a)?, ctx.upload("b", &bm)?, ctx.storage("c", n * n)?);
    let d = matmul(ctx, &shape, &ab, &bb, &cb, b.tuning.gemm_tiles(n, n))?;
    let gpu_secs = median_secs(if ctx.is_cpu() { 2 } else { 10 }, || ctx.run(&[&d]))?;
    let gpu_product = ctx.read(&cb, n * n)?;
    let mut cpu_product = Vec::new();
    let cpu_secs = median_secs(3, || {
        cpu_product = cpu::matmul(&shape, &a, &bm)?;
        Ok(())
    })?;
    let vs_cpu = b.checks.dense("matmul 1024^3", &gpu_product, &cpu_product);
    let mut rows = Vec::new();
    for (device, secs) in [("gpu", gpu_secs), ("cpu", cpu_secs)] {
        let gflops = shape.flops() / secs / 1e9;
        let gpu = device == "gpu";
        let check = if gpu { format!("; {vs_cpu:.1e} relative L2 from the CPU's product") } else { String::new() };
        b.say(format!("matmul 1024^3 {device}: {gflops:8.1} GFLOP/s{check}"));
        let kernel = if gpu { "fma-f32" } else { "cpu-f32" };
        let mut row = json!({"device": device, "kernel": kernel, "m": n, "n": n, "k": n, "gflop_per_s": gflops});
        if gpu {
            row["rel_l2_vs_cpu"] = json!(vs_cpu);
        }
        rows.push(row);
    }
    if let Some(units) = b.ctx.cooperative_matrix() {
        match matmul_coop_rows(b.o, &b.ctx, units, &shape, (&a, &bm), (&ab, &bb, &cb)) {
            Ok(coop) => rows.extend(coop),
            Err(e) => {
                b.say(format!("matmul on matrix units failed: {e}"));
                b.coop_errors.push(format!("matmul: {e}"));
            }
        }
    }
    Ok(rows)
}

/// `matmul_coop` on the bench's matmul in a few workgroup layouts, each timed and checked
/// against the CPU product (on a new card the first run is also the first test there).
fn matmul_coop_rows(
    o: &BenchOptions, ctx: &Context, units: CooperativeMatrix, shape: &MatmulShape, (a, b): (&[f32], &[f32]),
    (ab, bb, cb): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
) -> Result<Vec<Value>> {
    let exact = cpu::matmul(shape, a, b)?;
    let rounded = cpu::matmul(shape, &round_to_f16(a), &round_to_f16(b))?;
    let mut rows = Vec::new();
    for tiles in CoopTiles::candidates(units) {
        let CoopTiles { sg_rows, sg_cols, tile_k } = tiles;
        let d = match matmul_coop_with(ctx, shape, ab, bb, Precision::F32, cb, tiles) {
            Ok(d) => d,
            Err(e) => {
                say(o, format!("matmul on matrix units, {tiles:?}: skipped: {e}"));
                continue;
            }
        };
        let gflops = shape.flops() / median_secs(if ctx.is_cpu() { 2 } else { 10 }, || ctx.run(&[&d]))? / 1e9;
        let got = ctx.run_and_read(&[&d], cb, shape.m * shape.n)?;
        let (vs_rounded, vs_f32) = (relative_l2(&got, &rounded), relative_l2(&got, &exact));
        say(o, format!("matmul {}x{}x{} gpu, matrix units ({units}), {tiles:?}: {gflops:8.1} GFLOP/s; relative L2 {vs_rounded:.1e} from the CPU product of the f16-rounded inputs, {vs_f32:.1e} from the f32 one", shape.m, shape.n, shape.k));
        rows.push(json!({"device": "gpu", "kernel": "coop-f16", "units": units.to_string(), "tiles": {"sg_rows": sg_rows, "sg_cols": sg_cols, "tile_k": tile_k},
            "m": shape.m, "n": shape.n, "k": shape.k, "gflop_per_s": gflops, "rel_l2_vs_f16_inputs": vs_rounded, "rel_l2_vs_f32": vs_f32}));
    }
    Ok(rows)
}
