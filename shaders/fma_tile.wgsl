// What the f32 FMA kernels (conv2d.wgsl, matmul.wgsl) share, appended to each of them:
// the A tile's layout, and the 8x8 block of outputs that each invocation of `main_8x8`
// accumulates. `tile_a` (declared there, an array of vec4<f32>) holds at depth kk rows of
// `width` vec4s, each the same depth of four consecutive tile rows; `store_row(row, col,
// vec4)` (defined there) writes four outputs of one row.

// Slot of entry `pos` of an A-tile row at depth `kk` (rows of `width` entries). The staging
// invocations of one pass each store a different depth at the same `pos`, which without
// the XOR would put eight neighbouring invocations' 16-byte stores in the same banks of a
// GPU's shared memory; readers all share one `kk`, so their loads stay broadcasts.
// `width` must be a power of two for the XOR to stay inside the row (otherwise no swizzle).
fn a_slot(kk: u32, pos: u32, width: u32) -> u32 {
    let mask = select(0u, min(width, 8u) - 1u, (width & (width - 1u)) == 0u);
    return kk * width + (pos ^ (kk & mask));
}

// Stores depths kk..kk+3 of tile row `row` (rows of `width` vec4s, four rows each): one
// component of four slots.
fn put_a4(kk: u32, row: u32, width: u32, x: vec4<f32>) {
    let pos = row / 4u;
    let lane = row % 4u;
    tile_a[a_slot(kk, pos, width)][lane] = x.x;
    tile_a[a_slot(kk + 1u, pos, width)][lane] = x.y;
    tile_a[a_slot(kk + 2u, pos, width)][lane] = x.z;
    tile_a[a_slot(kk + 3u, pos, width)][lane] = x.w;
}

// An invocation's 8x8 outputs: rows r = 0..7, columns in two runs of four (`cR0`, `cR1`).
// Named vectors, not an array, so that they stay in registers.
struct Block8x8 {
    c00: vec4<f32>, c01: vec4<f32>,
    c10: vec4<f32>, c11: vec4<f32>,
    c20: vec4<f32>, c21: vec4<f32>,
    c30: vec4<f32>, c31: vec4<f32>,
    c40: vec4<f32>, c41: vec4<f32>,
    c50: vec4<f32>, c51: vec4<f32>,
    c60: vec4<f32>, c61: vec4<f32>,
    c70: vec4<f32>, c71: vec4<f32>,
}

// One depth of the block: rows 0..3 (`lo`) and 4..7 (`hi`) times the two column runs.
fn fma_8x8(b: Block8x8, lo: vec4<f32>, hi: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>) -> Block8x8 {
    return Block8x8(
        fma(vec4<f32>(lo.x), w0, b.c00), fma(vec4<f32>(lo.x), w1, b.c01),
        fma(vec4<f32>(lo.y), w0, b.c10), fma(vec4<f32>(lo.y), w1, b.c11),
        fma(vec4<f32>(lo.z), w0, b.c20), fma(vec4<f32>(lo.z), w1, b.c21),
        fma(vec4<f32>(lo.w), w0, b.c30), fma(vec4<f32>(lo.w), w1, b.c31),
        fma(vec4<f32>(hi.x), w0, b.c40), fma(vec4<f32>(hi.x), w1, b.c41),
        fma(vec4<f32>(hi.y), w0, b.c50), fma(vec4<f32>(hi.y), w1, b.c51),
        fma(vec4<f32>(hi.z), w0, b.c60), fma(vec4<f32>(hi.z), w1, b.c61),
        fma(vec4<f32>(hi.w), w0, b.c70), fma(vec4<f32>(hi.w), w1, b.c71),
    );
}

// Writes the block: rows row..row+7, columns col_a..+3 and col_b..+3.
fn store_8x8(b: Block8x8, row: u32, col_a: u32, col_b: u32) {
    store_row(row, col_a, b.c00); store_row(row, col_b, b.c01);
    store_row(row + 1u, col_a, b.c10); store_row(row + 1u, col_b, b.c11);
    store_row(row + 2u, col_a, b.c20); store_row(row + 2u, col_b, b.c21);
    store_row(row + 3u, col_a, b.c30); store_row(row + 3u, col_b, b.c31);
    store_row(row + 4u, col_a, b.c40); store_row(row + 4u, col_b, b.c41);
    store_row(row + 5u, col_a, b.c50); store_row(row + 5u, col_b, b.c51);
    store_row(row + 6u, col_a, b.c60); store_row(row + 6u, col_b, b.c61);
    store_row(row + 7u, col_a, b.c70); store_row(row + 7u, col_b, b.c71);
}
