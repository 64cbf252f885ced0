//! The index's safetensors file, streamed: written from the embeddings and read back into
//! them without a whole-file byte buffer, so saving or loading an index needs its size in
//! memory once, not two or three times (a 1M x 2048 f32 index is 8 GB).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One tensor's values, borrowed for writing.
pub(crate) enum TensorData<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    U32(&'a [u32]),
}

impl TensorData<'_> {
    fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::F16(_) => "F16",
            TensorData::U32(_) => "U32",
        }
    }

    fn byte_len(&self) -> usize {
        match self {
            TensorData::F32(v) => 4 * v.len(),
            TensorData::F16(v) => 2 * v.len(),
            TensorData::U32(v) => 4 * v.len(),
        }
    }
}

/// Writes a safetensors file whose header is the same bytes for the same content: metadata
/// keys in sorted order, then the tensors back to back in the order given, the data
/// 8-byte aligned as the safetensors writers leave it.
pub(crate) fn write(
    out: &mut dyn Write, tensors: &[(&str, Vec<usize>, TensorData)], metadata: &BTreeMap<&str, String>,
) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let sorted: serde_json::Map<String, serde_json::Value> =
        metadata.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect();
    header.insert("__metadata__".into(), sorted.into());
    let mut offset = 0;
    for (name, shape, data) in tensors {
        let entry = serde_json::json!({"dtype": data.dtype(), "shape": shape, "data_offsets": [offset, offset + data.byte_len()]});
        header.insert(name.to_string(), entry);
        offset += data.byte_len();
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(&text)?;
    for (_, _, data) in tensors {
        match data {
            TensorData::F32(v) => write_le(out, v, f32::to_le_bytes)?,
            TensorData::F16(v) => write_le(out, v, half::f16::to_le_bytes)?,
            TensorData::U32(v) => write_le(out, v, u32::to_le_bytes)?,
        }
    }
    Ok(())
}

/// Little-endian bytes of `values`, a block at a time.
fn write_le<T: bytemuck::Pod, const N: usize>(
    out: &mut dyn Write, values: &[T], to_le: fn(T) -> [u8; N],
) -> std::io::Result<()> {
    if cfg!(target_endian = "little") {
        return out.write_all(bytemuck::cast_slice(values));
    }
    for block in values.chunks(1 << 16) {
        out.write_all(&block.iter().flat_map(|&x| to_le(x)).collect::<Vec<u8>>())?;
    }
    Ok(())
}

/// Where one tensor lies in the file.
#[derive(Debug, serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// An open safetensors file: its header parsed, its tensors read on request.
#[derive(Debug)]
pub(crate) struct TensorFile {
    path: PathBuf,
    file: BufReader<File>,
    data_start: u64,
    entries: BTreeMap<String, Entry>,
    pub metadata: BTreeMap<String, String>,
}

/// Headers beyond this are not an index's (the safetensors crate's own limit).
const MAX_HEADER: u64 = 100_000_000;

