//@ stage 7
//! The virtual machine control block (VMCB): one 4 KiB page per vCPU, a
//! control area (what to intercept, and why the guest exited) and a state
//! save area (the guest's registers), laid out by APM Vol. 2, Appendix B
//! "Layout of VMCB". Unlike VMX's VMCS, it is plain memory: the module
//! reads and writes it as a struct, and `vmrun` takes its physical address.
//!
//! Every offset below is the manual's, checked at compile time.

use crate::abi::KvmSegment;
use core::mem::{offset_of, size_of};

// ANCHOR: vmcb_control
/// The control area, offsets 0x000 to 0x3FF (APM Vol. 2, Table B-1).
#[repr(C)]
pub struct VmcbControl {
    /// Bits 0-15 intercept reads of CR0-CR15, bits 16-31 writes.
    pub intercept_cr: u32,
    /// The same for DR0-DR15.
    pub intercept_dr: u32,
    /// Bit n intercepts exception vector n.
    pub intercept_exceptions: u32,
    /// Intercept vector 3: INTR, NMI, ..., CPUID, HLT, IOIO_PROT, ...
    pub intercept_misc1: u32,
    /// Intercept vector 4: VMRUN, VMMCALL, ..., XSETBV.
    pub intercept_misc2: u32,
    pub intercept_misc3: u32,
    _reserved1: [u8; 0x03C - 0x018],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    /// Physical address of the I/O permission map (12 KiB).
    pub iopm_base_pa: u64,
    /// Physical address of the MSR permission map (8 KiB).
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    /// The guest's address space identifier: tags its TLB entries.
    pub asid: u32,
    /// 1: flush the whole TLB (every ASID) on `vmrun`.
    pub tlb_control: u8,
    _reserved2: [u8; 3],
    /// V_TPR, V_IRQ, ..., V_INTR_MASKING (bit 24).
    pub int_ctl: u32,
    pub int_vector: u32,
    /// Bit 0: the guest is in an interrupt shadow (`sti`, `mov ss`).
    pub int_state: u64,
    /// Why the guest exited: an `SVM_EXIT_*` code.
    pub exit_code: u64,
    pub exit_info_1: u64,
    pub exit_info_2: u64,
    /// An event whose delivery the exit interrupted (EVENTINJ format).
    pub exit_int_info: u64,
    /// Bit 0 enables nested paging (not used: beyond 2006).
    pub np_enable: u64,
    _reserved3: [u8; 0x0A8 - 0x098],
    /// An event to inject at the next `vmrun`.
    pub event_inj: u64,
    pub n_cr3: u64,
    pub virt_ext: u64,
    /// VMCB clean bits (not used: QEMU's SVM lacks them; all zero means
    /// "reload everything").
    pub clean_bits: u32,
    _reserved4: u32,
    /// The next RIP, with nrip_save (not used: QEMU's SVM lacks it).
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    _reserved5: [u8; 0x400 - 0x0E0],
}
// ANCHOR_END: vmcb_control

// ANCHOR: vmcb_segment
/// A segment register in the save area: its selector and hidden part. The
/// attributes are the descriptor's bits 40-47 and 52-55, packed into 12
/// bits (APM Vol. 2, 15.5.1 "Segment State in the VMCB").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcbSegment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}
// ANCHOR_END: vmcb_segment

