//@ stage 5
//! VM exits, decoded once: the raw exit information read from the VMCS
//! becomes an arch-neutral [`VmExit`], and nothing after this file looks
//! at a VMX exit reason again.
//!
//! "VM exits save the reason for the exit in the exit-reason field": bits
//! 15:0 are the basic exit reason, and bit 31 is set when "VM entry
//! failed" (SDM Vol. 3C, 28.2.1 "Basic VM-Exit Information"; the reasons
//! are listed in Appendix C, "VMX Basic Exit Reasons"). Every decoder here
//! is a pure function of the numbers, unit-tested on the host.

use crate::arch::VmExit;
//@ begin 6
use crate::exit::{CrAccess, IoExit, StringIo};
//@ end
//@ begin 12
use crate::exit::DrAccess;
//@ end

// ANCHOR: exit_reasons
/// Basic exit reasons rkvm knows (SDM Vol. 3C, Appendix C).
pub mod reason {
    pub const EXCEPTION_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    //@ begin 12
    pub const INTERRUPT_WINDOW: u16 = 7;
    //@ end
    pub const CPUID: u16 = 10;
    pub const HLT: u16 = 12;
    //@ begin 8
    pub const RDPMC: u16 = 15;
    //@ end
    //@ begin 8
    pub const INVLPG: u16 = 14;
    //@ end
    pub const CR_ACCESS: u16 = 28;
    //@ begin 12
    pub const DR_ACCESS: u16 = 29;
    //@ end
    pub const IO_INSTRUCTION: u16 = 30;
    //@ begin 8
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    //@ end
    pub const INVALID_GUEST_STATE: u16 = 33;
    pub const PREEMPTION_TIMER: u16 = 52;
}

/// Exit-reason bit 31: the VM entry failed (SDM Vol. 3C, 28.2.1).
pub const FAILED_VMENTRY: u32 = 1 << 31;
// ANCHOR_END: exit_reasons

// ANCHOR: exit_info
/// Everything an exit's decoding needs, read from the VMCS (and the
/// guest's registers) right after the exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit-reason field.
    pub reason: u32,
    /// The exit qualification (SDM Vol. 3C, 28.2.1).
    pub qualification: u64,
    /// The VM-exit interruption information (SDM Vol. 3C, 25.9.2).
    pub intr_info: u32,
    pub intr_error_code: u32,
    /// The VM-exit instruction length.
    pub insn_len: u32,
    //@ begin 6
    /// The guest-linear address of an `ins`/`outs` operand.
    pub guest_linear_address: u64,
    /// The guest's RAX, RCX and RFLAGS at the exit.
    pub rax: u64,
    pub rcx: u64,
    pub rflags: u64,
    /// For an I/O exit, the address size of the instruction, as a mask:
    /// 0xFFFF, 0xFFFF_FFFF or all ones for 16-, 32- or 64-bit addressing
    /// (SDM Vol. 1, 3.6 "Operand-size and Address-size Attributes").
    pub address_mask: u64,
    //@ end
}
// ANCHOR_END: exit_info

// ANCHOR: interruption_info
/// The VM-exit interruption-information field (SDM Vol. 3C, 25.9.2,
/// Table 25-19): bits 7:0 the vector, bits 10:8 the type (2 is an NMI,
/// 3 a hardware exception), bit 11 "error code valid", bit 31 "valid".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interruption {
    pub vector: u8,
    pub kind: u8,
    pub has_error_code: bool,
}

pub const INTR_TYPE_NMI: u8 = 2;
//@ begin 12
pub const INTR_TYPE_HARDWARE_EXCEPTION: u8 = 3;
//@ end

impl Interruption {
    pub fn from_field(field: u32) -> Option<Interruption> {
        if field & 1 << 31 == 0 {
            return None;
        }
        Some(Interruption { vector: field as u8, kind: ((field >> 8) & 7) as u8, has_error_code: field & 1 << 11 != 0 })
    }
}
// ANCHOR_END: interruption_info

/// The page-fault vector, whose exit qualification is the faulting address.
const PF_VECTOR: u8 = 14;

