//@ stage 5
//! The VM entry and the VM exit: one `asm!` block that loads the guest's
//! general registers, executes `VMLAUNCH` or `VMRESUME`, and, when the
//! guest exits, stores them back.
//!
//! The processor saves and loads RSP, RIP and RFLAGS through the VMCS, but
//! not the other general registers: "VM exits ... do not save or load the
//! other general-purpose registers" (the host-state area has no field for
//! them, SDM Vol. 3C, 25.5 "Host-State Area"). So the entry code loads
//! them from the vCPU's register array and the exit code stores them
//! back. A VM exit continues at the host RIP written into the VMCS, with
//! the host RSP written there: both are set here, just before the entry,
//! to a label right after `VMLAUNCH`/`VMRESUME` and to the stack as it is
//! at that point. A failed entry (VMfailInvalid or VMfailValid) falls
//! through to the same label with CF or ZF set; a VM exit arrives there
//! with RFLAGS = 0x2 ("RFLAGS is cleared, except bit 1, which is always
//! set", SDM Vol. 3C, 28.5.3 "Loading Host RIP, RSP, and RFLAGS"). One
//! path handles both, and tells them apart by those two flags.
//!
//! The offsets of the registers in the array come from [`Reg`], the
//! register numbering the rest of the module uses, not from hand-written
//! numbers.

use super::fields::{HOST_RIP, HOST_RSP};
use super::insn::{InstructionError, VmFail, VmxError};
use crate::regs::{NR_REGS, Reg};
use core::arch::asm;
use core::mem::size_of;

/// The byte offset of register `r` in the register array.
const fn off(r: Reg) -> usize {
    r as usize * size_of::<u64>()
}

