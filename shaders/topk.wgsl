// Exact top-k per row: one pass of a multi-pass selection.
//
// Each workgroup takes one block of `span` candidates of one row and reduces it to its best
// k, ordered by (score descending, index ascending), in workgroup memory:
//   1. bitonic-sort runs of `run` = next_pow2(k) (capped at span), alternately best-first
//      and worst-first;
//   2. while more than one run is left, pair each best-first run A with the worst-first run
//      B after it: the better of A[i], B[i] for every i is the top `run` of both, as a
//      bitonic sequence (the first half-cleaner of a bitonic merge); merge it into a sorted
//      run with log2(run) more steps. Half the runs drop out each round.
// For small k this is ~4x less work than sorting the whole block; for run = span it is the
// plain bitonic sort.
// The Rust side chains passes: the first reads the caller's scores (or score/index pairs),
// each later one reads the previous pass's per-block lists, until one block per row is left
// and writes into the caller's output. Since k <= BLOCK / 2, every pass shrinks the
// candidates at least 2x.
//
// Prefilter (long rows of dense scores, small k): `chunk_max` takes the best score of each
// of a row's chunks, and a plain pass takes the top k of those maxima; the k-th of them is a
// floor no top-k candidate lies below (k chunks reach it). The chain's passes then drop
// every candidate ranked below the floor as they load and sort only the survivors, packed to
// the front of the block in a run of the next power of two: a few per block instead of
// 2048. Data that defeats the floor (many ties at it, rows sorted by score) keeps more
// survivors and costs at most a full sort per block, exact either way.
//
// Ranking: NaN counts as -inf, -0 equals +0, ties go to the lower index. Padding entries
// (index 0xFFFFFFFF, score = lowest f32) rank below every real candidate, -inf and NaN
// included, so lists padded by a short chunk merge exactly.

struct Params {
    rows: u32,
    len: u32,        // candidates per input row (row stride of the input)
    k: u32,          // entries each block writes
    span: u32,       // candidates per block: a power of two <= BLOCK
    blocks: u32,     // blocks per row
    out_stride: u32, // row stride of the output
    out_offset: u32, // first output column of this pass
    index_base: u32, // dense scores: column j has index index_base + j
    pairs: u32,      // 1: indices come from `in_indices`
    run_log2: u32,   // log2 of the sorted run length, run <= span
    floored: u32,    // 1: drop candidates ranked below the floor in `floor_list`
    _pad: u32,
}

const PAD_INDEX: u32 = 0xffffffffu;
const PAD_BITS: u32 = 0xff7fffffu;     // -3.40282347e38, the lowest finite f32
const KEY_NEG_INF: u32 = 0x007fffffu;  // rank key of -inf (and of NaN and padding)
const KEY_POS_INF: u32 = 0xff800000u;  // rank key of +inf
const ORDERED_NEG_ZERO: u32 = 0x7fffffffu;

// Candidates per workgroup; 2 u32 arrays of BLOCK fill WebGPU's default 16 KiB.
override BLOCK: u32 = 2048u;
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// Scores are f32 bound as their bits: comparisons go through integer keys, and copies keep
// the exact bits (a float load or store may canonicalise NaNs).
@group(0) @binding(1) var<storage, read> in_scores: array<u32>;
@group(0) @binding(2) var<storage, read> in_indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> out_scores: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_indices: array<u32>;
// With `floored`: per row, the top k of the chunk maxima; entry k - 1 is the floor.
@group(0) @binding(5) var<storage, read> floor_list: array<u32>;

// Each entry's score is held as `ordered(bits)`: a bijection of u32 whose unsigned order is
// the float order with -0 below +0 and NaNs beyond the infinities. It is made once per load
// and undone once per output, so exact bits survive while each comparison only fixes up the
// few values the ranking treats as equal (about half the instructions of keying raw bits).
var<workgroup> sort_ordered: array<u32, BLOCK>;
var<workgroup> sort_index: array<u32, BLOCK>;

