// 2-D convolution on the GPU's matrix units (tensor cores): conv2d.wgsl's implicit GEMM
//   out[m, co] = epilogue( sum_k A[m, k] * W[k, co] ),
//   m = (n, oh, ow), k = (kh, kw, ci), A gathered from the NHWC input, W HWIO (K x Cout),
// with A and W rounded to f16 as they are staged and summed in f32. Composed after a
// `coop_f16_*.wgsl` header, coop_gemm.wgsl (tiles, K loop, matrix products) and
// conv2d_io.wgsl (uniform, bindings, epilogue). Inputs must lie within f16's range
// (|x| <= 65504).

fn gemm_size() -> vec3<u32> {
    return vec3<u32>(p.m, p.out_c, p.k);
}

// row_info[r]: where tile row r reads its input, found once per workgroup: (offset of its
// image, top-left input row, top-left input column, 1 if the row exists), coordinates as
// i32 bits.
fn begin_tile(row0: u32, col0: u32, tid: u32) {
    for (var r = tid; r < tile_rows(); r = r + threads()) {
        let m = row0 + r;
        let ow = m % p.out_w;
        let rest = m / p.out_w;
        let oh = rest % p.out_h;
        let n = rest / p.out_h;
        let ih0 = i32(oh * p.stride) - i32(p.pad_h);
        let iw0 = i32(ow * p.stride) - i32(p.pad_w);
        row_info[r] = vec4<u32>(n * p.in_h * p.in_w * p.in_c, bitcast<u32>(ih0), bitcast<u32>(iw0), select(0u, 1u, m < p.m));
    }
}

// Where the input has a multiple of 4 channels, invocation t stages depths
// 4 (t % (TILE_K / 4))..+3 of rows t / (TILE_K / 4), + threads() / (TILE_K / 4), ...: the
// four share their kernel tap and are adjacent in memory. Otherwise (the RGB stem) it
// stages depth t % TILE_K of rows t / TILE_K, + threads() / TILE_K, ... The host makes
// threads() a multiple of TILE_K, so an invocation's (kh, kw, ci) is divided out once per
// slice, and consecutive invocations read consecutive channels.
fn stage_slice(k0: u32, row0: u32, col0: u32, tid: u32) {
    let pointwise = is_pointwise();
    let width = select(1u, 4u, p.in_c % 4u == 0u);
    let lanes = TILE_K / width;
    let kk = width * (tid % lanes);
    let k = k0 + kk;
    let kh = k / (p.in_c * p.kernel_w);
    let kw = (k / p.in_c) % p.kernel_w;
    let ci = k % p.in_c;
    for (var r = tid / lanes; r < tile_rows(); r = r + threads() / lanes) {
        // Offset of input[m, k] (pointwise) or of the tap's channel ci, if it exists; k
        // and K are multiples of `width`, so all `width` depths exist or none.
        var at = 0u;
        var inside = false;
        if (pointwise) {
            let m = row0 + r;
            inside = k < p.k && m < p.m;
            at = m * p.in_c + k;
        } else {
            let o = row_info[r];
            let ih = bitcast<i32>(o.y) + i32(kh);
            let iw = bitcast<i32>(o.z) + i32(kw);
            inside = k < p.k && o.w == 1u && ih >= 0 && iw >= 0 && ih < i32(p.in_h) && iw < i32(p.in_w);
            at = o.x + (u32(ih) * p.in_w + u32(iw)) * p.in_c + ci;
        }
        let slot = r * TILE_K + kk;
        if (width == 4u) {
            var x = vec4<f32>(0.0);
            if (inside) {
                x = input4[at / 4u];
            }
            put_a4(slot, x);
        } else {
            var x = 0.0;
            if (inside) {
                x = input[at];
            }
            tile_a[slot] = f16(x);
        }
    }
    // W rows are read along the output channels: four at a time where their count allows
    // (tile columns start at multiples of 4, so a run of four is all in or all out).
    if (p.out_c % 4u == 0u) {
        for (var i = 4u * tid; i < tile_cols() * TILE_K; i = i + 4u * threads()) {
            let w_row = k0 + i / tile_cols();
            let co = col0 + i % tile_cols();
            var w = vec4<f32>(0.0);
            if (w_row < p.k && co < p.out_c) {
                w = weight4[(w_row * p.out_c + co) / 4u];
            }
            put_b4(i, w);
        }
    } else {
        for (var i = tid; i < tile_cols() * TILE_K; i = i + threads()) {
            let w_row = k0 + i / tile_cols();
            let co = col0 + i % tile_cols();
            var w = 0.0;
            if (w_row < p.k && co < p.out_c) {
                w = weight[w_row * p.out_c + co];
            }
            tile_b[i] = f16(w);
        }
    }
}

fn finish(m: u32, co: u32, acc: f32) {
    epilogue(m, co, acc);
}
