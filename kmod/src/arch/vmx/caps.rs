//@ stage 4
//! What this processor's VMX can do: CPUID's VMX bit, the
//! IA32_FEATURE_CONTROL MSR that firmware uses to allow or forbid VMX, and
//! the capability MSRs (SDM Vol. 3C, Appendix A "VMX Capability Reporting
//! Facility").
//!
//! The MSRs are read through the [`Msrs`] trait, so the decisions made on
//! their values run as host unit tests with made-up values.

use crate::arch::x86::rdmsr;

/// Reads model-specific registers. The kernel reads the hardware's; tests
/// give values of their own.
pub trait Msrs {
    fn read(&self, msr: u32) -> u64;
}

// ANCHOR: msr_numbers
/// IA32_FEATURE_CONTROL: bit 0 locks the MSR until reset, bit 2 allows
/// VMXON outside SMX operation (SDM Vol. 3C, 24.7 "Enabling and Entering
/// VMX Operation").
pub use x86::msr::IA32_FEATURE_CONTROL;
pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
pub const FEATURE_CONTROL_VMXON_OUTSIDE_SMX: u64 = 1 << 2;

/// The capability MSRs (SDM Vol. 3C, Appendix A; Vol. 4, Table 2-2),
/// 0x480 to 0x490, as the `x86` crate numbers them.
pub use x86::msr::{
    IA32_VMX_BASIC, IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1, IA32_VMX_CR4_FIXED0, IA32_VMX_CR4_FIXED1,
    IA32_VMX_ENTRY_CTLS, IA32_VMX_EXIT_CTLS, IA32_VMX_MISC, IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS,
    IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS,
};
// ANCHOR_END: msr_numbers

/// The CPU's own MSRs.
pub struct HardwareMsrs;

impl Msrs for HardwareMsrs {
    fn read(&self, msr: u32) -> u64 {
        // SAFETY: only the MSRs above are read, and only after CPUID said
        // the processor has VMX, which makes them exist (SDM Vol. 3C, A.1).
        unsafe { rdmsr(msr) }
    }
}

/// CPUID.1:ECX.VMX[bit 5]: "If CPUID.1:ECX.VMX[bit 5] = 1, then VMX
/// operation is supported." (SDM Vol. 3C, 24.6 "Discovering Support for VMX")
pub fn cpu_has_vmx() -> bool {
    let cpuid = raw_cpuid::CpuId::new();
    cpuid.get_feature_info().is_some_and(|f| f.has_vmx())
}

// ANCHOR: feature_control
/// Why firmware's IA32_FEATURE_CONTROL forbids VMX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxDisabledByFirmware;

/// What to do with IA32_FEATURE_CONTROL, whose value is `value`, before
/// VMXON (SDM Vol. 3C, 24.7): `Ok(None)` if nothing, `Ok(Some(new))` if
/// the module must first write `new` to the MSR, and an error if only the
/// firmware could allow VMX.
pub fn feature_control_update(value: u64) -> Result<Option<u64>, VmxDisabledByFirmware> {
    //@ exercise E4.2
    //@ instruction: Decide what the module must do with
    //@+ IA32_FEATURE_CONTROL, whose value is `value`, before it runs VMXON
    //@+ outside SMX operation, as a kernel does. What must hold: once the
    //@+ caller has done what you return, VMXON raises no #GP because of
    //@+ this MSR; the module never writes the MSR when the write would
    //@+ raise #GP; a write changes no bit the module does not need to
    //@+ change; and `Err` only when nothing the module can do would
    //@+ allow VMXON. The rules are in Intel SDM Vol. 3C, 24.7 "Enabling
    //@+ and Entering VMX Operation" (the MSR's bits 0 to 2), and the MSR's
    //@+ entry in Vol. 4, Table 2-2. The `e4_2` tests check these four
    //@+ properties on random values.
    //@ hint: Two bits decide everything: the lock (bit 0) and "enable VMX
    //@+ outside SMX operation" (bit 2). For each of their four
    //@+ combinations, ask: would VMXON fault now, and may the module
    //@+ still write the MSR?
    //@ hint: A locked MSR cannot be written until the next reset: with
    //@+ bit 2 set VMXON is allowed, without it the firmware said no
    //@+ (bit 1 alone allows VMX only inside SMX). An unlocked MSR makes
    //@+ VMXON fault, so it must be written, and locked in the same write.
    //@ hint: Unlocked: `Ok(Some(value | FEATURE_CONTROL_LOCKED |
    //@+ FEATURE_CONTROL_VMXON_OUTSIDE_SMX))`; locked without bit 2:
    //@+ `Err(VmxDisabledByFirmware)`; otherwise `Ok(None)`.
    let wanted = FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMXON_OUTSIDE_SMX;
    if value & FEATURE_CONTROL_LOCKED == 0 {
        Ok(Some(value | wanted))
    } else if value & FEATURE_CONTROL_VMXON_OUTSIDE_SMX == 0 {
        Err(VmxDisabledByFirmware)
    } else {
        Ok(None)
    }
    //@ end
}
// ANCHOR_END: feature_control