// ANCHOR: decode
/// Decodes one exit. An exit with bit 31 set is a failed entry, reported
/// with its basic reason; anything rkvm does not handle is
/// [`VmExit::Unknown`] with the basic reason, never a panic.
pub fn decode(info: &ExitInfo) -> VmExit {
    let basic = info.reason as u16;
    if info.reason & FAILED_VMENTRY != 0 {
        return VmExit::FailEntry { hardware_reason: u32::from(basic) };
    }
    let insn_len = info.insn_len.min(15) as u8;
    match basic {
        reason::EXCEPTION_NMI => decode_exception(info),
        reason::EXTERNAL_INTERRUPT => VmExit::ExternalInterrupt,
        // The host's own timer: it takes its CPU back, as an interrupt does.
        reason::PREEMPTION_TIMER => VmExit::ExternalInterrupt,
        reason::TRIPLE_FAULT => VmExit::Shutdown,
        //@ begin 12
        reason::INTERRUPT_WINDOW => VmExit::InterruptWindow,
        reason::DR_ACCESS => VmExit::DebugRegister(decode_dr(info.qualification, insn_len)),
        //@ end
        reason::HLT => VmExit::Hlt { insn_len },
        //@ begin 8
        reason::RDPMC => VmExit::Rdpmc { insn_len },
        //@ end
        //@ begin 6
        reason::CPUID => VmExit::Cpuid { insn_len },
        reason::IO_INSTRUCTION => VmExit::Io(decode_io(IoQualification::from_qualification(info.qualification), info)),
        reason::CR_ACCESS => match decode_cr(info.qualification, insn_len) {
            Some(access) => VmExit::Cr(access),
            None => {
                //@ begin 8
                if let Some(exit) = decode_clts_lmsw(info.qualification, insn_len) {
                    return exit;
                }
                //@ end
                VmExit::Unknown { hardware_reason: u32::from(basic) }
            }
        },
        //@ end
        //@ begin 8
        // "For INVLPG, the exit qualification contains the linear-address
        // operand of the instruction" (SDM Vol. 3C, 28.2.1).
        reason::INVLPG => VmExit::Invlpg { address: Some(info.qualification), insn_len },
        // Every `rdmsr` and `wrmsr` exits: rkvm uses no MSR bitmaps.
        reason::RDMSR | reason::WRMSR => {
            VmExit::Msr { write: basic == reason::WRMSR, insn_len, hardware_reason: u32::from(basic) }
        }
        //@ end
        _ => VmExit::Unknown { hardware_reason: u32::from(basic) },
    }
}

/// Whether an exit is a host NMI: exit reason 0 with interruption type
/// NMI. NMI exiting is on, so an NMI that arrives while the guest runs
/// never reaches the guest's IDT; it is the host's, and `vcpu.rs` hands
/// it to Linux's NMI handler right after the exit, interrupts still off.
pub fn is_host_nmi(reason: u32, intr_info: u32) -> bool {
    reason == u32::from(reason::EXCEPTION_NMI)
        && Interruption::from_field(intr_info).is_some_and(|i| i.kind == INTR_TYPE_NMI)
}

/// Exit reason 0: an exception the exception bitmap intercepts, or an NMI.
/// The NMI was the host's and was handled already (`is_host_nmi`); for
/// generic code it is like a host interrupt.
fn decode_exception(info: &ExitInfo) -> VmExit {
    let Some(intr) = Interruption::from_field(info.intr_info) else {
        return VmExit::Unknown { hardware_reason: u32::from(reason::EXCEPTION_NMI) };
    };
    if intr.kind == INTR_TYPE_NMI {
        return VmExit::ExternalInterrupt;
    }
    let error_code = if intr.has_error_code { info.intr_error_code } else { 0 };
    //@ begin 12
    if intr.vector == 1 && intr.kind == INTR_TYPE_HARDWARE_EXCEPTION {
        // "For a debug exception, the exit qualification contains
        // information about the debug exception": DR6's B0-B3, BD and BS
        // bits (SDM Vol. 3C, 28.2.1, Table 28-1); the processor leaves
        // DR6 itself alone.
        return VmExit::Debug { causes: info.qualification & 0x600F };
    }
    //@ end
    if intr.vector == PF_VECTOR {
        // "For a page-fault exception, the exit qualification contains the
        // linear address that caused the page fault." (SDM Vol. 3C, 28.2.1)
        return VmExit::PageFault { address: info.qualification, error_code };
    }
    VmExit::Exception { vector: intr.vector, error_code }
}
// ANCHOR_END: decode

