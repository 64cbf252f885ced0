//! End-to-end tests of `lookalike search` and `classify`: `search --json` against an exact
//! brute force (from images and from `embed`'s features), collages, k-NN classification
//! with `--eval`, weights that differ from the index's, and every kind of bad input as a
//! clean `error:` exit that never damages an existing index.
//!
//! The image set and its seeded index are `tests/common/index_fixture.rs`'s, built once
//! per test binary. Only the brute-force and weights checks need a weights file, because
//! `embed` takes no seed; it is written once into Cargo's per-target scratch directory
//! under the name every CLI test binary uses (an atomic write of identical bytes, so
//! concurrent runs only ever see a complete file).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lookalike::classify::vote;
use lookalike::index::Index;
use lookalike::model::FEATURE_DIM;
use lookalike::npy;
use lookalike::render::{QUERY_GAP, TILE_GAP};
use lookalike::search::Neighbor;

use common::cli::{assert_no_temp_files, lookalike, s, seed1_weights, Scratch};
use common::index_fixture::{
    assert_fails, f32_search, fixture, lookalike2, neighbours_of, run_root, save_pattern, search_queries, PRE,
};

/// Cosine of an indexed image with itself, through search's GPU preprocessing.
const SELF_SCORE: f64 = 0.9999;
/// `search --json` scores against the brute force in the test.
const SCORE_TOLERANCE: f64 = 1e-4;

/// The fixture's folder indexed with [`seed1_weights`] instead of a seed (f32, centred).
fn file_index() -> &'static Path {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX.get_or_init(|| {
        let f = fixture();
        let index = run_root().join("fixture/index-weights-file.safetensors");
        lookalike2(&["index", s(&f.db), "--weights", s(seed1_weights()), "-o", s(&index), "--center"], &PRE)
            .assert_success();
        index
    })
}

#[test]
fn search_json_lists_neighbours_per_query_in_order() {
    let f = fixture();
    let search = f32_search();
    let run = &search.run;
    let context = run.describe();
    let index = Index::load(&f.index).unwrap();
    let queries = search_queries();
    let items = run.json();
    assert_eq!(items.len(), queries.len(), "one object per query:\n{context}");
    for (query, item) in queries.iter().zip(&items) {
        assert_eq!(item["query"].as_str(), Some(s(query)), "queries out of order:\n{context}");
        let neighbours = neighbours_of(run, item, 3);
        let ids: BTreeSet<usize> = neighbours.iter().map(|n| n.0).collect();
        assert_eq!(ids.len(), 3, "a row listed twice for {}:\n{context}", query.display());
        for (i, (row, path, label, score)) in neighbours.iter().enumerate() {
            let entry = index.entries.get(*row).unwrap_or_else(|| panic!("row {row} out of range:\n{context}"));
            assert_eq!(
                (Path::new(path), label),
                (entry.path.as_path(), &entry.label),
                "row {row} of the index:\n{context}"
            );
            assert!(score.is_finite() && *score <= 1.0 + 1e-4, "score {score}:\n{context}");
            if i > 0 {
                assert!(neighbours[i - 1].3 >= *score, "scores not descending:\n{context}");
            }
        }
        if f.expected.contains_key(s(query)) {
            // An indexed image finds itself first.
            assert_eq!(neighbours[0].1, s(query), "not its own nearest neighbour:\n{context}");
            assert!(neighbours[0].3 >= SELF_SCORE, "self-similarity {}:\n{context}", neighbours[0].3);
            assert!(neighbours[1].3 < SELF_SCORE, "a second image scores like itself:\n{context}");
        } else {
            assert!(neighbours[0].3 < SELF_SCORE, "an unindexed image scores like an indexed one:\n{context}");
        }
    }
}

#[test]
fn collage_has_one_row_per_query() {
    let search = f32_search();
    let context = search.run.describe();
    assert!(search.run.stderr.contains("wrote"), "{context}");
    let collage = image::open(&search.collage)
        .unwrap_or_else(|e| panic!("{}: {e}\n{context}", search.collage.display()))
        .to_rgb8();
    // `render::collage_with_marks` documents the layout: for r rows of c >= 2 tiles of side
    // `tile`, TILE_GAP + c * (tile + TILE_GAP) + QUERY_GAP - TILE_GAP wide and
    // TILE_GAP + r * (tile + TILE_GAP) high. Here r = 4 queries, c = 1 + k = 4.
    let (rows, columns) = (search_queries().len() as u32, 4u32);
    let (width, height) = collage.dimensions();
    let pitch = (width - QUERY_GAP) / columns;
    assert_eq!(width, columns * pitch + QUERY_GAP, "width {width} is not {columns} tiles:\n{context}");
    assert!(pitch > TILE_GAP + 8, "tiles of {pitch} px:\n{context}");
    assert_eq!(height, TILE_GAP + rows * pitch, "{width}x{height} is not {rows} rows of {columns}:\n{context}");
    // Every query tile shows its image: its centre is not the canvas colour.
    for row in 0..rows {
        let centre = collage.get_pixel(TILE_GAP + pitch / 2, TILE_GAP + row * pitch + pitch / 2);
        assert_ne!(*centre, lookalike::render::CANVAS, "row {row} has no query tile");
        assert_ne!(*centre, lookalike::render::TILE_BACKGROUND, "row {row}'s query tile is empty");
    }
}

