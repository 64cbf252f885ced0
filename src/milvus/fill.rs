//! Images embedded on this machine and written straight into a collection, one shard of a
//! folder per machine.
//!
//! N machines that see one folder (a shared mount, or copies) each run one shard: a file
//! belongs to shard `hash(relative path) mod N`, its path relative to the folder, so the
//! split is the same on every machine wherever the folder is mounted, and stays put when
//! files are added. A file is stored by its real path (absolute, links resolved), so the
//! rows of one shard name the same files on every machine that mounts the folder at the
//! same place; a machine that mounts it elsewhere stores its files again under its own
//! paths. A file's id is a hash of its stored path in `[2^62, 2^63)`,
//! above the row ids of exported indexes; where two paths meet on one id the later one
//! takes the next hash, so ids are unique across shards without the machines talking to
//! each other. A file the collection already holds (by path) is not embedded again: run
//! a shard again after adding files, or after an interruption, and it writes only what is
//! missing.
//!
//! Centring needs one mean for every shard: the run that makes the collection takes it
//! from `--mean` or computes it from an evenly spaced sample of the whole folder (not of
//! its shard), and records it; every later run uses the recorded mean, and a different
//! `--mean` is refused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::collection::{Collection, CreateOptions, RowBatch};
use super::connection::Server;
use super::layout::{Layout, MAX_TEXT};
use crate::cpu::preprocess::Preprocess;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::index::{mean_row, normalize_rows, scan_folder_with, Embeddings, LoadedWeights, ScanOptions};
use crate::ops::Tuning;
use crate::shape::Precision;

/// One shard of N: `index` from 0 to `count - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: u32,
    /// How many shards the folder is split into.
    pub count: u32,
}

impl Shard {
    /// The whole folder.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `I/N`, I from 0 to N-1.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument(format!("shard {text:?}: write I/N, I from 0 to N-1 (e.g. 0/4 ... 3/4)"));
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether the file at `relative` (its path under the folder) is this shard's.
    pub fn owns(&self, relative: &Path) -> bool {
        let digest = sha2::Sha256::digest(relative_text(relative).as_bytes());
        let bucket = u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        bucket % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A relative path as `/`-separated text, the same on every platform.
fn relative_text(relative: &Path) -> String {
    let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    parts.join("/")
}

/// The id of the file stored as `path`, at its `attempt`-th try (a later try where an
/// earlier id holds another path): 62 bits of SHA-256 with bit 62 set.
pub fn file_id(path: &str, attempt: u32) -> i64 {
    let mut hasher = sha2::Sha256::new();
    hasher.update(path.as_bytes());
    if attempt > 0 {
        hasher.update([0u8]);
        hasher.update(attempt.to_le_bytes());
    }
    let digest = hasher.finalize();
    let bits = u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    ((bits >> 2) | (1 << 62)) as i64
}

/// How to fill a collection from a folder. Unset settings of an existing collection are its
/// own; set ones must agree with it.
pub struct FillOptions<'a> {
    /// This machine's part of the folder.
    pub shard: Shard,
    /// Row precision; default f32 (for a new collection).
    pub precision: Option<Precision>,
    /// Centre the rows on a mean; default off for a new collection (on where `mean` is
    /// given).
    pub centred: Option<bool>,
    /// The centring mean (`[dim]`); without it a new centred collection takes the mean of
    /// `mean_sample` images spread over the whole folder.
    pub mean: Option<Vec<f32>>,
    /// Images the computed mean is taken over, at most.
    pub mean_sample: usize,
    /// Preprocessing; default the network's own, or an existing collection's.
    pub preprocess: Option<Preprocess>,
    /// The resize side, keeping the rest of that preprocessing.
    pub resize: Option<u32>,
    /// The crop side, keeping the rest of that preprocessing.
    pub crop: Option<u32>,
    /// Images embedded together.
    pub batch_size: usize,
    /// How a new collection is made.
    pub create: CreateOptions,
    /// Walk into links to folders.
    pub follow_links: bool,
    /// Launch shapes for the GPU.
    pub tuning: Option<Tuning>,
    /// Hears the shard's files done and its total, before the first chunk and after each.
    pub progress: Box<dyn FnMut(usize, usize) + 'a>,
}

impl Default for FillOptions<'_> {
    fn default() -> Self {
        Self {
            shard: Shard::ALL,
            precision: None,
            centred: None,
            mean: None,
            mean_sample: 10_000,
            preprocess: None,
            resize: None,
            crop: None,
            batch_size: 32,
            create: CreateOptions::default(),
            follow_links: false,
            tuning: None,
            progress: Box::new(|_, _| {}),
        }
    }
}

