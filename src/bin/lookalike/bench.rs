//! `lookalike bench`: what users compare across cards. GPU beside the CPU reference, every
//! figure labelled with what it counts.

use std::time::Instant;

use lookalike::compare::relative_l2;
use lookalike::cpu;
use lookalike::cpu::preprocess::Preprocess;
use lookalike::embed::Embedder;
use lookalike::gpu::known::gpu_spec;
use lookalike::gpu::CooperativeMatrix;
use lookalike::gpu::Stage;
use lookalike::index::{Entry, Index, Provenance};
use lookalike::model::resnet50::ShapeWalk;
use lookalike::model::MIN_INPUT;
use lookalike::model::{BatchNormMode, GpuResNet50, RandomResNet50, FEATURE_DIM};
use lookalike::npy::NhwcBatch;
use lookalike::ops::coop::{round_to_f16, CoopTiles};
use lookalike::ops::gemv;
use lookalike::ops::l2_normalize::l2_normalize;
use lookalike::ops::matmul::{matmul, MatmulShape, Precision};
use lookalike::ops::matmul_coop::matmul_coop_with;
use lookalike::ops::preprocess::PreprocessBatch;
use lookalike::ops::topk::{TopK, TopKInput, TopKOutput};
use lookalike::ops::Tuning;
use lookalike::rng::Rng;
use lookalike::search::{search_features_cpu, SearchOptions, Searcher};
use lookalike::{Context, Error, Result};
use serde_json::{json, Value};

