//! The case loop every loader shares: seeded cases, a watchdog against hangs, the checks
//! common to all loaders (no panic, allocation within the bound, time) and the report.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use lookalike::rng::Rng;
use lookalike::Error;

use crate::alloc::{self, Usage};

/// A case slower than this fails the test; the watchdog aborts the run at `HANG`.
const CASE_LIMIT: Duration = Duration::from_secs(5);
const HANG: Duration = Duration::from_secs(60);
/// Requests beyond a case's bound by more than this are refused, not served.
const CAP_SLACK: u64 = 1 << 30;

/// What one case did.
pub struct Case {
    pub mutation: &'static str,
    /// `ok`, `ok (as the original)`, or the error's kind.
    pub outcome: String,
    pub problems: Vec<String>,
}

/// A loader call: its value (`None` if it panicked) and what was wrong with the call.
pub struct Run<T> {
    pub value: Option<T>,
    pub problems: Vec<String>,
}

/// The running case of each loader, for the watchdog.
static RUNNING: Mutex<BTreeMap<&'static str, (usize, Instant)>> = Mutex::new(BTreeMap::new());

struct Stats {
    slowest: (Duration, usize),
    /// Highest peak / bound seen, with its case.
    fullest: (f64, usize),
}

thread_local! {
    static STATS: std::cell::RefCell<Stats> =
        const { std::cell::RefCell::new(Stats { slowest: (Duration::ZERO, 0), fullest: (0.0, 0) }) };
    static CASE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The message and place of the last panic on this thread.
    static LAST_PANIC: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// Keeps each panic's message and place for the report instead of printing it (and a
/// backtrace, whose symbolisation would allocate inside the case); panics outside cases
/// (the test's own assertions) print as usual.
fn quiet_panics() {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if alloc::armed() {
                LAST_PANIC.set(info.to_string());
            } else {
                default(info);
            }
        }));
    });
}

/// Calls `load` as one case of `loader`: a panic, a peak above `bound` bytes or a run longer
/// than [`CASE_LIMIT`] is a problem.
pub fn run<T>(loader: &str, bound: u64, load: impl FnOnce() -> T) -> Run<T> {
    let case = CASE.get();
    let label = format!("{loader} case {case}");
    let start = Instant::now();
    let (value, Usage { peak, refused }) = alloc::measure(&label, bound.saturating_add(CAP_SLACK), load);
    let elapsed = start.elapsed();
    let mut problems = Vec::new();
    let value = match value {
        Ok(v) => Some(v),
        Err(_) => {
            problems.push(format!("panicked: {}", LAST_PANIC.take()));
            None
        }
    };
    if peak > bound {
        problems.push(format!("allocated {peak} bytes at peak, above its bound of {bound}"));
    }
    if let Some(size) = refused {
        problems.push(format!("asked for {size} bytes beyond its cap, refused"));
    }
    if elapsed > CASE_LIMIT {
        problems.push(format!("took {elapsed:?}, above {CASE_LIMIT:?}"));
    }
    STATS.with_borrow_mut(|s| {
        if elapsed > s.slowest.0 {
            s.slowest = (elapsed, case);
        }
        let fill = peak as f64 / bound.max(1) as f64;
        if fill > s.fullest.0 {
            s.fullest = (fill, case);
        }
    });
    Run { value, problems }
}

/// The kind of a library error, for the outcome counts.
pub fn kind(error: &Error) -> String {
    let name = match error {
        Error::Safetensors { .. } => "Safetensors",
        Error::DamagedIndex { .. } => "DamagedIndex",
        Error::Npy { .. } => "Npy",
        Error::Dataset { .. } => "Dataset",
        Error::Image { .. } => "Image",
        Error::Io { .. } => "Io",
        Error::MissingTensor { .. } => "MissingTensor",
        Error::UnsupportedDtype { .. } => "UnsupportedDtype",
        Error::NonFinite { .. } => "NonFinite",
        Error::ShapeMismatch { .. } => "ShapeMismatch",
        Error::InvalidArgument(_) => "InvalidArgument",
        other => return format!("unexpected {other:?}"),
    };
    format!("error {name}")
}

