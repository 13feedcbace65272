//@ stage 3
//! Guest memory: the slots of `KVM_SET_MEMORY_REGION`, from guest-physical
//! page numbers to the kernel's pages.
//!
//! As in 2006, the kernel itself allocates a VM's memory, page by page, when
//! userspace declares a slot; userspace reaches it by `mmap` of the device
//! at file offset = guest-physical address. A slot is a run of guest frame
//! numbers (gfns) `base_gfn .. base_gfn + npages` and one page per gfn.
//! Slots never overlap, so each gfn is backed by at most one page.

use crate::abi::{KVM_MEM_LOG_DIRTY_PAGES, KvmMemoryRegion};
use crate::kernel::{self, Errno, KResult, PAGE_SHIFT, PAGE_SIZE, Page};
use crate::stats;
use alloc::vec::Vec;
//@ begin 11
pub mod dirty;
use dirty::DirtyLog;
//@ end

// ANCHOR: limits
/// The number of slots, as in 2006's `KVM_MEMORY_SLOTS`.
pub const KVM_MEMORY_SLOTS: usize = 4;

/// The largest slot rkvm accepts: 4 GiB. A larger `memory_size` is `ENOMEM`
/// before anything is allocated. The limit keeps one slot's page array (16
/// bytes per page: 16 MiB for 4 GiB) within what `kvmalloc` gives easily.
pub const MAX_SLOT_SIZE: u64 = 4 << 30;

/// The end of guest-physical address space: 2^52, the largest physical
/// address width x86-64 defines (Intel SDM Vol. 3A, 4.1.4: MAXPHYADDR is
/// at most 52). A slot must end at or below it.
pub const MAX_GUEST_PHYS_ADDR: u64 = 1 << 52;

/// The flags a slot may carry.
//@ begin 3 until 11
/// Dirty logging is stage 11's; until then the flag is accepted and
/// stored, and nothing reads it.
//@ end
pub const VALID_FLAGS: u32 = KVM_MEM_LOG_DIRTY_PAGES;
// ANCHOR_END: limits

// ANCHOR: gfn_range
/// A run of guest frame numbers, `start .. end` (end excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GfnRange {
    pub start: u64,
    pub end: u64,
}

impl GfnRange {
    /// Whether `gfn` lies in the range.
    pub fn contains(self, gfn: u64) -> bool {
        self.start <= gfn && gfn < self.end
    }
}

/// Whether two ranges share at least one gfn. Either may be empty (a
/// range whose end is not above its start holds no gfn).
pub fn ranges_overlap(a: GfnRange, b: GfnRange) -> bool {
    //@ exercise E3.1
    //@ instruction: Return whether some gfn lies in both `a` and `b`, as
    //@+ `GfnRange::contains` says. What must hold, for every pair of
    //@+ ranges anywhere in the 64 bits of a gfn: the answer is true
    //@+ exactly when such a gfn exists. Ranges that only touch, such as
    //@+ `0 .. 2` and `2 .. 4`, share none, and an empty range (end not
    //@+ above start) shares none with anything. Nothing may overflow. The
    //@+ `e3_1` tests compare you with a search, gfn by gfn, over every
    //@+ pair of small ranges.
    //@ hint: Don't list cases (`a` left of `b`, `b` inside `a`, ...): ask
    //@+ what the gfns in both ranges are. They form a range too.
    //@ hint: The gfns in both are those from the later start up to the
    //@+ earlier end: `max(a.start, b.start) .. min(a.end, b.end)`. Is that
    //@+ range empty?
    //@ hint: `a.start.max(b.start) < a.end.min(b.end)`.
    a.start.max(b.start) < a.end.min(b.end)
    //@ end
}
// ANCHOR_END: gfn_range

// ANCHOR: memslot
/// One slot: where it sits in guest-physical memory and its pages. An empty
/// slot has no pages.
pub struct MemSlot {
    base_gfn: u64,
    flags: u32,
    /// `pages[i]` backs gfn `base_gfn + i`.
    pages: Vec<Page>,
    //@ begin 11
    /// The dirty log, while the flags ask for one.
    dirty: Option<DirtyLog>,
    //@ end
}

impl MemSlot {
    const fn empty() -> MemSlot {
        MemSlot {
            base_gfn: 0,
            flags: 0,
            pages: Vec::new(),
            //@ begin 11
            dirty: None,
            //@ end
        }
    }

    /// The first gfn.
    pub fn base_gfn(&self) -> u64 {
        self.base_gfn
    }

