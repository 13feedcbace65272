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
//@ begin 8
pub mod msr;
//@ end
//@ begin 10
pub mod mmio;
//@ end
//@ begin 12
pub mod real_mode;
pub mod debug;
//@ end

use crate::abi::{self, KvmRun, KvmRunEx, KvmRunExit, KvmSregs};
use crate::stats::Counter;
pub use crate::mmu::PageFault;

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
    //@ begin 8
    /// `clts`, which clears CR0.TS.
    Clts { insn_len: u8 },
    /// `lmsw` from a register: the low four bits of CR0 from `value`.
    Lmsw { value: u16, insn_len: u8 },
    /// `invlpg`: the guest dropped its TLB entry for linear `address`
    /// (`None` when the hardware does not say which: then every entry).
    Invlpg { address: Option<u64>, insn_len: u8 },
    /// `rdmsr` or `wrmsr` (index in ECX, value in EDX:EAX);
    /// `hardware_reason` is what userspace hears for an MSR the kernel
    /// does not handle.
    Msr { write: bool, insn_len: u8, hardware_reason: u32 },
    /// `rdpmc`, intercepted so that the guest cannot read the host's
    /// performance counters.
    Rdpmc { insn_len: u8 },
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
    //@ begin 12
    /// The guest can take an interrupt now, as the module asked to hear.
    InterruptWindow,
    /// A `mov` to or from a debug register.
    DebugRegister(DrAccess),
    /// A debug exception (#DB), with the DR6 bits of its causes: B0-B3,
    /// BD, BS.
    Debug { causes: u64 },
    //@ end
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
    /// `ins`/`outs`: the data is in guest memory, where
    /// [`StringIo::address`] says.
    pub string: Option<StringIo>,
    /// What an `out` writes to the port (SDM Vol. 2, OUT). 0 when the
    /// exit carries no data: for `in`, whose data userspace provides, and
    /// for `ins` and `outs`, whose data is in guest memory.
    pub value: u32,
    /// The length of the instruction, prefixes included: at most 15.
    pub insn_len: u8,
}

/// The memory side of `ins`/`outs` (SDM Vol. 2, INS/INSB/INSW/INSD and
/// OUTS/OUTSB/OUTSW/OUTSD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringIo {
    /// The guest-linear address of the first element the instruction
    /// reads or writes in guest memory.
    pub address: u64,
    /// A `rep` prefix (SDM Vol. 2, REP/REPE/REPZ/REPNE/REPNZ).
    pub rep: bool,
    /// The instruction steps down through memory from `address`, rather
    /// than up.
    pub down: bool,
    /// How many elements the instruction transfers if it runs to its
    /// end, as the guest's registers stood at the exit.
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

