//! Retrieval quality of an embedding: every test image queries all the others (itself
//! excluded) by exact cosine k-NN, and the neighbours' classes are scored as
//! pytorch-metric-learning's `AccuracyCalculator` defines precision@1 and MAP@R, plus the
//! recipe's 10-NN precision and 10-NN majority-vote accuracy.

use std::path::PathBuf;

use crate::classify::{vote, ConfusionMatrix};
use crate::cpu::preprocess::Preprocess;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::index::{Centring, Entry, Index, Provenance};
use crate::ops::matmul::Precision;
use crate::ops::topk::MAX_K;
use crate::search::{search_features_cpu, Neighbor, SearchOptions, Searcher};

/// Neighbours the 10-NN figures count.
pub const K: usize = 10;

/// Retrieval scores over a test set, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetrievalMetrics {
    /// Mean share of the 10 nearest neighbours that are of the query's class.
    pub precision_at_10: f64,
    /// Share of queries whose 10 nearest neighbours' majority vote ([`vote`]) is their class.
    pub vote_accuracy_at_10: f64,
    /// Share of queries whose nearest neighbour is of their class.
    pub precision_at_1: f64,
    /// Mean over queries of the average precision over the R nearest neighbours, R being
    /// the number of other images of the query's class.
    pub map_at_r: f64,
}

/// The metrics from each query's neighbours, best first, itself excluded, and `labels` of
/// every image (queries are images `0..nearest.len()`): the 10-NN figures and precision@1
/// from `nearest` (at least min(10, images − 1) per query), MAP@R from `ranked` (at least the
/// query's R per query; the same lists may serve both). A query whose class has no other
/// image counts 0 in MAP@R, as in pytorch-metric-learning.
pub fn retrieval_metrics(
    nearest: &[Vec<Neighbor>], ranked: &[Vec<Neighbor>], labels: &[u32],
) -> Result<RetrievalMetrics> {
    if nearest.is_empty() || ranked.len() != nearest.len() {
        return Err(Error::InvalidArgument("no queries to score".into()));
    }
    let class_sizes = class_sizes(labels);
    let names: Vec<Option<String>> = labels.iter().map(|l| Some(l.to_string())).collect();
    let (mut p10, mut vote10, mut p1, mut map) = (0.0, 0.0, 0.0, 0.0);
    for (query, (found, ranked)) in nearest.iter().zip(ranked).enumerate() {
        let label = labels[query];
        let r = class_sizes[&label] - 1;
        let k = K.min(labels.len() - 1);
        if found.len() < k || ranked.len() < r {
            return Err(Error::InvalidArgument(format!(
                "query {query} has {} and {} neighbours; its scores need {k} and {r}",
                found.len(),
                ranked.len()
            )));
        }
        let relevant = |n: &Neighbor| labels.get(n.index) == Some(&label);
        if k > 0 {
            p10 += found[..k].iter().filter(|n| relevant(n)).count() as f64 / k as f64;
            vote10 += f64::from(u8::from(vote(&found[..k], &names).as_deref() == Some(&label.to_string()[..])));
            p1 += f64::from(u8::from(relevant(&found[0])));
        }
        if r > 0 {
            let mut hits = 0usize;
            let mut sum = 0.0;
            for (i, n) in ranked[..r].iter().enumerate() {
                if relevant(n) {
                    hits += 1;
                    sum += hits as f64 / (i + 1) as f64;
                }
            }
            map += sum / r as f64;
        }
    }
    let q = nearest.len() as f64;
    Ok(RetrievalMetrics {
        precision_at_10: p10 / q,
        vote_accuracy_at_10: vote10 / q,
        precision_at_1: p1 / q,
        map_at_r: map / q,
    })
}

/// Exact cosine neighbours of every row of `embeddings` among all the others, best first,
/// `k` per row (itself removed; ties to the lower index). On the GPU through the search's own
/// matmul and top-k when `ctx` is given and `k + 1` is within [`MAX_K`], else by the CPU
/// reference.
pub(crate) fn all_neighbours(
    ctx: Option<&Context>, embeddings: &[f32], dim: usize, k: usize,
) -> Result<Vec<Vec<Neighbor>>> {
    let rows = embeddings.len() / dim.max(1);
    if rows < 2 || k == 0 || k >= rows {
        return Err(Error::InvalidArgument(format!("{k} neighbours of each of {rows} images: need 1 <= k < images")));
    }
    let entries = (0..rows).map(|i| Entry::new(PathBuf::from(i.to_string()), None)).collect();
    let provenance = Provenance {
        model: "evaluation".into(),
        weights_path: String::new(),
        weights_sha256: String::new(),
        preprocess: Preprocess::default(),
    };
    let index = Index::from_features(embeddings, dim, entries, Precision::F32, Centring::Off, provenance)?;
    let found = match ctx {
        Some(ctx) if k < MAX_K => {
            Searcher::for_features(ctx.clone(), &index, SearchOptions::default())?.search_features(embeddings, k + 1)?
        }
        _ => search_features_cpu(&index, embeddings, k + 1)?,
    };
    Ok(found
        .into_iter()
        .enumerate()
        .map(|(query, mut list)| {
            match list.iter().position(|n| n.index == query) {
                Some(at) => {
                    list.remove(at);
                }
                None => {
                    list.pop();
                }
            }
            list
        })
        .collect())
}

