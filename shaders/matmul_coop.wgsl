// Matrix multiply on the GPU's matrix units (tensor cores): C[M, N] = A[M, K] * B[K, N],
// with A and B rounded to f16 as they are staged and the products summed in f32, the
// "mixed precision" of tensor cores. A `coop_f16_*.wgsl` header, prepended, fixes the
// cooperative-matrix size COOP and the types LhsTile, RhsTile and AccTile.
//
// Layouts as in matmul.wgsl: A row-major M x K f32; B row-major K x N, or (B_TRANSPOSED)
// N x K, bound as words: f32 bits, or (B_F16) IEEE halves packed low-first; C row-major f32.
// Inputs must lie within f16's range (|x| <= 65504); smaller than 6.1e-5 they lose bits.
//
// A workgroup is SG_ROWS x SG_COLS subgroups of SUBGROUP invocations (the adapter's single
// subgroup size); each subgroup owns a (2 COOP) x (2 COOP) block of the output tile as four
// accumulator matrices. K advances in slices of TILE_K (a multiple of COOP): the whole
// workgroup stages the slice of A and of B in workgroup memory as f16, then each subgroup
// multiplies its two row strips by its two column strips. The accumulators leave through a
// per-subgroup f32 staging area, so partial edge tiles need no special cooperative store.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

override SUBGROUP: u32 = 32u;
override SG_ROWS: u32 = 2u;
override SG_COLS: u32 = 2u;
override TILE_K: u32 = 32u;
override B_TRANSPOSED: bool = false;
override B_F16: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// tile_a[r * TILE_K + kk] = A[row0 + r, k0 + kk].
var<workgroup> tile_a: array<f16, 2u * COOP * SG_ROWS * TILE_K>;
// tile_b[kk * tile_cols + j] = B[k0 + kk, col0 + j]; with B_TRANSPOSED, tile_b[j * TILE_K + kk]
// (the order B^T is read in).
var<workgroup> tile_b: array<f16, 2u * COOP * SG_COLS * TILE_K>;
// One COOP x COOP accumulator per subgroup on its way to C.
var<workgroup> staged: array<f32, SG_ROWS * SG_COLS * COOP * COOP>;

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
    if (B_F16) {
        let pair = unpack2x16float(b[at / 2u]);
        return select(pair.x, pair.y, (at & 1u) == 1u);
    }
    return bitcast<f32>(b[at]);
}

@compute @workgroup_size(SUBGROUP * SG_ROWS * SG_COLS)
fn main(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_id) subgroup: u32) {
    let threads = SUBGROUP * SG_ROWS * SG_COLS;
    let tile_rows = 2u * COOP * SG_ROWS;
    let tile_cols = 2u * COOP * SG_COLS;
    let row0 = wid.y * tile_rows;
    let col0 = wid.x * tile_cols;
    // This subgroup's block inside the tile.
    let block_row = (subgroup / SG_COLS) * 2u * COOP;
    let block_col = (subgroup % SG_COLS) * 2u * COOP;

    var c00 = AccTile();
    var c01 = AccTile();
    var c10 = AccTile();
    var c11 = AccTile();

    for (var k0 = 0u; k0 < p.k; k0 = k0 + TILE_K) {
        // Consecutive invocations read consecutive addresses: along K for A and B^T, along N
        // for B.
        for (var i = tid; i < tile_rows * TILE_K; i = i + threads) {
            tile_a[i] = f16(load_a(row0 + i / TILE_K, k0 + i % TILE_K));
        }
        for (var i = tid; i < tile_cols * TILE_K; i = i + threads) {
            if (B_TRANSPOSED) {
                tile_b[i] = f16(load_b(k0 + i % TILE_K, col0 + i / TILE_K));
            } else {
                tile_b[i] = f16(load_b(k0 + i / tile_cols, col0 + i % tile_cols));
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk = kk + COOP) {
            let a0 = coopLoadT<LhsTile>(&tile_a[block_row * TILE_K + kk], TILE_K);
            let a1 = coopLoadT<LhsTile>(&tile_a[(block_row + COOP) * TILE_K + kk], TILE_K);
            var b0 = RhsTile();
            var b1 = RhsTile();
            if (B_TRANSPOSED) {
                // Column j of the K x N slice starts at j * TILE_K: column-major.
                b0 = coopLoad<RhsTile>(&tile_b[block_col * TILE_K + kk], TILE_K);
                b1 = coopLoad<RhsTile>(&tile_b[(block_col + COOP) * TILE_K + kk], TILE_K);
            } else {
                b0 = coopLoadT<RhsTile>(&tile_b[kk * tile_cols + block_col], tile_cols);
                b1 = coopLoadT<RhsTile>(&tile_b[kk * tile_cols + block_col + COOP], tile_cols);
            }
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }

    // Accumulator q = 2 * (row strip) + (column strip) of every subgroup, one round each.
    for (var q = 0u; q < 4u; q = q + 1u) {
        var acc = c00;
        if (q == 1u) {
            acc = c01;
        } else if (q == 2u) {
            acc = c10;
        } else if (q == 3u) {
            acc = c11;
        }
        coopStoreT(acc, &staged[subgroup * COOP * COOP], COOP);
        workgroupBarrier();
        for (var i = tid; i < SG_ROWS * SG_COLS * COOP * COOP; i = i + threads) {
            let owner = i / (COOP * COOP);
            let e = i % (COOP * COOP);
            let row = row0 + (owner / SG_COLS) * 2u * COOP + (q / 2u) * COOP + e / COOP;
            let col = col0 + (owner % SG_COLS) * 2u * COOP + (q % 2u) * COOP + e % COOP;
            if (row < p.m && col < p.n) {
                c[row * p.n + col] = staged[i];
            }
        }
        workgroupBarrier();
    }
}
