//! L2 normalisation at any scale: the GPU kernel against its CPU twin on rows from subnormal
//! values to f32::MAX, mixed magnitudes, centring near overflow and near cancellation, zero
//! and non-finite rows; and search (library on the GPU and the CPU, and the CLI) giving the
//! same neighbours and scores for query features scaled by 1e-30 and 1e30 as unscaled.

mod common;

#[cfg(feature = "cli")]
use std::path::Path;

#[cfg(feature = "cli")]
use common::cli::{lookalike, s, Scratch};
use common::{assert_close, ctx};
use lookalike::compare::relative_l2;
use lookalike::cpu;
use lookalike::index::{Centring, Entry, Index, Provenance};
#[cfg(feature = "cli")]
use lookalike::npy;
use lookalike::ops::l2_normalize::l2_normalize;
use lookalike::ops::matmul::Precision;
use lookalike::rng::Rng;
use lookalike::search::{search_features_cpu, Neighbor, SearchOptions, Searcher};
use lookalike::Context;

const KERNEL_LIMIT: f64 = 1e-5;
/// Around 1e-20 and 1e20 the plain f32 sum of squares vanishes or overflows.
const SCALES: [f32; 7] = [1e-38, 1e-30, 1e-20, 1.0, 1e20, 1e30, 3e38];
/// Widths below, between and above the 256 invocations of a row's workgroup.
const DIMS: [usize; 6] = [1, 3, 37, 257, 1000, 2048];

fn gpu_normalize(data: &[f32], rows: usize, dim: usize, mean: Option<&[f32]>) -> Vec<f32> {
    let ctx = ctx();
    let input = ctx.upload("x", data).unwrap();
    let mean = mean.map(|m| ctx.upload("mean", m).unwrap());
    let out = ctx.storage("y", rows * dim).unwrap();
    let d = l2_normalize(ctx, rows, dim, &input, mean.as_ref(), &out).unwrap();
    ctx.run_and_read(&[&d], &out, rows * dim).unwrap()
}

/// Values of magnitude 1/4 to 1 with random signs: scaled by 1e-38 each keeps 21 or more
/// bits, so the scaled row's unit vector is the unscaled one's to ~1e-6.
fn unit_range(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.range(0.25, 1.0) * if rng.uniform() < 0.5 { -1.0 } else { 1.0 }).collect()
}

/// Random signs and magnitudes spread evenly over the decades from 1e-45 (subnormal) to
/// 3e38.
fn any_magnitude(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let magnitude = 10f64.powf(rng.uniform() * 83.5 - 45.0) as f32;
            if rng.uniform() < 0.5 {
                -magnitude
            } else {
                magnitude
            }
        })
        .collect()
}

/// GPU against the CPU twin row by row, and every non-zero GPU row of unit length.
fn assert_gpu_matches_cpu(what: &str, data: &[f32], rows: usize, dim: usize, mean: Option<&[f32]>) -> Vec<f32> {
    let expected = cpu::l2_normalize(data, rows, dim, mean).unwrap();
    let got = gpu_normalize(data, rows, dim, mean);
    for r in 0..rows {
        let span = r * dim..(r + 1) * dim;
        assert_close(
            &format!("{what}, row {r} of {rows}x{dim}"),
            &got[span.clone()],
            &expected[span.clone()],
            KERNEL_LIMIT,
        );
        let norm = got[span].iter().map(|&y| y as f64 * y as f64).sum::<f64>().sqrt();
        assert!(norm == 0.0 || (norm - 1.0).abs() < 1e-5, "{what}, row {r} of {rows}x{dim}: norm {norm}");
    }
    expected
}

#[test]
fn unit_vectors_at_every_scale_with_and_without_a_mean() {
    let mut rng = Rng::new(1);
    for dim in DIMS {
        let rows = 3;
        let data = unit_range(&mut rng, rows * dim);
        let mean: Vec<f32> = unit_range(&mut rng, dim).iter().map(|m| m * 0.75).collect();
        for centred in [false, true] {
            let unscaled = cpu::l2_normalize(&data, rows, dim, centred.then_some(&mean[..])).unwrap();
            for scale in SCALES {
                // At 3e38 with a mean of the opposite sign, `x - mean` exceeds f32::MAX.
                let x: Vec<f32> = data.iter().map(|v| v * scale).collect();
                let m: Vec<f32> = mean.iter().map(|v| v * scale).collect();
                let what = format!("scale {scale:e} centred={centred}");
                let expected = assert_gpu_matches_cpu(&what, &x, rows, dim, centred.then_some(&m[..]));
                let err = relative_l2(&expected, &unscaled);
                assert!(err < 1e-5, "{what}, {rows}x{dim}: the CPU's unit vectors moved by {err:.2e} from scale 1's");
            }
        }
    }
}

