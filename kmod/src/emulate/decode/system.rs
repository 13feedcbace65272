//@ stage 12
//! The decoder's second table: the instructions a real-mode guest runs
//! that VMX, which runs real mode in virtual-8086 mode, refuses with #GP.
//!
//! vm86 runs at CPL 3, so every instruction that needs CPL 0 faults there
//! (SDM Vol. 3A, 20.2.7 "Sensitive Instructions", and each instruction's
//! "Virtual-8086 Mode Exceptions"): `hlt`, `clts`, `mov` to and from
//! control registers, `lgdt`, `lidt`, `lmsw`, `invd`, `wbinvd` and
//! `invlpg`. A real-mode guest whose segments vm86 cannot run goes as
//! 16-bit protected mode instead (`arch/vmx/vcpu.rs`), where every
//! instruction that loads a segment register reads the selector as an
//! index into the GDT or the LDT, and an `int n` reads the IVT as an IDT:
//! they fault, and are here for it. They are `mov sreg` and `pop sreg`,
//! `lds`, `les`, `lss`, `lfs` and `lgs`, the far `jmp` and `call` with a
//! pointer in the instruction or in memory, the far `ret`, `iret`, and
//! `int n`. Each is decoded into a [`System`] for `exit/real_mode.rs` to
//! carry out; any other opcode is [`DecodeError::Unsupported`]. The
//! length of each includes every prefix, and `exit/real_mode.rs` skips
//! exactly that many bytes.

use super::{Cursor, MAX_LEN, Prefixes, Rm, modrm, operand_size, rm_operand};
use super::{DecodeError, MemOperand, Operand};
use crate::emulate::{Mode, Segment, Size, reg};
use crate::regs::Reg;

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
    /// `pop sreg`: `pop es` (07), `pop ss` (17), `pop ds` (1F), `pop fs`
    /// (0F A1), `pop gs` (0F A9). It pops a word, or with a 32-bit operand
    /// size a doubleword whose low word is the selector.
    PopSreg(Segment),
    /// `lds` (C5), `les` (C4), `lss` (0F B2), `lfs` (0F B4), `lgs` (0F B5):
    /// a far pointer in memory, an offset of the operand size then a
    /// selector, loaded into the general register `reg` and `sreg`.
    LoadFar { sreg: Segment, reg: Reg, src: MemOperand },
    /// `jmp ptr16:16` or `jmp ptr16:32` (EA).
    JmpFar { selector: u16, offset: u64 },
    /// `jmp m16:16` or `jmp m16:32` (FF /5): the far pointer in memory.
    JmpFarMem(MemOperand),
    /// `call ptr16:16` or `call ptr16:32` (9A).
    CallFar { selector: u16, offset: u64 },
    /// `call m16:16` or `call m16:32` (FF /3).
    CallFarMem(MemOperand),
    /// `retf` (CB) and `retf imm16` (CA): the bytes to release from the
    /// stack after the return address, 0 for CB.
    RetFar(u16),
    /// `iret` (CF); `iretd` with a 32-bit operand size.
    Iret,
    /// `int n` (CD), `int3` (CC, vector 3) or `into` (CE, vector 4).
    Int(u8),
}

