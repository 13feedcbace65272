//@ stage 4
//! One vCPU of the VMX backend: its VMCS and, from stage 05, the guest
//! state the backend owns and the step that enters the guest once.

use super::insn::VmxError;
use super::vmcs::Vmcs;
use crate::arch::ArchVcpu;
use crate::kernel::{Errno, KResult, cpu};
use crate::log;
//@ begin 5
use super::caps::{self, Controls, HardwareMsrs, Msrs};
use super::exit::{self, ExitInfo};
use super::fields::*;
use super::guest::{self, Fields, FixedBits};
use super::vmcs::CurrentVmcs;
use super::{entry, host, insn};
use crate::abi::KvmSregs;
use crate::arch::{Entry, VmExit};
use crate::kernel::cpu::HostSegments;
use crate::kernel::fpu::GuestFpu;
use crate::regs::{Efer, Reg};
//@ end
//@ begin 8
use crate::kernel::Page;
use x86::msr::IA32_EFER;
//@ end
//@ begin 12
use crate::arch::x86::{read_breakpoints, write_breakpoints, write_dr7};
use super::msrs::{self, GuestMsrs};
//@ end

// ANCHOR: vmx_vcpu
/// A vCPU's VMX state.
pub struct VmxVcpu {
    vmcs: Vmcs,
    //@ begin 5
    /// The guest's view of the registers the backend owns (segments,
    /// descriptor tables, control registers, EFER), as `KVM_GET_SREGS`
    /// shows them.
    sregs: KvmSregs,
    /// `sregs` changed since it was last written into the VMCS.
    sregs_dirty: bool,
    /// The VMCS's fixed fields (controls, host constants) are written.
    setup_done: bool,
    /// The CPU whose host state (TSS, GDT, GS base) the VMCS holds.
    host_cpu: Option<usize>,
    /// The next entry must clear the guest's interrupt shadow: an
    /// instruction was completed outside the guest.
    clear_interrupt_shadow: bool,
    controls: Controls,
    fixed: FixedBits,
    /// The VMX-preemption timer's start value, if the processor has one.
    preemption_timer: Option<u32>,
    //@ begin 6
    /// The processor reports the address size of `ins` and `outs` in the
    /// VM-exit instruction-information field (IA32_VMX_BASIC bit 54).
    ins_outs_info: bool,
    //@ end
    //@ begin 8
    /// The event the next entry delivers: an exception queued by a
    /// handler, or an event whose delivery an exit interrupted.
    queued_event: Option<Event>,
    /// The last exit was a #DB from `int1` (ICEBP, a privileged software
    /// exception), of this length: reflected, it must be one again.
    icebp_len: Option<u32>,
    /// The DR6 bits (B0-B3, BD, BS) of the last #DB exit: the processor
    /// does not write DR6 for a #DB that exits (SDM Vol. 3C, 28.1), so
    /// they are loaded into DR6 when the #DB is delivered to the guest.
    db_dr6: u64,
    /// The DR6 the next entry runs the guest with, when it delivers a #DB.
    load_dr6: Option<u64>,
    /// The VM-entry and VM-exit MSR-load lists of EFER, on a processor
    /// without the "load IA32_EFER" controls.
    efer_msrs: Option<Page>,
    //@ end
    //@ begin 12
    /// The guest's interruptibility state after the last exit (SDM Vol.
    /// 3C, 25.4.2, Table 25-3): bit 0 blocking by `sti`, bit 1 by `mov ss`.
    interruptibility: u32,
    /// The interrupt-window exit is wanted, and is set in the VMCS.
    window_exiting: bool,
    window_exiting_written: bool,
    /// Where generic code wrote the virtual-8086 TSS, if it could.
    real_mode_tss: Option<u64>,
    /// The hardware runs the real-mode guest in virtual-8086 mode (as
    /// the guest state was last written), and the guest's own IOPL,
    /// which vm86 replaces with 3.
    vm86: bool,
    vm86_iopl: u64,
    /// What the guest runs with in DR7 and, if any breakpoint is on,
    /// DR0-DR3 (`set_debug_registers`), and the DR7 last written to the
    /// VMCS.
    debug: crate::debug::Hardware,
    dr7_written: Option<u64>,
    /// The last exit came with RFLAGS.TF set, and the instruction that
    /// exited was then completed outside the guest: a single-step trap
    /// the processor saved as pending for it is generic code's to raise
    /// now (`instruction_done`), and must not come a second time.
    exit_tf: bool,
    drop_pending_step: bool,
    /// The guest's SYSENTER, SYSCALL and KERNEL_GS_BASE MSRs and its TSC
    /// offset (`msrs.rs`).
    msrs: GuestMsrs,
    //@ end
    /// The guest's x87 and SSE registers.
    fpu: GuestFpu,
    //@ end
}

impl VmxVcpu {
    /// Allocates the VMCS and proves it usable: VMCLEAR and VMPTRLD on
    /// this CPU. It stays active there until it runs elsewhere or is freed.
    pub fn new() -> KResult<VmxVcpu> {
        let mut vcpu = VmxVcpu {
            vmcs: Vmcs::new()?,
            //@ begin 5
            sregs: KvmSregs::default(),
            sregs_dirty: true,
            setup_done: false,
            host_cpu: None,
            clear_interrupt_shadow: false,
            controls: processor_controls()?,
            fixed: fixed_bits(&HardwareMsrs),
            preemption_timer: None,
            //@ begin 6
            ins_outs_info: caps::VmxBasic::from_msr(HardwareMsrs.read(caps::IA32_VMX_BASIC)).ins_outs_info,
            //@ end
            //@ begin 8
            queued_event: None,
            icebp_len: None,
            //@ begin 12
            interruptibility: 0,
            window_exiting: false,
            window_exiting_written: false,
            real_mode_tss: None,
            vm86: false,
            vm86_iopl: 0,
            debug: crate::debug::Hardware { dr7: crate::debug::DR7_RESET, db: None },
            dr7_written: None,
            exit_tf: false,
            drop_pending_step: false,
            msrs: GuestMsrs::new(),
            //@ end
            db_dr6: 0,
            load_dr6: None,
            efer_msrs: None,
            //@ end
            fpu: GuestFpu::new()?,
            //@ end
        };
        //@ begin 5
        if vcpu.controls.pin & pin::PREEMPTION_TIMER != 0 {
            let rate = (HardwareMsrs.read(caps::IA32_VMX_MISC) & 0x1F) as u32;
            vcpu.preemption_timer = Some(preemption_timer_value(cpu::tsc_khz(), rate));
        }
        //@ end
        //@ begin 8
        if !efer_by_controls(&vcpu.controls) {
            vcpu.efer_msrs = Some(Page::alloc_zeroed()?);
        }
        //@ end
        cpu::preempt_disable();
        let this_cpu = cpu::current_cpu();
        // A CPU that came online after the module loaded has VMX off:
        // VMCLEAR there would fault.
        let loaded = match crate::arch::is_on(this_cpu) {
            true => vcpu.vmcs.load(this_cpu),
            false => Err(VmxError::FailInvalid),
        };
        cpu::preempt_enable();
        loaded.map_err(|e: VmxError| {
            log!(Err, "a new VMCS cannot be loaded: {e:?}");
            Errno::EIO
        })?;
        Ok(vcpu)
    }
}
// ANCHOR_END: vmx_vcpu

