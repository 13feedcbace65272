//@ stage 12
//! The debug registers: the guest's own, and the debugger's.
//!
//! A guest has DR0-DR3 (breakpoint addresses), DR6 (what the last debug
//! exception was for) and DR7 (which breakpoints are on, and for what);
//! SDM Vol. 3B, 19.2 "Debug Registers", APM Vol. 2, 13.1. The host has its
//! own, which a process's debugger or `perf` may be using. Both backends
//! intercept every `mov` to or from a debug register, so the guest's
//! values live here, in the vCPU, and reach the processor only while the
//! guest runs, and only when one of its breakpoints is on.
//!
//! A debugger in userspace (`KVM_DEBUG_GUEST`, the seed's "singlestep or
//! breakpoint the guest") takes the processor's debug registers over
//! while it is attached: its four breakpoints are execution breakpoints at
//! guest linear addresses, and single-stepping sets RFLAGS.TF under the
//! guest. Either ends in `KVM_EXIT_DEBUG`, with RIP at the breakpoint or
//! after the instruction stepped. A debug exception that is not the
//! debugger's goes to the guest, as it would without a hypervisor.

use crate::abi::{KvmDebugGuest, KvmRun};
use crate::exit::{Action, DrAccess, ExitContext};

// ANCHOR: bits
/// DR6 bits that read as 1 whatever is written (SDM Vol. 3B, 19.2.3).
pub const DR6_FIXED_1: u64 = 0xFFFF_0FF0;
/// DR6 B0-B3: breakpoint 0-3's condition was met.
pub const DR6_B: u64 = 0xF;
/// DR6.BD: the next instruction would have accessed a debug register
/// while DR7.GD was set.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: a single step (RFLAGS.TF).
pub const DR6_BS: u64 = 1 << 14;
/// DR6 bits that software can write: B0-B3, BD, BS, BT.
pub const DR6_WRITABLE: u64 = DR6_B | DR6_BD | DR6_BS | 1 << 15;
/// DR7 bit 10 reads as 1; bits 11, 12, 14 and 15 as 0.
pub const DR7_FIXED_1: u64 = 0x400;
const DR7_WRITABLE: u64 = 0xFFFF_2BFF;
/// DR7.GD, general detect: a `mov` to or from a debug register is a #DB.
pub const DR7_GD: u64 = 1 << 13;
/// DR7's local and global enables of the four breakpoints (bits 7:0).
pub const DR7_ENABLES: u64 = 0xFF;
/// RFLAGS.TF, the trap flag: a #DB after each instruction.
pub const RFLAGS_TF: u64 = 1 << 8;
// ANCHOR_END: bits

// ANCHOR: state
/// The guest's debug registers, as it last wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugRegs {
    pub db: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
}

impl Default for DebugRegs {
    /// The values after reset (SDM Vol. 3A, Table 10-1).
    fn default() -> DebugRegs {
        DebugRegs { db: [0; 4], dr6: DR6_FIXED_1, dr7: DR7_FIXED_1 }
    }
}

/// What `KVM_DEBUG_GUEST` last asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Debugger {
    /// An execution breakpoint at each guest linear address given.
    pub breakpoints: [Option<u64>; 4],
    /// Exit after every instruction.
    pub singlestep: bool,
}

impl Debugger {
    /// The debugger `KVM_DEBUG_GUEST` describes: nothing when `enabled`
    /// is 0, whatever else it says (as 2006 read it).
    pub fn from_abi(dbg: &KvmDebugGuest) -> Debugger {
        if dbg.enabled == 0 {
            return Debugger::default();
        }
        Debugger {
            breakpoints: dbg.breakpoints.map(|b| (b.enabled != 0).then_some(b.address)),
            singlestep: dbg.singlestep != 0,
        }
    }

    /// Whether a debug exception with DR6 bits `causes` is the debugger's:
    /// a step while it steps, or one of its breakpoints.
    pub fn claims(&self, causes: u64) -> bool {
        let stepped = self.singlestep && causes & DR6_BS != 0;
        let hit = (0..4).any(|i| self.breakpoints[i].is_some() && causes & 1 << i != 0);
        stepped || hit
    }
}

/// The guest's registers and the debugger, kept together in the vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugState {
    pub regs: DebugRegs,
    pub debugger: Debugger,
}
// ANCHOR_END: state

