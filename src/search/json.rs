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
    // Fields in the order serde_json's maps print them, as earlier versions did.
    #[derive(serde::Serialize)]
    struct JsonNeighbor<'a> {
        index: usize,
        label: &'a Option<String>,
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
    let neighbors = neighbours
        .iter()
        .enumerate()
        .map(|(rank, n)| {
            let entry = entries.get(n.index).ok_or_else(|| {
                Error::InvalidArgument(format!("neighbour row {} beyond the {} entries", n.index, entries.len()))
            })?;
            Ok(JsonNeighbor {
                index: n.index,
                label: &entry.label,
                path: literal(&entry.path)?,
                rank: rank + 1,
                score: n.score as f64,
            })
        })
        .collect::<Result<_>>()?;
    serde_json::to_string(&JsonQuery { neighbors, query: literal(query)? }).map_err(json_error)
}
