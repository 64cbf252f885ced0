//! `lookalike train` and `lookalike evaluate`: metric learning on a labelled data set, then
//! retrieval scores and figures on its test split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use lookalike::data::{self, Dataset, LabelledImages, LoadOptions};
use lookalike::render::{collage_with_marks, labelled_confusion_png, loss_curve_png, save_png};
use lookalike::train::eval::{neighbour_confusion, RetrievalMetrics};
use lookalike::train::run::{evaluate, Evaluation, Trainer};
use lookalike::train::{ConvNet, ConvNetSpec, TrainConfig};
use lookalike::{Context, Error, Result};

/// What `train` was asked for.
pub struct TrainArgs {
    pub data: PathBuf,
    pub test: Option<PathBuf>,
    pub output: PathBuf,
    pub config: TrainConfig,
    pub dim: usize,
    pub widths: [usize; 3],
    pub size: usize,
    pub cpu: bool,
    pub json: bool,
}

/// Steps per GPU submission between loss read-backs (and progress updates).
const REPORT_STEPS: usize = 100;

/// Epoch losses and throughput of a finished run.
pub struct TrainReport {
    pub epoch_losses: Vec<f32>,
    pub steps_per_s: f64,
    pub net: ConvNet,
}

/// The device the run uses: `None` for the CPU twin.
pub fn device(cpu: bool) -> Result<Option<Context>> {
    if cpu {
        return Ok(None);
    }
    crate::open_context(false).map(Some)
}

/// Describes where a run goes, for humans and JSON.
pub fn device_name(ctx: Option<&Context>) -> String {
    match ctx {
        Some(ctx) => format!("{} ({:?})", ctx.adapter_info().name, ctx.adapter_info().backend),
        None => "CPU".into(),
    }
}

/// Trains `net` on `train` by `config`, showing a progress bar with the running loss and
/// steps/s unless `quiet`. Returns each epoch's mean loss.
pub fn train(
    ctx: Option<&Context>, net: ConvNet, train: &LabelledImages, source: &Path, config: TrainConfig, quiet: bool,
) -> Result<TrainReport> {
    if config.epochs == 0 || config.steps_per_epoch == 0 {
        return Err(Error::InvalidArgument("--epochs and --steps must be at least 1".into()));
    }
    let grouped = train.grouped_by_class(source)?;
    let mut trainer = Trainer::new(ctx.cloned(), net, &grouped, config)?;
    if let Some(ctx) = ctx {
        trainer = trainer.with_tuning(crate::tuning(ctx))?;
    }
    let total = config.total_steps();
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}  {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let chunk = if ctx.is_some() { REPORT_STEPS } else { 10 };
    let start = Instant::now();
    let mut epoch_losses = Vec::with_capacity(config.epochs);
    for epoch in 0..config.epochs {
        let mut sum = 0.0f64;
        let mut done = 0;
        while done < config.steps_per_epoch {
            let steps = chunk.min(config.steps_per_epoch - done);
            let losses = trainer.run(steps)?;
            if let Some(bad) = losses.iter().find(|l| !l.is_finite()) {
                return Err(Error::InvalidArgument(format!(
                    "the loss became {bad} by step {}: lower --lr (or raise --temperature)",
                    trainer.steps_done()
                )));
            }
            sum += losses.iter().map(|&l| f64::from(l)).sum::<f64>();
            done += steps;
            let rate = trainer.steps_done() as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(trainer.steps_done());
            bar.set_message(format!("epoch {} loss {:.4}  {rate:.1} steps/s", epoch + 1, sum / done as f64));
        }
        let mean = (sum / config.steps_per_epoch as f64) as f32;
        epoch_losses.push(mean);
        if !quiet {
            bar.println(format!("epoch {:>3}: loss {mean:.4}", epoch + 1));
        }
    }
    bar.finish_and_clear();
    let steps_per_s = total as f64 / start.elapsed().as_secs_f64().max(1e-9);
    // How the weights came about, saved with them.
    let mut net = trainer.net()?;
    net.metadata.insert("recipe".into(), serde_json::to_string(&config).unwrap_or_default());
    net.metadata.insert("steps".into(), total.to_string());
    net.metadata.insert("seed".into(), config.seed.to_string());
    net.metadata.insert("data".into(), source.display().to_string());
    net.metadata.insert("epoch_losses".into(), serde_json::to_string(&epoch_losses).unwrap_or_default());
    Ok(TrainReport { epoch_losses, steps_per_s, net })
}

/// The figure paths beside `model`: `STEM-loss.png`, `STEM-neighbours.png`,
/// `STEM-confusion.png`.
pub fn figure_path(model: &Path, what: &str) -> PathBuf {
    // OS strings throughout: a stem that is not UTF-8 keeps its bytes.
    let mut name = model.file_stem().map(std::ffi::OsStr::to_os_string).unwrap_or_else(|| "model".into());
    name.push(format!("-{what}.png"));
    model.with_file_name(name)
}

