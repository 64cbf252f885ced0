//! The lookalike command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod args;
mod bench;
mod demo;
mod demo_fashion;
mod embed_cmd;
mod index_cmd;
mod milvus_cmd;
mod outputs;
mod search_cmd;
mod train_cmd;
mod tune_cmd;

use clap::Parser;

use lookalike::model::RandomResNet50;
use lookalike::ops::matmul::Precision;
use lookalike::{Context, Error, Result};

use args::{Cli, Command, Dtype, WeightsCommand};
// The output checks every writing command runs, as `crate::check_output` and friends.
use outputs::{check_not_input, check_output};

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
            milvus,
            collection_options,
            shard,
            mean,
            mean_sample,
        } => match output {
            None if experimental_coop => Err(Error::InvalidArgument(
                "--experimental-coop embeds for index files; leave it out with --milvus".into(),
            )),
            // With --milvus every run adds what the collection does not hold (--add or not).
            None => milvus_cmd::fill(
                milvus_cmd::FillArgs {
                    dir: &dir,
                    weights: weights.as_deref(),
                    seed,
                    precision: dtype.map(precision_of),
                    center,
                    batch,
                    resize,
                    crop,
                    cpu,
                    follow_links,
                    shard: shard.as_deref(),
                    mean: mean.as_deref(),
                    mean_sample,
                },
                &milvus,
                &collection_options,
            ),
            Some(output) => index_cmd::index(index_cmd::IndexOptions {
                dir: &dir,
                weights: weights.as_deref(),
                seed,
                output: &output,
                precision: dtype.map(precision_of),
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
        },
        Command::Export { index, milvus, collection_options, batch } => {
            milvus_cmd::export(&index, &milvus, &collection_options, batch)
        }
        Command::Search {
            index,
            images,
            features,
            k,
            json,
            collage,
            weights,
            experimental_coop,
            milvus,
            search_param,
        } if milvus.milvus.is_some() => {
            if features.is_some() || collage.is_some() || experimental_coop {
                Err(Error::InvalidArgument(
                    "--features, --collage and --experimental-coop search index files; leave them out with --milvus"
                        .into(),
                ))
            } else {
                let queries: Vec<PathBuf> = index.into_iter().chain(images).collect();
                milvus_cmd::search(&queries, k, json, weights.as_deref(), &milvus, &search_param)
                    .map(|skipped| queries_skipped = skipped)
            }
        }
        Command::Classify { index, images, k, eval, confusion, weights, milvus, search_param }
            if milvus.milvus.is_some() =>
        {
            let queries: Vec<PathBuf> = index.into_iter().chain(images).collect();
            if queries.is_empty() && eval.is_none() {
                Err(Error::InvalidArgument("give query images and/or --eval DIR".into()))
            } else {
                milvus_cmd::classify(
                    &queries,
                    k,
                    eval.as_deref(),
                    &confusion,
                    weights.as_deref(),
                    &milvus,
                    &search_param,
                )
                .map(|skipped| queries_skipped = skipped)
            }
        }
        Command::Search { index, images, features, k, json, collage, weights, experimental_coop, .. } => {
            let queries = match &features {
                Some(path) => search_cmd::Queries::Features(path),
                None => search_cmd::Queries::Images(&images),
            };
            index_file(index).and_then(|index| {
                search_cmd::search(&index, queries, k, json, collage.as_deref(), weights.as_ref(), experimental_coop)
                    .map(|skipped| queries_skipped = skipped)
            })
        }
        Command::Classify { index, images, k, eval, confusion, weights, .. } => {
            if images.is_empty() && eval.is_none() {
                Err(Error::InvalidArgument("give query images and/or --eval DIR".into()))
            } else {
                index_file(index).and_then(|index| {
                    search_cmd::classify(&index, &images, k, eval.as_deref(), &confusion, weights.as_ref())
                        .map(|skipped| queries_skipped = skipped)
                })
            }
        }
        Command::Demo { fashion, weights, per_class, out } => {
            demo::run(&fashion, weights.as_deref(), per_class.map(|n| n.max(1)), &out)
        }
        Command::Embed(args) => embed_cmd::embed(args),
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

/// The INDEX argument, which clap requires unless `--milvus` is given.
fn index_file(index: Option<PathBuf>) -> Result<PathBuf> {
    index.ok_or_else(|| Error::InvalidArgument("give the index file (or --milvus URI --collection NAME)".into()))
}

fn precision_of(dtype: Dtype) -> Precision {
    match dtype {
        Dtype::F32 => Precision::F32,
        Dtype::F16 => Precision::F16,
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
) -> Result<lookalike::embed::Embedder> {
    let tuning = tuning(&ctx);
    let embedder = if coop {
        lookalike::embed::Embedder::gpu_on_matrix_units(ctx, net)?
    } else {
        lookalike::embed::Embedder::gpu(ctx, net)?
    };
    Ok(embedder.with_tuning(tuning))
}

/// `lookalike weights random`: a seeded ResNet50 weights file.
fn random_weights(seed: u64, output: &Path) -> Result<()> {
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
