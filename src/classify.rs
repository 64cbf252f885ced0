//! k-NN classification: a label from the neighbours' labels, and a confusion matrix to score
//! the predictions.

use std::fmt;

use crate::search::Neighbor;

/// Predicts a label by majority vote of the neighbours' labels.
///
/// `labels[i]` is the label of index row `i`. Neighbours without a label, or whose index is
/// out of range of `labels`, do not vote. Ties between equally frequent labels go to the
/// label with the higher summed score; if still tied, to the label of the best-ranked
/// (earliest) neighbour among them. Returns `None` when no neighbour has a label.
pub fn vote(neighbors: &[Neighbor], labels: &[Option<String>]) -> Option<String> {
    // (label, votes, summed score); in order of first appearance, i.e. by best rank.
    let mut tally: Vec<(&str, usize, f64)> = Vec::new();
    for neighbor in neighbors {
        let Some(Some(label)) = labels.get(neighbor.index) else { continue };
        match tally.iter_mut().find(|(seen, _, _)| *seen == label.as_str()) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += f64::from(neighbor.score);
            }
            None => tally.push((label, 1, f64::from(neighbor.score))),
        }
    }
    let mut winner: Option<&(&str, usize, f64)> = None;
    for candidate in &tally {
        // Strictly better only, so an exact tie keeps the earlier (better-ranked) label.
        let better = winner.is_none_or(|best| {
            (candidate.1, candidate.2).partial_cmp(&(best.1, best.2)) == Some(std::cmp::Ordering::Greater)
        });
        if better {
            winner = Some(candidate);
        }
    }
    winner.map(|(label, _, _)| (*label).to_string())
}

/// Column header of the predictions that named no label.
pub const NO_PREDICTION: &str = "(none)";

/// Counts of (true label, predicted label) pairs.
///
/// `counts[t][p]` counts samples of true label `labels[t]` predicted as `labels[p]`, for
/// `p < labels.len()`; the extra last column `counts[t][labels.len()]` counts samples for
/// which no label was predicted ([`NO_PREDICTION`]). Any label not yet known, true or
/// predicted, is appended to `labels` (a label only ever predicted gets an all-zero row), so
/// the matrix stays square over `labels` plus that one column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfusionMatrix {
    /// The class names, in row (and column) order.
    pub labels: Vec<String>,
    /// `counts[true][predicted]`, with a trailing no-prediction column.
    pub counts: Vec<Vec<usize>>,
}

impl ConfusionMatrix {
    /// An empty matrix over `labels` (duplicates are dropped, order kept).
    pub fn new<S: Into<String>>(labels: impl IntoIterator<Item = S>) -> Self {
        let mut matrix = ConfusionMatrix::default();
        for label in labels {
            matrix.label_index(&label.into());
        }
        matrix
    }

    /// Records one sample of class `truth` predicted as `predicted` (`None`: no prediction).
    pub fn add(&mut self, truth: &str, predicted: Option<&str>) {
        let row = self.label_index(truth);
        let column = match predicted {
            Some(label) => self.label_index(label),
            None => self.labels.len(),
        };
        if let Some(count) = self.counts.get_mut(row).and_then(|r| r.get_mut(column)) {
            *count += 1;
        }
    }

    /// The number of samples recorded.
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// The number of correctly predicted samples (the diagonal).
    pub fn correct(&self) -> usize {
        self.counts.iter().enumerate().filter_map(|(i, row)| row.get(i)).sum()
    }

    /// The number of samples for which no label was predicted.
    pub fn unpredicted(&self) -> usize {
        let column = self.labels.len();
        self.counts.iter().filter_map(|row| row.get(column)).sum()
    }

    /// The fraction of samples predicted correctly; 0 when there are none.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total()).unwrap_or(0.0)
    }

    /// The recall of class `label`: the fraction of its samples predicted as `label`.
    /// `None` for an unknown label or one without samples.
    pub fn recall(&self, label: &str) -> Option<f64> {
        let row = self.labels.iter().position(|l| l == label)?;
        self.row_recall(row)
    }

    /// The recall of every class, in the order of `labels`.
    pub fn recalls(&self) -> Vec<Option<f64>> {
        (0..self.labels.len()).map(|row| self.row_recall(row)).collect()
    }

    fn row_recall(&self, row: usize) -> Option<f64> {
        let counts = self.counts.get(row)?;
        ratio(counts.get(row).copied().unwrap_or(0), counts.iter().sum())
    }

    /// The index of `label`, appending it (with a zero row and column) when new.
    fn label_index(&mut self, label: &str) -> usize {
        if let Some(index) = self.labels.iter().position(|l| l == label) {
            return index;
        }
        let new_index = self.labels.len();
        for row in &mut self.counts {
            // The new label's column goes just before the no-prediction column.
            row.insert(new_index.min(row.len()), 0);
        }
        self.labels.push(label.to_string());
        self.counts.resize(self.labels.len(), Vec::new());
        for row in &mut self.counts {
            row.resize(self.labels.len() + 1, 0);
        }
        new_index
    }
}

