//! `lookalike search` and `classify`, and what `lookalike index` shares with them.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use lookalike::classify::{vote, ConfusionMatrix};
use lookalike::cpu::preprocess::{check_image, decode_file, Preprocess};
use lookalike::embed::decode_run_len;
use lookalike::index::{paths, scan_folder_with, Index, LoadedWeights, ScanOptions};
use lookalike::npy;
use lookalike::render::{collage, confusion_png, save_png};
use lookalike::search::{neighbours_json, Neighbor, SearchOptions, Searcher};
use lookalike::{Error, Result};
use rayon::prelude::*;

pub fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} {{elapsed}} (eta {{eta}})");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// Lists `skipped` paths on stderr, each once beside its reason, one line each.
pub fn print_skipped(what: &str, skipped: &[(PathBuf, String)]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!("{} {what}:", skipped.len());
    for (path, why) in skipped {
        eprintln!("  {}: {}", paths::display(path), paths::one_line(why));
    }
}

/// Refuses an output path that is a directory before any work: writing over it would fail
/// only at the end, after every image was embedded or searched.
pub fn refuse_directory(output: &Path) -> Result<()> {
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

/// One answered query: its position among the query files, its neighbours (of whatever
/// the search returns) and, for a collage, a copy of it.
pub struct Answer<R> {
    pub query: usize,
    pub neighbours: Vec<R>,
    pub image: Option<image::RgbImage>,
}

/// A search of one run of decoded query images: each image's answer.
pub type SearchRun<'a, A> = dyn FnMut(&[image::RgbImage]) -> Result<Vec<A>> + 'a;

/// Searches query image files in runs of bounded decoded size with `search` (the images of
/// a run, to their neighbours). A file that cannot be read or used is reported on stderr as
/// `error: PATH: reason` and left out; the others are answered. Returns the answers and how
/// many files were left out.
pub fn search_files<R>(
    files: &[PathBuf], preprocess: &Preprocess, keep_images: bool, search: &mut SearchRun<Vec<R>>,
) -> Result<(Vec<Answer<R>>, usize)> {
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
            let results = search(&images)?;
            for ((query, img), neighbours) in queries.into_iter().zip(images).zip(results) {
                answers.push(Answer { query, neighbours, image: keep_images.then(|| collage_copy(img)) });
            }
        }
        start = end;
    }
    Ok((answers, skipped))
}

fn open_searcher(index: &Index, weights_override: Option<&PathBuf>, matrix_units: bool) -> Result<Searcher> {
    let loaded = LoadedWeights::for_index(index, weights_override.map(PathBuf::as_path))?;
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
            let (answers, skipped) =
                search_files(images, &preprocess, collage_path.is_some(), &mut |run| searcher.search_images(run, k))?;
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
    let mut known: Vec<String> = labels.iter().flatten().cloned().collect();
    known.sort();
    known.dedup();
    let mut predict = |run: &[image::RgbImage]| -> Result<Vec<Option<String>>> {
        Ok(searcher.search_images(run, k)?.iter().map(|neighbours| vote(neighbours, &labels)).collect())
    };
    classify_with(images, eval, confusion_path, &index.provenance.preprocess, known, &mut predict)
}

/// What `classify` does with any k-NN search: `predict` gives each image of a run its
/// voted label; `known` are the classes the confusion matrix starts with (the reference's).
pub fn classify_with(
    images: &[PathBuf], eval: Option<&Path>, confusion_path: &Path, preprocess: &Preprocess, known: Vec<String>,
    predict: &mut SearchRun<Option<String>>,
) -> Result<usize> {
    if eval.is_some() {
        refuse_directory(confusion_path)?;
    }
    let mut as_lists = |run: &[image::RgbImage]| -> Result<Vec<Vec<Option<String>>>> {
        Ok(predict(run)?.into_iter().map(|label| vec![label]).collect())
    };
    let (answers, skipped_queries) = search_files(images, preprocess, false, &mut as_lists)?;
    for answer in &answers {
        let label = answer.neighbours.first().cloned().flatten().unwrap_or_else(|| "(no label)".into());
        println!("{} -> {}", paths::display(&images[answer.query]), paths::one_line(&label));
    }
    let Some(dir) = eval else { return Ok(skipped_queries) };
    let scan = scan_folder_with(dir, ScanOptions::default())?;
    print_skipped("path(s) passed over while walking the folder", &scan.skipped);
    let labelled: Vec<_> = scan.files.into_iter().filter_map(|(p, l)| l.map(|l| (p, l))).collect();
    if labelled.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no labelled images under {} (one sub-folder per class)",
            dir.display()
        )));
    }
    // Without the reference's classes (a collection's are not listed), the evaluated ones.
    let known = match known.is_empty() {
        true => labelled
            .iter()
            .map(|(_, label)| label.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        false => known,
    };
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
            .map(|(path, _)| decode_file(path).and_then(|img| check_image(&img, preprocess).map(|()| img)))
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
            for (truth, predicted) in truths.iter().zip(predict(&images)?) {
                matrix.add(truth, predicted.as_deref());
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
    Ok(skipped_queries + skipped.len())
}
