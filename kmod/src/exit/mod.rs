//@ stage 5
//! Typed exits and their handlers.
//!
//! A backend decodes each hardware exit once, into a [`VmExit`]; from here
//! on no code looks at a VMX exit reason or an SVM exit code again. Each
//! exit has one handler, with one signature:
//!
//! > `fn(exit, &mut dyn ExitContext, &mut KvmRun) -> Action`
//!
//! It returns [`Action::Resume`] if the exit is dealt with and the guest may
//! run on, or fills `kvm_run` for userspace and returns [`Action::ToUser`]
//! (2006's "return 1 if handled, else fill kvm_run and return 0"). A handler
//! never touches hardware: what it needs of the vCPU it asks through
//! [`ExitContext`], which the run loop implements on the real vCPU and the
//! tests implement with a fake.

//@ begin 6
pub mod io;
pub mod cr;
//@ end

use crate::abi::{self, KvmRun, KvmRunEx, KvmRunExit, KvmSregs};
use crate::stats::Counter;

// ANCHOR: vm_exit
/// Why the guest stopped running, in the vocabulary of neither manual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    //@ begin 6
    /// A port access: `in`, `out`, `ins` or `outs`.
    Io(IoExit),
    /// `cpuid`, which the 2006 ABI hands to userspace (`KVM_EXIT_CPUID`).
    Cpuid { insn_len: u8 },
    /// A move to or from CR0, CR3 or CR4, which the backend intercepts to
    /// keep the guest's view apart from what the hardware runs with.
    Cr(CrAccess),
    //@ end
    /// `hlt`: the guest has nothing to do until an interrupt.
    Hlt { insn_len: u8 },
    /// The guest touched linear address `address` and the page tables it
    /// runs on (the module's) do not map it: 2006's "nonpaging" fault.
    PageFault { address: u64, error_code: u32 },
    /// An exception the backend intercepts and does not give back to the
    /// guest itself. `error_code` is 0 for vectors that push none.
    Exception { vector: u8, error_code: u32 },
    /// A triple fault: the processor would shut down.
    Shutdown,
    /// A host interrupt (or NMI) arrived while the guest ran; the host
    /// handles it as soon as interrupts are on again.
    ExternalInterrupt,
    /// The processor refused to enter the guest, for this hardware reason.
    FailEntry { hardware_reason: u32 },
    /// An exit no handler knows, with the hardware's own exit reason.
    Unknown { hardware_reason: u32 },
}
// ANCHOR_END: vm_exit

//@ begin 6
// ANCHOR: io_exit
/// A port access, as the hardware reported it and the instruction's bytes
/// completed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    /// Bytes per access: 1, 2 or 4.
    pub size: u8,
    /// `in`/`ins` (true) or `out`/`outs`.
    pub is_in: bool,
    /// `ins`/`outs`: the data is in guest memory, at [`IoExit::address`].
    pub string: Option<StringIo>,
    /// The value of `out`: the low `size` bytes of RAX.
    pub value: u32,
    /// The length of the instruction, prefixes included.
    pub insn_len: u8,
}

/// The memory side of `ins`/`outs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringIo {
    /// The guest-linear address of the first element: segment base plus
    /// RSI (`outs`) or RDI (`ins`), within the address size.
    pub address: u64,
    /// A `rep` prefix: `count` elements; without it, one.
    pub rep: bool,
    /// RFLAGS.DF: the addresses go down.
    pub down: bool,
    /// The number of elements: RCX within the address size, for `rep`.
    pub count: u64,
}
// ANCHOR_END: io_exit

// ANCHOR: cr_access
/// A `mov` to or from a control register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    /// 0, 3 or 4.
    pub cr: u8,
    /// `mov crN, reg` (true) or `mov reg, crN`.
    pub write: bool,
    /// The general register, by [`crate::regs::Reg`] number.
    pub gpr: u8,
    pub insn_len: u8,
}
// ANCHOR_END: cr_access
//@ end

// ANCHOR: action
/// What the run loop does after a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The exit is dealt with: enter the guest again.
    Resume,
    /// `kvm_run` says what userspace must do: `KVM_RUN` returns.
    ToUser,
}
// ANCHOR_END: action