//@ begin 12
// ANCHOR: dr_access
/// A `mov` to or from a debug register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrAccess {
    /// 0 to 7, as the instruction names it (4 and 5 are aliases).
    pub dr: u8,
    /// `mov drN, reg` (true) or `mov reg, drN`.
    pub write: bool,
    /// The general register, by [`crate::regs::Reg`] number.
    pub gpr: u8,
    pub insn_len: u8,
}
// ANCHOR_END: dr_access
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

    /// A page fault at linear `address` on the module's page tables, with
    /// the hardware's error code: the MMU fixes it if it can (while the
    /// guest's paging is off, by mapping the guest-physical page at
    /// `address` if a memory slot backs it).
    fn page_fault(&mut self, address: u64, error_code: u32) -> PageFault;
    //@ begin 8

    /// The guest loaded CR3 (or changed its paging mode): every
    /// translation it had is gone, as its TLB's would be.
    fn flush_guest_tlb(&mut self);

    /// The guest executed `invlpg` for linear `address`.
    fn invlpg(&mut self, address: u64);

    /// Whether the four PAE page-directory-pointer-table entries at `cr3`
    /// can be loaded: in guest memory, no reserved bit set in a present
    /// one (SDM Vol. 3A, 4.4.1). A `mov` that would load bad ones is #GP.
    fn pdptes_valid(&self, cr3: u64) -> bool;

    /// Queues a hardware exception for the guest (see
    /// [`crate::arch::ArchVcpu::queue_exception`]).
    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>);
    //@ end
    //@ begin 12

    /// The guest's MSR `index`, if the module keeps it
    /// ([`msr::home`]); `None` if not.
    fn read_msr(&self, index: u32) -> Option<u64>;
    /// Writes it; `false` if the module does not keep it or refuses the
    /// value.
    fn write_msr(&mut self, index: u32, value: u64) -> bool;

    /// The guest's debug registers, and the debugger's wishes.
    fn debug_state(&mut self) -> &mut crate::debug::DebugState;

    /// The instruction at the old RIP is complete, carried out by the
    /// module or userspace rather than the guest: a single-step trap
    /// follows if TF was set ([`crate::debug`]).
    fn instruction_done(&mut self);
    //@ end
    //@ begin 10

    /// RIP and RFLAGS, for the emulator.
    fn rip(&self) -> u64;
    fn set_rip(&mut self, rip: u64);
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, rflags: u64);

    /// Translates linear `address` through the guest's tables for
    /// `access`, setting their accessed and dirty bits as the processor
    /// would: the guest-physical address, or the error code of the page
    /// fault the processor would raise. With paging off, the address
    /// itself.
    fn translate(&mut self, address: u64, access: mmio::LinearAccess) -> Result<u64, u32>;

    /// Reads guest RAM at `gpa`; `false` if no memory slot backs it all.
    fn read_phys(&mut self, gpa: u64, data: &mut [u8]) -> bool;

    /// Writes guest RAM at `gpa` (the MMU hears of it, in case it is a
    /// guest page table it shadows); `false` if no slot backs it all.
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool;

    /// Remembers that userspace was asked for an MMIO read of `len` bytes
    /// at `gpa`.
    fn expect_mmio_read(&mut self, gpa: u64, len: usize);

    /// The data userspace gave for the MMIO read of `len` bytes at `gpa`,
    /// once (then forgotten).
    fn completed_mmio_read(&mut self, gpa: u64, len: usize) -> Option<[u8; 8]>;
    //@ end
    //@ begin 13

    /// The emulator cannot carry out the write to a protected guest page
    /// table that faulted at `address`: the MMU handles the fault again,
    /// letting the guest's write happen without emulation.
    fn table_write_declined(&mut self, address: u64, error_code: u32) -> PageFault;
    //@ end

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
        //@ begin 8
        VmExit::Clts { insn_len } => cr::handle_clts(insn_len, ctx),
        VmExit::Lmsw { value, insn_len } => cr::handle_lmsw(value, insn_len, ctx),
        VmExit::Invlpg { address, insn_len } => handle_invlpg(address, insn_len, ctx),
        VmExit::Msr { write, insn_len, hardware_reason } => msr::handle_msr(write, insn_len, hardware_reason, ctx, run),
        VmExit::Rdpmc { insn_len } => handle_rdpmc(insn_len, ctx),
        //@ end
        VmExit::Hlt { insn_len } => handle_hlt(insn_len, ctx, run),
        VmExit::PageFault { address, error_code } => handle_page_fault(address, error_code, ctx, run),
        //@ begin 8
        // #DB and #AC, which backends intercept so that their delivery
        // cannot loop inside the processor: the guest's own handler runs.
        VmExit::Exception { vector: 1, .. } => reflect(1, None, ctx),
        VmExit::Exception { vector: 17, error_code } => reflect(17, Some(error_code), ctx),
        //@ end
        //@ begin 13
        // #MC, which both backends intercept from stage 13: the host's
        // handler ran right after the exit (`hardware::machine_check`).
        // What was interrupted in the guest runs on; if the error was
        // fatal, the host's handler did not return.
        VmExit::Exception { vector: 18, .. } => Action::Resume,
        //@ end
        //@ begin 12
        // A real-mode guest's, which only VMX intercepts: emulated, or
        // delivered through its interrupt vector table.
        VmExit::Exception { vector, error_code } if crate::real_mode::is_real_mode(&ctx.sregs()) => {
            real_mode::handle_exception(vector, error_code, ctx, run)
        }
        //@ end
        VmExit::Exception { vector, error_code } => to_user_exception(vector, error_code, run),
        VmExit::Shutdown => to_user(run, abi::KVM_EXIT_SHUTDOWN),
        VmExit::ExternalInterrupt => {
            ctx.count(Counter::IrqExits);
            Action::Resume
        }
        //@ begin 12
        VmExit::InterruptWindow => handle_interrupt_window(ctx, run),
        VmExit::DebugRegister(access) => debug::handle_dr(&access, ctx),
        // From stage 12 a #DB may be the debugger's (`debug.rs`).
        VmExit::Debug { causes } => debug::handle_db(causes, ctx, run),
        //@ end
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
    //@ begin 12
    // From stage 12: a queued interrupt ends the halt at once; the next
    // entry delivers it, and the handler returns after the `hlt`.
    if crate::irq::any(&ctx.sregs().interrupt_bitmap) {
        return Action::Resume;
    }
    //@ end
    to_user(run, abi::KVM_EXIT_HLT)
}