//@ begin 5
/// The controls of every guest, fitted to this processor. The module
/// checked at load that they fit (`check_support`).
fn processor_controls() -> KResult<Controls> {
    let basic = caps::VmxBasic::from_msr(HardwareMsrs.read(caps::IA32_VMX_BASIC));
    Controls::for_processor(&HardwareMsrs, basic.true_controls).map_err(|missing| {
        log!(Err, "VMX lacks controls rkvm needs: {missing:?}");
        Errno::EIO
    })
}

fn fixed_bits(msrs: &dyn Msrs) -> FixedBits {
    FixedBits {
        cr0_fixed0: msrs.read(caps::IA32_VMX_CR0_FIXED0),
        cr0_fixed1: msrs.read(caps::IA32_VMX_CR0_FIXED1),
        cr4_fixed0: msrs.read(caps::IA32_VMX_CR4_FIXED0),
        cr4_fixed1: msrs.read(caps::IA32_VMX_CR4_FIXED1),
    }
}

// ANCHOR: preemption_timer
/// How long the guest may run before the host takes its CPU back even if
/// no interrupt did: 10 ms.
const PREEMPTION_TIMER_MS: u64 = 10;

/// The start value of the VMX-preemption timer for `PREEMPTION_TIMER_MS`:
/// "the VMX-preemption timer counts down at rate proportional to that of
/// the timestamp counter (TSC). Specifically, the timer counts down by 1
/// every time bit X in the TSC changes due to a TSC increment. The value of
/// X is in the range 0–31 and can be determined by consulting the VMX
/// capability MSR IA32_VMX_MISC" (bits 4:0; SDM Vol. 3C, 26.5.1
/// "VMX-Preemption Timer").
///
/// External-interrupt exiting alone already gives the host its CPU back at
/// each timer tick; the timer is a second line, beyond 2006 (it came with
/// Nehalem), which rkvm uses where the processor has it. It matters under
/// Bochs, whose VMX does not always turn a host interrupt into an exit
/// while a guest spins with interrupts disabled: without the timer, the
/// `spin` guest kept a CPU for 20 to 30 seconds there (Linux's `kvm_intel`
/// too), long enough for an RCU stall warning.
pub fn preemption_timer_value(tsc_khz: u64, rate: u32) -> u32 {
    let ticks = tsc_khz.saturating_mul(PREEMPTION_TIMER_MS) >> rate.min(31);
    ticks.clamp(1, u64::from(u32::MAX)) as u32
}
// ANCHOR_END: preemption_timer

/// The exception bitmap of a guest in protected or long mode: page
/// faults (vector 14) exit. Every guest runs on the module's page table,
/// so a page fault means a page to map (or, from stage 10, MMIO); every
/// other exception goes to the guest's own IDT, as on bare hardware.
//@ begin 8
/// From stage 08 #DB (1) and #AC (17) exit too, and are given back to the
/// guest by the exit handler: the processor can deliver either forever
/// without reaching an instruction boundary, where a host interrupt
/// would end the guest's run (a #DB whose delivery hits a breakpoint on
/// the IDT, an #AC whose delivery at CPL 3 pushes to a misaligned stack:
/// CVE-2015-8104 and CVE-2015-5307). With them intercepted, each
/// delivery is an exit, and the host keeps its CPU.
//@ end
const EXCEPTIONS_INTERCEPTED: u64 = 1 << 14
    //@ begin 8
    | 1 << 1
    | 1 << 17
    //@ end
    //@ begin 13
    // #MC: a machine check in the guest exits (with exit reason 0, like
    // any exception in the bitmap) and is the host's to handle
    // (`hardware::machine_check`), as today's KVM does.
    | 1 << 18
    //@ end
    ;

// ANCHOR: real_mode
/// The exception bitmap of a guest in real mode: every exception exits.
/// Without unrestricted guest (which needs EPT, beyond 2006), VMX cannot
/// run real mode; rkvm runs it as 16-bit protected mode at CPL 0 with
/// the guest's segments (`guest::real_mode_segment`). An exception there
/// would go through the guest's IVT read as a protected-mode IDT, whose
/// "gates" are garbage: a #GP, then a double fault, then a shutdown, or
/// worse, a jump to wherever the garbage points. Segment loads (`mov ds,
/// ax`, far jumps and calls, `iret`) fault the same way: they read
/// descriptors from the GDT. So every exception exits and goes to
/// userspace as `KVM_EXIT_EXCEPTION`, a clear refusal instead of a
/// shutdown; 2006 ran real mode in virtual-8086 mode and emulated what
/// faults there, which rkvm does from stage 12 (`exit/real_mode.rs`).
/// Page faults are still the MMU's.
const EXCEPTIONS_INTERCEPTED_REAL_MODE: u64 = 0xFFFF_FFFF;

/// The exception bitmap for a guest whose registers are `sregs`.
pub fn exception_bitmap(sregs: &KvmSregs) -> u64 {
    if guest::real_mode(sregs) { EXCEPTIONS_INTERCEPTED_REAL_MODE } else { EXCEPTIONS_INTERCEPTED }
}
// ANCHOR_END: real_mode

/// "If the VMCS link pointer is not in use, software should set it to
/// FFFFFFFF_FFFFFFFFH to avoid VM-entry failures" (SDM Vol. 3C, 25.4.2).
const NO_LINK_POINTER: u64 = u64::MAX;

