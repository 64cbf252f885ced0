// A training step's batch: pair sampling and gather in one launch.
//
//   out[r, :] = pixels of image rows[r] / 255,  r < 2C (NHWC f32)
//   rows[c] = class c's anchor, rows[C + c] its positive (indices into the class-grouped set)
//
// The step number comes from the GPU step counter (`state`), so a submission of many steps
// replays this one launch and each step draws its own pairs. The draw repeats
// src/train/sampler.rs word for word: `mix32`, `pair_hash` and `pair_in_class` are pure
// 32-bit integer functions of (seed, step, class, slot).
//
// The training set stays on the GPU as u8 pixels, four per u32 word (little-endian: byte b
// of the set is bits 8(b % 4).. of word b / 4). A set larger than one storage binding is
// split across up to four bindings of `chunk_words` words each. Pixel values come from the
// 256-entry `levels` table (level / 255 as the host rounds it), so they equal the CPU's
// whatever the precision of this device's division.

struct Params {
    classes: u32,
    image_len: u32,    // values per image (H * W * channels)
    seed_lo: u32,      // the 64-bit seed, split
    seed_hi: u32,
    chunk_words: u32,  // words per pixel binding (the last may hold fewer)
    len: u32,          // outputs: 2 * classes * image_len
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// [0]: steps done before this one (the sampler's step number), [1]: steps done in this
// submission.
@group(0) @binding(1) var<storage, read> state: array<u32>;
// [0, C): each class's first image, [C, 2C): its image count (at least 2).
@group(0) @binding(2) var<storage, read> classes: array<u32>;
@group(0) @binding(3) var<storage, read> levels: array<f32>;
@group(0) @binding(4) var<storage, read> pixels0: array<u32>;
@group(0) @binding(5) var<storage, read> pixels1: array<u32>;
@group(0) @binding(6) var<storage, read> pixels2: array<u32>;
@group(0) @binding(7) var<storage, read> pixels3: array<u32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;
@group(0) @binding(9) var<storage, read_write> rows: array<u32>;

fn mix32(x0: u32) -> u32 {
    var x = x0;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    return x ^ (x >> 16u);
}

fn pair_hash(step: u32, class_id: u32, slot: u32) -> u32 {
    var h = mix32(p.seed_lo ^ mix32(p.seed_hi));
    h = mix32(step ^ h);
    h = mix32(class_id ^ h);
    return mix32(slot ^ h);
}

// Position of the anchor (x) and the positive (y) within a class of `count` images.
fn pair_in_class(step: u32, class_id: u32, count: u32) -> vec2<u32> {
    let anchor = pair_hash(step, class_id, 0u) % count;
    let positive = (anchor + 1u + pair_hash(step, class_id, 1u) % (count - 1u)) % count;
    return vec2<u32>(anchor, positive);
}

fn pixel_word(word: u32) -> u32 {
    let at = word % p.chunk_words;
    switch (word / p.chunk_words) {
        case 0u: { return pixels0[at]; }
        case 1u: { return pixels1[at]; }
        case 2u: { return pixels2[at]; }
        default: { return pixels3[at]; }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WG;
    if (i >= p.len) {
        return;
    }
    let row = i / p.image_len;
    let value = i % p.image_len;
    let class_id = row % p.classes;
    let pair = pair_in_class(state[0], class_id, classes[p.classes + class_id]);
    let image = classes[class_id] + select(pair.x, pair.y, row >= p.classes);
    if (value == 0u) {
        rows[row] = image;
    }
    // The host keeps every byte offset of the set within 32 bits.
    let byte = image * p.image_len + value;
    let level = (pixel_word(byte / 4u) >> (8u * (byte % 4u))) & 0xffu;
    out[i] = levels[level];
}
