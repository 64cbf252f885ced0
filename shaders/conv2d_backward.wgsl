// Backward of conv2d.wgsl's convolution followed by ReLU, over NHWC activations and an HWIO
// weight (a K x Cout matrix), for any kernel, stride and padding (the convnet: 3x3,
// stride 2, none):
//   dz[m, co]       = grad_output[m, co] where output[m, co] > 0, else 0 (with p.relu;
//                     without it, dz = grad_output)
//   d_weight[k, co] = sum_m A[m, k] dz[m, co]    A: the forward's implicit im2col of the input
//   d_bias[co]      = sum_m dz[m, co]            row K of the same sum, with A[m, K] = 1
//   d_input[n, ih, iw, ci] = sum over the taps (kh, kw) whose window covers (ih, iw) of
//                     sum_co dz[n, oh, ow, co] W[kh, kw, ci, co]    (ih = oh*stride - pad_h + kh)
// m = (n, oh, ow) and k = (kh, kw, ci) flattened, as in the forward.
//
// The ReLU mask is applied where dz is staged into workgroup memory: each staged value costs
// one more load (`output`), where a separate pass writing dz once would cost a buffer the
// size of the activations and a launch, and both kernels stage every dz value they use.
//
// Both entries are tiled GEMMs: a workgroup of WG_X x WG_Y invocations, each a 4x4 block of
// outputs held in four vec4 accumulators, steps through the reduction in slices of
// SLICE * WG_X, each slice staged in workgroup memory once and read by the whole tile.
//   d_weight: rows k (with the bias row K), columns co, reduced over m: batch x output pixels
//             is the long dimension, so it is the one looped over.
//   d_input:  a gather, no atomics. Input pixels are grouped by phase, (ih + pad_h) % stride
//             and (iw + pad_w) % stride (grid z): the pixels of one phase are covered by the
//             same taps, kh = ph + j * stride, at output row oh = qh - j with
//             qh = (ih + pad_h - ph) / stride, so a tile walks only the taps that reach its
//             pixels. Rows are the phase's pixels, columns ci, reduced over (tap, co).
//
// Weight, d_weight and d_bias sit at element offsets into their buffers, so one flat vector
// can hold every layer's parameters and another their gradients.

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
    m: u32,  // batch * out_h * out_w
    k: u32,  // kernel_h * kernel_w * in_c
    relu: u32,
    weight_offset: u32,
    d_weight_offset: u32,
    d_bias_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;

// Reduction depths per slice, in multiples of WG_X.
const SLICE: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
// The forward's post-ReLU output (read only with p.relu).
@group(0) @binding(2) var<storage, read> output: array<f32>;
@group(0) @binding(3) var<storage, read> grad_output: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> d_weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> d_input: array<f32>;

// tile_a[kk * WG_Y + y]: four rows of the tile (4y..4y+3) at reduction depth kk.
var<workgroup> tile_a: array<vec4<f32>, SLICE * WG_X * WG_Y>;
// tile_b[kk * WG_X + x]: four columns of the tile (4x..4x+3) at reduction depth kk.
var<workgroup> tile_b: array<vec4<f32>, SLICE * WG_X * WG_X>;

// dz[m, co], zero past the last row or channel.
fn dz(m: u32, co: u32) -> f32 {
    if (m >= p.m || co >= p.out_c) {
        return 0.0;
    }
    let at = m * p.out_c + co;
    if (p.relu != 0u && !(output[at] > 0.0)) {
        return 0.0;
    }
    return grad_output[at];
}