    /// The number of pages.
    pub fn npages(&self) -> usize {
        self.pages.len()
    }

    /// The slot's flags, as `KVM_SET_MEMORY_REGION` gave them.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The gfns the slot backs.
    pub fn gfns(&self) -> GfnRange {
        GfnRange { start: self.base_gfn, end: self.base_gfn + self.pages.len() as u64 }
    }

    /// The `index`th page of the slot, if the slot has that many.
    pub fn page(&self, index: usize) -> Option<&Page> {
        self.pages.get(index)
    }
}
// ANCHOR_END: memslot

// ANCHOR: resize
impl MemSlot {
    /// Gives the slot `npages` pages, keeping the first `min(old, npages)`
    /// pages and their contents, zeroed new pages after them, and freeing
    /// the rest. On failure (`ENOMEM`) the slot is unchanged: every page and
    /// array allocated so far is dropped, which frees it.
    fn resize(&mut self, npages: usize) -> KResult<()> {
        let old = self.pages.len();
        if npages == old {
            return Ok(());
        }
        let mut pages = Vec::new();
        pages.try_reserve_exact(npages).map_err(|_| Errno::ENOMEM)?;
        if npages <= old {
            // Move the pages kept; the rest drop with the old array.
            pages.extend(self.pages.drain(..npages));
        } else {
            let added = alloc_pages(npages - old)?;
            pages.append(&mut self.pages);
            pages.extend(added);
        }
        self.pages = pages;
        stats::add(&stats::GUEST_PAGES, npages as i64 - old as i64);
        Ok(())
    }
}

/// `n` zeroed pages, or `ENOMEM` and none; or `EINTR` and none if the
/// calling process is killed meanwhile.
fn alloc_pages(n: usize) -> KResult<Vec<Page>> {
    // A request that cannot fit is refused before it pushes the machine
    // into reclaim; one that passes this estimate may still fail below.
    if n > kernel::available_pages() {
        return Err(Errno::ENOMEM);
    }
    let mut pages = Vec::new();
    pages.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    for _ in 0..n {
        // Gigabytes take seconds: other tasks get their turn, and a
        // process killed meanwhile (SIGKILL, or the OOM killer) stops
        // asking, since it will never see the memory and the machine needs
        // the pages back.
        kernel::cond_resched();
        if kernel::fatal_signal_pending() {
            return Err(Errno::EINTR);
        }
        // On failure `pages` drops here, freeing what was allocated.
        pages.push(Page::alloc_zeroed()?);
    }
    Ok(pages)
}

impl Drop for MemSlot {
    fn drop(&mut self) {
        stats::add(&stats::GUEST_PAGES, -(self.pages.len() as i64));
    }
}
// ANCHOR_END: resize

// ANCHOR: request
/// A `KvmMemoryRegion` that passed every check that needs no other slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    slot: usize,
    flags: u32,
    base_gfn: u64,
    npages: usize,
}

impl Request {
    /// Checks a region from userspace; the errors are those of
    /// `KVM_SET_MEMORY_REGION` (see the chapter's table).
    fn check(region: &KvmMemoryRegion) -> KResult<Request> {
        let page_mask = PAGE_SIZE as u64 - 1;
        let slot = usize::try_from(region.slot).map_err(|_| Errno::EINVAL)?;
        if slot >= KVM_MEMORY_SLOTS
            || region.flags & !VALID_FLAGS != 0
            || region.memory_size & page_mask != 0
            || region.guest_phys_addr & page_mask != 0
        {
            return Err(Errno::EINVAL);
        }
        let end = region.guest_phys_addr.checked_add(region.memory_size).ok_or(Errno::EINVAL)?;
        if end > MAX_GUEST_PHYS_ADDR {
            return Err(Errno::EINVAL);
        }
        if region.memory_size > MAX_SLOT_SIZE {
            return Err(Errno::ENOMEM);
        }
        let npages = usize::try_from(region.memory_size >> PAGE_SHIFT).map_err(|_| Errno::ENOMEM)?;
        let base_gfn = region.guest_phys_addr >> PAGE_SHIFT;
        Ok(Request { slot, flags: region.flags, base_gfn, npages })
    }

    fn gfns(&self) -> GfnRange {
        GfnRange { start: self.base_gfn, end: self.base_gfn + self.npages as u64 }
    }
}
// ANCHOR_END: request

