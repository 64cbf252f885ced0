//! The one error type of the library.

use std::path::PathBuf;

/// Everything that can go wrong in lookalike, with enough context to act on.
/// New variants may come in later versions, so a `match` needs a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "no GPU adapter found{filter}. On headless Linux install Mesa's software Vulkan driver \
         (lavapipe): `apt-get install mesa-vulkan-drivers libvulkan1`; on Debian 12 take Mesa 25 \
         from bookworm-backports for speed. {hint}"
    )]
    /// No adapter matched: none visible, or none passing the builder's filters.
    NoAdapter {
        /// The filters applied (backends, adapter name), as text.
        filter: String,
        /// The adapters seen, or that none was.
        hint: String,
    },

    #[error("could not open a device on adapter {adapter}: {reason}")]
    /// The adapter refused to open a device with the limits and features asked for.
    RequestDevice {
        /// The adapter: name, backend, type.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },

    #[error("shader {shader} (entry point {entry}) failed to compile or validate: {message}")]
    /// A WGSL shader did not compile or validate on this device.
    Shader {
        /// The shader file's name.
        shader: &'static str,
        /// The entry point.
        entry: &'static str,
        /// The compiler's message.
        message: String,
    },

    #[error("GPU error in {context}: {message}")]
    /// wgpu reported an error (validation, out of memory, device lost).
    Gpu {
        /// What was being done.
        context: String,
        /// wgpu's message.
        message: String,
    },

    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    /// An operand's size or shape is not what the operation needs.
    ShapeMismatch {
        /// The operation or operand.
        op: String,
        /// What it needs.
        expected: String,
        /// What it was given.
        got: String,
    },

    #[error("tensor {name} is missing from the weights file")]
    /// A tensor the network needs is not in its weights file.
    MissingTensor {
        /// The tensor's name.
        name: String,
    },

    #[error("{path}: tensor {name} has dtype {dtype}; expected {expected}")]
    /// A tensor of a file is stored in a type lookalike does not read there.
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its type in the file.
        dtype: String,
        /// The types accepted.
        expected: &'static str,
    },

    #[error("tensor {name} holds a non-finite value ({value}) at flat index {index}")]
    /// An input holds NaN or an infinity.
    NonFinite {
        /// The input (tensor, query rows).
        name: String,
        /// Flat index of the first such value.
        index: usize,
        /// The value.
        value: f32,
    },

    #[error("{what} came out non-finite ({value} at index {index}): {cause}")]
    /// A computation on finite inputs came out NaN or infinite.
    NonFiniteOutput {
        /// What came out so (the features of an image, a query's scores).
        what: String,
        /// Index of the first such value within it.
        index: usize,
        /// The value.
        value: f32,
        /// Why it can happen, and what to do.
        cause: String,
    },

    #[error("{path}: not a valid safetensors file: {reason}")]
    /// A file is not valid safetensors (weights, index).
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    #[error("index {path}: {what} {problem}: the file is damaged; rebuild it or restore a copy")]
    /// An index file fails its checks (checksums, values, layout).
    DamagedIndex {
        /// The index file.
        path: PathBuf,
        /// The part found damaged (a tensor, a row, the metadata).
        what: String,
        /// What is wrong with it.
        problem: String,
    },

    #[error("{path} is a directory, not {expected}")]
    /// A folder was given where a file is needed.
    IsADirectory {
        /// The folder.
        path: PathBuf,
        /// The kind of file expected.
        expected: &'static str,
    },

    #[error("{path}: not a valid .npy file: {reason}")]
    /// A file is not a `.npy` array lookalike reads.
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    #[error("{path}: cannot decode image: {reason}")]
    /// An image file cannot be decoded or used.
    Image {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    #[error("input of {height}x{width} is too small: {what} needs at least {min}x{min}")]
    /// An input image is smaller than the network takes.
    InputTooSmall {
        /// Its height.
        height: usize,
        /// Its width.
        width: usize,
        /// The smallest side accepted.
        min: usize,
        /// The network or layer that needs it.
        what: String,
    },

    #[error(
        "{} is being written by another process, which holds its lock {}; wait for it \
         (leave out --no-wait to queue behind it)",
        index.display(), lock.display()
    )]
    /// Another process is writing the index (and waiting was not asked for).
    IndexLocked {
        /// The index file.
        index: PathBuf,
        /// The lock file it holds.
        lock: PathBuf,
    },

    #[error("{}: {source}", path.display())]
    /// An error about the contents of a file, said of that file ([`Error::in_file`]).
    InFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: Box<Error>,
    },

    #[error("{}: {reason}", path.display())]
    /// A training data set cannot be read or used.
    Dataset {
        /// Its file or folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    #[error("Milvus at {uri}: {action} failed: {reason}")]
    /// A Milvus server refused a request or could not be reached (`milvus` feature).
    Milvus {
        /// The server.
        uri: String,
        /// What was asked of it (connect, create collection `c`, upsert rows 0..500, ...).
        action: String,
        /// The server's or the connection's answer.
        reason: String,
    },

    #[error("invalid argument: {0}")]
    /// An argument outside what the call accepts, with what to do instead.
    InvalidArgument(String),

    #[error("{path}: {source}")]
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
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
