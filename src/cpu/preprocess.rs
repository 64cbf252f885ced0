//! The CPU preprocessing oracle: resize the shorter side, centre-crop, normalise (the
//! ImageNet / torchvision convention) of images decoded by [`super::decode`]. The GPU preprocessing mirrors this module; the
//! filter taps are computed here and are meant to be uploaded as-is, so both sides agree.

use std::path::PathBuf;

use image::RgbImage;
use rayon::prelude::*;

use crate::error::{Error, Result};

use super::crop::check_not_empty;
pub use super::crop::{crop_offset, crop_window, resized_size, CropWindow};
pub use super::decode::{decode_bytes, decode_file, decoded_bytes, MAX_EXPANSION, MAX_PIXELS};
pub use super::filter_taps::{bilinear_taps, bilinear_taps_range, FilterTaps};
pub use crate::shape::preprocess::Preprocess;

/// Colour channels per pixel; every buffer here is interleaved RGB.
const CHANNELS: usize = 3;

/// An interleaved RGB image of f32 samples, row-major, `data[(y * width + x) * 3 + c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HwcImage {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width * 3` samples.
    pub data: Vec<f32>,
}

impl HwcImage {
    /// Converts 8-bit RGB to f32 as `u8 as f32 / 255.0` (a division, not a reciprocal multiply).
    pub fn from_rgb8(img: &RgbImage) -> Self {
        Self {
            height: img.height() as usize,
            width: img.width() as usize,
            data: img.as_raw().iter().map(|&v| to_unit(v)).collect(),
        }
    }
}

fn to_unit(sample: u8) -> f32 {
    sample as f32 / 255.0
}

/// Resizes so the shorter side becomes `target`, returning f32 samples in `[0, 1]`.
///
/// Separable, horizontal pass first, then vertical. Every sample is `u8 as f32 / 255.0`;
/// each output is the f32 sum over `j` in ascending order of `weight[j] * input[start + j]`,
/// with no rounding between the passes. If the shorter side already equals `target`, the
/// pixels pass through unchanged. Fails on an empty image or a zero target.
pub fn resize_shorter_side(img: &RgbImage, target: u32) -> Result<HwcImage> {
    let (in_h, in_w) = (img.height(), img.width());
    if target == 0 {
        return Err(Error::InvalidArgument("the resize target must be positive".into()));
    }
    check_not_empty(in_h, in_w)?;
    if in_h.min(in_w) == target {
        return Ok(HwcImage::from_rgb8(img));
    }
    let (out_h, out_w) = resized_size(in_h, in_w, target);
    let horizontal = resize_rows(img.as_raw(), in_w as usize, &bilinear_taps(in_w, out_w as u32));
    let data = resize_columns(&horizontal, out_w, &bilinear_taps(in_h, out_h as u32));
    Ok(HwcImage { height: out_h, width: out_w, data })
}

/// Horizontal pass over 8-bit rows of `in_w` pixels: returns `rows × out_len × 3` f32 samples.
/// Rows run in parallel; each sample is read through a table of `u8 as f32 / 255.0`, the
/// same values as dividing.
fn resize_rows(src: &[u8], in_w: usize, taps: &FilterTaps) -> Vec<f32> {
    let unit: [f32; 256] = std::array::from_fn(|v| to_unit(v as u8));
    let out_w = taps.start.len();
    let rows = src.len() / (in_w * CHANNELS);
    let mut dst = vec![0.0f32; rows * out_w * CHANNELS];
    src.par_chunks_exact(in_w * CHANNELS).zip(dst.par_chunks_exact_mut(out_w * CHANNELS)).for_each(
        |(src_row, dst_row)| {
            for (o, dst_pixel) in dst_row.chunks_exact_mut(CHANNELS).enumerate() {
                let (start, weights) = taps.taps(o);
                for (c, out) in dst_pixel.iter_mut().enumerate() {
                    let mut sum = 0.0f32;
                    for (j, w) in weights.iter().enumerate() {
                        sum += w * unit[src_row[(start + j) * CHANNELS + c] as usize];
                    }
                    *out = sum;
                }
            }
        },
    );
    dst
}

/// Vertical pass over f32 rows of `width` pixels: returns `out_len × width × 3` samples.
fn resize_columns(src: &[f32], width: usize, taps: &FilterTaps) -> Vec<f32> {
    let row_len = width * CHANNELS;
    let mut dst = vec![0.0f32; taps.start.len() * row_len];
    for (o, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        let (start, weights) = taps.taps(o);
        for (i, out) in dst_row.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for (j, w) in weights.iter().enumerate() {
                sum += w * src[(start + j) * row_len + i];
            }
            *out = sum;
        }
    }
    dst
}

