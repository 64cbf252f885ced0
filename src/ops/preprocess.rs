//! Rust twin of `shaders/preprocess.wgsl`: resize, centre crop and normalisation of decoded
//! RGB8 images on the GPU, straight into the NHWC f32 batch that feeds the network.
//!
//! The numbers are those of [`crate::cpu::preprocess::preprocess_image`]: the same taps
//! (computed here by [`resize_taps`] and uploaded), the same f32 operations in the same
//! order. Only the crop window is computed: the horizontal pass for the crop's columns over
//! the source rows the crop's vertical taps touch (the only rows uploaded), the vertical
//! pass for the crop's rows.

use image::RgbImage;

use crate::cpu::preprocess::{crop_offset, resize_taps, resized_size, FilterTaps, Preprocess};
use crate::error::{Error, Result};
use crate::gpu::{grid_1d, shaders::ShaderFile, Binding, Context, Dispatch, PipelineKey};
use crate::ops::{check_len, ELEMENTWISE_WG};

/// Longest side, in pixels, an image may have after resizing. Beyond it the taps and the
/// implied image are absurd (a 10000x10 strip resized to 224 would be 224000 wide).
pub const MAX_RESIZED_SIDE: usize = 16384;

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

const BINDINGS: [Binding; 7] = [
    Binding::Uniform,
    Binding::ReadOnly,
    Binding::ReadOnly,
    Binding::ReadOnly,
    Binding::ReadOnly,
    Binding::ReadWrite,
    Binding::ReadWrite,
];

/// What one image needs from the shared buffers, before offsets are known.
struct Plan {
    in_w: usize,
    /// Source rows `first_row..first_row + rows` are uploaded; the vertical taps read no others.
    first_row: usize,
    rows: usize,
    /// Taps of the crop's columns, then of the crop's rows (starts relative to `first_row`).
    horizontal: FilterTaps,
    vertical: FilterTaps,
}

impl Plan {
    fn new(img: &RgbImage, p: &Preprocess) -> Result<Self> {
        let (in_h, in_w) = (img.height(), img.width());
        if in_h == 0 || in_w == 0 {
            return Err(Error::InputTooSmall {
                height: in_h as usize,
                width: in_w as usize,
                min: 1,
                what: "resizing".into(),
            });
        }
        let (out_h, out_w) = resized_size(in_h, in_w, p.resize);
        if out_h.max(out_w) > MAX_RESIZED_SIDE {
            return Err(Error::InvalidArgument(format!(
                "preprocess: a {in_w}x{in_h} image resized to shorter side {} would be {out_w}x{out_h}; \
                 sides beyond {MAX_RESIZED_SIDE} are refused",
                p.resize
            )));
        }
        let crop = p.crop as usize;
        if out_h < crop || out_w < crop {
            return Err(Error::InputTooSmall {
                height: out_h,
                width: out_w,
                min: crop,
                what: "the centre crop".into(),
            });
        }
        let (vertical, horizontal) = resize_taps(in_h, in_w, p.resize);
        let horizontal = window(&horizontal, crop_offset(out_w, crop), crop, 0);
        let top = crop_offset(out_h, crop);
        let first_row = (top..top + crop).map(|y| vertical.start[y] as usize).min().unwrap_or(0);
        let end_row = (top..top + crop).map(|y| (vertical.start[y] + vertical.count[y]) as usize).max().unwrap_or(0);
        let vertical = window(&vertical, top, crop, first_row as u32);
        Ok(Self { in_w: in_w as usize, first_row, rows: end_row - first_row, horizontal, vertical })
    }

    fn pixels<'a>(&self, img: &'a RgbImage) -> &'a [u8] {
        let row = self.in_w * CHANNELS;
        &img.as_raw()[self.first_row * row..(self.first_row + self.rows) * row]
    }
}

/// Outputs `first..first + len` of `taps`, with `shift` subtracted from every start.
fn window(taps: &FilterTaps, first: usize, len: usize, shift: u32) -> FilterTaps {
    let stride = taps.max_taps;
    FilterTaps {
        start: taps.start[first..first + len].iter().map(|s| s - shift).collect(),
        count: taps.count[first..first + len].to_vec(),
        weights: taps.weights[first * stride..(first + len) * stride].to_vec(),
        max_taps: stride,
    }
}

fn to_u32(what: &str, value: usize) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Error::InvalidArgument(format!("preprocess: {what} ({value}) exceeds 32-bit indexing")))
}

/// A batch of decoded images prepared for the GPU: pixels and filter taps uploaded, two
/// dispatches per image (horizontal then vertical pass), writing image `i` into slot `i` of
/// `output` (`[batch, crop, crop, 3]` NHWC f32). Encode [`dispatches`](Self::dispatches) in
/// order, in one pass or several; they can be replayed.
pub struct PreprocessBatch {
    dispatches: Vec<Dispatch>,
    batch: usize,
    image_len: usize,
}

