//@ stage 8
//! Tests of the walk: hand-made tables for each format (here), a plain
//! reference walk per format ([`reference`]), and random tables on which
//! the two must agree ([`random`]).
//!
//! Only the tests in the `e8_1` modules reach [`check_access`], the
//! exercise. The others stop before it (faults found on the way down) or
//! use [`walk_unchecked`]: the walk without its permission check.

use super::*;

mod random;
mod reference;

// Entry bits, written out again rather than taken from the walker.
const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

const READ: Access = Access { write: false, user: false, fetch: false };
const WRITE: Access = Access { write: true, user: false, fetch: false };
const FETCH: Access = Access { write: false, user: false, fetch: true };
const USER_READ: Access = Access { write: false, user: true, fetch: false };
const USER_WRITE: Access = Access { write: true, user: true, fetch: false };
const USER_FETCH: Access = Access { write: false, user: true, fetch: true };

const KIB4: u64 = 4 << 10;
const MIB2: u64 = 2 << 20;
const MIB4: u64 = 4 << 20;
const GIB1: u64 = 1 << 30;

/// Guest memory for hand-made tables: zeroed pages from gpa 0, every
/// write logged.
struct Memory {
    bytes: Vec<u8>,
    writes: Vec<(u64, u64)>,
    read_only: bool,
}

impl Memory {
    fn new(pages: usize) -> Memory {
        Memory { bytes: vec![0; pages * 4096], writes: Vec::new(), read_only: false }
    }

    fn range(&self, gpa: u64, size: EntrySize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(gpa).ok()?;
        let end = start.checked_add(size.bytes() as usize)?;
        (end <= self.bytes.len()).then_some(start..end)
    }

    fn put(&mut self, gpa: u64, size: EntrySize, value: u64) {
        let range = self.range(gpa, size).expect("inside the test's memory");
        let len = range.len();
        self.bytes[range].copy_from_slice(&value.to_le_bytes()[..len]);
    }

    fn put32(&mut self, gpa: u64, value: u64) {
        self.put(gpa, EntrySize::Four, value);
    }

    fn put64(&mut self, gpa: u64, value: u64) {
        self.put(gpa, EntrySize::Eight, value);
    }

    fn get(&self, gpa: u64, size: EntrySize) -> u64 {
        self.read(gpa, size).expect("inside the test's memory")
    }
}

impl GuestTables for Memory {
    fn read(&self, gpa: u64, size: EntrySize) -> Option<u64> {
        let mut value = [0; 8];
        let range = self.range(gpa, size)?;
        value[..range.len()].copy_from_slice(&self.bytes[range]);
        Some(u64::from_le_bytes(value))
    }

    fn write(&mut self, gpa: u64, size: EntrySize, value: u64) -> bool {
        if self.read_only || self.range(gpa, size).is_none() {
            return false;
        }
        self.put(gpa, size, value);
        self.writes.push((gpa, value));
        true
    }
}

/// A state with everything on: CR3 = 0x1000, CR0.WP, CR4.PSE, EFER.NXE,
/// 1 GiB pages, MAXPHYADDR = 40.
fn state(mode: PagingMode) -> PagingState {
    PagingState { mode, cr3: 0x1000, wp: true, pse: true, nxe: true, gbpages: true, maxphyaddr: 40, pdptes: [0; 4] }
}

/// [`walk`] without [`check_access`]: what the tests outside `e8_1` use
/// to see translations and accessed and dirty bits.
fn walk_unchecked(
    state: &PagingState,
    linear: u64,
    access: Access,
    mem: &mut dyn GuestTables,
    update: bool,
) -> Result<Translation, WalkError> {
    let mut descent = descend_in_mode(state, linear, access, mem)?;
    if update {
        descent.set_accessed_dirty(access.write, entry_size(state.mode), mem)?;
    }
    Ok(descent.translation(linear))
}

fn fault(error_code: u32) -> Result<Translation, WalkError> {
    Err(WalkError::Fault { error_code })
}

/// The linear address with these 4-level indices and offset, sign-extended.
fn linear64(pml4: u64, pdpt: u64, pd: u64, pt: u64, offset: u64) -> u64 {
    let linear = pml4 << 39 | pdpt << 30 | pd << 21 | pt << 12 | offset;
    if linear & 1 << 47 != 0 { linear | 0xFFFF_0000_0000_0000 } else { linear }
}

