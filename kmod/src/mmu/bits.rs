//@ stage 8
//! The bits of the registers that decide how the guest's addresses are
//! translated: CR0, CR4 and EFER, named once with `bitflags` so that code
//! reads `cr0.contains(Cr0::PG)` rather than `cr0 & 1 << 31`.
//!
//! The values are the manuals' (SDM Vol. 3A, 2.5 "Control Registers" and
//! 2.2.1 "Extended Feature Enable Register"; APM Vol. 2, 3.1). The
//! registers here are always the guest's view of them.

use bitflags::bitflags;

// ANCHOR: control_bits
bitflags! {
    /// CR0.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Cr0: u64 {
        /// Protection enable: protected mode.
        const PE = 1 << 0;
        /// Monitor coprocessor.
        const MP = 1 << 1;
        /// x87 emulation.
        const EM = 1 << 2;
        /// Task switched: the next x87/SSE instruction faults (#NM).
        const TS = 1 << 3;
        /// Extension type: always 1 on processors since the i486.
        const ET = 1 << 4;
        /// Numeric error: x87 errors are #MF, not IRQ 13.
        const NE = 1 << 5;
        /// Write protect: supervisor writes obey read-only pages.
        const WP = 1 << 16;
        /// Alignment mask: with EFLAGS.AC, misaligned CPL-3 accesses fault.
        const AM = 1 << 18;
        /// Not write-through.
        const NW = 1 << 29;
        /// Cache disable.
        const CD = 1 << 30;
        /// Paging.
        const PG = 1 << 31;
    }

    /// CR4.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Cr4: u64 {
        const VME = 1 << 0;
        const PVI = 1 << 1;
        /// `rdtsc` only at CPL 0.
        const TSD = 1 << 2;
        /// Debugging extensions.
        const DE = 1 << 3;
        /// Page size extensions: 4 MiB pages in 32-bit paging.
        const PSE = 1 << 4;
        /// Physical address extension: PAE paging (and long mode's).
        const PAE = 1 << 5;
        const MCE = 1 << 6;
        /// Page global enable.
        const PGE = 1 << 7;
        const PCE = 1 << 8;
        const OSFXSR = 1 << 9;
        const OSXMMEXCPT = 1 << 10;
    }

    /// IA32_EFER (MSR 0xC000_0080).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Efer: u64 {
        /// `syscall`/`sysret` enable.
        const SCE = 1 << 0;
        /// Long mode enable.
        const LME = 1 << 8;
        /// Long mode active: set by the processor when paging goes on
        /// with LME.
        const LMA = 1 << 10;
        /// No-execute enable: bit 63 of page-table entries is XD.
        const NXE = 1 << 11;
    }
}
// ANCHOR_END: control_bits
