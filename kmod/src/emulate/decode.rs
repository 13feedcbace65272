//@ stage 10
//! The decoder: instruction bytes to an [`Instruction`] whose operands say
//! exactly which registers, which memory and which immediate it uses.
//!
//! An instruction is, in order (Intel SDM Vol. 2A, 2.1, Figure 2-1; AMD
//! APM Vol. 3, 1.1): legacy prefixes, in any order and number (2.1.1);
//! in 64-bit mode a REX prefix, which counts only right before the opcode
//! (2.2.1); the opcode, one byte or `0F` and a second (2.1.2); for most
//! opcodes a ModRM byte, and after it a SIB byte and a displacement when
//! the ModRM says so (2.1.5, Tables 2-1 to 2-3); then an immediate. The
//! whole is at most 15 bytes.
//!
//! The opcodes decoded are those the executor runs (see the module map in
//! [`super`]); any other is [`DecodeError::Unsupported`], never a guess.
//! An encoding the processor refuses with #UD among them (a `lock` where
//! none may be, `82` in 64-bit mode) is [`DecodeError::Invalid`].
//!
//! The bytes come from the guest: every read is checked, every field
//! masked, and no input makes the decoder panic or read past the slice.

use super::{Mode, Segment, Size, reg};
use crate::regs::Reg;
//@ begin 12

pub mod system;
//@ end

/// The longest instruction the processor accepts (SDM Vol. 2A, 2.1).
pub const MAX_LEN: usize = 15;

// ANCHOR: instruction
/// Why bytes are not an instruction the emulator can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// The instruction would be longer than 15 bytes: #GP(0).
    TooLong,
    /// The processor raises #UD for this encoding.
    Invalid,
    /// Not an instruction the emulator knows.
    Unsupported,
}

/// The operations of the ALU group, numbered as opcodes 00-3F (bits 5:3)
/// and the `reg` field of 80-83 encode them (SDM Vol. 2A, Table A-6,
/// group 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    Add = 0,
    Or = 1,
    Adc = 2,
    Sbb = 3,
    And = 4,
    Sub = 5,
    Xor = 6,
    Cmp = 7,
}

impl Alu {
    const fn from_bits(n: u8) -> Alu {
        match n & 7 {
            0 => Alu::Add,
            1 => Alu::Or,
            2 => Alu::Adc,
            3 => Alu::Sbb,
            4 => Alu::And,
            5 => Alu::Sub,
            6 => Alu::Xor,
            _ => Alu::Cmp,
        }
    }
}

/// The bit-test instructions, in the order of the `reg` field of 0F BA
/// /4-7 (SDM Vol. 2A, Table A-6, group 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitOp {
    Bt,
    Bts,
    Btr,
    Btc,
}

/// What an instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Mov,
    /// `src` is a byte or a word, zero-extended into `dst`.
    Movzx,
    /// `src` is a byte or a word, sign-extended into `dst`.
    Movsx,
    Movs,
    Stos,
    Lods,
    Alu(Alu),
    Test,
    Inc,
    Dec,
    Neg,
    Not,
    Xchg,
    /// Push `src` on the stack.
    Push,
    /// Pop from the stack into `dst`.
    Pop,
    Bit(BitOp),
    //@ begin 13
    /// Compare rAX with `dst`: if equal, `src` goes to `dst`; if not, `dst`
    /// goes to rAX.
    Cmpxchg,
    /// Compare EDX:EAX with the 8 bytes of `dst`: if equal, ECX:EBX goes
    /// to `dst`; if not, `dst` goes to EDX:EAX. No `src`: the registers
    /// are implied.
    Cmpxchg8b,
    /// `invlpg m`: `dst` is the byte whose page's translation goes. Not
    /// carried out by the emulator; decoded so that a backend can compute
    /// the address the hardware does not give it.
    Invlpg,
    //@ end
}

/// `rep` (F3) or `repne` (F2), whichever came last. Both repeat `movs`,
/// `stos` and `lods`; other instructions ignore them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rep {
    Rep,
    Repne,
}

/// A register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegOperand {
    pub reg: Reg,
    pub size: Size,
    /// Bits 15:8 of `reg`: AH, CH, DH or BH, which a byte operand numbered
    /// 4 to 7 names when the instruction has no REX prefix (SDM Vol. 2A,
    /// 3.1.1.1, Table 3-1, and 2.2.1.2, "REX prefix and byte registers").
    pub high: bool,
}