impl PreprocessBatch {
    /// Validates `p` and every image, uploads all pixels into one buffer and all taps into
    /// another, and prepares the launches. Errors are those of the CPU path
    /// ([`Error::InvalidArgument`] for a bad `p`, [`Error::InputTooSmall`] for an empty
    /// image) plus [`Error::ShapeMismatch`] for a short `output`, and
    /// [`Error::InvalidArgument`] for an empty batch or a resized side beyond
    /// [`MAX_RESIZED_SIDE`].
    pub fn new(ctx: &Context, images: &[RgbImage], p: &Preprocess, output: &wgpu::Buffer) -> Result<Self> {
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

        // Shared buffers: every image's rows (each padded to whole u32s), its (start, count)
        // spans and its weights, with per-image offsets in its uniform.
        let crop = p.crop as usize;
        let pixel_bytes: usize = plans.iter().map(|plan| (plan.rows * plan.in_w * CHANNELS).next_multiple_of(4)).sum();
        to_u32("the uploaded pixel bytes", pixel_bytes)?;
        let mut pixels = Vec::with_capacity(pixel_bytes);
        let mut spans: Vec<[u32; 2]> = Vec::with_capacity(plans.len() * 2 * crop);
        let mut weights = Vec::new();
        let mut params = Vec::with_capacity(plans.len());
        let mut scratch_len = 1;
        let mut mean = [0.0; 4];
        let mut std = [1.0; 4];
        mean[..3].copy_from_slice(&p.mean);
        std[..3].copy_from_slice(&p.std);
        for ((plan, img), slot) in plans.iter().zip(images).zip(0..) {
            let pixel_offset = to_u32("the uploaded pixel bytes", pixels.len())?;
            pixels.extend_from_slice(plan.pixels(img));
            pixels.resize(pixels.len().next_multiple_of(4), 0);
            let mut append = |taps: &FilterTaps| -> Result<(u32, u32)> {
                let offsets = (to_u32("the tap count", spans.len())?, to_u32("the weight count", weights.len())?);
                spans.extend(taps.start.iter().zip(&taps.count).map(|(&s, &c)| [s, c]));
                weights.extend_from_slice(&taps.weights);
                Ok(offsets)
            };
            let (h_spans, h_weights) = append(&plan.horizontal)?;
            let (v_spans, v_weights) = append(&plan.vertical)?;
            let h_len = plan.rows * crop * CHANNELS;
            scratch_len = scratch_len.max(h_len);
            params.push(Params {
                in_w: plan.in_w as u32,
                crop: p.crop,
                pixel_offset,
                out_offset: (slot * image_len) as u32,
                h_spans,
                h_weights,
                h_max_taps: plan.horizontal.max_taps as u32,
                h_len: to_u32("the horizontal pass length", h_len)?,
                v_spans,
                v_weights,
                v_max_taps: plan.vertical.max_taps as u32,
                v_len: image_len as u32,
                mean,
                std_dev: std,
            });
        }
        // The CPU's exact `u8 as f32 / 255.0` for every byte value.
        let unit: Vec<f32> = (0..=255u8).map(|v| v as f32 / 255.0).collect();
        let pixels = ctx.upload_pod("preprocess pixels", &pixels)?;
        let unit = ctx.upload("preprocess unit table", &unit)?;
        let spans = ctx.upload_pod("preprocess spans", &spans)?;
        let weights = ctx.upload("preprocess weights", &weights)?;
        // One scratch for all images: their dispatches run in order, so it is reused.
        let scratch = ctx.storage("preprocess scratch", scratch_len)?;

        let constants = [("WG", ELEMENTWISE_WG as f64)];
        let horizontal = ctx.kernel(&PipelineKey::new(ShaderFile::Preprocess, "horizontal", &constants), &BINDINGS)?;
        let vertical = ctx.kernel(&PipelineKey::new(ShaderFile::Preprocess, "vertical", &constants), &BINDINGS)?;
        let max_groups = ctx.limits().max_compute_workgroups_per_dimension;
        let mut dispatches = Vec::with_capacity(2 * params.len());
        for params in &params {
            let uniform = ctx.uniform("preprocess params", params);
            let buffers = [&uniform, &pixels, &unit, &spans, &weights, &scratch, output];
            for (label, kernel, len) in
                [("preprocess horizontal", &horizontal, params.h_len), ("preprocess vertical", &vertical, params.v_len)]
            {
                let grid = grid_1d(len as usize, ELEMENTWISE_WG, max_groups);
                dispatches.push(Dispatch::new(ctx, label, kernel.clone(), &buffers, grid)?);
            }
        }
        Ok(Self { dispatches, batch: images.len(), image_len })
    }

    /// The launches, two per image, to encode in order.
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

    /// f32 values written to `output`: `batch * crop * crop * 3`.
    pub fn output_len(&self) -> usize {
        self.batch * self.image_len
    }
}