#[test]
fn mixed_magnitudes_extremes_and_zero_rows() {
    let mut rng = Rng::new(2);
    for dim in [2, 37, 257, 2048] {
        let tiny = f32::from_bits(1); // the smallest subnormal
        let mut rows: Vec<Vec<f32>> = vec![
            any_magnitude(&mut rng, dim),
            // One huge value among subnormals.
            (0..dim).map(|d| if d == dim / 2 { 3e38 } else { 1e-40 * (d % 7) as f32 }).collect(),
            // Only the smallest subnormals: integers times 2^-149.
            (0..dim).map(|d| tiny * (d % 5) as f32 - tiny * 2.0).collect(),
            // f32::MAX of alternating sign: raw squares overflow at once.
            (0..dim).map(|d| if d % 2 == 0 { f32::MAX } else { -f32::MAX }).collect(),
            vec![0.0; dim],
        ];
        let count = rows.len();
        let data: Vec<f32> = rows.concat();
        assert_gpu_matches_cpu("mixed magnitudes", &data, count, dim, None);

        // Centring: mean of mixed magnitudes; rows equal to it (a zero row), nearly equal to it
        // (every centred value ~1e-7 of the row's largest value), and opposite to it near
        // f32::MAX (`x - mean` overflows unless scaled first).
        let mean = any_magnitude(&mut rng, dim);
        let near: Vec<f32> =
            mean.iter().enumerate().map(|(d, &m)| if d % 3 == 0 { m * (1.0 + f32::EPSILON) } else { m }).collect();
        let big_mean: Vec<f32> = (0..dim).map(|d| if d % 2 == 0 { 3e38 } else { -2e38 }).collect();
        rows.extend([mean.clone(), near]);
        let count = rows.len();
        let data: Vec<f32> = rows.concat();
        let expected = assert_gpu_matches_cpu("mixed magnitudes, centred", &data, count, dim, Some(&mean));
        assert!(expected[(count - 2) * dim..(count - 1) * dim].iter().all(|&y| y == 0.0), "x == mean is a zero row");
        let opposite: Vec<f32> = big_mean.iter().map(|m| -m).collect();
        let data = [opposite, any_magnitude(&mut rng, dim)].concat();
        assert_gpu_matches_cpu("opposite to a mean near f32::MAX", &data, 2, dim, Some(&big_mean));
    }
}

#[test]
fn a_non_finite_value_makes_its_row_nan_and_leaves_the_others() {
    let mut rng = Rng::new(3);
    let dim = 300;
    let mut data = unit_range(&mut rng, 4 * dim);
    data[dim + 7] = f32::INFINITY;
    data[2 * dim + 299] = f32::NAN;
    let mean = unit_range(&mut rng, dim);
    for mean in [None, Some(&mean[..])] {
        let (got, expected) = (gpu_normalize(&data, 4, dim, mean), cpu::l2_normalize(&data, 4, dim, mean).unwrap());
        for (name, out) in [("gpu", &got), ("cpu", &expected)] {
            assert!(out[dim..3 * dim].iter().all(|y| y.is_nan()), "{name}: rows 1 and 2 are not all NaN");
        }
        for r in [0, 3] {
            let span = r * dim..(r + 1) * dim;
            assert_close(&format!("finite row {r}"), &got[span.clone()], &expected[span], KERNEL_LIMIT);
        }
    }
}

fn entries(n: usize) -> Vec<Entry> {
    (0..n).map(|i| Entry::new(format!("row{i}"), None)).collect()
}

fn features_index(features: &[f32], dim: usize, precision: Precision, center: bool) -> Index {
    let provenance = Provenance {
        model: "features".into(),
        weights_path: String::new(),
        weights_sha256: String::new(),
        preprocess: Default::default(),
    };
    Index::from_features(
        features,
        dim,
        entries(features.len() / dim),
        precision,
        if center { Centring::Mean } else { Centring::Off },
        provenance,
    )
    .unwrap()
}

fn scaled(v: &[f32], scale: f32) -> Vec<f32> {
    v.iter().map(|x| x * scale).collect()
}

/// Same ids rank by rank and scores within `tolerance`.
fn assert_same_neighbours(what: &str, got: &[Vec<Neighbor>], expected: &[Vec<Neighbor>], tolerance: f32) {
    assert_eq!(got.len(), expected.len(), "{what}");
    for (q, (g, e)) in got.iter().zip(expected).enumerate() {
        let ids = |r: &[Neighbor]| r.iter().map(|n| n.index).collect::<Vec<_>>();
        assert_eq!(ids(g), ids(e), "{what}, query {q}: {g:?} vs {e:?}");
        for (a, b) in g.iter().zip(e) {
            assert!((a.score - b.score).abs() <= tolerance, "{what}, query {q}: score {} vs {}", a.score, b.score);
        }
    }
}

