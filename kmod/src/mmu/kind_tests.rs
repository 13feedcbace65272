//@ stage 13
//! Host tests of the counters that say what a shadow fault fixed on the
//! cache was ([`Mmu::take_kinds`]): each fault below is of one kind, and counts in
//! its counters and no others. The guest's tables are those of the dirty
//! log's tests: pages 0-3 of the table at 0x2000 used and dirty, the
//! others never used.

use super::*;

const USER: u32 = 4;
const PRESENT: u32 = 1;

/// The counters the faults since the last call counted in, and how often.
fn counted(mmu: &mut Mmu) -> Vec<(Counter, u64)> {
    mmu.take_kinds().filter(|&(_, n)| n > 0).collect()
}

#[test]
fn a_fault_where_the_shadow_has_no_entry_is_not_present() {
    let (m, mut mmu, sregs, _) = make("cached shadow");
    mmu.prepare(&sregs, &m).expect("a root");
    // Page 8's group was never used: nothing to prefetch.
    assert_eq!(mmu.page_fault(linear(8), READ, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), [(Counter::PfNotPresent, 1)]);
    assert_eq!(counted(&mut mmu), [], "taken");
}

#[test]
fn the_neighbours_a_fault_fills_are_prefetched_and_not_faults() {
    let (m, mut mmu, sregs, _) = make("cached shadow");
    mmu.prepare(&sregs, &m).expect("a root");
    assert_eq!(mmu.page_fault(linear(0), READ, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), [(Counter::PfNotPresent, 1), (Counter::MmuPrefetch, 3)], "pages 1-3 were used");
    // An invlpg of a page the shadow held fills its translation again.
    poke32(&m, 0x2000 + 4, (0x30 << 12 | P | RW | US | A | D) as u32);
    assert!(mmu.invalidate_page(linear(1), &m));
    assert_eq!(counted(&mut mmu), [(Counter::MmuPrefetch, 1)]);
    assert!(mmu.invalidate_page(linear(9), &m), "never held");
    assert_eq!(counted(&mut mmu), [], "nothing filled");
}

#[test]
fn the_first_write_to_a_clean_page_is_a_write_to_a_clean_entry() {
    let (m, mut mmu, sregs, _) = make("cached shadow");
    mmu.prepare(&sregs, &m).expect("a root");
    assert_eq!(mmu.page_fault(linear(8), READ, &m), PageFault::Fixed);
    counted(&mut mmu);
    assert_eq!(mmu.page_fault(linear(8), WRITE | PRESENT, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), [(Counter::PfWriteProtect, 1), (Counter::PfWriteClean, 1)]);
}

#[test]
fn a_write_to_a_page_the_log_protected_is_write_protect_alone() {
    let (m, mut mmu, sregs, _) = make("cached shadow");
    mmu.prepare(&sregs, &m).expect("a root");
    assert_eq!(mmu.page_fault(linear(8), WRITE, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), [(Counter::PfNotPresent, 1)], "a write where nothing was mapped");
    mmu.write_protect([0x18].into_iter());
    assert_eq!(mmu.page_fault(linear(8), WRITE | PRESENT, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), [(Counter::PfWriteProtect, 1)], "the guest's entry was dirty already");
}

/// A second page table, at 0x3000 for the 4 MiB at 0x80_0000, shadowed
/// (so protected), and mapped at `linear(10)`; and a second page
/// directory, at 0x4000, shadowed at level 2 by a CR3 load, and mapped at
/// `linear(11)`. Returns the MMU running on CR3 0x1000 again.
fn with_tables(name: &str) -> (Mutex<MemSlots>, Mmu, KvmSregs) {
    let (m, mut mmu, sregs, _) = make(name);
    poke32(&m, 0x1000 + 4 * 2, (0x3000 | P | RW | US) as u32);
    poke32(&m, 0x3000, (0x20 << 12 | P | RW | US | A | D) as u32);
    poke32(&m, 0x4000 + 4, (0x2000 | P | RW | US) as u32);
    poke32(&m, 0x2000 + 4 * 10, (0x3 << 12 | P | RW | US | A | D) as u32);
    poke32(&m, 0x2000 + 4 * 11, (0x4 << 12 | P | RW | US | A | D) as u32);
    mmu.prepare(&KvmSregs { cr3: 0x4000, ..sregs }, &m).expect("a root");
    mmu.prepare(&sregs, &m).expect("a root");
    assert_eq!(mmu.page_fault(0x80_0000, READ, &m), PageFault::Fixed);
    for i in [10, 11] {
        assert_eq!(mmu.page_fault(linear(i), READ, &m), PageFault::Fixed);
    }
    counted(&mut mmu);
    (m, mmu, sregs)
}

