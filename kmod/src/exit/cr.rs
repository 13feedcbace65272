//@ stage 6
//! Moves to and from CR0, CR3 and CR4.
//!
//! The hardware runs the guest with control registers of the module's
//! choosing (paging on, for the module's page table), so the backend
//! intercepts the guest's moves and the handler keeps the guest's view in
//! the vCPU's special registers, as 2006's `set_cr0` and friends did.

use super::{Action, CrAccess, ExitContext, to_user_unknown};
use crate::abi::{KvmRun, KvmSregs};

/// EFER.LMA: long mode is active.
const EFER_LMA: u64 = 1 << 10;

// ANCHOR: handle_cr
/// Emulates `mov crN, reg` or `mov reg, crN`, then skips it.
pub fn handle_cr(access: &CrAccess, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    let mut sregs = ctx.sregs();
    let width = operand_mask(&sregs);
    let Some(cr) = cr_mut(&mut sregs, access.cr) else {
        return to_user_unknown(0, run);
    };
    if access.write {
        *cr = ctx.gpr(access.gpr) & width;
        ctx.set_sregs(&sregs);
    } else {
        let value = *cr & width;
        ctx.set_gpr(access.gpr, value);
    }
    ctx.skip_instruction(access.insn_len);
    Action::Resume
}
// ANCHOR_END: handle_cr

/// The guest's copy of control register `cr`, if it is one the backend
/// intercepts.
fn cr_mut(sregs: &mut KvmSregs, cr: u8) -> Option<&mut u64> {
    match cr {
        0 => Some(&mut sregs.cr0),
        3 => Some(&mut sregs.cr3),
        4 => Some(&mut sregs.cr4),
        _ => None,
    }
}

/// Outside 64-bit mode, `mov` to and from control registers moves 32 bits.
fn operand_mask(sregs: &KvmSregs) -> u64 {
    if sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0 { u64::MAX } else { 0xFFFF_FFFF }
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeContext;
    use super::*;

    #[test]
    fn a_write_changes_the_guests_view_and_is_skipped() {
        let mut ctx = FakeContext::default();
        ctx.regs[0] = 0xFFFF_FFFF_0000_0011;
        let access = CrAccess { cr: 0, write: true, gpr: 0, insn_len: 3 };
        assert_eq!(handle_cr(&access, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!(ctx.sregs.cr0, 0x11, "32 bits outside long mode");
        assert_eq!(ctx.skipped, 3);
    }

    #[test]
    fn a_read_gives_the_guests_view() {
        let mut ctx = FakeContext::default();
        ctx.sregs.cr4 = 0x20;
        ctx.regs[3] = u64::MAX;
        let access = CrAccess { cr: 4, write: false, gpr: 3, insn_len: 3 };
        assert_eq!(handle_cr(&access, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!(ctx.regs[3], 0x20);
    }

    #[test]
    fn another_register_goes_to_userspace() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        let access = CrAccess { cr: 8, write: true, gpr: 0, insn_len: 4 };
        assert_eq!(handle_cr(&access, &mut ctx, &mut run), Action::ToUser);
        assert_eq!(ctx.skipped, 0);
    }
}