// ANCHOR: enter
/// Enters the guest with the general registers in `regs` (RSP excepted:
/// it is in the VMCS), with `VMLAUNCH` if `launched` is false, else
/// `VMRESUME`. Returns after the guest's next VM exit, with its registers
/// stored back in `regs`; or with the failure of the entry instruction
/// (the caller reads the error number for VMfailValid).
///
/// `cr2` is the guest's CR2. The VMCS has no field for it: the guest
/// runs with the processor's own CR2 (SDM Vol. 3C, 25.4.1 lists no CR2),
/// so it is loaded right before the entry and stored back right after
/// the exit, with interrupts off, so that no host page fault comes in
/// between. A page fault in the guest sets it, and the guest's handler
/// reads it; the MMU sets it when it reflects a fault.
///
/// # Safety
/// A VMCS must be current on this CPU, with valid host state and guest
/// state for the next entry (the processor checks them; anything it
/// rejects is reported, not executed), interrupts must be disabled, and
/// the caller must restore what VM exits do not (see `vcpu.rs`).
pub unsafe fn enter(regs: &mut [u64; NR_REGS], launched: bool, cr2: &mut u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    let guest_cr2: u64;
    // SAFETY: see the function's contract. The block saves RBX and RBP
    // (which Rust does not let it name as operands) on the stack, and
    // declares every other register it or the guest changes as clobbered.
    unsafe {
        asm!(
            // Callee-saved registers Rust cannot name, and the array's address.
            "push rbp",
            "push rbx",
            "push rdi",
            // The VM exit lands at label 2, on this stack.
            "mov rax, {host_rsp}",
            "vmwrite rax, rsp",
            "lea rbx, [rip + 2f]",
            "mov rax, {host_rip}",
            "vmwrite rax, rbx",
            // The guest's CR2, written only if it differs: a move to CR2
            // costs more than a move from it.
            "mov rax, cr2",
            "cmp rax, r8",
            "je 4f",
            "mov cr2, r8",
            "4:",
            // Flags for the choice between VMLAUNCH and VMRESUME; `mov`
            // does not change them.
            "test sil, sil",
            "mov rax, [rdi + {rax}]",
            "mov rcx, [rdi + {rcx}]",
            "mov rdx, [rdi + {rdx}]",
            "mov rbx, [rdi + {rbx}]",
            "mov rbp, [rdi + {rbp}]",
            "mov rsi, [rdi + {rsi}]",
            "mov r8, [rdi + {r8}]",
            "mov r9, [rdi + {r9}]",
            "mov r10, [rdi + {r10}]",
            "mov r11, [rdi + {r11}]",
            "mov r12, [rdi + {r12}]",
            "mov r13, [rdi + {r13}]",
            "mov r14, [rdi + {r14}]",
            "mov r15, [rdi + {r15}]",
            "mov rdi, [rdi + {rdi}]",
            "jnz 3f",
            "vmlaunch",
            "jmp 2f",
            "3:",
            "vmresume",
            // A VM exit (all arithmetic flags clear) or a failed entry
            // (CF or ZF set) continues here. Nothing below changes flags
            // until they are captured. Linux's KVM puts an `endbr64` at its
            // exit label (`vmx_vmexit`) for kernels built with
            // indirect-branch tracking (CET IBT), as the L1 kernel is; so
            // does rkvm. Where CET is off it does nothing.
            "2:",
            "endbr64",
            "push rdi",
            "mov rdi, [rsp + 8]",
            "mov [rdi + {rax}], rax",
            "mov [rdi + {rcx}], rcx",
            "mov [rdi + {rdx}], rdx",
            "mov [rdi + {rbx}], rbx",
            "mov [rdi + {rbp}], rbp",
            "mov [rdi + {rsi}], rsi",
            "mov [rdi + {r8}], r8",
            "mov [rdi + {r9}], r9",
            "mov [rdi + {r10}], r10",
            "mov [rdi + {r11}], r11",
            "mov [rdi + {r12}], r12",
            "mov [rdi + {r13}], r13",
            "mov [rdi + {r14}], r14",
            "mov [rdi + {r15}], r15",
            "pop rax",
            "mov [rdi + {rdi}], rax",
            // The guest's CR2, before anything can fault; moves from a
            // control register leave the flags alone.
            "mov r8, cr2",
            "setc cl",
            "setz dl",
            "pop rdi",
            "pop rbx",
            "pop rbp",
            host_rsp = const HOST_RSP,
            host_rip = const HOST_RIP,
            rax = const off(Reg::Rax),
            rcx = const off(Reg::Rcx),
            rdx = const off(Reg::Rdx),
            rbx = const off(Reg::Rbx),
            rbp = const off(Reg::Rbp),
            rsi = const off(Reg::Rsi),
            rdi = const off(Reg::Rdi),
            r8 = const off(Reg::R8),
            r9 = const off(Reg::R9),
            r10 = const off(Reg::R10),
            r11 = const off(Reg::R11),
            r12 = const off(Reg::R12),
            r13 = const off(Reg::R13),
            r14 = const off(Reg::R14),
            r15 = const off(Reg::R15),
            inout("rdi") regs.as_mut_ptr() => _,
            inout("rsi") u64::from(launched) => _,
            out("rax") _,
            out("cl") cf,
            out("dl") zf,
            inout("r8") *cr2 => guest_cr2,
            out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
    *cr2 = guest_cr2;
    VmFail::from_flags(cf != 0, zf != 0)
}
// ANCHOR_END: enter

// ANCHOR: host_nmi
/// Hands a host NMI that caused a VM exit to Linux's NMI handler, as
/// 2006's `vmx.c` did: `int 2` runs the handler of vector 2 through the
/// host's IDT, on its NMI stack (the gate's IST), as if the NMI had
/// arrived now. Called right after the exit, with interrupts still off,
/// so nothing else runs first. Linux's handler copes with an NMI that
/// arrives while it runs (it keeps its own nesting state), and its
/// `iret` ends the NMI blocking the exit left, if any. Linux's KVM today
/// calls a variant of the handler through a made-up interrupt frame; it
/// needs a symbol only kernels built with KVM_INTEL export, `int 2` none.
pub fn host_nmi() {
    // SAFETY: the module runs at CPL 0, where vector 2's gate (DPL 0) may
    // be invoked; the handler saves and restores every register and the
    // flags, and returns with `iret` right after the `int`.
    unsafe { asm!("int 2") };
}
// ANCHOR_END: host_nmi

/// What a failed entry instruction means for the caller.
pub fn entry_error(fail: VmFail, error_number: impl FnOnce() -> u32) -> VmxError {
    match fail {
        VmFail::Invalid => VmxError::FailInvalid,
        VmFail::Valid => VmxError::FailValid(InstructionError(error_number())),
    }
}

// The array has a slot for every register the code above names.
const _: () = assert!(off(Reg::R15) + size_of::<u64>() == NR_REGS * size_of::<u64>());
