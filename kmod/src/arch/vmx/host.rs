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
use super::insn;
use crate::kernel::cpu;
use core::arch::asm;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_IA32_DEBUGCTL: u32 = 0x1D9;
const MSR_GS_BASE: u32 = 0xC000_0101;

/// The operand of `sgdt`/`sidt`: a 2-byte limit and an 8-byte base.
#[repr(C, packed)]
struct DescriptorTable {
    limit: u16,
    base: u64,
}

fn gdt_base() -> u64 {
    let mut dt = DescriptorTable { limit: 0, base: 0 };
    // SAFETY: `sgdt` stores 10 bytes into `dt`.
    unsafe { asm!("sgdt [{}]", in(reg) &mut dt, options(nostack)) };
    dt.base
}

fn idt_base() -> u64 {
    let mut dt = DescriptorTable { limit: 0, base: 0 };
    // SAFETY: `sidt` stores 10 bytes into `dt`.
    unsafe { asm!("sidt [{}]", in(reg) &mut dt, options(nostack)) };
    dt.base
}

/// Reads CR0, CR3 or a segment selector: no side effects.
macro_rules! read_reg {
    ($insn:literal) => {{
        let value: u64;
        // SAFETY: reading a control register or a selector has no side
        // effects, and the module runs at CPL 0.
        unsafe { asm!($insn, out(reg) value, options(nostack, nomem)) };
        value
    }};
}

fn msr(number: u32) -> u64 {
    // SAFETY: every MSR read here exists on any processor with VMX.
    unsafe { insn::rdmsr(number) }
}

// ANCHOR: host_constant
/// The host state that is the same on every CPU and for every task:
/// written once, when the VMCS is first loaded. Selectors must have RPL
/// and TI clear, so DS, ES, FS and GS are 0 and are put back after each
/// exit by `HostSegments::restore` (SDM Vol. 3C, 27.2.3 "Checks on
/// Host Segment and Descriptor-Table Registers").
pub fn write_constant(vmcs: &mut dyn Fields) {
    vmcs.write(HOST_CS_SELECTOR, read_reg!("mov {:r}, cs") & 0xF8);
    vmcs.write(HOST_SS_SELECTOR, read_reg!("mov {:r}, ss") & 0xF8);
    for field in [HOST_DS_SELECTOR, HOST_ES_SELECTOR, HOST_FS_SELECTOR, HOST_GS_SELECTOR] {
        vmcs.write(field, 0);
    }
    let mut tr: u64;
    // SAFETY: `str` reads the task register's selector.
    unsafe { asm!("str {:x}", out(reg) tr, options(nostack, nomem)) };
    tr &= 0xFFFF;
    vmcs.write(HOST_TR_SELECTOR, tr);
    vmcs.write(HOST_IA32_SYSENTER_CS, msr(MSR_IA32_SYSENTER_CS));
    vmcs.write(HOST_IA32_SYSENTER_EIP, msr(MSR_IA32_SYSENTER_EIP));
    vmcs.write(HOST_IDTR_BASE, idt_base());
    vmcs.write(HOST_CR0, read_reg!("mov {}, cr0"));
}
// ANCHOR_END: host_constant

// ANCHOR: host_per_cpu
/// The host state of this CPU: its TSS, GDT, GS base (the per-CPU area)
/// and SYSENTER stack. Written whenever the VMCS comes to this CPU.
pub fn write_per_cpu(vmcs: &mut dyn Fields) {
    vmcs.write(HOST_TR_BASE, cpu::host_tr_base());
    vmcs.write(HOST_GDTR_BASE, gdt_base());
    vmcs.write(HOST_GS_BASE, msr(MSR_GS_BASE));
    vmcs.write(HOST_IA32_SYSENTER_ESP, msr(MSR_IA32_SYSENTER_ESP));
}

/// The host state of this task: its page table, its CR4 (Linux changes a
/// few bits per task) and its FS base (the thread's TLS). Written before
/// every entry.
pub fn write_per_entry(vmcs: &mut dyn Fields) {
    vmcs.write(HOST_CR3, read_reg!("mov {}, cr3"));
    vmcs.write(HOST_CR4, cpu::read_cr4());
    vmcs.write(HOST_FS_BASE, msr(MSR_FS_BASE));
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
        let dr7: u64;
        // SAFETY: reading DR7 has no side effects; the module runs at CPL 0.
        unsafe { asm!("mov {}, dr7", out(reg) dr7, options(nostack, nomem)) };
        HostDebug { dr7, debugctl: msr(MSR_IA32_DEBUGCTL) }
    }

    pub fn restore(&self) {
        if self.dr7 != 0x400 {
            // SAFETY: the value is the one this CPU had before the entry.
            unsafe { asm!("mov dr7, {}", in(reg) self.dr7, options(nostack, nomem)) };
        }
        if self.debugctl != 0 {
            // SAFETY: as above.
            unsafe { insn::wrmsr(MSR_IA32_DEBUGCTL, self.debugctl) };
        }
    }
}
// ANCHOR_END: host_debug
//@ begin 8

/// The host's IA32_EFER, which every exit loads again.
pub fn efer() -> u64 {
    msr(0xC000_0080)
}

/// DR6, the debug status register.
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
