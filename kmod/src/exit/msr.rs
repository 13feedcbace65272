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
    fn another_msr_goes_to_userspace_untouched() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        ctx.regs[Reg::Rcx as usize] = 0x10;
        assert_eq!(handle_msr(false, 2, 31, &mut ctx, &mut run), Action::ToUser);
        assert_eq!((run.exit_reason, run.exit.hw().hardware_exit_reason), (crate::abi::KVM_EXIT_UNKNOWN, 31));
        assert_eq!(ctx.skipped, 0);
    }
}