/// Images of each label.
fn class_sizes(labels: &[u32]) -> std::collections::HashMap<u32, usize> {
    let mut sizes = std::collections::HashMap::new();
    for &l in labels {
        *sizes.entry(l).or_default() += 1;
    }
    sizes
}

/// Neighbours enough for [`retrieval_metrics`]: the larger of 10 and the largest class less
/// one, at most `rows − 1`.
pub(crate) fn neighbours_needed(labels: &[u32]) -> usize {
    let largest = class_sizes(labels).values().copied().max().unwrap_or(1);
    K.max(largest - 1).min(labels.len().saturating_sub(1))
}

/// The recipe's confusion matrix: for the first `per_class` test images of each class, the
/// classes of their 10 nearest neighbours (row: the query's class, column: the neighbour's).
pub fn neighbour_confusion(
    neighbours: &[Vec<Neighbor>], labels: &[u32], class_names: &[String], per_class: usize,
) -> ConfusionMatrix {
    let mut matrix = ConfusionMatrix::new(class_names.iter().cloned());
    let mut taken = vec![0usize; class_names.len()];
    for (query, found) in neighbours.iter().enumerate() {
        let class = labels[query] as usize;
        if class >= class_names.len() || taken[class] == per_class {
            continue;
        }
        taken[class] += 1;
        for n in found.iter().take(K) {
            let predicted = labels.get(n.index).and_then(|&l| class_names.get(l as usize));
            matrix.add(&class_names[class], predicted.map(String::as_str));
        }
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(index: usize) -> Neighbor {
        Neighbor { index, score: 0.0 }
    }

    #[test]
    fn metrics_follow_their_definitions() {
        // Classes: 0 0 0 1 1 ... query 0 (class 0, R = 2) finds 3, 1, 4, 2: relevant at ranks 2
        // and 4, so AP@R over the first R = 2 is (1/2)/2.
        let labels = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        let mut lists: Vec<Vec<Neighbor>> = vec![[3, 1, 4, 2, 5, 6, 7, 8, 9, 10, 11].map(n).to_vec()];
        let m = retrieval_metrics(&lists, &lists, &labels).unwrap();
        assert!((m.map_at_r - 0.25).abs() < 1e-12, "{m:?}");
        assert_eq!(m.precision_at_1, 0.0);
        assert!((m.precision_at_10 - 0.2).abs() < 1e-12);
        assert_eq!(m.vote_accuracy_at_10, 0.0);
        // A perfect ranking scores 1 everywhere but 10-NN precision, capped by R = 2 of 10.
        lists[0] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map(n).to_vec();
        let m = retrieval_metrics(&lists, &lists, &labels).unwrap();
        assert_eq!((m.map_at_r, m.precision_at_1), (1.0, 1.0));
        assert!((m.precision_at_10 - 0.2).abs() < 1e-12);
        assert!(retrieval_metrics(&[vec![n(1)]], &[vec![n(1)]], &labels).is_err());
    }

    #[test]
    fn cpu_neighbours_exclude_the_query() {
        let e = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
        let found = all_neighbours(None, &e, 2, 2).unwrap();
        assert_eq!(found[0].iter().map(|x| x.index).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(found[2].iter().map(|x| x.index).collect::<Vec<_>>(), [3, 1]);
        assert_eq!(neighbours_needed(&[0, 0, 1, 1, 1]), 4);
    }

    #[test]
    fn confusion_counts_ten_neighbours_of_the_first_queries_per_class() {
        let labels: Vec<u32> = (0..12).map(|i| (i % 2) as u32).collect();
        let lists: Vec<Vec<Neighbor>> =
            (0..12).map(|q| (0..12).filter(|&i| i != q).map(n).take(10).collect()).collect();
        let names = vec!["a".to_string(), "b".to_string()];
        let m = neighbour_confusion(&lists, &labels, &names, 2);
        assert_eq!(m.total(), 2 * 2 * 10);
    }
}
