//! File paths in the index's JSON metadata, stored losslessly.
//!
//! A file name need not be valid UTF-8 (Unix: any bytes but `/` and NUL; Windows: UTF-16
//! with unpaired surrogates allowed). JSON strings are Unicode, so the index stores such a
//! path the way Python's `os.fsdecode` names it: every byte that is not part of valid UTF-8
//! becomes the lone surrogate U+DC80..U+DCFF (`surrogateescape`), written as a JSON escape
//! (byte 0xE9 as `\udce9`); on Windows an unpaired surrogate is written as itself (e.g.
//! `\ud800`). Python's `json.loads` reads these strings and `os.fsencode(path)` (or
//! `open(path)`) gives back the exact bytes; a valid UTF-8 path is stored as plain JSON
//! text, as before.
//!
//! Where a stored path starts is the index file's folder: a path at or below it is written
//! relative to it, and found again there (or where the index was written) after a move.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// The JSON array of `paths`, each encoded as the module docs say.
pub(crate) fn encode_array<'a>(paths: impl IntoIterator<Item = &'a Path>) -> String {
    let items: Vec<String> = paths.into_iter().map(encode).collect();
    format!("[{}]", items.join(","))
}

/// One path as a JSON string literal, quotes included.
pub(crate) fn encode(path: &Path) -> String {
    let mut out = String::from("\"");
    for piece in pieces(path) {
        match piece {
            Piece::Text(text) => {
                let quoted = serde_json::Value::from(text.as_ref()).to_string();
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
            Piece::Surrogate(unit) => out.push_str(&format!("\\u{unit:04x}")),
        }
    }
    out.push('"');
    out
}

/// A JSON array of path strings, decoded back into the paths `encode_array` stored.
pub fn decode_array(text: &str) -> Result<Vec<PathBuf>, String> {
    let raw: Vec<Wtf8> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    raw.into_iter().enumerate().map(|(i, s)| from_wtf8(&s.0).map_err(|e| format!("path {i}: {e}"))).collect()
}

enum Piece<'a> {
    Text(Cow<'a, str>),
    /// A UTF-16 code unit in U+D800..U+DFFF standing for what is not Unicode.
    Surrogate(u16),
}

#[cfg(unix)]
fn pieces(path: &Path) -> Vec<Piece<'_>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        if !chunk.valid().is_empty() {
            out.push(Piece::Text(Cow::Borrowed(chunk.valid())));
        }
        out.extend(chunk.invalid().iter().map(|&b| Piece::Surrogate(0xDC00 | b as u16)));
    }
    out
}

#[cfg(not(unix))]
fn pieces(path: &Path) -> Vec<Piece<'_>> {
    match path.to_str() {
        Some(text) => vec![Piece::Text(Cow::Borrowed(text))],
        #[cfg(windows)]
        None => {
            use std::os::windows::ffi::OsStrExt;
            // Rare enough to go unit by unit: each scalar as a text of its own is still exact.
            char::decode_utf16(path.as_os_str().encode_wide())
                .map(|unit| match unit {
                    Ok(c) => Piece::Text(Cow::Owned(c.to_string())),
                    Err(e) => Piece::Surrogate(e.unpaired_surrogate()),
                })
                .collect()
        }
        #[cfg(not(windows))]
        None => vec![Piece::Text(path.to_string_lossy())],
    }
}

/// A JSON string read as WTF-8 bytes: serde_json keeps lone surrogates when it reads a
/// string as bytes (and refuses them when it reads a `String`).
struct Wtf8(Vec<u8>);