/// Cuts the centred `crop`×`crop` square out of `img` (offsets from [`crop_offset`]).
pub fn center_crop(img: &HwcImage, crop: usize) -> Result<HwcImage> {
    if img.height < crop || img.width < crop {
        return Err(Error::InputTooSmall {
            height: img.height,
            width: img.width,
            min: crop,
            what: "the centre crop".into(),
        });
    }
    let (top, left) = (crop_offset(img.height, crop), crop_offset(img.width, crop));
    let row_len = img.width * CHANNELS;
    let mut data = Vec::with_capacity(crop * crop * CHANNELS);
    for y in top..top + crop {
        let row_start = y * row_len + left * CHANNELS;
        data.extend_from_slice(&img.data[row_start..row_start + crop * CHANNELS]);
    }
    Ok(HwcImage { height: crop, width: crop, data })
}

/// Normalises interleaved RGB samples in place: `(x - mean[c]) / std[c]` (a true division).
pub fn normalize(hwc: &mut [f32], mean: [f32; 3], std: [f32; 3]) {
    for pixel in hwc.chunks_exact_mut(CHANNELS) {
        for (c, value) in pixel.iter_mut().enumerate() {
            *value = (*value - mean[c]) / std[c];
        }
    }
}

/// Resize, centre-crop and normalise one image: `crop × crop × 3` f32 in HWC order.
///
/// Only the crop is computed ([`crop_window`]): bit for bit what [`resize_shorter_side`],
/// [`center_crop`] and [`normalize`] give, at the cost of the crop's outputs alone, so any
/// photo or strip fits in memory.
pub fn preprocess_image(img: &RgbImage, p: &Preprocess) -> Result<Vec<f32>> {
    p.validate()?;
    let window = crop_window(img.height(), img.width(), p)?;
    let row_len = img.width() as usize * CHANNELS;
    let rows = &img.as_raw()[window.first_row * row_len..(window.first_row + window.rows) * row_len];
    let horizontal = resize_rows(rows, img.width() as usize, &window.horizontal);
    let mut data = resize_columns(&horizontal, p.crop as usize, &window.vertical);
    normalize(&mut data, p.mean, p.std);
    Ok(data)
}

/// Checks that `img` can be preprocessed under `p` (it is not empty), without doing it.
pub fn check_image(img: &RgbImage, p: &Preprocess) -> Result<()> {
    p.validate()?;
    crop_window(img.height(), img.width(), p).map(|_| ())
}

