//! A small seeded generator (SplitMix64) so weights and test data are reproducible without
//! another dependency.

/// SplitMix64: fast, statistically sound for initialisation and tests, fully determined by
/// its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform() as f32
    }

    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// `len` standard normals scaled by `std`.
    pub fn normals(&mut self, len: usize, std: f32) -> Vec<f32> {
        (0..len).map(|_| self.normal() * std).collect()
    }

    /// `len` standard normals on all cores, for large benchmark data (2G values take most
    /// of a minute on one core): chunk c of 2^20 values comes from its own generator, so
    /// the result depends on `seed` only, not on the thread count.
    pub fn normals_parallel(seed: u64, len: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let mut values = vec![0.0; len];
        values.par_chunks_mut(1 << 20).enumerate().for_each(|(chunk, out)| {
            let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(chunk as u64));
            out.iter_mut().for_each(|x| *x = rng.normal());
        });
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_normals_are_seeded_and_standard() {
        let len = 3 * (1 << 20) + 5; // a partial last chunk
        let a = Rng::normals_parallel(4, len);
        assert_eq!(a, Rng::normals_parallel(4, len));
        assert_ne!(a[..100], Rng::normals_parallel(5, len)[..100]);
        // Chunks are not copies of each other.
        assert_ne!(a[..100], a[1 << 20..(1 << 20) + 100]);
        let mean = a.iter().map(|&x| f64::from(x)).sum::<f64>() / len as f64;
        let var = a.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / len as f64;
        assert!(mean.abs() < 2e-3 && (var - 1.0).abs() < 3e-3, "mean {mean} variance {var}");
    }
}
