//! `lookalike index`: builds or extends an index file through [`IndexBuilder`].

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use lookalike::cpu::preprocess::Preprocess;
use lookalike::index::{paths, Index, IndexBuilder, LoadedWeights, Skipped, Wait, WriteLock};
use lookalike::ops::matmul::Precision;
use lookalike::{Context, Error, Result};

use crate::search_cmd::{print_skipped, progress_bar, refuse_directory};

/// Options of `lookalike index`.
pub struct IndexOptions<'a> {
    pub dir: &'a Path,
    pub weights: Option<&'a Path>,
    pub seed: Option<u64>,
    pub output: &'a Path,
    /// `None`: f32, or the index's with `add`.
    pub precision: Option<Precision>,
    pub center: bool,
    pub batch: usize,
    /// `None`: the network's default ([`lookalike::model::Backbone::default_preprocess`]),
    /// or the index's with `add`.
    pub resize: Option<u32>,
    pub crop: Option<u32>,
    pub add: bool,
    pub cpu: bool,
    /// Embed with the convolutions on the GPU's matrix units (`--experimental-coop`).
    pub matrix_units: bool,
    /// The GPU context to embed on (unless `cpu`); `None` opens one.
    pub gpu: Option<Context>,
    /// Walk into links to folders (`--follow-links`).
    pub follow_links: bool,
    /// Fail instead of waiting when another process is writing the index (`--no-wait`).
    pub no_wait: bool,
}

/// `--weights FILE` (either network) or `--seed N` (seeded random ResNet50 weights).
pub fn load_weights(weights: Option<&Path>, seed: Option<u64>) -> Result<LoadedWeights> {
    match (weights, seed) {
        (Some(path), _) => LoadedWeights::from_file(path),
        (None, Some(seed)) => LoadedWeights::from_seed(seed),
        (None, None) => {
            Err(Error::InvalidArgument("give --weights FILE (or --seed N for seeded random weights)".into()))
        }
    }
}

/// Builds (or, with `add`, extends) an index from a folder of images.
pub fn index(o: IndexOptions) -> Result<Index> {
    if o.batch == 0 {
        return Err(Error::InvalidArgument("--batch must be at least 1".into()));
    }
    refuse_directory(o.output)?;
    crate::check_not_input(o.output, &o.weights.into_iter().collect::<Vec<_>>(), &[], &[o.dir])?;
    // Through a link to the index, the index itself is locked and replaced (as SQLite
    // writes through one): locking the link's name would not keep out a writer of the file.
    let output = resolve_link(o.output)?;
    let o = IndexOptions { output: &output, ..o };
    // Held from before the old index is read until the new one has replaced it, so two
    // writers of one index take turns and neither loses the other's rows.
    let wait = if o.no_wait { Wait::NoWait } else { Wait::Block };
    let _lock = WriteLock::acquire(o.output, wait, |lock| {
        eprintln!(
            "waiting for another process writing {} to finish (it holds {}; --no-wait fails instead)",
            paths::display(o.output),
            paths::display(lock)
        )
    })?;
    let existing = if o.add && o.output.exists() { Some(Index::load(o.output)?) } else { None };
    if o.add && existing.is_none() {
        eprintln!("{} does not exist yet: --add builds a new index there", paths::display(o.output));
    }
    if let Some(index) = &existing {
        refuse_other_settings(&o, index)?;
    }
    let loaded = match &existing {
        Some(index) if o.weights.is_none() && o.seed.is_none() => LoadedWeights::for_index(index, None)?,
        Some(index) => {
            let loaded = load_weights(o.weights, o.seed)?;
            loaded.check_matches(index).map_err(|e| e.in_file(o.output))?;
            loaded
        }
        None => load_weights(o.weights, o.seed)?,
    };
    let ctx = match (o.cpu, o.gpu) {
        (true, _) => None,
        (false, Some(ctx)) => Some(ctx),
        (false, None) => Some(crate::open_context(o.matrix_units)?),
    };
    let bar = RefCell::new(None);
    let mut builder = match ctx {
        Some(ctx) => {
            let tuning = crate::tuning(&ctx);
            IndexBuilder::new(ctx, &loaded).tuning(tuning)
        }
        None => IndexBuilder::on_cpu(&loaded),
    }
    .matrix_units(o.matrix_units)
    .batch_size(o.batch)
    .follow_links(o.follow_links)
    .progress(|done, total| {
        bar.borrow_mut().get_or_insert_with(|| progress_bar(total, "images")).set_position(done as u64)
    })
    .on_skipped(|skipped| {
        // The bar's line, cleared first so the list does not run into it.
        if let Some(bar) = bar.borrow().as_ref() {
            bar.finish_and_clear();
        }
        match skipped {
            Skipped::Walk(list) => print_skipped("path(s) passed over while walking the folder", list),
            Skipped::Files(list) => print_skipped("file(s) skipped, since they could not be used", list),
        }
    });
    // Only what was asked for: with --add, anything else is the index's own.
    if let Some(precision) = o.precision {
        builder = builder.precision(precision);
    }
    if o.center {
        builder = builder.centred(true);
    }
    if let Some(resize) = o.resize {
        builder = builder.resize(resize);
    }
    if let Some(crop) = o.crop {
        builder = builder.crop(crop);
    }
    let built = match existing {
        Some(mut index) => builder.extend_from_folder(&mut index, o.dir).map(|_| index),
        None => builder.from_folder(o.dir),
    };
    if let Some(bar) = bar.borrow().as_ref() {
        bar.finish_and_clear();
    }
    let index = built?;
    index.save(o.output)?;
    let cosine = index.mean_pairwise_cosine();
    println!(
        "{}: {} images, {}-d {:?}, {}; mean pairwise cosine {cosine:.5}",
        o.output.display(),
        index.len(),
        index.dim,
        index.embeddings.precision(),
        if index.mean.is_some() { "centred" } else { "not centred" }
    );
    if index.mean.is_none() && cosine > 0.9 {
        println!("the embeddings share a dominant direction: rebuild with --center for a far better ranking (above all with --dtype f16)");
    }
    Ok(index)
}

/// `path`, or the file it links to.
fn resolve_link(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| {
            Error::InvalidArgument(format!("output {} is a link that leads nowhere ({e})", paths::display(path)))
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// With `--add`, settings given on the command line must be the index's own: new rows are
/// stored, centred and preprocessed as the old ones were, so a different value would be
/// silently ignored. Checked before any work, in the command's own terms (the builder
/// checks the same, in the library's).
fn refuse_other_settings(o: &IndexOptions, index: &Index) -> Result<()> {
    let stored: &Preprocess = &index.provenance.preprocess;
    let mut clashes = Vec::new();
    if let Some(precision) = o.precision.filter(|&p| p != index.embeddings.precision()) {
        clashes.push(format!("--dtype {precision:?} (it stores {:?})", index.embeddings.precision()));
    }
    if o.center && index.mean.is_none() {
        clashes.push("--center (it is not centred)".into());
    }
    if let Some(resize) = o.resize.filter(|&r| r != stored.resize) {
        clashes.push(format!("--resize {resize} (it used {})", stored.resize));
    }
    if let Some(crop) = o.crop.filter(|&c| c != stored.crop) {
        clashes.push(format!("--crop {crop} (it used {})", stored.crop));
    }
    if clashes.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "--add keeps {}'s settings; these differ: {}. Leave them out, or build a new index",
        o.output.display(),
        clashes.join(", ")
    )))
}
