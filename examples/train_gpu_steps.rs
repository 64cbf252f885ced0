//! Steps per second of the convnet's GPU training step beside the CPU trainer's, and each
//! launch's share of one GPU step (GPU timestamps, where the adapter has them), on synthetic
//! class-grouped sets.
//!
//! cargo run --release --example train_gpu_steps -- [STEPS_PER_RUN] [RUNS]
//! (default 100 steps per run, 3 runs, after one warm-up run)

use std::path::Path;
use std::time::Instant;

use lookalike::data::LabelledImages;
use lookalike::train::cpu::CpuTrainer;
use lookalike::train::gpu::GpuTrainer;
use lookalike::train::{ConvNet, ConvNetSpec, TrainConfig};
use lookalike::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let steps = args.first().copied().unwrap_or(100);
    let runs = args.get(1).copied().unwrap_or(3);
    let ctx = Context::new()?;
    println!("adapter: {} ({:?})", ctx.adapter_info().name, ctx.adapter_info().backend);
    for (h, w, c) in [(28, 28, 1), (32, 32, 3)] {
        let spec = ConvNetSpec::recipe(h, w, c);
        // 10 classes of 100 random images: the sampler and gather see a real set's layout.
        let count = 1000;
        let images = LabelledImages::random(10, count / 10, h, w, c, 1);
        let data = images.grouped_by_class(Path::new("synthetic"))?;
        let config = TrainConfig { steps_per_epoch: steps, ..TrainConfig::default() };
        let net = ConvNet::glorot(spec, 0)?;
        let mut cpu = CpuTrainer::new(net.clone(), data.clone(), config)?;
        let start = Instant::now();
        let cpu_steps = 100;
        let cpu_loss: f32 = (0..cpu_steps).map(|_| cpu.step()).sum();
        assert!(cpu_loss.is_finite(), "a CPU loss came out non-finite");
        let cpu_rate = cpu_steps as f64 / start.elapsed().as_secs_f64();
        let mut trainer = GpuTrainer::new(ctx.clone(), net, &data, config)?;
        trainer.run(steps)?;
        let mut rates = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let losses = trainer.run(steps)?;
            rates.push(steps as f64 / start.elapsed().as_secs_f64());
            assert!(losses.iter().all(|l| l.is_finite()), "a loss came out non-finite");
        }
        rates.sort_by(f64::total_cmp);
        let flops = 3.0 * 20.0 * spec.forward_flops();
        let median = rates[rates.len() / 2];
        println!(
            "{h}x{w}x{c}, C 10, widths 32/64/128, dim 8: {median:.1} steps/s (runs of {steps}: {rates:.1?}), \
             {} launches/step, {:.1} GFLOP/s (3x forward FLOPs); CPU trainer {cpu_rate:.1} steps/s",
            trainer.launches_per_step(),
            median * flops / 1e9
        );
        // Each launch's GPU time, in step order, averaged over a few profiled steps.
        let mut launches: Vec<(&str, f64)> = Vec::new();
        for _ in 0..5 {
            let Some(times) = trainer.profile_step()? else { break };
            launches.resize(times.len(), ("", 0.0));
            for (slot, (name, ms)) in launches.iter_mut().zip(times) {
                *slot = (name, slot.1 + ms / 5.0);
            }
        }
        let total: f64 = launches.iter().map(|l| l.1).sum();
        for (name, ms) in &launches {
            println!("  {name:26} {ms:7.3} ms  {:5.1}%", 100.0 * ms / total);
        }
        println!("  {:26} {total:7.3} ms", "sum");
    }
    Ok(())
}
