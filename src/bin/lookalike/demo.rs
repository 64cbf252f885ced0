//! `lookalike demo`: the main job on an embedded default. First metric learning on
//! Fashion-MNIST ([`crate::demo_fashion`]) where the data set is installed; then, with no
//! files needed, it draws a labelled image set, indexes it with seeded (or given) ResNet50
//! weights, searches held-out images, reports k-NN accuracy and GPU vs CPU timings, and
//! writes a collage.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{Rgb, RgbImage};
use lookalike::classify::{vote, ConfusionMatrix};
use lookalike::compare::relative_l2;
use lookalike::cpu::preprocess::{decode_file, Preprocess};
use lookalike::embed::Embedder;
use lookalike::index::{Index, LoadedWeights};
use lookalike::model::resnet50::ShapeWalk;
use lookalike::model::{Backbone, ResNet50};
use lookalike::ops::matmul::Precision;
use lookalike::rng::Rng;
use lookalike::search::{SearchOptions, Searcher};
use lookalike::{Context, Error, Result};

use crate::index_cmd::{self, IndexOptions};
use crate::search_cmd;

/// Classes differ in pattern and palette, each image in frequency, phase, angle and shade.
pub const CLASSES: [&str; 5] = ["stripes", "checkers", "rings", "blobs", "gradient"];

/// One procedural image of class `class`.
pub fn procedural_image(class: usize, width: u32, height: u32, rng: &mut Rng) -> RgbImage {
    let palettes = [[0.9, 0.2, 0.1], [0.1, 0.8, 0.2], [0.2, 0.3, 0.9], [0.95, 0.85, 0.1], [0.7, 0.7, 0.7]];
    let shade = rng.range(0.75, 1.0);
    let fg: Vec<f32> = palettes[class % palettes.len()].iter().map(|c| c * shade).collect();
    let bg = [rng.range(0.0, 0.2), rng.range(0.0, 0.2), rng.range(0.0, 0.2)];
    let freq = rng.range(3.0, 7.0);
    let phase = rng.range(0.0, 6.3);
    let angle = rng.range(-0.5, 0.5);
    let centres: Vec<(f32, f32)> = (0..6).map(|_| (rng.range(0.1, 0.9), rng.range(0.1, 0.9))).collect();
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
        let (ru, rv) = (u * angle.cos() - v * angle.sin(), u * angle.sin() + v * angle.cos());
        let t = match class {
            0 => (freq * std::f32::consts::TAU * rv + phase).sin(),
            1 => (freq * std::f32::consts::PI * ru).sin().signum() * (freq * std::f32::consts::PI * rv).sin().signum(),
            2 => (freq * std::f32::consts::TAU * ((u - 0.5).powi(2) + (v - 0.5).powi(2)).sqrt() + phase).sin(),
            3 => {
                centres.iter().map(|(cx, cy)| (-((u - cx).powi(2) + (v - cy).powi(2)) * 50.0).exp()).sum::<f32>() * 2.0
                    - 1.0
            }
            _ => ((ru + rv) * 2.0 - 1.0 + 0.2 * phase.sin()).clamp(-1.0, 1.0),
        };
        let a = (0.5 + 0.5 * t).clamp(0.0, 1.0);
        Rgb(std::array::from_fn(|c| ((a * fg[c] + (1.0 - a) * bg[c]) * 255.0) as u8))
    })
}

/// Writes `per_class` images of every class under `dir/CLASS/`, sizes varying around `side`.
fn draw_dataset(dir: &Path, per_class: usize, side: u32, rng: &mut Rng) -> Result<Vec<(PathBuf, usize)>> {
    let mut files = Vec::new();
    for (class, name) in CLASSES.iter().enumerate() {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        for i in 0..per_class {
            let (w, h) = (side + rng.int(0, side as usize / 2) as u32, side + rng.int(0, side as usize / 4) as u32);
            let path = folder.join(format!("{name}_{i:03}.png"));
            procedural_image(class, w, h, rng)
                .save(&path)
                .map_err(|e| Error::Image { path: path.clone(), reason: e.to_string() })?;
            files.push((path, class));
        }
    }
    Ok(files)
}