#[test]
fn a_write_to_a_protected_page_table_that_goes_unsync_is_a_table_write() {
    let (m, mut mmu, _) = with_tables("cached shadow");
    assert_eq!(mmu.page_fault(linear(10), WRITE | PRESENT, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), [(Counter::PfWriteProtect, 1), (Counter::PfWriteTable, 1)]);
}

#[test]
fn a_write_to_a_protected_table_that_is_emulated_is_no_fixed_fault() {
    let (m, mut mmu, _) = with_tables("cached shadow");
    assert_eq!(mmu.page_fault(linear(11), WRITE | PRESENT, &m), PageFault::TableWrite, "a directory: emulated");
    assert_eq!(counted(&mut mmu), []);
    // Nor if the emulator declines it: then it is `pte_write`'s.
    assert_eq!(mmu.table_write_declined(linear(11), WRITE | PRESENT, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), []);
}

#[test]
fn a_user_read_of_a_page_mapped_for_a_supervisor_write_is_read_protect() {
    let (m, mut mmu, sregs, _) = make("cached shadow");
    // CR0.WP = 0, and page 12 read-only for everyone.
    let sregs = KvmSregs { cr0: sregs.cr0 & !(1 << 16), ..sregs };
    poke32(&m, 0x2000 + 4 * 12, (0x1C << 12 | P | US | A | D) as u32);
    mmu.prepare(&sregs, &m).expect("a root");
    assert_eq!(mmu.page_fault(linear(12), WRITE, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), [(Counter::PfNotPresent, 1)]);
    assert_eq!(mmu.page_fault(linear(12), USER | PRESENT, &m), PageFault::Fixed);
    assert_eq!(counted(&mut mmu), [(Counter::PfReadProtect, 1)]);
}

#[test]
fn a_fault_that_leaves_the_shadow_as_it_was_is_spurious() {
    let (m, mut mmu, sregs, _) = make("cached shadow");
    mmu.prepare(&sregs, &m).expect("a root");
    assert_eq!(mmu.page_fault(linear(8), WRITE, &m), PageFault::Fixed);
    counted(&mut mmu);
    // The processor faulted on a translation it held from before.
    for error_code in [WRITE | PRESENT, READ, WRITE] {
        assert_eq!(mmu.page_fault(linear(8), error_code, &m), PageFault::Fixed);
        assert_eq!(counted(&mut mmu), [(Counter::PfSpurious, 1)], "error code {error_code}");
    }
}

#[test]
fn a_fault_in_a_guest_large_page_also_counts_as_such() {
    const PS: u64 = 0x80;
    let (m, mut mmu, mut sregs, _) = make("cached shadow");
    sregs.cr4 |= 0x10; // CR4.PSE
    // A 4 MiB page at linear 0x80_0000 over guest-physical 0, clean.
    poke32(&m, 0x1000 + 4 * 2, (P | RW | US | PS | A) as u32);
    mmu.prepare(&sregs, &m).expect("a root");
    assert_eq!(mmu.page_fault(0x80_5000, READ, &m), PageFault::Fixed);
    // Its group's other seven pages are in the large page, and filled.
    let kinds = [(Counter::PfNotPresent, 1), (Counter::PfLargePage, 1), (Counter::MmuPrefetch, 7)];
    assert_eq!(counted(&mut mmu), kinds);
    // Dirty, the page is another direct shadow page, filled afresh.
    assert_eq!(mmu.page_fault(0x80_5000, WRITE | PRESENT, &m), PageFault::Fixed);
    let kinds = [(Counter::PfWriteProtect, 1), (Counter::PfWriteClean, 1), (Counter::PfLargePage, 1), (Counter::MmuPrefetch, 7)];
    assert_eq!(counted(&mut mmu), kinds, "the walk set the directory entry's D bit");
}

#[test]
fn other_tables_count_no_kind() {
    for name in &KINDS[..2] {
        let (m, mut mmu, sregs, at) = make(name);
        mmu.prepare(&sregs, &m).expect("a root");
        assert_eq!(mmu.page_fault(at, WRITE, &m), PageFault::Fixed, "{name}");
        assert_eq!(counted(&mut mmu), [], "{name}");
    }
}
