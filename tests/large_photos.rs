//! Photos of any size index and search: batches split by bytes against the device's
//! limits, an image whose rows exceed one storage binding preprocessed on the CPU to the
//! same numbers, strips and panoramas cropped at their centre, unusable files listed and
//! skipped. A device capped at 16 MiB per binding (`ContextBuilder::max_binding_bytes`)
//! reaches those limits with small images; real 12 MP JPEGs and an 8000x8000 one run on
//! the uncapped device at a small crop.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[cfg(feature = "cli")]
use common::cli::lookalike;
use common::cli::{s, Scratch};
use common::{assert_close, ctx};
use image::{Rgb, RgbImage};
use lookalike::cpu::preprocess::{decode_file, decoded_bytes, preprocess_image, Preprocess};
use lookalike::embed::{decode_run_len, Embedder, DECODE_BUDGET_BYTES};
use lookalike::gpu::ContextBuilder;
use lookalike::gpu::Dispatch;
use lookalike::index::{Centring, Entry, Index, Provenance};
use lookalike::model::{GpuResNet50, RandomResNet50, ResNet50, FEATURE_DIM};
use lookalike::npy::NhwcBatch;
use lookalike::ops::matmul::Precision;
use lookalike::ops::preprocess::PreprocessBatch;
use lookalike::rng::Rng;
use lookalike::search::{SearchOptions, Searcher};
use lookalike::{Context, Error};

/// The capped device's largest binding and buffer.
const CAP: u64 = 16 << 20;

/// Largest absolute difference from the CPU oracle, as in tests/preprocess.rs.
const LIMIT: f32 = 1e-6;

fn capped() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| match ContextBuilder::from_env().max_binding_bytes(CAP).build() {
        Ok(ctx) => ctx,
        Err(e) => panic!("GPU tests need an adapter and none could be opened: {e}"),
    })
}

fn net() -> &'static ResNet50 {
    static NET: OnceLock<ResNet50> = OnceLock::new();
    NET.get_or_init(|| RandomResNet50::generate(1).unwrap().net)
}

fn small_crop() -> Preprocess {
    Preprocess::imagenet(64, 56)
}

/// A smooth seeded photo, cheap to make at any size (a sum of a row and a column profile).
fn photo(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    let f: Vec<f32> = (0..6).map(|_| rng.range(1.0, 9.0)).collect();
    let profile = |len: u32, f: &[f32]| -> Vec<[f32; 3]> {
        (0..len).map(|i| std::array::from_fn(|c| (f[c] * i as f32 / len as f32 + c as f32).sin())).collect()
    };
    let (columns, rows) = (profile(width, &f[..3]), profile(height, &f[3..]));
    RgbImage::from_fn(width, height, |x, y| {
        Rgb(std::array::from_fn(|c| (127.5 + 63.0 * (columns[x as usize][c] + rows[y as usize][c])) as u8))
    })
}

/// Each image's features through the same backbone from its CPU-preprocessed crop: the
/// path the oracle defines.
fn features_of_cpu_crops(embedder: &mut Embedder, images: &[RgbImage], p: &Preprocess) -> Vec<f32> {
    let side = p.crop as usize;
    let data: Vec<f32> = images.iter().flat_map(|img| preprocess_image(img, p).unwrap()).collect();
    embedder.embed(&NhwcBatch { batch: images.len(), height: side, width: side, data }).unwrap()
}

fn assert_rows_close(what: &str, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{what}");
    for (row, (g, e)) in got.chunks(FEATURE_DIM).zip(expected.chunks(FEATURE_DIM)).enumerate() {
        assert_close(&format!("{what}, row {row}"), g, e, 1e-4);
    }
}

