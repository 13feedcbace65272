//@ stage 8
//! Shadow page tables, the naive way of 2.6.20-rc1: the tables the
//! processor really walks while the guest's own paging is on.
//!
//! Without nested paging the processor knows one translation, linear to
//! host-physical. The guest's tables say linear to guest-physical; the
//! memory slots say guest-physical to host-physical. The module composes
//! the two, one page at a time, on demand: the shadow starts empty, every
//! access faults, and the fault handler walks the guest's tables
//! ([`super::walk`]) and, if they allow the access, writes the composed
//! translation into the shadow ([`ShadowMmu::install`]). The processor
//! then only ever walks tables the module owns, whose leaves are pages of
//! the guest's memory slots.
//!
//! A shadow page is a node of a tree indexed by linear address, like a
//! TLB that happens to be shaped as a page table: it remembers nothing of
//! which guest table it came from. So when the guest loads CR3 (a context
//! switch, or a TLB flush) the whole tree is thrown away, and every page
//! the new address space touches faults once more — the cost the 2006
//! announcement names, which stage 09 removes.
//!
//! The tree has the shape of PAE paging for a guest outside long mode
//! (whatever its own format: 32-bit paging is shadowed with 8-byte
//! entries too, as 2006 did) and of 4-level paging in long mode. Its size
//! is bounded ([`MAX_SHADOW_PAGES`], 2006's `KVM_NUM_MMU_PAGES`); when it
//! is full, the oldest subtree is thrown away to make room.

use crate::kernel::{Errno, KResult, PAGE_SHIFT, PAGE_SIZE, Page, PageRef};
use alloc::vec::Vec;

// ANCHOR: shadow_bits
/// The bits of a shadow entry (SDM Vol. 3A, 4.4 and 4.5: the same in PAE
/// and 4-level entries).
pub(super) const P: u64 = 1 << 0;
pub(super) const RW: u64 = 1 << 1;
pub(super) const US: u64 = 1 << 2;
pub(super) const A: u64 = 1 << 5;
pub(super) const D: u64 = 1 << 6;
pub(super) const XD: u64 = 1 << 63;
/// A non-leaf entry allows everything: the leaf alone carries the
/// guest's rights, and the processor takes the most restrictive of all
/// levels (SDM Vol. 3A, 4.6).
pub(super) const NON_LEAF: u64 = P | RW | US | A;
/// A PAE page-directory-pointer entry has no rights bits: bits 1, 2, 5
/// and 6 are reserved there (SDM Vol. 3A, Table 4-8).
pub(super) const PAE_PDPTE: u64 = P;

/// At most this many shadow pages per VM (2006: 256).
pub const MAX_SHADOW_PAGES: usize = 256;

pub(super) const ENTRIES: usize = 512;
// ANCHOR_END: shadow_bits

/// The translation a fault handler installs: what the guest's tables
/// allow at the page of one linear address, and the host page.
pub struct Leaf {
    pub page: PageRef,
    pub writable: bool,
    pub user: bool,
    pub no_execute: bool,
}

/// One page of the shadow tree.
struct ShadowPage {
    table: Page,
    /// 1 for a page table, up to 4 for a PML4 (3 for a PAE PDPT).
    level: u8,
    /// Where the parent points at it: (page, entry); `None` for the root.
    parent: Option<(usize, usize)>,
    /// Non-leaf pages: the shadow page each entry points at.
    children: Vec<Option<u16>>,
    /// Page tables: the guest page each entry maps, kept alive while it
    /// is mapped.
    frames: Vec<Option<PageRef>>,
    /// When it was made, to find the oldest.
    made: u64,
    /// Part of the root's fixed structure (a PAE root's four page
    /// directories): never recycled alone.
    pinned: bool,
}

// ANCHOR: shadow_mmu
/// One vCPU's shadow tree.
pub struct ShadowMmu {
    /// Every shadow page, by index; `None` marks a free index.
    pages: Vec<Option<ShadowPage>>,
    root: Option<usize>,
    /// The tree has four levels (long mode) or PAE's three.
    long_mode: bool,
    /// A counter that stamps pages as they are made.
    clock: u64,
    /// Shadow pages made and thrown away since the last `take_counts`.
    made: u64,
    zapped: u64,
}
// ANCHOR_END: shadow_mmu

impl ShadowMmu {
    /// An empty shadow: no root until the first `install`.
    pub fn new() -> KResult<ShadowMmu> {
        let mut pages = Vec::new();
        pages.try_reserve_exact(MAX_SHADOW_PAGES).map_err(|_| Errno::ENOMEM)?;
        pages.resize_with(MAX_SHADOW_PAGES, || None);
        Ok(ShadowMmu { pages, root: None, long_mode: false, clock: 0, made: 0, zapped: 0 })
    }