fn ordered(bits: u32) -> u32 {
    return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn bits_of(ordered_bits: u32) -> u32 {
    return select(~ordered_bits, ordered_bits & 0x7fffffffu, (ordered_bits & 0x80000000u) != 0u);
}

// The rank key of an ordered score: unsigned order is the ranking order. NaNs join -inf
// (negative NaNs lie below it, positive ones above +inf) and -0 joins +0, the next value up.
// Padding is held as ordered 0 (a negative NaN), so it ranks with -inf too and, with the
// highest index, after every real candidate. Bit tests, not float compares: WGSL lets
// implementations assume NaN never occurs.
fn rank_key(o: u32) -> u32 {
    let key = max(o, KEY_NEG_INF) + select(0u, 1u, o == ORDERED_NEG_ZERO);
    return select(key, KEY_NEG_INF, o > KEY_POS_INF);
}

// Whether entry a ranks strictly before entry b. Bitwise | and & rather than || and &&:
// no short-circuit branches in the sort's inner loop.
fn before(a_ordered: u32, a_index: u32, b_ordered: u32, b_index: u32) -> bool {
    let ka = rank_key(a_ordered);
    let kb = rank_key(b_ordered);
    return (ka > kb) | ((ka == kb) & (a_index < b_index));
}

// Orders entries lo < hi: best first when `best_first`, else worst first. Branch-free.
fn compare_exchange(lo: u32, hi: u32, best_first: bool) {
    let lo_ordered = sort_ordered[lo];
    let lo_index = sort_index[lo];
    let hi_ordered = sort_ordered[hi];
    let hi_index = sort_index[hi];
    let swap = before(hi_ordered, hi_index, lo_ordered, lo_index) == best_first;
    sort_ordered[lo] = select(lo_ordered, hi_ordered, swap);
    sort_index[lo] = select(lo_index, hi_index, swap);
    sort_ordered[hi] = select(hi_ordered, lo_ordered, swap);
    sort_index[hi] = select(hi_index, lo_index, swap);
}

// Position of pair t's first entry in a bitonic step of `stride` (a power of two): t with a
// 0 bit inserted at stride's position, so pairs (lo, lo + stride) are disjoint.
fn pair_lo(t: u32, stride: u32) -> u32 {
    return 2u * t - (t & (stride - 1u));
}

// (row, block of the row) of this workgroup. The grid is (blocks, rows) or, past the
// per-dimension limit, a linear fold of it; rows past the last are idle.
fn locate(wid: vec3<u32>, groups: vec3<u32>) -> vec2<u32> {
    let group = wid.x + groups.x * (wid.y + groups.y * wid.z);
    return vec2(group / p.blocks, group % p.blocks);
}

// One candidate as a block holds it: ordered score (0 for padding) and index.
struct Entry {
    held: u32,
    index: u32,
}

// Candidate i of the block starting at column `start` of the row starting at `base`.
fn load_entry(base: u32, start: u32, i: u32) -> Entry {
    var index = p.index_base + start + i;
    if (p.pairs != 0u) {
        index = in_indices[base + i];
    }
    // Padding in the input (an earlier pass's short list) is held as padding.
    return Entry(select(ordered(in_scores[base + i]), 0u, index == PAD_INDEX), index);
}

fn survives(e: Entry, floor_key: u32) -> bool {
    return (e.index != PAD_INDEX) & (rank_key(e.held) >= floor_key);
}

// Smallest power of two >= n, at least 1.
fn next_pow2(n: u32) -> u32 {
    return select(1u << (32u - countLeadingZeros(n - 1u)), 1u, n <= 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let at = locate(wid, groups);
    let row = at.x;
    let block = at.y;
    if (row >= p.rows) {
        return;
    }

    let start = block * p.span;
    let count = min(p.span, p.len - start);
    let base = row * p.len + start;
    var span = p.span;
    var run_log2 = p.run_log2;
    if (p.floored == 0u) {
        for (var i = tid; i < span; i = i + WG) {
            var e = Entry(0u, PAD_INDEX);
            if (i < count) {
                e = load_entry(base, start, i);
            }
            sort_ordered[i] = e.held;
            sort_index[i] = e.index;
        }
    } else {
        // Count each invocation's survivors, scan the counts (Hillis-Steele, ping-ponging
        // between the two halves of sort_ordered's first 2 * WG slots), then load again and
        // write each survivor to its packed slot, in candidate order.
        let floor_key = rank_key(ordered(floor_list[row * p.k + p.k - 1u]));
        var mine = 0u;
        for (var i = tid; i < count; i = i + WG) {
            mine = mine + select(0u, 1u, survives(load_entry(base, start, i), floor_key));
        }
        sort_ordered[tid] = mine;
        workgroupBarrier();
        var half = 0u;
        for (var d = 1u; d < WG; d = d << 1u) {
            var sum = sort_ordered[half + tid];
            if (tid >= d) {
                sum = sum + sort_ordered[half + tid - d];
            }
            sort_ordered[WG - half + tid] = sum;
            half = WG - half;
            workgroupBarrier();
        }
        var slot = sort_ordered[half + tid] - mine;
        let kept = workgroupUniformLoad(&sort_ordered[half + WG - 1u]);
        workgroupBarrier();  // every invocation has read the scan before survivors overwrite it
        // Most invocations have no survivor (no second read).
        for (var i = tid; (i < count) & (mine != 0u); i = i + WG) {
            let e = load_entry(base, start, i);
            if (survives(e, floor_key)) {
                sort_ordered[slot] = e.held;
                sort_index[slot] = e.index;
                slot = slot + 1u;
            }
        }
        span = next_pow2(kept);
        run_log2 = min(run_log2, countTrailingZeros(span));
        for (var i = kept + tid; i < span; i = i + WG) {
            sort_ordered[i] = 0u;
            sort_index[i] = PAD_INDEX;
        }
    }
    workgroupBarrier();

    // 1. Bitonic-sort runs of `run`. At step (size, stride) the sub-sequence holding lo is
    // ordered best-first when (lo & size) == 0: runs alternate direction, as merges need.
    let run = 1u << run_log2;
    for (var size = 2u; size <= run; size = size << 1u) {
        for (var stride = size >> 1u; stride > 0u; stride = stride >> 1u) {
            for (var t = tid; t < span / 2u; t = t + WG) {
                let lo = pair_lo(t, stride);
                compare_exchange(lo, lo + stride, (lo & size) == 0u);
            }
            workgroupBarrier();
        }
    }

    // 2. Halve the runs until one is left. Runs stay where they are: after `level` rounds the
    // live run q sits at slot q << level. Live runs with even q merge best-first, odd ones
    // worst-first, so the next round again pairs a best-first run with a worst-first one.
    var live = span >> run_log2;
    for (var level = 0u; live > 1u; level = level + 1u) {
        live = live >> 1u;
        for (var t = tid; t < live * run; t = t + WG) {
            let i = t & (run - 1u);
            let a = (((t >> run_log2) << 1u) << level) * run + i;
            let b = a + (run << level);
            let a_ordered = sort_ordered[a];
            let a_index = sort_index[a];
            let b_ordered = sort_ordered[b];
            let b_index = sort_index[b];
            let take_b = before(b_ordered, b_index, a_ordered, a_index);
            sort_ordered[a] = select(a_ordered, b_ordered, take_b);
            sort_index[a] = select(a_index, b_index, take_b);
        }
        workgroupBarrier();
        for (var stride = run >> 1u; stride > 0u; stride = stride >> 1u) {
            for (var t = tid; t < live * (run >> 1u); t = t + WG) {
                let q = t >> (run_log2 - 1u);
                let lo = ((q << (level + 1u)) * run) + pair_lo(t & ((run >> 1u) - 1u), stride);
                compare_exchange(lo, lo + stride, (q & 1u) == 0u);
            }
            workgroupBarrier();
        }
    }

    // The best run now holds slot 0, sorted best-first. Blocks shorter than k (only in the
    // last pass, when a row has fewer than k candidates) end in padding entries.
    let out_base = row * p.out_stride + p.out_offset + block * p.k;
    for (var j = tid; j < p.k; j = j + WG) {
        var bits = PAD_BITS;
        var index = PAD_INDEX;
        if (j < run && sort_index[j] != PAD_INDEX) {
            bits = bits_of(sort_ordered[j]);
            index = sort_index[j];
        }
        out_scores[out_base + j] = bits;
        out_indices[out_base + j] = index;
    }
}

// Best rank key of one chunk of a row.
var<workgroup> chunk_best: atomic<u32>;

// The prefilter's first step: per row, the best score of each chunk of `span` candidates
// (`blocks` chunks), as a score of that rank (raw bits may differ, e.g. -0 for +0), written
// densely to out_scores[row * blocks + chunk].
@compute @workgroup_size(WG)
fn chunk_max(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    let at = locate(wid, groups);
    let row = at.x;
    let chunk = at.y;
    if (row >= p.rows) {
        return;
    }
    if (tid == 0u) {
        atomicStore(&chunk_best, 0u);
    }
    workgroupBarrier();
    let start = chunk * p.span;
    let count = min(p.span, p.len - start);
    let base = row * p.len + start;
    var best = 0u;
    for (var i = tid; i < count; i = i + WG) {
        best = max(best, rank_key(ordered(in_scores[base + i])));
    }
    atomicMax(&chunk_best, best);
    workgroupBarrier();
    if (tid == 0u) {
        // A rank key is itself an ordered score of that rank (it never is -0 or a NaN).
        out_scores[row * p.blocks + chunk] = bits_of(atomicLoad(&chunk_best));
    }
}