// ANCHOR: setup_vmcs
/// The fields that never change for a vCPU, written at its first entry:
/// 2006's `vmx_vcpu_setup`.
fn write_setup(vmcs: &mut dyn Fields, controls: &Controls) {
    vmcs.write(PIN_BASED_VM_EXEC_CONTROL, controls.pin.into());
    vmcs.write(CPU_BASED_VM_EXEC_CONTROL, controls.cpu.into());
    vmcs.write(VM_EXIT_CONTROLS, controls.exit.into());
    vmcs.write(VM_ENTRY_CONTROLS, controls.entry.into());
    vmcs.write(EXCEPTION_BITMAP, EXCEPTIONS_INTERCEPTED);
    // Every page fault exits: (error code & 0) == 0 matches all of them.
    vmcs.write(PAGE_FAULT_ERROR_CODE_MASK, 0);
    vmcs.write(PAGE_FAULT_ERROR_CODE_MATCH, 0);
    vmcs.write(CR3_TARGET_COUNT, 0);
    vmcs.write(VM_EXIT_MSR_STORE_COUNT, 0);
    vmcs.write(VM_EXIT_MSR_LOAD_COUNT, 0);
    vmcs.write(VM_ENTRY_MSR_LOAD_COUNT, 0);
    vmcs.write(VM_ENTRY_INTR_INFO_FIELD, 0);
    let cr0_owned = guest::CR0_HOST_OWNED.bits();
    //@ begin 8
    // From stage 08 every CR0 bit is the host's: a guest write that
    // changes any bit exits, so the guest's view in `sregs` is always
    // exact (TS, MP, EM, WP and AM were the guest's before, and a change
    // was lost at the next `write_sregs`), and the module sees WP and PG,
    // on which the shadow depends.
    let cr0_owned = cr0_owned | !guest::CR0_HOST_OWNED.bits();
    //@ end
    vmcs.write(CR0_GUEST_HOST_MASK, cr0_owned);
    vmcs.write(CR4_GUEST_HOST_MASK, u64::MAX);
    vmcs.write(VMCS_LINK_POINTER, NO_LINK_POINTER);
    vmcs.write(GUEST_IA32_DEBUGCTL, 0);
    vmcs.write(GUEST_DR7, 0x400);
    vmcs.write(GUEST_PENDING_DBG_EXCEPTIONS, 0);
    vmcs.write(GUEST_INTERRUPTIBILITY_INFO, 0);
    vmcs.write(GUEST_ACTIVITY_STATE, 0);
    vmcs.write(GUEST_SYSENTER_CS, 0);
    vmcs.write(GUEST_SYSENTER_ESP, 0);
    vmcs.write(GUEST_SYSENTER_EIP, 0);
}
// ANCHOR_END: setup_vmcs

/// `FailEntry`'s reason when the VMCS cannot even be made current, or the
/// CPU is not in VMX operation (one that came online after the module
/// loaded): not a VMX exit reason, which are below 0x10000.
pub const FAIL_NOT_ENTERED: u32 = 0xFFFF_FFFF;
//@ begin 8

/// `FailEntry`'s reason when an event should be delivered to a guest in
/// real mode: it would go through the IVT, which this backend cannot do
/// (see [`EXCEPTIONS_INTERCEPTED_REAL_MODE`]). The module refuses to
/// enter, and userspace hears of it.
pub const FAIL_REAL_MODE_EVENT: u32 = 0xFFFF_FFFE;

// ANCHOR: event
/// An event for the VM-entry event-injection fields (SDM Vol. 3C, 25.8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The VM-entry interruption-information field.
    pub info: u32,
    pub error_code: u32,
    /// The VM-entry instruction length, for software interrupts and
    /// exceptions: the event pushes RIP plus this.
    pub insn_len: u32,
}

/// Interruption types (SDM Vol. 3C, Table 25-17).
const TYPE_SOFTWARE_INTERRUPT: u32 = 4;
const TYPE_PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5;
const TYPE_SOFTWARE_EXCEPTION: u32 = 6;

/// The event to deliver again after an exit that interrupted its
/// delivery, from the IDT-vectoring information field, its error code and
/// the VM-exit instruction length (SDM Vol. 3C, 28.2.4 "Information for
/// VM Exits During Event Delivery"; 27.2.4 for its use on reentry).
/// `None` if no delivery was interrupted. A page fault on an IDT page the
/// shadow has not mapped, during the guest's own #UD or an exception the
/// module injected, is the common case: without this the event is lost.
/// Unlike SVM, VMX gives the length of an `int n`, `int3`, `into` or
/// `int1` whose delivery was cut, so it is injected again with that
/// length (RIP still points at the instruction), rather than run again.
/// Bit 12 is undefined there and reserved in the entry field.
pub fn reinject(idt_vectoring: u32, error_code: u32, exit_insn_len: u32) -> Option<Event> {
    const VALID: u32 = 1 << 31;
    const ERROR_CODE_VALID: u32 = 1 << 11;
    if idt_vectoring & VALID == 0 {
        return None;
    }
    let kind = (idt_vectoring >> 8) & 7;
    let software = matches!(kind, TYPE_SOFTWARE_INTERRUPT | TYPE_PRIVILEGED_SOFTWARE_EXCEPTION | TYPE_SOFTWARE_EXCEPTION);
    Some(Event {
        info: idt_vectoring & (VALID | ERROR_CODE_VALID | 0x7FF),
        error_code: if idt_vectoring & ERROR_CODE_VALID != 0 { error_code } else { 0 },
        insn_len: if software { exit_insn_len } else { 0 },
    })
}
//@ begin 12

/// Whether `event` is a software interrupt (`int n`), the one kind the
/// processor delivers in vm86 (through the redirection bitmap, when an
/// exit cut its delivery short and it goes in again).
fn is_software_interrupt(event: &Event) -> bool {
    (event.info >> 8) & 7 == TYPE_SOFTWARE_INTERRUPT
}
//@ end
// ANCHOR_END: event

