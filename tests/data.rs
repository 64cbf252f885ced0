//! The training-data readers: IDX (plain and gzip), CIFAR-10 batches and labelled image
//! folders, written here in small odd sizes and read back exactly; each malformed input's
//! message; and the installed Fashion-MNIST.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use lookalike::cpu::preprocess::{center_crop, decode_file, resize_shorter_side};
use lookalike::data::folder::to_byte;
use lookalike::data::idx::FASHION_MNIST_CLASSES;
use lookalike::data::{self, DataFormat, Dataset, LabelledImages, LoadOptions};
use lookalike::rng::Rng;
use lookalike::Error;

/// A fresh folder for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lookalike-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `bytes` to `name` (creating folders) and returns its path.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(path: &Path) -> lookalike::Result<Dataset> {
    data::load(path, &LoadOptions::default())
}

/// The message of `load(path)`'s error, which must name `file`.
fn error_naming(path: &Path, file: &Path) -> String {
    let err = load(path).expect_err("a malformed data set must be refused").to_string();
    assert!(err.contains(&file.display().to_string()), "the error must name {}: {err}", file.display());
    err
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for v in [0x803, count, rows, cols] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for v in [0x801, labels.len() as u32] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(labels);
    bytes
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A valid IDX set in `dir`: 7 training images of 5x3 (gzip) with labels 0..=3, 4 test
/// images (plain) with labels up to 5; returns (train pixels, train labels, test pixels, test labels).
fn write_idx(s: &Scratch, dir: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(3);
    let (train, test) = (random_bytes(&mut rng, 7 * 15), random_bytes(&mut rng, 4 * 15));
    let (train_labels, test_labels) = (vec![3, 0, 1, 2, 0, 3, 1], vec![5, 0, 2, 1]);
    s.write(&format!("{dir}/train-images-idx3-ubyte.gz"), &gz(&idx_images(7, 5, 3, &train)));
    s.write(&format!("{dir}/train-labels-idx1-ubyte.gz"), &gz(&idx_labels(&train_labels)));
    s.write(&format!("{dir}/t10k-images-idx3-ubyte"), &idx_images(4, 5, 3, &test));
    s.write(&format!("{dir}/t10k-labels-idx1-ubyte"), &idx_labels(&test_labels));
    (train, train_labels, test, test_labels)
}

fn as_u32(labels: &[u8]) -> Vec<u32> {
    labels.iter().map(|&l| l as u32).collect()
}

#[test]
fn idx_plain_and_gzip_load_exactly() {
    let s = Scratch::new("idx");
    let (train, train_labels, test, test_labels) = write_idx(&s, "digits");
    let set = load(&s.0.join("digits")).unwrap();
    assert_eq!(set.format, DataFormat::Idx);
    let digits: Vec<String> = (0..6).map(|c| c.to_string()).collect();
    let expected = LabelledImages {
        pixels: train,
        height: 5,
        width: 3,
        channels: 1,
        labels: as_u32(&train_labels),
        class_names: digits.clone(),
    };
    assert_eq!(set.train, expected);
    let test_set = set.test.unwrap();
    assert_eq!((test_set.pixels, test_set.labels, test_set.class_names), (test, as_u32(&test_labels), digits));

    // "fashion" in the path (any case) names the classes after Fashion-MNIST.
    write_idx(&s, "My-FASHION-set");
    let set = load(&s.0.join("My-FASHION-set")).unwrap();
    assert_eq!(set.train.class_names, FASHION_MNIST_CLASSES);
    assert_eq!(set.test.unwrap().class_names, FASHION_MNIST_CLASSES);

    // Without the t10k files there is no test split.
    for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::remove_file(s.0.join("digits").join(name)).unwrap();
    }
    let set = load(&s.0.join("digits")).unwrap();
    assert!(set.test.is_none());
    assert_eq!(set.train.class_names.len(), 4);
}

/// Writes one IDX image file (and labels for 2 images) into a fresh folder `name`; returns
/// the folder and the image file.
fn idx_case(s: &Scratch, name: &str, file: &str, bytes: &[u8]) -> (PathBuf, PathBuf) {
    s.write(&format!("{name}/train-labels-idx1-ubyte"), &idx_labels(&[0, 1]));
    (s.0.join(name), s.write(&format!("{name}/{file}"), bytes))
}

