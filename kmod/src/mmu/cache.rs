//@ stage 9
//! The shadow page cache of 2.6.20-rc4: shadow pages that outlive a CR3
//! load.
//!
//! The naive MMU of stage 08 ([`super::shadow`]) keeps shadow pages in a
//! tree indexed by linear address, so it must throw the tree away whenever
//! the guest switches address spaces. Here a shadow page stands for one
//! guest page table: it is found by the guest frame that holds the table
//! and its [`Role`], and shared by every address space, every CR3, whose
//! walk passes through that table. Switching back to an address space
//! finds its shadow pages still there.
//!
//! Keeping them is only correct if they follow the guest's tables. So
//! every guest page table that has a shadow page is write-protected: the
//! shadow maps it read-only wherever it maps it, found through the
//! reverse map ([`Rmap`]: guest frame to the shadow entries that map it).
//! A guest write to such a table faults, and the module throws away the
//! shadow pages of that table, unprotects it and lets the write happen
//! (2006 emulated the write and updated the shadow instead; the emulator
//! comes in stage 10). A write to a table the faulting access itself is
//! translated through cannot be done that way (the fault would come back
//! for ever): those shadow pages become *unsync*, writable and possibly
//! stale, until the guest's next CR3 load or `invlpg`, which the processor
//! requires anyway before a changed entry must take effect (SDM Vol. 3A,
//! 4.10.4 "Invalidation of TLBs and Paging-Structure Caches").

use super::walk::{PagingMode, Translation};
use crate::kernel::{Errno, KResult, PAGE_SHIFT, Page, PageRef};
use alloc::vec::Vec;

// ANCHOR: role
/// What a shadow page is, besides the guest frame it shadows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// Its level in the shadow's tables: 1 for a page table up to 4.
    pub level: u8,
    /// The guest's paging format.
    pub guest: PagingMode,
    /// Which part of a larger guest table it shadows: a 32-bit guest's
    /// page directory (1,024 entries of 4 MiB) needs four shadow
    /// directories of 512 entries of 2 MiB, and its page table (4 MiB)
    /// two shadow page tables.
    pub quadrant: u8,
    /// It maps part of a guest large page: no guest table is behind it,
    /// and `gfn` is the first guest frame it maps.
    pub direct: bool,
    /// The rights the guest's entries above it grant (bit 0 write, bit 1
    /// user, bit 2 execute): two walks that reach one guest table with
    /// different rights need different shadow pages.
    pub access: u8,
}

pub const ACCESS_W: u8 = 1;
pub const ACCESS_U: u8 = 2;
pub const ACCESS_X: u8 = 4;
pub const ACCESS_ALL: u8 = ACCESS_W | ACCESS_U | ACCESS_X;
// ANCHOR_END: role

/// The bits of a shadow entry, and its reads and writes: as in the naive
/// MMU, [`super::shadow`].
use super::shadow::{A, D, ENTRIES, NON_LEAF, P, PAE_PDPTE, RW, US, XD, read_entry, write_entry};
/// No link: the end of a reverse-map chain.
const NIL: u32 = u32::MAX;
/// Buckets of the reverse map, and of the hash of shadow pages by guest
/// frame: a power of two.
const RMAP_BUCKETS: usize = 4096;
/// No page: the end of a hash chain.
const NO_PAGE: u16 = u16::MAX;

pub use super::shadow::{Leaf, MAX_SHADOW_PAGES};

// ANCHOR: cached_page
/// One shadow page of the cache.
struct CachedPage {
    table: Page,
    /// The guest frame of the table it shadows (of the first page it maps,
    /// if direct).
    gfn: u64,
    role: Role,
    /// The entries that point at it: (shadow page, entry).
    parents: Vec<(u16, u16)>,
    /// Non-leaf pages: the shadow page each entry points at.
    children: Vec<Option<u16>>,
    /// Page tables: the guest page each entry maps, its frame, and the
    /// next link of the reverse-map chain the entry is in.
    frames: Vec<Option<PageRef>>,
    gfns: Vec<u64>,
    next: Vec<u32>,
    /// When it was last used, to recycle the least recently used.
    used: u64,
    /// The guest may write its table without a fault (see the module
    /// text); thrown away at the next CR3 load or `invlpg`.
    unsync: bool,
    /// The next page in its hash chain.
    hash_next: u16,
}
// ANCHOR_END: cached_page

/// The root the processor starts from.
enum Root {
    None,
    /// Long mode: a shadow PML4.
    Long(u16),
    /// Otherwise: the module's own PAE PDPT, whose four entries point at
    /// shadow page directories (or at none, where the guest's PDPTE is not
    /// present).
    Pae([Option<u16>; 4]),
}

// ANCHOR: cached_mmu
/// One vCPU's shadow page cache.
pub struct CachedMmu {
    pages: Vec<Option<CachedPage>>,
    root: Root,
    /// The PDPT of a PAE-shaped root, below 4 GiB: CR3 holds it.
    pae_root: Page,
    /// The reverse map's chains, by guest frame.
    rmap: Vec<u32>,
    /// The first page of each hash chain: the pages whose guest frames
    /// share a bucket, linked through `hash_next`.
    hash: Vec<u16>,
    /// Pages in use.
    live: usize,
    clock: u64,
    /// Shadow pages made and thrown away since the last `take_counts`.
    made: u64,
    zapped: u64,
    /// Translations were removed or write-protected: flush the TLB.
    pub needs_flush: bool,
    //@ begin 13
    /// The guest table the emulator wrote last, and how many writes in a
    /// row went to it with no shadow fault between: the flood detector.
    last_write: (u64, u32),
    /// The guest invalidated (a CR3 load, a whole `invlpg`), or a page the
    /// cache held already was linked in again: before the next entry, the
    /// unsync page tables the root then reaches are resynced
    /// ([`CachedMmu::resync`]).
    pub sync_pending: bool,
    //@ end
}
// ANCHOR_END: cached_mmu

