//! The address space of the MMIO chaos guests, as the generator sees it:
//! what each linear page around the MMIO window is, and the data segments
//! a step may load.
//!
//! The guests build it themselves from `testguests/guests/chaos-mmio.inc`
//! (a test below reads that file): with paging, the window is flanked by
//! RAM pages, so that one access can be half RAM and half MMIO; behind
//! them come a page no slot backs, a page that is not mapped and the
//! window again, read-only. Without paging (real mode, and protected mode
//! for half the seeds) a linear address is a guest-physical one.

use super::Config;
use crate::devices::MMIO_BASE;
use crate::header::Mode;

/// The window's linear address in every configuration.
pub const WINDOW: u64 = MMIO_BASE;
/// In long mode the window's pages appear twice more: at 1 GiB, within
/// reach of a RIP-relative displacement from the steps' code, and at
/// 512 GiB, above 4 GiB.
pub const ALIAS_LOW: u64 = 0x4000_0000;
pub const ALIAS_HIGH: u64 = 0x80_0000_0000;

/// Guest RAM that steps may write: the data page, and with paging the
/// two pages that flank the window (their guest-physical frames).
pub const DATA: u64 = 0xF000;
pub const FLANK_BELOW: u64 = 0x2_0000;
pub const FLANK_ABOVE: u64 = 0x2_1000;
/// The steps' stack: each step's rsp lies in it.
pub const STACK_LOW: u64 = 0x6000;
pub const STACK_HIGH: u64 = 0x7000;
/// Guest memory ends here; above it no slot backs anything.
pub const MEMORY_END: u64 = 0x10_0000;

/// What a linear page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The MMIO echo window: reads and writes go to userspace.
    Window,
    /// The window mapped read-only: a write is a page fault.
    ReadOnly,
    /// Guest RAM a step may write: the data page, a flank, the stack.
    Ram,
    /// Guest RAM a step must not write: code, tables, the program.
    Guarded,
    /// Guest-physical memory no slot backs, outside the window: MMIO
    /// that reads as all ones.
    Unbacked,
    /// Not mapped: a page fault.
    NotPresent,
}

/// The layout with paging, page by page from `base - 0x1000`; the same
/// for the window (`base` = [`WINDOW`]) and its long-mode aliases, except
/// for the page below each.
const AROUND: [Kind; 6] = [Kind::Ram, Kind::Window, Kind::Ram, Kind::Unbacked, Kind::NotPresent, Kind::ReadOnly];

impl Config {
    /// What the byte at `linear` is.
    pub fn kind(&self, linear: u64) -> Kind {
        let linear = if self.mode == Mode::Long64 { linear } else { linear & 0xFFFF_FFFF };
        if !self.paging() {
            return physical(linear);
        }
        let page = linear & !0xFFF;
        for &base in self.window_bases() {
            if page >= base && page < base + 0x5000 {
                return AROUND[((page - base) >> 12) as usize + 1];
            }
            if page == base - 0x1000 {
                return match base {
                    WINDOW => Kind::Ram,
                    // The runner's identity map: 0x3ffff000 has no memory.
                    ALIAS_LOW => Kind::Unbacked,
                    _ => Kind::NotPresent,
                };
            }
        }
        let identity = if self.mode == Mode::Long64 { 0x4000_0000 } else { 0x40_0000 };
        if linear < identity { physical(linear) } else { Kind::NotPresent }
    }

    /// The linear addresses where the window's pages start.
    pub fn window_bases(&self) -> &'static [u64] {
        match (self.mode, self.paging()) {
            (Mode::Long64, _) => &[WINDOW, ALIAS_LOW, ALIAS_HIGH],
            _ => &[WINDOW],
        }
    }

    /// The linear page boundaries where one kind of page meets another:
    /// where an access can straddle RAM and MMIO, or MMIO and a fault.
    pub fn edges(&self) -> Vec<u64> {
        let mut edges = Vec::new();
        for &base in self.window_bases() {
            edges.extend((0..=5).map(|page| base + page * 0x1000));
        }
        if !self.paging() {
            edges.truncate(2);
        }
        edges
    }

    /// Whether a known step may write the byte at `linear`: anything but
    /// guest RAM outside the data page, the flanks and the stack.
    pub fn may_write(&self, linear: u64) -> bool {
        self.kind(linear) != Kind::Guarded
    }
}

