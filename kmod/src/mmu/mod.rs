//@ stage 5
//! The MMU: the page tables the guest really runs on, which the module
//! builds and the guest never sees.
//!
//! Stage 05 has one kind: [`nonpaging`], for a guest whose own paging is
//! off.
//@ begin 8
//! Stage 08 adds the guest's side, [`walk`] (the guest's own page
//! tables, read as the processor reads them), and [`shadow`] (the tables
//! the processor walks instead, composed from the guest's and the memory
//! slots), and [`Mmu`], which chooses between them by the guest's paging
//! mode and answers the page faults of both.
//@ end

pub mod nonpaging;
//@ begin 8
pub mod walk;
pub mod shadow;
//@ end
//@ begin 9
pub mod cache;
//@ end

use crate::abi::KvmSregs;
use crate::kernel::{KResult, Mutex};
use crate::memslot::MemSlots;
//@ begin 13
use crate::stats::Counter;
//@ end
use nonpaging::NonpagingMmu;
//@ begin 8
use crate::kernel::PAGE_SHIFT;
use crate::regs::{Cr0, Cr4, Efer};
use shadow::{Leaf, ShadowMmu};
use walk::{Access, EntrySize, GuestTables, PagingMode, PagingState, WalkError};
//@ end
//@ begin 9
use cache::CachedMmu;
//@ end

// ANCHOR: guest_fetch
/// Reads guest memory as the guest addresses it, through the tables it
/// runs on. Used with preemption off: it must not sleep or take locks.
pub trait GuestFetch {
    /// Fills `buf` from guest-linear address `linear` on; `false` if any
    /// byte is not mapped.
    fn read_linear(&self, linear: u64, buf: &mut [u8]) -> bool;
}
// ANCHOR_END: guest_fetch

//@ begin 8
// ANCHOR: maxphyaddr
/// The physical-address width the guest is shown: the host processor's
/// (CPUID 8000_0008h, EAX bits 7:0), as Linux's KVM shows it by default.
/// Bits at and above it are reserved in page-table entries and in a
/// long-mode CR3.
pub fn maxphyaddr() -> u8 {
    let cpuid = raw_cpuid::CpuId::new();
    cpuid.get_processor_capacity_feature_info().map_or(36, |info| info.physical_address_bits()).clamp(32, 52)
}
// ANCHOR_END: maxphyaddr

/// What the shadow was built for: when any of it changes, every shadow
/// translation may be wrong, and the tree is thrown away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Built {
    state: PagingState,
    generation: u64,
}
//@ end

// ANCHOR: page_fault_kind
/// Whose fault a page fault on the module's tables is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFault {
    /// The module's tables lacked what the guest may reach: fixed, and
    /// the instruction runs again.
    Fixed,
    //@ begin 8
    /// The guest's own tables refuse the access: the guest's #PF handler
    /// must see it, with this error code.
    Guest { error_code: u32 },
    //@ end
    //@ begin 13
    /// A write to a guest page table the cache keeps protected: the
    /// instruction must be emulated, so that the cache sees the entries it
    /// writes ([`Mmu::table_write_declined`] if the emulator cannot).
    TableWrite,
    //@ end
    /// The guest-physical address is in no memory slot (MMIO, from stage
    /// 10): userspace hears of it.
    NotMemory,
}
// ANCHOR_END: page_fault_kind

// ANCHOR: mmu
/// A vCPU's MMU: the tables the guest runs on.
//@ begin 8
/// From stage 08: the nonpaging map while the guest's paging is off, the
/// shadow tree while it is on.
//@ end
pub struct Mmu {
    nonpaging: NonpagingMmu,
    /// Translations were removed since the last entry.
    needs_flush: bool,
    //@ begin 8
    shadow: ShadowMmu,
    /// The paging state the shadow holds translations of; `None` while
    /// the guest's paging is off.
    built: Option<Built>,
    /// The guest's physical-address width.
    maxphyaddr: u8,
    //@ end
    //@ begin 9
    /// The shadow page cache, unless the module parameter `shadow_cache`
    /// was off when the VM was made: then `shadow`, the naive MMU, serves.
    cache: Option<CachedMmu>,
    //@ end
    //@ begin 13
    /// The emulator declined a write to a protected guest table: this
    /// fault unprotects it, as stage 09 did every time.
    declined: bool,
    /// The shadow faults fixed on the cache, by kind, and the entries
    /// filled without a fault, since the last [`Mmu::take_kinds`]: a count
    /// for each counter of [`KINDS`].
    kinds: [u64; KINDS.len()],
    //@ end
}

