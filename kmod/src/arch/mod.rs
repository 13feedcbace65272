//@ stage 4
//! The hardware backends, Intel VMX and AMD SVM, and the one trait each of
//! them implements: 2006's `struct kvm_arch_ops`, as two Rust traits.
//!
//! Generic code (`dev`, `vm`, `vcpu`, `exit`, `mmu`) knows nothing of VMX or
//! SVM; it calls a backend only through [`Arch`] (once per module, and per
//! CPU) and [`ArchVcpu`] (per vCPU). The backend is chosen when the module
//! loads, by CPUID: [`select`].
//!
//! # The contract, for a backend implementer
//!
//! **Module level ([`Arch`]).** One `static` value per backend.
//!
//! - [`Arch::check_support`] runs once at load, on any CPU: `Ok` if the
//!   extension is present and usable, else an [`Unsupported`] reason. The
//!   module prints the reason and refuses to load. It must not change any
//!   hardware state.
//! - [`Arch::hardware_setup`] runs next, once, in process context: allocate
//!   what every CPU needs (VMXON regions, host save areas) for CPUs
//!   `0..ncpus`. [`Arch::hardware_unsetup`] frees it at unload, after every
//!   CPU was disabled; it must also undo a half-done setup.
//! - [`Arch::hardware_enable`] runs on CPU `cpu` itself, with preemption
//!   and interrupts off (from `on_each_cpu`), after setup;
//!   [`Arch::hardware_disable`] likewise at unload, or to undo a failed
//!   enable on other CPUs. Disabling a CPU that is not enabled is a no-op.
//!   Neither may sleep or allocate.
//! - [`Arch::vcpu_create`] allocates one vCPU's hardware structure (VMCS or
//!   VMCB) in process context; dropping the returned box frees it.
//!
//! **vCPU level ([`ArchVcpu`]).** Every call is made with the vCPU's lock
//! held, from the task that runs it.
//!
//! - Generic code owns the general registers, RIP and RFLAGS ([`Entry`]):
//!   [`ArchVcpu::run`] loads them into the hardware before each entry and
//!   stores them back after each exit. Between entries they are valid only
//!   in generic code's copy.
//! - The backend owns every other piece of guest state: segments,
//!   descriptor tables, CR0/CR2/CR3/CR4 and EFER. Generic code reads and
//!   writes them only between entries, with preemption on, through
//!   [`ArchVcpu::get_sregs`] and [`ArchVcpu::set_sregs`] (which the backend
//!   may apply at once or at the next entry). Right after `vcpu_create`,
//!   generic code calls `set_sregs` with the reset state.
//! - Control registers in [`KvmSregs`] are always *the guest's view*: what
//!   `mov eax, cr0` would give the guest. What the hardware runs with
//!   differs (paging forced on for the module's page tables, caches on),
//!   and is the backend's business alone.
//! - [`ArchVcpu::run`] is called with preemption off, on [`Entry::cpu`],
//!   and returns after exactly one exit, decoded into a [`VmExit`]. It never
//!   sleeps, never takes a lock and never allocates. Inside, it switches
//!   whatever the hardware does not (FPU, host segment and MSR state) and
//!   keeps host interrupts able to end the guest's run: with interrupts
//!   intercepted, a guest that never exits on its own still returns
//!   [`VmExit::ExternalInterrupt`] at the next timer tick, which is how a
//!   signal reaches a looping guest. The guest runs on the page table at
//!   [`Entry::mmu_root`] (host-physical), with its TLB flushed first when
//!   [`Entry::flush_tlb`] says so.
//! - Every exit is decoded once, by the backend, into the arch-neutral
//!   [`VmExit`]; every field is filled from the hardware's exit information
//!   or, where the hardware gives none, from the instruction's bytes (read
//!   with [`Entry::fetch`]). An exit the backend does not know is
//!   [`VmExit::Unknown`] with the hardware's reason, never a panic.
//! - [`ArchVcpu::skip_instruction`] moves RIP past an instruction that an
//!   exit handler or userspace completed, and ends any interrupt shadow
//!   (`sti`, `mov ss`) it left.
//! - Every state the guest or userspace can put the vCPU in must be safe
//!   for the host: a state the hardware refuses comes back as
//!   [`VmExit::FailEntry`], and no guest state reaches host memory.

