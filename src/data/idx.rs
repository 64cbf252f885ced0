//! IDX files, the format of MNIST and Fashion-MNIST: a big-endian header (magic number,
//! then one u32 per dimension) followed by the values, plain or gzip-compressed.
//!
//! Sizes come from the header, so each is checked against the file before anything is
//! allocated: a plain file must hold exactly what its header declares; a gzip file must be
//! able to (deflate packs at most [`MAX_INFLATE_RATIO`] bytes into one) and is then read in
//! one stream, growing its buffer only as data actually arrive.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::LabelledImages;
use crate::error::{Error, Result};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images, rows, columns).
pub(crate) const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub(crate) const LABELS_MAGIC: u32 = 0x0000_0801;

/// The most bytes deflate can produce from one byte of input (its densest packing is about
/// 1032:1), rounded up: a gzip file declaring more than this is truncated or damaged.
// for the fuzz tests
#[doc(hidden)]
pub const MAX_INFLATE_RATIO: u64 = 1040;

/// Fashion-MNIST's ten classes, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// File stems of the training split (images, labels) and of the test split.
const TRAIN: [&str; 2] = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"];
const TEST: [&str; 2] = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Greyscale images as an IDX image file holds them: `count` images of `rows x cols`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of each image.
    pub rows: usize,
    /// Columns of each image.
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image, each row-major.
    pub pixels: Vec<u8>,
}

/// The file `dir/stem` or, where that is missing, `dir/stem.gz`; `None` if neither exists.
/// The plain file wins when both are there (it reads faster).
pub fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    let plain = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    [plain, gz].into_iter().find(|p| p.is_file())
}

/// Whether `dir` holds an IDX training set (`train-images-idx3-ubyte`, plain or `.gz`).
pub(crate) fn is_idx_folder(dir: &Path) -> bool {
    find(dir, TRAIN[0]).is_some()
}

/// Reads the IDX set in `dir`: `train-images-idx3-ubyte[.gz]` with
/// `train-labels-idx1-ubyte[.gz]`, and, where `t10k-images-idx3-ubyte[.gz]` is present, the
/// test split with its labels. Images have one channel. There are `max label + 1` classes
/// (over both splits), named after Fashion-MNIST's ([`FASHION_MNIST_CLASSES`]) when the
/// folder's path says "fashion" (any case), else "0", "1", ...
pub fn load_idx(dir: &Path) -> Result<(LabelledImages, Option<LabelledImages>)> {
    let fail = |reason: String| Error::Dataset { path: dir.to_path_buf(), reason };
    let images = find(dir, TRAIN[0]).ok_or_else(|| fail(format!("no {0} or {0}.gz here", TRAIN[0])))?;
    let labels = find(dir, TRAIN[1])
        .ok_or_else(|| fail(format!("{} has no labels: {1} or {1}.gz is missing", images.display(), TRAIN[1])))?;
    let train = read_split(&images, &labels)?;
    let test = match (find(dir, TEST[0]), find(dir, TEST[1])) {
        (None, None) => None,
        (Some(images), Some(labels)) => Some(read_split(&images, &labels)?),
        (Some(images), None) => {
            return Err(fail(format!("{} has no labels: {1} or {1}.gz is missing", images.display(), TEST[1])))
        }
        (None, Some(labels)) => {
            return Err(fail(format!("{} has no images: {1} or {1}.gz is missing", labels.display(), TEST[0])))
        }
    };
    let fashion = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .to_string_lossy()
        .to_lowercase()
        .contains("fashion");
    let splits = std::iter::once(&train).chain(&test);
    let classes = splits.flat_map(|s| s.images.labels.iter()).max().map_or(0, |&m| m as usize + 1);
    let class_names: Vec<String> = if fashion {
        for split in std::iter::once(&train).chain(&test) {
            if let Some((i, &label)) = split.images.labels.iter().enumerate().find(|(_, &l)| l >= 10) {
                return Err(Error::Dataset {
                    path: split.labels_path.clone(),
                    reason: format!("label {i} is {label}, but Fashion-MNIST has 10 classes (0 to 9)"),
                });
            }
        }
        FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..classes).map(|c| c.to_string()).collect()
    };
    let named = |mut split: Split| {
        split.images.class_names = class_names.clone();
        split.images
    };
    Ok((named(train), test.map(named)))
}

