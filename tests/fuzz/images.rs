//! `decode_bytes` and `decode_file` on JPEG and PNG images encoded here: 8-bit RGB, RGBA,
//! grey and grey-alpha PNGs, 16-bit RGB, RGBA and grey PNGs, baseline colour and grey
//! JPEGs (one with a comment segment), and two progressive JPEGs made with libjpeg-turbo
//! (the `image` crate's encoder writes baseline only).
//!
//! Ok must be right: the size is one the file declares; a PNG whose bytes changed in place
//! or were cut decodes to the original pixels or not at all (every chunk carries a CRC);
//! a change inside a JPEG comment does not matter. Allocation is bounded by what the file
//! may declare: `3 x length + 16 bytes x pixels + 1 MiB`, where pixels count only if the
//! declared image is one the decoder admits (at most `MAX_PIXELS`, and no more than
//! `MAX_EXPANSION` bytes of pixels per byte of file): a tiny file declaring 60000 x 60000
//! must be refused before the decoder allocates its buffer.

use std::io::Cursor;
use std::ops::Range;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba};
use lookalike::cpu::preprocess::{decode_bytes, decode_file, MAX_EXPANSION, MAX_PIXELS};
use lookalike::rng::Rng;
use lookalike::Error;

use crate::harness::{self, Case};
use crate::mutate::{self, Changed};

const SLACK: u64 = 1 << 20;
/// Bytes a decoder may hold per declared pixel: the decoded buffer (up to 8, RGBA16), the
/// RGB copy (3), a progressive JPEG's coefficients (2 per sample).
const PER_PIXEL: u64 = 16;

/// A 24 x 16 progressive colour JPEG (libjpeg-turbo 2.1.5, `jpeg_simple_progression`,
/// quality 75, 4:2:0, ten scans) of a gradient.
const PROGRESSIVE_RGB: [&str; 11] = [
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f141d1a1f1e1d",
    "1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffdb0043010909090c0b0c180d0d1832211c2132323232",
    "32323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232ffc20011080010001803",
    "012200021101031101ffc40017000003010000000000000000000000000000040506ffc40016010101010000000000000000000000000005",
    "0406ffda000c0301000210031000000180d586958e39a205d0ff00ffc400161000030000000000000000000000000000000103ffda000801",
    "0100010502511445114451144fffc40017110003010000000000000000000000000000030422ffda0008010301013f0192c15664ffc40017",
    "110003010000000000000000000000000000030421ffda0008010201013f01a2d196e9ffc400141001000000000000000000000000000000",
    "20ffda0008010100063f025fffc4001510010100000000000000000000000000000061ffda0008010100013f219a69a69a6fffda000c0301",
    "0002000300000010e43fffc400161101010100000000000000000000000000210031ffda0008010301013f10c184dfffc400171101000300",
    "00000000000000000000000000213151ffda0008010201013f10ba5a5fffc4001510010100000000000000000000000000000031ffda0008",
    "010100013f1091224489123fffd9",
];

/// The same made from grey, progressive, one component.
const PROGRESSIVE_GREY: [&str; 7] = [
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f141d1a1f1e1d",
    "1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc2000b080010001801011100ffc40015000101000000",
    "00000000000000000000000605ffda000801010000000132a1207513ff00ffc4001810010101010100000000000000000000000300021205",
    "ffda00080101000105020c4188f9330c418bda7e07ffc4001f100100010109000000000000000000000002011000041121223171b1f0ffda",
    "0008010100063f02a4b791318cd45d4eef52e3dd5bffc4001c10000300010500000000000000000000000001311121415171f0ffda000801",
    "0100013f2199311ad967e225499338c5f4de8a6ed78cffda00080101000000106fffc4001a10010003010101000000000000000000000100",
    "1151213141ffda0008010100013f10c5314e8f444d255475a07c98a62979f07e7d1695889c3c8fffd9",
];

fn hex(lines: &[&str]) -> Vec<u8> {
    let text: String = lines.concat();
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Png,
    Jpeg,
}

