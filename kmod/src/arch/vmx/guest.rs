//@ stage 5
//! The guest-state area of the VMCS (SDM Vol. 3C, 25.4 "Guest-State
//! Area"): the guest's segments, descriptor tables and control registers,
//! written before an entry from the guest's view of them (`KvmSregs`) and
//! read back after an exit.
//!
//! The VMCS is reached through the [`Fields`] trait, so that the
//! translation runs as host unit tests against a fake VMCS.
//!
//! # What the guest sees and what the hardware runs
//!
//! Without EPT, the processor translates every guest address through a
//! page table whose entries hold host-physical addresses. A guest with
//! paging off must still be confined to its own memory, so the hardware
//! always runs it with CR0.PG = 1 on the module's "nonpaging" table
//! (PAE, hence CR4.PAE = 1), and with CR0.PE and CR0.NE set because VMX
//! requires them (IA32_VMX_CR0_FIXED0, SDM Vol. 3C, A.7). The guest must
//! not notice: "For each position corresponding to a bit clear in the CR0
//! guest/host mask, the destination operand is loaded with the value of
//! the corresponding bit in CR0. For each position corresponding to a bit
//! set in the CR0 guest/host mask, the destination operand is loaded with
//! the value of the corresponding bit in the CR0 read shadow." (SDM Vol.
//! 3C, 26.3 "Changes to Instruction Behavior in VMX Non-Root Operation",
//! `mov` from CR0.) So the bits the host owns are set in the guest/host
//! mask and the guest's own values sit in the read shadow; a guest write
//! that would change an owned bit exits instead (VM exit reason 28), and
//! the module updates the guest's view. CR4 works the same way, with
//! every bit owned. CR3 is the module's table; `mov` to and from CR3
//! exit (CR3-load and CR3-store exiting), so the guest sees its own value.

use super::fields::{self, Seg};
use crate::abi::{KvmDtable, KvmSegment, KvmSregs};
use crate::regs::{Cr0, Cr4};
//@ begin 8
use crate::regs::Efer;
//@ end

/// Reads and writes fields of the current VMCS.
pub trait Fields {
    fn read(&self, field: u32) -> u64;
    fn write(&mut self, field: u32, value: u64);
}

// ANCHOR: cr_bits
/// The CR0 bits the host owns: the guest reads them from the shadow and
/// cannot change them without an exit. PE, NE and PG are forced on; CD
/// and NW are forced off, so that guest memory, which is host memory, is
/// always cached the way the host caches it.
pub const CR0_HOST_OWNED: Cr0 = Cr0::PE.union(Cr0::NE).union(Cr0::NW).union(Cr0::CD).union(Cr0::PG);

/// The CR4 bits of the guest's that the hardware runs with; every other
/// bit is the host's choice, and every bit is owned (in the mask).
pub const CR4_GUEST_BITS: Cr4 = Cr4::VME
    .union(Cr4::PVI)
    .union(Cr4::TSD)
    .union(Cr4::DE)
    .union(Cr4::PCE)
    .union(Cr4::OSFXSR)
    .union(Cr4::OSXMMEXCPT);
// ANCHOR_END: cr_bits

// ANCHOR: hardware_crs
/// The VMX fixed bits of CR0 and CR4 (IA32_VMX_CR0_FIXED0/1,
/// IA32_VMX_CR4_FIXED0/1): bits set in `*0` must be 1, bits clear in
/// `*1` must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedBits {
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
}

/// The CR0 the hardware runs a guest with, whose own CR0 is `guest`.
/// Without unrestricted guest, PE and PG are among the fixed-1 bits.
pub fn hardware_cr0(guest: u64, fixed: &FixedBits) -> u64 {
    let forced = Cr0::PE | Cr0::NE | Cr0::PG;
    //@ begin 8
    // From stage 08 the shadow maps read-only the pages the guest has not
    // dirtied yet, and a supervisor write must fault on them too: the
    // hardware always runs with WP, whatever the guest's own WP.
    let forced = forced | Cr0::WP;
    //@ end
    ((guest | forced.bits() | fixed.cr0_fixed0) & !(Cr0::CD | Cr0::NW).bits()) & fixed.cr0_fixed1
}

