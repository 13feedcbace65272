//@ stage 8
//! The guest page walk, as 2006's `paging_tmpl.h`: what the guest's own
//! page tables say about a linear address, found the way the processor
//! would find it.
//!
//! A guest with paging on translates each linear address through tables in
//! its own memory, which the processor never sees under shadow paging: the
//! shadow MMU runs the guest on tables of its own, and on each shadow page
//! fault asks this walk what the guest meant. The answer is the
//! guest-physical address, the rights every level of the walk granted, and
//! where the entries lie; or the page fault the processor would have
//! raised, with its exact error code, for the shadow MMU to inject.
//!
//! There are three formats of guest tables: 32-bit paging (Intel SDM Vol.
//! 3A, 4.3; AMD APM Vol. 2, 5.3), PAE paging (SDM 4.4; APM 5.3) and 4-level
//! paging (SDM 4.5; APM 5.4). 2006 compiled `paging_tmpl.h` twice, once per
//! entry size; here one walk, `descend`, is generic over a `Format` (in
//! `walk/format.rs`) that says how big an entry is, how many bits of the
//! address each level translates, which bits are reserved and where a page
//! may end the walk.
//!
//! A walk has three steps, each its own function: descend the tables to the
//! leaf (an entry that is not present or sets a reserved bit faults there),
//! check the access against the rights found ([`check_access`], SDM 4.6),
//! and only then set the accessed and dirty bits, as Linux's KVM does.
//!
//! The guest's tables are untrusted data: every index is masked, every
//! array access checked, and no entry can make the walk panic or loop.
//! Not modelled, because the module offers none of them to its guests:
//! SMEP, SMAP, protection keys, PCIDs, 5-level paging, and AMD's reserved
//! bit 8 of non-leaf PML4Es and PDPTEs (APM Vol. 2, 5.4.1).

use bitflags::bitflags;
use format::{Format, Paging32, Paging64, PagingPae, Start, entry_offset, page_size};

mod format;

// ANCHOR: pfec
/// The page-fault error code the processor pushes with a #PF (Intel SDM
/// Vol. 3A, 4.7 and Figure 4-12; AMD APM Vol. 2, 8.4.2).
pub mod pfec {
    /// P: 0 if no page was present; 1 if a protection check or a reserved
    /// bit failed.
    pub const P: u32 = 1 << 0;
    /// W/R: the access was a write.
    pub const W: u32 = 1 << 1;
    /// U/S: the access was a user-mode access (CPL 3).
    pub const U: u32 = 1 << 2;
    /// RSVD: a present entry had a reserved bit set.
    pub const RSVD: u32 = 1 << 3;
    /// I/D: the access was an instruction fetch. Reported only with PAE
    /// or 4-level paging and EFER.NXE = 1, never in 32-bit paging.
    pub const ID: u32 = 1 << 4;
}
// ANCHOR_END: pfec

// ANCHOR: state
/// The guest's paging format, from CR0.PG, CR4.PAE and EFER.LMA (the
/// caller's business: with CR0.PG = 0 there is nothing to walk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// 32-bit paging: CR4.PAE = 0 (SDM 4.3).
    Bits32,
    /// PAE paging: CR4.PAE = 1, EFER.LMA = 0 (SDM 4.4).
    Pae,
    /// 4-level paging, IA-32e mode: EFER.LMA = 1 (SDM 4.5).
    Long,
}

/// What the walk reads of the guest's registers and of the processor the
/// module shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingState {
    pub mode: PagingMode,
    /// CR3. Only the table address is used: bits 31:12 in 32-bit paging,
    /// 51:12 in 4-level paging; PAE walks start from `pdptes` instead. The
    /// caller refuses (#GP) a 4-level CR3 with bits at or above MAXPHYADDR.
    pub cr3: u64,
    /// CR0.WP: the supervisor respects read-only pages.
    pub wp: bool,
    /// CR4.PSE: 4 MiB pages in 32-bit paging (PSE-36 is assumed, as on
    /// every processor with long mode).
    pub pse: bool,
    /// EFER.NXE: bit 63 of PAE and 4-level entries is XD, not reserved.
    pub nxe: bool,
    /// The guest may use 1 GiB pages (CPUID.80000001H:EDX.Page1GB).
    pub gbpages: bool,
    /// The guest's physical-address width, CPUID.80000008H:EAX bits 7:0; taken
    /// as 32 if smaller and 52 if larger.
    pub maxphyaddr: u8,
    /// PAE only: the four PDPTEs, loaded when CR3 was (by [`load_pdptes`]),
    /// not read from memory during the walk (SDM 4.4.1).
    pub pdptes: [u64; 4],
}

