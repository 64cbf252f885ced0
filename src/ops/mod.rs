//! The kernels as building blocks: one Rust twin per WGSL shader, each building a
//! [`Dispatch`] you record into your own encoder, on your own buffers.
//!
//! - **Buffers.** Kernels read and write plain [`wgpu::Buffer`]s with `STORAGE` usage (add
//!   `COPY_SRC` to read one back, `COPY_DST` to write it): ones you made yourself on the
//!   context's [`device`](crate::Context::device), or [`crate::Context::upload`] /
//!   [`crate::Context::storage`]. Values are f32, indices u32, and f16 data two per 32-bit
//!   word. Each op checks the buffers hold what the shape needs and fails naming the
//!   operand otherwise; it never reallocates them.
//! - **Shapes.** A plain struct per kernel family says what the buffers hold:
//!   [`matmul::MatmulShape`] (`C[m, n] = A[m, k] · B`, B `[k, n]` or `[n, k]` transposed),
//!   [`conv2d::Conv2dShape`] (NHWC activations, HWIO weights), [`pool::MaxPoolShape`],
//!   [`batch_norm::BatchNormShape`]; top-k takes rows × candidates and k up to
//!   [`topk::MAX_K`]. They live in [`crate::shape`], shared with the CPU twins, and are
//!   re-exported beside each kernel. Activations are NHWC f32 throughout.
//! - **Tiles.** Kernels take their launch shapes (for GEMM-like ones [`Tiles`]: workgroup
//!   size and outputs per invocation) as WGSL override constants, given by the caller:
//!   [`Tuning`] holds a set per adapter, the built-in table's ([`Tuning::for_adapter`]) or
//!   an autotune result (the `tune` module), and [`Tuning::gemm_tiles`] picks per layer.
//! - **Pipeline cache.** Each op fetches its compiled pipeline from the context's cache,
//!   keyed by shader, entry point and override constants: compiled on
//!   first use, shared by every clone of the [`crate::Context`]. A [`Dispatch`] holds its
//!   pipeline and bind group and can be encoded any number of times; the buffers it binds
//!   stay alive as long as it does.
//! - **CPU twins.** Every kernel has a twin in [`crate::cpu`] with the same layouts, the
//!   oracle of the tests.
//!
//! A matmul and a top-k on buffers of your own, checked against their CPU twins:
//!
//! ```
#![doc = include_str!("../../examples/kernels_on_own_buffers.rs")]
//! ```
//!
//! (This is `examples/kernels_on_own_buffers.rs`.)

pub mod adam;
pub mod batch_norm;
pub mod conv2d;
pub mod conv2d_backward;
pub mod conv2d_coop;
pub mod coop;
pub mod dense;
pub mod gemv;
pub mod l2_normalize;
pub mod matmul;
pub mod matmul_coop;
pub mod metric_loss;
pub mod pool;
pub mod preprocess;
pub mod topk;
pub mod train_sample;

use crate::error::{Error, Result};
use crate::gpu::known::gpu_spec;
#[cfg(doc)]
use crate::gpu::Dispatch;
use crate::ops::gemv::GemvTiles;

/// Register-blocked tile configuration shared by the GEMM-like kernels (`conv2d`,
/// `matmul`): a workgroup of `wg_x * wg_y` invocations, each computing a `block x block`
/// output block, covers a `block*wg_y x block*wg_x` output tile, stepping through K in
/// slices of `tile_k` (`matmul`, 4x4 blocks), `tile_k / 2` (`matmul`, 8x8), `2 * wg_x`
/// (`conv2d`, 4x4) or `wg_x` (`conv2d`, 8x8). Set through WGSL override constants and
/// entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tiles {
    /// Invocations across (output columns).
    pub wg_x: u32,
    /// Invocations down (output rows).
    pub wg_y: u32,
    /// Depth of the K slice staged in workgroup memory.
    pub tile_k: u32,
    /// Outputs per invocation along each side: 4 or 8.
    pub block: u32,
}

