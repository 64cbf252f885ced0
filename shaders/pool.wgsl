// Pooling over NHWC activations.
//   max_pool:        window k x k, stride, zero-free padding (padded taps are ignored)
//   global_avg_pool: mean over H x W per (n, c), the ResNet head
//   global_avg_pool_backward: its gradient, dY / (H x W) at every pixel

struct Params {
    batch: u32,
    in_h: u32,
    in_w: u32,
    channels: u32,
    out_h: u32,
    out_w: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
    len: u32,    // number of outputs
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

@compute @workgroup_size(WG)
fn max_pool(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.len) {
        return;
    }
    let c = i % p.channels;
    let ow = (i / p.channels) % p.out_w;
    let oh = (i / (p.channels * p.out_w)) % p.out_h;
    let n = i / (p.channels * p.out_w * p.out_h);
    // Lowest finite f32: a window always holds at least one real tap for valid shapes.
    var best = -3.40282347e38;
    for (var kh = 0u; kh < p.kernel; kh = kh + 1u) {
        let ih = oh * p.stride + kh - p.pad;
        if (ih >= p.in_h) {
            continue;
        }
        for (var kw = 0u; kw < p.kernel; kw = kw + 1u) {
            let iw = ow * p.stride + kw - p.pad;
            if (iw >= p.in_w) {
                continue;
            }
            best = max(best, input[((n * p.in_h + ih) * p.in_w + iw) * p.channels + c]);
        }
    }
    output[i] = best;
}

@compute @workgroup_size(WG)
fn global_avg_pool(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.len) {
        return;
    }
    let c = i % p.channels;
    let n = i / p.channels;
    let plane = p.in_h * p.in_w;
    var sum = 0.0;
    for (var s = 0u; s < plane; s = s + 1u) {
        sum = sum + input[(n * plane + s) * p.channels + c];
    }
    output[i] = sum / f32(plane);
}

// The gradient of global_avg_pool: every pixel of an image receives its channel's gradient
// over the pixel count. Here `input` is dY [batch, channels], `output` dX [batch, in_h * in_w,
// channels] and `len` the length of dX.
@compute @workgroup_size(WG)
fn global_avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.len) {
        return;
    }
    let plane = p.in_h * p.in_w;
    let c = i % p.channels;
    let n = i / (p.channels * plane);
    output[i] = input[n * p.channels + c] / f32(plane);
}