//@ begin 12
// ANCHOR: decode_dr
/// The exit qualification of `mov` to or from a debug register (SDM Vol.
/// 3C, 28.2.1, Table 28-4): bits 2:0 the debug register, bit 4 the
/// direction (0 is a move to it), bits 11:8 the general register.
pub fn decode_dr(qualification: u64, insn_len: u8) -> DrAccess {
    DrAccess {
        dr: (qualification & 7) as u8,
        write: qualification & 1 << 4 == 0,
        gpr: ((qualification >> 8) & 0xF) as u8,
        insn_len,
    }
}
// ANCHOR_END: decode_dr
//@ end

//@ begin 6
// ANCHOR: io_qualification
/// The exit qualification of an I/O instruction (SDM Vol. 3C, 28.2.1,
/// Table 28-5 "Exit Qualification for I/O Instructions"), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    pub port: u16,
    /// The size of the access in bytes: 1, 2 or 4.
    pub size: u8,
    /// The direction: `in` or `ins`.
    pub is_in: bool,
    /// A string instruction (`ins`, `outs`).
    pub string: bool,
    /// A `rep` prefix.
    pub rep: bool,
}

impl IoQualification {
    pub fn from_qualification(q: u64) -> IoQualification {
        //@ exercise E6.1
        //@ instruction: Decode the exit qualification `q` of an I/O
        //@+ instruction, laid out in Intel SDM Vol. 3C, 28.2.1, Table 28-5
        //@+ "Exit Qualification for I/O Instructions", into the fields of
        //@+ `IoQualification`; `size` counts bytes. Bits the table does not
        //@+ define for these fields change nothing. A quick one; the `e6_1`
        //@+ tests decode three instructions and random qualifications.
        //@ hint: Table 28-5 gives each field its bits. One of them does not
        //@+ hold the size itself: what do its values 0, 1 and 3 mean?
        //@ hint: Port in bits 31:16, size minus one in bits 2:0, `in` in
        //@+ bit 3, string in bit 4, `rep` in bit 5; bit 6 (immediate
        //@+ operand or DX) does not matter here.
        IoQualification {
            port: (q >> 16) as u16,
            size: (q & 7) as u8 + 1,
            is_in: q & 1 << 3 != 0,
            string: q & 1 << 4 != 0,
            rep: q & 1 << 5 != 0,
        }
        //@ end
    }
}
// ANCHOR_END: io_qualification

// ANCHOR: decode_io
/// RFLAGS.DF, bit 10: string instructions go down.
const RFLAGS_DF: u64 = 1 << 10;