// ANCHOR: memslots
/// A VM's guest memory: its four slots.
pub struct MemSlots {
    slots: [MemSlot; KVM_MEMORY_SLOTS],
    //@ begin 5
    /// Counts the changes to the slots, so that page tables made from them
    /// know when they are out of date.
    generation: u64,
    //@ end
}

impl MemSlots {
    /// No memory at all.
    pub const fn new() -> MemSlots {
        MemSlots {
            slots: [const { MemSlot::empty() }; KVM_MEMORY_SLOTS],
            //@ begin 5
            generation: 0,
            //@ end
        }
    }

    //@ begin 5
    /// The number of changes made to the slots so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    //@ end

    /// `KVM_SET_MEMORY_REGION`: creates, resizes, moves or (with size 0)
    /// deletes a slot. Either the slot takes the new shape or, on error,
    /// nothing changes.
    pub fn set_region(&mut self, region: &KvmMemoryRegion) -> KResult<()> {
        let request = Request::check(region)?;
        if request.npages > 0 && self.overlaps_another(&request) {
            return Err(Errno::EEXIST);
        }
        //@ begin 11
        let log = self.next_log(&request)?;
        //@ end
        let slot = self.slots.get_mut(request.slot).ok_or(Errno::EINVAL)?;
        //@ begin 5
        // Counted before the change: a failed resize may have changed
        // nothing, and a needless unmap costs only faults.
        self.generation = self.generation.wrapping_add(1);
        //@ end
        slot.resize(request.npages)?;
        // An empty slot keeps no address or flags: 2006 cleared them too.
        let empty = request.npages == 0;
        slot.base_gfn = if empty { 0 } else { request.base_gfn };
        slot.flags = if empty { 0 } else { request.flags };
        //@ begin 11
        slot.dirty = log;
        //@ end
        Ok(())
    }

    /// Whether the request's gfns meet those of another, non-empty slot.
    /// The slot being changed does not count: it may move over itself.
    fn overlaps_another(&self, request: &Request) -> bool {
        self.slots
            .iter()
            .enumerate()
            .filter(|&(i, slot)| i != request.slot && slot.npages() > 0)
            .any(|(_, slot)| ranges_overlap(slot.gfns(), request.gfns()))
    }

    /// Slot number `n`, empty or not.
    pub fn slot(&self, n: usize) -> Option<&MemSlot> {
        self.slots.get(n)
    }

    /// The pages held by all slots.
    pub fn npages(&self) -> usize {
        self.slots.iter().map(MemSlot::npages).sum()
    }
}
// ANCHOR_END: memslots

// ANCHOR: gfn_to_page
impl MemSlots {
    /// The page that backs guest frame `gfn`, or `None` if no slot does:
    /// 2006's `gfn_to_memslot` and `gfn_to_page` in one.
    pub fn gfn_to_page(&self, gfn: u64) -> Option<&Page> {
        //@ exercise E3.2
        //@ instruction: Return the page that backs guest frame `gfn`, as a
        //@+ slot lays its pages out (see `MemSlot`), or `None` when no slot
        //@+ backs it. `gfn` comes from anywhere: the offset of a
        //@+ userspace mapping, and from stage 05 the guest's own page
        //@+ tables, so every `u64` must give an answer, never a panic. The
        //@+ `e3_2` tests look up pages in, between and after slots.
        //@ hint: Slots never overlap, so at most one slot holds `gfn`: find
        //@+ it with what `MemSlot` and `GfnRange` offer, then find the page
        //@+ in it.
        //@ hint: `self.slots.iter().find(...)` with `slot.gfns().contains(
        //@+ gfn)`; the page's index is `gfn - slot.base_gfn()`, a `u64`
        //@+ that `usize::try_from` converts without truncating, and
        //@+ `MemSlot::page` returns `None` instead of panicking.
        let slot = self.slots.iter().find(|slot| slot.gfns().contains(gfn))?;
        slot.page(usize::try_from(gfn - slot.base_gfn()).ok()?)
        //@ end
    }
}
// ANCHOR_END: gfn_to_page