// ANCHOR: exit_context
/// What handlers may ask of the vCPU. The run loop implements it on the
/// real vCPU between entries; tests implement it with a fake.
pub trait ExitContext {
    /// Moves RIP past `len` bytes now: the handler completed the
    /// instruction.
    fn skip_instruction(&mut self, len: u8);

    /// Makes the next `KVM_RUN` skip `len` bytes if userspace sets
    /// `kvm_run.emulated`: userspace completes the instruction.
    fn skip_if_emulated(&mut self, len: u8);

    /// The general register number `reg` (0 to 15, as [`crate::regs::Reg`]).
    fn gpr(&self, reg: u8) -> u64;

    /// Sets general register `reg`.
    fn set_gpr(&mut self, reg: u8, value: u64);

    /// The special registers, as the guest sees them.
    fn sregs(&self) -> KvmSregs;

    /// Changes the special registers, as `KVM_SET_SREGS` would.
    fn set_sregs(&mut self, sregs: &KvmSregs);

    /// The guest-physical page at `gpa` is missing from the module's page
    /// table: map it if a memory slot backs it (`true`), else `false`.
    fn map_guest_page(&mut self, gpa: u64) -> bool;

    /// Counts an event in the VM's and the global statistics.
    fn count(&mut self, counter: Counter);
}
// ANCHOR_END: exit_context

// ANCHOR: handle_exit
/// The exit handlers' table: one arm per exit.
pub fn handle_exit(exit: &VmExit, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    ctx.count(Counter::Exits);
    match *exit {
        //@ begin 6
        VmExit::Io(io) => io::handle_io(&io, ctx, run),
        VmExit::Cpuid { insn_len } => handle_cpuid(insn_len, ctx, run),
        VmExit::Cr(access) => cr::handle_cr(&access, ctx, run),
        //@ end
        VmExit::Hlt { insn_len } => handle_hlt(insn_len, ctx, run),
        VmExit::PageFault { address, error_code } => handle_page_fault(address, error_code, ctx, run),
        VmExit::Exception { vector, error_code } => to_user_exception(vector, error_code, run),
        VmExit::Shutdown => to_user(run, abi::KVM_EXIT_SHUTDOWN),
        VmExit::ExternalInterrupt => {
            ctx.count(Counter::IrqExits);
            Action::Resume
        }
        VmExit::FailEntry { hardware_reason } => {
            run.exit_type = abi::KVM_EXIT_TYPE_FAIL_ENTRY;
            run.exit_reason = hardware_reason;
            Action::ToUser
        }
        VmExit::Unknown { hardware_reason } => to_user_unknown(hardware_reason, run),
    }
}
// ANCHOR_END: handle_exit

/// Whether `run` reports a shutdown (a triple fault).
pub fn is_shutdown(run: &KvmRun) -> bool {
    run.exit_type == abi::KVM_EXIT_TYPE_VM_EXIT && run.exit_reason == abi::KVM_EXIT_SHUTDOWN
}

/// Fills `kvm_run` for an exit with no details.
fn to_user(run: &mut KvmRun, reason: u32) -> Action {
    run.exit_type = abi::KVM_EXIT_TYPE_VM_EXIT;
    run.exit_reason = reason;
    Action::ToUser
}

fn to_user_unknown(hardware_reason: u32, run: &mut KvmRun) -> Action {
    run.exit.hw_mut().hardware_exit_reason = hardware_reason;
    to_user(run, abi::KVM_EXIT_UNKNOWN)
}

fn to_user_exception(vector: u8, error_code: u32, run: &mut KvmRun) -> Action {
    run.exit = KvmRunExit::from_ex(KvmRunEx { exception: vector.into(), error_code });
    to_user(run, abi::KVM_EXIT_EXCEPTION)
}

// ANCHOR: handle_hlt
/// `hlt`: completed here, then userspace decides what halting means (2006
/// had no in-kernel interrupt controller to wait for).
fn handle_hlt(insn_len: u8, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    ctx.count(Counter::HaltExits);
    ctx.skip_instruction(insn_len);
    to_user(run, abi::KVM_EXIT_HLT)
}
// ANCHOR_END: handle_hlt

//@ begin 6
// ANCHOR: handle_cpuid
/// `cpuid`: userspace reads the leaf from RAX with `KVM_GET_REGS`, writes
/// the answer with `KVM_SET_REGS`, and sets `emulated`.
fn handle_cpuid(insn_len: u8, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    ctx.skip_if_emulated(insn_len);
    to_user(run, abi::KVM_EXIT_CPUID)
}
// ANCHOR_END: handle_cpuid
//@ end