#[test]
fn search_matches_a_brute_force_over_the_index() {
    let f = fixture();
    let index_path = file_index();
    let index = Index::load(index_path).unwrap();
    let p = &index.provenance;
    assert_eq!(p.weights_path, s(seed1_weights()));
    assert_eq!(p.weights_sha256.len(), 64, "a SHA-256 in hex: {}", p.weights_sha256);
    let n = index.len();
    let dir = Scratch::at(run_root().join("brute-force"));
    let queries = [f.path_of("dogs/D2.PNG"), f.new_png.clone(), f.new_jpg.clone()];
    let q_paths: Vec<&str> = queries.iter().map(|q| s(q)).collect();

    let features_path = dir.path("q.npy");
    let embed = lookalike2(
        &["embed", "--weights", s(seed1_weights()), "-o", s(&features_path)],
        &[&PRE[..], &q_paths].concat(),
    );
    embed.assert_success();
    let features = npy::read_f32(&features_path).unwrap();
    assert_eq!(features.shape, [queries.len(), FEATURE_DIM]);

    let k = n.to_string();
    let run = lookalike2(&["search", s(index_path)], &[&q_paths[..], &["-k", &k, "--json"]].concat());
    run.assert_success();
    let context = run.describe();
    let items = run.json();
    assert_eq!(items.len(), queries.len(), "{context}");

    // The same queries as features (`embed`'s output): the same neighbours, named by row.
    let by_features = lookalike(&["search", s(index_path), "--features", s(&features_path), "-k", &k, "--json"]);
    by_features.assert_success();
    let feature_items = by_features.json();
    assert_eq!(feature_items.len(), queries.len(), "{}", by_features.describe());
    for (qi, (item, feature_item)) in items.iter().zip(&feature_items).enumerate() {
        let want_name = format!("{}:{qi}", features_path.display());
        assert_eq!(feature_item["query"].as_str(), Some(want_name.as_str()), "{}", by_features.describe());
        let from_images = neighbours_of(&run, item, n);
        let from_features = neighbours_of(&by_features, feature_item, n);
        for (a, b) in from_images.iter().zip(&from_features) {
            assert!(
                (a.0 == b.0 || (a.3 - b.3).abs() <= 1e-5) && (a.3 - b.3).abs() <= 1e-5,
                "query {qi}: images give {a:?}, features {b:?}:\n{}",
                by_features.describe()
            );
        }
    }

    let mean = index.mean.as_ref().expect("centred");
    let rows = index.embeddings.rows_f32(FEATURE_DIM, 0, n);
    for (qi, item) in items.iter().enumerate() {
        let raw = &features.data[qi * FEATURE_DIM..(qi + 1) * FEATURE_DIM];
        let centred: Vec<f64> = raw.iter().zip(mean).map(|(&x, &m)| x as f64 - m as f64).collect();
        let length = centred.iter().map(|x| x * x).sum::<f64>().sqrt();
        let scores: Vec<f64> = rows
            .chunks_exact(FEATURE_DIM)
            .map(|row| row.iter().zip(&centred).map(|(&r, &q)| r as f64 * q / length).sum())
            .collect();
        let mut expected: Vec<usize> = (0..n).collect();
        expected.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

        let got = neighbours_of(&run, item, n);
        let got_ids: Vec<usize> = got.iter().map(|g| g.0).collect();
        for (rank, (id, _, _, score)) in got.iter().enumerate() {
            let want = scores[expected[rank]];
            assert!(
                (score - want).abs() <= SCORE_TOLERANCE,
                "query {qi} rank {}: score {score} vs brute force {want}:\n{context}",
                rank + 1
            );
            // The same id, unless two rows tie within the tolerance.
            assert!(
                *id == expected[rank] || (scores[*id] - want).abs() <= SCORE_TOLERANCE,
                "query {qi}: ids {got_ids:?}, brute force {expected:?} (scores {scores:?}):\n{context}"
            );
        }
        if qi == 0 {
            assert_eq!(got[0].1, q_paths[0], "an indexed query finds itself:\n{context}");
            assert!(got[0].3 >= SELF_SCORE, "{context}");
        }
    }
}