/// The base of a memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    None,
    Reg(Reg),
    /// The address of the next instruction: RIP-relative addressing,
    /// 64-bit mode only (SDM Vol. 2A, 2.2.1.6).
    Rip,
}

/// A memory operand: `segment:(base + index * scale + disp)`, the sum
/// taken modulo 2 to the power of the address size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    /// The override prefix's, or the default: SS for an address based on
    /// rSP or rBP (BP in 16-bit addressing), DS otherwise; ES for the
    /// destination of a string instruction, which no prefix overrides.
    pub segment: Segment,
    pub base: Base,
    pub index: Option<Reg>,
    /// 1, 2, 4 or 8.
    pub scale: u8,
    /// Sign-extended to 64 bits (a moffs is an unsigned address, and is
    /// kept as it is).
    pub disp: u64,
    pub address_size: Size,
    /// How many bytes the operand has.
    pub size: Size,
}

/// An operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    None,
    Reg(RegOperand),
    Mem(MemOperand),
    /// Already sign-extended (or not) as the instruction says, and reduced
    /// to the operand size of the instruction.
    Imm(u64),
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub op: Op,
    /// Its length in bytes, prefixes included.
    pub len: usize,
    /// The operand size: that of `dst` (of `src` for `push`).
    pub size: Size,
    /// The address size, which also sizes rCX, rSI and rDI in string
    /// instructions.
    pub address_size: Size,
    /// The operand written (or, for `cmp`, `test` and `bt`, the first one
    /// read).
    pub dst: Operand,
    pub src: Operand,
    pub rep: Option<Rep>,
    pub lock: bool,
    /// The segment override prefix, the last one if several.
    pub segment: Option<Segment>,
}
// ANCHOR_END: instruction

/// REX bits (SDM Vol. 2A, 2.2.1.2, Table 2-4).
mod rex {
    /// 64-bit operand size.
    pub const W: u8 = 8;
    /// Extends ModRM.reg.
    pub const R: u8 = 4;
    /// Extends SIB.index.
    pub const X: u8 = 2;
    /// Extends ModRM.rm, SIB.base or an opcode's register field.
    pub const B: u8 = 1;
}

/// The prefixes an instruction carries.
#[derive(Clone, Copy, Debug, Default)]
struct Prefixes {
    operand_size: bool,
    address_size: bool,
    segment: Option<Segment>,
    lock: bool,
    rep: Option<Rep>,
    /// The REX prefix, 0x40 to 0x4F, or 0 if none.
    rex: u8,
}

/// The bytes of an instruction, read once each, in order.
struct Cursor<'a> {
    /// At most [`MAX_LEN`] bytes.
    bytes: &'a [u8],
    pos: usize,
    /// The caller gave more than [`MAX_LEN`] bytes: running out of `bytes`
    /// means the instruction is too long, not that the bytes ended.
    more: bool,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let byte = self.bytes.get(self.pos).copied();
        let Some(byte) = byte else {
            return Err(if self.more { DecodeError::TooLong } else { DecodeError::Truncated });
        };
        self.pos += 1;
        Ok(byte)
    }

    /// The next `n` bytes (at most 8), little-endian, zero-extended.
    fn le(&mut self, n: usize) -> Result<u64, DecodeError> {
        let mut value = 0;
        for i in 0..n.min(8) {
            value |= u64::from(self.byte()?) << (8 * i);
        }
        Ok(value)
    }

    /// An immediate or displacement of `n` bytes, sign-extended.
    fn signed(&mut self, n: Size) -> Result<u64, DecodeError> {
        Ok(n.sign_extend(self.le(n.bytes())?))
    }
}

/// The operand size (SDM Vol. 2A, 2.2.1.2 and Table 2-4; Vol. 1, 3.6.1,
/// Table 3-4): REX.W makes it 64 bits whatever 66 says, 66 flips the
/// default of 16 or 32 bits; `default64` instructions (push, pop) have 64
/// in 64-bit mode and only 66 can make it 16.
fn operand_size(mode: Mode, p: &Prefixes, default64: bool) -> Size {
    match mode {
        Mode::Bits64 if p.rex & rex::W != 0 => Size::Qword,
        Mode::Bits64 if p.operand_size => Size::Word,
        Mode::Bits64 if default64 => Size::Qword,
        Mode::Bits64 => Size::Dword,
        Mode::Bits32 if p.operand_size => Size::Word,
        Mode::Bits32 => Size::Dword,
        Mode::Bits16 if p.operand_size => Size::Dword,
        Mode::Bits16 => Size::Word,
    }
}

