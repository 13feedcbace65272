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
    //@+ detection. The tests in `e12_2` write every bit, as 1 and as 0,
    //@+ to registers fresh from reset and to registers in use.
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

    /// What a `mov` to a debug register leaves, rule by rule. DR0-DR3 hold
    /// addresses. The low 32 bits of DR6 and DR7 are as SDM Vol. 3B,
    /// Figure 19-1 ("Debug Registers") draws them: fields that software
    /// writes, fields of features the processor may lack, and reserved
    /// bits. How each reads is in 19.2.3 (DR6) and 19.2.4 (DR7); which
    /// writes fault, in 19.2.6 and Vol. 2B, "MOV—Move to/from Debug
    /// Registers". The processor rkvm's guests see has neither RTM nor OS
    /// bus-lock detection. Every failure names the bit, as the figure
    /// does, and the section to read.
    mod e12_2 {
        use super::*;

        /// A field of Figure 19-1: its name there, its lowest bit and how
        /// many bits it has.
        struct Field {
            name: &'static str,
            low: u32,
            width: u32,
        }

        const fn field(name: &'static str, low: u32, width: u32) -> Field {
            Field { name, low, width }
        }

        /// DR6's flags, which the processor sets to report what caused a
        /// debug exception, and which the debug handler clears (19.2.3).
        const DR6_SOFTWARE: [Field; 7] = [
            field("B0", 0, 1),
            field("B1", 1, 1),
            field("B2", 2, 1),
            field("B3", 3, 1),
            field("BD", 13, 1),
            field("BS", 14, 1),
            field("BT", 15, 1),
        ];

        /// DR7's breakpoint enables, exact-breakpoint enables, general
        /// detect, and each breakpoint's R/W and LEN fields: what software
        /// sets up breakpoints with (19.2.4).
        const DR7_SOFTWARE: [Field; 19] = [
            field("L0", 0, 1),
            field("G0", 1, 1),
            field("L1", 2, 1),
            field("G1", 3, 1),
            field("L2", 4, 1),
            field("G2", 5, 1),
            field("L3", 6, 1),
            field("G3", 7, 1),
            field("LE", 8, 1),
            field("GE", 9, 1),
            field("GD", 13, 1),
            field("R/W0", 16, 2),
            field("LEN0", 18, 2),
            field("R/W1", 20, 2),
            field("LEN1", 22, 2),
            field("R/W2", 24, 2),
            field("LEN2", 26, 2),
            field("R/W3", 28, 2),
            field("LEN3", 30, 2),
        ];

        /// Fields the figure names for features rkvm's processor lacks:
        /// 19.2.3 and 19.2.4 say how their bits read on such a processor.
        const DR6_MISSING: [Field; 2] =
            [field("BLD, of OS bus-lock detection, which rkvm's processor lacks", 11, 1), field("RTM, which rkvm's processor lacks", 16, 1)];
        const DR7_MISSING: [Field; 1] = [field("RTM, which rkvm's processor lacks", 11, 1)];

        /// DR6 or DR7, as these tests see it.
        struct Register {
            dr: u8,
            software: &'static [Field],
            missing: &'static [Field],
            /// The value after power-up, reset or INIT (SDM Vol. 3A,
            /// Table 10-1).
            after_reset: u64,
            section: &'static str,
        }

        const DR6: Register =
            Register { dr: 6, software: &DR6_SOFTWARE, missing: &DR6_MISSING, after_reset: DR6_RESET, section: "19.2.3" };
        const DR7: Register =
            Register { dr: 7, software: &DR7_SOFTWARE, missing: &DR7_MISSING, after_reset: DR7_RESET, section: "19.2.4" };

        impl Register {
            fn field_of(fields: &[Field], bit: u32) -> Option<&Field> {
                fields.iter().find(|f| (f.low..f.low + f.width).contains(&bit))
            }

            /// Whether software writes bit `bit`.
            fn software_writes(&self, bit: u32) -> bool {
                Register::field_of(self.software, bit).is_some()
            }

            /// `DR7 bit 17 (LEN0)`, `DR6 bit 12 (reserved)`.
            fn bit(&self, bit: u32) -> String {
                let field = Register::field_of(self.software, bit).or(Register::field_of(self.missing, bit));
                let name = field.map_or("reserved", |f| f.name);
                format!("DR{} bit {bit} ({name})", self.dr)
            }

            fn read(&self, regs: &DebugRegs) -> u64 {
                if self.dr == 6 { regs.dr6 } else { regs.dr7 }
            }
        }

        /// The registers after reset, and in use: breakpoint addresses
        /// set, DR6 reporting breakpoint 0 and a single step, DR7 with
        /// breakpoint 0 on (L0).
        fn starts() -> [DebugRegs; 2] {
            let in_use = DebugRegs { db: [0x1000, 0x2000, 0x3000, 0x4000], dr6: DR6_RESET | DR6_BS | 1, dr7: DR7_RESET | 1 };
            [DebugRegs::default(), in_use]
        }

        /// Writes `value` to `reg`, starting from `start`, and returns what
        /// a read then gives; the write must be taken, and change no other
        /// register.
        fn write(reg: &Register, start: &DebugRegs, value: u64) -> u64 {
            let (mut regs, dr) = (*start, reg.dr);
            assert_eq!(dr_write(&mut regs, dr, value), Some(()), "DR{dr} written with {value:#x}: bits 63:32 are 0, so no #GP (19.2.6)");
            let read = dr_read(&regs, dr);
            let mut expected = *start;
            *(if dr == 6 { &mut expected.dr6 } else { &mut expected.dr7 }) = read;
            assert_eq!(regs, expected, "a write to DR{dr} changed another debug register");
            read
        }

        /// Each bit alone, as 1 among zeros and as 0 among ones: the
        /// value written, and the bit's value in it.
        fn alone(bit: u32) -> [(u64, u64); 2] {
            [(1 << bit, 1), (u64::from(u32::MAX) ^ 1 << bit, 0)]
        }

        #[test]
        fn dr0_to_dr3_hold_any_address() {
            for start in starts() {
                for dr in 0..4u8 {
                    for value in [u64::MAX, 1 << 63 | 0x1234, 0xFFFF_8000_0000_1000, 0] {
                        let mut regs = start;
                        assert_eq!(dr_write(&mut regs, dr, value), Some(()), "DR{dr} written with {value:#x}");
                        assert_eq!(dr_read(&regs, dr), value, "DR{dr} keeps all 64 bits (19.2.1)");
                        let mut expected = start;
                        expected.db[usize::from(dr)] = value;
                        assert_eq!(regs, expected, "a write to DR{dr} changed another debug register");
                    }
                }
            }
        }

        #[test]
        fn every_bit_software_writes_reads_back_as_written() {
            for reg in [DR6, DR7] {
                for start in starts() {
                    for bit in (0..32).filter(|&bit| reg.software_writes(bit)) {
                        for (value, written) in alone(bit) {
                            let read = write(&reg, &start, value) >> bit & 1;
                            let (what, section) = (reg.bit(bit), reg.section);
                            let why = format!("{what} written as {written} (in {value:#x}) reads as {read}: software writes it");
                            assert_eq!(read, written, "{why} (SDM Vol. 3B, {section})");
                        }
                    }
                }
            }
        }

        #[test]
        fn every_other_bit_reads_the_same_whatever_is_written() {
            // A bit software does not write is never changed by a write,
            // so it always reads as it did after reset.
            for reg in [DR6, DR7] {
                for start in starts() {
                    for bit in (0..32).filter(|&bit| !reg.software_writes(bit)) {
                        let fixed = reg.after_reset >> bit & 1;
                        for (value, written) in alone(bit) {
                            let read = write(&reg, &start, value) >> bit & 1;
                            let what = reg.bit(bit);
                            assert_eq!(
                                read, fixed,
                                "{what} written as {written} (in {value:#x}) reads as {read}, where it reads as {fixed} whatever is written \
                                 (SDM Vol. 3B, {} and Figure 19-1; Vol. 3A, Table 10-1 for the value after reset)",
                                reg.section
                            );
                        }
                    }
                }
            }
        }

        #[test]
        fn a_1_in_bits_63_32_of_dr6_or_dr7_faults_and_changes_nothing() {
            for reg in [DR6, DR7] {
                for start in starts() {
                    for bit in 32..64 {
                        // The low half differs from what the register
                        // holds in every bit, so a write shows.
                        let value = 1 << bit | !reg.read(&start) & 0xFFFF_FFFF;
                        let (mut regs, dr) = (start, reg.dr);
                        let why = "in 64-bit mode is a #GP (SDM Vol. 3B, 19.2.6)";
                        assert_eq!(dr_write(&mut regs, dr, value), None, "DR{dr} written with {value:#x} {why}");
                        assert_eq!(regs, start, "a refused write of {value:#x} to DR{dr} must leave every debug register as it was");
                    }
                }
            }
        }

        /// Writes a kernel makes: a #DB handler clears DR6 once it has read
        /// it, and a debugger sets a watchpoint and then takes it away.
        #[test]
        fn a_debuggers_writes_read_back_as_on_the_processor() {
            let mut regs = starts()[1];
            assert_eq!(dr_write(&mut regs, 6, 0), Some(()));
            assert_eq!(dr_read(&regs, 6), DR6_RESET, "DR6 cleared with 0 reads as after reset, not 0 (19.2.3)");
            // Breakpoint 1 on (L1), for data writes (R/W1 = 01) of 4 bytes
            // (LEN1 = 11): SDM Vol. 3B, 19.2.4.
            let watch = 1 << 2 | 0b01 << 20 | 0b11 << 22;
            assert_eq!(dr_write(&mut regs, 7, watch), Some(()));
            assert_eq!(dr_read(&regs, 7), DR7_RESET | watch, "DR7 keeps the breakpoint's enable, R/W and LEN, over its value after reset");
            assert_eq!(dr_write(&mut regs, 7, 0), Some(()));
            assert_eq!(dr_read(&regs, 7), DR7_RESET, "DR7 with every breakpoint off reads as after reset");
        }
    }
}