// ANCHOR: efer
/// Whether the processor loads EFER at entries and exits by the VMCS's
/// fields; else the VM-entry and VM-exit MSR-load lists do (SDM Vol. 3C,
/// 25.7.2 and 25.8.2; 27.4 and 28.6).
pub fn efer_by_controls(controls: &Controls) -> bool {
    use super::fields::{entry, exit as exit_ctl};
    controls.entry & entry::LOAD_IA32_EFER != 0 && controls.exit & exit_ctl::LOAD_IA32_EFER != 0
}

/// The VM-entry controls for a guest whose EFER is `efer`: "IA-32e mode
/// guest" exactly when its long mode is active, which the guest turns on
/// by itself (`wrmsr` EFER.LME, then CR0.PG). VM entry checks that it
/// equals the EFER.LMA it loads (SDM Vol. 3C, 27.3.1.1).
pub fn entry_controls(base: u32, efer: u64) -> u32 {
    use super::fields::entry;
    if Efer::from_bits_retain(efer).contains(Efer::LMA) { base | entry::IA32E_MODE_GUEST } else { base & !entry::IA32E_MODE_GUEST }
}

/// The MSR-load lists' page: the VM-entry list (the guest's EFER) at
/// offset 0, the VM-exit list (the host's) at offset 16; each entry is
/// the MSR's index, 4 reserved bytes and the value (SDM Vol. 3C, 25.7.2,
/// Table 25-15).
const ENTRY_LIST: usize = 0;
const EXIT_LIST: usize = 16;

/// Writes one MSR-load entry, EFER = `value`, at byte `offset` of `page`.
fn write_efer_entry(page: &Page, offset: usize, value: u64) {
    // SAFETY: the page is the vCPU's own, 4 KiB; both entries lie in its
    // first 32 bytes, 8-byte aligned. The processor reads it only during
    // entries and exits, never while this runs (preemption is off and
    // this vCPU is not in the guest).
    unsafe {
        let entry = page.addr().add(offset);
        entry.cast::<u32>().write(IA32_EFER);
        entry.add(4).cast::<u32>().write(0);
        entry.add(8).cast::<u64>().write(value);
    }
}
// ANCHOR_END: efer
//@ end

impl VmxVcpu {
    /// Makes the VMCS current here and brings it up to date for the
    /// entry: fixed fields, host state, guest state.
    fn prepare(&mut self, entry: &mut Entry<'_>) -> Result<CurrentVmcs, VmExit> {
        if !crate::arch::is_on(entry.cpu) {
            log!(Err, "CPU {} is not in VMX operation (it came online after the module loaded)", entry.cpu);
            return Err(VmExit::FailEntry { hardware_reason: FAIL_NOT_ENTERED });
        }
        self.vmcs.load(entry.cpu).map_err(|e| {
            log!(Err, "VMPTRLD failed: {e:?}");
            VmExit::FailEntry { hardware_reason: FAIL_NOT_ENTERED }
        })?;
        // SAFETY: `load` made our VMCS current; preemption is off.
        let mut vmcs = unsafe { CurrentVmcs::new() };
        if !self.setup_done {
            write_setup(&mut vmcs, &self.controls);
            host::write_constant(&mut vmcs);
            if let Some(value) = self.preemption_timer {
                vmcs.write(VMX_PREEMPTION_TIMER_VALUE, value.into());
            }
            //@ begin 8
            if let Some(page) = &self.efer_msrs {
                vmcs.write(VM_ENTRY_MSR_LOAD_ADDR, page.phys() + ENTRY_LIST as u64);
                vmcs.write(VM_ENTRY_MSR_LOAD_COUNT, 1);
                vmcs.write(VM_EXIT_MSR_LOAD_ADDR, page.phys() + EXIT_LIST as u64);
                vmcs.write(VM_EXIT_MSR_LOAD_COUNT, 1);
            }
            //@ end
            self.setup_done = true;
            self.sregs_dirty = true;
            //@ begin 12
            self.window_exiting_written = false;
            self.dr7_written = None;
            // `write_setup` zeroed the SYSENTER fields.
            self.msrs.rewrite();
            //@ end
        }
        //@ begin 12
        self.msrs.write_fields(&mut vmcs);
        if self.window_exiting != self.window_exiting_written {
            let window = if self.window_exiting { super::fields::cpu::INTERRUPT_WINDOW_EXITING } else { 0 };
            vmcs.write(CPU_BASED_VM_EXEC_CONTROL, (self.controls.cpu | window).into());
            self.window_exiting_written = self.window_exiting;
        }
        //@ end
        if self.host_cpu != Some(entry.cpu) {
            host::write_per_cpu(&mut vmcs);
            //@ begin 8
            // The host's EFER, which every exit puts back.
            let host_efer = host::efer();
            match &self.efer_msrs {
                Some(page) => write_efer_entry(page, EXIT_LIST, host_efer),
                None => vmcs.write(HOST_IA32_EFER, host_efer),
            }
            //@ end
            self.host_cpu = Some(entry.cpu);
        }
        host::write_per_entry(&mut vmcs);
        if self.sregs_dirty {
            guest::write_sregs(&mut vmcs, &self.sregs, &self.fixed);
            //@ begin 12
            self.write_real_mode(&mut vmcs);
            //@ end
            vmcs.write(EXCEPTION_BITMAP, exception_bitmap(&self.sregs));
            //@ begin 8
            let efer = guest::hardware_efer(self.sregs.efer);
            match &self.efer_msrs {
                Some(page) => write_efer_entry(page, ENTRY_LIST, efer),
                None => vmcs.write(GUEST_IA32_EFER, efer),
            }
            vmcs.write(VM_ENTRY_CONTROLS, entry_controls(self.controls.entry, self.sregs.efer).into());
            //@ end
            self.sregs_dirty = false;
        }
        //@ begin 12
        if self.dr7_written != Some(self.debug.dr7) {
            vmcs.write(GUEST_DR7, self.debug.dr7);
            self.dr7_written = Some(self.debug.dr7);
        }
        let shadow = !self.clear_interrupt_shadow && self.interruptibility & 3 != 0;
        //@ end
        if self.clear_interrupt_shadow {
            vmcs.write(GUEST_INTERRUPTIBILITY_INFO, 0);
            self.clear_interrupt_shadow = false;
        }
        //@ begin 12
        if core::mem::take(&mut self.drop_pending_step) {
            let pending = vmcs.read(GUEST_PENDING_DBG_EXCEPTIONS);
            if pending & crate::debug::DR6_BS != 0 {
                vmcs.write(GUEST_PENDING_DBG_EXCEPTIONS, pending & !crate::debug::DR6_BS);
            }
        }
        if shadow {
            // Under an `sti` or `mov ss` shadow, VM entry insists that a
            // single-step trap is pending exactly when RFLAGS.TF is set
            // (SDM Vol. 3C, 27.3.1.5 "Checks on Guest Non-Register
            // State"): a debugger may have set or cleared TF since the
            // exit.
            let pending = vmcs.read(GUEST_PENDING_DBG_EXCEPTIONS);
            let bs = crate::debug::DR6_BS;
            let wanted = if *entry.rflags & crate::debug::RFLAGS_TF != 0 { pending | bs } else { pending & !bs };
            if wanted != pending {
                vmcs.write(GUEST_PENDING_DBG_EXCEPTIONS, wanted);
            }
        }
        //@ end
        //@ begin 8
        if let Some(event) = self.queued_event.take() {
            let deliverable = !guest::real_mode(&self.sregs);
            //@ begin 12
            let deliverable = deliverable || self.vm86 && is_software_interrupt(&event);
            //@ end
            if !deliverable {
                log!(Err, "an event for a real-mode guest, which VMX without unrestricted guest cannot deliver: {event:?}");
                return Err(VmExit::FailEntry { hardware_reason: FAIL_REAL_MODE_EVENT });
            }
            vmcs.write(VM_ENTRY_INTR_INFO_FIELD, event.info.into());
            vmcs.write(VM_ENTRY_EXCEPTION_ERROR_CODE, event.error_code.into());
            vmcs.write(VM_ENTRY_INSTRUCTION_LEN, event.insn_len.into());
            self.deliver_db_dr6(event.info);
        }
        //@ end
        vmcs.write(GUEST_CR3, entry.mmu_root);
        vmcs.write(GUEST_RIP, *entry.rip);
        vmcs.write(GUEST_RSP, entry.regs[Reg::Rsp as usize]);
        vmcs.write(GUEST_RFLAGS, *entry.rflags);
        //@ begin 12
        if self.vm86 {
            // VM and IOPL 3 for the hardware; the guest's IOPL kept apart.
            self.vm86_iopl = *entry.rflags & guest::RFLAGS_IOPL;
            vmcs.write(GUEST_RFLAGS, guest::vm86_rflags(*entry.rflags));
        }
        //@ end
        Ok(vmcs)
    }