#[test]
fn malformed_idx_files_are_refused_naming_them() {
    let s = Scratch::new("idx-bad");
    let pixels = [7u8; 2 * 4 * 3];
    let good = idx_images(2, 4, 3, &pixels);
    let plain = "train-images-idx3-ubyte";
    let gzip = "train-images-idx3-ubyte.gz";
    let mut wrong_magic = good.clone();
    wrong_magic[3] = 0x08;
    // Random pixels do not compress: the middle of the gzip file is the middle of the data.
    let big = idx_images(2, 40, 40, &random_bytes(&mut Rng::new(4), 3200));
    let mut cut_gz = gz(&big);
    cut_gz.truncate(cut_gz.len() / 2);
    let mut corrupt_gz = gz(&big);
    let middle = corrupt_gz.len() / 2;
    corrupt_gz[middle] ^= 0x55;
    let mut trailing_gz = good.clone();
    trailing_gz.extend_from_slice(&[1, 2, 3]);
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("magic", plain, wrong_magic, "magic number 0x00000808"),
        ("labels-magic", plain, idx_labels(&[0, 1]), "magic number 0x00000801 (this is a label file)"),
        ("header", plain, good[..10].to_vec(), "ends inside its 16-byte header"),
        ("short", plain, good[..good.len() - 1].to_vec(), "declares 2 images of 4x3 (24 bytes), but only 23"),
        ("trailing", plain, [&good[..], &[0]].concat(), "1 bytes follow the 2 images of 4x3"),
        ("gz-short", gzip, gz(&good[..good.len() - 5]), "only 19 follow it once decompressed"),
        ("gz-trailing", gzip, gz(&trailing_gz), "3 bytes follow the 2 images"),
        ("gz-cut", gzip, cut_gz, "truncated"),
        ("gz-corrupt", gzip, corrupt_gz, "the gzip data are corrupt"),
        ("not-gz", gzip, good.clone(), "gzip data are corrupt"),
        ("gz-unnamed", plain, gz(&good), "(gzip data: name the file .gz)"),
        // Sizes that must be refused before allocating.
        ("huge", plain, idx_images(u32::MAX, 28, 28, &pixels), "declares 4294967295 images of 28x28"),
        ("huge-gz", gzip, gz(&idx_images(u32::MAX, 28, 28, &pixels)), "compressed bytes can hold"),
        ("overflow", plain, idx_images(u32::MAX, u32::MAX, u32::MAX, &pixels), "the size overflows"),
        ("empty", plain, idx_images(0, 28, 28, &[]), "declares 0 images of 28x28: no pixels"),
    ];
    for (name, file, bytes, message) in cases {
        let (dir, path) = idx_case(&s, name, file, &bytes);
        let err = error_naming(&dir, &path);
        assert!(err.contains(message), "{name}: expected {message:?} in: {err}");
    }

    // Labels: a count that differs from the images', a missing file, Fashion labels >= 10.
    let labels = s.write("count/train-labels-idx1-ubyte", &idx_labels(&[0, 1, 1]));
    s.write("count/train-images-idx3-ubyte", &good);
    let err = error_naming(&s.0.join("count"), &labels);
    assert!(err.contains("holds 3 labels for the 2 images of"), "{err}");
    s.write("nolabels/train-images-idx3-ubyte", &good);
    let err = load(&s.0.join("nolabels")).unwrap_err().to_string();
    assert!(err.contains("has no labels: train-labels-idx1-ubyte"), "{err}");
    let labels = s.write("fashion-ten/train-labels-idx1-ubyte", &idx_labels(&[0, 10]));
    s.write("fashion-ten/train-images-idx3-ubyte", &good);
    let err = error_naming(&s.0.join("fashion-ten"), &labels);
    assert!(err.contains("label 1 is 10, but Fashion-MNIST has 10 classes"), "{err}");
    // Test images without their labels.
    s.write("halftest/train-images-idx3-ubyte", &good);
    s.write("halftest/train-labels-idx1-ubyte", &idx_labels(&[0, 1]));
    s.write("halftest/t10k-images-idx3-ubyte", &good);
    let err = load(&s.0.join("halftest")).unwrap_err().to_string();
    assert!(err.contains("t10k-images-idx3-ubyte has no labels"), "{err}");
    // A separate test folder is for image folders only.
    let options = LoadOptions { test: Some(s.0.join("count")), ..LoadOptions::default() };
    let err = data::load(&s.0.join("halftest"), &options).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("own test split"), "{err}");
}

