//@ stage 10
//! The instruction emulator, in the image of 2006's `x86_emulate.c`: what
//! the module does when the guest touches memory that is not memory.
//!
//! A guest's access to a page that no memory slot backs (a device's
//! registers, MMIO) faults, and the fault gives only an address: which
//! instruction, which register, how many bytes and which way are written
//! in the instruction itself. The emulator decodes that instruction
//! ([`decode`]), carries it out on the guest's registers and memory as the
//! processor would have ([`emulate`]), and hands the one access the
//! module cannot do to userspace, which plays the device.
//!
//! This module is the pure part: it knows bytes, registers and flags, and
//! asks a caller's [`Guest`] for everything else. It never translates an
//! address: segment bases and limits, the page walk, and the choice
//! between guest RAM and an MMIO exit are the caller's.
//!
//! - [`decode`]: prefixes, REX, one- and two-byte opcodes, ModRM, SIB,
//!   displacement and immediate, into an [`Instruction`] with explicit
//!   operands (Intel SDM Vol. 2A, chapter 2; AMD APM Vol. 3, chapter 1).
//! - [`flags`]: the arithmetic and the six status flags exactly as the
//!   processor sets them (SDM Vol. 1, 3.4.3 and Appendix A).
//! - [`emulate`]: one instruction (or some iterations of a repeated
//!   string instruction) on a [`Guest`].
//!
//! Covered: `mov` in every form the ModRM and moffs encodings give
//! (88-8B, C6, C7, A0-A3), `movzx` and `movsx` (0F B6, B7, BE, BF), `movs`,
//! `stos` and `lods` with and without `rep`, the eight ALU operations
//! (00-3D, 80-83), `test` (84, 85, A8, A9, F6 /0, F7 /0), `inc` and `dec` (FE and
//! FF /0 /1), `not` and `neg` (F6, F7 /2 /3), `xchg` (86, 87), `push` and
//! `pop` of a memory operand (FF /6, 8F /0) and `bt`, `bts`, `btr`, `btc`
//! (0F A3, AB, B3, BB and 0F BA /4-7).
//@ begin 13
//! From stage 13 also `cmpxchg` (0F B0, B1) and `cmpxchg8b` (0F C7 /1,
//! not `cmpxchg16b`), with which guest kernels change page-table entries
//! that another processor may be changing too.
//@ end
//! Everything else is [`DecodeError::Unsupported`]: 2006 then reported an
//! emulation failure to userspace.
//!
//! Not here: the shifts and rotates (C0, C1, D0-D3), `cmovcc` and
//! `movsxd`, which 2006 also emulated; and atomicity: a `lock`ed
//! read-modify-write is decoded and run as a read then a write, which
//! another vCPU may see apart.
//@ begin 10 until 13
//! Nor `cmpxchg` and `cmpxchg8b`, which 2006 emulated too: stage 13 adds
//! them.
//@ end

pub mod decode;
pub mod flags;
mod exec;

pub use decode::{
    Alu, Base, BitOp, DecodeError, Instruction, MemOperand, Op, Operand, RegOperand, Rep, decode,
};
pub use exec::{MAX_ITERATIONS, effective_address, emulate, execute, merge_reg, read_reg};

use crate::regs::Reg;

// ANCHOR: types
/// The size of an operand or of an address, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Byte = 1,
    Word = 2,
    Dword = 4,
    Qword = 8,
}

impl Size {
    /// The size in bytes.
    pub const fn bytes(self) -> usize {
        self as usize
    }

    /// The size in bits.
    pub const fn bits(self) -> u32 {
        8 * self as u32
    }

    /// The bits a value of this size has.
    pub const fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits())
    }

    /// The sign bit of a value of this size.
    pub const fn sign(self) -> u64 {
        1 << (self.bits() - 1)
    }

    /// `value` sign-extended from this size to 64 bits.
    pub const fn sign_extend(self, value: u64) -> u64 {
        let shift = 64 - self.bits();
        (((value << shift) as i64) >> shift) as u64
    }
}

/// The processor's mode, as the code segment makes it: the default
/// operand and address size (SDM Vol. 3A, 3.4.5 "D/B" and "L" flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode, virtual-8086 mode, or a protected-mode code segment with
    /// CS.D = 0 (also compatibility mode with CS.D = 0).
    Bits16,
    /// A protected-mode (or compatibility-mode) code segment with CS.D = 1.
    Bits32,
    /// 64-bit mode: EFER.LMA = 1 and CS.L = 1.
    Bits64,
}

/// A segment register, numbered as the `sreg` field of instructions
/// encodes them (SDM Vol. 2, Appendix B.1.4.7 "Segment Register (sreg)
/// Field").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}
// ANCHOR_END: types

// ANCHOR: guest
/// An exception the emulated instruction raises: the caller injects it,
/// and the guest's handler runs as on bare hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector: 6 (#UD), 13 (#GP), 12 (#SS), 14 (#PF) ...
    pub vector: u8,
    /// The error code, for the vectors that push one.
    pub error_code: Option<u32>,
}

impl Exception {
    /// #UD: an encoding the processor refuses (a `lock` where none may be).
    pub const UD: Exception = Exception { vector: 6, error_code: None };
    /// #GP(0): an instruction longer than 15 bytes (SDM Vol. 3A, 6.15,
    /// "Interrupt 13 - General Protection Exception").
    pub const GP0: Exception = Exception { vector: 13, error_code: Some(0) };
}

