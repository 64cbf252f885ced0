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

// Invocation t stages depth t % TILE_K of rows t / TILE_K, + threads() / TILE_K, ... (the
// host makes threads() a multiple of TILE_K), so its (kh, kw, ci) is divided out once per
// slice and consecutive invocations read consecutive channels.
fn stage_slice(k0: u32, row0: u32, col0: u32, tid: u32) {
    let kk = tid % TILE_K;
    let k = k0 + kk;
    let kh = k / (p.in_c * p.kernel_w);
    let kw = (k / p.in_c) % p.kernel_w;
    let ci = k % p.in_c;
    // A 1x1 stride-1 convolution (half of ResNet50's work) reads its NHWC input as the
    // M x Cin matrix A itself: no window, no padding.
    let pointwise = p.kernel_h == 1u && p.kernel_w == 1u && p.stride == 1u && p.pad_h == 0u && p.pad_w == 0u;
    for (var r = tid / TILE_K; r < tile_rows(); r = r + threads() / TILE_K) {
        var x = 0.0;
        if (pointwise) {
            let m = row0 + r;
            if (k < p.k && m < p.m) {
                x = input[m * p.in_c + k];
            }
        } else {
            let o = row_info[r];
            let ih = bitcast<i32>(o.y) + i32(kh);
            let iw = bitcast<i32>(o.z) + i32(kw);
            if (k < p.k && o.w == 1u && ih >= 0 && iw >= 0 && ih < i32(p.in_h) && iw < i32(p.in_w)) {
                x = input[o.x + (u32(ih) * p.in_w + u32(iw)) * p.in_c + ci];
            }
        }
        tile_a[r * TILE_K + kk] = f16(x);
    }
    for (var i = tid; i < tile_cols() * TILE_K; i = i + threads()) {
        let kw_row = k0 + i / tile_cols();
        let co = col0 + i % tile_cols();
        var w = 0.0;
        if (kw_row < p.k && co < p.out_c) {
            w = weight[kw_row * p.out_c + co];
        }
        tile_b[i] = f16(w);
    }
}

fn finish(m: u32, co: u32, acc: f32) {
    epilogue(m, co, acc);
}
