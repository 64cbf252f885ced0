//! Decoding JPEG and PNG files into 8-bit RGB, with the declared size checked against the
//! file before anything is allocated.

use std::io::Cursor;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{Error, Result};

/// Colour channels per decoded pixel (interleaved RGB).
const CHANNELS: usize = 3;

/// The most pixels [`decode_bytes`] decodes: 2^27 (134 megapixels), above the largest
/// camera sensors (~102 MP medium format). A 16-bit RGBA image that size takes 1.5 GB.
pub const MAX_PIXELS: u64 = 1 << 27;

/// The most bytes of pixels, at the file's own bit depth, that one byte of file may
/// declare: twice the most that deflate (1032:1) or JPEG (under 1400:1, with 4x4 chroma
/// subsampling and progressive scans) can pack into a byte, so no valid file is refused,
/// while a few hundred bytes that declare a gigapixel are, before anything is allocated.
pub const MAX_EXPANSION: u64 = 2048;

/// The decoders' own allowance for metadata (a PNG's ICC profile and text chunks,
/// decompressed); pixel buffers are bounded by [`MAX_PIXELS`] and [`MAX_EXPANSION`].
const METADATA_BYTES: u64 = 16 << 20;

/// Reads and decodes a JPEG or PNG file into 8-bit RGB (see [`decode_bytes`]).
pub fn decode_file(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, path)
}

/// Decodes JPEG or PNG bytes (format guessed from the content) into 8-bit RGB.
///
/// Grey becomes R = G = B, alpha is dropped (as PIL's `convert("RGB")` does), 16-bit samples
/// are scaled to 8 bits. The declared size is checked before any pixel is decoded: at most
/// [`MAX_PIXELS`], and no more than [`MAX_EXPANSION`] bytes of pixels per byte of file (a
/// damaged or hostile header cannot make the decoder allocate gigabytes). `path` is only
/// used in errors.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let fail = |reason: String| Error::Image { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(fail("the file is empty (0 bytes)".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| fail(e.to_string()))?;
    let format = reader.format().ok_or_else(|| fail("not a recognised image format; expected JPEG or PNG".into()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(METADATA_BYTES);
    reader.limits(limits);
    // Decoders are third-party code fed untrusted bytes: turn a decoder panic into an error.
    let decoded = panic::catch_unwind(AssertUnwindSafe(|| {
        let decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
        let (width, height) = decoder.dimensions();
        let bits = match format {
            ImageFormat::Png => png_bits_per_pixel(bytes),
            _ => None,
        };
        let bits = bits.unwrap_or_else(|| decoder.color_type().bits_per_pixel().into());
        check_declared_size(width, height, bits, bytes.len()).map_err(fail)?;
        DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))
    }))
    .map_err(|_| fail("the image decoder panicked on this file".into()))??;
    Ok(decoded.into_rgb8())
}

/// A PNG's bits per pixel as stored (before the decoder widens 1-, 2- and 4-bit samples
/// and palettes), from its IHDR chunk.
fn png_bits_per_pixel(bytes: &[u8]) -> Option<u64> {
    let (&depth, &colour) = (bytes.get(24)?, bytes.get(25)?);
    let samples = match colour {
        0 | 3 => 1,
        4 => 2,
        2 => 3,
        6 => 4,
        _ => return None,
    };
    Some(u64::from(depth) * samples)
}

/// Refuses an image of more than [`MAX_PIXELS`], or one whose pixels (at `bits_per_pixel`)
/// could not come out of `file_len` bytes.
fn check_declared_size(width: u32, height: u32, bits_per_pixel: u64, file_len: usize) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(format!(
            "{width}x{height} is {} megapixels; lookalike decodes up to {} megapixels",
            pixels / 1_000_000,
            MAX_PIXELS / 1_000_000
        ));
    }
    if pixels * bits_per_pixel / 8 > MAX_EXPANSION * file_len as u64 {
        return Err(format!("{file_len} bytes cannot hold a {width}x{height} image: the file is truncated or damaged"));
    }
    Ok(())
}