#[test]
fn classify_votes_like_search_and_evaluates_a_folder() {
    let f = fixture();
    let dir = Scratch::at(run_root().join("classify"));
    let queries = search_queries();
    let mut args = vec!["classify", s(&f.index)];
    args.extend(queries.iter().map(|q| s(q)));
    args.extend(["-k", "3"]);
    let run = lookalike(&args);
    run.assert_success();
    let context = run.describe();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), queries.len(), "one line per query:\n{context}");

    // The vote over the neighbours `search --json` lists for the same queries and k.
    let index = Index::load(&f.index).unwrap();
    let labels: Vec<Option<String>> = index.entries.iter().map(|e| e.label.clone()).collect();
    let search = &f32_search().run;
    for ((query, line), item) in queries.iter().zip(&lines).zip(search.json()) {
        let neighbours: Vec<Neighbor> =
            neighbours_of(search, &item, 3).iter().map(|n| Neighbor { index: n.0, score: n.3 as f32 }).collect();
        let expected = vote(&neighbours, &labels).expect("every row is labelled");
        assert_eq!(*line, format!("{} -> {expected}", query.display()), "{context}");
    }

    let confusion = dir.path("c.png");
    let run = lookalike(&["classify", s(&f.index), "--eval", s(&f.db), "-k", "3", "--confusion", s(&confusion)]);
    let context = run.describe();
    // The evaluation runs, and its status says a file was left out (the broken one).
    assert_eq!(run.code, Some(1), "{context}");
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("error:"), "{context}");
    let accuracy = run
        .stdout
        .lines()
        .find(|l| l.starts_with("accuracy "))
        .unwrap_or_else(|| panic!("no accuracy line:\n{context}"));
    // All readable labelled images of the folder, the broken one skipped.
    assert!(accuracy.ends_with(&format!(" of {})", f.expected.len())), "{context}");
    for label in ["cats", "dogs", "birds"] {
        assert!(run.stdout.lines().any(|l| l.trim_start().starts_with(label)), "no row for {label}:\n{context}");
    }
    assert!(run.stderr.contains("skipped") && run.stderr.contains(s(&f.broken)), "{context}");
    let png = image::open(&confusion).unwrap_or_else(|e| panic!("{}: {e}\n{context}", confusion.display())).to_rgb8();
    // Three classes: a 3 x 3 grid of equal cells with one-pixel lines.
    let (width, height) = png.dimensions();
    assert_eq!(width, height, "{context}");
    assert!(height > 4 && (height - 1) % 3 == 0, "{width}x{height} is not 3 cells:\n{context}");
    assert_no_temp_files(&confusion, &context);
}

