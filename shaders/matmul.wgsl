// Tiled, register-blocked f32 matrix multiply: C[M, N] = A[M, K] * B[K, N].
//
// A is row-major M x K. B is row-major K x N, or, with B_TRANSPOSED, row-major N x K
// (the layout of a reference matrix whose rows are vectors: scores = queries * refs^T).
// B is bound as raw words: f32 bit patterns, or, with B_F16, pairs of IEEE halves packed
// low-first (unpack2x16float works on every adapter; SHADER_F16 is not needed).
// Each workgroup computes a (4*WG_Y) x (4*WG_X) tile of C; each invocation a 4x4 block in
// four vec4 accumulators. Tiles of depth TILE_K are staged in workgroup memory.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
override B_TRANSPOSED: bool = false;
override B_F16: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> tile_a: array<vec4<f32>, TILE_K * WG_Y>;
var<workgroup> tile_b: array<vec4<f32>, TILE_K * WG_X>;

fn load_a(row: u32, k: u32) -> f32 {
    if (row >= p.m || k >= p.k) {
        return 0.0;
    }
    return a[row * p.k + k];
}

fn b_element(at: u32) -> f32 {
    if (B_F16) {
        let pair = unpack2x16float(b[at / 2u]);
        return select(pair.x, pair.y, (at & 1u) == 1u);
    }
    return bitcast<f32>(b[at]);
}

fn load_b(k: u32, col: u32) -> f32 {
    if (k >= p.k || col >= p.n) {
        return 0.0;
    }
    if (B_TRANSPOSED) {
        return b_element(col * p.k + k);
    }
    return b_element(k * p.n + col);
}

fn store_row(row: u32, col: u32, acc: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    let at = row * p.n + col;
    if (col < p.n) { c[at] = acc.x; }
    if (col + 1u < p.n) { c[at + 1u] = acc.y; }
    if (col + 2u < p.n) { c[at + 2u] = acc.z; }
    if (col + 3u < p.n) { c[at + 3u] = acc.w; }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let threads = WG_X * WG_Y;
    let row0 = wid.y * 4u * WG_Y;
    let col0 = wid.x * 4u * WG_X;

    let row = row0 + 4u * lid.y;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 = k0 + TILE_K) {
        // Invocation (x, y) stages depths x, x + WG_X, ... of its own four rows: consecutive
        // invocations read consecutive addresses of a row, and no index is divided.
        for (var kk = lid.x; kk < TILE_K; kk = kk + WG_X) {
            let k = k0 + kk;
            tile_a[kk * WG_Y + lid.y] = vec4<f32>(load_a(row, k), load_a(row + 1u, k),
                                                  load_a(row + 2u, k), load_a(row + 3u, k));
        }
        for (var task = tid; task < TILE_K * WG_X; task = task + threads) {
            var kk: u32;
            var cq: u32;
            if (B_TRANSPOSED) {
                // Contiguous along K in B^T.
                kk = task % TILE_K;
                cq = task / TILE_K;
            } else {
                // Contiguous along N in B.
                cq = task % WG_X;
                kk = task / WG_X;
            }
            let k = k0 + kk;
            let col = col0 + 4u * cq;
            tile_b[kk * WG_X + cq] = vec4<f32>(load_b(k, col), load_b(k, col + 1u),
                                               load_b(k, col + 2u), load_b(k, col + 3u));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk = kk + 1u) {
            let av = tile_a[kk * WG_Y + lid.y];
            let bv = tile_b[kk * WG_X + lid.x];
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
        }
        workgroupBarrier();
    }

    let col = col0 + 4u * lid.x;
    store_row(row, col, acc0);
    store_row(row + 1u, col, acc1);
    store_row(row + 2u, col, acc2);
    store_row(row + 3u, col, acc3);
}