pub fn run(fashion: &Path, weights: Option<&Path>, per_class: Option<usize>, out: &Path) -> Result<()> {
    // Its sizes and figures are ResNet50's: a convnet is refused before any work.
    if let Some(path) = weights {
        if let Backbone::ConvNet(_) = Backbone::load(path)? {
            return Err(Error::InvalidArgument(format!(
                "{} holds a convnet; the demo runs ResNet50: index and search with the convnet instead \
                 (lookalike index DIR --weights FILE)",
                path.display()
            )));
        }
    }
    // One device for indexing, searching and the comparison: each pipeline compiles once.
    let ctx = crate::open_context(false)?;
    let info = ctx.adapter_info().clone();
    let software = ctx.is_cpu();
    let (crop, per_class) = if software { (64, per_class.unwrap_or(8)) } else { (224, per_class.unwrap_or(60)) };
    println!("adapter: {} ({:?}, {:?})", info.name, info.backend, info.device_type);
    if fashion.is_dir() {
        crate::demo_fashion::run(&ctx, fashion, out)?;
    } else {
        println!(
            "Fashion-MNIST not found at {}: install it (Debian: sudo apt-get install dataset-fashion-mnist) or give \
             --fashion DIR to train and search a real image set; going on with drawn images only",
            fashion.display()
        );
    }
    println!("ResNet50 on drawn images:");
    if software {
        println!("software adapter: {crop}x{crop} inputs and {per_class} images per class so the demo finishes in about a minute (224x224 and 60 per class on a real GPU)");
    }
    let preprocess = Preprocess::imagenet(crop + crop / 8, crop);
    let mut rng = Rng::new(2024);
    let library = out.join("images");
    let queries_dir = out.join("queries");
    for dir in [&library, &queries_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    draw_dataset(&library, per_class, crop + crop / 4, &mut rng)?;
    let queries = draw_dataset(&queries_dir, 2, crop + crop / 4, &mut rng)?;
    println!(
        "images: {} classes x {per_class} in {}, {} held-out queries in {}",
        CLASSES.len(),
        library.display(),
        queries.len(),
        queries_dir.display()
    );

    let index_path = out.join("index.safetensors");
    let start = Instant::now();
    let index = index_cmd::index(IndexOptions {
        dir: &library,
        weights,
        seed: if weights.is_none() { Some(0) } else { None },
        output: &index_path,
        precision: Some(Precision::F32),
        center: true,
        batch: 8,
        resize: Some(preprocess.resize),
        crop: Some(preprocess.crop),
        add: false,
        cpu: false,
        matrix_units: false,
        gpu: Some(ctx.clone()),
        follow_links: false,
        no_wait: false,
    })?;
    let index_secs = start.elapsed().as_secs_f64();
    println!(
        "index built in {index_secs:.1} s ({:.1} img/s end to end: decode, preprocess, ResNet50)",
        index.len() as f64 / index_secs
    );

    // The index records the weights; load them once for searching and for the comparison.
    let Backbone::ResNet50(net) = LoadedWeights::for_index(&index, weights)?.net else {
        return Err(Error::InvalidArgument("the demo's index records a convnet, not ResNet50".into()));
    };
    search_and_report(&ctx, &index, &queries, &net)?;
    compare_devices(&ctx, &net, &queries.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), &preprocess)
}

fn search_and_report(ctx: &Context, index: &Index, queries: &[(PathBuf, usize)], net: &ResNet50) -> Result<()> {
    let options = SearchOptions { tuning: Some(crate::tuning(ctx)), ..Default::default() };
    let searcher = Searcher::new(ctx.clone(), net, index, options)?;
    let images = queries.iter().map(|(p, _)| decode_file(p)).collect::<Result<Vec<_>>>()?;
    let k = 5;
    searcher.search_images(&images[..1], k)?; // compile the pipelines before timing
    let start = Instant::now();
    let results = searcher.search_images(&images, k)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "searched {} queries (k = {k}) in {:.2} s on the GPU: one submit per batch, only ids and scores read back",
        images.len(),
        secs
    );
    let labels: Vec<Option<String>> = index.entries.iter().map(|e| e.label.clone()).collect();
    let mut names: Vec<String> = CLASSES.iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut matrix = ConfusionMatrix::new(names);
    for ((path, class), neighbours) in queries.iter().zip(&results) {
        let predicted = vote(neighbours, &labels);
        matrix.add(CLASSES[*class], predicted.as_deref());
        let shown: Vec<String> = neighbours
            .iter()
            .map(|n| format!("{} {:+.3}", index.entries[n.index].label.as_deref().unwrap_or("?"), n.score))
            .collect();
        println!("  {:<22} -> {:<9} | {}", file_name(path), predicted.unwrap_or_default(), shown.join(", "));
    }
    println!("k-NN accuracy on held-out images: {:.1}%", 100.0 * matrix.accuracy());
    let collage = index_dir(index).join("collage.png");
    search_cmd::write_collage(index, &images, &results, &collage)
}

fn index_dir(index: &Index) -> PathBuf {
    index
        .entries
        .first()
        .and_then(|e| e.path.parent()?.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The same images through the GPU and the CPU reference: speed and agreement.
fn compare_devices(ctx: &Context, net: &ResNet50, paths: &[PathBuf], preprocess: &Preprocess) -> Result<()> {
    let images = paths.iter().map(|p| decode_file(p)).collect::<Result<Vec<_>>>()?;
    let mut gpu = crate::gpu_embedder(ctx.clone(), net, false)?;
    gpu.embed_decoded(&images[..1], preprocess)?;
    let start = Instant::now();
    let on_gpu = gpu.embed_decoded(&images, preprocess)?;
    let gpu_secs = start.elapsed().as_secs_f64();
    let mut cpu = Embedder::cpu(net)?;
    let start = Instant::now();
    let on_cpu = cpu.embed_decoded(&images, preprocess)?;
    let cpu_secs = start.elapsed().as_secs_f64();
    let side = preprocess.crop as usize;
    let gflop = ShapeWalk::resnet50(side, side).flops * images.len() as f64 / 1e9;
    let n = images.len() as f64;
    println!("preprocess + ResNet50 at {side}x{side}, batch {}:", images.len());
    println!("  GPU: {:7.1} img/s {:7.1} GFLOP/s", n / gpu_secs, gflop / gpu_secs);
    let gemm =
        if lookalike::cpu::panels::multiply().is_some() { "AVX2 kernel over packed weights" } else { "gemm crate" };
    println!(
        "  CPU: {:7.1} img/s {:7.1} GFLOP/s (reference: im2col + {gemm}, {} threads)",
        n / cpu_secs,
        gflop / cpu_secs,
        rayon::current_num_threads()
    );
    println!("  GPU vs CPU features: relative L2 {:.2e}", relative_l2(&on_gpu, &on_cpu));
    Ok(())
}
