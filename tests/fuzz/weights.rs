//! `ResNet50::from_safetensors`, the whole of `ResNet50::load` after reading the file, on
//! full ResNet50 files (F32 ~98 MB, F16 and BF16 ~49 MB). Most cases mutate the header,
//! where parsing happens, and fail before any data is converted; a share flips data bits,
//! which loads (and converts) the whole network. Files are mutated in place in a working
//! copy and restored, so a case costs no 100 MB copy unless it restructures the file.
//!
//! Ok must be right: every tensor the network holds is, bit for bit, the mutant's bytes for
//! that name in the mutant's dtype (read with the safetensors crate and `half`), finite,
//! variances non-negative. An error must name a real defect of the mutant: a missing
//! tensor, a wrong shape or dtype, the non-finite value or negative variance at the index
//! it gives, or a header the safetensors crate also refuses. Bound: two bytes of f32 per
//! byte of F16 file (the network is stored as f32) plus 16 times the header (its parsed
//! form) plus 1 MiB.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use half::slice::HalfFloatSliceExt;
use lookalike::model::ResNet50;
use lookalike::rng::Rng;
use lookalike::Error;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Map, Value};

use crate::harness::{self, Case};
use crate::mutate;

const SLACK: u64 = 1 << 20;
/// Cases that mutate tensor data (each loads and converts the whole network).
const DATA_SHARE: f64 = 0.003;
/// Spaces added to each file's header so targeted edits can rewrite it in place.
const HEADER_ROOM: usize = 4096;

/// A valid file, where its header and tensors lie, and the network it holds.
struct Valid {
    bytes: Vec<u8>,
    header_end: usize,
    /// Every tensor's name, dtype and byte range in `bytes`, in file order.
    tensors: Vec<(String, Dtype, Range<usize>)>,
    net: ResNet50,
}

fn f32_bytes(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// A seeded network in `dtype`, the header padded by [`HEADER_ROOM`] spaces. The F32 file
/// is a whole torchvision state dict (`num_batches_tracked`, an `fc` head), whose ignored
/// tensors make a header edit harmless now and then; the 16-bit ones hold only the
/// tensors the network reads.
fn valid_file(net: &ResNet50, dtype: Dtype) -> Valid {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = loaded_tensors(net)
        .into_iter()
        .map(|(name, shape, values)| (name, dtype, shape, f32_bytes(values, dtype)))
        .collect();
    if dtype == Dtype::F32 {
        for layer in net.convs() {
            tensors.push((format!("{}.num_batches_tracked", layer.bn_name), Dtype::I64, vec![], vec![0; 8]));
        }
    }
    if dtype == Dtype::F32 {
        tensors.push(("fc.weight".into(), dtype, vec![10, 2048], f32_bytes(&vec![0.25; 20480], dtype)));
        tensors.push(("fc.bias".into(), dtype, vec![10], f32_bytes(&[0.5; 10], dtype)));
    }
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        (name.clone(), TensorView::new(*dtype, shape.clone(), data).expect("a view"))
    });
    let plain = safetensors::serialize(views, None).expect("serialise");
    let n = u64::from_le_bytes(plain[..8].try_into().expect("8 bytes")) as usize;
    let mut bytes = ((n + HEADER_ROOM) as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&plain[8..8 + n]);
    bytes.extend(std::iter::repeat_n(b' ', HEADER_ROOM));
    bytes.extend_from_slice(&plain[8 + n..]);
    let st = SafeTensors::deserialize(&bytes).expect("the padded file is valid");
    let base = bytes.as_ptr() as usize;
    let mut ranges: Vec<(String, Dtype, Range<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let start = view.data().as_ptr() as usize - base;
            (name, view.dtype(), start..start + view.data().len())
        })
        .collect();
    ranges.sort_by_key(|(_, _, r)| r.start);
    let net = ResNet50::from_safetensors(&bytes, Path::new("valid")).expect("the valid file loads");
    // Cases compare untouched tensors with this network: it must be the file's bytes, as
    // the test reads them.
    for (name, shape, values) in loaded_tensors(&net) {
        let view = st.tensor(&name).expect("present");
        assert!(view.shape() == shape && widened(&view).is_some_and(|w| bits(&w) == bits(values)), "{name}");
    }
    drop(st);
    Valid { header_end: 8 + n + HEADER_ROOM, bytes, tensors: ranges, net }
}

