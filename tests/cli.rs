//! End-to-end tests of the `lookalike` binary's smaller commands: `info`, `tune` (its
//! cache file and the runs that read it), `bench --json`, and `weights random`. `embed`,
//! `index`, `search`, `classify`, `train` and the file writers have test files of their own
//! (`tests/cli_*.rs`).
//!
//! GPU runs use the default adapter (lavapipe, a slow software driver, in CI), so every
//! shape is small: the reports, not the speed, are under test.

mod common;

use std::fs;
use std::path::Path;

use common::cli::{lookalike, lookalike_with_env, s, Scratch};

/// A fresh directory under the system temp dir, unique to this process and test.
fn scratch(test: &str) -> Scratch {
    Scratch::at(std::env::temp_dir().join(format!("lookalike-cli-{}-{test}", std::process::id())))
}

#[test]
fn info_prints_the_adapter() {
    let run = lookalike(&["info"]);
    run.assert_success();
    for line in ["adapter:", "backend:", "driver:", "limits:", "max_storage_buffer_binding_size", "features:"] {
        assert!(run.stdout.lines().any(|l| l.trim_start().starts_with(line)), "no {line:?} line:\n{}", run.describe());
    }
}

/// The matrix units are only asked for with `--experimental-coop`, and `info` then says
/// whether this adapter has usable ones (lavapipe of Mesa 25.0: none; of Mesa 26: 8x8x8).
#[test]
fn info_says_whether_matrix_units_are_used() {
    let plain = lookalike(&["info"]);
    plain.assert_success();
    assert!(plain.stdout.contains("matrix units: unused: not requested"), "{}", plain.describe());
    let asked = lookalike(&["info", "--experimental-coop"]);
    asked.assert_success();
    let line =
        asked.stdout.lines().find(|l| l.starts_with("matrix units:")).unwrap_or_else(|| panic!("{}", asked.describe()));
    assert!(!line.contains("not requested"), "{}", asked.describe());
    assert!(
        line.contains("f16 -> f32, subgroups of") || line.contains("unused: the adapter has no"),
        "{}",
        asked.describe()
    );
}

/// `tune` measures, writes its cache file, and later runs on the same adapter use it;
/// `LOOKALIKE_TUNING=table` ignores it. Small shapes: the measurements, not their speed, are
/// under test.
#[test]
fn tune_caches_launch_shapes_that_later_runs_use() {
    let dir = scratch("tune");
    let cache = s(&dir.0);
    let env = [("LOOKALIKE_CACHE_DIR", cache)];
    let info = lookalike_with_env(&["info"], &env);
    info.assert_success();
    assert!(info.stdout.contains("not autotuned here yet"), "{}", info.describe());

    let run =
        lookalike_with_env(&["tune", "--json", "--resolution", "32", "--gemv-rows", "300", "--topk-len", "5000"], &env);
    run.assert_success();
    let out: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", run.describe()));
    let report = &out["report"];
    // Every distinct convolution of a 32x32 forward, each with both block sizes timed.
    let convs = report["convs"].as_array().unwrap();
    assert_eq!(convs.iter().map(|c| c["count"].as_u64().unwrap()).sum::<u64>(), 53, "{}", run.describe());
    for c in convs {
        for key in ["ms_4x4", "ms_8x8"] {
            assert!(c[key].as_f64().is_some_and(|ms| ms >= 0.0 && ms.is_finite()), "{key} of {c}");
        }
    }
    assert_eq!(report["gemv"].as_array().unwrap().len(), 7);
    // Each candidate's result was checked against the CPU reference's.
    assert_eq!(report["rejected"], serde_json::json!([]), "{}", run.describe());
    let workgroups: Vec<u64> =
        report["topk"].as_array().unwrap().iter().map(|t| t["workgroup"].as_u64().unwrap()).collect();
    // Every size the tuner tries, up to the adapter's limit (at least WebGPU's 256).
    let tried = &lookalike::tune::TOPK_WORKGROUPS[..workgroups.len()];
    assert!(
        workgroups.len() >= 5 && workgroups.iter().zip(tried).all(|(&w, &t)| w == u64::from(t)),
        "{}",
        run.describe()
    );
    assert!(workgroups.contains(&report["tuning"]["topk_workgroup"].as_u64().unwrap()));
    let saved = out["saved"].as_str().unwrap_or_else(|| panic!("nothing saved:\n{}", run.describe()));
    assert!(Path::new(saved).starts_with(&dir.0) && Path::new(saved).is_file(), "{saved}");

    let tuned = report["tuning"]["gemv"]["lanes"].to_string();
    let info = lookalike_with_env(&["info"], &env);
    info.assert_success();
    assert!(info.stdout.contains(&format!("autotuned: {saved}")), "{}", info.describe());
    assert!(info.stdout.contains(&format!("lanes: {tuned}")), "lanes {tuned}:\n{}", info.describe());
    let info = lookalike_with_env(&["info"], &[("LOOKALIKE_CACHE_DIR", cache), ("LOOKALIKE_TUNING", "table")]);
    assert!(info.stdout.contains("LOOKALIKE_TUNING=table"), "{}", info.describe());

    // A damaged cache file is reported and ignored, not fatal.
    fs::write(saved, "{").unwrap();
    let info = lookalike_with_env(&["info"], &env);
    info.assert_success();
    assert!(info.stdout.contains("cached file ignored"), "{}", info.describe());
}