impl CachedMmu {
    pub fn new() -> KResult<CachedMmu> {
        let mut pages = Vec::new();
        pages.try_reserve_exact(MAX_SHADOW_PAGES).map_err(|_| Errno::ENOMEM)?;
        pages.resize_with(MAX_SHADOW_PAGES, || None);
        //@ begin 13
        pages.try_reserve_exact(CACHED_PAGES.saturating_sub(MAX_SHADOW_PAGES)).map_err(|_| Errno::ENOMEM)?;
        pages.resize_with(CACHED_PAGES.max(MAX_SHADOW_PAGES), || None);
        //@ end
        let mut rmap = Vec::new();
        rmap.try_reserve_exact(RMAP_BUCKETS).map_err(|_| Errno::ENOMEM)?;
        rmap.resize(RMAP_BUCKETS, NIL);
        let mut hash = Vec::new();
        hash.try_reserve_exact(RMAP_BUCKETS).map_err(|_| Errno::ENOMEM)?;
        hash.resize(RMAP_BUCKETS, NO_PAGE);
        let pae_root = Page::alloc_zeroed_below_4g()?;
        Ok(CachedMmu {
            pages,
            root: Root::None,
            pae_root,
            rmap,
            hash,
            live: 0,
            clock: 0,
            made: 0,
            zapped: 0,
            needs_flush: false,
            //@ begin 13
            last_write: (u64::MAX, 0),
            sync_pending: false,
            //@ end
        })
    }

    /// Shadow pages in use.
    pub fn in_use(&self) -> usize {
        self.live
    }

    /// The most pages it keeps.
    pub fn capacity(&self) -> usize {
        self.pages.len()
    }

    /// Pages made and zapped since the last call.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (core::mem::take(&mut self.made), core::mem::take(&mut self.zapped))
    }

    fn page(&self, i: usize) -> Option<&CachedPage> {
        self.pages.get(i)?.as_ref()
    }

    fn page_mut(&mut self, i: usize) -> Option<&mut CachedPage> {
        self.pages.get_mut(i)?.as_mut()
    }
}

/// The entry of a shadow table at `level` that covers `linear`.
fn index(linear: u64, level: u8) -> usize {
    ((linear >> (PAGE_SHIFT + 9 * u32::from(level.saturating_sub(1)))) & 511) as usize
}

// ANCHOR: lookup
impl CachedMmu {
    /// The shadow page of guest frame `gfn` in `role`, from the cache or
    /// made now. A new page of a guest table write-protects the table.
    fn get(&mut self, gfn: u64, role: Role) -> KResult<usize> {
        self.clock += 1;
        let clock = self.clock;
        let found = self.chain(gfn).find(|&i| self.page(i).is_some_and(|p| p.role == role));
        if let Some(p) = found.and_then(|i| self.page_mut(i)) {
            p.used = clock;
        }
        if let Some(i) = found {
            return Ok(i);
        }
        let i = self.make(gfn, role)?;
        if !role.direct {
            self.write_protect(gfn);
        }
        Ok(i)
    }

    /// Whether guest frame `gfn` holds a table the cache shadows and keeps
    /// in sync: the shadow must not map it writable.
    pub fn is_protected(&self, gfn: u64) -> bool {
        self.chain(gfn).any(|i| self.page(i).is_some_and(|p| !p.role.direct && !p.unsync))
    }

    /// The pages of guest frame `gfn`, direct ones included: those of its
    /// hash chain that have that frame.
    fn chain(&self, gfn: u64) -> impl Iterator<Item = usize> + '_ {
        let mut at = self.hash.get(bucket(gfn)).copied().unwrap_or(NO_PAGE);
        core::iter::from_fn(move || {
            while at != NO_PAGE {
                let i = usize::from(at);
                let p = self.page(i)?;
                at = p.hash_next;
                if p.gfn == gfn {
                    return Some(i);
                }
            }
            None
        })
    }

    /// Makes every shadow entry that maps `gfn` read-only.
    fn write_protect(&mut self, gfn: u64) {
        //@ exercise E9.1
        //@ instruction: Once guest frame `gfn` holds a table the cache
        //@+ shadows, no shadow entry may let the guest write it, or the
        //@+ guest could change its table behind the cache's back. Find every
        //@+ entry that maps `gfn` through the reverse map (`rmap`, `bucket`,
        //@+ `split`, each leaf's `gfns` and `next`), take away its write
        //@+ right, and remember that the TLB may still hold the old
        //@+ translation (SDM Vol. 3A, 4.10.4.1). The tests in `e9_1` check
        //@+ the shadow the processor would walk.
        //@ hint: Start at `gfn`'s bucket in `rmap` and follow the chain:
        //@+ what does each link name, and how do you know whether the entry
        //@+ it names maps `gfn`?
        //@ hint: A chain may hold entries of other frames that share the
        //@+ bucket: compare the entry's `gfns`. Leave the entry as
        //@+ `set_leaf` would have written it read-only: the shadow's D bit
        //@+ goes with its RW bit. An entry you changed may still be in the
        //@+ TLB: `needs_flush`.
        //@ hint: `let mut link = self.rmap.get(bucket(gfn)).copied()
        //@+ .unwrap_or(NIL);` and while `link != NIL`: `split(link)` into
        //@+ page and entry, read `next` first, and if `gfns[entry] == gfn`
        //@+ and the entry has RW, write it back with `old & !(RW | D)` and
        //@+ set `self.needs_flush`.
        let mut link = self.rmap.get(bucket(gfn)).copied().unwrap_or(NIL);
        while link != NIL {
            let (page, entry) = split(link);
            let Some(p) = self.page(page) else { return };
            let next = p.next.get(entry).copied().unwrap_or(NIL);
            if p.gfns.get(entry) == Some(&gfn) {
                let old = read_entry(&p.table, entry);
                if old & RW != 0 {
                    write_entry(&p.table, entry, old & !(RW | D));
                    self.needs_flush = true;
                }
            }
            link = next;
        }
        //@ end
    }
}

