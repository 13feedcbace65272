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

use crate::abi::KvmDebugGuest;

// ANCHOR: bits
/// DR6 after power-up, reset or INIT (SDM Vol. 3A, Table 10-1).
pub const DR6_RESET: u64 = 0xFFFF_0FF0;
/// DR7 after power-up, reset or INIT (SDM Vol. 3A, Table 10-1).
pub const DR7_RESET: u64 = 0x400;
/// DR6 B0-B3: breakpoint 0-3's condition was met.
pub const DR6_B: u64 = 0xF;
/// DR6.BD: the next instruction would have accessed a debug register
/// while DR7.GD was set.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: a single step (RFLAGS.TF).
pub const DR6_BS: u64 = 1 << 14;
/// DR6.BT: a task switch to a task whose TSS has its T flag set.
pub const DR6_BT: u64 = 1 << 15;
/// The DR6 flags in which the processor reports what caused a debug
/// exception (SDM Vol. 3B, 19.2.3).
pub const DR6_CAUSES: u64 = DR6_B | DR6_BD | DR6_BS | DR6_BT;
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
        DebugRegs { db: [0; 4], dr6: DR6_RESET, dr7: DR7_RESET }
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
        let hit = self.breakpoints.iter().enumerate().any(|(i, b)| b.is_some() && causes & 1 << i != 0);
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
        let on = debugger.breakpoints.iter().enumerate().filter(|(_, b)| b.is_some());
        let enables = on.fold(0, |dr7, (i, _)| dr7 | 2 << (2 * i));
        return Hardware { dr7: DR7_RESET | enables, db: Some(debugger.breakpoints.map(|b| b.unwrap_or(0))) };
    }
    let guest = &state.regs;
    if guest.dr7 & DR7_ENABLES != 0 {
        return Hardware { dr7: guest.dr7 & !DR7_GD, db: Some(guest.db) };
    }
    Hardware { dr7: DR7_RESET, db: None }
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
/// processor would refuse the value with a #GP.
pub fn dr_write(regs: &mut DebugRegs, dr: u8, value: u64) -> Option<()> {
    //@ exercise E12.2
    //@ instruction: Carry out a guest's `mov` to debug register `dr` (0
    //@+ to 3, 6 or 7; the aliases and general detect are dealt with
    //@+ before this) as the processor would. What must hold: a later read
    //@+ gives what the processor would give; a value the processor
    //@+ refuses changes nothing and returns `None` (the caller raises
    //@+ #GP); a write changes only the bits software may write, and every
    //@+ other bit of DR6 and DR7 reads as the manuals say it reads,
    //@+ whatever was written. Which bits those are, and which writes
    //@+ fault, is in SDM Vol. 3B, 19.2.3, 19.2.4 and 19.2.6, and Vol. 2B,
    //@+ "MOV—Move to/from Debug Registers" (APM Vol. 2, 13.1.1, agrees);
    //@+ the processor rkvm's guests see has neither RTM nor OS bus-lock
    //@+ detection. The tests in `e12_2` write every bit, as 1 and as 0.
    //@ hint: DR0-DR3 hold addresses: anything goes. For DR6 and DR7, go
    //@+ through Figure 19-1 bit by bit and sort each of the low 32 bits
    //@+ into one of three kinds: software writes it, it reads as 1, it
    //@+ reads as 0. The text of 19.2.3 and 19.2.4 says what becomes of a
    //@+ feature's bits on a processor without the feature.
    //@ hint: The #GP: in 64-bit mode the upper 32 bits of DR6 and DR7 must
    //@+ be written as 0 (19.2.6; outside 64-bit mode the caller has cut the
    //@+ value to 32 bits already). Software writes the flags and fields the
    //@+ figure names, except those of the missing features (RTM in both
    //@+ registers, BLD in DR6). Name the writable bits of each register as
    //@+ a constant, and compare the bits that read as 1 with the values
    //@+ after reset, `DR6_RESET` and `DR7_RESET`.
    //@ hint: `6 | 7 if value >> 32 != 0 => return None`; then DR6 keeps
    //@+ `value & DR6_CAUSES | DR6_RESET`, and DR7 `value & DR7_WRITABLE |
    //@+ DR7_RESET`, where `DR7_WRITABLE` is `DR7_ENABLES`, LE and GE (bits
    //@+ 9:8), `DR7_GD` and the R/W and LEN fields (bits 31:16): a bit
    //@+ software cannot write reads as it does after reset.
    // SDM Vol. 3B, 19.2.3: software writes DR6's cause flags; bits 4-11
    // and 16-31 read as 1 (BLD, bit 11, and RTM, bit 16, too, without
    // those features) and bit 12 as 0: the ones are those of `DR6_RESET`.
    // 19.2.4: software writes DR7's enables, LE and GE, GD and the R/W and
    // LEN fields; bit 10 reads as 1, bits 11 (RTM, without RTM), 12, 14
    // and 15 as 0: the one is `DR7_RESET`'s.
    const DR7_LE_GE: u64 = 3 << 8;
    const DR7_RW_LEN: u64 = 0xFFFF << 16;
    const DR7_WRITABLE: u64 = DR7_ENABLES | DR7_LE_GE | DR7_GD | DR7_RW_LEN;
    match dr {
        0..=3 => *regs.db.get_mut(usize::from(dr))? = value,
        // 19.2.6: a 1 in bits 63:32 of DR6 or DR7 is a #GP.
        6 | 7 if value >> 32 != 0 => return None,
        6 => regs.dr6 = value & DR6_CAUSES | DR6_RESET,
        7 => regs.dr7 = value & DR7_WRITABLE | DR7_RESET,
        _ => return None,
    }
    Some(())
    //@ end
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::KvmBreakpoint;

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

    mod e12_2 {
        use super::*;

        /// The low 32 bits of DR6 and DR7 as Figure 19-1 of SDM Vol. 3B
        /// sorts them, on a processor without RTM or OS bus-lock detection:
        /// the bits software writes, and the bits that read as 1 (every
        /// other bit reads as 0).
        const DR6_BITS: ([u32; 7], [u32; 24]) = (
            [0, 1, 2, 3, 13, 14, 15],
            [4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31],
        );
        const DR7_BITS: ([u32; 27], [u32; 1]) = (
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31],
            [10],
        );

        fn mask(bits: &[u32]) -> u64 {
            bits.iter().fold(0, |m, b| m | 1 << b)
        }

        /// What the processor reads back after a write of `value` to a
        /// register whose bits sort as `writable` and `ones`.
        fn read_back(value: u64, writable: &[u32], ones: &[u32]) -> u64 {
            value & mask(writable) | mask(ones)
        }

        #[test]
        fn a_write_of_0_or_of_all_ones_reads_back_as_the_processor_reads() {
            let mut regs = DebugRegs::default();
            for (dr, all, none) in [(6, 0xFFFF_EFFF, 0xFFFF_0FF0), (7, 0xFFFF_27FF, 0x400)] {
                assert_eq!(dr_write(&mut regs, dr, u64::from(u32::MAX)), Some(()));
                assert_eq!(dr_read(&regs, dr), all, "DR{dr} after all ones");
                assert_eq!(dr_write(&mut regs, dr, 0), Some(()));
                assert_eq!(dr_read(&regs, dr), none, "DR{dr} after 0: only the bits that read as 1");
            }
            assert_eq!(dr_write(&mut regs, 3, u64::MAX), Some(()));
            assert_eq!(dr_read(&regs, 3), u64::MAX);
        }

        #[test]
        fn every_bit_of_dr6_and_dr7_alone_as_1_and_as_0() {
            for bit in 0..32 {
                for value in [1 << bit, u64::from(u32::MAX) ^ 1 << bit] {
                    let mut regs = DebugRegs::default();
                    assert_eq!(dr_write(&mut regs, 6, value), Some(()));
                    let (writable, ones) = DR6_BITS;
                    assert_eq!(regs.dr6, read_back(value, &writable, &ones), "DR6 written with {value:#x}");
                    assert_eq!(dr_write(&mut regs, 7, value), Some(()));
                    let (writable, ones) = DR7_BITS;
                    assert_eq!(regs.dr7, read_back(value, &writable, &ones), "DR7 written with {value:#x}");
                }
            }
        }

        #[test]
        fn a_high_bit_of_dr6_or_dr7_faults_and_changes_nothing() {
            for dr in [6, 7] {
                let mut regs = DebugRegs::default();
                assert_eq!(dr_write(&mut regs, dr, 1 << 32 | 1), None, "DR{dr}");
                assert_eq!(regs, DebugRegs::default());
            }
            let mut regs = DebugRegs::default();
            assert_eq!(dr_write(&mut regs, 0, 1 << 40), Some(()), "DR0 takes 64 bits");
            assert_eq!(regs.db[0], 1 << 40);
        }
    }
}
