//! k-NN classification: index one labelled folder, classify another, print accuracy and
//! the confusion matrix.
//!
//! cargo run --release --example knn_classify -- TRAIN_FOLDER TEST_FOLDER [K]
//! Both folders hold one sub-folder per class. Seeded random weights; a software adapter
//! uses 64x64 inputs.

use std::path::PathBuf;

use lookalike::classify::{vote, ConfusionMatrix};
use lookalike::cpu::preprocess::{decode_file, Preprocess};
use lookalike::index::{scan_folder, IndexBuilder, LoadedWeights};
use lookalike::search::{SearchOptions, Searcher};
use lookalike::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (train, test) = match args.as_slice() {
        [train, test, ..] => (PathBuf::from(train), PathBuf::from(test)),
        _ => return Err("usage: knn_classify TRAIN_FOLDER TEST_FOLDER [K]".into()),
    };
    let k: usize = args.get(2).map(|k| k.parse()).transpose()?.unwrap_or(5);
    let weights = LoadedWeights::from_seed(0)?;
    let ctx = Context::new()?;
    let preprocess = if ctx.is_cpu() { Preprocess::imagenet(72, 64) } else { Preprocess::default() };

    let index = IndexBuilder::new(ctx.clone(), &weights).preprocess(preprocess).centred(true).from_folder(&train)?;
    let labels: Vec<Option<String>> = index.entries.iter().map(|e| e.label.clone()).collect();

    let searcher = Searcher::new(ctx, &weights.net, &index, SearchOptions::default())?;
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
