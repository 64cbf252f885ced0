// Tiled, register-blocked f32 matrix multiply: C[M, N] = A[M, K] * B[K, N].
//
// A is row-major M x K. B is row-major K x N, or, with B_TRANSPOSED, row-major N x K
// (the layout of a reference matrix whose rows are vectors: scores = queries * refs^T).
// B is bound as raw words: f32 bit patterns, or, with B_F16, pairs of IEEE halves packed
// low-first (unpack2x16float works on every adapter; SHADER_F16 is not needed).
// Each workgroup computes a (4*WG_Y) x (4*WG_X) tile of C; each invocation a 4x4 block in
// four vec4 accumulators. Tiles of depth TILE_K are staged in workgroup memory.
// `main_8x8`: 8x8 blocks (16 vec4 accumulators), a (8*WG_Y) x (8*WG_X) tile, depth
// TILE_K / 2 per slice (the same workgroup memory): half the workgroup-memory reads per FMA.
// fma_tile.wgsl, appended, holds the A tile's slots.

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
// A and B again as 16-byte vectors (B as words), for slices read four f32 (or eight f16)
// values per load where the shapes allow: one load and one bounds check instead of four
// (or eight). A run starts at a multiple of its length inside a dimension that is a
// multiple of it, so it is all in bounds or all out. The host binds a placeholder where a
// buffer is smaller than one vector; its shapes then never allow it.
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<u32>>;

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

// Stages A rows row0.. (`rows`, a multiple of 4) at depths k0..k0 + depths four depths per
// load, where K and the slice allow; false (nothing staged) where they do not. Consecutive
// invocations read consecutive addresses of one row.
fn stage_a4(row0: u32, k0: u32, rows: u32, depths: u32, tid: u32) -> bool {
    if (p.k % 4u != 0u || depths % 4u != 0u) {
        return false;
    }
    let quads = depths / 4u;
    for (var task = tid; task < rows * quads; task = task + WG_X * WG_Y) {
        let r = task / quads;
        let q = task % quads;
        let row = row0 + r;
        let k = k0 + 4u * q;
        var x = vec4<f32>(0.0);
        if (row < p.m && k < p.k) {
            x = a4[(row * p.k + k) / 4u];
        }
        put_a4(4u * q, r, rows / 4u, x);
    }
    return true;
}

// Slot of columns 4c..4c+3 at depth kk in tile_b (rows of `width` vec4s). Invocations that
// stage B^T each store a different run of depths of one column; XORing the slot with
// kk / 4 spreads their stores over the banks of a GPU's shared memory, and readers, who
// share kk, still read a permutation of one row.
fn b_slot(kk: u32, c: u32, width: u32) -> u32 {
    let mask = select(0u, min(width, 8u) - 1u, (width & (width - 1u)) == 0u);
    return kk * width + (c ^ ((kk / 4u) & mask));
}

// Stores depths kk..kk+3 of tile column j: one component of four slots.
fn put_b4(kk: u32, j: u32, width: u32, x: vec4<f32>) {
    let pos = j / 4u;
    let lane = j % 4u;
    tile_b[b_slot(kk, pos, width)][lane] = x.x;
    tile_b[b_slot(kk + 1u, pos, width)][lane] = x.y;
    tile_b[b_slot(kk + 2u, pos, width)][lane] = x.z;
    tile_b[b_slot(kk + 3u, pos, width)][lane] = x.w;
}

