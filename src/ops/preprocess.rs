//! Rust twin of `shaders/preprocess.wgsl`: resize, centre crop and normalisation of decoded
//! RGB8 images on the GPU, straight into the NHWC f32 batch that feeds the network.
//!
//! The numbers are those of [`crate::cpu::preprocess::preprocess_image`]: the same taps
//! (its [`crop_window`], uploaded), the same f32 operations in the same order. Only the crop
//! window is computed: the horizontal pass for the crop's columns over the source rows the
//! crop's vertical taps touch (the only rows uploaded), the vertical pass for the crop's rows.
//!
//! Uploads are split by bytes: images share pixel and tap buffers only while each stays
//! within one storage binding, so a batch of photos of any count fits any device. An image
//! whose own rows exceed a binding cannot go to the GPU at all;
//! [`PreprocessBatch::with_cpu_fallback`] preprocesses it on the CPU (the same numbers) and
//! writes its slot directly.

use std::ops::Range;

use image::RgbImage;
use rayon::prelude::*;

use crate::cpu::preprocess::{crop_window, preprocess_image, FilterTaps};
use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::{check_len, ELEMENTWISE_WG};
use crate::shape::preprocess::Preprocess;

/// Longest side, in pixels, an image may have after resizing for [`PreprocessBatch::new`].
/// Beyond it lie strips and panoramas far wider than tall (a 10000x10 strip resized to 224
/// would be 224000 wide); [`PreprocessBatch::with_cpu_fallback`] preprocesses those on the CPU.
pub const MAX_RESIZED_SIDE: usize = 16384;

/// Most pixel bytes [`submit_runs`] lets one submit upload: bounds the device memory a
/// batch of large photos takes at once (16 photos of 100 MP would be ~5 GB).
pub(crate) const MAX_UPLOAD_PER_SUBMIT: usize = 512 << 20;

const CHANNELS: usize = 3;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    in_w: u32,
    crop: u32,
    pixel_offset: u32,
    out_offset: u32,
    h_spans: u32,
    h_weights: u32,
    h_max_taps: u32,
    h_len: u32,
    v_spans: u32,
    v_weights: u32,
    v_max_taps: u32,
    v_len: u32,
    mean: [f32; 4],
    std_dev: [f32; 4],
}

const BINDINGS: [Binding; 7] = Binding::uniform_reads_writes(4);

/// What one image needs from the shared buffers, before offsets are known.
struct Plan {
    in_w: usize,
    in_h: usize,
    /// Source rows `first_row..first_row + rows` are uploaded; the vertical taps read no others.
    first_row: usize,
    rows: usize,
    resized: (usize, usize),
    /// Taps of the crop's columns, then of the crop's rows (starts relative to `first_row`).
    horizontal: FilterTaps,
    vertical: FilterTaps,
}

impl Plan {
    fn new(img: &RgbImage, p: &Preprocess) -> Result<Self> {
        let window = crop_window(img.height(), img.width(), p)?;
        Ok(Self {
            in_w: img.width() as usize,
            in_h: img.height() as usize,
            first_row: window.first_row,
            rows: window.rows,
            resized: window.resized,
            horizontal: window.horizontal,
            vertical: window.vertical,
        })
    }

