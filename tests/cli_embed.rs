//! End-to-end tests of `lookalike embed` on image files and on `.npy` tensors (GPU and
//! `--cpu`), and every kind of bad input as a clean `error:` exit that creates no output
//! and never destroys an existing one.
//!
//! GPU runs use the default adapter (lavapipe, a slow software driver, in CI), so every image
//! is tiny (64x64 after preprocessing) and batches hold at most 3. The seeded weights file
//! (~100 MB) is written once per test binary into Cargo's per-target scratch directory
//! (`CARGO_TARGET_TMPDIR`), always under the same name, so runs do not pile up copies; the
//! write is atomic, so two concurrent test runs only ever see a complete file.

mod common;

use std::fs;
use std::path::Path;

use image::{GrayImage, Luma, RgbImage, Rgba, RgbaImage};
use lookalike::compare::relative_l2;
use lookalike::model::FEATURE_DIM;
use lookalike::npy;

use common::cli::{assert_no_temp_files, lookalike, pattern, s, seed1_weights, Run, Scratch};

/// A fresh directory under the system temp dir, unique to this process and test.
fn scratch(test: &str) -> Scratch {
    Scratch::at(std::env::temp_dir().join(format!("lookalike-cli-embed-{}-{test}", std::process::id())))
}

/// ImageNet normalisation, as the README documents it.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// GPU vs CPU reference, relative L2 per feature row.
const GPU_CPU_LIMIT: f64 = 1e-4;
/// The same image through the same engine in another batch position or batch size.
const SAME_ENGINE_LIMIT: f64 = 1e-5;

/// `lookalike embed --weights W ARGS... -o OUT`, which must succeed and write `rows` x 2048
/// finite features; returns the rows.
fn embed_ok(out: &Path, args: &[&str], rows: usize) -> Vec<Vec<f32>> {
    let mut full = vec!["embed", "--weights", s(seed1_weights())];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", s(out)]);
    let run = lookalike(&full);
    run.assert_success();
    assert!(run.stdout.is_empty(), "embed printed to stdout:\n{}", run.describe());
    let array = npy::read_f32(out).unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    assert_eq!(array.shape, [rows, FEATURE_DIM], "{}", run.describe());
    assert!(array.data.iter().all(|v| v.is_finite()), "non-finite features:\n{}", run.describe());
    array.data.chunks_exact(FEATURE_DIM).map(<[f32]>::to_vec).collect()
}

fn assert_rows_close(what: &str, got: &[Vec<f32>], expected: &[Vec<f32>], limit: f64) {
    assert_eq!(got.len(), expected.len(), "{what}: row count");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let err = relative_l2(g, e);
        assert!(err <= limit, "{what}: row {i} relative L2 {err:.3e} > {limit:.0e}");
    }
}

/// Asserts a failed run ([`Run::assert_error`]) that neither created `out` nor left a
/// temporary sibling of it.
fn assert_fails(run: &Run, code: i32, needles: &[&str], out: &Path) {
    run.assert_error(code, None, needles);
    let context = run.describe();
    assert!(!out.exists(), "a failed run created {}:\n{context}", out.display());
    assert_no_temp_files(out, &context);
}

/// Runs a failing `embed` (weights from [`weights`] unless `args` brings its own), checking
/// it with [`assert_fails`].
fn assert_embed_fails(dir: &Scratch, args: &[&str], needles: &[&str]) {
    let out = dir.path("out.npy");
    let mut full = vec!["embed"];
    if !args.contains(&"--weights") {
        full.extend_from_slice(&["--weights", s(seed1_weights())]);
    }
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", s(&out)]);
    assert_fails(&lookalike(&full), 1, needles, &out);
}

/// [`assert_embed_fails`] on the CPU reference and on the GPU: for inputs that are only
/// read after the engine is built, so each engine's path meets them.
fn assert_embed_fails_on_both(dir: &Scratch, args: &[&str], needles: &[&str]) {
    assert_embed_fails(dir, &[&["--cpu"][..], args].concat(), needles);
    assert_embed_fails(dir, args, needles);
}

