//! `lookalike tune`: measure this adapter's launch shapes once and cache them.

use std::path::PathBuf;

use lookalike::tune::{self, autotune, TuneOptions};
use lookalike::{Error, Result};

pub struct TuneArgs {
    pub json: bool,
    pub batch: Option<usize>,
    pub resolution: Option<usize>,
    pub gemv_rows: Option<usize>,
    pub topk_len: Option<usize>,
    /// Measure and print only.
    pub no_save: bool,
    /// Also time the convolutions' layouts on the matrix units.
    pub experimental_coop: bool,
}

pub fn run(args: TuneArgs) -> Result<()> {
    let ctx = crate::open_context(args.experimental_coop)?;
    if args.experimental_coop && ctx.cooperative_matrix().is_none() {
        let why = ctx.cooperative_matrix_unavailable().unwrap_or_default();
        eprintln!("no layouts on matrix units to time: {why}");
    }
    let defaults = TuneOptions::for_context(&ctx);
    let options = TuneOptions {
        batch: args.batch.unwrap_or(defaults.batch),
        resolution: args.resolution.unwrap_or(defaults.resolution),
        gemv_rows: args.gemv_rows.unwrap_or(defaults.gemv_rows),
        topk_len: args.topk_len.unwrap_or(defaults.topk_len),
        ..defaults
    };
    if !args.json {
        eprintln!("tuning {} ({:?}): ResNet50 convolutions at {}x{} batch {}, single-query scans of {} rows, top-k of {} scores", ctx.adapter_info().name, ctx.adapter_info().backend, options.resolution, options.resolution, options.batch, options.gemv_rows, options.topk_len);
    }
    let report = autotune(&ctx, &options)?;
    let saved: Option<PathBuf> = if args.no_save {
        None
    } else {
        let dir = tune::cache_dir().ok_or_else(|| {
            Error::InvalidArgument("no cache folder: set LOOKALIKE_CACHE_DIR (or HOME), or pass --no-save".into())
        })?;
        Some(tune::save(&dir, ctx.adapter_info(), &report)?)
    };
    if args.json {
        let out = serde_json::json!({
            "adapter": {"name": ctx.adapter_info().name, "backend": format!("{:?}", ctx.adapter_info().backend), "driver_info": ctx.adapter_info().driver_info},
            "report": report,
            "conv_ms_table": report.conv_ms(&report.table),
            "conv_ms_tuned": report.conv_ms(&report.tuning),
            "saved": saved,
        });
        println!("{out}");
        return Ok(());
    }
    println!("convolutions ({}, median of {}):", report.timer, options.reps);
    println!("  {:<34} {:>5} {:>7} {:>11} {:>10} {:>10}", "layer", "count", "cols", "8x8 groups", "4x4 ms", "8x8 ms");
    for c in &report.convs {
        println!(
            "  {:<34} {:>5} {:>7} {:>11} {:>10.3} {:>10.3}",
            c.layer, c.count, c.cols, c.groups_8x8, c.ms_4x4, c.ms_8x8
        );
    }
    println!("single-query scan, {} rows x 2048 ({}):", options.gemv_rows, report.timer);
    for g in &report.gemv {
        println!("  {:>2} lanes per row: f32 {:8.3} ms, f16 {:8.3} ms", g.tiles.lanes, g.f32_ms, g.f16_ms);
    }
    println!("top-k of {} scores ({}):", options.topk_len, report.timer);
    for t in &report.topk {
        println!("  workgroups of {:>3}: k 10 {:8.3} ms, k 100 {:8.3} ms", t.workgroup, t.k10_ms, t.k100_ms);
    }
    if !report.coop.is_empty() {
        println!("convolutions on the matrix units, counted as in the forward ({}):", report.timer);
        for c in &report.coop {
            println!("  {:?}: {:10.3} ms", c.tiles, c.conv_ms);
        }
    }
    // An autotune that finds every candidate of a kind wrong fails instead (see `autotune`).
    for why in &report.rejected {
        println!("rejected, its result differs from the CPU reference's: {why}");
    }
    let (table, tuned) = (report.conv_ms(&report.table), report.conv_ms(&report.tuning));
    println!("built-in table: {:?} (convolutions {table:.2} ms)", report.table);
    println!("tuned:          {:?} (convolutions {tuned:.2} ms)", report.tuning);
    match saved {
        Some(path) => println!(
            "saved {}: every context on this adapter uses it (LOOKALIKE_TUNING=table ignores it)",
            path.display()
        ),
        None => println!("not saved (--no-save)"),
    }
    Ok(())
}
