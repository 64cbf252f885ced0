// The GEMM skeleton on matrix units shared by matmul_coop.wgsl and conv2d_coop.wgsl:
// out[M, N] = A[M, K] * B[K, N] with A and B staged as f16 in workgroup memory and summed
// in f32. Composed as: a `coop_f16_*.wgsl` header (COOP and the matrix types), this file,
// then the problem file, which supplies
//   fn gemm_size() -> vec3<u32>                  M, N, K
//   fn begin_tile(row0, col0, tid)               once per workgroup, before the K loop
//   fn stage_slice(k0, row0, col0, tid)          fills tile_a and tile_b for depths k0..
//   fn finish(row, col, value)                   one output (row < M, col < N)
// and calls no barrier itself: this file places them.
//
// A workgroup is SG_ROWS x SG_COLS subgroups of SUBGROUP invocations (the adapter's single
// subgroup size); each subgroup owns a (2 COOP) x (2 COOP) block of the output tile as four
// accumulator matrices. K advances in slices of TILE_K (a multiple of COOP). The
// accumulators leave through a per-subgroup f32 staging area, so edge tiles need no
// special cooperative store and `finish` sees plain values.

override SUBGROUP: u32 = 32u;
override SG_ROWS: u32 = 2u;
override SG_COLS: u32 = 2u;
override TILE_K: u32 = 32u;
// B staged column by column (tile_b[j * TILE_K + kk]) instead of row by row.
override B_TRANSPOSED: bool = false;

// tile_a[r * TILE_K + kk] = A[row0 + r, k0 + kk].
var<workgroup> tile_a: array<f16, 2u * COOP * SG_ROWS * TILE_K>;
// tile_b[kk * tile_cols() + j] = B[k0 + kk, col0 + j], or with B_TRANSPOSED
// tile_b[j * TILE_K + kk].
var<workgroup> tile_b: array<f16, 2u * COOP * SG_COLS * TILE_K>;
// Per tile row, for the problem file's begin_tile to record what stage_slice needs. Here
// rather than there, and problem files declare no overrides: naga 30 mishandles an
// override declared after an array whose size uses overrides.
var<workgroup> row_info: array<vec4<u32>, 2u * COOP * SG_ROWS>;
// One COOP x COOP accumulator per subgroup on its way out.
var<workgroup> staged: array<f32, SG_ROWS * SG_COLS * COOP * COOP>;

// Four values, rounded to f16, into tile_a or tile_b from `at` on (the problem files' 16-byte
// staging).
fn put_a4(at: u32, x: vec4<f32>) {
    tile_a[at] = f16(x.x);
    tile_a[at + 1u] = f16(x.y);
    tile_a[at + 2u] = f16(x.z);
    tile_a[at + 3u] = f16(x.w);
}

fn put_b4(at: u32, x: vec4<f32>) {
    tile_b[at] = f16(x.x);
    tile_b[at + 1u] = f16(x.y);
    tile_b[at + 2u] = f16(x.z);
    tile_b[at + 3u] = f16(x.w);
}

fn threads() -> u32 {
    return SUBGROUP * SG_ROWS * SG_COLS;
}

fn tile_rows() -> u32 {
    return 2u * COOP * SG_ROWS;
}

fn tile_cols() -> u32 {
    return 2u * COOP * SG_COLS;
}

@compute @workgroup_size(SUBGROUP * SG_ROWS * SG_COLS)
fn main(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(subgroup_id) subgroup: u32) {
    let size = gemm_size();
    let row0 = wid.y * tile_rows();
    let col0 = wid.x * tile_cols();
    // This subgroup's block inside the tile.
    let block_row = (subgroup / SG_COLS) * 2u * COOP;
    let block_col = (subgroup % SG_COLS) * 2u * COOP;
    begin_tile(row0, col0, tid);
    workgroupBarrier();

    var c00 = AccTile();
    var c01 = AccTile();
    var c10 = AccTile();
    var c11 = AccTile();
    for (var k0 = 0u; k0 < size.z; k0 = k0 + TILE_K) {
        stage_slice(k0, row0, col0, tid);
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
                b0 = coopLoadT<RhsTile>(&tile_b[kk * tile_cols() + block_col], tile_cols());
                b1 = coopLoadT<RhsTile>(&tile_b[kk * tile_cols() + block_col + COOP], tile_cols());
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
        for (var i = tid; i < SG_ROWS * SG_COLS * COOP * COOP; i = i + threads()) {
            let owner = i / (COOP * COOP);
            let e = i % (COOP * COOP);
            let row = row0 + (owner / SG_COLS) * 2u * COOP + (q / 2u) * COOP + e / COOP;
            let col = col0 + (owner % SG_COLS) * 2u * COOP + (q % 2u) * COOP + e % COOP;
            if (row < size.x && col < size.y) {
                finish(row, col, staged[i]);
            }
        }
        workgroupBarrier();
    }
}
