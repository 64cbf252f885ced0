//! End-to-end tests of `lookalike index`: folders, labels and skipped files, the index file
//! as the library (and numpy users) read it, paths and the weights path stored relative to
//! the index's folder, f16 indexes, `index --add`, matrix units, and an index of nothing
//! readable as a clean `error:` exit that never replaces an existing index.
//!
//! The image set and its seeded index are `tests/common/index_fixture.rs`'s, built once
//! per test binary. One test needs a weights file; it is written once into Cargo's
//! per-target scratch directory under the name every CLI test binary uses (an atomic write
//! of identical bytes, so concurrent runs only ever see a complete file).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use lookalike::index::{Embeddings, Index};
use lookalike::model::FEATURE_DIM;
use safetensors::{Dtype, SafeTensors};

use common::cli::{assert_no_temp_files, lookalike, lookalike_in, s, seed1_weights, Run, Scratch};
use common::index_fixture::{
    assert_fails, f32_search, fixture, lookalike2, neighbours_of, run_root, save_pattern, search_queries, PRE,
};

/// [`assert_fails`] for runs that first report `preamble` on stderr.
fn assert_fails_after(run: &Run, preamble: Option<&str>, needles: &[&str]) {
    run.assert_error(1, preamble, needles);
}

fn norm(row: &[f32]) -> f64 {
    row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

#[test]
fn index_labels_by_first_level_folder_and_skips_unreadable_files() {
    let f = fixture();
    let run = &f.build;
    let context = run.describe();
    // The unreadable file is listed, and only it: not the .txt / .md files.
    assert!(run.stderr.contains("1 file(s) skipped, since they could not be used:"), "{context}");
    assert_eq!(run.stderr.matches(s(&f.broken)).count(), 1, "broken.png is not listed once:\n{context}");
    assert!(!run.stderr.contains("notes.txt") && !run.stderr.contains("readme.md"), "{context}");
    assert!(
        run.stdout.contains(&format!("{} images", f.expected.len())) && run.stdout.contains("centred"),
        "summary line:\n{context}"
    );

    let index = Index::load(&f.index).unwrap_or_else(|e| panic!("{e}\n{context}"));
    assert_eq!(index.len(), f.expected.len());
    assert_eq!(index.dim, FEATURE_DIM);
    let got: BTreeMap<String, String> = index
        .entries
        .iter()
        .map(|e| {
            let path = e.path.to_str().expect("UTF-8 paths in this test").to_string();
            (path, e.label.clone().unwrap_or_else(|| panic!("{} has no label", e.path.display())))
        })
        .collect();
    assert_eq!(got.len(), index.len(), "a path is indexed twice: {:?}", index.entries);
    assert_eq!(got, f.expected, "paths and labels");

    let mean = index.mean.as_ref().expect("--center stores `mean`");
    assert_eq!(mean.len(), FEATURE_DIM);
    assert!(mean.iter().all(|v| v.is_finite()) && norm(mean) > 0.0);
    assert_eq!(index.embeddings.len(), index.len() * FEATURE_DIM);
    assert!(matches!(index.embeddings, Embeddings::F32(_)), "default dtype is f32");
    for i in 0..index.len() {
        let row = index.embeddings.rows_f32(FEATURE_DIM, i, i + 1);
        assert!((norm(&row) - 1.0).abs() < 1e-5, "row {i} has norm {}", norm(&row));
    }
    let p = &index.provenance;
    assert_eq!((p.weights_path.as_str(), p.weights_sha256.as_str()), ("seed:1", "seed:1"));
    assert_eq!((p.preprocess.resize, p.preprocess.crop), (72, 64));

    // The raw file, as a safetensors reader without lookalike sees it.
    let bytes = fs::read(&f.index).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let embeddings = st.tensor("embeddings").unwrap();
    assert_eq!((embeddings.dtype(), embeddings.shape()), (Dtype::F32, &[index.len(), FEATURE_DIM][..]));
    let mean_view = st.tensor("mean").unwrap();
    assert_eq!((mean_view.dtype(), mean_view.shape()), (Dtype::F32, &[FEATURE_DIM][..]));
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().expect("string metadata");
    assert_eq!(meta["format"], "lookalike-index");
    assert_eq!(meta["count"], index.len().to_string());
    assert_eq!(meta["centered"], "true");
    let paths: Vec<String> = serde_json::from_str(&meta["paths"]).unwrap();
    let labels: Vec<Option<String>> = serde_json::from_str(&meta["labels"]).unwrap();
    // Images below the index's folder are stored relative to it.
    assert_eq!((meta["version"].as_str(), meta["paths_base"].as_str()), ("2", "index_dir"));
    let folder = f.index.parent().unwrap();
    assert!(paths.iter().all(|p| p.starts_with("db/")), "{paths:?}");
    assert_eq!(
        paths.iter().map(|p| folder.join(p)).collect::<Vec<_>>(),
        index.entries.iter().map(|e| e.path.clone()).collect::<Vec<_>>()
    );
    assert_eq!(labels, index.entries.iter().map(|e| e.label.clone()).collect::<Vec<_>>());
}

/// `index` and `search` with `--experimental-coop` run on the matrix units where the
/// adapter has them (the same neighbours as the f32 search here, scores within 1e-2), and
/// otherwise fail saying why, writing nothing (Debian 12's lavapipe has none;
/// `.ci/coop-tests` covers the units).
#[test]
fn index_and_search_on_matrix_units_are_close_or_refused() {
    let f = fixture();
    let out = run_root().join("coop-index.safetensors");
    let index = lookalike2(&["index", s(&f.db), "--seed", "1", "-o", s(&out), "--experimental-coop"], &PRE);
    match index.code {
        Some(0) => assert!(Index::load(&out).is_ok(), "{}", index.describe()),
        _ => {
            assert_fails(&index, &["no matrix units"]);
            assert!(!out.exists(), "a refused index wrote {}", out.display());
        }
    }

    let queries = search_queries();
    let mut args = vec!["search", s(&f.index)];
    args.extend(queries.iter().map(|q| s(q)));
    args.extend(["-k", "3", "--json", "--experimental-coop"]);
    let run = lookalike(&args);
    if run.code != Some(0) {
        assert_fails(&run, &["no matrix units"]);
        return;
    }
    let exact = &f32_search().run;
    for (item, want) in run.json().iter().zip(&exact.json()) {
        let (got, want) = (neighbours_of(&run, item, 3), neighbours_of(exact, want, 3));
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.0, w.0, "matrix units changed a neighbour:\n{}", run.describe());
            assert!((g.3 - w.3).abs() < 1e-2, "score {} vs {}:\n{}", g.3, w.3, run.describe());
        }
    }
}