struct Valid {
    bytes: Vec<u8>,
    format: Format,
    decoded: RgbImage,
    /// Where the parsing happens: a PNG's chunks before its pixel data, a JPEG's segments
    /// up to its first scan.
    header: Range<usize>,
    /// Bytes whose change must not matter (a JPEG comment's text); empty if none.
    neutral: Range<usize>,
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Recomputes the CRC of the PNG chunk starting at `at` (its length field).
fn fix_crc(bytes: &mut [u8], at: usize) {
    let Some(len) = bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
        return;
    };
    let end = at + 8 + len;
    if end + 4 <= bytes.len() {
        let crc = crc32(&bytes[at + 4..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

fn encode(image: DynamicImage, format: Format) -> Vec<u8> {
    let mut bytes = Vec::new();
    match format {
        Format::Png => image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).expect("encode PNG"),
        Format::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80)
            .encode_image(&image)
            .expect("encode JPEG"),
    }
    bytes
}

/// The end of a PNG's chunks before its first IDAT, or of a JPEG's segments up to and
/// including the first scan header.
fn header_end(bytes: &[u8], format: Format) -> usize {
    match format {
        Format::Png => bytes.windows(4).position(|w| w == b"IDAT").map_or(bytes.len(), |i| i + 4),
        Format::Jpeg => bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .map_or(bytes.len(), |i| i + 2 + u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize),
    }
}

fn valid_files() -> Vec<Valid> {
    let (w, h) = (37u32, 23u32);
    let v = |x: u32, y: u32, k: u32| ((x * 7 + y * 13 + k * 50) % 256) as u8;
    let v16 = |x: u32, y: u32, k: u32| ((x * 1777 + y * 911 + k * 20011) % 65536) as u16;
    let images: Vec<(DynamicImage, Format)> = vec![
        (
            DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| Rgb([v(x, y, 0), v(x, y, 1), v(x, y, 2)]))),
            Format::Png,
        ),
        (
            DynamicImage::ImageRgba8(ImageBuffer::from_fn(19, 11, |x, y| {
                Rgba([v(x, y, 0), v(x, y, 1), v(x, y, 2), v(x, y, 3)])
            })),
            Format::Png,
        ),
        (DynamicImage::ImageLuma8(ImageBuffer::from_fn(13, 9, |x, y| Luma([v(x, y, 0)]))), Format::Png),
        (DynamicImage::ImageLumaA8(ImageBuffer::from_fn(8, 8, |x, y| LumaA([v(x, y, 0), v(x, y, 1)]))), Format::Png),
        (
            DynamicImage::ImageRgb16(ImageBuffer::from_fn(21, 13, |x, y| {
                Rgb([v16(x, y, 0), v16(x, y, 1), v16(x, y, 2)])
            })),
            Format::Png,
        ),
        (
            DynamicImage::ImageRgba16(ImageBuffer::from_fn(17, 10, |x, y| {
                Rgba([v16(x, y, 0), v16(x, y, 1), v16(x, y, 2), v16(x, y, 3)])
            })),
            Format::Png,
        ),
        (DynamicImage::ImageLuma16(ImageBuffer::from_fn(9, 7, |x, y| Luma([v16(x, y, 0)]))), Format::Png),
        (
            DynamicImage::ImageRgb8(ImageBuffer::from_fn(40, 24, |x, y| Rgb([v(x, y, 0), v(x, y, 1), v(x, y, 2)]))),
            Format::Jpeg,
        ),
        (DynamicImage::ImageLuma8(ImageBuffer::from_fn(16, 16, |x, y| Luma([v(x, y, 0)]))), Format::Jpeg),
    ];
    let mut files: Vec<(Vec<u8>, Format, Range<usize>)> = Vec::new();
    for (image, format) in images {
        let bytes = encode(image.clone(), format);
        // PNG is lossless: the originals the cases compare with are the source pixels.
        if format == Format::Png {
            assert_eq!(decode_bytes(&bytes, Path::new("source")).expect("decodes"), image.to_rgb8());
        }
        files.push((bytes, format, 0..0));
    }
    files.push((hex(&PROGRESSIVE_RGB), Format::Jpeg, 0..0));
    files.push((hex(&PROGRESSIVE_GREY), Format::Jpeg, 0..0));
    // A comment segment right after SOI, whose text must not matter.
    let mut commented = files[7].0.clone();
    let text = b"lookalike fuzz: a comment the decoder skips";
    let mut segment = vec![0xFF, 0xFE];
    segment.extend_from_slice(&(text.len() as u16 + 2).to_be_bytes());
    segment.extend_from_slice(text);
    commented.splice(2..2, segment);
    files.push((commented, Format::Jpeg, 6..6 + text.len()));
    // A text chunk after IHDR (covered by its CRC).
    let mut texted = files[0].0.clone();
    let mut chunk = (13u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(b"tEXtComment\0fuzz!");
    chunk.extend_from_slice(&[0; 4]);
    texted.splice(33..33, chunk);
    fix_crc(&mut texted, 33);
    files.push((texted, Format::Png, 0..0));
    files
        .into_iter()
        .map(|(bytes, format, neutral)| {
            let decoded = decode_bytes(&bytes, Path::new("valid")).expect("a valid image decodes");
            Valid { header: 0..header_end(&bytes, format), bytes, format, decoded, neutral }
        })
        .collect()
}

/// Sizes the bytes declare, as `(width, height, bits per pixel)`: a PNG's IHDR, or every
/// JPEG start-of-frame marker anywhere in the file (an over-estimate of what a decoder
/// may see). JPEG counts 8 bits a pixel, the least a decoder may take it for.
fn declared(bytes: &[u8]) -> Vec<(u64, u64, u64)> {
    let be32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64);
    if bytes.starts_with(b"\x89PNG") {
        if bytes.get(12..16) != Some(b"IHDR") {
            return Vec::new();
        }
        let (Some(w), Some(h), Some(&depth), Some(&colour)) = (be32(16), be32(20), bytes.get(24), bytes.get(25)) else {
            return Vec::new();
        };
        let channels = match colour {
            0 | 3 => 1,
            4 => 2,
            2 => 3,
            _ => 4,
        };
        return vec![(w, h, (depth as u64 * channels).max(1))];
    }
    let sof = |m: u8| (0xC0..=0xCF).contains(&m) && ![0xC4, 0xC8, 0xCC].contains(&m);
    (0..bytes.len().saturating_sub(8))
        .filter(|&i| bytes[i] == 0xFF && sof(bytes[i + 1]))
        .map(|i| {
            let h = u16::from_be_bytes([bytes[i + 5], bytes[i + 6]]) as u64;
            let w = u16::from_be_bytes([bytes[i + 7], bytes[i + 8]]) as u64;
            (w, h, 8)
        })
        .collect()
}

