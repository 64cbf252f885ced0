//! Index a folder of images and query it through the library API.
//!
//! cargo run --release --example search_folder -- FOLDER QUERY_IMAGE [WEIGHTS.safetensors]
//! (seeded random weights when none are given; a software adapter uses 64x64 inputs)

use std::path::PathBuf;

use lookalike::cpu::preprocess::{decode_file, Preprocess};
use lookalike::embed::Embedder;
use lookalike::index::{scan_folder, Index, Provenance};
use lookalike::model::{RandomResNet50, ResNet50, FEATURE_DIM};
use lookalike::ops::matmul::Precision;
use lookalike::search::{SearchOptions, Searcher};
use lookalike::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [folder, query, rest @ ..] = args.as_slice() else {
        return Err("usage: search_folder FOLDER QUERY_IMAGE [WEIGHTS.safetensors]".into());
    };
    let (net, weights_tag) = match rest.first() {
        Some(w) => (ResNet50::load(w)?, lookalike::index::sha256_file(w)?),
        None => (RandomResNet50::generate(0)?.net, "seed:0".to_string()),
    };

    let ctx = Context::new()?;
    let preprocess = if ctx.is_cpu() { Preprocess::imagenet(72, 64) } else { Preprocess::default() };

    // Features of every image under the folder (labels from sub-folder names).
    let files = scan_folder(folder)?;
    let mut embedder = Embedder::gpu(ctx.clone(), &net)?;
    let embedded =
        embedder.embed_labelled_files(&files, &preprocess, 16, |done| eprint!("\r{done}/{} images", files.len()))?;
    eprintln!();
    let provenance = Provenance {
        model: "resnet50".into(),
        weights_path: weights_tag.clone(),
        weights_sha256: weights_tag,
        preprocess,
    };
    let index =
        Index::from_features(&embedded.features, FEATURE_DIM, embedded.entries, Precision::F32, true, provenance)?;

    // One GPU pipeline from the query's pixels to its 5 nearest rows.
    let searcher = Searcher::new(ctx, &net, &index, SearchOptions::default())?;
    let k = 5.min(index.len());
    let neighbours = searcher.search_images(&[decode_file(query)?], k)?;
    for (rank, n) in neighbours[0].iter().enumerate() {
        println!("{:>2}. {:+.4} {}", rank + 1, n.score, index.entries[n.index].path.display());
    }
    Ok(())
}
