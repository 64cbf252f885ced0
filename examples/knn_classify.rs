//! k-NN classification: index one labelled folder, classify another, print accuracy and
//! the confusion matrix.
//!
//! cargo run --release --example knn_classify -- TRAIN_FOLDER TEST_FOLDER [K]
//! Both folders hold one sub-folder per class. Seeded random weights; a software adapter
//! uses 64x64 inputs.

use std::path::PathBuf;

use lookalike::classify::{vote, ConfusionMatrix};
use lookalike::cpu::preprocess::{decode_file, Preprocess};
use lookalike::embed::Embedder;
use lookalike::index::{scan_folder, Index, Provenance};
use lookalike::model::{RandomResNet50, FEATURE_DIM};
use lookalike::ops::matmul::Precision;
use lookalike::search::{SearchOptions, Searcher};
use lookalike::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (train, test) = match args.as_slice() {
        [train, test, ..] => (PathBuf::from(train), PathBuf::from(test)),
        _ => return Err("usage: knn_classify TRAIN_FOLDER TEST_FOLDER [K]".into()),
    };
    let k: usize = args.get(2).map(|k| k.parse()).transpose()?.unwrap_or(5);
    let net = RandomResNet50::generate(0)?.net;
    let ctx = Context::new()?;
    let preprocess = if ctx.is_cpu() { Preprocess::imagenet(72, 64) } else { Preprocess::default() };

    let embedded = Embedder::gpu(ctx, &net)?.embed_labelled_files(&scan_folder(&train)?, &preprocess, 16, |_| {})?;
    let provenance = Provenance {
        model: "resnet50".into(),
        weights_path: "seed:0".into(),
        weights_sha256: "seed:0".into(),
        preprocess,
    };
    let index =
        Index::from_features(&embedded.features, FEATURE_DIM, embedded.entries, Precision::F32, true, provenance)?;
    let labels: Vec<Option<String>> = index.entries.iter().map(|e| e.label.clone()).collect();

    let searcher = Searcher::new(Context::new()?, &net, &index, SearchOptions::default())?;
    let mut classes: Vec<String> = labels.iter().flatten().cloned().collect();
    classes.sort();
    classes.dedup();
    let mut matrix = ConfusionMatrix::new(classes);
    for (path, truth) in scan_folder(&test)? {
        let Some(truth) = truth else { continue };
        let neighbours = searcher.search_images(&[decode_file(&path)?], k.min(index.len()))?;
        matrix.add(&truth, vote(&neighbours[0], &labels).as_deref());
    }
    println!("{matrix}");
    Ok(())
}