/// The CR4 the hardware runs a guest with: PAE for the module's table,
/// VMXE as VMX requires, and the guest's own harmless bits.
pub fn hardware_cr4(guest: u64, fixed: &FixedBits) -> u64 {
    ((guest & CR4_GUEST_BITS.bits()) | (Cr4::PAE | Cr4::VMXE).bits() | fixed.cr4_fixed0) & fixed.cr4_fixed1
}
//@ begin 8

/// The EFER the hardware runs a guest with, whose own EFER is `guest`:
/// its SCE and NXE, and long mode exactly when the guest's is active.
/// While the guest has only set LME its paging is off, the module's PAE
/// map runs it, and the hardware's LME must stay 0: with CR0.PG = 1, VM
/// entry requires LME = LMA = the "IA-32e mode guest" control (SDM Vol.
/// 3C, 27.3.1.1).
pub fn hardware_efer(guest: u64) -> u64 {
    let guest = Efer::from_bits_retain(guest);
    let long = if guest.contains(Efer::LMA) { Efer::LME | Efer::LMA } else { Efer::empty() };
    (guest & (Efer::SCE | Efer::NXE) | long).bits()
}
//@ end
// ANCHOR_END: hardware_crs

// ANCHOR: access_rights
/// Bit 16 of the access-rights field: "segment unusable".
pub const AR_UNUSABLE: u32 = 1 << 16;

/// The access-rights field of a segment (SDM Vol. 3C, 25.4.1, Table 25-2
/// "Format of Access Rights"); [`segment_from_fields`] reads it back.
pub fn access_rights(seg: &KvmSegment) -> u32 {
    //@ exercise E5.2
    //@ instruction: Return the VMCS access-rights field of `seg`, laid out
    //@+ as Intel SDM Vol. 3C, 25.4.1, Table 25-2 "Format of Access Rights"
    //@+ shows it. `KVM_SET_SREGS` hands over the `u8` fields as userspace
    //@+ wrote them: each must be cut to its field's width, and the
    //@+ reserved bits stay 0. `segment_from_fields` below reads the field
    //@+ back. A quick one; the `e5_2` tests also pack random segments.
    //@ hint: Compare Table 25-2 with a segment descriptor's bits 40 to 55
    //@+ (stage 01): the layout is the same, as the `lar` instruction
    //@+ shows it, plus one bit the descriptor does not have.
    //@ hint: Bits 3:0 type, 4 S, 6:5 DPL, 7 P, 12 AVL, 13 L, 14 D/B,
    //@+ 15 G, 16 unusable. Mask each `u8` (`seg.s & 1`, `seg.dpl & 3`)
    //@+ before shifting it.
    u32::from(seg.type_ & 0xF)
        | u32::from(seg.s & 1) << 4
        | u32::from(seg.dpl & 3) << 5
        | u32::from(seg.present & 1) << 7
        | u32::from(seg.avl & 1) << 12
        | u32::from(seg.l & 1) << 13
        | u32::from(seg.db & 1) << 14
        | u32::from(seg.g & 1) << 15
        | u32::from(seg.unusable & 1) << 16
    //@ end
}

/// A segment as the VMCS holds it, back in `kvm_segment` form.
pub fn segment_from_fields(selector: u16, base: u64, limit: u32, ar: u32) -> KvmSegment {
    let bit = |n: u32| ((ar >> n) & 1) as u8;
    KvmSegment {
        base,
        limit,
        selector,
        type_: (ar & 0xF) as u8,
        s: bit(4),
        dpl: ((ar >> 5) & 3) as u8,
        present: bit(7),
        avl: bit(12),
        l: bit(13),
        db: bit(14),
        g: bit(15),
        unusable: bit(16),
        padding: 0,
    }
}
// ANCHOR_END: access_rights

// ANCHOR: real_mode_segment
/// The segment the hardware runs a real-mode guest's `seg` with. Without
/// unrestricted guest, VMX runs real mode as 16-bit protected mode at
/// CPL 0 (see `vcpu.rs`), and VM entry checks the selectors as protected
/// mode does: CS.RPL must equal CS.DPL and SS.RPL, SS.DPL the CPL, and a
/// data segment's DPL must not be below its RPL (SDM Vol. 3C, 27.3.1.2).
/// A real-mode selector is a paragraph number whose low two bits mean
/// nothing, yet they are the RPL there: 0x1403 in SS would fail the entry.
/// So the hardware gets the selector with RPL 0 and DPL 0, and the guest
/// keeps its own (see [`read_sregs`]). Base, limit and type stay the
/// guest's: only the checks of protected mode are satisfied.
pub fn real_mode_segment(seg: &KvmSegment) -> KvmSegment {
    KvmSegment { selector: seg.selector & !3, dpl: 0, ..*seg }
}

