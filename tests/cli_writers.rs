//! The index's writers and the folders it walks, end to end through the binary: concurrent
//! writers lose no rows, a crashed write leaves nothing behind, links and loops are walked
//! once, names that are not UTF-8 survive, and text output keeps one path per line.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use lookalike::index::{Index, Wait, WriteLock};

use common::cli::{assert_no_temp_files, lookalike, s, Run, Scratch};

/// Small inputs: the tests are about files, not features.
const PRE: [&str; 4] = ["--resize", "72", "--crop", "64"];

fn scratch(name: &str) -> Scratch {
    Scratch::at(std::env::temp_dir().join(format!("lookalike-cli-writers-{}-{name}", std::process::id())))
}

fn save_image(path: &Path, seed: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(80, 72, |x, y| {
        let v = x.wrapping_mul(37 + seed) ^ y.wrapping_mul(11 + 3 * seed);
        Rgb([v as u8, (v >> 3) as u8, (x * 4 + y * seed) as u8])
    })
    .save_with_format(path, image::ImageFormat::Png)
    .unwrap();
}

fn index_args<'a>(dir: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    [&["index", s(dir), "--seed", "1", "-o", s(out)][..], &PRE[..], extra].concat()
}

fn indexed_paths(index: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Index::load(index).unwrap().entries.into_iter().map(|e| e.path).collect();
    paths.sort();
    paths
}

/// Starts the binary without waiting for it.
fn spawn(args: &[&str]) -> std::process::Child {
    common::cli::command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start the lookalike binary")
}

