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

// Consecutive invocations read consecutive addresses: along K for A and B^T, along N for B.
fn stage_slice(k0: u32, row0: u32, col0: u32, tid: u32) {
    for (var i = tid; i < tile_rows() * TILE_K; i = i + threads()) {
        tile_a[i] = f16(load_a(row0 + i / TILE_K, k0 + i % TILE_K));
    }
    for (var i = tid; i < tile_cols() * TILE_K; i = i + threads()) {
        if (B_TRANSPOSED) {
            tile_b[i] = f16(load_b(k0 + i % TILE_K, col0 + i / TILE_K));
        } else {
            tile_b[i] = f16(load_b(k0 + i / tile_cols(), col0 + i % tile_cols()));
        }
    }
}

fn finish(row: u32, col: u32, value: f32) {
    c[row * p.n + col] = value;
}
