//! `lookalike bench`: what users compare across cards. GPU beside the CPU reference, every
//! figure labelled with what it counts, every GPU result checked against the CPU's.
//!
//! One step per file, in the order they run: [`resnet`] (images/s), [`matmul`] (GFLOP/s),
//! [`knn`] (the scan in GB/s), [`stages`] (where one query's time goes) and [`train`]
//! (metric-learning steps/s); [`checks`] holds the GPU results to the CPU's.

mod checks;
mod knn;
mod matmul;
mod resnet;
mod stages;
mod train;

use std::time::Instant;

use lookalike::gpu::known::gpu_spec;
use lookalike::model::{BatchNormMode, GpuResNet50, RandomResNet50, ResNet50, MIN_INPUT};
use lookalike::ops::Tuning;
use lookalike::rng::Rng;
use lookalike::tune::TuningSource;
use lookalike::{Context, Error, Result};
use serde_json::json;

use checks::Checks;

/// Options of `lookalike bench`.
pub struct BenchOptions {
    pub quick: bool,
    pub json: bool,
    /// Scan sizes; empty: 100k, plus 1M where it fits.
    pub knn_rows: Vec<usize>,
    /// Input side of the ResNet50 figures (224 unless asked).
    pub resolution: usize,
    pub peak_tflops: Option<f64>,
    pub peak_gbps: Option<f64>,
    /// Also time `matmul_coop` where the adapter has matrix units.
    pub experimental_coop: bool,
}

/// What every step shares: the options, the device, the card's peaks, and what the checks
/// and the matrix units have found so far.
struct Bench<'a> {
    o: &'a BenchOptions,
    ctx: Context,
    /// The launch shapes every step dispatches with, and where they came from.
    tuning: Tuning,
    tuning_source: TuningSource,
    /// fp32 TFLOP/s and memory GB/s the figures are set against: given, else the card's known
    /// specification.
    peak_tflops: Option<f64>,
    peak_gbps: Option<f64>,
    /// Every GPU result timed, against the CPU's result of the same run.
    checks: Checks,
    /// Failures on the matrix units (an experimental feature): reported, and the rest still
    /// measured.
    coop_errors: Vec<String>,
}

impl Bench<'_> {
    fn say(&self, line: String) {
        say(self.o, line);
    }

    /// " (x% of P TFLOP/s)" where the peak is known.
    fn of_peak(&self, gflops: f64) -> String {
        self.peak_tflops.map(|p| format!(" ({:.1}% of {p} TFLOP/s)", 100.0 * gflops / (p * 1e3))).unwrap_or_default()
    }

    /// " (x% of P GB/s)" where the bandwidth is known.
    fn of_bw(&self, gbps: f64) -> String {
        self.peak_gbps.map(|p| format!(" ({:.1}% of {p} GB/s)", 100.0 * gbps / p)).unwrap_or_default()
    }
}

/// Median seconds of `reps` runs after one warm-up.
fn median_secs(reps: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    run()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn say(o: &BenchOptions, line: String) {
    if !o.json {
        println!("{line}");
    }
}

pub fn run(o: BenchOptions) -> Result<()> {
    let (ctx, tuning, tuning_source, net, mut gpu_net, cold_start_ms) = cold_start(o.resolution, o.experimental_coop)?;
    let info = ctx.adapter_info().clone();
    let size = o.resolution;
    let known = gpu_spec(&info.name);
    let mut b = Bench {
        o: &o,
        ctx,
        tuning,
        tuning_source,
        peak_tflops: o.peak_tflops.or(known.map(|spec| spec.fp32_tflops)),
        peak_gbps: o.peak_gbps.or(known.map(|spec| spec.memory_gbps)),
        checks: Checks::default(),
        coop_errors: Vec::new(),
    };
    b.say(format!(
        "adapter: {} ({:?}, {:?}, driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    ));
    b.say(format!(
        "cold start (context, weights upload, pipelines, first {size}x{size} forward): {cold_start_ms:.0} ms"
    ));
    // Why --experimental-coop measures nothing on the units, if it does not.
    let coop_skipped =
        o.experimental_coop.then(|| b.ctx.cooperative_matrix_unavailable().map(str::to_string)).flatten();
    if let Some(why) = &coop_skipped {
        b.say(format!("matrix units skipped: {why}"));
    }

    let resnet = resnet::figures(&mut b, &net, &mut gpu_net)?;
    // One generator draws the matmul's operands, then the scans' rows and queries.
    let mut rng = Rng::new(2);
    let matmuls = matmul::figures(&mut b, &mut rng)?;
    let knn = knn::figures(&mut b, &mut rng)?;
    b.say(format!("launch shapes: {:?} ({})", b.tuning, b.tuning_source));
    let stages = stages::figures(&mut b, &mut gpu_net, knn.sizes[0])?;
    let training = train::training(&b.ctx, o.quick, &mut b.checks, &|line| say(&o, line))?;

    if o.json {
        let out = json!({
            "adapter": {"name": info.name, "backend": format!("{:?}", info.backend), "device_type": format!("{:?}", info.device_type), "driver": info.driver, "driver_info": info.driver_info},
            "cold_start_ms": cold_start_ms,
            "resnet50": resnet,
            "matmul": matmuls,
            "coop_skipped": coop_skipped,
            "coop_errors": b.coop_errors,
            "knn": knn.rows,
            "knn_skipped": knn.skipped,
            "stages_ms": stages.stages_ms(),
            "stages_method": stages.method,
            "topk_k100_ms": stages.topk_k100_ms,
            "topk_k100_parts_ms": stages.topk_k100_parts_ms(),
            "tuning": {"chosen": b.tuning, "source": b.tuning_source.to_string()},
            "peak": {"tflops_fp32": b.peak_tflops, "gb_per_s": b.peak_gbps},
            "training": training,
            "checks": b.checks.to_json(),
        });
        println!("{out}");
    }
    if !b.checks.passed() {
        return Err(Error::Gpu {
            context: "bench".into(),
            message: format!("GPU results differ from the CPU reference:\n  {}", b.checks.failures().join("\n  ")),
        });
    }
    b.say("checks: every f32 GPU result above matches the CPU reference's".into());
    Ok(())
}

/// Opens the device and runs the first forward at `size`: the cold start a user waits
/// through, in milliseconds, with the launch shapes and the seeded network it ran.
#[allow(clippy::type_complexity)]
fn cold_start(
    size: usize, experimental_coop: bool,
) -> Result<(Context, Tuning, TuningSource, ResNet50, GpuResNet50, f64)> {
    let cold = Instant::now();
    let ctx = crate::open_context(experimental_coop)?;
    let (tuning, tuning_source) = lookalike::tune::load_for(&ctx);
    let net = RandomResNet50::generate(0)?.net;
    if size < MIN_INPUT {
        return Err(Error::InputTooSmall {
            height: size,
            width: size,
            min: MIN_INPUT,
            what: "bench --resolution".into(),
        });
    }
    let mut gpu_net = GpuResNet50::new(&ctx, &net, BatchNormMode::Folded)?.with_tuning(tuning);
    let one = Rng::new(1).normals(size * size * 3, 1.0);
    gpu_net.forward(&ctx, &one, 1, size, size)?;
    Ok((ctx, tuning, tuning_source, net, gpu_net, cold.elapsed().as_secs_f64() * 1e3))
}