/// Whether `sregs` is real mode (CR0.PE clear).
pub fn real_mode(sregs: &KvmSregs) -> bool {
    !Cr0::from_bits_retain(sregs.cr0).contains(Cr0::PE)
}
// ANCHOR_END: real_mode_segment
//@ begin 12

// ANCHOR: vm86_segments
/// Whether the guest's `seg` can run in virtual-8086 mode as the guest
/// sees it. VM entry into vm86 demands of CS, SS, DS, ES, FS and GS:
/// "The base address must be the value of the selector field shifted
/// left 4 bits", "the field must be 0000FFFFH" (the limit), and access
/// rights F3H (SDM Vol. 3C, 27.3.1.2 "Checks on Guest Segment
/// Registers"). A real-mode segment loaded in real mode has such a base;
/// one that kept a base or limit of protected mode ("unreal" mode) or a
/// 32-bit default size does not, and vm86 cannot run it.
pub fn fits_vm86(seg: &KvmSegment) -> bool {
    seg.base == u64::from(seg.selector) << 4 && seg.limit == 0xFFFF && seg.db == 0
}

/// Whether all six of a real-mode guest's segment registers fit vm86.
pub fn runs_in_vm86(sregs: &KvmSregs) -> bool {
    segments(sregs).iter().take(6).all(|seg| fits_vm86(seg))
}

/// The segment the hardware runs `seg` with in vm86: its selector, base
/// selector × 16, limit 0xFFFF, access rights F3H (present, DPL 3,
/// read/write data, accessed), as 27.3.1.2 demands of all six.
pub fn vm86_segment(seg: &KvmSegment) -> KvmSegment {
    let selector = seg.selector;
    KvmSegment { selector, base: u64::from(selector) << 4, limit: 0xFFFF, type_: 3, s: 1, dpl: 3, present: 1, ..KvmSegment::default() }
}

/// The TR the hardware runs vm86 with: the module's TSS at `base`, a busy
/// 32-bit TSS (type 11) as VM entry requires of TR outside IA-32e mode
/// (27.3.1.2), its limit covering the bitmaps.
pub fn vm86_tr(base: u64) -> KvmSegment {
    let limit = crate::real_mode::TSS_SIZE as u32 - 1;
    KvmSegment { base, limit, type_: crate::segments::TYPE_TSS_BUSY, present: 1, ..KvmSegment::default() }
}
// ANCHOR_END: vm86_segments

// ANCHOR: vm86_state
/// RFLAGS.IOPL (bits 13:12) and RFLAGS.VM (bit 17).
pub const RFLAGS_IOPL: u64 = 3 << 12;
pub const RFLAGS_VM: u64 = 1 << 17;

/// The RFLAGS the hardware runs a vm86 guest with: VM set, and IOPL 3,
/// so that `cli`, `sti`, `pushf`, `popf`, `int n` and `iret` act on
/// the real flags without faulting (SDM Vol. 3A, 20.2.7 "Sensitive
/// Instructions"), as 2006's `enter_rmode` set them.
pub fn vm86_rflags(guest: u64) -> u64 {
    guest | RFLAGS_VM | RFLAGS_IOPL
}

/// The guest's RFLAGS after a run in vm86: the hardware's, without VM,
/// and with the IOPL the guest had (`guest_iopl`), which code at CPL 3
/// cannot change.
pub fn rflags_after_vm86(hardware: u64, guest_iopl: u64) -> u64 {
    hardware & !(RFLAGS_VM | RFLAGS_IOPL) | guest_iopl & RFLAGS_IOPL
}

