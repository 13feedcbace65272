//@ stage 12
//! Exceptions of a real-mode guest that reach the module: on VMX, every
//! one of them (the exception bitmap intercepts all 32 vectors while the
//! guest's CR0.PE is clear, since the processor would deliver them
//! through the protected-mode IDT). SVM runs real mode as it is, and its
//! exits never come here.
//!
//! - **#GP** in virtual-8086 mode is most often an instruction that needs
//!   CPL 0 (`hlt`, `mov cr0`, `lgdt`, ...; SDM Vol. 3A, 20.2.7). In the
//!   16-bit protected mode that runs a guest whose segments vm86 cannot
//!   run (`arch/vmx/vcpu.rs`), it is most often an instruction that loads
//!   a segment register: the processor reads the selector as an index
//!   into the GDT or the LDT (SDM Vol. 3A, 3.4.2), where real mode
//!   computes a base from it. Both kinds are decoded
//!   ([`crate::emulate::decode::system`]) and carried out here: the
//!   privileged ones through the handlers the backends' own exits use
//!   (`handle_hlt`, `cr::handle_cr`, ...), the segment loads as real mode
//!   runs them (below). Anything else goes to the stage-10 emulator,
//!   which runs it as the processor would in real mode (an access through
//!   a segment the 16-bit protected mode made unusable, or a true
//!   real-mode #GP, which the emulator raises again). An instruction
//!   neither knows goes to userspace as the emulator's "unknown
//!   instruction" (`KVM_EXIT_UNKNOWN` with
//!   [`EMULATION_FAILED`](super::mmio::EMULATION_FAILED)), as from an
//!   MMIO access. 2006 gave userspace `KVM_EXIT_EXCEPTION` there, a #GP
//!   that the guest, in real mode, would not have raised.
//! - **#TS, #NP, and #SS with a nonzero error code**, which real mode
//!   never raises (its #SS, past SS's limit, has error code 0): a segment
//!   load or an `int n` of 16-bit protected mode faulted on the descriptor
//!   or the gate it read, most often one not present (SDM Vol. 3A, 6.15,
//!   "Interrupt 11—Segment Not Present (#NP)"). A system instruction is
//!   carried out as for a #GP; any other goes to the guest, as every
//!   other exception.
//! - **#BP and #OF** (`int3`, `into`) are traps: the handler returns
//!   after the instruction.
//! - **Every other exception** is the guest's own (#UD, #DE, #DB, ...):
//!   it goes to its handler through the interrupt vector table, as on a
//!   real-mode processor (`Running::deliver_real_mode` in `vcpu.rs`).
//!
//! A segment load in real mode gives the register the selector and a base
//! of selector × 16, and keeps its limit and attributes (SDM Vol. 3A,
//! 20.1.1; [`load_segment`]). The instructions that load one are `mov
//! sreg`, `pop sreg`, `lds`, `les`, `lss`, `lfs`, `lgs`, the far `jmp`
//! and `call` with the pointer in the instruction or in memory, the far
//! `ret` and `iret`. Each is carried out as the real-address-mode branch
//! of its "Operation" in SDM Vol. 2 says:
//!
//! - A memory operand is read through its segment as the emulator reads
//!   one: past the segment's limit it is the guest's #GP(0), or #SS(0)
//!   through SS. A far pointer is read whole: an offset of the operand
//!   size (2 or 4 bytes), then a 2-byte selector.
//! - The stack is SS:SP, or SS:ESP when SS.B is set (a B kept from
//!   protected mode). Each value pushed or popped has the operand size: a
//!   32-bit `pop ds` pops 4 bytes and loads the low 2, a 32-bit far `call`
//!   pushes CS zero-extended to 4 bytes, then EIP. A push or pop past
//!   SS's limit is the guest's #SS(0).
//! - A far `jmp`, `call`, `ret` or `iret` whose new IP (cut to the
//!   operand size) lies past CS's limit, which the load keeps, is the
//!   guest's #GP(0).
//! - `iret` writes FLAGS, bits 15:0 of RFLAGS; `iretd` writes the bits
//!   of 257FD5H (CF, PF, AF, ZF, SF, TF, IF, DF, OF, IOPL, NT, RF, AC,
//!   ID) and keeps VM, VIF and VIP. Bit 1 stays 1, and bits 3, 5 and 15
//!   stay 0.
//! - Everything that can fault is read or written before any register
//!   changes, so a fault leaves the registers as they were. The two
//!   values of a far `call` are written at once, all or nothing, unless
//!   they lie on both sides of a 16-bit stack's wrap.
//! - An operand in MMIO (a data segment that kept a base in the MMIO
//!   window from protected mode) goes to userspace as a `KVM_EXIT_MMIO`
//!   read, and the instruction runs again with its answer ([`resume`]).
//!   A stack in MMIO is not emulated: its #GP goes to userspace.
//!
//! The processor holds off interrupts and debug exceptions for one
//! instruction after a `mov ss` or `pop ss` (SDM Vol. 3A, 6.8.3). One
//! carried out here ends as every instruction the module completes,
//! with no such shadow: an interrupt queued for the guest can be
//! delivered between the load of SS and the next instruction.
//!
//! 2006's `handle_rmode_exception` emulated #GP(0) alone and sent every
//! other exception of a real-mode guest to userspace.