impl Mmu {
    pub fn new() -> KResult<Mmu> {
        Ok(Mmu {
            nonpaging: NonpagingMmu::new()?,
            needs_flush: false,
            //@ begin 8
            shadow: ShadowMmu::new()?,
            built: None,
            maxphyaddr: maxphyaddr(),
            //@ end
            //@ begin 9
            cache: if crate::kernel::shadow_cache() { Some(CachedMmu::new()?) } else { None },
            //@ end
            //@ begin 13
            declined: false,
            kinds: [0; KINDS.len()],
            //@ end
        })
    }
}
// ANCHOR_END: mmu

// ANCHOR: prepare
/// The page table an entry runs on.
pub struct Root {
    /// Its host-physical address, for the hardware's CR3.
    pub phys: u64,
    /// Translations were removed since the last entry: flush the guest's
    /// TLB first.
    pub flush_tlb: bool,
}

impl Mmu {
    /// Before each entry: the root of the tables for the guest as `sregs`
    /// describe it, emptied first if the memory slots changed.
    //@ begin 8
    /// From stage 08 the shadow is thrown away first if the guest's
    /// paging mode, CR3 or the slots changed since it was built, and
    /// `ENOMEM` comes back if no root can be made.
    //@ end
    pub fn prepare(&mut self, sregs: &KvmSregs, memory: &Mutex<MemSlots>) -> KResult<Root> {
        self.needs_flush |= self.nonpaging.sync(memory);
        //@ begin 8
        if let Some(mode) = paging_mode(sregs) {
            return self.prepare_shadow(mode, sregs, memory);
        }
        self.built = None;
        //@ end
        //@ begin 5 until 8
        let _ = sregs;
        //@ end
        Ok(Root { phys: self.nonpaging.root(), flush_tlb: core::mem::take(&mut self.needs_flush) })
    }
}
// ANCHOR_END: prepare

// ANCHOR: page_fault
impl Mmu {
    /// A page fault at linear `address` on the tables the guest runs on,
    /// with the hardware's error code. With the guest's paging off, the
    /// address is guest-physical: map it.
    //@ begin 8
    /// With it on, the shadow's business ([`Mmu::shadow_fault`]).
    //@ end
    pub fn page_fault(&mut self, address: u64, error_code: u32, memory: &Mutex<MemSlots>) -> PageFault {
        //@ begin 8
        if let Some(built) = self.built {
            return self.shadow_fault(&built, address, error_code, memory);
        }
        //@ end
        //@ begin 5 until 8
        let _ = error_code;
        //@ end
        if self.nonpaging.map(address, memory) { PageFault::Fixed } else { PageFault::NotMemory }
    }
}
// ANCHOR_END: page_fault

impl GuestFetch for Mmu {
    fn read_linear(&self, linear: u64, buf: &mut [u8]) -> bool {
        //@ begin 8
        //@ begin 9
        if let (Some(cache), Some(built)) = (&self.cache, self.built) {
            let mapped = |l| cache.mapped(l, built.state.mode).map(|p| p.addr().cast_const());
            return shadow::read_through(mapped, linear, buf);
        }
        //@ end
        if self.built.is_some() {
            return shadow::read_through(|l| self.shadow.mapped(l).map(|p| p.addr().cast_const()), linear, buf);
        }
        //@ end
        self.nonpaging.read_linear(linear, buf)
    }
}

//@ begin 8
// ANCHOR: prepare_shadow
impl Mmu {
    /// `prepare` while the guest's paging is on.
    fn prepare_shadow(&mut self, mode: PagingMode, sregs: &KvmSregs, memory: &Mutex<MemSlots>) -> KResult<Root> {
        let slots = memory.lock();
        let state = self.paging_state(mode, sregs, &SlotTables(&slots));
        let built = Built { state, generation: slots.generation() };
        drop(slots);
        //@ begin 9
        if let Some(cache) = &mut self.cache {
            let root = prepare_cache(cache, &mut self.built, built, &mut self.needs_flush)?;
            //@ begin 13
            let root = self.synced(root, memory);
            //@ end
            return Ok(root);
        }
        //@ end
        if self.built != Some(built) {
            self.shadow.zap_all();
            self.built = Some(built);
            self.needs_flush = true;
        }
        let phys = self.shadow.root(mode == PagingMode::Long).ok_or(crate::kernel::Errno::ENOMEM)?;
        Ok(Root { phys, flush_tlb: core::mem::take(&mut self.needs_flush) })
    }