//@ begin 11
impl CachedMmu {
    /// Makes every shadow entry that maps `gfn` read-only, for the dirty
    /// log.
    pub fn write_protect_gfn(&mut self, gfn: u64) {
        self.write_protect(gfn);
    }
}
//@ end

/// The bucket of a guest frame, in the reverse map and in the hash of
/// shadow pages: the top bits of a multiplicative hash (Knuth's).
fn bucket(gfn: u64) -> usize {
    (gfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RMAP_BUCKETS.trailing_zeros())) as usize % RMAP_BUCKETS
}

/// A reverse-map link: shadow page and entry in one number.
fn link(page: usize, entry: usize) -> u32 {
    (page * ENTRIES + entry) as u32
}

fn split(link: u32) -> (usize, usize) {
    (link as usize / ENTRIES, link as usize % ENTRIES)
}
// ANCHOR_END: lookup

// ANCHOR: fill
impl CachedMmu {
    /// Installs the translation `t` of `linear`, which the guest's tables
    /// allow, as `leaf` says: down from the root through the shadow pages
    /// of the guest tables `t` went through (made if missing), then the
    /// leaf entry, read-only if the page it maps is a protected guest table.
    pub fn install(&mut self, linear: u64, t: &Translation, mode: PagingMode, mut leaf: Leaf) -> KResult<()> {
        //@ begin 13
        // The guest uses its tables between writes: not a flood.
        self.last_write.1 = 0;
        //@ end
        self.make_room(4);
        let gfn = t.gpa >> PAGE_SHIFT;
        let mut at = self.root_for(linear).ok_or(Errno::EINVAL)?;
        let top = if mode == PagingMode::Long { 4 } else { 2 };
        for level in (2..=top).rev() {
            at = self.child(at, linear, level, t, mode)?;
        }
        if self.is_protected(gfn) {
            leaf.writable = false;
        }
        self.set_leaf(at, index(linear, 1), gfn, leaf)
    }

    /// The shadow page below entry `linear` of page `at` at `level`: the
    /// one the link points at, or the shadow of the guest table (or large
    /// page) the walk found there, linked now.
    fn child(&mut self, at: usize, linear: u64, level: u8, t: &Translation, mode: PagingMode) -> KResult<usize> {
        let entry = index(linear, level);
        let parent = self.page(at).ok_or(Errno::EINVAL)?;
        let (gfn, role) = child_of(parent.role, linear, level, t, mode).ok_or(Errno::EINVAL)?;
        if let Some(Some(linked)) = parent.children.get(entry).copied() {
            let linked = usize::from(linked);
            if self.page(linked).is_some_and(|c| c.gfn == gfn && c.role == role) {
                return Ok(linked);
            }
            // An unsync parent whose guest entry changed: the link is stale.
            self.unlink(at, entry);
        }
        //@ begin 13
        // A page cached already may be an unsync table, or lead to one,
        // that this address space has not seen since it last invalidated.
        if self.chain(gfn).any(|i| self.page(i).is_some_and(|p| p.role == role && (p.unsync || p.role.level > 1))) {
            self.sync_pending = true;
        }
        //@ end
        let child = self.get(gfn, role)?;
        self.link(at, entry, child)?;
        Ok(child)
    }

    /// Clears entry `entry` of page `at`, a link to a child.
    fn unlink(&mut self, at: usize, entry: usize) {
        let Some(child) = self.page_mut(at).and_then(|p| p.children.get_mut(entry)).and_then(Option::take) else {
            return;
        };
        if let Some(p) = self.page(at) {
            write_entry(&p.table, entry, 0);
        }
        if let Some(c) = self.page_mut(usize::from(child)) {
            c.parents.retain(|&(p, e)| (usize::from(p), usize::from(e)) != (at, entry));
        }
        self.needs_flush = true;
    }

    /// Points entry `entry` of page `at` at page `child`.
    fn link(&mut self, at: usize, entry: usize, child: usize) -> KResult<()> {
        let phys = self.page(child).map(|c| c.table.phys()).ok_or(Errno::EINVAL)?;
        let c = self.page_mut(child).ok_or(Errno::EINVAL)?;
        c.parents.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        c.parents.push((at as u16, entry as u16));
        let p = self.page_mut(at).ok_or(Errno::EINVAL)?;
        if let Some(slot) = p.children.get_mut(entry) {
            *slot = Some(child as u16);
        }
        write_entry(&p.table, entry, phys | NON_LEAF);
        Ok(())
    }

    /// Writes leaf entry `entry` of page table `at`, keeping the reverse
    /// map in step.
    fn set_leaf(&mut self, at: usize, entry: usize, gfn: u64, leaf: Leaf) -> KResult<()> {
        self.clear_leaf(at, entry);
        let head = self.rmap.get(bucket(gfn)).copied().unwrap_or(NIL);
        let p = self.page_mut(at).ok_or(Errno::EINVAL)?;
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
        let (Some(frame), Some(g), Some(next)) = (p.frames.get_mut(entry), p.gfns.get_mut(entry), p.next.get_mut(entry))
        else {
            return Err(Errno::EINVAL);
        };
        (*frame, *g, *next) = (Some(leaf.page), gfn, head);
        write_entry(&p.table, entry, value);
        if let Some(h) = self.rmap.get_mut(bucket(gfn)) {
            *h = link(at, entry);
        }
        Ok(())
    }