/// A network with cheap seeded values: finite, variances positive.
fn seeded_net() -> ResNet50 {
    let mut rng = Rng::new(3);
    let mut net = ResNet50::architecture();
    let mut values = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.range(lo, hi)).collect() };
    for layer in net.convs_mut() {
        layer.weight = values(layer.weight_len(), -0.1, 0.1);
        let c = layer.out_c;
        layer.bn.weight = values(c, 0.5, 1.5);
        layer.bn.bias = values(c, -0.2, 0.2);
        layer.bn.running_mean = values(c, -0.5, 0.5);
        layer.bn.running_var = values(c, 0.1, 2.0);
    }
    net
}

/// The values of `view` widened to f32, or None for another dtype (on a little-endian
/// host, as the whole test assumes).
fn widened(view: &TensorView) -> Option<Vec<f32>> {
    let bytes = view.data();
    Some(match view.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec(bytes),
        Dtype::F16 => {
            let mut out = vec![0.0; bytes.len() / 2];
            bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes).convert_to_f32_slice(&mut out);
            out
        }
        Dtype::BF16 => {
            let mut out = vec![0.0; bytes.len() / 2];
            bytemuck::pod_collect_to_vec::<u8, half::bf16>(bytes).convert_to_f32_slice(&mut out);
            out
        }
        _ => return None,
    })
}

/// The tensors a loaded network holds, by name.
fn loaded_tensors(net: &ResNet50) -> Vec<(String, Vec<usize>, &[f32])> {
    let mut out = Vec::new();
    for layer in net.convs() {
        out.push((format!("{}.weight", layer.conv_name), layer.weight_shape().to_vec(), &layer.weight[..]));
        let bn = &layer.bn;
        for (field, values) in [
            ("weight", &bn.weight),
            ("bias", &bn.bias),
            ("running_mean", &bn.running_mean),
            ("running_var", &bn.running_var),
        ] {
            out.push((format!("{}.{field}", layer.bn_name), vec![layer.out_c], &values[..]));
        }
    }
    out
}

/// The mutant as the safetensors crate reads it (None if it refuses or panics; offsets
/// beyond the file are not handed to it, as its sum of them can overflow).
fn reference(bytes: &[u8]) -> Option<SafeTensors<'_>> {
    if offsets_beyond_file(bytes) {
        return None;
    }
    catch_unwind(AssertUnwindSafe(|| SafeTensors::deserialize(bytes))).ok()?.ok()
}

fn bits(values: &[f32]) -> &[u32] {
    bytemuck::cast_slice(values)
}

/// What a case fed the loader: its bytes, and how they relate to a valid file.
struct Input<'a> {
    bytes: &'a [u8],
    valid: &'a Valid,
    /// The bytes are the valid file's (edited in place or cut), not a rebuilt copy.
    in_place: bool,
    /// Offsets of bytes changed in place.
    touched: &'a [usize],
}

