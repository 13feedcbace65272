//@ stage 12
//! The exits of the debug registers: `mov` to and from them, and debug
//! exceptions, which may be the debugger's. The registers themselves,
//! and the rules the processor applies to them, are [`crate::debug`]'s.

use super::{Action, DrAccess, ExitContext};
use crate::abi::{self, KvmRun};
use crate::debug::{DR6_B, DR6_BD, DR6_CAUSES, DR7_GD, DrRule, dr_read, dr_rule, dr_write};

// ANCHOR: handle_dr
/// `mov` to or from a debug register, which both backends intercept.
pub fn handle_dr(access: &DrAccess, ctx: &mut dyn ExitContext) -> Action {
    const UD: u8 = 6;
    const GP: u8 = 13;
    const DB: u8 = 1;
    let sregs = ctx.sregs();
    let cr4_de = sregs.cr4 & 1 << 3 != 0;
    let long_mode = sregs.efer & 1 << 10 != 0 && sregs.cs.l != 0;
    match dr_rule(access.dr, cr4_de, ctx.debug_state().regs.dr7) {
        DrRule::Ud => ctx.queue_exception(UD, None),
        DrRule::GeneralDetect => {
            // The processor clears GD as it delivers the #DB, so that the
            // handler may use the registers (SDM Vol. 3B, 19.2.4).
            let state = ctx.debug_state();
            state.regs.dr6 = state.regs.dr6 & !DR6_B | DR6_BD;
            state.regs.dr7 &= !DR7_GD;
            ctx.queue_exception(DB, None);
        }
        DrRule::Access { dr } if access.write => {
            let value = ctx.gpr(access.gpr);
            let value = if long_mode { value } else { value & 0xFFFF_FFFF };
            match dr_write(&mut ctx.debug_state().regs, dr, value) {
                Some(()) => ctx.skip_instruction(access.insn_len),
                None => ctx.queue_exception(GP, Some(0)),
            }
        }
        DrRule::Access { dr } => {
            let value = dr_read(&ctx.debug_state().regs, dr);
            // Outside 64-bit mode the operand is 32 bits, and a 32-bit
            // destination's upper half is left as it was.
            let value = if long_mode { value } else { ctx.gpr(access.gpr) & !0xFFFF_FFFF | value & 0xFFFF_FFFF };
            ctx.set_gpr(access.gpr, value);
            ctx.skip_instruction(access.insn_len);
        }
    }
    Action::Resume
}
// ANCHOR_END: handle_dr

// ANCHOR: handle_db
/// A debug exception, which both backends intercept (stage 08), with the
/// DR6 bits of its causes: the debugger's ends in `KVM_EXIT_DEBUG`; any
/// other goes to the guest, its causes in the guest's DR6 (B0-B3 replaced,
/// the rest kept, as the processor does: SDM Vol. 3B, 19.2.3).
pub fn handle_db(causes: u64, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    if ctx.debug_state().debugger.claims(causes) {
        run.exit_type = abi::KVM_EXIT_TYPE_VM_EXIT;
        run.exit_reason = abi::KVM_EXIT_DEBUG;
        return Action::ToUser;
    }
    let regs = &mut ctx.debug_state().regs;
    regs.dr6 = regs.dr6 & !DR6_B | causes & DR6_CAUSES;
    ctx.queue_exception(1, None);
    Action::Resume
}
// ANCHOR_END: handle_db

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::{DR6_BS, DR6_RESET, DebugState, Debugger};
    use crate::exit::fake::FakeContext;

    fn debugger(bps: [Option<u64>; 4], singlestep: bool) -> DebugState {
        DebugState { debugger: Debugger { breakpoints: bps, singlestep }, ..DebugState::default() }
    }

    fn access(dr: u8, write: bool) -> DrAccess {
        DrAccess { dr, write, gpr: 0, insn_len: 3 }
    }

    #[test]
    fn general_detect_faults_once_and_clears_gd() {
        let mut ctx = FakeContext::default();
        ctx.debug.regs.dr7 = 0x400 | DR7_GD;
        handle_dr(&access(7, false), &mut ctx);
        assert_eq!((ctx.skipped, ctx.queued), (0, Some((1, None))));
        assert_eq!((ctx.debug.regs.dr6 & DR6_BD, ctx.debug.regs.dr7), (DR6_BD, 0x400));
    }

    #[test]
    fn debug_exceptions_are_the_debuggers_only_for_its_own_causes() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        ctx.debug = debugger([Some(0x100), None, None, None], false);
        assert_eq!(handle_db(DR6_BS, &mut ctx, &mut run), Action::Resume, "the guest's own TF");
        assert_eq!(ctx.queued, Some((1, None)));
        assert_eq!(ctx.debug.regs.dr6, DR6_RESET | DR6_BS);
        ctx.queued = None;
        assert_eq!(handle_db(1, &mut ctx, &mut run), Action::ToUser);
        assert_eq!((run.exit_reason, ctx.queued), (crate::abi::KVM_EXIT_DEBUG, None));
        ctx.debug = debugger([None; 4], true);
        assert_eq!(handle_db(DR6_BS, &mut ctx, &mut run), Action::ToUser);
    }

    /// These write the registers: they need E12.2's `dr_write`.
    mod e12_2 {
        use super::*;

        #[test]
        fn a_write_then_a_read_round_trips_and_skips() {
            let mut ctx = FakeContext::default();
            ctx.regs[0] = 0x1_0000_1234;
            assert_eq!(handle_dr(&access(1, true), &mut ctx), Action::Resume);
            assert_eq!(ctx.debug.regs.db[1], 0x1234, "32 bits outside long mode");
            ctx.regs[0] = 0xAAAA_AAAA_0000_0000;
            handle_dr(&access(1, false), &mut ctx);
            assert_eq!(ctx.regs[0], 0xAAAA_AAAA_0000_1234);
            assert_eq!((ctx.skipped, ctx.queued), (6, None));
        }

        #[test]
        fn a_long_mode_write_of_high_dr7_bits_is_gp() {
            let mut ctx = FakeContext::default();
            ctx.sregs.efer = 1 << 10;
            ctx.sregs.cs.l = 1;
            ctx.regs[0] = 1 << 40;
            handle_dr(&access(7, true), &mut ctx);
            assert_eq!((ctx.skipped, ctx.queued), (0, Some((13, Some(0)))));
            handle_dr(&access(0, true), &mut ctx);
            assert_eq!(ctx.debug.regs.db[0], 1 << 40, "DR0 takes all 64 bits");
        }
    }
}
