//! Resampling filter taps for one axis (PIL's and torchvision's antialiased bilinear), the
//! weights the CPU resize applies and the GPU preprocessing uploads unchanged.

/// Resampling taps for one axis, flat so they can be uploaded to the GPU unchanged.
///
/// Output index `o` reads input indices `start[o] .. start[o] + count[o]` with weights
/// `weights[o * max_taps + j]` for `j < count[o]`; the rest of each row of `max_taps`
/// weights is zero padding. The weights of each output sum to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterTaps {
    /// First input index of each output.
    pub start: Vec<u32>,
    /// Number of input indices each output reads.
    pub count: Vec<u32>,
    /// `out_len * max_taps` weights, zero-padded.
    pub weights: Vec<f32>,
    /// Row stride of `weights`: the largest `count`.
    pub max_taps: usize,
}

impl FilterTaps {
    /// `len` outputs that each copy one input with a weight of exactly 1.0. Applying them
    /// (`0.0 + 1.0 * x`) reproduces the input bit for bit, as the pass-through does.
    pub fn identity(len: u32) -> Self {
        Self::identity_range(0, len as usize)
    }

    /// Outputs `first..first + len` of [`FilterTaps::identity`].
    pub(crate) fn identity_range(first: u32, len: usize) -> Self {
        Self { start: (first..).take(len).collect(), count: vec![1; len], weights: vec![1.0; len], max_taps: 1 }
    }

    /// The first input index and the weights of output `o`.
    pub(crate) fn taps(&self, o: usize) -> (usize, &[f32]) {
        let row = o * self.max_taps;
        (self.start[o] as usize, &self.weights[row..row + self.count[o] as usize])
    }
}

/// Triangle (bilinear) filter taps mapping `in_len` samples to `out_len`, computed in f64
/// exactly as PIL's `Image.resize(BILINEAR)` and torchvision's `antialias=True` do:
///
/// ```text
/// scale   = in_len / out_len
/// support = max(scale, 1)                  // the filter widens when downscaling (antialias)
/// centre  = (o + 0.5) * scale              // half-pixel centres
/// first   = max(trunc(centre - support + 0.5), 0)
/// end     = min(trunc(centre + support + 0.5), in_len)
/// w[i]    = max(0, 1 - |(i - centre + 0.5) * (1 / support)|)   for i in first..end
/// ```
///
/// then each output's weights are divided by their sum, which also renormalises taps cut off
/// by the image border. Upscaling (support 1) is plain bilinear with clamp-to-edge.
/// Either length 0 gives `out_len` empty tap lists.
pub fn bilinear_taps(in_len: u32, out_len: u32) -> FilterTaps {
    bilinear_taps_range(in_len, out_len as usize, 0, out_len as usize)
}

/// Outputs `first..first + len` of [`bilinear_taps`]`(in_len, out_len)`: the same weights
/// (each output's depend on it alone), computed without the others, so the crop of a
/// huge resize (a strip resized to millions of columns) costs only its own outputs. The
/// row stride `max_taps` is the largest count within the range.
pub fn bilinear_taps_range(in_len: u32, out_len: usize, first: usize, len: usize) -> FilterTaps {
    if in_len == 0 || out_len == 0 {
        return FilterTaps { start: vec![0; len], count: vec![0; len], weights: Vec::new(), max_taps: 0 };
    }
    let scale = in_len as f64 / out_len as f64;
    let support = scale.max(1.0);
    // PIL multiplies by the reciprocal; doing the same keeps the f64 weights bit-identical.
    let inverse_support = 1.0 / support;
    let mut rows: Vec<(u32, Vec<f64>)> = Vec::with_capacity(len);
    for o in first..first + len {
        let centre = (o as f64 + 0.5) * scale;
        // `as i64` truncates toward zero like PIL's C cast; the clamps make it floor-safe.
        let first = ((centre - support + 0.5) as i64).max(0);
        let end = ((centre + support + 0.5) as i64).min(in_len as i64);
        let mut weights: Vec<f64> =
            (first..end).map(|i| (1.0 - ((i as f64 - centre + 0.5) * inverse_support).abs()).max(0.0)).collect();
        let sum: f64 = weights.iter().sum();
        if sum > 0.0 {
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        rows.push((first as u32, weights));
    }
    let out = len;
    let max_taps = rows.iter().map(|(_, w)| w.len()).max().unwrap_or(0);
    let mut taps = FilterTaps {
        start: Vec::with_capacity(out),
        count: Vec::with_capacity(out),
        weights: vec![0.0; out * max_taps],
        max_taps,
    };
    for (o, (first, weights)) in rows.into_iter().enumerate() {
        taps.start.push(first);
        taps.count.push(weights.len() as u32);
        for (j, w) in weights.into_iter().enumerate() {
            taps.weights[o * max_taps + j] = w as f32;
        }
    }
    taps
}