/// An I/O exit, completed from the registers: the value of an `out`, and
/// for `ins`/`outs` where the data lies and how many elements there are.
/// `q` is the exit's qualification, decoded.
fn decode_io(q: IoQualification, info: &ExitInfo) -> IoExit {
    //@ exercise E6.2
    //@ instruction: Describe the guest's port access for userspace: every
    //@+ field of `IoExit` and `StringIo` must hold what its doc comment
    //@+ in `exit/mod.rs` says, for the instruction the guest executed,
    //@+ as the "Operation" sections of IN, OUT, INS, OUTS and the REP
    //@+ prefix in Intel SDM Vol. 2 define it. Work each field out from
    //@+ what the exit left, the qualification `q` and the fields of
    //@+ `info` (SDM Vol. 3C, 28.2.1 for the guest-linear address; SDM
    //@+ Vol. 1, 3.6 for the address size): the module does not decode
    //@+ the instruction. The `e6_2` tests complete an `out` of two sizes,
    //@+ a `rep insw` in 16-bit code and random exits against a reference.
    //@ hint: Go through `IoExit` and `StringIo` field by field and find,
    //@+ for each, what in `info` or `q` decides it. Where is the data of
    //@+ an `out`, and where that of an `outs`? Which register counts a
    //@+ `rep`, and how much of it? The "Operation" section of REP's page
    //@+ answers the last two.
    //@ hint: An `out` sends AL, AX or EAX: the low `q.size` bytes of RAX.
    //@+ A string instruction's address is the guest-linear address the
    //@+ exit reports; DF (RFLAGS bit 10, `RFLAGS_DF`) sends it down; with
    //@+ `rep` it runs RCX, ECX or CX times, as the address size
    //@+ (`info.address_mask`) says, and once without.
    //@ hint: `string: q.string.then_some(StringIo { address:
    //@+ info.guest_linear_address, rep: q.rep, down: info.rflags &
    //@+ RFLAGS_DF != 0, count: if q.rep { info.rcx & info.address_mask }
    //@+ else { 1 } })`; `value: if q.is_in || q.string { 0 } else {
    //@+ (info.rax & mask) as u32 }`, the mask 0xFF, 0xFFFF or 0xFFFF_FFFF
    //@+ from `q.size`; `insn_len: info.insn_len.min(15) as u8`.
    let value_mask = match q.size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    };
    let string = q.string.then_some(StringIo {
        address: info.guest_linear_address,
        rep: q.rep,
        down: info.rflags & RFLAGS_DF != 0,
        count: if q.rep { info.rcx & info.address_mask } else { 1 },
    });
    IoExit {
        port: q.port,
        size: q.size,
        is_in: q.is_in,
        string,
        value: if q.is_in || q.string { 0 } else { (info.rax & value_mask) as u32 },
        insn_len: info.insn_len.min(15) as u8,
    }
    //@ end
}
// ANCHOR_END: decode_io

// ANCHOR: address_size
/// The address size of an `ins` or `outs`, as a mask (see [`ExitInfo`]),
/// from the VM-exit instruction-information field: bits 9:7 are 0 for 16
/// bits, 1 for 32, 2 for 64 (SDM Vol. 3C, 28.2.5, Table 28-8). Processors
/// fill the field for INS and OUTS when IA32_VMX_BASIC bit 54 is set
/// (SDM Vol. 3C, A.1); `None` for a value the manual does not define.
pub fn address_mask_from_info(instruction_info: u32) -> Option<u64> {
    match (instruction_info >> 7) & 7 {
        0 => Some(0xFFFF),
        1 => Some(0xFFFF_FFFF),
        2 => Some(u64::MAX),
        _ => None,
    }
}

/// Whether the legacy prefixes (and REX) at the start of `bytes` hold an
/// address-size prefix, 0x67. For a processor that does not report the
/// address size, the instruction itself says it.
pub fn has_address_size_prefix(bytes: &[u8], long_mode: bool) -> bool {
    for &b in bytes {
        match b {
            0x67 => return true,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0xF0 | 0xF2 | 0xF3 => {}
            0x40..=0x4F if long_mode => {}
            _ => return false,
        }
    }
    false
}

/// The address size from the code segment and the prefix: 64 bits in
/// 64-bit code (32 with the prefix), else CS.D's 32 or 16 bits, the other
/// one with the prefix (SDM Vol. 1, 3.6 "Operand-size and Address-size
/// Attributes").
pub fn address_mask(long_mode: bool, cs_db: bool, prefix: bool) -> u64 {
    match (long_mode, prefix) {
        (true, false) => u64::MAX,
        (true, true) => 0xFFFF_FFFF,
        (false, _) if cs_db != prefix => 0xFFFF_FFFF,
        (false, _) => 0xFFFF,
    }
}
// ANCHOR_END: address_size

// ANCHOR: cr_qualification
/// The exit qualification of a control-register access (SDM Vol. 3C,
/// 28.2.1, Table 28-3 "Exit Qualification for Control-Register
/// Accesses"), decoded; `None` for the accesses that are not moves
/// (stage 08 decodes them as such).
pub fn decode_cr(q: u64, insn_len: u8) -> Option<CrAccess> {
    //@ exercise E6.3
    //@ instruction: Decode the exit qualification `q` of a
    //@+ control-register access, laid out in Intel SDM Vol. 3C, 28.2.1,
    //@+ Table 28-3, into a `CrAccess`, or return `None` when the access is
    //@+ neither a move to nor a move from a control register. A quick
    //@+ one; the `e6_3` tests decode three moves, `clts` and `lmsw`, and
    //@+ random qualifications.
    //@ hint: Table 28-3 has four access types; only two are moves. Which
    //@+ one writes the control register?
    //@ hint: The control register in bits 3:0, the access type in bits
    //@+ 5:4 (0 is `mov crN, reg`, a write; 1 `mov reg, crN`), the general
    //@+ register in bits 11:8, already in `Reg` order.
    let write = match (q >> 4) & 3 {
        0 => true,
        1 => false,
        _ => return None,
    };
    Some(CrAccess { cr: (q & 0xF) as u8, write, gpr: ((q >> 8) & 0xF) as u8, insn_len })
    //@ end
}
// ANCHOR_END: cr_qualification
//@ end