    /// Clears leaf entry `entry` of page table `at` and takes it out of
    /// the reverse map.
    fn clear_leaf(&mut self, at: usize, entry: usize) {
        let Some(p) = self.page_mut(at) else { return };
        let Some(frame) = p.frames.get_mut(entry) else { return };
        if frame.take().is_none() {
            return;
        }
        write_entry(&p.table, entry, 0);
        let gfn = p.gfns.get(entry).copied().unwrap_or(0);
        let after = p.next.get(entry).copied().unwrap_or(NIL);
        let me = link(at, entry);
        let Some(head) = self.rmap.get(bucket(gfn)).copied() else { return };
        if head == me {
            if let Some(h) = self.rmap.get_mut(bucket(gfn)) {
                *h = after;
            }
            return;
        }
        let mut cur = head;
        while cur != NIL {
            let (page, e) = split(cur);
            let Some(next) = self.page(page).and_then(|p| p.next.get(e).copied()) else { return };
            if next == me {
                if let Some(n) = self.page_mut(page).and_then(|p| p.next.get_mut(e)) {
                    *n = after;
                }
                return;
            }
            cur = next;
        }
    }
}

/// What shadows the table below `linear`'s entry of a shadow page at
/// `level` in `role`: the guest table the walk `t` found in that entry,
/// or, below a guest large page, a direct page of the frames it maps.
fn child_of(role: Role, linear: u64, level: u8, t: &Translation, mode: PagingMode) -> Option<(u64, Role)> {
    //@ exercise E9.2
    //@ instruction: Say which shadow page belongs below `linear`'s entry
    //@+ of a shadow page at `level`: the guest frame it stands for and its
    //@+ `Role`. Two walks may share a shadow page only if every entry in it
    //@+ would be the same for both: think of what else than the guest
    //@+ table decides an entry (the rights above it: SDM Vol. 3A, 4.6; a
    //@+ guest large page, which has no table; a 32-bit guest's tables,
    //@+ twice the reach of the shadow's). The tests in `e9_2` check it.
    //@ hint: List what, besides the guest table's frame, decides the
    //@+ entries of a shadow page: the rights of the levels above it, the
    //@+ kind of page below (a guest large page has no table of its own),
    //@+ and for a 32-bit guest which part of the guest table it shadows.
    //@+ Each must be in the `Role`, or two walks would share a page they
    //@+ should not.
    //@ hint: `t.entries[level - 1]` is the guest entry at `level`; below
    //@+ a direct page everything is direct; `rights` and `table_address`
    //@+ read an entry; bit 21 of the address picks half of a 32-bit page
    //@+ table. A guest large page whose D bit is clear is mapped without
    //@+ write access until the guest writes it, and once dirty it is
    //@+ another role.
    //@ hint: `below = level - 1`; `direct_gfn` is `t.gpa`'s frame rounded
    //@+ down to what one entry at `level` covers. A direct `role`: `(
    //@+ direct_gfn, Role { level: below, quadrant: 0, ..role })`. Else
    //@+ `access = role.access & rights(guest.value, mode)`; at the guest's
    //@+ leaf level (`guest_leaf_level(t.page_size)`), a direct role with
    //@+ that access (less `ACCESS_W` while D is clear); otherwise the
    //@+ frame of `table_address(guest.value, mode)`, with `quadrant` =
    //@+ bit 21 of `linear` for a 32-bit guest's level-1 tables.
    let below = level.checked_sub(1).filter(|&l| l >= 1)?;
    let covers = 1u64 << (9 * u32::from(below - 1) + 9);
    let direct_gfn = (t.gpa >> PAGE_SHIFT) & !(covers - 1);
    if role.direct {
        return Some((direct_gfn, Role { level: below, quadrant: 0, ..role }));
    }
    let guest = t.entries.get(usize::from(level) - 1).copied().flatten()?;
    let access = role.access & rights(guest.value, mode);
    if guest_leaf_level(t.page_size) == level {
        // A large page the guest has not dirtied is mapped read-only, so
        // that its first write faults and the walk sets the D bit of the
        // guest's entry; once dirty it is another role, writable.
        const D_BIT: u64 = 1 << 6;
        let access = if guest.value & D_BIT == 0 { access & !ACCESS_W } else { access };
        return Some((direct_gfn, Role { level: below, guest: mode, quadrant: 0, direct: true, access }));
    }
    let table = table_address(guest.value, mode) >> PAGE_SHIFT;
    let quadrant = if mode == PagingMode::Bits32 && below == 1 { ((linear >> 21) & 1) as u8 } else { 0 };
    Some((table, Role { level: below, guest: mode, quadrant, direct: false, access }))
    //@ end
}

/// The guest level whose entry maps a page of `page_size`.
fn guest_leaf_level(page_size: u64) -> u8 {
    match page_size {
        0x1000 => 1,
        0x20_0000 | 0x40_0000 => 2,
        _ => 3,
    }
}

/// The rights a guest entry grants.
fn rights(entry: u64, mode: PagingMode) -> u8 {
    let mut r = 0;
    if entry & RW != 0 {
        r |= ACCESS_W;
    }
    if entry & US != 0 {
        r |= ACCESS_U;
    }
    if mode == PagingMode::Bits32 || entry & XD == 0 {
        r |= ACCESS_X;
    }
    r
}

/// The table address in a guest entry.
fn table_address(entry: u64, mode: PagingMode) -> u64 {
    match mode {
        PagingMode::Bits32 => entry & 0xFFFF_F000,
        _ => entry & 0x000F_FFFF_FFFF_F000,
    }
}
// ANCHOR_END: fill