    /// The walk's view of the guest's registers. PAE's four PDPTEs are
    /// read here, before the entry (the processor reads them when CR3 is
    /// loaded); ones that cannot be read are not present.
    fn paging_state(&self, mode: PagingMode, sregs: &KvmSregs, tables: &dyn GuestTables) -> PagingState {
        let (cr0, cr4, efer) =
            (Cr0::from_bits_retain(sregs.cr0), Cr4::from_bits_retain(sregs.cr4), Efer::from_bits_retain(sregs.efer));
        let pdptes = match mode {
            PagingMode::Pae => walk::load_pdptes(sregs.cr3, self.maxphyaddr, tables).unwrap_or([0; 4]),
            _ => [0; 4],
        };
        PagingState {
            mode,
            cr3: sregs.cr3,
            wp: cr0.contains(Cr0::WP),
            pse: cr4.contains(Cr4::PSE),
            nxe: efer.contains(Efer::NXE),
            gbpages: false,
            maxphyaddr: self.maxphyaddr,
            pdptes,
        }
    }
}

//@ begin 9
// ANCHOR: prepare_cache
/// `prepare` with the shadow page cache. A new paging mode, new memory
/// slots or a new CR0.WP, CR4.PSE or EFER.NXE throw every shadow page
/// away, as in the naive MMU; a new CR3 (or PAE PDPTEs) only points the
/// root at the shadow pages of the new tables, made if they are missing
/// and reused if the cache still has them.
fn prepare_cache(cache: &mut CachedMmu, built: &mut Option<Built>, now: Built, flush: &mut bool) -> KResult<Root> {
    let same_mode = |old: &Built| {
        let (a, b) = (&old.state, &now.state);
        (a.mode, a.wp, a.pse, a.nxe, a.gbpages, a.maxphyaddr, old.generation)
            == (b.mode, b.wp, b.pse, b.nxe, b.gbpages, b.maxphyaddr, now.generation)
    };
    if !built.as_ref().is_some_and(same_mode) {
        cache.zap_all();
    }
    if *built != Some(now) || cache.root_phys().is_none() {
        cache.set_root(now.state.mode, now.state.cr3, &now.state.pdptes)?;
        *built = Some(now);
    }
    let phys = cache.root_phys().ok_or(crate::kernel::Errno::ENOMEM)?;
    let flush_tlb = core::mem::take(flush) | core::mem::take(&mut cache.needs_flush);
    Ok(Root { phys, flush_tlb })
}
// ANCHOR_END: prepare_cache
//@ end

/// The largest page the guest's format maps with one directory entry,
/// which `invlpg` must forget whole: 4 MiB in 32-bit paging, else 2 MiB
/// (1 GiB pages are not offered).
pub fn large_page_span(mode: PagingMode) -> u64 {
    if mode == PagingMode::Bits32 { 1 << 22 } else { 1 << 21 }
}

/// The guest's paging format, `None` while its paging is off.
pub fn paging_mode(sregs: &KvmSregs) -> Option<PagingMode> {
    if !Cr0::from_bits_retain(sregs.cr0).contains(Cr0::PG) {
        None
    } else if Efer::from_bits_retain(sregs.efer).contains(Efer::LMA) {
        Some(PagingMode::Long)
    } else if Cr4::from_bits_retain(sregs.cr4).contains(Cr4::PAE) {
        Some(PagingMode::Pae)
    } else {
        Some(PagingMode::Bits32)
    }
}
// ANCHOR_END: prepare_shadow