/// The most pixels a decoder may allocate for: the largest declared image it admits. A
/// JPEG decoder works in whole blocks of up to 32 x 32 pixels (8 x 8 times sampling
/// factors up to 4), so a JPEG's sides count rounded up to 32: a 1 x 65535 frame is
/// decoded as 32 x 65535.
fn admitted_pixels(bytes: &[u8]) -> u64 {
    let len = bytes.len() as u64;
    let jpeg = !bytes.starts_with(b"\x89PNG");
    declared(bytes)
        .into_iter()
        .filter(|&(w, h, bits)| w * h <= MAX_PIXELS && w * h * bits / 8 <= MAX_EXPANSION * len)
        .map(|(w, h, _)| if jpeg { w.next_multiple_of(32) * h.next_multiple_of(32) } else { w * h })
        .max()
        .unwrap_or(0)
}

/// Header edits: sizes up to 60000 x 60000 and 2^32 - 1 (CRC fixed, so the PNG decoder
/// reads them), other bit depths, colour types, component counts and sampling factors.
fn targeted(rng: &mut Rng, valid: &Valid) -> (&'static str, Vec<u8>) {
    let mut bytes = valid.bytes.clone();
    let (w, h) = (valid.decoded.width(), valid.decoded.height());
    let sizes = [0, 1, 2, w + 1, 2 * w, 1000, 8736, 11648, 60000, 65535, 1 << 20, (1 << 31) - 1, u32::MAX];
    let size = |rng: &mut Rng| sizes[rng.int(0, sizes.len() - 1)];
    match valid.format {
        Format::Png => {
            let kind = match rng.int(0, 2) {
                0 => {
                    let (nw, nh) = (size(rng), if rng.uniform() < 0.3 { h } else { size(rng) });
                    bytes[16..20].copy_from_slice(&nw.to_be_bytes());
                    bytes[20..24].copy_from_slice(&nh.to_be_bytes());
                    "huge dimensions"
                }
                1 => {
                    bytes[24] = [1, 2, 4, 8, 16, 3, 0, 32][rng.int(0, 7)];
                    bytes[25] = [0, 2, 3, 4, 6, 1, 7][rng.int(0, 6)];
                    "bit depth and colour type"
                }
                _ => {
                    bytes[26 + rng.int(0, 2)] = [0, 1, 2, 255][rng.int(0, 3)];
                    "compression, filter or interlace method"
                }
            };
            fix_crc(&mut bytes, 8);
            (kind, bytes)
        }
        Format::Jpeg => {
            let sof = (0..bytes.len() - 9).find(|&i| bytes[i] == 0xFF && [0xC0, 0xC1, 0xC2].contains(&bytes[i + 1]));
            let Some(at) = sof else { return ("no frame header", bytes) };
            match rng.int(0, 2) {
                0 => {
                    let (nw, nh) = (size(rng).min(65535) as u16, size(rng).min(65535) as u16);
                    bytes[at + 5..at + 7].copy_from_slice(&nh.to_be_bytes());
                    bytes[at + 7..at + 9].copy_from_slice(&nw.to_be_bytes());
                    ("huge dimensions", bytes)
                }
                1 => {
                    // Sampling factors of each component, up to 4 x 4 and beyond.
                    let components = bytes[at + 9] as usize;
                    for c in 0..components.min(4) {
                        if let Some(b) = bytes.get_mut(at + 11 + 3 * c) {
                            *b = [0x11, 0x22, 0x44, 0x41, 0x14, 0x00, 0xFF, 0x55][rng.int(0, 7)];
                        }
                    }
                    ("sampling factors", bytes)
                }
                _ => {
                    bytes[at + 4] = [8, 12, 16, 0][rng.int(0, 3)];
                    bytes[at + 9] = [0, 1, 2, 3, 4, 255][rng.int(0, 5)];
                    ("precision and component count", bytes)
                }
            }
        }
    }
}

