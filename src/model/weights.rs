//! ResNet50 weights in safetensors files with torchvision / timm tensor names.

use std::path::Path;

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::model::resnet50::{ConvBn, ResNet50};

/// Reads one tensor as f32 (from F32, F16 or BF16), checking its shape and that every
/// value is finite.
fn read_tensor(st: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = st.tensor(name).map_err(|_| Error::MissingTensor { name: name.to_string() })?;
    if view.shape() != shape {
        return Err(Error::shape(name, format!("{shape:?}"), format!("{:?}", view.shape())));
    }
    let bytes = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => {
            return Err(Error::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: format!("{other:?}"),
                expected: "F32, F16 or BF16",
            })
        }
    };
    crate::cpu::check_finite(name, &values)?;
    Ok(values)
}

fn load_conv_bn(st: &SafeTensors, path: &Path, layer: &mut ConvBn) -> Result<()> {
    layer.weight = read_tensor(st, path, &format!("{}.weight", layer.conv_name), &layer.weight_shape())?;
    let c = [layer.out_c];
    let bn = &layer.bn_name;
    layer.bn.weight = read_tensor(st, path, &format!("{bn}.weight"), &c)?;
    layer.bn.bias = read_tensor(st, path, &format!("{bn}.bias"), &c)?;
    layer.bn.running_mean = read_tensor(st, path, &format!("{bn}.running_mean"), &c)?;
    let var_name = format!("{bn}.running_var");
    layer.bn.running_var = read_tensor(st, path, &var_name, &c)?;
    if let Some((index, &value)) = layer.bn.running_var.iter().enumerate().find(|(_, v)| **v < 0.0) {
        return Err(Error::InvalidArgument(format!("{var_name}[{index}] is negative ({value}): not a variance")));
    }
    Ok(())
}

impl ResNet50 {
    /// Loads the feature extractor from a safetensors file (torchvision / timm names; F32,
    /// F16 or BF16). `fc.*` and `*.num_batches_tracked` are ignored.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_safetensors(&bytes, path)
    }

    /// [`ResNet50::load`] from bytes already in memory; `path` names them in errors.
    pub fn from_safetensors(bytes: &[u8], path: &Path) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Safetensors { path: path.to_path_buf(), reason: e.to_string() })?;
        let mut net = Self::architecture();
        for layer in net.convs_mut() {
            load_conv_bn(&st, path, layer)?;
        }
        Ok(net)
    }

    /// Writes the network as safetensors in torchvision's layout: every conv and batch-norm
    /// tensor (F32), `num_batches_tracked` (I64 0) and, if given, `fc.weight` [classes, 2048]
    /// and `fc.bias`, so `torchvision.models.resnet50().load_state_dict` takes it strictly.
    /// The file is replaced atomically.
    pub fn save(&self, path: &Path, fc: Option<(&[f32], &[f32])>) -> Result<()> {
        let bytes = self.safetensors_bytes(path, fc)?;
        write_atomic(path, |w| w.write_all(&bytes))
    }

    /// SHA-256 (lowercase hex, as [`crate::index::sha256_file`] gives) of the file
    /// [`ResNet50::save`] writes, without writing it: the writer is deterministic, so this
    /// tells whether a weights file holds exactly this network.
    pub fn file_sha256(&self, fc: Option<(&[f32], &[f32])>) -> Result<String> {
        use sha2::Digest;
        let bytes = self.safetensors_bytes(Path::new("(in memory)"), fc)?;
        Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The bytes of [`ResNet50::save`]'s file; `path` names it in errors.
    fn safetensors_bytes(&self, path: &Path, fc: Option<(&[f32], &[f32])>) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for layer in self.convs() {
            tensors.push((
                format!("{}.weight", layer.conv_name),
                Dtype::F32,
                layer.weight_shape().to_vec(),
                f32_bytes(&layer.weight),
            ));
            let bn = &layer.bn_name;
            for (field, values) in [
                ("weight", &layer.bn.weight),
                ("bias", &layer.bn.bias),
                ("running_mean", &layer.bn.running_mean),
                ("running_var", &layer.bn.running_var),
            ] {
                tensors.push((format!("{bn}.{field}"), Dtype::F32, vec![layer.out_c], f32_bytes(values)));
            }
            tensors.push((format!("{bn}.num_batches_tracked"), Dtype::I64, vec![], 0i64.to_le_bytes().to_vec()));
        }
        if let Some((weight, bias)) = fc {
            let classes = bias.len();
            if weight.len() != classes * crate::model::FEATURE_DIM {
                return Err(Error::shape(
                    "fc.weight",
                    format!("[{classes}, 2048]"),
                    format!("{} values", weight.len()),
                ));
            }
            tensors.push(("fc.weight".into(), Dtype::F32, vec![classes, crate::model::FEATURE_DIM], f32_bytes(weight)));
            tensors.push(("fc.bias".into(), Dtype::F32, vec![classes], f32_bytes(bias)));
        }
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Safetensors { path: path.to_path_buf(), reason: e.to_string() })?;
        let metadata = [("format".to_string(), "pt".to_string())].into_iter().collect();
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::Safetensors { path: path.to_path_buf(), reason: e.to_string() })
    }
}
