//! Index features computed elsewhere and search them on the GPU, through the library API:
//! reference rows and queries as float32 `.npy` (`N x D` and `Q x D`: `lookalike embed`'s
//! output, or numpy's, PyTorch's), results printed as `lookalike search --json` prints them
//! (each neighbour's `path` is its row number).
//!
//! cargo run --release --example search_features -- ROWS.npy QUERIES.npy [-k 10] [--f16]
//!     [--center] [--chunk-rows N] [-o INDEX.safetensors]
//!
//! `-o` also writes the index, so that another tool can check the results against the rows
//! it stores (`.ci/peer-checks` does, with faiss).

use std::path::{Path, PathBuf};

use clap::Parser;
use lookalike::index::{Centring, Entry, Index, Provenance};
use lookalike::ops::matmul::Precision;
use lookalike::search::{neighbours_json, SearchOptions, Searcher};
use lookalike::{npy, Context};

#[derive(Parser)]
struct Args {
    /// Reference rows, N x D float32.
    rows: PathBuf,
    /// Query features, Q x D float32 (raw: centred and normalised like the rows).
    queries: PathBuf,
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Store the rows as f16 (half the bytes per scan).
    #[arg(long)]
    f16: bool,
    /// Subtract the rows' mean before normalising (rows and queries).
    #[arg(long)]
    center: bool,
    /// Reference rows per scanned chunk (default: as many as one storage binding holds).
    #[arg(long)]
    chunk_rows: Option<usize>,
    /// Also write the index here.
    #[arg(short)]
    output: Option<PathBuf>,
}

/// The `N x D` matrix of an .npy file, as (values, D).
fn matrix(path: &Path) -> Result<(Vec<f32>, usize), Box<dyn std::error::Error>> {
    let array = npy::read_f32(path)?;
    match array.shape.as_slice() {
        &[_, dim] if dim > 0 => Ok((array.data, dim)),
        shape => Err(format!("{}: want an N x D matrix, found shape {shape:?}", path.display()).into()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (rows, dim) = matrix(&args.rows)?;
    let (queries, query_dim) = matrix(&args.queries)?;
    if query_dim != dim {
        return Err(format!("queries have {query_dim} values each, the rows {dim}").into());
    }
    let entries = (0..rows.len() / dim).map(|i| Entry::new(i.to_string(), None)).collect();
    let provenance = Provenance {
        model: "features".into(),
        weights_path: String::new(),
        weights_sha256: String::new(),
        preprocess: Default::default(),
    };
    let precision = if args.f16 { Precision::F16 } else { Precision::F32 };
    let index = Index::from_features(
        &rows,
        dim,
        entries,
        precision,
        if args.center { Centring::Mean } else { Centring::Off },
        provenance,
    )?;
    if let Some(path) = &args.output {
        index.save(path)?;
    }

    let options = SearchOptions { chunk_rows: args.chunk_rows, ..SearchOptions::default() };
    let searcher = Searcher::for_features(Context::new()?, &index, options)?;
    eprintln!(
        "{} rows in {} chunks, {} queries, k {}",
        index.len(),
        searcher.chunk_count(),
        queries.len() / dim,
        args.k
    );
    let results = searcher.search_features(&queries, args.k)?;
    let out = results
        .iter()
        .enumerate()
        .map(|(q, neighbours)| neighbours_json(Path::new(&format!("row {q}")), neighbours, &index.entries))
        .collect::<lookalike::Result<Vec<String>>>()?;
    println!("[{}]", out.join(",\n"));
    Ok(())
}