    /// What the exit left in the VMCS, read once.
    fn exit_info(&self, vmcs: &CurrentVmcs, entry: &Entry<'_>) -> ExitInfo {
        let reason = vmcs.read(VM_EXIT_REASON) as u32;
        //@ begin 5 until 6
        let _ = entry;
        //@ end
        ExitInfo {
            reason,
            qualification: vmcs.read(EXIT_QUALIFICATION),
            intr_info: vmcs.read(VM_EXIT_INTR_INFO) as u32,
            intr_error_code: vmcs.read(VM_EXIT_INTR_ERROR_CODE) as u32,
            insn_len: vmcs.read(VM_EXIT_INSTRUCTION_LEN) as u32,
            //@ begin 6
            guest_linear_address: if reason as u16 == exit::reason::IO_INSTRUCTION {
                vmcs.read(GUEST_LINEAR_ADDRESS)
            } else {
                0
            },
            rax: entry.regs[Reg::Rax as usize],
            rcx: entry.regs[Reg::Rcx as usize],
            rflags: *entry.rflags,
            address_mask: if reason as u16 == exit::reason::IO_INSTRUCTION { self.address_mask(vmcs, entry) } else { 0 },
            //@ end
        }
    }

    //@ begin 6
    // ANCHOR: address_mask
    /// The address size of an `ins` or `outs`, as a mask: what the
    /// processor reports in the VM-exit instruction-information field
    /// where it does (IA32_VMX_BASIC bit 54), else the code segment's
    /// default switched by a 0x67 prefix, read from the instruction (as
    /// the SVM backend does). CS.D alone is wrong for `rep insw` with 0x67
    /// in 16-bit code, whose addresses are 32 bits wide.
    fn address_mask(&self, vmcs: &CurrentVmcs, entry: &Entry<'_>) -> u64 {
        if self.ins_outs_info
            && let Some(mask) = exit::address_mask_from_info(vmcs.read(VMX_INSTRUCTION_INFO) as u32)
        {
            return mask;
        }
        let cs = &self.sregs.cs;
        let long = Efer::from_bits_retain(self.sregs.efer).contains(Efer::LMA) && cs.l != 0;
        let mut bytes = [0u8; 15];
        let linear = cs.base.wrapping_add(*entry.rip);
        let linear = if long { linear } else { linear & 0xFFFF_FFFF };
        let mut len = 0;
        for (i, byte) in bytes.iter_mut().enumerate() {
            if !entry.fetch.read_linear(linear.wrapping_add(i as u64), core::slice::from_mut(byte)) {
                break;
            }
            len = i + 1;
        }
        let prefix = exit::has_address_size_prefix(bytes.get(..len).unwrap_or(&[]), long);
        exit::address_mask(long, cs.db != 0, prefix)
    }
    // ANCHOR_END: address_mask
    //@ end
    //@ begin 8

    /// A #DB about to be delivered as a hardware exception finds in DR6
    /// what the processor would have put there.
    fn deliver_db_dr6(&mut self, info: u32) {
        const DR6_FIXED_1: u64 = 0xFFFF_0FF0;
        if info & 0x7FF == 1 | 3 << 8 {
            self.load_dr6 = Some(DR6_FIXED_1 | self.db_dr6);
        }
    }

