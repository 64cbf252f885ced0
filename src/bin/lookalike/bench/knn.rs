//! The k-NN scan in ms and GB/s: normalise + score + top-k over N x 2048 unit rows, f32 and
//! f16, one query and 64, the GPU beside the CPU reference (and on the matrix units where
//! asked).

use lookalike::index::{Centring, Entry, Index, Provenance};
use lookalike::model::FEATURE_DIM;
use lookalike::ops::gemv;
use lookalike::ops::matmul::Precision;
use lookalike::rng::Rng;
use lookalike::search::{search_features_cpu, SearchOptions, Searcher};
use lookalike::{Context, Result};
use serde_json::{json, Value};

use super::{median_secs, Bench, BenchOptions};

/// The scans measured, the sizes they ran at, and the sizes left out with why.
pub(super) struct KnnFigures {
    pub rows: Vec<Value>,
    pub sizes: Vec<usize>,
    pub skipped: Vec<String>,
}

/// Every scan size in turn; only the sizes added "when memory allows" may fail softly.
pub(super) fn figures(b: &mut Bench, rng: &mut Rng) -> Result<KnnFigures> {
    let (sizes, mut skipped) = knn_sizes(b.o, &b.ctx);
    let mut rows = Vec::new();
    for &size in &sizes {
        match knn_scan(b, size, rng) {
            Ok(scan) => rows.extend(scan),
            Err(e) if b.o.knn_rows.is_empty() && size != DEFAULT_KNN_ROWS => skipped.push(format!("{size}x2048: {e}")),
            Err(e) => return Err(e),
        }
    }
    for why in &skipped {
        b.say(format!("knn skipped {why}"));
    }
    Ok(KnnFigures { rows, sizes, skipped })
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
fn knn_scan(b: &mut Bench, rows: usize, rng: &mut Rng) -> Result<Vec<Value>> {
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
        let index = Index::from_features(
            &features,
            FEATURE_DIM,
            entries.clone(),
            precision,
            Centring::Off,
            provenance.clone(),
        )?;
        let searcher = Searcher::for_features(
            b.ctx.clone(),
            &index,
            SearchOptions { tuning: Some(b.tuning), ..Default::default() },
        )?;
        for queries in [1usize, 64] {
            let q = rng.normals(queries * FEATURE_DIM, 1.0);
            let reps = if b.ctx.is_cpu() { 1 } else { 10 };
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
            let score_diff = b.checks.neighbours(&what, &gpu_found, &cpu_found);
            for (device, secs) in [("gpu", gpu_secs), ("cpu", cpu_secs)] {
                let gbps = bytes / secs / 1e9;
                let gpu = device == "gpu";
                b.say(format!(
                    "knn {rows}x2048 {dtype} queries {queries:>2} k {k} {device}: {:9.2} ms {gbps:7.1} GB/s{}",
                    secs * 1e3,
                    if gpu {
                        b.of_bw(gbps) + &format!("; scores within {score_diff:.1e} of the CPU's")
                    } else {
                        String::new()
                    }
                ));
                let kernel = if gpu { "fma-f32" } else { "cpu-f32" };
                let mut row = json!({"device": device, "kernel": kernel, "n": rows, "d": FEATURE_DIM, "queries": queries, "k": k, "dtype": dtype, "ms": secs * 1e3, "gb_per_s": gbps});
                if gpu {
                    row["max_score_diff_vs_cpu"] = json!(score_diff);
                }
                knn.push(row);
            }
            if queries > gemv::MAX_QUERIES && b.ctx.cooperative_matrix().is_some() {
                knn.push(knn_on_matrix_units(b, &index, &q, k, &searcher));
            }
        }
    }
    Ok(knn)
}

/// The same scan scored on the matrix units (f16-rounded queries and rows), timed, with the
/// fraction of the f32 scan's neighbours it finds; a failure becomes the row's `error`.
fn knn_on_matrix_units(b: &Bench, index: &Index, q: &[f32], k: usize, exact: &Searcher) -> Value {
    let ctx = &b.ctx;
    let (rows, queries) = (index.len(), q.len() / FEATURE_DIM);
    let dtype = format!("{:?}", index.embeddings.precision()).to_lowercase();
    let mut row = json!({"device": "gpu", "kernel": "coop-f16", "n": rows, "d": FEATURE_DIM, "queries": queries, "k": k, "dtype": dtype});
    let measure = || -> Result<(f64, f64)> {
        let on_units = Searcher::for_features(
            ctx.clone(),
            index,
            SearchOptions { matrix_units: true, tuning: Some(b.tuning), ..Default::default() },
        )?;
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
            b.say(format!("knn {rows}x2048 {dtype} queries {queries:>2} k {k} gpu, matrix units: {:9.2} ms {gbps:7.1} GB/s{}; {:.1}% of the f32-query scan's neighbours", secs * 1e3, b.of_bw(gbps), 100.0 * recall));
            row["ms"] = json!(secs * 1e3);
            row["gb_per_s"] = json!(gbps);
            row["recall_vs_f32"] = json!(recall);
        }
        Err(e) => {
            b.say(format!("knn {rows}x2048 {dtype} queries {queries:>2} gpu, matrix units: failed: {e}"));
            row["error"] = json!(e.to_string());
        }
    }
    row
}