use crate::kernel::KResult;
//@ begin 5
use crate::abi::KvmSregs;
use crate::mmu::GuestFetch;
use crate::regs::NR_REGS;
//@ end
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

//@ begin 5
pub use crate::exit::VmExit;
//@ end

pub mod x86;
//@ begin 4
pub mod vmx;
//@ end
//@ begin 7
pub mod svm;
//@ end
#[cfg(not(target_os = "none"))]
pub mod fake;

// ANCHOR: arch
/// A hardware backend: what the module asks of VMX or SVM as a whole.
pub trait Arch: Sync {
    /// The backend's name for messages: "vmx" or "svm".
    fn name(&self) -> &'static str;

    /// Whether this processor has the extension and lets the module use it
    /// (2006's `cpu_has_kvm_support` and `disabled_by_bios`).
    fn check_support(&self) -> Result<(), Unsupported>;

    /// Allocates the per-CPU state of CPUs `0..ncpus` (2006's
    /// `hardware_setup`). Process context.
    fn hardware_setup(&self, ncpus: usize) -> KResult<()>;

    /// Frees what `hardware_setup` allocated, completely or in part.
    fn hardware_unsetup(&self);

    /// Turns the extension on on CPU `cpu`, the calling CPU. Interrupts off.
    fn hardware_enable(&self, cpu: usize) -> KResult<()>;

    /// Turns it off on the calling CPU `cpu`; a no-op if it is not on.
    fn hardware_disable(&self, cpu: usize);

    /// Allocates a vCPU's hardware state (VMCS or VMCB).
    fn vcpu_create(&self) -> KResult<Box<dyn ArchVcpu>>;
    //@ begin 13

    /// Writes back to memory, and forgets, every vCPU structure the
    /// processor holds on the calling CPU `cpu`, before `hardware_disable`
    /// there (a CPU going offline, or the machine rebooting). Interrupts
    /// off. VMX VMCLEARs the VMCSs active there; SVM keeps nothing.
    fn clear_cpu(&self, _cpu: usize) {}
    //@ end
}
// ANCHOR_END: arch

// ANCHOR: arch_vcpu
/// One vCPU's hardware state, owned by the generic vCPU (`vcpu::Vcpu`).
/// Dropping it frees the VMCS or VMCB.
pub trait ArchVcpu: Send {
    //@ begin 5
    /// Writes into `sregs` the registers the backend owns: the eight
    /// segment registers, GDTR, IDTR, CR0, CR2, CR3, CR4 and EFER, as the
    /// guest sees them. Leaves every other field alone.
    fn get_sregs(&self, sregs: &mut KvmSregs);

    /// Takes the same registers from `sregs` (`KVM_SET_SREGS`, and the reset
    /// state at creation). Userspace may give any values: what the
    /// hardware refuses comes back from the next entry as
    /// [`VmExit::FailEntry`], and what it would accept but the host cannot
    /// allow (paging off for real, say) the backend never loads.
    fn set_sregs(&mut self, sregs: &KvmSregs);

    /// Enters the guest and returns its next exit, decoded. Called with
    /// preemption off.
    fn run(&mut self, entry: &mut Entry<'_>) -> VmExit;

    /// Moves `*rip` past the `len` bytes of an instruction that was
    /// completed outside the guest, and clears the interrupt shadow.
    fn skip_instruction(&mut self, rip: &mut u64, len: u8);
    //@ end
    //@ begin 8

    /// Queues hardware exception `vector` for the guest: the next entry
    /// delivers it through the guest's IDT, as if the instruction at RIP
    /// had raised it (`error_code` for the vectors that push one: 8, 10 to
    /// 14, 17, 21). For a page fault the caller first sets the guest's CR2
    /// with `set_sregs`. It replaces any event the backend would have
    /// delivered again; the rules for a fault during the delivery of
    /// another (double fault, shutdown) come in stage 12.
    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>);

    /// The vector of the hardware exception the next entry delivers again
    /// (its delivery was cut short by the last exit) or was queued to
    /// deliver, if one is.
    fn pending_exception(&self) -> Option<u8>;

    /// Forgets any event the next entry would deliver.
    fn clear_pending_event(&mut self);
    //@ end
    //@ begin 12

