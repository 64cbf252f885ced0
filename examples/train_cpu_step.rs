//! Time of one CPU training step of the convnet on random images.
//!
//! cargo run --release --example train_cpu_step -- [HEIGHT WIDTH CHANNELS] [STEPS]
//! Defaults: 28 28 1 (Fashion-MNIST's size), 200 steps. 10 classes of 100 random u8 images,
//! the recipe's net (widths 32/64/128, dim 8), batch 20. Prints ms per step (median and
//! mean after 10 warm-up steps), FLOPs per step and GFLOP/s.

use std::path::Path;
use std::time::Instant;

use lookalike::data::LabelledImages;
use lookalike::model::convnet::{ConvNet, ConvNetSpec};
use lookalike::train::cpu::{step_flops, CpuTrainer};
use lookalike::train::TrainConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (size, steps) = match args.as_slice() {
        [] => ((28, 28, 1), 200),
        [steps] => ((28, 28, 1), *steps),
        [h, w, c] => ((*h, *w, *c), 200),
        [h, w, c, steps, ..] => ((*h, *w, *c), *steps),
        _ => return Err("usage: train_cpu_step [HEIGHT WIDTH CHANNELS] [STEPS]".into()),
    };
    let (classes, per_class) = (10, 100);
    let spec = ConvNetSpec::recipe(size.0, size.1, size.2);
    let count = classes * per_class;
    let images = LabelledImages::random(classes, count / classes, spec.height, spec.width, spec.channels, 1);
    let data = images.grouped_by_class(Path::new("random images"))?;
    let mut trainer = CpuTrainer::new(ConvNet::glorot(spec, 1)?, data, TrainConfig::default())?;
    for _ in 0..10 {
        trainer.step();
    }
    let mut times = Vec::with_capacity(steps);
    let mut loss = 0.0;
    for _ in 0..steps {
        let start = Instant::now();
        loss = trainer.step();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mean = times.iter().sum::<f64>() / steps as f64;
    times.sort_by(f64::total_cmp);
    let median = times[steps / 2];
    let flops = step_flops(&spec, classes);
    println!(
        "{}x{}x{}, batch {}, {} threads: {median:.2} ms/step median, {mean:.2} mean, min {:.2}; \
         {:.1} MFLOP/step, {:.1} GFLOP/s at the median; last loss {loss:.4}",
        size.0,
        size.1,
        size.2,
        2 * classes,
        rayon::current_num_threads(),
        times[0],
        flops / 1e6,
        flops / median / 1e6,
    );
    Ok(())
}