// ANCHOR: root
impl CachedMmu {
    /// Points the root at the guest's top-level tables: CR3's for long
    /// mode and 32-bit paging, the four PDPTEs' for PAE. Shadow pages
    /// already cached for them are reused; that is the whole point.
    pub fn set_root(&mut self, mode: PagingMode, cr3: u64, pdptes: &[u64; 4]) -> KResult<()> {
        self.make_room(4);
        let old = core::mem::replace(&mut self.root, Root::None);
        self.needs_flush = true;
        let root = match mode {
            PagingMode::Long => {
                let role = Role { level: 4, guest: mode, quadrant: 0, direct: false, access: ACCESS_ALL };
                Root::Long(self.get((cr3 & 0x000F_FFFF_FFFF_F000) >> PAGE_SHIFT, role)? as u16)
            }
            PagingMode::Pae | PagingMode::Bits32 => {
                let mut children = [None; 4];
                for (i, child) in children.iter_mut().enumerate() {
                    let (gfn, quadrant) = match mode {
                        PagingMode::Pae if pdptes[i] & P != 0 => ((pdptes[i] & 0x000F_FFFF_FFFF_F000) >> PAGE_SHIFT, 0),
                        PagingMode::Pae => continue,
                        _ => ((cr3 & 0xFFFF_F000) >> PAGE_SHIFT, i as u8),
                    };
                    let role = Role { level: 2, guest: mode, quadrant, direct: false, access: ACCESS_ALL };
                    *child = Some(self.get(gfn, role)? as u16);
                }
                Root::Pae(children)
            }
        };
        let _ = old;
        self.root = root;
        self.write_pae_root();
        Ok(())
    }

    /// The root's host-physical address, for CR3.
    pub fn root_phys(&self) -> Option<u64> {
        match self.root {
            Root::None => None,
            Root::Long(i) => self.page(usize::from(i)).map(|p| p.table.phys()),
            Root::Pae(_) => Some(self.pae_root.phys()),
        }
    }

    /// The shadow page the walk of `linear` starts in.
    fn root_for(&self, linear: u64) -> Option<usize> {
        match self.root {
            Root::None => None,
            Root::Long(i) => Some(usize::from(i)),
            Root::Pae(children) => children.get(((linear >> 30) & 3) as usize).copied().flatten().map(usize::from),
        }
    }

    /// Writes the PAE root's four entries from `root`.
    fn write_pae_root(&self) {
        let Root::Pae(children) = self.root else { return };
        for (i, child) in children.iter().enumerate() {
            let value = child.and_then(|c| self.page(usize::from(c))).map_or(0, |p| p.table.phys() | PAE_PDPTE);
            write_entry(&self.pae_root, i, value);
        }
    }

    /// Whether page `i` is part of the root.
    fn in_root(&self, i: usize) -> bool {
        match self.root {
            Root::None => false,
            Root::Long(r) => usize::from(r) == i,
            Root::Pae(children) => children.contains(&Some(i as u16)),
        }
    }
}
// ANCHOR_END: root

// ANCHOR: write_fault
impl CachedMmu {
    /// A guest write to guest frame `gfn`, which the cache protects. If
    /// `gfn` is neither one of the tables `t` went through nor a table of
    /// the root, its shadow pages are thrown away (the guest's table
    /// changes, so they would be wrong) and the write may go ahead; if it
    /// is, they become unsync.
    pub fn unprotect(&mut self, gfn: u64, t: &Translation) {
        let on_path = goes_through(t, gfn);
        let shadows: Vec<usize> = self.shadows_of(gfn);
        // A table of the root cannot go either: the next entry would make
        // it again, protected, before the guest's write is done.
        let keep = on_path || shadows.iter().any(|&i| self.in_root(i));
        for i in shadows {
            // A page already unsync may stay so: it goes at the next flush.
            if keep || self.page(i).is_some_and(|p| p.unsync) {
                if let Some(p) = self.page_mut(i) {
                    p.unsync = true;
                }
            } else {
                self.zap(i);
            }
        }
        self.needs_flush = true;
    }

    //@ begin 10
    /// Guest RAM from `gpa` on, `len` bytes, was written where no fault
    /// saw it (by the emulator): the shadow pages of any table the cache
    /// shadows there go.
    pub fn forget_table(&mut self, gpa: u64, len: usize) {
        let last = gpa.saturating_add(len.max(1) as u64 - 1) >> PAGE_SHIFT;
        for gfn in gpa >> PAGE_SHIFT..=last {
            for i in self.shadows_of(gfn) {
                self.zap(i);
            }
        }
    }
    //@ end
    //@ begin 13

    // ANCHOR: table_written
    /// The emulator wrote `len` bytes at guest-physical `gpa`. If that is
    /// a guest table the cache shadows, the shadow entries of the guest
    /// entries written are dropped, and the table stays shadowed and
    /// protected: the next access through a dropped entry faults and
    /// fills it from the new guest entry. A table written [`FLOOD`] times
    /// in a row, with no shadow fault between, is being filled or
    /// cleared, not used: then nothing is done here and the answer is
    /// `false`, and the caller throws its shadow pages away as stage 10
    /// did ([`CachedMmu::forget_table`]); the guest writes it at full
    /// speed until a walk shadows it again.
    pub fn table_written(&mut self, gpa: u64, len: usize) -> bool {
        let gfn = gpa >> PAGE_SHIFT;
        let shadows = self.shadows_of(gfn);
        if shadows.is_empty() {
            return true;
        }
        let run = if self.last_write.0 == gfn { self.last_write.1.saturating_add(1) } else { 1 };
        self.last_write = (gfn, run);
        if run >= FLOOD {
            return false;
        }
        let offset = (gpa & 0xFFF) as usize;
        let end = offset.saturating_add(len.max(1)).min(0x1000);
        for i in shadows {
            let Some(role) = self.page(i).map(|p| p.role) else { continue };
            let width = if role.guest == PagingMode::Bits32 { 4 } else { 8 };
            for guest_entry in offset / width..end.div_ceil(width) {
                for entry in shadow_entries(role, guest_entry) {
                    if role.level == 1 {
                        self.clear_leaf(i, entry);
                    } else {
                        self.unlink(i, entry);
                    }
                }
            }
        }
        self.needs_flush = true;
        true
    }
    // ANCHOR_END: table_written