/// A guest-physical address, without paging.
fn physical(address: u64) -> Kind {
    if (WINDOW..WINDOW + 0x1000).contains(&address) {
        Kind::Window
    } else if address >= MEMORY_END {
        Kind::Unbacked
    } else if (DATA..DATA + 0x1000).contains(&address)
        || (FLANK_BELOW..FLANK_ABOVE + 0x1000).contains(&address)
        || (STACK_LOW..STACK_HIGH).contains(&address)
    {
        Kind::Ram
    } else {
        Kind::Guarded
    }
}

/// A data segment a step may load, as the guest's GDT describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub selector: u16,
    pub base: u64,
    /// The last valid offset (for an expand-down segment, the last
    /// invalid one).
    pub limit: u64,
    /// Expand-down: the valid offsets are those above `limit`, up to
    /// 0xffff or, with `big`, 0xffffffff (Intel SDM Vol. 3A, 3.4.5.1).
    pub down: bool,
    pub big: bool,
    pub writable: bool,
    /// A code segment (readable, never writable in protected mode).
    pub code: bool,
    /// The null selector: any access faults.
    pub null: bool,
}

const fn seg(selector: u16, base: u64, limit: u64) -> Seg {
    Seg { selector, base, limit, down: false, big: true, writable: true, code: false, null: false }
}

/// The selectors of the guest's GDT (`chaos-mmio.inc` gives the same).
pub const FLAT: Seg = seg(0x10, 0, 0xFFFF_FFFF);
pub const WIN: Seg = seg(0x20, WINDOW, 0xFFFF);
pub const BELOW: Seg = seg(0x28, WINDOW - 0x8000, 0xFFFF_FFFF);
pub const TIGHT: Seg = seg(0x30, WINDOW, 0xFFF);
pub const READ_ONLY: Seg = Seg { writable: false, ..seg(0x38, WINDOW, 0xFFFF) };
pub const DOWN32: Seg = Seg { down: true, ..seg(0x40, WINDOW - 0x1_0000, 0xFFFF) };
pub const DOWN16: Seg = Seg { down: true, big: false, ..seg(0x48, WINDOW - 0xF000, 0xEFFF) };
pub const REAL0: Seg = Seg { big: false, ..seg(0x50, 0, 0xFFFF) };
pub const NULL: Seg = Seg { null: true, ..seg(0, 0, 0) };
/// The code segment as data: readable, never writable.
pub const CODE32: Seg = Seg { writable: false, code: true, ..seg(0x08, 0, 0xFFFF_FFFF) };
pub const REAL_CODE: Seg = Seg { writable: false, code: true, big: false, ..seg(0, 0, 0xFFFF) };
/// The stack segment of real mode: the runner's, base 0.
pub const REAL_STACK: Seg = Seg { big: false, ..seg(0, 0, 0xFFFF) };

/// Each descriptor of the guest's GDT from selector 0x20 on, as
/// `chaos-mmio.inc` must spell it (`GDT_<NAME> equ 0x...`).
pub const DESCRIPTORS: [(&str, Seg, u64); 7] = [
    ("WIN", WIN, 0xC040_9300_0000_FFFF),
    ("BELOW", BELOW, 0xBFCF_93FF_8000_FFFF),
    ("TIGHT", TIGHT, 0xC040_9300_0000_0FFF),
    ("READ_ONLY", READ_ONLY, 0xC040_9100_0000_FFFF),
    ("DOWN32", DOWN32, 0xBF40_97FF_0000_FFFF),
    ("DOWN16", DOWN16, 0xBF00_97FF_1000_EFFF),
    ("REAL0", REAL0, 0x0000_9300_0000_FFFF),
];

impl Seg {
    /// Whether an access of `len` bytes at offset `ea` passes the
    /// segment's checks: present, writable for a write, inside the limit.
    pub fn allows(&self, ea: u64, len: u64, write: bool) -> bool {
        if self.null || (write && !self.writable) {
            return false;
        }
        let last = ea + len - 1;
        if self.down {
            let top = if self.big { 0xFFFF_FFFF } else { 0xFFFF };
            ea > self.limit && last <= top
        } else {
            last <= self.limit
        }
    }
}