    /// Whether nothing but RFLAGS.IF (generic code's to check) keeps the
    /// guest from taking an external interrupt at the next entry: no
    /// interrupt shadow (SDM Vol. 3A, 6.8.3) and no event already queued.
    fn interrupt_allowed(&self) -> bool;

    /// Queues external interrupt `vector` for the next entry, which
    /// delivers it through the guest's IDT as the processor would.
    fn inject_interrupt(&mut self, vector: u8);

    /// With `on`, the processor exits (`VmExit::InterruptWindow`) as soon
    /// as the guest can take an interrupt; without, it does not.
    fn set_window_exiting(&mut self, on: bool);

    /// The guest's value of MSR `index` among those the backend keeps
    /// (the ones its hardware switches at entry and exit, and the TSC);
    /// `None` for one it does not keep.
    fn get_msr(&self, index: u32) -> Option<u64>;

    /// Sets it; `false` for one it does not keep or a value it refuses
    /// (a non-canonical address, which would fault at `wrmsr`).
    fn set_msr(&mut self, index: u32, value: u64) -> bool;

    // ANCHOR: arch_real_mode
    /// Whether the backend can deliver events to the guest as it is now
    /// ([`ArchVcpu::queue_exception`], [`ArchVcpu::inject_interrupt`]).
    /// VMX cannot while the guest is in real mode, which it runs in
    /// virtual-8086 mode: generic code then delivers them itself, through
    /// the guest's interrupt vector table, as the processor would
    /// (`crate::real_mode`).
    fn delivers_events(&self) -> bool;

    /// Whether the backend needs a virtual-8086 task-state segment in
    /// guest memory for the guest as it is now (VMX, in real mode). Generic
    /// code then writes one ([`crate::real_mode::tss_bytes`]) into the
    /// last pages of memory slot 0 and says where with
    /// [`ArchVcpu::set_real_mode_tss`], once for each layout of the slots.
    fn wants_real_mode_tss(&self) -> bool;

    /// The guest-physical address of that TSS, or `None` if slot 0 cannot
    /// hold it.
    fn set_real_mode_tss(&mut self, base: Option<u64>);
    // ANCHOR_END: arch_real_mode

    /// The debug registers the guest runs with from the next entry on
    /// ([`crate::debug::hardware`]): DR7 always, and DR0-DR3 when `db` is
    /// given, which the backend loads just before each entry (with the
    /// host's breakpoints off) and gives back to the host just after each
    /// exit, before the host's DR7 returns.
    fn set_debug_registers(&mut self, hw: crate::debug::Hardware);
    //@ end
}
// ANCHOR_END: arch_vcpu

//@ begin 8
// ANCHOR: combine
/// What the processor does when exception `second` arises while it
/// delivers exception `first` (SDM Vol. 3A, 6.15, Table 6-5 "Conditions
/// for Generating a Double Fault"; APM Vol. 2, 8.2.9): a page fault or a
/// contributory exception during a page fault, or a contributory one during
/// a contributory one, is a double fault; either during a double fault
/// shuts the processor down; anything else is delivered as it comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combined {
    Second,
    DoubleFault,
    Shutdown,
}

pub fn combine(first: u8, second: u8) -> Combined {
    #[derive(PartialEq)]
    enum Class {
        Benign,
        Contributory,
        PageFault,
        DoubleFault,
    }
    let class = |v: u8| match v {
        0 | 10 | 11 | 12 | 13 => Class::Contributory,
        14 => Class::PageFault,
        8 => Class::DoubleFault,
        _ => Class::Benign,
    };
    match (class(first), class(second)) {
        (Class::PageFault, Class::PageFault | Class::Contributory) => Combined::DoubleFault,
        (Class::Contributory, Class::Contributory) => Combined::DoubleFault,
        (Class::DoubleFault, Class::PageFault | Class::Contributory) => Combined::Shutdown,
        _ => Combined::Second,
    }
}
// ANCHOR_END: combine
//@ end
//@ begin 12

// ANCHOR: pushes_rf
/// RFLAGS.RF: the next instruction takes no instruction breakpoint.
pub const RFLAGS_RF: u64 = 1 << 16;