#[test]
fn image_decoding() {
    const { assert!(MAX_PIXELS >= 102_000_000, "the limit must admit 100-megapixel photos (a GFX100 frame is 101.8 MP)") };
    let valid = valid_files();
    let donors: Vec<&[u8]> = valid.iter().map(|v| &v.bytes[..]).collect();
    let scratch = harness::Scratch::new("images");
    let dir = &scratch.0;
    let path: PathBuf = dir.join("case.img");
    harness::fuzz("images", 0x1_3A6E, harness::cases(11_000), |rng| {
        let base = &valid[rng.int(0, valid.len() - 1)];
        let (kind, bytes, changed) = if rng.uniform() < 0.15 {
            let (kind, bytes) = targeted(rng, base);
            (kind, bytes, None)
        } else if !base.neutral.is_empty() && rng.uniform() < 0.1 {
            let mut bytes = base.bytes.clone();
            let (_, undo) = mutate::in_place(rng, &mut bytes[base.neutral.clone()], &(0..base.neutral.len()));
            let at = undo.iter().map(|&(a, _)| a + base.neutral.start).collect();
            ("inside a comment", bytes, Some(Changed::InPlace(at)))
        } else {
            let m = mutate::mutate(rng, &base.bytes, &donors, &base.header);
            (m.kind, m.bytes, Some(m.changed))
        };
        let via_file = rng.int(0, 9) == 0;
        if via_file {
            std::fs::write(&path, &bytes).expect("write the case");
        }
        let bound = SLACK + 3 * bytes.len() as u64 + PER_PIXEL * admitted_pixels(&bytes);
        let run =
            harness::run("images", bound, || if via_file { decode_file(&path) } else { decode_bytes(&bytes, &path) });
        let mut problems = run.problems;
        let neutral = matches!(&changed, Some(Changed::InPlace(at)) if at.iter().all(|a| base.neutral.contains(a)));
        // Every PNG chunk has a CRC: bytes changed in place or cut off cannot decode to
        // other pixels.
        let protected = base.format == Format::Png && matches!(changed, Some(Changed::InPlace(_) | Changed::Truncated));
        let outcome = match run.value {
            Some(Ok(image)) => {
                let size = (image.width() as u64, image.height() as u64);
                if !declared(&bytes).iter().any(|&(w, h, _)| (w, h) == size) {
                    problems.push(format!("decoded {}x{}, a size the file does not declare", size.0, size.1));
                }
                if (neutral || protected) && image != base.decoded {
                    problems.push("decoded other pixels than the original's".into());
                }
                if image == base.decoded { "ok (as the original)" } else { "ok" }.to_string()
            }
            Some(Err(e)) => {
                if neutral {
                    problems.push(format!("refused a change inside a comment: {e}"));
                }
                if !matches!(&e, Error::Image { path: p, .. } if *p == path) {
                    problems.push(format!("unexpected error {e}"));
                }
                match &e {
                    // A typed error still, but worth seeing: decode_bytes caught a decoder panic.
                    Error::Image { reason, .. } if reason.contains("panicked") => {
                        "error Image (decoder panic caught)".into()
                    }
                    _ => harness::kind(&e),
                }
            }
            None => "panic".into(),
        };
        Case { mutation: kind, outcome, problems }
    });
}

/// A 100-megapixel 16-bit RGBA PNG (one GFX100 frame, 11648 x 8736) decodes: the size
/// limits refuse no real photo. About 2.5 GB and half a minute, so not in the default run:
/// `cargo test --test fuzz -- --ignored`.
#[test]
#[ignore]
fn decodes_a_100_megapixel_16_bit_rgba_png() {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let (w, h) = (11_648u32, 8_736u32);
    let image = ImageBuffer::from_fn(w, h, |x, y| Rgba([(x * 5) as u16, (y * 7) as u16, ((x + y) * 3) as u16, 65535]));
    let mut bytes = Vec::new();
    image
        .write_with_encoder(PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Sub))
        .expect("encode");
    drop(image);
    let rgb = decode_bytes(&bytes, Path::new("gfx100.png")).expect("a 100-megapixel photo decodes");
    assert_eq!((rgb.width(), rgb.height()), (w, h));
    let expect = |v: u32| ((v & 0xFFFF) as f64 / 257.0).round() as u8;
    assert_eq!(rgb.get_pixel(w - 1, h - 1), &Rgb([expect(5 * (w - 1)), expect(7 * (h - 1)), expect(3 * (w + h - 2))]));
}
