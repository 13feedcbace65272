//@ stage 8
//! `rdmsr` and `wrmsr`, of the one MSR stage 08 needs in the kernel: EFER,
//! whose LME bit a guest sets to enter long mode, and whose NXE bit makes
//! bit 63 of its page-table entries mean "no execute". Both change how the
//! guest's addresses are translated, so the MMU must see them, as 2006's
//! `set_efer` did. Every other MSR still goes to userspace as an unknown
//! exit; stage 12 handles the rest.

use super::cr::GeneralProtection;
use super::{Action, ExitContext, to_user_unknown};
use crate::abi::{KvmRun, KvmSregs};
use crate::regs::{Cr0, Efer};
use crate::regs::Reg;
use x86::msr::IA32_EFER;

// ANCHOR: handle_msr
/// `rdmsr` (EDX:EAX = MSR[ECX]) or `wrmsr` (MSR[ECX] = EDX:EAX).
pub fn handle_msr(write: bool, insn_len: u8, hardware_reason: u32, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    if ctx.gpr(Reg::Rcx as u8) as u32 != IA32_EFER {
        //@ begin 12
        if let Some(action) = handle_other_msr(write, insn_len, ctx) {
            return action;
        }
        //@ end
        return to_user_unknown(hardware_reason, run);
    }
    let sregs = ctx.sregs();
    if write {
        let value = (ctx.gpr(Reg::Rdx as u8) & 0xFFFF_FFFF) << 32 | ctx.gpr(Reg::Rax as u8) & 0xFFFF_FFFF;
        match set_efer(&sregs, value) {
            Ok(new) => ctx.set_sregs(&new),
            Err(GeneralProtection) => {
                ctx.queue_exception(13, Some(0));
                return Action::Resume;
            }
        }
    } else {
        ctx.set_gpr(Reg::Rax as u8, sregs.efer & 0xFFFF_FFFF);
        ctx.set_gpr(Reg::Rdx as u8, sregs.efer >> 32);
    }
    ctx.skip_instruction(insn_len);
    Action::Resume
}

//@ begin 12
// ANCHOR: handle_other_msr
/// From stage 12, every MSR but EFER: those the module keeps are read or
/// written in the kernel ([`home`]); any other is #GP(0) for the guest, as
/// 2006 answered ("unhandled rdmsr") and as the processor does for an MSR
/// it lacks. `None` never comes back today: every MSR has an answer.
fn handle_other_msr(write: bool, insn_len: u8, ctx: &mut dyn ExitContext) -> Option<Action> {
    let index = ctx.gpr(Reg::Rcx as u8) as u32;
    let done = if write {
        let value = (ctx.gpr(Reg::Rdx as u8) & 0xFFFF_FFFF) << 32 | ctx.gpr(Reg::Rax as u8) & 0xFFFF_FFFF;
        ctx.write_msr(index, value)
    } else {
        ctx.read_msr(index).map(|value| {
            ctx.set_gpr(Reg::Rax as u8, value & 0xFFFF_FFFF);
            ctx.set_gpr(Reg::Rdx as u8, value >> 32);
        }).is_some()
    };
    if !done {
        ctx.queue_exception(13, Some(0));
        return Some(Action::Resume);
    }
    ctx.skip_instruction(insn_len);
    Some(Action::Resume)
}
// ANCHOR_END: handle_other_msr
//@ end

/// A write to EFER: only SCE, LME and NXE may be set (LMA is the
/// processor's: a write leaves it as it is), and LME cannot change while
/// paging is on (SDM Vol. 3A, 9.8.5; APM Vol. 2, 3.1.7).
pub fn set_efer(sregs: &KvmSregs, value: u64) -> Result<KvmSregs, GeneralProtection> {
    let requested = Efer::from_bits_retain(value);
    if !Efer::OFFERED.contains(requested) {
        return Err(GeneralProtection);
    }
    let old = Efer::from_bits_retain(sregs.efer);
    let paging = Cr0::from_bits_retain(sregs.cr0).contains(Cr0::PG);
    if paging && requested.contains(Efer::LME) != old.contains(Efer::LME) {
        return Err(GeneralProtection);
    }
    let efer = (requested - Efer::LMA) | (old & Efer::LMA);
    Ok(KvmSregs { efer: efer.bits(), ..*sregs })
}
// ANCHOR_END: handle_msr