impl Default for Tiles {
    fn default() -> Self {
        Self { wg_x: 16, wg_y: 16, tile_k: 32, block: 4 }
    }
}

impl Tiles {
    /// Tiles for a GEMM of `rows` output rows: fewer rows per workgroup when there are few
    /// rows, so small late-stage layers (7x7, 2x2 spatial) do not compute mostly padding.
    pub fn for_rows(rows: usize) -> Self {
        let wg_y = if rows >= 1024 {
            16
        } else if rows >= 128 {
            8
        } else if rows >= 16 {
            4
        } else {
            1
        };
        Self { wg_y, ..Self::default() }
    }

    /// The same tiles with 8x8 blocks per invocation (a tile four times the area).
    pub fn with_8x8_blocks(self) -> Self {
        Self { block: 8, ..self }
    }

    /// 8x8-block tiles for an output of `cols` columns: half as wide (8 invocations across,
    /// 64 columns) when there are no more columns than that, so a 64-channel layer does not
    /// leave half of every tile idle. On lavapipe (2026-12-02) these beat 4x4 blocks on every
    /// 64-channel ResNet50 layer: 56x56 3x3 68.5 -> 45-53 ms, 1x1 29.8 -> 23 ms, stem 80 -> 49.
    pub fn with_8x8_blocks_for(self, cols: usize) -> Self {
        let wg_x = if cols <= 64 { self.wg_x.min(8) } else { self.wg_x };
        Self { block: 8, wg_x, ..self }
    }

    /// Output rows per workgroup.
    pub fn rows(&self) -> usize {
        (self.block * self.wg_y) as usize
    }

    /// Output columns per workgroup.
    pub fn cols(&self) -> usize {
        (self.block * self.wg_x) as usize
    }

    /// Workgroups of a `rows x cols` output.
    pub fn groups(&self, rows: usize, cols: usize) -> usize {
        rows.div_ceil(self.rows()) * cols.div_ceil(self.cols())
    }

    pub(crate) fn constants(&self) -> [(&'static str, f64); 3] {
        [("WG_X", self.wg_x as f64), ("WG_Y", self.wg_y as f64), ("TILE_K", self.tile_k as f64)]
    }
}

/// Launch shapes for one adapter, given to whatever dispatches (the context holds none).
/// `tune::autotune` measures them (`lookalike tune`, cached on disk per adapter and read
/// back by `tune::load_for`); [`Tuning::for_adapter`] is the built-in table, keyed by
/// device type and filled from measurements (see BENCHMARKS.md), and what every type that
/// dispatches uses when given none. Adapters not measured yet get the defaults, which suit
/// discrete GPUs (32-wide warps or wider, coalesced 16-byte loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tuning {
    /// The single-query scan.
    pub gemv: GemvTiles,
    /// Convolutions and matmuls with at least this many output columns (channels) use 8x8
    /// blocks per invocation (`Tiles::with_8x8_blocks_for`: 128-column tiles, 64-column ones
    /// for at most 64 columns); `None`: never.
    pub min_cols_for_8x8: Option<usize>,
    /// ... when their 8x8 grid also has at least this many workgroups (0: any size). On a
    /// large GPU a grid of a few 128x128 tiles leaves multiprocessors idle, where 4x4 blocks
    /// make four times the workgroups; the autotuner measures where that starts.
    #[serde(default)]
    pub min_groups_for_8x8: usize,
    /// Invocations per top-k workgroup (each sorts a block of 2048 candidates): a power of
    /// two up to the device's workgroup size limit.
    #[serde(default = "default_topk_workgroup")]
    pub topk_workgroup: u32,
    /// The workgroup layout of convolutions on the matrix units, where `lookalike tune
    /// --experimental-coop` measured one; `None`: [`coop::CoopTiles::default_for`].
    #[serde(default)]
    pub coop_tiles: Option<coop::CoopTiles>,
}

fn default_topk_workgroup() -> u32 {
    256
}