/// Bytes of the 8-bit RGB image [`decode_file`] would return for `path`, from its header
/// alone; 0 where the header cannot be read (decoding it will then report why).
pub fn decoded_bytes(path: &Path) -> u64 {
    let header = || {
        let reader = ImageReader::new(std::io::BufReader::new(std::fs::File::open(path).ok()?));
        reader.with_guessed_format().ok()?.into_dimensions().ok()
    };
    let dimensions = panic::catch_unwind(AssertUnwindSafe(header)).ok().flatten();
    dimensions.map_or(0, |(w, h)| w as u64 * h as u64 * CHANNELS as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::Rgb;

    pub(crate) fn png_bytes(img: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        bytes
    }

    /// A deterministic non-trivial test image.
    pub(crate) fn pattern(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, 255 - (x * 5) as u8]))
    }

    #[test]
    fn decode_rejects_empty_and_garbage() {
        for bytes in [&b""[..], b"definitely not an image", b"\x89PNG\r\n\x1a\n truncated"] {
            let result = decode_bytes(bytes, Path::new("bad.png"));
            assert!(matches!(result, Err(Error::Image { .. })), "{result:?}");
        }
        let result = decode_file(Path::new("/nonexistent/missing.jpg"));
        assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    }

    /// `bytes` (a PNG) declaring `width` x `height`, its IHDR checksum fixed.
    fn png_declaring(mut bytes: Vec<u8>, width: u32, height: u32) -> Vec<u8> {
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let mut crc = !0u32;
        for &b in &bytes[12..29] {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        bytes[29..33].copy_from_slice(&(!crc).to_be_bytes());
        bytes
    }

    #[test]
    fn decode_refuses_sizes_the_file_cannot_hold_before_allocating() {
        let small = png_bytes(&pattern(13, 9));
        let err = decode_bytes(&png_declaring(small.clone(), 12_000, 12_000), Path::new("big.png")).unwrap_err();
        assert!(err.to_string().contains("144 megapixels; lookalike decodes up to 134"), "{err}");
        for (w, h) in [(60_000, 60_000), (5_000, 5_000), (u32::MAX, 1)] {
            let err = decode_bytes(&png_declaring(small.clone(), w, h), Path::new("lie.png")).unwrap_err();
            assert!(err.to_string().contains("lie.png"), "{err}");
        }
        let err = decode_bytes(&png_declaring(small.clone(), 5_000, 5_000), Path::new("lie.png")).unwrap_err();
        assert!(err.to_string().contains("cannot hold a 5000x5000 image"), "{err}");
        // Within what the file can hold: decoding starts and finds the data short.
        let err = decode_bytes(&png_declaring(small, 14, 9), Path::new("short.png")).unwrap_err();
        assert!(!err.to_string().contains("cannot hold"), "{err}");
    }

    #[test]
    fn declared_size_limits_admit_large_photos() {
        // 100-megapixel frames (GFX100: 11648 x 8736) at realistic sizes: a 16-bit RGBA
        // PNG of 300 MB, an 8-bit RGB PNG of 150 MB, a JPEG of 20 MB; and the largest
        // expansion deflate allows.
        assert_eq!(check_declared_size(11_648, 8_736, 64, 300 << 20), Ok(()));
        assert_eq!(check_declared_size(11_648, 8_736, 24, 150 << 20), Ok(()));
        assert_eq!(check_declared_size(11_648, 8_736, 24, 20 << 20), Ok(()));
        assert_eq!(check_declared_size(4_000, 3_000, 24, 36_000_000 / 1032), Ok(()));
        assert!(check_declared_size(60_000, 60_000, 24, 1_000).is_err());
        assert!(check_declared_size(11_648, 8_736, 24, 100).is_err());
    }

    #[test]
    fn decodes_16_bit_rgba_beyond_the_metadata_allowance() {
        // 1600 x 1400 RGBA16 is 17.9 MB of pixels, more than the 16 MiB the decoders get
        // for metadata: pixel buffers are bounded by the size checks, not by that.
        let image = image::ImageBuffer::from_fn(1600, 1400, |x, y| {
            image::Rgba([(x * 40) as u16, (y * 45) as u16, 1000, 65535])
        });
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgba16(image).write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        let rgb = decode_bytes(&bytes, Path::new("deep.png")).unwrap();
        assert_eq!((rgb.width(), rgb.height()), (1600, 1400));
        assert_eq!(rgb.get_pixel(1, 1), &Rgb([0, 0, 4]));
    }

    #[test]
    fn png_round_trips_exactly_and_converts_to_rgb() {
        let img = pattern(13, 9);
        assert_eq!(decode_bytes(&png_bytes(&img), Path::new("p.png")).unwrap(), img);
        let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 40 + y) as u8]));
        let mut bytes = Vec::new();
        grey.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        let rgb = decode_bytes(&bytes, Path::new("g.png")).unwrap();
        assert_eq!(rgb.get_pixel(2, 1), &Rgb([81, 81, 81]));
    }
}
