//! Labelled image sets for metric learning: IDX (MNIST, Fashion-MNIST), CIFAR-10's binary
//! version and folders of images with one sub-folder per class.
//!
//! [`load`] tells the three apart by what the folder holds and reads the training split
//! and, where there is one, the test split.

pub mod cifar;
pub mod folder;
pub mod idx;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Images of one size as u8 pixels, NHWC (`[count, height, width, channels]`), each with a
/// class index into `class_names`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImages {
    /// `count * height * width * channels` bytes, image after image, each row-major with
    /// channels innermost.
    pub pixels: Vec<u8>,
    /// Rows of each image.
    pub height: usize,
    /// Columns of each image.
    pub width: usize,
    /// Values per pixel: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// The class index of each image.
    pub labels: Vec<u32>,
    /// The name of each class, by index.
    pub class_names: Vec<String>,
}

impl LabelledImages {
    /// `classes` x `per_class` images of seeded random pixels, labelled round-robin (image
    /// i is of class i mod `classes`, named by its number): data of a real set's layout and
    /// size for timing training and embedding, not for learning anything.
    pub fn random(classes: usize, per_class: usize, height: usize, width: usize, channels: usize, seed: u64) -> Self {
        let mut rng = crate::rng::Rng::new(seed);
        let count = classes * per_class;
        Self {
            pixels: (0..count * height * width * channels).map(|_| rng.next_u64() as u8).collect(),
            height,
            width,
            channels,
            labels: (0..count).map(|i| (i % classes.max(1)) as u32).collect(),
            class_names: (0..classes).map(|c| c.to_string()).collect(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Checks the invariants every reader guarantees; `source` names the data in errors.
    pub fn validate(&self, source: &Path) -> Result<()> {
        let fail = |reason: String| Err(Error::Dataset { path: source.to_path_buf(), reason });
        if self.image_len() == 0 {
            return fail(format!("images of {}x{}x{} hold no pixels", self.height, self.width, self.channels));
        }
        if self.pixels.len() != self.len() * self.image_len() {
            return fail(format!(
                "{} pixel bytes for {} images of {}",
                self.pixels.len(),
                self.len(),
                self.image_len()
            ));
        }
        if let Some((i, &label)) = self.labels.iter().enumerate().find(|(_, &l)| l as usize >= self.class_names.len()) {
            return fail(format!("image {i} has label {label}, but there are {} classes", self.class_names.len()));
        }
        Ok(())
    }

    /// The images reordered so each class's images are contiguous (classes in index order,
    /// images in their original order within a class), with where each class starts: the
    /// layout pair sampling reads. Fails when a class has fewer than two images (no anchor
    /// and different positive) or there is a single class (no negatives).
    pub fn grouped_by_class(&self, source: &Path) -> Result<ClassGrouped> {
        self.validate(source)?;
        let classes = self.class_names.len();
        let mut counts = vec![0u32; classes];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        if classes < 2 {
            return Err(Error::Dataset {
                path: source.to_path_buf(),
                reason: format!("{classes} class(es): metric learning needs at least 2"),
            });
        }
        if let Some((c, &n)) = counts.iter().enumerate().find(|(_, &n)| n < 2) {
            return Err(Error::Dataset {
                path: source.to_path_buf(),
                reason: format!(
                    "class {:?} has {n} image(s): each class needs at least 2 (an anchor and a different positive)",
                    self.class_names[c]
                ),
            });
        }
        let mut offsets = Vec::with_capacity(classes);
        let mut start = 0u32;
        for &n in &counts {
            offsets.push(start);
            start += n;
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&i| self.labels[i]);
        let mut pixels = Vec::with_capacity(self.pixels.len());
        for &i in &order {
            pixels.extend_from_slice(self.image(i));
        }
        Ok(ClassGrouped {
            images: LabelledImages {
                pixels,
                labels: order.iter().map(|&i| self.labels[i]).collect(),
                class_names: self.class_names.clone(),
                ..*self
            },
            class_offsets: offsets,
            class_counts: counts,
        })
    }
}

/// A training set grouped by class for pair sampling (see [`LabelledImages::grouped_by_class`]).
#[derive(Debug, Clone)]
pub struct ClassGrouped {
    /// The images, each class's contiguous.
    pub images: LabelledImages,
    /// First image of each class.
    pub class_offsets: Vec<u32>,
    /// Images of each class (each at least 2).
    pub class_counts: Vec<u32>,
}

/// The layout a data set was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// IDX files (MNIST, Fashion-MNIST), plain or gzip.
    Idx,
    /// CIFAR-10's binary batches.
    Cifar10,
    /// One sub-folder of images per class.
    ImageFolder,
}

impl std::fmt::Display for DataFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataFormat::Idx => "IDX",
            DataFormat::Cifar10 => "CIFAR-10 binary",
            DataFormat::ImageFolder => "image folder",
        })
    }
}

