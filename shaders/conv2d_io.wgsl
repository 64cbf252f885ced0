// What both convolution kernels read and write, prepended to conv2d.wgsl and (after the
// matrix-unit skeleton) to conv2d_coop.wgsl: the uniform, the bindings and the epilogue
//   y = acc * scale[co] + bias[co] + residual[m, co], then ReLU (each per `flags`).
// Activations are NHWC, the weight HWIO (a K x Cout matrix).

struct Params {
    batch: u32,
    in_h: u32,
    in_w: u32,
    in_c: u32,
    out_h: u32,
    out_w: u32,
    out_c: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    pad_h: u32,
    pad_w: u32,
    m: u32,      // batch * out_h * out_w
    k: u32,      // kernel_h * kernel_w * in_c
    flags: u32,
    _pad: u32,
}

const FLAG_SCALE: u32 = 1u;
const FLAG_BIAS: u32 = 2u;
const FLAG_RESIDUAL: u32 = 4u;
const FLAG_RELU: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> output: array<f32>;
// The input and the weight again, read four values at a time where the channel counts
// allow (one 16-byte load instead of four, and one bounds check). The host binds a
// placeholder where a buffer is smaller than one vector; its shapes then never allow it.
@group(0) @binding(7) var<storage, read> input4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> weight4: array<vec4<f32>>;

// A 1x1 stride-1 convolution (half of ResNet50's work) reads its NHWC input as the
// M x Cin matrix A itself: no window, no padding.
fn is_pointwise() -> bool {
    return p.kernel_h == 1u && p.kernel_w == 1u && p.stride == 1u && p.pad_h == 0u && p.pad_w == 0u;
}

// Output (m, co), which must exist, from its sum over K.
fn epilogue(m: u32, co: u32, acc: f32) {
    var y = acc;
    if ((p.flags & FLAG_SCALE) != 0u) {
        y = y * scale[co];
    }
    if ((p.flags & FLAG_BIAS) != 0u) {
        y = y + bias[co];
    }
    let at = m * p.out_c + co;
    if ((p.flags & FLAG_RESIDUAL) != 0u) {
        y = y + residual[at];
    }
    if ((p.flags & FLAG_RELU) != 0u) {
        // ReLU that keeps NaN (max may drop it): an overflow upstream reaches the features,
        // where it is reported, instead of vanishing into zeros.
        y = select(y, 0.0, y < 0.0);
    }
    output[at] = y;
}
