//@ stage 3
//! The general registers, named and numbered as the processor encodes
//! them. Everything that holds or decodes guest registers (the vCPU, the
//! backends' entry code, the exit decoders) takes the numbering from here.

// ANCHOR: reg
/// The general registers, numbered as instructions encode them (the `reg`
/// and `r/m` fields of ModRM, extended by REX to 4 bits; Intel SDM Vol. 2A,
/// Table 3-1 "Register Codes Associated With +rb, +rw, +rd, +ro"). 2006
/// used the same order (`VCPU_REGS_RAX` ...) so that
/// an exit handler can index the register file with a number taken from
/// the exit information. `struct kvm_regs` lists them in another order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

/// The number of general registers in 64-bit mode.
pub const NR_REGS: usize = 16;

// Every `Reg` indexes the register array: `regs[reg as usize]` cannot panic.
const _: () = assert!(Reg::R15 as usize == NR_REGS - 1);
// ANCHOR_END: reg