    /// The host-physical address of the root, for CR3; made now if there
    /// is none (`None` only when memory is short).
    pub fn root(&mut self, long_mode: bool) -> Option<u64> {
        if self.long_mode != long_mode {
            self.zap_all();
            self.long_mode = long_mode;
        }
        if self.root.is_none() {
            self.root = self.make_root().ok();
        }
        let root = self.root?;
        self.page(root).map(|p| p.table.phys())
    }

    /// Shadow pages in use.
    pub fn in_use(&self) -> usize {
        self.pages.iter().flatten().count()
    }

    /// Pages made and zapped since the last call: the VM's statistics.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (core::mem::take(&mut self.made), core::mem::take(&mut self.zapped))
    }

    fn page(&self, index: usize) -> Option<&ShadowPage> {
        self.pages.get(index)?.as_ref()
    }

    fn page_mut(&mut self, index: usize) -> Option<&mut ShadowPage> {
        self.pages.get_mut(index)?.as_mut()
    }
}

// ANCHOR: index
/// The entry of a level-`level` table that covers `linear`: 9 bits of
/// the address per level above the page offset; a PAE PDPT (level 3 of a
/// three-level tree) has only four entries, for bits 31:30.
fn index(linear: u64, level: u8, long_mode: bool) -> usize {
    let shift = PAGE_SHIFT + 9 * u32::from(level.saturating_sub(1));
    let mask = if level == 3 && !long_mode { 3 } else { 511 };
    ((linear >> shift) & mask) as usize
}
// ANCHOR_END: index

// ANCHOR: install
impl ShadowMmu {
    /// Maps the page of `linear` to `leaf`, making the missing tables on
    /// the way down from the root. `ENOMEM` when no page can be had.
    pub fn install(&mut self, linear: u64, leaf: Leaf) -> KResult<()> {
        //@ exercise E8.2
        //@ instruction: Make the processor's walk of the shadow for
        //@+ `linear` reach `leaf.page` with exactly the rights of `leaf`,
        //@+ making the tables that are missing on the way down. What must
        //@+ hold afterwards: the processor allows through the shadow what
        //@+ `leaf` allows and nothing more, and the entries above the leaf
        //@+ take none of it away (SDM Vol. 3A, 4.6: the rights of every
        //@+ level combine; the shadow's bits are above); neighbouring pages
        //@+ share their tables; the guest page stays alive while it is
        //@+ mapped; the tree never holds more than `MAX_SHADOW_PAGES`
        //@+ pages, yet `install` succeeds when it is full; recycling
        //@+ happens only when the path lacks a table, and never frees a
        //@+ table the walk down has already stepped onto. `child`,
        //@+ `write_leaf`, `make_room` and `page_table` are there to be used.
        //@+ The tests in `e8_2` check the tree the processor would walk.
        //@ hint: Read `child`, `write_leaf`, `make_room` and `page_table`
        //@+ before you write a line: between them they write every entry's
        //@+ bits. What is left to you is the order, the levels, and the
        //@+ room.
        //@ hint: `make_room` must run before the first step down, since
        //@+ recycling must not free a table you stand on. It may free a
        //@+ table further down the path, which `child` then makes again, so
        //@+ make room for the most tables a path can lack: in long mode the
        //@+ PDPT, the directory and the page table; in PAE only the page
        //@+ table, since the root's four directories are made with it and
        //@+ never recycled. The root's level is 4 in long mode, else 3;
        //@+ `index(linear, level, long_mode)` picks the entry at each level.
        //@ hint: If `self.page_table(linear)` is `None`,
        //@+ `self.make_room(if self.long_mode { 3 } else { 1 });`. Then
        //@+ `let mut at = self.root.ok_or(Errno::EINVAL)?;`, for each level
        //@+ from the root's down to 2 `at = self.child(at, index(linear,
        //@+ level, self.long_mode))?;`, and last `self.write_leaf(at,
        //@+ index(linear, 1, self.long_mode), leaf)`.
        if self.page_table(linear).is_none() {
            // Before the first step down: what this frees is made again.
            self.make_room(if self.long_mode { 3 } else { 1 });
        }
        let mut at = self.root.ok_or(Errno::EINVAL)?;
        let top = if self.long_mode { 4 } else { 3 };
        for level in (2..=top).rev() {
            at = self.child(at, index(linear, level, self.long_mode))?;
        }
        self.write_leaf(at, index(linear, 1, self.long_mode), leaf)
        //@ end
    }

