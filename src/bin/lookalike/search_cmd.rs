//! `lookalike index`, `search` and `classify`.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use lookalike::classify::{vote, ConfusionMatrix};
use lookalike::cpu::preprocess::{check_image, decode_file, Preprocess};
use lookalike::embed::{decode_run_len, Embedder};
use lookalike::index::{paths, scan_folder_with, FileId, Index, Provenance, ScanOptions, Wait, WriteLock};
use lookalike::npy;
use lookalike::ops::matmul::Precision;
use lookalike::render::{collage, confusion_png, save_png};
use lookalike::search::{neighbours_json, Neighbor, SearchOptions, Searcher};
use lookalike::{Context, Error, Result};
use rayon::prelude::*;

use crate::weights;

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
    /// `None`: the network's default ([`Backbone::default_preprocess`]), or the index's
    /// with `add`.
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

fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} {{elapsed}} (eta {{eta}})");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
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
        Some(index) if o.weights.is_none() && o.seed.is_none() => weights::for_index(index, None)?,
        Some(index) => {
            let loaded = weights::load(o.weights, o.seed)?;
            weights::check_model(&loaded, index)?;
            if !weights::same_network(&loaded, &index.provenance.weights_sha256)? {
                return Err(Error::InvalidArgument(format!(
                    "{} was built with other weights ({}); cannot add with {}",
                    o.output.display(),
                    index.provenance.weights_sha256,
                    loaded.path
                )));
            }
            loaded
        }
        None => weights::load(o.weights, o.seed)?,
    };
    let preprocess = match &existing {
        Some(index) => index.provenance.preprocess,
        None => {
            let default = loaded.net.default_preprocess()?;
            let asked = Preprocess {
                resize: o.resize.unwrap_or(default.resize),
                crop: o.crop.unwrap_or(default.crop),
                ..default
            };
            asked.validate()?;
            asked
        }
    };
    loaded.net.check_input(preprocess.crop as usize, preprocess.crop as usize)?;
    // Absolute, so `search` finds the images (for --collage) from any directory; the file
    // stores those below its own folder relative to it (`Index::save`).
    // Known by file, not by spelling: `DIR`, `./DIR/`, `/abs/DIR`, a link or a hard link to
    // an indexed image all name one file, which the walk leaves out.
    let indexed = existing.iter().flat_map(|index| &index.entries).filter_map(|e| FileId::of(&e.path)).collect();
    let scan = scan_folder_with(o.dir, ScanOptions { follow_links: o.follow_links, indexed })?;
    let mut files: Vec<(PathBuf, Option<String>)> =
        scan.files.into_iter().map(|(path, label)| (std::path::absolute(&path).unwrap_or(path), label)).collect();
    if let Some(index) = &existing {
        // And by name, for an indexed file that cannot be read now.
        let known_paths: std::collections::HashSet<&Path> = index.entries.iter().map(|e| e.path.as_path()).collect();
        files.retain(|(path, _)| !known_paths.contains(path.as_path()));
    }
    print_skipped("path(s) passed over while walking the folder", &scan.skipped);
    if files.is_empty() && existing.is_none() {
        return Err(Error::InvalidArgument(format!("no .jpg, .jpeg or .png images under {}", o.dir.display())));
    }
    let mut embedder = match (o.cpu, o.gpu, o.matrix_units) {
        (true, _, _) => Embedder::cpu(&loaded.net)?,
        (false, Some(ctx), coop) => crate::gpu_embedder(ctx, &loaded.net, coop)?,
        (false, None, coop) => crate::gpu_embedder(crate::open_context(coop)?, &loaded.net, coop)?,
    };
    let bar = progress_bar(files.len(), "images");
    let embedded = embedder.embed_labelled_files(&files, &preprocess, o.batch, |done| bar.set_position(done as u64));
    bar.finish_and_clear();
    let embedded = embedded?;
    print_skipped("file(s) skipped, since they could not be used", &embedded.skipped);
    let index = match existing {
        Some(mut index) => {
            index.add(&embedded.features, embedded.entries)?;
            index
        }
        None => {
            if embedded.entries.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "none of the images under {} could be read",
                    o.dir.display()
                )));
            }
            let provenance = Provenance {
                model: loaded.net.name().into(),
                weights_path: loaded.path,
                weights_sha256: loaded.sha256,
                preprocess,
            };
            let precision = o.precision.unwrap_or(Precision::F32);
            Index::from_features(
                &embedded.features,
                loaded.net.feature_dim(),
                embedded.entries,
                precision,
                o.center,
                provenance,
            )?
        }
    };
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