// The block of one invocation: rows r0..r3, four columns each.
struct Block {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// Accumulates the staged slice of `depths` depths into `acc`.
fn multiply_slice(acc: Block, lid: vec3<u32>, depths: u32) -> Block {
    var b = acc;
    for (var kk = 0u; kk < depths; kk = kk + 1u) {
        let a = tile_a[kk * WG_Y + lid.y];
        let w = tile_b[kk * WG_X + lid.x];
        b.r0 = fma(vec4<f32>(a.x), w, b.r0);
        b.r1 = fma(vec4<f32>(a.y), w, b.r1);
        b.r2 = fma(vec4<f32>(a.z), w, b.r2);
        b.r3 = fma(vec4<f32>(a.w), w, b.r3);
    }
    return b;
}

// ---- d_weight ---------------------------------------------------------------------------

// A depth k of A as its offset from a window's top-left input value and its tap; `bias` for
// the ones row K, `valid` false past it.
struct Depth {
    offset: u32,
    kh: u32,
    kw: u32,
    bias: bool,
    valid: bool,
}

fn depth_of(k: u32) -> Depth {
    let ci = k % p.in_c;
    let kw = (k / p.in_c) % p.kernel_w;
    let kh = k / (p.in_c * p.kernel_w);
    return Depth((kh * p.in_w + kw) * p.in_c + ci, kh, kw, k == p.k, k < p.k);
}

// Where output row m reads its window: the input offset of its top-left tap (wrapped modulo
// 2^32 inside the padding: only in-bounds taps are read) and its coordinates.
struct Window {
    pixel: u32,
    ih0: i32,
    iw0: i32,
    valid: bool,
}

fn window_of(m: u32) -> Window {
    let ow = m % p.out_w;
    let rest = m / p.out_w;
    let oh = rest % p.out_h;
    let n = rest / p.out_h;
    let ih0 = i32(oh * p.stride) - i32(p.pad_h);
    let iw0 = i32(ow * p.stride) - i32(p.pad_w);
    let pixel = (n * p.in_h * p.in_w + bitcast<u32>(ih0) * p.in_w + bitcast<u32>(iw0)) * p.in_c;
    return Window(pixel, ih0, iw0, m < p.m);
}

// A[m, k] for the window of m: the input value under tap k, 1 on the bias row, 0 in the
// padding and past the last row or depth.
fn im2col(w: Window, d: Depth) -> f32 {
    if (!w.valid) {
        return 0.0;
    }
    if (!d.valid) {
        return select(0.0, 1.0, d.bias);
    }
    let ih = w.ih0 + i32(d.kh);
    let iw = w.iw0 + i32(d.kw);
    if (ih < 0 || iw < 0 || ih >= i32(p.in_h) || iw >= i32(p.in_w)) {
        return 0.0;
    }
    return input[w.pixel + d.offset];
}

fn store_weight(k: u32, co: u32, v: vec4<f32>) {
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c = co + j;
        if (c >= p.out_c) {
            return;
        }
        if (k < p.k) {
            d_weight[p.d_weight_offset + k * p.out_c + c] = v[j];
        } else if (k == p.k) {
            d_bias[p.d_bias_offset + c] = v[j];
        }
    }
}

// Tile: rows k0..k0 + 4 WG_Y (the bias row K among them), columns co0..co0 + 4 WG_X.
// Invocation (x, y) stages A at rows m0 + x + j WG_X (j < SLICE), depths 4y..4y+3 of the
// tile (decomposed once, before the loop over m); the dz slice is spread over all.
@compute @workgroup_size(WG_X, WG_Y)
fn d_weight_main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
    let k0 = wid.y * 4u * WG_Y;
    let co0 = wid.x * 4u * WG_X;
    let mt = SLICE * WG_X;
    let d0 = depth_of(k0 + 4u * lid.y);
    let d1 = depth_of(k0 + 4u * lid.y + 1u);
    let d2 = depth_of(k0 + 4u * lid.y + 2u);
    let d3 = depth_of(k0 + 4u * lid.y + 3u);
    var acc = Block(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var m0 = 0u; m0 < p.m; m0 = m0 + mt) {
        for (var j = 0u; j < SLICE; j = j + 1u) {
            let mm = lid.x + j * WG_X;
            let w = window_of(m0 + mm);
            tile_a[mm * WG_Y + lid.y] = vec4<f32>(im2col(w, d0), im2col(w, d1), im2col(w, d2), im2col(w, d3));
        }
        for (var task = tid; task < mt * WG_X; task = task + WG_X * WG_Y) {
            let m = m0 + task / WG_X;
            let co = co0 + 4u * (task % WG_X);
            tile_b[task] = vec4<f32>(dz(m, co), dz(m, co + 1u), dz(m, co + 2u), dz(m, co + 3u));
        }
        workgroupBarrier();
        acc = multiply_slice(acc, lid, mt);
        workgroupBarrier();
    }
    let k = k0 + 4u * lid.y;
    let co = co0 + 4u * lid.x;
    store_weight(k, co, acc.r0);
    store_weight(k + 1u, co, acc.r1);
    store_weight(k + 2u, co, acc.r2);
    store_weight(k + 3u, co, acc.r3);
}

// ---- d_input ----------------------------------------------------------------------------

// One axis of a phase: the first input coordinate of the phase, how many there are, and how
// many taps cover them.
struct Axis {
    first: u32,
    count: u32,
    taps: u32,
}

fn axis(phase: u32, size: u32, pad: u32, kernel: u32) -> Axis {
    let first = (phase + p.stride - pad % p.stride) % p.stride;
    let count = select(0u, (size - 1u - first) / p.stride + 1u, first < size);
    let taps = select(0u, (kernel - 1u - phase) / p.stride + 1u, phase < kernel);
    return Axis(first, count, taps);
}

// One input pixel of the phase: its offset in d_input, the base row of its image in dz and
// q = (i + pad - phase) / stride on both axes (tap j reaches output row qh - j).
struct Pixel {
    at: u32,
    image: u32,
    qh: i32,
    qw: i32,
    valid: bool,
}