//@ begin 12
// ANCHOR: msr_table
/// The MSRs `KVM_GET_MSR_INDEX_LIST` names, as 2006's `msrs_to_save` and
/// `emulated_msrs`: the ones a VMM saves and restores with the vCPU
/// (SYSENTER, the SYSCALL MSRs, KERNEL_GS_BASE, the TSC; SDM Vol. 4,
/// Table 2-2; APM Vol. 2, 6.1.1 and 6.1.2), and MISC_ENABLE.
pub const MSR_INDEX_LIST: [u32; 10] = [
    index::IA32_SYSENTER_CS,
    index::IA32_SYSENTER_ESP,
    index::IA32_SYSENTER_EIP,
    index::STAR,
    index::LSTAR,
    index::CSTAR,
    index::KERNEL_GS_BASE,
    index::SFMASK,
    index::IA32_TSC,
    index::IA32_MISC_ENABLE,
];

/// MSR numbers.
pub mod index {
    pub const IA32_TSC: u32 = 0x10;
    pub const IA32_PLATFORM_ID: u32 = 0x17;
    pub const IA32_APIC_BASE: u32 = 0x1B;
    pub const IA32_UCODE_REV: u32 = 0x8B;
    pub const IA32_MTRRCAP: u32 = 0xFE;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_MCG_CAP: u32 = 0x179;
    pub const IA32_MCG_STATUS: u32 = 0x17A;
    pub const IA32_MCG_CTL: u32 = 0x17B;
    pub const IA32_MISC_ENABLE: u32 = 0x1A0;
    pub const STAR: u32 = 0xC000_0081;
    pub const LSTAR: u32 = 0xC000_0082;
    pub const CSTAR: u32 = 0xC000_0083;
    pub const SFMASK: u32 = 0xC000_0084;
    pub const FS_BASE: u32 = 0xC000_0100;
    pub const GS_BASE: u32 = 0xC000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
    //@ begin 13
    /// AMD's interrupt-pending-message register of families 0Fh and 10h.
    pub const K8_INT_PENDING_MSG: u32 = 0xC001_0055;
    //@ end
}

/// Whether `value` is canonical: bits 63:47 all equal (a 48-bit linear
/// address, SDM Vol. 1, 3.3.7.1). `wrmsr` of a non-canonical address to an
/// MSR that holds one is #GP.
pub fn canonical(value: u64) -> bool {
    ((value as i64) << 16 >> 16) as u64 == value
}

// ANCHOR: kept_value
/// The value a backend keeps when the guest or userspace writes `value`
/// to MSR `index`, as the processor keeps it, or `None` where `wrmsr`
/// would be #GP: an address that is not canonical (SYSENTER_ESP and
/// SYSENTER_EIP, LSTAR, CSTAR, KERNEL_GS_BASE and the segment bases).
/// SYSENTER_CS holds a selector; SFMASK's upper half is reserved (SDM
/// Vol. 4, Table 2-2), so it is dropped rather than ever loaded.
pub fn kept_value(index: u32, value: u64) -> Option<u64> {
    use index::*;
    match index {
        IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | LSTAR | CSTAR | KERNEL_GS_BASE | FS_BASE | GS_BASE => {
            canonical(value).then_some(value)
        }
        IA32_SYSENTER_CS => Some(value & 0xFFFF),
        SFMASK => Some(value & 0xFFFF_FFFF),
        _ => Some(value),
    }
}

/// The guest's time-stamp counter when the host's reads `host` and the
/// guest runs with TSC offset `offset` (the processor adds it to every
/// `rdtsc` in the guest: SDM Vol. 3C, 26.3; APM Vol. 2, Appendix B, the
/// VMCB's TSC_OFFSET).
pub fn guest_tsc(host: u64, offset: u64) -> u64 {
    host.wrapping_add(offset)
}