/// Checks the loader's answer; true when it loaded the valid file's network exactly.
fn check(
    result: &lookalike::Result<ResNet50>, input: &Input, architecture: &ResNet50, problems: &mut Vec<String>,
) -> bool {
    let st = reference(input.bytes);
    let start = input.bytes.as_ptr() as usize;
    match result {
        Ok(net) => {
            let Some(st) = st else {
                problems.push("loaded a file the safetensors crate refuses".into());
                return false;
            };
            let mut as_original = true;
            for ((name, shape, values), (_, _, original)) in
                loaded_tensors(net).into_iter().zip(loaded_tensors(&input.valid.net))
            {
                let Ok(view) = st.tensor(&name) else {
                    problems.push(format!("loaded tensor {name}, which the file lacks"));
                    return false;
                };
                let at = view.data().as_ptr() as usize - start;
                let range = at..at + view.data().len();
                // Untouched bytes where the valid file keeps this tensor, in its dtype: the
                // valid network's values are the expected ones, no conversion needed.
                let unchanged = input.in_place
                    && input.valid.tensors.iter().any(|(n, d, r)| *n == name && *d == view.dtype() && *r == range)
                    && !input.touched.iter().any(|t| range.contains(t));
                let expected = if unchanged {
                    bits(original) == bits(values)
                } else {
                    as_original = false;
                    widened(&view).is_some_and(|w| bits(&w) == bits(values))
                };
                if view.shape() != shape || !expected {
                    problems.push(format!("tensor {name} is not the file's bytes"));
                    return false;
                }
                if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                    problems.push(format!("tensor {name} loaded with a non-finite value {v}"));
                    return false;
                }
                if name.ends_with("running_var") && values.iter().any(|&v| v < 0.0) {
                    problems.push(format!("tensor {name} loaded with a negative variance"));
                    return false;
                }
            }
            as_original
        }
        Err(e) => {
            let expected_shape =
                |name: &str| loaded_tensors(architecture).into_iter().find(|(n, ..)| n == name).map(|(_, s, _)| s);
            let view = |name: &str| st.as_ref().and_then(|st| st.tensor(name).ok());
            let warranted = match e {
                Error::Safetensors { .. } => st.is_none() || offsets_beyond_file(input.bytes),
                Error::MissingTensor { name } => expected_shape(name).is_some() && view(name).is_none(),
                Error::ShapeMismatch { op, .. } => {
                    view(op).is_some_and(|v| Some(v.shape().to_vec()) != expected_shape(op))
                }
                Error::UnsupportedDtype { name, .. } => view(name).is_some_and(|v| widened(&v).is_none()),
                Error::NonFinite { name, index, .. } => view(name)
                    .and_then(|v| widened(&v))
                    .and_then(|w| w.get(*index).copied())
                    .is_some_and(|v| !v.is_finite()),
                Error::InvalidArgument(reason) => {
                    // "<name>[<index>] is negative (<value>): not a variance"
                    let at = reason
                        .split_once('[')
                        .and_then(|(name, rest)| Some((name, rest.split_once(']')?.0.parse().ok()?)));
                    at.and_then(|(name, index): (&str, usize)| widened(&view(name)?)?.get(index).copied())
                        .is_some_and(|v| v < 0.0)
                }
                _ => false,
            };
            if !warranted {
                problems.push(format!("the error names no defect of the file: {e}"));
            }
            false
        }
    }
}

/// Whether some tensor's declared end lies beyond the file (what the loader checks before
/// the safetensors crate adds the offsets up).
fn offsets_beyond_file(bytes: &[u8]) -> bool {
    let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())) else { return false };
    let Some(text) = usize::try_from(n).ok().and_then(|n| bytes.get(8..8usize.checked_add(n)?)) else { return false };
    // Only the offsets: parsing every shape and dtype into values would double the cost.
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        data_offsets: Option<Vec<Value>>,
    }
    let Ok(header) = serde_json::from_slice::<std::collections::HashMap<String, Entry>>(text) else { return false };
    let data_len = (bytes.len() - 8 - text.len()) as u64;
    header.values().filter_map(|t| t.data_offsets.as_ref()).flatten().any(|v| v.as_u64().is_none_or(|v| v > data_len))
}

