//@ stage 5
//! The host-state area (SDM Vol. 3C, 25.5 "Host-State Area"): where the
//! processor returns after a VM exit. "VM exits load processor state from
//! the host-state area" (SDM Vol. 3C, 28.5 "Loading Host State"): control
//! registers, the segment selectors and the bases of FS, GS, TR, GDTR and
//! IDTR, the SYSENTER MSRs, and RSP and RIP (written by `entry.rs`).
//!
//! Some of it differs per CPU (TR, GDTR, the SYSENTER stack, GS base),
//! some per task (CR3, FS base); both are rewritten when the VMCS moves
//! to another CPU and before every entry respectively.

use super::fields::*;
use super::guest::Fields;
use crate::arch::x86::{rdmsr, read_dr7, write_dr7, wrmsr};
use crate::kernel::cpu;
//@ begin 8
use core::arch::asm;
//@ end
use x86::dtables::{DescriptorTablePointer, sgdt, sidt};
use x86::msr::{IA32_DEBUGCTL, IA32_FS_BASE, IA32_GS_BASE, IA32_SYSENTER_CS, IA32_SYSENTER_EIP, IA32_SYSENTER_ESP};

fn gdt_base() -> u64 {
    let mut dt = DescriptorTablePointer::<u8>::default();
    // SAFETY: `sgdt` stores the GDTR's limit and base into `dt`.
    unsafe { sgdt(&mut dt) };
    dt.base as u64
}

fn idt_base() -> u64 {
    let mut dt = DescriptorTablePointer::<u8>::default();
    // SAFETY: `sidt` stores the IDTR's limit and base into `dt`.
    unsafe { sidt(&mut dt) };
    dt.base as u64
}

fn msr(number: u32) -> u64 {
    // SAFETY: every MSR read here exists on any processor with VMX.
    unsafe { rdmsr(number) }
}

// ANCHOR: host_constant
/// The host state that is the same on every CPU and for every task:
/// written once, when the VMCS is first loaded. Selectors must have RPL
/// and TI clear, so DS, ES, FS and GS are 0 and are put back after each
/// exit by `HostSegments::restore` (SDM Vol. 3C, 27.2.3 "Checks on
/// Host Segment and Descriptor-Table Registers").
pub fn write_constant(vmcs: &mut dyn Fields) {
    vmcs.write(HOST_CS_SELECTOR, u64::from(x86::segmentation::cs().bits() & 0xF8));
    vmcs.write(HOST_SS_SELECTOR, u64::from(x86::segmentation::ss().bits() & 0xF8));
    for field in [HOST_DS_SELECTOR, HOST_ES_SELECTOR, HOST_FS_SELECTOR, HOST_GS_SELECTOR] {
        vmcs.write(field, 0);
    }
    // SAFETY: `str` reads the task register's selector.
    let tr = unsafe { x86::task::tr() };
    vmcs.write(HOST_TR_SELECTOR, u64::from(tr.bits()));
    vmcs.write(HOST_IA32_SYSENTER_CS, msr(IA32_SYSENTER_CS));
    vmcs.write(HOST_IA32_SYSENTER_EIP, msr(IA32_SYSENTER_EIP));
    vmcs.write(HOST_IDTR_BASE, idt_base());
    vmcs.write(HOST_CR0, super::read_cr0());
}
// ANCHOR_END: host_constant

// ANCHOR: host_per_cpu
/// The host state of this CPU: its TSS, GDT, GS base (the per-CPU area)
/// and SYSENTER stack. Written whenever the VMCS comes to this CPU.
pub fn write_per_cpu(vmcs: &mut dyn Fields) {
    vmcs.write(HOST_TR_BASE, cpu::host_tr_base());
    vmcs.write(HOST_GDTR_BASE, gdt_base());
    vmcs.write(HOST_GS_BASE, msr(IA32_GS_BASE));
    vmcs.write(HOST_IA32_SYSENTER_ESP, msr(IA32_SYSENTER_ESP));
}

/// The host state of this task: its page table, its CR4 (Linux changes a
/// few bits per task) and its FS base (the thread's TLS). Written before
/// every entry.
pub fn write_per_entry(vmcs: &mut dyn Fields) {
    // SAFETY: reading CR3 has no side effects; the module runs at CPL 0.
    vmcs.write(HOST_CR3, unsafe { x86::controlregs::cr3() });
    vmcs.write(HOST_CR4, cpu::read_cr4());
    vmcs.write(HOST_FS_BASE, msr(IA32_FS_BASE));
}
// ANCHOR_END: host_per_cpu

// ANCHOR: host_debug
/// The host's debug state, which a VM exit resets: "DR7 is set to 400H" and
/// "the IA32_DEBUGCTL MSR is cleared to 00H" (SDM Vol. 3C, 28.5.1 "Loading
/// Host Control Registers, Debug Registers, MSRs"). A host process's
/// hardware breakpoints (ptrace) or branch recording (perf) would be lost;
/// like Linux's KVM, rkvm saves both before the entry and puts back what
/// is not already the reset value.
pub struct HostDebug {
    dr7: u64,
    debugctl: u64,
}

impl HostDebug {
    pub fn save() -> HostDebug {
        HostDebug { dr7: read_dr7(), debugctl: msr(IA32_DEBUGCTL) }
    }

    pub fn restore(&self) {
        if self.dr7 != 0x400 {
            // SAFETY: the value is the one this CPU had before the entry.
            unsafe { write_dr7(self.dr7) };
        }
        if self.debugctl != 0 {
            // SAFETY: as above.
            unsafe { wrmsr(IA32_DEBUGCTL, self.debugctl) };
        }
    }
}
// ANCHOR_END: host_debug
//@ begin 8

/// The host's IA32_EFER, which every exit loads again.
pub fn efer() -> u64 {
    msr(x86::msr::IA32_EFER)
}

/// DR6, the debug status register. Written by hand, as [`set_dr6`]: the
/// `x86` crate's `dr6()` keeps only the bits its type names, and the
/// host's DR6 must come back exactly.
pub fn dr6() -> u64 {
    let dr6: u64;
    // SAFETY: reading DR6 has no side effects; the module runs at CPL 0.
    unsafe { asm!("mov {}, dr6", out(reg) dr6, options(nostack, nomem)) };
    dr6
}

/// Loads DR6.
///
/// # Safety
/// Interrupts must be off, and the host's value must be put back before
/// they are on again: Linux reads DR6 in its #DB handler.
pub unsafe fn set_dr6(value: u64) {
    // SAFETY: writing DR6 only changes what the next #DB handler reads;
    // the caller puts the host's value back.
    unsafe { asm!("mov dr6, {}", in(reg) value, options(nostack, nomem)) };
}
//@ end