    fn pixels<'a>(&self, img: &'a RgbImage) -> &'a [u8] {
        let row = self.in_w * CHANNELS;
        &img.as_raw()[self.first_row * row..(self.first_row + self.rows) * row]
    }

    /// Bytes of its rows in the pixel buffer, padded to whole u32s.
    fn pixel_bytes(&self) -> usize {
        (self.rows * self.in_w * CHANNELS).next_multiple_of(4)
    }

    fn span_count(&self) -> usize {
        self.horizontal.start.len() + self.vertical.start.len()
    }

    fn weight_count(&self) -> usize {
        self.horizontal.weights.len() + self.vertical.weights.len()
    }

    /// f32s of its horizontal pass: uploaded rows × crop × 3.
    fn scratch_len(&self, crop: usize) -> usize {
        self.rows * crop * CHANNELS
    }

    /// Why the GPU cannot preprocess this image within bindings of `cap` bytes, if it cannot.
    fn refusal(&self, p: &Preprocess, cap: usize) -> Option<String> {
        let (in_w, in_h) = (self.in_w, self.in_h);
        let (out_h, out_w) = self.resized;
        if out_h.max(out_w) > MAX_RESIZED_SIDE {
            return Some(format!(
                "preprocess: a {in_w}x{in_h} image resized to shorter side {} would be {out_w}x{out_h}; \
                 sides beyond {MAX_RESIZED_SIDE} are refused on the GPU \
                 (PreprocessBatch::with_cpu_fallback preprocesses it on the CPU)",
                p.resize
            ));
        }
        let needs = [
            ("source rows the centre crop reads", self.pixel_bytes()),
            ("horizontal pass", self.scratch_len(p.crop as usize) * 4),
            ("filter weights", self.weight_count() * 4),
            ("filter spans", self.span_count() * 8),
        ];
        let (what, bytes) = needs.into_iter().find(|&(_, bytes)| bytes > cap)?;
        Some(format!(
            "preprocess: the {what} of a {in_w}x{in_h} image take {bytes} bytes, more than one storage binding \
             of this device holds ({cap} bytes); PreprocessBatch::with_cpu_fallback preprocesses it on the CPU"
        ))
    }
}

/// Largest buffer the kernels address: one storage binding, and byte offsets within u32.
fn binding_cap(ctx: &Context) -> usize {
    ctx.max_binding_bytes().min(u32::MAX as u64 & !3) as usize
}

fn to_u32(what: &str, value: usize) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Error::InvalidArgument(format!("preprocess: {what} ({value}) exceeds 32-bit indexing")))
}

/// Pixel bytes [`PreprocessBatch::with_cpu_fallback`] would upload for `img`: its rows
/// when it goes to the GPU, 0 when it goes through the CPU (or cannot be preprocessed).
pub(crate) fn upload_bytes(ctx: &Context, img: &RgbImage, p: &Preprocess) -> usize {
    match Plan::new(img, p) {
        Ok(plan) if plan.refusal(p, binding_cap(ctx)).is_none() => plan.pixel_bytes(),
        _ => 0,
    }
}

/// Consecutive runs of `images` for one submit each: at most `max_images` (at least 1)
/// images, and pixel uploads ([`upload_bytes`]) within [`MAX_UPLOAD_PER_SUBMIT`] unless a
/// run holds a single image.
pub(crate) fn submit_runs(ctx: &Context, images: &[RgbImage], p: &Preprocess, max_images: usize) -> Vec<Range<usize>> {
    let sizes: Vec<usize> = images.par_iter().map(|img| upload_bytes(ctx, img, p)).collect();
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == max_images.max(1) || bytes + size > MAX_UPLOAD_PER_SUBMIT) {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < images.len() {
        runs.push(start..images.len());
    }
    runs
}

/// Images sharing one pixel, span and weight buffer.
#[derive(Default)]
struct Group {
    pixels: Vec<u8>,
    spans: Vec<[u32; 2]>,
    weights: Vec<f32>,
    params: Vec<Params>,
}

impl Group {
    fn takes(&self, plan: &Plan, cap: usize) -> bool {
        self.params.is_empty()
            || (self.pixels.len() + plan.pixel_bytes() <= cap
                && (self.spans.len() + plan.span_count()) * 8 <= cap
                && (self.weights.len() + plan.weight_count()) * 4 <= cap)
    }

