//@ stage 12
//! The decoder's second table: the instructions a real-mode guest runs
//! that VMX, which runs real mode in virtual-8086 mode, refuses with #GP.
//!
//! vm86 runs at CPL 3, so every instruction that needs CPL 0 faults there
//! (SDM Vol. 3A, 20.2.7 "Sensitive Instructions", and each instruction's
//! "Virtual-8086 Mode Exceptions"): `hlt`, `clts`, `mov` to and from
//! control registers, `lgdt`, `lidt`, `lmsw`, `invd`, `wbinvd` and
//! `invlpg`. A real-mode guest whose segments vm86 cannot run goes as
//! 16-bit protected mode instead (`arch/vmx/vcpu.rs`), where a segment
//! load or an `int n` reads the guest's tables as protected-mode ones and
//! faults: `mov sreg`, the far `jmp` and `int n` are here for it. Each is
//! decoded into a [`System`] for `exit/real_mode.rs` to carry out; any
//! other opcode is [`DecodeError::Unsupported`].

use super::{Cursor, MAX_LEN, Prefixes, Rm, modrm, operand_size, rm_operand};
use super::{DecodeError, MemOperand, Operand};
use crate::emulate::{Mode, Segment, Size};

// ANCHOR: system
/// A system instruction, with its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// `hlt` (F4).
    Hlt,
    /// `clts` (0F 06).
    Clts,
    /// `invd` and `wbinvd` (0F 08, 0F 09), and `invlpg` (0F 01 /7): nothing
    /// to do for a guest whose paging is off and whose memory the host
    /// caches.
    NoOp,
    /// `mov reg, crN` (0F 20) or, with `write`, `mov crN, reg` (0F 22):
    /// the control register and the general register by number.
    MovCr { cr: u8, gpr: u8, write: bool },
    /// `lgdt` (0F 01 /2): its six-byte memory operand.
    Lgdt(MemOperand),
    /// `lidt` (0F 01 /3).
    Lidt(MemOperand),
    /// `lmsw` (0F 01 /6): a 16-bit register or memory operand.
    Lmsw(Operand),
    /// `mov sreg, r/m16` (8E).
    MovSreg { sreg: Segment, src: Operand },
    /// `jmp ptr16:16` or `jmp ptr16:32` (EA).
    JmpFar { selector: u16, offset: u64 },
    /// `int n` (CD), `int3` (CC, vector 3) or `into` (CE, vector 4).
    Int(u8),
}

/// A decoded system instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemInstruction {
    pub op: System,
    /// Its length, prefixes included.
    pub len: usize,
    /// The operand size: `lgdt` and `lidt` load a 24-bit base with 16.
    pub size: Size,
}
// ANCHOR_END: system

