//@ stage 5
//! The "nonpaging" map, as 2006's `nonpaging_map`: the page table a guest
//! runs on while its own paging is off.
//!
//! Without nested paging, the processor translates every guest address
//! with a page table whose entries hold *host*-physical addresses. A guest
//! with paging off means "linear address = physical address"; the module
//! keeps that promise by running it with paging on (CR0.PG forced, see the
//! backends) on this table, which maps guest-physical page `gfn` to the
//! host page of the memory slot that backs it, and nothing else. Every
//! other address faults, and the fault exits to the module, so a guest
//! reaches only its slots' pages, never host memory.
//!
//! The table is PAE (Intel SDM Vol. 3A, 4.4; AMD APM Vol. 2, 5.3): four
//! levels would need long mode, which a real-mode guest cannot be in, and
//! 32-bit paging holds only 32-bit physical addresses. It covers the
//! 4 GiB a guest without paging can address: one page-directory-pointer
//! table (PDPT) of four entries, four page directories made up front, and
//! page tables made on the first fault in their 2 MiB. Pages are mapped
//! on demand, one fault each, as in 2006.
//!
//! Each mapped page holds a reference ([`PageRef`]): if userspace shrinks
//! or deletes a slot while the guest runs, the page stays alive until the
//! next entry, which sees that the slots changed and unmaps everything
//! (flushing the guest's TLB). A freed page is never reachable.

use super::GuestFetch;
use crate::kernel::{Errno, KResult, Mutex, PAGE_SHIFT, PAGE_SIZE, Page, PageRef};
use crate::memslot::MemSlots;
use alloc::vec::Vec;

// ANCHOR: pte_bits
/// Present.
const PTE_P: u64 = 1 << 0;
/// Writable.
const PTE_RW: u64 = 1 << 1;
/// User: reachable at CPL 3 too.
const PTE_US: u64 = 1 << 2;
/// Accessed and dirty, set up front so the processor never writes them.
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;

/// What a guest page and a page table are mapped with: present, writable,
/// user. A PAE PDPT entry allows only P (its bits 1, 2, 5 and 6 are
/// reserved): [`PDPTE_FLAGS`].
const PTE_FLAGS: u64 = PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D;
const PDE_FLAGS: u64 = PTE_P | PTE_RW | PTE_US | PTE_A;
const PDPTE_FLAGS: u64 = PTE_P;

/// Entries per table: 512 of 8 bytes.
const ENTRIES: usize = 512;
/// Guest pages covered: 4 GiB.
const GFNS: u64 = 1 << 20;
/// Page tables covering them: one per 2 MiB.
const PAGE_TABLES: usize = (GFNS as usize) / ENTRIES;
// ANCHOR_END: pte_bits

// ANCHOR: indices
/// Where gfn `gfn` sits in the table: (page directory, its entry, the page
/// table's entry).
fn indices(gfn: u64) -> (usize, usize, usize) {
    let pte = (gfn & 511) as usize;
    let pde = ((gfn >> 9) & 511) as usize;
    let pdpte = ((gfn >> 18) & 3) as usize;
    (pdpte, pde, pte)
}
// ANCHOR_END: indices

/// One page table and the pages its entries map.
struct PageTable {
    table: Page,
    /// `pages[i]` is what entry `i` maps.
    pages: Vec<Option<PageRef>>,
}

// ANCHOR: nonpaging_mmu
/// A vCPU's nonpaging map.
pub struct NonpagingMmu {
    /// The PDPT, below 4 GiB: CR3 holds it.
    pdpt: Page,
    /// The four page directories.
    directories: [Page; 4],
    /// `tables[i]` covers gfns `i * 512 ..`, if it exists.
    tables: Vec<Option<PageTable>>,
    /// The slots' generation the map was made for.
    generation: u64,
    /// Entries were removed since the last entry.
    needs_flush: bool,
}