/// The TSC offset with which the guest reads `value` when the host reads
/// `host`: a `wrmsr` of IA32_TSC, or `KVM_SET_MSRS` of it.
pub fn tsc_offset(value: u64, host: u64) -> u64 {
    value.wrapping_sub(host)
}
// ANCHOR_END: kept_value

/// IA32_MISC_ENABLE at reset: bits 11 and 12 say there is no branch trace
/// store and no PEBS (SDM Vol. 4, Table 2-2), which rkvm does not offer;
/// Linux's KVM starts its guests with the same value.
pub const MISC_ENABLE_RESET: u64 = 1 << 11 | 1 << 12;

/// Where the value of an MSR the module handles lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrHome {
    /// In the backend: the registers its hardware switches at entry and
    /// exit (the VMCB's save area, the VMCS's guest state), and the TSC.
    Backend,
    /// `sregs.apic_base`, which `KVM_GET_SREGS` shows too.
    ApicBase,
    /// A value the vCPU keeps for the guest and nothing else reads.
    Kept,
    /// Reads as this constant; writes are ignored: machine-check and MTRR
    /// registers a guest probes at boot, of a processor with none
    /// (2006's `kvm_get_msr_common` answered them so).
    Constant(u64),
}

/// Where MSR `index` lives, or `None`: then `rdmsr` and `wrmsr` of it are
/// #GP(0), as on a processor without it, and the ioctls stop at it.
pub fn home(index: u32) -> Option<MsrHome> {
    use index::*;
    Some(match index {
        IA32_SYSENTER_CS | IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | STAR | LSTAR | CSTAR | SFMASK | KERNEL_GS_BASE
        | FS_BASE | GS_BASE | IA32_TSC => MsrHome::Backend,
        IA32_APIC_BASE => MsrHome::ApicBase,
        IA32_MISC_ENABLE => MsrHome::Kept,
        IA32_UCODE_REV => MsrHome::Constant(0x1_0000_0000),
        IA32_PLATFORM_ID | IA32_MTRRCAP | IA32_MCG_CAP | IA32_MCG_STATUS | IA32_MCG_CTL => MsrHome::Constant(0),
        // IA32_MC0_CTL to the last bank's registers, and the MTRRs.
        0x400..=0x47F | 0x200..=0x2FF => MsrHome::Constant(0),
        //@ begin 13
        // Linux reads it once at boot on an AMD processor with erratum 400
        // (as QEMU's default CPU model claims to be) to learn whether C1E
        // is on: 0 says it is off. Without it the guest's boot log shows an
        // unchecked MSR access; under Linux's KVM it does not.
        K8_INT_PENDING_MSG => MsrHome::Constant(0),
        //@ end
        _ => return None,
    })
}
// ANCHOR_END: msr_table
//@ end

#[cfg(test)]
mod tests {
    use super::super::fake::FakeContext;
    use super::*;

    fn efer_access(ctx: &mut FakeContext, write: bool) -> Action {
        ctx.regs[Reg::Rcx as usize] = u64::from(IA32_EFER);
        handle_msr(write, 2, 31, ctx, &mut KvmRun::default())
    }

    #[test]
    fn efer_round_trips_through_wrmsr_and_rdmsr() {
        let mut ctx = FakeContext::default();
        ctx.regs[Reg::Rax as usize] = 0xFFFF_FFFF_0000_0901;
        ctx.regs[Reg::Rdx as usize] = 0;
        assert_eq!(efer_access(&mut ctx, true), Action::Resume);
        assert_eq!((ctx.sregs.efer, ctx.skipped), (0x901, 2));
        ctx.regs[Reg::Rax as usize] = u64::MAX;
        assert_eq!(efer_access(&mut ctx, false), Action::Resume);
        assert_eq!((ctx.regs[Reg::Rax as usize], ctx.regs[Reg::Rdx as usize]), (0x901, 0));
    }

