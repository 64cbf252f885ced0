//! Weights files: safetensors save → load round trips, F16 / BF16 files, every way a bad
//! file is rejected (with an error that names what is wrong), and atomic saving. CPU only.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lookalike::model::{RandomResNet50, ResNet50, FEATURE_DIM};
use lookalike::Error;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Seeded weights, generated once for the whole file (a few seconds).
fn weights() -> &'static RandomResNet50 {
    static NET: OnceLock<RandomResNet50> = OnceLock::new();
    NET.get_or_init(|| RandomResNet50::generate(7).expect("seeded weights"))
}

/// The bytes [`ResNet50::save`] writes for [`weights`] with its `fc` head, saved once.
fn saved() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = TempDir::new("saved");
        let path = dir.join("resnet50.safetensors");
        let w = weights();
        w.net.save(&path, Some((&w.fc_weight, &w.fc_bias))).expect("save");
        fs::read(&path).expect("read back the saved file")
    })
}

/// A fresh directory under the system temp dir, unique to this process and test, removed
/// on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("lookalike-weights-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Names of the entries in the directory, sorted.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One tensor of a file, editable; its data borrows the file until a test changes it (the
/// files are ~100 MB, so copies add up).
struct Tensor<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

impl Tensor<'_> {
    fn new(dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Self {
        Self { dtype, shape, data: Cow::Owned(data) }
    }

    fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self::new(Dtype::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn values(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32);
        f32s(&self.data)
    }

    fn set_f32(&mut self, index: usize, value: f32) {
        assert_eq!(self.dtype, Dtype::F32);
        self.data.to_mut()[4 * index..4 * index + 4].copy_from_slice(&value.to_le_bytes());
    }
}

type Tensors<'a> = BTreeMap<String, Tensor<'a>>;

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn parse(bytes: &[u8]) -> Tensors<'_> {
    let st = SafeTensors::deserialize(bytes).expect("a valid safetensors file");
    st.iter()
        .map(|(name, v)| {
            (name.to_string(), Tensor { dtype: v.dtype(), shape: v.shape().to_vec(), data: Cow::Borrowed(v.data()) })
        })
        .collect()
}

fn serialize(tensors: &Tensors) -> Vec<u8> {
    let views =
        tensors.iter().map(|(name, t)| (name.as_str(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()));
    safetensors::serialize(views, None).expect("serialize")
}

/// The saved file with `edit` applied to its tensors.
fn edited(edit: impl FnOnce(&mut Tensors<'static>)) -> Vec<u8> {
    let mut tensors = parse(saved());
    edit(&mut tensors);
    serialize(&tensors)
}

/// Loads `bytes` as the file `name` would be named in errors.
fn load_bytes(bytes: &[u8], name: &str) -> lookalike::Result<ResNet50> {
    ResNet50::from_safetensors(bytes, Path::new(name))
}

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