/// The address size (SDM Vol. 1, 3.6.1, Table 3-4): 67 selects the other
/// one of the mode's two.
fn address_size(mode: Mode, p: &Prefixes) -> Size {
    match (mode, p.address_size) {
        (Mode::Bits64, false) => Size::Qword,
        (Mode::Bits64, true) | (Mode::Bits32, false) | (Mode::Bits16, true) => Size::Dword,
        (Mode::Bits32, true) | (Mode::Bits16, false) => Size::Word,
    }
}

/// The general register numbered `n` as an operand of `size`. Byte
/// operands 4 to 7 are AH, CH, DH and BH without a REX prefix, and SPL,
/// BPL, SIL and DIL with one (SDM Vol. 2A, 3.1.1.1, Table 3-1).
fn gpr(n: u8, size: Size, rex_present: bool) -> RegOperand {
    let n = n & 15;
    if size == Size::Byte && !rex_present && (4..8).contains(&n) {
        RegOperand { reg: reg(n - 4), size, high: true }
    } else {
        RegOperand { reg: reg(n), size, high: false }
    }
}

/// The r/m operand of a ModRM byte: a register number (with REX.B) or a
/// memory operand whose `size` is not yet known.
#[derive(Clone, Copy, Debug)]
enum Rm {
    Reg(u8),
    Mem(MemOperand),
}

/// A ModRM byte and what follows it.
#[derive(Clone, Copy, Debug)]
struct ModRm {
    /// Bits 5:3, with REX.R: a register, or an opcode extension (only the
    /// low three bits count then).
    reg: u8,
    rm: Rm,
}

// ANCHOR: sib
/// What a SIB byte names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sib {
    /// `None`: no base register, and a 32-bit displacement follows.
    pub base: Option<Reg>,
    pub index: Option<Reg>,
    /// 1, 2, 4 or 8.
    pub scale: u8,
}

/// Decodes a SIB byte, given the `mod` field (bits 7:6) of the ModRM byte
/// before it and the instruction's REX prefix (0 if none).
pub fn decode_sib(sib: u8, md: u8, rex_prefix: u8) -> Sib {
    //@ exercise E10.1
    //@ instruction: Say which base, index and scale the SIB byte `sib`
    //@+ names, as Intel SDM Vol. 2A, 2.1.5, Table 2-3 "32-Bit Addressing
    //@+ Forms with the SIB Byte" gives them, with REX.X extending the index
    //@+ field and REX.B the base field to four bits (2.2.1.2, Table 2-4 and
    //@+ Figure 2-6). Two encodings are special, and Table 2-5 "Special Cases
    //@+ of REX Encodings" says whether REX changes them: an index of 100b
    //@+ and a base of 101b. `rex::X` and `rex::B` are the bits of
    //@+ `rex_prefix`; `reg` turns a number into a `Reg`.
    //@ hint: Read the footnote of Table 2-3 and the rows of Table 2-5
    //@+ before you write: the two special encodings are one of the index
    //@+ and one of the base, and REX treats them differently. The tests in
    //@+ `e10_1` compare the whole decoder with a disassembler on random
    //@+ bytes: a wrong case shows there with the bytes that reveal it.
    //@ hint: The footnote of Table 2-3 ("[*]") tells what a base of 101b
    //@+ means for each `mod`; only `mod` = 00 loses the base. R12 can be an
    //@+ index, RSP never is; R13 is a base like RBP, except where RBP would
    //@+ not be one.
    //@ hint: `let index = (sib >> 3) & 7 | (rex_prefix & rex::X) << 2;`
    //@+ and `let base = sib & 7 | (rex_prefix & rex::B) << 3;`; the base
    //@+ is `None` only when `sib & 7 == 5 && md == 0`, the index only
    //@+ when `index == 4`; the scale is `1 << (sib >> 6)`.
    let index = (sib >> 3) & 7 | (rex_prefix & rex::X) << 2;
    let base = sib & 7 | (rex_prefix & rex::B) << 3;
    Sib {
        base: if sib & 7 == 5 && md == 0 { None } else { Some(reg(base)) },
        index: if index == 4 { None } else { Some(reg(index)) },
        scale: 1 << (sib >> 6),
    }
    //@ end
}
// ANCHOR_END: sib