/// Whether exception `vector` is a fault: its handler returns to the
/// faulting instruction, so its delivery pushes RFLAGS with RF set, and the
/// instruction does not take its instruction breakpoint a second time
/// (SDM Vol. 3A, 6.5 "Exception Classifications", and Vol. 3B, 19.3.1.1
/// "Instruction-Breakpoint Exception Condition"). The processor sets RF
/// for the faults it raises itself; an injected exception is delivered
/// with the guest's RFLAGS as they are, so the module sets RF first, as
/// Linux's KVM does. #DB counts as a trap, as there; #DF and #MC are
/// aborts.
pub fn is_fault(vector: u8) -> bool {
    matches!(vector, 0 | 5 | 6 | 7 | 9..=14 | 16 | 17 | 19 | 20 | 21)
}
// ANCHOR_END: pushes_rf
//@ end

//@ begin 5
// ANCHOR: entry
/// What generic code lends a backend for one entry into the guest.
pub struct Entry<'a> {
    /// The CPU we run on; preemption is off until `run` returns.
    pub cpu: usize,
    /// The general registers, indexed by [`crate::regs::Reg`].
    pub regs: &'a mut [u64; NR_REGS],
    pub rip: &'a mut u64,
    pub rflags: &'a mut u64,
    /// The host-physical address of the page table the guest runs on while
    /// its own paging is off: the module's map of guest-physical memory
    /// (`mmu::nonpaging`). The backend loads it into the hardware CR3.
    pub mmu_root: u64,
    /// Entries were removed from that table since the last entry: flush
    /// the guest's TLB before running it.
    pub flush_tlb: bool,
    /// Reads guest memory by linear address, for decoding instructions.
    pub fetch: &'a dyn GuestFetch,
}
// ANCHOR_END: entry
//@ end

// ANCHOR: unsupported
/// Why a backend cannot run here. Each variant's text is the message the
/// module prints when it refuses to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// The processor does not have the extension (CPUID says so).
    NoExtension(&'static str),
    /// The firmware turned the extension off and locked it (Intel's
    /// IA32_FEATURE_CONTROL, AMD's VM_CR.SVMDIS).
    DisabledByFirmware(&'static str),
    /// Another hypervisor (kvm_intel, kvm_amd, VirtualBox, ...) has the
    /// extension turned on already: CR4.VMXE or EFER.SVME is set.
    InUse(&'static str),
    /// The extension lacks a feature the backend needs.
    MissingFeature(&'static str),
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::NoExtension(what) => write!(f, "this processor has no {what}"),
            Unsupported::DisabledByFirmware(what) => write!(f, "{what} is disabled by the firmware (BIOS)"),
            Unsupported::InUse(what) => {
                write!(f, "{what} is in use by another hypervisor (unload kvm_intel or kvm_amd first)")
            }
            Unsupported::MissingFeature(what) => write!(f, "the processor lacks {what}"),
        }
    }
}
// ANCHOR_END: unsupported

// ANCHOR: select
/// Which backend the module chose at load; 0 until then.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// The values of `CHOSEN`: one per backend.
#[allow(dead_code)]
const CHOSEN_VMX: u8 = 1;
#[allow(dead_code)]
const CHOSEN_SVM: u8 = 2;
#[cfg(not(target_os = "none"))]
const CHOSEN_FAKE: u8 = 100;

/// Every backend this build knows, in the order they are tried.
static BACKENDS: &[(u8, &dyn Arch)] = &[
    //@ begin 4
    (CHOSEN_VMX, &vmx::VMX),
    //@ end
    //@ begin 7
    (CHOSEN_SVM, &svm::SVM),
    //@ end
];

fn backends() -> &'static [(u8, &'static dyn Arch)] {
    BACKENDS
}

/// Chooses the backend this processor supports, at module load. When none
/// fits, returns every backend's reason, for the refusal message.
pub fn select() -> Result<&'static dyn Arch, [Option<(&'static str, Unsupported)>; 2]> {
    let mut reasons = [None; 2];
    for (i, &(id, arch)) in backends().iter().enumerate() {
        match arch.check_support() {
            Ok(()) => {
                CHOSEN.store(id, Ordering::Release);
                return Ok(arch);
            }
            Err(why) => {
                if let Some(slot) = reasons.get_mut(i) {
                    *slot = Some((arch.name(), why));
                }
            }
        }
    }
    Err(reasons)
}

