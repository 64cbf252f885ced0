// Cooperative-matrix types for adapters whose matrix units take 16x16x16 f16 products into
// f32 accumulators (NVIDIA tensor cores, AMD RDNA3+). Prepended to the `*_coop.wgsl` kernels.
enable f16;
enable wgpu_cooperative_matrix;

alias LhsTile = coop_mat16x16<f16, A>;
alias RhsTile = coop_mat16x16<f16, B>;
alias AccTile = coop_mat16x16<f32, C>;
const COOP: u32 = 16u;