// ANCHOR: vmx_basic
/// IA32_VMX_BASIC, decoded (SDM Vol. 3C, A.1 "Basic VMX Information").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic {
    /// Bits 30:0: the VMCS revision identifier, written at the start of
    /// the VMXON region and of every VMCS region.
    pub revision_id: u32,
    /// Bits 44:32: the bytes of a VMXON or VMCS region, at most 4096.
    pub region_size: u32,
    /// Bits 53:50: the memory type the processor uses for the VMCS; 6 is
    /// write-back.
    pub memory_type: u8,
    /// Bit 54: VM exits due to `INS`/`OUTS` give instruction information.
    pub ins_outs_info: bool,
    /// Bit 55: the TRUE_* capability MSRs exist, and may allow controls
    /// of the "default1" class to be 0 (SDM Vol. 3C, A.2).
    pub true_controls: bool,
}

/// The memory type "write back" (SDM Vol. 3C, A.1).
pub const MEMORY_TYPE_WB: u8 = 6;

impl VmxBasic {
    /// Decodes the MSR's value.
    pub fn from_msr(value: u64) -> VmxBasic {
        //@ exercise E4.3
        //@ instruction: Decode IA32_VMX_BASIC into the fields of
        //@+ `VmxBasic`, each as wide as Intel SDM Vol. 3C, A.1 "Basic VMX
        //@+ Information" makes it: no bit of a neighbour may leak in. A
        //@+ quick one, for the habit of reading a layout from the manual;
        //@+ the `e4_3` tests use values built to catch a field cut too wide.
        //@ hint: A.1 lists the bits of each field; the doc comments of
        //@+ `VmxBasic` repeat them. Bit 31 belongs to no field.
        //@ hint: A field of n bits at position p is `(value >> p) & ((1 <<
        //@+ n) - 1)`: the region size is `(value >> 32) & 0x1FFF`.
        VmxBasic {
            revision_id: (value & 0x7FFF_FFFF) as u32,
            region_size: ((value >> 32) & 0x1FFF) as u32,
            memory_type: ((value >> 50) & 0xF) as u8,
            ins_outs_info: value & 1 << 54 != 0,
            true_controls: value & 1 << 55 != 0,
        }
        //@ end
    }
}
// ANCHOR_END: vmx_basic

/// A reason the capability MSRs rule this processor out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// The VMCS region is larger than a page.
    RegionSize(u32),
    /// The VMCS memory type is not write-back.
    MemoryType(u8),
}

impl VmxBasic {
    /// rkvm allocates one page per VMCS and expects write-back memory, as
    /// every processor with VMX has offered.
    pub fn check(&self) -> Result<(), Unsupported> {
        if self.region_size == 0 || self.region_size > 4096 {
            return Err(Unsupported::RegionSize(self.region_size));
        }
        if self.memory_type != MEMORY_TYPE_WB {
            return Err(Unsupported::MemoryType(self.memory_type));
        }
        Ok(())
    }
}

