//! Running the `lookalike` binary from integration tests, and the test images and scratch
//! folders they share with library tests. The binary exists only with the `cli` feature.

use std::path::{Path, PathBuf};
#[cfg(feature = "cli")]
use std::process::Command;
#[cfg(feature = "cli")]
use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use serde_json::Value;

/// What one run of the binary did.
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn describe(&self) -> String {
        format!(
            "lookalike {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    pub fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.describe());
        assert!(!self.stderr.contains("panicked"), "{}", self.describe());
    }

    /// Asserts a failed run: exit code `code` (1 for lookalike's errors, 2 for clap's), no
    /// panic, nothing on stdout, and stderr (after at most the `GPU: ...` banner) starting
    /// with `error: ` and containing every needle. With a `preamble`, stderr must start with
    /// that instead, and the `error: ` line be its last.
    pub fn assert_error(&self, code: i32, preamble: Option<&str>, needles: &[&str]) {
        let context = self.describe();
        assert_eq!(self.code, Some(code), "expected exit code {code}:\n{context}");
        assert!(!self.stderr.contains("panicked"), "a panic instead of an error:\n{context}");
        assert!(self.stdout.is_empty(), "a failed run printed to stdout:\n{context}");
        let mut message = match self.stderr.split_once('\n') {
            Some((banner, rest)) if banner.starts_with("GPU: ") => rest,
            _ => self.stderr.as_str(),
        };
        if let Some(preamble) = preamble {
            assert!(message.starts_with(preamble), "stderr does not start with {preamble:?}:\n{context}");
            let at = message.find("\nerror: ").unwrap_or_else(|| panic!("no `error: ` line:\n{context}"));
            message = &message[at + 1..];
            assert_eq!(message.trim_end().lines().count(), 1, "the error is not the last line:\n{context}");
        }
        assert!(message.starts_with("error: "), "stderr does not start with `error: `:\n{context}");
        for needle in needles {
            assert!(message.contains(needle), "the error does not mention {needle:?}:\n{context}");
        }
    }

    /// The `--json` output, which must be one JSON array.
    pub fn json(&self) -> Vec<Value> {
        match serde_json::from_str(&self.stdout) {
            Ok(Value::Array(items)) => items,
            Ok(other) => panic!("--json printed {other}, not an array:\n{}", self.describe()),
            Err(e) => panic!("--json output is not JSON ({e}):\n{}", self.describe()),
        }
    }
}

/// Runs the binary built for these tests.
#[cfg(feature = "cli")]
pub fn lookalike(args: &[&str]) -> Run {
    lookalike_with_env(args, &[])
}

/// Runs the binary with extra environment variables.
#[cfg(feature = "cli")]
pub fn lookalike_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_in(None, args, env)
}

/// Runs the binary in another working directory.
#[cfg(feature = "cli")]
#[allow(dead_code)] // not every test binary changes directory
pub fn lookalike_in(dir: &Path, args: &[&str]) -> Run {
    run_in(Some(dir), args, &[])
}

#[cfg(feature = "cli")]
/// The binary built for these tests, reading no tuning cache of the user's: its cache
/// folder (`LOOKALIKE_CACHE_DIR`) is an empty one of the tests' own, so every command runs
/// with the built-in launch shapes unless a test sets its own folder.
pub fn command() -> Command {
    static EMPTY_CACHE: OnceLock<PathBuf> = OnceLock::new();
    let cache = EMPTY_CACHE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-tuning-cache");
        // Emptied on first use: nothing a test wrote there by mistake survives into another run.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let mut command = Command::new(env!("CARGO_BIN_EXE_lookalike"));
    command.env("LOOKALIKE_CACHE_DIR", cache).env_remove("LOOKALIKE_TUNING");
    command
}

#[cfg(feature = "cli")]
fn run_in(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = command();
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command.args(args).envs(env.iter().copied()).output().expect("failed to start the lookalike binary");
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A deterministic, busy RGB pattern; `seed` makes different images.
pub fn pattern(width: u32, height: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = x.wrapping_mul(37 + seed) ^ y.wrapping_mul(11 + 3 * seed);
        Rgb([v as u8, (v >> 3) as u8 ^ (seed as u8).wrapping_mul(50), (x * 4 + y * seed) as u8])
    })
}

pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// `lookalike weights random --seed 1`, written once per test binary into Cargo's
/// per-target scratch directory under one name shared by all CLI tests (an atomic write of
/// identical bytes, so concurrent runs only ever see a complete file).
#[cfg(feature = "cli")]
pub fn seed1_weights() -> &'static Path {
    static WEIGHTS: OnceLock<PathBuf> = OnceLock::new();
    WEIGHTS.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-resnet50-seed1.safetensors");
        lookalike(&["weights", "random", "--seed", "1", "-o", s(&path)]).assert_success();
        path
    })
}

/// A fresh directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates `dir` empty (removing what an earlier run left there).
    pub fn at(dir: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// No temporary sibling of `out` (the atomic writer's `.NAME.tmp-*`) survives.
pub fn assert_no_temp_files(out: &Path, context: &str) {
    let prefix = format!(".{}.tmp", out.file_name().unwrap().to_string_lossy());
    for entry in std::fs::read_dir(out.parent().unwrap()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(&prefix), "temporary file {name} left behind:\n{context}");
    }
}