    /// After an exit: an event whose delivery it cut short goes again at
    /// the next entry, and a #DB's DR6 bits and an `int1`'s length are
    /// kept for its reflection.
    fn after_exit(&mut self, vmcs: &CurrentVmcs, info: &ExitInfo) {
        //@ begin 12
        self.interruptibility = vmcs.read(GUEST_INTERRUPTIBILITY_INFO) as u32;
        //@ end
        self.queued_event = reinject(
            vmcs.read(IDT_VECTORING_INFO_FIELD) as u32,
            vmcs.read(IDT_VECTORING_ERROR_CODE) as u32,
            info.insn_len,
        );
        //@ begin 12
        // In real mode the processor delivers only vm86's `int n`, through
        // the redirection bitmap; in 16-bit protected mode an `int n` goes
        // to the IVT read as an IDT and faults, and the exit handler
        // emulates the `int n` itself (`exit/real_mode.rs`).
        if guest::real_mode(&self.sregs) && !self.queued_event.is_some_and(|e| self.vm86 && is_software_interrupt(&e)) {
            self.queued_event = None;
        }
        //@ end
        self.icebp_len = None;
        if info.reason == u32::from(exit::reason::EXCEPTION_NMI)
            && let Some(intr) = exit::Interruption::from_field(info.intr_info)
            && intr.vector == 1
        {
            // Table 28-1 (SDM Vol. 3C, 28.2.1): B0-B3, BD, BS.
            self.db_dr6 = info.qualification & 0x600F;
            if u32::from(intr.kind) == TYPE_PRIVILEGED_SOFTWARE_EXCEPTION {
                self.icebp_len = Some(info.insn_len);
            }
        }
    }
    //@ end
    //@ begin 12

    // ANCHOR: write_real_mode
    /// After `write_sregs`: a real-mode guest whose six segments fit runs
    /// in virtual-8086 mode on the TSS generic code wrote, as 2006's
    /// `enter_rmode` ran every real-mode guest. One whose segments do not
    /// (a base or limit kept from protected mode: "unreal" mode), or that
    /// has no TSS, runs as 16-bit protected mode at CPL 0, as before
    /// stage 12 (`real_mode_segment`).
    fn write_real_mode(&mut self, vmcs: &mut dyn Fields) {
        self.vm86 = false;
        if !guest::real_mode(&self.sregs) || !guest::runs_in_vm86(&self.sregs) {
            return;
        }
        if let Some(tss) = self.real_mode_tss {
            guest::write_vm86(vmcs, &self.sregs, tss, &self.fixed);
            self.vm86 = true;
        }
    }
    // ANCHOR_END: write_real_mode

    /// Whether the guest runs in long mode (EFER.LMA), which it enters
    /// only through exits (`wrmsr` EFER, `mov cr0`).
    fn long_mode(&self) -> bool {
        Efer::from_bits_retain(self.sregs.efer).contains(Efer::LMA)
    }
    //@ end
}

/// The number a failed VM-entry instruction reports in `exit_reason`: the
/// VM-instruction error number for VMfailValid, as 2006 did.
fn fail_reason(e: VmxError) -> u32 {
    match e {
        VmxError::FailValid(n) => n.0,
        VmxError::FailInvalid => FAIL_NOT_ENTERED,
    }
}
//@ end

