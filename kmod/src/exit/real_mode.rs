//@ stage 12
//! Exceptions of a real-mode guest that reach the module: on VMX, every
//! one of them (the exception bitmap intercepts all 32 vectors while the
//! guest's CR0.PE is clear, since the processor would deliver them
//! through the protected-mode IDT). SVM runs real mode as it is, and its
//! exits never come here.
//!
//! - **#GP** in virtual-8086 mode is most often an instruction that needs
//!   CPL 0 (`hlt`, `mov cr0`, `lgdt`, ...; SDM Vol. 3A, 20.2.7): it is
//!   decoded ([`crate::emulate::decode::system`]) and carried out here,
//!   through the handlers the backends' own exits use (`handle_hlt`,
//!   `cr::handle_cr`, ...). Anything else goes to the stage-10 emulator,
//!   which runs it as the processor would in real mode (an access through
//!   a segment the 16-bit protected mode made unusable, or a true
//!   real-mode #GP, which the emulator raises again). An instruction
//!   neither knows goes to userspace as `KVM_EXIT_EXCEPTION`, as before.
//! - **#BP and #OF** (`int3`, `into`) are traps: the handler returns
//!   after the instruction.
//! - **Every other exception** is the guest's own (#UD, #DE, #DB, ...):
//!   it goes to its handler through the interrupt vector table, as on a
//!   real-mode processor (`Running::deliver_real_mode` in `vcpu.rs`).
//!
//! 2006's `handle_rmode_exception` emulated #GP(0) alone and sent every
//! other exception of a real-mode guest to userspace.

use super::mmio::{emulate_other, fetch_code, read_operand};
use super::{Action, CrAccess, ExitContext, cr, handle_hlt, to_user_exception};
use crate::abi::{KvmDtable, KvmRun, KvmSregs};
use crate::emulate::decode::system::{System, SystemInstruction, decode_system};
use crate::emulate::{Access, DecodeError, Exception, MemOperand, Mode, Operand, Segment, Size};
use crate::real_mode::load_segment;

/// The vectors of #GP, #BP and #OF.
const GP_VECTOR: u8 = 13;
const BP_VECTOR: u8 = 3;
const OF_VECTOR: u8 = 4;

// ANCHOR: handle_real_mode_exception
/// An exception a real-mode guest raised and the backend intercepted.
pub fn handle_exception(vector: u8, error_code: u32, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    match vector {
        GP_VECTOR => handle_gp(error_code, ctx, run),
        BP_VECTOR | OF_VECTOR => {
            // RIP is on the `int3` or `into`; the handler returns after it.
            if let Some(insn) = decode_at_rip(ctx).ok().filter(|i| i.op == System::Int(vector)) {
                ctx.skip_instruction(insn.len as u8);
            }
            ctx.queue_exception(vector, None);
            Action::Resume
        }
        _ => {
            // Real mode pushes no error code.
            ctx.queue_exception(vector, None);
            Action::Resume
        }
    }
}

/// #GP: an instruction real mode allows and virtual-8086 mode (or 16-bit
/// protected mode) does not, emulated; or one the guest must see fault.
fn handle_gp(error_code: u32, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    match decode_at_rip(ctx) {
        Ok(insn) => execute(&insn, ctx, run),
        Err(DecodeError::Invalid) => raise(ctx, Exception::UD),
        Err(DecodeError::TooLong) => raise(ctx, Exception::GP0),
        Err(DecodeError::Unsupported | DecodeError::Truncated) => {
            emulate_other(ctx, run).unwrap_or_else(|| to_user_exception(GP_VECTOR, error_code, run))
        }
    }
}
// ANCHOR_END: handle_real_mode_exception

/// The system instruction at CS:RIP.
fn decode_at_rip(ctx: &mut dyn ExitContext) -> Result<SystemInstruction, DecodeError> {
    let (bytes, n) = fetch_code(ctx).ok_or(DecodeError::Truncated)?;
    decode_system(bytes.get(..n).unwrap_or(&[]), Mode::Bits16)
}

/// Gives the guest exception `e` (through its IVT), and resumes.
fn raise(ctx: &mut dyn ExitContext, e: Exception) -> Action {
    ctx.queue_exception(e.vector, None);
    Action::Resume
}