impl Default for Tuning {
    fn default() -> Self {
        // 8x8 blocks read half the workgroup memory per FMA of 4x4 ones, which bounds the
        // 4x4 kernel on large GPUs (prediction, not yet measured on one); on lavapipe they
        // win on every ResNet50 layer (BENCHMARKS.md). From 128 channels only until a GPU
        // measures the 64-column tiles (half the workgroups' invocations of the 128 ones).
        Self {
            gemv: GemvTiles::default(),
            min_cols_for_8x8: Some(128),
            min_groups_for_8x8: 0,
            topk_workgroup: default_topk_workgroup(),
            coop_tiles: None,
        }
    }
}

impl Tuning {
    /// The built-in table's launch shapes for this adapter: a pure function of its type and
    /// name (no file, no environment).
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        match info.device_type {
            // lavapipe (Mesa 25, `lookalike tune` 2026-12-02, 16k x 2048 f32 / f16, one
            // query): 1 lane per row 76 / 77 ms, 4 lanes 91 / 100, 16 lanes 98 / 90, 64
            // lanes 195 / 165. Its SIMD lanes are CPU vector lanes: a cross-lane reduction
            // costs more than it saves.
            // Top-k of 1M scores, k 10 / 100: 126 / 237 ms with workgroups of 256, 86 / 184
            // with 64, 78 / 175 with 32 (fewer invocations to step through each barrier).
            // Since 64-column tiles exist for 8x8 blocks, `tune` puts the threshold at 64
            // (every ResNet50 layer): convolutions 1847 -> 1750 ms at 224, batch 1.
            wgpu::DeviceType::Cpu => Self {
                gemv: GemvTiles { workgroup: 256, lanes: 1 },
                min_cols_for_8x8: Some(64),
                topk_workgroup: 32,
                ..Self::default()
            },
            // A large GPU (by name): 8x8 blocks only where their grid has about one
            // workgroup per multiprocessor. A 256-invocation 8x8 workgroup holds ~128
            // registers each, so at most two fit one; below that, 4x4 blocks make four
            // times the workgroups. On an H100 at batch 32 this moves layer3's 256-channel
            // convolutions (98 workgroups of 8x8) and most of layer4's 512-channel ones (52)
            // to 4x4 blocks, a third of the forward's FLOPs (a prediction; `lookalike tune`
            // measures and overrides it).
            _ => Self {
                min_groups_for_8x8: gpu_spec(&info.name).map_or(0, |spec| spec.multiprocessors),
                ..Self::default()
            },
        }
    }

    /// Tiles for a convolution or matmul of `rows` x `cols` outputs.
    pub fn gemm_tiles(&self, rows: usize, cols: usize) -> Tiles {
        let tiles = Tiles::for_rows(rows);
        let big = tiles.with_8x8_blocks_for(cols);
        if self.min_cols_for_8x8.is_some_and(|min| cols >= min) && big.groups(rows, cols) >= self.min_groups_for_8x8 {
            big
        } else {
            tiles
        }
    }
}

/// Fails unless `buffer` holds at least `len` f32s.
pub(crate) fn check_len(what: &str, buffer: &wgpu::Buffer, len: usize) -> Result<()> {
    let need = (len * 4) as u64;
    if buffer.size() < need {
        return Err(Error::shape(
            what,
            format!("at least {len} f32 ({need} bytes)"),
            format!("{} bytes", buffer.size()),
        ));
    }
    Ok(())
}

/// A 16-byte buffer to bind where a kernel's `vec4` view of one of `buffers` is needed but
/// the buffer is smaller than one vector; `None` when all are large enough. The kernels read
/// such small buffers one value at a time (their shapes are not multiples of 4), so the
/// view is never read.
pub(crate) fn vec4_placeholder(ctx: &crate::gpu::Context, buffers: &[&wgpu::Buffer]) -> Result<Option<wgpu::Buffer>> {
    match buffers.iter().any(|b| b.size() < 16) {
        true => Ok(Some(ctx.storage("unused vec4 view", 4)?)),
        false => Ok(None),
    }
}

