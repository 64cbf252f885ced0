//! One-time autotune of the launch shapes in [`Tuning`], cached on disk per adapter.
//!
//! [`autotune`] times the choices `Tuning` makes on the shapes lookalike runs: every
//! convolution of a ResNet50 forward with 4x4 and with 8x8 blocks per invocation (which
//! sets the channel count and grid size from which 8x8 blocks pay), the single-query
//! scan with each GEMV lanes-per-row, and the top-k of one row of scores with each workgroup
//! size; on a context with matrix units, also each candidate workgroup layout of the
//! convolutions on them. Each candidate's result is checked against the CPU reference's
//! (convolutions and scans within `compare::Tolerance::reordered`, top-k bit for bit): one that
//! differs is reported in [`TuneReport::rejected`] and never chosen, since the tests run on
//! lavapipe only and a race may show on a real GPU alone (the matrix-unit layouts, f16 and
//! experimental, are timed unchecked; `bench --experimental-coop` reports their distance).
//! [`save`] writes the result to the cache folder; [`load_for`] reads it back for a
//! context on the same adapter, driver, lookalike version and shader sources, else gives
//! the built-in table ([`Tuning::for_adapter`]). Nothing reads the cache implicitly: the
//! command line calls [`load_for`] and hands the result to whatever dispatches.
//!
//! The cache folder is `$LOOKALIKE_CACHE_DIR`, else `$XDG_CACHE_HOME/lookalike`, else the
//! platform's user cache folder (`~/.cache/lookalike` on Linux). `LOOKALIKE_TUNING=table`
//! ignores cached files.

mod cache;
mod measure;

use serde::Serialize;

pub use cache::{cache_dir, cache_path, load, load_for, save, TuningSource};

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::model::FEATURE_DIM;
use crate::ops::coop::CoopTiles;
use crate::ops::gemv::GemvTiles;
use crate::ops::Tuning;
use crate::rng::Rng;
use measure::{time_convs, time_coop_convs, time_gemv, time_topk};

/// What one autotune run measures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TuneOptions {
    /// Images per ResNet50 forward whose convolutions are timed.
    pub batch: usize,
    /// Their height and width.
    pub resolution: usize,
    /// Reference rows of 2048 values in the single-query scans.
    pub gemv_rows: usize,
    /// Scores per top-k selection timed.
    #[serde(default)]
    pub topk_len: usize,
    /// Timed runs per candidate (median), after one warm-up.
    pub reps: usize,
}

impl TuneOptions {
    /// ResNet50 at 224 (batch 8 on GPUs, 1 on software adapters, which are ~1000x slower)
    /// and as many scan rows as one storage binding holds, up to 256k.
    pub fn for_context(ctx: &Context) -> Self {
        let cpu = ctx.is_cpu();
        let binding_rows = ctx.max_binding_bytes() as usize / (4 * FEATURE_DIM);
        Self {
            batch: if cpu { 1 } else { 8 },
            resolution: 224,
            gemv_rows: binding_rows.min(if cpu { 16_384 } else { 262_144 }).max(1),
            topk_len: if cpu { 100_000 } else { 1_000_000 },
            reps: if cpu { 2 } else { 7 },
        }
    }
}

/// One distinct convolution of the forward, timed with each block size.
#[derive(Debug, Clone, Serialize)]
pub struct ConvTiming {
    /// `batch x h x w x in_c -> out_c, kernel/stride`.
    pub layer: String,
    /// How many times the forward runs this shape.
    pub count: usize,
    /// Output rows (pixels) of its implicit GEMM.
    pub rows: usize,
    /// Output columns (channels) of its implicit GEMM.
    pub cols: usize,
    /// Workgroups of its 8x8-block grid.
    pub groups_8x8: usize,
    /// Milliseconds per launch with 4x4 blocks.
    pub ms_4x4: f64,
    /// Milliseconds per launch with 8x8 blocks.
    pub ms_8x8: f64,
}

/// One GEMV launch shape on a single-query scan.
#[derive(Debug, Clone, Serialize)]
pub struct GemvTiming {
    /// The launch shape.
    pub tiles: GemvTiles,
    /// Milliseconds over f32 rows.
    pub f32_ms: f64,
    /// Milliseconds over f16 rows.
    pub f16_ms: f64,
}