// ANCHOR: shadow_fault
impl Mmu {
    /// A page fault while the guest's paging is on: walk the guest's
    /// tables for the same access. If they allow it, install the
    /// translation in the shadow; if not, the fault is the guest's, with
    /// the error code its own tables give.
    //@ begin 13
    /// From stage 13 a fault fixed on the cache is counted by its kind
    /// ([`fixed_kinds`]).
    //@ end
    fn shadow_fault(&mut self, built: &Built, address: u64, error_code: u32, memory: &Mutex<MemSlots>) -> PageFault {
        let access = Access {
            write: error_code & walk::pfec::W != 0,
            user: error_code & walk::pfec::U != 0,
            fetch: error_code & walk::pfec::ID != 0,
        };
        let slots = memory.lock();
        let translation = match walk::walk(&built.state, address, access, &mut SlotTables(&slots), true) {
            Ok(t) => t,
            Err(WalkError::Fault { error_code }) => return PageFault::Guest { error_code },
            // A guest table outside guest memory: as 2006, a fault the
            // guest sees (not present).
            Err(WalkError::Unbacked { .. }) => {
                return PageFault::Guest { error_code: walk::access_code(access, &built.state) };
            }
        };
        let Some(page) = slots.gfn_to_page(translation.gpa >> PAGE_SHIFT).map(|p| p.get()) else {
            return PageFault::NotMemory;
        };
        drop(slots);
        let leaf = shadow_leaf(page, &translation, access, built.state.wp);
        //@ begin 9
        if let Some(cache) = &mut self.cache {
            let gfn = translation.gpa >> PAGE_SHIFT;
            //@ begin 13
            let before = cache.leaf_entry(address, built.state.mode);
            let mut table_write = false;
            //@ end
            if access.write && cache.is_protected(gfn) {
                //@ begin 13
                // The write can be emulated unless it goes through the
                // table it writes (then the emulator's own walk would see
                // a half-written table: unsync it is).
                // A page table goes unsync instead, and its writes need no
                // exit at all until the guest flushes.
                if !cache::goes_through(&translation, gfn) && !self.declined && !cache.unsync_leaves(gfn) {
                    return PageFault::TableWrite;
                }
                table_write = true;
                //@ end
                cache.unprotect(gfn, &translation);
            }
            //@ begin 11
            // Marked before it is mapped writable (a protected guest table
            // never is), so no write can come before its bit.
            if leaf.writable && !cache.is_protected(gfn) {
                memory.lock().mark_page_dirty(gfn);
            }
            //@ end
            // Not installed (no root, or no memory): the guest runs the
            // instruction again, and the next entry makes the root anew.
            let _ = cache.install(address, &translation, built.state.mode, leaf);
            //@ begin 13
            let spurious = before.is_some() && before == cache.leaf_entry(address, built.state.mode);
            let filled = prefetch(cache, built, address, memory);
            self.note(Counter::MmuPrefetch, filled);
            // A fault the emulator declined is counted as `pte_write`, not
            // as fixed.
            if !self.declined {
                let large = translation.page_size > 0x1000;
                let kinds = fixed_kinds(error_code, spurious, table_write, translation.dirtied, large);
                for kind in kinds.into_iter().flatten() {
                    self.note(kind, 1);
                }
            }
            //@ end
            return PageFault::Fixed;
        }
        //@ end
        //@ begin 11
        if leaf.writable {
            memory.lock().mark_page_dirty(translation.gpa >> PAGE_SHIFT);
        }
        //@ end
        match self.shadow.install(address, leaf) {
            Ok(()) => PageFault::Fixed,
            // No memory for a shadow table: the guest runs the faulting
            // instruction again, and the host is not hurt.
            Err(_) => PageFault::Fixed,
        }
    }
}

//@ begin 13
// ANCHOR: fixed_kinds
/// The counters of what the shadow faults fixed on the cache were, of the
/// entries filled without a fault, and of the resyncs, in the order of
/// [`Mmu::kinds`].
pub const KINDS: [Counter; 10] = [
    Counter::PfSpurious,
    Counter::PfNotPresent,
    Counter::PfWriteProtect,
    Counter::PfWriteTable,
    Counter::PfWriteClean,
    Counter::PfReadProtect,
    Counter::PfLargePage,
    Counter::MmuPrefetch,
    Counter::MmuSync,
    Counter::MmuResynced,
];

/// The counters a shadow fault fixed on the cache counts in (see each
/// [`Counter`]'s text): by its `error_code`, whether it left the shadow
/// leaf as it found it (`spurious`), let a write to a protected guest
/// table through (`table_write`), set the guest entry's D bit (`dirtied`)
/// and was in a guest `large` page.
fn fixed_kinds(error_code: u32, spurious: bool, table_write: bool, dirtied: bool, large: bool) -> [Option<Counter>; 3] {
    let (present, write) = (error_code & walk::pfec::P != 0, error_code & walk::pfec::W != 0);
    let (kind, why) = match (spurious, present, write) {
        (true, _, _) => (Counter::PfSpurious, None),
        (false, false, _) => (Counter::PfNotPresent, None),
        (false, true, false) => (Counter::PfReadProtect, None),
        (false, true, true) if table_write => (Counter::PfWriteProtect, Some(Counter::PfWriteTable)),
        (false, true, true) if dirtied => (Counter::PfWriteProtect, Some(Counter::PfWriteClean)),
        (false, true, true) => (Counter::PfWriteProtect, None),
    };
    [Some(kind), why, large.then_some(Counter::PfLargePage)]
}

