//! Metric learning: training a small embedding net ([`convnet`]) so that images of one
//! class embed close together, by the recipe of Keras's "Metric learning for image
//! similarity search" example.
//!
//! One training step: for each of the C classes an anchor and a different positive image
//! of that class are drawn ([`sampler`]); all 2C images are embedded (unit rows); the
//! logits are anchors · positivesᵀ / T and the loss is the softmax cross-entropy of each
//! anchor row against its own positive (the diagonal), averaged over the C rows; Adam
//! updates every weight.

pub mod convnet;
pub mod cpu;
pub mod eval;
pub mod gpu;
pub mod gpu_forward;
pub mod run;
pub mod sampler;

pub use convnet::{ConvNet, ConvNetSpec, ParamLayout};

/// The training recipe. [`TrainConfig::default`] is the Keras example's: 20 epochs of 1000
/// steps, Adam with learning rate 1e-3, β1 0.9, β2 0.999, ε 1e-7, temperature 0.2.
///
/// Adam as Keras applies it, at step t = 1, 2, ...:
/// `m += (g - m)(1 - β1)`, `v += (g² - v)(1 - β2)`,
/// `w -= lr·√(1 - β2ᵗ)/(1 - β1ᵗ) · m / (√v + ε)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub learning_rate: f32,
    pub temperature: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// Seeds the initial weights and, with the step number, every step's pairs.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            steps_per_epoch: 1000,
            learning_rate: 1e-3,
            temperature: 0.2,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Rejects a learning rate or temperature that is not positive and finite, betas outside
    /// [0, 1) and an epsilon that is negative.
    pub fn validate(&self) -> crate::Result<()> {
        let positive = |x: f32| x.is_finite() && x > 0.0;
        let beta = |x: f32| (0.0..1.0).contains(&x);
        if !positive(self.learning_rate) || !positive(self.temperature) {
            return Err(crate::Error::InvalidArgument(format!(
                "learning rate ({}) and temperature ({}) must be positive and finite",
                self.learning_rate, self.temperature
            )));
        }
        if !beta(self.beta1) || !beta(self.beta2) || !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(crate::Error::InvalidArgument(format!(
                "Adam needs betas in [0, 1) and epsilon >= 0 (got {}, {}, {})",
                self.beta1, self.beta2, self.epsilon
            )));
        }
        Ok(())
    }

    /// Steps over all epochs.
    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch
    }

    /// Adam's step size at step `t` (1-based) after bias correction:
    /// `lr·√(1 - β2ᵗ)/(1 - β1ᵗ)`, in f64 so both twins agree on it.
    pub fn adam_step_size(&self, t: u64) -> f32 {
        let t = t as i32;
        let (b1, b2) = (self.beta1 as f64, self.beta2 as f64);
        (self.learning_rate as f64 * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t))) as f32
    }
}
