//! Where one query's time goes: preprocess, convolutions, pools, normalise, score and top-k
//! of one image against one chunk of reference rows, and the top-100 beside the top-10.

use lookalike::cpu;
use lookalike::cpu::preprocess::Preprocess;
use lookalike::gpu::Stage;
use lookalike::model::{GpuResNet50, FEATURE_DIM};
use lookalike::ops::gemv;
use lookalike::ops::l2_normalize::l2_normalize;
use lookalike::ops::matmul::{MatmulShape, Precision};
use lookalike::ops::preprocess::PreprocessBatch;
use lookalike::ops::topk::{TopK, TopKInput, TopKOutput};
use lookalike::ops::Tuning;
use lookalike::rng::Rng;
use lookalike::{Context, Result};
use serde_json::{json, Map, Value};

use super::checks::Checks;
use super::{median_secs, Bench};

/// The stage breakdown of one query, and the top-100 timed beside it.
pub(super) struct StageFigures {
    /// Milliseconds per stage, in the order the query runs them.
    pub stages: Vec<(&'static str, f64)>,
    /// How they were timed.
    pub method: &'static str,
    /// The top-100 of the same scores, whole and by step.
    pub topk_k100_ms: Option<f64>,
    pub topk_k100_parts: Vec<(&'static str, f64)>,
}

impl StageFigures {
    pub fn stages_ms(&self) -> Map<String, Value> {
        self.stages.iter().map(|(s, ms)| (s.to_string(), json!(ms))).collect()
    }

    pub fn topk_k100_parts_ms(&self) -> Map<String, Value> {
        self.topk_k100_parts.iter().map(|(key, ms)| (key.to_string(), json!(ms))).collect()
    }
}

/// Times the stages of one query against `rows` reference rows (one chunk of them), prints
/// them, then the top-k's share of the score and the top-100's steps.
pub(super) fn figures(b: &mut Bench, gpu_net: &mut GpuResNet50, rows: usize) -> Result<StageFigures> {
    let size = b.o.resolution;
    let refs = Rng::normals_parallel(3, rows * FEATURE_DIM);
    let (mut stages, method) = stage_times(&b.ctx, gpu_net, &b.tuning, size, &refs, rows, &mut b.checks)?;
    // Timed beside the stages but not among them: the top-100 instead of the top-10, whole
    // and by step.
    let mut take = |name: &str| stages.iter().position(|(s, _)| *s == name).map(|at| stages.remove(at).1);
    let topk_k100_ms = take(TOPK_K100);
    let topk_k100_parts: Vec<(&str, f64)> =
        TOPK_K100_STEPS.iter().filter_map(|&step| take(step).map(|ms| (step, ms))).collect();
    b.say(format!(
        "stages of one {size}x{size} query ({method}): {}",
        stages.iter().map(|(s, ms)| format!("{s} {ms:.2} ms")).collect::<Vec<_>>().join(", ")
    ));
    let stage = |name: &str| stages.iter().find(|(s, _)| *s == name).map(|(_, ms)| *ms);
    if let (Some(score), Some(k10), Some(k100)) = (stage("score"), stage("topk"), topk_k100_ms) {
        b.say(format!(
            "top-k after the score of one chunk: k 10 {:.1}%, k 100 {:.1}% of its time",
            100.0 * k10 / score,
            100.0 * k100 / score
        ));
    }
    b.say(format!(
        "top-100 by step: {}",
        topk_k100_parts
            .iter()
            .map(|(key, ms)| format!("{} {ms:.3} ms", key.replace('_', " ")))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(StageFigures { stages, method, topk_k100_ms, topk_k100_parts })
}

/// The extra entry [`stage_times`] returns: the top-100 of the same scores.
const TOPK_K100: &str = "topk_k100";
/// The top-100's steps ([`TopK::steps`]), also timed alone under their own names; the
/// prefilter's two run only on long rows.
const TOPK_K100_STEPS: [&str; 3] = ["chunk_max", "floor", "passes"];

/// How [`stage_times`] measured.
const STAGES_BY_TIMESTAMPS: &str = "timestamp queries: GPU time between the start and end of each stage's compute passes, all in one submit, median of several runs";
const STAGES_BY_WALL_CLOCK: &str = "no timestamp queries on this adapter: each stage submitted alone and timed by wall clock (includes submit overhead)";

/// The stages of one `size`x`size` query from a 640x480 photo: preprocess, conv, pool,
/// normalise, score, top-k (the backbone's convolutions and pools summed over its layers),
/// then [`TOPK_K100`] and its [`TOPK_K100_STEPS`], and how they were timed.
fn stage_times(
    ctx: &Context, net: &mut GpuResNet50, tuning: &Tuning, size: usize, refs: &[f32], rows: usize, checks: &mut Checks,
) -> Result<(Vec<(&'static str, f64)>, &'static str)> {
    let image = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let (input, features, backbone) = net.prepared(ctx, 1, size, size)?;
    // The ImageNet transform scaled to the crop: resize 256 for crop 224.
    let crop = size as u32;
    let preprocess = Preprocess { resize: crop * 256 / 224, crop, ..Default::default() };
    let prepare = PreprocessBatch::new(ctx, &[image], &preprocess, input)?;
    // One storage binding's worth of reference rows is what one score dispatch reads.
    let chunk = rows.min(ctx.max_binding_bytes() as usize / (4 * FEATURE_DIM)).max(1);
    let refs_buf = ctx.upload("refs", &refs[..chunk * FEATURE_DIM])?;
    let unit = ctx.storage("query", FEATURE_DIM)?;
    let scores = ctx.storage("scores", chunk)?;
    // Top-k of the one score row into k-long buffers of its own.
    let top_k = |k: usize| -> Result<(TopK, wgpu::Buffer, wgpu::Buffer)> {
        let (top_s, top_i) = (ctx.storage("top scores", k)?, ctx.storage("top ids", k)?);
        let input = TopKInput::Scores { scores: &scores, index_base: 0 };
        let output = TopKOutput::dense(&top_s, &top_i, k);
        Ok((TopK::new(ctx, input, 1, chunk, k, &output, tuning.topk_workgroup)?, top_s, top_i))
    };
    let normalise = l2_normalize(ctx, 1, FEATURE_DIM, features, None, &unit)?;
    // The score kernel search uses for one query.
    let shape = MatmulShape { m: 1, n: chunk, k: FEATURE_DIM, b_transposed: true };
    let score = gemv::scores(ctx, &shape, &unit, &refs_buf, Precision::F32, &scores, tuning)?;
    let (select, top_s, top_i) = top_k(10)?;

    let mut stages: Vec<Stage> = vec![("preprocess", prepare.dispatches().iter().collect())];
    for d in backbone {
        let stage = match d.label() {
            "conv2d" => "conv",
            "max_pool" | "global_avg_pool" => "pool",
            other => other,
        };
        stages.push((stage, vec![d]));
    }
    stages.push(("normalise", vec![&normalise]));
    stages.push(("score", vec![&score]));
    stages.push(("topk", select.dispatches().iter().collect()));
    let (select100, top100_s, top100_i) = top_k(100)?;
    stages.push((TOPK_K100, select100.dispatches().iter().collect()));
    for (step, dispatches) in select100.steps() {
        stages.push((step, dispatches.iter().collect()));
    }

    let (totals, method) = time_stages(ctx, &stages)?;
    // The last run's top-10 and top-100 against the CPU twin's on the same scores.
    let chunk_scores = ctx.read(&scores, chunk)?;
    for (k, (s, i)) in [(10, (&top_s, &top_i)), (100, (&top100_s, &top100_i))] {
        let (want_s, want_i) = cpu::topk::topk(&chunk_scores, 1, chunk, k)?;
        let (got_s, got_i) = (ctx.read(s, k)?, ctx.read_u32(i, k)?);
        checks.top_k(&format!("top-{k} of {chunk} scores"), (&got_s, &got_i), (&want_s, &want_i));
    }
    Ok((totals, method))
}

/// Each stage's milliseconds (stages of one name summed), the median of several runs, and
/// how they were measured: by timestamp queries where the adapter has them, else by wall
/// clock one stage at a time.
fn time_stages(ctx: &Context, stages: &[Stage]) -> Result<(Vec<(&'static str, f64)>, &'static str)> {
    let reps = if ctx.is_cpu() { 3 } else { 11 };
    let (runs, method) = if ctx.has_timestamps() {
        let mut runs = Vec::new();
        ctx.stage_times(stages)?; // warm-up
        for _ in 0..reps {
            runs.push(ctx.stage_times(stages)?.unwrap_or_default());
        }
        (runs, STAGES_BY_TIMESTAMPS)
    } else {
        let mut times = Vec::new();
        for (name, dispatches) in stages {
            times.push((*name, median_secs(reps, || ctx.run(dispatches))? * 1e3));
        }
        (vec![times], STAGES_BY_WALL_CLOCK)
    };
    // Sum each run's layers per stage name (first-seen order), then take the median run.
    let mut names: Vec<&'static str> = Vec::new();
    for (name, _) in stages {
        if !names.contains(name) {
            names.push(name);
        }
    }
    let totals = names
        .iter()
        .map(|name| {
            let mut per_run: Vec<f64> =
                runs.iter().map(|run| run.iter().filter(|(n, _)| n == name).map(|(_, ms)| ms).sum()).collect();
            per_run.sort_by(f64::total_cmp);
            (*name, per_run[per_run.len() / 2])
        })
        .collect();
    Ok((totals, method))
}