// ANCHOR: fixed_bits
/// Checks `value` (CR0 or CR4) against the VMX fixed bits: "If bit X is 1
/// in IA32_VMX_CR0_FIXED0, then that bit of CR0 is fixed to 1 in VMX
/// operation. Similarly, if bit X is 0 in IA32_VMX_CR0_FIXED1, then that
/// bit of CR0 is fixed to 0 in VMX operation." (SDM Vol. 3C, A.7; A.8 says
/// the same of CR4.) Returns the bits that are wrong.
pub fn fixed_bits_violations(value: u64, fixed0: u64, fixed1: u64) -> u64 {
    (fixed0 & !value) | (value & !fixed1)
}
// ANCHOR_END: fixed_bits


//@ begin 5
// ANCHOR: adjust_controls
/// Fits a control field to what the processor allows, as the capability
/// MSR for that field, `msr`, reports it (SDM Vol. 3C, A.3.1). Returns the
/// field with every `required` bit, the `optional` bits the processor
/// allows, and the bits it forces to 1; or, as the error, the required
/// bits it cannot set.
pub fn adjust_controls(required: u32, optional: u32, msr: u64) -> Result<u32, u32> {
    //@ exercise E5.1
    //@ instruction: Fit a VM-execution, VM-exit or VM-entry control field
    //@+ to the processor. What must hold: VM entry accepts the field you
    //@+ return (Intel SDM Vol. 3C, 27.2.1 checks each control against its
    //@+ capability MSR), it holds every `required` bit and every
    //@+ `optional` bit the processor allows, and no other bit unless the
    //@+ processor insists on it. If a required bit cannot be 1, return all
    //@+ such bits as the error. How the 64 bits of `msr` say which control
    //@+ may be 0 and which may be 1 is in Appendix A.3.1
    //@+ "Pin-Based VM-Execution Controls", which the other control fields'
    //@+ sections (A.3.2 to A.5) refer to. The `e5_1` tests fit random
    //@+ fields against random MSRs.
    //@ hint: Each control bit X has two bits in the MSR: one says whether
    //@+ X may be 0, the other whether X may be 1. Read A.3.1 slowly: the
    //@+ low half lists the "allowed 0-settings" in a way that surprises.
    //@ hint: A bit set in the low half (bits 31:0) means the control may
    //@+ NOT be 0: it must be 1. A bit set in the high half (bits 63:32)
    //@+ means the control may be 1. So `msr as u32` is what must be 1 and
    //@+ `(msr >> 32) as u32` what may be 1.
    //@ hint: The error is `required & !may_be_one`, if nonzero; the field
    //@+ is `((required | optional) & may_be_one) | must_be_one`.
    let must_be_one = msr as u32;
    let may_be_one = (msr >> 32) as u32;
    let missing = required & !may_be_one;
    if missing != 0 {
        return Err(missing);
    }
    Ok(((required | optional) & may_be_one) | must_be_one)
    //@ end
}
// ANCHOR_END: adjust_controls

// ANCHOR: control_msrs
/// The capability MSR that governs each control field. With
/// IA32_VMX_BASIC bit 55 set, the TRUE_* MSRs report the real allowed
/// 0-settings of the "default1" controls (SDM Vol. 3C, A.2 "Reserved
/// Controls and Default Settings"); the others report them as fixed to 1.
pub fn control_msrs(true_controls: bool) -> [u32; 4] {
    if true_controls {
        [IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_ENTRY_CTLS]
    } else {
        [IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS, IA32_VMX_EXIT_CTLS, IA32_VMX_ENTRY_CTLS]
    }
}

/// The four control fields rkvm runs its guests with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub cpu: u32,
    pub exit: u32,
    pub entry: u32,
}

/// A control field lacks bits rkvm cannot do without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingControls {
    /// 0 pin-based, 1 processor-based, 2 VM-exit, 3 VM-entry.
    pub field: usize,
    pub bits: u32,
}

