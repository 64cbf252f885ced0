//! Rust twin of `shaders/metric_loss.wgsl`: the pair loss of one training step, forward and
//! backward, from the dense outputs to their gradient, in one workgroup; and its L2
//! normalisation alone, for embedding.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::train_sample::STATE_WORDS;
use crate::ops::{check_len, ELEMENTWISE_WG};

/// Most classes one launch takes (the workgroup arrays' size in the shader).
pub const MAX_CLASSES: usize = 1024;

/// Invocations of the one workgroup.
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    classes: u32,
    dim: u32,
    inv_temperature: f32,
    rows: u32,
}

const BINDINGS: [Binding; 6] = Binding::uniform_reads_writes(2);

/// The buffers of the loss: `embeddings` (dense outputs, `[2C, dim]`, anchors then
/// positives) in; their unit rows, their gradient and the step's loss out.
pub struct MetricLossBuffers<'a> {
    /// [`STATE_WORDS`] u32s: the loss goes to `loss_history[state[1]]`.
    pub state: &'a wgpu::Buffer,
    /// The dense layer's outputs, `[2C, dim]`: anchors, then positives.
    pub embeddings: &'a wgpu::Buffer,
    /// Their unit rows, written.
    pub unit: &'a wgpu::Buffer,
    /// The loss's gradient with respect to `embeddings`, written.
    pub d_embeddings: &'a wgpu::Buffer,
    /// One loss per step of the submission.
    pub loss_history: &'a wgpu::Buffer,
}

/// Prepares the loss launch for `classes` pairs of `dim`-wide embeddings at `temperature`:
/// L2 normalisation (as `tf.math.l2_normalize`), logits of anchors against positives,
/// softmax cross-entropy against the diagonal averaged over the anchors, and the gradient
/// back through all of it. `loss_history` must hold a slot for every step of a submission.
/// Refuses more than [`MAX_CLASSES`] classes.
pub fn metric_loss(
    ctx: &Context, classes: usize, dim: usize, temperature: f32, buffers: &MetricLossBuffers,
) -> Result<Dispatch> {
    if !(2..=MAX_CLASSES).contains(&classes) || dim == 0 {
        return Err(Error::InvalidArgument(format!(
            "metric_loss: {classes} classes of {dim}-wide embeddings: the loss kernel takes 2 to {MAX_CLASSES} \
             classes (one workgroup holds their norms) and a non-zero width"
        )));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::InvalidArgument(format!("metric_loss: temperature {temperature} must be positive")));
    }
    if 2 * classes * dim > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!("metric_loss: {classes} x 2 rows of {dim} exceed 32-bit indexing")));
    }
    let len = 2 * classes * dim;
    check_len("metric_loss state", buffers.state, STATE_WORDS)?;
    check_len("metric_loss embeddings", buffers.embeddings, len)?;
    check_len("metric_loss unit rows", buffers.unit, len)?;
    check_len("metric_loss embedding gradient", buffers.d_embeddings, len)?;
    check_len("metric_loss loss history", buffers.loss_history, 1)?;
    let params = Params { classes: classes as u32, dim: dim as u32, inv_temperature: 1.0 / temperature, rows: 0 };
    let key = PipelineKey::new(ShaderFile::MetricLoss, "main", &[("WG", WG as f64)]);
    let kernel = ctx.kernel(&key, &BINDINGS)?;
    let uniform = ctx.uniform("metric_loss params", &params);
    let b = buffers;
    let bound = [&uniform, b.state, b.embeddings, b.unit, b.d_embeddings, b.loss_history];
    Dispatch::new(ctx, "metric_loss", kernel, &bound, [1, 1, 1])
}

/// Prepares `unit[r] = embeddings[r] / √max(|embeddings[r]|², 1e-12)` for `rows` rows of
/// `dim` (as `tf.math.l2_normalize` and the loss's forward), one invocation per row.
pub fn l2_normalize_rows(
    ctx: &Context, rows: usize, dim: usize, embeddings: &wgpu::Buffer, unit: &wgpu::Buffer,
) -> Result<Dispatch> {
    if rows == 0 || dim == 0 || rows * dim > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!("l2_normalize_rows: cannot take {rows} rows of {dim}")));
    }
    check_len("l2_normalize_rows embeddings", embeddings, rows * dim)?;
    check_len("l2_normalize_rows unit rows", unit, rows * dim)?;
    let params = Params { classes: 0, dim: dim as u32, inv_temperature: 0.0, rows: rows as u32 };
    let key = PipelineKey::new(ShaderFile::MetricLoss, "normalize", &[("WG", ELEMENTWISE_WG as f64)]);
    // The entry reads binding 2 and writes binding 3; the state binding is not read.
    let kernel = ctx.kernel(&key, &BINDINGS[..4])?;
    let uniform = ctx.uniform("l2_normalize_rows params", &params);
    let grid = grid_1d(rows, ELEMENTWISE_WG, ctx.limits().max_compute_workgroups_per_dimension);
    Dispatch::new(ctx, "l2_normalize_rows", kernel, &[&uniform, embeddings, embeddings, unit], grid)
}
