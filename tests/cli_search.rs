//! End-to-end tests of `lookalike index`, `search` and `classify`: the index file as the
//! library (and numpy users) read it, `search --json` against an exact brute force, f16
//! indexes, collages, `index --add`, k-NN classification with `--eval`, and every kind of
//! bad input as a clean `error:` exit that never damages an existing index.
//!
//! GPU runs use the default adapter (lavapipe, a slow software driver, in CI), so the image
//! set is tiny: three classes of two or three images of 40-70 pixels, 64x64 after
//! `--resize 72 --crop 64`. The shared index is built once per test binary ([`fixture`])
//! from seeded weights (`--seed 1`: no weights file, the index records `seed:1` and search
//! regenerates them). Only the brute-force check needs a weights file, because `embed`
//! takes no seed; it is written once into Cargo's per-target scratch directory under the
//! same name `tests/cli.rs` uses (an atomic write of identical bytes, so concurrent runs of
//! both binaries only ever see a complete file).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use lookalike::classify::vote;
use lookalike::index::{Embeddings, Index};
use lookalike::model::FEATURE_DIM;
use lookalike::npy;
use lookalike::render::{QUERY_GAP, TILE_GAP};
use lookalike::search::Neighbor;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use common::cli::{assert_no_temp_files, lookalike, lookalike_in, s, seed1_weights, Run, Scratch};

/// Preprocessing of every index here: 64x64 inputs.
const PRE: [&str; 4] = ["--resize", "72", "--crop", "64"];
/// Cosine of an indexed image with itself, through search's GPU preprocessing.
const SELF_SCORE: f64 = 0.9999;
/// `search --json` scores against the brute force in the test.
const SCORE_TOLERANCE: f64 = 1e-4;

/// `lookalike FIRST... REST...`.
fn lookalike2(first: &[&str], rest: &[&str]) -> Run {
    lookalike(&[first, rest].concat())
}

/// Where this binary's files go: one folder per process under the system temp dir. The
/// shared fixture lives as long as the process, so folders of earlier runs (whose process
/// is gone) are removed when the first test starts.
fn run_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let prefix = "lookalike-cli-search-";
        let tmp = std::env::temp_dir();
        if Path::new("/proc/self").exists() {
            for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix(prefix) {
                    if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                        let _ = fs::remove_dir_all(entry.path());
                    }
                }
            }
        }
        let root = tmp.join(format!("{prefix}{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        root
    })
}

/// A deterministic, busy RGB pattern; `seed` makes different images.
fn pattern(width: u32, height: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = x.wrapping_mul(37 + seed) ^ y.wrapping_mul(11 + 3 * seed);
        Rgb([v as u8, (v >> 3) as u8 ^ (seed as u8).wrapping_mul(50), (x * 4 + y * seed) as u8])
    })
}

/// Saves `pattern(width, height, seed)` at `path` (format from the extension), creating
/// parent folders.
fn save_pattern(path: &Path, width: u32, height: u32, seed: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let format = match path.extension().unwrap().to_string_lossy().to_ascii_lowercase().as_str() {
        "png" => image::ImageFormat::Png,
        "jpg" | "jpeg" => image::ImageFormat::Jpeg,
        other => panic!("no format for .{other}"),
    };
    pattern(width, height, seed).save_with_format(path, format).unwrap();
}

/// The shared image set and its seeded, centred f32 index.
struct Fixture {
    /// The indexed folder.
    db: PathBuf,
    /// Readable images under `db` and their expected labels.
    expected: BTreeMap<String, String>,
    /// The unreadable `db/birds/broken.png`.
    broken: PathBuf,
    /// Images that are not in the index.
    new_png: PathBuf,
    new_jpg: PathBuf,
    /// `index db --seed 1 -o index --center --resize 72 --crop 64`.
    index: PathBuf,
    build: Run,
}