impl NonpagingMmu {
    /// An empty map: every guest access faults until its page is mapped.
    pub fn new() -> KResult<NonpagingMmu> {
        let pdpt = Page::alloc_zeroed_below_4g()?;
        let directories = [Page::alloc_zeroed()?, Page::alloc_zeroed()?, Page::alloc_zeroed()?, Page::alloc_zeroed()?];
        for (i, directory) in directories.iter().enumerate() {
            write_entry(&pdpt, i, directory.phys() | PDPTE_FLAGS);
        }
        let mut tables = Vec::new();
        tables.try_reserve_exact(PAGE_TABLES).map_err(|_| Errno::ENOMEM)?;
        tables.resize_with(PAGE_TABLES, || None);
        Ok(NonpagingMmu { pdpt, directories, tables, generation: 0, needs_flush: false })
    }

    /// The host-physical address for CR3.
    pub fn root(&self) -> u64 {
        self.pdpt.phys()
    }
}
// ANCHOR_END: nonpaging_mmu

// ANCHOR: map
impl NonpagingMmu {
    /// A fault at guest-physical `gpa`: maps its page if a slot backs it.
    /// `false` if none does (or memory for a page table is short: the
    /// guest then sees the access fail, the host does not).
    pub fn map(&mut self, gpa: u64, memory: &Mutex<MemSlots>) -> bool {
        let gfn = gpa >> PAGE_SHIFT;
        if gfn >= GFNS {
            return false;
        }
        let slots = memory.lock();
        let Some(page) = slots.gfn_to_page(gfn).map(Page::get) else {
            return false;
        };
        //@ begin 11
        // Mapped writable: from now on the guest may write it unseen.
        slots.mark_page_dirty(gfn);
        //@ end
        drop(slots);
        self.install(gfn, page).is_ok()
    }

    /// Points gfn's entry at `page`, making its page table first if needed.
    fn install(&mut self, gfn: u64, page: PageRef) -> KResult<()> {
        let (pdpte, pde, pte) = indices(gfn);
        let index = (gfn >> 9) as usize;
        let slot = self.tables.get_mut(index).ok_or(Errno::EINVAL)?;
        if slot.is_none() {
            *slot = Some(new_page_table()?);
            if let Some(directory) = self.directories.get(pdpte)
                && let Some(table) = slot
            {
                write_entry(directory, pde, table.table.phys() | PDE_FLAGS);
            }
        }
        let table = slot.as_mut().ok_or(Errno::EINVAL)?;
        let entry = table.pages.get_mut(pte).ok_or(Errno::EINVAL)?;
        write_entry(&table.table, pte, page.phys() | PTE_FLAGS);
        if entry.replace(page).is_some() {
            // An entry changed under the TLB's feet (two vCPUs racing to
            // map one page cannot happen with one vCPU; a stale mapping
            // can only be the same page, but flush to be sure).
            self.needs_flush = true;
        }
        Ok(())
    }

    /// Before each entry: if the slots changed since the map was made,
    /// unmap everything (the next faults map the new pages). Returns
    /// whether the guest's TLB must be flushed.
    pub fn sync(&mut self, memory: &Mutex<MemSlots>) -> bool {
        let generation = memory.lock().generation();
        if generation != self.generation {
            self.zap_all();
            self.generation = generation;
        }
        core::mem::take(&mut self.needs_flush)
    }

    /// Unmaps every page and frees every page table.
    pub fn zap_all(&mut self) {
        for directory in &self.directories {
            for i in 0..ENTRIES {
                write_entry(directory, i, 0);
            }
        }
        for table in &mut self.tables {
            if table.take().is_some() {
                self.needs_flush = true;
            }
        }
    }
}

