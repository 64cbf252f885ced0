//! What verifying an index costs on load: writes an index of seeded unit rows, then times
//! `Index::load` (which verifies every row's norm and CRC-32, the mean and the metadata)
//! from the page cache, the row verification alone, and a plain read of the file's bytes.
//!
//! cargo run --release --example index_load -- [--rows 1000000] [--dim 2048] [--f16] [--center]
//!     [--repeat 3] [-o /tmp/index-load.safetensors] [--keep] [--reuse]

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use lookalike::cpu::preprocess::Preprocess;
use lookalike::index::{verify, Embeddings, Entry, Index, Provenance};
use lookalike::rng::Rng;
use rayon::prelude::*;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    #[arg(long, default_value_t = 2048)]
    dim: usize,
    /// Store the rows as f16 (else f32).
    #[arg(long)]
    f16: bool,
    /// Store a `mean` too, as `--center` indexes do.
    #[arg(long)]
    center: bool,
    /// Timed loads (the fastest is reported, as page-cache reads vary).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[arg(short, default_value = "/tmp/index-load.safetensors")]
    output: PathBuf,
    /// Leave the file in place afterwards.
    #[arg(long)]
    keep: bool,
    /// Time the index already at `-o` (a `--keep` run's) instead of writing one.
    #[arg(long)]
    reuse: bool,
}

/// Seeded unit rows, generated a row at a time so the widest copy is the stored matrix.
fn unit_rows(rows: usize, dim: usize, f16: bool) -> Embeddings {
    let row = |i: usize| {
        let mut rng = Rng::new(i as u64);
        let mut v: Vec<f32> = (0..dim).map(|_| rng.range(-1.0, 1.0)).collect();
        let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        v
    };
    if f16 {
        let mut out = vec![half::f16::ZERO; rows * dim];
        out.par_chunks_mut(dim)
            .enumerate()
            .for_each(|(i, r)| r.iter_mut().zip(row(i)).for_each(|(o, x)| *o = half::f16::from_f32(x)));
        Embeddings::F16(out)
    } else {
        let mut out = vec![0.0f32; rows * dim];
        out.par_chunks_mut(dim).enumerate().for_each(|(i, r)| r.copy_from_slice(&row(i)));
        Embeddings::F32(out)
    }
}

/// The fastest of `repeat` runs of `f`, in seconds.
fn fastest<T>(repeat: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..repeat.max(1))
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Writes an index of seeded unit rows (and a mean with `--center`) to `-o`.
fn write_index(a: &Args) -> lookalike::Result<()> {
    let start = Instant::now();
    let index = Index {
        dim: a.dim,
        embeddings: unit_rows(a.rows, a.dim, a.f16),
        mean: a.center.then(|| vec![0.25; a.dim]),
        entries: (0..a.rows).map(|i| Entry::new(format!("/photos/{i:07}.jpg"), None)).collect(),
        provenance: Provenance {
            model: "resnet50".into(),
            weights_path: "resnet50.safetensors".into(),
            weights_sha256: "seed:0".into(),
            preprocess: Preprocess::default(),
        },
    };
    println!("generated in {:.2} s", start.elapsed().as_secs_f64());
    let start = Instant::now();
    index.save(&a.output)?;
    println!("save (with row CRC-32s): {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> lookalike::Result<()> {
    let a = Args::parse();
    if !a.reuse {
        write_index(&a)?;
    }
    let bytes = std::fs::metadata(&a.output).map_err(|e| lookalike::Error::io(&a.output, e))?.len() as f64;
    // One index in memory at a time, so the file stays in the page cache beside it. The
    // first load brings the file there.
    let (rows, dim, precision) = Index::load(&a.output).map(|i| (i.len(), i.dim, i.embeddings.precision()))?;
    println!("{}: {rows} x {dim} {precision:?}, {:.2} GB", a.output.display(), bytes / 1e9);
    let load = fastest(a.repeat, || Index::load(&a.output).map(|i| i.len()));
    let loaded = Index::load(&a.output)?;
    let crcs = verify::row_crc32(&loaded.embeddings, dim);
    let rows_crc = fastest(a.repeat, || verify::check_rows(&a.output, &loaded.embeddings, dim, Some(&crcs)));
    let rows_only = fastest(a.repeat, || verify::check_rows(&a.output, &loaded.embeddings, dim, None));
    drop(loaded);
    let read = fastest(a.repeat, || std::fs::read(&a.output).map(|b| b.len()));
    let threads = rayon::current_num_threads();
    println!("Index::load, verified:           {load:.3} s ({:.2} GB/s)", bytes / load / 1e9);
    println!("  of which rows (norm + CRC-32): {rows_crc:.3} s on {threads} threads");
    println!("  rows, norm only (no CRC-32):   {rows_only:.3} s");
    println!("Index::load less row checks:     {:.3} s", load - rows_crc);
    println!("std::fs::read of the file:       {read:.3} s");
    if !a.keep {
        std::fs::remove_file(&a.output).map_err(|e| lookalike::Error::io(&a.output, e))?;
    }
    Ok(())
}