/// The segments a step of `mode` may load into DS, ES, FS and GS.
pub fn choices(mode: Mode) -> &'static [Seg] {
    match mode {
        Mode::Real => &[REAL0, FLAT, WIN, BELOW, TIGHT, READ_ONLY, DOWN16],
        Mode::Prot32 => &[FLAT, WIN, BELOW, TIGHT, READ_ONLY, DOWN32, NULL],
        Mode::Long64 => &[FLAT, WIN, BELOW],
    }
}

/// CS and SS of `mode`, which steps never change.
pub fn fixed(mode: Mode) -> (Seg, Seg) {
    match mode {
        Mode::Real => (REAL_CODE, REAL_STACK),
        Mode::Prot32 | Mode::Long64 => (CODE32, FLAT),
    }
}

/// The descriptor bits of a data segment (Intel SDM Vol. 3A, 3.4.5,
/// Figure 3-8): accessed, present, DPL 0.
pub fn descriptor_bits(s: &Seg) -> u64 {
    let (limit, g) = if s.limit > 0xF_FFFF { (s.limit >> 12, 1) } else { (s.limit, 0) };
    let type_ = 1 | u64::from(s.writable) << 1 | u64::from(s.down) << 2;
    let access = 0x90 | type_;
    let flags = g << 3 | u64::from(s.big) << 2;
    (limit & 0xFFFF) | (s.base & 0xFF_FFFF) << 16 | access << 40 | (limit >> 16 & 0xF) << 48 | flags << 52 | (s.base >> 24 & 0xFF) << 56
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: Mode, paging: bool) -> Config {
        Config { mode, paging }
    }

    #[test]
    fn pages_around_the_window_with_paging() {
        let c = config(Mode::Prot32, true);
        let kinds: Vec<Kind> = (-1..6).map(|p: i64| c.kind(WINDOW.wrapping_add_signed(p * 0x1000) + 5)).collect();
        assert_eq!(kinds, [
            Kind::Ram,
            Kind::Window,
            Kind::Ram,
            Kind::Unbacked,
            Kind::NotPresent,
            Kind::ReadOnly,
            Kind::NotPresent
        ]);
        assert_eq!((c.kind(DATA), c.kind(0x8000), c.kind(0x20_0000), c.kind(0x50_0000)), (
            Kind::Ram,
            Kind::Guarded,
            Kind::Unbacked,
            Kind::NotPresent
        ));
    }

    #[test]
    fn long_mode_has_two_aliases() {
        let c = config(Mode::Long64, true);
        assert_eq!(c.kind(ALIAS_LOW + 0x10), Kind::Window);
        assert_eq!(c.kind(ALIAS_LOW - 1), Kind::Unbacked);
        assert_eq!(c.kind(ALIAS_HIGH + 0x4010), Kind::ReadOnly);
        assert_eq!(c.kind(ALIAS_HIGH - 1), Kind::NotPresent);
        assert_eq!(c.kind(0x3000_0000), Kind::Unbacked);
        assert_eq!(c.edges().len(), 18);
    }

    #[test]
    fn without_paging_linear_is_physical() {
        let c = config(Mode::Real, false);
        assert_eq!((c.kind(WINDOW - 1), c.kind(WINDOW), c.kind(WINDOW + 0x1000)), (Kind::Unbacked, Kind::Window, Kind::Unbacked));
        assert_eq!(c.edges(), [WINDOW, WINDOW + 0x1000]);
        assert!(!c.may_write(0xA000) && c.may_write(STACK_LOW) && c.may_write(0x1_0000_0000 - 1));
    }

    #[test]
    fn segment_checks() {
        assert!(WIN.allows(0xFFFC, 4, true) && !WIN.allows(0xFFFD, 4, true));
        assert!(!READ_ONLY.allows(0, 1, true) && READ_ONLY.allows(0, 1, false));
        assert!(!DOWN32.allows(0xFFFF, 1, false) && DOWN32.allows(0x1_0000, 4, true));
        assert!(DOWN16.allows(0xF000, 2, false) && !DOWN16.allows(0xFFFF, 2, false));
        assert!(!NULL.allows(0, 1, false));
    }

    #[test]
    fn descriptors_encode_their_segments() {
        for (name, s, bits) in DESCRIPTORS {
            assert_eq!(descriptor_bits(&s), bits, "{name}: {:#018x}", descriptor_bits(&s));
        }
    }
}