/// The `N x 3 x H x W` tensor that `--resize S --crop S` makes of S x S images: the pixels
/// pass through unresized, so each value is `(v / 255 - mean) / std`.
fn nchw_tensor(images: &[RgbImage]) -> Vec<f32> {
    let mut data = Vec::new();
    for img in images {
        for c in 0..3 {
            for pixel in img.pixels() {
                data.push((pixel[c] as f32 / 255.0 - MEAN[c]) / STD[c]);
            }
        }
    }
    data
}

/// Writes a version 1.0 `.npy` header with the given dict, padded like numpy, then `data`.
fn raw_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    fs::write(path, bytes).unwrap();
}

#[test]
fn embed_images_keeps_order_and_gpu_matches_cpu() {
    let dir = scratch("images");
    // Three sizes and aspect ratios; 80x60 is upscaled to 96x72, the others downscaled.
    let landscape = dir.path("landscape.jpg");
    pattern(80, 60, 1).save(&landscape).unwrap();
    let grey = dir.path("portrait-grey.png");
    GrayImage::from_fn(50, 90, |x, y| Luma([(x * 5 + y * 2) as u8])).save(&grey).unwrap();
    let rgba = dir.path("square-rgba.png");
    RgbaImage::from_fn(100, 100, |x, y| {
        let p = pattern(100, 100, 3).get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], (x + y) as u8])
    })
    .save(&rgba)
    .unwrap();
    let pre = ["--resize", "72", "--crop", "64"];

    let gpu = embed_ok(&dir.path("gpu.npy"), &[&pre[..], &[s(&landscape), s(&grey), s(&rgba)]].concat(), 3);
    for i in 0..3 {
        for j in i + 1..3 {
            let diff = relative_l2(&gpu[i], &gpu[j]);
            assert!(diff > 1e-3, "images {i} and {j} gave nearly the same features ({diff:.2e})");
        }
    }

    let cpu = embed_ok(&dir.path("cpu.npy"), &[&pre[..], &["--cpu", s(&landscape), s(&grey), s(&rgba)]].concat(), 3);
    assert_rows_close("GPU vs --cpu", &gpu, &cpu, GPU_CPU_LIMIT);

    // The first two swapped, and batches of 2 + 1 instead of one batch of 3.
    let swapped = embed_ok(
        &dir.path("swapped.npy"),
        &[&pre[..], &["--batch", "2", s(&grey), s(&landscape), s(&rgba)]].concat(),
        3,
    );
    let expected = [gpu[1].clone(), gpu[0].clone(), gpu[2].clone()];
    assert_rows_close("swapped order, --batch 2", &swapped, &expected, SAME_ENGINE_LIMIT);
}

/// `embed --experimental-coop` runs the convolutions on the matrix units where the adapter
/// has them (features close to, not equal to, the f32 path's), and otherwise fails saying
/// why, writing nothing (Debian 12's lavapipe has none; `.ci/coop-tests` covers the units).
#[test]
fn embed_on_matrix_units_is_close_or_refused() {
    let dir = scratch("coop");
    let input = dir.path("x.npy");
    let tensor: Vec<f32> = (0..3 * 64 * 64).map(|i| ((i * 7919 % 255) as f32 / 127.5 - 1.0) * 1.5).collect();
    npy::write_f32(&input, &[1, 3, 64, 64], &tensor).unwrap();
    let out = dir.path("coop.npy");
    let run = lookalike(&[
        "embed",
        "--weights",
        s(seed1_weights()),
        "--experimental-coop",
        "--input-npy",
        s(&input),
        "-o",
        s(&out),
    ]);
    if run.code == Some(0) {
        let f32_path = embed_ok(&dir.path("f32.npy"), &["--input-npy", s(&input)], 1);
        let coop = npy::read_f32(&out).unwrap();
        let err = relative_l2(&coop.data, &f32_path[0]);
        assert!(err > 0.0 && err < 1e-2, "matrix units vs f32: relative L2 {err:.2e}\n{}", run.describe());
    } else {
        assert!(run.stderr.contains("no matrix units") && !run.stderr.contains("panicked"), "{}", run.describe());
        assert!(!out.exists(), "a refused embed wrote {}", out.display());
    }
}