fn pixel_of(r: u32, rows: u32, ah: Axis, aw: Axis) -> Pixel {
    let n = r / (ah.count * aw.count);
    let a = (r / aw.count) % ah.count;
    let b = r % aw.count;
    let ih = ah.first + a * p.stride;
    let iw = aw.first + b * p.stride;
    let qh = i32((ih + p.pad_h) / p.stride);
    let qw = i32((iw + p.pad_w) / p.stride);
    return Pixel(((n * p.in_h + ih) * p.in_w + iw) * p.in_c, n * p.out_h * p.out_w, qh, qw, r < rows);
}

// The dz row that tap (jh, jw) of pixel `x` reads, or p.m where the tap falls outside the
// output (dz is zero there).
fn source_row(x: Pixel, jh: u32, jw: u32) -> u32 {
    let oh = x.qh - i32(jh);
    let ow = x.qw - i32(jw);
    if (!x.valid || oh < 0 || ow < 0 || oh >= i32(p.out_h) || ow >= i32(p.out_w)) {
        return p.m;
    }
    return x.image + u32(oh) * p.out_w + u32(ow);
}

// W[kh, kw, ci, co], zero past the last channel.
fn weight_at(tap: u32, ci: u32, co: u32) -> f32 {
    if (ci >= p.in_c || co >= p.out_c) {
        return 0.0;
    }
    return weight[p.weight_offset + (tap * p.in_c + ci) * p.out_c + co];
}

fn store_input(x: Pixel, ci: u32, v: vec4<f32>) {
    if (!x.valid) {
        return;
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (ci + j < p.in_c) {
            d_input[x.at + ci + j] = v[j];
        }
    }
}

// Tile: pixels r0..r0 + 4 WG_Y of phase wid.z, channels ci0..ci0 + 4 WG_X. Invocation (x, y)
// stages dz of its pixels 4y..4y+3 at channels c0 + x + j WG_X of the current tap; the weight
// slice is spread over all.
@compute @workgroup_size(WG_X, WG_Y)
fn d_input_main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let ph = wid.z / p.stride;
    let pw = wid.z % p.stride;
    let ah = axis(ph, p.in_h, p.pad_h, p.kernel_h);
    let aw = axis(pw, p.in_w, p.pad_w, p.kernel_w);
    let rows = p.batch * ah.count * aw.count;
    let r0 = wid.y * 4u * WG_Y;
    // Uniform across the workgroup: phases have different pixel counts, the grid fits the
    // largest.
    if (r0 >= rows) {
        return;
    }
    let ci0 = wid.x * 4u * WG_X;
    let ct = SLICE * WG_X;
    let x0 = pixel_of(r0 + 4u * lid.y, rows, ah, aw);
    let x1 = pixel_of(r0 + 4u * lid.y + 1u, rows, ah, aw);
    let x2 = pixel_of(r0 + 4u * lid.y + 2u, rows, ah, aw);
    let x3 = pixel_of(r0 + 4u * lid.y + 3u, rows, ah, aw);
    var acc = Block(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var jh = 0u; jh < ah.taps; jh = jh + 1u) {
        for (var jw = 0u; jw < aw.taps; jw = jw + 1u) {
            let tap = (ph + jh * p.stride) * p.kernel_w + pw + jw * p.stride;
            let s0 = source_row(x0, jh, jw);
            let s1 = source_row(x1, jh, jw);
            let s2 = source_row(x2, jh, jw);
            let s3 = source_row(x3, jh, jw);
            for (var c0 = 0u; c0 < p.out_c; c0 = c0 + ct) {
                for (var j = 0u; j < SLICE; j = j + 1u) {
                    let cc = lid.x + j * WG_X;
                    let co = c0 + cc;
                    tile_a[cc * WG_Y + lid.y] = vec4<f32>(dz(s0, co), dz(s1, co), dz(s2, co), dz(s3, co));
                }
                for (var task = tid; task < ct * WG_X; task = task + WG_X * WG_Y) {
                    let co = c0 + task / WG_X;
                    let ci = ci0 + 4u * (task % WG_X);
                    tile_b[task] = vec4<f32>(weight_at(tap, ci, co), weight_at(tap, ci + 1u, co),
                                             weight_at(tap, ci + 2u, co), weight_at(tap, ci + 3u, co));
                }
                workgroupBarrier();
                acc = multiply_slice(acc, lid, ct);
                workgroupBarrier();
            }
        }
    }
    let ci = ci0 + 4u * lid.x;
    store_input(x0, ci, acc.r0);
    store_input(x1, ci, acc.r1);
    store_input(x2, ci, acc.r2);
    store_input(x3, ci, acc.r3);
}