/// Writes over what [`write_sregs`] wrote what vm86 changes: the six
/// segments, TR (the module's TSS at `tss`), CR4 with VME, which makes
/// `int n` go through the redirection bitmap to the guest's own
/// interrupt vector table (SDM Vol. 3A, 20.3.3), and CR0 without AM: at
/// CPL 3 alignment checking would apply, which it never does in real
/// mode. The shadows keep the guest's own CR0 and CR4.
pub fn write_vm86(vmcs: &mut dyn Fields, sregs: &KvmSregs, tss: u64, fixed: &FixedBits) {
    for (seg, s) in Seg::ALL.iter().zip(segments(sregs)).take(6) {
        let s = vm86_segment(s);
        vmcs.write(seg.selector(), u64::from(s.selector));
        vmcs.write(seg.base(), s.base);
        vmcs.write(seg.limit(), u64::from(s.limit));
        vmcs.write(seg.access_rights(), u64::from(access_rights(&s)));
    }
    let tr = vm86_tr(tss);
    vmcs.write(Seg::Tr.selector(), 0);
    vmcs.write(Seg::Tr.base(), tr.base);
    vmcs.write(Seg::Tr.limit(), u64::from(tr.limit));
    vmcs.write(Seg::Tr.access_rights(), u64::from(access_rights(&tr)));
    vmcs.write(fields::GUEST_CR0, hardware_cr0(sregs.cr0, fixed) & !Cr0::AM.bits());
    vmcs.write(fields::GUEST_CR4, (hardware_cr4(sregs.cr4, fixed) | Cr4::VME.bits()) & !Cr4::PVI.bits());
}

/// After an exit of a real-mode guest, as [`read_sregs`] left `sregs`:
/// the guest's view of its six segment registers, given its view
/// `before` the entry and whether the hardware ran it in vm86. A segment
/// the hardware holds as it was written is the guest's as it was; any
/// other the guest loaded, with real-mode meaning ([`real_mode_view`]).
/// In vm86 TR is the guest's again. Returns whether the hardware's
/// segments differ from what was written: then they must be written
/// again (after a null selector load in 16-bit protected mode, the
/// hardware's segment is unusable, which the guest's is not).
pub fn read_real_mode(sregs: &mut KvmSregs, before: &KvmSregs, vm86: bool) -> bool {
    let mut loaded = false;
    for (now, was) in segments_mut(sregs).into_iter().zip(segments(before)).take(6) {
        let written = if vm86 { vm86_segment(was) } else { real_mode_segment(was) };
        let (view, load) = real_mode_view(was, &written, now);
        loaded |= load;
        *now = view;
    }
    if vm86 {
        sregs.tr = before.tr;
    }
    loaded
}

/// One segment's view after a real-mode exit: `was` if the hardware's
/// `now` is `was` or what was `written`; else a real-mode load of
/// `now`'s selector into `was` (base = selector × 16, the rest kept),
/// and `true`.
pub fn real_mode_view(was: &KvmSegment, written: &KvmSegment, now: &KvmSegment) -> (KvmSegment, bool) {
    let same = |a: &KvmSegment, b: &KvmSegment| KvmSegment { padding: 0, ..*a } == KvmSegment { padding: 0, ..*b };
    if same(now, was) || same(now, written) {
        (*was, false)
    } else {
        (crate::real_mode::load_segment(was, now.selector), true)
    }
}
// ANCHOR_END: vm86_state
//@ end

/// The guest's eight segment registers in VMCS order.
fn segments(sregs: &KvmSregs) -> [&KvmSegment; 8] {
    [&sregs.es, &sregs.cs, &sregs.ss, &sregs.ds, &sregs.fs, &sregs.gs, &sregs.ldt, &sregs.tr]
}

fn segments_mut(sregs: &mut KvmSregs) -> [&mut KvmSegment; 8] {
    let KvmSregs { es, cs, ss, ds, fs, gs, ldt, tr, .. } = sregs;
    [es, cs, ss, ds, fs, gs, ldt, tr]
}

// ANCHOR: write_guest
/// The guest's eight segment registers as the hardware runs them, in
/// VMCS order: a real-mode guest's as [`real_mode_segment`] makes them,
/// a protected-mode guest's as they are.
//@ begin 12
/// From stage 12 a protected-mode guest's pass VM entry's checks even
/// where the guest's own would not (`entry_checks.rs`).
//@ end
pub fn entry_segments(sregs: &KvmSregs) -> [KvmSegment; 8] {
    let segs = segments(sregs).map(|s| *s);
    //@ begin 12
    if !real_mode(sregs) {
        return super::entry_checks::protected_mode_segments(segs);
    }
    //@ end
    if real_mode(sregs) { segs.map(|s| real_mode_segment(&s)) } else { segs }
}