// ANCHOR: modrm
/// Decodes a ModRM byte and the SIB byte and displacement it calls for
/// (SDM Vol. 2A, 2.1.5, Tables 2-1 to 2-3; 2.2.1.6 for RIP-relative
/// addressing in 64-bit mode).
fn modrm(c: &mut Cursor<'_>, mode: Mode, p: &Prefixes) -> Result<ModRm, DecodeError> {
    let byte = c.byte()?;
    let md = byte >> 6;
    let reg_field = (byte >> 3) & 7 | (p.rex & rex::R) << 1;
    let rm = byte & 7;
    if md == 3 {
        return Ok(ModRm { reg: reg_field, rm: Rm::Reg(rm | (p.rex & rex::B) << 3) });
    }
    let address_size = address_size(mode, p);
    let mut mem = MemOperand {
        segment: Segment::Ds,
        base: Base::None,
        index: None,
        scale: 1,
        disp: 0,
        address_size,
        size: Size::Byte,
    };
    let disp_size = if address_size == Size::Word {
        // Table 2-1: eight fixed pairs of BX or BP with SI or DI.
        let (base, index) = match rm {
            0 => (Some(Reg::Rbx), Some(Reg::Rsi)),
            1 => (Some(Reg::Rbx), Some(Reg::Rdi)),
            2 => (Some(Reg::Rbp), Some(Reg::Rsi)),
            3 => (Some(Reg::Rbp), Some(Reg::Rdi)),
            4 => (Some(Reg::Rsi), None),
            5 => (Some(Reg::Rdi), None),
            6 if md == 0 => (None, None),
            6 => (Some(Reg::Rbp), None),
            _ => (Some(Reg::Rbx), None),
        };
        mem.base = base.map_or(Base::None, Base::Reg);
        mem.index = index;
        match md {
            0 if base.is_none() => Some(Size::Word),
            0 => None,
            1 => Some(Size::Byte),
            _ => Some(Size::Word),
        }
    } else {
        // Table 2-2, and Table 2-3 after a SIB byte.
        let mut no_base_disp32 = false;
        if rm == 4 {
            let sib = decode_sib(c.byte()?, md, p.rex);
            mem.base = sib.base.map_or(Base::None, Base::Reg);
            mem.index = sib.index;
            mem.scale = sib.scale;
            no_base_disp32 = sib.base.is_none();
        } else if rm == 5 && md == 0 {
            mem.base = if mode == Mode::Bits64 { Base::Rip } else { Base::None };
            no_base_disp32 = true;
        } else {
            mem.base = Base::Reg(reg(rm | (p.rex & rex::B) << 3));
        }
        match md {
            0 if no_base_disp32 => Some(Size::Dword),
            0 => None,
            1 => Some(Size::Byte),
            _ => Some(Size::Dword),
        }
    };
    if let Some(size) = disp_size {
        mem.disp = c.signed(size)?;
    }
    mem.segment = match (p.segment, mem.base) {
        (Some(segment), _) => segment,
        (None, Base::Reg(Reg::Rsp | Reg::Rbp)) => Segment::Ss,
        (None, _) => Segment::Ds,
    };
    Ok(ModRm { reg: reg_field, rm: Rm::Mem(mem) })
}
// ANCHOR_END: modrm

/// The operand that `rm` names, of `size`.
fn rm_operand(rm: Rm, size: Size, p: &Prefixes) -> Operand {
    match rm {
        Rm::Reg(n) => Operand::Reg(gpr(n, size, p.rex != 0)),
        Rm::Mem(mem) => Operand::Mem(MemOperand { size, ..mem }),
    }
}

/// An immediate of `size` (at most 4 bytes: only `mov r64, imm64`, which
/// the emulator does not need, has 8), sign-extended and reduced to
/// `operand`.
fn immediate(c: &mut Cursor<'_>, size: Size, operand: Size) -> Result<Operand, DecodeError> {
    Ok(Operand::Imm(c.signed(size)? & operand.mask()))
}

/// `Iz`: an immediate of the operand size, but 4 bytes for a 64-bit
/// operand (SDM Vol. 2A, A.2.2).
fn iz(size: Size) -> Size {
    if size == Size::Qword { Size::Dword } else { size }
}