use crate::bench_checks::Checks;

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
    let cold = Instant::now();
    let ctx = crate::open_context(o.experimental_coop)?;
    let (tuning, tuning_source) = lookalike::tune::load_for(&ctx);
    let info = ctx.adapter_info().clone();
    let net = RandomResNet50::generate(0)?.net;
    let size = o.resolution;
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
    let cold_start_ms = cold.elapsed().as_secs_f64() * 1e3;
    let (peak_tflops, peak_gbps) =
        gpu_spec(&info.name).map_or((None, None), |spec| (Some(spec.fp32_tflops), Some(spec.memory_gbps)));
    let peak_tflops = o.peak_tflops.or(peak_tflops);
    let peak_gbps = o.peak_gbps.or(peak_gbps);
    say(
        &o,
        format!(
            "adapter: {} ({:?}, {:?}, driver {} {})",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        ),
    );
    say(
        &o,
        format!("cold start (context, weights upload, pipelines, first {size}x{size} forward): {cold_start_ms:.0} ms"),
    );
    let of_peak = |gflops: f64| {
        peak_tflops.map(|p| format!(" ({:.1}% of {p} TFLOP/s)", 100.0 * gflops / (p * 1e3))).unwrap_or_default()
    };
    let of_bw = |gbps: f64| peak_gbps.map(|p| format!(" ({:.1}% of {p} GB/s)", 100.0 * gbps / p)).unwrap_or_default();

    // ResNet50 at 224 (or --resolution): GPU and CPU reference.
    let flops_per_image = ShapeWalk::resnet50(size, size).flops;
    let batches: &[usize] = if o.quick { &[1, 8] } else { &[1, 8, 32] };
    let mut resnet = Vec::new();
    // Every GPU result timed is checked against the CPU's result of the same run.
    let mut checks = Checks::default();
    let mut cpu_embedder = Embedder::cpu(&net)?;
    // With --experimental-coop, the same network with its convolutions on the matrix units,
    // in the default workgroup layout and in 4x4 subgroups (half the staging per product).
    let mut coop_errors: Vec<String> = Vec::new();
    // Why --experimental-coop measures nothing on the units, if it does not.
    let coop_skipped = o.experimental_coop.then(|| ctx.cooperative_matrix_unavailable().map(str::to_string)).flatten();
    if let Some(why) = &coop_skipped {
        say(&o, format!("matrix units skipped: {why}"));
    }
    let mut coop_nets: Vec<(CoopTiles, GpuResNet50)> = Vec::new();
    if let Some(units) = ctx.cooperative_matrix() {
        for tiles in [CoopTiles::default_for(units), CoopTiles::four_by_four(units)] {
            coop_nets
                .push((tiles, GpuResNet50::new(&ctx, &net, BatchNormMode::Folded)?.on_matrix_units_with(&ctx, tiles)?));
        }
    }
    for &batch in batches {
        let data = Rng::new(batch as u64).normals(batch * size * size * 3, 1.0);
        let reps = if ctx.is_cpu() { 1 } else { 5 };
        // Each side's features of its last timed run, for the check.
        let (mut gpu_features, mut cpu_features) = (Vec::new(), Vec::new());
        let gpu_secs = median_secs(reps, || {
            gpu_features = gpu_net.forward(&ctx, &data, batch, size, size)?;
            Ok(())
        })?;
        let images = NhwcBatch { batch, height: size, width: size, data };
        let cpu_secs = median_secs(3, || {
            cpu_features = cpu_embedder.embed(&images)?;
            Ok(())
        })?;
        let vs_cpu = checks.dense(&format!("resnet50 batch {batch} features"), &gpu_features, &cpu_features);
        for (device, secs) in [("gpu", gpu_secs), ("cpu", cpu_secs)] {
            let gflops = flops_per_image * batch as f64 / secs / 1e9;
            let img_s = batch as f64 / secs;
            let gpu = device == "gpu";
            say(
                &o,
                format!(
                    "resnet50 {size} batch {batch:>2} {device}: {img_s:8.1} img/s {gflops:8.1} GFLOP/s{}",
                    if gpu {
                        of_peak(gflops) + &format!("; features {vs_cpu:.1e} relative L2 from the CPU's")
                    } else {
                        String::new()
                    }
                ),
            );
            let kernel = if gpu { "fma-f32" } else { "cpu-f32" };
            let mut row = json!({"device": device, "kernel": kernel, "batch": batch, "resolution": size, "img_per_s": img_s, "gflop_per_s": gflops});
            if gpu {
                row["rel_l2_vs_cpu"] = json!(vs_cpu);
            }
            resnet.push(row);
        }
        let mut failed = Vec::new();
        for (at, (tiles, net_on_units)) in coop_nets.iter_mut().enumerate() {
            // An experimental feature: a failure is reported, and the rest still measured.
            let mut on_units = || -> Result<Value> {
                let secs =
                    median_secs(reps, || net_on_units.forward(&ctx, &images.data, batch, size, size).map(|_| ()))?;
                let (gflops, img_s) = (flops_per_image * batch as f64 / secs / 1e9, batch as f64 / secs);
                // Against the f32 GPU path on the same images: what the f16 rounding costs.
                let vs_f32 = relative_l2(
                    &net_on_units.forward(&ctx, &images.data, batch, size, size)?,
                    &gpu_net.forward(&ctx, &images.data, batch, size, size)?,
                );
                say(&o, format!("resnet50 {size} batch {batch:>2} gpu, matrix units, {tiles:?}: {img_s:8.1} img/s {gflops:8.1} GFLOP/s; features {vs_f32:.1e} relative L2 from the f32 path"));
                let layout = json!({"sg_rows": tiles.sg_rows, "sg_cols": tiles.sg_cols, "tile_k": tiles.tile_k});
                Ok(
                    json!({"device": "gpu", "kernel": "coop-f16", "tiles": layout, "batch": batch, "resolution": size, "img_per_s": img_s, "gflop_per_s": gflops, "rel_l2_vs_f32": vs_f32}),
                )
            };
            match on_units() {
                Ok(row) => resnet.push(row),
                Err(e) => {
                    say(&o, format!("resnet50 {size} batch {batch:>2} gpu, matrix units, {tiles:?}: failed: {e}"));
                    coop_errors.push(format!("resnet50 batch {batch} {tiles:?}: {e}"));
                    failed.push(at);
                }
            }
        }
        for at in failed.into_iter().rev() {
            coop_nets.remove(at);
        }
    }

    // matmul 1024^3.
    let n = 1024;
    let shape = MatmulShape { m: n, n, k: n, b_transposed: false };
    let mut rng = Rng::new(2);
    let (a, b) = (rng.normals(n * n, 1.0), rng.normals(n * n, 1.0));
    let (ab, bb, cb) = (ctx.upload("a", &a)?, ctx.upload("b", &b)?, ctx.storage("c", n * n)?);
    let d = matmul(&ctx, &shape, &ab, &bb, &cb, tuning.gemm_tiles(n, n))?;
    let gpu_secs = median_secs(if ctx.is_cpu() { 2 } else { 10 }, || ctx.run(&[&d]))?;
    let gpu_product = ctx.read(&cb, n * n)?;
    let mut cpu_product = Vec::new();
    let cpu_secs = median_secs(3, || {
        cpu_product = cpu::matmul(&shape, &a, &b)?;
        Ok(())
    })?;
    let vs_cpu = checks.dense("matmul 1024^3", &gpu_product, &cpu_product);
    let mut matmuls = Vec::new();
    for (device, secs) in [("gpu", gpu_secs), ("cpu", cpu_secs)] {
        let gflops = shape.flops() / secs / 1e9;
        let gpu = device == "gpu";
        let check = if gpu { format!("; {vs_cpu:.1e} relative L2 from the CPU's product") } else { String::new() };
        say(&o, format!("matmul 1024^3 {device}: {gflops:8.1} GFLOP/s{check}"));
        let kernel = if gpu { "fma-f32" } else { "cpu-f32" };
        let mut row = json!({"device": device, "kernel": kernel, "m": n, "n": n, "k": n, "gflop_per_s": gflops});
        if gpu {
            row["rel_l2_vs_cpu"] = json!(vs_cpu);
        }
        matmuls.push(row);
    }
    if let Some(units) = ctx.cooperative_matrix() {
        match matmul_coop_rows(&o, &ctx, units, &shape, (&a, &b), (&ab, &bb, &cb)) {
            Ok(rows) => matmuls.extend(rows),
            Err(e) => {
                say(&o, format!("matmul on matrix units failed: {e}"));
                coop_errors.push(format!("matmul: {e}"));
            }
        }
    }

    // k-NN scan: normalise + score + top-k over N x 2048 unit rows.
    let (sizes, mut knn_skipped) = knn_sizes(&o, &ctx);
    let mut knn = Vec::new();
    for &rows in &sizes {
        match knn_scan(&o, &ctx, rows, &mut rng, &of_bw, &mut checks) {
            Ok(rows) => knn.extend(rows),
            // Only the sizes added "when memory allows" may fail softly.
            Err(e) if o.knn_rows.is_empty() && rows != DEFAULT_KNN_ROWS => {
                knn_skipped.push(format!("{rows}x2048: {e}"))
            }
            Err(e) => return Err(e),
        }
    }
    for skipped in &knn_skipped {
        say(&o, format!("knn skipped {skipped}"));
    }

    say(&o, format!("launch shapes: {tuning:?} ({tuning_source})"));

    let stage_rows = sizes[0];
    let refs = Rng::normals_parallel(3, stage_rows * FEATURE_DIM);
    let (mut stages, stages_method) = stage_times(&ctx, &mut gpu_net, &tuning, size, &refs, stage_rows, &mut checks)?;
    // Timed beside the stages but not among them: the top-100 instead of the top-10, whole
    // and by step.
    let mut take = |name: &str| stages.iter().position(|(s, _)| *s == name).map(|at| stages.remove(at).1);
    let topk_k100_ms = take(TOPK_K100);
    let topk_k100_parts: Vec<(&str, f64)> =
        TOPK_K100_STEPS.iter().filter_map(|&step| take(step).map(|ms| (step, ms))).collect();
    say(
        &o,
        format!(
            "stages of one {size}x{size} query ({stages_method}): {}",
            stages.iter().map(|(s, ms)| format!("{s} {ms:.2} ms")).collect::<Vec<_>>().join(", ")
        ),
    );
    let stage = |name: &str| stages.iter().find(|(s, _)| *s == name).map(|(_, ms)| *ms);
    if let (Some(score), Some(k10), Some(k100)) = (stage("score"), stage("topk"), topk_k100_ms) {
        say(
            &o,
            format!(
                "top-k after the score of one chunk: k 10 {:.1}%, k 100 {:.1}% of its time",
                100.0 * k10 / score,
                100.0 * k100 / score
            ),
        );
    }
    say(
        &o,
        format!(
            "top-100 by step: {}",
            topk_k100_parts
                .iter()
                .map(|(key, ms)| format!("{} {ms:.3} ms", key.replace('_', " ")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let training = crate::bench_train::training(&ctx, o.quick, &mut checks, &|line| say(&o, line))?;
    if o.json {
        let stages_ms: serde_json::Map<String, Value> =
            stages.into_iter().map(|(s, ms)| (s.to_string(), json!(ms))).collect();
        let out = json!({
            "adapter": {"name": info.name, "backend": format!("{:?}", info.backend), "device_type": format!("{:?}", info.device_type), "driver": info.driver, "driver_info": info.driver_info},
            "cold_start_ms": cold_start_ms,
            "resnet50": resnet,
            "matmul": matmuls,
            "coop_skipped": coop_skipped,
            "coop_errors": coop_errors,
            "knn": knn,
            "knn_skipped": knn_skipped,
            "stages_ms": stages_ms,
            "stages_method": stages_method,
            "topk_k100_ms": topk_k100_ms,
            "topk_k100_parts_ms": topk_k100_parts.into_iter().map(|(key, ms)| (key.to_string(), json!(ms))).collect::<serde_json::Map<String, Value>>(),
            "tuning": {"chosen": tuning, "source": tuning_source.to_string()},
            "peak": {"tflops_fp32": peak_tflops, "gb_per_s": peak_gbps},
            "training": training,
            "checks": checks.to_json(),
        });
        println!("{out}");
    }
    if !checks.passed() {
        return Err(Error::Gpu {
            context: "bench".into(),
            message: format!("GPU results differ from the CPU reference:\n  {}", checks.failures().join("\n  ")),
        });
    }
    say(&o, "checks: every f32 GPU result above matches the CPU reference's".into());
    Ok(())
}

/// The scan every run measures.
const DEFAULT_KNN_ROWS: usize = 100_000;
/// The scan added when the machine has the memory.
const LARGE_KNN_ROWS: usize = 1_000_000;

/// The scan sizes: those asked for, else 100k rows plus 1M where it fits (a hardware adapter,
/// and host memory for the features, the f32 index and the f16 one), with why it was left out.
fn knn_sizes(o: &BenchOptions, ctx: &Context) -> (Vec<usize>, Vec<String>) {
    if !o.knn_rows.is_empty() {
        return (o.knn_rows.clone(), Vec::new());
    }
    let need = 5 * 4 * LARGE_KNN_ROWS * FEATURE_DIM / 2; // features + f32 index + f16 index
    let skip = if ctx.is_cpu() {
        Some("software adapter (minutes per scan); pass --knn-rows to force".to_string())
    } else {
        match available_memory() {
            Some(have) if have >= need => None,
            Some(have) => Some(format!(
                "{:.1} GB of host memory available, {:.1} GB needed",
                have as f64 / 1e9,
                need as f64 / 1e9
            )),
            None => Some("host memory unknown on this platform; pass --knn-rows 100000,1000000 to force".into()),
        }
    };
    match skip {
        None => (vec![DEFAULT_KNN_ROWS, LARGE_KNN_ROWS], Vec::new()),
        Some(why) => (vec![DEFAULT_KNN_ROWS], vec![format!("{LARGE_KNN_ROWS}x2048: {why}")]),
    }
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux).
fn available_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One scan size: f32 and f16 rows, 1 and 64 queries, GPU and CPU.
fn knn_scan(
    o: &BenchOptions, ctx: &Context, rows: usize, rng: &mut Rng, of_bw: &dyn Fn(f64) -> String, checks: &mut Checks,
) -> Result<Vec<Value>> {
    let k = 10;
    let features = Rng::normals_parallel(rows as u64, rows * FEATURE_DIM);
    let entries: Vec<Entry> = (0..rows).map(|i| Entry::new(i.to_string(), None)).collect();
    let provenance = Provenance {
        model: "bench".into(),
        weights_path: String::new(),
        weights_sha256: String::new(),
        preprocess: Default::default(),
    };
    let mut knn = Vec::new();
    for precision in [Precision::F32, Precision::F16] {
        let index =
            Index::from_features(&features, FEATURE_DIM, entries.clone(), precision, false, provenance.clone())?;
        let options = SearchOptions { tuning: Some(crate::tuning(ctx)), ..Default::default() };
        let searcher = Searcher::for_features(ctx.clone(), &index, options)?;
        for queries in [1usize, 64] {
            let q = rng.normals(queries * FEATURE_DIM, 1.0);
            let reps = if ctx.is_cpu() { 1 } else { 10 };
            let (mut gpu_found, mut cpu_found) = (Vec::new(), Vec::new());
            let gpu_secs = median_secs(reps, || {
                gpu_found = searcher.search_features(&q, k)?;
                Ok(())
            })?;
            let cpu_secs = median_secs(5, || {
                cpu_found = search_features_cpu(&index, &q, k)?;
                Ok(())
            })?;
            let bytes = precision.bytes(rows * FEATURE_DIM) as f64;
            let dtype = format!("{precision:?}").to_lowercase();
            let what = format!("knn {rows}x2048 {dtype} queries {queries}");
            let score_diff = checks.neighbours(&what, &gpu_found, &cpu_found);
            for (device, secs) in [("gpu", gpu_secs), ("cpu", cpu_secs)] {
                let gbps = bytes / secs / 1e9;
                let gpu = device == "gpu";
                say(
                    o,
                    format!(
                        "knn {rows}x2048 {dtype} queries {queries:>2} k {k} {device}: {:9.2} ms {gbps:7.1} GB/s{}",
                        secs * 1e3,
                        if gpu {
                            of_bw(gbps) + &format!("; scores within {score_diff:.1e} of the CPU's")
                        } else {
                            String::new()
                        }
                    ),
                );
                let kernel = if gpu { "fma-f32" } else { "cpu-f32" };
                let mut row = json!({"device": device, "kernel": kernel, "n": rows, "d": FEATURE_DIM, "queries": queries, "k": k, "dtype": dtype, "ms": secs * 1e3, "gb_per_s": gbps});
                if gpu {
                    row["max_score_diff_vs_cpu"] = json!(score_diff);
                }
                knn.push(row);
            }
            if queries > gemv::MAX_QUERIES && ctx.cooperative_matrix().is_some() {
                knn.push(knn_on_matrix_units(o, ctx, &index, &q, k, &searcher, of_bw));
            }
        }
    }
    Ok(knn)
}

/// The same scan scored on the matrix units (f16-rounded queries and rows), timed, with the
/// fraction of the f32 scan's neighbours it finds; a failure becomes the row's `error`.
fn knn_on_matrix_units(
    o: &BenchOptions, ctx: &Context, index: &Index, q: &[f32], k: usize, exact: &Searcher,
    of_bw: &dyn Fn(f64) -> String,
) -> Value {
    let (rows, queries) = (index.len(), q.len() / FEATURE_DIM);
    let dtype = format!("{:?}", index.embeddings.precision()).to_lowercase();
    let mut row = json!({"device": "gpu", "kernel": "coop-f16", "n": rows, "d": FEATURE_DIM, "queries": queries, "k": k, "dtype": dtype});
    let measure = || -> Result<(f64, f64)> {
        let options = SearchOptions { matrix_units: true, tuning: Some(crate::tuning(ctx)), ..Default::default() };
        let on_units = Searcher::for_features(ctx.clone(), index, options)?;
        let secs = median_secs(if ctx.is_cpu() { 1 } else { 10 }, || on_units.search_features(q, k).map(|_| ()))?;
        let (got, want) = (on_units.search_features(q, k)?, exact.search_features(q, k)?);
        let found = got
            .iter()
            .zip(&want)
            .map(|(g, w)| g.iter().filter(|n| w.iter().any(|x| x.index == n.index)).count())
            .sum::<usize>();
        Ok((secs, found as f64 / (queries * k) as f64))
    };
    match measure() {
        Ok((secs, recall)) => {
            let gbps = index.embeddings.precision().bytes(rows * FEATURE_DIM) as f64 / secs / 1e9;
            say(o, format!("knn {rows}x2048 {dtype} queries {queries:>2} k {k} gpu, matrix units: {:9.2} ms {gbps:7.1} GB/s{}; {:.1}% of the f32-query scan's neighbours", secs * 1e3, of_bw(gbps), 100.0 * recall));
            row["ms"] = json!(secs * 1e3);
            row["gb_per_s"] = json!(gbps);
            row["recall_vs_f32"] = json!(recall);
        }
        Err(e) => {
            say(o, format!("knn {rows}x2048 {dtype} queries {queries:>2} gpu, matrix units: failed: {e}"));
            row["error"] = json!(e.to_string());
        }
    }
    row
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
    let (top_s, top_i) = (ctx.storage("top scores", 10)?, ctx.storage("top ids", 10)?);
    let normalise = l2_normalize(ctx, 1, FEATURE_DIM, features, None, &unit)?;
    // The score kernel search uses for one query.
    let shape = MatmulShape { m: 1, n: chunk, k: FEATURE_DIM, b_transposed: true };
    let score = gemv::scores(ctx, &shape, &unit, &refs_buf, Precision::F32, &scores, tuning)?;
    let select = TopK::new(
        ctx,
        TopKInput::Scores { scores: &scores, index_base: 0 },
        1,
        chunk,
        10,
        &TopKOutput::dense(&top_s, &top_i, 10),
        tuning.topk_workgroup,
    )?;

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
    let (top100_s, top100_i) = (ctx.storage("top-100 scores", 100)?, ctx.storage("top-100 ids", 100)?);
    let select100 = TopK::new(
        ctx,
        TopKInput::Scores { scores: &scores, index_base: 0 },
        1,
        chunk,
        100,
        &TopKOutput::dense(&top100_s, &top100_i, 100),
        tuning.topk_workgroup,
    )?;
    stages.push((TOPK_K100, select100.dispatches().iter().collect()));
    for (step, dispatches) in select100.steps() {
        stages.push((step, dispatches.iter().collect()));
    }

    let reps = if ctx.is_cpu() { 3 } else { 11 };
    let (runs, method) = if ctx.has_timestamps() {
        let mut runs = Vec::new();
        ctx.stage_times(&stages)?; // warm-up
        for _ in 0..reps {
            runs.push(ctx.stage_times(&stages)?.unwrap_or_default());
        }
        (runs, STAGES_BY_TIMESTAMPS)
    } else {
        let mut times = Vec::new();
        for (name, dispatches) in &stages {
            times.push((*name, median_secs(reps, || ctx.run(dispatches))? * 1e3));
        }
        (vec![times], STAGES_BY_WALL_CLOCK)
    };
    // The last run's top-10 and top-100 against the CPU twin's on the same scores.
    let chunk_scores = ctx.read(&scores, chunk)?;
    for (k, (s, i)) in [(10, (&top_s, &top_i)), (100, (&top100_s, &top100_i))] {
        let (want_s, want_i) = cpu::topk::topk(&chunk_scores, 1, chunk, k)?;
        let (got_s, got_i) = (ctx.read(s, k)?, ctx.read_u32(i, k)?);
        checks.top_k(&format!("top-{k} of {chunk} scores"), (&got_s, &got_i), (&want_s, &want_i));
    }
    // Sum each run's layers per stage name (first-seen order), then take the median run.
    let mut names: Vec<&'static str> = Vec::new();
    for (name, _) in &stages {
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
