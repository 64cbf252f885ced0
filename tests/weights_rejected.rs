//! Weights files rejected: every way a bad file fails to load, with an error that names
//! what is wrong (the tensor, its shape, dtype or value, or the file). CPU only.

mod common;

use std::fs;

use lookalike::model::ResNet50;
use lookalike::Error;
use safetensors::Dtype;

use common::weights_file::{edited, load_bytes, saved, weights, TempDir, Tensor, Tensors};

/// Loads the saved file edited by `edit`, which must fail.
fn load_edited(edit: impl FnOnce(&mut Tensors<'static>)) -> Error {
    match load_bytes(&edited(edit), "edited.safetensors") {
        Ok(_) => panic!("a bad file loaded"),
        Err(e) => e,
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let err = load_edited(|t| {
        t.remove("layer3.2.bn2.running_var").unwrap();
    });
    assert!(matches!(&err, Error::MissingTensor { name } if name == "layer3.2.bn2.running_var"), "{err:?}");
    assert!(err.to_string().contains("layer3.2.bn2.running_var"), "{err}");

    let err = load_edited(|t| {
        t.remove("conv1.weight").unwrap();
    });
    assert!(matches!(&err, Error::MissingTensor { name } if name == "conv1.weight"), "{err:?}");
}

#[test]
fn a_mis_shaped_tensor_names_both_shapes() {
    let name = "layer2.0.conv2.weight";
    // The right number of bytes for [128, 128, 1, 1], as if a 1x1 conv were saved here.
    let err = load_edited(|t| {
        let old = t.get_mut(name).unwrap();
        assert_eq!(old.shape, [128, 128, 3, 3]);
        old.shape = vec![128, 128, 1, 1];
        old.data.to_mut().truncate(128 * 128 * 4);
    });
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(name) && msg.contains("[128, 128, 3, 3]") && msg.contains("[128, 128, 1, 1]"), "{msg}");

    // The same values in HWIO order (a TensorFlow-style layout): same length, wrong shape.
    let err = load_edited(|t| t.get_mut(name).unwrap().shape = vec![3, 3, 128, 128]);
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    assert!(msg.contains(name) && msg.contains("[128, 128, 3, 3]") && msg.contains("[3, 3, 128, 128]"), "{msg}");

    // A batch-norm vector of the wrong length, and a 1-d conv weight.
    let err = load_edited(|t| {
        let bias = t.get_mut("layer4.0.bn1.bias").unwrap();
        bias.shape = vec![256];
        bias.data.to_mut().truncate(256 * 4);
    });
    let msg = err.to_string();
    assert!(msg.contains("layer4.0.bn1.bias") && msg.contains("[512]") && msg.contains("[256]"), "{msg}");
    let err = load_edited(|t| t.get_mut("conv1.weight").unwrap().shape = vec![64 * 3 * 7 * 7]);
    let msg = err.to_string();
    assert!(msg.contains("conv1.weight") && msg.contains("[64, 3, 7, 7]") && msg.contains("[9408]"), "{msg}");
}

#[test]
fn integer_dtypes_are_rejected() {
    for (dtype, size) in [(Dtype::I64, 8), (Dtype::I32, 4)] {
        let err = load_edited(|t| {
            let mean = t.get_mut("layer1.1.bn3.running_mean").unwrap();
            *mean = Tensor::new(dtype, mean.shape.clone(), vec![0; 256 * size]);
        });
        assert!(matches!(&err, Error::UnsupportedDtype { name, .. } if name == "layer1.1.bn3.running_mean"), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("layer1.1.bn3.running_mean") && msg.contains(&format!("{dtype:?}")), "{msg}");
    }
    // F64 is not taken either.
    let err = load_edited(|t| {
        let w = t.get_mut("bn1.weight").unwrap();
        *w = Tensor::new(Dtype::F64, vec![64], 1f64.to_le_bytes().repeat(64));
    });
    assert!(matches!(&err, Error::UnsupportedDtype { name, .. } if name == "bn1.weight"), "{err:?}");
}

#[test]
fn non_finite_values_are_located() {
    for (name, index, value) in [
        ("layer3.1.conv1.weight", 12_345, f32::NAN),
        ("layer2.3.bn1.bias", 77, f32::INFINITY),
        ("bn1.running_mean", 0, f32::NEG_INFINITY),
    ] {
        let err = load_edited(|t| t.get_mut(name).unwrap().set_f32(index, value));
        assert!(
            matches!(&err, Error::NonFinite { name: n, index: i, .. } if n == name && *i == index),
            "{name}[{index}] = {value}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains(&index.to_string()), "{msg}");
    }
    // Also in a half-precision file: an f16 infinity.
    let err = load_edited(|t| {
        let w = t.get_mut("layer4.2.conv3.weight").unwrap();
        let mut data: Vec<u8> = w.values().into_iter().flat_map(|x| half::f16::from_f32(x).to_le_bytes()).collect();
        data[2 * 9..2 * 10].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
        *w = Tensor::new(Dtype::F16, w.shape.clone(), data);
    });
    assert!(matches!(&err, Error::NonFinite { name, index: 9, .. } if name == "layer4.2.conv3.weight"), "{err:?}");
}

#[test]
fn a_negative_running_var_is_rejected() {
    let err = load_edited(|t| t.get_mut("layer4.2.bn3.running_var").unwrap().set_f32(7, -0.5));
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("layer4.2.bn3.running_var") && msg.contains("[7]") && msg.contains("-0.5"), "{msg}");
    // Zero (and -0.0) are valid variances: eps keeps the division finite.
    let net = &weights().net;
    let bytes = edited(|t| {
        let var = t.get_mut("layer4.2.bn3.running_var").unwrap();
        var.set_f32(7, 0.0);
        var.set_f32(8, -0.0);
    });
    let loaded = load_bytes(&bytes, "zero-var").unwrap();
    let bn = &loaded.blocks.last().unwrap().conv3.bn;
    assert_eq!((bn.running_var[7], bn.running_var[8]), (0.0, 0.0));
    assert_eq!(bn.running_var[9], net.blocks.last().unwrap().conv3.bn.running_var[9]);
}

#[test]
fn broken_files_are_errors_not_panics() {
    let dir = TempDir::new("broken");
    let check = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        let err = ResNet50::load(&path).map(|_| ()).unwrap_err();
        assert!(matches!(&err, Error::Safetensors { path: p, .. } if *p == path), "{name}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains("not a valid safetensors file"), "{msg}");
        eprintln!("{name}: {msg}");
    };
    check("text.safetensors", "this is not a safetensors file, just some text\n".repeat(40).as_bytes());
    check("empty.safetensors", b"");
    check("seven-bytes.safetensors", b"\x10\0\0\0\0\0\0");
    let mut not_json = 8u64.to_le_bytes().to_vec();
    not_json.extend_from_slice(b"not json");
    check("bad-header.safetensors", &not_json);
    let full = saved();
    check("half.safetensors", &full[..full.len() / 2]);
    check("header-cut.safetensors", &full[..100]);
    check("one-byte-short.safetensors", &full[..full.len() - 1]);
    let mut one_more = full.to_vec();
    one_more.push(0);
    check("one-byte-long.safetensors", &one_more);
    // Random bytes, with a plausible (small) header length in front.
    let mut random = 40u64.to_le_bytes().to_vec();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    random.extend((0..4000).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    }));
    check("random.safetensors", &random);
}

#[test]
fn a_missing_path_is_an_io_error() {
    let dir = TempDir::new("missing");
    let path = dir.join("does-not-exist.safetensors");
    let err = ResNet50::load(&path).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path: p, source } if *p == path && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(err.to_string().contains("does-not-exist.safetensors"), "{err}");
    // A directory is not a weights file either.
    let err = ResNet50::load(&dir.0).map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}
