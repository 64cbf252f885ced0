//! `.npy` readers: `read_f32_bytes`, `read_f32` (through a file) and `into_nhwc_images`.
//!
//! Ok must be right: the data are the file's last `4 x count` bytes for the declared shape
//! (bit for bit, NaN payloads too); mutations of data bytes only, and whitespace-only header
//! edits, must load; header edits whose declared shape the test knows must give that shape.
//! Bound: `read_f32_bytes` may allocate the input's length plus 4 KiB (the values, the
//! parsed header, an error message); `read_f32` also holds the file's bytes (2x);
//! `into_nhwc_images` one copy of the data plus 4 KiB.

use std::path::{Path, PathBuf};

use lookalike::npy::{self, NpyArray};
use lookalike::rng::Rng;
use lookalike::Error;

use crate::harness::{self, Case};
use crate::mutate::{self, Changed};

const SLACK: u64 = 4096;

struct Valid {
    bytes: Vec<u8>,
    header_len: usize,
    shape: Vec<usize>,
}

/// A version 1.0 file as numpy writes it (`dict` padded with spaces and a newline to 64
/// bytes), or a version 2.0 / 3.0 one with a u32 header length.
fn npy_file(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let prefix = if version == 1 { 10 } else { 12 };
    let mut header = dict.to_string();
    while !(prefix + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = vec![0x93, b'N', b'U', b'M', b'P', b'Y', version, 0];
    if version == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn dict(shape: &str) -> String {
    format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
}

fn tuple(shape: &[String]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.join(", ")),
    }
}

/// Valid files: written by `npy::write_f32` (the project's writer) for several shapes,
/// including NCHW image batches, plus version 2.0 and 3.0 files.
fn valid_files(dir: &Path) -> Vec<Valid> {
    let mut rng = Rng::new(11);
    let shapes: [&[usize]; 8] = [&[5], &[2, 3], &[1, 3, 4, 5], &[2, 3, 3, 2], &[], &[0], &[3, 0, 2], &[7, 1]];
    let mut files = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let count: usize = shape.iter().product();
        // Any bit pattern: NaN payloads and infinities must come through unchanged.
        let data: Vec<f32> = (0..count).map(|_| f32::from_bits(rng.next_u64() as u32)).collect();
        let path = dir.join(format!("valid-{i}.npy"));
        npy::write_f32(&path, shape, &data).expect("write a valid .npy");
        let bytes = std::fs::read(&path).expect("read it back");
        files.push(Valid { header_len: bytes.len() - 4 * count, bytes, shape: shape.to_vec() });
    }
    for version in [2u8, 3] {
        let data: Vec<u8> = (0..24).map(|i| i as u8 * 7).collect();
        let bytes = npy_file(version, &dict("(2, 3)"), &data);
        files.push(Valid { header_len: bytes.len() - 24, bytes, shape: vec![2, 3] });
    }
    files
}

