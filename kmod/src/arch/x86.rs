//@ stage 4
//! The privileged instructions the backends (VMX, and SVM from stage 07)
//! need besides their own extension's, `rdmsr` and `wrmsr` (and from
//! stage 05 the moves to and from DR7), each once, from the `x86` crate,
//! with the safety contract the module holds its callers to. MSR numbers are the crate's too (`x86::msr`:
//! IA32_EFER, IA32_FEATURE_CONTROL, IA32_VMX_*, IA32_DEBUGCTL, ...);
//! a backend defines only those the crate does not name.
//!
//! On the host (unit tests) the instructions would fault at CPL 3, so the
//! same functions are fakes: every MSR reads as 0 and DR7 as its reset
//! value, 0x400, and writes go nowhere. Tests decide on MSR values through
//! closures or traits of their own (`svm::check`, `vmx::caps::Msrs`), never
//! through these.
//!
//! What stays hand-written, and why:
//!
//! - The VMX instructions (`vmx/insn.rs`): their outcome is read from CF
//!   and ZF by `setc` and `setz` in the instruction's own `asm!` block,
//!   and decoded by exercise E4.1, CF first, into an error that carries
//!   the VM-instruction error number. The crate's wrappers read RFLAGS in
//!   a second `asm!` block, which the compiler is free to separate from
//!   the instruction, test ZF before CF, and give no error number.
//! - The entry and exit code (`vmx/entry.rs` from stage 05,
//!   `svm/insn.rs` from stage 07), and `clgi`, `stgi` and `vmsave`: one
//!   `asm!` each, written for the register layout of
//!   [`crate::regs::Reg`]; the crate has no SVM wrappers.
//! - The reads of CR0 and DR6 (`vmx/mod.rs`, `vmx/host.rs`): the crate's
//!   `cr0()`, `cr4()` and `dr6()` keep only the bits their types name
//!   (`from_bits_truncate`), and the VMCS's host CR0 and the DR6 the
//!   module puts back must be the register exactly. CR4 comes from the
//!   kernel (`kernel::cpu::read_cr4`), which keeps its own copy.

#[cfg(target_os = "none")]
mod imp {
    /// `rdmsr`: model-specific register `msr`.
    ///
    /// # Safety
    /// The MSR must exist on this CPU (else #GP).
    #[inline]
    pub unsafe fn rdmsr(msr: u32) -> u64 {
        // SAFETY: the caller guarantees the MSR exists; the module runs
        // at CPL 0.
        unsafe { ::x86::msr::rdmsr(msr) }
    }

    /// `wrmsr`: writes model-specific register `msr`.
    ///
    /// # Safety
    /// The MSR must exist and accept `value` (else #GP), and the write
    /// must not break what the kernel relies on.
    #[inline]
    pub unsafe fn wrmsr(msr: u32, value: u64) {
        // SAFETY: forwarded to the caller.
        unsafe { ::x86::msr::wrmsr(msr, value) }
    }
    //@ begin 5

    /// DR7, the debug control register, which a VM exit or `#VMEXIT`
    /// resets to 0x400 (breakpoints off).
    #[inline]
    pub fn read_dr7() -> u64 {
        // SAFETY: reading DR7 at CPL 0 has no side effects.
        unsafe { ::x86::debugregs::dr7() }.0 as u64
    }

    /// Puts DR7 back.
    ///
    /// # Safety
    /// `value` must be what [`read_dr7`] returned on this CPU.
    #[inline]
    pub unsafe fn write_dr7(value: u64) {
        // SAFETY: forwarded to the caller.
        unsafe { ::x86::debugregs::dr7_write(::x86::debugregs::Dr7(value as usize)) }
    }
    //@ end
    //@ begin 12

    /// DR0-DR3, the four breakpoint addresses.
    #[inline]
    pub fn read_breakpoints() -> [u64; 4] {
        // SAFETY: reading a debug register at CPL 0 has no side effects.
        ::x86::debugregs::BREAKPOINT_REGS.map(|bp| unsafe { bp.dr() } as u64)
    }

    /// Loads DR0-DR3.
    ///
    /// # Safety
    /// DR7 must enable no breakpoint of the host's while they hold
    /// `values`, and the host's must be put back before it enables any.
    #[inline]
    pub unsafe fn write_breakpoints(values: &[u64; 4]) {
        for (bp, &value) in ::x86::debugregs::BREAKPOINT_REGS.iter().zip(values) {
            // SAFETY: forwarded to the caller.
            unsafe { bp.write(value as usize) }
        }
    }
    //@ end
}

#[cfg(not(target_os = "none"))]
mod imp {
    /// The host fake: every MSR reads as 0.
    ///
    /// # Safety
    /// None on the host; reads nothing.
    pub unsafe fn rdmsr(_msr: u32) -> u64 {
        0
    }

    /// # Safety
    /// None on the host; writes nothing.
    pub unsafe fn wrmsr(_msr: u32, _value: u64) {}
    //@ begin 5

    /// The host fake: DR7 at its reset value.
    pub fn read_dr7() -> u64 {
        0x400
    }

    /// # Safety
    /// None on the host.
    pub unsafe fn write_dr7(_value: u64) {}
    //@ end
    //@ begin 12

    /// The host fake: no breakpoint addresses.
    pub fn read_breakpoints() -> [u64; 4] {
        [0; 4]
    }

    /// # Safety
    /// None on the host.
    pub unsafe fn write_breakpoints(_values: &[u64; 4]) {}
    //@ end
}

pub use imp::*;
