// Matrix multiply on the GPU's matrix units (tensor cores): C[M, N] = A[M, K] * B[K, N],
// with A and B rounded to f16 as they are staged and the products summed in f32, the
// "mixed precision" of tensor cores. Composed after a `coop_f16_*.wgsl` header and
// coop_gemm.wgsl, which holds the tiles, the K loop and the matrix products. It declares
// no override of its own (naga wants every override declared before the arrays they size).
//
// Layouts as in matmul.wgsl: A row-major M x K f32; B row-major K x N, or (B_TRANSPOSED)
// N x K, bound as words: f32 bits, or (b_f16) IEEE halves packed low-first; C row-major f32.
// Inputs must lie within f16's range (|x| <= 65504); below 6.1e-5 they lose bits.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    b_f16: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn gemm_size() -> vec3<u32> {
    return vec3<u32>(p.m, p.n, p.k);
}

fn begin_tile(row0: u32, col0: u32, tid: u32) {}

fn load_a(row: u32, k: u32) -> f32 {
    if (row >= p.m || k >= p.k) {
        return 0.0;
    }
    return a[row * p.k + k];
}

fn load_b(k: u32, col: u32) -> f32 {
    if (k >= p.k || col >= p.n) {
        return 0.0;
    }
    var at = k * p.n + col;
    if (B_TRANSPOSED) {
        at = col * p.k + k;
    }
    if (p.b_f16 == 1u) {
        let pair = unpack2x16float(b[at / 2u]);
        return select(pair.x, pair.y, (at & 1u) == 1u);
    }
    return bitcast<f32>(b[at]);
}

// A and B again as 16-byte vectors (B as words), for slices read four f32 (or eight f16)
// values at a time where the shapes allow: one load and one bounds check instead of four
// (or eight).
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<u32>>;

// Consecutive invocations read consecutive addresses: along K for A and B^T, along N for B.
// A run of 4 (or 8) starts at a multiple of its length inside a dimension that is a
// multiple of it, so it is all in bounds or all out.
fn stage_slice(k0: u32, row0: u32, col0: u32, tid: u32) {
    if (p.k % 4u == 0u) {
        for (var i = 4u * tid; i < tile_rows() * TILE_K; i = i + 4u * threads()) {
            let row = row0 + i / TILE_K;
            let k = k0 + i % TILE_K;
            var x = vec4<f32>(0.0);
            if (row < p.m && k < p.k) {
                x = a4[(row * p.k + k) / 4u];
            }
            put_a4(i, x);
        }
    } else {
        for (var i = tid; i < tile_rows() * TILE_K; i = i + threads()) {
            tile_a[i] = f16(load_a(row0 + i / TILE_K, k0 + i % TILE_K));
        }
    }
    if (B_TRANSPOSED && p.b_f16 == 1u && p.k % 8u == 0u) {
        // Eight halves of one reference row per load (the f16 scan).
        for (var i = 8u * tid; i < tile_cols() * TILE_K; i = i + 8u * threads()) {
            let col = col0 + i / TILE_K;
            let k = k0 + i % TILE_K;
            var words = vec4<u32>(0u);
            if (col < p.n && k < p.k) {
                words = b4[(col * p.k + k) / 8u];
            }
            let lo = vec4<f32>(unpack2x16float(words.x), unpack2x16float(words.y));
            let hi = vec4<f32>(unpack2x16float(words.z), unpack2x16float(words.w));
            put_b4(i, lo);
            put_b4(i + 4u, hi);
        }
    } else if (p.b_f16 == 0u && ((B_TRANSPOSED && p.k % 4u == 0u) || (!B_TRANSPOSED && p.n % 4u == 0u))) {
        for (var i = 4u * tid; i < tile_cols() * TILE_K; i = i + 4u * threads()) {
            var col = col0 + i % tile_cols();
            var k = k0 + i / tile_cols();
            var at = k * p.n + col;
            if (B_TRANSPOSED) {
                col = col0 + i / TILE_K;
                k = k0 + i % TILE_K;
                at = col * p.k + k;
            }
            var x = vec4<f32>(0.0);
            if (col < p.n && k < p.k) {
                x = bitcast<vec4<f32>>(b4[at / 4u]);
            }
            put_b4(i, x);
        }
    } else {
        for (var i = tid; i < tile_cols() * TILE_K; i = i + threads()) {
            if (B_TRANSPOSED) {
                tile_b[i] = f16(load_b(k0 + i % TILE_K, col0 + i / TILE_K));
            } else {
                tile_b[i] = f16(load_b(k0 + i / tile_cols(), col0 + i % tile_cols()));
            }
        }
    }
}

fn finish(row: u32, col: u32, value: f32) {
    c[row * p.n + col] = value;
}
