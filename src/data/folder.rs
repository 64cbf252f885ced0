//! A folder of labelled images: each first-level sub-folder is a class (named after it,
//! classes sorted by name), holding JPEG and PNG files at any depth. Every image is decoded
//! as RGB, its shorter side resized to `size` and the centre `size x size` cut out, as the
//! search preprocessing does ([`crate::cpu::preprocess`]), then rounded back to bytes.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::LabelledImages;
use crate::cpu::preprocess::{decode_file, preprocess_image, Preprocess};
use crate::error::{Error, Result};
use crate::index::{is_image_name, paths};

/// The side images are cropped to when none is given.
pub const DEFAULT_SIZE: usize = 32;
/// The largest side accepted: a small embedding net has no use for more, and a bigger one
/// would make every image of the set that large in memory.
pub const MAX_SIZE: usize = 1024;

/// One class: its name and its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassFolder {
    /// The folder's name, on one line (control characters and bytes that are not UTF-8
    /// escaped).
    pub name: String,
    /// The folder.
    pub path: PathBuf,
}

/// The class folders of `dir`: its sub-folders (links to folders followed) whose names do not
/// start with `.`, sorted by name. Fails when `dir` holds no class folder, or an image lies
/// directly in it (an image must belong to a class); other files beside the classes are left
/// alone.
pub fn class_folders(dir: &Path) -> Result<Vec<ClassFolder>> {
    let fail = |reason: String| Error::Dataset { path: dir.to_path_buf(), reason };
    let mut classes = Vec::new();
    let mut entries = 0usize;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        entries += 1;
        if path.is_dir() {
            classes.push(ClassFolder { name: paths::display(Path::new(&entry.file_name())), path });
        } else if is_image_name(&path) {
            return Err(fail(format!(
                "{} lies directly in the folder: put each image in the sub-folder of its class",
                path.display()
            )));
        }
    }
    if classes.is_empty() {
        let what = if entries == 0 { "the folder is empty" } else { "the folder holds no sub-folder" };
        return Err(fail(format!(
            "{what}: expected one sub-folder of images per class (e.g. cat/1.jpg, dog/2.png), \
             IDX files (train-images-idx3-ubyte[.gz]) or CIFAR-10 batches (data_batch_1.bin)"
        )));
    }
    classes.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    Ok(classes)
}

/// The image files under a class folder, sorted, at any depth; names starting with `.` are
/// skipped, links followed. A class without images is an error.
fn class_images(class: &ClassFolder) -> Result<Vec<PathBuf>> {
    let walk = walkdir::WalkDir::new(&class.path).follow_links(true).sort_by_file_name().into_iter();
    let mut files = Vec::new();
    for entry in walk.filter_entry(|e| e.depth() == 0 || !is_hidden(e.path())) {
        let entry = entry.map_err(|e| {
            let path = e.path().map_or_else(|| class.path.clone(), Path::to_path_buf);
            Error::io(path, e.into())
        })?;
        if entry.file_type().is_file() && is_image_name(entry.path()) {
            files.push(entry.into_path());
        }
    }
    if files.is_empty() {
        return Err(Error::Dataset {
            path: class.path.clone(),
            reason: format!("the class {:?} holds no image (JPEG or PNG)", class.name),
        });
    }
    Ok(files)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

/// Checks that `size` is a usable side: 1 to [`MAX_SIZE`].
pub(crate) fn check_size(size: usize) -> Result<()> {
    if size == 0 || size > MAX_SIZE {
        return Err(Error::InvalidArgument(format!("the image size {size} must be between 1 and {MAX_SIZE}")));
    }
    Ok(())
}

/// Reads the labelled image folder `dir` ([`class_folders`]) as `size x size` RGB images,
/// decoded in parallel. Any file that cannot be decoded is an error naming it: training
/// data must be clean.
pub fn load_folder(dir: &Path, size: usize) -> Result<LabelledImages> {
    check_size(size)?;
    let classes = class_folders(dir)?;
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        files.extend(class_images(class)?.into_iter().map(|p| (p, label as u32)));
    }
    let image_len = size * size * 3;
    let overflow = || Error::Dataset {
        path: dir.to_path_buf(),
        reason: format!("{} images of {size}x{size}x3 overflow the address space", files.len()),
    };
    let total = files.len().checked_mul(image_len).ok_or_else(overflow)?;
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(total).map_err(|_| overflow())?;
    pixels.resize(total, 0);
    let preprocess = Preprocess { resize: size as u32, crop: size as u32, mean: [0.0; 3], std: [1.0; 3] };
    // Each image fills its own slot; collecting in order makes the error reported the first.
    let results: Vec<Result<()>> = pixels
        .par_chunks_mut(image_len)
        .zip(files.par_iter())
        .map(|(slot, (path, _))| {
            let image = decode_file(path)?;
            let values = preprocess_image(&image, &preprocess)
                .map_err(|e| Error::Dataset { path: path.clone(), reason: e.to_string() })?;
            for (byte, value) in slot.iter_mut().zip(values) {
                *byte = to_byte(value);
            }
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<()>>()?;
    Ok(LabelledImages {
        pixels,
        height: size,
        width: size,
        channels: 3,
        labels: files.iter().map(|&(_, label)| label).collect(),
        class_names: classes.into_iter().map(|c| c.name).collect(),
    })
}

/// A resized sample in `[0, 1]` back to a byte, rounded to nearest: samples that passed
/// through unresized come back as the very bytes decoded.
// for the tests
#[doc(hidden)]
pub fn to_byte(value: f32) -> u8 {
    (value * 255.0).round().clamp(0.0, 255.0) as u8
}

/// Reads `train` and, if given, `test` ([`load_folder`]); the test folder must have the same
/// class folders as the training one.
pub fn load_folders(
    train: &Path, test: Option<&Path>, size: usize,
) -> Result<(LabelledImages, Option<LabelledImages>)> {
    if let Some(test) = test {
        // Compare the classes before decoding anything.
        let names = |dir| class_folders(dir).map(|c| c.into_iter().map(|c| c.name).collect::<Vec<_>>());
        let (ours, theirs) = (names(train)?, names(test)?);
        if ours != theirs {
            let missing: Vec<&String> = ours.iter().filter(|c| !theirs.contains(c)).collect();
            let extra: Vec<&String> = theirs.iter().filter(|c| !ours.contains(c)).collect();
            return Err(Error::Dataset {
                path: test.to_path_buf(),
                reason: format!(
                    "the test classes differ from those of {}: missing here {missing:?}, only here {extra:?}; \
                     both folders need the same class sub-folders",
                    train.display()
                ),
            });
        }
    }
    let train_set = load_folder(train, size)?;
    let test_set = test.map(|t| load_folder(t, size)).transpose()?;
    Ok((train_set, test_set))
}