// ANCHOR: decode_system
/// Decodes the system instruction at the start of `bytes`, outside
/// 64-bit mode.
pub fn decode_system(bytes: &[u8], mode: Mode) -> Result<SystemInstruction, DecodeError> {
    if mode == Mode::Bits64 {
        return Err(DecodeError::Unsupported);
    }
    let mut c = Cursor { bytes: bytes.get(..MAX_LEN).unwrap_or(bytes), pos: 0, more: bytes.len() > MAX_LEN };
    let mut p = Prefixes::default();
    let opcode = loop {
        match c.byte()? {
            0x66 => p.operand_size = true,
            0x67 => p.address_size = true,
            0x26 => p.segment = Some(Segment::Es),
            0x2E => p.segment = Some(Segment::Cs),
            0x36 => p.segment = Some(Segment::Ss),
            0x3E => p.segment = Some(Segment::Ds),
            0x64 => p.segment = Some(Segment::Fs),
            0x65 => p.segment = Some(Segment::Gs),
            0xF0 => p.lock = true,
            0xF2 | 0xF3 => {}
            byte => break byte,
        }
    };
    let size = operand_size(mode, &p, false);
    let op = match opcode {
        0xF4 => System::Hlt,
        0xCC => System::Int(3),
        0xCD => System::Int(c.byte()?),
        0xCE => System::Int(4),
        0x8E => {
            let m = modrm(&mut c, mode, &p)?;
            let sreg = match m.reg & 7 {
                0 => Segment::Es,
                2 => Segment::Ss,
                3 => Segment::Ds,
                4 => Segment::Fs,
                5 => Segment::Gs,
                // CS cannot be loaded by `mov`; 6 and 7 name no register.
                _ => return Err(DecodeError::Invalid),
            };
            System::MovSreg { sreg, src: rm_operand(m.rm, Size::Word, &p) }
        }
        0xEA => {
            let offset = c.le(size.bytes())?;
            System::JmpFar { selector: c.le(2)? as u16, offset }
        }
        0x0F => two_byte(&mut c, mode, &p)?,
        _ => return Err(DecodeError::Unsupported),
    };
    // None of them takes a lock prefix (with one, `mov cr` is AMD's
    // CR8 form, which real mode does not have).
    if p.lock {
        return Err(DecodeError::Invalid);
    }
    Ok(SystemInstruction { op, len: c.pos, size })
}