/// What the access does. At most one of `write` and `fetch` is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// At CPL 3. Supervisor accesses to user pages are always allowed
    /// (no SMAP) and so are supervisor fetches from them (no SMEP).
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}
// ANCHOR_END: state

// ANCHOR: tables
/// The size of a paging-structure entry: 4 bytes in 32-bit paging, 8 in
/// PAE and 4-level paging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntrySize {
    Four,
    Eight,
}

impl EntrySize {
    pub const fn bytes(self) -> u64 {
        match self {
            EntrySize::Four => 4,
            EntrySize::Eight => 8,
        }
    }

    /// The bits an entry of this size has.
    const fn mask(self) -> u64 {
        match self {
            EntrySize::Four => 0xFFFF_FFFF,
            EntrySize::Eight => u64::MAX,
        }
    }
}

/// Guest memory as the walk sees it: the caller reads and writes through
/// the memory slots. The walk only asks for naturally aligned entries.
pub trait GuestTables {
    /// The little-endian value of the `size` bytes at guest-physical `gpa`,
    /// zero-extended; `None` if no memory slot backs them.
    fn read(&self, gpa: u64, size: EntrySize) -> Option<u64>;
    /// Stores the low `size` bytes of `value` at `gpa`; `false` if no
    /// memory slot backs them.
    fn write(&mut self, gpa: u64, size: EntrySize, value: u64) -> bool;
}
// ANCHOR_END: tables

// ANCHOR: translation
/// One entry the walk used: where it lies and its value, with the accessed
/// and dirty bits this walk set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestEntry {
    pub gpa: u64,
    pub value: u64,
}

/// A successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address of the linear address, offset included.
    pub gpa: u64,
    /// R/W = 1 at every level. A supervisor write with CR0.WP = 0 succeeds
    /// without it.
    pub writable: bool,
    /// U/S = 1 at every level.
    pub user: bool,
    /// No level has XD = 1 with EFER.NXE = 1.
    pub executable: bool,
    /// The leaf's D bit, as guest memory holds it after the walk.
    pub dirty: bool,
    //@ begin 13
    /// This walk set the leaf's D bit: the page was clean until this write.
    pub dirtied: bool,
    //@ end
    /// 4 KiB, 2 MiB, 4 MiB or 1 GiB.
    pub page_size: u64,
    /// The guest-physical address of the leaf entry.
    pub leaf_gpa: u64,
    /// `entries[level - 1]` is the entry used at `level` (1 for the page
    /// table, 2 the page directory, 3 the PDPT, 4 the PML4); `None` below
    /// the leaf and above the top. PAE's PDPTEs are registers: never here.
    pub entries: [Option<GuestEntry>; 4],
}

/// Why a walk found no translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The processor would raise a #PF with this error code ([`pfec`]).
    Fault { error_code: u32 },
    /// A paging-structure entry at `gpa` lies outside guest memory (or its
    /// accessed or dirty bit could not be written back there). The caller
    /// decides; 2006 injected a page fault.
    Unbacked { gpa: u64 },
}

/// Why PDPTEs cannot be loaded; the caller gives the guest a #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdpteError {
    /// PDPTE `index`, present, has a reserved bit set (SDM 4.4.1).
    Reserved { index: usize, value: u64 },
    /// The PDPTE at `gpa` lies outside guest memory.
    Unbacked { gpa: u64 },
}
// ANCHOR_END: translation

