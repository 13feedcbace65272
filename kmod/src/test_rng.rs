//@ stage 1
//! Random inputs for the host tests that check an exercise's rule in
//! general, against a reference written another way: xorshift64* from a
//! fixed seed per test, so that a failure repeats.

/// xorshift64*.
pub struct Rng(u64);

impl Rng {
    /// A generator for one test; `stream` keeps tests apart.
    pub fn new(stream: u64) -> Rng {
        // SplitMix64's finalizer spreads the stream over all 64 bits.
        let mut x = stream.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((x ^ (x >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True once in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}
