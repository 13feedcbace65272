//@ stage 11
//! Host tests of dirty logging in the MMU: which faults mark a frame
//! dirty, and what `Mmu::write_protect` leaves the processor to walk.
//! Guest memory is a logged slot of fake pages; the guest's page tables
//! are written into it by hand.

use super::*;
use crate::abi::{KVM_MEM_LOG_DIRTY_PAGES, KvmMemoryRegion};
use crate::kernel::LockClass;
use crate::memslot::dirty::dirty_pages;

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const A: u64 = 0x20;
const D: u64 = 0x40;
/// Page-fault error codes (SDM Vol. 3A, 4.7).
const READ: u32 = 0;
const WRITE: u32 = 2;

/// 64 logged pages at guest-physical 0.
fn memory() -> Mutex<MemSlots> {
    let mut slots = MemSlots::new();
    let region = KvmMemoryRegion { slot: 1, flags: KVM_MEM_LOG_DIRTY_PAGES, guest_phys_addr: 0, memory_size: 64 << 12 };
    slots.set_region(&region).expect("memory");
    Mutex::new(slots, LockClass::Memory).expect("a lock")
}

/// The frames the log names, cleared as `KVM_GET_DIRTY_LOG` clears them.
fn take(memory: &Mutex<MemSlots>) -> Vec<u64> {
    let (bytes, base) = memory.lock().take_dirty_log(1).expect("slot 1 logs");
    dirty_pages(&bytes).map(|i| base + i as u64).collect()
}

/// Writes a 4-byte guest page-table entry at `gpa`.
fn poke32(memory: &Mutex<MemSlots>, gpa: u64, value: u32) {
    let slots = memory.lock();
    let page = slots.gfn_to_page(gpa >> 12).expect("backed");
    // SAFETY: an aligned offset inside a live fake page.
    unsafe { page.addr().add((gpa & 0xFFF) as usize).cast::<u32>().write(value) };
}

fn peek32(memory: &Mutex<MemSlots>, gpa: u64) -> u32 {
    let slots = memory.lock();
    let page = slots.gfn_to_page(gpa >> 12).expect("backed");
    // SAFETY: as in `poke32`.
    unsafe { page.addr().add((gpa & 0xFFF) as usize).cast::<u32>().read() }
}

/// Entry `index` of the table at host "physical" address `phys`.
fn entry(phys: u64, index: u64) -> u64 {
    // SAFETY: in host tests a physical address is the page's address.
    unsafe { ((phys & 0x000F_FFFF_FFFF_F000) as *const u64).add(index as usize).read() }
}

/// The processor's walk of a PAE-shaped table (the nonpaging map, and
/// the shadow of a 32-bit guest): the leaf entry of `linear`, if present.
fn leaf(root: u64, linear: u64) -> Option<u64> {
    let pdpte = Some(entry(root, (linear >> 30) & 3)).filter(|e| e & P != 0)?;
    let pde = Some(entry(pdpte, (linear >> 21) & 511)).filter(|e| e & P != 0)?;
    Some(entry(pde, (linear >> 12) & 511)).filter(|e| e & P != 0)
}

/// Whether the processor, walking from `root`, may write `linear`.
fn writable(root: u64, linear: u64) -> bool {
    leaf(root, linear).is_some_and(|e| e & RW != 0)
}

fn paging_off() -> KvmSregs {
    KvmSregs { cr0: 0x11, ..KvmSregs::default() }
}

/// 32-bit paging: directory at 0x1000, one page table at 0x2000 for the
/// 4 MiB at 0x40_0000, whose page `i` maps frame `0x10 + i`, writable;
/// pages 0-3 dirty in the guest's view, the others clean.
fn paging_on(memory: &Mutex<MemSlots>) -> KvmSregs {
    poke32(memory, 0x1000 + 4, (0x2000 | P | RW | US) as u32);
    for i in 0..16u64 {
        let dirty = if i < 4 { A | D } else { 0 };
        poke32(memory, 0x2000 + 4 * i, ((0x10 + i) << 12 | P | RW | US | dirty) as u32);
    }
    KvmSregs { cr0: 0x8001_0011, cr3: 0x1000, ..KvmSregs::default() }
}

