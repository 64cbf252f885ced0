//! Search results as `lookalike search --json` prints them.

use std::path::Path;

use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::index::Entry;
use crate::search::Neighbor;

/// One query's results as `lookalike search --json` prints them, as JSON text: `{"query":
/// NAME, "neighbors": [{"rank", "index", "path", "label", "score"}, ...]}`, ranks from 1,
/// paths and labels from the index's `entries`. Paths (and the query's name) are written
/// losslessly as the index stores them (see [`crate::index`]): Python's `json.loads`
/// and `os.fsencode` give back the exact bytes of a name that is not UTF-8.
pub fn neighbours_json(query: &Path, neighbours: &[Neighbor], entries: &[Entry]) -> Result<String> {
    let rows = neighbours
        .iter()
        .map(|n| {
            let entry = entries.get(n.index).ok_or_else(|| {
                Error::InvalidArgument(format!("neighbour row {} beyond the {} entries", n.index, entries.len()))
            })?;
            Ok(NeighbourRow { index: n.index as u64, path: &entry.path, label: entry.label.as_deref(), score: n.score })
        })
        .collect::<Result<Vec<_>>>()?;
    rows_json(query, &rows)
}

/// One neighbour as `--json` prints it, from wherever it was found (an index, or a
/// collection on a server, whose ids are its `index`).
#[derive(Debug, Clone, Copy)]
pub struct NeighbourRow<'a> {
    /// Its row in the index, or its id in the collection.
    pub index: u64,
    /// Its image file.
    pub path: &'a Path,
    /// Its class.
    pub label: Option<&'a str>,
    /// Its cosine similarity to the query.
    pub score: f32,
}

/// One query's results in the shape of [`neighbours_json`], ranks from 1 in the order given.
pub fn rows_json(query: &Path, rows: &[NeighbourRow]) -> Result<String> {
    // Fields in the order serde_json's maps print them, as earlier versions did.
    #[derive(serde::Serialize)]
    struct JsonNeighbor<'a> {
        index: u64,
        label: Option<&'a str>,
        path: Box<RawValue>,
        rank: usize,
        /// Widened as earlier versions printed it.
        score: f64,
    }
    #[derive(serde::Serialize)]
    struct JsonQuery<'a> {
        neighbors: Vec<JsonNeighbor<'a>>,
        query: Box<RawValue>,
    }
    let json_error = |e: serde_json::Error| Error::InvalidArgument(format!("results as JSON: {e}"));
    // `paths::encode` gives one valid JSON string literal, which this checks again.
    let literal = |path: &Path| RawValue::from_string(crate::index::paths::encode(path)).map_err(json_error);
    let neighbors = rows
        .iter()
        .enumerate()
        .map(|(rank, n)| {
            Ok(JsonNeighbor {
                index: n.index,
                label: n.label,
                path: literal(n.path)?,
                rank: rank + 1,
                score: n.score as f64,
            })
        })
        .collect::<Result<_>>()?;
    serde_json::to_string(&JsonQuery { neighbors, query: literal(query)? }).map_err(json_error)
}