impl Mmu {
    /// Counts `n` events of `counter`, one of [`KINDS`].
    fn note(&mut self, counter: Counter, n: u64) {
        if let Some(count) = KINDS.iter().position(|&k| k == counter).and_then(|i| self.kinds.get_mut(i)) {
            *count += n;
        }
    }

    /// The counts of [`KINDS`] since the last call, for the VM's
    /// statistics.
    pub fn take_kinds(&mut self) -> impl Iterator<Item = (Counter, u64)> {
        KINDS.into_iter().zip(core::mem::take(&mut self.kinds))
    }
}
// ANCHOR_END: fixed_kinds

// ANCHOR: prefetch
/// How many page-table entries a fault fills: the aligned group of eight
/// that the faulting one is in, as Linux's KVM does (`PTE_PREFETCH_NUM`).
const PREFETCH: u64 = 8;

/// After a fault filled the translation of `address`, fills the
/// neighbours in its group that the guest has used before (A set in
/// their guest entry) and the shadow lacks: a kernel maps pages in runs
/// (a file's pages around a fault, a process's stack and heap) and
/// touches the rest of a run soon, each touch one more fault. In a guest
/// large page, which the shadow maps 4 KiB at a time, every neighbour is
/// part of the same page. The walk here sets no A or D bit: the
/// processor too may cache a translation whose accessed bit is set
/// before any access needs it (SDM Vol. 3A, 4.10.2.3). A neighbour is
/// writable only if its guest entry is dirty already, as the faulting
/// page would be (`shadow_leaf`), and its slot keeps no dirty log: there
/// the first write must still fault and mark the page, and a page
/// nobody wrote must not be reported (Linux's KVM, likewise, prefetches
/// nothing into a slot that logs dirty pages).
/// Returns how many it filled.
fn prefetch(cache: &mut CachedMmu, built: &Built, address: u64, memory: &Mutex<MemSlots>) -> u64 {
    let first = address & !(PREFETCH * 0x1000 - 1);
    let mut filled = 0;
    for linear in (0..PREFETCH).map(|n| first + n * 0x1000).filter(|&l| l != address & !0xFFF) {
        if cache.mapped(linear, built.state.mode).is_none() {
            match fill(cache, built, linear, memory) {
                Ok(true) => filled += 1,
                Ok(false) => {}
                Err(_) => break,
            }
        }
    }
    filled
}

/// Fills the shadow entry of `linear` from the guest's tables if they map
/// it and the guest has used it (A set), with the rights `prefetch`
/// gives; nothing if not. `Ok(true)` if it filled it, `Err` if the shadow
/// had no room.
fn fill(cache: &mut CachedMmu, built: &Built, linear: u64, memory: &Mutex<MemSlots>) -> KResult<bool> {
    const ACCESSED: u64 = 1 << 5;
    let read = Access { write: false, user: false, fetch: false };
    let slots = memory.lock();
    let Ok(t) = walk::walk(&built.state, linear, read, &mut SlotTables(&slots), false) else { return Ok(false) };
    let used = t.entries.iter().flatten().next().is_some_and(|leaf| leaf.value & ACCESSED != 0);
    let gfn = t.gpa >> PAGE_SHIFT;
    let page = slots.gfn_to_page(gfn).map(|p| p.get());
    let logged = slots.logs_dirty(gfn);
    drop(slots);
    let (Some(page), true) = (page, used) else { return Ok(false) };
    let leaf = shadow_leaf(page, &t, read, built.state.wp);
    let leaf = Leaf { writable: leaf.writable && !logged, ..leaf };
    cache.install(linear, &t, built.state.mode, leaf).map(|()| true)
}
// ANCHOR_END: prefetch
//@ end