fn linear(i: u64) -> u64 {
    0x40_0000 + (i << 12)
}

/// The three kinds of table a guest runs on.
const KINDS: [&str; 3] = ["nonpaging", "naive shadow", "cached shadow"];

/// A fresh MMU of kind `name` on fresh logged memory, with its guest's
/// registers and the linear address at which the guest reaches frame
/// 0x10 (and 0x11, 0x12, ... after it).
fn make(name: &str) -> (Mutex<MemSlots>, Mmu, KvmSregs, u64) {
    let m = memory();
    crate::kernel::fake::set_shadow_cache(name == "cached shadow");
    let mmu = Mmu::new().expect("an MMU");
    crate::kernel::fake::set_shadow_cache(true);
    if name == "nonpaging" {
        return (m, mmu, paging_off(), 0x10_000);
    }
    let sregs = paging_on(&m);
    (m, mmu, sregs, linear(0))
}

#[test]
fn making_a_page_writable_marks_it_and_the_tables_whose_bits_the_walk_set() {
    for name in KINDS {
        let (m, mut mmu, sregs, at) = make(name);
        mmu.prepare(&sregs, &m).expect("a root");
        assert_eq!(mmu.page_fault(at + 0x10, WRITE, &m), PageFault::Fixed, "{name}");
        // The walk sets the directory entry's A bit (the table entry has A
        // and D already): the directory's frame is written too.
        let expected: &[u64] = if name == "nonpaging" { &[0x10] } else { &[0x1, 0x10] };
        assert_eq!(take(&m), expected, "{name}: the page, and the table whose bit the walk set");
        // The walk set A in both guest entries; D was set already.
        if name != "nonpaging" {
            assert_eq!(peek32(&m, 0x1004) as u64 & A, A);
            assert_eq!(peek32(&m, 0x2000) as u64 & (A | D), A | D);
        }
    }
}

#[test]
fn a_read_through_a_clean_guest_entry_maps_read_only_and_marks_only_the_table() {
    for name in &KINDS[1..] {
        let (m, mut mmu, sregs, _) = make(name);
        mmu.prepare(&sregs, &m).expect("a root");
        let _ = mmu.page_fault(linear(8), READ, &m);
        let root = mmu.prepare(&sregs, &m).expect("a root").phys;
        assert!(leaf(root, linear(8)).is_some() && !writable(root, linear(8)), "{name}");
        let marked = take(&m);
        assert!(!marked.contains(&0x18), "{name}: a read is no write: {marked:x?}");
        // A write sets the guest's D bit, and only now the page is dirty.
        let _ = mmu.page_fault(linear(8), WRITE | 1, &m);
        assert_eq!(take(&m), [0x2, 0x18], "{name}");
    }
}

mod e11_2 {
    use super::*;

