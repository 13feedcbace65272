//@ stage 7
//! The SVM instructions, each in a one-line wrapper with its safety note,
//! and the entry itself. Nothing else in the backend uses `asm!`: `rdmsr`,
//! `wrmsr` and DR7, which the VMX backend needs too, are the `x86`
//! crate's, in `arch/x86.rs`; the crate has no SVM instructions.
//!
//! On the host (unit tests) there is no SVM: the same functions are fakes
//! that report a processor without it and must never be asked to run a
//! guest.

use crate::regs::{NR_REGS, Reg};

// ANCHOR: msrs
/// The SVM MSRs, which the `x86` crate does not name (EFER is its
/// `IA32_EFER`, and EFER.SVME is [`crate::regs::Efer::SVME`]).
///
/// VM_CR: bit 4 is SVMDIS, set by firmware that disables SVM; bit 3
/// (LOCK) keeps it so (APM Vol. 2, 15.30.1 "VM_CR MSR").
pub const MSR_VM_CR: u32 = 0xC001_0114;
pub const VM_CR_SVMDIS: u64 = 1 << 4;
/// VM_HSAVE_PA: the physical address of the page where `vmrun` saves the
/// host's state (APM Vol. 2, 15.30.4 "VM_HSAVE_PA MSR").
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
// ANCHOR_END: msrs

/// The byte offset of general register `reg` in the register array the
/// entry code loads and stores: the `const` operands of its `asm!`.
const fn reg_offset(reg: Reg) -> usize {
    reg as usize * core::mem::size_of::<u64>()
}

// The entry code indexes the array with these; none may fall outside it.
const _: () = assert!(reg_offset(Reg::R15) < NR_REGS * 8);

#[cfg(target_os = "none")]
mod imp {
    use super::*;
    use core::arch::asm;

    /// `cpuid`: EAX, EBX, ECX, EDX of leaf `leaf`, subleaf 0.
    pub fn cpuid(leaf: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, 0);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    /// `clgi`: clears the global interrupt flag. Interrupts, NMIs and SMIs
    /// are held pending until `stgi`.
    ///
    /// # Safety
    /// EFER.SVME must be set on this CPU; the caller must `stgi` soon.
    pub unsafe fn clgi() {
        // SAFETY: forwarded to the caller.
        unsafe { asm!("clgi", options(nomem, nostack)) };
    }

    /// `stgi`: sets the global interrupt flag again.
    ///
    /// # Safety
    /// EFER.SVME must be set on this CPU.
    pub unsafe fn stgi() {
        // SAFETY: forwarded to the caller.
        unsafe { asm!("stgi", options(nomem, nostack)) };
    }

    /// `vmsave`: stores the state `vmrun` does not switch (FS, GS, TR,
    /// LDTR with their hidden parts, KernelGsBase, STAR, LSTAR, CSTAR,
    /// SFMASK, SYSENTER_*) into the VMCB-format page at `pa`.
    ///
    /// # Safety
    /// EFER.SVME set; `pa` is a page the module owns, 4 KiB aligned.
    pub unsafe fn vmsave(pa: u64) {
        // SAFETY: forwarded to the caller.
        unsafe { asm!("vmsave rax", in("rax") pa, options(nostack)) };
    }

