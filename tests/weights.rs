//! Weights files: safetensors save → load round trips, F16 / BF16 files, extra tensors,
//! and atomic saving. CPU only. The ways a bad file is rejected are in
//! `tests/weights_rejected.rs`.

mod common;

use std::collections::BTreeMap;
use std::fs;

use lookalike::model::{ResNet50, FEATURE_DIM};
use lookalike::Error;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use common::weights_file::{edited, f32s, load_bytes, parse, saved, serialize, weights, TempDir, Tensor};

/// `net` with every float passed through `round`.
fn rounded(net: &ResNet50, round: impl Fn(f32) -> f32) -> ResNet50 {
    let mut out = net.clone();
    for layer in out.convs_mut() {
        let bn = &mut layer.bn;
        for values in [&mut layer.weight, &mut bn.weight, &mut bn.bias, &mut bn.running_mean, &mut bn.running_var] {
            for v in values.iter_mut() {
                *v = round(*v);
            }
        }
    }
    out
}

#[test]
fn save_load_round_trip_writes_the_torchvision_state_dict() {
    let w = weights();
    let dir = TempDir::new("round-trip");
    let path = dir.join("resnet50.safetensors");
    w.net.save(&path, Some((&w.fc_weight, &w.fc_bias))).unwrap();
    let loaded = ResNet50::load(&path).unwrap();
    assert!(loaded == w.net, "save → load changed the weights");
    let bytes = fs::read(&path).unwrap();
    assert!(bytes == saved(), "two saves of the same weights differ");
    // Loading from memory gives the same network.
    assert!(load_bytes(&bytes, "in-memory").unwrap() == w.net);

    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    let arch = ResNet50::architecture();
    let convs: Vec<_> = arch.convs().collect();
    assert_eq!(convs.len(), 53);
    // Exactly the names torchvision's resnet50().state_dict() has, with its shapes.
    let mut expected: BTreeMap<String, (Dtype, Vec<usize>)> = BTreeMap::new();
    for c in &convs {
        expected.insert(format!("{}.weight", c.conv_name), (Dtype::F32, c.weight_shape().to_vec()));
        for field in ["weight", "bias", "running_mean", "running_var"] {
            expected.insert(format!("{}.{field}", c.bn_name), (Dtype::F32, vec![c.out_c]));
        }
        expected.insert(format!("{}.num_batches_tracked", c.bn_name), (Dtype::I64, vec![]));
    }
    expected.insert("fc.weight".into(), (Dtype::F32, vec![1000, FEATURE_DIM]));
    expected.insert("fc.bias".into(), (Dtype::F32, vec![1000]));
    let got: BTreeMap<String, (Dtype, Vec<usize>)> =
        st.iter().map(|(name, v)| (name.to_string(), (v.dtype(), v.shape().to_vec()))).collect();
    assert_eq!(got, expected);
    // Spot-check a few names against torchvision's spelling.
    for name in ["conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer4.2.bn3.num_batches_tracked"]
    {
        assert!(got.contains_key(name), "{name} missing");
    }

    let count = |dtype: Dtype| got.values().filter(|(d, _)| *d == dtype).count();
    assert_eq!(count(Dtype::F32), 267, "53 convs + 4 x 53 batch-norm tensors + fc.weight + fc.bias");
    assert_eq!(count(Dtype::I64), 53);
    assert_eq!(got.len(), 320);
    for (name, view) in st.iter().filter(|(name, _)| name.ends_with(".num_batches_tracked")) {
        assert_eq!(view.data(), &0i64.to_le_bytes(), "{name}");
    }

    // Parameters (what torchvision's sum(p.numel() for p in parameters()) counts) and the
    // running statistics, which are buffers.
    let numel = |v: &TensorView| v.shape().iter().product::<usize>();
    let (mut params, mut stats) = (0, 0);
    for (name, view) in st.iter().filter(|(_, v)| v.dtype() == Dtype::F32) {
        if name.ends_with(".running_mean") || name.ends_with(".running_var") {
            stats += numel(&view);
        } else {
            params += numel(&view);
        }
    }
    assert_eq!(params, 25_557_032);
    assert_eq!(params, w.net.parameter_count() + 1000 * FEATURE_DIM + 1000);
    assert_eq!(stats, 2 * 26_560);
    // The fc head is written as given.
    assert_eq!(f32s(st.tensor("fc.bias").unwrap().data()), w.fc_bias);
    assert!(f32s(st.tensor("fc.weight").unwrap().data()) == w.fc_weight);
    assert!(dir.entries() == ["resnet50.safetensors"], "{:?}", dir.entries());
}

/// `file_sha256` hashes exactly the bytes `save` writes (an index compares a seed's
/// weights with a file through it), and it depends on the head.
#[test]
fn file_sha256_is_the_hash_of_the_saved_file() {
    use sha2::Digest;
    let w = weights();
    let of_file: String = sha2::Sha256::digest(saved()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(w.net.file_sha256(Some((&w.fc_weight, &w.fc_bias))).unwrap(), of_file);
    assert_ne!(w.net.file_sha256(None).unwrap(), of_file);
}

#[test]
fn a_mis_sized_fc_is_rejected_before_writing() {
    let w = weights();
    let dir = TempDir::new("bad-fc");
    let path = dir.join("resnet50.safetensors");
    fs::write(&path, b"old contents").unwrap();
    let err = w.net.save(&path, Some((&w.fc_weight[..10], &w.fc_bias))).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("fc.weight") && msg.contains("[1000, 2048]") && msg.contains("10 values"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), b"old contents", "a rejected save touched the existing file");
    assert!(dir.entries() == ["resnet50.safetensors"], "{:?}", dir.entries());
}