/// 4-level tables for `linear64(1, 2, 3, 4, _)`: PML4 at 0x1000, PDPT at
/// 0x2000, page directory at 0x3000, page table at 0x4000, all entries
/// present, writable and user; the PTE maps `page`.
fn tables64(m: &mut Memory, page: u64) {
    m.put64(0x1000 + 8, 0x2000 | P | RW | US);
    m.put64(0x2000 + 2 * 8, 0x3000 | P | RW | US);
    m.put64(0x3000 + 3 * 8, 0x4000 | P | RW | US);
    m.put64(0x4000 + 4 * 8, page | P | RW | US);
}

#[test]
fn bits32_maps_4k_pages_from_the_low_32_bits_of_the_address() {
    let mut m = Memory::new(4);
    let s = state(PagingMode::Bits32);
    m.put32(0x1000 + 4, 0x2000 | P | US);
    // G, PAT and the available bits: nothing is reserved in a 4 KiB entry.
    m.put32(0x2000 + 4, 0xABCD_E000 | P | RW | US | 0xF80);
    let t = walk_unchecked(&s, 0xFFFF_FFFF_0040_1123, READ, &mut m, false).expect("mapped");
    assert_eq!((t.gpa, t.page_size, t.leaf_gpa), (0xABCD_E123, KIB4, 0x2004));
    assert_eq!((t.writable, t.user, t.executable, t.dirty), (false, true, true, false), "the PDE is read-only");
    let pde = GuestEntry { gpa: 0x1004, value: 0x2000 | P | US };
    assert_eq!(
        t.entries,
        [Some(GuestEntry { gpa: 0x2004, value: 0xABCD_E000 | P | RW | US | 0xF80 }), Some(pde), None, None]
    );
}

#[test]
fn bits32_4m_pages_need_cr4_pse_and_take_address_bits_39_32_from_bits_20_13() {
    let mut m = Memory::new(4);
    let mut s = state(PagingMode::Bits32);
    s.maxphyaddr = 36;
    let linear = 0x00C1_2345; // PDE 3, offset 0x12345 in the 4 MiB page
    m.put32(0x1000 + 3 * 4, 0x0C00_0000 | 0x5 << 13 | P | PS | 0x1000);
    let t = walk_unchecked(&s, linear, READ, &mut m, false).expect("mapped");
    assert_eq!((t.gpa, t.page_size, t.leaf_gpa), (0x5_0C01_2345, MIB4, 0x100C));
    assert_eq!(t.entries[0], None);
    s.pse = false;
    let as_table = 0x0C00_B000 + 0x12 * 4; // bits 12, 13 and 15 now address a table
    assert_eq!(walk_unchecked(&s, linear, READ, &mut m, false), Err(WalkError::Unbacked { gpa: as_table }));
}

#[test]
fn bits32_4m_pages_reserve_bit_21_and_address_bits_above_maxphyaddr() {
    let mut m = Memory::new(4);
    let mut s = state(PagingMode::Bits32);
    m.put32(0x1000, 0x0040_0000 | 1 << 17 | P | PS); // address bit 36
    s.maxphyaddr = 36;
    assert_eq!(walk(&s, 0x1234, USER_FETCH, &mut m, true), fault(pfec::P | pfec::RSVD | pfec::U));
    s.maxphyaddr = 52; // 32-bit paging stops at 40 bits
    let t = walk_unchecked(&s, 0x1234, READ, &mut m, false).expect("bit 36 exists");
    assert_eq!(t.gpa, 0x10_0040_1234);
    m.put32(0x1000, 0x0040_0000 | 1 << 21 | P | PS);
    assert_eq!(walk(&s, 0x1234, WRITE, &mut m, true), fault(pfec::P | pfec::RSVD | pfec::W));
    s.pse = false; // bit 21 is then an address bit of a page table
    assert_eq!(walk(&s, 0x1234, READ, &mut m, true), Err(WalkError::Unbacked { gpa: 0x0060_0004 }));
    assert!(m.writes.is_empty());
}

