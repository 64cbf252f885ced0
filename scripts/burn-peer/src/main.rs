//! burn-wgpu beside `lookalike bench`: ResNet50 at 224 (batch 1, 8, 32) and matmul 1024^3 on
//! the same adapter, one JSON line per result (`cold_start_ms`, then `resnet50` and `matmul`
//! rows shaped like `lookalike bench --json`'s).
//!
//!     cargo build --release --manifest-path scripts/burn-peer/Cargo.toml --target-dir target/burn-peer
//!     target/burn-peer/release/burn-peer [--quick] [--reps N] [--api vulkan|auto] [--only resnet50|matmul]
//!
//! (`scripts/gpu-bench` builds it so and carries it to a lent GPU.)
//!
//! The network is torchvision's ResNet50 v1.5 (stride on the 3x3 convolution) with burn's
//! random initial weights and batch-norm in inference mode, written with burn's own modules the way a
//! burn user would; burn fuses and autotunes as it ships (fusion and autotune on), and the
//! warm-up runs before timing pay for the autotune. Each timed run uploads a batch from host
//! memory, runs the forward and reads its [batch, 2048] features back, as lookalike's bench
//! times it; matmul is timed from submit to the device's idle, without a read-back. FLOPs count
//! a multiply-add as two: 8.17 GFLOP of convolutions per 224x224 image, as lookalike counts.

use std::time::Instant;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use serde_json::json;

/// Convolution FLOPs of one 224x224 image (lookalike's `ShapeWalk::resnet50(224, 224).flops`).
const RESNET50_224_FLOPS: f64 = 8_174_272_512.0;
const BURN_VERSION: &str = "0.22.1";
/// Weights of torchvision's ResNet50 (25,557,032) less its 2048 x 1000 classifier and bias,
/// plus the batch-norms' running means and variances (2 x 26,560), which burn counts too.
const RESNET50_FEATURE_PARAMS: usize = 23_508_032 + 2 * 26_560;

#[derive(Module, Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(device: &Device, cin: usize, cout: usize, kernel: usize, stride: usize) -> Self {
        let pad = kernel / 2;
        let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .init(device);
        Self { conv, bn: BatchNormConfig::new(cout).init(device) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// 1x1 -> 3x3 (stride) -> 1x1, plus the projection shortcut in each stage's first block.
#[derive(Module, Debug)]
struct Bottleneck {
    reduce: ConvBn,
    spatial: ConvBn,
    expand: ConvBn,
    shortcut: Option<ConvBn>,
}

impl Bottleneck {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.shortcut {
            Some(projection) => projection.forward(x.clone()),
            None => x.clone(),
        };
        let y = relu(self.reduce.forward(x));
        let y = relu(self.spatial.forward(y));
        relu(self.expand.forward(y) + identity)
    }
}

#[derive(Module, Debug)]
struct ResNet50 {
    stem: ConvBn,
    pool: MaxPool2d,
    blocks: Vec<Bottleneck>,
    head: AdaptiveAvgPool2d,
}

impl ResNet50 {
    fn new(device: &Device) -> Self {
        let mut blocks = Vec::new();
        let mut in_c = 64;
        for (planes, count, first_stride) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)] {
            for i in 0..count {
                let stride = if i == 0 { first_stride } else { 1 };
                blocks.push(Bottleneck {
                    reduce: ConvBn::new(device, in_c, planes, 1, 1),
                    spatial: ConvBn::new(device, planes, planes, 3, stride),
                    expand: ConvBn::new(device, planes, 4 * planes, 1, 1),
                    shortcut: (i == 0).then(|| ConvBn::new(device, in_c, 4 * planes, 1, stride)),
                });
                in_c = 4 * planes;
            }
        }
        Self {
            stem: ConvBn::new(device, 3, 64, 7, 2),
            pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            blocks,
            head: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
        }
    }

    /// `[batch, 3, h, w]` -> `[batch, 2048]` pooled features.
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut y = self.pool.forward(relu(self.stem.forward(x)));
        for block in &self.blocks {
            y = block.forward(y);
        }
        self.head.forward(y).flatten(1, 3)
    }
}