impl FillOptions<'_> {
    /// The preprocessing asked for over `base` (a collection's, or the network's).
    fn asked_preprocess(&self, base: Preprocess) -> Preprocess {
        let base = self.preprocess.unwrap_or(base);
        Preprocess { resize: self.resize.unwrap_or(base.resize), crop: self.crop.unwrap_or(base.crop), ..base }
    }
}

/// What a fill did.
#[derive(Debug, Clone, Default)]
pub struct FillReport {
    /// Images in the whole folder.
    pub folder_files: usize,
    /// Of them, this shard's.
    pub shard_files: usize,
    /// Rows written now.
    pub written: usize,
    /// Files the collection already held.
    pub already_there: usize,
    /// Whether this run made the collection.
    pub created: bool,
    /// Whether this run computed the centring mean.
    pub computed_mean: bool,
    /// Files passed over (unreadable, or a path Milvus cannot keep), with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Embeds this shard's images under `dir` with `weights` (on `gpu`, or the CPU reference
/// where `None`) and writes them into collection `name` on `server`, making it where it
/// does not exist. Labels are the first-level sub-folders, as for an index.
pub fn fill_from_folder(
    gpu: Option<Context>, weights: &LoadedWeights, dir: &Path, server: &Server, name: &str,
    mut options: FillOptions<'_>,
) -> Result<(Collection, FillReport)> {
    let started = std::time::Instant::now();
    if options.batch_size == 0 {
        return Err(Error::InvalidArgument("the batch size must be at least 1".into()));
    }
    let mut report = FillReport::default();
    let scan = scan_folder_with(dir, ScanOptions { follow_links: options.follow_links, indexed: HashSet::new() })?;
    report.skipped.extend(scan.skipped);
    if scan.files.is_empty() {
        return Err(Error::InvalidArgument(format!("no .jpg, .jpeg or .png images under {}", dir.display())));
    }
    report.folder_files = scan.files.len();
    // Each file's shard comes from its path under the folder as walked; it is stored by its
    // real path (links resolved), so one file reached by two names is one row.
    let owned: Vec<bool> =
        scan.files.iter().map(|(path, _)| options.shard.owns(path.strip_prefix(dir).unwrap_or(path))).collect();
    let files: Vec<(PathBuf, Option<String>)> = scan
        .files
        .into_iter()
        .map(|(path, label)| {
            let real = std::fs::canonicalize(&path).or_else(|_| std::path::absolute(&path)).unwrap_or(path);
            (real, label)
        })
        .collect();
    let mut embedder = match &gpu {
        Some(ctx) => Embedder::gpu(ctx.clone(), &weights.net)?,
        None => Embedder::cpu(&weights.net)?,
    };
    if let Some(tuning) = options.tuning {
        embedder = embedder.with_tuning(tuning);
    }

    let (collection, created, computed_mean) = open_for(&mut embedder, weights, &files, server, name, &mut options)?;
    report.created = created;
    report.computed_mean = computed_mean;
    let layout = collection.layout().clone();
    let preprocess = layout.provenance.preprocess;

    let mine: Vec<&(PathBuf, Option<String>)> =
        files.iter().zip(&owned).filter(|(_, &own)| own).map(|(f, _)| f).collect();
    report.shard_files = mine.len();
    let total = mine.len();
    (options.progress)(0, total);
    let chunk_files = options.batch_size.max(1) * 8;
    let mut done = 0;
    for chunk in mine.chunks(chunk_files) {
        let mut texts = Vec::new();
        for (path, label) in chunk {
            match path.to_str() {
                Some(text) if text.len() <= MAX_TEXT as usize => {
                    texts.push((path.clone(), text.to_string(), label.clone()))
                }
                Some(_) => report.skipped.push((path.clone(), format!("a path longer than {MAX_TEXT} bytes"))),
                None => report.skipped.push((path.clone(), "a path that is not UTF-8 (Milvus keeps text)".into())),
            }
        }
        let held = collection.ids_of_paths(&texts.iter().map(|(_, t, _)| t.as_str()).collect::<Vec<_>>())?;
        let readable = texts.len();
        texts.retain(|(_, text, _)| !held.contains_key(text));
        report.already_there += readable - texts.len();
        let new: Vec<(PathBuf, Option<String>)> = texts.iter().map(|(p, _, l)| (p.clone(), l.clone())).collect();
        if !new.is_empty() {
            let embedded = embedder.embed_labelled_files(&new, &preprocess, options.batch_size, |_| {})?;
            report.skipped.extend(embedded.skipped);
            if !embedded.files.is_empty() {
                let unit = normalize_rows(&embedded.features, layout.dim, layout.mean.as_deref());
                // Rounded as an index of this precision stores them.
                let rows = Embeddings::from_f32(unit, layout.precision).rows_f32(layout.dim, 0, embedded.files.len());
                let stored: Vec<String> =
                    embedded.files.iter().map(|(p, _)| p.to_str().unwrap_or_default().to_string()).collect();
                let ids = assign_ids(&collection, &stored)?;
                collection.upsert(RowBatch {
                    ids,
                    rows: &rows,
                    paths: stored,
                    labels: embedded.files.iter().map(|(_, l)| l.clone()).collect(),
                })?;
                report.written += embedded.files.len();
            }
        }
        done += chunk.len();
        (options.progress)(done, total);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((collection, report))
}

/// Ids for new rows of `paths`: each path's first hash ([`file_id`]) that the collection
/// does not hold under another path.
fn assign_ids(collection: &Collection, paths: &[String]) -> Result<Vec<i64>> {
    let mut ids: Vec<i64> = paths.iter().map(|p| file_id(p, 0)).collect();
    let mut attempts = vec![0u32; paths.len()];
    let mut open: Vec<usize> = (0..paths.len()).collect();
    while !open.is_empty() {
        let wanted: Vec<i64> = open.iter().map(|&i| ids[i]).collect();
        let taken = collection.paths_of_ids(&wanted)?;
        let mut seen = HashSet::new();
        let mut again = Vec::new();
        for &i in &open {
            let clash = taken.get(&ids[i]).is_some_and(|holder| *holder != paths[i]);
            // Two new paths on one id within the batch: the later one moves on too.
            if clash || !seen.insert(ids[i]) {
                attempts[i] += 1;
                if attempts[i] > 64 {
                    return Err(Error::InvalidArgument(format!("no free id for {} after 64 tries", paths[i])));
                }
                ids[i] = file_id(&paths[i], attempts[i]);
                again.push(i);
            }
        }
        open = again;
    }
    Ok(ids)
}

/// Opens collection `name` for this fill, making it (with its mean) where it does not
/// exist. Returns it, whether this run made it, and whether it computed the mean.
fn open_for(
    embedder: &mut Embedder, weights: &LoadedWeights, files: &[(PathBuf, Option<String>)], server: &Server, name: &str,
    options: &mut FillOptions<'_>,
) -> Result<(Collection, bool, bool)> {
    let dim = weights.net.feature_dim();
    if let Some(mean) = &options.mean {
        crate::cpu::check_finite("centring mean", mean)?;
        if mean.len() != dim {
            return Err(Error::shape(
                "centring mean",
                format!("{dim} values (the {}'s width)", weights.net.name()),
                format!("{} values", mean.len()),
            ));
        }
        if options.centred == Some(false) {
            return Err(Error::InvalidArgument("a centring mean was given, but centring is off".into()));
        }
    }
    let mut computed = false;
    if Collection::exists(server, name)? {
        let collection = Collection::open_when_ready(server, name)?;
        let stored = collection.layout().clone();
        let centred = options.centred.unwrap_or(stored.mean.is_some() || options.mean.is_some());
        let mean = match (centred, options.mean.take()) {
            (false, _) => None,
            (true, Some(given)) => Some(given),
            // Every shard centres on the one recorded mean.
            (true, None) => match &stored.mean {
                Some(mean) => Some(mean.clone()),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "collection `{name}` is not centred, so its rows cannot be: leave centring off"
                    )))
                }
            },
        };
        let preprocess = options.asked_preprocess(stored.provenance.preprocess);
        let wanted = Layout {
            dim,
            precision: options.precision.unwrap_or(stored.precision),
            mean,
            provenance: weights.provenance(preprocess),
        };
        collection.check_accepts(&wanted)?;
        collection.check_index(options.create.index.as_ref())?;
        return Ok((collection, false, false));
    }
    let preprocess = options.asked_preprocess(weights.net.default_preprocess()?);
    preprocess.validate()?;
    weights.net.check_input(preprocess.crop as usize, preprocess.crop as usize)?;
    let centred = options.centred.unwrap_or(options.mean.is_some());
    let mean = match (centred, options.mean.take()) {
        (false, _) => None,
        (true, Some(given)) => Some(given),
        (true, None) => {
            computed = true;
            Some(sample_mean(embedder, files, &preprocess, options.mean_sample, options.batch_size)?)
        }
    };
    let layout = Layout {
        dim,
        precision: options.precision.unwrap_or(Precision::F32),
        mean,
        provenance: weights.provenance(preprocess),
    };
    let created = Collection::create(server, name, &layout, &options.create)?;
    let collection = Collection::open_when_ready(server, name)?;
    let mut wanted = layout;
    if computed && collection.layout().mean.is_some() && collection.layout().mean != wanted.mean {
        // Another shard made it at the same time, with the mean it computed (equal but for
        // rounding on another GPU): every shard uses the recorded one.
        wanted.mean = collection.layout().mean.clone();
        computed = false;
    }
    computed &= created;
    collection.check_accepts(&wanted)?;
    collection.check_index(options.create.index.as_ref())?;
    Ok((collection, created, computed))
}