#[test]
fn embed_npy_gpu_matches_cpu_and_the_same_images_as_files() {
    let dir = scratch("npy");
    // 64x64 images at --resize 64 --crop 64 pass through unresized, so the tensor the CLI
    // makes of them is exactly `nchw_tensor` of the decoded pixels.
    let png = dir.path("a.png");
    let original = pattern(64, 64, 2);
    original.save(&png).unwrap();
    let jpg = dir.path("b.jpg");
    pattern(64, 64, 5).save(&jpg).unwrap();
    let decoded = [image::open(&png).unwrap().to_rgb8(), image::open(&jpg).unwrap().to_rgb8()];
    assert_eq!(decoded[0], original, "PNG is lossless");
    let input = dir.path("x.npy");
    npy::write_f32(&input, &[2, 3, 64, 64], &nchw_tensor(&decoded)).unwrap();

    let gpu = embed_ok(&dir.path("gpu.npy"), &["--input-npy", s(&input)], 2);
    assert!(relative_l2(&gpu[0], &gpu[1]) > 1e-3, "the two images gave nearly the same features");
    // --batch 1 also runs the CLI's own chunking of the tensor.
    let cpu = embed_ok(&dir.path("cpu.npy"), &["--cpu", "--batch", "1", "--input-npy", s(&input)], 2);
    assert_rows_close("--input-npy GPU vs --cpu", &gpu, &cpu, GPU_CPU_LIMIT);

    let files = embed_ok(&dir.path("files.npy"), &["--resize", "64", "--crop", "64", s(&png), s(&jpg)], 2);
    assert_rows_close("image files vs the same tensor via --input-npy", &files, &gpu, 1e-6);
}

#[test]
fn unreadable_images_fail_cleanly() {
    let dir = scratch("bad-images");
    let good = dir.path("good.png");
    pattern(64, 64, 7).save(&good).unwrap();
    let empty = dir.path("empty.jpg");
    fs::write(&empty, b"").unwrap();
    let text = dir.path("text.png");
    fs::write(&text, b"this is a text file, not a PNG\n").unwrap();
    let truncated = dir.path("truncated.png");
    let png_bytes = fs::read(&good).unwrap();
    fs::write(&truncated, &png_bytes[..png_bytes.len() / 2]).unwrap();
    let missing = dir.path("missing.png");
    let pre = ["--resize", "72", "--crop", "64"];

    let cases: [(&Path, &[&str]); 4] = [
        (&empty, &["cannot decode image", "empty"]),
        (&text, &["cannot decode image", "not a recognised image format"]),
        (&truncated, &["cannot decode image"]),
        (&missing, &["os error 2"]),
    ];
    for (bad, needles) in cases {
        let needles = [needles, &[s(bad)]].concat();
        assert_embed_fails(&dir, &[&pre[..], &["--cpu", s(bad)]].concat(), &needles);
        // After a good image (in the same batch) the error still names the bad one.
        assert_embed_fails(&dir, &[&pre[..], &["--cpu", s(&good), s(bad)]].concat(), &needles);
    }
    // Images are decoded by the same code for either engine: one GPU run suffices.
    let needles = ["cannot decode image", "not a recognised image format", s(&text)];
    assert_embed_fails(&dir, &[&pre[..], &[s(&good), s(&text)]].concat(), &needles);
}