/// Lists `skipped` paths on stderr, each once beside its reason, one line each.
fn print_skipped(what: &str, skipped: &[(PathBuf, String)]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!("{} {what}:", skipped.len());
    for (path, why) in skipped {
        eprintln!("  {}: {}", paths::display(path), paths::one_line(why));
    }
}

/// With `--add`, settings given on the command line must be the index's own: new rows are
/// stored, centred and preprocessed as the old ones were, so a different value would be
/// silently ignored. Checked before any work.
fn refuse_other_settings(o: &IndexOptions, index: &Index) -> Result<()> {
    let stored = &index.provenance.preprocess;
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

/// Refuses an output path that is a directory before any work: writing over it would fail
/// only at the end, after every image was embedded or searched.
fn refuse_directory(output: &Path) -> Result<()> {
    if output.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "output {} is a directory; give a file path",
            paths::display(output)
        )));
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
        return Err(Error::InvalidArgument(format!(
            "the folder of output {} does not exist: create {} first",
            paths::display(output),
            paths::display(parent)
        )));
    }
    Ok(())
}

/// Query files decoded at once, at most (fewer where large: [`decode_run_len`]).
const QUERY_RUN: usize = 32;

/// Longest side of the copy of a query or neighbour kept for a collage, whose tiles are far
/// smaller: a run of 100 MP photos is not kept whole.
const COLLAGE_SOURCE_SIDE: u32 = 1024;

fn collage_copy(img: image::RgbImage) -> image::RgbImage {
    let (width, height) = img.dimensions();
    let longest = width.max(height);
    if longest <= COLLAGE_SOURCE_SIDE {
        return img;
    }
    let fit = |side: u32| ((side as u64 * COLLAGE_SOURCE_SIDE as u64 / longest as u64) as u32).max(1);
    image::imageops::thumbnail(&img, fit(width), fit(height))
}

/// One answered query: its position among the query files, its neighbours and, for a
/// collage, a copy of it.
struct Answer {
    query: usize,
    neighbours: Vec<Neighbor>,
    image: Option<image::RgbImage>,
}

/// Searches query image files in runs of bounded decoded size. A file that cannot be read
/// or used is reported on stderr as `error: PATH: reason` and left out; the others are
/// answered. Returns the answers and how many files were left out.
fn search_files(
    searcher: &Searcher, files: &[PathBuf], preprocess: &Preprocess, k: usize, keep_images: bool,
) -> Result<(Vec<Answer>, usize)> {
    let (mut answers, mut skipped) = (Vec::new(), 0);
    let mut start = 0;
    while start < files.len() {
        let end = start + decode_run_len(files[start..].iter().map(PathBuf::as_path), QUERY_RUN);
        let decoded: Vec<Result<image::RgbImage>> = files[start..end]
            .par_iter()
            .map(|path| decode_file(path).and_then(|img| check_image(&img, preprocess).map(|()| img)))
            .collect();
        let (mut images, mut queries) = (Vec::new(), Vec::new());
        for (query, result) in (start..end).zip(decoded) {
            match result {
                Ok(img) => {
                    images.push(img);
                    queries.push(query);
                }
                Err(e) => {
                    eprintln!("error: {}: {}", paths::display(&files[query]), paths::one_line(&e.without_path()));
                    skipped += 1;
                }
            }
        }
        if !images.is_empty() {
            let results = searcher.search_images(&images, k)?;
            for ((query, img), neighbours) in queries.into_iter().zip(images).zip(results) {
                answers.push(Answer { query, neighbours, image: keep_images.then(|| collage_copy(img)) });
            }
        }
        start = end;
    }
    Ok((answers, skipped))
}

fn open_searcher(index: &Index, weights_override: Option<&PathBuf>, matrix_units: bool) -> Result<Searcher> {
    let loaded = weights::for_index(index, weights_override)?;
    let ctx = crate::open_context(matrix_units)?;
    let options = SearchOptions { matrix_units, tuning: Some(crate::tuning(&ctx)), ..Default::default() };
    Searcher::new(ctx, &loaded.net, index, options)
}