    // ANCHOR: svm_enter
    /// Runs the guest once: loads its general registers (all but RAX and
    /// RSP, which the VMCB holds) from `regs`, `vmload`s and `vmrun`s its
    /// VMCB at `vmcb_pa`, and after the `#VMEXIT` `vmsave`s it, stores the
    /// registers back and `vmload`s the host's state from `host_pa`, which
    /// the caller `vmsave`d there.
    ///
    /// # Safety
    /// GIF must be clear (`clgi`), EFER.SVME set and VM_HSAVE_PA valid on
    /// this CPU; both pages must be valid VMCBs the module owns.
    pub unsafe fn svm_enter(vmcb_pa: u64, host_pa: u64, regs: &mut [u64; NR_REGS]) {
        // SAFETY: forwarded to the caller. RBX and RBP cannot be operands,
        // so they are saved on the stack by hand; every other register is
        // declared clobbered. Between `vmrun` and the host's `vmload`, GS
        // holds the guest's base: nothing there may use it, and nothing
        // can interrupt (GIF is clear).
        unsafe {
            asm!(
                "push rbp",
                "push rbx",
                "push rsi",                 // the host's save page
                "push rdi",                 // the register array
                "mov rbx, [rdi + {rbx}]",
                "mov rcx, [rdi + {rcx}]",
                "mov rdx, [rdi + {rdx}]",
                "mov rsi, [rdi + {rsi}]",
                "mov rbp, [rdi + {rbp}]",
                "mov r8,  [rdi + {r8}]",
                "mov r9,  [rdi + {r9}]",
                "mov r10, [rdi + {r10}]",
                "mov r11, [rdi + {r11}]",
                "mov r12, [rdi + {r12}]",
                "mov r13, [rdi + {r13}]",
                "mov r14, [rdi + {r14}]",
                "mov r15, [rdi + {r15}]",
                "mov rdi, [rdi + {rdi}]",   // last: it held the pointer
                "vmload rax",
                "vmrun rax",                // the guest runs
                "vmsave rax",
                "push rdi",                 // the guest's RDI
                "mov rdi, [rsp + 8]",       // the register array again
                "mov [rdi + {rbx}], rbx",
                "mov [rdi + {rcx}], rcx",
                "mov [rdi + {rdx}], rdx",
                "mov [rdi + {rsi}], rsi",
                "mov [rdi + {rbp}], rbp",
                "mov [rdi + {r8}],  r8",
                "mov [rdi + {r9}],  r9",
                "mov [rdi + {r10}], r10",
                "mov [rdi + {r11}], r11",
                "mov [rdi + {r12}], r12",
                "mov [rdi + {r13}], r13",
                "mov [rdi + {r14}], r14",
                "mov [rdi + {r15}], r15",
                "pop qword ptr [rdi + {rdi}]",
                "pop rdi",                  // drop the array pointer
                "pop rax",                  // the host's save page
                "vmload rax",
                "pop rbx",
                "pop rbp",
                rbx = const reg_offset(Reg::Rbx),
                rcx = const reg_offset(Reg::Rcx),
                rdx = const reg_offset(Reg::Rdx),
                rsi = const reg_offset(Reg::Rsi),
                rdi = const reg_offset(Reg::Rdi),
                rbp = const reg_offset(Reg::Rbp),
                r8 = const reg_offset(Reg::R8),
                r9 = const reg_offset(Reg::R9),
                r10 = const reg_offset(Reg::R10),
                r11 = const reg_offset(Reg::R11),
                r12 = const reg_offset(Reg::R12),
                r13 = const reg_offset(Reg::R13),
                r14 = const reg_offset(Reg::R14),
                r15 = const reg_offset(Reg::R15),
                inout("rax") vmcb_pa => _,
                inout("rdi") regs.as_mut_ptr() => _,
                inout("rsi") host_pa => _,
                out("rcx") _, out("rdx") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            )
        };
    }
    // ANCHOR_END: svm_enter
}

#[cfg(not(target_os = "none"))]
mod imp {
    use super::*;

    /// The host fake: a processor without SVM.
    pub fn cpuid(_leaf: u32) -> [u32; 4] {
        [0; 4]
    }
    /// # Safety
    /// None on the host.
    pub unsafe fn clgi() {}
    /// # Safety
    /// None on the host.
    pub unsafe fn stgi() {}
    /// # Safety
    /// None on the host.
    pub unsafe fn vmsave(_pa: u64) {}
    /// # Safety
    /// None on the host: the guest "exits" at once, changing nothing.
    pub unsafe fn svm_enter(_vmcb_pa: u64, _host_pa: u64, _regs: &mut [u64; NR_REGS]) {}
}

pub use imp::*;