impl ArchVcpu for VmxVcpu {
    //@ begin 5
    fn get_sregs(&self, sregs: &mut KvmSregs) {
        let s = &self.sregs;
        (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (s.cs, s.ds, s.es, s.fs, s.gs, s.ss);
        (sregs.tr, sregs.ldt, sregs.gdt, sregs.idt) = (s.tr, s.ldt, s.gdt, s.idt);
        (sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer) = (s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
    }

    fn set_sregs(&mut self, sregs: &KvmSregs) {
        let s = &mut self.sregs;
        (s.cs, s.ds, s.es, s.fs, s.gs, s.ss) = (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss);
        (s.tr, s.ldt, s.gdt, s.idt) = (sregs.tr, sregs.ldt, sregs.gdt, sregs.idt);
        (s.cr0, s.cr2, s.cr3, s.cr4, s.efer) = (sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer);
        self.sregs_dirty = true;
    }

    // ANCHOR: run
    /// One entry and one exit: 2006's `vmx_vcpu_run` without its loop.
    fn run(&mut self, entry: &mut Entry<'_>) -> VmExit {
        let vmcs = match self.prepare(entry) {
            Ok(vmcs) => vmcs,
            Err(exit) => return exit,
        };
        let host_segments = HostSegments::save();
        self.fpu.load();
        cpu::irq_disable();
        let host_debug = host::HostDebug::save();
        //@ begin 12
        // The guest's breakpoints, with the host's off until its own
        // addresses are back, below, before its DR7.
        let host_breakpoints = self.debug.db.map(|guest| {
            let host = read_breakpoints();
            // SAFETY: interrupts are off; DR7 enables nothing while the
            // guest's addresses are loaded (the exit leaves it 0x400).
            unsafe {
                write_dr7(crate::debug::DR7_RESET);
                write_breakpoints(&guest);
            }
            host
        });
        //@ end
        //@ begin 8
        let host_dr6 = self.load_dr6.take().map(|dr6| {
            let host = host::dr6();
            // SAFETY: interrupts are off until the host's value is back.
            unsafe { host::set_dr6(dr6) };
            host
        });
        //@ end
        //@ begin 12
        // ANCHOR: vmx_swap
        // The SYSCALL MSRs and KERNEL_GS_BASE matter only to a guest in
        // long mode: elsewhere `syscall`, `sysret` and `swapgs` are #UD on
        // Intel's processors (SDM Vol. 2), and `rdmsr`/`wrmsr` always exit.
        // SAFETY: interrupts are off until `swap_out` below, which every
        // return from `enter` reaches, a failed entry's too.
        let host_msrs = self.long_mode().then(|| unsafe { self.msrs.swap_in() });
        // ANCHOR_END: vmx_swap
        //@ end
        // SAFETY: our VMCS is current with host and guest state written by
        // `prepare`; interrupts are off; what the exit does not restore is
        // restored right below.
        let result = unsafe { entry::enter(entry.regs, self.vmcs.launched, &mut self.sregs.cr2) };
        //@ begin 12
        if let Some(host) = host_msrs {
            // SAFETY: `host` came from `swap_in` above, on this CPU, with
            // interrupts off since.
            unsafe { self.msrs.swap_out(host) };
        }
        //@ end
        host_segments.restore();
        //@ begin 12
        if let Some(host) = host_breakpoints {
            // SAFETY: the host's own values, read above on this CPU, back
            // before its DR7.
            unsafe { write_breakpoints(&host) };
        }
        //@ end
        host_debug.restore();
        //@ begin 8
        if let Some(dr6) = host_dr6 {
            // SAFETY: the host's own value, read above on this CPU.
            unsafe { host::set_dr6(dr6) };
        }
        //@ end
        if result.is_ok() && exit::is_host_nmi(vmcs.read(VM_EXIT_REASON) as u32, vmcs.read(VM_EXIT_INTR_INFO) as u32) {
            entry::host_nmi();
        }
        cpu::irq_enable();
        self.fpu.save();
        if let Err(fail) = result {
            // SAFETY: VMfailValid proves a current VMCS.
            let e = entry::entry_error(fail, || unsafe { insn::vmread(insn::VM_INSTRUCTION_ERROR) }.map_or(0, |v| v as u32));
            log!(Err, "VM entry failed: {e:?}");
            return VmExit::FailEntry { hardware_reason: fail_reason(e) };
        }
        *entry.rip = vmcs.read(GUEST_RIP);
        entry.regs[Reg::Rsp as usize] = vmcs.read(GUEST_RSP);
        *entry.rflags = vmcs.read(GUEST_RFLAGS);
        //@ begin 12
        self.exit_tf = *entry.rflags & crate::debug::RFLAGS_TF != 0;
        if self.vm86 {
            *entry.rflags = guest::rflags_after_vm86(*entry.rflags, self.vm86_iopl);
        }
        let before = self.sregs;
        //@ end
        guest::read_sregs(&vmcs, &mut self.sregs);
        //@ begin 12
        if guest::real_mode(&before) && guest::read_real_mode(&mut self.sregs, &before, self.vm86) {
            self.sregs_dirty = true;
        }
        //@ end
        let info = self.exit_info(&vmcs, entry);
        if info.reason & exit::FAILED_VMENTRY == 0 {
            self.vmcs.launched = true;
            //@ begin 8
            self.after_exit(&vmcs, &info);
            if info.reason == u32::from(exit::reason::TRIPLE_FAULT) {
                // A shutdown: generic code resets the vCPU, and nothing is
                // left to deliver.
                self.queued_event = None;
                //@ begin 12
                // The MSRs start over too, as SVM's new VMCB does.
                self.msrs = GuestMsrs::new();
                //@ end
            }
            //@ end
        }
        exit::decode(&info)
    }
    // ANCHOR_END: run

    fn skip_instruction(&mut self, rip: &mut u64, len: u8) {
        let long = Efer::from_bits_retain(self.sregs.efer).contains(Efer::LMA) && self.sregs.cs.l != 0;
        let next = rip.wrapping_add(u64::from(len));
        *rip = if long { next } else { next & 0xFFFF_FFFF };
        self.clear_interrupt_shadow = true;
        //@ begin 12
        self.drop_pending_step |= self.exit_tf;
        //@ end
    }
    //@ end
    //@ begin 8

    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let mut event = Event { info: entry_interruption(vector, error_code.is_some()), error_code: error_code.unwrap_or(0), insn_len: 0 };
        if vector == 1
            && let Some(len) = self.icebp_len.take()
        {
            // `int1` reflected: a privileged software exception again,
            // which pushes the address after the instruction.
            event = Event { info: event.info & !(7 << 8) | TYPE_PRIVILEGED_SOFTWARE_EXCEPTION << 8, error_code: 0, insn_len: len };
        }
        self.queued_event = Some(event);
    }

    fn pending_exception(&self) -> Option<u8> {
        const TYPE_HARDWARE_EXCEPTION: u32 = 3;
        let e = self.queued_event.as_ref()?;
        ((e.info >> 8) & 7 == TYPE_HARDWARE_EXCEPTION).then_some(e.info as u8)
    }

    fn clear_pending_event(&mut self) {
        self.queued_event = None;
    }
    //@ end
    //@ begin 12

    // ANCHOR: vmx_interrupts
    fn interrupt_allowed(&self) -> bool {
        // In real mode generic code delivers the interrupt (see
        // `delivers_events`), under the same rules.
        let shadow = !self.clear_interrupt_shadow && self.interruptibility & 3 != 0;
        !shadow && self.queued_event.is_none()
    }

    fn inject_interrupt(&mut self, vector: u8) {
        // Type 0, "external interrupt" (SDM Vol. 3C, Table 25-17).
        const VALID: u32 = 1 << 31;
        self.queued_event = Some(Event { info: u32::from(vector) | VALID, error_code: 0, insn_len: 0 });
    }

    fn set_window_exiting(&mut self, on: bool) {
        self.window_exiting = on;
    }
    // ANCHOR_END: vmx_interrupts

    // ANCHOR: vmx_msrs
    /// The segment bases are the guest's `sregs`; every other MSR the
    /// backend keeps is in `msrs` (`msrs::home` says where each lives).
    fn get_msr(&self, index: u32) -> Option<u64> {
        use crate::exit::msr::index::*;
        match index {
            FS_BASE => Some(self.sregs.fs.base),
            GS_BASE => Some(self.sregs.gs.base),
            _ => self.msrs.get(index, msrs::host_tsc()),
        }
    }

    fn set_msr(&mut self, index: u32, value: u64) -> bool {
        use crate::exit::msr::{canonical, index::*};
        match index {
            FS_BASE | GS_BASE if !canonical(value) => return false,
            FS_BASE => self.sregs.fs.base = value,
            GS_BASE => self.sregs.gs.base = value,
            _ => return self.msrs.set(index, value, msrs::host_tsc()),
        }
        self.sregs_dirty = true;
        true
    }
    // ANCHOR_END: vmx_msrs

    // ANCHOR: vmx_real_mode
    fn delivers_events(&self) -> bool {
        // In vm86 (and in 16-bit protected mode) every event would go
        // through the protected-mode IDT: generic code delivers it.
        !guest::real_mode(&self.sregs)
    }

    fn wants_real_mode_tss(&self) -> bool {
        guest::real_mode(&self.sregs)
    }

    fn set_real_mode_tss(&mut self, base: Option<u64>) {
        if self.real_mode_tss != base {
            self.real_mode_tss = base;
            self.sregs_dirty = true;
        }
    }
    // ANCHOR_END: vmx_real_mode

    fn set_debug_registers(&mut self, hw: crate::debug::Hardware) {
        self.debug = hw;
    }
    //@ end
}

//@ begin 8
// ANCHOR: entry_interruption
/// The VM-entry interruption-information field that delivers hardware
/// exception `vector` (SDM Vol. 3C, 25.8.3 "VM-Entry Controls for Event
/// Injection", Table 25-17): the vector in bits 7:0, type 3 ("hardware
/// exception") in bits 10:8, "deliver error code" in bit 11, valid in bit
/// 31. A successful entry clears the valid bit (SDM Vol. 3C, 27.2).
pub fn entry_interruption(vector: u8, has_error_code: bool) -> u32 {
    const VALID: u32 = 1 << 31;
    const TYPE_HARDWARE_EXCEPTION: u32 = 3 << 8;
    const DELIVER_ERROR_CODE: u32 = 1 << 11;
    u32::from(vector) | TYPE_HARDWARE_EXCEPTION | if has_error_code { DELIVER_ERROR_CODE } else { 0 } | VALID
}
// ANCHOR_END: entry_interruption
//@ end

//@ begin 5
#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::vmx::guest::tests::FakeVmcs;

