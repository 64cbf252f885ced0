//! GPU top-k against its CPU twin with exact equality of indices and score bits: duplicate
//! scores, NaN and -inf, k from 1 to MAX_K, lengths that are multiples of nothing, several
//! rows, padding, explicit (score, index) pairs and the chunked-scan merge; long rows go
//! through the prefilter's floor, including rows that defeat it.

mod common;

use common::{ctx, tuning};
use lookalike::cpu::topk::{topk as cpu_topk, topk_pairs as cpu_topk_pairs};
use lookalike::ops::topk::{TopK, TopKInput, TopKOutput, MAX_K, PAD_INDEX, PAD_SCORE};
use lookalike::rng::Rng;
use lookalike::Error;

type Results = (Vec<f32>, Vec<u32>);

/// Runs a prepared selection and reads back `rows * row_stride` results.
fn run(topk: &TopK, out_scores: &wgpu::Buffer, out_indices: &wgpu::Buffer, len: usize) -> Results {
    let ctx = ctx();
    let dispatches: Vec<_> = topk.dispatches().iter().collect();
    let scores = ctx.run_and_read(&dispatches, out_scores, len).unwrap();
    (scores, ctx.read_u32(out_indices, len).unwrap())
}

fn outputs(len: usize) -> (wgpu::Buffer, wgpu::Buffer) {
    (ctx().storage("topk scores", len).unwrap(), ctx().storage("topk indices", len).unwrap())
}

fn gpu_topk(scores: &[f32], rows: usize, len: usize, k: usize) -> Results {
    let ctx = ctx();
    let input = ctx.upload("scores", scores).unwrap();
    let (s, i) = outputs(rows * k);
    let topk = TopK::new(
        ctx,
        TopKInput::Scores { scores: &input, index_base: 0 },
        rows,
        len,
        k,
        &TopKOutput::dense(&s, &i, k),
        tuning().topk_workgroup,
    )
    .unwrap();
    run(&topk, &s, &i, rows * k)
}

/// Exact equality: same indices, same score bits (NaN payloads and -0 included).
fn assert_same(what: &str, got: &Results, expected: &Results) {
    assert_eq!(got.1.len(), expected.1.len(), "{what}: result count");
    let mismatch =
        (0..expected.1.len()).find(|&j| got.1[j] != expected.1[j] || got.0[j].to_bits() != expected.0[j].to_bits());
    if let Some(j) = mismatch {
        panic!(
            "{what}: first mismatch at result {j}: got ({}, {}), expected ({}, {})",
            got.0[j], got.1[j], expected.0[j], expected.1[j]
        );
    }
}

fn check(what: &str, scores: &[f32], rows: usize, len: usize, k: usize) {
    let expected = cpu_topk(scores, rows, len, k).unwrap();
    assert_same(&format!("{what} rows={rows} len={len} k={k}"), &gpu_topk(scores, rows, len, k), &expected);
}

/// Normals, rounded to one decimal when `round` (so most scores have many duplicates).
fn scores(rng: &mut Rng, n: usize, round: bool) -> Vec<f32> {
    let mut v = rng.normals(n, 1.0);
    if round {
        v.iter_mut().for_each(|x| *x = (*x * 10.0).round() / 10.0);
    }
    v
}

#[test]
fn matches_cpu_on_random_scores() {
    let mut rng = Rng::new(11);
    for (rows, len, k) in [
        (1, 1, 1),
        (3, 7, 1),
        (3, 7, 7),
        (1, 2048, 2048 / 2),
        (1, 2049, 1000),
        (3, 5000, 1),
        (3, 5000, MAX_K),
        (2, 100_003, 10),
    ] {
        check("random", &scores(&mut rng, rows * len, false), rows, len, k);
    }
}

