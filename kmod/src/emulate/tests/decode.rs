//@ stage 10
//! The decoder on encodings worked out by hand from the SDM's tables:
//! prefixes, REX, operand and address sizes, the ModRM forms without a SIB
//! byte, immediates. The SIB byte's cases are in `e10_1`.

use super::super::decode::{Alu, Base, BitOp, DecodeError, MemOperand, Op, Operand, RegOperand, Rep, decode, decode_sib};
use super::super::{Mode, Segment, Size};
use crate::regs::Reg::{self, *};

fn reg(reg: Reg, size: Size) -> Operand {
    Operand::Reg(RegOperand { reg, size, high: false })
}

fn mem(segment: Segment, base: Base, disp: u64, address_size: Size, size: Size) -> Operand {
    Operand::Mem(MemOperand { segment, base, index: None, scale: 1, disp, address_size, size })
}

#[test]
fn lengths_and_operands() {
    // mov [rbx+0x10], eax
    let insn = decode(&[0x89, 0x43, 0x10, 0xCC], Mode::Bits64).unwrap();
    assert_eq!((insn.op, insn.len, insn.size, insn.address_size), (Op::Mov, 3, Size::Dword, Size::Qword));
    assert_eq!(insn.dst, mem(Segment::Ds, Base::Reg(Rbx), 0x10, Size::Qword, Size::Dword));
    assert_eq!(insn.src, reg(Rax, Size::Dword));
    // REX.WRB: mov r9, [r13-1] (mod 01, rm 101: a base, not RIP).
    let insn = decode(&[0x4D, 0x8B, 0x4D, 0xFF], Mode::Bits64).unwrap();
    assert_eq!(insn.dst, reg(R9, Size::Qword));
    assert_eq!(insn.src, mem(Segment::Ds, Base::Reg(R13), u64::MAX, Size::Qword, Size::Qword));
    // [rbp+disp32] defaults to SS.
    let insn = decode(&[0x8B, 0x85, 0x00, 0x01, 0x00, 0x00], Mode::Bits64).unwrap();
    assert_eq!(insn.src, mem(Segment::Ss, Base::Reg(Rbp), 0x100, Size::Qword, Size::Dword));
    assert_eq!(insn.len, 6);
    // RIP-relative in 64-bit mode, absolute in 32-bit mode.
    let insn = decode(&[0x8B, 0x05, 0xF0, 0xFF, 0xFF, 0xFF], Mode::Bits64).unwrap();
    assert_eq!(insn.src, mem(Segment::Ds, Base::Rip, (-16i64) as u64, Size::Qword, Size::Dword));
    let insn = decode(&[0x8B, 0x05, 0xF0, 0xFF, 0xFF, 0xFF], Mode::Bits32).unwrap();
    assert_eq!(insn.src, mem(Segment::Ds, Base::None, (-16i64) as u64, Size::Dword, Size::Dword));
    // 16-bit: [bp+di+disp8] in SS, 66 makes a 32-bit operand.
    let insn = decode(&[0x66, 0x8B, 0x43, 0x80], Mode::Bits16).unwrap();
    let expected = MemOperand {
        segment: Segment::Ss,
        base: Base::Reg(Rbp),
        index: Some(Rdi),
        scale: 1,
        disp: (-128i64) as u64,
        address_size: Size::Word,
        size: Size::Dword,
    };
    assert_eq!((insn.src, insn.len), (Operand::Mem(expected), 4));
}

#[test]
fn prefixes_and_rex() {
    // The last segment override wins; a 66 after REX cancels the REX.
    let insn = decode(&[0x26, 0x65, 0x66, 0x89, 0x07], Mode::Bits32).unwrap();
    assert_eq!((insn.segment, insn.size), (Some(Segment::Gs), Size::Word));
    let insn = decode(&[0x48, 0x66, 0x89, 0x07], Mode::Bits64).unwrap();
    assert_eq!(insn.size, Size::Word);
    let insn = decode(&[0x66, 0x48, 0x89, 0x07], Mode::Bits64).unwrap();
    assert_eq!(insn.size, Size::Qword);
    // In 64-bit mode DS after FS is a null prefix.
    let insn = decode(&[0x64, 0x3E, 0x8B, 0x07], Mode::Bits64).unwrap();
    assert_eq!(insn.src, mem(Segment::Fs, Base::Reg(Rdi), 0, Size::Qword, Size::Dword));
    // rep and repne: the last one.
    assert_eq!(decode(&[0xF2, 0xF3, 0xA4], Mode::Bits64).unwrap().rep, Some(Rep::Rep));
    assert_eq!(decode(&[0xF3, 0xF2, 0xA4], Mode::Bits64).unwrap().rep, Some(Rep::Repne));
    // 40-4F are not REX outside 64-bit mode.
    assert_eq!(decode(&[0x48, 0x89, 0x07], Mode::Bits32), Err(DecodeError::Unsupported));
}