    // ANCHOR: unsync_leaves
    /// A guest write to protected table `gfn`: if the table is shadowed
    /// only as a page table (level 1, which Linux's tables of processes
    /// are), its shadow pages become unsync and the write goes ahead, and
    /// so do the guest's later writes, with no exit, until the next CR3
    /// load or `invlpg` ([`CachedMmu::resync`]). Linux's KVM has done this
    /// since 2008 (`mmu_need_write_protect`). A table shadowed at a higher
    /// level stays protected: its writes are emulated.
    pub fn unsync_leaves(&mut self, gfn: u64) -> bool {
        let shadows = self.shadows_of(gfn);
        if shadows.is_empty() || shadows.iter().any(|&i| self.page(i).is_none_or(|p| p.role.level != 1)) {
            return false;
        }
        for i in shadows {
            if let Some(p) = self.page_mut(i) {
                p.unsync = true;
            }
        }
        true
    }

    /// The guest loaded CR3 or executed `invlpg`, so any entry of an
    /// unsync page table it changed must now take effect (SDM Vol. 3A,
    /// 4.10.4.1) where the root reaches that table. Each such page is
    /// brought back in sync rather than thrown away: every shadow entry is
    /// checked against the guest entry it came from (`read` gives the
    /// guest's entry at a guest-physical address, of the width given): it
    /// stays, loses the rights the guest took away, or goes
    /// ([`resynced`]). Then the table is protected again, unless the guest
    /// wrote it since the last resync (a D bit of the shadow entries that
    /// map it is set: [`CachedMmu::written`]): a table in use now is
    /// likely written again soon, and protecting it would cost a fault at
    /// that write. Such a table stays unsync, its D bits cleared, and is
    /// protected at the first resync that finds them still clear. Linux's
    /// KVM protects every table it syncs. An unsync table
    /// the root does not reach (another process's, or one the guest has
    /// freed) stays as it is, writable, until a root reaches it again, as
    /// in Linux's KVM (`mmu_sync_children`). Unsync pages of higher levels
    /// are left to [`CachedMmu::sync`]. The answer is how many tables
    /// were brought back in sync.
    pub fn resync(&mut self, read: &mut dyn FnMut(u64, usize) -> Option<u64>) -> u64 {
        let mut count = 0;
        for i in 0..self.pages.len() {
            let Some((gfn, role)) = self.page(i).filter(|p| p.unsync && p.role.level == 1).map(|p| (p.gfn, p.role))
            else {
                continue;
            };
            if !self.reaches(i, 3) {
                continue;
            }
            let (width, first) = match role.guest {
                PagingMode::Bits32 => (4, usize::from(role.quadrant) * ENTRIES),
                _ => (8, 0),
            };
            for entry in 0..ENTRIES {
                let Some(p) = self.page(i) else { break };
                if p.frames.get(entry).is_none_or(Option::is_none) {
                    continue;
                }
                let shadow = read_entry(&p.table, entry);
                let mapped = p.gfns.get(entry).copied().unwrap_or(u64::MAX);
                let at = (gfn << PAGE_SHIFT).wrapping_add(((first + entry) * width) as u64);
                match read(at, width).and_then(|guest| resynced(guest, shadow, mapped, role.guest)) {
                    Some(kept) if kept == shadow => {}
                    Some(kept) => write_entry(&p.table, entry, kept),
                    None => self.clear_leaf(i, entry),
                }
            }
            self.needs_flush = true;
            if self.written(gfn, false) {
                continue;
            }
            if let Some(p) = self.page_mut(i) {
                p.unsync = false;
            }
            self.write_protect(gfn);
            count += 1;
        }
        // The tables that stay unsync: their next write must show. The
        // flush at the coming entry makes the processor set D again.
        for i in 0..self.pages.len() {
            if let Some(gfn) = self.page(i).filter(|p| p.unsync && p.role.level == 1).map(|p| p.gfn)
                && self.reaches(i, 3)
            {
                self.written(gfn, true);
            }
        }
        count
    }

    /// Whether a shadow entry that maps guest frame `gfn` writable has its
    /// D bit set: the processor wrote the frame through it since the bit
    /// was set or last cleared. With `clear`, the bits are cleared.
    fn written(&mut self, gfn: u64, clear: bool) -> bool {
        let mut found = false;
        let mut link = self.rmap.get(bucket(gfn)).copied().unwrap_or(NIL);
        while link != NIL {
            let (page, entry) = split(link);
            let Some(p) = self.page(page) else { break };
            link = p.next.get(entry).copied().unwrap_or(NIL);
            if p.gfns.get(entry) != Some(&gfn) {
                continue;
            }
            let old = read_entry(&p.table, entry);
            if old & (RW | D) == RW | D {
                found = true;
                if clear {
                    write_entry(&p.table, entry, old & !D);
                }
            }
        }
        found
    }

    /// Whether the root reaches page `i` through at most `depth` links.
    fn reaches(&self, i: usize, depth: u8) -> bool {
        self.in_root(i)
            || depth > 0
                && self.page(i).is_some_and(|p| p.parents.iter().any(|&(up, _)| self.reaches(usize::from(up), depth - 1)))
    }
    // ANCHOR_END: unsync_leaves

    // ANCHOR: invalidate_page
    /// `invlpg` of `linear`, where the shadow reaches it through tables in
    /// sync down to a page table: only `linear`'s own entry goes, which is
    /// all the processor must forget (SDM Vol. 3A, 4.10.4.1), and the page
    /// table stays as it is, unsync and writable if it was, until the next
    /// CR3 load; Linux's KVM does the same (`invlpg` in `paging_tmpl.h`).
    /// `false` if the shadow reaches `linear` otherwise (through an unsync
    /// table above the last level, or below a guest large page): then the
    /// whole of [`CachedMmu::invalidate`] must run.
    pub fn invalidate_page(&mut self, linear: u64, mode: PagingMode) -> bool {
        let Some(mut at) = self.root_for(linear) else { return true };
        let top = if mode == PagingMode::Long { 4 } else { 2 };
        for level in (2..=top).rev() {
            let Some(p) = self.page(at).filter(|p| !p.unsync && !p.role.direct) else { return false };
            match p.children.get(index(linear, level)).copied().flatten() {
                Some(child) => at = usize::from(child),
                // Nothing below: the shadow holds no translation of it.
                None => return true,
            }
        }
        if self.page(at).is_none_or(|p| p.role.direct) {
            return false;
        }
        self.clear_leaf(at, index(linear, 1));
        self.needs_flush = true;
        true
    }
    // ANCHOR_END: invalidate_page
    //@ end

