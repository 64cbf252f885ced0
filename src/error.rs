//! The one error type of the library.

use std::path::PathBuf;

/// Everything that can go wrong in lookalike, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{filter}. On headless Linux install Mesa's software Vulkan driver \
         (lavapipe): `apt-get install mesa-vulkan-drivers libvulkan1`; on Debian 12 take Mesa 25 \
         from bookworm-backports for speed. {hint}"
    )]
    NoAdapter { filter: String, hint: String },

    #[error("could not open a device on adapter {adapter}: {reason}")]
    RequestDevice { adapter: String, reason: String },

    #[error("shader {shader} (entry point {entry}) failed to compile or validate: {message}")]
    Shader { shader: &'static str, entry: &'static str, message: String },

    #[error("GPU error in {context}: {message}")]
    Gpu { context: String, message: String },

    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch { op: String, expected: String, got: String },

    #[error("tensor {name} is missing from the weights file")]
    MissingTensor { name: String },

    #[error("{path}: tensor {name} has dtype {dtype}; expected {expected}")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String, expected: &'static str },

    #[error("tensor {name} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite { name: String, index: usize, value: f32 },

    #[error("{what} came out non-finite ({value} at index {index}): {cause}")]
    NonFiniteOutput { what: String, index: usize, value: f32, cause: String },

    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },

    #[error("index {path}: {what} {problem}: the file is damaged; rebuild it or restore a copy")]
    DamagedIndex { path: PathBuf, what: String, problem: String },

    #[error("{path} is a directory, not {expected}")]
    IsADirectory { path: PathBuf, expected: &'static str },

    #[error("{path}: not a valid .npy file: {reason}")]
    Npy { path: PathBuf, reason: String },

    #[error("{path}: cannot decode image: {reason}")]
    Image { path: PathBuf, reason: String },

    #[error("input of {height}x{width} is too small: {what} needs at least {min}x{min}")]
    InputTooSmall { height: usize, width: usize, min: usize, what: String },

    #[error(
        "{} is being written by another process, which holds its lock {}; wait for it \
         (leave out --no-wait to queue behind it)",
        index.display(), lock.display()
    )]
    IndexLocked { index: PathBuf, lock: PathBuf },

    #[error("{}: {source}", path.display())]
    InFile { path: PathBuf, source: Box<Error> },

    #[error("{}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// `self`, said of the file at `path` when its message names no file (a tensor missing
    /// from, or a value wrong in, a file the caller read).
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Error::MissingTensor { .. }
            | Error::NonFinite { .. }
            | Error::ShapeMismatch { .. }
            | Error::InvalidArgument(_) => Error::InFile { path: path.to_path_buf(), source: Box::new(self) },
            named => named,
        }
    }

    /// The message without the file it concerns, for lists that print the path beside it
    /// (`path: reason`).
    pub fn without_path(&self) -> String {
        match self {
            Error::Image { reason, .. } => format!("cannot decode image: {reason}"),
            Error::Io { source, .. } => source.to_string(),
            Error::Safetensors { reason, .. } | Error::Npy { reason, .. } | Error::Dataset { reason, .. } => {
                reason.clone()
            }
            other => other.to_string(),
        }
    }

    pub(crate) fn shape(op: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::ShapeMismatch { op: op.into(), expected: expected.to_string(), got: got.to_string() }
    }
}