fn finish(child: std::process::Child, args: &[&str]) -> Run {
    let output = child.wait_with_output().unwrap();
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn concurrent_adds_keep_every_row_and_a_held_lock_makes_writers_wait_or_fail() {
    let dir = scratch("concurrent");
    let out = dir.path("x.safetensors");
    save_image(&dir.path("base/a/0.png"), 0);
    lookalike(&index_args(&dir.path("base"), &out, &[])).assert_success();
    for (folder, seeds) in [("one", 1..4), ("two", 4..7)] {
        for seed in seeds {
            save_image(&dir.path(&format!("{folder}/c/{seed}.png")), seed);
        }
    }

    // Two writers at once, twice over: each run adds its folder's three rows.
    for round in 0..2 {
        let out = dir.path(&format!("round{round}.safetensors"));
        fs::copy(dir.path("x.safetensors"), &out).unwrap();
        let (one, two) = (dir.path("one"), dir.path("two"));
        let args_one = index_args(&one, &out, &["--add"]);
        let args_two = index_args(&two, &out, &["--add"]);
        let (first, second) = (spawn(&args_one), spawn(&args_two));
        finish(first, &args_one).assert_success();
        finish(second, &args_two).assert_success();
        let rows = indexed_paths(&out);
        assert_eq!(rows.len(), 7, "round {round}: a writer's rows were lost: {rows:?}");
        assert_no_temp_files(&out, &format!("round {round}"));
    }

    // A held lock: --no-wait fails naming the index, readers go on, a plain writer waits.
    let held = WriteLock::acquire(&out, Wait::NoWait, |_| panic!("nobody else writes")).unwrap();
    let one = dir.path("one");
    let args = index_args(&one, &out, &["--add", "--no-wait"]);
    lookalike(&args).assert_error(1, None, &["x.safetensors", "being written by another process"]);
    let search = lookalike(&["search", s(&out), s(&dir.path("one/c/1.png")), "-k", "1"]);
    search.assert_success();
    let args = index_args(&one, &out, &["--add"]);
    let mut waiting = spawn(&args);
    std::thread::sleep(Duration::from_secs(3));
    assert!(waiting.try_wait().unwrap().is_none(), "a writer did not wait for the lock");
    assert_eq!(indexed_paths(&out).len(), 1, "a writer wrote while another held the lock");
    drop(held);
    let run = finish(waiting, &args);
    run.assert_success();
    assert!(run.stderr.contains("waiting for another process writing"), "{}", run.describe());
    assert_eq!(indexed_paths(&out).len(), 4);
}

#[test]
fn the_next_write_removes_what_a_crashed_write_left() {
    let dir = scratch("crash");
    let out = dir.path("x.safetensors");
    save_image(&dir.path("db/0.png"), 0);
    // A writer killed during its final write leaves its temporary, and no lock on it.
    let stale = dir.path(".x.safetensors.tmp-4194303-7");
    fs::write(&stale, b"half an index").unwrap();
    // A build killed at some point of its run (wherever it was) leaves nothing that blocks.
    let db = dir.path("db");
    let args = index_args(&db, &out, &[]);
    let mut killed = spawn(&args);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = killed.kill();
    let _ = killed.wait();
    let run = lookalike(&index_args(&db, &out, &["--no-wait"]));
    run.assert_success();
    assert!(!stale.exists(), "a crashed write's temporary survived the next write:\n{}", run.describe());
    assert_no_temp_files(&out, &run.describe());
    assert_eq!(indexed_paths(&out).len(), 1);
}

#[cfg(unix)]
#[test]
fn links_and_loops_are_walked_once_and_listed() {
    use std::os::unix::fs::symlink;
    let dir = scratch("links");
    let db = dir.path("db");
    save_image(&db.join("cats/0.png"), 0);
    save_image(&db.join("dogs/1.png"), 1);
    symlink("..", db.join("cats/loop")).unwrap(); // a loop back to db
    symlink(db.join("cats"), db.join("felines")).unwrap(); // a second name of a folder
    symlink(db.join("dogs/1.png"), db.join("dogs/again.png")).unwrap(); // a second name of a file
    fs::hard_link(db.join("cats/0.png"), db.join("cats/hard.png")).unwrap();
    symlink(dir.path("nowhere.png"), db.join("dogs/broken.png")).unwrap();
    // Folders reached through many paths and no loop: 2^24 spellings if walked naively.
    let mut level = db.join("deep");
    fs::create_dir_all(&level).unwrap();
    for depth in 0..24 {
        let next = db.join(format!("deep{depth}"));
        fs::create_dir_all(&next).unwrap();
        symlink(&next, level.join("a")).unwrap();
        symlink(&next, level.join("b")).unwrap();
        level = next;
    }
    save_image(&level.join("bottom.png"), 2);

    let expected = |paths: &[&str]| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = paths.iter().map(|p| fs::canonicalize(db.join(p)).unwrap()).collect();
        v.sort();
        v
    };
    for (follow, out_name) in [(false, "plain.safetensors"), (true, "follow.safetensors")] {
        let out = dir.path(out_name);
        let extra: &[&str] = if follow { &["--follow-links"] } else { &[] };
        let args = index_args(&db, &out, extra);
        let started = Instant::now();
        let run = lookalike(&args);
        run.assert_success();
        assert!(started.elapsed() < Duration::from_secs(300), "the walk took {:?}", started.elapsed());
        let got: Vec<PathBuf> = indexed_paths(&out).iter().map(|p| fs::canonicalize(p).unwrap()).collect();
        let context = run.describe();
        // Each real file once, whatever the links and whether they are followed.
        assert_eq!(got, expected(&["cats/0.png", "deep23/bottom.png", "dogs/1.png"]), "{context}");
        assert!(run.stderr.contains("dogs/broken.png: a link that leads nowhere"), "{context}");
        assert!(run.stderr.contains("dogs/again.png: the same file as"), "{context}");
        assert!(run.stderr.contains("cats/hard.png: the same file as"), "{context}");
        if follow {
            assert!(run.stderr.contains("cats/loop"), "the loop is not listed:\n{context}");
        } else {
            assert!(run.stderr.contains("felines: a link to a folder: not followed"), "{context}");
        }
    }
    // DIR itself a link: walked, and not listed as a link passed over.
    symlink(&db, dir.path("dblink")).unwrap();
    let out = dir.path("through-link.safetensors");
    let run = lookalike(&index_args(&dir.path("dblink"), &out, &[]));
    run.assert_success();
    assert_eq!(indexed_paths(&out).len(), 3, "{}", run.describe());
    assert!(!run.stderr.contains("dblink: a link"), "{}", run.describe());
}

