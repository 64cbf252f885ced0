//! Training-data readers: IDX image and label files (plain and gzip, read from disk) and
//! CIFAR-10 batches (`load_cifar` on a folder).
//!
//! Ok must be right: an IDX file's values are the bytes after its header (after inflating,
//! for gzip: the test inflates the mutant itself) and its dimensions the header's; a CIFAR
//! set is the batch's records, planes turned to NHWC, with labels below 10. A mutation of
//! pixel bytes alone (in place, in a plain file) must load. Bound: a plain IDX file's length
//! (its values are read once, exactly); a gzip one's inflated length three times (the buffer
//! grows by doubling as data arrive) plus eight times its length (the first reservation)
//! plus the decoder's state; a CIFAR batch's length plus 4 bytes per record (the labels);
//! each plus 256 KiB.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use lookalike::data::cifar::{load_cifar, RECORD_BYTES};
use lookalike::data::idx::{read_images, read_labels, MAX_INFLATE_RATIO};
use lookalike::rng::Rng;
use lookalike::Error;

use crate::harness::{self, Case};
use crate::mutate::{self, Changed};

const SLACK: u64 = 256 << 10;

struct IdxValid {
    bytes: Vec<u8>,
    images: bool,
    gzip: bool,
    /// Header bytes (of the inflated stream for gzip).
    header_len: usize,
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, bytes).expect("compress");
    encoder.finish().expect("compress")
}

fn idx_valid() -> Vec<IdxValid> {
    let mut rng = Rng::new(21);
    let mut files = Vec::new();
    for (count, rows, cols) in [(3u32, 5u32, 7u32), (1, 1, 1), (20, 4, 4), (2, 28, 28)] {
        let mut raw = Vec::new();
        for v in [0x803, count, rows, cols] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        // Half noise, half flat runs: the gzip versions hold both stored and coded blocks.
        let len = (count * rows * cols) as usize;
        raw.extend((0..len).map(|i| if i % 64 < 32 { rng.next_u64() as u8 } else { 17 }));
        files.push(IdxValid { bytes: gz(&raw), images: true, gzip: true, header_len: 16 });
        files.push(IdxValid { bytes: raw, images: true, gzip: false, header_len: 16 });
    }
    for count in [1u32, 9, 300] {
        let mut raw = Vec::new();
        for v in [0x801, count] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        raw.extend((0..count).map(|_| rng.int(0, 9) as u8));
        files.push(IdxValid { bytes: gz(&raw), images: false, gzip: true, header_len: 8 });
        files.push(IdxValid { bytes: raw, images: false, gzip: false, header_len: 8 });
    }
    files
}

/// The stream a gzip mutant inflates to (at most what the reader admits), if it inflates.
fn inflate(bytes: &[u8]) -> Option<Vec<u8>> {
    let most = bytes.len() as u64 * MAX_INFLATE_RATIO + 1;
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes).take(most).read_to_end(&mut out).ok()?;
    Some(out)
}