/// One top-k workgroup size on a single row of scores.
#[derive(Debug, Clone, Serialize)]
pub struct TopKTiming {
    /// Invocations per workgroup.
    pub workgroup: u32,
    /// Milliseconds for k = 10.
    pub k10_ms: f64,
    /// Milliseconds for k = 100.
    pub k100_ms: f64,
}

/// One workgroup layout of the convolutions on the matrix units: the forward's
/// convolutions, each weighted by how often it occurs, timed with it.
#[derive(Debug, Clone, Serialize)]
pub struct CoopTiming {
    /// The layout.
    pub tiles: CoopTiles,
    /// Milliseconds of the weighted convolutions.
    pub conv_ms: f64,
}

/// An autotune run: the measurements and the [`Tuning`] they give.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    /// The launch shapes chosen.
    pub tuning: Tuning,
    /// What the built-in table would have chosen, for comparison.
    pub table: Tuning,
    /// What was measured.
    pub options: TuneOptions,
    /// "timestamps" (GPU time) or "wall clock" (submit + wait).
    pub timer: &'static str,
    /// Each distinct convolution of the forward.
    pub convs: Vec<ConvTiming>,
    /// Each GEMV launch shape.
    pub gemv: Vec<GemvTiming>,
    /// Each top-k workgroup size.
    pub topk: Vec<TopKTiming>,
    /// With matrix units (`tune --experimental-coop`): each layout that builds on them.
    pub coop: Vec<CoopTiming>,
    /// Candidates whose results differed from the CPU reference's, and how: each is timed as
    /// infinitely slow (`null` in JSON), so never chosen.
    pub rejected: Vec<String>,
}

impl TuneReport {
    /// Milliseconds of the forward's convolutions with the blocks `tuning` gives each.
    pub fn conv_ms(&self, tuning: &Tuning) -> f64 {
        self.convs
            .iter()
            .map(|c| c.count as f64 * if tuning.gemm_tiles(c.rows, c.cols).block == 8 { c.ms_8x8 } else { c.ms_4x4 })
            .sum()
    }

    /// Fails when the chosen launch shapes still include a rejected candidate (infinitely
    /// slow): every candidate of a kind was wrong, or, for the convolutions, no thresholds
    /// avoid all the wrong ones. Nothing is then safe to cache.
    fn check_chosen(&self) -> Result<()> {
        let gemv = self.gemv.iter().find(|g| g.tiles == self.tuning.gemv).map_or(0.0, |g| g.f32_ms + g.f16_ms);
        let topk =
            self.topk.iter().find(|t| t.workgroup == self.tuning.topk_workgroup).map_or(0.0, |t| t.k10_ms + t.k100_ms);
        if [self.conv_ms(&self.tuning), gemv, topk].iter().all(|ms| ms.is_finite()) {
            return Ok(());
        }
        Err(Error::Gpu {
            context: "autotune".into(),
            message: format!(
                "no candidate computes every case right on this adapter:\n  {}",
                self.rejected.join("\n  ")
            ),
        })
    }
}

