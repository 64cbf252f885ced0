// Cooperative-matrix types for adapters whose matrix units take 8x8x8 f16 products into
// f32 accumulators (lavapipe, Apple). Prepended to the `*_coop.wgsl` kernels.
enable f16;
enable wgpu_cooperative_matrix;

alias LhsTile = coop_mat8x8<f16, A>;
alias RhsTile = coop_mat8x8<f16, B>;
alias AccTile = coop_mat8x8<f32, C>;
const COOP: u32 = 8u;