/// One split and where its labels came from (for errors).
struct Split {
    images: LabelledImages,
    labels_path: PathBuf,
}

fn read_split(images_path: &Path, labels_path: &Path) -> Result<Split> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    if labels.len() != images.count {
        return Err(Error::Dataset {
            path: labels_path.to_path_buf(),
            reason: format!(
                "holds {} labels for the {} images of {}: the two files must hold the same number",
                labels.len(),
                images.count,
                images_path.display()
            ),
        });
    }
    Ok(Split {
        images: LabelledImages {
            pixels: images.pixels,
            height: images.rows,
            width: images.cols,
            channels: 1,
            labels: labels.into_iter().map(u32::from).collect(),
            class_names: Vec::new(),
        },
        labels_path: labels_path.to_path_buf(),
    })
}

/// Reads an IDX image file (magic `0x0803`), plain or gzip (a name ending `.gz`).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let mut file = IdxFile::open(path)?;
    let [count, rows, cols] = file.header(IMAGES_MAGIC, "an IDX image file (unsigned bytes, 3 dimensions)")?;
    let [count, rows, cols] = [count, rows, cols].map(|v| v as usize);
    if count == 0 || rows == 0 || cols == 0 {
        return Err(file.fail(format!("the header declares {count} images of {rows}x{cols}: no pixels to train on")));
    }
    let len = (count as u64).checked_mul(rows as u64).and_then(|n| n.checked_mul(cols as u64));
    let len = len.ok_or_else(|| file.fail(format!("{count} images of {rows}x{cols}: the size overflows")))?;
    let pixels = file.body(len, &format!("{count} images of {rows}x{cols}"))?;
    Ok(IdxImages { count, rows, cols, pixels })
}

/// Reads an IDX label file (magic `0x0801`), plain or gzip (a name ending `.gz`).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let mut file = IdxFile::open(path)?;
    let [count] = file.header(LABELS_MAGIC, "an IDX label file (unsigned bytes, 1 dimension)")?;
    file.body(count as u64, &format!("{count} labels"))
}

/// `magic` against the `expected` magic number of `what`.
fn check_magic(magic: u32, expected: u32, what: &str) -> Result<(), String> {
    if magic == expected {
        return Ok(());
    }
    let hint = match magic {
        IMAGES_MAGIC => " (this is an image file)",
        LABELS_MAGIC => " (this is a label file)",
        m if m >> 16 == 0x1f8b => " (gzip data: name the file .gz)",
        _ => "",
    };
    Err(format!("magic number 0x{magic:08X}{hint}; {what} starts with 0x{expected:08X}"))
}

/// An open IDX file: its byte stream (inflated for gzip) and what bounds its size.
struct IdxFile {
    path: PathBuf,
    reader: Box<dyn Read>,
    /// Bytes on disk.
    file_len: u64,
    gzip: bool,
    /// Bytes read from the stream so far.
    read: u64,
}

