//! An index file's rows into a collection, resumably.

use std::time::Instant;

use super::collection::{Collection, CreateOptions, RowBatch};
use super::connection::Server;
use super::layout::{Layout, MAX_TEXT};
use crate::error::{Error, Result};
use crate::index::{paths, Index};

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportReport {
    /// Rows of the index.
    pub rows: usize,
    /// Rows written now.
    pub written: usize,
    /// Rows the collection already held (an earlier, interrupted export of this index).
    pub already_there: usize,
    /// Rows whose image the collection holds under another id (a folder fill put it
    /// there): not written again.
    pub held_elsewhere: usize,
    /// Wall-clock seconds, connecting included.
    pub seconds: f64,
}

/// Exports `index` to collection `name` on `server`, making the collection where it does
/// not exist (`options`). Row `i` becomes id `i`, with its path and label; batches of
/// `batch_rows` are written in order, each by an upsert, and `progress` hears the rows done
/// of the total after each.
///
/// Resumable: a row the collection already holds under its id with the same path is left
/// as it is, so running an interrupted export again writes only what is missing and never
/// a second copy; nor is an image the collection holds (by path) under another id, as a
/// folder fill ([`super::fill`]) stores it. Refused, before anything is written: a collection that records another
/// layout (width, network, preprocessing, precision, mean; [`Collection::check_accepts`]),
/// or paths that are not UTF-8 (Milvus keeps text) or longer than 65,535 bytes. Refused
/// when reached: an id the collection holds with another path (another index's rows;
/// the batches before it are written, and they are this index's rows).
pub fn export_index(
    index: &Index, server: &Server, name: &str, options: &CreateOptions, batch_rows: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Collection, ExportReport)> {
    let started = Instant::now();
    if batch_rows == 0 {
        return Err(Error::InvalidArgument("the batch size must be at least 1".into()));
    }
    let texts = index_texts(index)?;
    let (collection, _) = Collection::open_or_create(server, name, &Layout::of_index(index), options)?;
    let total = index.len();
    let mut report = ExportReport { rows: total, written: 0, already_there: 0, held_elsewhere: 0, seconds: 0.0 };
    progress(0, total);
    for start in (0..total).step_by(batch_rows) {
        let end = (start + batch_rows).min(total);
        let ids: Vec<i64> = (start as i64..end as i64).collect();
        let stored = collection.paths_of_ids(&ids)?;
        let mut missing = Vec::new();
        for (row, (path, _)) in texts.iter().enumerate().take(end).skip(start) {
            match stored.get(&(row as i64)) {
                Some(held) if held == path => report.already_there += 1,
                Some(held) => {
                    return Err(Error::InvalidArgument(format!(
                        "collection `{name}` holds {held} under id {row}, where this index has {path}: it holds \
                         another index's rows. Export to another collection"
                    )))
                }
                None => missing.push(row),
            }
        }
        // An image the collection holds under another id (a folder fill's) is not written
        // twice.
        let wanted: Vec<&str> = missing.iter().map(|&row| texts[row].0.as_str()).collect();
        let elsewhere = collection.ids_of_paths(&wanted)?;
        let before = missing.len();
        missing.retain(|&row| !elsewhere.contains_key(&texts[row].0));
        report.held_elsewhere += before - missing.len();
        // Runs of consecutive missing rows, each written as one upsert.
        let mut i = 0;
        while i < missing.len() {
            let mut j = i + 1;
            while j < missing.len() && missing[j] == missing[j - 1] + 1 {
                j += 1;
            }
            let (first, last) = (missing[i], missing[j - 1] + 1);
            let rows = index.embeddings.rows_f32(index.dim, first, last);
            collection.upsert(RowBatch {
                ids: (first as i64..last as i64).collect(),
                rows: &rows,
                paths: texts[first..last].iter().map(|(p, _)| p.clone()).collect(),
                labels: texts[first..last].iter().map(|(_, l)| l.clone()).collect(),
            })?;
            report.written += last - first;
            i = j;
        }
        progress(end, total);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((collection, report))
}

/// Each row's path (as UTF-8 text) and label, checked to fit the collection's fields.
fn index_texts(index: &Index) -> Result<Vec<(String, Option<String>)>> {
    index
        .entries
        .iter()
        .enumerate()
        .map(|(row, entry)| {
            let path = entry.path.to_str().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "row {row}'s path {} is not valid UTF-8, and Milvus stores paths as text: rename the file and \
                     index it again",
                    paths::display(&entry.path)
                ))
            })?;
            for (what, text) in [("path", Some(path)), ("label", entry.label.as_deref())] {
                if text.is_some_and(|t| t.len() > MAX_TEXT as usize) {
                    return Err(Error::InvalidArgument(format!(
                        "row {row}'s {what} is longer than the {MAX_TEXT} bytes a Milvus VARCHAR holds"
                    )));
                }
            }
            Ok((path.to_string(), entry.label.clone()))
        })
        .collect()
}