#[test]
fn bits32_faults_carry_w_and_u_but_never_i_d() {
    let mut m = Memory::new(4);
    let s = state(PagingMode::Bits32);
    assert_eq!(walk(&s, 0x1000, USER_WRITE, &mut m, true), fault(pfec::W | pfec::U), "no PDE");
    assert_eq!(walk(&s, 0x1000, FETCH, &mut m, true), fault(0), "EFER.NXE does not matter");
    m.put32(0x1000, 0x2000 | P | RW | US);
    m.put32(0x2004, 0x5000 | RW | US | A | D);
    assert_eq!(walk(&s, 0x1000, USER_FETCH, &mut m, true), fault(pfec::U), "no PTE");
    assert!(m.writes.is_empty(), "a fault sets no accessed bit");
}

#[test]
fn pae_starts_from_the_pdpte_registers_and_maps_4k_and_2m_pages() {
    let mut m = Memory::new(8);
    let mut s = state(PagingMode::Pae);
    s.cr3 = 0x7000; // not read: the walk starts from the registers
    s.pdptes[2] = 0x3000 | P;
    let base = 0x8000_0000 | 5 << 21;
    m.put64(0x3000 + 5 * 8, 0x4000 | P | RW | US);
    m.put64(0x4000 + 7 * 8, 0xF_1234_5000 | P | RW | XD);
    let t = walk_unchecked(&s, 0xFFFF_FFFF_0000_0000 | base | 7 << 12 | 0x456, READ, &mut m, false).expect("4 KiB");
    assert_eq!((t.gpa, t.page_size, t.leaf_gpa), (0xF_1234_5456, KIB4, 0x4038));
    assert_eq!((t.writable, t.user, t.executable), (true, false, false));
    assert_eq!((t.entries[2], t.entries[3]), (None, None), "PDPTEs are registers");
    m.put64(0x3000 + 6 * 8, 0x1_2340_0000 | P | PS | 0x1000); // bit 12 is PAT
    let t = walk_unchecked(&s, 0x8000_0000 | 6 << 21 | 0x1_2345, READ, &mut m, false).expect("2 MiB");
    assert_eq!((t.gpa, t.page_size, t.leaf_gpa, t.entries[0]), (0x1_2341_2345, MIB2, 0x3030, None));
}

#[test]
fn pae_reserves_bits_62_to_maxphyaddr_xd_without_nxe_and_bits_20_13_of_2m_pages() {
    let mut m = Memory::new(8);
    let mut s = state(PagingMode::Pae);
    s.pdptes[0] = 0x3000 | P;
    assert_eq!(walk(&s, 1 << 30, USER_FETCH, &mut m, true), fault(pfec::U | pfec::ID), "PDPTE 1 is not present");
    m.put64(0x3000, 0x4000 | P | RW | US | 1 << 62);
    assert_eq!(walk(&s, 0, READ, &mut m, true), fault(pfec::P | pfec::RSVD));
    m.put64(0x3000, 0x4000 | P | RW | US | 1 << 40);
    assert_eq!(walk(&s, 0, READ, &mut m, true), fault(pfec::P | pfec::RSVD));
    s.maxphyaddr = 41;
    assert_eq!(walk(&s, 0, READ, &mut m, true), Err(WalkError::Unbacked { gpa: 1 << 40 | 0x4000 }));
    m.put64(0x3000, 0x4000 | P | RW | US | XD);
    m.put64(0x4000, 0x5000 | P | RW | US);
    s.nxe = false;
    assert_eq!(walk(&s, 0, USER_FETCH, &mut m, true), fault(pfec::P | pfec::RSVD | pfec::U), "no I/D without NXE");
    m.put64(0x3000, 0x20_0000 | 1 << 20 | P | PS);
    assert_eq!(walk(&s, 0, WRITE, &mut m, true), fault(pfec::P | pfec::RSVD | pfec::W));
    assert!(m.writes.is_empty());
}

