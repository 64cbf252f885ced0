//! The stored reference matrix and the normalisation of its rows.

use crate::ops::matmul::Precision;

/// The stored reference matrix: `[rows, dim]` unit rows, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Embeddings {
    /// Stored as f32.
    F32(Vec<f32>),
    /// Stored as f16: half the memory and file size, scores within about 1e-3.
    F16(Vec<half::f16>),
}

/// Whether an index subtracts a mean row from features before normalising them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Centring {
    /// Features are normalised as they are.
    #[default]
    Off,
    /// The mean of the features the index is built from is stored and subtracted from every
    /// row and every query before normalising. Embeddings of one network tend to share a
    /// dominant direction (mean pairwise cosine near 1); removing it ranks far better, above
    /// all in f16.
    Mean,
}

impl Embeddings {
    /// Values held (rows times width).
    pub fn len(&self) -> usize {
        match self {
            Embeddings::F32(v) => v.len(),
            Embeddings::F16(v) => v.len(),
        }
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The precision the values are stored in.
    pub fn precision(&self) -> Precision {
        match self {
            Embeddings::F32(_) => Precision::F32,
            Embeddings::F16(_) => Precision::F16,
        }
    }

    /// Rows `start..end` of `dim` values, widened to f32.
    pub fn rows_f32(&self, dim: usize, start: usize, end: usize) -> Vec<f32> {
        match self {
            Embeddings::F32(v) => v[start * dim..end * dim].to_vec(),
            Embeddings::F16(v) => v[start * dim..end * dim].iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Stores unit rows in `precision`.
    pub fn from_f32(rows: Vec<f32>, precision: Precision) -> Self {
        match precision {
            Precision::F32 => Embeddings::F32(rows),
            Precision::F16 => Embeddings::F16(rows.into_iter().map(half::f16::from_f32).collect()),
        }
    }

    pub(super) fn extend(&mut self, rows: &[f32]) {
        match self {
            Embeddings::F32(v) => v.extend_from_slice(rows),
            Embeddings::F16(v) => v.extend(rows.iter().map(|&x| half::f16::from_f32(x))),
        }
    }
}

/// `(x - mean) / ||x - mean||` per row, in f64: the normalisation of database rows.
pub fn normalize_rows(features: &[f32], dim: usize, mean: Option<&[f32]>) -> Vec<f32> {
    let rows = features.len() / dim.max(1);
    // Shapes are consistent by construction here.
    crate::cpu::l2_normalize(features, rows, dim, mean).unwrap_or_default()
}

/// Mean row of `features` (f64 accumulation).
pub fn mean_row(features: &[f32], dim: usize) -> Vec<f32> {
    let rows = (features.len() / dim.max(1)).max(1);
    let mut sum = vec![0.0f64; dim];
    for row in features.chunks_exact(dim) {
        sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x as f64);
    }
    sum.into_iter().map(|s| (s / rows as f64) as f32).collect()
}