/// Every bad input to `search` and `classify`: exit 1, `error: ...`, no panic, and the
/// index byte-identical afterwards.
#[test]
fn bad_search_and_classify_inputs_fail_cleanly() {
    let f = fixture();
    let dir = Scratch::at(run_root().join("bad-inputs"));
    let index = f.index.as_path();
    let original = fs::read(index).unwrap();
    let n = Index::load(index).unwrap().len();
    let query = f.path_of("cats/c1.png");
    let q = s(&query);
    let too_many = (n + 1).to_string();
    let garbage = dir.path("garbage.png");
    fs::write(&garbage, b"\x89PNG\r\n\x1a\n then nothing useful").unwrap();
    let missing = dir.path("missing.png");
    let random_bytes = dir.path("random.safetensors");
    fs::write(&random_bytes, (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    let truncated = dir.path("truncated.safetensors");
    fs::write(&truncated, &original[..original.len() / 2]).unwrap();
    let header_only = dir.path("header-only.safetensors");
    fs::write(&header_only, &original[..8]).unwrap();
    let k_range = format!("between 1 and the {n} images");
    let narrow = dir.path("narrow.npy");
    npy::write_f32(&narrow, &[2, 3], &[0.5; 6]).unwrap();
    let images_npy = dir.path("images.npy");
    npy::write_f32(&images_npy, &[1, 3, 2, 2], &[0.5; 12]).unwrap();
    let nan_features = dir.path("nan.npy");
    let mut values = vec![0.5; 2 * FEATURE_DIM];
    values[FEATURE_DIM + 7] = f32::NAN;
    npy::write_f32(&nan_features, &[2, FEATURE_DIM], &values).unwrap();
    // A query with no direction once centred: the index's own mean.
    let mean_row = dir.path("mean-row.npy");
    let mut values = vec![0.5; FEATURE_DIM];
    values.extend(Index::load(index).unwrap().mean.expect("a centred index"));
    npy::write_f32(&mean_row, &[2, FEATURE_DIM], &values).unwrap();
    let width = format!("[queries, {FEATURE_DIM}]");
    let out_dir = dir.path("out-dir");
    fs::create_dir(&out_dir).unwrap();

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["search", s(index), q, "-k", "0"], vec![&k_range, "got 0"]),
        (vec!["search", s(index), q, "-k", &too_many, "--json"], vec![&k_range]),
        (vec!["classify", s(index), q, "-k", "0"], vec![&k_range]),
        (vec!["classify", s(index), "--eval", s(&f.db), "-k", &too_many], vec![&k_range]),
        // Alone; beside a good query the good one is answered (tests/large_photos.rs).
        (vec!["search", s(index), s(&garbage), "-k", "1"], vec![s(&garbage), "cannot decode image"]),
        (vec!["search", s(index), s(&missing), "-k", "1"], vec![s(&missing)]),
        (vec!["search", s(index), s(&f.broken), "-k", "1", "--json"], vec![s(&f.broken)]),
        (vec!["classify", s(index), s(&garbage), "-k", "1"], vec![s(&garbage), "cannot decode image"]),
        (vec!["classify", s(index), "-k", "1"], vec!["give query images"]),
        (vec!["search", s(seed1_weights()), q, "-k", "1"], vec![s(seed1_weights()), "not a lookalike index"]),
        (vec!["search", s(&random_bytes), q, "-k", "1"], vec![s(&random_bytes), "not a valid safetensors file"]),
        (vec!["search", s(&truncated), q, "-k", "1"], vec![s(&truncated), "not a valid safetensors file"]),
        (vec!["classify", s(&header_only), q, "-k", "1"], vec![s(&header_only), "not a valid safetensors file"]),
        (vec!["search", s(&missing), q, "-k", "1"], vec![s(&missing)]),
        // Query features of the wrong shape, not finite, or missing.
        (vec!["search", s(index), "--features", s(&narrow), "-k", "1"], vec![s(&narrow), &width, "[2, 3]"]),
        (
            vec!["search", s(index), "--features", s(&images_npy), "-k", "1"],
            vec![s(&images_npy), &width, "[1, 3, 2, 2]"],
        ),
        (
            vec!["search", s(index), "--features", s(&nan_features), "-k", "1"],
            vec![s(&nan_features), "row 1 holds NaN at column 7"],
        ),
        (
            vec!["search", s(index), "--features", s(&mean_row), "-k", "1"],
            vec![s(&mean_row), "row 1 equals the index's mean"],
        ),
        (vec!["search", s(index), "--features", s(&missing), "-k", "1"], vec![s(&missing)]),
        (vec!["classify", s(&f.db), q, "-k", "1"], vec![s(&f.db)]),
        // Outputs that are folders are refused before any work.
        (vec!["search", s(index), q, "-k", "1", "--collage", s(&out_dir)], vec![s(&out_dir), "is a directory"]),
        (
            vec!["classify", s(index), "--eval", s(&f.db), "-k", "1", "--confusion", s(&out_dir)],
            vec![s(&out_dir), "is a directory"],
        ),
        (vec!["index", s(&f.db), "--seed", "1", "-o", s(&out_dir)], vec![s(&out_dir), "is a directory"]),
        (vec!["index", s(&f.db), "--add", "-o", s(&out_dir)], vec![s(&out_dir), "is a directory"]),
    ];
    for (args, needles) in &cases {
        let run = lookalike(args);
        assert_fails(&run, needles);
        assert!(fs::read(index).unwrap() == original, "the index changed:\n{}", run.describe());
        assert!(!missing.exists());
        assert!(out_dir.is_dir() && fs::read_dir(&out_dir).unwrap().next().is_none(), "{}", run.describe());
    }
    // Images and features at once, or features with a collage: clap's usage error.
    let features = dir.path("features.npy");
    npy::write_f32(&features, &[1, FEATURE_DIM], &vec![0.5; FEATURE_DIM]).unwrap();
    for extra in [vec![q], vec!["--collage", s(&out_dir)]] {
        let run = lookalike(&[vec!["search", s(index), "--features", s(&features), "-k", "1"], extra].concat());
        run.assert_error(2, None, &["--features", "cannot be used with"]);
    }
}