//@ begin 8
// ANCHOR: clts_lmsw
/// The other two kinds of CR0 write in a control-register exit (SDM Vol.
/// 3C, Table 28-3): access type 2 is `clts`; type 3 is `lmsw`, whose
/// source data is in bits 31:16. An `lmsw` with a memory operand (bit 6)
/// is left to userspace, as on SVM.
pub fn decode_clts_lmsw(q: u64, insn_len: u8) -> Option<VmExit> {
    const LMSW_MEMORY_OPERAND: u64 = 1 << 6;
    match (q >> 4) & 3 {
        2 => Some(VmExit::Clts { insn_len }),
        3 if q & LMSW_MEMORY_OPERAND == 0 => Some(VmExit::Lmsw { value: (q >> 16) as u16, insn_len }),
        _ => None,
    }
}
// ANCHOR_END: clts_lmsw
//@ end

#[cfg(test)]
mod tests {
    use super::*;

    //@ begin 12
    #[test]
    fn debug_register_moves_and_debug_exceptions_decode() {
        // `mov dr7, ecx`: DR 7, to the register, ECX (1).
        assert_eq!(decode_dr(0x107, 3), DrAccess { dr: 7, write: true, gpr: 1, insn_len: 3 });
        // `mov r9, dr6`: from the register (bit 4), R9.
        assert_eq!(decode_dr(0x916, 4), DrAccess { dr: 6, write: false, gpr: 9, insn_len: 4 });
        let info = ExitInfo { intr_info: 1 << 31 | 3 << 8 | 1, qualification: 1 << 14 | 1 << 1 | 1 << 20, ..exit(0) };
        assert_eq!(decode(&info), VmExit::Debug { causes: 1 << 14 | 1 << 1 }, "only DR6's bits of the qualification");
        let icebp = ExitInfo { intr_info: 1 << 31 | 5 << 8 | 1, ..exit(0) };
        assert_eq!(decode(&icebp), VmExit::Exception { vector: 1, error_code: 0 }, "`int1` is reflected as it came");
    }
    //@ end

    fn exit(reason: u32) -> ExitInfo {
        ExitInfo { reason, insn_len: 1, ..ExitInfo::default() }
    }

    #[test]
    fn simple_exits_decode_by_reason() {
        assert_eq!(decode(&exit(12)), VmExit::Hlt { insn_len: 1 });
        assert_eq!(decode(&exit(1)), VmExit::ExternalInterrupt);
        assert_eq!(decode(&exit(52)), VmExit::ExternalInterrupt, "the VMX-preemption timer");
        assert_eq!(decode(&exit(2)), VmExit::Shutdown);
        assert_eq!(decode(&exit(55)), VmExit::Unknown { hardware_reason: 55 });
    }

    #[test]
    fn a_failed_entry_keeps_its_basic_reason() {
        assert_eq!(decode(&exit(FAILED_VMENTRY | 33)), VmExit::FailEntry { hardware_reason: 33 });
    }