#[test]
fn search_with_scaled_query_features_finds_the_same_neighbours() {
    let mut rng = Rng::new(4);
    let (n, q, dim, k) = (60, 5, 37, 7);
    let rows = rng.normals(n * dim, 1.0).iter().map(|x| x + 0.5).collect::<Vec<f32>>();
    let queries = rng.normals(q * dim, 1.0).iter().map(|x| x + 0.5).collect::<Vec<f32>>();
    for (precision, center) in [(Precision::F32, false), (Precision::F32, true), (Precision::F16, true)] {
        let index = features_index(&rows, dim, precision, center);
        let searcher = Searcher::for_features(Context::clone(ctx()), &index, SearchOptions::default()).unwrap();
        let gpu = searcher.search_features(&queries, k).unwrap();
        let cpu = search_features_cpu(&index, &queries, k).unwrap();
        for scale in [1e-30, 1e30] {
            let what = format!("{precision:?} centred={center}, queries x {scale:e}");
            let scaled_queries = scaled(&queries, scale);
            if !center {
                // Without a mean, scaling the queries alone changes nothing.
                let got = searcher.search_features(&scaled_queries, k).unwrap();
                assert_same_neighbours(&format!("gpu {what}"), &got, &gpu, 1e-6);
                let got = search_features_cpu(&index, &scaled_queries, k).unwrap();
                assert_same_neighbours(&format!("cpu {what}"), &got, &cpu, 1e-6);
            }
            // Rows and queries scaled alike (the mean scales with them). Rounding the scaled
            // rows' unit vectors to f16 may land one ulp from the unscaled ones'.
            let what = format!("{what} and rows too");
            let tolerance = if precision == Precision::F16 { 1e-4 } else { 1e-6 };
            let index = features_index(&scaled(&rows, scale), dim, precision, center);
            let on_scaled = Searcher::for_features(Context::clone(ctx()), &index, SearchOptions::default()).unwrap();
            let got = on_scaled.search_features(&scaled_queries, k).unwrap();
            assert_same_neighbours(&format!("gpu {what}"), &got, &gpu, tolerance);
            let got = search_features_cpu(&index, &scaled_queries, k).unwrap();
            assert_same_neighbours(&format!("cpu {what}"), &got, &cpu, tolerance);
        }
    }
}

/// `lookalike search --features --json`'s (index, score) pairs per query.
#[cfg(feature = "cli")]
fn cli_neighbours(index: &Path, queries: &Path, k: usize) -> Vec<Vec<(u64, f64)>> {
    let run = lookalike(&["search", s(index), "--features", s(queries), "-k", &k.to_string(), "--json"]);
    run.assert_success();
    run.json()
        .iter()
        .map(|query| {
            query["neighbors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| (n["index"].as_u64().unwrap(), n["score"].as_f64().unwrap()))
                .collect()
        })
        .collect()
}

#[test]
#[cfg(feature = "cli")]
fn cli_search_with_query_features_scaled_by_1e30_matches_unscaled() {
    let dir = Scratch::at(Path::new(env!("CARGO_TARGET_TMPDIR")).join("normalize-scale-cli"));
    let mut rng = Rng::new(5);
    let (n, q, dim, k) = (40, 3, 64, 5);
    let rows = rng.normals(n * dim, 1.0);
    let queries = rng.normals(q * dim, 1.0);
    let index_path = dir.path("index.safetensors");
    features_index(&rows, dim, Precision::F32, false).save(&index_path).unwrap();
    let (plain, big) = (dir.path("q.npy"), dir.path("q-1e30.npy"));
    npy::write_f32(&plain, &[q, dim], &queries).unwrap();
    npy::write_f32(&big, &[q, dim], &scaled(&queries, 1e30)).unwrap();
    let (expected, got) = (cli_neighbours(&index_path, &plain, k), cli_neighbours(&index_path, &big, k));
    assert_eq!(got.len(), q);
    for (row, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.iter().map(|n| n.0).collect::<Vec<_>>(), e.iter().map(|n| n.0).collect::<Vec<_>>(), "query {row}");
        for (a, b) in g.iter().zip(e) {
            assert!((a.1 - b.1).abs() <= 1e-6, "query {row}: score {} vs {}", a.1, b.1);
        }
    }
}