// ANCHOR: vmcb_save
/// The state save area, offsets 0x400 to 0xFFF (APM Vol. 2, Table B-2;
/// offsets below are from its start).
#[repr(C)]
pub struct VmcbSave {
    pub es: VmcbSegment,
    pub cs: VmcbSegment,
    pub ss: VmcbSegment,
    pub ds: VmcbSegment,
    pub fs: VmcbSegment,
    pub gs: VmcbSegment,
    pub gdtr: VmcbSegment,
    pub ldtr: VmcbSegment,
    pub idtr: VmcbSegment,
    pub tr: VmcbSegment,
    _reserved1: [u8; 0x0CB - 0x0A0],
    /// The current privilege level (0 in real mode).
    pub cpl: u8,
    _reserved2: [u8; 4],
    pub efer: u64,
    _reserved3: [u8; 0x148 - 0x0D8],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    _reserved4: [u8; 0x1D8 - 0x180],
    pub rsp: u64,
    _reserved5: [u8; 0x1F8 - 0x1E0],
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    _reserved6: [u8; 0x268 - 0x248],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    _reserved7: [u8; 0xC00 - 0x298],
}

/// The VMCB: one page.
#[repr(C, align(4096))]
pub struct Vmcb {
    pub control: VmcbControl,
    pub save: VmcbSave,
}
// ANCHOR_END: vmcb_save

// ANCHOR: vmcb_checks
const _: () = assert!(size_of::<Vmcb>() == 0x1000);
const _: () = assert!(size_of::<VmcbControl>() == 0x400);
const _: () = assert!(size_of::<VmcbSegment>() == 16);
const _: () = {
    assert!(offset_of!(VmcbControl, intercept_exceptions) == 0x008);
    assert!(offset_of!(VmcbControl, intercept_misc1) == 0x00C);
    assert!(offset_of!(VmcbControl, intercept_misc2) == 0x010);
    assert!(offset_of!(VmcbControl, iopm_base_pa) == 0x040);
    assert!(offset_of!(VmcbControl, msrpm_base_pa) == 0x048);
    assert!(offset_of!(VmcbControl, asid) == 0x058);
    assert!(offset_of!(VmcbControl, tlb_control) == 0x05C);
    assert!(offset_of!(VmcbControl, int_ctl) == 0x060);
    assert!(offset_of!(VmcbControl, int_state) == 0x068);
    assert!(offset_of!(VmcbControl, exit_code) == 0x070);
    assert!(offset_of!(VmcbControl, exit_info_1) == 0x078);
    assert!(offset_of!(VmcbControl, exit_info_2) == 0x080);
    assert!(offset_of!(VmcbControl, exit_int_info) == 0x088);
    assert!(offset_of!(VmcbControl, event_inj) == 0x0A8);
    assert!(offset_of!(VmcbControl, clean_bits) == 0x0C0);
    assert!(offset_of!(VmcbControl, next_rip) == 0x0C8);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(offset_of!(VmcbSave, tr) == 0x090);
    assert!(offset_of!(VmcbSave, cpl) == 0x0CB);
    assert!(offset_of!(VmcbSave, efer) == 0x0D0);
    assert!(offset_of!(VmcbSave, cr4) == 0x148);
    assert!(offset_of!(VmcbSave, cr0) == 0x158);
    assert!(offset_of!(VmcbSave, rflags) == 0x170);
    assert!(offset_of!(VmcbSave, rip) == 0x178);
    assert!(offset_of!(VmcbSave, rsp) == 0x1D8);
    assert!(offset_of!(VmcbSave, rax) == 0x1F8);
    assert!(offset_of!(VmcbSave, star) == 0x200);
    assert!(offset_of!(VmcbSave, cr2) == 0x240);
    assert!(offset_of!(VmcbSave, g_pat) == 0x268);
};
// ANCHOR_END: vmcb_checks

// ANCHOR: intercepts
/// Intercept vector 3 (`intercept_misc1`), APM Vol. 2, Table B-1.
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    //@ begin 12
    /// A virtual interrupt (V_IRQ) is about to be taken: used only to
    /// hear when the guest's interrupt window opens.
    pub const VINTR: u32 = 1 << 4;
    //@ end
    //@ begin 8
    /// `rdpmc`: the host's performance counters are not the guest's.
    pub const RDPMC: u32 = 1 << 15;
    //@ end
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    //@ begin 8
    pub const INVLPG: u32 = 1 << 25;
    //@ end
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const TASK_SWITCH: u32 = 1 << 29;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept vector 4 (`intercept_misc2`).
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const XSETBV: u32 = 1 << 13;
}

