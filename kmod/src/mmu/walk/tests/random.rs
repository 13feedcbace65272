//@ stage 8
//! Random page tables in made-up guest memory, on which the walker and the
//! [reference](super::reference) must agree: the translation or the error
//! code, and every accessed and dirty bit written, in order.
//!
//! The memory is made lazily: an entry nobody wrote is a function of the
//! case's seed and its address, so both walks read the same tables without
//! anyone storing them. Entries mostly point at tables inside the 16 pages
//! of memory, sometimes just past them or anywhere at all, and any bit of
//! any entry may be set, reserved ones included; the tests check that every
//! bit was seen. `RKVM_WALK_CASES` sets the number of cases per format
//! (30,000 by default), `RKVM_WALK_SEED` the seed.

use super::super::*;
use super::reference;
use super::walk_unchecked;
use std::cell::Cell;
use std::collections::BTreeMap;

/// The pages of guest memory, from gpa 0.
const PAGES: u64 = 16;

fn cases() -> u64 {
    std::env::var("RKVM_WALK_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(30_000)
}

fn seed() -> u64 {
    std::env::var("RKVM_WALK_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(0x2006_1210)
}

/// SplitMix64's finalizer: spreads a seed over all 64 bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True once in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// A paging-structure entry: present 7 times in 8, PS once in 4, XD once
/// in 4; its address a table in memory, past it, a single bit (which finds
/// the edges of reserved fields) or anything; sometimes bits 62:52 and one
/// more bit anywhere.
fn random_entry(r: &mut Rng) -> u64 {
    let address = match r.below(8) {
        0..=4 => r.below(PAGES) << 12,
        5 => (PAGES + r.below(PAGES)) << 12,
        6 => 1 << (12 + r.below(52)),
        _ => (r.next() >> r.below(64)) & !0xFFF,
    };
    let mut entry = address | (r.next() & 0xF7E);
    if !r.one_in(8) {
        entry |= 1;
    }
    if r.one_in(4) {
        entry |= 0x80;
    }
    if r.one_in(4) {
        entry |= 1 << 63;
    }
    if r.one_in(8) {
        entry |= r.next() & 0x7FF0_0000_0000_0000;
    }
    if r.one_in(8) {
        entry ^= 1 << (1 + r.below(62));
    }
    entry
}

/// Guest memory whose every unwritten entry is [`random_entry`].
#[derive(Clone)]
struct RandomMemory {
    seed: u64,
    written: BTreeMap<u64, u64>,
    log: Vec<(u64, u64)>,
    /// Every bit set in some entry the walk read.
    seen: Cell<u64>,
}

impl RandomMemory {
    fn new(seed: u64) -> RandomMemory {
        RandomMemory { seed, written: BTreeMap::new(), log: Vec::new(), seen: Cell::new(0) }
    }

    fn inside(gpa: u64, size: EntrySize) -> bool {
        gpa.checked_add(size.bytes()).is_some_and(|end| end <= PAGES << 12)
    }
}

impl GuestTables for RandomMemory {
    fn read(&self, gpa: u64, size: EntrySize) -> Option<u64> {
        if !Self::inside(gpa, size) {
            return None;
        }
        let entry =
            self.written.get(&gpa).copied().unwrap_or_else(|| random_entry(&mut Rng::new(self.seed ^ mix(gpa))));
        let value = if size == EntrySize::Four { entry & 0xFFFF_FFFF } else { entry };
        self.seen.set(self.seen.get() | value);
        Some(value)
    }

    fn write(&mut self, gpa: u64, size: EntrySize, value: u64) -> bool {
        if !Self::inside(gpa, size) {
            return false;
        }
        self.written.insert(gpa, value);
        self.log.push((gpa, value));
        true
    }
}

/// One random walk: its state, address, access and whether to update.
#[derive(Debug)]
struct Case {
    state: PagingState,
    linear: u64,
    access: Access,
    update: bool,
}

fn random_case(mode: PagingMode, r: &mut Rng) -> Case {
    let maxphyaddr = if mode == PagingMode::Bits32 { 32 + r.below(21) } else { 36 + r.below(17) };
    let mut cr3 = r.below(PAGES) << 12 | (r.next() & 0xFFF);
    if r.one_in(4) {
        cr3 |= if mode == PagingMode::Long { 1 << 63 } else { r.next() << 32 };
    }
    let pdpte = |r: &mut Rng| match r.below(8) {
        0 => r.next() & !1,
        _ => r.below(PAGES + 2) << 12 | (r.next() & 0xE18) | 1,
    };
    let state = PagingState {
        mode,
        cr3,
        wp: r.one_in(2),
        pse: r.one_in(2),
        nxe: r.one_in(2),
        gbpages: r.one_in(2),
        maxphyaddr: maxphyaddr as u8,
        pdptes: [pdpte(r), pdpte(r), pdpte(r), pdpte(r)],
    };
    let kind = r.below(3);
    let access = Access { write: kind == 1, user: r.one_in(2), fetch: kind == 2 };
    Case { state, linear: r.next(), access, update: !r.one_in(4) }
}

/// What the random walks of one format did, to show they covered it.
#[derive(Default)]
struct Tally {
    page_sizes: BTreeMap<u64, u64>,
    not_present: u64,
    reserved: u64,
    denied: u64,
    unbacked: u64,
    dirty_written: u64,
    seen: u64,
}

impl Tally {
    fn add(&mut self, result: &Result<Translation, WalkError>, mem: &RandomMemory) {
        match *result {
            Ok(t) => *self.page_sizes.entry(t.page_size).or_default() += 1,
            Err(WalkError::Fault { error_code }) if error_code & pfec::RSVD != 0 => self.reserved += 1,
            Err(WalkError::Fault { error_code }) if error_code & pfec::P != 0 => self.denied += 1,
            Err(WalkError::Fault { .. }) => self.not_present += 1,
            Err(WalkError::Unbacked { .. }) => self.unbacked += 1,
        }
        self.dirty_written += mem.log.iter().filter(|(_, v)| v & 0x40 != 0).count() as u64;
        self.seen |= mem.seen.get();
    }

    /// Every outcome happened, every page size was mapped and every bit
    /// of an entry was read set somewhere.
    fn assert_covers(&self, sizes: &[u64], entry_bits: u64, checked: bool) {
        let counts = (self.not_present, self.reserved, self.unbacked, self.dirty_written);
        assert!(
            counts.0 > 0 && counts.1 > 0 && counts.2 > 0 && counts.3 > 0,
            "not present, reserved, unbacked, dirty: {counts:?}"
        );
        assert_eq!(self.denied > 0, checked, "denied accesses: {}", self.denied);
        for size in sizes {
            assert!(self.page_sizes.get(size).is_some_and(|&n| n > 0), "no {size:#x} page in {:?}", self.page_sizes);
        }
        assert_eq!(self.seen, entry_bits, "bits never set: {:#x}", entry_bits & !self.seen);
    }
}

/// Walks `cases()` random cases of `mode` with the walker and the
/// reference, with or without the permission check; both must agree.
fn compare(mode: PagingMode, checked: bool) -> Tally {
    let mut tally = Tally::default();
    for i in 0..cases() {
        let mut r = Rng::new(seed() ^ mix(i ^ (mode as u64) << 56));
        let c = random_case(mode, &mut r);
        let mut mine = RandomMemory::new(r.next());
        let mut theirs = mine.clone();
        let got = match checked {
            true => walk(&c.state, c.linear, c.access, &mut mine, c.update),
            false => walk_unchecked(&c.state, c.linear, c.access, &mut mine, c.update),
        };
        let want = reference::reference(&c.state, c.linear, c.access, &mut theirs, c.update, checked);
        // One base for the case and both results: hex, with its 0x.
        assert!(got == want, "case {i}: {c:#x?}\n got: {got:#x?}\nwant: {want:#x?}");
        assert!(
            mine.log == theirs.log,
            "accessed and dirty bits written, case {i}: {c:#x?}\n got: {:#x?}\nwant: {:#x?}",
            mine.log,
            theirs.log
        );
        tally.add(&got, &mine);
    }
    tally
}

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const MIB4: u64 = 4 << 20;
const GIB1: u64 = 1 << 30;

#[test]
fn descents_match_the_reference_in_32_bit_paging() {
    compare(PagingMode::Bits32, false).assert_covers(&[KIB4, MIB4], 0xFFFF_FFFF, false);
}

#[test]
fn descents_match_the_reference_in_pae_paging() {
    compare(PagingMode::Pae, false).assert_covers(&[KIB4, MIB2], u64::MAX, false);
}

#[test]
fn descents_match_the_reference_in_4_level_paging() {
    compare(PagingMode::Long, false).assert_covers(&[KIB4, MIB2, GIB1], u64::MAX, false);
}

/// A PDPT at a random place: each PDPTE clean, not present, or clean with
/// one bit flipped.
fn random_pdpt(r: &mut Rng, mem: &mut RandomMemory) -> u64 {
    let pdpt = r.below(PAGES + 1) << 12 | (r.next() & 0xFE0);
    for i in 0..4 {
        let clean = r.below(PAGES) << 12 | (r.next() & 0xE18) | 1;
        let pdpte = match r.below(4) {
            0 => r.next() & !1,
            1 => clean ^ 1 << r.below(64),
            _ => clean,
        };
        mem.written.insert(pdpt + 8 * i, pdpte);
    }
    pdpt | r.next() << 32
}

#[test]
fn pdpte_loads_match_the_reference() {
    let (mut loaded, mut reserved, mut unbacked) = (0, 0, 0);
    for i in 0..cases() {
        let mut r = Rng::new(seed() ^ mix(i ^ 0xDD << 56));
        let mut mem = RandomMemory::new(r.next());
        let cr3 = random_pdpt(&mut r, &mut mem);
        let maxphyaddr = 36 + r.below(17) as u8;
        let got = load_pdptes(cr3, maxphyaddr, &mem);
        assert_eq!(got, reference::pdptes(cr3, maxphyaddr, &mem), "case {i}: cr3 {cr3:#x}, maxphyaddr {maxphyaddr}");
        match got {
            Ok(_) => loaded += 1,
            Err(PdpteError::Reserved { .. }) => reserved += 1,
            Err(PdpteError::Unbacked { .. }) => unbacked += 1,
        }
    }
    assert!(loaded > 0 && reserved > 0 && unbacked > 0, "{loaded} loaded, {reserved} reserved, {unbacked} unbacked");
}

/// Any state at all, however absurd: no panic, a MAXPHYADDR outside 32..=52
/// acts as the bound nearest to it, and no address reaches 2^52.
#[test]
fn any_state_walks_without_panicking() {
    let modes = [PagingMode::Bits32, PagingMode::Pae, PagingMode::Long];
    for i in 0..cases() {
        let mut r = Rng::new(seed() ^ mix(i ^ 0xAB << 56));
        let mode = modes[r.below(3) as usize];
        let mut c = random_case(mode, &mut r);
        c.state.cr3 = r.next();
        c.state.pdptes = [r.next(), r.next(), r.next(), r.next()];
        c.access = Access { write: r.one_in(2), user: r.one_in(2), fetch: r.one_in(2) };
        let mem = RandomMemory::new(r.next());
        let (absurd, bound) = if r.one_in(2) { (r.below(32) as u8, 32) } else { (53 + r.below(203) as u8, 52) };
        let at = |maxphyaddr: u8| {
            let state = PagingState { maxphyaddr, ..c.state };
            (
                walk_unchecked(&state, c.linear, c.access, &mut mem.clone(), c.update),
                load_pdptes(c.state.cr3, maxphyaddr, &mem),
            )
        };
        let got = at(absurd);
        assert_eq!(got, at(bound), "case {i}: MAXPHYADDR {absurd} is {bound}: {c:x?}");
        if let Ok(t) = got.0 {
            assert!(t.gpa < 1 << 52, "case {i}: {t:x?}");
        }
    }
}

mod e8_1 {
    use super::*;

    #[test]
    fn walks_match_the_reference_in_32_bit_paging() {
        compare(PagingMode::Bits32, true).assert_covers(&[KIB4, MIB4], 0xFFFF_FFFF, true);
    }

    #[test]
    fn walks_match_the_reference_in_pae_paging() {
        compare(PagingMode::Pae, true).assert_covers(&[KIB4, MIB2], u64::MAX, true);
    }

    #[test]
    fn walks_match_the_reference_in_4_level_paging() {
        compare(PagingMode::Long, true).assert_covers(&[KIB4, MIB2, GIB1], u64::MAX, true);
    }
}
