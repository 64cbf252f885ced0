// The metric-learning loss of one step, forward and backward, from the dense outputs e
// [2C, dim] (rows 0..C anchors, C..2C their positives) to their gradient de:
//
//   u_r = e_r / sqrt(max(|e_r|^2, 1e-12))                        (tf.math.l2_normalize)
//   logits[i][j] = u_anchor_i . u_positive_j / T
//   loss = mean_i (logsumexp_j logits[i][j] - logits[i][i])     -> loss_history[state[1]]
//   dlogits = (softmax_rows(logits) - I) / C
//   du_anchor_i = sum_j dlogits[i][j] u_positive_j / T,  du_positive_j = sum_i dlogits[i][j] u_anchor_i / T
//   de_r = inv_r (du_r - [|e_r|^2 > 1e-12] u_r (u_r . du_r)),  inv_r = 1 / sqrt(max(|e_r|^2, 1e-12))
//
// One workgroup does it all (the recipe's C is tens, dim 8): each invocation takes rows
// strided by WG. The unit rows go to `u` (read back by the other rows after a storage
// barrier); du is summed in `de` and turned into de in place. Per-row squared norms and
// log-sum-exps stay in workgroup memory, which bounds C (the host refuses more).
//
// `normalize` is the forward's first line alone for any number of rows (embedding for
// evaluation), one invocation per row.

struct Params {
    classes: u32,
    dim: u32,
    inv_temperature: f32,
    rows: u32,  // `normalize` only
}

override WG: u32 = 256u;
// Classes the workgroup arrays hold.
const MAX_CLASSES: u32 = 1024u;
const NORM_FLOOR: f32 = 1e-12;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> e: array<f32>;
@group(0) @binding(3) var<storage, read_write> u: array<f32>;
@group(0) @binding(4) var<storage, read_write> de: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss_history: array<f32>;

var<workgroup> norm_sq: array<f32, 2u * MAX_CLASSES>;
var<workgroup> lse: array<f32, MAX_CLASSES>;
var<workgroup> partial: array<f32, WG>;

// u_r = e_r / sqrt(max(|e_r|^2, 1e-12)); returns |e_r|^2.
fn normalize_row(r: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < p.dim; d = d + 1u) {
        let x = e[r * p.dim + d];
        s = s + x * x;
    }
    let inv = 1.0 / sqrt(max(s, NORM_FLOOR));
    for (var d = 0u; d < p.dim; d = d + 1u) {
        u[r * p.dim + d] = e[r * p.dim + d] * inv;
    }
    return s;
}

fn dot_rows(a: u32, b: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < p.dim; d = d + 1u) {
        s = s + u[a * p.dim + d] * u[b * p.dim + d];
    }
    return s;
}

// logits[i][j]
fn logit(i: u32, j: u32) -> f32 {
    return dot_rows(i, p.classes + j) * p.inv_temperature;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let c = p.classes;
    let rows = 2u * c;

    // Unit rows.
    for (var r = lid; r < rows; r = r + WG) {
        norm_sq[r] = normalize_row(r);
    }
    storageBarrier();
    workgroupBarrier();

    // Each anchor row's log-sum-exp and loss term.
    var loss = 0.0;
    for (var i = lid; i < c; i = i + WG) {
        var top = logit(i, 0u);
        for (var j = 1u; j < c; j = j + 1u) {
            top = max(top, logit(i, j));
        }
        var sum = 0.0;
        for (var j = 0u; j < c; j = j + 1u) {
            sum = sum + exp(logit(i, j) - top);
        }
        lse[i] = top + log(sum);
        // (top - diagonal) first: exactly 0 where the diagonal leads, so a small loss keeps
        // the precision of log(sum).
        loss = loss + (top - logit(i, i)) + log(sum);
    }
    partial[lid] = loss;
    workgroupBarrier();
    for (var span = WG / 2u; span > 0u; span = span / 2u) {
        if (lid < span) {
            partial[lid] = partial[lid] + partial[lid + span];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        loss_history[state[1]] = partial[0] / f32(c);
    }

    // du of each row, summed in de: an anchor over the positives, a positive over the
    // anchors, weighted by dlogits / T.
    let scale = p.inv_temperature / f32(c);
    for (var r = lid; r < rows; r = r + WG) {
        for (var d = 0u; d < p.dim; d = d + 1u) {
            de[r * p.dim + d] = 0.0;
        }
        let is_anchor = r < c;
        let own = select(r - c, r, is_anchor);
        for (var k = 0u; k < c; k = k + 1u) {
            // (i, j) of dlogits: (own, k) for an anchor, (k, own) for a positive.
            let i = select(k, own, is_anchor);
            let j = select(own, k, is_anchor);
            let g = (exp(logit(i, j) - lse[i]) - select(0.0, 1.0, i == j)) * scale;
            let other = select(k, c + k, is_anchor);
            for (var d = 0u; d < p.dim; d = d + 1u) {
                de[r * p.dim + d] = de[r * p.dim + d] + g * u[other * p.dim + d];
            }
        }
        // L2-normalisation backward, in place.
        var along = 0.0;
        for (var d = 0u; d < p.dim; d = d + 1u) {
            along = along + u[r * p.dim + d] * de[r * p.dim + d];
        }
        let s = norm_sq[r];
        let inv = 1.0 / sqrt(max(s, NORM_FLOOR));
        let project = select(0.0, along, s > NORM_FLOOR);
        for (var d = 0u; d < p.dim; d = d + 1u) {
            de[r * p.dim + d] = inv * (de[r * p.dim + d] - u[r * p.dim + d] * project);
        }
    }
}

@compute @workgroup_size(WG)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * WG;
    if (r < p.rows) {
        normalize_row(r);
    }
}