/// A rewritten header that fits the original's length: huge or wrapping shapes and
/// offsets, other dtypes, renamed, reshaped or removed tensors. Returns None if it grew
/// past the room left for it.
fn targeted_header(rng: &mut Rng, valid: &Valid) -> (&'static str, Option<Vec<u8>>) {
    let text = &valid.bytes[8..valid.header_end];
    let mut header: Map<String, Value> = serde_json::from_slice(text).expect("the valid header parses");
    // Mostly tensors the network reads: an edit of an ignored one (fc, num_batches_tracked)
    // leaves a valid file, whose whole load costs a hundred fail-fast cases.
    let names: Vec<String> = valid.tensors.iter().map(|(n, ..)| n.clone()).collect();
    let read: Vec<&String> =
        names.iter().filter(|n| !n.starts_with("fc.") && !n.ends_with("num_batches_tracked")).collect();
    let name = if rng.uniform() < 0.9 {
        read[rng.int(0, read.len() - 1)].clone()
    } else {
        names[rng.int(0, names.len() - 1)].clone()
    };
    let huge = |rng: &mut Rng| -> Value {
        let picks = [json!(0), json!(1u64 << 32), json!(1u64 << 62), json!(u64::MAX), json!(-1), json!(1e20)];
        picks[rng.int(0, picks.len() - 1)].clone()
    };
    // Edits that keep the file valid (metadata, a dtype of the same width) load the whole
    // network: rarer.
    let kind = match if rng.int(0, 399) == 0 { 6 } else { rng.int(0, 5) } {
        0 => {
            let dims: Vec<Value> = (0..rng.int(1, 4)).map(|_| huge(rng)).collect();
            header[&name]["shape"] = Value::Array(dims);
            "huge shape"
        }
        1 => {
            header[&name]["data_offsets"] = json!([huge(rng), huge(rng)]);
            "huge offsets"
        }
        2 => {
            // Offsets that are each in range of usize but add up past u64.
            let step = (1u64 << 61) - 1;
            let mut wrapped = Map::new();
            for i in 0..8u64 {
                wrapped.insert(
                    format!("t{i}"),
                    json!({"dtype": "U8", "shape": [step], "data_offsets": [i * step, (i + 1) * step]}),
                );
            }
            header = wrapped;
            "offsets summing past u64"
        }
        3 => {
            let dtypes = ["F16", "BF16", "F32", "F64", "I64", "U8", "F8_E4M3", "F4", "XX", "F32", "F64", "I32"];
            // Another dtype of the same width (F16 <-> BF16) loads the whole network: rarer.
            let current = header[&name]["dtype"].clone();
            let same_width = rng.uniform() < 0.2;
            let other = dtypes
                .iter()
                .map(|d| json!(d))
                .filter(|d| {
                    *d != current
                        && (same_width
                            || !(["F16", "BF16"].contains(&d.as_str().unwrap_or_default())
                                && ["F16", "BF16"].contains(&current.as_str().unwrap_or_default())))
                })
                .collect::<Vec<_>>();
            header[&name]["dtype"] = other[rng.int(0, other.len() - 1)].clone();
            "another dtype"
        }
        4 => {
            // Same element count, another shape: reversed, flattened, or a dimension of 1 added.
            let shape: Vec<u64> = serde_json::from_value(header[&name]["shape"].clone()).unwrap_or_default();
            let reversed: Vec<u64> = shape.iter().rev().copied().collect();
            let reshaped = if reversed != shape && rng.uniform() < 0.5 {
                reversed
            } else if shape.len() > 1 && rng.uniform() < 0.5 {
                vec![shape.iter().product()]
            } else {
                [&shape[..], &[1]].concat()
            };
            header[&name]["shape"] = json!(reshaped);
            "same size, another shape"
        }
        5 => {
            let entry = header.remove(&name).expect("present");
            if rng.uniform() < 0.7 {
                header.insert(format!("{name}.renamed"), entry);
                "renamed tensor"
            } else {
                "removed tensor"
            }
        }
        _ => {
            header.insert("__metadata__".into(), json!({"format": "pt", "note": "x".repeat(rng.int(0, 2000))}));
            "metadata"
        }
    };
    let mut text = serde_json::to_vec(&header).expect("serialise");
    if text.len() > valid.header_end - 8 {
        return (kind, None);
    }
    text.resize(valid.header_end - 8, b' ');
    (kind, Some(text))
}

