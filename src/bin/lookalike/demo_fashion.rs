//! The demo's metric-learning half: train the recipe's convnet on Fashion-MNIST on the GPU,
//! score it, then index the 10,000 test images through the image pipeline with the trained
//! net and search a few of them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::GrayImage;
use lookalike::cpu::preprocess::decode_file;
use lookalike::data::{self, LabelledImages, LoadOptions};
use lookalike::index::Index;
use lookalike::model::Backbone;
use lookalike::ops::matmul::Precision;
use lookalike::render::{loss_curve_png, save_png};
use lookalike::search::{SearchOptions, Searcher};
use lookalike::train::run::evaluate;
use lookalike::train::{ConvNet, ConvNetSpec, TrainConfig};
use lookalike::{Context, Error, Result};

use crate::index_cmd::{self, IndexOptions};
use crate::train_cmd;

/// Where Debian's `dataset-fashion-mnist` installs the IDX files.
pub const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The schedule for this adapter: the recipe's 20 x 1000 steps on a GPU; on a software
/// adapter (about 20 steps/s) 2 x 800, which reaches 10-NN precision ~0.76 in under two
/// minutes.
fn schedule(ctx: &Context) -> (usize, usize, &'static str) {
    if ctx.is_cpu() {
        (2, 800, "a shorter schedule for a software adapter (the recipe's is 20 x 1000 on a GPU)")
    } else {
        (20, 1000, "the recipe's schedule")
    }
}

pub fn run(ctx: &Context, dir: &Path, out: &Path) -> Result<()> {
    let dataset = data::load(dir, &LoadOptions::default())?;
    let Some(test) = &dataset.test else {
        return Err(Error::InvalidArgument(format!("{}: no t10k test split", dir.display())));
    };
    let train = &dataset.train;
    let (epochs, steps, why) = schedule(ctx);
    println!(
        "metric learning on Fashion-MNIST ({} training and {} test images of {}x{}): {epochs} epochs x {steps} steps on the GPU, {why}",
        train.len(),
        test.len(),
        train.height,
        train.width
    );
    let config = TrainConfig { epochs, steps_per_epoch: steps, ..TrainConfig::default() };
    let mut net = ConvNet::glorot(ConvNetSpec::recipe(train.height, train.width, train.channels), config.seed)?;
    net.class_names = train.class_names.clone();
    let report = train_cmd::train(Some(ctx), net, train, &dataset.source, config, false)?;
    let net = report.net;
    println!(
        "trained: {:.1} steps/s, loss {:.3} -> {:.3}",
        report.steps_per_s,
        report.epoch_losses.first().copied().unwrap_or(f32::NAN),
        report.epoch_losses.last().copied().unwrap_or(f32::NAN)
    );
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let model = out.join("fashion-convnet.safetensors");
    net.save(&model)?;
    save_png(
        &loss_curve_png(&report.epoch_losses, "training loss, mean of each epoch"),
        &train_cmd::figure_path(&model, "loss"),
    )?;

    let evaluation = evaluate(Some(ctx), &net, test)?;
    let m = &evaluation.metrics;
    println!(
        "test split: 10-NN precision {:.3}, 10-NN vote accuracy {:.3}, precision@1 {:.3}, MAP@R {:.3}",
        m.precision_at_10, m.vote_accuracy_at_10, m.precision_at_1, m.map_at_r
    );
    train_cmd::write_figures(&model, test, &evaluation, &net.class_names)?;

    // The test images as PNG files, indexed and searched through the image pipeline
    // (decode, preprocess, the trained convnet, normalise, matmul, top-k).
    let images_dir = out.join("fashion-test");
    let files = write_pngs(test, &images_dir)?;
    let index_path = out.join("fashion.index");
    let start = Instant::now();
    let index = index_cmd::index(IndexOptions {
        dir: &images_dir,
        weights: Some(&model),
        seed: None,
        output: &index_path,
        precision: Some(Precision::F32),
        center: false,
        batch: 256,
        resize: None,
        crop: None,
        add: false,
        cpu: false,
        matrix_units: false,
        gpu: Some(ctx.clone()),
        follow_links: false,
        no_wait: false,
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!("indexed {} test images in {secs:.1} s ({:.0} img/s end to end)", index.len(), index.len() as f64 / secs);
    search_some(ctx, &net, &index, &files[..5])?;
    println!(
        "wrote {} and its loss curve, neighbour collage and confusion matrix (PNG) beside it, and {}",
        model.display(),
        index_path.display()
    );
    Ok(())
}

/// Writes every image of `set` as `dir/CLASS/NNNNN.png` (replacing `dir`) and returns the
/// paths in the set's order.
fn write_pngs(set: &LabelledImages, dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut paths = Vec::with_capacity(set.len());
    for (i, &label) in set.labels.iter().enumerate() {
        let class = set.class_names[label as usize].replace('/', "-");
        let folder = dir.join(&class);
        if i == 0 || !folder.exists() {
            std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        }
        let path = folder.join(format!("{i:05}.png"));
        let image = GrayImage::from_raw(set.width as u32, set.height as u32, set.image(i).to_vec())
            .ok_or_else(|| Error::InvalidArgument("a test image is not single-channel".into()))?;
        image.save(&path).map_err(|e| Error::Image { path: path.clone(), reason: e.to_string() })?;
        paths.push(path);
    }
    Ok(paths)
}

/// Searches `queries` (files that are also in the index) and prints their neighbours.
fn search_some(ctx: &Context, net: &ConvNet, index: &Index, queries: &[PathBuf]) -> Result<()> {
    let backbone = Backbone::ConvNet(net.clone());
    let options = SearchOptions { tuning: Some(crate::tuning(ctx)), ..Default::default() };
    let searcher = Searcher::new(ctx.clone(), &backbone, index, options)?;
    let images = queries.iter().map(|p| decode_file(p)).collect::<Result<Vec<_>>>()?;
    let k = 6;
    let start = Instant::now();
    let results = searcher.search_images(&images, k)?;
    println!(
        "searched {} test images (k = {k}, the first hit being the query itself) in {:.2} s:",
        images.len(),
        start.elapsed().as_secs_f64()
    );
    for (path, found) in queries.iter().zip(&results) {
        let query_class = path.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
        let shown: Vec<String> = found
            .iter()
            .skip(1)
            .map(|n| format!("{} {:.3}", index.entries[n.index].label.as_deref().unwrap_or("?"), n.score))
            .collect();
        println!("  {:<12} -> {}", query_class.unwrap_or_default(), shown.join(", "));
    }
    Ok(())
}
