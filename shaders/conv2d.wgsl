// 2-D convolution as an implicit GEMM over NHWC activations.
//
//   out[m, co] = epilogue( sum_k A[m, k] * W[k, co] )
//   m = (n, oh, ow) flattened, k = (kh, kw, ci) flattened,
//   A[m, k] = input[n, oh*stride - pad_h + kh, ow*stride - pad_w + kw, ci] (0 outside),
//   W is the weight as [KH, KW, Cin, Cout] (HWIO), i.e. a K x Cout row-major matrix.
// No im2col buffer exists: A tiles are gathered straight from the input.
//
// Each workgroup computes a (4*WG_Y) x (4*WG_X) output tile; each invocation a 4x4 block
// held in four vec4 accumulators (named, so they stay in registers). K advances in slices
// of KT = 2 * WG_X (half the barriers of one depth per column): invocation (x, y) stages
// depths x and x + WG_X of its own four output rows, so the expensive row decomposition
// (n, oh, ow) happens once, before the K loop, and the (kh, kw, ci) decomposition of its
// depths is advanced incrementally instead of divided out per tile. Where the input has
// channels in fours (every ResNet50 layer but the RGB stem), A_VEC4 stages A four depths
// per 16-byte load instead (vec_staging), and weights always go four channels per load.
//
// `main_8x8` is the same GEMM with 8x8 blocks per invocation (16 vec4 accumulators): a
// (8*WG_Y) x (8*WG_X) tile, K slices of WG_X. Per depth it reads 4 vec4 from workgroup
// memory for 64 FMAs where `main` reads 2 for 16, which matters where workgroup-memory
// bandwidth, not arithmetic, bounds the 4x4 kernel (large GPUs); it needs more registers.
//
// conv2d_io.wgsl, prepended, holds the uniform, the bindings and the epilogue;
// fma_tile.wgsl, appended, the A tile's slots.

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
// Stage A four depths per 16-byte load (see stage_a4). The host sets it where the input
// has a multiple of 4 channels (the four share one kernel tap) and WG_X is a multiple of 4.
override A_VEC4: bool = false;

// Depths per K slice. With the default 16 x 16 invocations the two tiles fill WebGPU's
// default 16 KiB of workgroup memory.
const SLICE: u32 = 2u;

// tile_a[a_slot(kk, r, WG_Y)] holds rows 4r..4r+3 of the A tile at depth kk.
var<workgroup> tile_a: array<vec4<f32>, SLICE * WG_X * WG_Y>;
// tile_w[kk * WG_X + c] holds columns 4c..4c+3 of the W tile at depth kk.
var<workgroup> tile_w: array<vec4<f32>, SLICE * WG_X * WG_X>;

// A depth k of the implicit GEMM as kernel row, kernel column and input channel, and
// where it lies in the input from its window's top-left pixel.
struct Depth {
    kh: u32,
    kw: u32,
    ci: u32,
    offset: u32,
}

fn depth_at(kh: u32, kw: u32, ci: u32) -> Depth {
    return Depth(kh, kw, ci, (kh * p.in_w + kw) * p.in_c + ci);
}

fn depth_of(k: u32) -> Depth {
    return depth_at(k / (p.in_c * p.kernel_w), (k / p.in_c) % p.kernel_w, k % p.in_c);
}

// `d` advanced by `step` depths. With at least `step` channels ci wraps at most once, so
// step without dividing; with few channels (the RGB stem) divide instead of looping.
fn advance(d: Depth, k: u32, step: u32) -> Depth {
    if (p.in_c < step) {
        return depth_of(k + step);
    }
    var kh = d.kh;
    var kw = d.kw;
    var ci = d.ci + step;
    if (ci >= p.in_c) {
        ci = ci - p.in_c;
        kw = kw + 1u;
        if (kw == p.kernel_w) {
            kw = 0u;
            kh = kh + 1u;
        }
    }
    return depth_at(kh, kw, ci);
}

// Rows 4r..4r+3 of A at depth k (zero past K).
fn gather4(r0: RowOrigin, r1: RowOrigin, r2: RowOrigin, r3: RowOrigin, d: Depth, k: u32) -> vec4<f32> {
    if (k >= p.k) {
        return vec4<f32>(0.0);
    }
    return vec4<f32>(gather(r0, d), gather(r1, d), gather(r2, d), gather(r3, d));
}

// Where one output row reads its input: the offset of its window's top-left pixel (wrapped
// modulo 2^32 when that pixel lies in the padding: only in-bounds taps are read, and their
// offsets come out right) and its input coordinates (negative inside the padding). `valid`
// is false past the last row.
struct RowOrigin {
    pixel: u32,
    ih0: i32,
    iw0: i32,
    valid: bool,
}

// Whether this launch is a pointwise convolution (see is_pointwise), found once.
var<private> pointwise: bool;