/// `search --json` against an exact brute force in the test: features from `embed` with
/// the same weights file, centred with the stored mean, normalised, dotted with every row.
/// An index built from a relative folder stores absolute paths, so a search run from
/// another directory still opens the neighbours for its collage; a neighbour whose file is
/// gone becomes a grey tile with a warning, not a silent one.
#[test]
fn index_paths_work_from_any_directory() {
    let dir = Scratch::at(run_root().join("relative"));
    let images = [dir.path("imgs/a/x.png"), dir.path("imgs/b/y.png")];
    save_pattern(&images[0], 70, 60, 40);
    save_pattern(&images[1], 60, 70, 41);
    let run =
        lookalike_in(&dir.0, &[&["index", "imgs", "--seed", "1", "-o", "index.safetensors"][..], &PRE[..]].concat());
    run.assert_success();
    let index_path = dir.path("index.safetensors");
    let index = Index::load(&index_path).unwrap();
    let stored: Vec<PathBuf> = index.entries.iter().map(|e| PathBuf::from(&e.path)).collect();
    assert_eq!(stored, images.to_vec(), "{}", run.describe());

    // From the package root, not the folder the index was built in.
    let collage = dir.path("collage.png");
    let search = ["search", s(&index_path), s(&images[0]), "-k", "2", "--collage", s(&collage)];
    let run = lookalike(&search);
    run.assert_success();
    assert!(!run.stderr.contains("grey tile"), "{}", run.describe());

    // The folder moves with its index (paths stored relative to it): still found.
    let moved = Scratch::at(run_root().join("relative-moved"));
    fs::remove_dir(&moved.0).unwrap();
    fs::rename(&dir.0, &moved.0).unwrap();
    let (index_path, query, neighbour) =
        (moved.path("index.safetensors"), moved.path("imgs/a/x.png"), moved.path("imgs/b/y.png"));
    let collage = moved.path("collage.png");
    let search = ["search", s(&index_path), s(&query), "-k", "2", "--collage", s(&collage), "--json"];
    let run = lookalike(&search);
    run.assert_success();
    assert!(!run.stderr.contains("grey tile") && run.stdout.contains(s(&neighbour)), "{}", run.describe());
    fs::remove_file(&neighbour).unwrap();
    let run = lookalike(&search);
    run.assert_success();
    assert!(run.stderr.contains("collage: grey tile") && run.stderr.contains("y.png"), "{}", run.describe());
}