// ANCHOR: bits
bitflags! {
    /// The bits of a paging-structure entry the walk interprets (SDM
    /// Tables 4-4 to 4-20). The others are the address, reserved, or
    /// ignored.
    #[derive(Clone, Copy)]
    struct Pte: u64 {
        /// Present.
        const P = 1 << 0;
        /// Read/write: 0 forbids writes.
        const RW = 1 << 1;
        /// User/supervisor: 0 forbids CPL-3 accesses.
        const US = 1 << 2;
        /// Accessed: set in every entry a translation used.
        const A = 1 << 5;
        /// Dirty: set in the leaf on a write.
        const D = 1 << 6;
        /// Page size: the entry maps a page, where the level allows one.
        const PS = 1 << 7;
        /// Execute-disable, with EFER.NXE = 1.
        const XD = 1 << 63;
    }
}

/// Bits `lo` to `hi` of a u64, both included; none if `lo > hi`.
const fn bits(lo: u32, hi: u32) -> u64 {
    if lo > hi || hi > 63 {
        return 0;
    }
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// MAXPHYADDR, within the bounds the walk's masks rely on.
fn maxphyaddr(state: &PagingState) -> u32 {
    u32::from(state.maxphyaddr).clamp(32, 52)
}

/// XD when EFER.NXE = 0, where bit 63 of PAE and 4-level entries is
/// reserved (SDM 4.4.2 and 4.5.4, Tables 4-8 to 4-20).
fn xd_reserved(state: &PagingState) -> u64 {
    if state.nxe { 0 } else { Pte::XD.bits() }
}
// ANCHOR_END: bits

// ANCHOR: walk
/// Translates `linear` through the guest's page tables, as the processor
/// would for `access` (SDM 4.3 to 4.7; APM 5.3 to 5.6).
///
/// Only bits 31:0 of `linear` count in 32-bit and PAE paging, bits 47:0 in
/// 4-level paging: a non-canonical address raises a #GP, not a #PF, and is
/// the caller's to refuse before walking.
///
/// On success, with `update`, sets the accessed bit of every entry used and,
/// on a write, the dirty bit of the leaf, writing back only the entries
/// that change. On a fault, and without `update` (KVM_TRANSLATE, a
/// debugger), guest memory is left as it was. Entries are read once and
/// written with plain stores: a concurrent change to an entry between the
/// two is lost, as in 2006.
///
/// A fault's error code is exact: P = 0 if an entry was not present, P = 1
/// and RSVD = 1 for a reserved bit (checked before any right), P = 1 for a
/// denied access; plus W/R, U/S and I/D for the access ([`access_code`]).
pub fn walk(
    state: &PagingState,
    linear: u64,
    access: Access,
    mem: &mut dyn GuestTables,
    update: bool,
) -> Result<Translation, WalkError> {
    let mut descent = descend_in_mode(state, linear, access, mem)?;
    check_access(descent.rights, access, state).map_err(|error_code| WalkError::Fault { error_code })?;
    if update {
        descent.set_accessed_dirty(access.write, entry_size(state.mode), mem)?;
    }
    Ok(descent.translation(linear))
}

fn entry_size(mode: PagingMode) -> EntrySize {
    match mode {
        PagingMode::Bits32 => Paging32::ENTRY,
        PagingMode::Pae => PagingPae::ENTRY,
        PagingMode::Long => Paging64::ENTRY,
    }
}

/// The first step of [`walk`], in the guest's format.
fn descend_in_mode(
    state: &PagingState,
    linear: u64,
    access: Access,
    mem: &dyn GuestTables,
) -> Result<Descent, WalkError> {
    match state.mode {
        PagingMode::Bits32 => descend::<Paging32>(state, linear, access, mem),
        PagingMode::Pae => descend::<PagingPae>(state, linear, access, mem),
        PagingMode::Long => descend::<Paging64>(state, linear, access, mem),
    }
}

/// Reads the tables from the top to the leaf, collecting rights. Faults
/// on an entry that is not present, then on one with a reserved bit.
fn descend<F: Format>(
    state: &PagingState,
    linear: u64,
    access: Access,
    mem: &dyn GuestTables,
) -> Result<Descent, WalkError> {
    let fault = |kind: u32| WalkError::Fault { error_code: kind | access_code(access, state) };
    let Some(Start { mut table, mut level }) = F::start(state, linear) else {
        return Err(fault(0));
    };
    let mut descent = Descent::new();
    loop {
        let gpa = table | entry_offset::<F>(linear, level);
        let entry = mem.read(gpa, F::ENTRY).ok_or(WalkError::Unbacked { gpa })? & F::ENTRY.mask();
        let flags = Pte::from_bits_retain(entry);
        if !flags.contains(Pte::P) {
            return Err(fault(0));
        }
        if entry & F::reserved(state, level, entry) != 0 {
            return Err(fault(pfec::P | pfec::RSVD));
        }
        descent.enter(level, GuestEntry { gpa, value: entry }, state.nxe);
        if level <= 1 || (flags.contains(Pte::PS) && F::maps_page(state, level)) {
            descent.page = F::page(entry, level);
            descent.page_size = page_size::<F>(level);
            return Ok(descent);
        }
        table = F::table(entry);
        level -= 1;
    }
}

/// The W/R, U/S and I/D bits of a page fault's error code: what the
/// access was, whatever the fault (SDM 4.7). I/D is reported only where
/// an execute-disable bit exists: PAE or 4-level paging with EFER.NXE = 1.
pub fn access_code(access: Access, state: &PagingState) -> u32 {
    let mut code = 0;
    if access.write {
        code |= pfec::W;
    }
    if access.user {
        code |= pfec::U;
    }
    if access.fetch && state.nxe && state.mode != PagingMode::Bits32 {
        code |= pfec::ID;
    }
    code
}
// ANCHOR_END: walk

// ANCHOR: descent
/// The rights every level of a walk granted (SDM 4.6.1: the access rights
/// of a translation are the combination of those of all its entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    /// R/W = 1 at every level.
    pub writable: bool,
    /// U/S = 1 at every level.
    pub user: bool,
    /// No XD = 1 at any level with EFER.NXE = 1.
    pub executable: bool,
}