/// Converts every F32 tensor of the saved file with `convert` (to a 2-byte dtype).
fn half_file(dtype: Dtype, convert: impl Fn(f32) -> [u8; 2]) -> Vec<u8> {
    edited(|tensors| {
        for t in tensors.values_mut().filter(|t| t.dtype == Dtype::F32) {
            let data = t.values().into_iter().flat_map(&convert).collect();
            *t = Tensor::new(dtype, t.shape.clone(), data);
        }
    })
}

#[test]
fn f16_and_bf16_files_load_as_rounded_f32() {
    let net = &weights().net;
    let dir = TempDir::new("half");

    let f16_path = dir.join("resnet50-f16.safetensors");
    fs::write(&f16_path, half_file(Dtype::F16, |x| half::f16::from_f32(x).to_le_bytes())).unwrap();
    let from_f16 = ResNet50::load(&f16_path).unwrap();
    assert!(from_f16 == rounded(net, |x| half::f16::from_f32(x).to_f32()), "F16 file loaded wrong values");
    assert!(from_f16 != *net, "F16 rounding should change some weights");

    let bf16_path = dir.join("resnet50-bf16.safetensors");
    fs::write(&bf16_path, half_file(Dtype::BF16, |x| half::bf16::from_f32(x).to_le_bytes())).unwrap();
    let from_bf16 = ResNet50::load(&bf16_path).unwrap();
    assert!(from_bf16 == rounded(net, |x| half::bf16::from_f32(x).to_f32()), "BF16 file loaded wrong values");
    assert!(from_bf16 != from_f16);

    // Mixed files are fine too: one tensor in F16, the rest F32.
    let mixed = edited(|tensors| {
        let t = tensors.get_mut("layer2.1.bn2.bias").unwrap();
        let data = t.values().into_iter().flat_map(|x| half::f16::from_f32(x).to_le_bytes()).collect();
        *t = Tensor::new(Dtype::F16, t.shape.clone(), data);
    });
    let loaded = load_bytes(&mixed, "mixed").unwrap();
    let bias = &loaded.blocks[4].conv2.bn.bias;
    assert_eq!(loaded.blocks[4].conv2.bn_name, "layer2.1.bn2");
    let expected: Vec<f32> = net.blocks[4].conv2.bn.bias.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    assert_eq!(*bias, expected);
    assert!(loaded.blocks[4].conv2.weight == net.blocks[4].conv2.weight);
}

#[test]
fn extra_tensors_are_ignored() {
    let net = &weights().net;
    // The saved file already carries fc.* and num_batches_tracked; add unrelated tensors,
    // of dtypes the loader would reject, and change fc to another head size.
    let bytes = edited(|tensors| {
        tensors.insert("unrelated.extra".into(), Tensor::new(Dtype::I32, vec![3], vec![0; 12]));
        tensors.insert("layer1.0.bn1.extra_buffer".into(), Tensor::new(Dtype::U8, vec![5], vec![7; 5]));
        tensors.insert("fc.weight".into(), Tensor::f32(vec![10, FEATURE_DIM], &vec![f32::NAN; 10 * FEATURE_DIM]));
        tensors.insert("fc.bias".into(), Tensor::f32(vec![10], &[f32::INFINITY; 10]));
        tensors
            .insert("bn1.num_batches_tracked".into(), Tensor::new(Dtype::I64, vec![], 12345i64.to_le_bytes().to_vec()));
    });
    assert!(load_bytes(&bytes, "extra").unwrap() == *net);

    // And a file with no fc and no num_batches_tracked at all (timm's feature extractor).
    let bytes =
        edited(|tensors| tensors.retain(|name, _| !name.starts_with("fc.") && !name.ends_with("num_batches_tracked")));
    assert!(load_bytes(&bytes, "features-only").unwrap() == *net);
}
#[test]
fn saving_is_atomic() {
    let w = weights();
    let dir = TempDir::new("atomic");

    // Into a directory that does not exist: an error, and nothing is created.
    let nowhere = dir.join("no-such-dir").join("resnet50.safetensors");
    let err = w.net.save(&nowhere, None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    // The message names the missing directory (it names the temporary sibling written
    // first, not the target itself).
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert!(!dir.join("no-such-dir").exists());
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());

    // Over an existing file (without fc this time): replaced whole, and no temporary
    // sibling (`.NAME.tmp-*`) is left behind.
    let path = dir.join("resnet50.safetensors");
    fs::write(&path, b"old contents").unwrap();
    w.net.save(&path, None).unwrap();
    assert!(dir.entries() == ["resnet50.safetensors"], "{:?}", dir.entries());
    assert!(ResNet50::load(&path).unwrap() == w.net);
    let bytes = fs::read(&path).unwrap();
    let tensors = parse(&bytes);
    assert_eq!(tensors.len(), 318, "53 x (conv weight + 5 batch-norm tensors), no fc");
    assert!(!tensors.keys().any(|n| n.starts_with("fc.")));

    // A target that cannot be replaced (a non-empty directory): an error, the target is
    // untouched and the temporary file is cleaned up.
    let blocked = dir.join("blocked.safetensors");
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("keep"), b"keep me").unwrap();
    let err = w.net.save(&blocked, None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(fs::read(blocked.join("keep")).unwrap(), b"keep me");
    assert!(dir.entries() == ["blocked.safetensors", "resnet50.safetensors"], "{:?}", dir.entries());
    assert!(!dir.entries().iter().any(|n| n.contains(".tmp-")));
}

#[test]
fn a_file_without_metadata_loads() {
    // Our `serialize` writes no `__metadata__` (no "format": "pt"), as some tools do.
    let bytes = serialize(&parse(saved()));
    assert!(SafeTensors::read_metadata(&bytes).unwrap().1.metadata().is_none());
    assert!(load_bytes(&bytes, "no-metadata").unwrap() == weights().net);
}