    #[test]
    fn reserved_bits_and_lme_under_paging_are_general_protection() {
        let mut ctx = FakeContext::default();
        ctx.regs[Reg::Rax as usize] = 1 << 12;
        assert_eq!(efer_access(&mut ctx, true), Action::Resume);
        assert_eq!((ctx.queued, ctx.skipped, ctx.sregs.efer), (Some((13, Some(0))), 0, 0));
        assert_eq!(set_efer(&KvmSregs::default(), 1 << 13), Err(GeneralProtection), "a bit the module does not name");
        let paging = KvmSregs { cr0: 0x8000_0011, ..KvmSregs::default() };
        assert_eq!(set_efer(&paging, 0x100), Err(GeneralProtection));
        let long = KvmSregs { efer: 0x500, ..paging };
        assert_eq!(set_efer(&long, 0x800).map(|s| s.efer), Err(GeneralProtection), "LME cleared");
        assert_eq!(set_efer(&long, 0x900 | 0x100).map(|s| s.efer), Ok(0xD00), "LMA stays");
    }

    #[test]
    fn an_msr_the_module_lacks_is_never_done() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        ctx.regs[Reg::Rcx as usize] = 0x1234_5678;
        ctx.regs[Reg::Rax as usize] = 0xAAAA;
        let _ = handle_msr(false, 2, 31, &mut ctx, &mut run);
        // Until stage 12 userspace hears of it (KVM_EXIT_UNKNOWN); from
        // stage 12 the guest gets #GP. Either way nothing is read.
        assert_eq!((ctx.skipped, ctx.regs[Reg::Rax as usize]), (0, 0xAAAA));
    }
    //@ begin 12

    #[test]
    fn kept_msrs_round_trip_and_others_are_general_protection() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        let mut access = |ctx: &mut FakeContext, write: bool, index: u32, value: u64| {
            ctx.regs[Reg::Rcx as usize] = index.into();
            ctx.regs[Reg::Rax as usize] = value & 0xFFFF_FFFF;
            ctx.regs[Reg::Rdx as usize] = value >> 32;
            (ctx.skipped, ctx.queued) = (0, None);
            handle_msr(write, 2, 31, ctx, &mut run)
        };
        assert_eq!(access(&mut ctx, true, index::LSTAR, 0xFFFF_8000_1234_5678), Action::Resume);
        assert_eq!((ctx.skipped, ctx.queued), (2, None));
        assert_eq!(access(&mut ctx, false, index::LSTAR, 0), Action::Resume);
        assert_eq!((ctx.regs[Reg::Rax as usize], ctx.regs[Reg::Rdx as usize]), (0x1234_5678, 0xFFFF_8000));
        assert_eq!(access(&mut ctx, false, index::IA32_UCODE_REV, 0), Action::Resume);
        assert_eq!(ctx.regs[Reg::Rdx as usize], 1, "2006's microcode revision");
        for write in [false, true] {
            assert_eq!(access(&mut ctx, write, 0xC000_0104, 0), Action::Resume);
            assert_eq!((ctx.skipped, ctx.queued), (0, Some((13, Some(0)))), "an MSR no one keeps: #GP(0)");
        }
    }

    #[test]
    fn kept_values_are_the_processors() {
        assert_eq!(kept_value(index::LSTAR, 0xFFFF_8000_0000_0000), Some(0xFFFF_8000_0000_0000));
        assert_eq!(kept_value(index::KERNEL_GS_BASE, 0x0001_0000_0000_0000), None, "not canonical");
        assert_eq!(kept_value(index::IA32_SYSENTER_CS, 0xABCD_0010), Some(0x10));
        assert_eq!(kept_value(index::SFMASK, u64::MAX), Some(0xFFFF_FFFF));
        assert_eq!(kept_value(index::STAR, u64::MAX), Some(u64::MAX));
    }

    #[test]
    fn the_tsc_offset_makes_the_guest_read_what_was_written() {
        for (value, host) in [(0, 0), (1 << 32, 12_345), (5, u64::MAX), (u64::MAX, 7)] {
            let offset = tsc_offset(value, host);
            assert_eq!(guest_tsc(host, offset), value);
            assert_eq!(guest_tsc(host.wrapping_add(1000), offset), value.wrapping_add(1000), "then counts on");
        }
    }
    //@ end
}
