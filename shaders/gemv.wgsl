// Scores of a few queries against every row of a reference matrix, read once:
// C[q, r] = A[q, :] . B[r, :] for q < M <= 4. B is row-major N x K (rows are vectors), bound
// as 16-byte words: four f32, or, with B_F16, eight IEEE halves packed low-first. A is
// row-major M x K f32. K must be a multiple of 4 (f32) or 8 (f16).
//
// A matrix-vector product is bound by reading B: no workgroup staging, no reuse to win.
// LANES invocations share one row, reading consecutive 16-byte words so that a row is read
// in long contiguous runs; their partial dot products (one per query, in a vec4) meet in a
// tree reduction in workgroup memory.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

override WG: u32 = 256u;
override LANES: u32 = 16u;
// Queries this pipeline scores (p.m <= QUERIES <= 4): a pipeline per count, so a one-query
// scan computes one dot product per word, not four (a dot with a zero vector is not foldable
// under IEEE rules).
override QUERIES: u32 = 4u;
override B_F16: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> partial: array<vec4<f32>, WG>;

// Four consecutive values of query `q` from 4-aligned depth `4 * at`; zero past M.
fn query(q: u32, at: u32) -> vec4<f32> {
    if (q >= p.m) {
        return vec4<f32>(0.0);
    }
    return a[q * (p.k / 4u) + at];
}

// The queries' dot products with `x`, the row's values at depth 4 * at (zero past QUERIES).
fn dots(x: vec4<f32>, at: u32) -> vec4<f32> {
    var d = vec4<f32>(dot(x, query(0u, at)), 0.0, 0.0, 0.0);
    if (QUERIES > 1u) {
        d.y = dot(x, query(1u, at));
    }
    if (QUERIES > 2u) {
        d.z = dot(x, query(2u, at));
    }
    if (QUERIES > 3u) {
        d.w = dot(x, query(3u, at));
    }
    return d;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = (wid.y * groups.x + wid.x) * (WG / LANES) + lid / LANES;
    let lane = lid % LANES;
    var acc = vec4<f32>(0.0);
    if (row < p.n) {
        if (B_F16) {
            let words = p.k / 8u;
            for (var i = lane; i < words; i += LANES) {
                let w = b[row * words + i];
                let lo = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
                let hi = vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
                acc += dots(lo, 2u * i) + dots(hi, 2u * i + 1u);
            }
        } else {
            let words = p.k / 4u;
            for (var i = lane; i < words; i += LANES) {
                acc += dots(bitcast<vec4<f32>>(b[row * words + i]), i);
            }
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < p.n) {
        let total = partial[lid];
        for (var q = 0u; q < p.m; q++) {
            c[q * p.n + row] = total[q];
        }
    }
}