/// What `lookalike search` looks up.
pub enum Queries<'a> {
    Images(&'a [PathBuf]),
    /// A `[queries, dim]` float32 .npy of raw features.
    Features(&'a Path),
}

/// `lookalike search`.
/// With `matrix_units` (`--experimental-coop`) the backbone and the scan run on the GPU's
/// matrix units. Query images that cannot be read or used are listed on stderr and left
/// out; returns how many (the exit status is then a failure).
pub fn search(
    index_path: &Path, queries: Queries, k: usize, json: bool, collage_path: Option<&Path>,
    weights_override: Option<&PathBuf>, matrix_units: bool,
) -> Result<usize> {
    if let Some(path) = collage_path {
        refuse_directory(path)?;
    }
    let index = Index::load(index_path)?;
    check_k(&index, k)?;
    let (names, results, skipped) = match queries {
        Queries::Images(images) => {
            let searcher = open_searcher(&index, weights_override, matrix_units)?;
            let preprocess = index.provenance.preprocess;
            let (answers, skipped) = search_files(&searcher, images, &preprocess, k, collage_path.is_some())?;
            if answers.is_empty() {
                return Ok(skipped);
            }
            let (names, results): (Vec<PathBuf>, Vec<Vec<Neighbor>>) =
                answers.iter().map(|a| (images[a.query].clone(), a.neighbours.clone())).unzip();
            // Before printing, so a failed run prints no results.
            if let Some(path) = collage_path {
                let queries: Vec<image::RgbImage> = answers.into_iter().filter_map(|a| a.image).collect();
                write_collage(&index, &queries, &results, path)?;
            }
            (names, results, skipped)
        }
        Queries::Features(path) => {
            let features = read_query_features(path, &index)?;
            let ctx = crate::open_context(matrix_units)?;
            let options = SearchOptions { matrix_units, tuning: Some(crate::tuning(&ctx)), ..Default::default() };
            let results = Searcher::for_features(ctx, &index, options)?.search_features(&features, k)?;
            let name = |row: usize| {
                let mut name = path.as_os_str().to_os_string();
                name.push(format!(":{row}"));
                PathBuf::from(name)
            };
            ((0..results.len()).map(name).collect(), results, 0)
        }
    };
    if json {
        let out = names
            .iter()
            .zip(&results)
            .map(|(query, neighbours)| neighbours_json(query, neighbours, &index.entries))
            .collect::<Result<Vec<String>>>()?;
        println!("[{}]", out.join(","));
    } else {
        for (query, neighbours) in names.iter().zip(&results) {
            println!("{}", paths::display(query));
            for (rank, n) in neighbours.iter().enumerate() {
                let entry = &index.entries[n.index];
                let label = entry.label.as_deref().map(|l| format!("  [{}]", paths::one_line(l))).unwrap_or_default();
                println!("  {:>3}. {:+.4}  {}{label}", rank + 1, n.score, paths::display(&entry.path));
            }
        }
    }
    Ok(skipped)
}

/// The rows of a `[queries, dim]` float32 .npy.
/// Every row finite and with a direction of its own: a row equal to the index's mean (all
/// zero when it is not centred) would score 0 against every row, a ranking of nothing.
fn read_query_features(path: &Path, index: &Index) -> Result<Vec<f32>> {
    let dim = index.dim;
    let array = npy::read_f32(path)?;
    let data = match array.shape.as_slice() {
        &[queries, d] if queries > 0 && d == dim => array.data,
        shape => {
            return Err(Error::ShapeMismatch {
                op: format!("query features {}", paths::display(path)),
                expected: format!("[queries, {dim}] (the index's width)"),
                got: format!("{shape:?}"),
            })
        }
    };
    let zero = vec![0.0; dim];
    let origin = index.mean.as_deref().unwrap_or(&zero);
    for (row, features) in data.chunks_exact(dim).enumerate() {
        if let Some((column, value)) = features.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "query features {}: row {row} holds {value} at column {column}; give finite features",
                paths::display(path)
            )));
        }
        if features == origin {
            let what = if index.mean.is_some() { "equals the index's mean" } else { "is all zero" };
            return Err(Error::InvalidArgument(format!(
                "query features {}: row {row} {what}, so it has no direction and every row would score 0; \
                 leave it out",
                paths::display(path)
            )));
        }
    }
    Ok(data)
}

fn check_k(index: &Index, k: usize) -> Result<()> {
    if k == 0 || k > index.len() {
        return Err(Error::InvalidArgument(format!(
            "-k must be between 1 and the {} images in the index, got {k}",
            index.len()
        )));
    }
    Ok(())
}