/// A string instruction's operand: `[rSI]` (in DS, or the override's
/// segment) as source, `ES:[rDI]` as destination (SDM Vol. 1, 7.3.9.1).
fn string_operand(destination: bool, size: Size, address_size: Size, p: &Prefixes) -> Operand {
    let (segment, base) = if destination {
        (Segment::Es, Reg::Rdi)
    } else {
        (p.segment.unwrap_or(Segment::Ds), Reg::Rsi)
    };
    Operand::Mem(MemOperand { segment, base: Base::Reg(base), index: None, scale: 1, disp: 0, address_size, size })
}

/// rAX as an operand of `size`.
fn accumulator(size: Size) -> Operand {
    Operand::Reg(RegOperand { reg: Reg::Rax, size, high: false })
}

// ANCHOR: decode
/// Decodes the instruction at the start of `bytes` (which may hold more:
/// at most the first 15 are looked at), for a processor in `mode`.
pub fn decode(bytes: &[u8], mode: Mode) -> Result<Instruction, DecodeError> {
    let mut c = Cursor { bytes: bytes.get(..MAX_LEN).unwrap_or(bytes), pos: 0, more: bytes.len() > MAX_LEN };
    let mut p = Prefixes::default();
    // Legacy prefixes (2.1.1), and REX, which is ignored unless the
    // opcode follows it (2.2.1).
    let opcode = loop {
        let byte = c.byte()?;
        match byte {
            0x66 => p.operand_size = true,
            0x67 => p.address_size = true,
            // In 64-bit mode the ES, CS, SS and DS prefixes are null
            // prefixes (SDM Vol. 1, 3.3.7.1): they do not undo FS or GS.
            0x26 | 0x2E | 0x36 | 0x3E if mode == Mode::Bits64 && matches!(p.segment, Some(Segment::Fs | Segment::Gs)) => {}
            0x26 => p.segment = Some(Segment::Es),
            0x2E => p.segment = Some(Segment::Cs),
            0x36 => p.segment = Some(Segment::Ss),
            0x3E => p.segment = Some(Segment::Ds),
            0x64 => p.segment = Some(Segment::Fs),
            0x65 => p.segment = Some(Segment::Gs),
            0xF0 => p.lock = true,
            0xF2 => p.rep = Some(Rep::Repne),
            0xF3 => p.rep = Some(Rep::Rep),
            0x40..=0x4F if mode == Mode::Bits64 => {
                p.rex = byte;
                continue;
            }
            _ => break byte,
        }
        p.rex = 0;
    };
    let insn = if opcode == 0x0F { two_byte(&mut c, mode, &p)? } else { one_byte(opcode, &mut c, mode, &p)? };
    // A lock prefix is allowed only on a read-modify-write of memory by
    // these instructions (SDM Vol. 2A, LOCK).
    let lockable = matches!(
        insn.op,
        Op::Alu(Alu::Add | Alu::Or | Alu::Adc | Alu::Sbb | Alu::And | Alu::Sub | Alu::Xor)
            | Op::Xchg
            | Op::Inc
            | Op::Dec
            | Op::Neg
            | Op::Not
            | Op::Bit(BitOp::Bts | BitOp::Btr | BitOp::Btc)
            //@ begin 13
            | Op::Cmpxchg
            | Op::Cmpxchg8b
            //@ end
    );
    if p.lock && !(lockable && matches!(insn.dst, Operand::Mem(_))) {
        return Err(DecodeError::Invalid);
    }
    Ok(insn)
}
// ANCHOR_END: decode