//@ begin 12
// ANCHOR: handle_interrupt_window
/// The interrupt window opened. If userspace asked for it and has nothing
/// queued, it hears now (`KVM_EXIT_IRQ_WINDOW_OPEN`), as 2006's
/// `interrupt_window_interception`; otherwise the next entry delivers
/// what is queued.
fn handle_interrupt_window(ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    ctx.count(Counter::IrqWindowExits);
    if run.request_interrupt_window != 0 && !crate::irq::any(&ctx.sregs().interrupt_bitmap) {
        return to_user(run, abi::KVM_EXIT_IRQ_WINDOW_OPEN);
    }
    Action::Resume
}
// ANCHOR_END: handle_interrupt_window
//@ end
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
/// off, a linear address is a guest-physical one: the MMU maps its page
/// if a slot backs it, and the guest resumes; otherwise userspace hears
/// of it as a page fault (MMIO comes in stage 10). Guest memory is
/// reachable only this way, so an address outside every slot can never
/// reach host memory.
//@ begin 8
///
/// From stage 08 the MMU also compares its tables with the guest's own:
/// if the guest's allow the access, the module's were merely behind (a
/// shadow page to fill: `pf_fixed`); if they do not, the fault is the
/// guest's (`pf_guest`), and its own #PF handler must run as on bare
/// hardware.
//@ end
fn handle_page_fault(address: u64, error_code: u32, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    match ctx.page_fault(address, error_code) {
        PageFault::Fixed => {
            ctx.count(Counter::PfFixed);
            Action::Resume
        }
        //@ begin 8
        PageFault::Guest { error_code } => {
            ctx.count(Counter::PfGuest);
            reflect_page_fault(address, error_code, ctx);
            Action::Resume
        }
        //@ end
        //@ begin 13
        PageFault::TableWrite => {
            ctx.count(Counter::PteWrites);
            match mmio::emulate_other(ctx, run) {
                Some(action) => action,
                None => match ctx.table_write_declined(address, error_code) {
                    PageFault::Guest { error_code } => {
                        reflect_page_fault(address, error_code, ctx);
                        Action::Resume
                    }
                    _ => Action::Resume,
                },
            }
        }
        //@ end
        PageFault::NotMemory => {
            //@ begin 10
            if let Some(action) = mmio::emulate_fault(ctx, run) {
                return action;
            }
            //@ end
            to_user_exception(14, error_code, run)
        }
    }
}
// ANCHOR_END: handle_page_fault
//@ begin 8