    /// The shadow pages of guest table `gfn` (not direct ones).
    fn shadows_of(&self, gfn: u64) -> Vec<usize> {
        let mut found = Vec::new();
        if found.try_reserve(self.pages.len()).is_err() {
            return found;
        }
        found.extend(self.chain(gfn).filter(|&i| self.page(i).is_some_and(|p| !p.role.direct)));
        found
    }

    /// The guest loaded CR3 or executed `invlpg`: unsync shadow pages may
    /// be stale from now on, so they go.
    //@ begin 13
    /// Unsync page tables stay: the next entry resyncs those the root
    /// then reaches ([`CachedMmu::resync`]).
    //@ end
    pub fn sync(&mut self) {
        //@ begin 13
        self.sync_pending = true;
        //@ end
        // No list is made (that would allocate): zapping a page removes
        // only that page, so the indices can be walked as they are.
        for i in 0..self.pages.len() {
            if self.page(i).is_some_and(|p| p.unsync) {
                //@ begin 13
                if self.page(i).is_some_and(|p| p.role.level == 1) {
                    continue;
                }
                //@ end
                self.zap(i);
            }
        }
    }

    /// `invlpg`: forgets the translation of `linear`'s page.
    ///
    /// The page may have been a guest large page, which the processor's
    /// TLB held as one entry and `invlpg` removes whole (SDM Vol. 3A,
    /// 4.10.4.1): so the links to the page tables of the whole `span`
    /// around `linear` go, in this address space; the tables stay cached,
    /// and the next access links the right one again.
    pub fn invalidate(&mut self, linear: u64, mode: PagingMode, span: u64) {
        self.sync();
        let start = linear & !(span - 1);
        for chunk in (0..span).step_by(1 << 21) {
            let address = start.wrapping_add(chunk);
            let Some(mut at) = self.root_for(address) else { continue };
            let top = if mode == PagingMode::Long { 4 } else { 2 };
            for level in (3..=top).rev() {
                match self.page(at).and_then(|p| p.children.get(index(address, level)).copied().flatten()) {
                    Some(child) => at = usize::from(child),
                    None => break,
                }
            }
            if self.page(at).is_some_and(|p| p.role.level == 2) {
                self.unlink(at, index(address, 2));
            }
        }
        self.needs_flush = true;
    }
}
// ANCHOR_END: write_fault

/// Whether the walk `t` went through the guest table in frame `gfn`.
pub fn goes_through(t: &Translation, gfn: u64) -> bool {
    t.entries.iter().flatten().any(|e| e.gpa >> PAGE_SHIFT == gfn)
}
//@ begin 13

// ANCHOR: still_allows
/// What shadow entry `shadow`, which maps guest frame `gfn`, may stay as
/// now that its guest page-table entry is `guest`: itself, if the guest
/// entry still allows every right it grants (write only while D is set,
/// as [`CachedMmu::install`] made it); the same entry with fewer rights,
/// if the guest took a write or user right away (a `fork` write-protects
/// a process's pages, and they are still read); `None`, and it goes, if
/// the guest entry is not present, maps another frame, has A clear (the
/// next access must set it) or takes execution away.
fn resynced(guest: u64, shadow: u64, gfn: u64, mode: PagingMode) -> Option<u64> {
    const ACCESSED: u64 = 1 << 5;
    const DIRTY: u64 = 1 << 6;
    let same_page = guest & P != 0 && guest & ACCESSED != 0 && table_address(guest, mode) >> PAGE_SHIFT == gfn;
    let no_execute = mode != PagingMode::Bits32 && shadow & XD == 0 && guest & XD != 0;
    if !same_page || no_execute {
        return None;
    }
    let mut kept = shadow;
    if guest & RW == 0 || guest & DIRTY == 0 {
        kept &= !(RW | D);
    }
    if guest & US == 0 {
        kept &= !US;
    }
    Some(kept)
}
// ANCHOR_END: still_allows

/// Writes in a row to one guest table that make it a flood (2006's
/// `kvm_mmu_pre_write` counted to 3).
pub const FLOOD: u32 = 3;

// ANCHOR: cached_pages
/// The full module's bound on a vCPU's shadow pages, four times 2006's.
/// A Linux guest's working set is larger than 256 pages: its kernel's
/// direct map alone takes one direct page per 2 MiB it touches, and each
/// process a PML4, a PDPT, a directory and its page tables. With 256, the
/// pages recycled at every fork were made again a moment later. Linux's
/// KVM bounds them at 20 per 1,000 pages of guest memory
/// (`KVM_PERMILLE_MMU_PAGES`), 1,310 for a guest of 256 MiB. The hash of
/// [`CachedMmu::get`] keeps finding a page as cheap as with 256.
pub const CACHED_PAGES: usize = 1024;
// ANCHOR_END: cached_pages

// ANCHOR: shadow_entries
/// The entries of a shadow page in `role` that guest entry `guest_entry`
/// of the table it shadows decides (none if another shadow page of the
/// same table covers it). With 8-byte guest entries, the same index. A
/// 32-bit guest's page table of 1,024 entries is shadowed by two pages,
/// one per `quadrant`, 512 entries each; its page directory by four,
/// each covering 256 guest entries of 4 MiB with two entries of 2 MiB.
fn shadow_entries(role: Role, guest_entry: usize) -> core::ops::Range<usize> {
    let (per_quadrant, per_entry) = match (role.guest, role.level) {
        (PagingMode::Bits32, 1) => (ENTRIES, 1),
        (PagingMode::Bits32, _) => (ENTRIES / 2, 2),
        _ => return guest_entry..guest_entry + 1,
    };
    if guest_entry / per_quadrant != usize::from(role.quadrant) {
        return 0..0;
    }
    let first = (guest_entry % per_quadrant) * per_entry;
    first..first + per_entry
}
// ANCHOR_END: shadow_entries
//@ end