impl Controls {
    /// The controls of every rkvm guest (see `vcpu.rs` for why each bit),
    /// fitted to this processor.
    pub fn for_processor(msrs: &dyn Msrs, true_controls: bool) -> Result<Controls, MissingControls> {
        use super::fields::{cpu, entry, exit, pin};
        let [pin_msr, cpu_msr, exit_msr, entry_msr] = control_msrs(true_controls).map(|m| msrs.read(m));
        let fit = |field, required, optional, msr| {
            adjust_controls(required, optional, msr).map_err(|bits| MissingControls { field, bits })
        };
        let cpu_required =
            cpu::HLT_EXITING | cpu::CR3_LOAD_EXITING | cpu::CR3_STORE_EXITING | cpu::UNCONDITIONAL_IO_EXITING | cpu::MOV_DR_EXITING;
        // The guest's DR7 and IA32_DEBUGCTL (0x400 and 0) are loaded at
        // each entry only with "load debug controls" (SDM Vol. 3C,
        // 27.3.2.1). Without the TRUE MSRs that control is a default1 bit,
        // always on; with them (IA32_VMX_BASIC bit 55) it may be 0, and
        // then the guest would run with the host's DR7 and DEBUGCTL: it is
        // asked for, with its twin "save debug controls" on exits.
        let exit_optional = exit::SAVE_DEBUG_CONTROLS;
        let entry_optional = entry::LOAD_DEBUG_CONTROLS;
        //@ begin 8
        // Stage 08: `invlpg` exits for the shadow, and the guest's EFER is
        // loaded at each entry and the host's at each exit where the
        // processor can (else `vcpu.rs` uses the MSR-load lists).
        let cpu_required = cpu_required | cpu::INVLPG_EXITING | cpu::RDPMC_EXITING;
        let exit_optional = exit_optional | exit::SAVE_IA32_EFER | exit::LOAD_IA32_EFER;
        let entry_optional = entry_optional | entry::LOAD_IA32_EFER;
        //@ end
        //@ begin 12
        // Stage 12: the guest's TSC is the host's plus an offset, which
        // its `rdtsc` reads without an exit (every VMX processor offers
        // it; Linux's KVM requires it too).
        let cpu_required = cpu_required | cpu::USE_TSC_OFFSETTING;
        //@ end
        Ok(Controls {
            pin: fit(0, pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING, pin::PREEMPTION_TIMER, pin_msr)?,
            cpu: fit(1, cpu_required, cpu::MWAIT_EXITING | cpu::MONITOR_EXITING, cpu_msr)?,
            exit: fit(2, exit::HOST_ADDRESS_SPACE_SIZE, exit_optional, exit_msr)?,
            entry: fit(3, 0, entry_optional, entry_msr)?,
        })
    }
}
// ANCHOR_END: control_msrs
//@ end

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_msr_numbers_are_the_manuals() {
        assert_eq!(IA32_FEATURE_CONTROL, 0x3A);
        assert_eq!((IA32_VMX_BASIC, IA32_VMX_MISC, IA32_VMX_CR0_FIXED0, IA32_VMX_CR4_FIXED1), (0x480, 0x485, 0x486, 0x489));
        assert_eq!((IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS, IA32_VMX_EXIT_CTLS, IA32_VMX_ENTRY_CTLS), (0x481, 0x482, 0x483, 0x484));
        assert_eq!(
            (IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_ENTRY_CTLS),
            (0x48D, 0x48E, 0x48F, 0x490)
        );
    }

    /// An IA32_VMX_BASIC like a Haswell's: revision 1, write-back,
    /// 4096 bytes, TRUE controls, INS/OUTS information.
    pub const HASWELL_BASIC: u64 = 0x00DA_1000_0000_0001;

    #[test]
    fn regions_must_fit_a_page_and_be_write_back() {
        let good = VmxBasic { revision_id: 1, region_size: 4096, memory_type: 6, ins_outs_info: true, true_controls: true };
        assert_eq!(good.check(), Ok(()));
        assert_eq!(VmxBasic { region_size: 8192, ..good }.check(), Err(Unsupported::RegionSize(8192)));
        assert_eq!(VmxBasic { memory_type: 0, ..good }.check(), Err(Unsupported::MemoryType(0)));
    }

    #[test]
    fn fixed_bits_name_the_offending_bits() {
        // CR0 with PE, NE and PG (what VMX requires, FIXED0 = 0x80000021).
        assert_eq!(fixed_bits_violations(0x8005_0033, 0x8000_0021, 0xFFFF_FFFF), 0);
        assert_eq!(fixed_bits_violations(0x0005_0033, 0x8000_0021, 0xFFFF_FFFF), 0x8000_0000, "PG missing");
        // CR4 without VMXE (FIXED0 = 0x2000), and a bit FIXED1 forbids.
        assert_eq!(fixed_bits_violations(0x0000_06F0, 0x2000, 0x3767FF), 0x2000);
        assert_eq!(fixed_bits_violations(0x0040_26F0, 0x2000, 0x3767FF), 0x40_0000);
    }

    mod e4_2 {
        use super::super::*;

        #[test]
        fn locked_with_vmx_allowed_needs_nothing() {
            assert_eq!(feature_control_update(0x5), Ok(None));
            assert_eq!(feature_control_update(0x7), Ok(None));
            assert_eq!(feature_control_update(0x1_0005), Ok(None));
        }

        #[test]
        fn locked_without_vmx_is_the_firmware_saying_no() {
            assert_eq!(feature_control_update(0x1), Err(VmxDisabledByFirmware));
            assert_eq!(feature_control_update(0x3), Err(VmxDisabledByFirmware), "only inside SMX");
        }

        #[test]
        fn unlocked_is_allowed_and_locked_keeping_other_bits() {
            assert_eq!(feature_control_update(0x0), Ok(Some(0x5)));
            assert_eq!(feature_control_update(0x2), Ok(Some(0x7)));
            assert_eq!(feature_control_update(0x10_0000), Ok(Some(0x10_0005)));
        }

        /// What the processor does with the MSR, from SDM Vol. 3C, 24.7:
        /// whether VMXON outside SMX raises #GP, and whether WRMSR does.
        fn vmxon_faults(msr: u64) -> bool {
            msr & 1 == 0 || msr >> 2 & 1 == 0
        }

        fn wrmsr_faults(msr: u64) -> bool {
            msr & 1 == 1
        }

        #[test]
        fn random_values_meet_the_four_properties() {
            let mut rng = crate::test_rng::Rng::new(0xE42);
            for _ in 0..10_000 {
                let value = rng.next() >> rng.below(64);
                match feature_control_update(value) {
                    Ok(None) => assert!(!vmxon_faults(value), "{value:#x}: VMXON would fault"),
                    Ok(Some(new)) => {
                        assert!(!wrmsr_faults(value), "{value:#x}: the write would fault");
                        assert!(!vmxon_faults(new), "{value:#x}: VMXON would fault after writing {new:#x}");
                        let needed = if value & 4 == 0 { 5 } else { 1 };
                        assert_eq!(new ^ value, needed, "{value:#x}: the write changed more than it needs to");
                    }
                    Err(VmxDisabledByFirmware) => {
                        assert!(wrmsr_faults(value) && vmxon_faults(value), "{value:#x}: VMX could be allowed");
                    }
                }
            }
        }
    }

    mod e4_3 {
        use super::super::*;
        use super::HASWELL_BASIC;

        #[test]
        fn a_haswell_value_decodes() {
            let basic = VmxBasic::from_msr(HASWELL_BASIC);
            let expected = VmxBasic { revision_id: 1, region_size: 4096, memory_type: 6, ins_outs_info: true, true_controls: true };
            assert_eq!(basic, expected);
        }

        #[test]
        fn fields_do_not_bleed_into_each_other() {
            let basic = VmxBasic::from_msr(0xFFC3_0FFF_FFFF_FFFF);
            assert_eq!(basic.revision_id, 0x7FFF_FFFF, "bit 31 is not part of the identifier");
            assert_eq!(basic.region_size, 0x0FFF);
            assert_eq!(basic.memory_type, 0);
            assert!(basic.ins_outs_info && basic.true_controls);
            let basic = VmxBasic::from_msr(0x003C_1000_0000_0000);
            assert_eq!((basic.region_size, basic.memory_type), (0x1000, 0xF));
            assert!(!basic.ins_outs_info && !basic.true_controls);
        }

        /// SDM Vol. 3C, A.1: bit 31 is always 0, bits 47:45 and 63:56 are
        /// reserved, and bits 48 and 49 are flags that `VmxBasic` does not
        /// keep. Whatever they hold, every field decodes the same.
        #[test]
        fn the_bits_between_and_above_the_fields_change_nothing() {
            let others = 1 << 31 | 0b111 << 45 | 0b11 << 48 | 0xFF << 56;
            for value in [HASWELL_BASIC, 0x003C_1000_0000_0000, 0] {
                assert_eq!(VmxBasic::from_msr(value | others), VmxBasic::from_msr(value & !others), "{value:#x}");
            }
        }

        /// SDM Vol. 3C, A.1: the INS/OUTS information (bit 54) and the TRUE
        /// capability MSRs (bit 55) are reported apart; a processor may
        /// offer either without the other.
        #[test]
        fn each_flag_is_read_from_its_own_bit() {
            let ins_outs_only = VmxBasic::from_msr(HASWELL_BASIC & !(1 << 55));
            assert!(ins_outs_only.ins_outs_info && !ins_outs_only.true_controls, "{ins_outs_only:?}");
            let true_controls_only = VmxBasic::from_msr(HASWELL_BASIC & !(1 << 54));
            assert!(!true_controls_only.ins_outs_info && true_controls_only.true_controls, "{true_controls_only:?}");
        }
    }

    //@ begin 5
    mod e5_1 {
        use super::super::*;

        /// Capability MSRs as a Haswell reports them (the TRUE ones).
        struct HaswellMsrs;

        impl Msrs for HaswellMsrs {
            fn read(&self, msr: u32) -> u64 {
                match msr {
                    IA32_VMX_TRUE_PINBASED_CTLS => 0x0000_007F_0000_0016,
                    IA32_VMX_TRUE_PROCBASED_CTLS => 0xFFF9_FFFE_0400_6172,
                    IA32_VMX_TRUE_EXIT_CTLS => 0x007F_FFFF_0003_6DFB,
                    IA32_VMX_TRUE_ENTRY_CTLS => 0x0000_FFFF_0000_11FB,
                    _ => 0,
                }
            }
        }

        #[test]
        fn rkvm_controls_fit_a_haswell() {
            let c = Controls::for_processor(&HaswellMsrs, true).expect("a Haswell has everything");
            assert_eq!(c.pin, 0x16 | 0x1 | 0x8 | 0x40, "with the preemption timer");
            assert_eq!(c.cpu & 0x0400_6172, 0x0400_6172, "the default1 bits stay set");
            assert_eq!(c.cpu & (1 << 7 | 1 << 15 | 1 << 16 | 1 << 24), 1 << 7 | 1 << 15 | 1 << 16 | 1 << 24);
            assert_eq!(c.exit & (1 << 9), 1 << 9);
            assert_eq!(c.entry & (1 << 9), 0, "32-bit guests");
            assert_eq!(c.entry & (1 << 2), 1 << 2, "load debug controls, which a Haswell lets be 0");
            assert_eq!(c.exit & (1 << 2), 1 << 2, "save debug controls");
        }

        #[test]
        fn without_true_msrs_debug_controls_are_forced_on() {
            struct Old;
            impl Msrs for Old {
                fn read(&self, msr: u32) -> u64 {
                    match msr {
                        IA32_VMX_PINBASED_CTLS => 0x0000_007F_0000_0016,
                        IA32_VMX_PROCBASED_CTLS => 0xFFF9_FFFE_0401_E172,
                        // Bit 2 may not be 0 in the non-TRUE MSRs.
                        IA32_VMX_EXIT_CTLS => 0x007F_FFFF_0003_6DFF,
                        IA32_VMX_ENTRY_CTLS => 0x0000_FFFF_0000_11FF,
                        _ => 0,
                    }
                }
            }
            let c = Controls::for_processor(&Old, false).expect("controls");
            assert_eq!((c.entry & 1 << 2, c.exit & 1 << 2), (1 << 2, 1 << 2));
        }

        //@ begin 8
        #[test]
        fn stage_8_exits_on_invlpg_and_every_msr_and_loads_efer() {
            let c = Controls::for_processor(&HaswellMsrs, true).expect("a Haswell has everything");
            assert_eq!(c.cpu & (1 << 9), 1 << 9, "INVLPG exiting");
            assert_eq!(c.cpu & (1 << 28), 0, "no MSR bitmaps: every rdmsr and wrmsr exits");
            assert_eq!(c.entry & (1 << 15), 1 << 15, "load IA32_EFER");
            assert_eq!(c.exit & (3 << 20), 3 << 20, "save and load IA32_EFER");
        }

        //@ end
        //@ begin 12
        #[test]
        fn stage_12_offsets_the_tsc_and_lets_rdtsc_run() {
            let c = Controls::for_processor(&HaswellMsrs, true).expect("a Haswell has everything");
            assert_eq!(c.cpu & (1 << 3), 1 << 3, "use TSC offsetting");
            assert_eq!(c.cpu & (1 << 12), 0, "no RDTSC exiting");
        }

        //@ end
        #[test]
        fn a_processor_without_a_required_control_is_named() {
            struct NoHlt;
            impl Msrs for NoHlt {
                fn read(&self, msr: u32) -> u64 {
                    let value = HaswellMsrs.read(msr);
                    if msr == IA32_VMX_TRUE_PROCBASED_CTLS { value & !(1u64 << (32 + 7)) } else { value }
                }
            }
            assert_eq!(Controls::for_processor(&NoHlt, true), Err(MissingControls { field: 1, bits: 1 << 7 }));
        }

        /// The rule bit by bit: a control is set when the processor insists
        /// (it may not be 0), or when rkvm wants it and it may be 1.
        #[test]
        fn random_fields_fit_random_msrs() {
            let mut rng = crate::test_rng::Rng::new(0xE51);
            for _ in 0..10_000 {
                let may_be_one = rng.next() as u32 | rng.next() as u32;
                let may_not_be_zero = rng.next() as u32 & rng.next() as u32 & may_be_one;
                let msr = u64::from(may_be_one) << 32 | u64::from(may_not_be_zero);
                let (required, optional) = (rng.next() as u32 & rng.next() as u32, rng.next() as u32);
                let (mut field, mut missing) = (0u32, 0u32);
                for x in 0..32 {
                    let bit = 1u32 << x;
                    let (may_be_0, may_be_1) = (msr & 1 << x == 0, msr & 1 << (32 + x) != 0);
                    if required & bit != 0 && !may_be_1 {
                        missing |= bit;
                    }
                    if !may_be_0 || (required | optional) & bit != 0 && may_be_1 {
                        field |= bit;
                    }
                }
                let expected = if missing == 0 { Ok(field) } else { Err(missing) };
                assert_eq!(adjust_controls(required, optional, msr), expected, "{required:#x} {optional:#x} {msr:#x}");
            }
        }

        #[test]
        fn required_and_forced_bits_are_set() {
            // Bits 1, 2 and 4 must be 1; bits 0 to 7 may be 1.
            let msr = 0x0000_00FF_0000_0016;
            assert_eq!(adjust_controls(0x1, 0, msr), Ok(0x17));
            assert_eq!(adjust_controls(0x0, 0, msr), Ok(0x16));
        }

        #[test]
        fn optional_bits_are_dropped_when_not_allowed() {
            let msr = 0x0000_000F_0000_0000;
            assert_eq!(adjust_controls(0x1, 0x30, msr), Ok(0x1));
            assert_eq!(adjust_controls(0x1, 0x3, msr), Ok(0x3));
        }

        #[test]
        fn required_bits_that_may_not_be_one_are_the_error() {
            let msr = 0x0000_000F_0000_0001;
            assert_eq!(adjust_controls(0x31, 0, msr), Err(0x30));
        }
    }
    //@ end
}