/// The mean feature of up to `sample` images spread evenly over `files` (sorted, the whole
/// folder): the same files on every machine.
fn sample_mean(
    embedder: &mut Embedder, files: &[(PathBuf, Option<String>)], preprocess: &Preprocess, sample: usize,
    batch_size: usize,
) -> Result<Vec<f32>> {
    let take = sample.min(files.len()).max(1);
    let picks: Vec<(PathBuf, Option<String>)> = (0..take).map(|i| files[i * files.len() / take].clone()).collect();
    let embedded = embedder.embed_labelled_files(&picks, preprocess, batch_size, |_| {})?;
    if embedded.files.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "a centring mean needs at least 2 readable images; the sample of {take} had {}: give --mean FILE or \
             leave centring off",
            embedded.files.len()
        )));
    }
    Ok(mean_row(&embedded.features, embedder.feature_dim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_every_path_once_and_evenly() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert_eq!(Shard::parse(" 0 / 1 ").unwrap(), Shard::ALL);
        for bad in ["4/4", "1/0", "-1/2", "1", "a/b", "1/2/3", ""] {
            let err = Shard::parse(bad).unwrap_err().to_string();
            assert!(err.contains("I from 0 to N-1"), "{bad}: {err}");
        }
        let paths: Vec<PathBuf> = (0..4000).map(|i| PathBuf::from(format!("class{}/{i}.jpg", i % 7))).collect();
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        let mut sizes = [0usize; 4];
        for path in &paths {
            let owners: Vec<usize> = (0..4).filter(|&s| shards[s].owns(path)).collect();
            assert_eq!(owners.len(), 1, "{path:?} belongs to {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (850..1150).contains(&n)), "{sizes:?}");
        // The split reads the path's components, not the platform's separator.
        let joined: PathBuf = ["class3", "17.jpg"].iter().collect();
        assert_eq!(relative_text(&joined), "class3/17.jpg");
    }

    #[test]
    fn file_ids_sit_above_row_ids_and_move_on_per_attempt() {
        let ids: Vec<i64> = (0..50).map(|a| file_id("/photos/cats/1.jpg", a)).collect();
        assert!(ids.iter().all(|&id| id >= 1 << 62), "{ids:?}");
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        assert_eq!(file_id("/photos/cats/1.jpg", 0), ids[0], "not stable");
        assert_ne!(file_id("/photos/cats/2.jpg", 0), ids[0]);
    }
}
