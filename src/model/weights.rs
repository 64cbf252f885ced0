//! ResNet50 weights in safetensors files with torchvision / timm tensor names.

use std::collections::BTreeMap;
use std::path::Path;

use half::slice::HalfFloatSliceExt;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::model::resnet50::{ConvBn, ResNet50};

/// Tensor `name` with its shape checked and a dtype we read (F32, F16 or BF16).
fn view<'a>(st: &SafeTensors<'a>, path: &Path, name: &str, shape: &[usize]) -> Result<TensorView<'a>> {
    let view = st.tensor(name).map_err(|_| Error::MissingTensor { name: name.to_string() })?;
    if view.shape() != shape {
        return Err(Error::shape(name, format!("{shape:?}"), format!("{:?}", view.shape())));
    }
    match view.dtype() {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(view),
        other => Err(Error::UnsupportedDtype {
            path: path.to_path_buf(),
            name: name.to_string(),
            dtype: format!("{other:?}"),
            expected: "F32, F16 or BF16",
        }),
    }
}

/// Reads one tensor as f32 (from F32, F16 or BF16), checking its shape and that every
/// value is finite.
fn read_tensor(st: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = view(st, path, name, shape)?;
    let bytes = view.data();
    let values = match view.dtype() {
        Dtype::F16 => widen(bytes, half::f16::from_le_bytes),
        Dtype::BF16 => widen(bytes, half::bf16::from_le_bytes),
        _ if cfg!(target_endian = "little") => bytemuck::pod_collect_to_vec(bytes),
        _ => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
    };
    crate::cpu::check_finite(name, &values)?;
    Ok(values)
}

/// Little-endian 16-bit floats widened to f32 a slice at a time (SIMD where the CPU has it):
/// a whole network converts in a fraction of the time of one value at a time.
fn widen<T: HalfFloat>(bytes: &[u8], from_le: fn([u8; 2]) -> T) -> Vec<f32> {
    let mut out = vec![0.0; bytes.len() / 2];
    // In place when the data are aligned, as writers leave them; else a block at a time.
    if let (true, Ok(halves)) = (cfg!(target_endian = "little"), bytemuck::try_cast_slice::<u8, T>(bytes)) {
        T::widen(halves, &mut out);
        return out;
    }
    let mut block = Vec::with_capacity(1 << 14);
    for (src, dst) in bytes.chunks(2 << 14).zip(out.chunks_mut(1 << 14)) {
        block.clear();
        block.extend(src.chunks_exact(2).map(|b| from_le([b[0], b[1]])));
        T::widen(&block, dst);
    }
    out
}

/// The 16-bit float types a weights file may hold.
trait HalfFloat: bytemuck::Pod {
    fn widen(src: &[Self], dst: &mut [f32]);
}