/// How [`load`] reads a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Side of the square images an image folder is resized and cropped to (IDX and
    /// CIFAR-10 keep their own size).
    pub size: usize,
    /// A second image folder, with the same class sub-folders, as the test split (image
    /// folders only: IDX and CIFAR-10 carry their own test split).
    pub test: Option<PathBuf>,
}

impl Default for LoadOptions {
    /// 32x32 images, no separate test folder.
    fn default() -> Self {
        Self { size: folder::DEFAULT_SIZE, test: None }
    }
}

/// A labelled data set: the training split, the test split where there is one, and where
/// and how it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The images to train on.
    pub train: LabelledImages,
    /// The images to evaluate on, with the training split's classes.
    pub test: Option<LabelledImages>,
    /// The folder read.
    pub source: PathBuf,
    /// Its layout.
    pub format: DataFormat,
}

/// Reads the data set in the folder `path`, telling its layout by what it holds:
/// `train-images-idx3-ubyte[.gz]` makes it IDX ([`idx::load_idx`]); `data_batch_N.bin`,
/// `test_batch.bin` or a `cifar-10-batches-bin` sub-folder make it CIFAR-10
/// ([`cifar::load_cifar`]); anything else is read as one sub-folder of images per class
/// ([`folder::load_folders`]). Nothing is checked about class sizes here: see
/// [`LabelledImages::grouped_by_class`].
pub fn load(path: &Path, options: &LoadOptions) -> Result<Dataset> {
    let fail = |reason: String| Error::Dataset { path: path.to_path_buf(), reason };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail("no such folder".into()),
        _ => Error::io(path, e),
    })?;
    if !meta.is_dir() {
        return Err(fail(
            "is a file; expected a folder holding IDX files (train-images-idx3-ubyte[.gz]), CIFAR-10 \
             batches (data_batch_1.bin ...) or one sub-folder of images per class"
                .into(),
        ));
    }
    let format = if idx::is_idx_folder(path) {
        DataFormat::Idx
    } else if cifar::is_cifar_folder(path) {
        DataFormat::Cifar10
    } else {
        DataFormat::ImageFolder
    };
    if let (Some(test), false) = (&options.test, format == DataFormat::ImageFolder) {
        return Err(Error::InvalidArgument(format!(
            "{} is {format} data, which carries its own test split; a separate test folder ({}) applies to \
             image folders only",
            path.display(),
            test.display()
        )));
    }
    let (train, test) = match format {
        DataFormat::Idx => idx::load_idx(path)?,
        DataFormat::Cifar10 => cifar::load_cifar(path)?,
        DataFormat::ImageFolder => folder::load_folders(path, options.test.as_deref(), options.size)?,
    };
    train.validate(path)?;
    if let Some(test) = &test {
        test.validate(options.test.as_deref().unwrap_or(path))?;
    }
    Ok(Dataset { train, test, source: path.to_path_buf(), format })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(labels: &[u32], classes: usize) -> LabelledImages {
        LabelledImages {
            pixels: labels.iter().map(|&l| l as u8 * 10).collect(),
            height: 1,
            width: 1,
            channels: 1,
            labels: labels.to_vec(),
            class_names: (0..classes).map(|c| format!("c{c}")).collect(),
        }
    }

    #[test]
    fn grouping_keeps_pixels_with_their_labels() {
        let g = set(&[2, 0, 1, 2, 0, 1, 1], 3).grouped_by_class(Path::new("x")).unwrap();
        assert_eq!(g.images.labels, [0, 0, 1, 1, 1, 2, 2]);
        assert_eq!(g.images.pixels, [0, 0, 10, 10, 10, 20, 20]);
        assert_eq!(g.class_offsets, [0, 2, 5]);
        assert_eq!(g.class_counts, [2, 3, 2]);
    }

    #[test]
    fn grouping_refuses_small_classes_and_single_classes() {
        let err = set(&[0, 0, 1], 2).grouped_by_class(Path::new("data")).unwrap_err().to_string();
        assert!(err.contains("data") && err.contains("\"c1\" has 1 image"), "{err}");
        let err = set(&[0, 0, 0], 1).grouped_by_class(Path::new("data")).unwrap_err().to_string();
        assert!(err.contains("at least 2"), "{err}");
        let err = set(&[0, 3], 2).grouped_by_class(Path::new("data")).unwrap_err().to_string();
        assert!(err.contains("label 3"), "{err}");
    }
}