    #[test]
    fn a_slot_without_logging_has_no_log() {
        let mut slots = MemSlots::new();
        let region = KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 4 << 12 };
        slots.set_region(&region).expect("memory");
        assert_eq!(slots.take_dirty_log(0).err(), Some(crate::kernel::Errno::ENOENT));
        assert_eq!(slots.take_dirty_log(2).err(), Some(crate::kernel::Errno::ENOENT), "an empty slot");
        assert_eq!(slots.take_dirty_log(4).err(), Some(crate::kernel::Errno::EINVAL));
        // Turning logging on for the same slot starts a clean log.
        slots.set_region(&KvmMemoryRegion { flags: KVM_MEM_LOG_DIRTY_PAGES, ..region }).expect("memory");
        slots.mark_page_dirty(3);
        slots.mark_page_dirty(4); // beyond the slot
        assert_eq!(slots.take_dirty_log(0), Ok((vec![0x08], 0)));
        // The same shape again keeps the bits; a new size starts afresh.
        slots.mark_page_dirty(1);
        slots.set_region(&KvmMemoryRegion { flags: KVM_MEM_LOG_DIRTY_PAGES, ..region }).expect("memory");
        assert_eq!(slots.take_dirty_log(0).map(|(b, _)| b), Ok(vec![0x02]));
        slots.mark_page_dirty(1);
        slots.set_region(&KvmMemoryRegion { flags: KVM_MEM_LOG_DIRTY_PAGES, memory_size: 12 << 12, ..region }).expect("memory");
        assert_eq!(slots.take_dirty_log(0).map(|(b, _)| b), Ok(vec![0, 0]));
        // Logging off: no log.
        slots.set_region(&region).expect("memory");
        assert_eq!(slots.take_dirty_log(0).err(), Some(crate::kernel::Errno::ENOENT));
    }

    #[test]
    fn moving_a_logged_slot_starts_a_clean_log_and_enomem_keeps_the_old_one() {
        let mut slots = MemSlots::new();
        let region = KvmMemoryRegion { slot: 0, flags: KVM_MEM_LOG_DIRTY_PAGES, guest_phys_addr: 0, memory_size: 4 << 12 };
        slots.set_region(&region).expect("memory");
        slots.mark_page_dirty(2);
        let moved = KvmMemoryRegion { guest_phys_addr: 0x10_0000, ..region };
        slots.set_region(&moved).expect("memory");
        assert_eq!(slots.take_dirty_log(0), Ok((vec![0], 0x100)), "page 2 of the new place was never written");
        slots.mark_page_dirty(0x101);
        crate::kernel::fake::fail_page_alloc_after(Some(0));
        let grown = KvmMemoryRegion { memory_size: 8 << 12, ..moved };
        assert_eq!(slots.set_region(&grown), Err(crate::kernel::Errno::ENOMEM));
        crate::kernel::fake::fail_page_alloc_after(None);
        assert_eq!(slots.take_dirty_log(0), Ok((vec![0x02], 0x100)), "the failed change kept the log and its bit");
    }
}

mod e11_1 {
    use super::*;

    #[test]
    fn after_write_protect_the_next_write_faults_and_is_logged_again() {
        for name in KINDS {
            let (m, mut mmu, sregs, at) = make(name);
            mmu.prepare(&sregs, &m).expect("a root");
            for i in 0..3 {
                assert_eq!(mmu.page_fault(at + (i << 12), WRITE, &m), PageFault::Fixed, "{name}");
            }
            let root = mmu.prepare(&sregs, &m).expect("a root").phys;
            assert!((0..3).all(|i| writable(root, at + (i << 12))), "{name}: writable once written");
            let logged = take(&m);
            mmu.write_protect(logged.iter().copied().filter(|&g| g != 0x12));
            let next = mmu.prepare(&sregs, &m).expect("a root");
            assert!(next.flush_tlb, "{name}: the TLB may hold the writable translations");
            assert!(!writable(next.phys, at), "{name}: frame 0x10 write-protected");
            assert!(!writable(next.phys, at + 0x1000), "{name}: frame 0x11 write-protected");
            if name != "naive shadow" {
                assert!(writable(next.phys, at + 0x2000), "{name}: frame 0x12 was not named, and keeps its right");
                assert!(leaf(next.phys, at).is_some(), "{name}: frame 0x10 still mapped, for reads");
            }
            // The guest writes frame 0x10 again: a fault, and a new mark.
            assert_eq!(take(&m), Vec::<u64>::new());
            let _ = mmu.page_fault(at, WRITE | 1, &m);
            assert_eq!(take(&m), [0x10], "{name}");
            assert!(writable(mmu.prepare(&sregs, &m).expect("a root").phys, at), "{name}");
        }
    }

    /// The nonpaging map is kept while the guest's paging is on, and the
    /// guest runs on it again as soon as it clears CR0.PG (with paging off
    /// the guest's linear addresses are physical, SDM Vol. 3A, 4.1.1, and
    /// the module's nonpaging map gives them). A frame the log reported while
    /// the guest was paging must not stay writable there, or the guest's
    /// next write to it after turning paging off is in no log.
    #[test]
    fn a_frame_reported_while_paging_is_on_is_not_writable_in_the_kept_nonpaging_map() {
        for name in &KINDS[1..] {
            let (m, mut mmu, paging, _) = make(name);
            let (off, gpa) = (paging_off(), 0x10_000);
            mmu.prepare(&off, &m).expect("a root");
            assert_eq!(mmu.page_fault(gpa, WRITE, &m), PageFault::Fixed, "{name}");
            assert!(writable(mmu.prepare(&off, &m).expect("a root").phys, gpa), "{name}: writable once written");
            // The guest turns paging on, and the log is read meanwhile.
            mmu.prepare(&paging, &m).expect("a root");
            let logged = take(&m);
            assert_eq!(logged, [0x10], "{name}");
            mmu.write_protect(logged.into_iter());
            mmu.prepare(&paging, &m).expect("a root");
            // Paging off again: the guest is back on the nonpaging map.
            let back = mmu.prepare(&off, &m).expect("a root").phys;
            assert!(!writable(back, gpa), "{name}: frame 0x10 still writable in the nonpaging map");
            let _ = mmu.page_fault(gpa, WRITE | 1, &m);
            assert_eq!(take(&m), [0x10], "{name}: the write after paging went off is logged");
        }
    }

