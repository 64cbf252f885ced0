// The A tile of the f32 FMA kernels (conv2d.wgsl, matmul.wgsl), appended to each of them:
// `tile_a` (declared there, an array of vec4<f32>) holds at depth kk rows of `width` vec4s,
// each the same depth of four consecutive tile rows.

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