/// A CIFAR-10 batch of `labels.len()` random records; returns the bytes.
fn cifar_batch(rng: &mut Rng, labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for &label in labels {
        bytes.push(label);
        bytes.extend(random_bytes(rng, 3072));
    }
    bytes
}

/// The records of `batch` in NHWC: pixel (y, x) channel c is byte `1 + c*1024 + y*32 + x`.
fn planes_to_nhwc(batch: &[u8]) -> (Vec<u8>, Vec<u32>) {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for record in batch.chunks_exact(3073) {
        labels.push(record[0] as u32);
        for y in 0..32 {
            for x in 0..32 {
                for c in 0..3 {
                    pixels.push(record[1 + c * 1024 + y * 32 + x]);
                }
            }
        }
    }
    (pixels, labels)
}

#[test]
fn cifar_batches_load_in_order_as_nhwc() {
    let s = Scratch::new("cifar");
    let mut rng = Rng::new(5);
    // Batches 1, 2 and 4 (3 and 5 missing), the test batch, and a meta file with blank lines.
    let batches = [cifar_batch(&mut rng, &[0, 2, 1]), cifar_batch(&mut rng, &[2]), cifar_batch(&mut rng, &[1, 1])];
    for (n, batch) in [1, 2, 4].iter().zip(&batches) {
        s.write(&format!("set/data_batch_{n}.bin"), batch);
    }
    let test = cifar_batch(&mut rng, &[2, 0]);
    s.write("set/test_batch.bin", &test);
    s.write("set/batches.meta.txt", b"red\n\n  green \r\nblue\n\n");
    let set = load(&s.0.join("set")).unwrap();
    assert_eq!(set.format, DataFormat::Cifar10);
    let (pixels, labels) = planes_to_nhwc(&batches.concat());
    let names = vec!["red".to_string(), "green".into(), "blue".into()];
    let expected = LabelledImages { pixels, height: 32, width: 32, channels: 3, labels, class_names: names.clone() };
    assert_eq!(set.train, expected);
    let (pixels, labels) = planes_to_nhwc(&test);
    let test_set = set.test.unwrap();
    assert_eq!((test_set.pixels, test_set.labels, test_set.class_names), (pixels, labels, names));
    // One explicit pixel: image 1 (batch 1, record 1), row 2, column 5, green.
    assert_eq!(set.train.image(1)[(2 * 32 + 5) * 3 + 1], batches[0][3073 + 1 + 1024 + 2 * 32 + 5]);

    // The archive's sub-folder, without meta: the ten standard names, no test split.
    s.write("archive/cifar-10-batches-bin/data_batch_3.bin", &batches[0]);
    let set = load(&s.0.join("archive")).unwrap();
    assert_eq!(set.train.class_names[0], "airplane");
    assert_eq!(set.train.class_names.len(), 10);
    assert!(set.test.is_none());
}

#[test]
fn malformed_cifar_batches_are_refused_naming_them() {
    let s = Scratch::new("cifar-bad");
    let mut rng = Rng::new(6);
    let good = cifar_batch(&mut rng, &[0, 1]);
    // (folder, batch, meta file, message)
    type BadBatch<'a> = (&'a str, Vec<u8>, Option<&'a [u8]>, &'a str);
    let cases: Vec<BadBatch> = vec![
        ("length", good[..good.len() - 1].to_vec(), None, "6145 bytes is not a whole number of 3073-byte records"),
        ("longer", [&good[..], &[9]].concat(), None, "(2 whole records, 1 bytes over)"),
        ("empty", Vec::new(), None, "the file is empty"),
        ("label", cifar_batch(&mut rng, &[3, 10]), None, "record 1 has label 10, but there are 10 classes"),
        ("meta-label", cifar_batch(&mut rng, &[2]), Some(b"a\nb\n"), "record 0 has label 2, but there are 2 classes"),
    ];
    for (name, bytes, meta, message) in cases {
        let path = s.write(&format!("{name}/data_batch_1.bin"), &bytes);
        if let Some(meta) = meta {
            s.write(&format!("{name}/batches.meta.txt"), meta);
        }
        let err = error_naming(&s.0.join(name), &path);
        assert!(err.contains(message), "{name}: expected {message:?} in: {err}");
    }
    // A bad test batch, a meta file that names nothing or a class twice, no training batch.
    s.write("test/data_batch_1.bin", &good);
    let path = s.write("test/test_batch.bin", &good[..100]);
    error_naming(&s.0.join("test"), &path);
    for (name, meta, message) in [("blank", &b"\n \n"[..], "names no class"), ("twice", b"a\nb\na\n", "\"a\" twice")] {
        s.write(&format!("{name}/data_batch_1.bin"), &good);
        let path = s.write(&format!("{name}/batches.meta.txt"), meta);
        let err = error_naming(&s.0.join(name), &path);
        assert!(err.contains(message), "{err}");
    }
    s.write("notrain/test_batch.bin", &good);
    let err = load(&s.0.join("notrain")).unwrap_err().to_string();
    assert!(err.contains("no training batch"), "{err}");
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
    bytes
}

