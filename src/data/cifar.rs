//! CIFAR-10's binary version: batches of 3073-byte records, each a label byte and a 32x32
//! colour image stored as three planes (1024 red bytes, 1024 green, 1024 blue, each
//! row-major), converted here to interleaved RGB (NHWC).

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::LabelledImages;
use crate::error::{Error, Result};

/// Side of a CIFAR-10 image.
pub(crate) const SIDE: usize = 32;
/// Bytes of one image (three planes of 32x32).
pub(crate) const IMAGE_BYTES: usize = SIDE * SIDE * 3;
/// Bytes of one record: the label, then the image.
// for the fuzz tests
#[doc(hidden)]
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;

/// CIFAR-10's classes in label order, used when the folder has no `batches.meta.txt`.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The sub-folder the CIFAR-10 archive unpacks to.
pub(crate) const SUBFOLDER: &str = "cifar-10-batches-bin";

/// The training batches, in the order they are read.
const TRAIN_BATCHES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
const TEST_BATCH: &str = "test_batch.bin";
const META: &str = "batches.meta.txt";

/// Largest `batches.meta.txt` read: far beyond 256 names of any sensible length.
const META_MAX_BYTES: u64 = 1 << 20;

/// The folder holding the batches: `dir` itself, or its `cifar-10-batches-bin` sub-folder;
/// `None` if neither holds a `data_batch_N.bin` or `test_batch.bin`.
pub(crate) fn batches_folder(dir: &Path) -> Option<PathBuf> {
    let holds_batches = |d: &Path| TRAIN_BATCHES.iter().chain([&TEST_BATCH]).any(|b| d.join(b).is_file());
    [dir.to_path_buf(), dir.join(SUBFOLDER)].into_iter().find(|d| holds_batches(d))
}

/// Whether `dir` (or its `cifar-10-batches-bin` sub-folder) holds CIFAR-10 batches.
pub(crate) fn is_cifar_folder(dir: &Path) -> bool {
    batches_folder(dir).is_some()
}

/// Reads the CIFAR-10 set in `dir` (or its `cifar-10-batches-bin` sub-folder): the
/// training split from the `data_batch_1.bin` .. `data_batch_5.bin` present (at least one),
/// in that order, the test split from `test_batch.bin` if present. Class names come from
/// `batches.meta.txt` (one per line, blank lines ignored), else [`CIFAR10_CLASSES`].
pub fn load_cifar(dir: &Path) -> Result<(LabelledImages, Option<LabelledImages>)> {
    let folder = batches_folder(dir).unwrap_or_else(|| dir.to_path_buf());
    let train_files: Vec<PathBuf> = TRAIN_BATCHES.iter().map(|b| folder.join(b)).filter(|p| p.is_file()).collect();
    if train_files.is_empty() {
        return Err(Error::Dataset {
            path: folder,
            reason: "no training batch: expected data_batch_1.bin .. data_batch_5.bin (any of them)".into(),
        });
    }
    let class_names = class_names(&folder)?;
    let train = read_batches(&train_files, &class_names)?;
    let test_file = folder.join(TEST_BATCH);
    let test = match test_file.is_file() {
        true => Some(read_batches(&[test_file], &class_names)?),
        false => None,
    };
    Ok((train, test))
}

/// The names in `folder/batches.meta.txt`, or [`CIFAR10_CLASSES`] where there is none.
fn class_names(folder: &Path) -> Result<Vec<String>> {
    let path = folder.join(META);
    if !path.exists() {
        return Ok(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
    }
    let fail = |reason: String| Error::Dataset { path: path.clone(), reason };
    let len = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
    if len > META_MAX_BYTES {
        return Err(fail(format!("{len} bytes is too large for a list of class names (one per line)")));
    }
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| fail(format!("not UTF-8 text: {e}")))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.is_empty() {
        return Err(fail("names no class: expected one class name per line".into()));
    }
    if names.len() > 256 {
        return Err(fail(format!("names {} classes; a label byte tells at most 256 apart", names.len())));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(fail(format!("names the class {name:?} twice")));
        }
    }
    Ok(names)
}

/// The records of `files`, in order, as one labelled set.
fn read_batches(files: &[PathBuf], class_names: &[String]) -> Result<LabelledImages> {
    let mut counts = Vec::with_capacity(files.len());
    for path in files {
        let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        counts.push(record_count(path, len)?);
    }
    let total = counts.iter().try_fold(0usize, |a, &n| a.checked_add(n));
    let bytes = total.and_then(|n| n.checked_mul(IMAGE_BYTES));
    let fail_size = || Error::Dataset {
        path: files[0].clone(),
        reason: format!(
            "{} records in {} batches overflow the address space",
            counts.iter().sum::<usize>(),
            files.len()
        ),
    };
    let (total, bytes) = total.zip(bytes).ok_or_else(fail_size)?;
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(bytes).map_err(|_| fail_size())?;
    let mut labels = Vec::with_capacity(total);
    let mut record = vec![0u8; RECORD_BYTES];
    for (path, &count) in files.iter().zip(&counts) {
        let fail = |reason: String| Error::Dataset { path: path.clone(), reason };
        let mut reader = BufReader::with_capacity(1 << 16, File::open(path).map_err(|e| Error::io(path, e))?);
        for r in 0..count {
            match reader.read_exact(&mut record) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    return Err(fail(format!("truncated while reading record {r} of {count}: the file shrank")))
                }
                Err(e) => return Err(Error::io(path, e)),
            }
            let label = record[0];
            if label as usize >= class_names.len() {
                return Err(fail(format!(
                    "record {r} has label {label}, but there are {} classes ({})",
                    class_names.len(),
                    class_names.join(", ")
                )));
            }
            labels.push(u32::from(label));
            let (red, rest) = record[1..].split_at(SIDE * SIDE);
            let (green, blue) = rest.split_at(SIDE * SIDE);
            let start = pixels.len();
            pixels.resize(start + IMAGE_BYTES, 0);
            for (rgb, ((&r, &g), &b)) in pixels[start..].chunks_exact_mut(3).zip(red.iter().zip(green).zip(blue)) {
                rgb.copy_from_slice(&[r, g, b]);
            }
        }
        let mut probe = [0u8; 1];
        if reader.read(&mut probe).map_err(|e| Error::io(path, e))? > 0 {
            return Err(fail(format!("holds more than the {count} records it held when opened: the file grew")));
        }
    }
    Ok(LabelledImages { pixels, height: SIDE, width: SIDE, channels: 3, labels, class_names: class_names.to_vec() })
}

/// Records in a batch file of `len` bytes.
fn record_count(path: &Path, len: u64) -> Result<usize> {
    let fail = |reason: String| Error::Dataset { path: path.to_path_buf(), reason };
    if len == 0 {
        return Err(fail("the file is empty: expected 3073-byte records (a label, then 32x32x3 pixels)".into()));
    }
    if !len.is_multiple_of(RECORD_BYTES as u64) {
        return Err(fail(format!(
            "{len} bytes is not a whole number of 3073-byte records (a label, then 32x32x3 pixels): \
             the file is truncated or not a CIFAR-10 binary batch ({} whole records, {} bytes over)",
            len / RECORD_BYTES as u64,
            len % RECORD_BYTES as u64
        )));
    }
    usize::try_from(len / RECORD_BYTES as u64).map_err(|_| fail(format!("{len} bytes overflow the address space")))
}