/// After 0F.
fn two_byte(c: &mut Cursor<'_>, mode: Mode, p: &Prefixes) -> Result<System, DecodeError> {
    let opcode = c.byte()?;
    Ok(match opcode {
        0x06 => System::Clts,
        0x08 | 0x09 => System::NoOp,
        // "The 2 bits in the mod field are ignored" (SDM Vol. 2B, MOV—Move
        // to/from Control Registers): the reg field names the control
        // register, the r/m field the general register.
        0x20 | 0x22 => {
            let byte = c.byte()?;
            System::MovCr { cr: (byte >> 3) & 7, gpr: byte & 7, write: opcode == 0x22 }
        }
        0x01 => {
            let m = modrm(c, mode, p)?;
            match (m.reg & 7, m.rm) {
                (2, Rm::Mem(mem)) => System::Lgdt(mem),
                (3, Rm::Mem(mem)) => System::Lidt(mem),
                (6, rm) => System::Lmsw(rm_operand(rm, Size::Word, p)),
                (7, Rm::Mem(_)) => System::NoOp,
                // Register forms of /2, /3 and /7 are other instructions
                // (VMX, MONITOR, SWAPGS, ...), and /0, /1, /4, /5 are
                // not privileged.
                _ => return Err(DecodeError::Unsupported),
            }
        }
        _ => return Err(DecodeError::Unsupported),
    })
}
// ANCHOR_END: decode_system

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulate::decode::{Base, RegOperand};
    use crate::regs::Reg;

    fn decode16(bytes: &[u8]) -> Result<SystemInstruction, DecodeError> {
        decode_system(bytes, Mode::Bits16)
    }

    fn op(bytes: &[u8]) -> (System, usize) {
        let insn = decode16(bytes).expect("a system instruction");
        (insn.op, insn.len)
    }

    #[test]
    fn privileged_instructions_without_operands() {
        assert_eq!(op(&[0xF4]), (System::Hlt, 1));
        assert_eq!(op(&[0x0F, 0x06]), (System::Clts, 2));
        assert_eq!(op(&[0x0F, 0x09]), (System::NoOp, 2), "wbinvd");
        assert_eq!(op(&[0xCD, 0x10]), (System::Int(0x10), 2));
        assert_eq!(op(&[0xCC]), (System::Int(3), 1));
        assert_eq!(op(&[0x66, 0xCE]), (System::Int(4), 2), "prefixes count in the length");
    }

    #[test]
    fn moves_to_and_from_control_registers_ignore_mod() {
        // mov eax, cr0; mov cr0, eax; mov cr4, ebx written with mod 00.
        assert_eq!(op(&[0x0F, 0x20, 0xC0]), (System::MovCr { cr: 0, gpr: 0, write: false }, 3));
        assert_eq!(op(&[0x0F, 0x22, 0xC0]), (System::MovCr { cr: 0, gpr: 0, write: true }, 3));
        assert_eq!(op(&[0x0F, 0x22, 0x23]), (System::MovCr { cr: 4, gpr: 3, write: true }, 3));
        assert_eq!(decode16(&[0xF0, 0x0F, 0x20, 0xC0]).map(|i| i.op), Err(DecodeError::Invalid), "lock");
    }

    #[test]
    fn descriptor_tables_and_the_machine_status_word() {
        // lgdt [0x8123] (16-bit addressing, disp16), then with 66.
        let insn = decode16(&[0x0F, 0x01, 0x16, 0x23, 0x81]).unwrap();
        let System::Lgdt(mem) = insn.op else { panic!("{insn:?}") };
        assert_eq!((mem.segment, mem.base, mem.disp as u16, insn.len, insn.size), (Segment::Ds, Base::None, 0x8123, 5, Size::Word));
        assert_eq!(decode16(&[0x66, 0x0F, 0x01, 0x16, 0x23, 0x81]).unwrap().size, Size::Dword);
        // lidt [bp+si] defaults to SS.
        let System::Lidt(mem) = op(&[0x0F, 0x01, 0x1A]).0 else { panic!() };
        assert_eq!((mem.segment, mem.base, mem.index), (Segment::Ss, Base::Reg(Reg::Rbp), Some(Reg::Rsi)));
        // lmsw ax; invlpg [bx].
        let ax = Operand::Reg(RegOperand { reg: Reg::Rax, size: Size::Word, high: false });
        assert_eq!(op(&[0x0F, 0x01, 0xF0]), (System::Lmsw(ax), 3));
        assert_eq!(op(&[0x0F, 0x01, 0x3F]), (System::NoOp, 3));
        assert_eq!(decode16(&[0x0F, 0x01, 0xD0]).map(|i| i.op), Err(DecodeError::Unsupported), "0F 01 D0 is xgetbv");
        assert_eq!(decode16(&[0x0F, 0x01, 0x06, 0x00, 0x80]).map(|i| i.op), Err(DecodeError::Unsupported), "sgdt");
    }

    #[test]
    fn segment_loads_and_far_jumps() {
        let ax = Operand::Reg(RegOperand { reg: Reg::Rax, size: Size::Word, high: false });
        assert_eq!(op(&[0x8E, 0xD8]), (System::MovSreg { sreg: Segment::Ds, src: ax }, 2), "mov ds, ax");
        assert_eq!(decode16(&[0x8E, 0xC8]).map(|i| i.op), Err(DecodeError::Invalid), "mov cs, ax");
        assert_eq!(op(&[0xEA, 0x34, 0x12, 0x00, 0xF0]), (System::JmpFar { selector: 0xF000, offset: 0x1234 }, 5));
        let far32 = [0x66, 0xEA, 0x78, 0x56, 0x34, 0x12, 0x08, 0x00];
        assert_eq!(op(&far32), (System::JmpFar { selector: 8, offset: 0x1234_5678 }, 8));
    }

    #[test]
    fn everything_else_is_unsupported_and_short_bytes_are_truncated() {
        assert_eq!(decode16(&[0x90]).map(|i| i.op), Err(DecodeError::Unsupported));
        assert_eq!(decode16(&[0x0F, 0x01]).map(|i| i.op), Err(DecodeError::Truncated));
        assert_eq!(decode16(&[0x66; 15]).map(|i| i.op), Err(DecodeError::Truncated));
        assert_eq!(decode16(&[0x66; 16]).map(|i| i.op), Err(DecodeError::TooLong));
        assert_eq!(decode_system(&[0xF4], Mode::Bits64).map(|i| i.op), Err(DecodeError::Unsupported));
    }
}
