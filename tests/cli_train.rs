//! `lookalike train` and `evaluate` end to end through the binary: the model file a numpy
//! user reads, the figures, the JSON report, GPU and CPU twin agreeing, malformed data named,
//! and an interrupted run leaving no model behind.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use lookalike::rng::Rng;
use lookalike::train::ConvNet;
use serde_json::Value;

use common::cli::{assert_no_temp_files, lookalike, s, Run, Scratch};

/// A small net, so a run takes seconds on a software adapter.
const SMALL: [&str; 4] = ["--widths", "4,6,8", "--dim", "3"];

fn scratch(name: &str) -> Scratch {
    Scratch::at(std::env::temp_dir().join(format!("lookalike-cli-train-{}-{name}", std::process::id())))
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Images of `labels`' classes, 16x16: class c is stripes of period c + 2 plus noise, so a
/// few steps already separate them.
fn images(labels: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut pixels = Vec::new();
    for &c in labels {
        for y in 0..16u32 {
            for x in 0..16u32 {
                let stripe = if ((x + y * (c as u32 % 2)) / (c as u32 + 2)).is_multiple_of(2) { 200 } else { 30 };
                pixels.push((stripe + rng.int(0, 40)) as u8);
            }
        }
    }
    pixels
}

/// An IDX folder: 4 classes, 24 training images (gzip) and 12 test images (plain).
fn write_idx(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(5);
    let train: Vec<u8> = (0..24).map(|i| (i % 4) as u8).collect();
    let test: Vec<u8> = (0..12).map(|i| (i % 4) as u8).collect();
    let write = |name: &str, bytes: Vec<u8>| fs::write(dir.join(name), bytes).unwrap();
    write("train-images-idx3-ubyte.gz", gz(&idx(0x803, &[24, 16, 16], &images(&train, &mut rng))));
    write("train-labels-idx1-ubyte.gz", gz(&idx(0x801, &[24], &train)));
    write("t10k-images-idx3-ubyte", idx(0x803, &[12, 16, 16], &images(&test, &mut rng)));
    write("t10k-labels-idx1-ubyte", idx(0x801, &[12], &test));
}

fn object(run: &Run) -> Value {
    run.assert_success();
    let value: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", run.describe()));
    assert!(value.is_object(), "{}", run.describe());
    value
}

fn train(data: &Path, model: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["train", s(data), "-o", s(model), "--epochs", "2", "--steps", "6", "--seed", "3", "--json"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    lookalike(&args)
}

fn epoch_losses(report: &Value) -> Vec<f64> {
    report["epochs"].as_array().unwrap().iter().map(|e| e["loss"].as_f64().unwrap()).collect()
}

fn check_metrics(test: &Value, context: &str) {
    for key in ["precision_at_10", "vote_accuracy_at_10", "precision_at_1", "map_at_r"] {
        let v = test[key].as_f64().unwrap_or_else(|| panic!("no {key}: {context}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}: {context}");
    }
}

#[test]
fn train_writes_a_model_its_figures_and_a_report() {
    let dir = scratch("model");
    let data = dir.path("data");
    write_idx(&data);
    let model = dir.path("m.safetensors");
    let report = object(&train(&data, &model, &[]));
    let context = report.to_string();
    assert!(report["device"].as_str().is_some_and(|d| !d.is_empty() && d != "CPU"), "{context}");
    let losses = epoch_losses(&report);
    assert_eq!(losses.len(), 2, "{context}");
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{context}");
    assert!(report["steps_per_s"].as_f64().is_some_and(|r| r > 0.0), "{context}");
    check_metrics(&report["test"], &context);

    let net = ConvNet::load(&model).unwrap();
    assert_eq!((net.spec.height, net.spec.width, net.spec.channels), (16, 16, 1));
    assert_eq!((net.spec.widths, net.spec.dim), ([4, 6, 8], 3));
    assert_eq!(net.class_names, ["0", "1", "2", "3"]);
    assert_eq!(net.metadata["steps"], "12");
    assert_eq!(net.metadata["seed"], "3");
    assert!(net.metadata["recipe"].contains("\"temperature\":0.2"), "{:?}", net.metadata);
    assert_ne!(net.params, ConvNet::glorot(net.spec, 3).unwrap().params, "the weights never moved");
    for figure in ["loss", "neighbours", "confusion"] {
        let path = dir.path(&format!("m-{figure}.png"));
        let image = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(image.width() > 50 && image.height() > 50);
    }
    assert_no_temp_files(&model, &context);

    // `evaluate` scores the saved model as `train` did.
    let evaluated = object(&lookalike(&["evaluate", s(&model), s(&data), "--json"]));
    for key in ["precision_at_10", "vote_accuracy_at_10", "precision_at_1", "map_at_r"] {
        let (a, b) = (evaluated["test"][key].as_f64().unwrap(), report["test"][key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{key}: {a} vs {b}");
    }
    let text = lookalike(&["evaluate", s(&model), s(&data)]);
    text.assert_success();
    assert!(text.stdout.contains("10-NN precision"), "{}", text.describe());

    // The embeddings it scored, against the CPU twin's forward of the test images.
    let npy = dir.path("test-embeddings.npy");
    lookalike(&["evaluate", s(&model), s(&data), "--embeddings", s(&npy)]).assert_success();
    let written = lookalike::npy::read_f32(&npy).unwrap();
    assert_eq!(written.shape, [12, 3]);
    let dataset = lookalike::data::load(&data, &Default::default()).unwrap();
    let test = dataset.test.unwrap();
    let input: Vec<f32> = test.pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    let want = lookalike::model::convnet_cpu::embed(&net, &input, test.len()).unwrap();
    for (i, (a, b)) in written.data.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-5, "embedding value {i}: {a} written, {b} by the CPU twin");
    }
}

#[test]
fn the_gpu_and_the_cpu_twin_train_alike() {
    let dir = scratch("twins");
    let data = dir.path("data");
    write_idx(&data);
    let (gpu_model, cpu_model) = (dir.path("gpu.safetensors"), dir.path("cpu.safetensors"));
    let gpu = object(&train(&data, &gpu_model, &[]));
    let cpu = object(&train(&data, &cpu_model, &["--cpu"]));
    assert_eq!(cpu["device"], "CPU");
    for (g, c) in epoch_losses(&gpu).iter().zip(epoch_losses(&cpu)) {
        assert!((g - c).abs() <= 1e-4 * c.abs(), "epoch losses {g} (GPU) vs {c} (CPU)");
    }
    let (g, c) = (ConvNet::load(&gpu_model).unwrap(), ConvNet::load(&cpu_model).unwrap());
    let scale = c.params.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.params.iter().zip(&c.params).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs() + 1e-5 * scale, "weight {i}: GPU {a} vs CPU {b}");
    }
}

#[test]
fn malformed_data_and_arguments_are_refused_clearly() {
    let dir = scratch("malformed");
    let model = dir.path("m.safetensors");
    let good = dir.path("good");
    write_idx(&good);
    let case = |name: &str, file: &str, bytes: Vec<u8>| -> PathBuf {
        let folder = dir.path(name);
        write_idx(&folder);
        fs::write(folder.join(file), bytes).unwrap();
        folder
    };
    let bad_magic = case("magic", "train-images-idx3-ubyte.gz", gz(&idx(0x804, &[24, 16, 16], &[0; 24 * 256])));
    train(&bad_magic, &model, &[]).assert_error(1, None, &["train-images-idx3-ubyte.gz"]);
    let truncated = case("truncated", "t10k-images-idx3-ubyte", idx(0x803, &[12, 16, 16], &[0; 100]));
    train(&truncated, &model, &[]).assert_error(1, None, &["t10k-images-idx3-ubyte"]);
    let mismatch = case("mismatch", "train-labels-idx1-ubyte.gz", gz(&idx(0x801, &[23], &[0; 23])));
    train(&mismatch, &model, &[]).assert_error(1, None, &["train-labels-idx1-ubyte.gz"]);
    let mut lonely: Vec<u8> = (0..24).map(|i| (i % 3) as u8).collect();
    lonely[23] = 3;
    let one_image = case("one-image", "train-labels-idx1-ubyte.gz", gz(&idx(0x801, &[24], &lonely)));
    train(&one_image, &model, &[]).assert_error(1, None, &["\"3\" has 1 image", "at least 2"]);
    let one_class = case("one-class", "train-labels-idx1-ubyte.gz", gz(&idx(0x801, &[24], &[0; 24])));
    fs::write(one_class.join("t10k-labels-idx1-ubyte"), idx(0x801, &[12], &[0; 12])).unwrap();
    train(&one_class, &model, &[]).assert_error(1, None, &["1 class(es)"]);
    let empty = dir.path("empty");
    fs::create_dir_all(&empty).unwrap();
    train(&empty, &model, &[]).assert_error(1, None, &[s(&empty)]);
    train(&dir.path("missing"), &model, &[]).assert_error(1, None, &["missing"]);
    train(&good, &model, &["--widths", "4,6"]).assert_error(1, None, &["--widths takes three numbers"]);
    train(&good, &model, &["--lr=-1"]).assert_error(1, None, &["learning rate"]);
    train(&good, &model, &["--temperature", "0"]).assert_error(1, None, &["temperature"]);
    train(&good, &dir.0, &[]).assert_error(1, None, &["is a directory"]);
    train(&good, &dir.path("no-such-folder/m.safetensors"), &[]).assert_error(1, None, &["does not exist"]);
    lookalike(&["train", s(&good), "-o", s(&model), "--widths", "4,70000,8", "--cpu"]).assert_error(
        1,
        None,
        &["70000 channels", "at most 4096"],
    );
    // Outputs that would replace inputs are refused before any work, the inputs untouched.
    let images = good.join("train-images-idx3-ubyte.gz");
    let before = fs::read(&images).unwrap();
    train(&good, &images, &[]).assert_error(1, None, &["would replace a file of the input data"]);
    assert_eq!(fs::read(&images).unwrap(), before);
    // A test split that cannot be scored is refused before training, naming the data.
    let small_test = case("small-test", "t10k-images-idx3-ubyte", idx(0x803, &[12, 15, 15], &[9; 12 * 225]));
    train(&small_test, &model, &[]).assert_error(1, None, &["small-test", "15x15x1", "16x16x1"]);
    let unseen = case("unseen", "t10k-labels-idx1-ubyte", idx(0x801, &[12], &[0, 1, 2, 5, 0, 1, 2, 3, 0, 1, 2, 3]));
    train(&unseen, &model, &[]).assert_error(1, None, &["unseen", "classes the training split lacks: 5"]);
    assert!(!model.exists(), "a refused run wrote a model");
    // A model is refused as data for another size.
    let made = dir.path("made.safetensors");
    object(&train(&good, &made, &[]));
    let wide = dir.path("wide");
    fs::create_dir_all(&wide).unwrap();
    let labels: Vec<u8> = (0..8).map(|i| (i % 2) as u8).collect();
    fs::write(wide.join("train-images-idx3-ubyte"), idx(0x803, &[8, 16, 17], &[7; 8 * 16 * 17])).unwrap();
    fs::write(wide.join("train-labels-idx1-ubyte"), idx(0x801, &[8], &labels)).unwrap();
    lookalike(&["evaluate", s(&made), s(&wide)]).assert_error(1, None, &["16x16x1", "16x17x1"]);
    let made_bytes = fs::read(&made).unwrap();
    lookalike(&["evaluate", s(&made), s(&good), "--embeddings", s(&made)]).assert_error(
        1,
        None,
        &["would replace the input"],
    );
    assert_eq!(fs::read(&made).unwrap(), made_bytes);
}

#[test]
fn an_interrupted_run_leaves_no_model() {
    let dir = scratch("interrupted");
    let data = dir.path("data");
    write_idx(&data);
    let model = dir.path("m.safetensors");
    fs::write(&model, b"the previous model").unwrap();
    let mut child = common::cli::command()
        .args(["train", s(&data), "-o", s(&model), "--epochs", "1000", "--steps", "1000", "--json"])
        .args(SMALL)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "a million steps ended within 3 s");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(fs::read(&model).unwrap(), b"the previous model", "the old model was touched");
    assert_no_temp_files(&model, "after a killed training run");
}
