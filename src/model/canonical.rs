//! Weights files' bytes that depend on the tensors and metadata alone, and their SHA-256 as
//! an index records it.

use sha2::Digest;

use crate::error::{Error, Result};

/// SHA-256 of `bytes`, lowercase hex (what `index::sha256_file` gives for a file of them).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

/// A digest in lowercase hex.
pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The same safetensors file with its JSON header's keys in sorted order: `serialize` takes
/// the metadata as a `HashMap`, whose order changes from run to run, and one net must always
/// give the same bytes (its SHA-256 is what an index records of it).
pub(crate) fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let broken = || Error::InvalidArgument("convnet: the serialised weights have no valid header".into());
    let len = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or_else(broken)?;
    let end = usize::try_from(len).ok().and_then(|len| len.checked_add(8)).filter(|&end| end <= bytes.len());
    let end = end.ok_or_else(broken)?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..end]).map_err(|_| broken())?;
    let mut text = String::new();
    write_sorted(&header, &mut text);
    // Padded with spaces to a multiple of 8, as safetensors aligns the data that follows.
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - end);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

/// Compact JSON with every object's keys sorted.
fn write_sorted(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                out.push(':');
                write_sorted(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}