/// Median seconds of `reps` runs.
fn median_secs(reps: usize, mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

struct Options {
    quick: bool,
    reps: usize,
    vulkan: bool,
    resnet: bool,
    matmul: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options { quick: false, reps: 5, vulkan: true, resnet: true, matmul: true };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--reps" => {
                o.reps = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--reps takes a positive number")?
            }
            "--api" => {
                o.vulkan = match args.next().as_deref() {
                    Some("vulkan") => true,
                    Some("auto") => false,
                    _ => return Err("--api takes vulkan or auto".into()),
                }
            }
            "--only" => {
                (o.resnet, o.matmul) = match args.next().as_deref() {
                    Some("resnet50") => (true, false),
                    Some("matmul") => (false, true),
                    _ => return Err("--only takes resnet50 or matmul".into()),
                }
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: burn-peer [--quick] [--reps N] [--api vulkan|auto] [--only resnet50|matmul]"
                ));
            }
        }
    }
    Ok(o)
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("burn-peer: {e}");
            std::process::exit(2);
        }
    };
    let api = if o.vulkan { "vulkan" } else { "auto" };
    // One JSON line per result, printed as soon as it is measured.
    let emit = |kind: &str, row: serde_json::Value| {
        println!("{}", json!({"peer": format!("burn-wgpu {BURN_VERSION}"), "api": api, kind: row}))
    };
    let start = Instant::now();
    let device =
        if o.vulkan { Device::vulkan(DeviceKind::DefaultDevice) } else { Device::wgpu(DeviceKind::DefaultDevice) };
    if o.resnet {
        resnet50(&o, &device, start, &emit);
    }
    if o.matmul {
        emit("matmul", matmul(&o, &device));
    }
}

/// Cold start (device, weights, the first forward and its autotune), then each batch.
fn resnet50(o: &Options, device: &Device, start: Instant, emit: &dyn Fn(&str, serde_json::Value)) {
    let net = ResNet50::new(device);
    // torchvision's ResNet50 without its classifier: the same network lookalike runs.
    let params = net.num_params();
    if params != RESNET50_FEATURE_PARAMS {
        eprintln!("burn-peer: the network has {params} parameters, not ResNet50's {RESNET50_FEATURE_PARAMS}");
        std::process::exit(1);
    }
    // Images come from host memory each run, as lookalike's bench uploads them.
    let pixels = |batch: usize| {
        TensorData::new(
            (0..batch * 3 * 224 * 224).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect::<Vec<f32>>(),
            [batch, 3, 224, 224],
        )
    };
    let upload = |data: &TensorData| Tensor::<4>::from_data(data.clone(), device);
    let first = net.forward(upload(&pixels(1))).into_data();
    let cold_start_ms = start.elapsed().as_secs_f64() * 1e3;
    eprintln!("burn-peer: cold start {cold_start_ms:.0} ms ({} features)", first.num_elements());
    emit("cold_start_ms", json!(cold_start_ms));

    // Batch 32 (the ResNet50 target's) before 8, in case a lent GPU's time runs out.
    let batches: &[usize] = if o.quick { &[1, 8] } else { &[1, 32, 8] };
    for &batch in batches {
        let data = pixels(batch);
        // Autotune runs on the first calls with new shapes.
        for _ in 0..2 {
            net.forward(upload(&data)).into_data();
        }
        let secs = median_secs(o.reps, || {
            net.forward(upload(&data)).into_data();
        });
        let img_per_s = batch as f64 / secs;
        eprintln!("burn-peer: resnet50 224 batch {batch}: {img_per_s:.2} img/s");
        emit(
            "resnet50",
            json!({"device": "burn-wgpu", "batch": batch, "resolution": 224, "img_per_s": img_per_s, "gflop_per_s": img_per_s * RESNET50_224_FLOPS / 1e9}),
        );
    }
}

fn matmul(o: &Options, device: &Device) -> serde_json::Value {
    let n = 1024;
    let values = |seed: usize| {
        TensorData::new(
            (0..n * n).map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0).collect::<Vec<f32>>(),
            [n, n],
        )
    };
    let (a, b) = (Tensor::<2>::from_data(values(1), device), Tensor::<2>::from_data(values(2), device));
    // Submit and wait, no read-back, as lookalike's bench times its matmul.
    let run = || {
        let c = a.clone().matmul(b.clone());
        device.sync().expect("burn-peer: the device failed");
        drop(c);
    };
    for _ in 0..3 {
        run();
    }
    let secs = median_secs(o.reps.max(10), run);
    let gflop_per_s = 2.0 * (n * n * n) as f64 / secs / 1e9;
    eprintln!("burn-peer: matmul {n}^3: {gflop_per_s:.1} GFLOP/s");
    json!({"device": "burn-wgpu", "m": n, "n": n, "k": n, "gflop_per_s": gflop_per_s})
}
