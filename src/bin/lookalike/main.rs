//! The lookalike command line.

use std::path::PathBuf;
use std::process::ExitCode;

mod bench;
mod bench_checks;
mod bench_train;
mod demo;
mod demo_fashion;
mod search_cmd;
mod train_cmd;
mod tune_cmd;
mod weights;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use lookalike::cpu::preprocess::Preprocess;
use lookalike::embed::Embedder;
use lookalike::model::{Backbone, RandomResNet50};
use lookalike::ops::matmul::Precision;
use lookalike::{npy, Context, Error, Result};

#[derive(Parser)]
#[command(
    name = "lookalike",
    version,
    about = "Image similarity search on the GPU: ResNet50 features and k-NN in handwritten WGSL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job on an embedded default: trains an embedding net on Fashion-MNIST on the
    /// GPU (metric learning), scores it, indexes and searches the test images with it; then
    /// ResNet50 on drawn images: index, search, k-NN accuracy, GPU vs CPU, a collage.
    Demo {
        /// Folder of Fashion-MNIST's IDX files (Debian: `apt-get install dataset-fashion-mnist`).
        #[arg(long, default_value = demo_fashion::FASHION_MNIST)]
        fashion: PathBuf,
        /// ResNet50 weights instead of the seeded ones.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Images per class (default: 8 on a software adapter, 60 on a GPU).
        #[arg(long)]
        per_class: Option<usize>,
        /// Folder for the generated images, the index and the collage.
        #[arg(long, default_value = "lookalike-demo")]
        out: PathBuf,
    },
    /// Build an index from a folder of images (recursive; labels from first-level sub-folders).
    Index {
        /// Folder of .jpg / .jpeg / .png images.
        dir: PathBuf,
        /// Weights (safetensors): ResNet50, or a trained convnet (told by the file's metadata).
        #[arg(long, conflicts_with = "seed")]
        weights: Option<PathBuf>,
        /// Seeded random ResNet50 weights instead of a file.
        #[arg(long)]
        seed: Option<u64>,
        /// The index file to write (safetensors).
        #[arg(short, long)]
        output: PathBuf,
        /// Storage of the reference matrix [default: f32].
        #[arg(long, value_enum)]
        dtype: Option<Dtype>,
        /// Subtract the database mean before normalising (stored as `mean`, applied to queries).
        #[arg(long)]
        center: bool,
        /// Images per GPU batch.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Shorter side after resizing [default: 256 for ResNet50, a convnet's input side].
        #[arg(long)]
        resize: Option<u32>,
        /// Side of the centre crop [default: 224 for ResNet50, a convnet's input side].
        #[arg(long)]
        crop: Option<u32>,
        /// Add the folder's new images to an existing index at OUTPUT (same weights and
        /// preprocessing; --dtype, --center, --resize and --crop, if given, must match it).
        #[arg(long)]
        add: bool,
        /// Extract features with the CPU reference instead of the GPU.
        #[arg(long)]
        cpu: bool,
        /// Run the convolutions on the GPU's matrix units (tensor cores) through wgpu's
        /// experimental cooperative matrices: f16 inputs, f32 sums, features ~2e-3 relative
        /// L2 from the f32 path's. Fails where the adapter has none.
        #[arg(long, conflicts_with = "cpu")]
        experimental_coop: bool,
        /// Walk into links to folders (each folder and each real file is still taken once;
        /// loops are walked once). Without it, links to folders are listed and passed over.
        #[arg(long)]
        follow_links: bool,
        /// Fail at once when another process is writing OUTPUT, instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// The k most similar indexed images of each query image.
    Search {
        index: PathBuf,
        #[arg(required_unless_present = "features")]
        images: Vec<PathBuf>,
        /// Query features instead of images: a Q x D float32 .npy, as `embed` writes with the
        /// index's weights and preprocessing (centred like the index, normalised, then scored).
        #[arg(long, conflicts_with_all = ["images", "collage", "weights"])]
        features: Option<PathBuf>,
        #[arg(short, default_value_t = 5)]
        k: usize,
        /// One JSON array, one object per query.
        #[arg(long)]
        json: bool,
        /// Write a PNG grid: one row per query, the query then its neighbours.
        #[arg(long)]
        collage: Option<PathBuf>,
        /// Weights instead of the ones the index records (must be the same network).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Run the backbone's convolutions, and scans of more than four queries, on the GPU's
        /// matrix units (tensor cores) through wgpu's experimental cooperative matrices:
        /// f16 inputs, f32 sums, scores within ~1e-3 of the f32 path's. Fails where the
        /// adapter has none.
        #[arg(long)]
        experimental_coop: bool,
    },
    /// k-NN classification by the neighbours' labels.
    Classify {
        index: PathBuf,
        images: Vec<PathBuf>,
        #[arg(short, default_value_t = 5)]
        k: usize,
        /// A labelled folder to evaluate: accuracy and confusion matrix.
        #[arg(long)]
        eval: Option<PathBuf>,
        /// Where --eval writes the confusion matrix PNG.
        #[arg(long, default_value = "confusion.png")]
        confusion: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// Benchmark the GPU beside the CPU reference: ResNet50, matmul, k-NN scan, stages, and
    /// metric-learning steps/s.
    Bench {
        /// Fewer batch sizes.
        #[arg(long)]
        quick: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Rows of the k-NN reference matrices, comma-separated (default: 100000, plus
        /// 1000000 on a hardware adapter when host memory allows).
        #[arg(long, value_delimiter = ',')]
        knn_rows: Vec<usize>,
        /// Input side of the ResNet50 figures and the stage breakdown.
        #[arg(long, default_value_t = 224)]
        resolution: usize,
        /// The card's fp32 peak, for the fraction-of-peak figures.
        #[arg(long)]
        peak_tflops: Option<f64>,
        /// The card's memory bandwidth in GB/s.
        #[arg(long)]
        peak_gbps: Option<f64>,
        /// Also time ResNet50, the matmul and the 64-query scan on the matrix units (tensor
        /// cores: f16 inputs, f32 sums) through wgpu's experimental cooperative matrices,
        /// each checked against the f32 path, where the adapter has them.
        #[arg(long)]
        experimental_coop: bool,
    },
    /// Measure this adapter's launch shapes (conv blocks, GEMV lanes) once and cache them on
    /// disk; every later run on the same adapter and driver uses them.
    Tune {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Images per timed forward (default: 8 on a GPU, 1 on a software adapter).
        #[arg(long)]
        batch: Option<usize>,
        /// Input size of the timed forward (default 224).
        #[arg(long)]
        resolution: Option<usize>,
        /// Reference rows of the timed single-query scans.
        #[arg(long)]
        gemv_rows: Option<usize>,
        /// Scores of the timed top-k selections (default: 1M on a GPU, 100k on a software
        /// adapter).
        #[arg(long)]
        topk_len: Option<usize>,
        /// Measure and print, but do not write the cache.
        #[arg(long)]
        no_save: bool,
        /// Also time the workgroup layouts of the convolutions on the GPU's matrix units
        /// (wgpu's experimental cooperative matrices); the fastest is cached with the rest.
        #[arg(long)]
        experimental_coop: bool,
    },
    /// Print the GPU adapter lookalike would use: backend, driver, limits, features, tuning.
    Info {
        /// Also open the device with wgpu's experimental cooperative matrices (tensor
        /// cores) and say whether lookalike can use them.
        #[arg(long)]
        experimental_coop: bool,
    },
    /// Features of images (or of a preprocessed tensor) to an N x D .npy file: ResNet50's
    /// (D = 2048) or a trained convnet's unit embeddings.
    Embed(EmbedArgs),
    /// Train an embedding net by metric learning (the Keras "metric learning for image
    /// similarity search" recipe, on the GPU): writes the model (safetensors), a loss curve,
    /// and the test split's retrieval scores, neighbour collage and confusion matrix.
    Train(train_cmd::TrainCli),
    /// Score a trained model on a data set's test split: 10-NN precision and vote accuracy,
    /// precision@1, MAP@R; writes the neighbour collage and confusion matrix beside MODEL.
    Evaluate {
        /// A model `train` wrote.
        model: PathBuf,
        /// The data (IDX folder, CIFAR-10 binary folder, or a folder of class folders).
        data: PathBuf,
        /// Test images for a folder of class folders (same classes).
        #[arg(long)]
        test: Option<PathBuf>,
        /// Run on the CPU instead of the GPU.
        #[arg(long)]
        cpu: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also write the test images' unit embeddings scored, as an N x D float32 .npy in
        /// the data's order.
        #[arg(long)]
        embeddings: Option<PathBuf>,
    },
    /// Write weights files.
    Weights {
        #[command(subcommand)]
        command: WeightsCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Dtype {
    F32,
    F16,
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// Weights (safetensors): ResNet50 (torchvision/timm names; f32, f16 or bf16) or a
    /// trained convnet (told by the file's metadata).
    #[arg(long)]
    weights: PathBuf,
    /// Resize the shorter side to this many pixels (bilinear, antialiased) [default: 256
    /// for ResNet50, a convnet's input side].
    #[arg(long)]
    resize: Option<u32>,
    /// Centre-crop to this square size [default: 224 for ResNet50, a convnet's input side].
    #[arg(long)]
    crop: Option<u32>,
    /// Run the CPU reference instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Run the convolutions on the GPU's matrix units (tensor cores) through wgpu's
    /// experimental cooperative matrices: activations and weights rounded to f16, sums in
    /// f32 (features ~2e-3 relative L2 from the f32 path). Fails where the adapter has none.
    #[arg(long, conflicts_with = "cpu")]
    experimental_coop: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// An already-preprocessed N x 3 x H x W float32 tensor (NCHW) instead of image files.
    #[arg(long, conflicts_with = "images")]
    input_npy: Option<PathBuf>,
    /// Output: N x D float32 .npy, rows in the order given.
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
    // Query images that `search` or `classify` listed as unusable and left out.
    let mut queries_skipped = 0;
    let result = match cli.command {
        Command::Info { experimental_coop } => info(experimental_coop),
        Command::Tune { json, batch, resolution, gemv_rows, topk_len, no_save, experimental_coop } => {
            tune_cmd::run(tune_cmd::TuneArgs {
                json,
                batch,
                resolution,
                gemv_rows,
                topk_len,
                no_save,
                experimental_coop,
            })
        }
        Command::Bench { quick, json, knn_rows, resolution, peak_tflops, peak_gbps, experimental_coop } => {
            let knn_rows = knn_rows.into_iter().map(|rows| rows.max(16)).collect();
            bench::run(bench::BenchOptions {
                quick,
                json,
                knn_rows,
                resolution,
                peak_tflops,
                peak_gbps,
                experimental_coop,
            })
        }
        Command::Index {
            dir,
            weights,
            seed,
            output,
            dtype,
            center,
            batch,
            resize,
            crop,
            add,
            cpu,
            experimental_coop,
            follow_links,
            no_wait,
        } => search_cmd::index(search_cmd::IndexOptions {
            dir: &dir,
            weights: weights.as_deref(),
            seed,
            output: &output,
            precision: dtype.map(|d| match d {
                Dtype::F32 => Precision::F32,
                Dtype::F16 => Precision::F16,
            }),
            center,
            batch,
            resize,
            crop,
            add,
            cpu,
            matrix_units: experimental_coop,
            gpu: None,
            follow_links,
            no_wait,
        })
        .map(|_| ()),
        Command::Search { index, images, features, k, json, collage, weights, experimental_coop } => {
            let queries = match &features {
                Some(path) => search_cmd::Queries::Features(path),
                None => search_cmd::Queries::Images(&images),
            };
            search_cmd::search(&index, queries, k, json, collage.as_deref(), weights.as_ref(), experimental_coop)
                .map(|skipped| queries_skipped = skipped)
        }
        Command::Classify { index, images, k, eval, confusion, weights } => {
            if images.is_empty() && eval.is_none() {
                Err(Error::InvalidArgument("give query images and/or --eval DIR".into()))
            } else {
                search_cmd::classify(&index, &images, k, eval.as_deref(), &confusion, weights.as_ref())
                    .map(|skipped| queries_skipped = skipped)
            }
        }
        Command::Demo { fashion, weights, per_class, out } => {
            demo::run(&fashion, weights.as_deref(), per_class.map(|n| n.max(1)), &out)
        }
        Command::Embed(args) => embed(args),
        Command::Train(args) => train_cmd::train_from_cli(args),
        Command::Evaluate { model, data, test, cpu, json, embeddings } => {
            train_cmd::run_evaluate(&model, &data, test, cpu, json, embeddings.as_deref())
        }
        Command::Weights { command: WeightsCommand::Random { seed, output } } => random_weights(seed, &output),
    };
    match result {
        // Each left-out query was reported as it was found.
        Ok(()) if queries_skipped > 0 => ExitCode::FAILURE,
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: a path with a newline in it must not forge a second one.
            eprintln!("error: {}", lookalike::index::paths::one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn info(experimental_coop: bool) -> Result<()> {
    let ctx = open_context(experimental_coop)?;
    let (tuning, source) = lookalike::tune::load_for(&ctx);
    println!("{ctx}");
    println!("tuning:   {tuning:?}");
    println!("          ({source})");
    Ok(())
}

/// The context `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` choose, asking for cooperative
/// matrices when the user passed `--experimental-coop`.
pub(crate) fn open_context(experimental_coop: bool) -> Result<Context> {
    let builder = lookalike::gpu::ContextBuilder::from_env();
    if !experimental_coop {
        return builder.build();
    }
    // SAFETY: the user opted into wgpu's experimental feature with --experimental-coop,
    // whose help says it is experimental.
    unsafe { builder.experimental_cooperative_matrices() }.build()
}

/// The launch shapes for `ctx`: the autotune result cached for its adapter, else the
/// built-in table (`lookalike info` says which).
pub(crate) fn tuning(ctx: &Context) -> lookalike::ops::Tuning {
    lookalike::tune::load_for(ctx).0
}

/// The GPU embedder on `ctx` with its launch shapes, on the matrix units with `coop`.
pub(crate) fn gpu_embedder<'a>(
    ctx: Context, net: impl Into<lookalike::model::BackboneRef<'a>>, coop: bool,
) -> Result<Embedder> {
    let tuning = tuning(&ctx);
    let embedder = if coop { Embedder::gpu_on_matrix_units(ctx, net)? } else { Embedder::gpu(ctx, net)? };
    Ok(embedder.with_tuning(tuning))
}

/// Refuses an output path that is a directory before any work: renaming the finished file
/// over it would fail only at the end, with the misleading "Not a directory".
fn check_output(output: &std::path::Path) -> Result<()> {
    if output.is_dir() {
        return Err(Error::InvalidArgument(format!("output {} is a directory; give a file path", output.display())));
    }
    // A missing folder would fail only when the file is written, after all the work.
    let folder = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !folder.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "output {}: its folder {} does not exist",
            output.display(),
            folder.display()
        )));
    }
    Ok(())
}

/// Where `path` leads: canonical, for a file that may not exist yet through its folder.
fn resolved(path: &std::path::Path) -> Option<PathBuf> {
    path.canonicalize().ok().or_else(|| {
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        Some(folder.canonicalize().ok()?.join(path.file_name()?))
    })
}

/// Refuses an output that would replace one of the command's inputs, before any work: one of
/// `files`, an existing file inside one of `data_folders` (the data it reads), or an image
/// inside one of `image_folders` (what an image walk reads). Paths are compared where they
/// lead, so links and `..` do not hide an input.
fn check_not_input(
    output: &std::path::Path, files: &[&std::path::Path], data_folders: &[&std::path::Path],
    image_folders: &[&std::path::Path],
) -> Result<()> {
    let Some(target) = resolved(output) else { return Ok(()) };
    let refuse = |what: String| {
        Err(Error::InvalidArgument(format!(
            "output {} would replace {what}: give another output path",
            output.display()
        )))
    };
    for file in files {
        if resolved(file).as_ref() == Some(&target) {
            return refuse(format!("the input {}", file.display()));
        }
    }
    let inside = |folder: &std::path::Path| folder.canonicalize().is_ok_and(|f| target.starts_with(f));
    for folder in data_folders {
        if inside(folder) && (target.exists() || lookalike::index::is_image_name(&target)) {
            return refuse(format!("a file of the input data {}", folder.display()));
        }
    }
    for folder in image_folders {
        if inside(folder) && lookalike::index::is_image_name(&target) {
            return refuse(format!("an image under the input folder {}", folder.display()));
        }
    }
    Ok(())
}

fn random_weights(seed: u64, output: &std::path::Path) -> Result<()> {
    check_output(output)?;
    let random = RandomResNet50::generate(seed)?;
    random.net.save(output, Some((&random.fc_weight, &random.fc_bias)))?;
    eprintln!(
        "wrote {} (ResNet50, seed {seed}, {} parameters with fc)",
        output.display(),
        random.net.parameter_count() + random.fc_weight.len() + random.fc_bias.len()
    );
    Ok(())
}

fn embed(args: EmbedArgs) -> Result<()> {
    if args.batch == 0 {
        return Err(Error::InvalidArgument("--batch must be at least 1".into()));
    }
    check_output(&args.output)?;
    let mut inputs: Vec<&std::path::Path> = args.images.iter().map(PathBuf::as_path).collect();
    inputs.push(&args.weights);
    inputs.extend(args.input_npy.as_deref());
    check_not_input(&args.output, &inputs, &[], &[])?;
    let net = Backbone::load(&args.weights)?;
    let mut embedder = match (args.cpu, args.experimental_coop) {
        (true, _) => Embedder::cpu(&net)?,
        (false, coop) => gpu_embedder(open_context(coop)?, &net, coop)?,
    };
    if let Some(ctx) = embedder.context() {
        let units = match (args.experimental_coop, ctx.cooperative_matrix()) {
            (true, Some(units)) => format!(", convolutions on matrix units {units}"),
            _ => String::new(),
        };
        eprintln!("GPU: {} ({:?}){units}", ctx.adapter_info().name, ctx.adapter_info().backend);
    }
    let (features, rows) = match &args.input_npy {
        Some(path) => {
            let images = npy::read_f32(path)?.into_nhwc_images(path)?;
            net.check_input(images.height, images.width)?;
            let mut features = Vec::with_capacity(images.batch * net.feature_dim());
            let image_len = images.height * images.width * 3;
            for chunk in images.data.chunks(args.batch.saturating_mul(image_len).max(1)) {
                let part = npy::NhwcBatch {
                    batch: chunk.len() / image_len,
                    height: images.height,
                    width: images.width,
                    data: chunk.to_vec(),
                };
                features.extend(embedder.embed(&part)?);
            }
            (features, images.batch)
        }
        None => {
            let default = net.default_preprocess()?;
            let preprocess = Preprocess {
                resize: args.resize.unwrap_or(default.resize),
                crop: args.crop.unwrap_or(default.crop),
                ..default
            };
            preprocess.validate()?;
            net.check_input(preprocess.crop as usize, preprocess.crop as usize)?;
            let bar = ProgressBar::new(args.images.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} images {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let features =
                embedder.embed_files(&args.images, &preprocess, args.batch, |done| bar.set_position(done as u64));
            bar.finish_and_clear();
            (features?, args.images.len())
        }
    };
    let dim = net.feature_dim();
    npy::write_f32(&args.output, &[rows, dim], &features)?;
    eprintln!("wrote {} ({rows} x {dim}, {})", args.output.display(), net.name());
    Ok(())
}
