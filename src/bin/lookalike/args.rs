//! The command line's arguments: each subcommand and its options, with the help text
//! `lookalike --help` prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lookalike",
    version,
    about = "Image similarity search on the GPU: ResNet50 features and k-NN in handwritten WGSL"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// The main job on an embedded default: trains an embedding net on Fashion-MNIST on the
    /// GPU (metric learning), scores it, indexes and searches the test images with it; then
    /// ResNet50 on drawn images: index, search, k-NN accuracy, GPU vs CPU, a collage.
    Demo {
        /// Folder of Fashion-MNIST's IDX files (Debian: `apt-get install dataset-fashion-mnist`).
        #[arg(long, default_value = crate::demo_fashion::FASHION_MNIST)]
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
        /// The index file to write (safetensors); left out with --milvus.
        #[arg(short, long, required_unless_present = "milvus", conflicts_with = "milvus")]
        output: Option<PathBuf>,
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
        /// With --milvus every run adds what the collection does not hold.
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
        #[command(flatten)]
        milvus: MilvusArgs,
        #[command(flatten)]
        collection_options: CollectionOptions,
        /// With --milvus: embed only shard I of N (I from 0 to N-1) of the folder, split by
        /// each file's path under DIR, so N machines fill one collection.
        #[arg(long, value_name = "I/N", requires = "milvus")]
        shard: Option<String>,
        /// With --milvus --center: the centring mean (a [D] float32 .npy) every shard uses;
        /// without it the run that makes the collection computes one from a sample.
        #[arg(long, value_name = "FILE", requires_all = ["milvus", "center"])]
        mean: Option<PathBuf>,
        /// With --milvus --center and no --mean: images the mean is computed from, spread
        /// evenly over the whole folder.
        #[arg(long, default_value_t = 10_000, requires = "milvus")]
        mean_sample: usize,
    },
    /// Copy an index into a Milvus collection (made where missing; resumable, no duplicates).
    Export {
        /// The index file.
        index: PathBuf,
        #[command(flatten)]
        milvus: MilvusArgs,
        #[command(flatten)]
        collection_options: CollectionOptions,
        /// Rows per upsert.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// The k most similar indexed images of each query image.
    Search {
        /// The index file; with --milvus, the first query image.
        #[arg(required_unless_present = "milvus")]
        index: Option<PathBuf>,
        #[arg(required_unless_present_any = ["features", "milvus"])]
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
        #[command(flatten)]
        milvus: MilvusArgs,
        /// With --milvus: a search parameter for the server, KEY=VALUE (`ef` for HNSW,
        /// `nprobe` for IVF_FLAT); repeatable.
        #[arg(long, value_name = "KEY=VALUE", requires = "milvus")]
        search_param: Vec<String>,
    },
    /// k-NN classification by the neighbours' labels.
    Classify {
        /// The index file; with --milvus, the first query image.
        #[arg(required_unless_present = "milvus")]
        index: Option<PathBuf>,
        images: Vec<PathBuf>,
        #[arg(short, default_value_t = 5)]
        k: usize,
        /// A labelled folder to evaluate: accuracy and confusion matrix.
        #[arg(long)]
        eval: Option<PathBuf>,
        /// Where --eval writes the confusion matrix PNG.
        #[arg(long, default_value = "confusion.png")]
        confusion: PathBuf,
        /// Weights instead of the ones the index (or collection) records (must be the same
        /// network).
        #[arg(long)]
        weights: Option<PathBuf>,
        #[command(flatten)]
        milvus: MilvusArgs,
        /// With --milvus: a search parameter for the server, KEY=VALUE; repeatable.
        #[arg(long, value_name = "KEY=VALUE", requires = "milvus")]
        search_param: Vec<String>,
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
    Train(crate::train_cmd::TrainCli),
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

/// A Milvus collection in place of an index file.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct MilvusArgs {
    /// A Milvus server (`http://HOST:19530`: Milvus standalone or cluster, or milvus-lite)
    /// whose collection takes the place of an index file (a lookalike built with
    /// `--features milvus`).
    #[arg(long, value_name = "URI", requires = "collection")]
    pub milvus: Option<String>,
    /// The collection on the --milvus server.
    #[arg(long, requires = "milvus")]
    pub collection: Option<String>,
    /// The server's token (`user:password` or an API key) [default: $MILVUS_TOKEN].
    #[arg(long, requires = "milvus")]
    pub token: Option<String>,
    /// The database on the server [default: the server's].
    #[arg(long, requires = "milvus")]
    pub database: Option<String>,
}

/// How a new Milvus collection is made.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct CollectionOptions {
    /// Search structure of a new collection [default: FLAT, exact]; HNSW and IVF_FLAT are
    /// approximate. Given for an existing collection, it must be the one it has.
    #[arg(long, value_name = "FLAT|HNSW|IVF_FLAT", requires = "milvus")]
    pub index_type: Option<String>,
    /// A build parameter of the structure, KEY=VALUE (`M`, `efConstruction` for HNSW;
    /// `nlist` for IVF_FLAT); repeatable.
    #[arg(long, value_name = "KEY=VALUE", requires = "index_type")]
    pub index_param: Vec<String>,
    /// How rows travel [default: float16 for f16 rows where the server takes it, else float].
    #[arg(long, value_enum, requires = "milvus")]
    pub vector_type: Option<VectorKind>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum VectorKind {
    Float,
    Float16,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Dtype {
    F32,
    F16,
}

#[derive(clap::Args)]
pub(crate) struct EmbedArgs {
    /// Weights (safetensors): ResNet50 (torchvision/timm names; f32, f16 or bf16) or a
    /// trained convnet (told by the file's metadata).
    #[arg(long)]
    pub weights: PathBuf,
    /// Resize the shorter side to this many pixels (bilinear, antialiased) [default: 256
    /// for ResNet50, a convnet's input side].
    #[arg(long)]
    pub resize: Option<u32>,
    /// Centre-crop to this square size [default: 224 for ResNet50, a convnet's input side].
    #[arg(long)]
    pub crop: Option<u32>,
    /// Run the CPU reference instead of the GPU.
    #[arg(long)]
    pub cpu: bool,
    /// Run the convolutions on the GPU's matrix units (tensor cores) through wgpu's
    /// experimental cooperative matrices: activations and weights rounded to f16, sums in
    /// f32 (features ~2e-3 relative L2 from the f32 path). Fails where the adapter has none.
    #[arg(long, conflicts_with = "cpu")]
    pub experimental_coop: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// An already-preprocessed N x 3 x H x W float32 tensor (NCHW) instead of image files.
    #[arg(long, conflicts_with = "images")]
    pub input_npy: Option<PathBuf>,
    /// Output: N x D float32 .npy, rows in the order given.
    #[arg(short, long)]
    pub output: PathBuf,
    /// JPEG or PNG files.
    #[arg(required_unless_present = "input_npy")]
    pub images: Vec<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum WeightsCommand {
    /// A deterministic, realistically scaled ResNet50 in torchvision's safetensors layout.
    Random {
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
}