#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_are_stored_exactly_and_added_once() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("bytes");
    let db = dir.path("db");
    let odd = db.join("k").join(OsStr::from_bytes(b"caf\xe9 \xff.png"));
    save_image(&odd, 3);
    save_image(&db.join("k/plain.png"), 4);
    // Two classes whose names differ only in a byte that is not UTF-8.
    save_image(&db.join(OsStr::from_bytes(b"caf\xe8")).join("x.png"), 5);
    save_image(&db.join(OsStr::from_bytes(b"caf\xe9")).join("y.png"), 6);
    let out = dir.path("x.safetensors");
    lookalike(&index_args(&db, &out, &[])).assert_success();
    let mut labels: Vec<String> = Index::load(&out).unwrap().entries.into_iter().filter_map(|e| e.label).collect();
    labels.sort();
    assert_eq!(labels, ["caf\\xe8", "caf\\xe9", "k", "k"], "two folders, two classes");
    let paths = indexed_paths(&out);
    assert!(paths.iter().any(|p| p.ends_with(odd.strip_prefix(&db).unwrap())), "{paths:?}");
    assert!(paths.iter().all(|p| p.exists()), "a stored path does not open: {paths:?}");
    // The file is known by its exact name, and a hard link to an indexed image is that
    // image: nothing to add.
    let again = lookalike(&index_args(&db, &out, &["--add"]));
    again.assert_success();
    assert_eq!(indexed_paths(&out), paths, "{}", again.describe());
    fs::create_dir_all(dir.path("more")).unwrap();
    fs::hard_link(db.join("k/plain.png"), dir.path("more/same.png")).unwrap();
    let linked = lookalike(&index_args(&dir.path("more"), &out, &["--add"]));
    linked.assert_success();
    assert_eq!(indexed_paths(&out), paths, "a hard link was added again:\n{}", linked.describe());
    // Beside the indexed image, under a name sorting first: still the indexed file, not a
    // new one whose second name is the indexed image.
    fs::hard_link(db.join("k/plain.png"), db.join("k/a-first.png")).unwrap();
    let beside = lookalike(&index_args(&db, &out, &["--add"]));
    beside.assert_success();
    assert_eq!(indexed_paths(&out), paths, "{}", beside.describe());
    assert!(!beside.stderr.contains("the same file as"), "{}", beside.describe());
    // JSON output spells it as Python's os.fsdecode does.
    let run = lookalike(&["search", s(&out), s(&db.join("k/plain.png")), "-k", "2", "--json"]);
    run.assert_success();
    assert!(run.stdout.contains(r"caf\udce9 \udcff.png"), "{}", run.describe());
}

#[test]
fn text_output_keeps_one_line_per_path_and_lists_a_skipped_file_once() {
    let dir = scratch("lines");
    let db = dir.path("db");
    let newline = db.join("a\nforged line.png");
    save_image(&newline, 5);
    save_image(&db.join("b.png"), 6);
    fs::write(db.join("broken.png"), b"not a png").unwrap();
    let out = dir.path("x.safetensors");
    let run = lookalike(&index_args(&db, &out, &[]));
    run.assert_success();
    assert_eq!(run.stderr.matches("broken.png").count(), 1, "the skipped path is not listed once:\n{}", run.describe());
    let run = lookalike(&["search", s(&out), s(&db.join("b.png")), "-k", "2"]);
    run.assert_success();
    assert!(run.stdout.contains("a\\nforged line.png"), "{}", run.describe());
    assert!(!run.stdout.lines().any(|l| l.starts_with("forged line")), "a path broke a line:\n{}", run.describe());
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.describe());
}