/// The shadow entry for a translation the guest's tables allow: its rights
/// are the guest's, but a page the guest has not yet dirtied is mapped
/// read-only, so that the first write faults and the walk sets the
/// guest's D bit as the processor would have (2006's "dirty bits through
/// write protection"). A supervisor write with CR0.WP = 0 may write a
/// read-only page: the shadow then allows writing but not user access,
/// so that a later user access faults and is judged again.
fn shadow_leaf(page: crate::kernel::PageRef, t: &walk::Translation, access: Access, wp: bool) -> Leaf {
    let supervisor_override = access.write && !access.user && !wp && !t.writable;
    Leaf {
        page,
        writable: (t.writable || supervisor_override) && t.dirty,
        user: t.user && !supervisor_override,
        no_execute: !t.executable,
    }
}
// ANCHOR_END: shadow_fault

// ANCHOR: flush
impl Mmu {
    /// The guest loaded CR3: 2.6.20-rc1 threw every shadow page away.
    pub fn flush(&mut self) {
        //@ begin 9
        // 2.6.20-rc4 kept them: the cache only drops its unsync pages,
        // and the next entry points the root at the new CR3's tables.
        if let Some(cache) = &mut self.cache {
            cache.sync();
            self.needs_flush = true;
            return;
        }
        //@ end
        if self.built.is_some() {
            self.shadow.zap_all();
            self.needs_flush = true;
        }
    }

    /// The guest's `invlpg`.
    pub fn invlpg(&mut self, address: u64) {
        //@ begin 9
        if let (Some(cache), Some(built)) = (&mut self.cache, self.built) {
            cache.invalidate(address, built.state.mode, large_page_span(built.state.mode));
            self.needs_flush = true;
            return;
        }
        //@ end
        if let Some(built) = self.built {
            self.shadow.invalidate(address, large_page_span(built.state.mode));
            self.needs_flush = true;
        }
    }



    /// Whether PAE PDPTEs can be loaded from `cr3` (for `mov cr3` and
    /// friends, which give #GP if not).
    pub fn pdptes_valid(&self, cr3: u64, memory: &Mutex<MemSlots>) -> bool {
        walk::load_pdptes(cr3, self.maxphyaddr, &SlotTables(&memory.lock())).is_ok()
    }

    /// Shadow pages made and zapped since the last call, and in use.
    pub fn shadow_counts(&mut self) -> (u64, u64) {
        //@ begin 9
        if let Some(cache) = &mut self.cache {
            return cache.take_counts();
        }
        //@ end
        self.shadow.take_counts()
    }

    /// `KVM_TRANSLATE`: the guest-physical address of `linear` as the
    /// guest's tables give it, with no accessed or dirty bit set; the
    /// address itself while paging is off. `None` if it is not mapped.
    pub fn translate(&self, linear: u64, memory: &Mutex<MemSlots>) -> Option<walk::Translation> {
        let built = self.built?;
        walk::walk(&built.state, linear, Access::default(), &mut SlotTables(&memory.lock()), false).ok()
    }

    /// Whether the guest's paging is on, as of the last entry.
    pub fn paging(&self) -> bool {
        self.built.is_some()
    }
}
// ANCHOR_END: flush

//@ begin 11
// ANCHOR: write_protect
impl Mmu {
    /// `KVM_GET_DIRTY_LOG` has just reported guest frames `gfns` dirty and
    /// cleared their bits: see that the guest's next write to any of them
    /// sets its bit again.
    pub fn write_protect(&mut self, gfns: impl Iterator<Item = u64>) {
        //@ exercise E11.1
        //@ instruction: After this call, no write the guest makes to a
        //@+ frame of `gfns` may go unseen, whichever of the module's tables
        //@+ it writes through: it must fault into the module, whose fault
        //@+ path marks the frame dirty again. The guest may be running on
        //@+ the nonpaging map or on the shadow (cached or naive) now, and
        //@+ may turn its paging on or off before its next write: think
        //@+ about which tables outlive such a switch. The processor may
        //@+ still hold translations it cached before this call (SDM Vol.
        //@+ 3A, 4.10.4.1). Frames not in `gfns` keep whatever rights they
        //@+ have. The tests in `e11_1` watch the tables the processor
        //@+ would walk.
        //@ hint: Only a frame the log reported can have a writable
        //@+ translation, since one is marked dirty whenever it is made
        //@+ writable: so it is enough to visit `gfns`. Each kind of table
        //@+ already knows how to lose write rights: look for the code that
        //@+ makes a page read-only, or that throws translations away.
        //@ hint: The nonpaging map and the cache each have a
        //@+ `write_protect(gfn)`; the naive shadow has no reverse map, and
        //@+ throws everything away (`zap_all`) as it does on a CR3 load.
        //@+ The nonpaging map is kept while paging is on (only a change of
        //@+ the slots empties it), so it loses the right in every mode; the
        //@+ shadow is built afresh when paging comes back on. Whichever you
        //@+ touch, the next entry must flush the TLB: `needs_flush`.
        let mut any = false;
        for gfn in gfns {
            any = true;
            self.nonpaging.write_protect(gfn);
            if let Some(cache) = &mut self.cache {
                cache.write_protect_gfn(gfn);
            }
        }
        if any && self.cache.is_none() && self.built.is_some() {
            self.shadow.zap_all();
            self.needs_flush = true;
        }
        //@ end
    }
}
// ANCHOR_END: write_protect