impl HalfFloat for half::f16 {
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

impl HalfFloat for half::bf16 {
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

/// Refuses a header whose tensors end beyond the file. The safetensors crate adds the
/// offsets up unchecked: ones that sum past u64 would panic (debug builds) or wrap.
fn check_offsets(bytes: &[u8], path: &Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Offsets {
        #[serde(default)]
        data_offsets: Option<(u64, u64)>,
    }
    let Some(len) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes) else {
        return Ok(()); // too short: the safetensors crate says so
    };
    let Some(header) = usize::try_from(len).ok().and_then(|n| bytes.get(8..8usize.checked_add(n)?)) else {
        return Ok(());
    };
    // A header that does not parse here does not parse there either, with a better message.
    let Ok(entries) = serde_json::from_slice::<BTreeMap<String, Offsets>>(header) else { return Ok(()) };
    let data_len = (bytes.len() - 8 - header.len()) as u64;
    for (name, entry) in entries {
        if let Some((begin, end)) = entry.data_offsets.filter(|&(b, e)| b.max(e) > data_len) {
            return Err(Error::Safetensors {
                path: path.to_path_buf(),
                reason: format!(
                    "tensor `{name}` lies at bytes {begin}..{end} of a data section of {data_len}: truncated or damaged"
                ),
            });
        }
    }
    Ok(())
}

/// Every tensor of `layer`: name and shape.
fn tensor_names(layer: &ConvBn) -> [(String, Vec<usize>); 5] {
    let bn = &layer.bn_name;
    let c = vec![layer.out_c];
    [
        (format!("{}.weight", layer.conv_name), layer.weight_shape().to_vec()),
        (format!("{bn}.weight"), c.clone()),
        (format!("{bn}.bias"), c.clone()),
        (format!("{bn}.running_mean"), c.clone()),
        (format!("{bn}.running_var"), c),
    ]
}

fn load_conv_bn(st: &SafeTensors, path: &Path, layer: &mut ConvBn) -> Result<()> {
    let [weight, bn_weight, bn_bias, mean, var] = tensor_names(layer);
    let read = |(name, shape): (String, Vec<usize>)| read_tensor(st, path, &name, &shape);
    layer.weight = read(weight)?;
    layer.bn.weight = read(bn_weight)?;
    layer.bn.bias = read(bn_bias)?;
    layer.bn.running_mean = read(mean)?;
    layer.bn.running_var = read(var)?;
    if let Some((index, &value)) = layer.bn.running_var.iter().enumerate().find(|(_, v)| **v < 0.0) {
        let var_name = format!("{}.running_var", layer.bn_name);
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
        check_offsets(bytes, path)?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Safetensors { path: path.to_path_buf(), reason: e.to_string() })?;
        let mut net = Self::architecture();
        // Names, shapes and dtypes first: a wrong file fails at once, not after converting
        // most of 100 MB.
        for layer in net.convs() {
            for (name, shape) in tensor_names(layer) {
                view(&st, path, &name, &shape)?;
            }
        }
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

    /// SHA-256 (lowercase hex, as `index::sha256_file` gives) of the file
    /// [`ResNet50::save`] writes, without writing it: the writer is deterministic, so this
    /// tells whether a weights file holds exactly this network.
    pub fn file_sha256(&self, fc: Option<(&[f32], &[f32])>) -> Result<String> {
        let bytes = self.safetensors_bytes(Path::new("(in memory)"), fc)?;
        Ok(super::canonical::sha256_hex(&bytes))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `header` as a safetensors file with `data` after it.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn offsets_that_sum_past_u64_are_an_error_not_a_panic() {
        // Eight tensors of 2^61 - 1 bytes each, back to back: each offset fits, their sum
        // (plus the header) does not.
        let step = (1u64 << 61) - 1;
        let entries: Vec<String> = (0..8u64)
            .map(|i| {
                format!(r#""t{i}":{{"dtype":"U8","shape":[{step}],"data_offsets":[{},{}]}}"#, i * step, (i + 1) * step)
            })
            .collect();
        let bytes = file(&format!("{{{}}}", entries.join(",")), &[0; 16]);
        let err = ResNet50::from_safetensors(&bytes, Path::new("w.safetensors")).unwrap_err().to_string();
        assert!(err.contains("w.safetensors") && err.contains("of a data section of 16"), "{err}");
    }

    #[test]
    fn a_wrong_tensor_is_named_before_any_data_is_converted() {
        let bytes = file(r#"{"conv1.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]);
        let err = ResNet50::from_safetensors(&bytes, Path::new("w")).unwrap_err();
        assert!(matches!(&err, Error::ShapeMismatch { op, .. } if op == "conv1.weight"), "{err}");
        // conv1.weight holds a NaN, but the missing tensor is found first, unconverted.
        let mut data = vec![0u8; 37632];
        data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        let bytes = file(r#"{"conv1.weight":{"dtype":"F32","shape":[64,3,7,7],"data_offsets":[0,37632]}}"#, &data);
        let err = ResNet50::from_safetensors(&bytes, Path::new("w")).unwrap_err();
        assert!(matches!(&err, Error::MissingTensor { name } if name == "bn1.weight"), "{err}");
    }
}