/// Forgets the choice, at module unload.
pub fn deselect() {
    CHOSEN.store(0, Ordering::Release);
}

/// The backend chosen at load. On the host, where no hardware is, a fake
/// backend stands in (see [`fake`]) unless a test chose another.
pub fn current() -> Option<&'static dyn Arch> {
    let id = CHOSEN.load(Ordering::Acquire);
    if let Some(&(_, arch)) = backends().iter().find(|(i, _)| *i == id) {
        return Some(arch);
    }
    #[cfg(not(target_os = "none"))]
    if id == 0 || id == CHOSEN_FAKE {
        return Some(&fake::FAKE);
    }
    None
}
// ANCHOR_END: select

// ANCHOR: is_on
/// The CPUs the backend was turned on on, indexed by CPU number, while the
/// module is loaded: published by `hardware::enable` once every CPU's
/// call returned, taken back by `hardware::disable`. The kernel serializes
/// module load and unload, and `KVM_RUN` reads it only while a file is
/// open, which keeps the module loaded.
static ENABLED: AtomicPtr<Vec<AtomicBool>> = AtomicPtr::new(core::ptr::null_mut());

/// Publishes the table of CPUs the backend is on on.
pub fn publish_enabled(table: Box<Vec<AtomicBool>>) {
    let old = ENABLED.swap(Box::into_raw(table), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: a published pointer came from `Box::into_raw` here, and
        // the swap made this the only owner.
        drop(unsafe { Box::from_raw(old) });
    }
}

/// Takes the table back, at unload.
pub fn take_enabled() -> Option<Box<Vec<AtomicBool>>> {
    let table = ENABLED.swap(core::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: as in `publish_enabled`: the swap made this the only owner.
    (!table.is_null()).then(|| unsafe { Box::from_raw(table) })
}

/// True when the backend is on on this CPU. The caller must be pinned to
/// the CPU (preemption off).
pub fn is_on(cpu: usize) -> bool {
    // SAFETY: the table lives from `publish_enabled` to `take_enabled`,
    // and the latter runs only when no file is open, so no caller can be
    // running.
    let Some(enabled) = (unsafe { ENABLED.load(Ordering::Acquire).as_ref() }) else { return false };
    enabled.get(cpu).is_some_and(|c| c.load(Ordering::Acquire))
}
// ANCHOR_END: is_on
//@ begin 13

/// The published table itself, for the CPU-hotplug and reboot callbacks
/// of `hardware`, which turn CPUs on and off while the module is loaded.
pub fn enabled_table() -> Option<&'static [AtomicBool]> {
    // SAFETY: as in `is_on`; the callbacks are registered after the table
    // is published and unregistered before it is taken back.
    unsafe { ENABLED.load(Ordering::Acquire).as_ref() }.map(|v| v.as_slice())
}
//@ end

//@ begin 8
#[cfg(test)]
mod combine_tests {
    use super::*;

    #[test]
    fn double_faults_and_shutdowns_come_as_table_6_5_says() {
        assert_eq!(combine(14, 14), Combined::DoubleFault, "#PF while delivering #PF");
        assert_eq!(combine(14, 13), Combined::DoubleFault);
        assert_eq!(combine(13, 14), Combined::Second, "contributory, then #PF: serially");
        assert_eq!(combine(13, 11), Combined::DoubleFault);
        assert_eq!(combine(8, 14), Combined::Shutdown);
        assert_eq!(combine(8, 6), Combined::Second, "#UD is benign");
        assert_eq!(combine(6, 14), Combined::Second);
        assert_eq!(combine(1, 13), Combined::Second);
    }
}
//@ end
//@ begin 12

#[cfg(test)]
mod fault_tests {
    use super::*;

    #[test]
    fn faults_push_rf_and_traps_aborts_and_interrupts_do_not() {
        let faults: Vec<u8> = (0..32).filter(|&v| is_fault(v)).collect();
        assert_eq!(faults, [0, 5, 6, 7, 9, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21]);
        assert!(!is_fault(1) && !is_fault(3) && !is_fault(4), "#DB, #BP and #OF are traps");
        assert!(!is_fault(8) && !is_fault(18), "#DF and #MC are aborts");
        assert!(!is_fault(2) && !is_fault(0x20), "an NMI and interrupts return to the next instruction");
    }
}
//@ end
