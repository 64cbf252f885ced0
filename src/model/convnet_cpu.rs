//! The trained convnet's inference forward on the CPU: the oracle of
//! [`GpuConvNet`](crate::model::GpuConvNet), built from the per-layer twins of
//! [`crate::cpu::convnet`].

use crate::cpu::check_slice;
use crate::cpu::convnet::{conv_forward, dense_forward, global_avg_pool, l2_normalize_rows};
use crate::error::{Error, Result};
use crate::model::convnet::ConvNet;

/// Unit embeddings (`[batch, dim]`) of `batch` NHWC images already scaled to [0, 1]: the
/// inference forward (three convolutions, pooling, dense, L2 normalisation).
pub fn embed(net: &ConvNet, input: &[f32], batch: usize) -> Result<Vec<f32>> {
    let spec = &net.spec;
    spec.validate()?;
    let layout = spec.layout();
    check_slice("cpu convnet weights", &net.params, layout.len)?;
    check_slice("cpu convnet embed input", input, batch * spec.input_len())?;
    let tensor = |name: &str| {
        layout
            .tensor(name)
            .map(|t| &net.params[t.range()])
            .ok_or_else(|| Error::MissingTensor { name: name.to_string() })
    };
    let mut x = input.to_vec();
    for (i, g) in spec.convs().iter().enumerate() {
        x = conv_forward(
            &x,
            batch,
            g,
            tensor(&format!("conv{}.kernel", i + 1))?,
            tensor(&format!("conv{}.bias", i + 1))?,
        );
    }
    let last = spec.convs()[2];
    let pooled = global_avg_pool(&x, batch, last.out_pixels(), last.out_c);
    let e = dense_forward(&pooled, batch, last.out_c, spec.dim, tensor("dense.kernel")?, tensor("dense.bias")?);
    Ok(l2_normalize_rows(&e, spec.dim).0)
}
