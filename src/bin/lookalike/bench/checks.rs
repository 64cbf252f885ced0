//! What `bench` holds its GPU results to: the CPU reference's results of the same timed runs.
//! A figure measured on a card is only worth reporting if the card computed the right thing,
//! and the tests run on lavapipe alone, which executes a workgroup in lockstep and so hides
//! races a real GPU shows: on a new card, the bench is the first test there.

use lookalike::compare::{relative_l2, same_ranking, Tolerance};
use lookalike::search::Neighbor;
use serde_json::{json, Value};

/// Cosine scores of unit vectors: one f32 rounding per step of a 2048-long dot product in
/// either order stays below 1e-6.
const SCORE_MAX: f32 = 1e-5;

/// The outcome of every check so far.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    /// A dense GPU result (features, a product) against the CPU's, within
    /// [`Tolerance::reordered`]; returns its relative L2 distance for the report.
    pub fn dense(&mut self, what: &str, gpu: &[f32], cpu: &[f32]) -> f64 {
        let tolerance = Tolerance::reordered(cpu);
        if let Err(mismatch) = tolerance.check(gpu, cpu) {
            self.failures.push(format!("{what}: {mismatch} (allowed {})", tolerance.abs));
        }
        relative_l2(gpu, cpu)
    }

    /// GPU neighbours against the CPU's: per query the same count, scores rank by rank
    /// within [`SCORE_MAX`], no row twice, a row both returned with the same score on both,
    /// and any row the CPU did not return tied with its last score (rows that close may fall
    /// either side of the k-th). Returns the largest score difference.
    pub fn neighbours(&mut self, what: &str, gpu: &[Vec<Neighbor>], cpu: &[Vec<Neighbor>]) -> f32 {
        let mut worst = 0.0f32;
        if gpu.len() != cpu.len() {
            self.failures.push(format!("{what}: {} queries answered, {} expected", gpu.len(), cpu.len()));
            return f32::INFINITY;
        }
        for (q, (got, want)) in gpu.iter().zip(cpu).enumerate() {
            if let Err(why) = same_neighbours(got, want, &mut worst) {
                self.failures.push(format!("{what}: query {q}: {why}"));
            }
        }
        worst
    }

    /// A GPU top-k against the CPU twin's on the same scores ([`same_ranking`]).
    pub fn top_k(&mut self, what: &str, gpu: (&[f32], &[u32]), cpu: (&[f32], &[u32])) {
        if let Err(why) = same_ranking(gpu, cpu) {
            self.failures.push(format!("{what}: {why} (the CPU's)"));
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    pub fn to_json(&self) -> Value {
        json!({"passed": self.passed(), "failures": self.failures})
    }
}

fn same_neighbours(got: &[Neighbor], want: &[Neighbor], worst: &mut f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} neighbours, {} expected", got.len(), want.len()));
    }
    for (rank, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = (g.score - w.score).abs();
        *worst = worst.max(if diff.is_nan() { f32::INFINITY } else { diff });
        if diff.is_nan() || diff > SCORE_MAX {
            return Err(format!(
                "rank {rank}: row {} scores {} on the GPU, row {} {} on the CPU",
                g.index, g.score, w.index, w.score
            ));
        }
        if got[..rank].iter().any(|earlier| earlier.index == g.index) {
            return Err(format!("row {} returned twice (rank {rank})", g.index));
        }
    }
    let last = want.last().map_or(f32::NEG_INFINITY, |n| n.score);
    for (rank, g) in got.iter().enumerate() {
        // A row both returned carries the same score on both (scores swapped between rows
        // would pass the rank-by-rank comparison).
        if let Some(w) = want.iter().find(|w| w.index == g.index) {
            let same = (g.score - w.score).abs() <= SCORE_MAX;
            if !same {
                return Err(format!(
                    "rank {rank}: row {} scores {} on the GPU, {} on the CPU",
                    g.index, g.score, w.score
                ));
            }
            continue;
        }
        // Had the CPU seen it above its last score, the CPU would have returned it.
        let tied = (g.score - last).abs() <= SCORE_MAX;
        if !tied {
            return Err(format!(
                "rank {rank}: row {} (score {}) is not among the CPU's neighbours nor tied with their last ({last})",
                g.index, g.score
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(usize, f32)]) -> Vec<Neighbor> {
        pairs.iter().map(|&(index, score)| Neighbor { index, score }).collect()
    }

    #[test]
    fn dense_results_fail_on_one_wrong_element_and_pass_on_rounding() {
        let cpu: Vec<f32> = (0..1000).map(|i| (i as f32).sin() * 30.0).collect();
        let mut checks = Checks::default();
        let rounded: Vec<f32> = cpu.iter().map(|v| v * (1.0 + 1e-6)).collect();
        assert!(checks.dense("rounded", &rounded, &cpu) < 1e-5);
        assert!(checks.passed(), "{:?}", checks.failures());
        let mut broken = cpu.clone();
        broken[417] += 0.05;
        checks.dense("broken", &broken, &cpu);
        assert_eq!(checks.failures().len(), 1);
        assert!(checks.failures()[0].contains("index 417"), "{:?}", checks.failures());
    }

    #[test]
    fn neighbours_allow_ties_at_the_kth_and_nothing_else() {
        let cpu = vec![list(&[(4, 0.9), (7, 0.5), (2, 0.3)])];
        let cases = [
            (list(&[(4, 0.9), (7, 0.5), (2, 0.3)]), true),
            // Another row tied with the last: either may be returned.
            (list(&[(4, 0.9), (7, 0.5), (9, 0.3)]), true),
            // Right scores, a row the CPU did not find above the tie.
            (list(&[(4, 0.9), (8, 0.5), (2, 0.3)]), false),
            (list(&[(4, 0.9), (7, 0.5), (2, 0.29)]), false),
            (list(&[(4, 0.9), (4, 0.5), (2, 0.3)]), false),
            // The right scores in order, on swapped rows.
            (list(&[(4, 0.9), (2, 0.5), (7, 0.3)]), false),
            (list(&[(4, 0.9), (7, 0.5)]), false),
            (list(&[(4, f32::NAN), (7, 0.5), (2, 0.3)]), false),
        ];
        for (at, (gpu, ok)) in cases.into_iter().enumerate() {
            let mut checks = Checks::default();
            checks.neighbours("case", &[gpu], &cpu);
            assert_eq!(checks.passed(), ok, "case {at}: {:?}", checks.failures());
        }
    }
}
