//! `--milvus`: `lookalike export`, and `index`, `search` and `classify` with a collection on
//! a Milvus server in place of an index file (the `milvus` feature).

use std::path::{Path, PathBuf};

use crate::args::{CollectionOptions, MilvusArgs};
use lookalike::Result;

/// The options of `lookalike index DIR --milvus ...`.
#[cfg_attr(not(feature = "milvus"), allow(dead_code))]
pub struct FillArgs<'a> {
    pub dir: &'a Path,
    pub weights: Option<&'a Path>,
    pub seed: Option<u64>,
    pub precision: Option<lookalike::Precision>,
    pub center: bool,
    pub batch: usize,
    pub resize: Option<u32>,
    pub crop: Option<u32>,
    pub cpu: bool,
    pub follow_links: bool,
    pub shard: Option<&'a str>,
    pub mean: Option<&'a Path>,
    pub mean_sample: usize,
}

#[cfg(not(feature = "milvus"))]
mod unavailable {
    use super::*;
    use lookalike::Error;

    fn error() -> Error {
        Error::InvalidArgument(
            "this lookalike was built without Milvus support: build it with `cargo build --release --features \
             milvus`"
                .into(),
        )
    }

    pub fn export(_: &Path, _: &MilvusArgs, _: &CollectionOptions, _: usize) -> Result<()> {
        Err(error())
    }

    pub fn fill(_: FillArgs, _: &MilvusArgs, _: &CollectionOptions) -> Result<()> {
        Err(error())
    }

    pub fn search(_: &[PathBuf], _: usize, _: bool, _: Option<&Path>, _: &MilvusArgs, _: &[String]) -> Result<usize> {
        Err(error())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn classify(
        _: &[PathBuf], _: usize, _: Option<&Path>, _: &Path, _: Option<&Path>, _: &MilvusArgs, _: &[String],
    ) -> Result<usize> {
        Err(error())
    }
}
#[cfg(not(feature = "milvus"))]
pub use unavailable::*;

#[cfg(feature = "milvus")]
pub use available::*;

#[cfg(feature = "milvus")]
mod available {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use lookalike::classify::vote;
    use lookalike::index::{paths, Index, LoadedWeights};
    use lookalike::milvus::{
        export_index, fill_from_folder, AnnIndex, AnnKind, Collection, CollectionSearcher, CreateOptions, FillOptions,
        Hit, Server, Shard, VectorType,
    };
    use lookalike::search::{rows_json, Neighbor, NeighbourRow};
    use lookalike::Error;

    use super::*;
    use crate::args::VectorKind;
    use crate::index_cmd::load_weights;
    use crate::search_cmd::{classify_with, print_skipped, progress_bar, search_files};

    /// The server and collection name `--milvus`, `--collection`, `--token` (or
    /// `$MILVUS_TOKEN`) and `--database` name.
    fn server(args: &MilvusArgs) -> Result<(Server, String)> {
        let (Some(uri), Some(name)) = (&args.milvus, &args.collection) else {
            return Err(Error::InvalidArgument("give --milvus URI and --collection NAME".into()));
        };
        let mut server = Server::new(uri.clone());
        server.token = args.token.clone().or_else(|| std::env::var("MILVUS_TOKEN").ok().filter(|t| !t.is_empty()));
        server.database = args.database.clone();
        Ok((server, name.clone()))
    }