    fn push(&mut self, plan: &Plan, img: &RgbImage, p: &Preprocess, slot: usize) -> Result<()> {
        let pixel_offset = to_u32("the uploaded pixel bytes", self.pixels.len())?;
        self.pixels.extend_from_slice(plan.pixels(img));
        self.pixels.resize(self.pixels.len().next_multiple_of(4), 0);
        let mut append = |taps: &FilterTaps| -> Result<(u32, u32)> {
            let offsets = (to_u32("the tap count", self.spans.len())?, to_u32("the weight count", self.weights.len())?);
            self.spans.extend(taps.start.iter().zip(&taps.count).map(|(&s, &c)| [s, c]));
            self.weights.extend_from_slice(&taps.weights);
            Ok(offsets)
        };
        let (h_spans, h_weights) = append(&plan.horizontal)?;
        let (v_spans, v_weights) = append(&plan.vertical)?;
        let (mut mean, mut std_dev) = ([0.0; 4], [1.0; 4]);
        mean[..3].copy_from_slice(&p.mean);
        std_dev[..3].copy_from_slice(&p.std);
        self.params.push(Params {
            in_w: to_u32("the image width", plan.in_w)?,
            crop: p.crop,
            pixel_offset,
            out_offset: to_u32("the output offset", slot * p.image_len())?,
            h_spans,
            h_weights,
            h_max_taps: to_u32("the tap count", plan.horizontal.max_taps)?,
            h_len: to_u32("the horizontal pass length", plan.scratch_len(p.crop as usize))?,
            v_spans,
            v_weights,
            v_max_taps: to_u32("the tap count", plan.vertical.max_taps)?,
            v_len: to_u32("the output length", p.image_len())?,
            mean,
            std_dev,
        });
        Ok(())
    }
}

/// A batch of decoded images prepared for the GPU: pixels and filter taps uploaded, two
/// dispatches per image preprocessed there (horizontal then vertical pass), writing image
/// `i` into slot `i` of `output` (`[batch, crop, crop, 3]` NHWC f32). Encode
/// [`dispatches`](Self::dispatches) in order, in one pass or several; they can be replayed.
pub struct PreprocessBatch {
    dispatches: Vec<Dispatch>,
    batch: usize,
    on_cpu: usize,
    image_len: usize,
}

impl PreprocessBatch {
    /// Validates `p` and every image, uploads the pixels and taps (in as many buffers as the
    /// device's storage bindings need) and prepares the launches. Errors are those of the
    /// CPU path ([`Error::InvalidArgument`] for a bad `p`, [`Error::InputTooSmall`] for an
    /// empty image) plus [`Error::ShapeMismatch`] for a short `output`, and
    /// [`Error::InvalidArgument`] for an empty batch or an image the GPU cannot take: a
    /// resized side beyond [`MAX_RESIZED_SIDE`], or rows beyond one storage binding.
    pub fn new(ctx: &Context, images: &[RgbImage], p: &Preprocess, output: &wgpu::Buffer) -> Result<Self> {
        Self::build(ctx, images, p, output, false)
    }

    /// [`PreprocessBatch::new`], except that an image the GPU cannot take is preprocessed
    /// on the CPU ([`preprocess_image`], the same numbers) and written into its slot of
    /// `output` now, through the queue: it is in place for the next submit, and no
    /// dispatch touches it.
    pub fn with_cpu_fallback(
        ctx: &Context, images: &[RgbImage], p: &Preprocess, output: &wgpu::Buffer,
    ) -> Result<Self> {
        Self::build(ctx, images, p, output, true)
    }

    fn build(
        ctx: &Context, images: &[RgbImage], p: &Preprocess, output: &wgpu::Buffer, fallback: bool,
    ) -> Result<Self> {
        p.validate()?;
        if images.is_empty() {
            return Err(Error::InvalidArgument("preprocess: the batch holds no images".into()));
        }
        let image_len = p.image_len();
        let total = image_len.checked_mul(images.len()).ok_or_else(|| {
            Error::InvalidArgument(format!("preprocess: a batch of {} images is too large", images.len()))
        })?;
        to_u32("the output length", total)?;
        check_len("preprocess output", output, total)?;
        let plans = images.iter().map(|img| Plan::new(img, p)).collect::<Result<Vec<_>>>()?;
        let cap = binding_cap(ctx);
        let mut on_gpu = Vec::with_capacity(plans.len());
        let mut on_cpu = Vec::new();
        for (slot, plan) in plans.iter().enumerate() {
            match plan.refusal(p, cap) {
                None => on_gpu.push(slot),
                Some(_) if fallback => on_cpu.push(slot),
                Some(why) => return Err(Error::InvalidArgument(why)),
            }
        }
        let crops: Vec<Vec<f32>> =
            on_cpu.par_iter().map(|&slot| preprocess_image(&images[slot], p)).collect::<Result<_>>()?;
        for (&slot, crop) in on_cpu.iter().zip(&crops) {
            ctx.queue().write_buffer(output, (slot * image_len * 4) as u64, bytemuck::cast_slice(crop));
        }
        let dispatches = match on_gpu.is_empty() {
            true => Vec::new(),
            false => Self::gpu_dispatches(ctx, images, &plans, &on_gpu, p, output)?,
        };
        Ok(Self { dispatches, batch: images.len(), on_cpu: on_cpu.len(), image_len })
    }