/// GEMV lanes per row tried (workgroups of 256).
pub const GEMV_LANES: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Top-k workgroup sizes tried (those within the device's limit). A 2048-entry block has 1024
/// compare-exchanges per step: 512 and 1024 invocations take one or two each, which may hide
/// a large GPU's workgroup-memory latency better when a few blocks hold the whole row.
pub const TOPK_WORKGROUPS: [u32; 7] = [16, 32, 64, 128, 256, 512, 1024];

/// Times the candidates on `ctx` and picks the fastest (see the module docs). Takes seconds
/// on a GPU; about a minute on lavapipe, most of it compiling the 8x8 pipelines.
pub fn autotune(ctx: &Context, options: &TuneOptions) -> Result<TuneReport> {
    if options.batch == 0
        || options.resolution < crate::model::MIN_INPUT
        || options.gemv_rows == 0
        || options.topk_len < 100
    {
        return Err(Error::InvalidArgument(format!(
            "autotune: {options:?} needs a batch, at least {} pixels, scan rows and at least 100 top-k scores",
            crate::model::MIN_INPUT
        )));
    }
    let mut rng = Rng::new(7);
    let mut rejected = Vec::new();
    let convs = time_convs(ctx, options, &mut rng, &mut rejected)?;
    let gemv = time_gemv(ctx, options, &mut rng, &mut rejected)?;
    let topk = time_topk(ctx, options, &mut rng, &mut rejected)?;
    let coop = time_coop_convs(ctx, options, &mut rng)?;
    let table = Tuning::for_adapter(ctx.adapter_info());
    let timer = if ctx.has_timestamps() { "timestamps" } else { "wall clock" };
    let mut report = TuneReport { tuning: table, table, options: *options, timer, convs, gemv, topk, coop, rejected };
    let (min_cols_for_8x8, min_groups_for_8x8) = best_thresholds(&report);
    let topk_workgroup = fastest_topk(&report.topk).unwrap_or(table.topk_workgroup);
    let coop_tiles = fastest_coop(&report.coop);
    report.tuning =
        Tuning { gemv: fastest_gemv(&report.gemv), min_cols_for_8x8, min_groups_for_8x8, topk_workgroup, coop_tiles };
    report.check_chosen()?;
    Ok(report)
}

/// The layout with the least convolution time on the matrix units.
fn fastest_coop(timings: &[CoopTiming]) -> Option<CoopTiles> {
    timings.iter().min_by(|a, b| a.conv_ms.total_cmp(&b.conv_ms)).map(|t| t.tiles)
}

/// The top-k workgroup size with the least k 10 + k 100 time.
fn fastest_topk(timings: &[TopKTiming]) -> Option<u32> {
    timings.iter().min_by(|a, b| (a.k10_ms + a.k100_ms).total_cmp(&(b.k10_ms + b.k100_ms))).map(|t| t.workgroup)
}

/// The launch shape with the least f32 + f16 time.
fn fastest_gemv(timings: &[GemvTiming]) -> GemvTiles {
    timings
        .iter()
        .min_by(|a, b| (a.f32_ms + a.f16_ms).total_cmp(&(b.f32_ms + b.f16_ms)))
        .map_or_else(GemvTiles::default, |t| t.tiles)
}

/// The 8x8 thresholds (channel counts and grid sizes that occur, or never / no limit) with
/// the least total convolution time; ties go to the lower thresholds.
fn best_thresholds(report: &TuneReport) -> (Option<usize>, usize) {
    let mut cols: Vec<Option<usize>> = report.convs.iter().map(|c| Some(c.cols)).collect();
    cols.sort_unstable();
    cols.dedup();
    cols.push(None);
    let mut groups: Vec<usize> = std::iter::once(0).chain(report.convs.iter().map(|c| c.groups_8x8)).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut best = (f64::INFINITY, (None, 0));
    for &min_cols_for_8x8 in &cols {
        for &min_groups_for_8x8 in &groups {
            let ms = report.conv_ms(&Tuning { min_cols_for_8x8, min_groups_for_8x8, ..report.table });
            if ms < best.0 {
                best = (ms, (min_cols_for_8x8, min_groups_for_8x8));
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Tiles;

    fn conv(cols: usize, count: usize, ms_4x4: f64, ms_8x8: f64) -> ConvTiming {
        conv_at(100, cols, count, ms_4x4, ms_8x8)
    }

    fn conv_at(rows: usize, cols: usize, count: usize, ms_4x4: f64, ms_8x8: f64) -> ConvTiming {
        let groups_8x8 = Tiles::for_rows(rows).with_8x8_blocks_for(cols).groups(rows, cols);
        ConvTiming { layer: format!("{rows}x{cols}"), count, rows, cols, groups_8x8, ms_4x4, ms_8x8 }
    }

    fn report(convs: Vec<ConvTiming>, gemv: Vec<GemvTiming>) -> TuneReport {
        let options = TuneOptions { batch: 1, resolution: 224, gemv_rows: 1, topk_len: 100, reps: 1 };
        TuneReport {
            tuning: Tuning::default(),
            table: Tuning::default(),
            options,
            timer: "wall clock",
            convs,
            gemv,
            topk: vec![],
            coop: vec![],
            rejected: vec![],
        }
    }

    #[test]
    fn wrong_candidates_are_never_chosen_and_all_wrong_is_an_error() {
        let wrong = f64::INFINITY;
        // 8x8 is fastest everywhere but wrong on the narrowest layer: the thresholds start
        // above it.
        let mut r = report(vec![conv(64, 1, 2.0, wrong), conv(2048, 1, 2.0, 1.0)], vec![]);
        let (min_cols_for_8x8, min_groups_for_8x8) = best_thresholds(&r);
        r.tuning = Tuning { min_cols_for_8x8, min_groups_for_8x8, ..r.table };
        assert_eq!(r.conv_ms(&r.tuning), 1.0 + 2.0);
        assert!(r.check_chosen().is_ok());
        // 4x4 wrong on one layer, 8x8 on another: no threshold is right everywhere.
        let mut r = report(vec![conv(64, 1, wrong, 1.0), conv(2048, 1, 2.0, wrong)], vec![]);
        let (min_cols_for_8x8, min_groups_for_8x8) = best_thresholds(&r);
        r.tuning = Tuning { min_cols_for_8x8, min_groups_for_8x8, ..r.table };
        r.rejected = vec!["conv 64 in 4x4 blocks: ...".into(), "conv 2048 in 8x8 blocks: ...".into()];
        let err = r.check_chosen().unwrap_err().to_string();
        assert!(err.contains("conv 64 in 4x4 blocks") && err.contains("conv 2048 in 8x8"), "{err}");
        // Every top-k workgroup wrong.
        let mut r = report(vec![], vec![]);
        r.topk = vec![TopKTiming { workgroup: 32, k10_ms: 1.0, k100_ms: wrong }];
        r.tuning.topk_workgroup = fastest_topk(&r.topk).unwrap();
        assert!(r.check_chosen().is_err());
    }

    #[test]
    fn thresholds_minimise_the_counted_total() {
        // 8x8 loses at 64 channels, wins from 128 on (counts weight the repeats).
        let r = report(vec![conv(64, 3, 1.0, 2.0), conv(128, 4, 2.0, 1.0), conv(256, 6, 2.0, 1.5)], vec![]);
        assert_eq!(best_thresholds(&r), (Some(128), 0));
        let with =
            |min_cols_for_8x8, min_groups_for_8x8| Tuning { min_cols_for_8x8, min_groups_for_8x8, ..Tuning::default() };
        assert_eq!(r.conv_ms(&with(Some(128), 0)), 3.0 + 4.0 + 9.0);
        assert_eq!(r.conv_ms(&with(None, 0)), 3.0 + 8.0 + 12.0);
        // 8x8 never wins: never use it.
        let r = report(vec![conv(64, 1, 1.0, 2.0), conv(2048, 1, 1.0, 1.5)], vec![]);
        assert_eq!(best_thresholds(&r).0, None);
        // 8x8 always wins: from the narrowest layer on.
        let r = report(vec![conv(64, 1, 2.0, 1.0), conv(2048, 1, 2.0, 1.5)], vec![]);
        assert_eq!(best_thresholds(&r), (Some(64), 0));
        // 8x8 wins on big grids and loses on small ones of the same width: a grid limit.
        // 100 rows x 512 make 16 workgroups of 32x128 (Tiles::for_rows), 10,000 rows 316.
        let (small, big) = (conv_at(100, 512, 1, 1.0, 2.0), conv_at(10_000, 512, 1, 4.0, 2.0));
        assert_eq!((small.groups_8x8, big.groups_8x8), (16, 316));
        let r = report(vec![small, big], vec![]);
        let (min_cols, min_groups) = best_thresholds(&r);
        assert_eq!(min_cols, Some(512));
        assert!(min_groups > 16 && min_groups <= 316, "{min_groups}");
        assert_eq!(r.conv_ms(&with(min_cols, min_groups)), 1.0 + 2.0);
    }

    #[test]
    fn topk_takes_the_least_total_time() {
        let t = |workgroup, k10_ms, k100_ms| TopKTiming { workgroup, k10_ms, k100_ms };
        assert_eq!(fastest_topk(&[t(16, 3.0, 9.0), t(32, 2.0, 8.0), t(256, 1.0, 10.0)]), Some(32));
        assert_eq!(fastest_topk(&[]), None);
    }

    #[test]
    fn coop_takes_the_least_convolution_time() {
        let t = |sg_rows, conv_ms| CoopTiming { tiles: CoopTiles { sg_rows, sg_cols: 2, tile_k: 32 }, conv_ms };
        assert_eq!(fastest_coop(&[t(2, 3.0), t(4, 2.0), t(1, 2.5)]).map(|c| c.sg_rows), Some(4));
        assert_eq!(fastest_coop(&[]), None);
    }

    #[test]
    fn gemv_takes_the_least_total_time() {
        let t = |lanes, f32_ms, f16_ms| GemvTiming { tiles: GemvTiles { workgroup: 256, lanes }, f32_ms, f16_ms };
        assert_eq!(fastest_gemv(&[t(1, 3.0, 2.0), t(8, 2.0, 1.5), t(16, 1.0, 3.0)]).lanes, 8);
    }
}
