//@ stage 5
//! The VMCS fields rkvm uses, by their encodings (SDM Vol. 3C, Appendix B
//! "Field Encoding in VMCS"), and the bits of the control fields it sets
//! (SDM Vol. 3C, 25.6 to 25.8).
//!
//! An encoding's bits say what the field is (SDM Vol. 3C, 25.11.2 "VMREAD,
//! VMWRITE, and Encodings of VMCS Fields"): bits 14:13 its width (0 16-bit,
//! 1 64-bit, 2 32-bit, 3 natural width), bits 11:10 its type (0 control,
//! 1 read-only data, 2 guest state, 3 host state), bits 9:1 its index. The
//! eight guest segment registers are consecutive in each group, in the
//! order ES, CS, SS, DS, FS, GS, LDTR, TR, so that their fields are
//! `first + 2 * n`.

// ANCHOR: segment_fields
/// The guest segment registers in VMCS order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
    Ldtr = 6,
    Tr = 7,
}

impl Seg {
    pub const ALL: [Seg; 8] = [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs, Seg::Ldtr, Seg::Tr];

    pub const fn selector(self) -> u32 {
        GUEST_ES_SELECTOR + 2 * self as u32
    }
    pub const fn limit(self) -> u32 {
        GUEST_ES_LIMIT + 2 * self as u32
    }
    pub const fn access_rights(self) -> u32 {
        GUEST_ES_AR_BYTES + 2 * self as u32
    }
    pub const fn base(self) -> u32 {
        GUEST_ES_BASE + 2 * self as u32
    }
}
// ANCHOR_END: segment_fields

// 16-bit guest-state and host-state fields.
pub const GUEST_ES_SELECTOR: u32 = 0x0800;
pub const HOST_ES_SELECTOR: u32 = 0x0C00;
pub const HOST_CS_SELECTOR: u32 = 0x0C02;
pub const HOST_SS_SELECTOR: u32 = 0x0C04;
pub const HOST_DS_SELECTOR: u32 = 0x0C06;
pub const HOST_FS_SELECTOR: u32 = 0x0C08;
pub const HOST_GS_SELECTOR: u32 = 0x0C0A;
pub const HOST_TR_SELECTOR: u32 = 0x0C0C;

// 64-bit fields.
pub const VMCS_LINK_POINTER: u32 = 0x2800;
pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
//@ begin 8
pub const VM_EXIT_MSR_STORE_ADDR: u32 = 0x2006;
pub const VM_EXIT_MSR_LOAD_ADDR: u32 = 0x2008;
pub const VM_ENTRY_MSR_LOAD_ADDR: u32 = 0x200A;
pub const GUEST_IA32_EFER: u32 = 0x2806;
pub const HOST_IA32_EFER: u32 = 0x2C02;
//@ end
//@ begin 12
/// Added to the TSC for every `rdtsc` of the guest, with "use TSC
/// offsetting" (SDM Vol. 3C, 25.6.5 "Time-Stamp Counter Offset and
/// Multiplier").
pub const TSC_OFFSET: u32 = 0x2010;
//@ end

// 32-bit control fields.
pub const PIN_BASED_VM_EXEC_CONTROL: u32 = 0x4000;
pub const CPU_BASED_VM_EXEC_CONTROL: u32 = 0x4002;
pub const EXCEPTION_BITMAP: u32 = 0x4004;
pub const PAGE_FAULT_ERROR_CODE_MASK: u32 = 0x4006;
pub const PAGE_FAULT_ERROR_CODE_MATCH: u32 = 0x4008;
pub const CR3_TARGET_COUNT: u32 = 0x400A;
pub const VM_EXIT_CONTROLS: u32 = 0x400C;
pub const VM_EXIT_MSR_STORE_COUNT: u32 = 0x400E;
pub const VM_EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
pub const VM_ENTRY_CONTROLS: u32 = 0x4012;
pub const VM_ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
pub const VM_ENTRY_INTR_INFO_FIELD: u32 = 0x4016;
//@ begin 8
pub const VM_ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
pub const VM_ENTRY_INSTRUCTION_LEN: u32 = 0x401A;
//@ end

