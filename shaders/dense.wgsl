// A dense layer, y = x W + b (x [batch, in], W [in, out] as Keras stores it), and its
// backward: all three are one tiled GEMM over strided views of row-major buffers,
//   C[i, j] = sum_d A(i, d) B(d, j)
//   A(i, d) = a[a_offset + i * a_row + d * a_depth],  B(d, j) = b[b_offset + d * b_depth + j * b_col]
//   C[i, j] at c[c_offset + i * n + j]
// forward   A = x, B = W, C = y, plus bias[j]                          (MODE_BIAS)
// d_input   A = dY, B = W transposed (b_depth 1, b_col out), C = dX
// d_weight  A = x transposed (a_row 1, a_depth in), B = dY, C = dW; A has one more row of
//           ones, whose row of C (sum over the batch of dY) goes to d_bias   (MODE_BIAS_ROW)
// Offsets let W, b and their gradients live in flat parameter and gradient vectors.
//
// A workgroup of WG_X x WG_Y invocations computes a (4 WG_Y) x (4 WG_X) tile of C, each
// invocation a 4x4 block in four vec4 accumulators; the reduction advances DEPTH deep per
// slice staged in workgroup memory. Strided loads are scalar: the shapes of the recipe are
// small (batch 20, 128 -> 8) and odd sizes are the rule.

struct Params {
    m: u32,      // rows of C (without the ones row)
    n: u32,      // columns of C
    depth: u32,  // reduction length
    a_offset: u32,
    a_row: u32,
    a_depth: u32,
    b_offset: u32,
    b_depth: u32,
    b_col: u32,
    c_offset: u32,
    bias_offset: u32,
    mode: u32,
}

const MODE_PLAIN: u32 = 0u;
const MODE_BIAS: u32 = 1u;
const MODE_BIAS_ROW: u32 = 2u;

override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;
override DEPTH: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
// Read with MODE_BIAS.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
// Written with MODE_BIAS_ROW.
@group(0) @binding(5) var<storage, read_write> d_bias: array<f32>;

// tile_a[dd * WG_Y + y]: rows 4y..4y+3 of the tile at depth dd.
var<workgroup> tile_a: array<vec4<f32>, DEPTH * WG_Y>;
// tile_b[dd * WG_X + x]: columns 4x..4x+3 of the tile at depth dd.
var<workgroup> tile_b: array<vec4<f32>, DEPTH * WG_X>;

fn load_a(i: u32, d: u32) -> f32 {
    if (d >= p.depth || i > p.m) {
        return 0.0;
    }
    if (i == p.m) {
        return select(0.0, 1.0, p.mode == MODE_BIAS_ROW);
    }
    return a[p.a_offset + i * p.a_row + d * p.a_depth];
}

fn load_b(d: u32, j: u32) -> f32 {
    if (d >= p.depth || j >= p.n) {
        return 0.0;
    }
    return b[p.b_offset + d * p.b_depth + j * p.b_col];
}

fn store_row(i: u32, j0: u32, v: vec4<f32>) {
    for (var t = 0u; t < 4u; t = t + 1u) {
        let j = j0 + t;
        if (j >= p.n) {
            return;
        }
        if (i < p.m) {
            var y = v[t];
            if (p.mode == MODE_BIAS) {
                y = y + bias[p.bias_offset + j];
            }
            c[p.c_offset + i * p.n + j] = y;
        } else if (i == p.m && p.mode == MODE_BIAS_ROW) {
            d_bias[p.bias_offset + j] = v[t];
        }
    }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i0 = wid.y * 4u * WG_Y;
    let j0 = wid.x * 4u * WG_X;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < p.depth; d0 = d0 + DEPTH) {
        for (var task = tid; task < DEPTH * WG_Y; task = task + WG_X * WG_Y) {
            let d = d0 + task / WG_Y;
            let i = i0 + 4u * (task % WG_Y);
            tile_a[task] = vec4<f32>(load_a(i, d), load_a(i + 1u, d), load_a(i + 2u, d), load_a(i + 3u, d));
        }
        for (var task = tid; task < DEPTH * WG_X; task = task + WG_X * WG_Y) {
            let d = d0 + task / WG_X;
            let j = j0 + 4u * (task % WG_X);
            tile_b[task] = vec4<f32>(load_b(d, j), load_b(d, j + 1u), load_b(d, j + 2u), load_b(d, j + 3u));
        }
        workgroupBarrier();
        for (var dd = 0u; dd < DEPTH; dd = dd + 1u) {
            let av = tile_a[dd * WG_Y + lid.y];
            let bv = tile_b[dd * WG_X + lid.x];
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
        }
        workgroupBarrier();
    }
    let i = i0 + 4u * lid.y;
    let j = j0 + 4u * lid.x;
    store_row(i, j, acc0);
    store_row(i + 1u, j, acc1);
    store_row(i + 2u, j, acc2);
    store_row(i + 3u, j, acc3);
}