/// A header edit whose declared shape and validity the test knows: `(kind, bytes,
/// Some(shape) if the file is valid)`.
fn targeted(rng: &mut Rng, base: &Valid) -> (&'static str, Vec<u8>, Option<Vec<usize>>) {
    let data = &base.bytes[base.header_len..];
    let count = data.len() / 4;
    let huge = |rng: &mut Rng| -> String {
        let picks = [
            "0".to_string(),
            "3".into(),
            (1u64 << 31).to_string(),
            (1u64 << 32).to_string(),
            (1u64 << 62).to_string(),
            u64::MAX.to_string(),
            "18446744073709551616".into(),
            "1000000000000000000000000000000".into(),
            ((1u64 << 62) + count as u64).to_string(),
            ((1u64 << 63) + count as u64 / 2).to_string(),
        ];
        picks[rng.int(0, picks.len() - 1)].clone()
    };
    match rng.int(0, 6) {
        0 => {
            // Dimensions that overflow, wrap to the real element count, or are just large;
            // sometimes an NCHW batch of zero or one huge images.
            let dims: Vec<String> = if rng.uniform() < 0.3 {
                vec![rng.int(0, 1).to_string(), "3".into(), huge(rng), huge(rng)]
            } else {
                (0..rng.int(1, 5)).map(|_| huge(rng)).collect()
            };
            let parsed: Option<Vec<usize>> = dims.iter().map(|d| d.parse().ok()).collect();
            let fits = parsed.as_ref().and_then(|p| p.iter().try_fold(1usize, |a, &d| a.checked_mul(d)));
            let valid = fits.and_then(|n| n.checked_mul(4)) == Some(data.len());
            (
                "huge or wrapping dimensions",
                npy_file(1, &dict(&tuple(&dims)), data),
                valid.then(|| parsed.unwrap_or_default()),
            )
        }
        1 => {
            // Another shape with the same element count: must load with that shape.
            let shape: Vec<usize> = match count {
                0 => vec![0, rng.int(0, 9), 3],
                n => vec![1, n, 1],
            };
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            ("same count, another shape", npy_file(1, &dict(&tuple(&dims)), data), Some(shape))
        }
        2 => {
            // Up to thousands of dimensions of 1; numpy allows at most 64.
            let dims = vec!["1".to_string(); if rng.uniform() < 0.3 { rng.int(1, 64) } else { rng.int(65, 20_000) }];
            let shape = vec![1; dims.len()];
            let valid = count == 1 && dims.len() <= 64;
            ("many dimensions", npy_file(1, &dict(&tuple(&dims)), data), valid.then_some(shape))
        }
        3 => {
            // The header length field: zero, the maximum, or off by a little.
            let mut bytes = base.bytes.clone();
            let field = if bytes[6] == 1 { 8..10 } else { 8..12 };
            let real = base.header_len - field.end;
            let value: u64 = match rng.int(0, 3) {
                0 => 0,
                1 => u64::MAX,
                2 => (real as u64).wrapping_add(rng.int(1, 8) as u64),
                _ => (real as u64).saturating_sub(rng.int(1, 8) as u64),
            };
            let width = field.len();
            bytes[field].copy_from_slice(&value.to_le_bytes()[..width]);
            ("header length field", bytes, None)
        }
        4 => {
            // Version bytes.
            let mut bytes = base.bytes.clone();
            let versions = [(0, 0), (1, 1), (2, 0), (3, 0), (4, 0), (255, 255)];
            let (major, minor) = versions[rng.int(0, versions.len() - 1)];
            let unchanged = (major, minor) == (bytes[6], bytes[7]);
            bytes[6] = major;
            bytes[7] = minor;
            ("version bytes", bytes, unchanged.then(|| base.shape.clone()))
        }
        5 => {
            // Other dtypes and orders.
            let descrs = ["<f8", ">f4", "<i4", "|u1", "<f2", "f4", "<f4"];
            let descr = descrs[rng.int(0, descrs.len() - 1)];
            let order = if rng.uniform() < 0.8 { "False" } else { "True" };
            let dims: Vec<String> = base.shape.iter().map(usize::to_string).collect();
            let text = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {}, }}", tuple(&dims));
            let valid = descr == "<f4" && order == "False";
            ("dtype and order", npy_file(1, &text, data), valid.then(|| base.shape.clone()))
        }
        _ => {
            // Whitespace only: the padding's spaces become tabs, newlines or carriage returns.
            let mut bytes = base.bytes.clone();
            let dict_end = bytes[..base.header_len].iter().rposition(|&b| b == b'}').unwrap_or(0) + 1;
            for b in &mut bytes[dict_end..base.header_len - 1] {
                *b = [b' ', b'\t', b'\r', b'\n'][rng.int(0, 3)];
            }
            ("whitespace in the padding", bytes, Some(base.shape.clone()))
        }
    }
}