    #[test]
    fn nothing_to_protect_needs_no_flush() {
        for name in KINDS {
            let (m, mut mmu, sregs, at) = make(name);
            mmu.prepare(&sregs, &m).expect("a root");
            let _ = mmu.page_fault(at, WRITE, &m);
            let root = mmu.prepare(&sregs, &m).expect("a root");
            mmu.write_protect(core::iter::empty());
            let again = mmu.prepare(&sregs, &m).expect("a root");
            assert!(!again.flush_tlb, "{name}");
            assert_eq!(again.phys, root.phys, "{name}");
            assert!(writable(again.phys, at), "{name}");
        }
    }
}
//@ begin 13

/// A fault fills its neighbours (stage 13's prefetch).
mod prefetch {
    use super::*;

    #[test]
    fn a_fault_fills_the_used_neighbours_of_its_group_read_only() {
        let (m, mut mmu, sregs, at) = make("cached shadow");
        let root = mmu.prepare(&sregs, &m).expect("a root");
        take(&m);
        // Pages 0-3 of the table were used (A and D set), 4-15 were not.
        assert_eq!(mmu.page_fault(at + 0x10, READ, &m), PageFault::Fixed);
        for i in 1..4 {
            assert!(leaf(root.phys, linear(i)).is_some(), "page {i}: used, filled with the fault");
            assert!(!writable(root.phys, linear(i)), "page {i}: read-only, although dirty");
        }
        for i in 4..8 {
            assert_eq!(leaf(root.phys, linear(i)), None, "page {i}: never used, not filled");
        }
        assert_eq!(leaf(root.phys, linear(8)), None, "another group");
        assert_eq!(peek32(&m, 0x2000 + 4 * 5) as u64 & A, 0, "no A bit set by the prefetch");
        assert_eq!(take(&m), [0x1, 0x10], "the directory whose A bit the walk set, the faulting page (dirty already, mapped writable), no neighbour");
        // The first write to a prefetched page faults and makes it writable.
        assert_eq!(mmu.page_fault(linear(2), WRITE, &m), PageFault::Fixed);
        assert!(writable(root.phys, linear(2)));
        assert_eq!(take(&m), [0x12]);
    }

    /// Like `memory`, but no dirty log: the MMU of a guest nobody moves.
    fn unlogged() -> Mutex<MemSlots> {
        let mut slots = MemSlots::new();
        let region = KvmMemoryRegion { slot: 1, flags: 0, guest_phys_addr: 0, memory_size: 64 << 12 };
        slots.set_region(&region).expect("memory");
        Mutex::new(slots, LockClass::Memory).expect("a lock")
    }

    fn cached() -> Mmu {
        crate::kernel::fake::set_shadow_cache(true);
        Mmu::new().expect("an MMU")
    }

    /// The frame a shadow entry maps (in host tests a page's physical
    /// address is its address).
    fn maps(m: &Mutex<MemSlots>, entry: u64, gfn: u64) -> bool {
        let page = m.lock().gfn_to_page(gfn).map(|p| p.addr() as u64);
        page == Some(entry & 0x000F_FFFF_FFFF_F000)
    }

