// Keras's Adam over the whole flat weight vector, one invocation per weight:
//
//   m += (g - m)(1 - beta1);  v += (g^2 - v)(1 - beta2);  w -= alpha_t m / (sqrt(v) + epsilon)
//
// alpha_t, the bias-corrected step size of step t, is computed on the host in f64
// (`TrainConfig::adam_step_size`) for every step of a submission and read here from
// `step_sizes`, indexed by the GPU's count of steps done in this submission, so many steps
// replay the same launch with no host work between them.
//
// `advance`, the last launch of a step, moves the step counter on.

struct Params {
    len: u32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    epsilon: f32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// [0]: steps done, [1]: steps done in this submission.
@group(0) @binding(1) var<storage, read_write> state: array<u32>;
@group(0) @binding(2) var<storage, read> step_sizes: array<f32>;
@group(0) @binding(3) var<storage, read> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(WG)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WG;
    if (i >= p.len) {
        return;
    }
    let g = grads[i];
    let m_new = m[i] + (g - m[i]) * p.one_minus_beta1;
    let v_new = v[i] + (g * g - v[i]) * p.one_minus_beta2;
    m[i] = m_new;
    v[i] = v_new;
    params[i] = params[i] - step_sizes[state[1]] * m_new / (sqrt(v_new) + p.epsilon);
}

@compute @workgroup_size(1)
fn advance() {
    state[0] = state[0] + 1u;
    state[1] = state[1] + 1u;
}
