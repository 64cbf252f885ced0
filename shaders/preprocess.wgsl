// Image preprocessing, the GPU twin of src/cpu/preprocess.rs: resize the shorter side with
// antialiased bilinear taps, centre-crop, normalise per channel, into one slot of an NHWC
// f32 batch. Only the crop window is computed, in the CPU's two separable passes:
//
//   horizontal: scratch[r, x, c] = sum_j wh[x, j] * unit[pixel(r, hstart[x] + j, c)]
//               for every uploaded source row r and every crop column x
//   vertical:   output[y, x, c] = (sum_j wv[y, j] * scratch[vstart[y] + j, x, c] - mean[c]) / std[c]
//               for every crop row y
//
// The taps (start, count, weights) come from the CPU's `bilinear_taps`, already cut to the
// crop window; vertical starts count from the first uploaded row. An image whose shorter
// side is already the target gets identity taps (one weight of exactly 1.0), which give back
// u8 / 255 exactly. Each sum runs over j in ascending order with a separate multiply and
// add, as the CPU does, so the two agree bit for bit where the driver does not fuse them.
//
// Pixels are RGB8 packed four bytes to a u32 (little-endian). Bytes become [0, 1] through
// `unit`, the CPU's `u8 as f32 / 255.0` for all 256 values: GPU division need not be
// correctly rounded, a table lookup is exact everywhere.

struct Params {
    in_w: u32,         // source row length in pixels
    crop: u32,
    pixel_offset: u32, // byte offset of this image's first uploaded row in `pixels`
    out_offset: u32,   // f32 offset of this image's slot in `output`
    h_spans: u32,      // offset of the horizontal (start, count) pairs in `spans`
    h_weights: u32,    // offset of the horizontal weights in `weights`
    h_max_taps: u32,   // row stride of the horizontal weights
    h_len: u32,        // horizontal outputs: uploaded rows * crop * 3
    v_spans: u32,
    v_weights: u32,
    v_max_taps: u32,
    v_len: u32,        // vertical outputs: crop * crop * 3
    mean: vec4<f32>,   // R, G, B, unused
    std_dev: vec4<f32>, // R, G, B, unused (1)
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pixels: array<u32>;
@group(0) @binding(2) var<storage, read> unit: array<f32, 256>;
@group(0) @binding(3) var<storage, read> spans: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> output: array<f32>;

fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

// Byte `index` of `pixels`, as a [0, 1] sample.
fn sample(index: u32) -> f32 {
    return unit[(pixels[index >> 2u] >> ((index & 3u) * 8u)) & 0xffu];
}

@compute @workgroup_size(WG)
fn horizontal(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.h_len) {
        return;
    }
    let c = i % 3u;
    let x = (i / 3u) % p.crop;
    let r = i / (3u * p.crop);
    let span = spans[p.h_spans + x];
    let first = p.pixel_offset + (r * p.in_w + span.x) * 3u + c;
    let w = p.h_weights + x * p.h_max_taps;
    var sum = 0.0;
    for (var j = 0u; j < span.y; j = j + 1u) {
        sum = sum + weights[w + j] * sample(first + 3u * j);
    }
    scratch[i] = sum;
}

@compute @workgroup_size(WG)
fn vertical(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.v_len) {
        return;
    }
    let row_len = 3u * p.crop;
    let column = i % row_len; // x * 3 + c
    let c = i % 3u;
    let y = i / row_len;
    let span = spans[p.v_spans + y];
    let w = p.v_weights + y * p.v_max_taps;
    var sum = 0.0;
    for (var j = 0u; j < span.y; j = j + 1u) {
        sum = sum + weights[w + j] * scratch[(span.x + j) * row_len + column];
    }
    output[p.out_offset + i] = (sum - p.mean[c]) / p.std_dev[c];
}