// 32-bit read-only data fields.
pub const VM_EXIT_REASON: u32 = 0x4402;
pub const VM_EXIT_INTR_INFO: u32 = 0x4404;
pub const VM_EXIT_INTR_ERROR_CODE: u32 = 0x4406;
//@ begin 8
pub const IDT_VECTORING_INFO_FIELD: u32 = 0x4408;
pub const IDT_VECTORING_ERROR_CODE: u32 = 0x440A;
//@ end
pub const VM_EXIT_INSTRUCTION_LEN: u32 = 0x440C;
pub const VMX_INSTRUCTION_INFO: u32 = 0x440E;

// 32-bit guest-state fields.
pub const GUEST_ES_LIMIT: u32 = 0x4800;
pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
pub const GUEST_ES_AR_BYTES: u32 = 0x4814;
pub const GUEST_INTERRUPTIBILITY_INFO: u32 = 0x4824;
pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
pub const GUEST_SYSENTER_CS: u32 = 0x482A;
pub const VMX_PREEMPTION_TIMER_VALUE: u32 = 0x482E;

// 32-bit host-state field.
pub const HOST_IA32_SYSENTER_CS: u32 = 0x4C00;

// Natural-width control fields.
pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
pub const CR0_READ_SHADOW: u32 = 0x6004;
pub const CR4_READ_SHADOW: u32 = 0x6006;

// Natural-width read-only data fields.
pub const EXIT_QUALIFICATION: u32 = 0x6400;
pub const GUEST_LINEAR_ADDRESS: u32 = 0x640A;

// Natural-width guest-state fields.
pub const GUEST_CR0: u32 = 0x6800;
pub const GUEST_CR3: u32 = 0x6802;
pub const GUEST_CR4: u32 = 0x6804;
pub const GUEST_ES_BASE: u32 = 0x6806;
pub const GUEST_GDTR_BASE: u32 = 0x6816;
pub const GUEST_IDTR_BASE: u32 = 0x6818;
pub const GUEST_DR7: u32 = 0x681A;
pub const GUEST_RSP: u32 = 0x681C;
pub const GUEST_RIP: u32 = 0x681E;
pub const GUEST_RFLAGS: u32 = 0x6820;
pub const GUEST_PENDING_DBG_EXCEPTIONS: u32 = 0x6822;
pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
pub const GUEST_SYSENTER_EIP: u32 = 0x6826;

// Natural-width host-state fields.
pub const HOST_CR0: u32 = 0x6C00;
pub const HOST_CR3: u32 = 0x6C02;
pub const HOST_CR4: u32 = 0x6C04;
pub const HOST_FS_BASE: u32 = 0x6C06;
pub const HOST_GS_BASE: u32 = 0x6C08;
pub const HOST_TR_BASE: u32 = 0x6C0A;
pub const HOST_GDTR_BASE: u32 = 0x6C0C;
pub const HOST_IDTR_BASE: u32 = 0x6C0E;
pub const HOST_IA32_SYSENTER_ESP: u32 = 0x6C10;
pub const HOST_IA32_SYSENTER_EIP: u32 = 0x6C12;
pub const HOST_RSP: u32 = 0x6C14;
pub const HOST_RIP: u32 = 0x6C16;