/// What [`descend`] found: the leaf and the way to it.
struct Descent {
    rights: Rights,
    /// As [`Translation::entries`].
    entries: [Option<GuestEntry>; 4],
    /// The level of the leaf.
    level: u32,
    /// The address and size of the page the leaf maps.
    page: u64,
    page_size: u64,
    //@ begin 13
    /// [`Descent::set_accessed_dirty`] set the leaf's D bit.
    dirtied: bool,
    //@ end
}

impl Descent {
    fn new() -> Descent {
        let rights = Rights { writable: true, user: true, executable: true };
        Descent {
            rights,
            entries: [None; 4],
            level: 0,
            page: 0,
            page_size: 0,
            //@ begin 13
            dirtied: false,
            //@ end
        }
    }

    /// Records `entry`, present and without reserved bits, at `level`.
    fn enter(&mut self, level: u32, entry: GuestEntry, nxe: bool) {
        let flags = Pte::from_bits_retain(entry.value);
        self.rights.writable &= flags.contains(Pte::RW);
        self.rights.user &= flags.contains(Pte::US);
        self.rights.executable &= !(nxe && flags.contains(Pte::XD));
        if let Some(slot) = level.checked_sub(1).and_then(|i| self.entries.get_mut(i as usize)) {
            *slot = Some(entry);
        }
        self.level = level;
    }

    /// Sets A in every entry and, on a write, D in the leaf, top down,
    /// writing back only the entries that change (SDM 4.8).
    fn set_accessed_dirty(&mut self, write: bool, size: EntrySize, mem: &mut dyn GuestTables) -> Result<(), WalkError> {
        let leaf = self.level;
        for (index, slot) in self.entries.iter_mut().enumerate().rev() {
            let Some(entry) = slot else { continue };
            let mut value = entry.value | Pte::A.bits();
            if write && index + 1 == leaf as usize {
                value |= Pte::D.bits();
            }
            if value != entry.value {
                if !mem.write(entry.gpa, size, value) {
                    return Err(WalkError::Unbacked { gpa: entry.gpa });
                }
                //@ begin 13
                self.dirtied |= (value & !entry.value) & Pte::D.bits() != 0;
                //@ end
                entry.value = value;
            }
        }
        Ok(())
    }

    fn leaf(&self) -> Option<GuestEntry> {
        let index = self.level.checked_sub(1)?;
        *self.entries.get(index as usize)?
    }