#[test]
fn weights_load() {
    let seeded = seeded_net();
    let files: Vec<Valid> = [Dtype::F16, Dtype::F32, Dtype::BF16].into_iter().map(|d| valid_file(&seeded, d)).collect();
    drop(seeded);
    let architecture = ResNet50::architecture();
    let mut work: Vec<Vec<u8>> = files.iter().map(|f| f.bytes.clone()).collect();
    let mut scratch = Vec::new();
    let path = Path::new("resnet50.safetensors");
    harness::fuzz("weights", 0x3E16_0475, harness::cases(10_200), |rng| {
        // F16 most of the time: the F32 file's ignored tensors turn some header edits into
        // whole loads, and a whole F32 load costs the most.
        let which = [0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2][rng.int(0, 11)];
        let valid = &files[which];
        let header = 0..valid.header_end;
        let roll = rng.uniform();
        let mut undo: Vec<(usize, u8)> = Vec::new();
        let mut restore_header = false;
        let mut in_place = true;
        let (kind, end): (&'static str, usize) = if roll < DATA_SHARE {
            // Data bytes of one tensor: the network loads (or names the bad value).
            let (_, _, range) = &valid.tensors[rng.int(0, valid.tensors.len() - 1)];
            let (kind, u) = mutate::in_place(rng, &mut work[which][range.clone()], &(0..range.len()));
            undo = u.into_iter().map(|(at, b)| (at + range.start, b)).collect();
            (if kind.starts_with("flip") { "data: flip bits" } else { "data: set bytes" }, valid.bytes.len())
        } else if roll < 0.55 {
            let (kind, u) = mutate::in_place(rng, &mut work[which][header.clone()], &header);
            undo = u;
            (kind, valid.bytes.len())
        } else if roll < 0.7 {
            ("truncate", mutate::truncation(rng, valid.bytes.len(), &header))
        } else if roll < 0.72 {
            let donors: Vec<&[u8]> = files.iter().map(|f| &f.bytes[..]).collect();
            in_place = false;
            (mutate::restructure(rng, &valid.bytes, &donors, &header, &mut scratch), scratch.len())
        } else {
            let (kind, text) = targeted_header(rng, valid);
            if let Some(text) = text {
                work[which][8..valid.header_end].copy_from_slice(&text);
                restore_header = true;
            }
            (kind, valid.bytes.len())
        };
        let bytes = if in_place { &work[which][..end] } else { &scratch[..] };
        let touched: Vec<usize> = undo.iter().map(|&(at, _)| at).collect();
        let input = Input { bytes, valid, in_place: in_place && !restore_header, touched: &touched };
        let bound = 2 * bytes.len() as u64 + 16 * bytes.len().min(valid.header_end) as u64 + SLACK;
        let run = harness::run("weights", bound, || ResNet50::from_safetensors(bytes, path));
        let mut problems = run.problems;
        let outcome = match &run.value {
            Some(result) => {
                let as_original = check(result, &input, &architecture, &mut problems);
                match result {
                    Ok(_) if as_original => "ok (as the original)".to_string(),
                    Ok(_) => "ok".to_string(),
                    Err(e) => harness::kind(e),
                }
            }
            None => "panic".into(),
        };
        for (at, old) in undo {
            work[which][at] = old;
        }
        if restore_header {
            work[which][8..valid.header_end].copy_from_slice(&valid.bytes[8..valid.header_end]);
        }
        Case { mutation: kind, outcome, problems }
    });
}