#[test]
fn long_mode_maps_4k_2m_and_1g_pages_and_ignores_bits_62_52() {
    let mut m = Memory::new(8);
    let mut s = state(PagingMode::Long);
    s.cr3 = 0x1000 | 0x18 | 1 << 63; // PWT, PCD and the PCID no-flush bit
    s.maxphyaddr = 52;
    tables64(&mut m, 0xF_FFFF_FFFF_F000 | 0x7FF << 52);
    let t = walk_unchecked(&s, linear64(1, 2, 3, 4, 0x789), READ, &mut m, false).expect("4 KiB");
    assert_eq!((t.gpa, t.page_size, t.leaf_gpa), (0xF_FFFF_FFFF_F789, KIB4, 0x4020));
    assert!(t.entries.iter().all(Option::is_some));
    m.put64(0x3000 + 3 * 8, 0x8_0020_0000 | P | PS | 0x1000);
    let t = walk_unchecked(&s, linear64(1, 2, 3, 4, 0x789), READ, &mut m, false).expect("2 MiB");
    assert_eq!((t.gpa, t.page_size, t.leaf_gpa, t.entries[0]), (0x8_0020_4789, MIB2, 0x3018, None));
    m.put64(0x2000 + 2 * 8, 0x40_4000_0000 | P | PS | 0x1000);
    let t = walk_unchecked(&s, linear64(1, 2, 3, 4, 0x789), READ, &mut m, false).expect("1 GiB");
    assert_eq!((t.gpa, t.page_size, t.leaf_gpa), (0x40_4060_4789, GIB1, 0x2010));
    assert_eq!(&t.entries[..2], &[None, None]);
}

#[test]
fn long_mode_reserved_bits_fault_before_anything_else() {
    let mut m = Memory::new(8);
    let mut s = state(PagingMode::Long);
    let rsvd = |access| fault(pfec::P | pfec::RSVD | access_code(access, &state(PagingMode::Long)));
    let linear = linear64(1, 2, 3, 4, 0);
    tables64(&mut m, 0x5000);
    let pdpte = 0x2000 + 2 * 8;
    let cases = [
        (0x1008, 0x2000 | P | PS, "PS in a PML4E"),
        (0x1008, 0x2000 | P | 1 << 40, "bit 40 with MAXPHYADDR 40"),
        (0x1008, 0x2000 | P | 1 << 51, "bit 51"),
        (pdpte, 0x4000_0000 | P | PS | 1 << 29, "bit 29 of a 1 GiB page"),
        (pdpte, 0x4000_0000 | P | PS | 1 << 13, "bit 13 of a 1 GiB page"),
        (0x3018, 0x20_0000 | P | PS | 1 << 20, "bit 20 of a 2 MiB page"),
    ];
    for (gpa, entry, what) in cases {
        let mut m = Memory::new(8);
        tables64(&mut m, 0x5000);
        m.put64(gpa, entry);
        assert_eq!(walk(&s, linear, USER_FETCH, &mut m, true), rsvd(USER_FETCH), "{what}");
    }
    m.put64(pdpte, 0x4000_0000 | P | PS);
    s.gbpages = false;
    assert_eq!(walk(&s, linear, WRITE, &mut m, true), fault(pfec::P | pfec::RSVD | pfec::W), "no 1 GiB pages");
    m.put64(0x4020, 0x5000 | P | XD);
    s.nxe = false;
    m.put64(pdpte, 0x3000 | P | RW | US);
    assert_eq!(walk(&s, linear, FETCH, &mut m, true), fault(pfec::P | pfec::RSVD), "XD without NXE");
    assert!(m.writes.is_empty());
}

#[test]
fn an_entry_outside_guest_memory_is_unbacked() {
    let mut m = Memory::new(2);
    let mut s = state(PagingMode::Long);
    m.put64(0x1008, 0x9000 | P | RW | US);
    assert_eq!(walk(&s, linear64(1, 2, 0, 0, 0), READ, &mut m, true), Err(WalkError::Unbacked { gpa: 0x9010 }));
    s.cr3 = 0x10_0000;
    assert_eq!(walk(&s, 0, READ, &mut m, true), Err(WalkError::Unbacked { gpa: 0x10_0000 }));
}

#[test]
fn a_walk_sets_accessed_in_every_entry_and_dirty_in_the_leaf_on_a_write() {
    let mut m = Memory::new(8);
    let s = state(PagingMode::Long);
    tables64(&mut m, 0x5000);
    let linear = linear64(1, 2, 3, 4, 0);
    let t = walk_unchecked(&s, linear, READ, &mut m, true).expect("mapped");
    let upper = [(0x1008, 0x2000 | P | RW | US | A), (0x2010, 0x3000 | P | RW | US | A)];
    let lower = [(0x3018, 0x4000 | P | RW | US | A), (0x4020, 0x5000 | P | RW | US | A)];
    assert_eq!(m.writes, [upper, lower].concat(), "top down, accessed only");
    assert!(!t.dirty);
    m.writes.clear();
    let t = walk_unchecked(&s, linear, WRITE, &mut m, true).expect("mapped");
    assert_eq!(m.writes, [(0x4020, 0x5000 | P | RW | US | A | D)], "only what changes is written");
    assert_eq!((t.dirty, t.entries[0].map(|e| e.value)), (true, Some(0x5000 | P | RW | US | A | D)));
    m.writes.clear();
    walk_unchecked(&s, linear, WRITE, &mut m, true).expect("mapped");
    assert!(m.writes.is_empty(), "everything already set");
}

