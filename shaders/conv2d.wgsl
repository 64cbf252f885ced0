// 2-D convolution as an implicit GEMM over NHWC activations.
//
//   out[m, co] = epilogue( sum_k A[m, k] * W[k, co] )
//   m = (n, oh, ow) flattened, k = (kh, kw, ci) flattened,
//   A[m, k] = input[n, oh*stride - pad_h + kh, ow*stride - pad_w + kw, ci] (0 outside),
//   W is the weight as [KH, KW, Cin, Cout] (HWIO), i.e. a K x Cout row-major matrix.
// No im2col buffer exists: A tiles are gathered straight from the input.
//
// Each workgroup computes a (4*WG_Y) x (4*WG_X) output tile; each invocation a 4x4 block
// held in four vec4 accumulators (named, so they stay in registers). A and W tiles of depth
// TILE_K are staged in workgroup memory as vec4 columns.
//
// Epilogue (flags): y = acc * scale[co] + bias[co] + residual[m, co], then ReLU.

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

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> output: array<f32>;

// tile_a[kk * WG_Y + r] holds rows 4r..4r+3 of the A tile at depth kk.
var<workgroup> tile_a: array<vec4<f32>, TILE_K * WG_Y>;
// tile_w[kk * WG_X + c] holds columns 4c..4c+3 of the W tile at depth kk.
var<workgroup> tile_w: array<vec4<f32>, TILE_K * WG_X>;

// One element of the implicit A matrix (zero for padding and out-of-range rows/columns).
fn load_a(m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    let ow = m % p.out_w;
    let oh = (m / p.out_w) % p.out_h;
    let n = m / (p.out_w * p.out_h);
    let ci = k % p.in_c;
    let tap = k / p.in_c;
    let kw = tap % p.kernel_w;
    let kh = tap / p.kernel_w;
    // Unsigned wrap-around turns negative coordinates into huge ones: one test covers both.
    let ih = oh * p.stride + kh - p.pad_h;
    let iw = ow * p.stride + kw - p.pad_w;
    if (ih >= p.in_h || iw >= p.in_w) {
        return 0.0;
    }
    return input[((n * p.in_h + ih) * p.in_w + iw) * p.in_c + ci];
}

fn load_w(k: u32, co: u32) -> f32 {
    if (k >= p.k || co >= p.out_c) {
        return 0.0;
    }
    return weight[k * p.out_c + co];
}

fn store(m: u32, co: u32, acc: f32) {
    if (m >= p.m || co >= p.out_c) {
        return;
    }
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
        y = max(y, 0.0);
    }
    output[at] = y;
}

fn store_row(m: u32, co: u32, acc: vec4<f32>) {
    store(m, co, acc.x);
    store(m, co + 1u, acc.y);
    store(m, co + 2u, acc.z);
    store(m, co + 3u, acc.w);
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let tile_rows = 4u * WG_Y;
    let tile_cols = 4u * WG_X;
    let threads = WG_X * WG_Y;
    let m0 = wid.y * tile_rows;
    let co0 = wid.x * tile_cols;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 = k0 + TILE_K) {
        // Stage A: each task is 4 consecutive rows at one depth, so a vec4 store.
        for (var task = tid; task < TILE_K * WG_Y; task = task + threads) {
            let kk = task % TILE_K;
            let r = task / TILE_K;
            let m = m0 + 4u * r;
            let k = k0 + kk;
            tile_a[kk * WG_Y + r] = vec4<f32>(load_a(m, k), load_a(m + 1u, k),
                                              load_a(m + 2u, k), load_a(m + 3u, k));
        }
        // Stage W: 4 consecutive output channels at one depth.
        for (var task = tid; task < TILE_K * WG_X; task = task + threads) {
            let c = task % WG_X;
            let kk = task / WG_X;
            let k = k0 + kk;
            let co = co0 + 4u * c;
            tile_w[kk * WG_X + c] = vec4<f32>(load_w(k, co), load_w(k, co + 1u),
                                              load_w(k, co + 2u), load_w(k, co + 3u));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk = kk + 1u) {
            let a = tile_a[kk * WG_Y + lid.y];
            let w = tile_w[kk * WG_X + lid.x];
            acc0 = fma(vec4<f32>(a.x), w, acc0);
            acc1 = fma(vec4<f32>(a.y), w, acc1);
            acc2 = fma(vec4<f32>(a.z), w, acc2);
            acc3 = fma(vec4<f32>(a.w), w, acc3);
        }
        workgroupBarrier();
    }

    let m = m0 + 4u * lid.y;
    let co = co0 + 4u * lid.x;
    store_row(m, co, acc0);
    store_row(m + 1u, co, acc1);
    store_row(m + 2u, co, acc2);
    store_row(m + 3u, co, acc3);
}
