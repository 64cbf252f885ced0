// Row-wise L2 normalisation, optionally after subtracting a mean row (centring):
//   y[r, :] = (x[r, :] - mean) / max(||x[r, :] - mean||, 1e-12)
// One workgroup per row: each invocation sums a strided slice, then a tree reduction in
// workgroup memory.

struct Params {
    rows: u32,
    dim: u32,
    center: u32,  // 1: subtract `mean` first
    _pad: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

var<workgroup> partial: array<f32, WG>;

fn centred(at: u32, d: u32) -> f32 {
    if (p.center != 0u) {
        return input[at] - mean[d];
    }
    return input[at];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * groups.x;
    // Uniform across the workgroup, so the barriers below stay in uniform control flow.
    let row_in_range = row < p.rows;
    let base = row * p.dim;
    var sum = 0.0;
    if (row_in_range) {
        for (var d = lid; d < p.dim; d = d + WG) {
            let x = centred(base + d, d);
            sum = sum + x * x;
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var span = WG / 2u; span > 0u; span = span / 2u) {
        if (lid < span) {
            partial[lid] = partial[lid] + partial[lid + span];
        }
        workgroupBarrier();
    }
    if (!row_in_range) {
        return;
    }
    let inv = 1.0 / max(sqrt(partial[0]), 1e-12);
    for (var d = lid; d < p.dim; d = d + WG) {
        output[base + d] = centred(base + d, d) * inv;
    }
}
