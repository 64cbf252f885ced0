//! ResNet50 features of image files through the library API.
//!
//! cargo run --release --example embed_images -- WEIGHTS.safetensors IMAGE...
//! (without arguments: seeded random weights and two generated images)

use std::path::PathBuf;

use lookalike::cpu::preprocess::Preprocess;
use lookalike::embed::Embedder;
use lookalike::model::{RandomResNet50, ResNet50, FEATURE_DIM};
use lookalike::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (net, images) = match args.split_first() {
        Some((weights, images)) if !images.is_empty() => (ResNet50::load(weights)?, images.to_vec()),
        _ => {
            // Two generated images so the example runs with no files at all.
            let dir = std::env::temp_dir();
            let paths: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("lookalike-example-{i}.png"))).collect();
            for (i, path) in paths.iter().enumerate() {
                image::RgbImage::from_fn(96, 80, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, (i * 120) as u8]))
                    .save(path)?;
            }
            (RandomResNet50::generate(0)?.net, paths)
        }
    };
    let ctx = Context::new()?;
    // Small inputs on a software adapter, the ImageNet 256/224 convention on a real GPU.
    let preprocess = if ctx.is_cpu() { Preprocess::imagenet(72, 64) } else { Preprocess::default() };
    let mut embedder = Embedder::gpu(ctx, &net)?;
    let features = embedder.embed_files(&images, &preprocess, 8, |_| {})?;
    for (path, row) in images.iter().zip(features.chunks_exact(FEATURE_DIM)) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        println!("{}: 2048 features, L2 norm {norm:.4}, first {:?}", path.display(), &row[..4]);
    }
    Ok(())
}
