//! Weights files for the library's load and save tests: seeded weights, the file `save`
//! writes for them, and its tensors as editable values.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lookalike::model::{RandomResNet50, ResNet50};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Seeded weights, generated once per test binary (a few seconds).
pub fn weights() -> &'static RandomResNet50 {
    static NET: OnceLock<RandomResNet50> = OnceLock::new();
    NET.get_or_init(|| RandomResNet50::generate(7).expect("seeded weights"))
}

/// The bytes [`ResNet50::save`] writes for [`weights`] with its `fc` head, saved once.
pub fn saved() -> &'static [u8] {
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
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("lookalike-weights-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Names of the entries in the directory, sorted.
    pub fn entries(&self) -> Vec<String> {
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
pub struct Tensor<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Cow<'a, [u8]>,
}

impl Tensor<'_> {
    pub fn new(dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Self {
        Self { dtype, shape, data: Cow::Owned(data) }
    }

    pub fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self::new(Dtype::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn values(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32);
        f32s(&self.data)
    }

    pub fn set_f32(&mut self, index: usize, value: f32) {
        assert_eq!(self.dtype, Dtype::F32);
        self.data.to_mut()[4 * index..4 * index + 4].copy_from_slice(&value.to_le_bytes());
    }
}

pub type Tensors<'a> = BTreeMap<String, Tensor<'a>>;

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub fn parse(bytes: &[u8]) -> Tensors<'_> {
    let st = SafeTensors::deserialize(bytes).expect("a valid safetensors file");
    st.iter()
        .map(|(name, v)| {
            (name.to_string(), Tensor { dtype: v.dtype(), shape: v.shape().to_vec(), data: Cow::Borrowed(v.data()) })
        })
        .collect()
}

pub fn serialize(tensors: &Tensors) -> Vec<u8> {
    let views =
        tensors.iter().map(|(name, t)| (name.as_str(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()));
    safetensors::serialize(views, None).expect("serialize")
}

/// The saved file with `edit` applied to its tensors.
pub fn edited(edit: impl FnOnce(&mut Tensors<'static>)) -> Vec<u8> {
    let mut tensors = parse(saved());
    edit(&mut tensors);
    serialize(&tensors)
}

/// Loads `bytes` as the file `name` would be named in errors.
pub fn load_bytes(bytes: &[u8], name: &str) -> lookalike::Result<ResNet50> {
    ResNet50::from_safetensors(bytes, Path::new(name))
}
