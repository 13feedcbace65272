//@ stage 3
//! The general registers, named and numbered as the processor encodes
//! them. Everything that holds or decodes guest registers (the vCPU, the
//! backends' entry code, the exit decoders) takes the numbering from here.
//@ begin 4
//!
//! From stage 04 the bits of the control registers are named here too,
//! once, with `bitflags`, so that code reads `cr4.contains(Cr4::VMXE)`
//! rather than `cr4 & 1 << 13`: CR4 from stage 04 (VMXON needs CR4.VMXE),
//! CR0 and EFER from stage 05, where the backends first run a guest. The
//! values are the manuals' (Intel SDM Vol. 3A, 2.5 "Control Registers"
//! and 2.2.1 "Extended Feature Enable Register"; AMD APM Vol. 2, 3.1 and
//! 15.4). The types describe a register's bits, not whose register it
//! is: the backends use them for the host's and the hardware's values,
//! the exit handlers and the MMU for the guest's view.
//@ end

// ANCHOR: reg
/// The general registers, numbered as instructions encode them (the `reg`
/// and `r/m` fields of ModRM, extended by REX to 4 bits; Intel SDM Vol. 2A,
/// Table 3-1 "Register Codes Associated With +rb, +rw, +rd, +ro"). 2006
/// used the same order (`VCPU_REGS_RAX` ...) so that
/// an exit handler can index the register file with a number taken from
/// the exit information. `struct kvm_regs` lists them in another order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

/// The number of general registers in 64-bit mode.
pub const NR_REGS: usize = 16;

// Every `Reg` indexes the register array: `regs[reg as usize]` cannot panic.
const _: () = assert!(Reg::R15 as usize == NR_REGS - 1);
// ANCHOR_END: reg
//@ begin 4

// ANCHOR: cr4
bitflags::bitflags! {
    /// CR4: every bit the module names. Which of them a guest may set is
    /// [`Cr4::OFFERED`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Cr4: u64 {
        /// Virtual-8086 mode extensions.
        const VME = 1 << 0;
        /// Protected-mode virtual interrupts.
        const PVI = 1 << 1;
        /// `rdtsc` only at CPL 0.
        const TSD = 1 << 2;
        /// Debugging extensions.
        const DE = 1 << 3;
        /// Page size extensions: 4 MiB pages in 32-bit paging.
        const PSE = 1 << 4;
        /// Physical address extension: PAE paging (and long mode's).
        const PAE = 1 << 5;
        /// Machine-check enable.
        const MCE = 1 << 6;
        /// Page global enable.
        const PGE = 1 << 7;
        /// `rdpmc` at any CPL.
        const PCE = 1 << 8;
        /// The OS saves SSE state with `fxsave`.
        const OSFXSR = 1 << 9;
        /// The OS handles SSE exceptions (#XM).
        const OSXMMEXCPT = 1 << 10;
        /// VMX enable: `vmxon` needs it (SDM Vol. 3C, 24.7).
        const VMXE = 1 << 13;
        /// `xsave` and XCR0: AVX and later state.
        const OSXSAVE = 1 << 18;
    }
}

impl Cr4 {
    /// The bits a guest may set with `mov cr4`, bits 10:0; any other is
    /// #GP. VMXE and OSXSAVE name features the vCPU does not have (no
    /// nested VMX, no AVX state: the FPU switch saves legacy state only).
    pub const OFFERED: Cr4 = Cr4::VME
        .union(Cr4::PVI)
        .union(Cr4::TSD)
        .union(Cr4::DE)
        .union(Cr4::PSE)
        .union(Cr4::PAE)
        .union(Cr4::MCE)
        .union(Cr4::PGE)
        .union(Cr4::PCE)
        .union(Cr4::OSFXSR)
        .union(Cr4::OSXMMEXCPT);
}
// ANCHOR_END: cr4
//@ end
//@ begin 5

// ANCHOR: cr0_efer
bitflags::bitflags! {
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
        /// SVM enable: the SVM instructions work (APM Vol. 2, 15.4
        /// "Enabling SVM"). The host's, never a guest's.
        const SVME = 1 << 12;
    }
}

impl Efer {
    /// The bits a guest's `wrmsr` to EFER may carry: SCE, LME and NXE,
    /// and LMA, which the write leaves as it was. Any other is #GP.
    pub const OFFERED: Efer = Efer::SCE.union(Efer::LME).union(Efer::LMA).union(Efer::NXE);
}
// ANCHOR_END: cr0_efer
//@ end
//@ begin 4

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr4_bits_are_the_manuals() {
        assert_eq!(Cr4::VMXE.bits(), 0x2000);
        assert_eq!(Cr4::OSXSAVE.bits(), 0x4_0000);
        assert_eq!(Cr4::OFFERED.bits(), 0x7FF, "bits 10:0");
        assert!(!Cr4::OFFERED.intersects(Cr4::VMXE | Cr4::OSXSAVE));
    }
    //@ begin 5

    #[test]
    fn cr0_and_efer_bits_are_the_manuals() {
        assert_eq!((Cr0::PE | Cr0::ET | Cr0::WP | Cr0::PG).bits(), 0x8001_0011);
        assert_eq!((Cr0::NW | Cr0::CD).bits(), 0x6000_0000);
        assert_eq!((Efer::LME | Efer::LMA).bits(), 0x500);
        assert_eq!(Efer::SVME.bits(), 0x1000);
        assert_eq!(Efer::OFFERED.bits(), 0xD01);
    }

    #[test]
    fn unnamed_bits_survive_retain_and_difference() {
        // What the backends rely on to keep a register's other bits.
        let cr0 = Cr0::from_bits_retain(1 << 40 | 0x6000_0011) - (Cr0::CD | Cr0::NW);
        assert_eq!(cr0.bits(), 1 << 40 | 0x11);
        assert_eq!((Efer::from_bits_retain(1 << 14) | Efer::SVME).bits(), 0x5000);
    }
    //@ end
}
//@ end