impl TensorFile {
    /// Opens `path` and checks that its header is a safetensors header whose tensors lie
    /// inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Safetensors { path: path.to_path_buf(), reason };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let info = file.metadata().map_err(|e| Error::io(path, e))?;
        // Opening a directory succeeds on Unix; reading it would then fail as a short file.
        if info.is_dir() {
            return Err(Error::IsADirectory { path: path.to_path_buf(), expected: "an index file" });
        }
        let file_len = info.len();
        let mut file = BufReader::new(file);
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes).map_err(|_| bad("shorter than a safetensors header".into()))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER || 8 + header_len > file_len {
            return Err(bad(format!(
                "header of {header_len} bytes in a file of {file_len}: truncated or not safetensors"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
        let mut fields: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
        let metadata = match fields.remove("__metadata__") {
            Some(m) => {
                serde_json::from_value(m).map_err(|e| bad(format!("`__metadata__` is not a map of strings: {e}")))?
            }
            None => BTreeMap::new(),
        };
        let data_len = file_len - 8 - header_len;
        let mut entries = BTreeMap::new();
        for (name, value) in fields {
            let entry: Entry = serde_json::from_value(value).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            let [begin, end] = entry.data_offsets;
            if begin > end || end > data_len {
                return Err(bad(format!("tensor `{name}` lies at bytes {begin}..{end} of {data_len}: truncated file")));
            }
            entries.insert(name, entry);
        }
        // The tensors tile the data section, as the format requires and writers leave it:
        // no gap, no overlap, nothing after the last (a spliced or appended file is damage).
        let mut spans: Vec<(u64, u64, &str)> =
            entries.iter().map(|(name, e)| (e.data_offsets[0], e.data_offsets[1], name.as_str())).collect();
        spans.sort();
        let mut covered = 0;
        for (begin, end, name) in spans {
            if begin != covered {
                let how = if begin < covered { "overlaps the tensor before it" } else { "leaves a gap before it" };
                return Err(bad(format!("tensor `{name}` at bytes {begin}..{end} {how}: damaged file")));
            }
            covered = end;
        }
        if covered != data_len {
            return Err(bad(format!(
                "{} bytes after the last tensor's end ({covered} of {data_len}): damaged or appended to",
                data_len - covered
            )));
        }
        Ok(Self { path: path.to_path_buf(), file, data_start: 8 + header_len, entries, metadata })
    }

    /// Dtype and shape of tensor `name`, if present.
    pub fn describe(&self, name: &str) -> Option<(&str, &[usize])> {
        self.entries.get(name).map(|e| (e.dtype.as_str(), &e.shape[..]))
    }

    /// Tensor `name` as f32 values (dtype F32).
    pub fn read_f32(&mut self, name: &str) -> Result<Vec<f32>> {
        self.read(name, "F32", f32::from_le_bytes)
    }

    /// Tensor `name` as f16 values (dtype F16).
    pub fn read_f16(&mut self, name: &str) -> Result<Vec<half::f16>> {
        self.read(name, "F16", half::f16::from_le_bytes)
    }

    /// Tensor `name` as u32 values (dtype U32).
    pub fn read_u32(&mut self, name: &str) -> Result<Vec<u32>> {
        self.read(name, "U32", u32::from_le_bytes)
    }

    fn read<T: bytemuck::Pod, const N: usize>(
        &mut self, name: &str, dtype: &'static str, from_le: fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let bad = |reason: String| Error::Safetensors { path: self.path.clone(), reason };
        let entry = self.entries.get(name).ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
        if entry.dtype != dtype {
            return Err(Error::UnsupportedDtype {
                path: self.path.clone(),
                name: name.into(),
                dtype: entry.dtype.clone(),
                expected: dtype,
            });
        }
        let count = entry.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let [begin, end] = entry.data_offsets;
        if count.and_then(|n| n.checked_mul(N)) != Some((end - begin) as usize) {
            return Err(bad(format!(
                "tensor `{name}`: shape {:?} of {dtype} does not fill bytes {begin}..{end}",
                entry.shape
            )));
        }
        // Zeroed by the allocator (pages the read then fills), not written twice.
        let mut values: Vec<T> = bytemuck::try_zeroed_vec(count.unwrap_or(0))
            .map_err(|_| bad(format!("tensor `{name}`: cannot allocate {} bytes for it", end - begin)))?;
        self.file.seek(SeekFrom::Start(self.data_start + begin)).map_err(|e| Error::io(&self.path, e))?;
        self.file.read_exact(bytemuck::cast_slice_mut(&mut values)).map_err(|e| Error::io(&self.path, e))?;
        if cfg!(target_endian = "big") {
            for v in &mut values {
                let mut bytes = [0u8; N];
                bytes.copy_from_slice(bytemuck::bytes_of(v));
                *v = from_le(bytes);
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(tensors: &[(&str, Vec<usize>, TensorData)]) -> Vec<u8> {
        let metadata: BTreeMap<&str, String> = [("b", "2".to_string()), ("a", "1".to_string())].into_iter().collect();
        let mut bytes = Vec::new();
        write(&mut bytes, tensors, &metadata).unwrap();
        bytes
    }

    fn open(name: &str, bytes: &[u8]) -> Result<TensorFile> {
        let path = std::env::temp_dir().join(format!("lookalike-file-{}-{name}.safetensors", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let file = TensorFile::open(&path);
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn round_trip_and_every_truncation_is_an_error() {
        let rows: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let halves: Vec<half::f16> = rows.iter().map(|&x| half::f16::from_f32(x)).collect();
        let crcs = [7u32, u32::MAX];
        let bytes = written(&[
            ("rows", vec![3, 4], TensorData::F32(&rows)),
            ("halves", vec![12], TensorData::F16(&halves)),
            ("crcs", vec![2], TensorData::U32(&crcs)),
        ]);
        let mut file = open("whole", &bytes).unwrap();
        assert_eq!(file.metadata.get("a").map(String::as_str), Some("1"));
        assert_eq!(file.describe("rows"), Some(("F32", &[3usize, 4][..])));
        assert_eq!(file.read_f32("rows").unwrap(), rows);
        assert_eq!(file.read_f16("halves").unwrap(), halves);
        assert_eq!(file.read_u32("crcs").unwrap(), crcs);
        let wrong = file.read_f16("rows").unwrap_err();
        assert!(matches!(&wrong, Error::UnsupportedDtype { expected: "F16", .. }), "{wrong:?}");
        assert!(wrong.to_string().contains(".safetensors: tensor rows has dtype F32"), "{wrong}");
        let absent = file.read_f32("absent").unwrap_err().to_string();
        assert!(absent.contains("lookalike-file-") && absent.contains("`absent` is missing"), "{absent}");
        // The safetensors crate reads the same file.
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("halves").unwrap().shape(), [12]);
        for cut in 0..bytes.len() {
            let opened = open("cut", &bytes[..cut]);
            assert!(opened.is_err(), "a file cut at {cut} of {} bytes opened", bytes.len());
        }
    }

    #[test]
    fn headers_that_lie_are_errors() {
        let header = |text: &str| {
            let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(text.as_bytes());
            bytes.extend_from_slice(&[0u8; 16]);
            bytes
        };
        let shape = r#"{"t":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#;
        let mut file = open("shape", &header(shape)).unwrap();
        let err = file.read_f32("t").unwrap_err().to_string();
        assert!(err.contains("does not fill"), "{err}");
        let beyond = r#"{"t":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#;
        assert!(open("beyond", &header(beyond)).unwrap_err().to_string().contains("truncated"));
        assert!(open("json", &header("[1, 2]")).is_err());
        assert!(open("meta", &header(r#"{"__metadata__":{"a":1}}"#)).is_err());
        let dir = std::env::temp_dir();
        let err = TensorFile::open(&dir).unwrap_err().to_string();
        assert_eq!(err, format!("{} is a directory, not an index file", dir.display()));
        let huge = u64::MAX.to_le_bytes();
        assert!(open("huge", &huge).unwrap_err().to_string().contains("truncated or not safetensors"));
    }
}
