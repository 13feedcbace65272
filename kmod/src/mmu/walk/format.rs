//@ stage 8
//! The three formats of guest page tables, as [`Format`]s for the one walk
//! in [`super`]: what 2006 got by compiling `paging_tmpl.h` once per
//! `PTTYPE`. Each says how big an entry is, how many bits of the linear
//! address a level translates, where the walk starts, which bits of a
//! present entry are reserved, and where a page may end the walk.

use super::{EntrySize, PagingState, Pte, bits, maxphyaddr, xd_reserved};

// ANCHOR: format
/// Where a walk starts: the first table it reads and that table's level.
pub(super) struct Start {
    pub(super) table: u64,
    pub(super) level: u32,
}

/// One format of guest page tables. Levels count up from the page table
/// (1) to the top: 2 in 32-bit and PAE paging (PAE's PDPTEs are
/// registers), 4 in 4-level paging.
pub(super) trait Format {
    /// The size of one entry.
    const ENTRY: EntrySize;
    /// The linear-address bits each level translates: 10 or 9.
    const INDEX_BITS: u32;
    /// The first table, or `None` if the walk faults before it (a PAE
    /// PDPTE that is not present).
    fn start(state: &PagingState, linear: u64) -> Option<Start>;
    /// The bits of `entry`, present at `level`, that must be 0.
    fn reserved(state: &PagingState, level: u32, entry: u64) -> u64;
    /// Whether an entry at `level` with PS = 1 maps a page.
    fn maps_page(state: &PagingState, level: u32) -> bool;
    /// The address of the table `entry` points to.
    fn table(entry: u64) -> u64;
    /// The address of the page `entry`, a leaf at `level`, maps.
    fn page(entry: u64, level: u32) -> u64;
}

/// The offset in its table of the entry for `linear` at `level`.
pub(super) fn entry_offset<F: Format>(linear: u64, level: u32) -> u64 {
    let shift = 12 + F::INDEX_BITS * level.saturating_sub(1);
    let index = linear.checked_shr(shift).unwrap_or(0) & ((1 << F::INDEX_BITS) - 1);
    index * F::ENTRY.bytes()
}

/// The size of a page mapped at `level`.
pub(super) fn page_size<F: Format>(level: u32) -> u64 {
    1u64.checked_shl(12 + F::INDEX_BITS * level.saturating_sub(1)).unwrap_or(0)
}
// ANCHOR_END: format

// ANCHOR: formats
/// 32-bit paging (SDM 4.3, Tables 4-4 to 4-6): 1024 entries of 4 bytes,
/// 4 MiB pages with CR4.PSE, whose PDE bits 20:13 hold address bits 39:32
/// (PSE-36), and no reserved bit anywhere else.
pub(super) struct Paging32;

impl Format for Paging32 {
    const ENTRY: EntrySize = EntrySize::Four;
    const INDEX_BITS: u32 = 10;

    fn start(state: &PagingState, _: u64) -> Option<Start> {
        Some(Start { table: state.cr3 & 0xFFFF_F000, level: 2 })
    }

    /// A 4 MiB PDE reserves bit 21 and the address bits at or above M =
    /// min(MAXPHYADDR, 40): bits 20:(M - 19) (Table 4-4). Linux's KVM
    /// takes M = 36 whatever MAXPHYADDR is.
    fn reserved(state: &PagingState, level: u32, entry: u64) -> u64 {
        let large = level == 2 && state.pse && entry & Pte::PS.bits() != 0;
        if !large {
            return 0;
        }
        let m = maxphyaddr(state).min(40);
        bits(21, 21) | bits(m - 19, 20)
    }

    fn maps_page(state: &PagingState, level: u32) -> bool {
        level == 2 && state.pse
    }

    fn table(entry: u64) -> u64 {
        entry & 0xFFFF_F000
    }

    fn page(entry: u64, level: u32) -> u64 {
        match level {
            2 => (entry & 0xFFC0_0000) | (((entry >> 13) & 0xFF) << 32),
            _ => Self::table(entry),
        }
    }
}

/// PAE paging (SDM 4.4, Tables 4-8 to 4-11): a PDPTE register, then 512
/// entries of 8 bytes; 2 MiB pages; bits 62:MAXPHYADDR reserved.
pub(super) struct PagingPae;

impl Format for PagingPae {
    const ENTRY: EntrySize = EntrySize::Eight;
    const INDEX_BITS: u32 = 9;

    /// PDPTE `linear[31:30]`. Its reserved bits were checked when it was
    /// loaded; it has no R/W, U/S, XD or accessed bit (Table 4-8).
    fn start(state: &PagingState, linear: u64) -> Option<Start> {
        let pdpte = *state.pdptes.get(((linear >> 30) & 3) as usize)?;
        (pdpte & Pte::P.bits() != 0).then_some(Start { table: pdpte & bits(12, 51), level: 2 })
    }

    fn reserved(state: &PagingState, level: u32, entry: u64) -> u64 {
        bits(maxphyaddr(state), 62) | xd_reserved(state) | large_reserved(level, entry)
    }

    fn maps_page(_: &PagingState, level: u32) -> bool {
        level == 2
    }

    fn table(entry: u64) -> u64 {
        entry & bits(12, 51)
    }

    fn page(entry: u64, level: u32) -> u64 {
        entry & bits(12 + 9 * level.saturating_sub(1), 51)
    }
}

/// 4-level paging (SDM 4.5, Tables 4-14 to 4-20): four levels of 512
/// entries of 8 bytes; 2 MiB pages, 1 GiB pages if the CPU offers them;
/// bits 51:MAXPHYADDR reserved, 62:52 ignored.
pub(super) struct Paging64;

impl Format for Paging64 {
    const ENTRY: EntrySize = EntrySize::Eight;
    const INDEX_BITS: u32 = 9;

    /// Bits 63:48 of `linear` are not used: a non-canonical address is a
    /// #GP, which the caller raises before walking.
    fn start(state: &PagingState, _: u64) -> Option<Start> {
        Some(Start { table: state.cr3 & bits(12, 51), level: 4 })
    }

    /// PS is reserved in a PML4E (Table 4-15), and in a PDPTE without
    /// 1 GiB pages (Table 4-17).
    fn reserved(state: &PagingState, level: u32, entry: u64) -> u64 {
        let ps = match level {
            4 => Pte::PS.bits(),
            3 if !state.gbpages => Pte::PS.bits(),
            _ => 0,
        };
        bits(maxphyaddr(state), 51) | xd_reserved(state) | ps | large_reserved(level, entry)
    }

    fn maps_page(state: &PagingState, level: u32) -> bool {
        level == 2 || (level == 3 && state.gbpages)
    }

    fn table(entry: u64) -> u64 {
        PagingPae::table(entry)
    }

    fn page(entry: u64, level: u32) -> u64 {
        PagingPae::page(entry, level)
    }
}

/// The low address bits of a large page's entry, which must be 0: 20:13
/// of a 2 MiB PDE (Tables 4-10 and 4-18), 29:13 of a 1 GiB PDPTE (Table
/// 4-16). Bit 12 is PAT.
fn large_reserved(level: u32, entry: u64) -> u64 {
    match (level, entry & Pte::PS.bits() != 0) {
        (2, true) => bits(13, 20),
        (3, true) => bits(13, 29),
        _ => 0,
    }
}
// ANCHOR_END: formats
