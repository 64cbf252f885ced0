//! Running the `lookalike` binary from integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
pub fn lookalike(args: &[&str]) -> Run {
    lookalike_with_env(args, &[])
}

/// Runs the binary with extra environment variables.
pub fn lookalike_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_in(None, args, env)
}

/// Runs the binary in another working directory.
#[allow(dead_code)] // not every test binary changes directory
pub fn lookalike_in(dir: &Path, args: &[&str]) -> Run {
    run_in(Some(dir), args, &[])
}

fn run_in(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lookalike"));
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("failed to start the lookalike binary");
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// `lookalike weights random --seed 1`, written once per test binary into Cargo's
/// per-target scratch directory under one name shared by all CLI tests (an atomic write of
/// identical bytes, so concurrent runs only ever see a complete file).
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