/// Writes the guest's view `sregs` into the guest-state area: segments
/// ([`entry_segments`]), GDTR, IDTR, and CR0 and CR4 as the hardware runs
/// them with their shadows. CR3 is the module's and is written before
/// each entry; CR2 is not in the VMCS; EFER is not loaded (a 32-bit guest
/// runs with the host's EFER, LMA and LME cleared by the entry).
pub fn write_sregs(vmcs: &mut dyn Fields, sregs: &KvmSregs, fixed: &FixedBits) {
    for (seg, s) in Seg::ALL.iter().zip(&entry_segments(sregs)) {
        vmcs.write(seg.selector(), u64::from(s.selector));
        vmcs.write(seg.base(), s.base);
        vmcs.write(seg.limit(), u64::from(s.limit));
        vmcs.write(seg.access_rights(), u64::from(access_rights(s)));
    }
    vmcs.write(fields::GUEST_GDTR_BASE, sregs.gdt.base);
    vmcs.write(fields::GUEST_GDTR_LIMIT, u64::from(sregs.gdt.limit));
    vmcs.write(fields::GUEST_IDTR_BASE, sregs.idt.base);
    vmcs.write(fields::GUEST_IDTR_LIMIT, u64::from(sregs.idt.limit));
    vmcs.write(fields::GUEST_CR0, hardware_cr0(sregs.cr0, fixed));
    vmcs.write(fields::CR0_READ_SHADOW, sregs.cr0);
    vmcs.write(fields::GUEST_CR4, hardware_cr4(sregs.cr4, fixed));
    vmcs.write(fields::CR4_READ_SHADOW, sregs.cr4);
}