fn row_origin(m: u32) -> RowOrigin {
    var o: RowOrigin;
    o.valid = m < p.m;
    let ow = m % p.out_w;
    let rest = m / p.out_w;
    let oh = rest % p.out_h;
    let n = rest / p.out_h;
    o.ih0 = i32(oh * p.stride) - i32(p.pad_h);
    o.iw0 = i32(ow * p.stride) - i32(p.pad_w);
    o.pixel = (n * p.in_h * p.in_w + bitcast<u32>(o.ih0) * p.in_w + bitcast<u32>(o.iw0)) * p.in_c;
    return o;
}

// Whether tap `d` of row `o` lies in the input: the row exists and, unless the convolution
// is pointwise (a one-pixel window, always inside), the tap is outside the padding.
fn inside(o: RowOrigin, d: Depth) -> bool {
    if (!o.valid || pointwise) {
        return o.valid;
    }
    let ih = o.ih0 + i32(d.kh);
    let iw = o.iw0 + i32(d.kw);
    return ih >= 0 && iw >= 0 && ih < i32(p.in_h) && iw < i32(p.in_w);
}

// One element of the implicit A matrix: zero in the padding and past the last row.
fn gather(o: RowOrigin, d: Depth) -> f32 {
    if (!inside(o, d)) {
        return 0.0;
    }
    return input[o.pixel + d.offset];
}

// Depths k..k+3 of one row of A (zero in the padding, past the last row or past K).
fn gather_vec4(o: RowOrigin, d: Depth, k: u32) -> vec4<f32> {
    if (k >= p.k || !inside(o, d)) {
        return vec4<f32>(0.0);
    }
    return input4[(o.pixel + d.offset) / 4u];
}

// With A_VEC4, invocation t stages depths 4q..4q+3 (q = t % quads, `quads` = slice depth / 4)
// of tile rows s = t / quads and s + `rows_apart` (the other half of the tile): two 16-byte
// loads where the scalar staging makes eight single loads, the row origins and the depth
// decomposition held for the whole K loop. Consecutive invocations read consecutive
// channels of one pixel.
struct VecStaging {
    row: u32,
    quad: u32,
    o0: RowOrigin,
    o1: RowOrigin,
}

fn vec_staging(tid: u32, row0: u32, quads: u32, rows_apart: u32) -> VecStaging {
    let row = tid / quads;
    return VecStaging(row, tid % quads, row_origin(row0 + row), row_origin(row0 + row + rows_apart));
}

fn stage_a4(v: VecStaging, d: Depth, k0: u32, rows_apart: u32, width: u32) {
    let k = k0 + 4u * v.quad;
    put_a4(4u * v.quad, v.row, width, gather_vec4(v.o0, d, k));
    put_a4(4u * v.quad, v.row + rows_apart, width, gather_vec4(v.o1, d, k));
}

fn load_w(k: u32, co: u32) -> f32 {
    if (k >= p.k || co >= p.out_c) {
        return 0.0;
    }
    return weight[k * p.out_c + co];
}

// Stages the W tile of `depths` depths from k0 and `vecs` runs of 4 output channels from
// co0: tile_w[kk * vecs + c] = W[k0 + kk, co0 + 4c..+3], shared by all invocations. With
// output channels in fours (every ResNet50 layer) a run is one 16-byte load, all in or
// all out (co0 is a multiple of 4).
fn stage_w(k0: u32, co0: u32, depths: u32, vecs: u32, tid: u32) {
    let whole_runs = p.out_c % 4u == 0u;
    for (var task = tid; task < depths * vecs; task = task + WG_X * WG_Y) {
        let c = task % vecs;
        let kk = task / vecs;
        let k = k0 + kk;
        let co = co0 + 4u * c;
        if (whole_runs) {
            var w = vec4<f32>(0.0);
            if (k < p.k && co < p.out_c) {
                w = weight4[(k * p.out_c + co) / 4u];
            }
            tile_w[kk * vecs + c] = w;
        } else {
            tile_w[kk * vecs + c] = vec4<f32>(load_w(k, co), load_w(k, co + 1u), load_w(k, co + 2u), load_w(k, co + 3u));
        }
    }
}

