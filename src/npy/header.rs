//! The `.npy` header: the magic, a version, the header's length, then an ASCII Python dict
//! (`{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`) padded to an alignment.
//! Written exactly as numpy writes it; read with a parser of the few Python literals numpy
//! puts there.

use crate::error::{Error, Result};

pub(super) const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The only dtype we read or write: little-endian IEEE float32.
pub(super) const F32_DESCR: &str = "<f4";
/// numpy aligns magic + length + header to this many bytes so the data can be memory-mapped.
const HEADER_ALIGN: usize = 64;
/// Most dimensions numpy gives an array (`NPY_MAXDIMS`); a header listing more is not
/// numpy's, and parsing it would allocate several times its length.
const MAX_DIMS: usize = 64;

/// Magic, version 1.0, length and the dict header exactly as numpy writes it, padded with
/// spaces and a final newline to a multiple of [`HEADER_ALIGN`] bytes.
pub(super) fn encode_header(shape: &[usize]) -> Result<Vec<u8>> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_tuple = match dims.as_slice() {
        [single] => format!("({single},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{F32_DESCR}', 'fortran_order': False, 'shape': {shape_tuple}, }}");
    let prefix_len = MAGIC.len() + 2 + 2;
    let unpadded = prefix_len + dict.len() + 1;
    let padding = (HEADER_ALIGN - unpadded % HEADER_ALIGN) % HEADER_ALIGN;
    dict.push_str(&" ".repeat(padding));
    dict.push('\n');
    let header_len = u16::try_from(dict.len())
        .map_err(|_| Error::InvalidArgument(format!("shape {shape:?} is too long for a version 1.0 header")))?;

    let mut out = Vec::with_capacity(prefix_len + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    Ok(out)
}

/// The three keys of a `.npy` header.
#[derive(Debug)]
pub(super) struct Header {
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
}

/// Parses a header such as `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
/// Errors are plain strings; the caller adds the path.
pub(super) fn parse_header(text: &str) -> Result<Header, String> {
    let mut cursor = Cursor { text: text.as_bytes(), pos: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    cursor.expect_byte(b'{')?;
    loop {
        cursor.skip_whitespace();
        if cursor.eat(b'}') {
            break;
        }
        let key = cursor.string()?;
        cursor.expect_byte(b':')?;
        match key.as_str() {
            "descr" => descr = Some(cursor.descr()?),
            "fortran_order" => fortran_order = Some(cursor.boolean()?),
            "shape" => shape = Some(cursor.tuple()?),
            other => return Err(format!("unexpected key '{other}'")),
        }
        cursor.skip_whitespace();
        if !cursor.eat(b',') {
            cursor.expect_byte(b'}')?;
            break;
        }
    }
    cursor.skip_whitespace();
    if cursor.pos != cursor.text.len() {
        return Err(format!("unexpected text after the dict at byte {}", cursor.pos));
    }
    Ok(Header {
        descr: descr.ok_or("the key 'descr' is missing")?,
        fortran_order: fortran_order.ok_or("the key 'fortran_order' is missing")?,
        shape: shape.ok_or("the key 'shape' is missing")?,
    })
}

/// A byte cursor over the header text for the tiny subset of Python literals it uses.
struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn skip_whitespace(&mut self) {
        while self.text.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    /// Skips whitespace, then consumes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let found = self.text.get(self.pos) == Some(&byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_byte(&mut self, byte: u8) -> Result<(), String> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", byte as char, self.pos))
        }
    }

    /// A quoted string without escapes (numpy never writes any in these headers).
    fn string(&mut self) -> Result<String, String> {
        self.skip_whitespace();
        let quote = match self.text.get(self.pos) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.pos)),
        };
        let start = self.pos + 1;
        let len = self.text[start..].iter().position(|&b| b == quote).ok_or("unterminated string")?;
        self.pos = start + len + 1;
        Ok(String::from_utf8_lossy(&self.text[start..start + len]).into_owned())
    }

    /// The dtype: a plain string; structured dtypes (lists) get a clear refusal.
    fn descr(&mut self) -> Result<String, String> {
        self.skip_whitespace();
        if self.text.get(self.pos) == Some(&b'[') {
            return Err("structured dtypes are not supported; expected '<f4'".into());
        }
        self.string()
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.skip_whitespace();
        let rest = &self.text[self.pos..];
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        Err(format!("expected True or False at byte {}", self.pos))
    }

    /// A tuple of non-negative integers: `()`, `(5,)`, `(2, 3)`, `(2, 3,)`.
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect_byte(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            if dims.len() == MAX_DIMS {
                return Err(format!("more than {MAX_DIMS} dimensions (numpy's limit)"));
            }
            dims.push(self.integer()?);
            if !self.eat(b',') {
                self.expect_byte(b')')?;
                return Ok(dims);
            }
        }
    }

    fn integer(&mut self) -> Result<usize, String> {
        self.skip_whitespace();
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or_default();
        let value = digits.parse().map_err(|_| format!("expected a non-negative integer dimension at byte {start}"))?;
        // Python 2 era files write long integers as `3L`.
        if self.text.get(self.pos) == Some(&b'L') {
            self.pos += 1;
        }
        Ok(value)
    }
}
