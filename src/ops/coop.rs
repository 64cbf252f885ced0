//! Rust twin of `shaders/coop_gemm.wgsl`, the GEMM skeleton on matrix units shared by
//! [`crate::ops::matmul_coop`] and [`crate::ops::conv2d_coop`]: its workgroup layout
//! ([`CoopTiles`]), the override constants and the grid.

use crate::error::{Error, Result};
use crate::gpu::{shaders::ShaderFile, Context, CooperativeMatrix};

/// How the kernel's workgroups are laid out: `sg_rows x sg_cols` subgroups, each owning a
/// (2 size) x (2 size) output block, stepping through K in slices of `tile_k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CoopTiles {
    /// Subgroups down the output.
    pub sg_rows: u32,
    /// Subgroups across the output.
    pub sg_cols: u32,
    /// A multiple of the matrix size.
    pub tile_k: u32,
}

impl CoopTiles {
    /// 2 x 2 subgroups and K slices of two matrices: a 64 x 64 tile on 16x16 units.
    pub fn default_for(coop: CooperativeMatrix) -> Self {
        Self { sg_rows: 2, sg_cols: 2, tile_k: 2 * coop.size }
    }

    /// 4 x 4 subgroups: a 128 x 128 tile on 16x16 units, half the staging per product of
    /// the default's.
    pub fn four_by_four(coop: CooperativeMatrix) -> Self {
        Self { sg_rows: 4, sg_cols: 4, ..Self::default_for(coop) }
    }

    /// The layouts `lookalike tune --experimental-coop` and `bench --experimental-coop`
    /// time: the default, a deeper K slice, wider and taller groups of subgroups, 4 x 4.
    pub fn candidates(coop: CooperativeMatrix) -> [Self; 5] {
        let default = Self::default_for(coop);
        [
            default,
            Self { tile_k: 2 * default.tile_k, ..default },
            Self { sg_cols: 4, ..default },
            Self { sg_rows: 4, ..default },
            Self::four_by_four(coop),
        ]
    }

    /// Output rows and columns per workgroup.
    pub fn tile(&self, coop: CooperativeMatrix) -> (usize, usize) {
        ((2 * coop.size * self.sg_rows) as usize, (2 * coop.size * self.sg_cols) as usize)
    }

    /// Bytes of workgroup memory: the f16 A and B slices, one f32 matrix per subgroup, and
    /// 16 bytes per tile row for the problem file (`row_info`).
    pub fn workgroup_bytes(&self, coop: CooperativeMatrix) -> u32 {
        let (rows, cols) = self.tile(coop);
        let slices = 2 * (rows + cols) as u32 * self.tile_k;
        slices + 4 * self.sg_rows * self.sg_cols * coop.size * coop.size + 16 * rows as u32
    }

    pub(crate) fn validate(&self, ctx: &Context, coop: CooperativeMatrix) -> Result<()> {
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
                "{self:?} on {coop}: needs tile_k a multiple of {}, at most {} invocations and {} bytes of workgroup memory",
                coop.size, limits.max_compute_invocations_per_workgroup, limits.max_compute_workgroup_storage_size
            )));
        }
        Ok(())
    }

    /// The skeleton's override constants.
    pub(crate) fn constants(&self, coop: CooperativeMatrix, b_transposed: bool) -> [(&'static str, f64); 5] {
        [
            ("SUBGROUP", coop.subgroup as f64),
            ("SG_ROWS", self.sg_rows as f64),
            ("SG_COLS", self.sg_cols as f64),
            ("TILE_K", self.tile_k as f64),
            ("B_TRANSPOSED", if b_transposed { 1.0 } else { 0.0 }),
        ]
    }

    /// Workgroups for an `m x n` output.
    pub(crate) fn grid(&self, coop: CooperativeMatrix, m: usize, n: usize) -> [u32; 3] {
        let (rows, cols) = self.tile(coop);
        [n.div_ceil(cols) as u32, m.div_ceil(rows) as u32, 1]
    }
}

/// The 8x8 or 16x16 build of a kernel on matrix units.
pub(crate) fn shader(coop: CooperativeMatrix, eight: ShaderFile, sixteen: ShaderFile) -> ShaderFile {
    if coop.size == 8 {
        eight
    } else {
        sixteen
    }
}

/// The context's matrix units, or an error saying why there are none.
pub(crate) fn units(ctx: &Context, op: &str) -> Result<CooperativeMatrix> {
    ctx.cooperative_matrix().ok_or_else(|| {
        let why = ctx.cooperative_matrix_unavailable().unwrap_or("unknown");
        Error::InvalidArgument(format!("{op}: no matrix units on {}: {why}", ctx.adapter_info().name))
    })
}

/// `values` rounded to the nearest f16, as the kernel stages them: what the CPU oracle
/// multiplies.
pub fn round_to_f16(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}
