//@ stage 12
//! A protected-mode guest's segments in the form VM entry accepts.
//!
//! Without unrestricted guest, VM entry checks the segment registers of a
//! guest outside virtual-8086 mode as if protected mode had just loaded
//! each of them (SDM Vol. 3C, 27.3.1.2 "Checks on Guest Segment
//! Registers"): SS's RPL equals CS's and SS's DPL, which is the CPL (SDM
//! Vol. 3C, 25.4.1); a non-conforming CS has the DPL of SS, a conforming
//! one at most that; and of DS, ES, FS and GS, "the DPL cannot be less
//! than the RPL in the selector field if (1) the 'unrestricted guest'
//! VM-execution control is 0; (2) the register is usable; and (3) the
//! Type in the access-rights field is in the range 0 – 11 (data segment
//! or non-conforming code segment)".
//!
//! The processor checks a segment only when it loads one, and a guest can
//! hold segments that no load in protected mode gives. It makes them in
//! real mode, where a load (`mov ds, ax`, `pop ds`, a far jump, an
//! interrupt's CS) changes only the selector and the base
//! (`crate::real_mode::load_segment`): the selector's low two bits, an
//! RPL in protected mode, are whatever the paragraph number has there,
//! and the DPL stays that of the descriptor the segment was last loaded
//! from, or 0 from reset. Then the guest sets CR0.PE and runs protected-
//! mode code with those segments until it loads each again: a DS with
//! selector 0x1403 and DPL 0 is nothing to the processor, and VM entry
//! fails on it (exit reason 33, "VM-entry failure due to invalid guest
//! state"). `chaos-mmio-real` makes such a DS with random bytes (`pop ds`)
//! and sets CR0.PE before it loads its own.
//!
//! Linux's KVM today emulates such a guest one instruction at a time
//! until its state passes (`emulate_invalid_guest_state`); rkvm's
//! emulator knows only what MMIO and real mode need. So rkvm does what
//! 2006's `enter_pmode` did for data segments (`FIX_PMODE_DATASEG`): the
//! hardware gets a segment that would fail changed so that it passes, in
//! what the guest can least tell, and the guest keeps its own view, which
//! `guest::read_sregs` gives back after the exit to every segment the
//! hardware still holds as it was written. A state the processor made,
//! by loads in protected mode, passes as it is and is written unchanged.

use crate::abi::KvmSegment;

// ANCHOR: protected_mode_segments
/// Type bit 2 of a code segment: conforming.
const TYPE_CONFORMING: u8 = 0x4;

/// The eight segment registers (in VMCS order: ES, CS, SS, DS, FS, GS,
/// LDTR, TR) that the hardware runs a protected-mode guest with, whose
/// own are `segs`. The CPL is SS's DPL. Changed, where the checks demand:
///
/// - CS and SS get the CPL as their RPL. A guest that has just set
///   CR0.PE runs at privilege level 0 whatever its selectors' low bits;
///   it sees the RPL only if it reads the selector (`mov ax, cs`, `push
///   ss`) before it loads the register.
/// - CS gets the CPL as its DPL if it is non-conforming, at most the CPL
///   if it is conforming.
/// - A usable data or non-conforming code segment in DS, ES, FS or GS
///   whose RPL is above its DPL gets its RPL as its DPL. The processor
///   reads such a segment's DPL only when a far `ret` or `iret` goes to
///   an outer privilege level, and then loads a null selector into each
///   of DS, ES, FS and GS whose DPL is below the new CPL (SDM Vol. 3A,
///   5.8.6 "Returning from a Called Procedure"): a guest that went to an
///   outer level before it loaded such a segment again would keep it.
///
/// LDTR and TR stay as they are.
pub fn protected_mode_segments(segs: [KvmSegment; 8]) -> [KvmSegment; 8] {
    let [es, cs, ss, ds, fs, gs, ldtr, tr] = segs;
    let cpl = ss.dpl & 3;
    let ss = KvmSegment { selector: with_rpl(ss.selector, cpl), ..ss };
    [data_segment(&es), code_segment(&cs, cpl), ss, data_segment(&ds), data_segment(&fs), data_segment(&gs), ldtr, tr]
}

/// CS at privilege level `cpl`.
fn code_segment(cs: &KvmSegment, cpl: u8) -> KvmSegment {
    let fits = if cs.type_ & TYPE_CONFORMING != 0 { cs.dpl & 3 <= cpl } else { cs.dpl & 3 == cpl };
    KvmSegment { selector: with_rpl(cs.selector, cpl), dpl: if fits { cs.dpl } else { cpl }, ..*cs }
}

/// DS, ES, FS or GS, with a DPL no lower than its RPL where VM entry asks.
fn data_segment(seg: &KvmSegment) -> KvmSegment {
    let rpl = (seg.selector & 3) as u8;
    let checked = seg.unusable & 1 == 0 && seg.type_ & 0xF <= 11;
    if checked && seg.dpl & 3 < rpl { KvmSegment { dpl: rpl, ..*seg } } else { *seg }
}

/// `selector` with RPL `rpl`.
fn with_rpl(selector: u16, rpl: u8) -> u16 {
    selector & !3 | u16::from(rpl & 3)
}
// ANCHOR_END: protected_mode_segments

#[cfg(test)]
#[path = "entry_checks_tests.rs"]
mod tests;