/// A decoded system instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemInstruction {
    pub op: System,
    /// Its length, prefixes included.
    pub len: usize,
    /// The operand size: `lgdt` and `lidt` load a 24-bit base with 16;
    /// it sizes the offsets of far pointers and the words a stack
    /// instruction pushes or pops.
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
        0x9A => {
            let offset = c.le(size.bytes())?;
            System::CallFar { selector: c.le(2)? as u16, offset }
        }
        0x07 => System::PopSreg(Segment::Es),
        0x17 => System::PopSreg(Segment::Ss),
        0x1F => System::PopSreg(Segment::Ds),
        // With a register operand, LES and LDS are #UD in real mode (SDM
        // Vol. 2A, LDS/LES/LFS/LGS/LSS, "Real-Address Mode Exceptions");
        // in protected mode C4 and C5 with mod 11 are a VEX prefix (SDM
        // Vol. 2A, 2.3.5), which this decoder does not know.
        0xC4 | 0xC5 => {
            let m = modrm(&mut c, mode, &p)?;
            let sreg = if opcode == 0xC4 { Segment::Es } else { Segment::Ds };
            match (m.rm, mode) {
                (Rm::Mem(src), _) => System::LoadFar { sreg, reg: reg(m.reg), src },
                (Rm::Reg(_), Mode::Bits16) => return Err(DecodeError::Invalid),
                (Rm::Reg(_), _) => return Err(DecodeError::Unsupported),
            }
        }
        0xCA => System::RetFar(c.le(2)? as u16),
        0xCB => System::RetFar(0),
        0xCF => System::Iret,
        0xFF => {
            let m = modrm(&mut c, mode, &p)?;
            match (m.reg & 7, m.rm) {
                (3, Rm::Mem(mem)) => System::CallFarMem(mem),
                (5, Rm::Mem(mem)) => System::JmpFarMem(mem),
                // A far pointer cannot be in a register: #UD.
                (3 | 5, Rm::Reg(_)) => return Err(DecodeError::Invalid),
                // `inc`, `dec` and `push` (the emulator's), and the near
                // `call` and `jmp`, which never fault for a segment.
                _ => return Err(DecodeError::Unsupported),
            }
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
        0xA1 => System::PopSreg(Segment::Fs),
        0xA9 => System::PopSreg(Segment::Gs),
        // LSS, LFS and LGS with a register operand are #UD in every mode.
        0xB2 | 0xB4 | 0xB5 => {
            let m = modrm(c, mode, p)?;
            let sreg = match opcode {
                0xB2 => Segment::Ss,
                0xB4 => Segment::Fs,
                _ => Segment::Gs,
            };
            let Rm::Mem(src) = m.rm else { return Err(DecodeError::Invalid) };
            System::LoadFar { sreg, reg: reg(m.reg), src }
        }
        _ => return Err(DecodeError::Unsupported),
    })
}
// ANCHOR_END: decode_system

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulate::decode::{Base, RegOperand};
    use iced_x86::{Code, Register};

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
    fn segment_pops_and_far_pointer_loads() {
        assert_eq!(op(&[0x07]), (System::PopSreg(Segment::Es), 1));
        assert_eq!(op(&[0x17]), (System::PopSreg(Segment::Ss), 1));
        assert_eq!(op(&[0x1F]), (System::PopSreg(Segment::Ds), 1));
        assert_eq!(op(&[0x0F, 0xA1]), (System::PopSreg(Segment::Fs), 2));
        let pop_gs = decode16(&[0x66, 0x0F, 0xA9]).unwrap();
        assert_eq!((pop_gs.op, pop_gs.len, pop_gs.size), (System::PopSreg(Segment::Gs), 3, Size::Dword));
        // les bx, [0x40]; lds si, es:[bx+2]; lss sp, [bp] (SS by default).
        let (System::LoadFar { sreg, reg, src }, 4) = op(&[0xC4, 0x1E, 0x40, 0x00]) else { panic!() };
        assert_eq!((sreg, reg, src.segment, src.base, src.disp), (Segment::Es, Reg::Rbx, Segment::Ds, Base::None, 0x40));
        let (System::LoadFar { sreg, reg, src }, 4) = op(&[0x26, 0xC5, 0x77, 0x02]) else { panic!() };
        assert_eq!((sreg, reg, src.segment, src.base, src.index, src.disp), (Segment::Ds, Reg::Rsi, Segment::Es, Base::Reg(Reg::Rbx), None, 2));
        let (System::LoadFar { sreg, reg, src }, 4) = op(&[0x0F, 0xB2, 0x66, 0x00]) else { panic!() };
        assert_eq!((sreg, reg, src.segment, src.base), (Segment::Ss, Reg::Rsp, Segment::Ss, Base::Reg(Reg::Rbp)));
        // o32 a32 lfs eax, [esp] (a SIB byte); lgs di, [0x1234].
        let insn = decode16(&[0x66, 0x67, 0x0F, 0xB4, 0x04, 0x24]).unwrap();
        let System::LoadFar { sreg, reg, src } = insn.op else { panic!("{insn:?}") };
        assert_eq!((sreg, reg, src.segment, src.base, insn.len, insn.size), (Segment::Fs, Reg::Rax, Segment::Ss, Base::Reg(Reg::Rsp), 6, Size::Dword));
        assert_eq!(op(&[0x0F, 0xB5, 0x3E, 0x34, 0x12]).1, 5);
        // A register operand: #UD in real mode; in 32-bit mode C4 and C5
        // with mod 11 are VEX.
        for bytes in [[0xC4, 0xC0], [0xC5, 0xD8]] {
            assert_eq!(decode16(&bytes).map(|i| i.op), Err(DecodeError::Invalid));
            assert_eq!(decode_system(&bytes, Mode::Bits32).map(|i| i.op), Err(DecodeError::Unsupported));
        }
        for bytes in [[0x0F, 0xB2, 0xC0], [0x0F, 0xB4, 0xC0], [0x0F, 0xB5, 0xC0]] {
            assert_eq!(decode16(&bytes).map(|i| i.op), Err(DecodeError::Invalid));
        }
        assert_eq!(decode16(&[0xF0, 0x1F]).map(|i| i.op), Err(DecodeError::Invalid), "lock");
    }

    #[test]
    fn far_calls_jumps_and_returns() {
        assert_eq!(op(&[0x9A, 0x34, 0x12, 0x00, 0xF0]), (System::CallFar { selector: 0xF000, offset: 0x1234 }, 5));
        let far32 = [0x66, 0x9A, 0x78, 0x56, 0x34, 0x12, 0x08, 0x00];
        assert_eq!(op(&far32), (System::CallFar { selector: 8, offset: 0x1234_5678 }, 8));
        // call far [0x40]; jmp far [bx]; their register forms are #UD.
        let (System::CallFarMem(mem), 4) = op(&[0xFF, 0x1E, 0x40, 0x00]) else { panic!() };
        assert_eq!((mem.segment, mem.disp), (Segment::Ds, 0x40));
        let (System::JmpFarMem(mem), 2) = op(&[0xFF, 0x2F]) else { panic!() };
        assert_eq!(mem.base, Base::Reg(Reg::Rbx));
        assert_eq!(decode16(&[0xFF, 0xD8]).map(|i| i.op), Err(DecodeError::Invalid));
        assert_eq!(decode16(&[0xFF, 0xE8]).map(|i| i.op), Err(DecodeError::Invalid));
        // inc, dec, the near call and jmp and push: not these.
        for reg in [0, 1, 2, 4, 6] {
            assert_eq!(decode16(&[0xFF, 0x06 | reg << 3, 0x40, 0x00]).map(|i| i.op), Err(DecodeError::Unsupported), "FF /{reg}");
        }
        assert_eq!(op(&[0xCB]), (System::RetFar(0), 1));
        assert_eq!(op(&[0xCA, 0x06, 0x01]), (System::RetFar(0x106), 3));
        assert_eq!(op(&[0xCF]), (System::Iret, 1));
        assert_eq!(decode16(&[0x66, 0xCF]).map(|i| i.size), Ok(Size::Dword), "iretd");
        assert_eq!(decode16(&[0xCA, 0x06]).map(|i| i.op), Err(DecodeError::Truncated));
        assert_eq!(decode16(&[0x66, 0x9A, 0x78, 0x56, 0x34, 0x12, 0x08]).map(|i| i.op), Err(DecodeError::Truncated));
    }

    #[test]
    fn everything_else_is_unsupported_and_short_bytes_are_truncated() {
        assert_eq!(decode16(&[0x90]).map(|i| i.op), Err(DecodeError::Unsupported));
        assert_eq!(decode16(&[0x0F, 0x01]).map(|i| i.op), Err(DecodeError::Truncated));
        assert_eq!(decode16(&[0x66; 15]).map(|i| i.op), Err(DecodeError::Truncated));
        assert_eq!(decode16(&[0x66; 16]).map(|i| i.op), Err(DecodeError::TooLong));
        assert_eq!(decode_system(&[0xF4], Mode::Bits64).map(|i| i.op), Err(DecodeError::Unsupported));
        for bytes in [&[0x1F][..], &[0xCF], &[0xCB], &[0xFF, 0x1E, 0x40, 0x00], &[0x0F, 0xB2, 0x26, 0x40, 0x00]] {
            assert_eq!(decode_system(bytes, Mode::Bits64).map(|i| i.op), Err(DecodeError::Unsupported), "{bytes:02X?}");
        }
    }

    /// Random bytes, most of them after prefixes and one of the decoder's
    /// opcodes, in 16- and 32-bit mode: whatever the decoder accepts
    /// (but a move to or from a control register that does not exist),
    /// iced-x86 decodes too, to the same length.
    #[test]
    fn accepted_bytes_have_iceds_length() {
        use iced_x86::{Decoder, DecoderOptions};
        const PREFIXES: [u8; 11] = [0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF2, 0xF3, 0xF0];
        const OPCODES: [&[u8]; 27] = [
            &[0xF4], &[0xCC], &[0xCD], &[0xCE], &[0x8E], &[0xEA], &[0x9A], &[0x07], &[0x17], &[0x1F], &[0xC4], &[0xC5], &[0xCA],
            &[0xCB], &[0xCF], &[0xFF], &[0x0F, 0x06], &[0x0F, 0x08], &[0x0F, 0x20], &[0x0F, 0x22], &[0x0F, 0x01], &[0x0F, 0xA1],
            &[0x0F, 0xA9], &[0x0F, 0xB2], &[0x0F, 0xB4], &[0x0F, 0xB5], &[0x0F, 0x09],
        ];
        let mut rng = crate::test_rng::Rng::new(12);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut bytes = std::vec::Vec::new();
            if !rng.one_in(8) {
                for _ in 0..rng.below(4) {
                    bytes.push(PREFIXES[rng.below(PREFIXES.len() as u64) as usize]);
                }
                bytes.extend_from_slice(OPCODES[rng.below(OPCODES.len() as u64) as usize]);
            }
            while bytes.len() < 16 {
                bytes.push(rng.next() as u8);
            }
            let mode = if rng.one_in(2) { Mode::Bits16 } else { Mode::Bits32 };
            let bitness = if mode == Mode::Bits16 { 16 } else { 32 };
            let Ok(insn) = decode_system(&bytes, mode) else { continue };
            // The decoder takes any control register's number, and leaves
            // those that do not exist to the handler.
            if let System::MovCr { cr: 1 | 5..=7, .. } = insn.op {
                continue;
            }
            let theirs = Decoder::new(bitness, &bytes, DecoderOptions::NONE).decode();
            assert!(!theirs.is_invalid(), "{bitness}-bit {bytes:02X?}: {insn:?}, invalid for iced");
            assert_eq!(insn.len, theirs.len(), "{bitness}-bit {bytes:02X?}: {insn:?} vs {:?}", theirs.code());
            accepted += 1;
        }
        assert!(accepted > 10_000, "{accepted}");
    }

    /// iced-x86's code for a decoded instruction, and the register it
    /// loads, if any.
    fn iced_code(insn: &SystemInstruction) -> Option<(Code, Option<Reg>)> {
        let o32 = insn.size == Size::Dword;
        let pick = |w: Code, d: Code| if o32 { d } else { w };
        Some(match insn.op {
            System::PopSreg(s) => (
                match s {
                    Segment::Es => pick(Code::Popw_ES, Code::Popd_ES),
                    Segment::Ss => pick(Code::Popw_SS, Code::Popd_SS),
                    Segment::Ds => pick(Code::Popw_DS, Code::Popd_DS),
                    Segment::Fs => pick(Code::Popw_FS, Code::Popd_FS),
                    Segment::Gs => pick(Code::Popw_GS, Code::Popd_GS),
                    Segment::Cs => return None,
                },
                None,
            ),
            System::LoadFar { sreg, reg, .. } => (
                match sreg {
                    Segment::Es => pick(Code::Les_r16_m1616, Code::Les_r32_m1632),
                    Segment::Ds => pick(Code::Lds_r16_m1616, Code::Lds_r32_m1632),
                    Segment::Ss => pick(Code::Lss_r16_m1616, Code::Lss_r32_m1632),
                    Segment::Fs => pick(Code::Lfs_r16_m1616, Code::Lfs_r32_m1632),
                    Segment::Gs => pick(Code::Lgs_r16_m1616, Code::Lgs_r32_m1632),
                    Segment::Cs => return None,
                },
                Some(reg),
            ),
            System::CallFar { .. } => (pick(Code::Call_ptr1616, Code::Call_ptr1632), None),
            System::JmpFar { .. } => (pick(Code::Jmp_ptr1616, Code::Jmp_ptr1632), None),
            System::CallFarMem(_) => (pick(Code::Call_m1616, Code::Call_m1632), None),
            System::JmpFarMem(_) => (pick(Code::Jmp_m1616, Code::Jmp_m1632), None),
            System::RetFar(0) => (pick(Code::Retfw, Code::Retfd), None),
            System::RetFar(_) => (pick(Code::Retfw_imm16, Code::Retfd_imm16), None),
            System::Iret => (pick(Code::Iretw, Code::Iretd), None),
            _ => return None,
        })
    }

    /// Every form of the segment-loading instructions, under the prefixes
    /// a real-mode guest may put on them, in 16- and 32-bit mode: decoded
    /// as iced-x86 decodes them, with the same length, operand size,
    /// register, memory operand, pointer and immediate. The register
    /// forms, #UD, are invalid for both; in 32-bit mode the decoder leaves
    /// C4 and C5 with mod 11, VEX there, to others.
    #[test]
    fn segment_instructions_decode_as_iced_decodes_them() {
        use iced_x86::{Decoder, DecoderOptions};
        let opcodes: [&[u8]; 18] = [
            &[0x07],
            &[0x17],
            &[0x1F],
            &[0x0F, 0xA1],
            &[0x0F, 0xA9],
            &[0xC4],
            &[0xC5],
            &[0x0F, 0xB2],
            &[0x0F, 0xB4],
            &[0x0F, 0xB5],
            &[0x9A],
            &[0xEA],
            &[0xFF, 0x1E],
            &[0xFF, 0x2F],
            &[0xCA],
            &[0xCB],
            &[0xCF],
            &[0xFF, 0x5C],
        ];
        let modrm_opcodes = [0xC4, 0xC5, 0xB2, 0xB4, 0xB5];
        let prefixes: [&[u8]; 11] = [&[], &[0x66], &[0x67], &[0x66, 0x67], &[0x26], &[0x2E], &[0x36], &[0x3E], &[0x64], &[0x65, 0x66], &[0xF3]];
        let modrms = [0x06, 0x1C, 0x24, 0x44, 0x5D, 0x87, 0xB6];
        let tail = [0x98, 0x76, 0x54, 0x32, 0x10, 0xFE, 0xDC, 0xBA];
        let mut compared = 0;
        for mode in [Mode::Bits16, Mode::Bits32] {
            let bitness = if mode == Mode::Bits16 { 16 } else { 32 };
            for prefix in prefixes {
                for opcode in opcodes {
                    let takes_modrm = opcode.last().is_some_and(|b| modrm_opcodes.contains(b));
                    let forms: &[u8] = if takes_modrm { &modrms } else { &[0x11] };
                    for &modrm in forms {
                        let bytes = if takes_modrm { [prefix, opcode, &[modrm], &tail].concat() } else { [prefix, opcode, &tail].concat() };
                        let theirs = Decoder::new(bitness, &bytes, DecoderOptions::NONE).decode();
                        assert!(!theirs.is_invalid(), "{bitness}-bit {bytes:02X?}: invalid for iced");
                        let insn = decode_system(&bytes, mode).unwrap_or_else(|e| panic!("{bitness}-bit {bytes:02X?}: {e:?}"));
                        let (code, reg) = iced_code(&insn).unwrap_or_else(|| panic!("{insn:?}"));
                        let what = format!("{bitness}-bit {bytes:02X?}: {insn:?} vs {:?}", theirs.code());
                        assert_eq!((insn.len, code), (theirs.len(), theirs.code()), "{what}");
                        if let Some(reg) = reg {
                            assert_eq!(theirs.op0_register().number(), reg as usize, "{what}");
                        }
                        let mem = match insn.op {
                            System::LoadFar { src, .. } => Some(src),
                            System::CallFarMem(mem) | System::JmpFarMem(mem) => Some(mem),
                            _ => None,
                        };
                        if let Some(mem) = mem {
                            let a = mem.address_size;
                            let number = |r: Register| (r != Register::None).then(|| r.number());
                            let base = match mem.base {
                                Base::Reg(r) => Some(r as usize),
                                _ => None,
                            };
                            assert_eq!(crate::emulate::tests::iced::segment(mem.segment), theirs.memory_segment(), "{what}");
                            assert_eq!((base, mem.index.map(|r| r as usize)), (number(theirs.memory_base()), number(theirs.memory_index())), "{what}");
                            assert_eq!((u32::from(mem.scale), mem.disp & a.mask()), (theirs.memory_index_scale(), theirs.memory_displacement64()), "{what}");
                        }
                        match insn.op {
                            System::CallFar { selector, offset } | System::JmpFar { selector, offset } => {
                                assert_eq!((selector, offset), (theirs.far_branch_selector(), u64::from(theirs.far_branch32())), "{what}");
                            }
                            System::RetFar(n) if opcode == [0xCA] => assert_eq!(n, theirs.immediate16(), "{what}"),
                            _ => {}
                        }
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 2 * 11 * (13 + 5 * 7));
        // The register forms.
        for (bytes, bits32_vex) in [([0xC4, 0xC0, 0x00], true), ([0xC5, 0xC0, 0x00], true), ([0x0F, 0xB2, 0xC0], false), ([0xFF, 0xD8, 0x00], false), ([0xFF, 0xE8, 0x00], false)] {
            for mode in [Mode::Bits16, Mode::Bits32] {
                let bitness = if mode == Mode::Bits16 { 16 } else { 32 };
                let theirs = Decoder::new(bitness, &bytes, DecoderOptions::NONE).decode();
                let ours = decode_system(&bytes, mode).map(|i| i.op);
                if bits32_vex && mode == Mode::Bits32 {
                    assert_eq!(ours, Err(DecodeError::Unsupported), "{bytes:02X?}");
                } else {
                    assert!(theirs.is_invalid(), "{bitness}-bit {bytes:02X?}: {:?}", theirs.code());
                    assert_eq!(ours, Err(DecodeError::Invalid), "{bitness}-bit {bytes:02X?}");
                }
            }
        }
    }
}