/// One row per query: the query, then its neighbours (a grey tile where a file is gone).
pub fn write_collage(index: &Index, queries: &[image::RgbImage], results: &[Vec<Neighbor>], path: &Path) -> Result<()> {
    let rows: Vec<Vec<image::RgbImage>> = queries
        .iter()
        .zip(results)
        .map(|(query, neighbours)| {
            std::iter::once(query.clone())
                .chain(neighbours.iter().map(|n| {
                    decode_file(&index.entries[n.index].path).map(collage_copy).unwrap_or_else(|e| {
                        eprintln!("collage: grey tile for a neighbour ({e})");
                        image::RgbImage::from_pixel(8, 8, image::Rgb([90, 90, 90]))
                    })
                }))
                .collect()
        })
        .collect();
    save_png(&collage(&rows, 96), path)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn labels_of(index: &Index) -> Vec<Option<String>> {
    index.entries.iter().map(|e| e.label.clone()).collect()
}

/// `lookalike classify`: majority vote of the k neighbours' labels. Query images that
/// cannot be read or used are listed on stderr and left out; returns how many (the exit
/// status is then a failure). Unusable images under `eval` are listed and left out too.
pub fn classify(
    index_path: &Path, images: &[PathBuf], k: usize, eval: Option<&Path>, confusion_path: &Path,
    weights_override: Option<&PathBuf>,
) -> Result<usize> {
    if eval.is_some() {
        refuse_directory(confusion_path)?;
    }
    let index = Index::load(index_path)?;
    check_k(&index, k)?;
    if index.entries.iter().all(|e| e.label.is_none()) {
        return Err(Error::InvalidArgument(format!(
            "{} has no labels: index a folder with one sub-folder per class",
            index_path.display()
        )));
    }
    let labels = labels_of(&index);
    let searcher = open_searcher(&index, weights_override, false)?;
    let preprocess = index.provenance.preprocess;
    let (answers, skipped_queries) = search_files(&searcher, images, &preprocess, k, false)?;
    for answer in &answers {
        let label = vote(&answer.neighbours, &labels).unwrap_or_else(|| "(no label)".into());
        println!("{} -> {}", paths::display(&images[answer.query]), paths::one_line(&label));
    }
    if let Some(dir) = eval {
        let scan = scan_folder_with(dir, ScanOptions::default())?;
        print_skipped("path(s) passed over while walking the folder", &scan.skipped);
        let files = scan.files;
        let labelled: Vec<_> = files.into_iter().filter_map(|(p, l)| l.map(|l| (p, l))).collect();
        let mut skipped_queries = skipped_queries;
        if labelled.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "no labelled images under {} (one sub-folder per class)",
                dir.display()
            )));
        }
        let mut known: Vec<String> = labels.iter().flatten().cloned().collect();
        known.sort();
        known.dedup();
        let mut matrix = ConfusionMatrix::new(known);
        let bar = progress_bar(labelled.len(), "queries");
        let mut skipped = Vec::new();
        let mut start = 0;
        while start < labelled.len() {
            let end = start + decode_run_len(labelled[start..].iter().map(|(path, _)| path.as_path()), QUERY_RUN);
            let chunk = &labelled[start..end];
            start = end;
            let decoded: Vec<Result<image::RgbImage>> = chunk
                .par_iter()
                .map(|(path, _)| decode_file(path).and_then(|img| check_image(&img, &preprocess).map(|()| img)))
                .collect();
            let mut images = Vec::new();
            let mut truths = Vec::new();
            for ((path, label), result) in chunk.iter().zip(decoded) {
                match result {
                    Ok(img) => {
                        images.push(img);
                        truths.push(label);
                    }
                    Err(e) => skipped.push((path.clone(), e.without_path())),
                }
            }
            if !images.is_empty() {
                for (truth, neighbours) in truths.iter().zip(searcher.search_images(&images, k)?) {
                    matrix.add(truth, vote(&neighbours, &labels).as_deref());
                }
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        print_skipped("file(s) skipped, since they could not be read", &skipped);
        println!("{matrix}");
        save_png(&confusion_png(&matrix, 32), confusion_path)?;
        eprintln!("wrote {}", confusion_path.display());
        // As for query images: an evaluation that left files out says so in its status.
        skipped_queries += skipped.len();
        return Ok(skipped_queries);
    }
    Ok(skipped_queries)
}