    #[test]
    fn exceptions_page_faults_and_nmis() {
        // #GP (13), hardware exception (type 3), error code valid, valid.
        let gp = ExitInfo { intr_info: 1 << 31 | 1 << 11 | 3 << 8 | 13, intr_error_code: 0x18, ..exit(0) };
        assert_eq!(decode(&gp), VmExit::Exception { vector: 13, error_code: 0x18 });
        let pf = ExitInfo { intr_info: 1 << 31 | 1 << 11 | 3 << 8 | 14, intr_error_code: 2, qualification: 0xC000_0000, ..exit(0) };
        assert_eq!(decode(&pf), VmExit::PageFault { address: 0xC000_0000, error_code: 2 });
        let ud = ExitInfo { intr_info: 1 << 31 | 3 << 8 | 6, intr_error_code: 0x99, ..exit(0) };
        assert_eq!(decode(&ud), VmExit::Exception { vector: 6, error_code: 0 }, "no error code for #UD");
        let nmi = ExitInfo { intr_info: 1 << 31 | 2 << 8 | 2, ..exit(0) };
        assert_eq!(decode(&nmi), VmExit::ExternalInterrupt);
        assert!(is_host_nmi(0, nmi.intr_info));
        assert!(!is_host_nmi(0, gp.intr_info), "an exception");
        assert!(!is_host_nmi(1, nmi.intr_info), "another reason");
        assert!(!is_host_nmi(0, 2 << 8 | 2), "not valid");
        assert_eq!(decode(&exit(0)), VmExit::Unknown { hardware_reason: 0 }, "invalid information");
    }

    //@ begin 8
    #[test]
    fn stage_8_exits_invlpg_msrs_clts_and_lmsw() {
        let invlpg = ExitInfo { qualification: 0x4000_1234, insn_len: 3, ..exit(14) };
        assert_eq!(decode(&invlpg), VmExit::Invlpg { address: Some(0x4000_1234), insn_len: 3 });
        let rdmsr = ExitInfo { insn_len: 2, ..exit(31) };
        assert_eq!(decode(&rdmsr), VmExit::Msr { write: false, insn_len: 2, hardware_reason: 31 });
        let wrmsr = ExitInfo { insn_len: 2, ..exit(32) };
        assert_eq!(decode(&wrmsr), VmExit::Msr { write: true, insn_len: 2, hardware_reason: 32 });
        let clts = ExitInfo { qualification: 2 << 4, insn_len: 2, ..exit(28) };
        assert_eq!(decode(&clts), VmExit::Clts { insn_len: 2 });
        // lmsw ax with ax = 0x000F: type 3, register operand, data 0x000F.
        let lmsw = ExitInfo { qualification: 0x000F_0030, insn_len: 3, ..exit(28) };
        assert_eq!(decode(&lmsw), VmExit::Lmsw { value: 0xF, insn_len: 3 });
        let lmsw_memory = ExitInfo { qualification: 0x000F_0070, insn_len: 3, ..exit(28) };
        assert_eq!(decode(&lmsw_memory), VmExit::Unknown { hardware_reason: 28 });
    }
    //@ end

    //@ begin 6
    #[test]
    fn the_address_size_comes_from_the_exit_or_the_prefix() {
        // rep outsb with 0x67 in 16-bit code: 32-bit addressing.
        assert_eq!(address_mask_from_info(1 << 7), Some(0xFFFF_FFFF));
        assert_eq!(address_mask_from_info(0), Some(0xFFFF));
        assert_eq!(address_mask_from_info(2 << 7 | 0x7F), Some(u64::MAX));
        assert_eq!(address_mask_from_info(3 << 7), None);
        assert!(has_address_size_prefix(&[0x67, 0xF3, 0x6E], false));
        assert!(has_address_size_prefix(&[0xF3, 0x67, 0x6E], false));
        assert!(!has_address_size_prefix(&[0xF3, 0x6E, 0x67], false), "0x67 after the opcode is not a prefix");
        assert!(has_address_size_prefix(&[0xF3, 0x48, 0x67, 0x6E], true));
        assert_eq!(address_mask(false, false, true), 0xFFFF_FFFF, "16-bit code with 0x67");
        assert_eq!(address_mask(false, true, true), 0xFFFF, "32-bit code with 0x67");
        assert_eq!(address_mask(false, true, false), 0xFFFF_FFFF);
        assert_eq!(address_mask(true, false, false), u64::MAX);
        assert_eq!(address_mask(true, false, true), 0xFFFF_FFFF);
    }

    mod e6_1 {
        use super::super::*;

        #[test]
        fn in_al_from_an_immediate_port() {
            // in al, 0xE0: size 1 (field 0), in, immediate operand (bit 6).
            let q = IoQualification::from_qualification(0x00E0_0048);
            assert_eq!(q, IoQualification { port: 0xE0, size: 1, is_in: true, string: false, rep: false });
        }