#[test]
fn byte_registers() {
    let high = |reg| Operand::Reg(RegOperand { reg, size: Size::Byte, high: true });
    // 88 /r with reg = 4..7: AH, CH, DH, BH; with any REX, SPL..DIL.
    assert_eq!(decode(&[0x88, 0xE1], Mode::Bits64).unwrap().src, high(Rax));
    assert_eq!(decode(&[0x88, 0xF9], Mode::Bits64).unwrap().src, high(Rbx));
    assert_eq!(decode(&[0x40, 0x88, 0xF9], Mode::Bits64).unwrap().src, reg(Rdi, Size::Byte));
    assert_eq!(decode(&[0x44, 0x88, 0xF9], Mode::Bits64).unwrap().src, reg(R15, Size::Byte));
    assert_eq!(decode(&[0x88, 0xEC], Mode::Bits16).unwrap().dst, high(Rax));
}

#[test]
fn immediates() {
    // 83 /0 ib: sign-extended to the operand size.
    let insn = decode(&[0x66, 0x83, 0xC0, 0x80], Mode::Bits32).unwrap();
    assert_eq!((insn.op, insn.src, insn.len), (Op::Alu(Alu::Add), Operand::Imm(0xFF80), 4));
    // 81 /7 id with REX.W: 32 bits sign-extended to 64.
    let insn = decode(&[0x48, 0x81, 0xF9, 0x00, 0x00, 0x00, 0x80], Mode::Bits64).unwrap();
    assert_eq!((insn.op, insn.src), (Op::Alu(Alu::Cmp), Operand::Imm(0xFFFF_FFFF_8000_0000)));
    // 0F BA /5 ib: the bit number as it is.
    let insn = decode(&[0x0F, 0xBA, 0x28, 0xFF], Mode::Bits64).unwrap();
    assert_eq!((insn.op, insn.src), (Op::Bit(BitOp::Bts), Operand::Imm(0xFF)));
    // moffs: 8 bytes in 64-bit mode, 4 with 67, 2 in 16-bit mode.
    assert_eq!(decode(&[0xA1, 1, 2, 3, 4, 5, 6, 7, 8], Mode::Bits64).unwrap().len, 9);
    assert_eq!(decode(&[0x67, 0xA1, 1, 2, 3, 4], Mode::Bits64).unwrap().len, 6);
    let insn = decode(&[0xA2, 0x34, 0x12], Mode::Bits16).unwrap();
    assert_eq!(insn.dst, mem(Segment::Ds, Base::None, 0x1234, Size::Word, Size::Byte));
}

#[test]
fn string_operands() {
    let insn = decode(&[0x67, 0x2E, 0xA5], Mode::Bits32).unwrap();
    assert_eq!(insn.op, Op::Movs);
    assert_eq!(insn.dst, mem(Segment::Es, Base::Reg(Rdi), 0, Size::Word, Size::Dword));
    assert_eq!(insn.src, mem(Segment::Cs, Base::Reg(Rsi), 0, Size::Word, Size::Dword));
    let insn = decode(&[0xF3, 0x48, 0xAB], Mode::Bits64).unwrap();
    assert_eq!((insn.op, insn.size, insn.rep), (Op::Stos, Size::Qword, Some(Rep::Rep)));
}

