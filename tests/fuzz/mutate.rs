//! Mutations of valid inputs: bit flips, byte sets, truncations, splices of two valid
//! files, duplicated, removed and inserted ranges. Positions lean towards `focus` (the
//! header), where the parsing happens.

use std::ops::Range;

use lookalike::rng::Rng;

/// A mutated input and what was done to it.
pub struct Mutant {
    pub bytes: Vec<u8>,
    pub kind: &'static str,
    pub changed: Changed,
}

pub enum Changed {
    /// The bytes at these offsets were overwritten; the length is unchanged.
    InPlace(Vec<usize>),
    /// Cut short.
    Truncated,
    /// Spliced, or ranges moved: offsets no longer line up with the original.
    Restructured,
}

/// A position in `0..len`, inside `focus` six times in ten.
pub fn position(rng: &mut Rng, len: usize, focus: &Range<usize>) -> usize {
    if focus.end > focus.start && focus.end <= len && rng.uniform() < 0.6 {
        rng.int(focus.start, focus.end - 1)
    } else {
        rng.int(0, len - 1)
    }
}

/// A range length: mostly a few bytes, sometimes a large share of `len`.
fn span(rng: &mut Rng, len: usize) -> usize {
    let most = match rng.int(0, 9) {
        0..=3 => 4,
        4..=7 => 64,
        _ => len / 2,
    };
    rng.int(1, most.clamp(1, len.max(1)))
}

/// Flips bits or overwrites bytes of `bytes` in place: the kind, and `(offset, old byte)`
/// for each byte changed (to undo it).
pub fn in_place(rng: &mut Rng, bytes: &mut [u8], focus: &Range<usize>) -> (&'static str, Vec<(usize, u8)>) {
    let mut undo = Vec::new();
    let mut set = |bytes: &mut [u8], at: usize, value: u8| {
        if !undo.iter().any(|&(a, _)| a == at) {
            undo.push((at, bytes[at]));
        }
        bytes[at] = value;
    };
    let len = bytes.len();
    let kind = match rng.int(0, 5) {
        0 | 1 => {
            let at = position(rng, len, focus);
            set(bytes, at, bytes[at] ^ (1 << rng.int(0, 7)));
            "flip one bit"
        }
        2 => {
            for _ in 0..rng.int(2, 16) {
                let at = position(rng, len, focus);
                set(bytes, at, bytes[at] ^ (1 << rng.int(0, 7)));
            }
            "flip 2-16 bits"
        }
        _ => {
            // 0x00, 0xFF, edge values (sign and exponent bits, digits and JSON syntax), or random.
            let (mode, kind) = [
                (0, "set bytes to 0x00"),
                (1, "set bytes to 0xFF"),
                (2, "set bytes to edge values"),
                (3, "set bytes to random"),
            ][rng.int(0, 3)];
            let value = |rng: &mut Rng| match mode {
                0 => 0x00,
                1 => 0xFF,
                2 => [0x7F, 0x80, b'9', b'-', b'"', b'e'][rng.int(0, 5)],
                _ => rng.next_u64() as u8,
            };
            let start = position(rng, len, focus);
            let run = rng.uniform() < 0.5;
            for i in 0..rng.int(1, 8) {
                let at = if run { (start + i).min(len - 1) } else { position(rng, len, focus) };
                let v = value(rng);
                set(bytes, at, v);
            }
            kind
        }
    };
    (kind, undo)
}

/// A length to truncate `len` bytes to: anywhere, inside or at the edge of `focus`, in the
/// first bytes, or just short of the end.
pub fn truncation(rng: &mut Rng, len: usize, focus: &Range<usize>) -> usize {
    let near = |rng: &mut Rng, at: usize| (at + rng.int(0, 8)).saturating_sub(4).min(len - 1);
    match rng.int(0, 5) {
        0 => rng.int(0, len - 1),
        1 => rng.int(focus.start, focus.end.clamp(focus.start + 1, len) - 1),
        2 => near(rng, focus.end),
        3 => rng.int(0, 16.min(len - 1)),
        _ => len - rng.int(1, 8.min(len)),
    }
}

/// Rebuilds `original` into `out` with a splice, a duplicated, removed or inserted range,
/// or appended bytes; returns the kind.
pub fn restructure(
    rng: &mut Rng, original: &[u8], donors: &[&[u8]], focus: &Range<usize>, out: &mut Vec<u8>,
) -> &'static str {
    out.clear();
    let len = original.len();
    match rng.int(0, 5) {
        0 | 1 if !donors.is_empty() => {
            let donor = donors[rng.int(0, donors.len() - 1)];
            // Either at the same offset (one file's header, the other's data) or anywhere.
            let cut = position(rng, len, focus);
            let from = if rng.uniform() < 0.5 { cut.min(donor.len()) } else { rng.int(0, donor.len()) };
            out.extend_from_slice(&original[..cut]);
            out.extend_from_slice(&donor[from..]);
            "splice two valid files"
        }
        2 => {
            let start = position(rng, len, focus);
            let end = (start + span(rng, len)).min(len);
            let to = position(rng, len, focus);
            out.extend_from_slice(&original[..to]);
            out.extend_from_slice(&original[start..end]);
            out.extend_from_slice(&original[to..]);
            "duplicate a range"
        }
        3 => {
            let start = position(rng, len, focus);
            let end = (start + span(rng, len)).min(len);
            out.extend_from_slice(&original[..start]);
            out.extend_from_slice(&original[end..]);
            "remove a range"
        }
        4 => {
            let at = position(rng, len, focus);
            out.extend_from_slice(&original[..at]);
            for _ in 0..span(rng, 64) {
                out.push(rng.next_u64() as u8);
            }
            out.extend_from_slice(&original[at..]);
            "insert random bytes"
        }
        _ => {
            out.extend_from_slice(original);
            for _ in 0..span(rng, 64) {
                out.push(rng.next_u64() as u8);
            }
            "append random bytes"
        }
    }
}

/// One random mutation of a small input: in place (half the cases), a truncation (one in
/// six) or a restructuring.
pub fn mutate(rng: &mut Rng, original: &[u8], donors: &[&[u8]], focus: &Range<usize>) -> Mutant {
    let roll = rng.uniform();
    if roll < 0.5 {
        let mut bytes = original.to_vec();
        let (kind, undo) = in_place(rng, &mut bytes, focus);
        let changed = undo.iter().filter(|&&(at, old)| bytes[at] != old).map(|&(at, _)| at).collect();
        Mutant { bytes, kind, changed: Changed::InPlace(changed) }
    } else if roll < 0.67 {
        let cut = truncation(rng, original.len(), focus);
        Mutant { bytes: original[..cut].to_vec(), kind: "truncate", changed: Changed::Truncated }
    } else {
        let mut bytes = Vec::new();
        let kind = restructure(rng, original, donors, focus, &mut bytes);
        Mutant { bytes, kind, changed: Changed::Restructured }
    }
}