// tile_b[b_slot(kk, c, vecs)] = B[k0 + kk, col0 + 4c..+3], shared by all invocations:
// 16-byte loads along B^T's rows (eight halves, or four f32) or B's (four f32) where the
// shapes allow, else one value per load.
fn stage_b(k0: u32, col0: u32, depths: u32, vecs: u32, tid: u32) {
    let cols = 4u * vecs;
    if (B_TRANSPOSED && B_F16 && p.k % 8u == 0u && depths % 8u == 0u) {
        // The f16 scan: eight halves of one reference row per load.
        let runs = depths / 8u;
        for (var task = tid; task < cols * runs; task = task + WG_X * WG_Y) {
            let j = task / runs;
            let kk = 8u * (task % runs);
            var words = vec4<u32>(0u);
            if (col0 + j < p.n && k0 + kk < p.k) {
                words = b4[((col0 + j) * p.k + k0 + kk) / 8u];
            }
            put_b4(kk, j, vecs, vec4<f32>(unpack2x16float(words.x), unpack2x16float(words.y)));
            put_b4(kk + 4u, j, vecs, vec4<f32>(unpack2x16float(words.z), unpack2x16float(words.w)));
        }
        return;
    }
    if (B_TRANSPOSED && !B_F16 && p.k % 4u == 0u && depths % 4u == 0u) {
        let runs = depths / 4u;
        for (var task = tid; task < cols * runs; task = task + WG_X * WG_Y) {
            let j = task / runs;
            let kk = 4u * (task % runs);
            var x = vec4<f32>(0.0);
            if (col0 + j < p.n && k0 + kk < p.k) {
                x = bitcast<vec4<f32>>(b4[((col0 + j) * p.k + k0 + kk) / 4u]);
            }
            put_b4(kk, j, vecs, x);
        }
        return;
    }
    if (!B_TRANSPOSED && !B_F16 && p.n % 4u == 0u) {
        for (var task = tid; task < depths * vecs; task = task + WG_X * WG_Y) {
            let cq = task % vecs;
            let kk = task / vecs;
            let col = col0 + 4u * cq;
            var x = vec4<f32>(0.0);
            if (k0 + kk < p.k && col < p.n) {
                x = bitcast<vec4<f32>>(b4[((k0 + kk) * p.n + col) / 4u]);
            }
            tile_b[b_slot(kk, cq, vecs)] = x;
        }
        return;
    }
    for (var task = tid; task < depths * vecs; task = task + WG_X * WG_Y) {
        var kk: u32;
        var cq: u32;
        if (B_TRANSPOSED) {
            // Contiguous along K in B^T.
            kk = task % depths;
            cq = task / depths;
        } else {
            // Contiguous along N in B.
            cq = task % vecs;
            kk = task / vecs;
        }
        let k = k0 + kk;
        let col = col0 + 4u * cq;
        tile_b[b_slot(kk, cq, vecs)] = vec4<f32>(load_b(k, col), load_b(k, col + 1u), load_b(k, col + 2u), load_b(k, col + 3u));
    }
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
        if (!stage_a4(row0, k0, 4u * WG_Y, TILE_K, tid)) {
            for (var kk = lid.x; kk < TILE_K; kk = kk + WG_X) {
                let k = k0 + kk;
                tile_a[a_slot(kk, lid.y, WG_Y)] = vec4<f32>(load_a(row, k), load_a(row + 1u, k),
                                                      load_a(row + 2u, k), load_a(row + 3u, k));
            }
        }
        stage_b(k0, col0, TILE_K, WG_X, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk = kk + 1u) {
            let av = tile_a[a_slot(kk, lid.y, WG_Y)];
            let bv = tile_b[b_slot(kk, lid.x, WG_X)];
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

// Invocation (x, y) computes rows 8y..8y+7 and the columns 4x..4x+3 and 4(WG_X + x)..+3.
// tile_a[a_slot(kk, 2y + h, 2 WG_Y)] holds rows 8y + 4h..+3 at depth kk.
@compute @workgroup_size(WG_X, WG_Y)
fn main_8x8(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let tk = TILE_K / 2u;
    let row = wid.y * 8u * WG_Y + 8u * lid.y;
    let col0 = wid.x * 8u * WG_X;

    var acc = Block8x8();

    for (var k0 = 0u; k0 < p.k; k0 = k0 + tk) {
        if (!stage_a4(wid.y * 8u * WG_Y, k0, 8u * WG_Y, tk, tid)) {
            for (var kk = lid.x; kk < tk; kk = kk + WG_X) {
                let k = k0 + kk;
                tile_a[a_slot(kk, 2u * lid.y, 2u * WG_Y)] = vec4<f32>(load_a(row, k), load_a(row + 1u, k), load_a(row + 2u, k), load_a(row + 3u, k));
                tile_a[a_slot(kk, 2u * lid.y + 1u, 2u * WG_Y)] = vec4<f32>(load_a(row + 4u, k), load_a(row + 5u, k), load_a(row + 6u, k), load_a(row + 7u, k));
            }
        }
        stage_b(k0, col0, tk, 2u * WG_X, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < tk; kk = kk + 1u) {
            let lo = tile_a[a_slot(kk, 2u * lid.y, 2u * WG_Y)];
            let hi = tile_a[a_slot(kk, 2u * lid.y + 1u, 2u * WG_Y)];
            let w0 = tile_b[b_slot(kk, lid.x, 2u * WG_X)];
            let w1 = tile_b[b_slot(kk, WG_X + lid.x, 2u * WG_X)];
            acc = fma_8x8(acc, lo, hi, w0, w1);
        }
        workgroupBarrier();
    }

    let col_a = col0 + 4u * lid.x;
    let col_b = col0 + 4u * (WG_X + lid.x);
    store_8x8(acc, row, col_a, col_b);
}