/// `bench --quick --json` prints one object with every field the benchmark issue lists, each
/// figure finite and positive (small shapes: the report, not the speed, is under test), and
/// every GPU result checked against the CPU reference's.
#[test]
fn bench_json_has_every_figure() {
    let run = lookalike(&["bench", "--quick", "--json", "--resolution", "32", "--knn-rows", "300"]);
    run.assert_success();
    let out: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", run.describe()));
    let positive = |v: &serde_json::Value, what: &str| {
        assert!(v.as_f64().is_some_and(|x| x > 0.0 && x.is_finite()), "{what} = {v}:\n{}", run.describe())
    };
    for key in ["name", "backend", "device_type"] {
        assert!(out["adapter"][key].is_string(), "adapter.{key}:\n{}", run.describe());
    }
    positive(&out["cold_start_ms"], "cold_start_ms");
    let resnet = out["resnet50"].as_array().unwrap();
    for device in ["gpu", "cpu"] {
        for batch in [1, 8] {
            let row = resnet
                .iter()
                .find(|r| r["device"] == device && r["batch"] == batch)
                .unwrap_or_else(|| panic!("no resnet50 {device} batch {batch}"));
            assert_eq!(row["resolution"], 32);
            positive(&row["img_per_s"], "img_per_s");
            positive(&row["gflop_per_s"], "gflop_per_s");
            let vs_cpu = row["rel_l2_vs_cpu"].as_f64();
            assert_eq!(
                device == "gpu",
                vs_cpu.is_some_and(|d| d < 1e-4),
                "resnet50 {device} batch {batch}: {vs_cpu:?}"
            );
        }
    }
    let matmul = out["matmul"].as_array().unwrap();
    assert_eq!(matmul.len(), 2);
    matmul.iter().for_each(|m| positive(&m["gflop_per_s"], "matmul gflop_per_s"));
    assert!(matmul.iter().any(|m| m["device"] == "gpu" && m["rel_l2_vs_cpu"].as_f64().is_some_and(|d| d < 1e-5)));
    let knn = out["knn"].as_array().unwrap();
    for device in ["gpu", "cpu"] {
        for dtype in ["f32", "f16"] {
            for queries in [1, 64] {
                let row = knn
                    .iter()
                    .find(|r| r["device"] == device && r["dtype"] == dtype && r["queries"] == queries)
                    .unwrap_or_else(|| panic!("no knn {device} {dtype} {queries}"));
                assert_eq!(
                    (row["n"].as_u64(), row["d"].as_u64(), row["k"].as_u64()),
                    (Some(300), Some(2048), Some(10))
                );
                positive(&row["ms"], "knn ms");
                positive(&row["gb_per_s"], "knn gb_per_s");
                let diff = row["max_score_diff_vs_cpu"].as_f64();
                assert_eq!(
                    device == "gpu",
                    diff.is_some_and(|d| d <= 1e-5),
                    "knn {device} {dtype} {queries}: {diff:?}"
                );
            }
        }
    }
    assert_eq!(out["knn_skipped"].as_array().map(Vec::len), Some(0), "asked sizes are never skipped");
    for stage in ["preprocess", "conv", "pool", "normalise", "score", "topk"] {
        positive(&out["stages_ms"][stage], stage);
    }
    assert_eq!(out["stages_ms"].as_object().unwrap().len(), 6, "stages_ms is the pipeline's partition");
    positive(&out["topk_k100_ms"], "topk_k100_ms");
    // 300 scores are one top-k pass: no floor steps.
    let parts = out["topk_k100_parts_ms"].as_object().unwrap();
    assert_eq!(parts.keys().collect::<Vec<_>>(), ["passes"], "top-100 steps of a short row");
    positive(&parts["passes"], "topk_k100_parts_ms.passes");
    assert!(out["tuning"]["chosen"]["gemv"]["lanes"].is_u64() && out["tuning"]["source"].is_string());
    assert_eq!(out["checks"], serde_json::json!({"passed": true, "failures": []}), "{}", run.describe());
}

#[test]
fn random_weights_are_deterministic_per_seed() {
    let dir = scratch("weights");
    let write = |seed: &str, name: &str| {
        let path = dir.path(name);
        let run = lookalike(&["weights", "random", "--seed", seed, "-o", s(&path)]);
        run.assert_success();
        assert!(run.stderr.contains(&format!("seed {seed}")), "{}", run.describe());
        fs::read(&path).unwrap()
    };
    let first = write("3", "a.safetensors");
    let again = write("3", "b.safetensors");
    assert!(first.len() > 90_000_000, "a ResNet50 with fc in f32 is ~100 MB, got {} bytes", first.len());
    assert!(first == again, "seed 3 twice gave different files");
    drop(again);
    let other = write("4", "c.safetensors");
    assert_eq!(other.len(), first.len(), "the layout does not depend on the seed");
    assert!(first != other, "seeds 3 and 4 gave the same file");
}
