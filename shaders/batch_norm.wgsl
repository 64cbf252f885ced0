// Inference batch normalisation over NHWC activations, the layer as it stands in a model:
//   y = (x - running_mean[c]) / sqrt(running_var[c] + eps) * weight[c] + bias[c]
// optionally followed by a residual add and ReLU (flags), so an unfused network can be
// built from conv + batch_norm alone. The fast path folds this into the convolution.

struct Params {
    len: u32,       // number of elements
    channels: u32,  // innermost (NHWC) dimension
    eps: f32,
    flags: u32,
}

const FLAG_RESIDUAL: u32 = 4u;
const FLAG_RELU: u32 = 8u;

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read> running_var: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;
@group(0) @binding(7) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    // 2-D grid: large tensors need more than 65535 workgroups in x.
    let i = gid.x + gid.y * groups.x * WG;
    if (i >= p.len) {
        return;
    }
    let c = i % p.channels;
    let inv_std = 1.0 / sqrt(running_var[c] + p.eps);
    var y = (input[i] - running_mean[c]) * inv_std * weight[c] + bias[c];
    if ((p.flags & FLAG_RESIDUAL) != 0u) {
        y = y + residual[i];
    }
    if ((p.flags & FLAG_RELU) != 0u) {
        // ReLU that keeps NaN (max may drop it): an overflow upstream reaches the features,
        // where it is reported, instead of vanishing into zeros.
        y = select(y, 0.0, y < 0.0);
    }
    output[i] = y;
}