// ANCHOR: zap
impl CachedMmu {
    /// Frees shadow page `i`: the entries that point at it are cleared, its
    /// children forget it as a parent, and its leaf entries leave the
    /// reverse map. A page of the root takes the root with it: the next
    /// entry makes a new one.
    fn zap(&mut self, i: usize) {
        if self.page(i).is_none() {
            return;
        }
        for entry in 0..ENTRIES {
            self.clear_leaf(i, entry);
        }
        let Some(page) = self.pages.get_mut(i).and_then(Option::take) else { return };
        self.unhash(i, &page);
        self.live = self.live.saturating_sub(1);
        self.zapped += 1;
        self.needs_flush = true;
        for &(parent, entry) in &page.parents {
            if let Some(p) = self.page_mut(usize::from(parent)) {
                write_entry(&p.table, usize::from(entry), 0);
                if let Some(slot) = p.children.get_mut(usize::from(entry)) {
                    *slot = None;
                }
            }
        }
        for (entry, child) in page.children.iter().enumerate() {
            if let Some(c) = child.and_then(|c| self.page_mut(usize::from(c))) {
                c.parents.retain(|&(p, e)| (usize::from(p), usize::from(e)) != (i, entry));
            }
        }
        if self.in_root(i) {
            self.root = Root::None;
            for e in 0..4 {
                write_entry(&self.pae_root, e, 0);
            }
        }
    }

    /// Throws every shadow page away (a new paging mode, new memory
    /// slots).
    pub fn zap_all(&mut self) {
        for i in 0..self.pages.len() {
            self.zap(i);
        }
        self.root = Root::None;
    }

    /// Makes sure `needed` pages can be made: while fewer are free, the
    /// least recently used page outside the root goes.
    fn make_room(&mut self, needed: usize) {
        while self.pages.len() - self.live < needed {
            let lru = (0..self.pages.len())
                .filter(|&i| !self.in_root(i))
                .filter_map(|i| self.page(i).map(|p| (p.used, i)))
                .min();
            match lru {
                Some((_, i)) => self.zap(i),
                None => return,
            }
        }
    }

    /// Makes an empty shadow page of `gfn` in `role`.
    fn make(&mut self, gfn: u64, role: Role) -> KResult<usize> {
        let free = self.pages.iter().position(Option::is_none).ok_or(Errno::ENOMEM)?;
        let table = Page::alloc_zeroed()?;
        let (mut children, mut frames, mut gfns, mut next) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if role.level == 1 {
            frames.try_reserve_exact(ENTRIES).map_err(|_| Errno::ENOMEM)?;
            gfns.try_reserve_exact(ENTRIES).map_err(|_| Errno::ENOMEM)?;
            next.try_reserve_exact(ENTRIES).map_err(|_| Errno::ENOMEM)?;
            frames.resize_with(ENTRIES, || None);
            gfns.resize(ENTRIES, 0);
            next.resize(ENTRIES, NIL);
        } else {
            children.try_reserve_exact(ENTRIES).map_err(|_| Errno::ENOMEM)?;
            children.resize(ENTRIES, None);
        }
        let parents = Vec::new();
        self.clock += 1;
        self.made += 1;
        let Some(head) = self.hash.get_mut(bucket(gfn)) else { return Err(Errno::EINVAL) };
        let hash_next = core::mem::replace(head, free as u16);
        let page = CachedPage { table, gfn, role, parents, children, frames, gfns, next, used: self.clock, unsync: false, hash_next };
        if let Some(slot) = self.pages.get_mut(free) {
            *slot = Some(page);
        }
        self.live += 1;
        Ok(free)
    }

    /// Takes page `i`, just removed from `pages`, out of its hash chain.
    fn unhash(&mut self, i: usize, page: &CachedPage) {
        let Some(head) = self.hash.get_mut(bucket(page.gfn)) else { return };
        if usize::from(*head) == i {
            *head = page.hash_next;
            return;
        }
        let mut at = *head;
        while let Some(p) = self.pages.get_mut(usize::from(at)).and_then(Option::as_mut) {
            if usize::from(p.hash_next) == i {
                p.hash_next = page.hash_next;
                return;
            }
            at = p.hash_next;
        }
    }
}
// ANCHOR_END: zap

impl CachedMmu {
    /// The guest page mapped at `linear`'s page, if the cache maps it.
    pub fn mapped(&self, linear: u64, mode: PagingMode) -> Option<&PageRef> {
        self.page_table_of(linear, mode)?.frames.get(index(linear, 1))?.as_ref()
    }

    /// The shadow page table the processor's walk of `linear` reaches.
    fn page_table_of(&self, linear: u64, mode: PagingMode) -> Option<&CachedPage> {
        let mut at = self.root_for(linear)?;
        let top = if mode == PagingMode::Long { 4 } else { 2 };
        for level in (2..=top).rev() {
            at = usize::from(self.page(at)?.children.get(index(linear, level))?.as_ref().copied()?);
        }
        self.page(at)
    }
    //@ begin 13

    /// The shadow's leaf entry for `linear`'s page, as the processor
    /// would read it, if it maps a page.
    pub fn leaf_entry(&self, linear: u64, mode: PagingMode) -> Option<u64> {
        let p = self.page_table_of(linear, mode)?;
        p.frames.get(index(linear, 1))?.as_ref()?;
        Some(read_entry(&p.table, index(linear, 1)))
    }
    //@ end
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
