//! ResNet50 images/s at the bench's resolution: the GPU beside the CPU reference, and with
//! `--experimental-coop` the same network on the matrix units.

use lookalike::compare::relative_l2;
use lookalike::embed::Embedder;
use lookalike::model::resnet50::ShapeWalk;
use lookalike::model::{BatchNormMode, GpuResNet50, ResNet50};
use lookalike::npy::NhwcBatch;
use lookalike::ops::coop::CoopTiles;
use lookalike::rng::Rng;
use lookalike::Result;
use serde_json::{json, Value};

use super::{median_secs, Bench};

/// One row per batch size and device (plus one per matrix-unit layout), each GPU result
/// checked against the CPU's features of the same images.
pub(super) fn figures(b: &mut Bench, net: &ResNet50, gpu_net: &mut GpuResNet50) -> Result<Vec<Value>> {
    let size = b.o.resolution;
    let flops_per_image = ShapeWalk::resnet50(size, size).flops;
    let batches: &[usize] = if b.o.quick { &[1, 8] } else { &[1, 8, 32] };
    let mut cpu_embedder = Embedder::cpu(net)?;
    // With --experimental-coop, the same network with its convolutions on the matrix units,
    // in the default workgroup layout and in 4x4 subgroups (half the staging per product).
    let mut coop_nets: Vec<(CoopTiles, GpuResNet50)> = Vec::new();
    if let Some(units) = b.ctx.cooperative_matrix() {
        for tiles in [CoopTiles::default_for(units), CoopTiles::four_by_four(units)] {
            coop_nets.push((
                tiles,
                GpuResNet50::new(&b.ctx, net, BatchNormMode::Folded)?.on_matrix_units_with(&b.ctx, tiles)?,
            ));
        }
    }
    let mut rows = Vec::new();
    for &batch in batches {
        let data = Rng::new(batch as u64).normals(batch * size * size * 3, 1.0);
        let images = NhwcBatch { batch, height: size, width: size, data };
        rows.extend(gpu_and_cpu(b, gpu_net, &mut cpu_embedder, &images, flops_per_image)?);
        let mut failed = Vec::new();
        for (at, (tiles, net_on_units)) in coop_nets.iter_mut().enumerate() {
            match on_matrix_units(b, net_on_units, *tiles, gpu_net, &images, flops_per_image) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    b.say(format!("resnet50 {size} batch {batch:>2} gpu, matrix units, {tiles:?}: failed: {e}"));
                    b.coop_errors.push(format!("resnet50 batch {batch} {tiles:?}: {e}"));
                    failed.push(at);
                }
            }
        }
        // A layout that failed once is not timed again at larger batches.
        for at in failed.into_iter().rev() {
            coop_nets.remove(at);
        }
    }
    Ok(rows)
}

/// The f32 GPU forward and the CPU reference on the same images, timed, the GPU's features
/// checked against the CPU's.
fn gpu_and_cpu(
    b: &mut Bench, gpu_net: &mut GpuResNet50, cpu_embedder: &mut Embedder, images: &NhwcBatch, flops_per_image: f64,
) -> Result<Vec<Value>> {
    let (batch, size) = (images.batch, images.height);
    let reps = if b.ctx.is_cpu() { 1 } else { 5 };
    // Each side's features of its last timed run, for the check.
    let (mut gpu_features, mut cpu_features) = (Vec::new(), Vec::new());
    let gpu_secs = median_secs(reps, || {
        gpu_features = gpu_net.forward(&b.ctx, &images.data, batch, size, size)?;
        Ok(())
    })?;
    let cpu_secs = median_secs(3, || {
        cpu_features = cpu_embedder.embed(images)?;
        Ok(())
    })?;
    let vs_cpu = b.checks.dense(&format!("resnet50 batch {batch} features"), &gpu_features, &cpu_features);
    let mut rows = Vec::new();
    for (device, secs) in [("gpu", gpu_secs), ("cpu", cpu_secs)] {
        let gflops = flops_per_image * batch as f64 / secs / 1e9;
        let img_s = batch as f64 / secs;
        let gpu = device == "gpu";
        b.say(format!(
            "resnet50 {size} batch {batch:>2} {device}: {img_s:8.1} img/s {gflops:8.1} GFLOP/s{}",
            if gpu {
                b.of_peak(gflops) + &format!("; features {vs_cpu:.1e} relative L2 from the CPU's")
            } else {
                String::new()
            }
        ));
        let kernel = if gpu { "fma-f32" } else { "cpu-f32" };
        let mut row = json!({"device": device, "kernel": kernel, "batch": batch, "resolution": size, "img_per_s": img_s, "gflop_per_s": gflops});
        if gpu {
            row["rel_l2_vs_cpu"] = json!(vs_cpu);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The network on the matrix units in one workgroup layout, timed, its features against the
/// f32 GPU path's on the same images: what the f16 rounding costs.
fn on_matrix_units(
    b: &Bench, net_on_units: &mut GpuResNet50, tiles: CoopTiles, gpu_net: &mut GpuResNet50, images: &NhwcBatch,
    flops_per_image: f64,
) -> Result<Value> {
    let (batch, size) = (images.batch, images.height);
    let reps = if b.ctx.is_cpu() { 1 } else { 5 };
    let secs = median_secs(reps, || net_on_units.forward(&b.ctx, &images.data, batch, size, size).map(|_| ()))?;
    let (gflops, img_s) = (flops_per_image * batch as f64 / secs / 1e9, batch as f64 / secs);
    let vs_f32 = relative_l2(
        &net_on_units.forward(&b.ctx, &images.data, batch, size, size)?,
        &gpu_net.forward(&b.ctx, &images.data, batch, size, size)?,
    );
    b.say(format!("resnet50 {size} batch {batch:>2} gpu, matrix units, {tiles:?}: {img_s:8.1} img/s {gflops:8.1} GFLOP/s; features {vs_f32:.1e} relative L2 from the f32 path"));
    let layout = json!({"sg_rows": tiles.sg_rows, "sg_cols": tiles.sg_cols, "tile_k": tiles.tile_k});
    Ok(
        json!({"device": "gpu", "kernel": "coop-f16", "tiles": layout, "batch": batch, "resolution": size, "img_per_s": img_s, "gflop_per_s": gflops, "rel_l2_vs_f32": vs_f32}),
    )
}