/// `buffer` itself as its `vec4` view, or the placeholder where it is too small for one.
pub(crate) fn vec4_view<'a>(buffer: &'a wgpu::Buffer, placeholder: Option<&'a wgpu::Buffer>) -> &'a wgpu::Buffer {
    match placeholder {
        Some(small) if buffer.size() < 16 => small,
        _ => buffer,
    }
}

/// A tensor at an element offset into a buffer: one of the tensors of a flat parameter or
/// gradient vector. Kernels that take one read and write from `offset` on.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// The buffer holding the tensor.
    pub buffer: &'a wgpu::Buffer,
    /// Its first element (f32s from the buffer's start).
    pub offset: usize,
}

impl<'a> At<'a> {
    /// The tensor at `offset` f32s into `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer, offset: usize) -> Self {
        Self { buffer, offset }
    }
}

/// A whole buffer: the tensor starts at its first element.
impl<'a> From<&'a wgpu::Buffer> for At<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Self { buffer, offset: 0 }
    }
}

/// Workgroup size of the element-wise kernels.
pub(crate) const ELEMENTWISE_WG: u32 = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_tiles_follow_both_thresholds() {
        let table = Tuning::default();
        assert_eq!(table.gemm_tiles(3136, 64).block, 4, "64 channels: 4x4");
        assert_eq!(table.gemm_tiles(3136, 128).block, 8, "128 channels: 8x8");
        let narrow = Tuning { min_cols_for_8x8: Some(64), ..table }.gemm_tiles(3136, 64);
        assert_eq!((narrow.block, narrow.cols()), (8, 64), "64 channels: 8x8 blocks in 64-column tiles");
        assert_eq!(Tuning { min_cols_for_8x8: Some(64), ..table }.gemm_tiles(3136, 65).cols(), 128);
        assert_eq!(Tuning { min_cols_for_8x8: None, ..table }.gemm_tiles(3136, 2048).block, 4);
        // 49 rows x 512 columns: 8x8 tiles of 32x128 make 2 x 4 workgroups.
        assert_eq!(Tiles::for_rows(49).with_8x8_blocks().groups(49, 512), 8);
        let limited = Tuning { min_groups_for_8x8: 9, ..table };
        assert_eq!(limited.gemm_tiles(49, 512).block, 4, "too few 8x8 workgroups");
        assert_eq!(limited.gemm_tiles(3136, 512).block, 8);
        assert_eq!(Tuning { min_groups_for_8x8: 8, ..table }.gemm_tiles(49, 512).block, 8);
    }

    #[test]
    fn large_gpus_keep_their_multiprocessors_busy() {
        let info = |name: &str, device_type| wgpu::AdapterInfo {
            name: name.into(),
            ..wgpu::AdapterInfo::new(device_type, wgpu::Backend::Vulkan)
        };
        let h100 = Tuning::for_adapter(&info("NVIDIA H100 80GB HBM3", wgpu::DeviceType::DiscreteGpu));
        assert_eq!(h100.min_groups_for_8x8, 132);
        assert_eq!(
            Tuning::for_adapter(&info("NVIDIA H100 PCIe", wgpu::DeviceType::DiscreteGpu)).min_groups_for_8x8,
            114
        );
        assert_eq!(
            Tuning::for_adapter(&info("NVIDIA GeForce RTX 3060", wgpu::DeviceType::DiscreteGpu)),
            Tuning::default()
        );
        // ResNet50 at 224, batch 32 (rows = 32 x spatial): layer3's 256-channel and layer4's
        // 512-channel GEMMs take 4x4 blocks, the wide ones keep 8x8.
        for (rows, cols, block) in [
            (32 * 28 * 28, 128, 8),
            (32 * 14 * 14, 256, 4),
            (32 * 14 * 14, 1024, 8),
            (32 * 7 * 7, 512, 4),
            (32 * 7 * 7, 2048, 8),
        ] {
            assert_eq!(h100.gemm_tiles(rows, cols).block, block, "{rows} x {cols}");
        }
    }
}