#[test]
fn bad_npy_inputs_fail_cleanly() {
    let dir = scratch("bad-npy");
    let rank2 = dir.path("rank2.npy");
    npy::write_f32(&rank2, &[3, 64], &[0.5; 3 * 64]).unwrap();
    let channels4 = dir.path("channels4.npy");
    npy::write_f32(&channels4, &[1, 4, 64, 64], &vec![0.5; 4 * 64 * 64]).unwrap();
    let float64 = dir.path("float64.npy");
    let f64_data: Vec<u8> = (0..3 * 64 * 64).flat_map(|i| (i as f64 * 1e-4).to_le_bytes()).collect();
    raw_npy(&float64, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 3, 64, 64), }", &f64_data);
    let truncated = dir.path("truncated.npy");
    npy::write_f32(&truncated, &[2, 3, 64, 64], &vec![0.5; 2 * 3 * 64 * 64]).unwrap();
    let bytes = fs::read(&truncated).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let missing = dir.path("missing.npy");

    let cases: [(&Path, &[&str]); 5] = [
        (&rank2, &["4-D", "N x 3 x H x W", "[3, 64]"]),
        (&channels4, &["3 channels", "[1, 4, 64, 64]"]),
        (&float64, &["dtype <f8", "'<f4'"]),
        (&truncated, &["truncated"]),
        (&missing, &["os error 2"]),
    ];
    for (bad, needles) in cases {
        assert_embed_fails(&dir, &["--cpu", "--input-npy", s(bad)], &[needles, &[s(bad)]].concat());
    }
    // The tensor is read by the same code for either engine: one GPU run suffices.
    let needles = ["3 channels", "[1, 4, 64, 64]", s(&channels4)];
    assert_embed_fails(&dir, &["--input-npy", s(&channels4)], &needles);
    // A NaN pixel is refused before the forward, on either engine.
    let mut pixels = vec![0.5; 3 * 64 * 64];
    pixels[100] = f32::NAN;
    let nan = dir.path("nan.npy");
    npy::write_f32(&nan, &[1, 3, 64, 64], &pixels).unwrap();
    for engine in [&["--cpu"][..], &[]] {
        assert_embed_fails(&dir, &[engine, &["--input-npy", s(&nan)]].concat(), &["resnet50 input", "non-finite"]);
    }
}

#[test]
fn inputs_too_small_for_resnet50_name_the_minimum() {
    let dir = scratch("too-small");
    let small = dir.path("small.npy");
    npy::write_f32(&small, &[1, 3, 16, 16], &vec![0.1; 3 * 16 * 16]).unwrap();
    let needles = ["16x16", "too small", "ResNet50", "at least 32x32"];
    assert_embed_fails_on_both(&dir, &["--input-npy", s(&small)], &needles);

    let image = dir.path("image.png");
    pattern(40, 30, 4).save(&image).unwrap();
    assert_embed_fails_on_both(&dir, &["--resize", "16", "--crop", "16", s(&image)], &needles);
}

#[test]
fn bad_weights_and_arguments_fail_cleanly() {
    let dir = scratch("bad-args");
    let input = dir.path("x.npy");
    npy::write_f32(&input, &[1, 3, 64, 64], &vec![0.1; 3 * 64 * 64]).unwrap();
    let image = dir.path("image.png");
    pattern(64, 64, 6).save(&image).unwrap();

    let not_safetensors = dir.path("not.safetensors");
    fs::write(&not_safetensors, b"these are not ResNet50 weights\n").unwrap();
    let head = dir.path("head.safetensors");
    let mut prefix = vec![0u8; 1000];
    std::io::Read::read_exact(&mut fs::File::open(seed1_weights()).unwrap(), &mut prefix).unwrap();
    fs::write(&head, &prefix).unwrap();
    let missing = dir.path("missing.safetensors");
    // A valid safetensors file that is not ResNet50: the error names the file and tensor.
    let foreign = dir.path("foreign.safetensors");
    let data = vec![0u8; 8];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
    fs::write(&foreign, safetensors::serialize([("x", view)], None).unwrap()).unwrap();
    for (file, needles) in [
        (&foreign, &["tensor conv1.weight is missing"][..]),
        (&not_safetensors, &["not a valid safetensors file"]),
        (&head, &["not a valid safetensors file"]),
        (&missing, &["os error 2"]),
    ] {
        // The weights are read before the engine is chosen: one run each.
        let needles = [needles, &[s(file)]].concat();
        assert_embed_fails(&dir, &["--weights", s(file), "--input-npy", s(&input)], &needles);
    }

    assert_embed_fails(&dir, &["--batch", "0", "--input-npy", s(&input)], &["--batch", "at least 1"]);
    assert_embed_fails(&dir, &["--batch", "0", s(&image)], &["--batch", "at least 1"]);
    assert_embed_fails_on_both(
        &dir,
        &["--crop", "300", "--resize", "256", s(&image)],
        &["resize (256)", "at least crop (300)"],
    );
    assert_embed_fails(&dir, &["--cpu", "--crop", "0", "--resize", "64", s(&image)], &["crop (0)", "positive"]);

    // Command-line mistakes are clap's: exit code 2, still an `error:` first.
    let out = dir.path("out.npy");
    let run = lookalike(&["embed", "--weights", s(seed1_weights()), "-o", s(&out)]);
    assert_fails(&run, 2, &["required"], &out);
    let run =
        lookalike(&["embed", "--weights", s(seed1_weights()), "--input-npy", s(&input), s(&image), "-o", s(&out)]);
    assert_fails(&run, 2, &["cannot be used with"], &out);
}