#[test]
fn refusals() {
    assert_eq!(decode(&[], Mode::Bits64), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x66, 0x66], Mode::Bits64), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x89, 0x80, 0x00], Mode::Bits64), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0xF0; 20], Mode::Bits64), Err(DecodeError::TooLong));
    assert_eq!(decode(&[0x82, 0xC0, 0x01], Mode::Bits64), Err(DecodeError::Invalid));
    assert_eq!(decode(&[0xF0, 0x89, 0x00], Mode::Bits64), Err(DecodeError::Invalid));
    assert_eq!(decode(&[0xF0, 0x38, 0x00], Mode::Bits64), Err(DecodeError::Invalid));
    assert_eq!(decode(&[0xFF, 0x10], Mode::Bits64), Err(DecodeError::Unsupported)); // call [rax]
    assert_eq!(decode(&[0x8F, 0x08], Mode::Bits64), Err(DecodeError::Unsupported));
    assert_eq!(decode(&[0x0F, 0xBA, 0x00, 0x00], Mode::Bits64), Err(DecodeError::Unsupported));
}

mod e10_1 {
    use super::*;

    /// `decode_sib(sib, mod, rex)` for Table 2-3's rows and the REX cases.
    #[test]
    fn sib_bytes() {
        let sib = |base, index, scale| super::super::super::decode::Sib { base, index, scale };
        // [rax+rcx*4]: ss = 10, index = 001, base = 000.
        assert_eq!(decode_sib(0x88, 0, 0), sib(Some(Rax), Some(Rcx), 4));
        // Index 100: none, whatever the scale; REX.X makes it R12.
        assert_eq!(decode_sib(0xE4, 0, 0), sib(Some(Rsp), None, 8));
        assert_eq!(decode_sib(0x24, 1, 0x42), sib(Some(Rsp), Some(R12), 1));
        // Base 101 with mod 00: no base, a disp32 follows, with or without
        // REX.B; with mod 01 or 10: rBP, or R13 with REX.B.
        assert_eq!(decode_sib(0x25, 0, 0), sib(None, None, 1));
        assert_eq!(decode_sib(0x65, 0, 0x41), sib(None, None, 2));
        assert_eq!(decode_sib(0x65, 1, 0), sib(Some(Rbp), None, 2));
        assert_eq!(decode_sib(0x65, 2, 0x41), sib(Some(R13), None, 2));
        // REX.B and REX.X extend the others.
        assert_eq!(decode_sib(0xFF, 3, 0x43), sib(Some(R15), Some(R15), 8));
        assert_eq!(decode_sib(0x1B, 0, 0x48), sib(Some(Rbx), Some(Rbx), 1));
    }

    #[test]
    fn sib_in_instructions() {
        // mov eax, [rsp+8]: base RSP, so SS.
        let insn = decode(&[0x8B, 0x44, 0x24, 0x08], Mode::Bits64).unwrap();
        assert_eq!(insn.src, mem(Segment::Ss, Base::Reg(Rsp), 8, Size::Qword, Size::Dword));
        // mov eax, [disp32] through SIB in 64-bit mode: no base, no RIP.
        let insn = decode(&[0x8B, 0x04, 0x25, 0x00, 0x10, 0x00, 0x00], Mode::Bits64).unwrap();
        assert_eq!((insn.src, insn.len), (mem(Segment::Ds, Base::None, 0x1000, Size::Qword, Size::Dword), 7));
        // mov eax, [r13+r12*2+0] (REX.XB): R13 is a base in DS.
        let insn = decode(&[0x43, 0x8B, 0x44, 0x65, 0x00], Mode::Bits64).unwrap();
        let expected = MemOperand {
            segment: Segment::Ds,
            base: Base::Reg(R13),
            index: Some(R12),
            scale: 2,
            disp: 0,
            address_size: Size::Qword,
            size: Size::Dword,
        };
        assert_eq!(insn.src, Operand::Mem(expected));
        // 32-bit mode: [ebp*8+disp32].
        let insn = decode(&[0x8B, 0x04, 0xED, 0x78, 0x56, 0x34, 0x12], Mode::Bits32).unwrap();
        let expected = MemOperand {
            segment: Segment::Ds,
            base: Base::None,
            index: Some(Rbp),
            scale: 8,
            disp: 0x1234_5678,
            address_size: Size::Dword,
            size: Size::Dword,
        };
        assert_eq!(insn.src, Operand::Mem(expected));
    }
}
