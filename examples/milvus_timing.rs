//! How fast an index goes to a Milvus server and how long a query takes there, beside
//! lookalike's own scan of the same rows (the figures of README's "Beyond one machine").
//!
//! cargo run --release --features milvus --example milvus_timing -- --milvus URI
//!     [--rows 20000] [--dim 2048] [--f16] [--queries 16] [--batch 1000] [-k 10]
//!
//! Makes seeded clustered unit rows (no images: the GPU work of embedding is the same
//! either way and timed by `lookalike bench`), exports them to a fresh collection
//! `lookalike_timing_<pid>` (FLAT), then times: the export (rows/s), one query at a time and
//! a batch of queries through the server, and the same searches by lookalike's GPU scan and
//! its CPU reference; and checks the server's ids and scores against the scan's. The
//! collection is left on the server (drop it with pymilvus, or reuse the name).

use std::time::Instant;

use clap::Parser;
use lookalike::index::{Centring, Entry, Index, Provenance};
use lookalike::milvus::{export_index, CreateOptions, Server};
use lookalike::rng::Rng;
use lookalike::search::{search_features_cpu, SearchOptions, Searcher};
use lookalike::{Context, Precision, Preprocess};

#[derive(Parser)]
struct Args {
    /// The server, `http://HOST:PORT`.
    #[arg(long)]
    milvus: String,
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    #[arg(long, default_value_t = 2048)]
    dim: usize,
    /// Store the rows as f16.
    #[arg(long)]
    f16: bool,
    /// Queries of the batched search.
    #[arg(long, default_value_t = 16)]
    queries: usize,
    /// Rows per upsert.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    #[arg(short, default_value_t = 10)]
    k: usize,
}

/// Median wall-clock seconds of `runs` calls.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (n, dim) = (args.rows, args.dim);
    // Clustered rows, as embeddings are: 64 centres, each row near one.
    let mut rng = Rng::new(7);
    let centres = rng.normals(64 * dim, 1.0);
    let noise = rng.normals(n * dim, 0.5);
    let features: Vec<f32> = (0..n * dim).map(|i| centres[(i / dim % 64) * dim + i % dim] + noise[i]).collect();
    let entries = (0..n).map(|i| Entry::new(format!("/images/{}/{i}.jpg", i % 64), Some(format!("c{}", i % 64))));
    let provenance = Provenance {
        model: "features".into(),
        weights_path: "seeded rows".into(),
        weights_sha256: "seed:7".into(),
        preprocess: Preprocess::default(),
    };
    let precision = if args.f16 { Precision::F16 } else { Precision::F32 };
    let index = Index::from_features(&features, dim, entries.collect(), precision, Centring::Off, provenance)?;
    let queries = Rng::new(8).normals(args.queries * dim, 1.0);
    let units = lookalike::cpu::l2_normalize(&queries, args.queries, dim, None)?;

    let name = format!("lookalike_timing_{}", std::process::id());
    let server = Server::new(args.milvus.clone());
    let (collection, report) = export_index(&index, &server, &name, &CreateOptions::default(), args.batch, |_, _| {})?;
    let mib = (n * dim * 4) as f64 / (1 << 20) as f64;
    println!(
        "export: {n} rows of {dim} ({precision:?}, sent as {:?}, {mib:.0} MiB as f32) in {:.2} s: {:.0} rows/s, {:.1} MiB/s",
        collection.vector_type(),
        report.seconds,
        n as f64 / report.seconds,
        mib / report.seconds
    );

    let none = Default::default();
    let one = &units[..dim];
    let server_one = median_seconds(9, || drop(collection.search_units(one, args.k, &none)));
    let server_batch = median_seconds(5, || drop(collection.search_units(&units, args.k, &none)));
    let ctx = Context::new()?;
    let searcher = Searcher::for_features(ctx.clone(), &index, SearchOptions::default())?;
    let gpu_one = median_seconds(9, || drop(searcher.search_features(&queries[..dim], args.k)));
    let gpu_batch = median_seconds(5, || drop(searcher.search_features(&queries, args.k)));
    let cpu_one = median_seconds(9, || drop(search_features_cpu(&index, &queries[..dim], args.k)));
    let cpu_batch = median_seconds(5, || drop(search_features_cpu(&index, &queries, args.k)));
    let q = args.queries;
    println!("adapter: {}", ctx.adapter_info().name);
    println!("query latency, k = {}, median (1 query | {q} queries):", args.k);
    println!("  through the server (FLAT)  {:8.2} ms | {:8.2} ms", server_one * 1e3, server_batch * 1e3);
    println!("  lookalike GPU scan         {:8.2} ms | {:8.2} ms", gpu_one * 1e3, gpu_batch * 1e3);
    println!("  lookalike CPU reference    {:8.2} ms | {:8.2} ms", cpu_one * 1e3, cpu_batch * 1e3);

    // The same answers: ids equal but for near-ties, scores within 1e-5.
    let remote = collection.search_units(&units, args.k, &none)?;
    let local = searcher.search_features(&queries, args.k)?;
    let mut worst = 0.0f32;
    for (r, l) in remote.iter().zip(&local) {
        for (hit, n) in r.iter().zip(l) {
            worst = worst.max((hit.score - n.score).abs());
            if hit.id as usize != n.index && (hit.score - n.score).abs() > 1e-5 {
                return Err(format!(
                    "rank differs: server id {} ({}) vs scan row {} ({})",
                    hit.id, hit.score, n.index, n.score
                )
                .into());
            }
        }
    }
    println!("server vs GPU scan: largest score difference {worst:.2e}");
    Ok(())
}