fn f32_bits(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Checks an array the reader returned for `bytes`.
fn check_array(array: &NpyArray, bytes: &[u8], problems: &mut Vec<String>) {
    let count = array.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(array.data.len()) || 4 * array.data.len() > bytes.len() {
        problems.push(format!("shape {:?} does not hold the {} values returned", array.shape, array.data.len()));
        return;
    }
    let tail = &bytes[bytes.len() - 4 * array.data.len()..];
    if array.data.iter().map(|v| v.to_bits()).ne(f32_bits(tail)) {
        problems.push("the values are not the file's data bytes".into());
    }
}

/// `into_nhwc_images` on whatever loaded: an NCHW batch transposed, or a typed error.
fn check_nhwc(array: NpyArray, path: &Path, problems: &mut Vec<String>) {
    let bound = 4 * array.data.len() as u64 + SLACK;
    let input = array.clone();
    let run = harness::run("npy", bound, || array.into_nhwc_images(path));
    problems.extend(run.problems);
    match run.value {
        Some(Ok(batch)) => {
            let [n, c, h, w] = input.shape[..] else {
                return problems.push(format!("into_nhwc_images took shape {:?}", input.shape));
            };
            // Callers compute one image's length as height x width x 3: it must fit.
            let image = batch.height.checked_mul(batch.width).and_then(|p| p.checked_mul(3));
            let size = image.and_then(|i| i.checked_mul(batch.batch));
            if (batch.batch, batch.height, batch.width, c) != (n, h, w, 3) || size != Some(batch.data.len()) {
                return problems.push(format!("into_nhwc_images gave {}x{}x{}x3 for shape {:?}", n, h, w, input.shape));
            }
            let transposed = (0..batch.data.len()).all(|i| {
                let (pixel, ch) = (i / 3, i % 3);
                let (img, at) = (pixel / (h * w), pixel % (h * w));
                batch.data[i].to_bits() == input.data[(img * 3 + ch) * h * w + at].to_bits()
            });
            if !transposed {
                problems.push("into_nhwc_images did not transpose NCHW to NHWC".into());
            }
        }
        Some(Err(Error::Npy { path: p, .. })) if p == path => {}
        Some(Err(e)) => problems.push(format!("into_nhwc_images: unexpected error {e}")),
        None => {}
    }
}

#[test]
fn npy_readers() {
    let scratch = harness::Scratch::new("npy");
    let dir = &scratch.0;
    let valid = valid_files(dir);
    let donors: Vec<&[u8]> = valid.iter().map(|v| &v.bytes[..]).collect();
    let path: PathBuf = dir.join("case.npy");
    harness::fuzz("npy", 0x6E_7079, harness::cases(12_000), |rng| {
        let base = &valid[rng.int(0, valid.len() - 1)];
        // Some(shape): the test knows the mutant is a valid file declaring `shape`.
        let (kind, bytes, expect): (&'static str, Vec<u8>, Option<Vec<usize>>) = if rng.uniform() < 0.2 {
            targeted(rng, base)
        } else {
            let m = mutate::mutate(rng, &base.bytes, &donors, &(0..base.header_len));
            let data_only = match &m.changed {
                Changed::InPlace(at) => at.iter().all(|&a| a >= base.header_len),
                _ => false,
            };
            (m.kind, m.bytes, data_only.then(|| base.shape.clone()))
        };
        let via_file = rng.int(0, 9) == 0;
        let mut problems = Vec::new();
        let run = if via_file {
            std::fs::write(&path, &bytes).expect("write the case");
            harness::run("npy", 2 * bytes.len() as u64 + SLACK, || npy::read_f32(&path))
        } else {
            harness::run("npy", bytes.len() as u64 + SLACK, || npy::read_f32_bytes(&bytes, &path))
        };
        problems.extend(run.problems);
        let outcome = match run.value {
            Some(Ok(array)) => {
                check_array(&array, &bytes, &mut problems);
                match &expect {
                    Some(shape) if *shape != array.shape => {
                        problems.push(format!("loaded shape {:?}, the file declares {shape:?}", array.shape))
                    }
                    None if ["huge or wrapping dimensions", "dtype and order", "many dimensions"].contains(&kind) => {
                        problems.push(format!("loaded an invalid file as shape {:?}", array.shape))
                    }
                    _ => {}
                }
                let same = array.shape == base.shape && bytes.ends_with(&base.bytes[base.header_len..]);
                check_nhwc(array, &path, &mut problems);
                if same { "ok (as the original)" } else { "ok" }.to_string()
            }
            Some(Err(e)) => {
                match (&e, &expect) {
                    (_, Some(shape)) => problems.push(format!("refused a valid file of shape {shape:?}: {e}")),
                    (Error::Npy { path: p, .. } | Error::Io { path: p, .. }, None) if *p == path => {}
                    _ => problems.push(format!("unexpected error {e}")),
                }
                harness::kind(&e)
            }
            None => "panic".into(),
        };
        Case { mutation: kind, outcome, problems }
    });
}