    /// The table below entry `entry` of non-leaf page `at`, made if
    /// missing.
    fn child(&mut self, at: usize, entry: usize) -> KResult<usize> {
        let parent = self.page(at).ok_or(Errno::EINVAL)?;
        if let Some(Some(child)) = parent.children.get(entry) {
            return Ok(usize::from(*child));
        }
        let (level, pae_pdpt) = (parent.level - 1, parent.level == 3 && !self.long_mode);
        let child = self.make(level, Some((at, entry)), false)?;
        let phys = self.page(child).map(|p| p.table.phys()).ok_or(Errno::EINVAL)?;
        let parent = self.page_mut(at).ok_or(Errno::EINVAL)?;
        if let Some(slot) = parent.children.get_mut(entry) {
            *slot = u16::try_from(child).ok();
        }
        write_entry(&parent.table, entry, phys | if pae_pdpt { PAE_PDPTE } else { NON_LEAF });
        Ok(child)
    }

    /// Writes entry `entry` of page table `at`: the guest page, with the
    /// guest's rights. The accessed bit is set, and the dirty bit on a
    /// writable entry, because the guest's own bits are what the guest
    /// sees: the processor need never write the shadow's.
    fn write_leaf(&mut self, at: usize, entry: usize, leaf: Leaf) -> KResult<()> {
        let table = self.page_mut(at).ok_or(Errno::EINVAL)?;
        let slot = table.frames.get_mut(entry).ok_or(Errno::EINVAL)?;
        let mut value = leaf.page.phys() | P | A;
        if leaf.writable {
            value |= RW | D;
        }
        if leaf.user {
            value |= US;
        }
        if leaf.no_execute {
            value |= XD;
        }
        write_entry(&table.table, entry, value);
        *slot = Some(leaf.page);
        Ok(())
    }

    /// The page table on the path to `linear`, if the path reaches one.
    fn page_table(&self, linear: u64) -> Option<usize> {
        let mut at = self.root?;
        let top = if self.long_mode { 4 } else { 3 };
        for level in (2..=top).rev() {
            at = usize::from(*self.page(at)?.children.get(index(linear, level, self.long_mode))?.as_ref()?);
        }
        Some(at)
    }
}
// ANCHOR_END: install

// ANCHOR: zap
impl ShadowMmu {
    /// `invlpg`: forgets the translation of `linear`'s page, if any.
    ///
    /// The page may have been one of the guest's large pages, which the
    /// shadow maps 4 KiB at a time; the processor's TLB held it as one
    /// entry, which `invlpg` of any address inside removes whole (SDM Vol.
    /// 3A, 4.10.4.1). So the page tables of the whole `span` around
    /// `linear` go: 2 MiB, or 4 MiB for a guest with 32-bit paging.
    pub fn invalidate(&mut self, linear: u64, span: u64) {
        let start = linear & !(span - 1);
        for chunk in (0..span).step_by(1 << 21) {
            let Some(mut at) = self.root else { return };
            let address = start.wrapping_add(chunk);
            let top = if self.long_mode { 4 } else { 3 };
            for level in (3..=top).rev() {
                let entry = index(address, level, self.long_mode);
                match self.page(at).and_then(|p| p.children.get(entry).copied().flatten()) {
                    Some(child) => at = usize::from(child),
                    None => return,
                }
            }
            let entry = index(address, 2, self.long_mode);
            if let Some(table) = self.page(at).and_then(|p| p.children.get(entry).copied().flatten()) {
                self.zap(usize::from(table));
            }
        }
    }

    /// Throws the whole tree away (a CR3 load, a new paging mode, the
    /// slots changed). The next entry makes a new root.
    pub fn zap_all(&mut self) {
        for slot in &mut self.pages {
            if slot.take().is_some() {
                self.zapped += 1;
            }
        }
        self.root = None;
    }

    /// Frees page `at` and every page below it, and clears the entry
    /// that pointed at it.
    fn zap(&mut self, at: usize) {
        let Some(page) = self.pages.get_mut(at).and_then(Option::take) else { return };
        self.zapped += 1;
        for child in page.children.iter().flatten() {
            self.zap(usize::from(*child));
        }
        if let Some((parent, entry)) = page.parent
            && let Some(parent) = self.page_mut(parent)
        {
            write_entry(&parent.table, entry, 0);
            if let Some(slot) = parent.children.get_mut(entry) {
                *slot = None;
            }
        }
        if self.root == Some(at) {
            self.root = None;
        }
    }

    /// Makes sure `needed` pages can be made: while fewer are free, the
    /// oldest subtree that is not part of the root goes.
    fn make_room(&mut self, needed: usize) {
        while self.pages.iter().filter(|p| p.is_none()).count() < needed {
            let oldest = self
                .pages
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().filter(|p| p.parent.is_some() && !p.pinned).map(|p| (p.made, i)))
                .min();
            match oldest {
                Some((_, i)) => self.zap(i),
                None => return,
            }
        }
    }
}
// ANCHOR_END: zap