#[cfg(test)]
#[path = "dirty_tests.rs"]
mod dirty_tests;
//@ end

//@ begin 10
// ANCHOR: emulator_access
impl Mmu {
    /// For the emulator: linear `address` translated for `access` through
    /// the guest's tables (accessed and dirty bits set, as the processor
    /// would), or the error code of the fault. With paging off, the
    /// address is physical.
    pub fn translate_access(&self, address: u64, access: Access, memory: &Mutex<MemSlots>) -> Result<u64, u32> {
        let Some(built) = self.built else { return Ok(address) };
        match walk::walk(&built.state, address, access, &mut SlotTables(&memory.lock()), true) {
            Ok(t) => Ok(t.gpa),
            Err(WalkError::Fault { error_code }) => Err(error_code),
            Err(WalkError::Unbacked { .. }) => Err(walk::access_code(access, &built.state)),
        }
    }

    /// The emulator wrote `len` bytes of guest RAM at `gpa`: if that is a
    /// guest page table the cache shadows, its shadow pages go (the
    /// processor's own writes to it fault and do the same).
    //@ begin 13
    /// From stage 13 only the shadow entries of the guest entries written
    /// go, and the table stays shadowed ([`CachedMmu::table_written`]),
    /// unless the writes are a flood.
    //@ end
    pub fn guest_wrote(&mut self, gpa: u64, len: usize) {
        if let Some(cache) = &mut self.cache {
            self.needs_flush = true;
            //@ begin 13
            if cache.table_written(gpa, len) {
                return;
            }
            //@ end
            cache.forget_table(gpa, len);
        }
    }
    //@ begin 13

    // ANCHOR: invlpg_fill
    /// `invlpg` of one guest page the cache maps through tables in sync
    /// down to its page table ([`CachedMmu::invalidate_page`]); `false` if
    /// the whole `invlpg` must run. A guest invalidates after it changed
    /// the page's entry, and touches the page again soon: if the shadow
    /// held a translation, the new one is filled at once, as a prefetch
    /// would (Linux's KVM does the same in its `invlpg`), instead of at the
    /// fault that would follow.
    pub fn invalidate_page(&mut self, address: u64, memory: &Mutex<MemSlots>) -> bool {
        let (Some(cache), Some(built)) = (&mut self.cache, self.built) else { return false };
        let held = cache.mapped(address, built.state.mode).is_some();
        let done = cache.invalidate_page(address, built.state.mode);
        self.needs_flush |= done;
        // No room: the next access faults, as it would have.
        if done && held && fill(cache, &built, address & !0xFFF, memory) == Ok(true) {
            self.note(Counter::MmuPrefetch, 1);
        }
        done
    }
    // ANCHOR_END: invlpg_fill

    // ANCHOR: synced
    /// The first entry after a CR3 load or a whole `invlpg` (the root is
    /// set by now): the unsync page tables the root reaches are checked
    /// against the guest's ([`CachedMmu::resync`]), and the TLB is flushed
    /// if that changed an entry.
    fn synced(&mut self, mut root: Root, memory: &Mutex<MemSlots>) -> Root {
        let Some(cache) = &mut self.cache else { return root };
        if !core::mem::take(&mut cache.sync_pending) {
            return root;
        }
        let resynced = cache.resync(&mut |gpa, width| {
            let mut bytes = [0u8; 8];
            read_phys(gpa, bytes.get_mut(..width)?, memory).then(|| u64::from_le_bytes(bytes))
        });
        root.flush_tlb |= core::mem::take(&mut cache.needs_flush);
        self.note(Counter::MmuSync, 1);
        self.note(Counter::MmuResynced, resynced);
        root
    }
    // ANCHOR_END: synced

