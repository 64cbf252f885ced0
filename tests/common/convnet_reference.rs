//! The convnet's forward and pair loss in f64, written from the recipe's maths with plain
//! loops: the function the finite differences of the training tests differentiate.

use lookalike::model::convnet::{ConvGeometry, ConvNetSpec, KERNEL, STRIDE};

/// `ReLU(conv3x3_stride2_valid(x, kernel) + bias)`, NHWC, HWIO.
pub fn conv(x: &[f64], batch: usize, g: &ConvGeometry, kernel: &[f64], bias: &[f64]) -> Vec<f64> {
    let mut y = Vec::with_capacity(batch * g.out_pixels() * g.out_c);
    for b in 0..batch {
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                for oc in 0..g.out_c {
                    let mut z = bias[oc];
                    for kh in 0..KERNEL {
                        for kw in 0..KERNEL {
                            for ic in 0..g.in_c {
                                let (ih, iw) = (oh * STRIDE + kh, ow * STRIDE + kw);
                                let xv = x[((b * g.in_h + ih) * g.in_w + iw) * g.in_c + ic];
                                z += xv * kernel[((kh * KERNEL + kw) * g.in_c + ic) * g.out_c + oc];
                            }
                        }
                    }
                    y.push(z.max(0.0));
                }
            }
        }
    }
    y
}

/// Mean over pixels: `[batch, pixels, channels]` -> `[batch, channels]`.
pub fn gap(x: &[f64], batch: usize, pixels: usize, channels: usize) -> Vec<f64> {
    (0..batch * channels)
        .map(|bc| {
            let (b, c) = (bc / channels, bc % channels);
            (0..pixels).map(|p| x[(b * pixels + p) * channels + c]).sum::<f64>() / pixels as f64
        })
        .collect()
}

/// `x · kernel + bias`; the input width follows from `bias` and `kernel`.
pub fn dense(x: &[f64], batch: usize, outputs: usize, kernel: &[f64], bias: &[f64]) -> Vec<f64> {
    let inputs = kernel.len() / outputs;
    (0..batch * outputs)
        .map(|bo| {
            let (b, o) = (bo / outputs, bo % outputs);
            bias[o] + (0..inputs).map(|i| x[b * inputs + i] * kernel[i * outputs + o]).sum::<f64>()
        })
        .collect()
}

/// `e / √max(Σe², 1e-12)` per row.
pub fn l2(e: &[f64], dim: usize) -> Vec<f64> {
    e.chunks_exact(dim)
        .flat_map(|row| {
            let s = row.iter().map(|x| x * x).sum::<f64>().max(1e-12);
            row.iter().map(move |x| x / s.sqrt())
        })
        .collect()
}

/// Mean over anchors of `logsumexp_j(a_i · p_j / T) − a_i · p_i / T`.
pub fn pair_loss(u: &[f64], classes: usize, dim: usize, temperature: f64) -> f64 {
    let (anchors, positives) = u.split_at(classes * dim);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut loss = 0.0;
    for (i, a) in anchors.chunks_exact(dim).enumerate() {
        let logits: Vec<f64> = positives.chunks_exact(dim).map(|p| dot(a, p) / temperature).collect();
        let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
        loss += lse - logits[i];
    }
    loss / classes as f64
}

/// Unit embeddings of `batch` images under the flat weights `params`.
pub fn embed(spec: &ConvNetSpec, params: &[f64], input: &[f64], batch: usize) -> Vec<f64> {
    let layout = spec.layout();
    let tensor = |name: &str| &params[layout.tensor(name).unwrap().range()];
    let mut x = input.to_vec();
    for (i, g) in spec.convs().iter().enumerate() {
        x = conv(&x, batch, g, tensor(&format!("conv{}.kernel", i + 1)), tensor(&format!("conv{}.bias", i + 1)));
    }
    let last = spec.convs()[2];
    let pooled = gap(&x, batch, last.out_pixels(), last.out_c);
    l2(&dense(&pooled, batch, spec.dim, tensor("dense.kernel"), tensor("dense.bias")), spec.dim)
}

/// The pair loss of a batch of 2C images (anchors, then positives).
pub fn net_loss(spec: &ConvNetSpec, params: &[f64], input: &[f64], classes: usize, temperature: f64) -> f64 {
    pair_loss(&embed(spec, params, input, 2 * classes), classes, spec.dim, temperature)
}