pub fn run_train(args: TrainArgs) -> Result<()> {
    crate::check_output(&args.output)?;
    let folders: Vec<&Path> = std::iter::once(args.data.as_path()).chain(args.test.as_deref()).collect();
    crate::check_not_input(&args.output, &[], &folders, &[])?;
    let dataset = data::load(&args.data, &LoadOptions { size: args.size, test: args.test.clone() })?;
    check_test_split(&dataset)?;
    let train_set = &dataset.train;
    let spec = ConvNetSpec {
        height: train_set.height,
        width: train_set.width,
        channels: train_set.channels,
        widths: args.widths,
        dim: args.dim,
    };
    let mut net = ConvNet::glorot(spec, args.config.seed)?;
    net.class_names = train_set.class_names.clone();
    let ctx = device(args.cpu)?;
    let device = device_name(ctx.as_ref());
    if !args.json {
        eprintln!(
            "training on {device}: {} images of {}x{}x{}, {} classes, {} epochs x {} steps",
            train_set.len(),
            spec.height,
            spec.width,
            spec.channels,
            train_set.class_names.len(),
            args.config.epochs,
            args.config.steps_per_epoch
        );
    }
    let report = train(ctx.as_ref(), net, train_set, &dataset.source, args.config, args.json)?;
    let net = report.net;
    net.save(&args.output)?;
    let loss_png = figure_path(&args.output, "loss");
    save_png(&loss_curve_png(&report.epoch_losses, "training loss, mean of each epoch"), &loss_png)?;
    let (split, test) = test_split(&dataset);
    let evaluation = evaluate(ctx.as_ref(), &net, test)?;
    write_figures(&args.output, test, &evaluation, &net.class_names)?;
    if args.json {
        let epochs: Vec<serde_json::Value> = report
            .epoch_losses
            .iter()
            .enumerate()
            .map(|(i, l)| serde_json::json!({"epoch": i + 1, "loss": l}))
            .collect();
        let out = serde_json::json!({
            "device": device,
            "epochs": epochs,
            "steps_per_s": report.steps_per_s,
            "split": split,
            "test": evaluation.metrics,
        });
        println!("{out}");
    } else {
        println!("{:.1} steps/s on {device}", report.steps_per_s);
        print_metrics(split, &evaluation.metrics);
        println!(
            "wrote {} and, beside it, {}, {} and {}",
            args.output.display(),
            loss_png.display(),
            figure_path(&args.output, "neighbours").display(),
            figure_path(&args.output, "confusion").display()
        );
    }
    Ok(())
}

/// Checks the test split before any training: images of the training split's size, at
/// least two of them, and no class that the training split lacks.
fn check_test_split(dataset: &Dataset) -> Result<()> {
    let Some(test) = &dataset.test else { return Ok(()) };
    let (train, source) = (&dataset.train, &dataset.source);
    let fail = |reason: String| Err(Error::Dataset { path: source.clone(), reason });
    if (test.height, test.width, test.channels) != (train.height, train.width, train.channels) {
        return fail(format!(
            "the test split's images are {}x{}x{}, the training split's {}x{}x{}",
            test.height, test.width, test.channels, train.height, train.width, train.channels
        ));
    }
    if test.len() < 2 {
        return fail(format!("the test split holds {} image(s); evaluation needs at least 2", test.len()));
    }
    let mut trained = vec![false; train.class_names.len()];
    for &label in &train.labels {
        trained[label as usize] = true;
    }
    let mut missing: Vec<&str> = test
        .labels
        .iter()
        .filter(|&&l| !trained.get(l as usize).copied().unwrap_or(false))
        .map(|&l| test.class_names.get(l as usize).map_or("?", String::as_str))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        return fail(format!("the test split has classes the training split lacks: {}", missing.join(", ")));
    }
    Ok(())
}

/// The split scored: the test split, or the training images when the data has none.
fn test_split(dataset: &Dataset) -> (&'static str, &LabelledImages) {
    match &dataset.test {
        Some(test) => ("test", test),
        None => ("train (the data has no test split)", &dataset.train),
    }
}

fn print_metrics(split: &str, m: &RetrievalMetrics) {
    println!(
        "{split}: 10-NN precision {:.4}, 10-NN vote accuracy {:.4}, precision@1 {:.4}, MAP@R {:.4}",
        m.precision_at_10, m.vote_accuracy_at_10, m.precision_at_1, m.map_at_r
    );
}