fn be32(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// Checks what loaded against `stream`, the file's bytes (inflated for gzip).
fn check_idx(stream: &[u8], images: bool, dims: &[usize], values: &[u8], problems: &mut Vec<String>) {
    let header_len = if images { 16 } else { 8 };
    let declared: Option<Vec<usize>> = (4..header_len).step_by(4).map(|at| be32(stream, at)).collect();
    if declared.as_deref() != Some(dims) {
        problems.push(format!("loaded dimensions {dims:?}, the header declares {declared:?}"));
    }
    if stream.get(header_len..) != Some(values) {
        problems.push("the values are not the bytes after the header".into());
    }
}

#[test]
fn idx_readers() {
    let scratch = harness::Scratch::new("idx");
    let valid = idx_valid();
    let donors: Vec<&[u8]> = valid.iter().map(|v| &v.bytes[..]).collect();
    harness::fuzz("idx", 0x1D_7800, harness::cases(10_000), |rng| {
        let base = &valid[rng.int(0, valid.len() - 1)];
        let focus = if base.gzip { 0..24 } else { 0..base.header_len };
        let m = mutate::mutate(rng, &base.bytes, &donors, &focus);
        let must_load =
            !base.gzip && matches!(&m.changed, Changed::InPlace(at) if at.iter().all(|&a| a >= base.header_len));
        let path: PathBuf = scratch.0.join(if base.gzip { "case.gz" } else { "case" });
        std::fs::write(&path, &m.bytes).expect("write the case");
        let stream = if base.gzip { inflate(&m.bytes) } else { Some(m.bytes.clone()) };
        let len = m.bytes.len() as u64;
        let bound = match base.gzip {
            true => 3 * stream.as_ref().map_or(len * MAX_INFLATE_RATIO, |s| s.len() as u64) + 8 * len + SLACK,
            false => len + SLACK,
        };
        let mut problems = Vec::new();
        let loaded = match base.images {
            true => {
                let run = harness::run("idx", bound, || read_images(&path));
                problems.extend(run.problems);
                run.value.map(|r| r.map(|i| (vec![i.count, i.rows, i.cols], i.pixels)))
            }
            false => {
                let run = harness::run("idx", bound, || read_labels(&path));
                problems.extend(run.problems);
                run.value.map(|r| r.map(|labels| (vec![labels.len()], labels)))
            }
        };
        let outcome = match loaded {
            Some(Ok((dims, values))) => {
                match &stream {
                    Some(stream) => check_idx(stream, base.images, &dims, &values, &mut problems),
                    None => problems.push("loaded a gzip file that does not inflate".into()),
                }
                if m.bytes == base.bytes { "ok (as the original)" } else { "ok" }.to_string()
            }
            Some(Err(e)) => {
                match &e {
                    _ if must_load => problems.push(format!("refused a change of pixel bytes alone: {e}")),
                    Error::Dataset { path: p, .. } | Error::Io { path: p, .. } if *p == path => {}
                    _ => problems.push(format!("unexpected error {e}")),
                }
                harness::kind(&e)
            }
            None => "panic".into(),
        };
        Case { mutation: m.kind, outcome, problems }
    });
}

/// The records of `batch` as NHWC pixels and labels.
fn records(batch: &[u8]) -> (Vec<u8>, Vec<u32>) {
    let mut pixels = Vec::with_capacity(batch.len());
    let mut labels = Vec::new();
    for record in batch.chunks_exact(RECORD_BYTES) {
        labels.push(record[0] as u32);
        for at in 0..1024 {
            pixels.extend([record[1 + at], record[1 + 1024 + at], record[1 + 2048 + at]]);
        }
    }
    (pixels, labels)
}

fn cifar_case(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("data_batch_1.bin");
    std::fs::write(&path, bytes).expect("write the case");
    path
}

#[test]
fn cifar_reader() {
    let scratch = harness::Scratch::new("cifar");
    let mut rng = Rng::new(22);
    let valid: Vec<Vec<u8>> = [1usize, 3]
        .iter()
        .map(|&n| {
            (0..n * RECORD_BYTES)
                .map(|i| if i % RECORD_BYTES == 0 { rng.int(0, 9) as u8 } else { rng.next_u64() as u8 })
                .collect()
        })
        .collect();
    let donors: Vec<&[u8]> = valid.iter().map(|v| &v[..]).collect();
    harness::fuzz("cifar", 0xC1_FA10, harness::cases(10_000), |rng| {
        let base = &valid[rng.int(0, valid.len() - 1)];
        let labels_at: Vec<usize> = (0..base.len()).step_by(RECORD_BYTES).collect();
        // The label bytes are where a record can be refused: lean towards the first.
        let m = mutate::mutate(rng, base, &donors, &(0..1));
        let must_load = matches!(&m.changed, Changed::InPlace(at) if at.iter().all(|a| !labels_at.contains(a)));
        let path = cifar_case(&scratch.0, &m.bytes);
        let len = m.bytes.len() as u64;
        let bound = len + 4 * (len / RECORD_BYTES as u64) + SLACK;
        let run = harness::run("cifar", bound, || load_cifar(&scratch.0));
        let mut problems = run.problems;
        let outcome = match run.value {
            Some(Ok((train, test))) => {
                let (pixels, labels) = records(&m.bytes);
                let whole = m.bytes.len().is_multiple_of(RECORD_BYTES);
                let known = labels.iter().all(|&l| l < 10);
                if !whole || !known || train.pixels != pixels || train.labels != labels || test.is_some() {
                    problems.push("loaded something other than the batch's records".into());
                }
                if m.bytes == *base { "ok (as the original)" } else { "ok" }.to_string()
            }
            Some(Err(e)) => {
                match &e {
                    _ if must_load => problems.push(format!("refused a change of pixel bytes alone: {e}")),
                    Error::Dataset { path: p, .. } | Error::Io { path: p, .. } if *p == path => {}
                    _ => problems.push(format!("unexpected error {e}")),
                }
                harness::kind(&e)
            }
            None => "panic".into(),
        };
        Case { mutation: m.kind, outcome, problems }
    });
}