    /// `KEY=VALUE` pairs.
    fn key_values(pairs: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
        pairs
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
                _ => Err(Error::InvalidArgument(format!("{flag} {pair:?}: write KEY=VALUE"))),
            })
            .collect()
    }

    fn create_options(o: &CollectionOptions) -> Result<CreateOptions> {
        let index = match &o.index_type {
            Some(kind) => {
                let mut index = AnnIndex::new(AnnKind::parse(kind)?);
                index.params.extend(key_values(&o.index_param, "--index-param")?);
                index.check()?;
                Some(index)
            }
            None => None,
        };
        let vector_type = o.vector_type.map(|v| match v {
            VectorKind::Float => VectorType::Float,
            VectorKind::Float16 => VectorType::Float16,
        });
        Ok(CreateOptions { index, vector_type })
    }

    fn describe(collection: &Collection) -> Result<String> {
        let layout = collection.layout();
        Ok(format!(
            "collection `{}` on {}: {} rows of {} ({}, {:?} vectors, {}), {}",
            collection.name(),
            collection.uri(),
            collection.len()?,
            layout.dim,
            if layout.precision == lookalike::Precision::F16 { "f16" } else { "f32" },
            collection.vector_type(),
            collection.index().kind.name(),
            if layout.mean.is_some() { "centred" } else { "not centred" }
        ))
    }

    /// `lookalike export INDEX --milvus URI --collection NAME`.
    pub fn export(index_path: &Path, milvus: &MilvusArgs, options: &CollectionOptions, batch: usize) -> Result<()> {
        let (server, name) = server(milvus)?;
        let create = create_options(options)?;
        let index = Index::load(index_path)?;
        let bar = RefCell::new(None);
        let progress = |done: usize, total: usize| {
            bar.borrow_mut().get_or_insert_with(|| progress_bar(total, "rows")).set_position(done as u64)
        };
        let exported = export_index(&index, &server, &name, &create, batch, progress);
        if let Some(bar) = bar.borrow().as_ref() {
            bar.finish_and_clear();
        }
        let (collection, report) = exported.map_err(resumable)?;
        let elsewhere = match report.held_elsewhere {
            0 => String::new(),
            n => format!(", {n} held under other ids (filled from a folder)"),
        };
        println!(
            "{}: {} rows; wrote {}, {} already there{elsewhere}, in {:.2} s ({:.0} rows/s written)",
            paths::display(index_path),
            report.rows,
            report.written,
            report.already_there,
            report.seconds,
            report.written as f64 / report.seconds.max(1e-9)
        );
        println!("{}", describe(&collection)?);
        Ok(())
    }

    /// `lookalike index DIR --milvus URI --collection NAME [--shard I/N]`.
    pub fn fill(o: FillArgs, milvus: &MilvusArgs, options: &CollectionOptions) -> Result<()> {
        if o.batch == 0 {
            return Err(Error::InvalidArgument("--batch must be at least 1".into()));
        }
        if o.mean_sample < 2 {
            return Err(Error::InvalidArgument("--mean-sample must be at least 2".into()));
        }
        let (server, name) = server(milvus)?;
        let create = create_options(options)?;
        let shard = o.shard.map(Shard::parse).transpose()?.unwrap_or(Shard::ALL);
        // Without --weights or --seed, an existing collection's own.
        let weights = match (o.weights, o.seed) {
            (None, None) if Collection::exists(&server, &name)? => {
                let collection = Collection::open(&server, &name)?;
                LoadedWeights::for_provenance(&collection.layout().provenance, None, &format!("collection `{name}`"))?
            }
            (weights, seed) => {
                let mut loaded = load_weights(weights, seed)?;
                // Recorded absolute, so every machine's searches can find it.
                if let (Some(path), false) = (weights, loaded.path.starts_with("seed:")) {
                    if let Some(text) = std::path::absolute(path).ok().and_then(|p| p.to_str().map(String::from)) {
                        loaded.path = text;
                    }
                }
                loaded
            }
        };
        let mean = match o.mean {
            Some(path) => {
                let array = lookalike::npy::read_f32(path)?;
                let dim = weights.net.feature_dim();
                if array.data.len() != dim || array.shape.iter().product::<usize>() != dim {
                    return Err(Error::ShapeMismatch {
                        op: format!("centring mean {}", paths::display(path)),
                        expected: format!("[{dim}] (the {}'s width)", weights.net.name()),
                        got: format!("{:?}", array.shape),
                    });
                }
                Some(array.data)
            }
            None => None,
        };
        let gpu = if o.cpu { None } else { Some(crate::open_context(false)?) };
        let tuning = gpu.as_ref().map(crate::tuning);
        let bar = RefCell::new(None);
        let fill_options = FillOptions {
            shard,
            precision: o.precision,
            centred: (o.center || mean.is_some()).then_some(true),
            mean,
            mean_sample: o.mean_sample,
            preprocess: None,
            resize: o.resize,
            crop: o.crop,
            batch_size: o.batch,
            create,
            follow_links: o.follow_links,
            tuning,
            progress: Box::new(|done, total| {
                bar.borrow_mut().get_or_insert_with(|| progress_bar(total, "images")).set_position(done as u64)
            }),
        };
        let filled = fill_from_folder(gpu, &weights, o.dir, &server, &name, fill_options);
        if let Some(bar) = bar.borrow().as_ref() {
            bar.finish_and_clear();
        }
        let (collection, report) = filled.map_err(resumable)?;
        print_skipped("file(s) skipped", &report.skipped);
        println!(
            "{}: shard {shard}: {} of the folder's {} images; wrote {}, {} already there, in {:.2} s{}{}",
            paths::display(o.dir),
            report.shard_files,
            report.folder_files,
            report.written,
            report.already_there,
            report.seconds,
            if report.created { "; made the collection" } else { "" },
            if report.computed_mean { " and computed its centring mean" } else { "" }
        );
        println!("{}", describe(&collection)?);
        Ok(())
    }

    fn open_searcher(milvus: &MilvusArgs, weights: Option<&Path>, params: &[String]) -> Result<CollectionSearcher> {
        let (server, name) = server(milvus)?;
        let params = key_values(params, "--search-param")?;
        let collection = Collection::open(&server, &name)?;
        let loaded =
            LoadedWeights::for_provenance(&collection.layout().provenance, weights, &format!("collection `{name}`"))?;
        let ctx = crate::open_context(false)?;
        let tuning = crate::tuning(&ctx);
        Ok(CollectionSearcher::new(ctx, &loaded, collection, Some(tuning))?.with_search_params(params))
    }

    /// As for an index: k from 1 to the rows it holds (and Milvus's 16,384).
    fn check_k(searcher: &CollectionSearcher, k: usize) -> Result<()> {
        let rows = searcher.collection().len()?;
        if k == 0 || k as u64 > rows || k > 16_384 {
            return Err(Error::InvalidArgument(format!(
                "-k must be between 1 and the {rows} images in collection `{}` (and at most 16384), got {k}",
                searcher.collection().name()
            )));
        }
        Ok(())
    }

    /// Query images, none of them an index file (the collection takes its place).
    fn check_queries(images: &[PathBuf]) -> Result<()> {
        let index_like =
            |p: &PathBuf| p.extension().and_then(|e| e.to_str()).is_some_and(|e| ["index", "safetensors"].contains(&e));
        if let Some(path) = images.iter().find(|p| index_like(p)) {
            return Err(Error::InvalidArgument(format!(
                "{} looks like an index file: with --milvus the collection takes its place, so give only query \
                 images",
                paths::display(path)
            )));
        }
        Ok(())
    }

    /// The error of an export or fill cut off part-way, saying that a second run completes it.
    fn resumable(e: Error) -> Error {
        match e {
            Error::Milvus { uri, action, reason } => Error::Milvus {
                uri,
                action,
                reason: format!("{reason}; what was written is kept: run the same command again to complete it"),
            },
            other => other,
        }
    }

    /// `lookalike search --milvus URI --collection NAME IMAGE... -k K`. Query images that
    /// cannot be read or used are listed and left out; returns how many.
    pub fn search(
        images: &[PathBuf], k: usize, json: bool, weights: Option<&Path>, milvus: &MilvusArgs, params: &[String],
    ) -> Result<usize> {
        if images.is_empty() {
            return Err(Error::InvalidArgument("give query images".into()));
        }
        check_queries(images)?;
        let mut searcher = open_searcher(milvus, weights, params)?;
        check_k(&searcher, k)?;
        let preprocess = searcher.collection().layout().provenance.preprocess;
        let (answers, skipped) = search_files(images, &preprocess, false, &mut |run| searcher.search_images(run, k))?;
        if json {
            let out = answers
                .iter()
                .map(|a| {
                    let rows: Vec<NeighbourRow> = a.neighbours.iter().map(row_of).collect();
                    rows_json(&images[a.query], &rows)
                })
                .collect::<Result<Vec<String>>>()?;
            println!("[{}]", out.join(","));
        } else {
            for answer in &answers {
                println!("{}", paths::display(&images[answer.query]));
                for (rank, hit) in answer.neighbours.iter().enumerate() {
                    let label = hit.label.as_deref().map(|l| format!("  [{}]", paths::one_line(l))).unwrap_or_default();
                    println!("  {:>3}. {:+.4}  {}{label}", rank + 1, hit.score, paths::one_line(&hit.path));
                }
            }
        }
        Ok(skipped)
    }

    fn row_of(hit: &Hit) -> NeighbourRow<'_> {
        NeighbourRow { index: hit.id as u64, path: Path::new(&hit.path), label: hit.label.as_deref(), score: hit.score }
    }

    /// `lookalike classify --milvus URI --collection NAME IMAGE... [--eval DIR]`.
    pub fn classify(
        images: &[PathBuf], k: usize, eval: Option<&Path>, confusion: &Path, weights: Option<&Path>,
        milvus: &MilvusArgs, params: &[String],
    ) -> Result<usize> {
        check_queries(images)?;
        let mut searcher = open_searcher(milvus, weights, params)?;
        check_k(&searcher, k)?;
        let preprocess = searcher.collection().layout().provenance.preprocess;
        let mut predict = |run: &[image::RgbImage]| -> Result<Vec<Option<String>>> {
            Ok(searcher
                .search_images(run, k)?
                .iter()
                .map(|hits| {
                    let labels: Vec<Option<String>> = hits.iter().map(|h| h.label.clone()).collect();
                    let neighbours: Vec<Neighbor> =
                        hits.iter().enumerate().map(|(index, h)| Neighbor { index, score: h.score }).collect();
                    vote(&neighbours, &labels)
                })
                .collect())
        };
        // The collection's classes are not listed without a scan of it: the matrix takes
        // the evaluated ones, in order, and grows with any other class predicted.
        classify_with(images, eval, confusion, &preprocess, Vec::new(), &mut predict)
    }
}