        #[test]
        fn out_dx_eax_and_rep_outsw() {
            let q = IoQualification::from_qualification(0x0510_0003);
            assert_eq!(q, IoQualification { port: 0x510, size: 4, is_in: false, string: false, rep: false });
            let q = IoQualification::from_qualification(0xFFFF_0031);
            assert_eq!(q, IoQualification { port: 0xFFFF, size: 2, is_in: false, string: true, rep: true });
        }

        /// Random fields, encoded as Table 28-5 lays them out, with random
        /// bits where the table defines none of these fields (bit 6, the
        /// operand encoding; bits 15:7 and 63:32, reserved).
        #[test]
        fn random_qualifications_decode_to_their_fields() {
            let mut rng = crate::test_rng::Rng::new(0xE61);
            for _ in 0..10_000 {
                let (port, size_code) = (rng.next() as u16, [0u64, 1, 3][rng.below(3) as usize]);
                let (is_in, string, rep) = (rng.one_in(2), rng.one_in(2), rng.one_in(2));
                let noise = rng.next() & !0xFFFF_003F;
                let q = u64::from(port) << 16 | u64::from(rep) << 5 | u64::from(string) << 4 | u64::from(is_in) << 3 | size_code | noise;
                let expected = IoQualification { port, size: size_code as u8 + 1, is_in, string, rep };
                assert_eq!(IoQualification::from_qualification(q), expected, "{q:#x}");
            }
        }
    }

    mod e6_2 {
        use super::super::*;
        use super::exit;

        fn io(port: u16, size: u8, is_in: bool, string: bool, rep: bool) -> IoQualification {
            IoQualification { port, size, is_in, string, rep }
        }

        /// `out dx, al` to port 0xE9, then `out 0xE0, eax` (SDM Vol. 2,
        /// OUT: the data is AL, AX or EAX, as the operand size says).
        #[test]
        fn an_out_carries_the_low_bytes_of_rax() {
            let info = ExitInfo { rax: 0x1234_5678, ..exit(30) };
            let expected = IoExit { port: 0xE9, size: 1, is_in: false, string: None, value: 0x78, insn_len: 1 };
            assert_eq!(decode_io(io(0xE9, 1, false, false, false), &info), expected);
            let info = ExitInfo { rax: 0xFFFF_FFFF_1234_5678, insn_len: 2, ..exit(30) };
            let expected = IoExit { size: 4, port: 0xE0, value: 0x1234_5678, insn_len: 2, ..expected };
            assert_eq!(decode_io(io(0xE0, 4, false, false, false), &info), expected);
        }

        /// `rep insw` from port 0xE4, going down, in 16-bit code (SDM
        /// Vol. 2, REP: the count register is CX, ECX or RCX, as the
        /// address size says).
        #[test]
        fn string_io_counts_within_the_address_size() {
            let info = ExitInfo {
                guest_linear_address: 0x9006,
                rcx: 0xFFFF_0000_0001_0002,
                rflags: 0x402,
                address_mask: 0xFFFF,
                insn_len: 3,
                ..exit(30)
            };
            let string = StringIo { address: 0x9006, rep: true, down: true, count: 2 };
            let expected = IoExit { port: 0xE4, size: 2, is_in: true, string: Some(string), value: 0, insn_len: 3 };
            assert_eq!(decode_io(io(0xE4, 2, true, true, true), &info), expected);
        }

        /// The same exits, but through the whole decoder, which E6.1's
        /// qualification feeds.
        #[test]
        fn whole_exits_decode_once_e6_1_is_solved_too() {
            let info = ExitInfo { qualification: 0x00E0_0043, rax: 0xFFFF_FFFF_1234_5678, insn_len: 2, ..exit(30) };
            let expected = IoExit { port: 0xE0, size: 4, is_in: false, string: None, value: 0x1234_5678, insn_len: 2 };
            assert_eq!(decode(&info), VmExit::Io(expected));
        }