// ANCHOR: control_bits
/// Pin-based VM-execution controls (SDM Vol. 3C, 25.6.1, Table 25-5).
pub mod pin {
    /// Host interrupts cause VM exits instead of going through the
    /// guest's IDT.
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// Host NMIs cause VM exits.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// The VMX-preemption timer counts down while the guest runs and
    /// exits when it reaches zero.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based VM-execution controls (SDM Vol. 3C, 25.6.2,
/// Table 25-6).
pub mod cpu {
    //@ begin 12
    /// Exit as soon as the guest can take an external interrupt (SDM Vol.
    /// 3C, 26.7.5). Every VMX processor allows it; it is set only while
    /// the module waits for the guest's interrupt window.
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// The guest's `rdtsc` reads the host's TSC plus the TSC offset,
    /// without an exit (SDM Vol. 3C, 26.3 "Changes to Instruction
    /// Behavior in VMX Non-Root Operation", RDTSC).
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    //@ end
    pub const HLT_EXITING: u32 = 1 << 7;
    //@ begin 8
    /// `invlpg` exits: the shadow must drop its translation too.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    //@ end
    pub const MWAIT_EXITING: u32 = 1 << 10;
    //@ begin 8
    /// `rdpmc` exits: the host's performance counters are not the guest's.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    //@ end
    /// Every `mov cr3, reg` exits: the hardware CR3 is the module's.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// Every `mov reg, cr3` exits: the guest must see its own CR3.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// `mov` to and from the debug registers, which belong to the host.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Every `in`, `out`, `ins` and `outs` exits.
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    //@ begin 8
    /// With this control 0, every `rdmsr` and `wrmsr` exits (SDM Vol. 3C,
    /// 26.1.3): rkvm never sets it.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    //@ end
}

/// VM-exit controls (SDM Vol. 3C, 25.7.1, Table 25-13).
pub mod exit {
    /// The exit saves the guest's DR7 and IA32_DEBUGCTL into the VMCS.
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The host is 64-bit: the exit lands in IA-32e mode.
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    //@ begin 8
    /// The exit saves the guest's IA32_EFER into the VMCS.
    pub const SAVE_IA32_EFER: u32 = 1 << 20;
    /// The exit loads the host's IA32_EFER from the VMCS.
    pub const LOAD_IA32_EFER: u32 = 1 << 21;
    //@ end
}

/// VM-entry controls (SDM Vol. 3C, 25.8.1, Table 25-15).
pub mod entry {
    /// The entry loads the guest's DR7 and IA32_DEBUGCTL from the VMCS
    /// (SDM Vol. 3C, 27.3.2.1); without it they are not loaded at all.
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The guest runs in IA-32e mode (long mode); clear for 32-bit guests.
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    //@ begin 8
    /// The entry loads the guest's IA32_EFER from the VMCS.
    pub const LOAD_IA32_EFER: u32 = 1 << 15;
    //@ end
}
// ANCHOR_END: control_bits

#[cfg(test)]
mod tests {
    use super::*;

    /// The encodings the manual lists for the guest's CS and TR.
    #[test]
    fn segment_fields_follow_the_vmcs_order() {
        assert_eq!(Seg::Cs.selector(), 0x0802);
        assert_eq!(Seg::Tr.selector(), 0x080E);
        assert_eq!(Seg::Cs.limit(), 0x4802);
        assert_eq!(Seg::Tr.access_rights(), 0x4822);
        assert_eq!(Seg::Ldtr.base(), 0x6812);
        assert_eq!(Seg::Tr.base(), 0x6814);
    }

    /// Bits 14:13 of an encoding give its width; bits 11:10 its type.
    #[test]
    fn encodings_say_their_width_and_type() {
        let width = |f: u32| (f >> 13) & 3;
        let kind = |f: u32| (f >> 10) & 3;
        assert_eq!((width(HOST_TR_SELECTOR), kind(HOST_TR_SELECTOR)), (0, 3));
        assert_eq!((width(VMCS_LINK_POINTER), kind(VMCS_LINK_POINTER)), (1, 2));
        assert_eq!((width(VM_EXIT_REASON), kind(VM_EXIT_REASON)), (2, 1));
        assert_eq!((width(GUEST_RIP), kind(GUEST_RIP)), (3, 2));
        assert_eq!((width(HOST_RIP), kind(HOST_RIP)), (3, 3));
        assert_eq!((width(CR0_READ_SHADOW), kind(CR0_READ_SHADOW)), (3, 0));
    }
}