use super::mmio::{EMULATION_FAILED, emulate_other, fetch_code, read_at, read_operand, write_at};
use super::{Action, CrAccess, ExitContext, cr, handle_hlt, to_user_exception, to_user_unknown};
use crate::abi::{KvmDtable, KvmRun, KvmSregs};
use crate::emulate::decode::system::{System, SystemInstruction, decode_system};
use crate::emulate::{Access, DecodeError, Exception, MemOperand, Mode, Operand, RegOperand, Segment, Size, merge_reg};
use crate::real_mode::{is_real_mode, load_segment};
use crate::regs::Reg;

/// The vectors of #GP, #BP and #OF, and of #TS, #NP and #SS.
const GP_VECTOR: u8 = 13;
const BP_VECTOR: u8 = 3;
const OF_VECTOR: u8 = 4;
const TS_VECTOR: u8 = 10;
const NP_VECTOR: u8 = 11;
const SS_VECTOR: u8 = 12;

// ANCHOR: handle_real_mode_exception
/// An exception a real-mode guest raised and the backend intercepted.
pub fn handle_exception(vector: u8, error_code: u32, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    match vector {
        GP_VECTOR => handle_gp(ctx, run),
        BP_VECTOR | OF_VECTOR => {
            // RIP is on the `int3` or `into`; the handler returns after it.
            if let Some(insn) = decode_at_rip(ctx).ok().filter(|i| i.op == System::Int(vector)) {
                ctx.skip_instruction(insn.len as u8);
            }
            ctx.queue_exception(vector, None);
            Action::Resume
        }
        // Real mode has no #TS or #NP, and its #SS (past SS's limit) has
        // error code 0. These come from 16-bit protected mode, from a
        // segment load that read a descriptor for a real-mode selector
        // and found it not present (#NP, or #SS for SS), or an `int n`
        // whose IVT entry, read as a gate, was not: the instruction is
        // carried out as real mode would.
        TS_VECTOR | NP_VECTOR | SS_VECTOR if vector != SS_VECTOR || error_code != 0 => match decode_at_rip(ctx) {
            Ok(insn) => execute(&insn, ctx, run),
            Err(_) => raise(ctx, Exception { vector, error_code: None }),
        },
        _ => {
            // Real mode pushes no error code.
            ctx.queue_exception(vector, None);
            Action::Resume
        }
    }
}