// ANCHOR: hardware
/// What the processor runs the guest with: DR7, and DR0-DR3 if any
/// breakpoint is on (`None`: the host's stay, unused, since DR7 enables
/// none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hardware {
    pub dr7: u64,
    pub db: Option<[u64; 4]>,
}

/// The debugger's breakpoints if it set any, else the guest's own if it
/// enabled any, else none. DR7.GD never reaches the processor: every
/// `mov` to a debug register exits anyway, and [`handle_dr`] raises the
/// general-detect #DB itself.
pub fn hardware(state: &DebugState) -> Hardware {
    let debugger = &state.debugger;
    if debugger.breakpoints.iter().any(Option::is_some) {
        // Global enable Gi (bit 2i+1); R/Wi and LENi 0: instruction
        // execution, one byte (SDM Vol. 3B, 19.2.4).
        let enables = (0..4).filter(|&i| debugger.breakpoints[i].is_some()).fold(0, |dr7, i| dr7 | 2 << (2 * i));
        return Hardware { dr7: DR7_FIXED_1 | enables, db: Some(debugger.breakpoints.map(|b| b.unwrap_or(0))) };
    }
    let guest = &state.regs;
    if guest.dr7 & DR7_ENABLES != 0 {
        return Hardware { dr7: guest.dr7 & !DR7_GD, db: Some(guest.db) };
    }
    Hardware { dr7: DR7_FIXED_1, db: None }
}
// ANCHOR_END: hardware

// ANCHOR: dr_rules
/// What a `mov` to or from debug register `dr` does, before the register
/// file is touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrRule {
    /// Go on, with register number `dr` (DR4 and DR5 become 6 and 7).
    Access { dr: u8 },
    /// Invalid opcode: DR4 or DR5 with CR4.DE set.
    Ud,
    /// General detect: a #DB before the instruction, with DR6.BD.
    GeneralDetect,
}

/// The checks the processor makes, in its order, for `mov` with debug
/// register `dr` (SDM Vol. 2B, "MOV—Move to/from Debug Registers";
/// Vol. 3B, 19.2.2 and 19.2.4): the DR4/DR5 aliases and their #UD with
/// CR4.DE, then DR7.GD.
pub fn dr_rule(dr: u8, cr4_de: bool, dr7: u64) -> DrRule {
    let dr = match dr {
        4 | 5 if cr4_de => return DrRule::Ud,
        4 | 5 => dr + 2,
        _ => dr,
    };
    if dr7 & DR7_GD != 0 {
        return DrRule::GeneralDetect;
    }
    DrRule::Access { dr }
}

/// Writes `value` to register `dr` (0-3, 6 or 7). `None` if the
/// processor would raise #GP: a 1 in bits 63:32 of DR6 or DR7.
pub fn dr_write(regs: &mut DebugRegs, dr: u8, value: u64) -> Option<()> {
    match dr {
        0..=3 => *regs.db.get_mut(usize::from(dr))? = value,
        6 | 7 if value >> 32 != 0 => return None,
        6 => regs.dr6 = value & DR6_WRITABLE | DR6_FIXED_1,
        7 => regs.dr7 = value & DR7_WRITABLE | DR7_FIXED_1,
        _ => return None,
    }
    Some(())
}