/// `--weights` whose SHA-256 differs from what the index records is refused, for `search`
/// and `classify` alike, as is an index whose recorded weights file is gone.
#[test]
fn search_with_other_weights_is_refused() {
    let index = file_index();
    let original = fs::read(index).unwrap();
    let dir = Scratch::at(run_root().join("other-weights"));
    // The same file with the lowest mantissa byte of its last value flipped: still valid
    // weights (finite, same shapes), but other bytes.
    let mut bytes = fs::read(seed1_weights()).unwrap();
    let at = bytes.len() - 4;
    bytes[at] ^= 1;
    let other = dir.path("other.safetensors");
    fs::write(&other, bytes).unwrap();
    let query = fixture().path_of("cats/c1.png");
    for command in ["search", "classify"] {
        let run = lookalike(&[command, s(index), s(&query), "-k", "1", "--weights", s(&other)]);
        assert_fails(&run, &["other weights", s(&other)]);
        assert!(fs::read(index).unwrap() == original, "{}", run.describe());
    }

    // A copy of the index whose weights file has moved: the error says to pass --weights.
    let moved = dir.path("moved-weights.safetensors");
    let mut copy = Index::load(index).unwrap();
    copy.provenance.weights_path = s(&dir.path("gone.safetensors")).to_string();
    copy.save(&moved).unwrap();
    let run = lookalike(&["search", s(&moved), s(&query), "-k", "1"]);
    assert_fails(&run, &["gone.safetensors", "--weights"]);
    // ... and with --weights of the right file it works.
    let run = lookalike(&["search", s(&moved), s(&query), "-k", "1", "--json", "--weights", s(seed1_weights())]);
    run.assert_success();
    assert_eq!(neighbours_of(&run, &run.json()[0], 1)[0].1, s(&query), "{}", run.describe());
}

/// Seeded weights and the file `weights random` writes for the same seed are one network:
/// a `--seed 1` index searches with `--weights` of that file (same neighbours), and an
/// index built from the file takes `--add --seed 1`.
#[test]
fn a_seed_and_its_weights_file_are_the_same_weights() {
    let f = fixture();
    let query = f.path_of("cats/c1.png");
    let search = |extra: &[&str]| {
        let run = lookalike(&[&["search", s(&f.index), s(&query), "-k", "3", "--json"][..], extra].concat());
        run.assert_success();
        neighbours_of(&run, &run.json()[0], 3)
    };
    assert_eq!(search(&["--weights", s(seed1_weights())]), search(&[]));

    let dir = Scratch::at(run_root().join("seed-and-file"));
    let index = dir.path("copy.safetensors");
    fs::copy(file_index(), &index).unwrap();
    let extra = dir.path("extra");
    fs::create_dir_all(&extra).unwrap();
    save_pattern(&extra.join("e1.png"), 50, 44, 41);
    let run = lookalike(&["index", s(&extra), "-o", s(&index), "--add", "--seed", "1"]);
    run.assert_success();
    assert_eq!(Index::load(&index).unwrap().len(), Index::load(file_index()).unwrap().len() + 1, "{}", run.describe());
    // Another seed is still refused.
    let run = lookalike(&["index", s(&extra), "-o", s(&index), "--add", "--seed", "2"]);
    assert_fails(&run, &["other weights"]);
}

/// `classify` needs labels: an index of files lying directly in the indexed folder has none.
#[test]
fn classify_without_labels_is_refused() {
    let f = fixture();
    let dir = Scratch::at(run_root().join("unlabelled"));
    // The fixture's index as a flat folder would make it: every label null.
    let mut index = Index::load(&f.index).unwrap();
    for entry in &mut index.entries {
        entry.label = None;
    }
    let path = dir.path("unlabelled.safetensors");
    index.save(&path).unwrap();
    let original = fs::read(&path).unwrap();
    let query = f.path_of("cats/c1.png");
    let confusion = dir.path("c.png");
    for extra in [vec![s(&query)], vec!["--eval", s(&f.db), "--confusion", s(&confusion)]] {
        let run = lookalike2(&["classify", s(&path), "-k", "1"], &extra);
        assert_fails(&run, &["has no labels", s(&path)]);
        assert!(fs::read(&path).unwrap() == original);
        assert!(!confusion.exists());
    }
    // `search` still works on it, with null labels.
    let run = lookalike(&["search", s(&path), s(&query), "-k", "2", "--json"]);
    run.assert_success();
    let top = neighbours_of(&run, &run.json()[0], 2);
    assert_eq!((top[0].1.as_str(), top[0].2.as_deref()), (s(&query), None), "{}", run.describe());
}
