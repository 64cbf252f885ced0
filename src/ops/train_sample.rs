//! Rust twin of `shaders/train_sample.wgsl`: a training step's pairs drawn on the GPU
//! (`train::sampler` repeated word for word) and their pixels gathered into the f32 batch.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::{check_len, ELEMENTWISE_WG};

/// Pixel bindings the kernel reads from: a set up to four times the device's largest
/// storage binding fits.
pub const MAX_PIXEL_BINDINGS: usize = 4;

/// Words of the step-counter buffer: steps done before the current one (the sampler's step
/// number) and steps done in the current submission (the loss and step-size slot).
pub const STATE_WORDS: usize = 2;

/// A class-grouped training set as the sampler reads it: the u8 pixels of equally sized
/// images, each class's images contiguous (`data::ClassGrouped` converts into one).
#[derive(Debug, Clone, Copy)]
pub struct GroupedPixels<'a> {
    /// Every image's values, one image after another.
    pub pixels: &'a [u8],
    /// Values per image.
    pub image_len: usize,
    /// First image of each class.
    pub class_offsets: &'a [u32],
    /// Images of each class.
    pub class_counts: &'a [u32],
}

/// A class-grouped training set held on the GPU: u8 pixels four per u32 word, split across
/// up to [`MAX_PIXEL_BINDINGS`] buffers, with each class's first image and image count.
#[derive(Debug)]
pub struct TrainingSet {
    pixels: Vec<wgpu::Buffer>,
    chunk_words: usize,
    /// Offsets then counts, C each.
    classes: wgpu::Buffer,
    levels: wgpu::Buffer,
    class_count: usize,
    image_len: usize,
}

impl TrainingSet {
    /// Uploads `data` once. Fails, naming the sizes and the limit, when the set needs more
    /// than [`MAX_PIXEL_BINDINGS`] storage bindings or its byte offsets exceed 32 bits.
    pub fn upload<'a>(ctx: &Context, data: impl Into<GroupedPixels<'a>>) -> Result<Self> {
        let data = data.into();
        let bytes = data.pixels.len();
        let images = bytes / data.image_len.max(1);
        let classes = data.class_counts.len();
        if classes < 2 || data.class_offsets.len() != classes || data.image_len == 0 {
            return Err(Error::InvalidArgument(format!(
                "training set: {classes} class counts, {} class offsets and images of {} values: \
                 pair sampling needs at least 2 classes of non-empty images",
                data.class_offsets.len(),
                data.image_len
            )));
        }
        if let Some(c) = (0..classes).find(|&c| {
            data.class_counts[c] < 2 || data.class_offsets[c] as usize + data.class_counts[c] as usize > images
        }) {
            return Err(Error::InvalidArgument(format!(
                "training set: class {c} has {} images from image {}, of {}: each class needs at least 2, inside the set",
                data.class_counts[c],
                data.class_offsets[c],
                images
            )));
        }
        if bytes > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "training set: {bytes} pixel bytes exceed the 4 GiB (32-bit offsets) the sampling kernel addresses; \
                 train on fewer or smaller images"
            )));
        }
        let words: Vec<u32> =
            data.pixels.chunks(4).map(|b| b.iter().rev().fold(0u32, |w, &byte| w << 8 | u32::from(byte))).collect();
        let chunk_words = (ctx.max_binding_bytes() / 4) as usize;
        let needed = words.len().div_ceil(chunk_words.max(1));
        if chunk_words == 0 || needed > MAX_PIXEL_BINDINGS {
            return Err(Error::InvalidArgument(format!(
                "training set: {bytes} pixel bytes need {needed} storage bindings of this device's largest \
                 ({} bytes); the sampling kernel binds at most {MAX_PIXEL_BINDINGS}: train on fewer images",
                ctx.max_binding_bytes()
            )));
        }
        let pixels = words
            .chunks(chunk_words)
            .enumerate()
            .map(|(i, chunk)| ctx.upload_pod(&format!("training pixels {i}"), chunk))
            .collect::<Result<Vec<_>>>()?;
        let table: Vec<u32> = data.class_offsets.iter().chain(data.class_counts).copied().collect();
        let levels: Vec<f32> = (0..256).map(|level| level as f32 / 255.0).collect();
        Ok(Self {
            pixels,
            chunk_words,
            classes: ctx.upload_pod("training classes", &table)?,
            levels: ctx.upload("pixel levels", &levels)?,
            class_count: classes,
            image_len: data.image_len,
        })
    }

    /// Number of classes C (a batch holds 2C images).
    pub fn classes(&self) -> usize {
        self.class_count
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.image_len
    }

    /// Storage bindings the pixels occupy.
    pub fn pixel_bindings(&self) -> usize {
        self.pixels.len()
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    classes: u32,
    image_len: u32,
    seed_lo: u32,
    seed_hi: u32,
    chunk_words: u32,
    len: u32,
    _pad: [u32; 2],
}

const BINDINGS: [Binding; 10] = Binding::uniform_reads_writes(7);

/// Prepares the sampling launch: for the step number in `state[0]` ([`STATE_WORDS`] u32s),
/// `rows` (2C u32s) gets each class's anchor then each class's positive as in
/// `train::sampler::pair_batch`, and `batch` (2C images, NHWC f32) their pixels / 255.
pub fn train_sample(
    ctx: &Context, set: &TrainingSet, seed: u64, state: &wgpu::Buffer, batch: &wgpu::Buffer, rows: &wgpu::Buffer,
) -> Result<Dispatch> {
    let len = 2 * set.class_count * set.image_len;
    if len > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!("train_sample: a batch of {len} values exceeds 32-bit indexing")));
    }
    check_len("train_sample state", state, STATE_WORDS)?;
    check_len("train_sample batch", batch, len)?;
    check_len("train_sample rows", rows, 2 * set.class_count)?;
    let params = Params {
        classes: set.class_count as u32,
        image_len: set.image_len as u32,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        chunk_words: set.chunk_words as u32,
        len: len as u32,
        _pad: [0; 2],
    };
    let key = PipelineKey::new(ShaderFile::TrainSample, "main", &[("WG", ELEMENTWISE_WG as f64)]);
    let kernel = ctx.kernel(&key, &BINDINGS)?;
    let uniform = ctx.uniform("train_sample params", &params);
    // Bindings past the set's last chunk are never read: the first stands in.
    let pixel = |i: usize| set.pixels.get(i).unwrap_or(&set.pixels[0]);
    let grid = grid_1d(len, ELEMENTWISE_WG, ctx.limits().max_compute_workgroups_per_dimension);
    let bound = [&uniform, state, &set.classes, &set.levels, pixel(0), pixel(1), pixel(2), pixel(3), batch, rows];
    Dispatch::new(ctx, "train_sample", kernel, &bound, grid)
}
