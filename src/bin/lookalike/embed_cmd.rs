//! `lookalike embed`: features of image files, or of a preprocessed tensor, to a .npy file.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use lookalike::cpu::preprocess::Preprocess;
use lookalike::embed::Embedder;
use lookalike::model::Backbone;
use lookalike::{npy, Error, Result};

use crate::args::EmbedArgs;

/// Writes the features of `args.images` (or of `args.input_npy`) as an N x D .npy.
pub(crate) fn embed(args: EmbedArgs) -> Result<()> {
    if args.batch == 0 {
        return Err(Error::InvalidArgument("--batch must be at least 1".into()));
    }
    crate::check_output(&args.output)?;
    let mut inputs: Vec<&Path> = args.images.iter().map(PathBuf::as_path).collect();
    inputs.push(&args.weights);
    inputs.extend(args.input_npy.as_deref());
    crate::check_not_input(&args.output, &inputs, &[], &[])?;
    let net = Backbone::load(&args.weights)?;
    let mut embedder = match (args.cpu, args.experimental_coop) {
        (true, _) => Embedder::cpu(&net)?,
        (false, coop) => crate::gpu_embedder(crate::open_context(coop)?, &net, coop)?,
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
