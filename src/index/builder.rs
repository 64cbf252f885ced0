//! Building an index, or adding to one, from a folder of images or from features.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{scan_folder_with, Centring, Entry, FileId, Index, LoadedWeights, ScanOptions};
use crate::cpu::preprocess::Preprocess;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::ops::matmul::Precision;
use crate::ops::Tuning;

/// What a build passed over, reported to [`IndexBuilder::on_skipped`] before the build
/// goes on (or fails for want of images); each list holds paths with the reason.
#[derive(Debug, Clone, Copy)]
pub enum Skipped<'a> {
    /// Paths the folder walk passed over: links not followed, loops, unreadable folders,
    /// broken links, second names of a file already listed ([`super::FolderScan::skipped`]).
    Walk(&'a [(PathBuf, String)]),
    /// Image files that could not be read or used (the reason without the path).
    Files(&'a [(PathBuf, String)]),
}

/// Builds an [`Index`] from a folder of images or from features, or adds to one, with
/// named options. Every option has a default: f32 rows, not centred, batches of 32, the
/// network's own preprocessing ([`crate::model::Backbone::default_preprocess`]); when adding
/// to an index, its own settings, and an option set to anything else is refused.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use lookalike::image::{Rgb, RgbImage};
/// use lookalike::model::convnet::{ConvNet, ConvNetSpec};
/// use lookalike::{Context, IndexBuilder, LoadedWeights, Precision};
///
/// // A folder of images in two classes (one sub-folder each), and a small random convnet.
/// let dir = std::env::temp_dir().join(format!("lookalike-builder-doc-{}", std::process::id()));
/// for (class, seed) in [("cats", 1u8), ("dogs", 2), ("dogs", 3)] {
///     std::fs::create_dir_all(dir.join(class))?;
///     let s = seed as u32;
///     let image = RgbImage::from_fn(20, 20, |x, y| Rgb([(x * 12 * s) as u8, ((x + y) * 6) as u8, (255 - y * s * 4) as u8]));
///     image.save(dir.join(class).join(format!("{seed}.png")))?;
/// }
/// let spec = ConvNetSpec::recipe(16, 16, 3);
/// ConvNet::glorot(spec, 7)?.save(&dir.join("net.safetensors"))?;
///
/// // The weights with their SHA-256, which the index records.
/// let weights = LoadedWeights::from_file(&dir.join("net.safetensors"))?;
/// let ctx = Context::new()?;
/// let mut index = IndexBuilder::new(ctx.clone(), &weights)
///     .precision(Precision::F16)
///     .centred(true)
///     .batch_size(32)
///     .progress(|done, total| eprintln!("{done}/{total} images"))
///     .from_folder(&dir)?;
/// assert_eq!(index.len(), 3);
/// assert_eq!(index.entries[0].label.as_deref(), Some("cats"));
///
/// // Later: a new image; the folder is walked again and only it is embedded.
/// std::fs::create_dir_all(dir.join("owls"))?;
/// RgbImage::from_pixel(20, 20, Rgb([9, 200, 30])).save(dir.join("owls/4.png"))?;
/// let added = IndexBuilder::new(ctx, &weights).extend_from_folder(&mut index, &dir)?;
/// assert_eq!((added, index.len()), (1, 4));
/// index.save(&dir.join("photos.index"))?;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct IndexBuilder<'a> {
    weights: &'a LoadedWeights,
    /// Where the images are embedded: this GPU, or the CPU reference.
    gpu: Option<Context>,
    matrix_units: bool,
    tuning: Option<Tuning>,
    precision: Option<Precision>,
    centring: Option<Centring>,
    batch_size: usize,
    preprocess: Option<Preprocess>,
    resize: Option<u32>,
    crop: Option<u32>,
    follow_links: bool,
    progress: Box<dyn FnMut(usize, usize) + 'a>,
    on_skipped: Box<dyn FnMut(Skipped<'_>) + 'a>,
}

impl<'a> IndexBuilder<'a> {
    /// Embeds with `weights` on the GPU of `ctx` (clones of a context share its device).
    pub fn new(ctx: Context, weights: &'a LoadedWeights) -> Self {
        Self::with_device(Some(ctx), weights)
    }

    /// Embeds with `weights` on the CPU reference: slow, for checks and machines without a
    /// GPU. Building from features needs no device at all; either constructor serves.
    pub fn on_cpu(weights: &'a LoadedWeights) -> Self {
        Self::with_device(None, weights)
    }

    fn with_device(gpu: Option<Context>, weights: &'a LoadedWeights) -> Self {
        Self {
            weights,
            gpu,
            matrix_units: false,
            tuning: None,
            precision: None,
            centring: None,
            batch_size: 32,
            preprocess: None,
            resize: None,
            crop: None,
            follow_links: false,
            progress: Box::new(|_, _| {}),
            on_skipped: Box::new(|_| {}),
        }
    }

    /// The launch shapes the GPU embeds with (e.g. what `tune::load_for` gives); default:
    /// the built-in table for the adapter.
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = Some(tuning);
        self
    }

    /// How the rows are stored: f32 (the default) or f16 (half the size; scores within
    /// about 1e-3).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = Some(precision);
        self
    }

    /// Whether to store the mean of the features and subtract it before normalising
    /// ([`Centring::Mean`]); off by default. Embeddings of one network share a dominant
    /// direction, so centring ranks far better, above all in f16.
    pub fn centred(mut self, centred: bool) -> Self {
        self.centring = Some(if centred { Centring::Mean } else { Centring::Off });
        self
    }

    /// Images decoded and embedded together, at most (fewer where they are large); 32 by
    /// default.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// The whole preprocessing; by default the network's own
    /// ([`crate::model::Backbone::default_preprocess`]).
    pub fn preprocess(mut self, preprocess: Preprocess) -> Self {
        self.preprocess = Some(preprocess);
        self
    }

    /// The side the shorter image side is resized to, keeping the rest of the
    /// preprocessing.
    pub fn resize(mut self, side: u32) -> Self {
        self.resize = Some(side);
        self
    }

    /// The side of the centre crop the network sees, keeping the rest of the
    /// preprocessing.
    pub fn crop(mut self, side: u32) -> Self {
        self.crop = Some(side);
        self
    }

    /// Runs ResNet50's convolutions on the GPU's matrix units (a context made with
    /// [`crate::gpu::ContextBuilder::experimental_cooperative_matrices`]); off by default.
    pub fn matrix_units(mut self, on: bool) -> Self {
        self.matrix_units = on;
        self
    }

    /// Whether the folder walk enters links to folders (each folder once); off by default.
    pub fn follow_links(mut self, follow: bool) -> Self {
        self.follow_links = follow;
        self
    }

    /// Called before the first batch and after each one with the images done and the
    /// images to do.
    pub fn progress(mut self, progress: impl FnMut(usize, usize) + 'a) -> Self {
        self.progress = Box::new(progress);
        self
    }

    /// Called with what a build from a folder passed over (each list once, when not
    /// empty), before the build goes on or fails; by default nothing hears it.
    pub fn on_skipped(mut self, on_skipped: impl FnMut(Skipped<'_>) + 'a) -> Self {
        self.on_skipped = Box::new(on_skipped);
        self
    }

    /// A new index of the images under `dir` (jpg, jpeg, png; [`super::scan_folder`]),
    /// labelled by their first-level sub-folder. Files that cannot be read or used are left
    /// out and reported ([`IndexBuilder::on_skipped`]); a folder with none that can is an
    /// error.
    pub fn from_folder(mut self, dir: &Path) -> Result<Index> {
        let preprocess = self.preprocessing(None)?;
        let (features, entries) = self.embed_folder(dir, None, &preprocess)?;
        if entries.is_empty() {
            return Err(Error::InvalidArgument(format!("none of the images under {} could be read", dir.display())));
        }
        self.build(&features, entries, preprocess)
    }

    /// A new index of raw features the network computed, `[entries.len(), feature_dim]`,
    /// recorded with the builder's preprocessing.
    pub fn from_features(self, features: &[f32], entries: Vec<Entry>) -> Result<Index> {
        let preprocess = self.preprocessing(None)?;
        self.build(features, entries, preprocess)
    }

    /// Adds the images under `dir` that `index` does not hold yet (known by file, so a
    /// second name of an indexed file is not new, and by path), normalised as its rows
    /// were. The weights must be the index's ([`LoadedWeights::check_matches`]). Returns
    /// how many were added; `index` is unchanged on error.
    pub fn extend_from_folder(mut self, index: &mut Index, dir: &Path) -> Result<usize> {
        let preprocess = self.check_extends(index)?;
        let (features, entries) = self.embed_folder(dir, Some(index), &preprocess)?;
        let added = entries.len();
        index.add(&features, entries)?;
        Ok(added)
    }

    /// Adds raw features the network computed, `[entries.len(), feature_dim]`, to `index`,
    /// normalised as its rows were. The weights must be the index's.
    pub fn extend_from_features(self, index: &mut Index, features: &[f32], entries: Vec<Entry>) -> Result<()> {
        self.check_extends(index)?;
        index.add(features, entries)
    }

    /// The preprocessing asked for: the index's (`existing`) or the network's, with the
    /// options applied, valid for the network.
    fn preprocessing(&self, existing: Option<&Index>) -> Result<Preprocess> {
        let base = match (existing, self.preprocess) {
            (Some(index), _) => index.provenance.preprocess,
            (None, Some(preprocess)) => preprocess,
            (None, None) => self.weights.net.default_preprocess()?,
        };
        let asked =
            Preprocess { resize: self.resize.unwrap_or(base.resize), crop: self.crop.unwrap_or(base.crop), ..base };
        asked.validate()?;
        self.weights.net.check_input(asked.crop as usize, asked.crop as usize)?;
        Ok(asked)
    }

    /// Refuses to extend `index` with other weights or settings than its own (they would be
    /// silently ignored); returns its preprocessing.
    fn check_extends(&self, index: &Index) -> Result<Preprocess> {
        self.weights.check_matches(index)?;
        let stored = &index.provenance.preprocess;
        let mut clashes = Vec::new();
        if let Some(precision) = self.precision.filter(|&p| p != index.embeddings.precision()) {
            clashes.push(format!("precision {precision:?} (it stores {:?})", index.embeddings.precision()));
        }
        let centring = if index.mean.is_some() { Centring::Mean } else { Centring::Off };
        if let Some(asked) = self.centring.filter(|&c| c != centring) {
            clashes.push(format!("centring {asked:?} (it has {centring:?})"));
        }
        if let Some(preprocess) = self.preprocess.filter(|p| p != stored) {
            clashes.push(format!("preprocessing {preprocess:?} (it used {stored:?})"));
        }
        if let Some(resize) = self.resize.filter(|&r| r != stored.resize) {
            clashes.push(format!("resize {resize} (it used {})", stored.resize));
        }
        if let Some(crop) = self.crop.filter(|&c| c != stored.crop) {
            clashes.push(format!("crop {crop} (it used {})", stored.crop));
        }
        if !clashes.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "an index keeps its own settings when extended; these differ: {}. Leave them unset, or build a \
                 new index",
                clashes.join(", ")
            )));
        }
        self.preprocessing(Some(index))
    }

    fn build(self, features: &[f32], entries: Vec<Entry>, preprocess: Preprocess) -> Result<Index> {
        let provenance = self.weights.provenance(preprocess);
        let precision = self.precision.unwrap_or(Precision::F32);
        let centring = self.centring.unwrap_or_default();
        Index::from_features(features, self.weights.net.feature_dim(), entries, precision, centring, provenance)
    }

    /// Features and entries of the usable images under `dir`, leaving out those `existing`
    /// holds. No images at all (new ones, when extending) is an error for a new index and
    /// nothing to do for an existing one.
    fn embed_folder(
        &mut self, dir: &Path, existing: Option<&Index>, preprocess: &Preprocess,
    ) -> Result<(Vec<f32>, Vec<Entry>)> {
        if self.batch_size == 0 {
            return Err(Error::InvalidArgument("the batch size must be at least 1".into()));
        }
        // Known by file, not by spelling: `DIR`, `./DIR/`, `/abs/DIR`, a link or a hard link
        // to an indexed image all name one file, which the walk leaves out.
        let indexed = existing.iter().flat_map(|index| &index.entries).filter_map(|e| FileId::of(&e.path)).collect();
        let scan = scan_folder_with(dir, ScanOptions { follow_links: self.follow_links, indexed })?;
        // Absolute, so the index finds them from any directory; the file stores those below
        // its own folder relative to it (`Index::save`).
        let mut files: Vec<(PathBuf, Option<String>)> =
            scan.files.into_iter().map(|(path, label)| (std::path::absolute(&path).unwrap_or(path), label)).collect();
        if let Some(index) = existing {
            // And by name, for an indexed file that cannot be read now.
            let known: HashSet<&Path> = index.entries.iter().map(|e| e.path.as_path()).collect();
            files.retain(|(path, _)| !known.contains(path.as_path()));
        }
        if !scan.skipped.is_empty() {
            (self.on_skipped)(Skipped::Walk(&scan.skipped));
        }
        if files.is_empty() {
            return match existing {
                Some(_) => Ok((Vec::new(), Vec::new())),
                None => Err(Error::InvalidArgument(format!("no .jpg, .jpeg or .png images under {}", dir.display()))),
            };
        }
        let net = &self.weights.net;
        let mut embedder = match (&self.gpu, self.matrix_units) {
            (Some(ctx), false) => Embedder::gpu(ctx.clone(), net)?,
            (Some(ctx), true) => Embedder::gpu_on_matrix_units(ctx.clone(), net)?,
            (None, false) => Embedder::cpu(net)?,
            (None, true) => {
                return Err(Error::InvalidArgument("matrix units are the GPU's: build on a GPU context".into()))
            }
        };
        if let Some(tuning) = self.tuning {
            embedder = embedder.with_tuning(tuning);
        }
        let total = files.len();
        let progress = &mut self.progress;
        progress(0, total);
        let embedded =
            embedder.embed_labelled_files(&files, preprocess, self.batch_size, |done| progress(done, total))?;
        if !embedded.skipped.is_empty() {
            (self.on_skipped)(Skipped::Files(&embedded.skipped));
        }
        let entries = embedded.files.into_iter().map(|(path, label)| Entry { path, label }).collect();
        Ok((embedded.features, entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::convnet::{ConvNet, ConvNetSpec};
    use crate::model::Backbone;

    fn weights(sha256: &str) -> LoadedWeights {
        let spec = ConvNetSpec { widths: [3, 5, 7], dim: 6, ..ConvNetSpec::recipe(15, 15, 3) };
        let net = Backbone::ConvNet(ConvNet::glorot(spec, 3).unwrap());
        LoadedWeights { net, path: format!("{sha256}.safetensors"), sha256: sha256.into() }
    }

    fn rows(n: usize, seed: u64) -> (Vec<f32>, Vec<Entry>) {
        let features = crate::rng::Rng::new(seed).normals(n * 6, 1.0);
        (features, (0..n).map(|i| Entry::new(format!("{seed}-{i}.png"), None)).collect())
    }

    #[test]
    fn features_build_and_extend_with_the_index_settings_only() {
        let w = weights("aa");
        let (features, entries) = rows(5, 1);
        let mut index =
            IndexBuilder::on_cpu(&w).precision(Precision::F16).centred(true).from_features(&features, entries).unwrap();
        assert_eq!((index.len(), index.dim, index.embeddings.precision()), (5, 6, Precision::F16));
        assert!(index.mean.is_some());
        assert_eq!(index.provenance, w.provenance(w.net.default_preprocess().unwrap()));

        // Unset options are the index's; set ones must agree with it.
        let (more, new) = rows(2, 2);
        IndexBuilder::on_cpu(&w).extend_from_features(&mut index, &more, new.clone()).unwrap();
        assert_eq!(index.len(), 7);
        let refused = [
            (IndexBuilder::on_cpu(&w).precision(Precision::F32), "precision F32 (it stores F16)"),
            (IndexBuilder::on_cpu(&w).centred(false), "centring Off (it has Mean)"),
            (IndexBuilder::on_cpu(&w).crop(17), "crop 17 (it used 15)"),
        ];
        for (builder, needle) in refused {
            let err = builder.extend_from_features(&mut index, &more, new.clone()).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("keeps its own settings"), "{err}");
        }
        let other = weights("bb");
        let err = IndexBuilder::on_cpu(&other).extend_from_features(&mut index, &more, new.clone()).unwrap_err();
        assert!(err.to_string().contains("other weights"), "{err}");
        let resnet = LoadedWeights { net: Backbone::ResNet50(crate::model::ResNet50::architecture()), ..weights("aa") };
        let err = IndexBuilder::on_cpu(&resnet).extend_from_features(&mut index, &more, new).unwrap_err();
        assert!(err.to_string().contains("built with a convnet"), "{err}");
        assert_eq!(index.len(), 7, "a refused extension added rows");

        // Rows of another width than the network's are refused.
        let (narrow, entries) = (vec![1.0; 10], rows(2, 3).1);
        assert!(IndexBuilder::on_cpu(&w).from_features(&narrow, entries).is_err());
    }
}