impl<'de> serde::Deserialize<'de> for Wtf8 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Wtf8;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Wtf8, E> {
                Ok(Wtf8(v.to_vec()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Wtf8, E> {
                Ok(Wtf8(v.as_bytes().to_vec()))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// WTF-8 (UTF-8 that may hold surrogates) to the path it stands for.
fn from_wtf8(bytes: &[u8]) -> Result<PathBuf, String> {
    let mut scalars = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = match rest[0] {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        let Some(seq) = rest.get(..len) else { return Err("truncated character".into()) };
        rest = &rest[len..];
        scalars.push(decode_scalar(seq).ok_or("malformed character")?);
    }
    native_path(&scalars)
}

/// The scalar value (surrogates allowed) of one UTF-8-shaped sequence.
fn decode_scalar(seq: &[u8]) -> Option<u32> {
    let cont = |b: u8| (b & 0xC0 == 0x80).then_some((b & 0x3F) as u32);
    match *seq {
        [a] => Some(a as u32),
        [a, b] => Some(((a & 0x1F) as u32) << 6 | cont(b)?).filter(|&v| v >= 0x80),
        [a, b, c] => Some(((a & 0x0F) as u32) << 12 | cont(b)? << 6 | cont(c)?).filter(|&v| v >= 0x800),
        [a, b, c, d] if a <= 0xF4 => Some(((a & 0x07) as u32) << 18 | cont(b)? << 12 | cont(c)? << 6 | cont(d)?)
            .filter(|&v| (0x10000..=0x10FFFF).contains(&v)),
        _ => None,
    }
}

/// Unix: characters as UTF-8, U+DC80..U+DCFF as the bytes they escape.
#[cfg(unix)]
fn native_path(scalars: &[u32]) -> Result<PathBuf, String> {
    use std::os::unix::ffi::OsStringExt;
    let mut bytes = Vec::with_capacity(scalars.len());
    for &scalar in scalars {
        match char::from_u32(scalar) {
            Some(c) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            None if (0xDC80..=0xDCFF).contains(&scalar) => bytes.push((scalar & 0xFF) as u8),
            None => return Err(format!("\\u{scalar:04x} stands for no byte of a file name")),
        }
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// Windows: UTF-16, unpaired surrogates as themselves.
#[cfg(windows)]
fn native_path(scalars: &[u32]) -> Result<PathBuf, String> {
    use std::os::windows::ffi::OsStringExt;
    let mut units = Vec::with_capacity(scalars.len());
    for &scalar in scalars {
        match char::from_u32(scalar) {
            Some(c) => units.extend_from_slice(c.encode_utf16(&mut [0; 2])),
            None => units.push(scalar as u16),
        }
    }
    Ok(PathBuf::from(std::ffi::OsString::from_wide(&units)))
}

#[cfg(not(any(unix, windows)))]
fn native_path(scalars: &[u32]) -> Result<PathBuf, String> {
    scalars
        .iter()
        .map(|&s| char::from_u32(s).ok_or_else(|| "not Unicode, which paths are on this platform".to_string()))
        .collect::<Result<String, String>>()
        .map(PathBuf::from)
}

/// `path` for a line of text output: control characters escaped (`\n`, `\t`, `\u{1b}`) and
/// bytes that are not UTF-8 shown as `\xNN`, so one path is always one line and two
/// different paths never print the same.
pub fn display(path: &Path) -> String {
    let mut out = String::new();
    for piece in pieces(path) {
        match piece {
            Piece::Text(text) => {
                for c in text.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        c if c.is_control() => out.extend(c.escape_debug()),
                        c => out.push(c),
                    }
                }
            }
            Piece::Surrogate(unit) if cfg!(unix) => out.push_str(&format!("\\x{:02x}", unit & 0xFF)),
            Piece::Surrogate(unit) => out.push_str(&format!("\\u{{{unit:x}}}")),
        }
    }
    out
}

/// `text` on one line: control characters escaped (`\n`, `\u{1b}`), all else as it is.
pub fn one_line(text: &str) -> String {
    text.chars().fold(String::with_capacity(text.len()), |mut out, c| {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
        out
    })
}

/// The absolute folder holding the index file `path`.
pub(crate) fn index_dir(path: &Path) -> crate::Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| crate::Error::io(path, e))?;
    Ok(absolute.parent().map_or_else(|| absolute.clone(), Path::to_path_buf))
}

/// `path` as an index in `base` stores it: relative to `base` ('/'-separated) when it lies
/// at or below it, else absolute. Purely lexical, so a symlinked folder is not resolved
/// into a different spelling; no `..` components, which a symlink would send elsewhere.
pub(crate) fn stored_path(path: &Path, base: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match absolute.strip_prefix(base) {
        Ok(relative)
            if relative.components().all(|c| matches!(c, std::path::Component::Normal(_)))
                && !relative.as_os_str().is_empty() =>
        {
            let mut joined = std::ffi::OsString::new();
            for (i, part) in relative.components().enumerate() {
                if i > 0 {
                    joined.push("/");
                }
                joined.push(part.as_os_str());
            }
            PathBuf::from(joined)
        }
        _ => absolute,
    }
}

/// Where a path an index in `base` stored lies now: beside the index (`base` joined with
/// it; an absolute path stays itself), unless it is missing there but present under
/// `written_in`, the folder the index was written in (a file copied elsewhere alone).
pub(crate) fn locate(stored: &Path, base: &Path, written_in: Option<&Path>) -> PathBuf {
    let beside = base.join(stored);
    match written_in {
        Some(dir) if dir != base && !beside.exists() && dir.join(stored).exists() => dir.join(stored),
        _ => beside,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn from_bytes(bytes: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
    }

    #[test]
    fn plain_paths_are_plain_json() {
        let paths = [Path::new("a/b c.jpg"), Path::new("x\"y\\z\n.png"), Path::new("тест/猫.jpg")];
        let text = encode_array(paths);
        let expected: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(text, serde_json::json!(expected).to_string());
        assert_eq!(decode_array(&text).unwrap(), paths);
    }

    #[cfg(unix)]
    #[test]
    fn any_bytes_round_trip_as_python_names_them() {
        let name = from_bytes(b"caf\xe9/\xff\xfe_ok_\xc3\xa9_\xed\xa0\x80.jpg");
        let text = encode_array([name.as_path()]);
        // Python: json.loads(text)[0] == os.fsdecode(name) with surrogateescape.
        assert_eq!(text, r#"["caf\udce9/\udcff\udcfe_ok_é_\udced\udca0\udc80.jpg"]"#);
        assert_eq!(decode_array(&text).unwrap(), [name]);
        assert_eq!(display(&from_bytes(b"a\xe9\nb")), "a\\xe9\\nb");
        // Every byte value alone and in pairs.
        for a in 1..=255u8 {
            for b in [0x41u8, 0x80, 0xC3, 0xE9, 0xFF] {
                if a == b'/' || b == b'/' {
                    continue;
                }
                let p = from_bytes(&[a, b, 0xA9]);
                assert_eq!(decode_array(&encode_array([p.as_path()])).unwrap(), vec![p.clone()], "{p:?}");
            }
        }
    }

    #[test]
    fn escapes_that_name_no_byte_are_errors() {
        assert!(decode_array(r#"["\ud800x"]"#).is_err() || cfg!(windows));
        assert!(decode_array(r#"["\udc41"]"#).is_err() || cfg!(windows));
        assert!(decode_array(r#"[1]"#).is_err());
        assert!(decode_array(r#"["a""#).is_err());
        assert_eq!(decode_array(r#"["\ud83d\ude00"]"#).unwrap(), [PathBuf::from("😀")]);
    }

    #[test]
    fn display_keeps_one_line_per_path() {
        assert_eq!(display(Path::new("a\nb\tc\u{1b}d\\e")), "a\\nb\\tc\\u{1b}d\\\\e");
        assert_eq!(display(Path::new("plain/ü.jpg")), "plain/ü.jpg");
    }
}