/// Reads back what the guest can change without an exit: its segment
/// registers and descriptor tables. Control registers change only
/// through exits, which update `sregs` themselves.
///
/// A segment the hardware holds as [`entry_segments`] wrote it is the
/// guest's as it was: the guest did not load it again, and keeps the
/// selector and DPL that, in real mode, [`real_mode_segment`] hid from
/// the hardware. Any other is what the hardware says.
pub fn read_sregs(vmcs: &dyn Fields, sregs: &mut KvmSregs) {
    let written = entry_segments(sregs);
    for ((seg, s), written) in Seg::ALL.iter().zip(segments_mut(sregs)).zip(written) {
        let hw = segment_from_fields(
            vmcs.read(seg.selector()) as u16,
            vmcs.read(seg.base()),
            vmcs.read(seg.limit()) as u32,
            vmcs.read(seg.access_rights()) as u32,
        );
        if hw != (KvmSegment { padding: 0, ..written }) {
            *s = hw;
        }
    }
    let table = |base, limit| KvmDtable { base: vmcs.read(base), limit: vmcs.read(limit) as u16, padding: [0; 3] };
    sregs.gdt = table(fields::GUEST_GDTR_BASE, fields::GUEST_GDTR_LIMIT);
    sregs.idt = table(fields::GUEST_IDTR_BASE, fields::GUEST_IDTR_LIMIT);
}
// ANCHOR_END: write_guest

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A VMCS made of a map from encodings to values.
    #[derive(Default)]
    pub struct FakeVmcs(pub HashMap<u32, u64>);

    impl Fields for FakeVmcs {
        fn read(&self, field: u32) -> u64 {
            self.0.get(&field).copied().unwrap_or(0)
        }
        fn write(&mut self, field: u32, value: u64) {
            self.0.insert(field, value);
        }
    }

    /// Haswell's fixed bits: CR0 needs PE, NE, PG; CR4 needs VMXE.
    pub const FIXED: FixedBits =
        FixedBits { cr0_fixed0: 0x8000_0021, cr0_fixed1: 0xFFFF_FFFF, cr4_fixed0: 0x2000, cr4_fixed1: 0x3767FF };

    fn flat_code32() -> KvmSegment {
        KvmSegment { base: 0, limit: 0xFFFF_FFFF, selector: 8, type_: 0xB, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0, padding: 0 }
    }

    /// CR0 as the hardware runs it, without WP, which stage 08 forces on.
    fn hardware_cr0_but_wp(guest: u64) -> u64 {
        hardware_cr0(guest, &FIXED) & !(1 << 16)
    }

    #[test]
    fn a_guest_with_paging_off_runs_with_paging_on_and_sees_it_off() {
        assert_eq!(hardware_cr0_but_wp(0x11), 0x8000_0031);
        assert_eq!(hardware_cr0_but_wp(0x6000_0010), 0x8000_0031, "caches stay on");
        assert_eq!(hardware_cr4(0, &FIXED), 0x2020);
        assert_eq!(hardware_cr4(1 << 9 | 1 << 7, &FIXED), 0x2220, "OSFXSR is the guest's to set, PGE is not");
        assert_eq!(hardware_cr4(1 << 13 | 1 << 40, &FIXED), 0x2020, "nor unnamed bits");
        assert_eq!(hardware_cr4(0x7FF, &FIXED), 0x272F, "VME, PVI, TSD, DE, PCE, OSFXSR, OSXMMEXCPT and PAE");
        assert_eq!(CR0_HOST_OWNED.bits(), 0xE000_0021, "PE, NE, NW, CD, PG");
        let unfixed = FixedBits { cr0_fixed0: 0, cr0_fixed1: u64::MAX, ..FIXED };
        assert_eq!(hardware_cr0(1 << 40 | 0x6000_0000 | 0x2, &unfixed) & !(1 << 16), 1 << 40 | 0x8000_0023, "other bits kept");
    }

    fn real_mode_data(selector: u16) -> KvmSegment {
        KvmSegment { base: u64::from(selector) << 4, limit: 0xFFFF, selector, type_: 3, present: 1, s: 1, ..KvmSegment::default() }
    }

    //@ begin 12
    mod vm86 {
        use super::super::*;
        use super::{FIXED, FakeVmcs, real_mode_data};

        fn real_mode_sregs() -> KvmSregs {
            let code = KvmSegment { type_: 0xB, ..real_mode_data(0x0F01) };
            let data = real_mode_data(0x2002);
            KvmSregs { cr0: 0x10, cs: code, ss: real_mode_data(0x1403), ds: data, es: data, fs: data, gs: data, ..KvmSregs::default() }
        }

        #[test]
        fn real_mode_segments_fit_vm86_unreal_ones_do_not() {
            let sregs = real_mode_sregs();
            assert!(runs_in_vm86(&sregs));
            let unreal = KvmSregs { fs: KvmSegment { base: 0xC000_0000, ..sregs.fs }, ..sregs };
            assert!(!runs_in_vm86(&unreal), "a base kept from protected mode");
            let big = KvmSregs { ds: KvmSegment { limit: 0xFFFF_FFFF, ..sregs.ds }, ..sregs };
            assert!(!runs_in_vm86(&big), "a 4 GiB limit");
            let reset = KvmSregs { cs: KvmSegment { base: 0xFFFF_0000, ..real_mode_data(0xF000) }, ..sregs };
            assert!(!runs_in_vm86(&reset), "the reset CS");
            let ldt = KvmSregs { ldt: KvmSegment { base: 0x1234, ..sregs.ldt }, ..sregs };
            assert!(runs_in_vm86(&ldt), "LDTR and TR do not count");
        }

        #[test]
        fn vm86_writes_segments_tr_cr0_and_cr4_as_entry_demands() {
            let mut vmcs = FakeVmcs::default();
            let sregs = KvmSregs { cr0: 0x4_0010, cr4: 0x2, ..real_mode_sregs() };
            write_sregs(&mut vmcs, &sregs, &FIXED);
            write_vm86(&mut vmcs, &sregs, 0xFD000, &FIXED);
            for seg in [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs] {
                let selector = vmcs.read(seg.selector());
                assert_eq!(vmcs.read(seg.base()), selector << 4, "{seg:?}");
                assert_eq!((vmcs.read(seg.limit()), vmcs.read(seg.access_rights())), (0xFFFF, 0xF3), "{seg:?}");
            }
            assert_eq!(vmcs.read(Seg::Ss.selector()), 0x1403, "the selector as it is: RPL 3 = DPL");
            let tr = (vmcs.read(Seg::Tr.base()), vmcs.read(Seg::Tr.limit()), vmcs.read(Seg::Tr.access_rights()));
            assert_eq!(tr, (0xFD000, 0x2088, 0x8B), "a busy 32-bit TSS over the bitmaps");
            assert_eq!(vmcs.read(fields::GUEST_CR0) & (1 << 18 | 1), 1, "PE, and no AM at CPL 3");
            assert_eq!(vmcs.read(fields::GUEST_CR4) & 3, 1, "VME, without PVI");
            assert_eq!((vmcs.read(fields::CR0_READ_SHADOW), vmcs.read(fields::CR4_READ_SHADOW)), (0x4_0010, 0x2));
        }

        #[test]
        fn rflags_run_with_vm_and_iopl_3_and_come_back_with_the_guests_iopl() {
            assert_eq!(vm86_rflags(0x202), 0x2_3202);
            assert_eq!(rflags_after_vm86(0x2_3046, 0), 0x46);
            assert_eq!(rflags_after_vm86(0x2_3246, 0x1000), 0x1246, "IOPL 1, as the guest set it");
        }

        #[test]
        fn a_segment_the_guest_loaded_reads_back_with_a_real_mode_base() {
            let before = real_mode_sregs();
            let mut vmcs = FakeVmcs::default();
            write_sregs(&mut vmcs, &before, &FIXED);
            write_vm86(&mut vmcs, &before, 0xFD000, &FIXED);
            // The guest ran `mov es, ax` with 0x1200 in vm86.
            vmcs.write(Seg::Es.selector(), 0x1200);
            vmcs.write(Seg::Es.base(), 0x12000);
            let mut after = before;
            read_sregs(&vmcs, &mut after);
            assert!(read_real_mode(&mut after, &before, true));
            assert_eq!((after.cs, after.ss, after.ds, after.tr), (before.cs, before.ss, before.ds, before.tr), "as they were");
            assert_eq!(after.es, KvmSegment { selector: 0x1200, base: 0x12000, ..before.es });
            // Untouched, nothing to write again.
            let mut again = before;
            write_vm86(&mut vmcs, &before, 0xFD000, &FIXED);
            read_sregs(&vmcs, &mut again);
            assert!(!read_real_mode(&mut again, &before, true));
            assert_eq!(again, before);
        }

        #[test]
        fn a_null_load_in_16_bit_protected_mode_is_undone() {
            let before = KvmSregs { fs: KvmSegment { base: 0xC000_0000, selector: 8, ..real_mode_data(0) }, ..real_mode_sregs() };
            let mut vmcs = FakeVmcs::default();
            write_sregs(&mut vmcs, &before, &FIXED);
            // `mov ds, ax` with 0: an unusable DS.
            vmcs.write(Seg::Ds.selector(), 0);
            vmcs.write(Seg::Ds.access_rights(), u64::from(AR_UNUSABLE));
            let mut after = before;
            read_sregs(&vmcs, &mut after);
            assert!(read_real_mode(&mut after, &before, false), "DS must be written again");
            assert_eq!(after.ds, KvmSegment { selector: 0, base: 0, ..before.ds }, "usable, base 0");
            assert_eq!(after.fs, before.fs, "unreal FS kept");
        }
    }

    //@ end
    //@ begin 8
    #[test]
    fn stage_8_runs_with_wp_and_the_guests_efer() {
        assert_eq!(hardware_cr0(0x11, &FIXED), 0x8001_0031, "WP whatever the guest's");
        assert_eq!(hardware_efer(0x100 | 0x800 | 0x1), 0x801, "LME alone is not long mode");
        assert_eq!(hardware_efer(0x500), 0x500);
        assert_eq!(hardware_efer(0x400), 0x500, "LMA brings LME");
        assert_eq!(hardware_efer(1 << 12), 0, "nothing else");
    }
    //@ end

    mod e5_2 {
        use super::super::*;
        use super::{FIXED, FakeVmcs, flat_code32, real_mode_data};

        /// Writing real-mode segments packs their attributes (E5.2).
        #[test]
        fn real_mode_selectors_enter_with_rpl_0_and_read_back_as_given() {
            let mut vmcs = FakeVmcs::default();
            let code = KvmSegment { type_: 0xB, ..real_mode_data(0x0F01) };
            let sregs = KvmSregs { cr0: 0x10, cs: code, ss: real_mode_data(0x1403), ds: real_mode_data(0x2002), ..KvmSregs::default() };
            write_sregs(&mut vmcs, &sregs, &FIXED);
            assert_eq!(vmcs.read(Seg::Cs.selector()), 0x0F00, "CS.RPL 0 = CS.DPL");
            assert_eq!(vmcs.read(Seg::Ss.selector()), 0x1400, "SS.RPL 0 = CS.RPL");
            assert_eq!(vmcs.read(Seg::Ss.base()), 0x14030, "the base stays the guest's");
            let mut back = sregs;
            read_sregs(&vmcs, &mut back);
            assert_eq!((back.cs, back.ss, back.ds), (sregs.cs, sregs.ss, sregs.ds));
            // A segment the guest loaded meanwhile is what the hardware says.
            vmcs.write(Seg::Ds.selector(), 0x10);
            read_sregs(&vmcs, &mut back);
            assert_eq!(back.ds.selector, 0x10);
            // Protected mode: selectors as given.
            let prot = KvmSregs { cr0: 0x11, ..sregs };
            write_sregs(&mut vmcs, &prot, &FIXED);
            assert_eq!(vmcs.read(Seg::Ds.selector()), 0x2002);
        }

        #[test]
        fn the_shadow_holds_the_guest_view() {
            let mut vmcs = FakeVmcs::default();
            let sregs = KvmSregs { cr0: 0x11, cs: flat_code32(), ..KvmSregs::default() };
            write_sregs(&mut vmcs, &sregs, &FIXED);
            assert_eq!(vmcs.read(fields::GUEST_CR0) & !(1 << 16), 0x8000_0031, "WP aside, stage 08's");
            assert_eq!(vmcs.read(fields::CR0_READ_SHADOW), 0x11);
        }

        #[test]
        fn segments_round_trip_through_the_vmcs() {
            let mut vmcs = FakeVmcs::default();
            let data = KvmSegment { selector: 0x10, type_: 3, ..flat_code32() };
            let ldt = KvmSegment { base: 0, limit: 0xFFFF, selector: 0, type_: 2, present: 1, s: 0, db: 0, g: 0, ..data };
            let sregs = KvmSregs {
                cs: flat_code32(),
                ds: data,
                es: data,
                fs: data,
                gs: data,
                ss: data,
                ldt,
                tr: KvmSegment { type_: 0xB, ..ldt },
                gdt: KvmDtable { base: 0x1000, limit: 31, padding: [0; 3] },
                ..KvmSregs::default()
            };
            write_sregs(&mut vmcs, &sregs, &FIXED);
            assert_eq!(vmcs.read(Seg::Cs.access_rights()), 0xC09B);
            let mut back = KvmSregs::default();
            read_sregs(&vmcs, &mut back);
            assert_eq!((back.cs, back.ds, back.ldt, back.tr, back.gdt), (sregs.cs, sregs.ds, sregs.ldt, sregs.tr, sregs.gdt));
        }

        #[test]
        fn flat_32_bit_code_and_data() {
            assert_eq!(access_rights(&flat_code32()), 0xC09B);
            let data = KvmSegment { type_: 3, ..flat_code32() };
            assert_eq!(access_rights(&data), 0xC093);
        }

        /// The field computed through stage 01's descriptor: its bits 55:40
        /// shifted down, with bits 11:8 (limit 19:16) dropped, and
        /// "unusable" added at bit 16.
        #[test]
        fn random_segments_pack_like_their_descriptors_attributes() {
            use crate::segments::SegmentDescriptor;
            let mut rng = crate::test_rng::Rng::new(0xE52);
            for _ in 0..10_000 {
                let mut byte = || rng.next() as u8;
                let seg = KvmSegment {
                    type_: byte(), s: byte(), dpl: byte(), present: byte(), avl: byte(),
                    l: byte(), db: byte(), g: byte(), unusable: byte(), ..flat_code32()
                };
                let bit = |b: u8| b % 2 == 1;
                let d = SegmentDescriptor {
                    type_: seg.type_ % 16, s: bit(seg.s), dpl: seg.dpl % 4, present: bit(seg.present),
                    avl: bit(seg.avl), l: bit(seg.l), db: bit(seg.db), g: bit(seg.g), ..SegmentDescriptor::NULL
                };
                let expected = (d.to_bits() >> 40) as u32 & 0xF0FF | u32::from(seg.unusable % 2) << 16;
                assert_eq!(access_rights(&seg), expected, "{seg:?}");
            }
        }

        #[test]
        fn unusable_long_mode_and_garbage() {
            let null = KvmSegment { unusable: 1, present: 0, ..KvmSegment::default() };
            assert_eq!(access_rights(&null), 1 << 16);
            let code64 = KvmSegment { l: 1, db: 0, ..flat_code32() };
            assert_eq!(access_rights(&code64), 0xA09B);
            let garbage = KvmSegment { type_: 0xFF, s: 0xFF, dpl: 0xFF, present: 0xFF, avl: 0xFF, l: 0xFF, db: 0xFF, g: 0xFF, unusable: 0xFF, ..KvmSegment::default() };
            assert_eq!(access_rights(&garbage), 0x1_F0FF);
        }
    }
}