/// The one-byte opcode map (SDM Vol. 2A, Table A-2), the part decoded.
fn one_byte(opcode: u8, c: &mut Cursor<'_>, mode: Mode, p: &Prefixes) -> Result<Instruction, DecodeError> {
    let v = operand_size(mode, p, false);
    let a = address_size(mode, p);
    // The low bit of most opcodes here chooses between a byte and a full
    // operand (2.1.2, "w" bit).
    let size = if opcode & 1 == 0 { Size::Byte } else { v };
    let rex_present = p.rex != 0;
    let (op, size, dst, src) = match opcode {
        0x00..=0x3F if opcode & 7 < 6 => {
            let op = Op::Alu(Alu::from_bits(opcode >> 3));
            match opcode & 7 {
                0 | 1 => {
                    let m = modrm(c, mode, p)?;
                    (op, size, rm_operand(m.rm, size, p), Operand::Reg(gpr(m.reg, size, rex_present)))
                }
                2 | 3 => {
                    let m = modrm(c, mode, p)?;
                    (op, size, Operand::Reg(gpr(m.reg, size, rex_present)), rm_operand(m.rm, size, p))
                }
                4 => (op, Size::Byte, accumulator(Size::Byte), immediate(c, Size::Byte, Size::Byte)?),
                _ => (op, v, accumulator(v), immediate(c, iz(v), v)?),
            }
        }
        0x80..=0x83 => {
            if opcode == 0x82 && mode == Mode::Bits64 {
                return Err(DecodeError::Invalid);
            }
            let size = if opcode == 0x81 || opcode == 0x83 { v } else { Size::Byte };
            let m = modrm(c, mode, p)?;
            let imm = if opcode == 0x81 { iz(v) } else { Size::Byte };
            (Op::Alu(Alu::from_bits(m.reg)), size, rm_operand(m.rm, size, p), immediate(c, imm, size)?)
        }
        0xA8 => (Op::Test, Size::Byte, accumulator(Size::Byte), immediate(c, Size::Byte, Size::Byte)?),
        0xA9 => (Op::Test, v, accumulator(v), immediate(c, iz(v), v)?),
        0x84..=0x89 => {
            let op = match opcode {
                0x84 | 0x85 => Op::Test,
                0x86 | 0x87 => Op::Xchg,
                _ => Op::Mov,
            };
            let m = modrm(c, mode, p)?;
            (op, size, rm_operand(m.rm, size, p), Operand::Reg(gpr(m.reg, size, rex_present)))
        }
        0x8A | 0x8B => {
            let size = if opcode == 0x8A { Size::Byte } else { v };
            let m = modrm(c, mode, p)?;
            (Op::Mov, size, Operand::Reg(gpr(m.reg, size, rex_present)), rm_operand(m.rm, size, p))
        }
        0x8F => {
            let v = operand_size(mode, p, true);
            let m = modrm(c, mode, p)?;
            if m.reg & 7 != 0 {
                return Err(DecodeError::Unsupported);
            }
            (Op::Pop, v, rm_operand(m.rm, v, p), Operand::None)
        }
        0xA0..=0xA3 => {
            // moffs: an address of the address size, no ModRM (2.2.1.4).
            let offset = c.le(a.bytes())?;
            let segment = p.segment.unwrap_or(Segment::Ds);
            let mem = MemOperand { segment, base: Base::None, index: None, scale: 1, disp: offset, address_size: a, size };
            if opcode < 0xA2 {
                (Op::Mov, size, accumulator(size), Operand::Mem(mem))
            } else {
                (Op::Mov, size, Operand::Mem(mem), accumulator(size))
            }
        }
        0xA4 | 0xA5 => (Op::Movs, size, string_operand(true, size, a, p), string_operand(false, size, a, p)),
        0xAA | 0xAB => (Op::Stos, size, string_operand(true, size, a, p), accumulator(size)),
        0xAC | 0xAD => (Op::Lods, size, accumulator(size), string_operand(false, size, a, p)),
        0xC6 | 0xC7 => {
            let m = modrm(c, mode, p)?;
            if m.reg & 7 != 0 {
                return Err(DecodeError::Unsupported);
            }
            (Op::Mov, size, rm_operand(m.rm, size, p), immediate(c, iz(size), size)?)
        }
        0xF6 | 0xF7 => {
            let m = modrm(c, mode, p)?;
            let dst = rm_operand(m.rm, size, p);
            match m.reg & 7 {
                0 => (Op::Test, size, dst, immediate(c, iz(size), size)?),
                2 => (Op::Not, size, dst, Operand::None),
                3 => (Op::Neg, size, dst, Operand::None),
                _ => return Err(DecodeError::Unsupported),
            }
        }
        0xFE | 0xFF => {
            let m = modrm(c, mode, p)?;
            match m.reg & 7 {
                0 => (Op::Inc, size, rm_operand(m.rm, size, p), Operand::None),
                1 => (Op::Dec, size, rm_operand(m.rm, size, p), Operand::None),
                6 if opcode == 0xFF => {
                    let v = operand_size(mode, p, true);
                    (Op::Push, v, Operand::None, rm_operand(m.rm, v, p))
                }
                _ => return Err(DecodeError::Unsupported),
            }
        }
        _ => return Err(DecodeError::Unsupported),
    };
    Ok(instruction(op, size, a, dst, src, c, p))
}

