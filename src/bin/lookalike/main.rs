//! The lookalike command line.

use std::path::PathBuf;
use std::process::ExitCode;

mod demo;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use lookalike::cpu::preprocess::Preprocess;
use lookalike::embed::Embedder;
use lookalike::model::{RandomResNet50, ResNet50, FEATURE_DIM};
use lookalike::{npy, Context, Error, Result};

#[derive(Parser)]
#[command(name = "lookalike", version, about = "Image similarity search on the GPU: ResNet50 features and k-NN in handwritten WGSL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job on an embedded default: seeded weights, procedural images, GPU vs CPU.
    Demo {
        /// ResNet50 weights instead of the seeded ones.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Images per class.
        #[arg(long, default_value_t = 4)]
        per_class: usize,
    },
    /// Print the GPU adapter lookalike would use: backend, driver, limits, features.
    Info,
    /// ResNet50 features of images (or of a preprocessed tensor) to an N x 2048 .npy file.
    Embed(EmbedArgs),
    /// Write weights files.
    Weights {
        #[command(subcommand)]
        command: WeightsCommand,
    },
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// ResNet50 weights (safetensors, torchvision/timm names; f32, f16 or bf16).
    #[arg(long)]
    weights: PathBuf,
    /// Resize the shorter side to this many pixels (bilinear, antialiased).
    #[arg(long, default_value_t = 256)]
    resize: u32,
    /// Centre-crop to this square size.
    #[arg(long, default_value_t = 224)]
    crop: u32,
    /// Run the CPU reference instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// An already-normalised N x 3 x H x W float32 tensor (NCHW) instead of image files.
    #[arg(long, conflicts_with = "images")]
    input_npy: Option<PathBuf>,
    /// Output: N x 2048 float32 .npy, rows in the order given.
    #[arg(short, long)]
    output: PathBuf,
    /// JPEG or PNG files.
    #[arg(required_unless_present = "input_npy")]
    images: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum WeightsCommand {
    /// A deterministic, realistically scaled ResNet50 in torchvision's safetensors layout.
    Random {
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Demo { weights, per_class } => demo::run(weights.as_deref(), per_class.max(1)),
        Command::Embed(args) => embed(args),
        Command::Weights { command: WeightsCommand::Random { seed, output } } => random_weights(seed, &output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> Result<()> {
    let ctx = Context::new()?;
    println!("{ctx}");
    Ok(())
}

/// Refuses an output path that is a directory before any work: renaming the finished file
/// over it would fail only at the end, with the misleading "Not a directory".
fn check_output(output: &std::path::Path) -> Result<()> {
    if output.is_dir() {
        return Err(Error::InvalidArgument(format!("output {} is a directory; give a file path", output.display())));
    }
    Ok(())
}

fn random_weights(seed: u64, output: &std::path::Path) -> Result<()> {
    check_output(output)?;
    let random = RandomResNet50::generate(seed)?;
    random.net.save(output, Some((&random.fc_weight, &random.fc_bias)))?;
    eprintln!("wrote {} (ResNet50, seed {seed}, {} parameters with fc)", output.display(), random.net.parameter_count() + random.fc_weight.len() + random.fc_bias.len());
    Ok(())
}

fn embed(args: EmbedArgs) -> Result<()> {
    if args.batch == 0 {
        return Err(Error::InvalidArgument("--batch must be at least 1".into()));
    }
    check_output(&args.output)?;
    let net = ResNet50::load(&args.weights)?;
    let mut embedder = if args.cpu { Embedder::cpu(&net)? } else { Embedder::gpu(Context::new()?, &net)? };
    if let Some(ctx) = embedder.context() {
        eprintln!("GPU: {} ({:?})", ctx.adapter_info().name, ctx.adapter_info().backend);
    }
    let (features, rows) = match &args.input_npy {
        Some(path) => {
            let images = npy::read_f32(path)?.into_nhwc_images(path)?;
            ResNet50::check_input(images.height, images.width)?;
            let mut features = Vec::with_capacity(images.batch * FEATURE_DIM);
            let image_len = images.height * images.width * 3;
            for chunk in images.data.chunks(args.batch * image_len) {
                let part = npy::NhwcBatch { batch: chunk.len() / image_len, height: images.height, width: images.width, data: chunk.to_vec() };
                features.extend(embedder.embed(&part)?);
            }
            (features, images.batch)
        }
        None => {
            let preprocess = Preprocess::imagenet(args.resize, args.crop);
            let bar = ProgressBar::new(args.images.len() as u64);
            bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} images {elapsed}").unwrap_or_else(|_| ProgressStyle::default_bar()));
            let features = embedder.embed_files(&args.images, &preprocess, args.batch, |done| bar.set_position(done as u64));
            bar.finish_and_clear();
            (features?, args.images.len())
        }
    };
    npy::write_f32(&args.output, &[rows, FEATURE_DIM], &features)?;
    eprintln!("wrote {} ({rows} x {FEATURE_DIM})", args.output.display());
    Ok(())
}