impl IdxFile {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let gzip = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
        let reader: Box<dyn Read> = match gzip {
            true => Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file))),
            false => Box::new(file),
        };
        Ok(Self { path: path.to_path_buf(), reader, file_len, gzip, read: 0 })
    }

    fn fail(&self, reason: String) -> Error {
        Error::Dataset { path: self.path.clone(), reason }
    }

    /// A read error: a gzip stream cut short or damaged, or the file's own I/O error.
    fn read_error(&self, e: std::io::Error) -> Error {
        match (self.gzip, e.kind()) {
            (true, ErrorKind::UnexpectedEof) => {
                self.fail(format!("truncated: the gzip stream ends early ({e}); download the file again"))
            }
            (true, _) => self.fail(format!("the gzip data are corrupt ({e}): download the file again")),
            (false, _) => Error::io(&self.path, e),
        }
    }

    /// The `N` dimensions after the magic number, which must be `magic` (that of `what`);
    /// all big-endian.
    fn header<const N: usize>(&mut self, magic: u32, what: &str) -> Result<[u32; N]> {
        let found = self.read_u32s::<1>(4 * (N + 1))?[0];
        check_magic(found, magic, what).map_err(|reason| self.fail(reason))?;
        self.read_u32s(4 * (N + 1))
    }

    /// `N` big-endian u32s; `header_len` is for the message when the file ends first.
    fn read_u32s<const N: usize>(&mut self, header_len: usize) -> Result<[u32; N]> {
        let mut words = [0u32; N];
        for word in &mut words {
            // Not `read_exact`: a stream's own end (a read of 0) must be told apart from a
            // gzip stream that breaks off, which also reports an unexpected end.
            let mut bytes = [0u8; 4];
            let mut filled = 0;
            while filled < 4 {
                match self.reader.read(&mut bytes[filled..]) {
                    Ok(0) => {
                        return Err(self.fail(format!("truncated: the file ends inside its {header_len}-byte header")))
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.read_error(e)),
                }
            }
            *word = u32::from_be_bytes(bytes);
            self.read += 4;
        }
        Ok(words)
    }

    /// The `len` bytes after the header, which must end the file; `what` describes them.
    fn body(&mut self, len: u64, what: &str) -> Result<Vec<u8>> {
        let header = self.read;
        let capacity = if self.gzip {
            if len > self.file_len.saturating_mul(MAX_INFLATE_RATIO) {
                return Err(self.fail(format!(
                    "the header declares {what} ({len} bytes), more than {} compressed bytes can hold: \
                     the file is truncated or damaged",
                    self.file_len
                )));
            }
            // Most data sets compress less than 8:1; more room is made only as data arrive.
            len.min(self.file_len.saturating_mul(8))
        } else {
            let have = self.file_len.saturating_sub(header);
            if have < len {
                return Err(self.truncated(what, len, have));
            }
            if have > len {
                return Err(self.trailing(what, have - len));
            }
            len
        };
        let no_room = || self.fail(format!("cannot allocate {capacity} bytes for {what}"));
        let mut data = Vec::new();
        data.try_reserve_exact(usize::try_from(capacity).map_err(|_| no_room())?).map_err(|_| no_room())?;
        let got = (&mut self.reader).take(len).read_to_end(&mut data).map_err(|e| self.read_error(e))?;
        if (got as u64) < len {
            return Err(self.truncated(what, len, got as u64));
        }
        // One more read reaches the end of the stream, where gzip checks its CRC and length.
        let mut extra = [0u8; 4096];
        let mut trailing = 0u64;
        loop {
            match self.reader.read(&mut extra) {
                Ok(0) => break,
                Ok(n) => trailing += n as u64,
                Err(e) if trailing == 0 => return Err(self.read_error(e)),
                Err(_) => break,
            }
            if !self.gzip || trailing >= 1 << 20 {
                break;
            }
        }
        if trailing > 0 {
            return Err(self.trailing(what, trailing));
        }
        Ok(data)
    }

    fn truncated(&self, what: &str, len: u64, have: u64) -> Error {
        let unpacked = if self.gzip { " once decompressed" } else { "" };
        self.fail(format!(
            "truncated: the header declares {what} ({len} bytes), but only {have} follow it{unpacked}; \
             download the file again"
        ))
    }

    fn trailing(&self, what: &str, extra: u64) -> Error {
        let at_least = if self.gzip && extra >= 1 << 20 { "at least " } else { "" };
        self.fail(format!(
            "{at_least}{extra} bytes follow the {what} its header declares: the file is damaged or not an IDX file"
        ))
    }
}