#[test]
fn a_large_page_is_the_leaf_that_gets_dirty() {
    let mut m = Memory::new(8);
    let s = state(PagingMode::Pae);
    let s = PagingState { pdptes: [0x3000 | P, 0, 0, 0], ..s };
    m.put64(0x3000, 0x20_0000 | P | RW | PS);
    m.put64(0x3008, 0x4000 | P | RW); // PDE of the next 2 MiB, a table
    m.put64(0x4000, 0x5000 | P | RW);
    walk_unchecked(&s, 0x1234, WRITE, &mut m, true).expect("2 MiB");
    walk_unchecked(&s, 0x20_0000, WRITE, &mut m, true).expect("4 KiB");
    let expected =
        [(0x3000, 0x20_0000 | P | RW | PS | A | D), (0x3008, 0x4000 | P | RW | A), (0x4000, 0x5000 | P | RW | A | D)];
    assert_eq!(m.writes, expected, "the PDPTE registers have no accessed bit");
}

#[test]
fn bits32_writes_back_four_bytes_and_spares_the_neighbours() {
    let mut m = Memory::new(4);
    let s = state(PagingMode::Bits32);
    m.put64(0x1000, 0xFFFF_FFFF_0000_0000 | 0x2000 | P);
    m.put64(0x2000, 0xFFFF_FFFF_0000_0000 | 0x3000 | P | RW);
    let t = walk_unchecked(&s, 0, WRITE, &mut m, true).expect("mapped");
    assert_eq!(m.get(0x1000, EntrySize::Eight), 0xFFFF_FFFF_0000_0000 | 0x2000 | P | A);
    assert_eq!(m.get(0x2000, EntrySize::Eight), 0xFFFF_FFFF_0000_0000 | 0x3000 | P | RW | A | D);
    assert_eq!((t.gpa, t.writable, t.dirty), (0x3000, false, true));
}

#[test]
fn without_update_or_on_a_fault_guest_memory_is_left_alone() {
    let mut m = Memory::new(8);
    let s = state(PagingMode::Long);
    tables64(&mut m, 0x5000);
    let t = walk_unchecked(&s, linear64(1, 2, 3, 4, 0), USER_WRITE, &mut m, false).expect("mapped");
    assert!(m.writes.is_empty());
    assert_eq!((t.dirty, t.entries[0].map(|e| e.value & (A | D))), (false, Some(0)));
    m.put64(0x4020, 0x5000 | RW | US);
    assert_eq!(walk(&s, linear64(1, 2, 3, 4, 0), USER_WRITE, &mut m, true), fault(pfec::U | pfec::W));
    assert!(m.writes.is_empty(), "the PTE is not present: no accessed bit above it either");
}

#[test]
fn an_accessed_bit_that_cannot_be_written_is_unbacked() {
    let mut m = Memory::new(8);
    let s = state(PagingMode::Long);
    tables64(&mut m, 0x5000);
    m.read_only = true;
    let got = walk_unchecked(&s, linear64(1, 2, 3, 4, 0), READ, &mut m, true);
    assert_eq!(got, Err(WalkError::Unbacked { gpa: 0x1008 }));
}

#[test]
fn pdptes_load_from_cr3_bits_31_5() {
    let mut m = Memory::new(2);
    for i in 0..4 {
        m.put64(0x1FE0 + 8 * i, (0x1000 * i) | P | 0x18 | 0xE00); // PWT, PCD, available
    }
    let expected = [P | 0xE18, 0x1000 | P | 0xE18, 0x2000 | P | 0xE18, 0x3000 | P | 0xE18];
    assert_eq!(load_pdptes(0xABCD_0000_0000_1FFF, 36, &m), Ok(expected), "bits 63:32 and 4:0 are not used");
    m.put64(0x1FE8, 0);
    assert_eq!(load_pdptes(0x1FE0, 36, &m), Ok([expected[0], 0, expected[2], expected[3]]));
    assert_eq!(load_pdptes(0x2000, 36, &m), Err(PdpteError::Unbacked { gpa: 0x2000 }));
}