// ANCHOR: handle_page_fault
/// A fault on the module's own page table. While the guest's paging is
/// off, a linear address is a guest-physical one: map its page if a slot
/// backs it and resume; otherwise userspace hears of it as a page fault
/// (MMIO comes in stage 10). Guest memory is reachable only this way, so
/// an address outside every slot can never reach host memory.
fn handle_page_fault(address: u64, error_code: u32, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    if ctx.map_guest_page(address) {
        ctx.count(Counter::PfFixed);
        return Action::Resume;
    }
    to_user_exception(14, error_code, run)
}
// ANCHOR_END: handle_page_fault

#[cfg(not(target_os = "none"))]
pub mod fake;

#[cfg(test)]
mod tests {
    use super::fake::FakeContext;
    use super::*;

    #[test]
    fn hlt_is_completed_in_the_kernel_then_reported() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&VmExit::Hlt { insn_len: 1 }, &mut ctx, &mut run), Action::ToUser);
        assert_eq!((run.exit_type, run.exit_reason), (abi::KVM_EXIT_TYPE_VM_EXIT, abi::KVM_EXIT_HLT));
        assert_eq!((ctx.skipped, ctx.pending_skip), (1, 0));
        assert_eq!(ctx.counted(Counter::HaltExits), 1);
        assert_eq!(ctx.counted(Counter::Exits), 1);
    }

    #[test]
    fn shutdown_and_unknown_exits_go_to_userspace_with_their_reason() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&VmExit::Shutdown, &mut ctx, &mut run), Action::ToUser);
        assert_eq!(run.exit_reason, abi::KVM_EXIT_SHUTDOWN);
        assert_eq!(handle_exit(&VmExit::Unknown { hardware_reason: 0x7C }, &mut ctx, &mut run), Action::ToUser);
        assert_eq!((run.exit_reason, run.exit.hw().hardware_exit_reason), (abi::KVM_EXIT_UNKNOWN, 0x7C));
        assert_eq!(ctx.skipped + u32::from(ctx.pending_skip), 0, "nothing is skipped");
    }

    #[test]
    fn a_failed_entry_says_so_in_exit_type() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        let exit = VmExit::FailEntry { hardware_reason: u32::MAX };
        assert_eq!(handle_exit(&exit, &mut ctx, &mut run), Action::ToUser);
        assert_eq!((run.exit_type, run.exit_reason), (abi::KVM_EXIT_TYPE_FAIL_ENTRY, u32::MAX));
    }

    #[test]
    fn host_interrupts_resume_the_guest_and_are_counted() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&VmExit::ExternalInterrupt, &mut ctx, &mut run), Action::Resume);
        assert_eq!(ctx.counted(Counter::IrqExits), 1);
        assert_eq!(run, KvmRun::default(), "kvm_run untouched");
    }

    #[test]
    fn a_fault_in_a_slot_is_fixed_and_one_outside_goes_to_userspace() {
        let mut ctx = FakeContext { backed: 0x10_0000, ..FakeContext::default() };
        let mut run = KvmRun::default();
        let fault = |address| VmExit::PageFault { address, error_code: 2 };
        assert_eq!(handle_exit(&fault(0x8004), &mut ctx, &mut run), Action::Resume);
        assert_eq!(ctx.mapped, [0x8004]);
        assert_eq!(ctx.counted(Counter::PfFixed), 1);
        assert_eq!(handle_exit(&fault(0xC000_0000), &mut ctx, &mut run), Action::ToUser);
        assert_eq!(run.exit_reason, abi::KVM_EXIT_EXCEPTION);
        assert_eq!((run.exit.ex().exception, run.exit.ex().error_code), (14, 2));
    }

    //@ begin 6
    #[test]
    fn cpuid_waits_for_userspace_to_complete_it() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&VmExit::Cpuid { insn_len: 2 }, &mut ctx, &mut run), Action::ToUser);
        assert_eq!(run.exit_reason, abi::KVM_EXIT_CPUID);
        assert_eq!((ctx.skipped, ctx.pending_skip), (0, 2));
    }
    //@ end
}