/// A fresh folder for the cases' files, removed on drop (a failing test too): in memory
/// (/dev/shm) where there is one, so thousands of small writes do not wait on a disk that
/// other jobs keep busy.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(loader: &str) -> Self {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("lookalike-fuzz-{loader}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How many cases to run: `default` times `LOOKALIKE_FUZZ_SCALE` (default 1).
pub fn cases(default: usize) -> usize {
    let scale: f64 = std::env::var("LOOKALIKE_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    (default as f64 * scale).round() as usize
}

/// The case `LOOKALIKE_FUZZ_CASE=<loader>:<case>` asks for, if any.
fn only() -> Option<(String, usize)> {
    let spec = std::env::var("LOOKALIKE_FUZZ_CASE").ok()?;
    let (loader, case) = spec.split_once(':')?;
    Some((loader.to_string(), case.parse().ok()?))
}

/// Aborts the process when a case runs for [`HANG`]: a hung loader must fail, not stall CI.
fn start_watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(250));
            let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            for (loader, (case, since)) in running.iter() {
                if since.elapsed() > HANG {
                    eprintln!(
                        "fuzz: {loader} case {case} has run for {HANG:?}: a hang (LOOKALIKE_FUZZ_CASE={loader}:{case})"
                    );
                    std::process::abort();
                }
            }
        });
    });
}

/// CPU seconds this thread has used (Linux; None elsewhere): wall time alone misleads on
/// a shared machine.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at its closing paren;
    // utime and stime are fields 14 and 15, in clock ticks of (nearly always) 1/100 s.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Runs `count` seeded cases of `loader` and prints its report; fails on any problem.
pub fn fuzz(loader: &'static str, seed: u64, count: usize, mut one: impl FnMut(&mut Rng) -> Case) {
    start_watchdog();
    quiet_panics();
    let only = only();
    let picked: Vec<usize> = match &only {
        Some((name, case)) if name == loader => vec![*case],
        Some(_) => return,
        None => (0..count).collect(),
    };
    let start = Instant::now();
    let cpu_start = thread_cpu_seconds();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    // Per mutation: cases, and how many of them loaded.
    let mut mutations: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for &case in &picked {
        CASE.set(case);
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).insert(loader, (case, Instant::now()));
        let mut rng = Rng::new(seed ^ (case as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let result = one(&mut rng);
        *outcomes.entry(result.outcome.clone()).or_default() += 1;
        let counts = mutations.entry(result.mutation).or_default();
        counts.0 += 1;
        counts.1 += usize::from(result.outcome.starts_with("ok"));
        if only.is_some() {
            println!("{loader} case {case}: {} -> {} {:?}", result.mutation, result.outcome, result.problems);
        }
        for problem in result.problems {
            // Messages can quote whole headers: keep each to a line.
            let short: String = problem.chars().take(240).collect();
            failures.push(format!("{loader} case {case} ({}): {short}", result.mutation));
        }
    }
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).remove(loader);
    let (slowest, fullest) = STATS.with_borrow(|s| (s.slowest, s.fullest));
    let cpu = match (cpu_start, thread_cpu_seconds()) {
        (Some(a), Some(b)) => format!(" ({:.1} s of CPU)", b - a),
        _ => String::new(),
    };
    let list = |m: &mut dyn Iterator<Item = (String, usize)>| m.map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>();
    println!(
        "fuzz {loader}: {} cases in {:.1} s{cpu}; slowest case {} ({:.1} ms); highest allocation {:.0}% of its bound (case {})\n  \
         mutations (cases, of which loaded): {}\n  outcomes: {}",
        picked.len(),
        start.elapsed().as_secs_f64(),
        slowest.1,
        slowest.0.as_secs_f64() * 1e3,
        fullest.0 * 100.0,
        fullest.1,
        mutations.iter().map(|(k, (n, ok))| format!("{k} {n} ({ok} ok)")).collect::<Vec<_>>().join(", "),
        list(&mut outcomes.into_iter()).join(", "),
    );
    // One line per kind of problem (digits blanked): how often, and the first case.
    let mut kinds: BTreeMap<String, (usize, &String)> = BTreeMap::new();
    for failure in &failures {
        let problem = failure.split_once("): ").map_or(failure.as_str(), |(_, p)| p);
        let mut signature = String::new();
        for c in problem.chars().take_while(|c| !"{[(".contains(*c)) {
            if !c.is_ascii_digit() {
                signature.push(c);
            } else if !signature.ends_with('#') {
                signature.push('#');
            }
        }
        kinds.entry(signature).or_insert((0, failure)).0 += 1;
    }
    let summary: Vec<String> = kinds.values().map(|(n, first)| format!("{n} x, first: {first}")).collect();
    assert!(
        failures.is_empty(),
        "{} problems in {loader} (reproduce one with LOOKALIKE_FUZZ_CASE={loader}:<case>):\n{}",
        failures.len(),
        summary.join("\n")
    );
}