    fn translation(&self, linear: u64) -> Translation {
        let leaf = self.leaf();
        Translation {
            gpa: self.page | (linear & self.page_size.wrapping_sub(1)),
            writable: self.rights.writable,
            user: self.rights.user,
            executable: self.rights.executable,
            dirty: leaf.is_some_and(|e| e.value & Pte::D.bits() != 0),
            //@ begin 13
            dirtied: self.dirtied,
            //@ end
            page_size: self.page_size,
            leaf_gpa: leaf.map_or(0, |e| e.gpa),
            entries: self.entries,
        }
    }
}
// ANCHOR_END: descent

// ANCHOR: check
/// Whether the rights a walk found allow `access`: `Ok(())`, or `Err` with
/// the error code of the page fault the processor raises (SDM 4.6, 4.7).
pub fn check_access(rights: Rights, access: Access, state: &PagingState) -> Result<(), u32> {
    //@ exercise E8.1
    //@ instruction: Decide whether `access` may go through a translation
    //@+ whose levels together granted `rights`. Return `Ok(())` if the
    //@+ processor allows it; otherwise `Err` with the error code of the
    //@+ page fault it raises. The rules for user and supervisor reads,
    //@+ writes and instruction fetches are in Intel SDM Vol. 3A, 4.6
    //@+ "Access Rights"; the error code in 4.7 "Page-Fault Exceptions".
    //@+ The tests in `e8_1` show the cases that matter.
    //@ hint: Take the three kinds of access one at a time, each from user
    //@+ and from supervisor mode: which right does it need, and which
    //@+ control bit changes the answer? 4.6.1 has a paragraph for each.
    //@+ Then read `access_code` and `pfec` above.
    //@ hint: CR0.WP (`state.wp`) decides whether the supervisor respects
    //@+ read-only pages, never whether a user does. A fetch needs no
    //@+ write right, and `rights.executable` already accounts for
    //@+ EFER.NXE. The W/R, U/S and I/D bits describe the access, for
    //@+ every page fault alike: `access_code` gives them (I/D is not
    //@+ simply "it was a fetch"); the P bit says what kind of fault it is.
    //@ hint: Refused when `access.user && !rights.user`, or `access.write
    //@+ && !rights.writable && (access.user || state.wp)`, or
    //@+ `access.fetch && !rights.executable`; then `Err(pfec::P |
    //@+ access_code(access, state))`, else `Ok(())`.
    let user_denied = access.user && !rights.user;
    let write_denied = access.write && !rights.writable && (access.user || state.wp);
    let fetch_denied = access.fetch && !rights.executable;
    let denied = user_denied || write_denied || fetch_denied;
    if denied { Err(pfec::P | access_code(access, state)) } else { Ok(()) }
    //@ end
}
// ANCHOR_END: check

// ANCHOR: pdptes
/// Loads the four PDPTEs of PAE paging from the table CR3 points to, as
/// the processor does on a MOV to CR3 (or to CR0 or CR4 that enables PAE
/// paging) (SDM 4.4.1). A present PDPTE with a reserved bit set (bits 2:1,
/// 8:5 and 63:MAXPHYADDR, Table 4-8) makes the load fail: the caller gives
/// the guest a #GP and keeps the old values.
pub fn load_pdptes(cr3: u64, maxphyaddr: u8, mem: &dyn GuestTables) -> Result<[u64; 4], PdpteError> {
    let m = u32::from(maxphyaddr).clamp(32, 52);
    let reserved = bits(1, 2) | bits(5, 8) | bits(m, 63);
    let pdpt = cr3 & 0xFFFF_FFE0;
    let mut pdptes = [0; 4];
    for (index, (slot, gpa)) in pdptes.iter_mut().zip((pdpt..).step_by(8)).enumerate() {
        let value = mem.read(gpa, EntrySize::Eight).ok_or(PdpteError::Unbacked { gpa })?;
        if value & Pte::P.bits() != 0 && value & reserved != 0 {
            return Err(PdpteError::Reserved { index, value });
        }
        *slot = value;
    }
    Ok(pdptes)
}
// ANCHOR_END: pdptes

#[cfg(test)]
mod tests;
