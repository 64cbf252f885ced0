//! The network input that lookalike makes of image files on the GPU (decode, resize the
//! shorter side, centre crop, normalise), written as an `N x 3 x CROP x CROP` float32 .npy:
//! NCHW, the layout `lookalike embed --input-npy` and PyTorch take. Feed the same tensor to
//! another framework, or check it against another preprocessing (`.ci/peer-checks` does,
//! against PIL).
//!
//! cargo run --release --example preprocess_images -- [--resize 256] [--crop 224] IMAGE... -o input.npy

use std::path::PathBuf;

use clap::Parser;
use lookalike::cpu::preprocess::{decode_file, Preprocess};
use lookalike::gpu::Dispatch;
use lookalike::ops::preprocess::PreprocessBatch;
use lookalike::{npy, Context};

#[derive(Parser)]
struct Args {
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Shorter side after resizing.
    #[arg(long, default_value_t = 256)]
    resize: u32,
    /// Side of the centre crop.
    #[arg(long, default_value_t = 224)]
    crop: u32,
    #[arg(short)]
    output: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let preprocess = Preprocess::imagenet(args.resize, args.crop);
    preprocess.validate()?;
    let images = args.images.iter().map(|path| decode_file(path)).collect::<lookalike::Result<Vec<_>>>()?;

    let ctx = Context::new()?;
    let len = images.len() * preprocess.image_len();
    let batch_buffer = ctx.storage("preprocessed batch", len)?;
    let batch = PreprocessBatch::new(&ctx, &images, &preprocess, &batch_buffer)?;
    let dispatches: Vec<&Dispatch> = batch.dispatches().iter().collect();
    let nhwc = ctx.run_and_read(&dispatches, &batch_buffer, len)?;

    // NHWC (what the network reads) to NCHW (what the .npy convention is).
    let side = preprocess.crop as usize;
    let plane = side * side;
    let mut nchw = vec![0.0f32; len];
    for (n, image) in nhwc.chunks_exact(3 * plane).enumerate() {
        for (pixel, rgb) in image.chunks_exact(3).enumerate() {
            for (c, &value) in rgb.iter().enumerate() {
                nchw[(n * 3 + c) * plane + pixel] = value;
            }
        }
    }
    npy::write_f32(&args.output, &[images.len(), 3, side, side], &nchw)?;
    eprintln!("wrote {} ({} x 3 x {side} x {side})", args.output.display(), images.len());
    Ok(())
}