/// Every workgroup size the autotuner may pick: invocations striding over 2048-entry blocks
/// from 16 to 1024 at a time; duplicates and NaN included.
#[test]
fn every_tuned_workgroup_size_matches_cpu() {
    let ctx = ctx();
    let mut rng = Rng::new(13);
    for (rows, len, k) in [(3, 7, 7), (1, 2049, 1000), (3, 5000, MAX_K), (2, 100_003, 100)] {
        let mut values = scores(&mut rng, rows * len, true);
        values[len / 2] = f32::NAN;
        let expected = cpu_topk(&values, rows, len, k).unwrap();
        let input = ctx.upload("scores", &values).unwrap();
        let (s, i) = outputs(rows * k);
        for workgroup in lookalike::tune::TOPK_WORKGROUPS.into_iter().filter(|&w| w <= TopK::max_workgroup(ctx)) {
            let output = TopKOutput::dense(&s, &i, k);
            let topk =
                TopK::new(ctx, TopKInput::Scores { scores: &input, index_base: 0 }, rows, len, k, &output, workgroup)
                    .unwrap();
            assert_same(
                &format!("workgroup {workgroup} rows={rows} len={len} k={k}"),
                &run(&topk, &s, &i, rows * k),
                &expected,
            );
        }
    }
}

#[test]
fn ties_go_to_the_lower_index() {
    let mut rng = Rng::new(12);
    for (rows, len, k) in [(3, 2049, 1000), (3, 5000, 1024), (3, 100_003, 100), (1, 777, 1)] {
        check("rounded", &scores(&mut rng, rows * len, true), rows, len, k);
    }
    // All equal: the first k indices, in order.
    let (_, indices) = gpu_topk(&vec![0.25; 3 * 4099], 3, 4099, 300);
    for row in indices.chunks(300) {
        assert!(row.iter().enumerate().all(|(j, &i)| i == j as u32));
    }
}

#[test]
fn nan_ranks_below_every_number() {
    let mut rng = Rng::new(13);
    for (rows, len, k, nan_share) in
        [(3, 2049, 1000, 0.6), (3, 5000, 1024, 0.9), (2, 9000, 5, 0.999), (1, 300, 1024, 0.5)]
    {
        let mut v = scores(&mut rng, rows * len, true);
        for x in v.iter_mut() {
            let u = rng.uniform();
            if u < nan_share {
                // Two NaN payloads, to see the bits come through untouched.
                *x = if u < nan_share / 2.0 { f32::NAN } else { f32::from_bits(0xffc0_0001) };
            } else if u < nan_share + 0.02 {
                *x = f32::NEG_INFINITY;
            } else if u < nan_share + 0.03 {
                *x = -0.0;
            }
        }
        check("nan", &v, rows, len, k);
    }
}

/// Rows where the prefilter's floor keeps many candidates: ascending (the last chunks survive
/// whole), descending (the first ones do), constant (every candidate ties with the floor) and
/// signed zeros among -inf and NaN (the floor is a zero; -0 and +0 rank equal).
#[test]
fn floors_that_keep_many_candidates_stay_exact() {
    let len = 20_011;
    let mut v = Vec::with_capacity(4 * len);
    v.extend((0..len).map(|j| j as f32 / len as f32));
    v.extend((0..len).map(|j| 1.0 - j as f32 / len as f32));
    v.extend(std::iter::repeat_n(0.5f32, len));
    let mut rng = Rng::new(19);
    v.extend((0..len).map(|_| match (rng.uniform() * 4.0) as u32 {
        0 => -0.0,
        1 => 0.0,
        2 => f32::NEG_INFINITY,
        _ => f32::NAN,
    }));
    for k in [1, 10, 100, 250] {
        check("floor-defeating", &v, 4, len, k);
    }
}

/// The prefilter is in use where it should be: long rows of dense scores with a small k.
#[test]
fn long_rows_take_the_prefilter() {
    let ctx = ctx();
    let input = ctx.storage("scores", 100_003).unwrap();
    let (s, i) = outputs(1000);
    let steps = |len, k| {
        let topk = TopK::new(
            ctx,
            TopKInput::Scores { scores: &input, index_base: 0 },
            1,
            len,
            k,
            &TopKOutput::dense(&s, &i, k),
            tuning().topk_workgroup,
        )
        .unwrap();
        let labels: Vec<_> = topk.dispatches().iter().map(|d| d.label()).collect();
        let steps: Vec<_> = topk.steps().iter().map(|&(step, d)| (step, d.len())).collect();
        assert_eq!(steps.iter().map(|s| s.1).sum::<usize>(), labels.len(), "every dispatch in one step");
        (labels, steps.into_iter().map(|s| s.0).collect::<Vec<_>>())
    };
    for (len, k) in [(100_003, 100), (5000, 10)] {
        let (labels, names) = steps(len, k);
        assert_eq!(labels[..2], ["topk chunk max", "topk floor"], "{len} {k}");
        assert_eq!(names, ["chunk_max", "floor", "passes"], "{len} {k}");
    }
    for (len, k, why) in
        [(2048, 10, "one block needs no floor"), (5000, 1000, "too few chunks per k for a useful floor")]
    {
        let (labels, names) = steps(len, k);
        assert!(!labels.contains(&"topk floor"), "{why}");
        assert_eq!(names, ["passes"], "{why}");
    }
}