#[test]
fn failed_embed_keeps_an_existing_output() {
    let dir = scratch("keep-output");
    let out = dir.path("features.npy");
    let marker = b"features from an earlier run; must survive a failed embed\n";
    let bad_image = dir.path("bad.png");
    fs::write(&bad_image, b"not a png").unwrap();
    let small = dir.path("small.npy");
    npy::write_f32(&small, &[1, 3, 16, 16], &vec![0.1; 3 * 16 * 16]).unwrap();
    for args in [
        vec!["--resize", "72", "--crop", "64", s(&bad_image)],
        vec!["--input-npy", s(&small)],
        vec!["--cpu", "--input-npy", s(&small)],
        vec!["--batch", "0", "--input-npy", s(&small)],
    ] {
        fs::write(&out, marker).unwrap();
        let mut full = vec!["embed", "--weights", s(seed1_weights())];
        full.extend_from_slice(&args);
        full.extend_from_slice(&["-o", s(&out)]);
        let run = lookalike(&full);
        assert_eq!(run.code, Some(1), "{}", run.describe());
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
        assert_eq!(fs::read(&out).unwrap(), marker, "a failed embed changed the output:\n{}", run.describe());
        assert_no_temp_files(&out, &run.describe());
    }
}

#[test]
fn output_that_is_a_directory_is_refused() {
    let dir = scratch("out-dir");
    let input = dir.path("x.npy");
    npy::write_f32(&input, &[1, 3, 64, 64], &vec![0.1; 3 * 64 * 64]).unwrap();
    let out_dir = dir.path("features");
    fs::create_dir(&out_dir).unwrap();
    let run =
        lookalike(&["embed", "--weights", s(seed1_weights()), "--cpu", "--input-npy", s(&input), "-o", s(&out_dir)]);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains("is a directory"), "{}", run.describe());
    assert!(out_dir.is_dir(), "the directory was replaced");
    assert_no_temp_files(&out_dir, &run.describe());
}

/// `--batch` times the image size overflows with `--input-npy`: a panic today (debug builds;
/// release builds wrap, and a product of exactly 2^64 panics in `chunks(0)`).
#[test]
fn huge_batch_is_not_a_panic() {
    let dir = scratch("huge-batch");
    let input = dir.path("x.npy");
    npy::write_f32(&input, &[2, 3, 64, 64], &vec![0.1; 2 * 3 * 64 * 64]).unwrap();
    // 2^52 * (64 * 64 * 3) is exactly 3 * 2^64.
    for batch in [usize::MAX, 1 << 52] {
        let out = dir.path("out.npy");
        let batch = batch.to_string();
        let run = lookalike(&[
            "embed",
            "--weights",
            s(seed1_weights()),
            "--cpu",
            "--batch",
            &batch,
            "--input-npy",
            s(&input),
            "-o",
            s(&out),
        ]);
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
        assert!(matches!(run.code, Some(0 | 1)), "{}", run.describe());
        let _ = fs::remove_file(&out);
    }
}
