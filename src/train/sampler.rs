//! Pair sampling from a counter-based generator: the pairs of step `s` are a pure function
//! of (seed, s, class), so the GPU draws them in a kernel with no state carried between
//! steps, a run is reproducible, and the CPU twin draws exactly the same pairs.
//!
//! Everything is 32-bit integer arithmetic that WGSL has (`shaders/train_sample.wgsl`
//! repeats `mix32` and `pair_hash` word for word).

/// A 32-bit finaliser with low bias (Wellons' "lowbias32"): every input bit affects every
/// output bit.
pub(crate) fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The random word for (seed, step, class, slot): slot 0 picks the anchor, slot 1 the
/// positive. Each key is folded in through its own round of [`mix32`].
pub(crate) fn pair_hash(seed: u64, step: u32, class: u32, slot: u32) -> u32 {
    let mut h = mix32(seed as u32 ^ mix32((seed >> 32) as u32));
    h = mix32(step ^ h);
    h = mix32(class ^ h);
    mix32(slot ^ h)
}

/// The anchor and positive of `class` at `step`, as positions within the class
/// (`0..count`, different from each other; `count` ≥ 2). The modulo's bias is below
/// count/2³², negligible for any real class.
pub(crate) fn pair_in_class(seed: u64, step: u32, class: u32, count: u32) -> (u32, u32) {
    let anchor = pair_hash(seed, step, class, 0) % count;
    let positive = (anchor + 1 + pair_hash(seed, step, class, 1) % (count - 1)) % count;
    (anchor, positive)
}

/// The batch of `step` over a class-grouped set: row c is class c's anchor and row C + c
/// its positive, as indices into the grouped images.
pub fn pair_batch(seed: u64, step: u32, class_offsets: &[u32], class_counts: &[u32]) -> Vec<u32> {
    let classes = class_counts.len();
    let mut rows = vec![0; 2 * classes];
    for (c, (&offset, &count)) in class_offsets.iter().zip(class_counts).enumerate() {
        let (anchor, positive) = pair_in_class(seed, step, c as u32, count);
        rows[c] = offset + anchor;
        rows[classes + c] = offset + positive;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_distinct_within_their_class_and_cover_it() {
        let (offsets, counts) = ([0u32, 2, 7], [2u32, 5, 3]);
        let mut seen = [[false; 5]; 3];
        for step in 0..400 {
            let rows = pair_batch(7, step, &offsets, &counts);
            for c in 0..3 {
                let (a, p) = (rows[c], rows[3 + c]);
                assert_ne!(a, p);
                for r in [a, p] {
                    assert!(r >= offsets[c] && r < offsets[c] + counts[c], "step {step} class {c}: {r}");
                    seen[c][(r - offsets[c]) as usize] = true;
                }
            }
        }
        assert!(seen.iter().zip(counts).all(|(s, n)| s[..n as usize].iter().all(|&x| x)));
    }

    #[test]
    fn pairs_depend_on_seed_and_step() {
        let batch = |seed, step| pair_batch(seed, step, &[0, 1000], &[1000, 1000]);
        assert_eq!(batch(1, 5), batch(1, 5));
        assert_ne!(batch(1, 5), batch(1, 6));
        assert_ne!(batch(1, 5), batch(2, 5));
        assert_ne!(batch(1, 5), batch(1 << 32 | 1, 5));
    }

    #[test]
    fn hash_is_pinned() {
        // Values from an independent Python transcription of the formula; the WGSL copy is
        // checked against this function.
        assert_eq!(mix32(0), 0);
        assert_eq!(mix32(1), 0x6889_90c0);
        assert_eq!(pair_hash(0x1234_5678_9abc_def0, 42, 3, 0), 0xacd9_3f19);
        assert_eq!(pair_hash(0x1234_5678_9abc_def0, 42, 3, 1), 0xeae9_8b20);
    }
}