#[test]
fn short_rows_are_padded() {
    let mut rng = Rng::new(14);
    let v = scores(&mut rng, 3 * 7, false);
    let (s, i) = gpu_topk(&v, 3, 7, 10);
    assert_same("padding", &(s.clone(), i.clone()), &cpu_topk(&v, 3, 7, 10).unwrap());
    for row in 0..3 {
        assert!(i[row * 10..row * 10 + 7].iter().all(|&j| j < 7));
        assert_eq!(&i[row * 10 + 7..row * 10 + 10], &[PAD_INDEX; 3]);
        assert_eq!(&s[row * 10 + 7..row * 10 + 10], &[PAD_SCORE; 3]);
    }
    check("padding", &scores(&mut rng, 2 * 1500, true), 2, 1500, MAX_K);
}

#[test]
fn explicit_pairs_match_cpu() {
    let ctx = ctx();
    let mut rng = Rng::new(15);
    let (rows, len, k) = (3, 5000, 50);
    let v = scores(&mut rng, rows * len, true);
    // Distinct ids, shuffled, so rank order and position order disagree.
    let mut ids: Vec<u32> = (0..(rows * len) as u32).map(|j| j * 7 + 3).collect();
    for j in (1..ids.len()).rev() {
        ids.swap(j, rng.int(0, j));
    }
    let expected = cpu_topk_pairs(&v, &ids, rows, len, k).unwrap();
    let (sb, ib) = (ctx.upload("scores", &v).unwrap(), ctx.upload_pod("ids", &ids).unwrap());
    let (s, i) = outputs(rows * k);
    let topk = TopK::new(
        ctx,
        TopKInput::Pairs { scores: &sb, indices: &ib },
        rows,
        len,
        k,
        &TopKOutput::dense(&s, &i, k),
        tuning().topk_workgroup,
    )
    .unwrap();
    assert_same("pairs", &run(&topk, &s, &i, rows * k), &expected);
}

/// The k-NN scan: per-chunk top-k lists packed side by side, merged as pairs, equal the
/// top-k of the whole row, even with a short (padded) last chunk and NaNs.
#[test]
fn chunked_scan_equals_one_pass() {
    let ctx = ctx();
    let mut rng = Rng::new(16);
    let (rows, len, k) = (3, 5000, 400);
    let mut v = scores(&mut rng, rows * len, true);
    // Mostly NaN, so NaNs reach the results and must stay ahead of the short chunk's padding.
    for (j, x) in v.iter_mut().enumerate() {
        if j % 16 != 0 {
            *x = f32::NAN;
        }
    }
    let expected = cpu_topk(&v, rows, len, k).unwrap();
    let whole = gpu_topk(&v, rows, len, k);
    assert_same("one pass", &whole, &expected);

    for chunk in [2500, 777, 4999] {
        let chunks = len.div_ceil(chunk);
        let (packed_s, packed_i) = outputs(rows * chunks * k);
        let mut passes = Vec::new();
        let mut inputs = Vec::new();
        for c in 0..chunks {
            let cols = chunk.min(len - c * chunk);
            let part: Vec<f32> = (0..rows).flat_map(|r| v[r * len + c * chunk..][..cols].to_vec()).collect();
            inputs.push(ctx.upload("chunk", &part).unwrap());
            let input = TopKInput::Scores { scores: &inputs[c], index_base: (c * chunk) as u32 };
            let output = TopKOutput { scores: &packed_s, indices: &packed_i, row_stride: chunks * k, offset: c * k };
            passes.push(TopK::new(ctx, input, rows, cols, k, &output, tuning().topk_workgroup).unwrap());
        }
        let (s, i) = outputs(rows * k);
        let merge = TopK::new(
            ctx,
            TopKInput::Pairs { scores: &packed_s, indices: &packed_i },
            rows,
            chunks * k,
            k,
            &TopKOutput::dense(&s, &i, k),
            tuning().topk_workgroup,
        )
        .unwrap();
        // Every chunk and the merge in one compute pass, as the scan records them.
        let dispatches: Vec<_> = passes.iter().chain([&merge]).flat_map(|t| t.dispatches()).collect();
        let got = (ctx.run_and_read(&dispatches, &s, rows * k).unwrap(), ctx.read_u32(&i, rows * k).unwrap());
        assert_same(&format!("chunks of {chunk}"), &got, &expected);
    }
}