impl ShadowMmu {
    /// Makes a page of `level`, pointed at from `parent`, in a free index.
    fn make(&mut self, level: u8, parent: Option<(usize, usize)>, pinned: bool) -> KResult<usize> {
        let free = self.pages.iter().position(Option::is_none).ok_or(Errno::ENOMEM)?;
        let table = if level == 3 && !self.long_mode { Page::alloc_zeroed_below_4g()? } else { Page::alloc_zeroed()? };
        let (mut children, mut frames) = (Vec::new(), Vec::new());
        if level == 1 {
            frames.try_reserve_exact(ENTRIES).map_err(|_| Errno::ENOMEM)?;
            frames.resize_with(ENTRIES, || None);
        } else {
            children.try_reserve_exact(ENTRIES).map_err(|_| Errno::ENOMEM)?;
            children.resize(ENTRIES, None);
        }
        self.clock += 1;
        self.made += 1;
        let page = ShadowPage { table, level, parent, children, frames, made: self.clock, pinned };
        if let Some(slot) = self.pages.get_mut(free) {
            *slot = Some(page);
        }
        Ok(free)
    }

    /// A new root: a PML4, or a PAE PDPT with its four page directories
    /// made at once (the processor reads PDPTEs only when CR3 is loaded,
    /// so they must not change while the guest runs).
    fn make_root(&mut self) -> KResult<usize> {
        self.make_room(if self.long_mode { 1 } else { 5 });
        let root = self.make(if self.long_mode { 4 } else { 3 }, None, true)?;
        self.root = Some(root);
        if !self.long_mode {
            for entry in 0..4 {
                let pd = self.make(2, Some((root, entry)), true);
                let Ok(pd) = pd else {
                    self.zap_all();
                    return Err(Errno::ENOMEM);
                };
                let phys = self.page(pd).map(|p| p.table.phys()).unwrap_or(0);
                if let Some(r) = self.page_mut(root) {
                    write_entry(&r.table, entry, phys | PAE_PDPTE);
                    if let Some(slot) = r.children.get_mut(entry) {
                        *slot = u16::try_from(pd).ok();
                    }
                }
            }
        }
        Ok(root)
    }
}

// ANCHOR: shadow_fetch
impl ShadowMmu {
    /// The guest page mapped at `linear`'s page, if the shadow maps it.
    pub fn mapped(&self, linear: u64) -> Option<&PageRef> {
        let table = self.page_table(linear)?;
        self.page(table)?.frames.get(index(linear, 1, self.long_mode))?.as_ref()
    }
}

/// Reads `buf.len()` bytes at `linear` through `mapped`, page by page.
pub fn read_through(mapped: impl Fn(u64) -> Option<*const u8>, linear: u64, buf: &mut [u8]) -> bool {
    let mut address = linear;
    let mut done = 0;
    while done < buf.len() {
        let Some(page) = mapped(address) else { return false };
        let offset = (address as usize) & (PAGE_SIZE - 1);
        let n = (PAGE_SIZE - offset).min(buf.len() - done);
        let Some(dst) = buf.get_mut(done..done + n) else { return false };
        // SAFETY: `mapped` gives a live guest page (the shadow holds a
        // reference); `offset + n` is within it. Userspace may write it at
        // the same time, which can only give stale bytes.
        unsafe { core::ptr::copy_nonoverlapping(page.add(offset), dst.as_mut_ptr(), n) };
        done += n;
        address = address.wrapping_add(n as u64);
    }
    true
}
// ANCHOR_END: shadow_fetch

/// Writes entry `index` of the table in `page` with one aligned 64-bit
/// store: the processor may be walking it on this CPU's behalf.
pub(super) fn write_entry(page: &Page, index: usize, value: u64) {
    if index < ENTRIES {
        // SAFETY: `index` is within the page, which is alive and 8-byte
        // aligned; the page is the module's own, never mapped to userspace.
        unsafe { page.addr().cast::<u64>().add(index).write_volatile(value) };
    }
}

//@ begin 9
/// Reads entry `index` of the table in `page` (0 past its end).
pub(super) fn read_entry(page: &Page, index: usize) -> u64 {
    if index >= ENTRIES {
        return 0;
    }
    // SAFETY: `index` is within the page, which is alive and 8-byte aligned.
    unsafe { page.addr().cast::<u64>().add(index).read_volatile() }
}
//@ end

#[cfg(test)]
#[path = "shadow_tests.rs"]
mod tests;