/// Decodes and preprocesses files in parallel into one `N × crop × crop × 3` (NHWC) batch in
/// the order given. If any file fails, the error of the first failing path is returned.
pub fn preprocess_files(paths: &[PathBuf], p: &Preprocess) -> Result<Vec<f32>> {
    p.validate()?;
    let image_len = p.image_len();
    let total = image_len
        .checked_mul(paths.len())
        .ok_or_else(|| Error::InvalidArgument(format!("a batch of {} images is too large", paths.len())))?;
    let mut batch = vec![0.0f32; total];
    // Each image writes its own slot, so the batch needs no second copy; collecting the
    // results in order makes the reported error deterministic.
    let results: Vec<Result<()>> = batch
        .par_chunks_mut(image_len)
        .zip(paths.par_iter())
        .map(|(slot, path)| {
            let pixels = preprocess_image(&decode_file(path)?, p)?;
            slot.copy_from_slice(&pixels);
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<()>>()?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::decode::tests::{pattern, png_bytes};
    use image::Rgb;

    fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
        assert_eq!(actual.len(), expected.len());
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((a - e).abs() <= tolerance, "index {i}: {a} vs {e}");
        }
    }

    #[test]
    fn downscale_taps_sum_to_one_and_are_symmetric() {
        let taps = bilinear_taps(8, 4);
        for o in 0..4 {
            let (_, weights) = taps.taps(o);
            assert!((weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            // Output o mirrors output 3 - o about the image centre.
            let (mirror_start, mirror) = taps.taps(3 - o);
            let reversed: Vec<f32> = mirror.iter().rev().copied().collect();
            assert_close(weights, &reversed, 1e-7);
            assert_eq!(taps.start[o] as usize + weights.len(), 8 - mirror_start);
        }
        // An interior output spans four inputs with the antialiased triangle 1:3:3:1.
        assert_eq!((taps.start[1], taps.count[1]), (1, 4));
        assert_close(taps.taps(1).1, &[0.125, 0.375, 0.375, 0.125], 1e-7);
    }

    #[test]
    fn upscaling_two_to_four_is_textbook_bilinear() {
        let img = RgbImage::from_fn(2, 2, |x, _| Rgb([if x == 0 { 0 } else { 255 }; 3]));
        let resized = resize_shorter_side(&img, 4).unwrap();
        assert_eq!((resized.height, resized.width), (4, 4));
        // Output centres 0.25, 0.75, 1.25, 1.75 against input centres 0.5, 1.5, clamped.
        for row in resized.data.chunks_exact(4 * 3) {
            let reds: Vec<f32> = row.iter().step_by(3).copied().collect();
            assert_close(&reds, &[0.0, 0.25, 0.75, 1.0], 1e-6);
        }
    }

    #[test]
    fn image_at_target_size_passes_through() {
        let img = pattern(300, 256);
        let resized = resize_shorter_side(&img, 256).unwrap();
        assert_eq!((resized.height, resized.width), (256, 300));
        let expected: Vec<f32> = img.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
        assert_eq!(resized.data, expected);
    }

    /// The `(vertical, horizontal)` taps that [`resize_shorter_side`] applies to a
    /// `height`×`width` image: [`FilterTaps::identity`] on both axes when the shorter side
    /// already equals `target` (the pass-through), [`bilinear_taps`] to [`resized_size`]
    /// otherwise. For the GPU twin, which always runs both passes.
    pub fn resize_taps(height: u32, width: u32, target: u32) -> (FilterTaps, FilterTaps) {
        if height.min(width) == target {
            return (FilterTaps::identity(height), FilterTaps::identity(width));
        }
        let (out_h, out_w) = resized_size(height, width, target);
        (bilinear_taps(height, out_h as u32), bilinear_taps(width, out_w as u32))
    }

    #[test]
    fn resize_taps_reproduce_the_resize_and_the_pass_through() {
        for (width, height, target) in [(300, 256, 256), (13, 9, 9), (13, 9, 5), (7, 11, 20)] {
            let img = pattern(width, height);
            let (vertical, horizontal) = resize_taps(height, width, target);
            let rows = resize_rows(img.as_raw(), width as usize, &horizontal);
            let data = resize_columns(&rows, horizontal.start.len(), &vertical);
            assert_eq!(data, resize_shorter_side(&img, target).unwrap().data, "{width}x{height} -> {target}");
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 91, Rgb([200, 13, 77]));
        for target in [5, 20, 37 * 3] {
            let resized = resize_shorter_side(&img, target).unwrap();
            for pixel in resized.data.chunks_exact(3) {
                assert_close(pixel, &[200.0 / 255.0, 13.0 / 255.0, 77.0 / 255.0], 1e-6);
            }
        }
    }

    #[test]
    fn resized_size_truncates_the_long_side() {
        assert_eq!(resized_size(480, 640, 256), (256, 341)); // 341.33
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(3, 5, 2), (2, 3)); // 3.33
        assert_eq!(resized_size(2, 3, 3), (3, 4)); // 4.5 truncates, not rounds
        assert_eq!(resized_size(100, 100, 7), (7, 7));
    }

    #[test]
    fn crop_offsets_round_half_to_even() {
        let offsets: Vec<usize> = [0, 1, 2, 3, 4, 5, 7].iter().map(|d| crop_offset(10 + d, 10)).collect();
        assert_eq!(offsets, [0, 0, 1, 2, 2, 2, 4]);
    }

    #[test]
    fn center_crop_takes_the_middle_and_rejects_small_images() {
        let img = HwcImage { height: 4, width: 5, data: (0..60).map(|v| v as f32).collect() };
        // Heights 4 → top 1; widths 5 → left round(1.5) = 2.
        let crop = center_crop(&img, 2).unwrap();
        let first_pixel = ((5 + 2) * 3) as f32; // row 1, column 2
        assert_eq!(&crop.data[..3], &[first_pixel, first_pixel + 1.0, first_pixel + 2.0]);
        let result = center_crop(&img, 5);
        assert!(matches!(result, Err(Error::InputTooSmall { min: 5, .. })), "{result:?}");
    }

    #[test]
    fn normalize_a_known_pixel() {
        let p = Preprocess::default();
        let mut pixel = [1.0, 0.5, 0.0];
        normalize(&mut pixel, p.mean, p.std);
        let expected = [(1.0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.0 - 0.406) / 0.225];
        assert_close(&pixel, &expected, 1e-6);
    }

    #[test]
    fn preprocess_image_shape_and_validation() {
        let img = pattern(40, 30);
        let out = preprocess_image(&img, &Preprocess::imagenet(32, 24)).unwrap();
        assert_eq!(out.len(), 24 * 24 * 3);
        let infinite_mean = Preprocess { mean: [0.5, f32::INFINITY, 0.5], ..Preprocess::default() };
        let nan_std = Preprocess { std: [0.5, f32::NAN, 0.5], ..Preprocess::default() };
        for bad in [
            Preprocess::imagenet(16, 24),
            Preprocess::imagenet(0, 0),
            Preprocess::imagenet(8, 0),
            infinite_mean,
            nan_std,
        ] {
            let result = preprocess_image(&img, &bad);
            assert!(matches!(result, Err(Error::InvalidArgument(_))), "{bad:?}: {result:?}");
        }
    }

    /// The oracle's way: the whole resize, then the crop.
    fn full_resize_then_crop(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
        let mut cropped = center_crop(&resize_shorter_side(img, p.resize).unwrap(), p.crop as usize).unwrap();
        normalize(&mut cropped.data, p.mean, p.std);
        cropped.data
    }

    #[test]
    fn cropped_resize_is_bit_identical_to_the_whole_resize() {
        let mut rng = crate::rng::Rng::new(17);
        let noise = |w: u32, h: u32, rng: &mut crate::rng::Rng| {
            RgbImage::from_fn(w, h, |_, _| Rgb([0; 3].map(|_: u8| rng.next_u64() as u8)))
        };
        // Down- and upscaling, the pass-through, odd crops, strips both ways.
        let cases = [(301, 187, 128, 112), (97, 150, 64, 57), (64, 91, 64, 48), (23, 41, 50, 33), (300, 2, 16, 9)];
        for (w, h, resize, crop) in cases.into_iter().chain([(2, 300, 16, 16), (1, 1, 7, 5), (1000, 3, 8, 8)]) {
            let img = noise(w, h, &mut rng);
            let p = Preprocess::imagenet(resize, crop);
            let got = preprocess_image(&img, &p).unwrap();
            let expected = full_resize_then_crop(&img, &p);
            assert!(got.iter().map(|v| v.to_bits()).eq(expected.iter().map(|v| v.to_bits())), "{w}x{h} {p:?}");
        }
        for _ in 0..20 {
            let (w, h) = (rng.int(1, 120) as u32, rng.int(1, 120) as u32);
            let crop = rng.int(1, 40) as u32;
            let p = Preprocess::imagenet(crop + rng.int(0, 30) as u32, crop);
            let img = noise(w, h, &mut rng);
            assert_eq!(preprocess_image(&img, &p).unwrap(), full_resize_then_crop(&img, &p), "{w}x{h} {p:?}");
        }
    }

    #[test]
    fn taps_of_a_range_are_those_outputs_of_the_whole() {
        for (in_len, out_len, first, len) in [(1000, 37, 5, 20), (13, 200, 150, 50), (8, 4, 0, 4), (5, 5, 2, 1)] {
            let whole = bilinear_taps(in_len, out_len);
            let part = bilinear_taps_range(in_len, out_len as usize, first, len);
            for o in 0..len {
                assert_eq!(part.taps(o), whole.taps(first + o), "{in_len} -> {out_len}, output {}", first + o);
            }
        }
    }

    #[test]
    fn extreme_strips_crop_only_their_centre() {
        let p = Preprocess::default();
        for (w, h) in [(20000, 1), (1, 20000), (30000, 200)] {
            let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 251) as u8, (y % 13) as u8, 77]));
            let window = crop_window(h, w, &p).unwrap();
            assert!(window.rows <= h as usize && window.horizontal.start.len() == 224, "{w}x{h}: {window:?}");
            let out = preprocess_image(&img, &p).unwrap();
            assert_eq!(out.len(), p.image_len());
            assert!(out.iter().all(|v| v.is_finite()));
        }
        // One source row: every crop row is that row's resize.
        let strip = RgbImage::from_fn(20000, 1, |x, _| Rgb([(x % 251) as u8, 0, 0]));
        let out = preprocess_image(&strip, &p).unwrap();
        let row = 224 * 3;
        assert!(out.chunks_exact(row).all(|r| r == &out[..row]));
    }

    #[test]
    fn preprocess_files_keeps_order_and_reports_the_first_error() {
        let dir = std::env::temp_dir().join(format!("lookalike-preprocess-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = Preprocess::imagenet(8, 6);
        let images = [pattern(10, 12), pattern(9, 8), RgbImage::from_pixel(8, 8, Rgb([9, 9, 9]))];
        let paths: Vec<PathBuf> = images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let path = dir.join(format!("{i}.png"));
                std::fs::write(&path, png_bytes(img)).unwrap();
                path
            })
            .collect();
        let batch = preprocess_files(&paths, &p).unwrap();
        let expected: Vec<f32> = images.iter().flat_map(|img| preprocess_image(img, &p).unwrap()).collect();
        assert_eq!(batch, expected);

        let bad = dir.join("bad.png");
        std::fs::write(&bad, b"garbage").unwrap();
        let mixed = vec![paths[0].clone(), bad.clone(), dir.join("missing.png")];
        match preprocess_files(&mixed, &p) {
            Err(Error::Image { path, .. }) => assert_eq!(path, bad),
            other => panic!("expected the garbage file's error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
