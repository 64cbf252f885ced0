//! The autotuner's measurements: each candidate launch shape timed on random operands and
//! its result checked against the CPU twin's.

use rayon::prelude::*;

use crate::compare::{same_ranking, Tolerance};
use crate::cpu;
use crate::error::Result;
use crate::gpu::Context;
use crate::model::resnet50::conv_shapes;
use crate::model::FEATURE_DIM;
use crate::ops::conv2d::{conv2d, Conv2dBuffers, Conv2dShape};
use crate::ops::conv2d_coop::conv2d_coop;
use crate::ops::coop::CoopTiles;
use crate::ops::gemv::{gemv, GemvTiles};
use crate::ops::matmul::{MatmulShape, Precision};
use crate::ops::topk::{TopK, TopKInput, TopKOutput};
use crate::ops::Tiles;
use crate::rng::Rng;
use crate::tune::{ConvTiming, CoopTiming, GemvTiming, TopKTiming, TuneOptions, GEMV_LANES, TOPK_WORKGROUPS};

/// Fills the first `len` values of a candidate's output with NaN (rows 0x7fc00000 where
/// they are indices) before it runs, so that whatever it leaves unwritten fails its check
/// instead of passing on the previous candidate's result.
fn poison(ctx: &Context, output: &wgpu::Buffer, len: usize) {
    ctx.write(output, &vec![f32::NAN; len]);
}

/// A candidate's result against the CPU reference's: on a mismatch its time becomes
/// infinite and the reason joins `rejected`.
fn check_candidate(ms: &mut f64, what: String, checked: std::result::Result<(), String>, rejected: &mut Vec<String>) {
    if let Err(why) = checked {
        *ms = f64::INFINITY;
        rejected.push(format!("{what}: {why}"));
    }
}

/// The forward's distinct convolutions, each with how often it occurs.
fn distinct_convs(options: &TuneOptions) -> Vec<(Conv2dShape, usize)> {
    let mut distinct: Vec<(Conv2dShape, usize)> = Vec::new();
    for shape in conv_shapes(options.batch, options.resolution, options.resolution) {
        match distinct.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, count)) => *count += 1,
            None => distinct.push((shape, 1)),
        }
    }
    distinct
}

/// Random input, weight and bias for `shape`, and its output buffer.
struct ConvData {
    input: wgpu::Buffer,
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
    output: wgpu::Buffer,
}

/// A convolution's operands on the host: input, weight (HWIO) and bias.
type ConvOperands = (Vec<f32>, Vec<f32>, Vec<f32>);

impl ConvData {
    fn operands(shape: &Conv2dShape, rng: &mut Rng) -> ConvOperands {
        (rng.normals(shape.input_len(), 1.0), rng.normals(shape.weight_len(), 0.05), rng.normals(shape.out_c, 0.1))
    }

    fn new(ctx: &Context, shape: &Conv2dShape, (input, weight, bias): &ConvOperands) -> Result<Self> {
        Ok(Self {
            input: ctx.upload("tune conv input", input)?,
            weight: ctx.upload("tune conv weight", weight)?,
            bias: ctx.upload("tune conv bias", bias)?,
            output: ctx.storage("tune conv output", shape.output_len())?,
        })
    }

    fn buffers(&self) -> Conv2dBuffers<'_> {
        Conv2dBuffers {
            input: &self.input,
            weight: &self.weight,
            scale: None,
            bias: Some(&self.bias),
            residual: None,
            output: &self.output,
        }
    }
}

/// Each distinct convolution with 4x4 and 8x8 blocks, timed and checked against the CPU's.
pub(super) fn time_convs(
    ctx: &Context, options: &TuneOptions, rng: &mut Rng, rejected: &mut Vec<String>,
) -> Result<Vec<ConvTiming>> {
    let distinct = distinct_convs(options);
    let mut timings = Vec::with_capacity(distinct.len());
    for (shape, count) in distinct {
        let operands = ConvData::operands(&shape, rng);
        let data = ConvData::new(ctx, &shape, &operands)?;
        let (input, weight, bias) = operands;
        let expected = cpu::conv2d::conv2d(&shape, &input, &weight, None, Some(&bias), None, true)?;
        drop((input, weight, bias));
        let buffers = data.buffers();
        let layer = format!(
            "{}x{}x{}x{} -> {}, {}x{}/{}",
            shape.batch, shape.in_h, shape.in_w, shape.in_c, shape.out_c, shape.kernel_h, shape.kernel_w, shape.stride
        );
        let tiles = Tiles::for_rows(shape.m());
        let mut ms = [0.0; 2];
        for (slot, tiles) in ms.iter_mut().zip([tiles, tiles.with_8x8_blocks_for(shape.out_c)]) {
            poison(ctx, &data.output, shape.output_len());
            let d = conv2d(ctx, &shape, &buffers, true, tiles)?;
            *slot = ctx.median_ms(&[&d], options.reps)?;
            let got = ctx.read(&data.output, shape.output_len())?;
            let checked = Tolerance::reordered(&expected).check(&got, &expected).map_err(|m| m.to_string());
            let what = format!("conv {layer} in {0}x{0} blocks", tiles.block);
            check_candidate(slot, what, checked, rejected);
        }
        timings.push(ConvTiming {
            layer,
            count,
            rows: shape.m(),
            cols: shape.out_c,
            groups_8x8: tiles.with_8x8_blocks_for(shape.out_c).groups(shape.m(), shape.out_c),
            ms_4x4: ms[0],
            ms_8x8: ms[1],
        });
    }
    Ok(timings)
}