/// The two-byte opcode map, after 0F (SDM Vol. 2A, Table A-3), the part
/// decoded.
fn two_byte(c: &mut Cursor<'_>, mode: Mode, p: &Prefixes) -> Result<Instruction, DecodeError> {
    let opcode = c.byte()?;
    let v = operand_size(mode, p, false);
    let a = address_size(mode, p);
    let rex_present = p.rex != 0;
    //@ begin 13
    // cmpxchg r/m, r (0F B0 for bytes, 0F B1): how guest kernels change a
    // page-table entry that another processor may be changing too.
    if let 0xB0 | 0xB1 = opcode {
        let size = if opcode == 0xB0 { Size::Byte } else { v };
        let m = modrm(c, mode, p)?;
        let src = Operand::Reg(gpr(m.reg, size, rex_present));
        return Ok(instruction(Op::Cmpxchg, size, a, rm_operand(m.rm, size, p), src, c, p));
    }
    // Group 9 (0F C7, SDM Vol. 2A, Table A-6): of it only cmpxchg8b m64
    // (/1), with which a 32-bit PAE kernel changes a whole 8-byte entry.
    // Its register operand would be #UD; with REX.W it is cmpxchg16b
    // m128, whose 16 bytes are more than one access of the emulator.
    if opcode == 0xC7 {
        let m = modrm(c, mode, p)?;
        return match (m.reg & 7, m.rm) {
            (1, Rm::Reg(_)) => Err(DecodeError::Invalid),
            (1, _) if p.rex & rex::W != 0 => Err(DecodeError::Unsupported),
            (1, rm) => Ok(instruction(Op::Cmpxchg8b, Size::Qword, a, rm_operand(rm, Size::Qword, p), Operand::None, c, p)),
            _ => Err(DecodeError::Unsupported),
        };
    }
    // Group 7 (0F 01): of it only invlpg m (/7), whose address SVM
    // without decode assists does not give (`arch/svm/exit.rs`). Its
    // register forms are other instructions (swapgs, rdtscp, ...).
    if opcode == 0x01 {
        let m = modrm(c, mode, p)?;
        return match (m.reg & 7, m.rm) {
            (7, rm @ Rm::Mem(_)) => Ok(instruction(Op::Invlpg, Size::Byte, a, rm_operand(rm, Size::Byte, p), Operand::None, c, p)),
            _ => Err(DecodeError::Unsupported),
        };
    }
    //@ end
    let (op, dst, src) = match opcode {
        0xA3 | 0xAB | 0xB3 | 0xBB => {
            let op = match opcode {
                0xA3 => BitOp::Bt,
                0xAB => BitOp::Bts,
                0xB3 => BitOp::Btr,
                _ => BitOp::Btc,
            };
            let m = modrm(c, mode, p)?;
            (Op::Bit(op), rm_operand(m.rm, v, p), Operand::Reg(gpr(m.reg, v, rex_present)))
        }
        0xBA => {
            let m = modrm(c, mode, p)?;
            let op = match m.reg & 7 {
                4 => BitOp::Bt,
                5 => BitOp::Bts,
                6 => BitOp::Btr,
                7 => BitOp::Btc,
                _ => return Err(DecodeError::Unsupported),
            };
            // The bit number, unsigned and not sign-extended.
            let imm = Operand::Imm(u64::from(c.byte()?));
            (Op::Bit(op), rm_operand(m.rm, v, p), imm)
        }
        0xB6 | 0xB7 | 0xBE | 0xBF => {
            let op = if opcode < 0xB8 { Op::Movzx } else { Op::Movsx };
            let from = if opcode & 1 == 0 { Size::Byte } else { Size::Word };
            let m = modrm(c, mode, p)?;
            (op, Operand::Reg(gpr(m.reg, v, rex_present)), rm_operand(m.rm, from, p))
        }
        _ => return Err(DecodeError::Unsupported),
    };
    Ok(instruction(op, v, a, dst, src, c, p))
}

fn instruction(op: Op, size: Size, a: Size, dst: Operand, src: Operand, c: &Cursor<'_>, p: &Prefixes) -> Instruction {
    Instruction {
        op,
        len: c.pos,
        size,
        address_size: a,
        dst,
        src,
        rep: p.rep,
        lock: p.lock,
        segment: p.segment,
    }
}
