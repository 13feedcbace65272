//@ stage 10
//! The random numbers of the tests: a fixed seed, so that a failure
//! repeats, and counts that an environment variable raises.
//! `RKVM_EMU_CASES` replaces the default count of every random test: the
//! number of byte sequences given to the decoder, and the number of
//! operand pairs per instruction and operand size compared with the host.
//! `RKVM_EMU_SEED` replaces the seed.

/// The number of cases: `RKVM_EMU_CASES` if set, else `default`.
pub fn cases(default: u64) -> u64 {
    std::env::var("RKVM_EMU_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

pub fn seed() -> u64 {
    std::env::var("RKVM_EMU_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(0x2006_1210)
}

/// SplitMix64's finalizer: spreads a seed over all 64 bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// xorshift64*.
pub struct Rng(u64);

impl Rng {
    /// A generator for one test: `stream` keeps tests apart.
    pub fn new(stream: u64) -> Rng {
        Rng(mix(seed() ^ mix(stream)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An operand value: uniform half the time, else one near an edge
    /// where carries, borrows and overflows happen (0, 1, the sign bit,
    /// all ones, a nibble's edge), maybe nudged by one.
    pub fn operand(&mut self) -> u64 {
        if self.one_in(2) {
            return self.next();
        }
        let edges = [0, 1, 0x0F, 0x10, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
            0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, u64::MAX];
        let mut value = self.pick(&edges);
        match self.below(4) {
            0 => value = value.wrapping_add(1),
            1 => value = value.wrapping_sub(1),
            _ => {}
        }
        if self.one_in(4) {
            value ^= self.next() & 0xF0;
        }
        value
    }
}