/// Every image finds itself first, with cosine 1, in an index of their own features:
/// searched in batches of 1 to 4, then all at once (at least 5), then the last alone: the
/// network keeps four plans, so its plan for one query is rebuilt between the two singles.
fn assert_each_finds_itself(ctx: &Context, images: &[RgbImage], features: &[f32], p: &Preprocess) {
    let n = images.len();
    assert!(n >= 5);
    let entries = (0..images.len()).map(|i| Entry::new(format!("photo{i}.jpg"), None)).collect();
    let provenance = Provenance {
        model: "resnet50".into(),
        weights_path: "seed".into(),
        weights_sha256: "seed:1".into(),
        preprocess: *p,
    };
    let index =
        Index::from_features(features, FEATURE_DIM, entries, Precision::F32, Centring::Mean, provenance).unwrap();
    let searcher = Searcher::new(ctx.clone(), net(), &index, SearchOptions::default()).unwrap();
    for range in [0..1, 1..3, 0..3, 0..4, 0..n, n - 1..n] {
        let found = searcher.search_images(&images[range.clone()], 1).unwrap();
        for (i, neighbours) in range.clone().zip(&found) {
            let what = format!("image {i} ({}x{}) of {range:?}", images[i].width(), images[i].height());
            assert_eq!(neighbours[0].index, i, "{what}");
            assert!((neighbours[0].score - 1.0).abs() < 1e-3, "{what}: cosine {}", neighbours[0].score);
        }
    }
}

/// Runs `with_cpu_fallback` into a NaN-filled buffer and compares every slot with the oracle.
fn check_fallback(ctx: &Context, images: &[RgbImage], p: &Preprocess) -> PreprocessBatch {
    let len = images.len() * p.image_len();
    let output = ctx.upload("batch", &vec![f32::NAN; len]).unwrap();
    let batch = PreprocessBatch::with_cpu_fallback(ctx, images, p, &output).unwrap();
    let dispatches: Vec<&Dispatch> = batch.dispatches().iter().collect();
    let got = ctx.run_and_read(&dispatches, &output, len).unwrap();
    for (slot, (img, got)) in images.iter().zip(got.chunks_exact(p.image_len())).enumerate() {
        let expected = preprocess_image(img, p).unwrap();
        // NaN (an unwritten slot) fails too.
        if let Some(i) = got.iter().zip(&expected).position(|(g, e)| (g - e).abs() > LIMIT || g.is_nan()) {
            panic!(
                "slot {slot} ({}x{}): index {i}: got {}, expected {}",
                img.width(),
                img.height(),
                got[i],
                expected[i]
            );
        }
    }
    batch
}

#[test]
fn uploads_past_one_binding_are_split_or_go_through_the_cpu_to_the_same_numbers() {
    let ctx = capped();
    let p = small_crop();
    // 2000x1500: ~7.9 MB of rows each, three exceed 16 MiB together. 4000x3000: 31.5 MB
    // alone. 20000x1 resized would be 1280000 wide. 30000x200 and a small portrait fit.
    let shared = [photo(2000, 1500, 1), photo(2000, 1500, 2), photo(2000, 1500, 3)];
    let images: Vec<RgbImage> = shared
        .iter()
        .cloned()
        .chain([photo(4000, 3000, 4), photo(20000, 1, 5), photo(30000, 200, 6), photo(97, 150, 7)])
        .collect();
    let batch = check_fallback(ctx, &images, &p);
    assert_eq!(batch.on_cpu(), 2, "the 4000x3000 photo and the 20000x1 strip go through the CPU");
    assert_eq!(batch.dispatches().len(), 2 * (images.len() - 2));

    // The strict constructor takes the three that share no buffer, and refuses the photo
    // whose rows alone exceed a binding, naming both sizes.
    let output = ctx.storage("batch", images.len() * p.image_len()).unwrap();
    let split = PreprocessBatch::new(ctx, &shared, &p, &output).unwrap();
    assert_eq!((split.dispatches().len(), split.on_cpu()), (6, 0));
    let e = PreprocessBatch::new(ctx, &images[3..4], &p, &output).err().expect("4000x3000 fits no binding");
    let message = e.to_string();
    assert!(message.contains("4000x3000") && message.contains(&CAP.to_string()), "{message}");
}

