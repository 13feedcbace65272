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
use crate::regs::Reg;
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
    //@ begin 8
    /// The VM-entry interruption information (and error code) of an
    /// exception queued for the next entry.
    queued_event: Option<(u32, u32)>,
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
            //@ begin 8
            queued_event: None,
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

/// The exception bitmap: only page faults (vector 14) exit. Every guest
/// runs on the module's page table, so a page fault means a page to map
/// (or, from stage 10, MMIO); every other exception goes to the guest's
/// own IDT, as on bare hardware.
const EXCEPTIONS_INTERCEPTED: u64 = 1 << 14;

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
    vmcs.write(CR0_GUEST_HOST_MASK, guest::CR0_HOST_OWNED);
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
            self.setup_done = true;
            self.sregs_dirty = true;
        }
        if self.host_cpu != Some(entry.cpu) {
            host::write_per_cpu(&mut vmcs);
            self.host_cpu = Some(entry.cpu);
        }
        host::write_per_entry(&mut vmcs);
        if self.sregs_dirty {
            guest::write_sregs(&mut vmcs, &self.sregs, &self.fixed);
            self.sregs_dirty = false;
        }
        if self.clear_interrupt_shadow {
            vmcs.write(GUEST_INTERRUPTIBILITY_INFO, 0);
            self.clear_interrupt_shadow = false;
        }
        //@ begin 8
        if let Some((info, error_code)) = self.queued_event.take() {
            vmcs.write(VM_ENTRY_INTR_INFO_FIELD, info.into());
            vmcs.write(VM_ENTRY_EXCEPTION_ERROR_CODE, error_code.into());
        }
        //@ end
        vmcs.write(GUEST_CR3, entry.mmu_root);
        vmcs.write(GUEST_RIP, *entry.rip);
        vmcs.write(GUEST_RSP, entry.regs[Reg::Rsp as usize]);
        vmcs.write(GUEST_RFLAGS, *entry.rflags);
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
            address_mask: self.address_mask(),
            //@ end
        }
    }

    //@ begin 6
    /// The bits of an index register the guest's code uses: 64 in 64-bit
    /// code, 32 with CS.D set, else 16.
    fn address_mask(&self) -> u64 {
        const EFER_LMA: u64 = 1 << 10;
        let cs = &self.sregs.cs;
        if self.sregs.efer & EFER_LMA != 0 && cs.l != 0 {
            u64::MAX
        } else if cs.db != 0 {
            0xFFFF_FFFF
        } else {
            0xFFFF
        }
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
        // SAFETY: our VMCS is current with host and guest state written by
        // `prepare`; interrupts are off; what the exit does not restore is
        // restored right below.
        let result = unsafe { entry::enter(entry.regs, self.vmcs.launched) };
        host_segments.restore();
        host_debug.restore();
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
        guest::read_sregs(&vmcs, &mut self.sregs);
        let info = self.exit_info(&vmcs, entry);
        if info.reason & exit::FAILED_VMENTRY == 0 {
            self.vmcs.launched = true;
        }
        exit::decode(&info)
    }
    // ANCHOR_END: run

    fn skip_instruction(&mut self, rip: &mut u64, len: u8) {
        const EFER_LMA: u64 = 1 << 10;
        let long = self.sregs.efer & EFER_LMA != 0 && self.sregs.cs.l != 0;
        let next = rip.wrapping_add(u64::from(len));
        *rip = if long { next } else { next & 0xFFFF_FFFF };
        self.clear_interrupt_shadow = true;
    }
    //@ end
    //@ begin 8

    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.queued_event = Some((entry_interruption(vector, error_code.is_some()), error_code.unwrap_or(0)));
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
        assert_eq!(vmcs.read(EXCEPTION_BITMAP), 1 << 14);
        assert_eq!(vmcs.read(CR4_GUEST_HOST_MASK), u64::MAX);
        assert_eq!(vmcs.read(VMCS_LINK_POINTER), u64::MAX);
        assert_eq!(vmcs.read(CPU_BASED_VM_EXEC_CONTROL), 0x0100_8080);
        assert_eq!(vmcs.read(GUEST_DR7), 0x400);
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
    //@ end

    #[test]
    fn failed_entries_report_the_instruction_error() {
        let e = VmxError::FailValid(insn::InstructionError::ENTRY_INVALID_HOST_STATE_FIELD);
        assert_eq!(fail_reason(e), 8);
        assert_eq!(fail_reason(VmxError::FailInvalid), FAIL_NOT_ENTERED);
    }
}
//@ end
