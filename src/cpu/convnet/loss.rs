//! L2 normalisation of the embeddings and the pair loss, with their backwards. Sums run in
//! f64: the rows are short (the embedding width, the class count), so it costs nothing and
//! keeps the oracle's rounding far below the GPU's.

/// The floor of a row's squared norm, as `tf.math.l2_normalize`'s epsilon.
pub const MIN_SQUARED_NORM: f64 = 1e-12;

/// `1 / √MIN_SQUARED_NORM`: the inverse norm of a row whose squared norm was clamped. A row
/// whose inverse norm is at least this takes the clamped branch of the backward.
pub const MAX_INV_NORM: f32 = 1e6;

/// Row-wise `u = e / √max(Σe², 1e-12)` over rows of `dim` values. Returns `u` and each row's
/// inverse norm as used (`1e6` where the floor applied).
pub fn l2_normalize_rows(e: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = e.len().checked_div(dim).unwrap_or(0);
    let (mut u, mut inv_norm) = (vec![0.0; e.len()], vec![0.0; rows]);
    l2_normalize_rows_into(e, dim, &mut u, &mut inv_norm);
    (u, inv_norm)
}

/// [`l2_normalize_rows`] into `u` and `inv_norm`.
pub(crate) fn l2_normalize_rows_into(e: &[f32], dim: usize, u: &mut [f32], inv_norm: &mut [f32]) {
    assert!(dim > 0 && e.len().is_multiple_of(dim), "l2_normalize_rows: {} values in rows of {dim}", e.len());
    assert!(u.len() == e.len() && inv_norm.len() == e.len() / dim, "l2_normalize_rows: output lengths");
    for ((row, out), inv) in e.chunks_exact(dim).zip(u.chunks_exact_mut(dim)).zip(inv_norm.iter_mut()) {
        let squared: f64 = row.iter().map(|&x| x as f64 * x as f64).sum();
        *inv = if squared > MIN_SQUARED_NORM { (1.0 / squared.sqrt()) as f32 } else { MAX_INV_NORM };
        out.iter_mut().zip(row).for_each(|(o, &x)| *o = x * *inv);
    }
}

/// Gradient of [`l2_normalize_rows`] w.r.t. `e`, from its outputs `u` and `inv_norm`:
/// `(du − u (u·du)) · inv_norm`, or `du · inv_norm` where the floor applied (`inv_norm` ≥
/// [`MAX_INV_NORM`]), as TensorFlow differentiates `x · rsqrt(max(Σx², ε))`.
pub fn l2_normalize_backward(u: &[f32], inv_norm: &[f32], grad_u: &[f32], dim: usize) -> Vec<f32> {
    let mut grad_e = vec![0.0; u.len()];
    l2_normalize_backward_into(u, inv_norm, grad_u, dim, &mut grad_e);
    grad_e
}

/// [`l2_normalize_backward`] into `grad_e`.
pub(crate) fn l2_normalize_backward_into(u: &[f32], inv_norm: &[f32], grad_u: &[f32], dim: usize, grad_e: &mut [f32]) {
    assert!(dim > 0 && u.len().is_multiple_of(dim), "l2_normalize_backward: {} values in rows of {dim}", u.len());
    assert!(
        inv_norm.len() == u.len() / dim && grad_u.len() == u.len() && grad_e.len() == u.len(),
        "l2_normalize_backward: lengths"
    );
    let rows = u.chunks_exact(dim).zip(grad_u.chunks_exact(dim)).zip(grad_e.chunks_exact_mut(dim));
    for (((u, du), de), &inv) in rows.zip(inv_norm) {
        let along = if inv >= MAX_INV_NORM { 0.0 } else { dot(u, du) };
        for ((d, &u), &g) in de.iter_mut().zip(u).zip(du) {
            *d = ((g as f64 - u as f64 * along) * inv as f64) as f32;
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// The pair loss of `2 · classes` unit rows of `dim` values (rows `0..C` the anchors of
/// classes `0..C`, rows `C..2C` their positives): `logits[i][j] = anchor_i · positive_j / T`,
/// loss = mean over i of `logsumexp_j logits[i][j] − logits[i][i]`. Returns the loss and its
/// gradient w.r.t. the rows: with `dlogits = (softmax_rows(logits) − I) / C`, anchors get
/// `dlogits · positives / T` and positives `dlogitsᵀ · anchors / T`.
pub fn pair_loss(u: &[f32], classes: usize, dim: usize, temperature: f32) -> (f32, Vec<f32>) {
    let mut grad = vec![0.0; u.len()];
    let loss = pair_loss_into(u, classes, dim, temperature, &mut Vec::new(), &mut grad);
    (loss, grad)
}

/// [`pair_loss`] writing the gradient into `grad`; `dlogits` is scratch.
pub(crate) fn pair_loss_into(
    u: &[f32], classes: usize, dim: usize, temperature: f32, dlogits: &mut Vec<f64>, grad: &mut [f32],
) -> f32 {
    let c = classes;
    assert!(c > 0 && u.len() == 2 * c * dim, "pair_loss: {} values for 2 x {c} rows of {dim}", u.len());
    assert_eq!(grad.len(), u.len(), "pair_loss: gradient length");
    let (anchors, positives) = u.split_at(c * dim);
    let inv_t = 1.0 / temperature as f64;
    dlogits.clear();
    dlogits.resize(c * c, 0.0);
    let mut loss = 0.0f64;
    for (i, a) in anchors.chunks_exact(dim).enumerate() {
        let row = &mut dlogits[i * c..(i + 1) * c];
        for (l, p) in row.iter_mut().zip(positives.chunks_exact(dim)) {
            *l = dot(a, p) * inv_t;
        }
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l));
        let sum: f64 = row.iter().map(|&l| (l - max).exp()).sum();
        loss += max + sum.ln() - row[i];
        // The row becomes (softmax − one-hot) / C.
        row.iter_mut().for_each(|l| *l = (*l - max).exp() / sum / c as f64);
        row[i] -= 1.0 / c as f64;
    }
    let (grad_anchors, grad_positives) = grad.split_at_mut(c * dim);
    for (i, ga) in grad_anchors.chunks_exact_mut(dim).enumerate() {
        for (d, g) in ga.iter_mut().enumerate() {
            let s: f64 = (0..c).map(|j| dlogits[i * c + j] * positives[j * dim + d] as f64).sum();
            *g = (s * inv_t) as f32;
        }
    }
    for (j, gp) in grad_positives.chunks_exact_mut(dim).enumerate() {
        for (d, g) in gp.iter_mut().enumerate() {
            let s: f64 = (0..c).map(|i| dlogits[i * c + j] * anchors[i * dim + d] as f64).sum();
            *g = (s * inv_t) as f32;
        }
    }
    (loss / c as f64) as f32
}