/// Each candidate layout on the matrix units over the forward's convolutions; none without
/// units. A layout this adapter cannot build (too large a workgroup) is left out.
pub(super) fn time_coop_convs(ctx: &Context, options: &TuneOptions, rng: &mut Rng) -> Result<Vec<CoopTiming>> {
    let Some(units) = ctx.cooperative_matrix() else { return Ok(Vec::new()) };
    let distinct = distinct_convs(options);
    let data = distinct
        .iter()
        .map(|(shape, _)| ConvData::new(ctx, shape, &ConvData::operands(shape, rng)))
        .collect::<Result<Vec<_>>>()?;
    let mut timings = Vec::new();
    'layouts: for tiles in CoopTiles::candidates(units) {
        let mut conv_ms = 0.0;
        for ((shape, count), data) in distinct.iter().zip(&data) {
            let Ok(d) = conv2d_coop(ctx, shape, &data.buffers(), true, tiles) else { continue 'layouts };
            conv_ms += *count as f64 * ctx.median_ms(&[&d], options.reps)?;
        }
        timings.push(CoopTiming { tiles, conv_ms });
    }
    Ok(timings)
}

/// Each GEMV lanes-per-row on f32 and f16 rows, timed and checked against the CPU's dots.
pub(super) fn time_gemv(
    ctx: &Context, options: &TuneOptions, rng: &mut Rng, rejected: &mut Vec<String>,
) -> Result<Vec<GemvTiming>> {
    let rows = options.gemv_rows;
    let values = Rng::normals_parallel(rng.next_u64(), rows * FEATURE_DIM);
    let halves: Vec<half::f16> = values.iter().map(|&x| half::f16::from_f32(x)).collect();
    let query_values = rng.normals(FEATURE_DIM, 1.0);
    let expected_f32: Vec<f32> =
        values.par_chunks(FEATURE_DIM).map(|row| row.iter().zip(&query_values).map(|(x, q)| x * q).sum()).collect();
    let rows_f32 = ctx.upload("tune rows f32", &values)?;
    drop(values);
    let expected_f16: Vec<f32> = halves
        .par_chunks(FEATURE_DIM)
        .map(|row| row.iter().zip(&query_values).map(|(x, q)| x.to_f32() * q).sum())
        .collect();
    let rows_f16 = ctx.upload_pod("tune rows f16", &halves)?;
    drop(halves);
    let query = ctx.upload("tune query", &query_values)?;
    let scores = ctx.storage("tune scores", rows)?;
    let shape = MatmulShape { m: 1, n: rows, k: FEATURE_DIM, b_transposed: true };
    // The f16 rows' dots differ from the f32 rows' by about the tolerance (1e-4 of the
    // largest): their check catches a misread or unwritten score, not a subtle rounding.
    let cases = [(Precision::F32, &rows_f32, &expected_f32), (Precision::F16, &rows_f16, &expected_f16)];
    GEMV_LANES
        .iter()
        .map(|&lanes| {
            let tiles = GemvTiles { workgroup: 256, lanes };
            let mut ms = [0.0; 2];
            for (slot, (precision, refs, expected)) in ms.iter_mut().zip(cases) {
                poison(ctx, &scores, rows);
                let d = gemv(ctx, &shape, &query, refs, precision, &scores, tiles)?;
                *slot = ctx.median_ms(&[&d], options.reps)?;
                let got = ctx.read(&scores, rows)?;
                let checked = Tolerance::reordered(expected).check(&got, expected).map_err(|m| m.to_string());
                check_candidate(slot, format!("gemv {lanes} lanes per row, {precision:?} rows"), checked, rejected);
            }
            Ok(GemvTiming { tiles, f32_ms: ms[0], f16_ms: ms[1] })
        })
        .collect()
}

/// Each top-k workgroup size at k 10 and 100, timed and checked bit for bit against the
/// CPU twin's.
pub(super) fn time_topk(
    ctx: &Context, options: &TuneOptions, rng: &mut Rng, rejected: &mut Vec<String>,
) -> Result<Vec<TopKTiming>> {
    let len = options.topk_len;
    let values = Rng::normals_parallel(rng.next_u64(), len);
    let expected = [cpu::topk::topk(&values, 1, len, 10)?, cpu::topk::topk(&values, 1, len, 100)?];
    let scores = ctx.upload("tune topk scores", &values)?;
    drop(values);
    let (best_scores, best_indices) =
        (ctx.storage("tune topk best scores", 100)?, ctx.storage("tune topk best indices", 100)?);
    let limit = TopK::max_workgroup(ctx);
    TOPK_WORKGROUPS
        .iter()
        .filter(|&&workgroup| workgroup <= limit)
        .map(|&workgroup| {
            let mut ms = [0.0; 2];
            for ((slot, k), expected) in ms.iter_mut().zip([10, 100]).zip(&expected) {
                poison(ctx, &best_scores, k);
                poison(ctx, &best_indices, k);
                let output = TopKOutput::dense(&best_scores, &best_indices, k);
                let select = TopK::new(
                    ctx,
                    TopKInput::Scores { scores: &scores, index_base: 0 },
                    1,
                    len,
                    k,
                    &output,
                    workgroup,
                )?;
                *slot = ctx.median_ms(&select.dispatches().iter().collect::<Vec<_>>(), options.reps)?;
                let got = (ctx.read(&best_scores, k)?, ctx.read_u32(&best_indices, k)?);
                let checked = same_ranking((&got.0, &got.1), (&expected.0, &expected.1));
                check_candidate(slot, format!("top-{k} in workgroups of {workgroup}"), checked, rejected);
            }
            Ok(TopKTiming { workgroup, k10_ms: ms[0], k100_ms: ms[1] })
        })
        .collect()
}
