//! The fuzzer's only source of randomness: SplitMix64, seeded from the
//! command line, so that a seed replays the same decisions.

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", 2014): one 64-bit state, a good 64-bit output per step.
#[derive(Clone, Debug)]
pub struct Rng(u64);

/// The step of SplitMix64, also used to derive one seed from another.
pub fn mix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0.wrapping_sub(0x9E37_79B9_7F4A_7C15))
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A generator for a thread or a child, independent of this one.
    pub fn split(&mut self) -> Rng {
        Rng(mix(self.next()))
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// A 64-bit value that is often on a boundary: 0, 1, all ones, a sign
    /// bit, a page edge, the edge of canonical addresses; else random.
    pub fn boundary_u64(&mut self) -> u64 {
        const EDGES: [u64; 14] = [
            0,
            1,
            u64::MAX,
            u64::MAX - 1,
            0x7FFF_FFFF,
            0x8000_0000,
            0xFFFF_FFFF,
            0x1_0000_0000,
            0xFFF,
            0x1000,
            0x7FFF_FFFF_FFFF,
            0xFFFF_8000_0000_0000,
            0x8000_0000_0000_0000,
            0x7FFF_FFFF_FFFF_FFFF,
        ];
        match self.below(4) {
            0 => self.pick(&EDGES),
            1 => self.pick(&EDGES).wrapping_add(self.range(0, 16)).wrapping_sub(8),
            2 => self.below(0x1_0000),
            _ => self.next(),
        }
    }

    /// A 32-bit value, often on a boundary.
    pub fn boundary_u32(&mut self) -> u32 {
        match self.below(3) {
            0 => self.pick(&[0, 1, 2, 3, 4, 5, 0xFF, 0x100, 0x7FFF_FFFF, 0x8000_0000, u32::MAX]),
            1 => self.below(8) as u32,
            _ => self.next() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_numbers() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..100).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43).next(), xs[0]);
    }

    #[test]
    fn splitmix64_matches_its_reference_output() {
        // The first outputs of the reference implementation seeded with 0.
        let mut r = Rng::new(0);
        assert_eq!(r.next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn ranges_stay_in_bounds_and_reach_both_ends() {
        let mut r = Rng::new(7);
        let xs: Vec<u64> = (0..1000).map(|_| r.range(3, 6)).collect();
        assert!(xs.iter().all(|&x| (3..=6).contains(&x)));
        assert!(xs.contains(&3) && xs.contains(&6));
    }
}