/// The next `KVM_RUN` after the MMIO read of a system instruction's
/// operand: the instruction runs again, and the read takes userspace's
/// data. `None` if the guest is not in real mode or the instruction at
/// RIP is not a system instruction: the read was the emulator's.
pub(super) fn resume(ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Option<Action> {
    if !is_real_mode(&ctx.sregs()) {
        return None;
    }
    let insn = decode_at_rip(ctx).ok()?;
    Some(execute(&insn, ctx, run))
}

/// #GP: an instruction real mode allows and virtual-8086 mode (or 16-bit
/// protected mode) does not, emulated; or one the guest must see fault.
fn handle_gp(ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    match decode_at_rip(ctx) {
        Ok(insn) => execute(&insn, ctx, run),
        Err(DecodeError::Invalid) => raise(ctx, Exception::UD),
        Err(DecodeError::TooLong) => raise(ctx, Exception::GP0),
        Err(DecodeError::Unsupported | DecodeError::Truncated) => {
            emulate_other(ctx, run).unwrap_or_else(|| to_user_unknown(EMULATION_FAILED, run))
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
        System::Lmsw(src) => match read_word(ctx, run, &src, insn.len) {
            Ok(value) => cr::handle_lmsw(value, len, ctx),
            Err(stop) => stop.act(ctx, run),
        },
        System::Lgdt(mem) | System::Lidt(mem) => load_table(insn, &mem, ctx, run),
        System::Int(vector) => {
            ctx.skip_instruction(len);
            ctx.queue_exception(vector, None);
            Action::Resume
        }
        System::NoOp => {
            ctx.skip_instruction(len);
            Action::Resume
        }
        _ => match segment_instruction(insn, ctx, run) {
            Ok(()) => Action::Resume,
            Err(stop) => stop.act(ctx, run),
        },
    }
}

/// `lgdt` or `lidt`: a 16-bit limit and a base, of which 24 bits count
/// with a 16-bit operand size and 32 with a 32-bit one (SDM Vol. 2A,
/// LGDT/LIDT).
fn load_table(insn: &SystemInstruction, mem: &MemOperand, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    let mut bytes = [0u8; 6];
    if let Err(stop) = read(ctx, run, mem, insn.len, &mut bytes) {
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

// ANCHOR: segment_instructions
/// An instruction that loads a segment register, as real mode runs it
/// (SDM Vol. 3A, 20.1.1; each instruction's "Operation" in Vol. 2 for
/// real-address mode). Everything that can fault is read, or pushed,
/// first; the registers change only after.
fn segment_instruction(insn: &SystemInstruction, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Result<(), Stop> {
    let len = insn.len as u8;
    let size = insn.size;
    match insn.op {
        System::MovSreg { sreg, src } => {
            let selector = read_word(ctx, run, &src, insn.len)?;
            load(ctx, sreg, selector);
            ctx.skip_instruction(len);
        }
        System::PopSreg(sreg) => {
            // With a 32-bit operand size it pops four bytes and keeps the
            // low two (SDM Vol. 2B, POP).
            let ([value], rsp) = pop(ctx, size)?;
            ctx.set_gpr(RSP, rsp);
            load(ctx, sreg, value as u16);
            ctx.skip_instruction(len);
        }
        System::LoadFar { sreg, reg, src } => {
            let (selector, offset) = read_far(ctx, run, &src, insn)?;
            let operand = RegOperand { reg, size, high: false };
            ctx.set_gpr(reg as u8, merge_reg(ctx.gpr(reg as u8), operand, offset));
            load(ctx, sreg, selector);
            ctx.skip_instruction(len);
        }
        System::JmpFar { selector, offset } => far_branch(ctx, insn, selector, offset, false)?,
        System::CallFar { selector, offset } => far_branch(ctx, insn, selector, offset, true)?,
        System::JmpFarMem(mem) | System::CallFarMem(mem) => {
            let (selector, offset) = read_far(ctx, run, &mem, insn)?;
            far_branch(ctx, insn, selector, offset, matches!(insn.op, System::CallFarMem(_)))?;
        }
        System::RetFar(release) => {
            // IP (EIP), then CS, then `release` bytes more (SDM Vol. 2B,
            // RET, real-address mode).
            let ([ip, cs], rsp) = pop(ctx, size)?;
            let ip = within_cs(ctx, ip & size.mask())?;
            let mask = stack_mask(&ctx.sregs());
            ctx.set_gpr(RSP, (rsp & !mask) | (rsp.wrapping_add(u64::from(release)) & mask));
            return_to(ctx, len, cs as u16, ip);
        }
        System::Iret => {
            // IP, CS and FLAGS (SDM Vol. 2A, IRET, "REAL-ADDRESS-MODE").
            let ([ip, cs, flags], rsp) = pop(ctx, size)?;
            let ip = within_cs(ctx, ip & size.mask())?;
            let rflags = iret_flags(ctx.rflags(), flags, size);
            ctx.set_gpr(RSP, rsp);
            return_to(ctx, len, cs as u16, ip);
            // After the completion, which looks at TF as it was (a step
            // traps after the `iret` that clears TF, not after one that
            // sets it) and clears RF, which an `iretd` may set again.
            ctx.set_rflags(rflags);
        }
        System::Hlt | System::Clts | System::NoOp | System::MovCr { .. } | System::Lgdt(_) | System::Lidt(_) | System::Lmsw(_) | System::Int(_) => {
            return Err(Stop::ToUser);
        }
    }
    Ok(())
}

/// A far `jmp` or, with `call`, a far `call` to `selector:offset`: the
/// offset, cut to the operand size, must lie within CS's limit (#GP(0));
/// a call pushes CS, then the next instruction's IP (EIP with a 32-bit
/// operand size, and CS then zero-extended to 32 bits); CS is loaded as
/// `mov` loads a segment (SDM Vol. 2A, CALL and JMP, real-address mode).
fn far_branch(ctx: &mut dyn ExitContext, insn: &SystemInstruction, selector: u16, offset: u64, call: bool) -> Result<(), Stop> {
    let ip = within_cs(ctx, offset & insn.size.mask())?;
    if call {
        let cs = u64::from(ctx.sregs().cs.selector);
        let next = ctx.rip().wrapping_add(insn.len as u64) & insn.size.mask();
        let rsp = push(ctx, [cs, next], insn.size)?;
        ctx.set_gpr(RSP, rsp);
    }
    return_to(ctx, insn.len as u8, selector, ip);
    Ok(())
}

/// The instruction is complete (which ends any interrupt shadow and
/// clears RF), and execution goes on at `cs:ip`.
fn return_to(ctx: &mut dyn ExitContext, len: u8, cs: u16, ip: u64) {
    load(ctx, Segment::Cs, cs);
    ctx.skip_instruction(len);
    ctx.set_rip(ip);
}

/// `ip` if it lies within CS's limit, which a real-mode load of CS keeps;
/// past it the far transfer is #GP(0).
fn within_cs(ctx: &dyn ExitContext, ip: u64) -> Result<u64, Stop> {
    if ip > u64::from(ctx.sregs().cs.limit) {
        return Err(Stop::Fault(Exception::GP0));
    }
    Ok(ip)
}

/// RFLAGS after an `iret` popped `popped` (SDM Vol. 2A, IRET,
/// "REAL-ADDRESS-MODE"). A 16-bit `iret` writes FLAGS, bits 15:0, IOPL
/// and NT included; an `iretd` writes the bits of 257FD5H (CF, PF, AF,
/// ZF, SF, TF, IF, DF, OF, IOPL, NT, RF, AC and ID) and keeps VM, VIF and
/// VIP (1A0000H). Bit 1 reads as 1, and bits 3, 5 and 15 as 0 (SDM
/// Vol. 1, 3.4.3).
fn iret_flags(old: u64, popped: u64, size: Size) -> u64 {
    const FIXED_ONE: u64 = 1 << 1;
    if size == Size::Word {
        (old & !0xFFFF) | (popped & 0x7FD5) | FIXED_ONE
    } else {
        (popped & 0x25_7FD5) | (old & 0x1A_0000) | FIXED_ONE
    }
}

/// Loads segment register `sreg` with `selector` as real mode does.
fn load(ctx: &mut dyn ExitContext, sreg: Segment, selector: u16) {
    let mut sregs = ctx.sregs();
    let seg = segment_mut(&mut sregs, sreg);
    *seg = load_segment(seg, selector);
    ctx.set_sregs(&sregs);
}
// ANCHOR_END: segment_instructions

// ANCHOR: real_mode_stack
/// RSP's number.
const RSP: u8 = Reg::Rsp as u8;

/// The stack pointer's bits: ESP if SS.B is set, else SP, which wraps
/// within 64 KiB (SDM Vol. 1, 6.2.3 "Address-Size Attributes for Stack
/// Accesses").
fn stack_mask(sregs: &KvmSregs) -> u64 {
    if sregs.ss.db != 0 { 0xFFFF_FFFF } else { 0xFFFF }
}

/// Pops `N` values of `size` bytes from SS:rSP, the first popped first,
/// each through SS's checks (past its limit, #SS(0)). Nothing changes:
/// the values and rSP after them are returned.
fn pop<const N: usize>(ctx: &mut dyn ExitContext, size: Size) -> Result<([u64; N], u64), Stop> {
    let mask = stack_mask(&ctx.sregs());
    let rsp = ctx.gpr(RSP);
    let mut sp = rsp & mask;
    let mut values = [0; N];
    for value in &mut values {
        let mut bytes = [0u8; 8];
        let word = bytes.get_mut(..size.bytes()).ok_or(Stop::ToUser)?;
        stack(read_at(ctx, Segment::Ss, sp, word))?;
        *value = u64::from_le_bytes(bytes);
        sp = sp.wrapping_add(size.bytes() as u64) & mask;
    }
    Ok((values, (rsp & !mask) | sp))
}

/// Pushes two values of `size` bytes (2 or 4) on SS:rSP, the first
/// pushed first; returns rSP after them, for the caller to set. The two
/// go in one write, all or nothing, unless they lie on both sides of the
/// stack's wrap, where each is written alone.
fn push(ctx: &mut dyn ExitContext, values: [u64; 2], size: Size) -> Result<u64, Stop> {
    let mask = stack_mask(&ctx.sregs());
    let rsp = ctx.gpr(RSP);
    let n = size.bytes() as u64;
    let top = rsp.wrapping_sub(2 * n) & mask;
    let [first, second] = values;
    // The second value pushed is at the lower address.
    let frame = u128::from(second & size.mask()) | u128::from(first & size.mask()) << (8 * n);
    let bytes = frame.to_le_bytes();
    if top + 2 * n <= mask + 1 {
        let frame = bytes.get(..2 * n as usize).ok_or(Stop::ToUser)?;
        stack(write_at(ctx, Segment::Ss, top, frame))?;
    } else {
        for (i, value) in [first, second].into_iter().enumerate() {
            let offset = rsp.wrapping_sub(n * (i as u64 + 1)) & mask;
            let word = value.to_le_bytes();
            stack(write_at(ctx, Segment::Ss, offset, word.get(..n as usize).ok_or(Stop::ToUser)?))?;
        }
    }
    Ok((rsp & !mask) | top)
}

/// A stack access's outcome: a fault is the guest's (#SS(0) past SS's
/// limit); a stack in MMIO is not emulated, and its #GP goes to userspace.
fn stack(access: Access) -> Result<(), Stop> {
    match access {
        Access::Done => Ok(()),
        Access::Fault(e) => Err(Stop::Fault(e)),
        Access::Mmio => Err(Stop::ToUser),
    }
}
// ANCHOR_END: real_mode_stack

/// Why an instruction stopped before its end.
enum Stop {
    /// A read or a write faults, as it would on the processor: the
    /// guest's.
    Fault(Exception),
    /// The operand is in MMIO: `run` asks userspace for it, and the
    /// instruction runs again with its answer ([`resume`]).
    Mmio,
    /// The stack is in MMIO, which is not emulated (or the operand is
    /// neither a register nor memory, which the decoder never gives): the
    /// #GP goes to userspace.
    ToUser,
}

impl Stop {
    fn act(self, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
        match self {
            Stop::Fault(e) => raise(ctx, e),
            Stop::Mmio => Action::ToUser,
            Stop::ToUser => to_user_exception(GP_VECTOR, 0, run),
        }
    }
}

/// A 16-bit operand: a register's low word, or a word of guest memory.
fn read_word(ctx: &mut dyn ExitContext, run: &mut KvmRun, src: &Operand, len: usize) -> Result<u16, Stop> {
    match src {
        Operand::Reg(r) => Ok((ctx.gpr(r.reg as u8) >> if r.high { 8 } else { 0 }) as u16),
        Operand::Mem(mem) => {
            let mut word = [0u8; 2];
            read(ctx, run, mem, len, &mut word)?;
            Ok(u16::from_le_bytes(word))
        }
        Operand::None | Operand::Imm(_) => Err(Stop::ToUser),
    }
}

/// A far pointer in memory: an offset of the operand size, then a
/// selector; read at once, so that a pointer that crosses the segment's
/// limit faults whole.
fn read_far(ctx: &mut dyn ExitContext, run: &mut KvmRun, mem: &MemOperand, insn: &SystemInstruction) -> Result<(u16, u64), Stop> {
    let n = insn.size.bytes();
    let mut bytes = [0u8; 8];
    read(ctx, run, mem, insn.len, bytes.get_mut(..n + 2).ok_or(Stop::ToUser)?)?;
    let pointer = u64::from_le_bytes(bytes);
    Ok(((pointer >> (8 * n)) as u16, pointer & insn.size.mask()))
}

/// Reads a memory operand from guest RAM, or asks userspace for it.
fn read(ctx: &mut dyn ExitContext, run: &mut KvmRun, mem: &MemOperand, len: usize, data: &mut [u8]) -> Result<(), Stop> {
    match read_operand(ctx, run, mem, len, data) {
        Access::Done => Ok(()),
        Access::Fault(e) => Err(Stop::Fault(e)),
        Access::Mmio => Err(Stop::Mmio),
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