fn store(m: u32, co: u32, acc: f32) {
    if (m < p.m && co < p.out_c) {
        epilogue(m, co, acc);
    }
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
    pointwise = is_pointwise();
    let m = wid.y * 4u * WG_Y + 4u * lid.y;
    let co0 = wid.x * 4u * WG_X;
    let kt = SLICE * WG_X;
    // Scalar staging: this invocation's rows m..m+3 at depths k0 + lid.x and
    // k0 + lid.x + WG_X. Vector staging: see vec_staging.
    var r0: RowOrigin;
    var r1: RowOrigin;
    var r2: RowOrigin;
    var r3: RowOrigin;
    var da: Depth;
    var db: Depth;
    var vs: VecStaging;
    if (A_VEC4) {
        vs = vec_staging(tid, wid.y * 4u * WG_Y, kt / 4u, 2u * WG_Y);
        da = depth_of(4u * vs.quad);
    } else {
        r0 = row_origin(m);
        r1 = row_origin(m + 1u);
        r2 = row_origin(m + 2u);
        r3 = row_origin(m + 3u);
        da = depth_of(lid.x);
        db = depth_of(lid.x + WG_X);
    }

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 = k0 + kt) {
        if (A_VEC4) {
            stage_a4(vs, da, k0, 2u * WG_Y, WG_Y);
        } else {
            let ka = k0 + lid.x;
            tile_a[a_slot(lid.x, lid.y, WG_Y)] = gather4(r0, r1, r2, r3, da, ka);
            tile_a[a_slot(lid.x + WG_X, lid.y, WG_Y)] = gather4(r0, r1, r2, r3, db, ka + WG_X);
        }
        stage_w(k0, co0, kt, WG_X, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < kt; kk = kk + 1u) {
            let av = tile_a[a_slot(kk, lid.y, WG_Y)];
            let wv = tile_w[kk * WG_X + lid.x];
            acc0 = fma(vec4<f32>(av.x), wv, acc0);
            acc1 = fma(vec4<f32>(av.y), wv, acc1);
            acc2 = fma(vec4<f32>(av.z), wv, acc2);
            acc3 = fma(vec4<f32>(av.w), wv, acc3);
        }
        workgroupBarrier();
        if (A_VEC4) {
            da = advance(da, k0 + 4u * vs.quad, kt);
        } else {
            da = advance(da, k0 + lid.x, kt);
            db = advance(db, k0 + lid.x + WG_X, kt);
        }
    }

    let co = co0 + 4u * lid.x;
    store_row(m, co, acc0);
    store_row(m + 1u, co, acc1);
    store_row(m + 2u, co, acc2);
    store_row(m + 3u, co, acc3);
}

// Invocation (x, y) computes rows 8y..8y+7 of the tile and the columns 4x..4x+3 and
// 4(WG_X + x)..+3 (two runs of 4, so neighbouring invocations read and write neighbouring
// channels). tile_a[a_slot(kk, 2y + h, 2 WG_Y)] holds rows 8y + 4h..+3 at depth kk;
// tile_w[kk * 2 * WG_X + c] holds channels 4c..4c+3 at depth kk.
@compute @workgroup_size(WG_X, WG_Y)
fn main_8x8(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    pointwise = is_pointwise();
    let m = wid.y * 8u * WG_Y + 8u * lid.y;
    let co0 = wid.x * 8u * WG_X;
    var r0: RowOrigin;
    var r1: RowOrigin;
    var r2: RowOrigin;
    var r3: RowOrigin;
    var r4: RowOrigin;
    var r5: RowOrigin;
    var r6: RowOrigin;
    var r7: RowOrigin;
    var d: Depth;
    var vs: VecStaging;
    if (A_VEC4) {
        vs = vec_staging(tid, wid.y * 8u * WG_Y, WG_X / 4u, 4u * WG_Y);
        d = depth_of(4u * vs.quad);
    } else {
        r0 = row_origin(m);
        r1 = row_origin(m + 1u);
        r2 = row_origin(m + 2u);
        r3 = row_origin(m + 3u);
        r4 = row_origin(m + 4u);
        r5 = row_origin(m + 5u);
        r6 = row_origin(m + 6u);
        r7 = row_origin(m + 7u);
        d = depth_of(lid.x);
    }

    var acc = Block8x8();

    for (var k0 = 0u; k0 < p.k; k0 = k0 + WG_X) {
        if (A_VEC4) {
            stage_a4(vs, d, k0, 4u * WG_Y, 2u * WG_Y);
        } else {
            let ka = k0 + lid.x;
            tile_a[a_slot(lid.x, 2u * lid.y, 2u * WG_Y)] = gather4(r0, r1, r2, r3, d, ka);
            tile_a[a_slot(lid.x, 2u * lid.y + 1u, 2u * WG_Y)] = gather4(r4, r5, r6, r7, d, ka);
        }
        stage_w(k0, co0, WG_X, 2u * WG_X, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < WG_X; kk = kk + 1u) {
            let lo = tile_a[a_slot(kk, 2u * lid.y, 2u * WG_Y)];
            let hi = tile_a[a_slot(kk, 2u * lid.y + 1u, 2u * WG_Y)];
            let w0 = tile_w[kk * 2u * WG_X + lid.x];
            let w1 = tile_w[kk * 2u * WG_X + WG_X + lid.x];
            acc = fma_8x8(acc, lo, hi, w0, w1);
        }
        workgroupBarrier();
        d = advance(d, k0 + select(lid.x, 4u * vs.quad, A_VEC4), WG_X);
    }

    let col0 = co0 + 4u * lid.x;
    let col1 = co0 + 4u * (WG_X + lid.x);
    store_8x8(acc, m, col0, col1);
}