//@ begin 11
// ANCHOR: slot_logs
impl MemSlots {
    /// The dirty log slot `request.slot` will have once the request is
    /// carried out: none without `KVM_MEM_LOG_DIRTY_PAGES` (or without
    /// pages); the one it has if it logged already and keeps its place and
    /// size (each bit still names the page it was set for); else a new,
    /// clean one, as a new slot gets. Made before anything changes, so that
    /// `ENOMEM` here changes nothing.
    fn next_log(&mut self, request: &Request) -> KResult<Option<DirtyLog>> {
        if request.npages == 0 || request.flags & KVM_MEM_LOG_DIRTY_PAGES == 0 {
            return Ok(None);
        }
        let slot = self.slots.get_mut(request.slot).ok_or(Errno::EINVAL)?;
        if slot.npages() == 0 {
            return DirtyLog::new(request.npages).map(Some);
        }
        //@ exercise E11.2
        //@ instruction: The slot has pages and will log: decide with which
        //@+ log, once `KVM_SET_MEMORY_REGION` has carried out `request`
        //@+ (it may move the slot, resize it, or only change its flags).
        //@+ What must hold: a slot that keeps its place and its size keeps
        //@+ every bit of its log, since each still names the page it was
        //@+ set for; a slot that moves or changes size starts, as a new
        //@+ slot does, with no bit set, since userspace, which made the
        //@+ change, takes its memory as new; and if memory runs out here,
        //@+ the caller changes nothing at all. The tests in `e11_2` call
        //@+ `set_region`.
        //@ hint: Of the two outcomes, which can fail? Does `set_region`
        //@+ call this before it touches the slot, and can anything after
        //@+ this call fail when the slot keeps its size?
        //@ hint: Two cases: the old log kept (`Option::take` moves it out
        //@+ of the slot, which gets it back after the resize, which cannot
        //@+ fail for an unchanged size), or `DirtyLog::new`.
        if slot.base_gfn == request.base_gfn && slot.npages() == request.npages && slot.dirty.is_some() {
            return Ok(slot.dirty.take());
        }
        DirtyLog::new(request.npages).map(Some)
        //@ end
    }

    /// Guest frame `gfn` may have been written: set its bit, if its slot
    /// logs. Called wherever a writable translation of it is made and
    /// wherever the module writes it for the guest.
    pub fn mark_page_dirty(&self, gfn: u64) {
        let Some(slot) = self.slots.iter().find(|s| s.gfns().contains(gfn)) else { return };
        if let (Some(log), Ok(index)) = (&slot.dirty, usize::try_from(gfn - slot.base_gfn)) {
            log.mark(index);
        }
    }

    /// Takes slot `n`'s dirty log, clearing it: the bytes userspace gets,
    /// and the slot's first gfn. `EINVAL` for a slot number beyond the
    /// slots, `ENOENT` for a slot that does not log: 2006's errors.
    pub fn take_dirty_log(&self, n: usize) -> KResult<(Vec<u8>, u64)> {
        let slot = self.slots.get(n).ok_or(Errno::EINVAL)?;
        let log = slot.dirty.as_ref().ok_or(Errno::ENOENT)?;
        Ok((log.take()?, slot.base_gfn))
    }

    /// Gives back a log `take_dirty_log` took from slot `n` that never
    /// reached userspace. If the slot was changed meanwhile its log is new
    /// and the old bits mean nothing: they are dropped.
    pub fn put_back_dirty_log(&self, n: usize, base_gfn: u64, bytes: &[u8]) {
        if let Some(slot) = self.slots.get(n)
            && let Some(log) = &slot.dirty
            && slot.base_gfn == base_gfn
            && log.user_bytes() == bytes.len()
        {
            log.put_back(bytes);
        }
    }
}
// ANCHOR_END: slot_logs
//@ end

//@ begin 13
impl MemSlots {
    /// Whether the slot that holds guest frame `gfn` keeps a dirty log.
    pub fn logs_dirty(&self, gfn: u64) -> bool {
        self.slots.iter().find(|s| s.gfns().contains(gfn)).is_some_and(|s| s.dirty.is_some())
    }
}
//@ end

