//! `lookalike bench`'s metric-learning figures: training steps/s of the GPU trainer and of
//! the CPU twin at the recipe's batch (10 classes: 20 images a step) for 28x28x1 and
//! 32x32x3, the trained net's embedding img/s, and a check that 10 GPU steps give the CPU
//! twin's weights.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use lookalike::data::{ClassGrouped, LabelledImages};
use lookalike::model::GpuConvNet;
use lookalike::rng::Rng;
use lookalike::train::cpu::{step_flops, CpuTrainer};
use lookalike::train::gpu::GpuTrainer;
use lookalike::train::{ConvNet, ConvNetSpec, TrainConfig};
use lookalike::{Context, Result};

use crate::bench_checks::Checks;

const CLASSES: usize = 10;

/// 10 classes of 100 seeded random images: the sampler and gather see a real set's layout.
fn synthetic(spec: &ConvNetSpec) -> Result<ClassGrouped> {
    let images = LabelledImages::random(CLASSES, 100, spec.height, spec.width, spec.channels, 1);
    images.grouped_by_class(Path::new("synthetic"))
}

/// Steps/s of `steps` steps after a warm-up run, per twin; embedding img/s; the 10-step check.
pub fn training(ctx: &Context, quick: bool, checks: &mut Checks, say: &dyn Fn(String)) -> Result<Vec<Value>> {
    let gpu_steps = match (ctx.is_cpu(), quick) {
        (true, true) => 20,
        (true, false) => 60,
        (false, true) => 500,
        (false, false) => 2000,
    };
    let mut rows = Vec::new();
    for (h, w, c) in [(28, 28, 1), (32, 32, 3)] {
        let spec = ConvNetSpec::recipe(h, w, c);
        let data = synthetic(&spec)?;
        let net = ConvNet::glorot(spec, 0)?;
        let config = TrainConfig::default();
        let gflop = step_flops(&spec, CLASSES) / 1e9;

        let mut gpu = GpuTrainer::new(ctx.clone(), net.clone(), &data, config)?.with_tuning(crate::tuning(ctx))?;
        gpu.run(10)?;
        let mut cpu = CpuTrainer::new(net.clone(), data.clone(), config)?;
        (0..10).for_each(|_| {
            cpu.step();
        });
        checks.dense(
            &format!("convnet {h}x{w}x{c} weights after 10 training steps"),
            &gpu.net()?.params,
            &cpu.net().params,
        );

        let start = Instant::now();
        gpu.run(gpu_steps)?;
        let gpu_rate = gpu_steps as f64 / start.elapsed().as_secs_f64();
        let cpu_steps = 500;
        let start = Instant::now();
        (0..cpu_steps).for_each(|_| {
            cpu.step();
        });
        let cpu_rate = cpu_steps as f64 / start.elapsed().as_secs_f64();

        let batch = if ctx.is_cpu() { 256 } else { 4096 };
        let trained = gpu.net()?;
        let mut embedder = GpuConvNet::new(ctx, &trained)?;
        let mut rng = Rng::new(2);
        let rgb: Vec<f32> = (0..batch * h * w * 3).map(|_| rng.int(0, 255) as f32 / 255.0).collect();
        embedder.forward(ctx, &rgb, batch, h, w)?;
        let start = Instant::now();
        embedder.forward(ctx, &rgb, batch, h, w)?;
        let embed_rate = batch as f64 / start.elapsed().as_secs_f64();
        let gray: Vec<f32> = (0..batch * spec.input_len()).map(|_| rng.int(0, 255) as f32 / 255.0).collect();
        let start = Instant::now();
        lookalike::model::convnet_cpu::embed(&trained, &gray, batch)?;
        let cpu_embed_rate = batch as f64 / start.elapsed().as_secs_f64();

        say(format!(
            "metric learning {h}x{w}x{c}, {} images a step ({:.0} MFLOP): GPU {gpu_rate:.1} steps/s ({:.1} GFLOP/s), CPU twin {cpu_rate:.1} steps/s ({:.1} GFLOP/s); trained net embeds {embed_rate:.0} img/s on the GPU, {cpu_embed_rate:.0} on the CPU",
            2 * CLASSES,
            gflop * 1e3,
            gpu_rate * gflop,
            cpu_rate * gflop
        ));
        rows.push(json!({"input": [h, w, c], "images_per_step": 2 * CLASSES, "gflop_per_step": gflop,
            "gpu_steps_per_s": gpu_rate, "gpu_steps_timed": gpu_steps, "cpu_steps_per_s": cpu_rate,
            "gpu_embed_img_per_s": embed_rate, "cpu_embed_img_per_s": cpu_embed_rate, "embed_batch": batch}));
    }
    Ok(rows)
}