/// Reads register `dr` (0-3, 6 or 7).
pub fn dr_read(regs: &DebugRegs, dr: u8) -> u64 {
    match dr {
        0..=3 => regs.db.get(usize::from(dr)).copied().unwrap_or(0),
        6 => regs.dr6,
        _ => regs.dr7,
    }
}
// ANCHOR_END: dr_rules

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
        run.exit_type = crate::abi::KVM_EXIT_TYPE_VM_EXIT;
        run.exit_reason = crate::abi::KVM_EXIT_DEBUG;
        return Action::ToUser;
    }
    let regs = &mut ctx.debug_state().regs;
    regs.dr6 = regs.dr6 & !DR6_B | causes & DR6_WRITABLE | DR6_FIXED_1;
    ctx.queue_exception(1, None);
    Action::Resume
}
// ANCHOR_END: handle_db

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::KvmBreakpoint;
    use crate::exit::fake::FakeContext;

    fn debugger(bps: [Option<u64>; 4], singlestep: bool) -> DebugState {
        DebugState { debugger: Debugger { breakpoints: bps, singlestep }, ..DebugState::default() }
    }

    #[test]
    fn a_disabled_debugger_asks_for_nothing() {
        let mut dbg = KvmDebugGuest { enabled: 0, singlestep: 1, ..KvmDebugGuest::default() };
        dbg.breakpoints[2] = KvmBreakpoint { enabled: 1, padding: 0, address: 0x1234 };
        assert_eq!(Debugger::from_abi(&dbg), Debugger::default());
        dbg.enabled = 1;
        assert_eq!(Debugger::from_abi(&dbg), Debugger { breakpoints: [None, None, Some(0x1234), None], singlestep: true });
    }

    #[test]
    fn the_debuggers_breakpoints_win_over_the_guests() {
        let mut state = debugger([None, Some(0x2000), None, Some(0x3000)], false);
        state.regs.dr7 = 0x401;
        state.regs.db = [0x10, 0x20, 0x30, 0x40];
        let hw = hardware(&state);
        assert_eq!(hw, Hardware { dr7: 0x400 | 1 << 3 | 1 << 7, db: Some([0, 0x2000, 0, 0x3000]) });
        state.debugger = Debugger::default();
        assert_eq!(hardware(&state), Hardware { dr7: 0x401, db: Some([0x10, 0x20, 0x30, 0x40]) });
        state.regs.dr7 = 0x400 | DR7_GD;
        assert_eq!(hardware(&state), Hardware { dr7: 0x400, db: None }, "GD alone loads nothing, and never itself");
    }

    #[test]
    fn dr4_and_dr5_alias_dr6_and_dr7_unless_cr4_de() {
        assert_eq!(dr_rule(4, false, 0x400), DrRule::Access { dr: 6 });
        assert_eq!(dr_rule(5, false, 0x400), DrRule::Access { dr: 7 });
        assert_eq!(dr_rule(5, true, 0x400 | DR7_GD), DrRule::Ud, "#UD before general detect");
        assert_eq!(dr_rule(0, false, 0x400 | DR7_GD), DrRule::GeneralDetect);
    }

    #[test]
    fn dr6_and_dr7_keep_their_fixed_bits_and_refuse_high_ones() {
        let mut regs = DebugRegs::default();
        assert_eq!(dr_write(&mut regs, 6, 0), Some(()));
        assert_eq!(regs.dr6, DR6_FIXED_1);
        assert_eq!(dr_write(&mut regs, 6, u64::from(u32::MAX)), Some(()));
        assert_eq!(regs.dr6, 0xFFFF_EFFF);
        assert_eq!(dr_write(&mut regs, 7, 0xFFFF_FFFF), Some(()));
        assert_eq!(regs.dr7, 0xFFFF_2FFF);
        assert_eq!(dr_write(&mut regs, 7, 1 << 32), None);
        assert_eq!(dr_write(&mut regs, 3, u64::MAX), Some(()));
        assert_eq!(dr_read(&regs, 3), u64::MAX);
    }

    fn access(dr: u8, write: bool) -> DrAccess {
        DrAccess { dr, write, gpr: 0, insn_len: 3 }
    }

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
    fn general_detect_faults_once_and_clears_gd() {
        let mut ctx = FakeContext::default();
        ctx.debug.regs.dr7 = 0x400 | DR7_GD;
        handle_dr(&access(7, false), &mut ctx);
        assert_eq!((ctx.skipped, ctx.queued), (0, Some((1, None))));
        assert_eq!((ctx.debug.regs.dr6 & DR6_BD, ctx.debug.regs.dr7), (DR6_BD, 0x400));
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

    #[test]
    fn debug_exceptions_are_the_debuggers_only_for_its_own_causes() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        ctx.debug = debugger([Some(0x100), None, None, None], false);
        assert_eq!(handle_db(DR6_BS, &mut ctx, &mut run), Action::Resume, "the guest's own TF");
        assert_eq!(ctx.queued, Some((1, None)));
        assert_eq!(ctx.debug.regs.dr6, DR6_FIXED_1 | DR6_BS);
        ctx.queued = None;
        assert_eq!(handle_db(1, &mut ctx, &mut run), Action::ToUser);
        assert_eq!((run.exit_reason, ctx.queued), (crate::abi::KVM_EXIT_DEBUG, None));
        ctx.debug = debugger([None; 4], true);
        assert_eq!(handle_db(DR6_BS, &mut ctx, &mut run), Action::ToUser);
    }
}