// ANCHOR: reflect_page_fault
/// Delivers a page fault to the guest, as the processor would have.
pub fn reflect_page_fault(address: u64, error_code: u32, ctx: &mut dyn ExitContext) {
    //@ exercise E8.3
    //@ instruction: The guest's own tables refuse the access at `address`
    //@+ with `error_code`: make the guest's #PF handler run as if no
    //@+ hypervisor were there. Think about what the handler will read
    //@+ besides the error code on its stack (SDM Vol. 3A, 6.15, "Interrupt
    //@+ 14—Page-Fault Exception (#PF)", and 4.7), and which part of the
    //@+ vCPU the backends load it from. The tests in `e8_3` check it.
    //@ hint: 6.15 names, besides the error code, one more thing the
    //@+ processor hands a page-fault handler. Where does it put it, and
    //@+ where does rkvm keep that register for the guest?
    //@ hint: The handler learns the address from CR2, which lives in the
    //@+ special registers the context lends out (`ctx.sregs()`,
    //@+ `ctx.set_sregs`); the exception itself is queued through the
    //@+ context too. Order matters only in that both must be done before
    //@+ the next entry.
    //@ hint: `let mut sregs = ctx.sregs(); sregs.cr2 = address;
    //@+ ctx.set_sregs(&sregs); ctx.queue_exception(PF_VECTOR,
    //@+ Some(error_code));`.
    let mut sregs = ctx.sregs();
    sregs.cr2 = address;
    ctx.set_sregs(&sregs);
    ctx.queue_exception(PF_VECTOR, Some(error_code));
    //@ end
}
// ANCHOR_END: reflect_page_fault

/// The page-fault vector.
const PF_VECTOR: u8 = 14;

//@ begin 8
// ANCHOR: handle_rdpmc
/// `rdpmc`: the guest's counters never count. Counters 0 to 3 (AMD's four
/// legacy counters, which every AMD processor since family 10h has, APM
/// Vol. 2, 13.2.1) read as 0, as Linux 6.1's kvm_amd answers with or
/// without its virtual PMU; any other is #GP(0), as for a counter the
/// processor lacks (SDM Vol. 2B, RDPMC). Bit 31 of ECX (Intel's "fast
/// read") is ignored. The host's counters never reach the guest.
fn handle_rdpmc(insn_len: u8, ctx: &mut dyn ExitContext) -> Action {
    let counter = ctx.gpr(crate::regs::Reg::Rcx as u8) as u32 & !(1 << 31);
    if counter >= 4 {
        return reflect(13, Some(0), ctx);
    }
    ctx.set_gpr(crate::regs::Reg::Rax as u8, 0);
    ctx.set_gpr(crate::regs::Reg::Rdx as u8, 0);
    ctx.skip_instruction(insn_len);
    Action::Resume
}
// ANCHOR_END: handle_rdpmc
//@ end

/// Gives an intercepted exception back to the guest, and resumes.
fn reflect(vector: u8, error_code: Option<u32>, ctx: &mut dyn ExitContext) -> Action {
    ctx.queue_exception(vector, error_code);
    Action::Resume
}

