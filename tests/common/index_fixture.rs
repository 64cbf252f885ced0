//! The image set, index and search that the `index`, `search` and `classify` tests of the
//! binary share (`tests/cli_index.rs`, `tests/cli_search.rs`).
//!
//! GPU runs use the default adapter (lavapipe, a slow software driver, in CI), so the image
//! set is tiny: three classes of two or three images of 40-70 pixels, 64x64 after
//! `--resize 72 --crop 64`. The shared index is built once per test binary ([`fixture`])
//! from seeded weights (`--seed 1`: no weights file, the index records `seed:1` and search
//! regenerates them).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use super::cli::{lookalike, pattern, s, Run};

/// Preprocessing of every index here: 64x64 inputs.
pub const PRE: [&str; 4] = ["--resize", "72", "--crop", "64"];

/// `lookalike FIRST... REST...`.
pub fn lookalike2(first: &[&str], rest: &[&str]) -> Run {
    lookalike(&[first, rest].concat())
}

/// Where this binary's files go: one folder per process under the system temp dir. The
/// shared fixture lives as long as the process, so folders of earlier runs (whose process
/// is gone) are removed when the first test starts.
pub fn run_root() -> &'static Path {
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

/// Saves `pattern(width, height, seed)` at `path` (format from the extension), creating
/// parent folders.
pub fn save_pattern(path: &Path, width: u32, height: u32, seed: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let format = match path.extension().unwrap().to_string_lossy().to_ascii_lowercase().as_str() {
        "png" => image::ImageFormat::Png,
        "jpg" | "jpeg" => image::ImageFormat::Jpeg,
        other => panic!("no format for .{other}"),
    };
    pattern(width, height, seed).save_with_format(path, format).unwrap();
}

/// The shared image set and its seeded, centred f32 index.
pub struct Fixture {
    /// The indexed folder.
    pub db: PathBuf,
    /// Readable images under `db` and their expected labels.
    pub expected: BTreeMap<String, String>,
    /// The unreadable `db/birds/broken.png`.
    pub broken: PathBuf,
    /// Images that are not in the index.
    pub new_png: PathBuf,
    pub new_jpg: PathBuf,
    /// `index db --seed 1 -o index --center --resize 72 --crop 64`.
    pub index: PathBuf,
    pub build: Run,
}

impl Fixture {
    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.db.join(rel)
    }
}

pub fn fixture() -> &'static Fixture {
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

/// The queries of [`f32_search`], in order.
pub fn search_queries() -> Vec<PathBuf> {
    let f = fixture();
    vec![f.path_of("cats/c1.png"), f.new_png.clone(), f.path_of("dogs/puppies/d3.png"), f.path_of("birds/b1.jpeg")]
}

/// `search INDEX QUERIES -k 3 --json --collage C` on the fixture's index, run once.
pub struct SearchRun {
    pub run: Run,
    pub collage: PathBuf,
}

pub fn f32_search() -> &'static SearchRun {
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
pub fn neighbours_of(run: &Run, item: &Value, k: usize) -> Vec<(usize, String, Option<String>, f64)> {
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
pub fn assert_fails(run: &Run, needles: &[&str]) {
    run.assert_error(1, None, needles);
}