/// The recipe's two figures beside `model`: five test queries each followed by their ten
/// neighbours (green border: same class), and the confusion matrix of the classes of the ten
/// neighbours of ten test images per class.
pub fn write_figures(model: &Path, test: &LabelledImages, evaluation: &Evaluation, names: &[String]) -> Result<()> {
    let rows: Vec<usize> = (0..test.len().min(5)).collect();
    let tiles: Vec<Vec<RgbImage>> = rows
        .iter()
        .map(|&q| {
            std::iter::once(q)
                .chain(evaluation.neighbours[q].iter().take(10).map(|n| n.index))
                .map(|i| rgb(test, i))
                .collect()
        })
        .collect();
    let marks: Vec<Vec<Option<bool>>> = rows
        .iter()
        .map(|&q| {
            evaluation.neighbours[q].iter().take(10).map(|n| Some(test.labels[n.index] == test.labels[q])).collect()
        })
        .collect();
    save_png(&collage_with_marks(&tiles, 56, &marks), &figure_path(model, "neighbours"))?;
    let names = if names.len() == test.class_names.len() { names } else { &test.class_names };
    let matrix = neighbour_confusion(&evaluation.neighbours, &test.labels, names, 10);
    save_png(&labelled_confusion_png(&matrix, 30), &figure_path(model, "confusion"))
}

/// Image `i` of `set` as RGB (grey replicated).
fn rgb(set: &LabelledImages, i: usize) -> RgbImage {
    let pixels = set.image(i);
    let (w, h) = (set.width as u32, set.height as u32);
    RgbImage::from_fn(w, h, |x, y| {
        let at = (y as usize * set.width + x as usize) * set.channels;
        image::Rgb(std::array::from_fn(|c| pixels[at + if set.channels == 3 { c } else { 0 }]))
    })
}

/// `lookalike evaluate MODEL DATA`: scores a saved model on a data set's test split.
pub fn run_evaluate(
    model: &Path, data_path: &Path, test: Option<PathBuf>, cpu: bool, json: bool, embeddings: Option<&Path>,
) -> Result<()> {
    if let Some(path) = embeddings {
        crate::check_output(path)?;
        let folders: Vec<&Path> = std::iter::once(data_path).chain(test.as_deref()).collect();
        crate::check_not_input(path, &[model], &folders, &[])?;
    }
    let net = ConvNet::load(model)?;
    let dataset = data::load(data_path, &LoadOptions { size: net.spec.height, test })?;
    let ctx = device(cpu)?;
    let (split, test) = test_split(&dataset);
    let evaluation = evaluate(ctx.as_ref(), &net, test).map_err(|e| e.in_file(model))?;
    write_figures(model, test, &evaluation, &net.class_names)?;
    if let Some(path) = embeddings {
        lookalike::npy::write_f32(path, &[test.len(), net.spec.dim], &evaluation.embeddings)?;
    }
    if json {
        let out = serde_json::json!({"device": device_name(ctx.as_ref()), "split": split, "test": evaluation.metrics});
        println!("{out}");
    } else {
        print_metrics(split, &evaluation.metrics);
    }
    Ok(())
}

/// The arguments of `lookalike train`.
#[derive(clap::Args)]
pub struct TrainCli {
    /// A folder of IDX files (MNIST / Fashion-MNIST, `.gz` or not), CIFAR-10's binary
    /// version, or a folder with one sub-folder of images per class.
    pub data: PathBuf,
    /// The model file to write (safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Test images for a folder of class folders (same classes); IDX and CIFAR-10 bring
    /// their own test split.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Epochs; the mean loss of each is reported and plotted.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Steps per epoch; each step draws one anchor and one positive per class.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Softmax temperature of the pair logits.
    #[arg(long, default_value_t = 0.2)]
    pub temperature: f32,
    /// Embedding width.
    #[arg(long, default_value_t = 8)]
    pub dim: usize,
    /// Filters of the three convolutions.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    pub widths: Vec<usize>,
    /// Side images of a class-folder data set are resized and centre-cropped to.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Seeds the initial weights and every step's pairs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train with the CPU twin instead of the GPU.
    #[arg(long)]
    pub cpu: bool,
    /// One JSON object instead of text and progress.
    #[arg(long)]
    pub json: bool,
}

/// `lookalike train`, from its arguments.
pub fn train_from_cli(args: TrainCli) -> Result<()> {
    let widths: [usize; 3] = args
        .widths
        .as_slice()
        .try_into()
        .map_err(|_| Error::InvalidArgument(format!("--widths takes three numbers, got {:?}", args.widths)))?;
    let config = lookalike::train::TrainConfig {
        epochs: args.epochs,
        steps_per_epoch: args.steps,
        learning_rate: args.lr,
        temperature: args.temperature,
        seed: args.seed,
        ..Default::default()
    };
    config.validate()?;
    run_train(TrainArgs {
        data: args.data,
        test: args.test,
        output: args.output,
        config,
        dim: args.dim,
        widths,
        size: args.size,
        cpu: args.cpu,
        json: args.json,
    })
}
