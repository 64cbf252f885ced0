//! Rust twin of `shaders/matmul_coop.wgsl`: the GEMM on the GPU's matrix units (tensor
//! cores), f16 inputs and f32 sums.
//!
//! Same shapes, layouts and bindings as [`crate::ops::matmul`]; A and B are rounded to f16 on
//! their way into workgroup memory, so the result is the exact-f32 product of the rounded
//! inputs up to summation order (the CPU oracle: [`crate::cpu::matmul`] on
//! [`round_to_f16`] inputs). Needs a context opened with
//! [`crate::gpu::ContextBuilder::experimental_cooperative_matrices`] on an adapter that has
//! the matrix units ([`crate::Context::cooperative_matrix`]).

use crate::error::{Error, Result};
use crate::gpu::{shaders::ShaderFile, Context, CooperativeMatrix, Dispatch, PipelineKey};
use crate::ops::check_len;
use crate::ops::matmul::{MatmulShape, Params, Precision, BINDINGS};

/// How the kernel's workgroups are laid out: `sg_rows x sg_cols` subgroups, each owning a
/// (2 size) x (2 size) output block, stepping through K in slices of `tile_k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CoopTiles {
    pub sg_rows: u32,
    pub sg_cols: u32,
    /// A multiple of the matrix size.
    pub tile_k: u32,
}

impl CoopTiles {
    /// 2 x 2 subgroups and K slices of two matrices: a 64 x 64 tile on 16x16 units.
    pub fn default_for(coop: CooperativeMatrix) -> Self {
        Self { sg_rows: 2, sg_cols: 2, tile_k: 2 * coop.size }
    }

    /// Output rows and columns per workgroup.
    pub fn tile(&self, coop: CooperativeMatrix) -> (usize, usize) {
        ((2 * coop.size * self.sg_rows) as usize, (2 * coop.size * self.sg_cols) as usize)
    }

    /// Bytes of workgroup memory: the f16 A and B slices and one f32 matrix per subgroup.
    pub fn workgroup_bytes(&self, coop: CooperativeMatrix) -> u32 {
        let (rows, cols) = self.tile(coop);
        let slices = 2 * (rows + cols) as u32 * self.tile_k;
        slices + 4 * self.sg_rows * self.sg_cols * coop.size * coop.size
    }

    fn validate(&self, ctx: &Context, coop: CooperativeMatrix) -> Result<()> {
        let limits = ctx.limits();
        let invocations = self.sg_rows * self.sg_cols * coop.subgroup;
        let fits = self.sg_rows > 0
            && self.sg_cols > 0
            && self.tile_k > 0
            && self.tile_k.is_multiple_of(coop.size)
            && invocations <= limits.max_compute_invocations_per_workgroup
            && invocations <= limits.max_compute_workgroup_size_x
            && self.workgroup_bytes(coop) <= limits.max_compute_workgroup_storage_size;
        if !fits {
            return Err(Error::InvalidArgument(format!(
                "matmul_coop: {self:?} on {coop}: needs tile_k a multiple of {}, at most {} invocations and {} bytes of workgroup memory",
                coop.size, limits.max_compute_invocations_per_workgroup, limits.max_compute_workgroup_storage_size
            )));
        }
        Ok(())
    }
}

/// Prepares one launch of `C = A * B` on the matrix units, B stored in `b_precision`,
/// with [`CoopTiles::default_for`] the adapter's units.
pub fn matmul_coop(ctx: &Context, shape: &MatmulShape, a: &wgpu::Buffer, b: &wgpu::Buffer, b_precision: Precision, c: &wgpu::Buffer) -> Result<Dispatch> {
    let coop = units(ctx)?;
    matmul_coop_with(ctx, shape, a, b, b_precision, c, CoopTiles::default_for(coop))
}

/// [`matmul_coop`] with chosen tiles.
pub fn matmul_coop_with(
    ctx: &Context,
    shape: &MatmulShape,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    b_precision: Precision,
    c: &wgpu::Buffer,
    tiles: CoopTiles,
) -> Result<Dispatch> {
    let coop = units(ctx)?;
    shape.validate()?;
    tiles.validate(ctx, coop)?;
    check_len("matmul_coop A", a, shape.m * shape.k)?;
    check_len("matmul_coop B", b, b_precision.bytes(shape.k * shape.n).div_ceil(4))?;
    check_len("matmul_coop C", c, shape.m * shape.n)?;
    let shader = match coop.size {
        8 => ShaderFile::MatmulCoop8,
        _ => ShaderFile::MatmulCoop16,
    };
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    let constants = [
        ("SUBGROUP", coop.subgroup as f64),
        ("SG_ROWS", tiles.sg_rows as f64),
        ("SG_COLS", tiles.sg_cols as f64),
        ("TILE_K", tiles.tile_k as f64),
        ("B_TRANSPOSED", flag(shape.b_transposed)),
        ("B_F16", flag(b_precision == Precision::F16)),
    ];
    let kernel = ctx.kernel(&PipelineKey::new(shader, "main", &constants), &BINDINGS)?;
    let uniform = ctx.uniform("matmul_coop params", &Params::of(shape));
    let (rows, cols) = tiles.tile(coop);
    let grid = [shape.n.div_ceil(cols) as u32, shape.m.div_ceil(rows) as u32, 1];
    Dispatch::new(ctx, "matmul_coop", kernel, &[&uniform, a, b, c], grid)
}

fn units(ctx: &Context) -> Result<CooperativeMatrix> {
    ctx.cooperative_matrix().ok_or_else(|| {
        let why = ctx.cooperative_matrix_unavailable().unwrap_or("unknown");
        Error::InvalidArgument(format!("matmul_coop: no matrix units on {}: {why}", ctx.adapter_info().name))
    })
}

/// `values` rounded to the nearest f16, as the kernel stages them: what the CPU oracle
/// multiplies.
pub fn round_to_f16(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}