#[test]
fn reruns_see_new_scores() {
    let ctx = ctx();
    let mut rng = Rng::new(17);
    let (rows, len, k) = (2, 3000, 20);
    let input = ctx.storage("scores", rows * len).unwrap();
    let (s, i) = outputs(rows * k);
    let topk = TopK::new(
        ctx,
        TopKInput::Scores { scores: &input, index_base: 1000 },
        rows,
        len,
        k,
        &TopKOutput::dense(&s, &i, k),
        tuning().topk_workgroup,
    )
    .unwrap();
    for _ in 0..2 {
        let v = scores(&mut rng, rows * len, false);
        ctx.write(&input, &v);
        let (es, ei) = cpu_topk(&v, rows, len, k).unwrap();
        assert_same("rerun", &run(&topk, &s, &i, rows * k), &(es, ei.iter().map(|j| j + 1000).collect()));
    }
}

/// More rows than one grid dimension holds: the grid folds.
#[test]
fn many_rows_fold_the_grid() {
    let mut rng = Rng::new(18);
    let rows = ctx().limits().max_compute_workgroups_per_dimension as usize + 5;
    check("folded grid", &scores(&mut rng, rows * 3, true), rows, 3, 2);
}

#[test]
fn rejects_bad_arguments() {
    let ctx = ctx();
    let input = ctx.storage("scores", 100).unwrap();
    let ids = ctx.storage("ids", 50).unwrap();
    let (s, i) = outputs(20);
    let dense = |k| TopKOutput::dense(&s, &i, k);
    let scores = TopKInput::Scores { scores: &input, index_base: 0 };
    let invalid = |r: Result<TopK, Error>| assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let shape = |r: Result<TopK, Error>| assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    invalid(TopK::new(ctx, scores, 1, 100, 0, &dense(0), tuning().topk_workgroup));
    invalid(TopK::new(ctx, scores, 1, 100, MAX_K + 1, &TopKOutput::dense(&s, &i, MAX_K + 1), tuning().topk_workgroup));
    invalid(TopK::new(ctx, scores, 0, 100, 5, &dense(5), tuning().topk_workgroup));
    invalid(TopK::new(ctx, scores, 1, 0, 5, &dense(5), tuning().topk_workgroup));
    invalid(TopK::new(
        ctx,
        TopKInput::Scores { scores: &input, index_base: u32::MAX - 50 },
        1,
        100,
        5,
        &dense(5),
        tuning().topk_workgroup,
    ));
    invalid(TopK::new(
        ctx,
        scores,
        2,
        50,
        5,
        &TopKOutput { scores: &s, indices: &i, row_stride: 8, offset: 4 },
        tuning().topk_workgroup,
    ));
    invalid(TopK::new(ctx, scores, 1, 100, 5, &TopKOutput::dense(&s, &s, 5), tuning().topk_workgroup));
    invalid(TopK::new(ctx, scores, 1, 100, 5, &TopKOutput::dense(&input, &i, 5), tuning().topk_workgroup));
    for workgroup in [0, 48, 4096] {
        invalid(TopK::new(ctx, scores, 1, 100, 5, &dense(5), workgroup));
    }
    shape(TopK::new(ctx, scores, 2, 100, 5, &dense(5), tuning().topk_workgroup));
    shape(TopK::new(ctx, scores, 1, 100, 21, &dense(21), tuning().topk_workgroup));
    shape(TopK::new(
        ctx,
        scores,
        3,
        10,
        5,
        &TopKOutput { scores: &s, indices: &i, row_stride: 10, offset: 5 },
        tuning().topk_workgroup,
    ));
    shape(TopK::new(
        ctx,
        TopKInput::Pairs { scores: &input, indices: &ids },
        1,
        100,
        5,
        &dense(5),
        tuning().topk_workgroup,
    ));
}