impl Default for MemSlots {
    fn default() -> Self {
        MemSlots::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake;

    const MIB: u64 = 1 << 20;

    pub(super) fn region(slot: u32, guest_phys_addr: u64, memory_size: u64) -> KvmMemoryRegion {
        KvmMemoryRegion { slot, flags: 0, guest_phys_addr, memory_size }
    }

    /// Writes `value` to the first byte of page `index` of slot `n`.
    pub(super) fn poke(slots: &MemSlots, n: usize, index: usize, value: u8) {
        let page = slots.slot(n).and_then(|s| s.page(index)).expect("the page exists");
        // SAFETY: the page is alive while `slots` is borrowed.
        unsafe { page.addr().write(value) };
    }

    /// Reads the first byte of page `index` of slot `n`.
    pub(super) fn peek(slots: &MemSlots, n: usize, index: usize) -> u8 {
        let page = slots.slot(n).and_then(|s| s.page(index)).expect("the page exists");
        // SAFETY: as in `poke`.
        unsafe { page.addr().read() }
    }

    #[test]
    fn a_new_slot_is_zeroed_memory_at_its_address() {
        let before = fake::live_pages();
        let mut slots = MemSlots::new();
        assert_eq!(slots.set_region(&region(0, 0x10_0000, 64 * 1024)), Ok(()));
        let slot = slots.slot(0).expect("slot 0");
        assert_eq!((slot.base_gfn(), slot.npages(), slot.flags()), (0x100, 16, 0));
        for i in 0..16 {
            let page = slot.page(i).expect("a page");
            // SAFETY: the page is alive and PAGE_SIZE bytes long.
            let bytes = unsafe { core::slice::from_raw_parts(page.addr(), PAGE_SIZE) };
            assert!(bytes.iter().all(|&b| b == 0), "page {i} is not zeroed");
        }
        assert_eq!(fake::live_pages(), before + 16);
        drop(slots);
        assert_eq!(fake::live_pages(), before, "dropping the slots frees their pages");
    }

    #[test]
    fn bad_regions_are_einval() {
        let mut slots = MemSlots::new();
        let cases = [
            (region(4, 0, 4096), "slot 4"),
            (region(u32::MAX, 0, 4096), "slot u32::MAX"),
            (region(0, 0, 4095), "size not page aligned"),
            (region(0, 0, 4097), "size not page aligned"),
            (region(0, 0x800, 4096), "address not page aligned"),
            (region(0, u64::MAX - 4095, 8192), "range wraps"),
            (region(0, MAX_GUEST_PHYS_ADDR, 4096), "range beyond 2^52"),
            (region(0, MAX_GUEST_PHYS_ADDR - 4096, 8192), "range ends beyond 2^52"),
            (KvmMemoryRegion { flags: 2, ..region(0, 0, 4096) }, "unknown flag"),
            (KvmMemoryRegion { flags: 0x8000_0000, ..region(0, 0, 4096) }, "unknown flag"),
        ];
        for (r, why) in cases {
            assert_eq!(slots.set_region(&r), Err(Errno::EINVAL), "{why}: {r:?}");
        }
        assert_eq!(slots.npages(), 0);
    }

    #[test]
    fn a_slot_may_end_exactly_at_the_top_of_guest_physical_space() {
        let mut slots = MemSlots::new();
        assert_eq!(slots.set_region(&region(3, MAX_GUEST_PHYS_ADDR - 8192, 8192)), Ok(()));
        assert_eq!(slots.slot(3).map(MemSlot::npages), Some(2));
    }

    #[test]
    fn sizes_beyond_the_limit_are_enomem_and_allocate_nothing() {
        let before = fake::live_pages();
        let mut slots = MemSlots::new();
        for size in [MAX_SLOT_SIZE + 4096, MAX_SLOT_SIZE * 2, 1 << 51] {
            assert_eq!(slots.set_region(&region(0, 0, size)), Err(Errno::ENOMEM), "{size:#x}");
        }
        assert_eq!(fake::live_pages(), before);
    }

    #[test]
    fn more_pages_than_are_available_is_enomem_up_front() {
        fake::set_available_pages(8);
        let mut slots = MemSlots::new();
        let too_big = slots.set_region(&region(0, 0, 9 * 4096));
        let fits = slots.set_region(&region(0, 0, 8 * 4096));
        fake::set_available_pages(1 << 20);
        assert_eq!((too_big, fits), (Err(Errno::ENOMEM), Ok(())));
    }

    #[test]
    fn a_failure_halfway_frees_what_was_allocated_and_keeps_the_slot() {
        let before = fake::live_pages();
        let mut slots = MemSlots::new();
        assert_eq!(slots.set_region(&region(1, 0, 4 * 4096)), Ok(()));
        poke(&slots, 1, 3, 0x5A);
        // Growing to 64 pages needs 60 more; the 11th allocation fails.
        fake::fail_page_alloc_after(Some(10));
        let grown = slots.set_region(&region(1, 0, 64 * 4096));
        fake::fail_page_alloc_after(None);
        assert_eq!(grown, Err(Errno::ENOMEM));
        assert_eq!(fake::live_pages(), before + 4, "the 10 new pages were freed");
        let slot = slots.slot(1).expect("slot 1");
        assert_eq!((slot.base_gfn(), slot.npages()), (0, 4), "the slot is unchanged");
        assert_eq!(peek(&slots, 1, 3), 0x5A);
    }

    #[test]
    fn a_fatal_signal_stops_the_allocation_and_frees_what_it_had() {
        let before = fake::live_pages();
        let mut slots = MemSlots::new();
        assert_eq!(slots.set_region(&region(0, 0, 4 * 4096)), Ok(()));
        // The signal arrives after 10 of the 60 new pages.
        fake::fatal_signal_after(Some(10));
        let grown = slots.set_region(&region(0, 0, 64 * 4096));
        let left = fake::fatal_signal_pending_checks();
        fake::fatal_signal_after(None);
        assert_eq!(grown, Err(Errno::EINTR));
        assert_eq!(left, 11, "the loop stopped at the first check after the signal");
        assert_eq!(fake::live_pages(), before + 4, "the 10 new pages were freed");
        assert_eq!(slots.slot(0).map(MemSlot::npages), Some(4), "the slot is unchanged");
    }

    #[test]
    fn a_new_slot_that_fails_halfway_stays_empty() {
        let before = fake::live_pages();
        let mut slots = MemSlots::new();
        fake::fail_page_alloc_after(Some(100));
        let created = slots.set_region(&region(0, 0, MIB));
        fake::fail_page_alloc_after(None);
        assert_eq!(created, Err(Errno::ENOMEM));
        assert_eq!(slots.slot(0).map(MemSlot::npages), Some(0));
        assert_eq!(fake::live_pages(), before);
    }

    #[test]
    fn growing_keeps_the_contents_and_zeroes_the_new_pages() {
        let mut slots = MemSlots::new();
        assert_eq!(slots.set_region(&region(2, 0x8000, 2 * 4096)), Ok(()));
        poke(&slots, 2, 0, 1);
        poke(&slots, 2, 1, 2);
        assert_eq!(slots.set_region(&region(2, 0x8000, 5 * 4096)), Ok(()));
        assert_eq!((peek(&slots, 2, 0), peek(&slots, 2, 1)), (1, 2));
        assert_eq!((2..5).map(|i| peek(&slots, 2, i)).collect::<std::vec::Vec<_>>(), [0, 0, 0]);
    }

    #[test]
    fn shrinking_keeps_the_first_pages_and_frees_the_rest() {
        let before = fake::live_pages();
        let mut slots = MemSlots::new();
        assert_eq!(slots.set_region(&region(0, 0, 8 * 4096)), Ok(()));
        for i in 0..8 {
            poke(&slots, 0, i, i as u8 + 10);
        }
        assert_eq!(slots.set_region(&region(0, 0, 3 * 4096)), Ok(()));
        assert_eq!(fake::live_pages(), before + 3);
        assert_eq!((0..3).map(|i| peek(&slots, 0, i)).collect::<std::vec::Vec<_>>(), [10, 11, 12]);
        assert!(slots.slot(0).and_then(|s| s.page(3)).is_none());
    }

    #[test]
    fn moving_a_slot_keeps_its_pages() {
        let mut slots = MemSlots::new();
        assert_eq!(slots.set_region(&region(0, 0, 4 * 4096)), Ok(()));
        poke(&slots, 0, 2, 0x77);
        // Over itself: the new range overlaps the old one, which is allowed.
        assert_eq!(slots.set_region(&region(0, 0x2000, 4 * 4096)), Ok(()));
        assert_eq!(slots.slot(0).map(MemSlot::base_gfn), Some(2));
        assert_eq!(peek(&slots, 0, 2), 0x77);
    }

    #[test]
    fn size_zero_deletes_the_slot_and_frees_its_pages() {
        let before = fake::live_pages();
        let mut slots = MemSlots::new();
        let logged = KvmMemoryRegion { flags: KVM_MEM_LOG_DIRTY_PAGES, ..region(0, 0xA_0000, 0x2_0000) };
        assert_eq!(slots.set_region(&logged), Ok(()));
        assert_eq!(slots.slot(0).map(MemSlot::flags), Some(KVM_MEM_LOG_DIRTY_PAGES));
        assert_eq!(slots.set_region(&region(0, 0xA_0000, 0)), Ok(()));
        let slot = slots.slot(0).expect("slot 0");
        assert_eq!((slot.npages(), slot.base_gfn(), slot.flags()), (0, 0, 0));
        assert_eq!(fake::live_pages(), before);
        // Deleting an empty slot is not an error, wherever it points.
        assert_eq!(slots.set_region(&region(3, 0x1234_5000, 0)), Ok(()));
    }

    #[test]
    fn the_size_limit_is_inclusive() {
        let request = Request::check(&region(1, MIB, MAX_SLOT_SIZE));
        assert_eq!(request, Ok(Request { slot: 1, flags: 0, base_gfn: 0x100, npages: 1 << 20 }));
        assert_eq!(Request::check(&region(1, MIB, MAX_SLOT_SIZE + 4096)), Err(Errno::ENOMEM));
    }

    #[test]
    fn moving_a_slot_needs_no_allocation() {
        let mut slots = MemSlots::new();
        assert_eq!(slots.set_region(&region(0, 0, 4 * 4096)), Ok(()));
        fake::fail_page_alloc_after(Some(0));
        fake::set_available_pages(0);
        let moved = slots.set_region(&region(0, 0x10_0000, 4 * 4096));
        fake::fail_page_alloc_after(None);
        fake::set_available_pages(1 << 20);
        assert_eq!(moved, Ok(()));
        assert_eq!(slots.slot(0).map(MemSlot::base_gfn), Some(0x100));
    }

    mod e3_1 {
        use super::super::*;
        use super::region;

        fn r(start: u64, end: u64) -> GfnRange {
            GfnRange { start, end }
        }

        #[test]
        fn ranges_overlap_when_they_share_a_gfn() {
            assert!(ranges_overlap(r(0, 4), r(3, 8)));
            assert!(ranges_overlap(r(3, 8), r(0, 4)));
            assert!(ranges_overlap(r(0, 10), r(4, 5)), "one inside the other");
            assert!(ranges_overlap(r(4, 5), r(0, 10)));
            assert!(ranges_overlap(r(7, 9), r(7, 9)), "the same range");
        }

        #[test]
        fn ranges_that_touch_do_not_overlap() {
            assert!(!ranges_overlap(r(0, 2), r(2, 4)));
            assert!(!ranges_overlap(r(2, 4), r(0, 2)));
            assert!(!ranges_overlap(r(0, 1), r(u64::MAX - 1, u64::MAX)));
        }

        #[test]
        fn an_empty_range_overlaps_nothing() {
            assert!(!ranges_overlap(r(3, 3), r(0, 10)), "empty, inside another");
            assert!(!ranges_overlap(r(0, 10), r(5, 5)));
            assert!(!ranges_overlap(r(7, 2), r(0, 10)), "end below start");
            assert!(!ranges_overlap(r(4, 4), r(4, 4)));
        }

        /// Whether a gfn lies in both, found by trying each gfn of `a`.
        fn search(a: GfnRange, b: GfnRange) -> bool {
            (a.start..a.end).any(|gfn| a.contains(gfn) && b.contains(gfn))
        }

        /// Every pair of ranges within 0 to 6, then the same pairs moved up
        /// against the top of the gfn space.
        #[test]
        fn every_pair_of_small_ranges_agrees_with_a_search() {
            for base in [0, 1 << 40, u64::MAX - 6] {
                for [s1, e1, s2, e2] in (0..7u64.pow(4)).map(|n| [n % 7, n / 7 % 7, n / 49 % 7, n / 343]) {
                    let (a, b) = (r(base + s1, base + e1), r(base + s2, base + e2));
                    assert_eq!(ranges_overlap(a, b), search(a, b), "{a:?} and {b:?}");
                }
            }
        }

        #[test]
        fn overlapping_slots_are_eexist_and_change_nothing() {
            let mut slots = MemSlots::new();
            assert_eq!(slots.set_region(&region(0, 0x1_0000, 0x1_0000)), Ok(()));
            for (slot, gpa, size) in [(1, 0x1_0000, 0x1000), (1, 0x1_F000, 0x2000), (2, 0, 0x1_1000), (3, 0, 0x10_0000)] {
                assert_eq!(slots.set_region(&region(slot, gpa, size)), Err(Errno::EEXIST), "{slot} {gpa:#x}+{size:#x}");
                assert_eq!(slots.slot(slot as usize).map(MemSlot::npages), Some(0));
            }
            assert_eq!(slots.set_region(&region(1, 0x2_0000, 0x1000)), Ok(()), "right after slot 0");
            assert_eq!(slots.set_region(&region(2, 0xF000, 0x1000)), Ok(()), "right before slot 0");
        }

        #[test]
        fn growing_into_a_neighbour_is_eexist_and_keeps_the_slot() {
            let mut slots = MemSlots::new();
            assert_eq!(slots.set_region(&region(0, 0, 0x4000)), Ok(()));
            assert_eq!(slots.set_region(&region(1, 0x4000, 0x4000)), Ok(()));
            assert_eq!(slots.set_region(&region(0, 0, 0x5000)), Err(Errno::EEXIST));
            assert_eq!(slots.slot(0).map(MemSlot::npages), Some(4));
        }

        #[test]
        fn all_four_slots_can_hold_memory() {
            let mut slots = MemSlots::new();
            for n in 0..4u32 {
                assert_eq!(slots.set_region(&region(n, u64::from(n) * 0x10_0000, 0x3000)), Ok(()));
            }
            assert_eq!(slots.npages(), 12);
        }
    }

    mod e3_2 {
        use super::super::*;
        use super::{poke, region};

        #[test]
        fn each_gfn_finds_its_own_page() {
            let mut slots = MemSlots::new();
            assert_eq!(slots.set_region(&region(1, 0x10_0000, 0x3000)), Ok(()));
            for i in 0..3 {
                poke(&slots, 1, i, 0xC0 + i as u8);
            }
            for i in 0..3u64 {
                let page = slots.gfn_to_page(0x100 + i).expect("backed");
                // SAFETY: the page is alive while `slots` is borrowed.
                assert_eq!(unsafe { page.addr().read() }, 0xC0 + i as u8, "gfn {:#x}", 0x100 + i);
            }
        }

        #[test]
        fn gfns_outside_every_slot_have_no_page() {
            let mut slots = MemSlots::new();
            assert!(slots.gfn_to_page(0).is_none(), "no slots at all");
            assert_eq!(slots.set_region(&region(0, 0x1000, 0x2000)), Ok(()));
            for gfn in [0, 3, 4, u64::MAX] {
                assert!(slots.gfn_to_page(gfn).is_none(), "gfn {gfn:#x}");
            }
            assert!(slots.gfn_to_page(1).is_some() && slots.gfn_to_page(2).is_some());
        }

        /// Slots never overlap, so a gfn lies in at most one slot, and only
        /// that slot may answer for it. Here four slots sit in guest memory
        /// in an order other than their numbers', slot 2 starting exactly
        /// where slot 0 ends: a slot that starts below the gfn, or ends at
        /// it, does not hold it.
        #[test]
        fn each_gfn_is_answered_by_the_one_slot_that_holds_it() {
            let mut slots = MemSlots::new();
            // (slot, first gfn, pages)
            let layout = [(0u32, 0x10u64, 3usize), (2, 0x13, 2), (1, 0x20, 4), (3, 0x8, 1)];
            for (n, gfn, pages) in layout {
                assert_eq!(slots.set_region(&region(n, gfn << PAGE_SHIFT, (pages * PAGE_SIZE) as u64)), Ok(()));
                for i in 0..pages {
                    poke(&slots, n as usize, i, (n as u8) << 4 | i as u8);
                }
            }
            let mut backed = 0;
            for (n, first, pages) in layout {
                for i in 0..pages {
                    let gfn = first + i as u64;
                    let page = slots.gfn_to_page(gfn).unwrap_or_else(|| panic!("gfn {gfn:#x} is in slot {n}"));
                    // SAFETY: the page is alive while `slots` is borrowed.
                    let tag = unsafe { page.addr().read() };
                    assert_eq!(tag, (n as u8) << 4 | i as u8, "gfn {gfn:#x}: page {i} of slot {n}");
                    backed += 1;
                }
            }
            assert_eq!(backed, slots.npages());
            for gfn in [0x7, 0x9, 0xF, 0x15, 0x1F, 0x24] {
                assert!(slots.gfn_to_page(gfn).is_none(), "gfn {gfn:#x} lies between slots");
            }
        }

        #[test]
        fn the_lookup_searches_every_slot_and_follows_changes() {
            let mut slots = MemSlots::new();
            assert_eq!(slots.set_region(&region(3, 0xF000_0000, 0x1000)), Ok(()));
            assert!(slots.gfn_to_page(0xF_0000).is_some(), "slot 3 is searched too");
            assert_eq!(slots.set_region(&region(3, 0xF000_0000, 0)), Ok(()));
            assert!(slots.gfn_to_page(0xF_0000).is_none(), "a deleted slot backs nothing");
        }
    }
}