impl Fixture {
    fn path_of(&self, rel: &str) -> PathBuf {
        self.db.join(rel)
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = run_root().join("fixture");
        fs::create_dir_all(&root).unwrap();
        let db = root.join("db");
        // (path under db, width, height, seed, label)
        let images = [
            ("cats/c1.png", 48, 40, 1, "cats"),
            ("cats/c2.jpg", 56, 56, 2, "cats"),
            ("cats/c3.png", 40, 52, 3, "cats"),
            ("dogs/d1.png", 60, 44, 4, "dogs"),
            ("dogs/D2.PNG", 44, 60, 5, "dogs"),
            // Nested one level deeper: the label is still the first-level folder.
            ("dogs/puppies/d3.png", 50, 50, 6, "dogs"),
            ("birds/b1.jpeg", 64, 48, 7, "birds"),
            ("birds/b2.png", 70, 50, 8, "birds"),
        ];
        let mut expected = BTreeMap::new();
        for (rel, w, h, seed, label) in images {
            let path = db.join(rel);
            save_pattern(&path, w, h, seed);
            expected.insert(s(&path).to_string(), label.to_string());
        }
        let broken = db.join("birds/broken.png");
        fs::write(&broken, b"\x89PNG but not really").unwrap();
        // Neither is an image by its extension: never read, never listed.
        fs::write(db.join("notes.txt"), b"not an image").unwrap();
        fs::write(db.join("birds/readme.md"), b"# birds").unwrap();
        let new_png = root.join("queries/new.png");
        save_pattern(&new_png, 52, 45, 20);
        let new_jpg = root.join("queries/new.jpg");
        save_pattern(&new_jpg, 45, 66, 21);

        let index = root.join("index.safetensors");
        let build = lookalike2(&["index", s(&db), "--seed", "1", "-o", s(&index), "--center"], &PRE);
        build.assert_success();
        Fixture { db, expected, broken, new_png, new_jpg, index, build }
    })
}

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

/// The queries of [`f32_search`], in order.
fn search_queries() -> Vec<PathBuf> {
    let f = fixture();
    vec![f.path_of("cats/c1.png"), f.new_png.clone(), f.path_of("dogs/puppies/d3.png"), f.path_of("birds/b1.jpeg")]
}

/// `search INDEX QUERIES -k 3 --json --collage C` on the fixture's index, run once.
struct SearchRun {
    run: Run,
    collage: PathBuf,
}

fn f32_search() -> &'static SearchRun {
    static SEARCH: OnceLock<SearchRun> = OnceLock::new();
    SEARCH.get_or_init(|| {
        let f = fixture();
        let collage = run_root().join("fixture/collage.png");
        let queries = search_queries();
        let mut args = vec!["search", s(&f.index)];
        args.extend(queries.iter().map(|q| s(q)));
        args.extend(["-k", "3", "--json", "--collage", s(&collage)]);
        let run = lookalike(&args);
        run.assert_success();
        SearchRun { run, collage }
    })
}

/// One query's neighbours from `--json`, checked for shape: `(index, path, label, score)`.
fn neighbours_of(run: &Run, item: &Value, k: usize) -> Vec<(usize, String, Option<String>, f64)> {
    let context = run.describe();
    let list = item["neighbors"].as_array().unwrap_or_else(|| panic!("no `neighbors` array in {item}:\n{context}"));
    assert_eq!(list.len(), k, "neighbour count in {item}:\n{context}");
    list.iter()
        .enumerate()
        .map(|(i, n)| {
            assert_eq!(n["rank"].as_u64(), Some(i as u64 + 1), "rank of {n}:\n{context}");
            let index = n["index"].as_u64().unwrap_or_else(|| panic!("`index` of {n}:\n{context}")) as usize;
            let path = n["path"].as_str().unwrap_or_else(|| panic!("`path` of {n}:\n{context}"));
            let label = match &n["label"] {
                Value::Null => None,
                Value::String(l) => Some(l.clone()),
                other => panic!("`label` {other} is neither a string nor null:\n{context}"),
            };
            let score = n["score"].as_f64().unwrap_or_else(|| panic!("`score` of {n}:\n{context}"));
            (index, path.to_string(), label, score)
        })
        .collect()
}

/// A failed run with lookalike's own exit code 1 ([`Run::assert_error`]).
fn assert_fails(run: &Run, needles: &[&str]) {
    run.assert_error(1, None, needles);
}

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