fn ratio(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// An aligned table (rows: true class, columns: predicted class, plus recall), then the
/// accuracy. The no-prediction column is shown only when some sample has no prediction.
impl fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let corner = "true \\ predicted";
        let mut headers: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        if self.unpredicted() > 0 {
            headers.push(NO_PREDICTION);
        }
        let name_width = self.labels.iter().map(|l| l.chars().count()).chain([corner.len()]).max().unwrap_or(0);
        let max_count = self.counts.iter().flatten().max().copied().unwrap_or(0);
        let count_width = max_count.to_string().len();
        let widths: Vec<usize> = headers.iter().map(|h| h.chars().count().max(count_width)).collect();

        write!(f, "{corner:<name_width$}")?;
        for (header, width) in headers.iter().zip(&widths) {
            write!(f, "  {header:>width$}")?;
        }
        writeln!(f, "  {:>6}", "recall")?;
        for (row, label) in self.labels.iter().enumerate() {
            write!(f, "{label:<name_width$}")?;
            let counts = self.counts.get(row);
            for (column, width) in widths.iter().enumerate() {
                let count = counts.and_then(|c| c.get(column)).copied().unwrap_or(0);
                write!(f, "  {count:>width$}")?;
            }
            match self.row_recall(row) {
                Some(recall) => writeln!(f, "  {:>5.1}%", 100.0 * recall)?,
                None => writeln!(f, "  {:>6}", "-")?,
            }
        }
        write!(f, "accuracy {:.1}% ({} of {})", 100.0 * self.accuracy(), self.correct(), self.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neighbors(list: &[(usize, f32)]) -> Vec<Neighbor> {
        list.iter().map(|&(index, score)| Neighbor { index, score }).collect()
    }

    fn labels(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|l| l.map(str::to_string)).collect()
    }

    #[test]
    fn vote_takes_the_majority() {
        let labels = labels(&[Some("cat"), Some("dog"), Some("dog"), None]);
        let found = neighbors(&[(0, 0.9), (1, 0.5), (2, 0.4), (3, 0.95)]);
        assert_eq!(vote(&found, &labels).as_deref(), Some("dog"));
    }

    #[test]
    fn vote_breaks_count_ties_by_summed_score() {
        let labels = labels(&[Some("cat"), Some("dog"), Some("dog"), Some("cat")]);
        // cat: 0.9 + 0.1 = 1.0; dog: 0.8 + 0.7 = 1.5.
        let found = neighbors(&[(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.1)]);
        assert_eq!(vote(&found, &labels).as_deref(), Some("dog"));
    }

    #[test]
    fn vote_breaks_exact_ties_by_best_rank() {
        let labels = labels(&[Some("cat"), Some("dog")]);
        let found = neighbors(&[(1, 0.5), (0, 0.5)]);
        assert_eq!(vote(&found, &labels).as_deref(), Some("dog"));
    }

    #[test]
    fn vote_ignores_unlabelled_and_out_of_range() {
        let labels = labels(&[None, Some("cat")]);
        assert_eq!(vote(&neighbors(&[(0, 1.0), (7, 1.0), (1, 0.1)]), &labels).as_deref(), Some("cat"));
        assert_eq!(vote(&neighbors(&[(0, 1.0), (9, 1.0)]), &labels), None);
        assert_eq!(vote(&[], &labels), None);
    }

    #[test]
    fn matrix_counts_accuracy_and_recall() {
        let mut matrix = ConfusionMatrix::new(["cat", "dog"]);
        matrix.add("cat", Some("cat"));
        matrix.add("cat", Some("dog"));
        matrix.add("dog", Some("dog"));
        matrix.add("dog", None);
        assert_eq!(matrix.counts, vec![vec![1, 1, 0], vec![0, 1, 1]]);
        assert_eq!(matrix.total(), 4);
        assert_eq!(matrix.unpredicted(), 1);
        assert_eq!(matrix.accuracy(), 0.5);
        assert_eq!(matrix.recall("cat"), Some(0.5));
        assert_eq!(matrix.recall("bird"), None);
        assert_eq!(matrix.recalls(), vec![Some(0.5), Some(0.5)]);
    }

    #[test]
    fn matrix_extends_labels_for_unknown_truth_and_prediction() {
        let mut matrix = ConfusionMatrix::new(["cat", "cat"]);
        assert_eq!(matrix.labels, ["cat"]);
        matrix.add("cat", None);
        matrix.add("fox", Some("cat"));
        matrix.add("cat", Some("owl"));
        assert_eq!(matrix.labels, ["cat", "fox", "owl"]);
        // Columns: cat, fox, owl, (none).
        assert_eq!(matrix.counts, vec![vec![0, 0, 1, 1], vec![1, 0, 0, 0], vec![0, 0, 0, 0]]);
        assert_eq!(matrix.recalls(), vec![Some(0.0), Some(0.0), None]);
    }

    #[test]
    fn empty_matrix_has_zero_accuracy() {
        let matrix = ConfusionMatrix::new(Vec::<String>::new());
        assert_eq!(matrix.total(), 0);
        assert_eq!(matrix.accuracy(), 0.0);
        assert_eq!(matrix.to_string(), "true \\ predicted  recall\naccuracy 0.0% (0 of 0)");
    }

    #[test]
    fn display_is_an_aligned_table() {
        let mut matrix = ConfusionMatrix::new(["cat", "dog"]);
        for _ in 0..10 {
            matrix.add("cat", Some("cat"));
        }
        matrix.add("dog", None);
        let expected = "\
true \\ predicted  cat  dog  (none)  recall
cat                10    0       0  100.0%
dog                 0    0       1    0.0%
accuracy 90.9% (10 of 11)";
        assert_eq!(matrix.to_string(), expected);
    }
}