/// `int_ctl.V_INTR_MASKING`: the guest's RFLAGS.IF masks only virtual
/// interrupts; physical ones are masked by the host's RFLAGS.IF at
/// `vmrun`, so a guest that runs `cli` cannot keep the host's timer out
/// (APM Vol. 2, 15.21.1 "Physical (INTR) Interrupt Masking in EFLAGS").
pub const V_INTR_MASKING: u32 = 1 << 24;

//@ begin 12
/// `int_ctl.V_IRQ`, with V_IGN_TPR and the highest V_INTR_PRIO: a virtual
/// interrupt the guest takes as soon as its RFLAGS.IF and interrupt
/// shadow allow, whatever its task priority. With the VINTR intercept it
/// is never taken: the intercept exits first, which is the interrupt
/// window (APM Vol. 2, 15.21.4 "Injecting Virtual (INTR) Interrupts"),
/// as Linux's KVM asks for it today.
pub const V_IRQ: u32 = 1 << 8;
pub const V_IGN_TPR: u32 = 1 << 20;
pub const V_INTR_PRIO: u32 = 0xF << 16;
//@ end

/// `tlb_control`: flush every ASID's TLB entries at `vmrun`.
pub const TLB_CONTROL_FLUSH_ALL: u8 = 1;
// ANCHOR_END: intercepts

// ANCHOR: segment_attrib
/// The VMCB attributes of a segment (APM Vol. 2, 15.5.1); [`kvm_segment`]
/// reads them back.
pub fn segment_attrib(seg: &KvmSegment) -> u16 {
    //@ exercise E7.1
    //@ instruction: Return the 12 attribute bits the VMCB holds for
    //@+ `seg`, in the layout of AMD APM Vol. 2, 15.5.1 "Basic Operation"
    //@+ (the paragraph "Segment State in the VMCB") and Appendix B, Table
    //@+ B-2 "VMCB Layout, State Save Area". Userspace wrote the bytes of
    //@+ `seg`: each attribute counts only as many low bits as it has in a
    //@+ descriptor. The VMCB has no "unusable" bit; 15.5.1 says how a
    //@+ null segment is marked instead, and a segment with a nonzero
    //@+ `unusable` must read back (through `kvm_segment` below) as
    //@+ unusable. The `e7_1` tests pack random segments too.
    //@ hint: 15.5.1 describes the attributes by the descriptor bits they
    //@+ come from: stage 01's descriptor layout tells you the rest.
    //@ hint: They are descriptor bits 40-47 and 52-55, moved down to bits
    //@+ 0-11: type 3:0, S 4, DPL 6:5, P 7, AVL 8, L 9, D/B 10, G 11. P = 0
    //@+ marks a null segment, so an unusable segment gets P = 0.
    //@ hint: `let present = u16::from(seg.present & 1 != 0 && seg.unusable
    //@+ == 0);` then OR each field, masked (`seg.dpl & 3`, `seg.s & 1`),
    //@+ shifted to its bit.
    let present = u16::from(seg.present & 1 != 0 && seg.unusable == 0);
    u16::from(seg.type_ & 0xF)
        | u16::from(seg.s & 1) << 4
        | u16::from(seg.dpl & 3) << 5
        | present << 7
        | u16::from(seg.avl & 1) << 8
        | u16::from(seg.l & 1) << 9
        | u16::from(seg.db & 1) << 10
        | u16::from(seg.g & 1) << 11
    //@ end
}