//@ begin 11
// ANCHOR: nonpaging_write_protect
impl NonpagingMmu {
    /// Takes away the write right of gfn's entry, if it is mapped: the
    /// guest's next write to it faults, and [`NonpagingMmu::map`] marks it
    /// dirty again.
    pub fn write_protect(&mut self, gfn: u64) {
        let (_, _, pte) = indices(gfn);
        let Some(Some(table)) = self.tables.get(usize::try_from(gfn >> 9).unwrap_or(usize::MAX)) else { return };
        if table.pages.get(pte).is_some_and(Option::is_some) {
            let old = read_entry(&table.table, pte);
            if old & PTE_RW != 0 {
                write_entry(&table.table, pte, old & !PTE_RW);
                self.needs_flush = true;
            }
        }
    }
}
// ANCHOR_END: nonpaging_write_protect

/// Reads entry `index` of the table in `page` (0 beyond the table).
fn read_entry(page: &Page, index: usize) -> u64 {
    if index >= ENTRIES {
        return 0;
    }
    // SAFETY: as in `write_entry`.
    unsafe { page.addr().cast::<u64>().add(index).read_volatile() }
}
//@ end

fn new_page_table() -> KResult<PageTable> {
    let table = Page::alloc_zeroed()?;
    let mut pages = Vec::new();
    pages.try_reserve_exact(ENTRIES).map_err(|_| Errno::ENOMEM)?;
    pages.resize_with(ENTRIES, || None);
    Ok(PageTable { table, pages })
}

/// Writes entry `index` of the table in `page`. The processor may be
/// reading the table (another CPU never is: the vCPU runs on one), so
/// the write is one aligned 64-bit store.
fn write_entry(page: &Page, index: usize, value: u64) {
    if index < ENTRIES {
        // SAFETY: `index` is within the page, which is alive and 8-byte
        // aligned; the page is the module's own, never mapped to userspace.
        unsafe { page.addr().cast::<u64>().add(index).write_volatile(value) };
    }
}
// ANCHOR_END: map

// ANCHOR: fetch
impl GuestFetch for NonpagingMmu {
    /// Reads through the map itself: the bytes the guest would see, with
    /// no lock and no allocation. Unmapped bytes fail.
    fn read_linear(&self, linear: u64, buf: &mut [u8]) -> bool {
        let mut address = linear;
        let mut done = 0;
        while done < buf.len() {
            let Some(page) = self.mapped(address >> PAGE_SHIFT) else { return false };
            let offset = (address as usize) & (PAGE_SIZE - 1);
            let n = (PAGE_SIZE - offset).min(buf.len() - done);
            let Some(dst) = buf.get_mut(done..done + n) else { return false };
            // SAFETY: the page is alive (the map holds a reference) and
            // `offset + n` is within it; userspace may write it at the same
            // time, which can only give stale bytes.
            unsafe { core::ptr::copy_nonoverlapping(page.addr().add(offset), dst.as_mut_ptr(), n) };
            done += n;
            address = address.wrapping_add(n as u64);
        }
        true
    }
}