    #[test]
    fn setup_intercepts_page_faults_and_owns_cr4() {
        let mut vmcs = FakeVmcs::default();
        let controls = Controls { pin: 9, cpu: 0x0100_8080, exit: 0x200, entry: 0 };
        write_setup(&mut vmcs, &controls);
        assert_eq!(vmcs.read(EXCEPTION_BITMAP) & 1 << 14, 1 << 14);
        assert_eq!(vmcs.read(CR4_GUEST_HOST_MASK), u64::MAX);
        let owned = guest::CR0_HOST_OWNED.bits();
        assert_eq!(vmcs.read(CR0_GUEST_HOST_MASK) & owned, owned);
        assert_eq!(vmcs.read(VMCS_LINK_POINTER), u64::MAX);
        assert_eq!(vmcs.read(CPU_BASED_VM_EXEC_CONTROL), 0x0100_8080);
        assert_eq!(vmcs.read(GUEST_DR7), 0x400);
    }

    #[test]
    fn real_mode_intercepts_every_exception() {
        let real = KvmSregs { cr0: 0x10, ..KvmSregs::default() };
        assert_eq!(exception_bitmap(&real), 0xFFFF_FFFF);
        let prot = KvmSregs { cr0: 0x11, ..real };
        assert_eq!(exception_bitmap(&prot) & 1 << 14, 1 << 14);
        assert_eq!(exception_bitmap(&prot) & 1 << 6, 0, "#UD goes to the guest's IDT");
    }

    #[test]
    fn the_preemption_timer_lasts_ten_milliseconds() {
        // A 2 GHz TSC, the timer ticking every 32 TSC cycles (X = 5).
        assert_eq!(preemption_timer_value(2_000_000, 5), 625_000);
        assert_eq!(preemption_timer_value(10_000, 0), 100_000);
        assert_eq!(preemption_timer_value(u64::MAX, 0), u32::MAX);
        assert_eq!(preemption_timer_value(0, 0), 1);
    }

    //@ begin 8
    #[test]
    fn exceptions_are_injected_as_hardware_exceptions() {
        assert_eq!(entry_interruption(14, true), 0x8000_0B0E);
        assert_eq!(entry_interruption(6, false), 0x8000_0306);
    }

    #[test]
    fn stage_8_owns_all_of_cr0_and_intercepts_db_and_ac() {
        let mut vmcs = FakeVmcs::default();
        write_setup(&mut vmcs, &Controls { pin: 9, cpu: 0x0100_8080, exit: 0x200, entry: 0 });
        assert_eq!(vmcs.read(CR0_GUEST_HOST_MASK), u64::MAX, "no CR0 bit changes without an exit");
        assert_eq!(EXCEPTIONS_INTERCEPTED & !(1 << 18), 1 << 1 | 1 << 14 | 1 << 17);
    }

    //@ begin 13
    #[test]
    fn machine_checks_exit() {
        assert_ne!(EXCEPTIONS_INTERCEPTED & 1 << 18, 0);
    }

    //@ end
    #[test]
    fn interrupted_deliveries_are_delivered_again() {
        // A #PF exit while the guest's #UD was being delivered.
        let ud = reinject(1 << 31 | 3 << 8 | 6, 0x55, 2);
        assert_eq!(ud, Some(Event { info: 0x8000_0306, error_code: 0, insn_len: 0 }));
        // A #GP with its error code, bit 12 (undefined) dropped.
        let gp = reinject(1 << 31 | 1 << 12 | 1 << 11 | 3 << 8 | 13, 0x18, 3);
        assert_eq!(gp, Some(Event { info: 0x8000_0B0D, error_code: 0x18, insn_len: 0 }));
        // int 0x21 (2 bytes): injected again with its length.
        assert_eq!(reinject(1 << 31 | 4 << 8 | 0x21, 0, 2), Some(Event { info: 0x8000_0421, error_code: 0, insn_len: 2 }));
        assert_eq!(reinject(1 << 31 | 6 << 8 | 3, 0, 1).map(|e| e.insn_len), Some(1), "int3");
        assert_eq!(reinject(0x0000_0B0E, 0, 0), None, "not valid");
    }

    #[test]
    fn the_entry_controls_follow_the_guests_long_mode() {
        assert_eq!(entry_controls(0x11FB, 0x500), 0x11FB | 1 << 9);
        assert_eq!(entry_controls(0x11FB | 1 << 9, 0x100), 0x11FB, "LME alone is not long mode");
        let with = Controls { pin: 0, cpu: 0, exit: 1 << 21 | 1 << 20, entry: 1 << 15 };
        assert!(efer_by_controls(&with));
        assert!(!efer_by_controls(&Controls { entry: 0, ..with }), "else the MSR-load lists");
    }

    #[test]
    fn efer_msr_load_entries_have_the_msr_format() {
        let page = Page::alloc_zeroed().expect("a page");
        write_efer_entry(&page, EXIT_LIST, 0xD01);
        // SAFETY: the test's own page.
        let words = unsafe { core::slice::from_raw_parts(page.addr().cast::<u32>(), 8) };
        assert_eq!(words, [0, 0, 0, 0, 0xC000_0080, 0, 0xD01, 0]);
    }
    //@ end

    #[test]
    fn failed_entries_report_the_instruction_error() {
        let e = VmxError::FailValid(insn::InstructionError::ENTRY_INVALID_HOST_STATE_FIELD);
        assert_eq!(fail_reason(e), 8);
        assert_eq!(fail_reason(VmxError::FailInvalid), FAIL_NOT_ENTERED);
    }
}
//@ end
