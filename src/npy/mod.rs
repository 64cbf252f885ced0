//! Reading and writing NumPy `.npy` files that hold little-endian float32 arrays.
//!
//! Format reference: <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>.
//! A file is the magic `\x93NUMPY`, a version byte pair, a little-endian header length
//! (u16 for version 1.0, u32 for 2.0 and 3.0), an ASCII Python-dict header, then the raw data.

use std::fs;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};

mod header;

use header::{encode_header, parse_header, F32_DESCR, MAGIC};

/// An n-dimensional float32 array in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimension sizes; empty for a 0-d (scalar) array.
    pub shape: Vec<usize>,
    /// The elements in row-major order; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

/// A batch of images in the layout the kernels use.
#[derive(Debug, Clone, PartialEq)]
pub struct NhwcBatch {
    /// Images.
    pub batch: usize,
    /// Rows of each image.
    pub height: usize,
    /// Columns of each image.
    pub width: usize,
    /// `[batch, height, width, 3]`, row-major.
    pub data: Vec<f32>,
}

impl NpyArray {
    /// Reads an `N x 3 x H x W` (NCHW, as numpy and PyTorch write images) array as an NHWC
    /// batch; any other rank or channel count is an error naming `path`.
    pub fn into_nhwc_images(self, path: &Path) -> Result<NhwcBatch> {
        let [n, c, h, w] = self.shape[..] else {
            return Err(Error::Npy {
                path: path.to_path_buf(),
                reason: format!("expected a 4-D N x 3 x H x W (NCHW) array, got shape {:?}", self.shape),
            });
        };
        if c != 3 {
            return Err(Error::Npy {
                path: path.to_path_buf(),
                reason: format!("expected 3 channels in dimension 1 (NCHW), got shape {:?}", self.shape),
            });
        }
        // With no images the element count is 0 whatever H and W are: one image's length,
        // which callers compute, must still fit.
        if h.checked_mul(w).and_then(|hw| hw.checked_mul(c)).is_none() {
            return Err(Error::Npy {
                path: path.to_path_buf(),
                reason: format!("images of {h} x {w} pixels are too large (shape {:?})", self.shape),
            });
        }
        let mut data = vec![0.0; self.data.len()];
        for img in 0..n {
            for ch in 0..c {
                let plane = &self.data[(img * c + ch) * h * w..][..h * w];
                for (pixel, &v) in plane.iter().enumerate() {
                    data[(img * h * w + pixel) * c + ch] = v;
                }
            }
        }
        Ok(NhwcBatch { batch: n, height: h, width: w, data })
    }
}

/// Reads a `.npy` file of dtype `<f4` in C order.
pub fn read_f32(path: &Path) -> Result<NpyArray> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    read_f32_bytes(&bytes, path)
}

/// Parses the bytes of a `.npy` file of dtype `<f4` in C order; `path` is only used in errors.
pub fn read_f32_bytes(bytes: &[u8], path: &Path) -> Result<NpyArray> {
    let fail = |reason: String| Error::Npy { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(fail("the file is empty (0 bytes)".into()));
    }
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        return Err(fail("it does not start with the magic \\x93NUMPY".into()));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start) = match (major, bytes.len()) {
        (1, len) if len >= 10 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        (2 | 3, len) if len >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        (1..=3, _) => return Err(fail("the file ends inside the header length".into())),
        _ => return Err(fail(format!("format version {major}.{minor} is not supported; expected 1.0, 2.0 or 3.0"))),
    };
    let header_end = header_start + header_len;
    let header_bytes = bytes
        .get(header_start..header_end)
        .ok_or_else(|| fail(format!("the file ends inside the {header_len}-byte header")))?;
    let header_text =
        std::str::from_utf8(header_bytes).map_err(|_| fail("the header is not valid ASCII/UTF-8 text".into()))?;
    let header = parse_header(header_text).map_err(|reason| fail(format!("bad header: {reason}")))?;

    if header.descr != F32_DESCR {
        return Err(fail(format!(
            "dtype {} is not supported; expected little-endian float32 '{F32_DESCR}' \
             (convert with x.astype('<f4'))",
            header.descr
        )));
    }
    if header.fortran_order {
        return Err(fail(
            "the array is in Fortran (column-major) order; expected C order \
             (save np.ascontiguousarray(x))"
                .into(),
        ));
    }
    let count =
        element_count(&header.shape).ok_or_else(|| fail(format!("shape {:?} has too many elements", header.shape)))?;
    let expected_bytes =
        count.checked_mul(4).ok_or_else(|| fail(format!("shape {:?} has too many elements", header.shape)))?;
    let payload = &bytes[header_end..];
    if payload.len() < expected_bytes {
        return Err(fail(format!(
            "the data is truncated: shape {:?} needs {expected_bytes} bytes but only {} follow the header",
            header.shape,
            payload.len()
        )));
    }
    if payload.len() > expected_bytes {
        return Err(fail(format!(
            "{} unexpected bytes follow the {expected_bytes} bytes of data for shape {:?}",
            payload.len() - expected_bytes,
            header.shape
        )));
    }
    let data = payload.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(NpyArray { shape: header.shape, data })
}