/// The metadata of the index file at `path`.
fn metadata_of(path: &Path) -> BTreeMap<String, String> {
    let bytes = fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    header.metadata().clone().unwrap().into_iter().collect()
}

/// The weights path an index records resolves like its image paths: a file below the
/// index's folder is stored relative to it, so a relative `--weights` works from any
/// directory and the folder can move with its index; an absolute path, or one outside the
/// folder, is stored absolute. An index written before this rule (no `weights_path_base`)
/// is read with its recorded path as it was: relative to the working directory.
#[test]
fn the_weights_path_resolves_like_the_image_paths() {
    let dir = Scratch::at(run_root().join("relative-weights"));
    let lib = dir.path("lib");
    let elsewhere = dir.path("elsewhere");
    fs::create_dir_all(lib.join("weights")).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    fs::copy(seed1_weights(), lib.join("weights/w.safetensors")).unwrap();
    fs::copy(seed1_weights(), dir.path("outside.safetensors")).unwrap();
    save_pattern(&lib.join("db/a/x.png"), 70, 60, 50);
    save_pattern(&lib.join("db/b/y.png"), 60, 70, 51);
    let build = |weights: &str, out: &str| {
        let run = lookalike_in(&lib, &[&["index", "db", "--weights", weights, "-o", out][..], &PRE[..]].concat());
        run.assert_success();
        lib.join(out)
    };
    // From `elsewhere`, a directory the weights path means nothing relative to.
    let search_from_elsewhere = |index: &Path, query: &Path| {
        let run = lookalike_in(&elsewhere, &["search", s(index), s(query), "-k", "1", "--json"]);
        run.assert_success();
        assert_eq!(neighbours_of(&run, &run.json()[0], 1)[0].1, s(query), "{}", run.describe());
    };

    let relative = build("weights/w.safetensors", "relative.safetensors");
    let meta = metadata_of(&relative);
    assert_eq!(meta["weights_path"], "weights/w.safetensors");
    assert_eq!(meta["weights_path_base"], "index_dir");
    let loaded = Index::load(&relative).unwrap();
    assert_eq!(loaded.provenance.weights_path, s(&lib.join("weights/w.safetensors")));
    search_from_elsewhere(&relative, &lib.join("db/a/x.png"));

    let absolute_weights = lib.join("weights/w.safetensors");
    let absolute = build(s(&absolute_weights), "absolute.safetensors");
    assert_eq!(metadata_of(&absolute)["weights_path"], "weights/w.safetensors", "below the folder: relative");
    let outside = build("../outside.safetensors", "outside.safetensors");
    assert_eq!(metadata_of(&outside)["weights_path"], s(&dir.path("outside.safetensors")));
    search_from_elsewhere(&outside, &lib.join("db/b/y.png"));

    // The folder moves with its index and weights: still found; the outside file still is.
    let moved = dir.path("lib-moved");
    fs::rename(&lib, &moved).unwrap();
    search_from_elsewhere(&moved.join("relative.safetensors"), &moved.join("db/b/y.png"));
    search_from_elsewhere(&moved.join("outside.safetensors"), &moved.join("db/a/x.png"));

    // An index written before the rule: its relative path, read as it was recorded.
    let old = moved.join("old.safetensors");
    let bytes = fs::read(moved.join("relative.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut meta = metadata_of(&moved.join("relative.safetensors"));
    for key in ["crc32", "weights_path_base"] {
        meta.remove(key);
    }
    let tensors: Vec<_> = st.tensors().into_iter().filter(|(name, _)| name != "embeddings_crc32").collect();
    fs::write(&old, safetensors::serialize(tensors, Some(meta.into_iter().collect())).unwrap()).unwrap();
    assert_eq!(Index::load(&old).unwrap().provenance.weights_path, "weights/w.safetensors");
    let query = moved.join("db/a/x.png");
    let run = lookalike_in(&moved, &["search", s(&old), s(&query), "-k", "1"]);
    run.assert_success();
    let run = lookalike_in(&elsewhere, &["search", s(&old), s(&query), "-k", "1"]);
    assert_fails(&run, &["weights/w.safetensors", "cannot be read", "--weights"]);
}

#[test]
fn f16_index_ranks_like_the_f32_index() {
    let f = fixture();
    let dir = Scratch::at(run_root().join("f16"));
    let index_path = dir.path("index-f16.safetensors");
    lookalike2(&["index", s(&f.db), "--seed", "1", "-o", s(&index_path), "--center", "--dtype", "f16"], &PRE)
        .assert_success();
    let bytes = fs::read(&index_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("embeddings").unwrap();
    assert_eq!((view.dtype(), view.shape()), (Dtype::F16, &[f.expected.len(), FEATURE_DIM][..]));
    assert_eq!(st.tensor("mean").unwrap().dtype(), Dtype::F32, "the mean stays f32");
    let index16 = Index::load(&index_path).unwrap();
    let index32 = Index::load(&f.index).unwrap();
    assert!(matches!(index16.embeddings, Embeddings::F16(_)));
    assert_eq!(index16.entries, index32.entries);
    // The same features rounded to f16: rows agree to f16 precision.
    let (a, b) = (
        index16.embeddings.rows_f32(FEATURE_DIM, 0, index16.len()),
        index32.embeddings.rows_f32(FEATURE_DIM, 0, index32.len()),
    );
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "f16 rows differ from f32 by up to {worst}");

    let queries = search_queries();
    let mut args = vec!["search", s(&index_path)];
    args.extend(queries.iter().map(|q| s(q)));
    args.extend(["-k", "3", "--json"]);
    let run = lookalike(&args);
    run.assert_success();
    let f32_run = &f32_search().run;
    let items16 = run.json();
    let items32 = f32_run.json();
    assert_eq!(items16.len(), queries.len(), "{}", run.describe());
    for (query, (i16, i32)) in queries.iter().zip(items16.iter().zip(&items32)) {
        let (n16, n32) = (neighbours_of(&run, i16, 3), neighbours_of(f32_run, i32, 3));
        assert_eq!(n16[0].0, n32[0].0, "top-1 of {} differs: f16 {n16:?}, f32 {n32:?}", query.display());
        assert!((n16[0].3 - n32[0].3).abs() < 2e-3, "top-1 scores {} vs {}", n16[0].3, n32[0].3);
    }
}

#[test]
fn add_appends_only_new_images_with_the_same_weights() {
    let f = fixture();
    let dir = Scratch::at(run_root().join("add"));
    let index_path = dir.path("index.safetensors");
    fs::copy(&f.index, &index_path).unwrap();
    let before = Index::load(&index_path).unwrap();
    let before_bytes = fs::read(&index_path).unwrap();
    let fish = [dir.path("more/fish/f1.png"), dir.path("more/fish/f2.jpg")];
    save_pattern(&fish[0], 58, 42, 30);
    save_pattern(&fish[1], 42, 58, 31);
    let more = dir.path("more");

    // Other weights: refused before any work, the index untouched.
    let run = lookalike2(&["index", s(&more), "--add", "--seed", "2", "-o", s(&index_path)], &PRE);
    assert_fails(&run, &["other weights", s(&index_path)]);
    assert!(fs::read(&index_path).unwrap() == before_bytes, "a refused --add changed the index");
    assert_no_temp_files(&index_path, &run.describe());

    // Settings other than the index's own would be ignored: refused, naming each one.
    let run = lookalike(&[
        "index",
        s(&more),
        "--add",
        "--dtype",
        "f16",
        "--resize",
        "100",
        "--crop",
        "64",
        "-o",
        s(&index_path),
    ]);
    assert_fails(&run, &["--add keeps", "--dtype F16 (it stores F32)", "--resize 100 (it used 72)"]);
    assert!(!run.stderr.contains("--crop"), "--crop 64 is the index's own:\n{}", run.describe());
    assert!(fs::read(&index_path).unwrap() == before_bytes, "a refused --add changed the index");

    // The index's own weights (no --seed: taken from the index).
    let run = lookalike(&["index", s(&more), "--add", "-o", s(&index_path)]);
    run.assert_success();
    let after = Index::load(&index_path).unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    assert_eq!(after.len(), before.len() + 2, "{}", run.describe());
    assert_eq!(after.entries[..before.len()], before.entries[..], "old entries changed");
    let added: BTreeMap<&str, Option<&str>> = after.entries[before.len()..]
        .iter()
        .map(|e| (e.path.to_str().expect("UTF-8 paths in this test"), e.label.as_deref()))
        .collect();
    assert_eq!(added, fish.iter().map(|p| (s(p), Some("fish"))).collect());
    assert_eq!(after.mean, before.mean, "--add keeps the stored mean");
    assert_eq!(after.provenance, before.provenance);
    let old = before.len() * FEATURE_DIM;
    match (&before.embeddings, &after.embeddings) {
        (Embeddings::F32(b), Embeddings::F32(a)) => {
            assert!(a[..old].iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "old rows changed");
        }
        other => panic!("dtype changed: {other:?}"),
    }
    for i in before.len()..after.len() {
        let row = after.embeddings.rows_f32(FEATURE_DIM, i, i + 1);
        assert!((norm(&row) - 1.0).abs() < 1e-5, "added row {i} has norm {}", norm(&row));
    }
    // An added image is found as itself.
    let run = lookalike(&["search", s(&index_path), s(&fish[1]), "-k", "1", "--json"]);
    run.assert_success();
    let top = neighbours_of(&run, &run.json()[0], 1);
    assert_eq!((top[0].1.as_str(), top[0].2.as_deref()), (s(&fish[1]), Some("fish")), "{}", run.describe());

    // Adding the same folders again adds nothing: also with an explicit --seed 1, and with
    // the folders spelled differently (the paths are compared as files, not as strings).
    let more_dot = format!("{}/.", s(&more));
    let db_up = format!("{}/../{}", s(&f.db), f.db.file_name().unwrap().to_string_lossy());
    for args in [
        vec![s(&more)],
        // The index's own settings, spelled out: accepted.
        [&[s(&more), "--dtype", "f32", "--center"][..], &PRE[..]].concat(),
        vec![s(&f.db), "--seed", "1"],
        vec![&more_dot],
        vec![&db_up, "--seed", "1"],
    ] {
        let run = lookalike2(&["index", "--add", "-o", s(&index_path)], &args);
        run.assert_success();
        let again = Index::load(&index_path).unwrap();
        assert_eq!(again.len(), after.len(), "paths duplicated by a second --add:\n{}", run.describe());
        assert!(again == after, "a second --add changed the index:\n{}", run.describe());
    }
}

/// `index` of a folder without a readable image fails and never replaces an existing index.
#[test]
fn index_of_nothing_readable_fails_and_keeps_the_existing_index() {
    let f = fixture();
    let dir = Scratch::at(run_root().join("nothing-readable"));
    let out = dir.path("index.safetensors");
    let original = fs::read(&f.index).unwrap();
    let empty = dir.path("empty");
    fs::create_dir_all(empty.join("cats")).unwrap();
    fs::write(empty.join("cats/notes.txt"), b"not an image").unwrap();
    let unreadable = dir.path("unreadable");
    fs::create_dir_all(unreadable.join("cats")).unwrap();
    fs::write(unreadable.join("cats/a.png"), b"not a png").unwrap();
    fs::write(unreadable.join("b.jpg"), b"").unwrap();
    let cases: [(&Path, &[&str]); 3] = [
        (&empty, &["no .jpg, .jpeg or .png images", s(&empty)]),
        (&unreadable, &["could be read", s(&unreadable)]),
        (&dir.path("no-such-folder"), &["no-such-folder"]),
    ];
    for (folder, needles) in cases {
        fs::write(&out, &original).unwrap();
        let run = lookalike2(&["index", s(folder), "--seed", "1", "-o", s(&out)], &PRE);
        // Unreadable files are listed before the error.
        let preamble = (folder == unreadable.as_path()).then_some("2 file(s) skipped, since they could not be used:");
        assert_fails_after(&run, preamble, needles);
        assert!(fs::read(&out).unwrap() == original, "a failed index replaced the existing one:\n{}", run.describe());
        assert_no_temp_files(&out, &run.describe());
    }
    // Without an existing index nothing is created.
    fs::remove_file(&out).unwrap();
    let run = lookalike2(&["index", s(&unreadable), "--seed", "1", "-o", s(&out)], &PRE);
    assert_fails_after(&run, Some("2 file(s) skipped, since they could not be used:"), &["could be read"]);
    assert!(!out.exists(), "{}", run.describe());
    assert_no_temp_files(&out, &run.describe());
}