#[test]
fn a_present_pdpte_with_a_reserved_bit_fails_to_load() {
    let reserved = [1, 2, 5, 6, 7, 8, 36, 51, 52, 62, 63];
    for bit in reserved {
        let mut m = Memory::new(2);
        m.put64(0x1010, 0x3000 | P | 1 << bit);
        let got = load_pdptes(0x1000, 36, &m);
        assert_eq!(got, Err(PdpteError::Reserved { index: 2, value: 0x3000 | P | 1 << bit }), "bit {bit}");
        m.put64(0x1010, 0x3000 | 1 << bit);
        assert!(load_pdptes(0x1000, 36, &m).is_ok(), "bit {bit} of a PDPTE that is not present");
    }
    let mut m = Memory::new(2);
    m.put64(0x1000, 1 << 51 | P);
    assert!(load_pdptes(0x1000, 52, &m).is_ok(), "bit 51 is an address bit with MAXPHYADDR 52");
}

mod e8_1 {
    use super::*;

    fn rights(writable: bool, user: bool, executable: bool) -> Rights {
        Rights { writable, user, executable }
    }

    #[test]
    fn a_user_access_needs_u_s_at_every_level() {
        let s = state(PagingMode::Pae);
        let supervisor_page = rights(true, false, true);
        assert_eq!(check_access(supervisor_page, USER_READ, &s), Err(pfec::P | pfec::U));
        assert_eq!(check_access(supervisor_page, USER_WRITE, &s), Err(pfec::P | pfec::W | pfec::U));
        assert_eq!(check_access(supervisor_page, READ, &s), Ok(()));
        assert_eq!(check_access(rights(true, true, true), USER_WRITE, &s), Ok(()));
        let mut m = Memory::new(4);
        let s = state(PagingMode::Bits32);
        m.put32(0x1000, 0x2000 | P | RW);
        m.put32(0x2000, 0x3000 | P | RW | US);
        assert_eq!(walk(&s, 0x10, USER_READ, &mut m, true), fault(pfec::P | pfec::U), "the PDE is supervisor-only");
        assert!(m.writes.is_empty(), "a denied access sets no accessed bit");
        assert_eq!(walk(&s, 0x10, READ, &mut m, true).map(|t| t.gpa), Ok(0x3010));
    }

    #[test]
    fn cr0_wp_decides_whether_the_supervisor_may_write_read_only_pages() {
        let mut s = state(PagingMode::Long);
        let read_only = rights(false, true, true);
        let page = "a read-only page";
        assert_eq!(check_access(read_only, WRITE, &s), Err(pfec::P | pfec::W), "{page}, supervisor write, WP = 1");
        assert_eq!(check_access(read_only, READ, &s), Ok(()), "{page}, supervisor read, WP = 1");
        s.wp = false;
        assert_eq!(check_access(read_only, WRITE, &s), Ok(()), "{page}, supervisor write, WP = 0");
        let user_write = check_access(read_only, USER_WRITE, &s);
        assert_eq!(user_write, Err(pfec::P | pfec::W | pfec::U), "{page}, user write, WP = 0: WP never helps a user");
        let mut m = Memory::new(8);
        tables64(&mut m, 0x5000);
        m.put64(0x3018, 0x4000 | P | US);
        let linear = linear64(1, 2, 3, 4, 8);
        let case = "a walk through a read-only PDE, supervisor write";
        let t = walk(&s, linear, WRITE, &mut m, true).unwrap_or_else(|e| panic!("{case}, WP = 0: {e:?}"));
        assert_eq!((t.gpa, t.writable, t.dirty), (0x5008, false, true), "{case}, WP = 0: (gpa, writable, dirty)");
        s.wp = true;
        assert_eq!(walk(&s, linear, WRITE, &mut m, true), fault(pfec::P | pfec::W), "{case}, WP = 1");
    }