/// What became of one memory access the emulator asked of its [`Guest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Done: the bytes were read from or written to guest RAM, or, for a
    /// read, taken from the data userspace gave for this very access
    /// after an earlier [`Access::Mmio`].
    Done,
    /// The address is not RAM, and the access has been recorded for
    /// userspace as an MMIO exit (guest-physical address, size, direction
    /// and, for a write, the data).
    ///
    /// - On a read, `data` holds nothing: the emulator stops at once and
    ///   changes nothing of the instruction (or of the current iteration
    ///   of a repeated one); it returns [`Outcome::MmioRead`]. Once
    ///   userspace has answered, the caller runs the same instruction
    ///   again on the unchanged registers: the emulator repeats the same
    ///   accesses in the same order, and the caller answers the read of
    ///   the same address and size with userspace's data and
    ///   [`Access::Done`] (2006's `mmio_read_completed`), then forgets it.
    /// - On a write, the data has been taken: the emulator finishes the
    ///   instruction (or the iteration), makes no further memory access,
    ///   and returns [`Outcome::MmioWrite`]; userspace performs the write
    ///   before the guest runs again.
    Mmio,
    /// The access faults (a segment limit, a non-canonical address, a page
    /// the guest's tables do not map or do not allow): the emulator stops,
    /// changes nothing, and returns [`Outcome::Exception`]. The caller has
    /// recorded what the exception needs beyond its vector (CR2 for #PF).
    Fault(Exception),
}

/// What the emulator sees of the guest: its registers and its memory.
///
/// Registers are read and written whole, by their number in instructions
/// (`crate::regs::Reg`); the emulator does the sizes (AL, AH, AX, EAX and
/// the merging or zero-extension a write of each implies).
///
/// Memory is addressed as instructions address it: a segment register and
/// an offset into the segment, the effective address, already reduced to
/// the instruction's address size (16, 32 or 64 bits). The implementation
/// (the MMU side) adds the segment's base (only FS's and GS's count in
/// 64-bit mode, where CS, DS, ES and SS have base 0 and no limit even when
/// an instruction names them), checks the segment's limit and type and, in
/// 64-bit mode, that the linear address is canonical, translates it through
/// the guest's page tables with the rights of a read or a write at the
/// guest's CPL, and then either accesses guest RAM or records an MMIO exit.
/// An access is 1, 2, 4 or 8 bytes, little-endian, at any alignment: one
/// that crosses a page boundary is the implementation's to split. Reads and
/// writes come in the instruction's order; each instruction (each iteration
/// of a repeated one) makes at most one read and then at most one write, so
/// at most one access per run of [`emulate`] can be MMIO.
pub trait Guest {
    /// All 64 bits of a general register.
    fn reg(&self, reg: Reg) -> u64;
    /// Sets all 64 bits of a general register.
    fn set_reg(&mut self, reg: Reg, value: u64);
    /// RIP: on entry, the address of the instruction.
    fn rip(&self) -> u64;
    fn set_rip(&mut self, rip: u64);
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, rflags: u64);
    /// Reads `data.len()` bytes at `segment:offset` into `data`.
    fn read(&mut self, segment: Segment, offset: u64, data: &mut [u8]) -> Access;
    /// Writes `data` at `segment:offset`.
    fn write(&mut self, segment: Segment, offset: u64, data: &[u8]) -> Access;
}

/// How a run of [`emulate`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The instruction is complete and RIP is past it.
    Done,
    /// A repeated string instruction did [`MAX_ITERATIONS`] iterations and
    /// has more to do: RIP is still on it and rCX, rSI and rDI count what
    /// was done, exactly as when the processor takes an interrupt between
    /// two iterations. The guest may run on (it goes on with the
    /// instruction itself) or the caller may emulate it again.
    Again,
    /// A read was recorded as MMIO ([`Access::Mmio`]): nothing of the
    /// instruction (or of this iteration) is done, RIP is on it. Emulate it
    /// again once userspace has given the data.
    MmioRead,
    /// A write was recorded as MMIO: the instruction is complete (RIP past
    /// it), or, for a repeated one, this iteration is and RIP is still on
    /// it. Userspace performs the write; then the guest runs on.
    MmioWrite,
    /// The instruction raises this exception: nothing of it (or of this
    /// iteration) is done, RIP is on it.
    Exception(Exception),
    /// The emulator cannot run this instruction: it does not know it, or
    /// the caller gave fewer bytes than it has (2006: emulation failure,
    /// for userspace to report).
    Unhandled(DecodeError),
}
// ANCHOR_END: guest

/// The register numbered `n` in instructions (bits above 3 ignored).
pub(crate) const fn reg(n: u8) -> Reg {
    match n & 15 {
        0 => Reg::Rax,
        1 => Reg::Rcx,
        2 => Reg::Rdx,
        3 => Reg::Rbx,
        4 => Reg::Rsp,
        5 => Reg::Rbp,
        6 => Reg::Rsi,
        7 => Reg::Rdi,
        8 => Reg::R8,
        9 => Reg::R9,
        10 => Reg::R10,
        11 => Reg::R11,
        12 => Reg::R12,
        13 => Reg::R13,
        14 => Reg::R14,
        _ => Reg::R15,
    }
}

#[cfg(test)]
mod tests;