    #[test]
    fn without_a_dirty_log_a_neighbour_the_guest_dirtied_is_filled_writable() {
        let m = unlogged();
        let sregs = paging_on(&m);
        // Pages 0 and 1 dirty, 2 and 3 only accessed, 4-7 never used.
        for i in 2..4u64 {
            poke32(&m, 0x2000 + 4 * i, ((0x10 + i) << 12 | P | RW | US | A) as u32);
        }
        let mut mmu = cached();
        let root = mmu.prepare(&sregs, &m).expect("a root");
        assert_eq!(mmu.page_fault(linear(0), READ, &m), PageFault::Fixed);
        assert!(writable(root.phys, linear(1)), "page 1: dirty in the guest's entry, no log to keep");
        for i in 2..4 {
            let e = leaf(root.phys, linear(i)).expect("accessed: filled");
            assert_eq!(e & RW, 0, "page {i}: clean, so the first write must fault to set D");
            assert!(maps(&m, e, 0x10 + i), "page {i}: its own frame");
        }
        assert_eq!(peek32(&m, 0x2000 + 4 * 2) as u64 & D, 0, "the prefetch sets no D bit");
        // The guest's first write to page 2 faults, and sets D.
        assert_eq!(mmu.page_fault(linear(2), WRITE | 1, &m), PageFault::Fixed);
        assert_eq!(peek32(&m, 0x2000 + 4 * 2) as u64 & D, D);
        assert!(writable(root.phys, linear(2)));
    }

    #[test]
    fn invlpg_of_a_changed_entry_fills_the_new_translation_at_once() {
        let m = unlogged();
        let sregs = paging_on(&m);
        let mut mmu = cached();
        let root = mmu.prepare(&sregs, &m).expect("a root");
        assert_eq!(mmu.page_fault(linear(0), READ, &m), PageFault::Fixed);
        assert!(maps(&m, leaf(root.phys, linear(0)).expect("filled"), 0x10));
        // The guest moves page 0 to frame 0x30, empties page 1, and
        // invalidates both, and page 12, which the shadow never held.
        poke32(&m, 0x2000, (0x30 << 12 | P | RW | US | A | D) as u32);
        poke32(&m, 0x2000 + 4, 0);
        for i in [0, 1, 12] {
            assert!(mmu.invalidate_page(linear(i), &m), "page {i}: the tables above are in sync");
        }
        let moved = leaf(root.phys, linear(0)).expect("the new translation, filled by the invlpg");
        assert!(maps(&m, moved, 0x30), "the new frame");
        assert_ne!(moved & RW, 0, "dirty and writable in the guest's entry");
        assert_eq!(leaf(root.phys, linear(1)), None, "not present in the guest: nothing");
        assert_eq!(leaf(root.phys, linear(12)), None, "never held: left to its first fault");
    }

    #[test]
    fn a_fault_in_a_large_page_fills_the_rest_of_its_group() {
        const PS: u64 = 0x80;
        let m = unlogged();
        let mut sregs = paging_on(&m);
        sregs.cr4 |= 0x10; // CR4.PSE
        // A 4 MiB page at linear 0x80_0000 over guest-physical 0, dirty.
        poke32(&m, 0x1000 + 4 * 2, (P | RW | US | PS | A | D) as u32);
        let mut mmu = cached();
        let root = mmu.prepare(&sregs, &m).expect("a root");
        let at = |frame: u64| 0x80_0000 + (frame << 12);
        assert_eq!(mmu.page_fault(at(0x23), READ, &m), PageFault::Fixed);
        for frame in 0x20..0x28 {
            let e = leaf(root.phys, at(frame)).expect("in the fault's group");
            assert!(maps(&m, e, frame), "frame {frame:#x}");
            assert_ne!(e & RW, 0, "frame {frame:#x}: the large page is dirty");
        }
        assert_eq!(leaf(root.phys, at(0x28)), None, "another group");
        assert_eq!(leaf(root.phys, at(0x1f)), None, "another group");
        // Frame 0x1 is the guest's page directory, which the shadow
        // protects: never filled writable, although the large page over
        // it is dirty.
        assert_eq!(mmu.page_fault(at(0x5), READ, &m), PageFault::Fixed);
        let table = leaf(root.phys, at(0x1)).expect("in the group of frame 5");
        assert_eq!(table & RW, 0, "a protected guest table stays read-only");
    }
}
//@ end
//@ begin 13

/// The kinds of the shadow faults fixed on the cache.
#[path = "kind_tests.rs"]
mod kinds;
//@ end