#[test]
fn a_capped_device_embeds_and_searches_photos_beyond_its_limits() {
    let ctx = capped();
    let p = small_crop();
    let images = vec![
        photo(2000, 1500, 11),
        photo(4000, 3000, 12),
        photo(20000, 1, 13),
        photo(1, 9000, 14),
        photo(2000, 1500, 15),
    ];
    let mut embedder = Embedder::gpu(ctx.clone(), net()).unwrap();
    let got = embedder.embed_decoded(&images, &p).unwrap();
    let expected = features_of_cpu_crops(&mut embedder, &images, &p);
    assert_rows_close("capped device", &got, &expected);
    assert_each_finds_itself(ctx, &images, &got, &p);
}

#[test]
fn a_crop_too_large_for_the_device_says_which_limit_and_what_fits() {
    let ctx = capped();
    let p = Preprocess::imagenet(640, 608);
    let mut embedder = Embedder::gpu(ctx.clone(), net()).unwrap();
    let e = embedder.embed_decoded(&[photo(700, 640, 1)], &p).expect_err("a 608 crop exceeds 16 MiB activations");
    let message = e.to_string();
    assert!(matches!(e, Error::InvalidArgument(_)), "{message}");
    assert!(message.contains(&CAP.to_string()) && message.contains("--crop"), "{message}");
    // The advised crop is the largest that fits.
    let advised: usize = message.split("--crop ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
    assert!(GpuResNet50::max_batch(ctx, advised, advised) >= 1, "{message}");
    assert_eq!(GpuResNet50::max_batch(ctx, advised + 1, advised + 1), 0, "{message}");
}

/// A PNG that is only a header claiming `width x height` pixels: its size is known
/// without decoding it.
fn png_header(path: &Path, width: u32, height: u32) {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut header = b"IHDR".to_vec();
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    // Then an empty image data chunk (where header readers stop) and the end.
    for chunk in [&header[..], b"IDAT", b"IEND"] {
        bytes.extend((chunk.len() as u32 - 4).to_be_bytes());
        bytes.extend(chunk);
        bytes.extend(crc32(chunk).to_be_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn decode_runs_hold_a_bounded_number_of_decoded_bytes() {
    let dir = Scratch::at(Path::new(env!("CARGO_TARGET_TMPDIR")).join("large-photos-runs"));
    let small = dir.path("small.png");
    photo(40, 30, 1).save(&small).unwrap();
    let huge = dir.path("huge.png"); // 300 MB decoded
    png_header(&huge, 10000, 10000);
    assert_eq!(decoded_bytes(&huge), 300_000_000);
    assert_eq!(decoded_bytes(&small), 40 * 30 * 3);
    let missing = dir.path("missing.png");
    assert_eq!(decoded_bytes(&missing), 0);
    let paths = [&small, &huge, &huge, &small, &missing, &small];
    let run = |start: usize, max: usize| decode_run_len(paths[start..].iter().map(|p| p.as_path()), max);
    assert_eq!(run(0, 16), 2, "a second 300 MB image exceeds {DECODE_BUDGET_BYTES} bytes");
    assert_eq!(run(2, 16), 4);
    assert_eq!(run(2, 3), 3);
    assert_eq!(run(1, 1), 1);
    assert_eq!(run(1, 0), 1, "a run holds at least one file");
    assert_eq!(decode_run_len([huge.as_path(); 3], 16), 1);
    // Decoding the header-only file fails with its reason; it is never fatal to a build.
    let e = decode_file(&huge).unwrap_err();
    assert!(e.to_string().contains(s(&huge)), "{e}");
}

/// Writes `img` as a JPEG (quality 90) at `path`.
fn jpeg(img: &RgbImage, path: &Path) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(file, 90)).unwrap();
}

#[test]
fn twelve_megapixel_jpegs_and_an_8000x8000_one_index_and_search_on_the_real_limits() {
    let ctx = ctx();
    let p = small_crop();
    let dir = Scratch::at(Path::new(env!("CARGO_TARGET_TMPDIR")).join("large-photos-library"));
    // Five 12 MP photos (31.5 MB of rows each at this crop: 157 MB together, past the
    // 128 MiB binding of lavapipe), one of 64 MP (168 MB alone), a strip, a broken file.
    let mut files: Vec<(PathBuf, Option<String>)> = Vec::new();
    for i in 0..5 {
        let path = dir.path(&format!("photo{i}.jpg"));
        jpeg(&photo(4000, 3000, 20 + i), &path);
        files.push((path, None));
    }
    let big = dir.path("big.jpg");
    jpeg(&photo(8000, 8000, 30), &big);
    let strip = dir.path("strip.png");
    photo(20000, 1, 31).save(&strip).unwrap();
    let broken = dir.path("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff not a real jpeg").unwrap();
    files.extend([(big, None), (broken.clone(), None), (strip, None)]);

    let mut embedder = Embedder::gpu(ctx.clone(), net()).unwrap();
    let found = embedder.embed_labelled_files(&files, &p, 16, |_| {}).unwrap();
    let kept: Vec<&PathBuf> = files.iter().map(|(path, _)| path).filter(|path| **path != broken).collect();
    let indexed: Vec<&PathBuf> = found.files.iter().map(|(path, _)| path).collect();
    assert_eq!(indexed, kept);
    assert_eq!(found.skipped.len(), 1, "{:?}", found.skipped);
    let (path, reason) = &found.skipped[0];
    assert_eq!(path, &broken);
    assert!(reason.starts_with("cannot decode image") && !reason.contains(s(&broken)), "{reason}");

    let images: Vec<RgbImage> = kept.iter().map(|path| decode_file(path).unwrap()).collect();
    let expected = features_of_cpu_crops(&mut embedder, &images, &p);
    assert_rows_close("12 MP batch", &found.features, &expected);
    assert_each_finds_itself(ctx, &images, &found.features, &p);
}

#[test]
#[cfg(feature = "cli")]
fn the_cli_skips_unusable_files_and_answers_the_other_queries() {
    let dir = Scratch::at(Path::new(env!("CARGO_TARGET_TMPDIR")).join("large-photos-cli"));
    let db = dir.path("db");
    for class in ["wide", "tall"] {
        std::fs::create_dir_all(db.join(class)).unwrap();
    }
    jpeg(&photo(4000, 3000, 40), &db.join("wide/photo.jpg"));
    photo(30000, 200, 41).save(db.join("wide/panorama.png")).unwrap();
    photo(60, 90, 42).save(db.join("tall/small.png")).unwrap();
    photo(1, 20000, 43).save(db.join("tall/strip.png")).unwrap();
    let broken = db.join("tall/broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n and then nothing").unwrap();
    let index = dir.path("index.safetensors");
    let run = lookalike(&["index", s(&db), "--seed", "1", "--resize", "64", "--crop", "56", "-o", s(&index)]);
    run.assert_success();
    let context = run.describe();
    assert!(run.stdout.contains(": 4 images"), "{context}");
    let listed: Vec<&str> = run.stderr.lines().filter(|line| line.contains("broken.png")).collect();
    assert_eq!(listed.len(), 1, "{context}");
    assert_eq!(listed[0].matches("broken.png").count(), 1, "the path appears twice:\n{context}");

    let (photo_path, strip_path) = (db.join("wide/photo.jpg"), db.join("tall/strip.png"));
    let queries = [s(&photo_path), s(&broken), s(&strip_path)];
    let run = lookalike(&[&["search", s(&index)][..], &queries, &["-k", "1", "--json"]].concat());
    let context = run.describe();
    assert_eq!(run.code, Some(1), "a skipped query fails the run:\n{context}");
    assert!(!run.stderr.contains("panicked"), "{context}");
    let answers = run.json();
    assert_eq!(answers.len(), 2, "{context}");
    for (answer, query) in answers.iter().zip([queries[0], queries[2]]) {
        assert_eq!(answer["query"], query, "{context}");
        let neighbour = &answer["neighbors"][0];
        assert_eq!(neighbour["path"], query, "{context}");
    }
    assert!(run.stderr.contains(&format!("error: {}: cannot decode image", s(&broken))), "{context}");

    let run = lookalike(&["classify", s(&index), s(&broken), queries[2], "-k", "1"]);
    let context = run.describe();
    assert_eq!(run.code, Some(1), "{context}");
    assert!(run.stdout.contains(&format!("{} -> tall", queries[2])), "{context}");
    assert!(run.stderr.contains(s(&broken)), "{context}");
}