    #[test]
    fn a_fetch_faults_on_an_execute_disabled_page_only_with_nxe() {
        let s = state(PagingMode::Pae);
        assert_eq!(check_access(rights(true, true, false), FETCH, &s), Err(pfec::P | pfec::ID));
        assert_eq!(check_access(rights(true, true, false), USER_FETCH, &s), Err(pfec::P | pfec::U | pfec::ID));
        assert_eq!(check_access(rights(true, true, false), READ, &s), Ok(()));
        assert_eq!(check_access(rights(false, true, true), FETCH, &s), Ok(()), "a fetch is no write");
        assert_eq!(check_access(rights(false, true, true), USER_FETCH, &s), Ok(()));
        assert_eq!(check_access(rights(true, true, true), FETCH, &s), Ok(()), "no SMEP");
        let mut m = Memory::new(8);
        let mut s = PagingState { pdptes: [0x3000 | P, 0, 0, 0], ..s };
        m.put64(0x3000, 0x4000 | P | RW | US | XD);
        m.put64(0x4000, 0x5000 | P | RW | US);
        let t = walk(&s, 0x40, USER_READ, &mut m, true).expect("a read is allowed");
        assert!(!t.executable);
        assert_eq!(walk(&s, 0x40, USER_FETCH, &mut m, true), fault(pfec::P | pfec::U | pfec::ID));
        s.nxe = false;
        assert_eq!(walk(&s, 0x40, USER_FETCH, &mut m, true), fault(pfec::P | pfec::RSVD | pfec::U), "XD is reserved");
    }

    #[test]
    fn i_d_is_reported_only_with_pae_or_4_level_paging_and_nxe() {
        let supervisor_page = rights(true, false, true);
        let mut s = state(PagingMode::Bits32);
        assert_eq!(check_access(supervisor_page, USER_FETCH, &s), Err(pfec::P | pfec::U), "32-bit: never");
        s.mode = PagingMode::Pae;
        assert_eq!(check_access(supervisor_page, USER_FETCH, &s), Err(pfec::P | pfec::U | pfec::ID));
        s.mode = PagingMode::Long;
        assert_eq!(check_access(supervisor_page, USER_FETCH, &s), Err(pfec::P | pfec::U | pfec::ID));
        s.nxe = false;
        assert_eq!(check_access(supervisor_page, USER_FETCH, &s), Err(pfec::P | pfec::U), "NXE off: no I/D");
        assert_eq!(check_access(supervisor_page, USER_READ, &s), Err(pfec::P | pfec::U));
    }

    #[test]
    fn rights_combine_across_every_level() {
        let s = state(PagingMode::Long);
        let linear = linear64(1, 2, 3, 4, 0);
        for gpa in [0x1008, 0x2010, 0x3018, 0x4020] {
            let mut m = Memory::new(8);
            tables64(&mut m, 0x5000);
            let entry = m.get(gpa, EntrySize::Eight);
            m.put64(gpa, entry & !RW);
            assert_eq!(walk(&s, linear, USER_WRITE, &mut m, true), fault(pfec::P | pfec::W | pfec::U), "{gpa:#x}");
            m.put64(gpa, entry & !US);
            assert_eq!(walk(&s, linear, USER_READ, &mut m, true), fault(pfec::P | pfec::U), "{gpa:#x}");
            m.put64(gpa, entry | XD);
            assert_eq!(walk(&s, linear, FETCH, &mut m, true), fault(pfec::P | pfec::ID), "{gpa:#x}");
            assert!(m.writes.is_empty());
            assert!(walk(&s, linear, USER_WRITE, &mut m, true).is_ok());
        }
    }

    #[test]
    fn only_a_walk_that_succeeds_sets_accessed_and_dirty_bits() {
        let mut m = Memory::new(8);
        let s = state(PagingMode::Long);
        tables64(&mut m, 0x5000);
        m.put64(0x4020, 0x5000 | P | US);
        let linear = linear64(1, 2, 3, 4, 0);
        assert_eq!(walk(&s, linear, USER_WRITE, &mut m, true), fault(pfec::P | pfec::W | pfec::U));
        assert!(m.writes.is_empty());
        let t = walk(&s, linear, USER_READ, &mut m, false).expect("mapped");
        assert!(m.writes.is_empty(), "no update asked");
        assert_eq!(t.entries[0].map(|e| e.value), Some(0x5000 | P | US));
        walk(&s, linear, USER_READ, &mut m, true).expect("mapped");
        assert_eq!(m.writes.len(), 4);
        assert_eq!(m.get(0x4020, EntrySize::Eight), 0x5000 | P | US | A, "a read sets no dirty bit");
    }
}