        /// Each field worked out another way (SDM Vol. 2, OUT, INS, OUTS
        /// and REP): the value from the bytes of RAX, the count from RCX
        /// cut to a u16, u32 or u64.
        #[test]
        fn random_exits_complete_as_the_instruction_says() {
            let mut rng = crate::test_rng::Rng::new(0xE62);
            for _ in 0..10_000 {
                let size = [1u8, 2, 4][rng.below(3) as usize];
                let q = io(rng.next() as u16, size, rng.one_in(2), rng.one_in(2), rng.one_in(2));
                let address_mask = [0xFFFF, 0xFFFF_FFFF, u64::MAX][rng.below(3) as usize];
                let info = ExitInfo {
                    guest_linear_address: rng.next(),
                    rax: rng.next(),
                    rcx: rng.next(),
                    rflags: rng.next(),
                    address_mask,
                    insn_len: 1 + rng.below(15) as u32,
                    ..exit(30)
                };
                let mut value = [0u8; 4];
                value[..usize::from(size)].copy_from_slice(&info.rax.to_le_bytes()[..usize::from(size)]);
                let count = match address_mask {
                    0xFFFF => u64::from(info.rcx as u16),
                    0xFFFF_FFFF => u64::from(info.rcx as u32),
                    _ => info.rcx,
                };
                let string = StringIo {
                    address: info.guest_linear_address,
                    rep: q.rep,
                    down: (info.rflags >> 10) % 2 == 1,
                    count: if q.rep { count } else { 1 },
                };
                let expected = IoExit {
                    port: q.port,
                    size,
                    is_in: q.is_in,
                    string: if q.string { Some(string) } else { None },
                    value: if q.is_in || q.string { 0 } else { u32::from_le_bytes(value) },
                    insn_len: info.insn_len as u8,
                };
                assert_eq!(decode_io(q, &info), expected, "{q:?} {info:?}");
            }
        }
    }

    mod e6_3 {
        use super::super::*;
        use super::exit;

        #[test]
        fn cr_exits_other_than_moves_are_unknown() {
            // lmsw from memory: access type 3, memory operand.
            let lmsw = ExitInfo { qualification: 3 << 4 | 1 << 6, ..exit(28) };
            assert_eq!(decode(&lmsw), VmExit::Unknown { hardware_reason: 28 });
            let mov = ExitInfo { qualification: 3 | 3 << 8, insn_len: 3, ..exit(28) };
            assert_eq!(decode(&mov), VmExit::Cr(CrAccess { cr: 3, write: true, gpr: 3, insn_len: 3 }));
        }

        #[test]
        fn moves_to_and_from_control_registers() {
            // mov cr0, eax: CR 0, type 0, register 0.
            assert_eq!(decode_cr(0x0, 3), Some(CrAccess { cr: 0, write: true, gpr: 0, insn_len: 3 }));
            // mov ebx, cr3: CR 3, type 1, register 3.
            assert_eq!(decode_cr(0x313, 3), Some(CrAccess { cr: 3, write: false, gpr: 3, insn_len: 3 }));
            // mov cr4, r15: CR 4, type 0, register 15.
            assert_eq!(decode_cr(0xF04, 4), Some(CrAccess { cr: 4, write: true, gpr: 15, insn_len: 4 }));
        }

        #[test]
        fn clts_and_lmsw_are_not_moves() {
            assert_eq!(decode_cr(0x20, 2), None);
            assert_eq!(decode_cr(0x30, 3), None);
        }

        /// Random fields as Table 28-3 lays them out, with random bits
        /// where it defines none of these fields (bits 7:6, the `lmsw`
        /// operand type and reserved; 63:12, the `lmsw` data and reserved).
        #[test]
        fn random_qualifications_decode_to_their_fields() {
            let mut rng = crate::test_rng::Rng::new(0xE63);
            for _ in 0..10_000 {
                let (cr, access_type, gpr) = (rng.below(16), rng.below(4), rng.below(16));
                let noise = rng.next() & !0xF3F;
                let q = gpr << 8 | access_type << 4 | cr | noise;
                let insn_len = 1 + rng.below(15) as u8;
                let expected = match access_type {
                    0 | 1 => Some(CrAccess { cr: cr as u8, write: access_type == 0, gpr: gpr as u8, insn_len }),
                    _ => None,
                };
                assert_eq!(decode_cr(q, insn_len), expected, "{q:#x}");
            }
        }
    }
    //@ end
}