impl NonpagingMmu {
    /// The page mapped at `gfn`, if any.
    fn mapped(&self, gfn: u64) -> Option<&PageRef> {
        if gfn >= GFNS {
            return None;
        }
        let table = self.tables.get((gfn >> 9) as usize)?.as_ref()?;
        table.pages.get((gfn & 511) as usize)?.as_ref()
    }
}
// ANCHOR_END: fetch

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::KvmMemoryRegion;
    use crate::kernel::{LockClass, fake};

    fn memory(pages: u64) -> Mutex<MemSlots> {
        let m = Mutex::new(MemSlots::new(), LockClass::Memory).expect("a mutex");
        let region = KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: pages * 4096 };
        m.lock().set_region(&region).expect("a slot");
        m
    }

    /// Entry `index` of the table at host "physical" address `phys` (on the
    /// host, physical addresses are the fake pages' addresses).
    fn entry(phys: u64, index: u64) -> u64 {
        // SAFETY: in host tests a physical address is the page's address.
        unsafe { ((phys & !0xFFF) as *const u64).add(index as usize).read() }
    }

    /// Walks the table as the processor would.
    fn walk(mmu: &NonpagingMmu, gpa: u64) -> Option<u64> {
        let pdpte = entry(mmu.root(), (gpa >> 30) & 3);
        let pde = entry(pdpte, (gpa >> 21) & 511);
        if pde & PTE_P == 0 {
            return None;
        }
        let pte = entry(pde, (gpa >> 12) & 511);
        (pte & PTE_P != 0).then_some((pte & !0xFFF & ((1 << 52) - 1)) | (gpa & 0xFFF))
    }

    #[test]
    fn the_pdpt_entries_use_no_reserved_bit() {
        let mmu = NonpagingMmu::new().expect("an MMU");
        for i in 0..4 {
            assert_eq!(entry(mmu.root(), i) & 0xFFF, PTE_P);
        }
    }

    #[test]
    fn a_fault_maps_the_slots_page_and_nothing_else() {
        let m = memory(16);
        let mut mmu = NonpagingMmu::new().expect("an MMU");
        assert_eq!(walk(&mmu, 0x8000), None, "empty at first");
        assert!(mmu.map(0x8123, &m));
        let page = m.lock().gfn_to_page(8).map(|p| p.addr() as u64).expect("backed");
        assert_eq!(walk(&mmu, 0x8123), Some(page + 0x123));
        assert_eq!(walk(&mmu, 0x9000), None, "only the page that faulted");
        assert!(!mmu.map(0x10000, &m), "beyond the slot");
        assert!(!mmu.map(0xC000_0000, &m));
        assert!(!mmu.map(0x1_0000_0000, &m), "beyond 4 GiB");
        assert_eq!(walk(&mmu, 0x10000), None);
    }

    #[test]
    fn fetch_reads_mapped_bytes_across_pages_and_refuses_unmapped_ones() {
        let m = memory(4);
        let mut mmu = NonpagingMmu::new().expect("an MMU");
        assert!(mmu.map(0x1000, &m) && mmu.map(0x2000, &m));
        let p1 = m.lock().gfn_to_page(1).map(|p| p.addr()).expect("backed");
        let p2 = m.lock().gfn_to_page(2).map(|p| p.addr()).expect("backed");
        // SAFETY: both pages are alive and 4 KiB long.
        unsafe {
            p1.add(0xFFE).write(0xAA);
            p1.add(0xFFF).write(0xBB);
            p2.write(0xCC);
        }
        let mut buf = [0; 3];
        assert!(mmu.read_linear(0x1FFE, &mut buf));
        assert_eq!(buf, [0xAA, 0xBB, 0xCC]);
        assert!(!mmu.read_linear(0x2FFF, &mut buf), "0x3000 is not mapped");
    }

    #[test]
    fn a_slot_change_unmaps_everything_and_asks_for_a_flush() {
        let m = memory(4);
        let mut mmu = NonpagingMmu::new().expect("an MMU");
        assert!(!mmu.sync(&m), "nothing mapped yet");
        assert!(mmu.map(0x1000, &m));
        assert!(!mmu.sync(&m), "same slots: keep the map");
        let region = KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0 };
        m.lock().set_region(&region).expect("delete the slot");
        assert!(mmu.sync(&m), "flush after the zap");
        assert_eq!(walk(&mmu, 0x1000), None);
    }

    #[test]
    fn a_mapped_page_outlives_its_slot_until_the_zap() {
        let before = fake::live_pages();
        let m = memory(1);
        let mut mmu = NonpagingMmu::new().expect("an MMU");
        assert!(mmu.map(0, &m));
        let with_map = fake::live_pages();
        let region = KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0 };
        m.lock().set_region(&region).expect("delete the slot");
        assert_eq!(fake::live_pages(), with_map, "the map still holds the page");
        mmu.sync(&m);
        assert_eq!(fake::live_pages(), with_map - 2, "the page and its page table are freed");
        drop(mmu);
        drop(m);
        assert_eq!(fake::live_pages(), before);
    }
}