/// The inverse: a `kvm_segment` from the VMCB's selector, base, limit and
/// attributes.
pub fn kvm_segment(seg: &VmcbSegment) -> KvmSegment {
    let a = seg.attrib;
    let bit = |n: u16| ((a >> n) & 1) as u8;
    KvmSegment {
        base: seg.base,
        limit: seg.limit,
        selector: seg.selector,
        type_: (a & 0xF) as u8,
        s: bit(4),
        dpl: ((a >> 5) & 3) as u8,
        present: bit(7),
        avl: bit(8),
        l: bit(9),
        db: bit(10),
        g: bit(11),
        unusable: 1 - bit(7),
        padding: 0,
    }
}

/// A VMCB segment from a `kvm_segment`.
pub fn vmcb_segment(seg: &KvmSegment) -> VmcbSegment {
    VmcbSegment { selector: seg.selector, attrib: segment_attrib(seg), limit: seg.limit, base: seg.base }
}
// ANCHOR_END: segment_attrib

#[cfg(test)]
mod tests {
    mod e7_1 {
        use super::super::*;

        fn flat_code32() -> KvmSegment {
            KvmSegment {
                base: 0,
                limit: 0xFFFF_FFFF,
                selector: 8,
                type_: 0xB,
                present: 1,
                dpl: 0,
                db: 1,
                s: 1,
                l: 0,
                g: 1,
                avl: 0,
                unusable: 0,
                padding: 0,
            }
        }

        #[test]
        fn a_flat_code_segment_packs_like_its_descriptor() {
            // The descriptor 0x00CF9B000000FFFF: bits 40-47 0x9B, 52-55 0xC.
            assert_eq!(segment_attrib(&flat_code32()), 0xC9B);
        }

        #[test]
        fn every_field_lands_on_its_bit() {
            let seg = KvmSegment { type_: 3, s: 1, dpl: 3, avl: 1, l: 1, db: 0, g: 0, ..flat_code32() };
            assert_eq!(segment_attrib(&seg), 0x3 | 1 << 4 | 3 << 5 | 1 << 7 | 1 << 8 | 1 << 9);
        }

        #[test]
        fn an_unusable_segment_is_not_present() {
            let seg = KvmSegment { unusable: 1, ..flat_code32() };
            assert_eq!(segment_attrib(&seg) & 1 << 7, 0);
        }

        /// The attributes computed through stage 01's descriptor: its bits
        /// 47:40 and 55:52, side by side.
        #[test]
        fn random_segments_pack_like_their_descriptors_attributes() {
            use crate::segments::SegmentDescriptor;
            let mut rng = crate::test_rng::Rng::new(0xE71);
            for _ in 0..10_000 {
                let mut byte = || if rng.one_in(2) { rng.next() as u8 } else { (rng.next() % 2) as u8 };
                let seg = KvmSegment {
                    type_: byte(), s: byte(), dpl: byte(), present: byte(), avl: byte(),
                    l: byte(), db: byte(), g: byte(), unusable: byte(), ..flat_code32()
                };
                let bit = |b: u8| b % 2 == 1;
                let d = SegmentDescriptor {
                    type_: seg.type_ % 16, s: bit(seg.s), dpl: seg.dpl % 4, present: bit(seg.present) && seg.unusable == 0,
                    avl: bit(seg.avl), l: bit(seg.l), db: bit(seg.db), g: bit(seg.g), ..SegmentDescriptor::NULL
                };
                let bits = d.to_bits();
                let expected = (bits >> 40 & 0xFF | (bits >> 52 & 0xF) << 8) as u16;
                assert_eq!(segment_attrib(&seg), expected, "{seg:?}");
                let back = kvm_segment(&vmcb_segment(&seg));
                assert_eq!(back.unusable, u8::from(!d.present), "{seg:?}");
            }
        }

        #[test]
        fn segments_survive_a_round_trip_through_the_vmcb() {
            let seg = flat_code32();
            assert_eq!(kvm_segment(&vmcb_segment(&seg)), seg);
            let real = KvmSegment::real_mode(0xF000);
            assert_eq!(kvm_segment(&vmcb_segment(&real)), real);
        }
    }
}