/// Writes `data` with the given `shape` as a version 1.0 `.npy` file of dtype `<f4`, C order.
///
/// The file is written to a temporary sibling, synced, then renamed over `path`, so an
/// interrupted write never leaves a half-written file in place of an existing one.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let count =
        element_count(shape).ok_or_else(|| Error::InvalidArgument(format!("shape {shape:?} has too many elements")))?;
    if count != data.len() {
        return Err(Error::InvalidArgument(format!(
            "cannot write {}: shape {shape:?} holds {count} elements but {} were given",
            path.display(),
            data.len()
        )));
    }
    let header = encode_header(shape)?;
    write_atomic(path, |w| {
        w.write_all(&header)?;
        for value in data {
            w.write_all(&value.to_le_bytes())?;
        }
        Ok(())
    })
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, unique to this process and test.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lookalike-npy-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn npy_error_reason(result: Result<NpyArray>) -> String {
        match result {
            Err(Error::Npy { reason, .. }) => reason,
            other => panic!("expected Error::Npy, got {other:?}"),
        }
    }

    /// A v1.0 file with a raw header dict as given, padded the way numpy pads it.
    fn numpy_style_file(dict: &str, data: &[f32]) -> Vec<u8> {
        let mut header = dict.to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn round_trips_many_shapes() {
        let dir = scratch_dir("round-trip");
        let shapes: [&[usize]; 7] = [&[5], &[2, 3], &[1, 2, 3, 4], &[0], &[3, 0, 2], &[], &[1]];
        for shape in shapes {
            let count: usize = shape.iter().product();
            let data: Vec<f32> = (0..count).map(|i| i as f32 * 0.5 - 1.25).collect();
            let path = dir.join("array.npy");
            write_f32(&path, shape, &data).unwrap();
            let bytes = fs::read(&path).unwrap();
            assert_eq!((bytes.len() - data.len() * 4) % 64, 0, "header not 64-aligned");
            assert_eq!(bytes[bytes.len() - data.len() * 4 - 1], b'\n');
            let array = read_f32(&path).unwrap();
            assert_eq!(array.shape, shape);
            assert_eq!(array.data, data);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_shape_tuples_like_numpy() {
        let dict = |shape: &[usize]| String::from_utf8(encode_header(shape).unwrap()[10..].to_vec());
        let header = dict(&[3]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"));
        assert!(dict(&[2, 3]).unwrap().contains("'shape': (2, 3), }"));
        assert!(dict(&[]).unwrap().contains("'shape': (), }"));
    }

    #[test]
    fn overwrite_leaves_no_temp_file() {
        let dir = scratch_dir("overwrite");
        let path = dir.join("a.npy");
        write_f32(&path, &[2], &[1.0, 2.0]).unwrap();
        write_f32(&path, &[1], &[3.0]).unwrap();
        assert_eq!(read_f32(&path).unwrap().data, [3.0]);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_rejects_wrong_element_count() {
        let path = std::env::temp_dir().join("never-written.npy");
        let result = write_f32(&path, &[2, 3], &[0.0; 5]);
        assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
        assert!(!path.exists());
    }

    #[test]
    fn parses_numpy_written_header() {
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bytes = numpy_style_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &data);
        let array = read_f32_bytes(&bytes, Path::new("x.npy")).unwrap();
        assert_eq!(array.shape, [2, 3]);
        assert_eq!(array.data, data);
    }

    #[test]
    fn parses_other_key_orders_and_spacing() {
        let bytes = numpy_style_file("{ \"shape\" :(4 ,),'fortran_order':False,'descr':'<f4'}", &[0.0; 4]);
        assert_eq!(read_f32_bytes(&bytes, Path::new("x.npy")).unwrap().shape, [4]);
        let bytes = numpy_style_file("{'descr': '<f4', 'fortran_order': False, 'shape': ()}", &[7.0]);
        let scalar = read_f32_bytes(&bytes, Path::new("x.npy")).unwrap();
        assert_eq!((scalar.shape.len(), scalar.data.as_slice()), (0, &[7.0][..]));
    }

    #[test]
    fn reads_version_2_and_3() {
        for version in [2u8, 3] {
            let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
            let mut bytes = vec![0x93, b'N', b'U', b'M', b'P', b'Y', version, 0];
            bytes.extend_from_slice(&(dict.len() as u32).to_le_bytes());
            bytes.extend_from_slice(dict.as_bytes());
            bytes.extend_from_slice(&1.5f32.to_le_bytes());
            bytes.extend_from_slice(&(-2.0f32).to_le_bytes());
            assert_eq!(read_f32_bytes(&bytes, Path::new("x.npy")).unwrap().data, [1.5, -2.0]);
        }
    }

    #[test]
    fn rejects_other_dtypes_with_a_hint() {
        for descr in ["<f8", "<i8", ">f4", "|u1"] {
            let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
            let bytes = numpy_style_file(&dict, &[0.0, 0.0]);
            let reason = npy_error_reason(read_f32_bytes(&bytes, Path::new("x.npy")));
            assert!(reason.contains(descr) && reason.contains("'<f4'"), "{reason}");
        }
    }

    #[test]
    fn rejects_fortran_order() {
        let bytes = numpy_style_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", &[0.0; 4]);
        let reason = npy_error_reason(read_f32_bytes(&bytes, Path::new("x.npy")));
        assert!(reason.contains("Fortran"), "{reason}");
    }

    #[test]
    fn rejects_truncated_and_trailing_data() {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let bytes = numpy_style_file(dict, &[0.0; 6]);
        let reason = npy_error_reason(read_f32_bytes(&bytes[..bytes.len() - 1], Path::new("x")));
        assert!(reason.contains("truncated"), "{reason}");
        let reason = npy_error_reason(read_f32_bytes(&bytes[..40], Path::new("x")));
        assert!(reason.contains("header"), "{reason}");
        let mut longer = bytes.clone();
        longer.push(0);
        let reason = npy_error_reason(read_f32_bytes(&longer, Path::new("x")));
        assert!(reason.contains("unexpected bytes"), "{reason}");
    }

    #[test]
    fn rejects_bad_magic_empty_and_garbage_headers() {
        let path = Path::new("x.npy");
        assert!(npy_error_reason(read_f32_bytes(b"", path)).contains("empty"));
        assert!(npy_error_reason(read_f32_bytes(b"PK\x03\x04 zip file", path)).contains("magic"));
        assert!(npy_error_reason(read_f32_bytes(b"\x93NUMPY\x01", path)).contains("magic"));
        assert!(npy_error_reason(read_f32_bytes(b"\x93NUMPY\x09\x00\x00\x00", path)).contains("version"));
        for dict in [
            "garbage",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk",
            "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}",
        ] {
            let bytes = numpy_style_file(dict, &[0.0]);
            assert!(npy_error_reason(read_f32_bytes(&bytes, path)).contains("header"), "{dict}");
        }
    }

    #[test]
    fn rejects_overflowing_shapes() {
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", usize::MAX, 2);
        let bytes = numpy_style_file(&dict, &[]);
        let reason = npy_error_reason(read_f32_bytes(&bytes, Path::new("x")));
        assert!(reason.contains("too many elements"), "{reason}");
    }

    #[test]
    fn rejects_more_dimensions_than_numpy_allows() {
        let ones = |n: usize| vec!["1"; n].join(", ");
        let bytes =
            numpy_style_file(&format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},)}}", ones(64)), &[2.0]);
        assert_eq!(read_f32_bytes(&bytes, Path::new("x")).unwrap().shape, [1; 64]);
        let bytes =
            numpy_style_file(&format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},)}}", ones(65)), &[2.0]);
        let reason = npy_error_reason(read_f32_bytes(&bytes, Path::new("x")));
        assert!(reason.contains("more than 64 dimensions"), "{reason}");
    }

    #[test]
    fn an_empty_batch_of_huge_images_is_refused() {
        let huge = 1usize << 40;
        let empty = NpyArray { shape: vec![0, 3, huge, huge], data: Vec::new() };
        let result = empty.into_nhwc_images(Path::new("x.npy"));
        assert!(matches!(&result, Err(Error::Npy { reason, .. }) if reason.contains("too large")), "{result:?}");
        let empty = NpyArray { shape: vec![0, 3, 5, 7], data: Vec::new() };
        assert_eq!(empty.into_nhwc_images(Path::new("x.npy")).unwrap().batch, 0);
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let result = read_f32(Path::new("/nonexistent/definitely/missing.npy"));
        assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    }
}
