//! Rust twin of `shaders/adam.wgsl`: Keras's Adam over one flat weight vector, and the
//! launch that moves the GPU step counter on.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::train_sample::STATE_WORDS;
use crate::ops::{check_len, ELEMENTWISE_WG};
pub use crate::shape::adam::AdamRates;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    epsilon: f32,
}

const BINDINGS: [Binding; 7] = [
    Binding::Uniform,
    Binding::ReadWrite,
    Binding::ReadOnly,
    Binding::ReadOnly,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
];

/// The buffers of an Adam update over `len` weights.
pub struct AdamBuffers<'a> {
    /// [`STATE_WORDS`] u32s; the step size is `step_sizes[state[1]]`.
    pub state: &'a wgpu::Buffer,
    /// α_t of each step of the submission (`TrainConfig::adam_step_size`).
    pub step_sizes: &'a wgpu::Buffer,
    /// The gradients, `len` f32s.
    pub grads: &'a wgpu::Buffer,
    /// The weights, updated in place.
    pub params: &'a wgpu::Buffer,
    /// The first moments, updated in place.
    pub m: &'a wgpu::Buffer,
    /// The second moments, updated in place.
    pub v: &'a wgpu::Buffer,
}

/// Prepares one Adam update of all `len` weights.
pub fn adam(ctx: &Context, len: usize, rates: AdamRates, buffers: &AdamBuffers) -> Result<Dispatch> {
    if len == 0 || len > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!("adam: cannot update {len} weights")));
    }
    let b = buffers;
    check_len("adam state", b.state, STATE_WORDS)?;
    check_len("adam step sizes", b.step_sizes, 1)?;
    for (what, buffer) in [("adam grads", b.grads), ("adam params", b.params), ("adam m", b.m), ("adam v", b.v)] {
        check_len(what, buffer, len)?;
    }
    let params = Params {
        len: len as u32,
        one_minus_beta1: 1.0 - rates.beta1,
        one_minus_beta2: 1.0 - rates.beta2,
        epsilon: rates.epsilon,
    };
    let key = PipelineKey::new(ShaderFile::Adam, "adam", &[("WG", ELEMENTWISE_WG as f64)]);
    let kernel = ctx.kernel(&key, &BINDINGS)?;
    let uniform = ctx.uniform("adam params", &params);
    let grid = grid_1d(len, ELEMENTWISE_WG, ctx.limits().max_compute_workgroups_per_dimension);
    Dispatch::new(ctx, "adam", kernel, &[&uniform, b.state, b.step_sizes, b.grads, b.params, b.m, b.v], grid)
}

/// Prepares the one-invocation launch that adds 1 to both words of `state` (steps done, and
/// steps done in this submission): the last launch of a step.
pub fn advance_step(ctx: &Context, state: &wgpu::Buffer) -> Result<Dispatch> {
    check_len("step counter", state, STATE_WORDS)?;
    let key = PipelineKey::new(ShaderFile::Adam, "advance", &[("WG", ELEMENTWISE_WG as f64)]);
    let kernel = ctx.kernel(&key, &BINDINGS[..2])?;
    let uniform =
        ctx.uniform("advance params", &Params { len: 0, one_minus_beta1: 0.0, one_minus_beta2: 0.0, epsilon: 0.0 });
    Dispatch::new(ctx, "advance_step", kernel, &[&uniform, state], [1, 1, 1])
}