// ANCHOR: handle_invlpg
/// `invlpg`: the guest's TLB entry for `address` is gone; so must the
/// module's translation of it be.
//@ begin 13
///
/// From stage 13, where dropping one translation costs far less than
/// dropping them all, an address the hardware did not give is found from
/// the instruction itself ([`mmio::invlpg_address`]).
//@ end
fn handle_invlpg(address: Option<u64>, insn_len: u8, ctx: &mut dyn ExitContext) -> Action {
    ctx.count(Counter::Invlpg);
    //@ begin 13
    let address = address.or_else(|| mmio::invlpg_address(ctx));
    //@ end
    match address {
        Some(address) => ctx.invlpg(address),
        None => ctx.flush_guest_tlb(),
    }
    ctx.skip_instruction(insn_len);
    Action::Resume
}
// ANCHOR_END: handle_invlpg
//@ end

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

    //@ begin 8
    #[test]
    fn rdpmc_reads_counters_that_never_count_and_no_others() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        ctx.regs[crate::regs::Reg::Rcx as usize] = 0x8000_0003;
        ctx.regs[crate::regs::Reg::Rax as usize] = 0x1111;
        ctx.regs[crate::regs::Reg::Rdx as usize] = 0x2222;
        assert_eq!(handle_exit(&VmExit::Rdpmc { insn_len: 2 }, &mut ctx, &mut run), Action::Resume);
        assert_eq!((ctx.regs[0], ctx.regs[2], ctx.skipped, ctx.queued), (0, 0, 2, None), "counter 3 reads 0");
        ctx.regs[crate::regs::Reg::Rcx as usize] = 4;
        assert_eq!(handle_exit(&VmExit::Rdpmc { insn_len: 2 }, &mut ctx, &mut run), Action::Resume);
        assert_eq!((ctx.queued, ctx.skipped), (Some((13, Some(0))), 2), "#GP(0) at the rdpmc of counter 4");
        assert_eq!(run, KvmRun::default(), "nothing for userspace");
    }
    //@ end

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

    //@ begin 8
    mod e8_3 {
        use super::super::fake::FakeContext;
        use super::super::*;

        #[test]
        fn the_guests_fault_reaches_its_handler_with_cr2() {
            let mut ctx = FakeContext { guest_fault: Some(0x7), ..FakeContext::default() };
            let mut run = KvmRun::default();
            let exit = VmExit::PageFault { address: 0xC000_1234, error_code: 0x3 };
            assert_eq!(handle_exit(&exit, &mut ctx, &mut run), Action::Resume);
            assert_eq!(ctx.queued, Some((14, Some(0x7))), "the error code the guest's tables give");
            assert_eq!(ctx.sregs.cr2, 0xC000_1234);
            assert_eq!((ctx.counted(Counter::PfGuest), ctx.counted(Counter::PfFixed)), (1, 0));
            assert_eq!(ctx.skipped, 0, "a fault: the instruction runs again after the handler");
        }

        #[test]
        fn reflecting_changes_no_other_register() {
            let mut ctx = FakeContext::default();
            ctx.sregs.cr0 = 0x8000_0011;
            ctx.sregs.cr3 = 0x5000;
            reflect_page_fault(0x1000, 4, &mut ctx);
            assert_eq!((ctx.sregs.cr0, ctx.sregs.cr3, ctx.sregs.cr2), (0x8000_0011, 0x5000, 0x1000));
        }
    }

    #[test]
    fn debug_and_alignment_exceptions_go_back_to_the_guest() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&VmExit::Exception { vector: 17, error_code: 0 }, &mut ctx, &mut run), Action::Resume);
        assert_eq!(ctx.queued, Some((17, Some(0))));
        assert_eq!(handle_exit(&VmExit::Exception { vector: 1, error_code: 0 }, &mut ctx, &mut run), Action::Resume);
        assert_eq!(ctx.queued, Some((1, None)), "#DB pushes no error code");
        // A protected-mode guest's #GP goes to userspace.
        ctx.sregs.cr0 = 0x11;
        assert_eq!(handle_exit(&VmExit::Exception { vector: 13, error_code: 0 }, &mut ctx, &mut run), Action::ToUser);
        assert_eq!((ctx.skipped, run.exit_reason), (0, abi::KVM_EXIT_EXCEPTION));
    }
    //@ begin 13

    #[test]
    fn a_machine_check_resumes_the_guest() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&VmExit::Exception { vector: 18, error_code: 0 }, &mut ctx, &mut run), Action::Resume);
        assert_eq!(ctx.queued, None, "the host's, not the guest's");
    }
    //@ end

    #[test]
    fn invlpg_drops_one_translation_or_all_of_them() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        let exit = VmExit::Invlpg { address: Some(0x40_0000), insn_len: 3 };
        assert_eq!(handle_exit(&exit, &mut ctx, &mut run), Action::Resume);
        let exit = VmExit::Invlpg { address: None, insn_len: 7 };
        assert_eq!(handle_exit(&exit, &mut ctx, &mut run), Action::Resume);
        assert_eq!((ctx.invlpgs.as_slice(), ctx.flushes, ctx.skipped), (&[0x40_0000][..], 1, 10));
        assert_eq!(ctx.counted(Counter::Invlpg), 2);
    }
    //@ end

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
