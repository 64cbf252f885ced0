//! Deterministic, realistically scaled random ResNet50 weights.
//!
//! No ImageNet weights can be downloaded here, so tests and benchmarks use seeded weights in
//! the real layout. Convs are He-initialised (torchvision's `kaiming_normal_`, fan-out).
//! Batch-norm statistics are *calibrated*: a seeded batch runs through the network layer by
//! layer, and each layer's running mean and variance are set near the statistics it really
//! sees (perturbed, as trained statistics never match one batch exactly). So activations
//! stay O(1) through all 50 layers, as in a trained network, instead of vanishing or
//! exploding.

use std::collections::HashMap;

use crate::cpu;
use crate::error::Result;
use crate::model::resnet50::{Act, BatchNorm, ConvBn, Executor, ResNet50, BN_EPS, FEATURE_DIM};
use crate::ops::batch_norm::BatchNormShape;
use crate::ops::pool::MaxPoolShape;
use crate::rng::Rng;

/// Side of the seeded calibration images.
const CALIBRATION_SIZE: usize = 64;
const CALIBRATION_BATCH: usize = 2;

/// A seeded network plus a seeded 1000-class `fc` head (torch's default Linear init), so
/// the file is a complete torchvision state dict.
pub struct RandomResNet50 {
    /// The feature extractor.
    pub net: ResNet50,
    /// The `fc.weight` head, `[1000, 2048]`.
    pub fc_weight: Vec<f32>,
    /// The `fc.bias` head, 1000 values.
    pub fc_bias: Vec<f32>,
}

impl RandomResNet50 {
    /// The network of `seed`: the same weights for the same seed on every machine.
    pub fn generate(seed: u64) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let mut net = ResNet50::architecture();
        for layer in net.convs_mut() {
            let fan_out = layer.out_c * layer.kernel * layer.kernel;
            layer.weight = rng.normals(layer.weight_len(), (2.0 / fan_out as f32).sqrt());
        }
        let (h, w) = (CALIBRATION_SIZE, CALIBRATION_SIZE);
        let images = rng.normals(CALIBRATION_BATCH * h * w * 3, 1.0);
        let mut calibrate =
            Calibrate { rng: Rng::new(seed.wrapping_add(1)), acts: vec![Some(images)], chosen: HashMap::new() };
        let template = net.clone();
        template.walk(&mut calibrate, Act { id: 0, h, w, c: 3 }, CALIBRATION_BATCH)?;
        for layer in net.convs_mut() {
            if let Some(bn) = calibrate.chosen.remove(&layer.bn_name) {
                layer.bn = bn;
            }
        }
        let bound = 1.0 / (FEATURE_DIM as f32).sqrt();
        let fc_weight = (0..1000 * FEATURE_DIM).map(|_| rng.range(-bound, bound)).collect();
        let fc_bias = (0..1000).map(|_| rng.range(-bound, bound)).collect();
        Ok(Self { net, fc_weight, fc_bias })
    }
}

/// Runs raw convs on the CPU, measures each layer's per-channel statistics, picks
/// batch-norm parameters from them and applies them before moving on.
struct Calibrate {
    rng: Rng,
    acts: Vec<Option<Vec<f32>>>,
    chosen: HashMap<String, BatchNorm>,
}

impl Calibrate {
    fn get(&self, x: Act) -> &[f32] {
        self.acts[x.id].as_deref().unwrap_or(&[])
    }

    fn push(&mut self, data: Vec<f32>, h: usize, w: usize, c: usize) -> Act {
        self.acts.push(Some(data));
        Act { id: self.acts.len() - 1, h, w, c }
    }

    /// Trained-network-like parameters around the measured statistics. The last BN of a
    /// residual branch gets a small gain, as trained ResNets have, so the residual stream
    /// grows slowly.
    fn choose(&mut self, layer: &ConvBn, raw: &[f32]) -> BatchNorm {
        let c = layer.out_c;
        let rows = raw.len() / c;
        let mut mean = vec![0.0f64; c];
        let mut sq = vec![0.0f64; c];
        for row in raw.chunks_exact(c) {
            for ((m, s), &x) in mean.iter_mut().zip(&mut sq).zip(row) {
                *m += x as f64;
                *s += (x as f64) * (x as f64);
            }
        }
        let last_of_branch = layer.bn_name.ends_with("bn3");
        let (gain_lo, gain_hi) = if last_of_branch { (0.2, 0.5) } else { (0.6, 1.2) };
        let mut bn = BatchNorm::identity(c);
        for ch in 0..c {
            let m = mean[ch] / rows as f64;
            let var = (sq[ch] / rows as f64 - m * m).max(1e-6);
            bn.running_mean[ch] = (m + 0.1 * var.sqrt() * self.rng.normal() as f64) as f32;
            bn.running_var[ch] = (var * self.rng.range(0.7, 1.4) as f64) as f32;
            bn.weight[ch] = self.rng.range(gain_lo, gain_hi);
            bn.bias[ch] = 0.1 * self.rng.normal();
        }
        bn
    }
}

impl Executor for Calibrate {
    fn conv(&mut self, layer: &ConvBn, x: Act, batch: usize, residual: Option<Act>, relu: bool) -> Result<Act> {
        let shape = layer.shape(batch, x.h, x.w);
        let raw = cpu::conv2d(&shape, self.get(x), &layer.weight_hwio()?, None, None, None, false)?;
        let bn = self.choose(layer, &raw);
        let residual = residual.map(|r| self.get(r).to_vec());
        let bn_shape = BatchNormShape { len: raw.len(), channels: layer.out_c, eps: BN_EPS };
        let out = cpu::batch_norm(
            &bn_shape,
            &raw,
            &bn.weight,
            &bn.bias,
            &bn.running_mean,
            &bn.running_var,
            residual.as_deref(),
            relu,
        )?;
        self.chosen.insert(layer.bn_name.clone(), bn);
        Ok(self.push(out, shape.out_h(), shape.out_w(), layer.out_c))
    }

    fn max_pool(&mut self, shape: &MaxPoolShape, x: Act) -> Result<Act> {
        let out = cpu::max_pool(shape, self.get(x))?;
        Ok(self.push(out, shape.out_h(), shape.out_w(), x.c))
    }

    fn global_avg_pool(&mut self, x: Act, batch: usize) -> Result<Act> {
        let out = cpu::global_avg_pool(batch, x.h, x.w, x.c, self.get(x))?;
        Ok(self.push(out, 1, 1, x.c))
    }

    fn release(&mut self, x: Act) {
        self.acts[x.id] = None;
    }
}