fn noise(rng: &mut Rng, width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |_, _| Rgb([0; 3].map(|_: u8| rng.next_u64() as u8)))
}

/// What the folder reader must give for `path`: the CPU preprocessing's whole resize of the
/// shorter side to `size`, then its centre crop, each sample rounded to a byte.
fn expected_pixels(path: &Path, size: usize) -> Vec<u8> {
    let resized = resize_shorter_side(&decode_file(path).unwrap(), size as u32).unwrap();
    center_crop(&resized, size).unwrap().data.into_iter().map(to_byte).collect()
}

#[test]
fn image_folders_resize_crop_and_label_by_sub_folder() {
    let s = Scratch::new("folder");
    let mut rng = Rng::new(9);
    let exact = noise(&mut rng, 16, 16);
    let grey = GrayImage::from_fn(23, 40, |x, y| Luma([(x * 11 + y * 5) as u8]));
    let mut grey_png = Vec::new();
    grey.write_to(&mut Cursor::new(&mut grey_png), ImageFormat::Png).unwrap();
    let mut jpeg = Vec::new();
    noise(&mut rng, 30, 21).write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();
    // Classes b_dog and a_cat (sorted: a_cat first); hidden folders and files, and files
    // that are not images, are left out; images in nested folders belong to their class.
    let files = [
        s.write("train/b_dog/1.png", &png(&noise(&mut rng, 45, 31))),
        s.write("train/b_dog/2.PNG", &png(&exact)),
        s.write("train/b_dog/deeper/3.jpg", &jpeg),
        s.write("train/a_cat/grey.png", &grey_png),
        s.write("train/a_cat/strip.png", &png(&noise(&mut rng, 3, 70))),
    ];
    s.write("train/.hidden/4.png", &png(&exact));
    s.write("train/b_dog/.5.png", b"not read");
    s.write("train/b_dog/notes.txt", b"not an image");
    s.write("train/README", b"not an image either");
    let set = load(&s.0.join("train")).unwrap();
    assert_eq!(set.format, DataFormat::ImageFolder);
    assert_eq!((set.train.height, set.train.width, set.train.channels), (32, 32, 3));
    assert_eq!(set.train.class_names, ["a_cat", "b_dog"]);
    assert_eq!(set.train.labels, [0, 0, 1, 1, 1]);
    let order = [3, 4, 0, 1, 2];
    for (i, &f) in order.iter().enumerate() {
        assert_eq!(set.train.image(i), expected_pixels(&files[f], 32), "{}", files[f].display());
    }

    // At size 16 the 16x16 image passes through byte for byte; grey comes out R = G = B.
    let options = LoadOptions { size: 16, test: None };
    let set = data::load(&s.0.join("train"), &options).unwrap();
    assert_eq!(set.train.image(3), exact.as_raw().as_slice());
    assert!(set.train.image(0).chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    for (i, &f) in order.iter().enumerate() {
        assert_eq!(set.train.image(i), expected_pixels(&files[f], 16));
    }

    // A test folder with the same classes.
    s.write("test/a_cat/x.png", &png(&noise(&mut rng, 9, 9)));
    s.write("test/b_dog/y.png", &png(&noise(&mut rng, 17, 5)));
    let options = LoadOptions { size: 7, test: Some(s.0.join("test")) };
    let set = data::load(&s.0.join("train"), &options).unwrap();
    let test = set.test.unwrap();
    assert_eq!((test.len(), test.height, test.labels.clone()), (2, 7, vec![0, 1]));
    assert_eq!(test.image(1), expected_pixels(&s.0.join("test/b_dog/y.png"), 7));
}

#[test]
fn malformed_image_folders_are_refused_naming_the_file() {
    let s = Scratch::new("folder-bad");
    let mut rng = Rng::new(10);
    let image = png(&noise(&mut rng, 8, 6));
    s.write("bad/a/1.png", &image);
    let broken = s.write("bad/a/2.png", b"not a png at all");
    s.write("bad/b/3.png", &image);
    let err = error_naming(&s.0.join("bad"), &broken);
    assert!(err.contains("cannot decode image"), "{err}");

    std::fs::create_dir_all(s.0.join("empty")).unwrap();
    let err = error_naming(&s.0.join("empty"), &s.0.join("empty"));
    assert!(err.contains("the folder is empty"), "{err}");
    s.write("flat/1.png", &image);
    let err = error_naming(&s.0.join("flat"), &s.0.join("flat/1.png"));
    assert!(err.contains("lies directly in the folder"), "{err}");
    s.write("noimages/a/1.png", &image);
    s.write("noimages/b/readme.txt", b"text");
    let err = error_naming(&s.0.join("noimages"), &s.0.join("noimages/b"));
    assert!(err.contains("the class \"b\" holds no image"), "{err}");

    // A test folder with other classes names both folders and the difference.
    s.write("train/a/1.png", &image);
    s.write("train/b/1.png", &image);
    s.write("other/a/1.png", &image);
    s.write("other/c/1.png", &image);
    let options = LoadOptions { test: Some(s.0.join("other")), ..LoadOptions::default() };
    let err = data::load(&s.0.join("train"), &options).unwrap_err().to_string();
    for part in [&*s.0.join("other").display().to_string(), &s.0.join("train").display().to_string(), "[\"b\"]"] {
        assert!(err.contains(part), "expected {part:?} in: {err}");
    }
    for size in [0, 5000] {
        let err = data::load(&s.0.join("train"), &LoadOptions { size, test: None }).unwrap_err().to_string();
        assert!(err.contains("between 1 and 1024"), "{err}");
    }

    // A path that is not there, or a plain file.
    let missing = s.0.join("missing");
    assert!(error_naming(&missing, &missing).contains("no such folder"));
    assert!(error_naming(&broken, &broken).contains("is a file; expected a folder"));
}

#[test]
fn class_sizes_are_checked_when_grouping_not_when_loading() {
    let s = Scratch::new("grouping");
    let mut rng = Rng::new(12);
    let one_short = cifar_batch(&mut rng, &[0, 0, 1]);
    s.write("short/data_batch_1.bin", &one_short);
    s.write("short/batches.meta.txt", b"kept\nlonely\n");
    let set = load(&s.0.join("short")).unwrap();
    let err = set.train.grouped_by_class(&set.source).unwrap_err().to_string();
    assert!(err.contains("class \"lonely\" has 1 image(s)"), "{err}");

    s.write("single/only/1.png", &png(&noise(&mut rng, 4, 4)));
    s.write("single/only/2.png", &png(&noise(&mut rng, 4, 4)));
    let set = load(&s.0.join("single")).unwrap();
    let err = set.train.grouped_by_class(&set.source).unwrap_err().to_string();
    assert!(err.contains("1 class(es): metric learning needs at least 2"), "{err}");
}

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn the_installed_fashion_mnist_loads() {
    let dir = Path::new(FASHION_MNIST);
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is not installed at {FASHION_MNIST}: `apt-get install dataset-fashion-mnist`"
    );
    let start = std::time::Instant::now();
    let set = load(dir).unwrap();
    println!("loaded Fashion-MNIST (gzip, 70000 images) in {:.3} s", start.elapsed().as_secs_f64());
    assert_eq!(set.format, DataFormat::Idx);
    let test = set.test.as_ref().unwrap();
    for (split, count) in [(&set.train, 60_000), (test, 10_000)] {
        assert_eq!((split.len(), split.height, split.width, split.channels), (count, 28, 28, 1));
        assert_eq!(split.class_names, FASHION_MNIST_CLASSES);
        let mut histogram = [0usize; 10];
        split.labels.iter().for_each(|&l| histogram[l as usize] += 1);
        assert_eq!(histogram, [count / 10; 10]);
    }
    // Real images: not blank, not saturated, and grouping for training succeeds.
    let mean = set.train.pixels.iter().map(|&p| p as f64).sum::<f64>() / set.train.pixels.len() as f64;
    assert!((60.0..90.0).contains(&mean), "mean pixel {mean}");
    let grouped = set.train.grouped_by_class(&set.source).unwrap();
    assert_eq!(grouped.class_counts, [6000; 10]);
}
