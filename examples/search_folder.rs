//! Index a folder of images and query it through the library API.
//!
//! cargo run --release --example search_folder -- FOLDER QUERY_IMAGE [WEIGHTS.safetensors]
//! (seeded random weights when none are given; a software adapter uses 64x64 inputs)

use std::path::PathBuf;

use lookalike::cpu::preprocess::{decode_file, Preprocess};
use lookalike::index::{IndexBuilder, LoadedWeights};
use lookalike::search::{SearchOptions, Searcher};
use lookalike::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [folder, query, rest @ ..] = args.as_slice() else {
        return Err("usage: search_folder FOLDER QUERY_IMAGE [WEIGHTS.safetensors]".into());
    };
    // The network with what an index records of it: the file's SHA-256, or the seed.
    let weights = match rest.first() {
        Some(w) => LoadedWeights::from_file(w)?,
        None => LoadedWeights::from_seed(0)?,
    };

    let ctx = Context::new()?;
    let preprocess = if ctx.is_cpu() { Preprocess::imagenet(72, 64) } else { Preprocess::default() };

    // Every image under the folder (labels from sub-folder names), centred rows.
    let index = IndexBuilder::new(ctx.clone(), &weights)
        .preprocess(preprocess)
        .centred(true)
        .batch_size(16)
        .progress(|done, total| eprint!("\r{done}/{total} images"))
        .from_folder(folder)?;
    eprintln!();

    // One GPU pipeline from the query's pixels to its 5 nearest rows.
    let searcher = Searcher::new(ctx, &weights.net, &index, SearchOptions::default())?;
    let k = 5.min(index.len());
    let neighbours = searcher.search_images(&[decode_file(query)?], k)?;
    for (rank, n) in neighbours[0].iter().enumerate() {
        println!("{:>2}. {:+.4} {}", rank + 1, n.score, index.entries[n.index].path.display());
    }
    Ok(())
}