    // ANCHOR: table_write_declined
    /// The emulator could not carry out a write to a protected guest table
    /// (an instruction it does not know): the fault is handled again, and
    /// this time the table is unprotected, its shadow pages thrown away or
    /// made unsync, as stage 09 did for every such write.
    pub fn table_write_declined(&mut self, address: u64, error_code: u32, memory: &Mutex<MemSlots>) -> PageFault {
        self.declined = true;
        let fault = self.page_fault(address, error_code, memory);
        self.declined = false;
        fault
    }
    // ANCHOR_END: table_write_declined
    //@ end
}

/// Reads guest RAM at guest-physical `gpa`, within one page; `false` if no
/// slot backs it.
pub fn read_phys(gpa: u64, data: &mut [u8], memory: &Mutex<MemSlots>) -> bool {
    let offset = (gpa & 0xFFF) as usize;
    let slots = memory.lock();
    let Some(page) = slots.gfn_to_page(gpa >> PAGE_SHIFT) else { return false };
    if offset + data.len() > 0x1000 {
        return false;
    }
    // SAFETY: `offset + len` is within the live page; userspace may write
    // it at the same time, which can only give old or new bytes.
    unsafe { core::ptr::copy_nonoverlapping(page.addr().add(offset), data.as_mut_ptr(), data.len()) };
    true
}

/// Writes guest RAM at `gpa`, within one page; `false` if no slot backs it.
pub fn write_phys(gpa: u64, data: &[u8], memory: &Mutex<MemSlots>) -> bool {
    let offset = (gpa & 0xFFF) as usize;
    let slots = memory.lock();
    let Some(page) = slots.gfn_to_page(gpa >> PAGE_SHIFT) else { return false };
    if offset + data.len() > 0x1000 {
        return false;
    }
    //@ begin 11
    slots.mark_page_dirty(gpa >> PAGE_SHIFT);
    //@ end
    // SAFETY: as in `read_phys`; the page is guest memory, which the guest
    // (and userspace) may write at any time anyway.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), page.addr().add(offset), data.len()) };
    true
}
// ANCHOR_END: emulator_access
//@ end

// ANCHOR: slot_tables
/// Guest memory, for the walk: guest-physical addresses through the slots.
struct SlotTables<'a>(&'a MemSlots);

impl SlotTables<'_> {
    /// The kernel address of the `size` bytes at `gpa`, if a slot backs
    /// them and they do not cross a page (entries are naturally aligned).
    fn at(&self, gpa: u64, size: EntrySize) -> Option<*mut u8> {
        let offset = (gpa & 0xFFF) as usize;
        if !offset.is_multiple_of(size.bytes() as usize) {
            return None;
        }
        let page = self.0.gfn_to_page(gpa >> PAGE_SHIFT)?;
        // SAFETY: `offset` is below the page size.
        Some(unsafe { page.addr().add(offset) })
    }
}

impl GuestTables for SlotTables<'_> {
    fn read(&self, gpa: u64, size: EntrySize) -> Option<u64> {
        let p = self.at(gpa, size)?;
        // SAFETY: an aligned entry inside a live slot page; userspace may
        // write it at the same time, which gives an old or a new value.
        Some(unsafe {
            match size {
                EntrySize::Four => u64::from(p.cast::<u32>().read_volatile()),
                EntrySize::Eight => p.cast::<u64>().read_volatile(),
            }
        })
    }

    fn write(&mut self, gpa: u64, size: EntrySize, value: u64) -> bool {
        let Some(p) = self.at(gpa, size) else { return false };
        //@ begin 11
        // The walk writes only to set an accessed or dirty bit: a write to
        // the guest's page, as the processor's own would be.
        self.0.mark_page_dirty(gpa >> PAGE_SHIFT);
        //@ end
        // SAFETY: as in `read`; the processor too writes A and D bits into
        // memory the guest may be writing.
        unsafe {
            match size {
                EntrySize::Four => p.cast::<u32>().write_volatile(value as u32),
                EntrySize::Eight => p.cast::<u64>().write_volatile(value),
            }
        }
        true
    }
}
// ANCHOR_END: slot_tables
//@ end