// ANCHOR: execute_system
/// Carries out a system instruction for a real-mode guest, as the
/// processor would at CPL 0.
fn execute(insn: &SystemInstruction, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    let len = insn.len as u8;
    match insn.op {
        System::Hlt => handle_hlt(len, ctx, run),
        System::Clts => cr::handle_clts(len, ctx),
        System::MovCr { cr, gpr, write } => cr::handle_cr(&CrAccess { cr, write, gpr, insn_len: len }, ctx, run),
        System::Lmsw(src) => match read_word(ctx, &src, insn.len) {
            Ok(value) => cr::handle_lmsw(value, len, ctx),
            Err(stop) => stop.act(ctx, run),
        },
        System::Lgdt(mem) | System::Lidt(mem) => load_table(insn, &mem, ctx, run),
        System::MovSreg { sreg, src } => match read_word(ctx, &src, insn.len) {
            Ok(selector) => {
                let mut sregs = ctx.sregs();
                let seg = segment_mut(&mut sregs, sreg);
                *seg = load_segment(seg, selector);
                ctx.set_sregs(&sregs);
                ctx.skip_instruction(len);
                Action::Resume
            }
            Err(stop) => stop.act(ctx, run),
        },
        System::JmpFar { selector, offset } => {
            let mut sregs = ctx.sregs();
            sregs.cs = load_segment(&sregs.cs, selector);
            ctx.set_sregs(&sregs);
            // Completed (which ends any interrupt shadow), then taken.
            ctx.skip_instruction(len);
            ctx.set_rip(offset & insn.size.mask());
            Action::Resume
        }
        System::Int(vector) => {
            ctx.skip_instruction(len);
            ctx.queue_exception(vector, None);
            Action::Resume
        }
        System::NoOp => {
            ctx.skip_instruction(len);
            Action::Resume
        }
    }
}

/// `lgdt` or `lidt`: a 16-bit limit and a base, of which 24 bits count
/// with a 16-bit operand size and 32 with a 32-bit one (SDM Vol. 2A,
/// LGDT/LIDT).
fn load_table(insn: &SystemInstruction, mem: &MemOperand, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    let mut bytes = [0u8; 6];
    if let Err(stop) = read(ctx, mem, insn.len, &mut bytes) {
        return stop.act(ctx, run);
    }
    let [l0, l1, b0, b1, b2, b3] = bytes;
    let base = u64::from(u32::from_le_bytes([b0, b1, b2, b3]));
    let table = KvmDtable {
        base: if insn.size == Size::Word { base & 0xFF_FFFF } else { base },
        limit: u16::from_le_bytes([l0, l1]),
        padding: [0; 3],
    };
    let mut sregs = ctx.sregs();
    match insn.op {
        System::Lgdt(_) => sregs.gdt = table,
        _ => sregs.idt = table,
    }
    ctx.set_sregs(&sregs);
    ctx.skip_instruction(insn.len as u8);
    Action::Resume
}
// ANCHOR_END: execute_system

/// Why an operand could not be read.
enum Stop {
    /// The read faults, as it would on the processor: the guest's.
    Fault(Exception),
    /// The operand is in MMIO (no guest puts a descriptor table there):
    /// the #GP goes to userspace.
    ToUser,
}

impl Stop {
    fn act(self, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
        match self {
            Stop::Fault(e) => raise(ctx, e),
            Stop::ToUser => to_user_exception(GP_VECTOR, 0, run),
        }
    }
}

/// A 16-bit operand: a register's low word, or a word of guest memory.
fn read_word(ctx: &mut dyn ExitContext, src: &Operand, len: usize) -> Result<u16, Stop> {
    match src {
        Operand::Reg(r) => Ok((ctx.gpr(r.reg as u8) >> if r.high { 8 } else { 0 }) as u16),
        Operand::Mem(mem) => {
            let mut word = [0u8; 2];
            read(ctx, mem, len, &mut word)?;
            Ok(u16::from_le_bytes(word))
        }
        Operand::None | Operand::Imm(_) => Err(Stop::ToUser),
    }
}

/// Reads a memory operand from guest RAM.
fn read(ctx: &mut dyn ExitContext, mem: &MemOperand, len: usize, data: &mut [u8]) -> Result<(), Stop> {
    match read_operand(ctx, mem, len, data) {
        Access::Done => Ok(()),
        Access::Fault(e) => Err(Stop::Fault(e)),
        Access::Mmio => Err(Stop::ToUser),
    }
}

fn segment_mut(sregs: &mut KvmSregs, segment: Segment) -> &mut crate::abi::KvmSegment {
    match segment {
        Segment::Es => &mut sregs.es,
        Segment::Cs => &mut sregs.cs,
        Segment::Ss => &mut sregs.ss,
        Segment::Ds => &mut sregs.ds,
        Segment::Fs => &mut sregs.fs,
        Segment::Gs => &mut sregs.gs,
    }
}

#[cfg(test)]
#[path = "real_mode_tests.rs"]
mod tests;