    /// Uploads the images `slots` in groups that each fit one binding, then records two
    /// launches per image.
    fn gpu_dispatches(
        ctx: &Context, images: &[RgbImage], plans: &[Plan], slots: &[usize], p: &Preprocess, output: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let cap = binding_cap(ctx);
        // The CPU's exact `u8 as f32 / 255.0` for every byte value.
        let unit: Vec<f32> = (0..=255u8).map(|v| v as f32 / 255.0).collect();
        let unit = ctx.upload("preprocess unit table", &unit)?;
        // One scratch for all images: their dispatches run in order, so it is reused.
        let scratch_len = slots.iter().map(|&s| plans[s].scratch_len(p.crop as usize)).max().unwrap_or(1);
        let scratch = ctx.storage("preprocess scratch", scratch_len)?;
        let constants = [("WG", ELEMENTWISE_WG as f64)];
        let horizontal = ctx.kernel(&PipelineKey::new(ShaderFile::Preprocess, "horizontal", &constants), &BINDINGS)?;
        let vertical = ctx.kernel(&PipelineKey::new(ShaderFile::Preprocess, "vertical", &constants), &BINDINGS)?;
        let max_groups = ctx.limits().max_compute_workgroups_per_dimension;

        let mut dispatches = Vec::with_capacity(2 * slots.len());
        // Each group is uploaded as soon as it is full, so the host holds one copy at a time.
        let mut flush = |group: Group| -> Result<()> {
            let pixels = ctx.upload_pod("preprocess pixels", &group.pixels)?;
            let spans = ctx.upload_pod("preprocess spans", &group.spans)?;
            let weights = ctx.upload("preprocess weights", &group.weights)?;
            for params in &group.params {
                let uniform = ctx.uniform("preprocess params", params);
                let buffers = [&uniform, &pixels, &unit, &spans, &weights, &scratch, output];
                for (label, kernel, len) in [
                    ("preprocess horizontal", &horizontal, params.h_len),
                    ("preprocess vertical", &vertical, params.v_len),
                ] {
                    let grid = grid_1d(len as usize, ELEMENTWISE_WG, max_groups);
                    dispatches.push(Dispatch::new(ctx, label, kernel.clone(), &buffers, grid)?);
                }
            }
            Ok(())
        };
        let mut group = Group::default();
        for &slot in slots {
            if !group.takes(&plans[slot], cap) {
                flush(std::mem::take(&mut group))?;
            }
            group.push(&plans[slot], &images[slot], p, slot)?;
        }
        flush(group)?;
        Ok(dispatches)
    }

    /// The launches, two per image preprocessed on the GPU, to encode in order.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.batch
    }

    /// Always false: an empty batch is refused.
    pub fn is_empty(&self) -> bool {
        self.batch == 0
    }

    /// Images preprocessed on the CPU ([`PreprocessBatch::with_cpu_fallback`]).
    pub fn on_cpu(&self) -> usize {
        self.on_cpu
    }

    /// f32 values written to `output`: `batch * crop * crop * 3`.
    pub fn output_len(&self) -> usize {
        self.batch * self.image_len
    }
}
