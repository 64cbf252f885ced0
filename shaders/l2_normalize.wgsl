// Row-wise L2 normalisation, optionally after subtracting a mean row (centring):
//   y[r, :] = (x[r, :] - mean) / ||x[r, :] - mean||   (a zero row stays zero)
// One workgroup per row; each invocation walks a strided slice of it, then a tree
// reduction in workgroup memory sums the slices.
//
// Scale-safe for every finite row, from subnormal values to f32::MAX. The plain f32 sum of
// squares serves wherever it lands in [2^-64, f32::MAX]: no square overflowed, and those
// that vanished (below 2^-126) weigh nothing beside it. Otherwise (raw squares overflow
// above ~1.8e19 and vanish below ~1e-19; `x - mean` overflows near f32::MAX) the row is
// summed again with values multiplied by powers of two (exact), built from the bits
// because a GPU may flush subnormal operands to zero:
//   1. centring only: the largest |x|, |mean| of the row picks a scale that puts it just
//      under 2^126, so `x - mean` stays finite and is rounded once, as in exact arithmetic;
//   2. the largest |centred value| picks a scale that puts it in [2^-23, 2): the squares
//      neither overflow nor vanish (values over 2^80 times smaller than it count as zero);
//   3. the sum of squares; 4. the scaled values times 1 / sqrt(sum).
// A maximum is one workgroup atomicMax over the bits of |v|: as u32 they order like the
// values. A NaN or infinity in the row gives a NaN row (the search reports it).

struct Params {
    rows: u32,
    dim: u32,
    center: u32,  // 1: subtract `mean` first
    _pad: u32,
}

override WG: u32 = 256u;

const INF_BITS: u32 = 0x7f800000u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

var<workgroup> partial: array<f32, WG>;
// Bits of the row's largest |x| or |mean| (step 1) and largest |centred value| (step 2).
var<workgroup> top_raw: atomic<u32>;
var<workgroup> top_centred: atomic<u32>;

fn magnitude_bits(v: f32) -> u32 {
    return bitcast<u32>(v) & 0x7fffffffu;
}

// The biased exponent field of a magnitude's bits, 1 for subnormals (their scale).
fn exponent_field(bits: u32) -> i32 {
    return i32(max(bits >> 23u, 1u));
}

// 2^s for -126 <= s <= 127.
fn pow2(s: i32) -> f32 {
    return bitcast<f32>(u32(s + 127) << 23u);
}

// v * 2^k: exact, or 0 where it would fall under about 2^-103. The callers' k keeps it
// under 2^127. v = significand * 2^(field - 150) with the significand an integer below
// 2^24, so even a subnormal v is scaled without being an operand of a float operation.
fn times_pow2(v: f32, k: i32) -> f32 {
    let bits = bitcast<u32>(v);
    let mantissa = bits & 0x7fffffu;
    let significand = f32(select(mantissa, mantissa | 0x800000u, (bits & INF_BITS) != 0u));
    let s = exponent_field(bits & 0x7fffffffu) - 150 + k;
    let scaled = select(0.0, significand * pow2(clamp(s, -126, 127)), s >= -126);
    return select(scaled, -scaled, (bits >> 31u) != 0u);
}

// Element `at` of the row, centred in plain f32 when centring (the common case).
fn centred(at: u32, d: u32) -> f32 {
    if (p.center != 0u) {
        return input[at] - mean[d];
    }
    return input[at];
}

// Element `at` after step 2: centred at scale 2^k_raw, staged in `output`, when centring.
fn staged(at: u32) -> f32 {
    if (p.center != 0u) {
        return output[at];
    }
    return input[at];
}

// Sums each invocation's `sum` into partial[0].
fn reduce_sum(lid: u32, sum: f32) {
    partial[lid] = sum;
    workgroupBarrier();
    for (var span = WG / 2u; span > 0u; span = span / 2u) {
        if (lid < span) {
            partial[lid] = partial[lid] + partial[lid + span];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * groups.x;
    // Uniform across the workgroup, so the barriers below stay in uniform control flow.
    let row_in_range = row < p.rows;
    let base = row * p.dim;
    if (lid == 0u) {
        atomicStore(&top_raw, 0u);
        atomicStore(&top_centred, 0u);
    }

    // The plain sum of squares, and where it is safe, the plain unit vector.
    var plain = 0.0;
    if (row_in_range) {
        for (var d = lid; d < p.dim; d = d + WG) {
            let x = centred(base + d, d);
            plain = plain + x * x;
        }
    }
    reduce_sum(lid, plain);
    let plain_sum = workgroupUniformLoad(&partial[0]);
    // 2^-64 <= sum <= f32::MAX, false for NaN.
    if (plain_sum >= 5.421011e-20 && plain_sum <= 3.4028235e38) {
        if (!row_in_range) {
            return;
        }
        let inv = 1.0 / sqrt(plain_sum);
        for (var d = lid; d < p.dim; d = d + WG) {
            output[base + d] = centred(base + d, d) * inv;
        }
        return;
    }

    // Step 1: the largest |x| or |mean|, 2^k_raw times it just under 2^126.
    var k_raw = 0;
    if (p.center != 0u) {
        var top = 0u;
        if (row_in_range) {
            for (var d = lid; d < p.dim; d = d + WG) {
                top = max(top, max(magnitude_bits(input[base + d]), magnitude_bits(mean[d])));
            }
        }
        atomicMax(&top_raw, top);
        workgroupBarrier();
        k_raw = 252 - exponent_field(atomicLoad(&top_raw));
    }

    // Step 2: the largest |centred value|, 2^k times it in [2^-23, 2). Centred values are
    // staged in `output` (each invocation reads back only what it wrote), so steps 3 and 4
    // neither reload the mean nor rescale twice.
    var top = 0u;
    if (row_in_range) {
        for (var d = lid; d < p.dim; d = d + WG) {
            var v = input[base + d];
            if (p.center != 0u) {
                v = times_pow2(v, k_raw) - times_pow2(mean[d], k_raw);
                output[base + d] = v;
            }
            top = max(top, magnitude_bits(v));
        }
    }
    atomicMax(&top_centred, top);
    workgroupBarrier();
    let top_bits = atomicLoad(&top_centred);
    let k = 127 - exponent_field(top_bits);

    // Step 3: the sum of squares at that scale.
    var sum = 0.0;
    if (row_in_range) {
        for (var d = lid; d < p.dim; d = d + WG) {
            let x = times_pow2(staged(base + d), k);
            sum = sum + x * x;
        }
    }
    reduce_sum(lid, sum);
    if (!row_in_range) {
        return;
    }

    // Step 4. A non-finite input shows in a maximum's bits; its row becomes a quiet NaN.
    let non_finite = max(atomicLoad(&top_raw), top_bits) >= INF_BITS;
    let inv = select(1.0 / sqrt(partial[0]), 0.0, top_bits == 0u);
    // A quiet NaN whatever the other bits (built at run time: a constant NaN is an error).
    let nan = bitcast<f32>(top_bits | 0x7fc00000u);
    for (var d = lid; d < p.dim; d = d + WG) {
        output[base + d] = select(times_pow2(staged(base + d), k) * inv, nan, non_finite);
    }
}
