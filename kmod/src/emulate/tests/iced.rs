//@ stage 10
//! The decoder against iced-x86, a disassembler kept by others, on random
//! bytes in all three modes.
//!
//! For every sequence the decoder accepts, iced must decode the same
//! instruction: the same length, mnemonic, prefixes, and operand for
//! operand the same register, immediate, or memory operand (segment, base,
//! index, scale, displacement in the address size, access size). A
//! sequence iced calls invalid (an unknown opcode, a lock where none may
//! be, too few bytes, more than 15) must be refused. The decoder may
//! refuse what iced accepts (it knows a few opcodes only); when iced's
//! mnemonic is one the emulator knows, the form must be one the decoder
//! leaves out on purpose ([`known_form`]).
//!
//! Half the sequences are plain random bytes; the others are built to
//! reach the decoder's opcodes often: some prefixes, a REX, an opcode of
//! the decoder's, a ModRM, then random bytes. `RKVM_EMU_CASES` sets the
//! number of sequences (20,000 by default).
//!
//! Every memory operand with a SIB byte goes through the exercise E10.1,
//! so these tests are in `e10_1`.

use super::super::decode::{Alu, Base, BitOp, Instruction, MemOperand, Op, Operand, RegOperand, Rep, decode};
use super::super::{Mode, Segment, Size};
use super::rng::Rng;
use crate::regs::Reg;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

/// Whether iced's instruction is in a form the decoder knows: a known
/// mnemonic with a ModRM operand, a moffs, string operands, or the
/// accumulator and an immediate. Forms without memory operands (`mov r,
/// imm`, `push r`, `xchg r, rAX`, `inc r`), and those of other register
/// kinds (segment, control, SSE registers), are left out on purpose; so are
/// `F6 /1` and `F7 /1`, `test` encodings that the SDM does not list (the
/// processor's alias of /0, which no assembler emits).
fn known_form(theirs: &iced_x86::Instruction) -> bool {
    let name = format!("{:?}", theirs.code());
    let accumulator = ["_AL_imm8", "_AX_imm16", "_EAX_imm32", "_RAX_imm32"].iter().any(|f| name.ends_with(f));
    let string = matches!(theirs.mnemonic(), Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq)
        || name.starts_with("Stos")
        || name.starts_with("Lods");
    let modrm_or_moffs = name.contains("rm") || name.contains("moffs");
    //@ begin 13
    // iced names the ModRM operands of cmpxchg8b and invlpg `m64` and `m`:
    // memory is their only form.
    let modrm_or_moffs = modrm_or_moffs || name == "Cmpxchg8b_m64" || name == "Invlpg_m";
    //@ end
    known(theirs.mnemonic())
        && (modrm_or_moffs || string || accumulator)
        && !name.contains("Sreg")
        && !name.contains("xmm")
        && !name.ends_with("F6r1")
        && !name.ends_with("F7r1")
}

pub fn bitness(mode: Mode) -> u32 {
    match mode {
        Mode::Bits16 => 16,
        Mode::Bits32 => 32,
        Mode::Bits64 => 64,
    }
}

/// iced's decoding of `bytes`, `None` if it calls them invalid.
pub fn iced(bytes: &[u8], mode: Mode) -> Option<iced_x86::Instruction> {
    let mut decoder = Decoder::with_ip(bitness(mode), bytes, 0, DecoderOptions::NONE);
    let insn = decoder.decode();
    (!insn.is_invalid()).then_some(insn)
}

/// iced's name of a register operand.
pub fn register(r: RegOperand) -> Register {
    use Register::*;
    const HIGH: [Register; 4] = [AH, CH, DH, BH];
    const BYTE: [Register; 16] = [AL, CL, DL, BL, SPL, BPL, SIL, DIL, R8L, R9L, R10L, R11L, R12L, R13L, R14L, R15L];
    const WORD: [Register; 16] = [AX, CX, DX, BX, SP, BP, SI, DI, R8W, R9W, R10W, R11W, R12W, R13W, R14W, R15W];
    const DWORD: [Register; 16] =
        [EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI, R8D, R9D, R10D, R11D, R12D, R13D, R14D, R15D];
    const QWORD: [Register; 16] = [RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15];
    let n = r.reg as usize;
    match (r.size, r.high) {
        (Size::Byte, true) => HIGH[n],
        (Size::Byte, false) => BYTE[n],
        (Size::Word, _) => WORD[n],
        (Size::Dword, _) => DWORD[n],
        (Size::Qword, _) => QWORD[n],
    }
}

fn address_register(r: Reg, address_size: Size) -> Register {
    register(RegOperand { reg: r, size: address_size, high: false })
}

/// iced's name of a segment register.
pub fn segment(s: Segment) -> Register {
    match s {
        Segment::Es => Register::ES,
        Segment::Cs => Register::CS,
        Segment::Ss => Register::SS,
        Segment::Ds => Register::DS,
        Segment::Fs => Register::FS,
        Segment::Gs => Register::GS,
    }
}

/// iced's mnemonic for an instruction of the decoder's.
fn mnemonic(insn: &Instruction) -> Mnemonic {
    let sized = |names: [Mnemonic; 4]| match insn.size {
        Size::Byte => names[0],
        Size::Word => names[1],
        Size::Dword => names[2],
        Size::Qword => names[3],
    };
    match insn.op {
        Op::Mov => Mnemonic::Mov,
        Op::Movzx => Mnemonic::Movzx,
        Op::Movsx => Mnemonic::Movsx,
        Op::Movs => sized([Mnemonic::Movsb, Mnemonic::Movsw, Mnemonic::Movsd, Mnemonic::Movsq]),
        Op::Stos => sized([Mnemonic::Stosb, Mnemonic::Stosw, Mnemonic::Stosd, Mnemonic::Stosq]),
        Op::Lods => sized([Mnemonic::Lodsb, Mnemonic::Lodsw, Mnemonic::Lodsd, Mnemonic::Lodsq]),
        Op::Alu(Alu::Add) => Mnemonic::Add,
        Op::Alu(Alu::Or) => Mnemonic::Or,
        Op::Alu(Alu::Adc) => Mnemonic::Adc,
        Op::Alu(Alu::Sbb) => Mnemonic::Sbb,
        Op::Alu(Alu::And) => Mnemonic::And,
        Op::Alu(Alu::Sub) => Mnemonic::Sub,
        Op::Alu(Alu::Xor) => Mnemonic::Xor,
        Op::Alu(Alu::Cmp) => Mnemonic::Cmp,
        Op::Test => Mnemonic::Test,
        Op::Inc => Mnemonic::Inc,
        Op::Dec => Mnemonic::Dec,
        Op::Neg => Mnemonic::Neg,
        Op::Not => Mnemonic::Not,
        Op::Xchg => Mnemonic::Xchg,
        Op::Push => Mnemonic::Push,
        Op::Pop => Mnemonic::Pop,
        Op::Bit(BitOp::Bt) => Mnemonic::Bt,
        Op::Bit(BitOp::Bts) => Mnemonic::Bts,
        Op::Bit(BitOp::Btr) => Mnemonic::Btr,
        Op::Bit(BitOp::Btc) => Mnemonic::Btc,
        //@ begin 13
        Op::Cmpxchg => Mnemonic::Cmpxchg,
        Op::Cmpxchg8b => Mnemonic::Cmpxchg8b,
        Op::Invlpg => Mnemonic::Invlpg,
        //@ end
    }
}

/// The mnemonics of the instructions the emulator knows.
fn known(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Mov | Movzx
            | Movsx
            | Movsb
            | Movsw
            | Movsd
            | Movsq
            | Stosb
            | Stosw
            | Stosd
            | Stosq
            | Lodsb
            | Lodsw
            | Lodsd
            | Lodsq
            | Add
            | Or
            | Adc
            | Sbb
            | And
            | Sub
            | Xor
            | Cmp
            | Test
            | Inc
            | Dec
            | Neg
            | Not
            | Xchg
            | Push
            | Pop
            | Bt
            | Bts
            | Btr
            | Btc
            //@ begin 13
            | Cmpxchg
            | Cmpxchg8b
            | Invlpg
            //@ end
    )
}

fn compare_memory(k: u32, m: &MemOperand, insn: &Instruction, theirs: &iced_x86::Instruction) -> Result<(), String> {
    let a = m.address_size;
    let kind = theirs.op_kind(k);
    let string_base = match kind {
        OpKind::MemorySegRSI | OpKind::MemorySegESI | OpKind::MemorySegSI => Some(Reg::Rsi),
        OpKind::MemoryESRDI | OpKind::MemoryESEDI | OpKind::MemoryESDI => Some(Reg::Rdi),
        _ => None,
    };
    if let Some(base) = string_base {
        let their_size = match kind {
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => Size::Qword,
            OpKind::MemorySegESI | OpKind::MemoryESEDI => Size::Dword,
            _ => Size::Word,
        };
        // iced's memory_segment() is the source's: ES:rDI is implicit.
        let their_segment = if base == Reg::Rdi { Register::ES } else { theirs.memory_segment() };
        let ok = m.base == Base::Reg(base)
            && a == their_size
            && m.index.is_none()
            && m.disp == 0
            && segment(m.segment) == their_segment
            && theirs.memory_size().size() == m.size.bytes();
        return if ok { Ok(()) } else { Err(format!("string operand {k}: {m:?} vs {kind:?} {:?}", theirs.memory_segment())) };
    }
    if kind != OpKind::Memory {
        return Err(format!("operand {k}: memory {m:?} vs {kind:?}"));
    }
    let base = match m.base {
        Base::None => Register::None,
        Base::Reg(r) => address_register(r, a),
        Base::Rip if a == Size::Qword => Register::RIP,
        Base::Rip => Register::EIP,
    };
    let index = m.index.map_or(Register::None, |r| address_register(r, a));
    // iced gives a RIP-relative operand's target, decoded at address 0.
    let disp = match m.base {
        Base::Rip => (insn.len as u64).wrapping_add(m.disp) & a.mask(),
        _ => m.disp & a.mask(),
    };
    let their_size = theirs.memory_size().size();
    //@ begin 13
    // invlpg's operand is an address, not bytes: iced gives it no size,
    // the decoder a byte.
    let their_size = if insn.op == Op::Invlpg && their_size == 0 { 1 } else { their_size };
    //@ end
    let ok = segment(m.segment) == theirs.memory_segment()
        && base == theirs.memory_base()
        && index == theirs.memory_index()
        && u32::from(m.scale) == theirs.memory_index_scale()
        && disp == theirs.memory_displacement64()
        && m.size.bytes() == their_size;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "operand {k}: {m:?} vs seg {:?} base {:?} index {:?} scale {} disp {:#x} size {:?}",
            theirs.memory_segment(),
            theirs.memory_base(),
            theirs.memory_index(),
            theirs.memory_index_scale(),
            theirs.memory_displacement64(),
            theirs.memory_size()
        ))
    }
}

/// Whether the decoder's instruction is iced's.
pub fn compare(insn: &Instruction, theirs: &iced_x86::Instruction) -> Result<(), String> {
    if insn.len != theirs.len() {
        return Err(format!("length {} vs {}", insn.len, theirs.len()));
    }
    if mnemonic(insn) != theirs.mnemonic() {
        return Err(format!("{:?} vs {:?}", insn.op, theirs.mnemonic()));
    }
    let operands: Vec<&Operand> = [&insn.dst, &insn.src].into_iter().filter(|o| **o != Operand::None).collect();
    if operands.len() != theirs.op_count() as usize {
        return Err(format!("{} operands vs {}", operands.len(), theirs.op_count()));
    }
    for (k, operand) in (0u32..).zip(operands) {
        let kind = theirs.op_kind(k);
        match *operand {
            Operand::Reg(r) => {
                if kind != OpKind::Register || theirs.op_register(k) != register(r) {
                    return Err(format!("operand {k}: {r:?} vs {kind:?} {:?}", theirs.op_register(k)));
                }
            }
            Operand::Imm(v) => {
                let immediate = matches!(
                    kind,
                    OpKind::Immediate8
                        | OpKind::Immediate16
                        | OpKind::Immediate32
                        | OpKind::Immediate64
                        | OpKind::Immediate8to16
                        | OpKind::Immediate8to32
                        | OpKind::Immediate8to64
                        | OpKind::Immediate32to64
                );
                if !immediate || theirs.immediate(k) & insn.size.mask() != v {
                    return Err(format!("operand {k}: immediate {v:#x} vs {kind:?}"));
                }
            }
            Operand::Mem(ref m) => compare_memory(k, m, insn, theirs)?,
            Operand::None => {}
        }
    }
    if insn.lock != theirs.has_lock_prefix() {
        return Err(format!("lock {} vs {}", insn.lock, theirs.has_lock_prefix()));
    }
    let rep = (insn.rep == Some(Rep::Rep), insn.rep == Some(Rep::Repne));
    if rep != (theirs.has_rep_prefix(), theirs.has_repne_prefix()) {
        return Err(format!("rep {:?} vs {} {}", insn.rep, theirs.has_rep_prefix(), theirs.has_repne_prefix()));
    }
    if insn.segment.map_or(Register::None, segment) != theirs.segment_prefix() {
        return Err(format!("segment prefix {:?} vs {:?}", insn.segment, theirs.segment_prefix()));
    }
    Ok(())
}

/// The opcodes the decoder knows, one byte or 0F and one.
const OPCODES: &[&[u8]] = &[
    &[0x00], &[0x01], &[0x02], &[0x03], &[0x04], &[0x05], &[0x08], &[0x09], &[0x0A], &[0x0B], &[0x0C], &[0x0D],
    &[0x10], &[0x11], &[0x12], &[0x13], &[0x14], &[0x15], &[0x18], &[0x19], &[0x1A], &[0x1B], &[0x1C], &[0x1D],
    &[0x20], &[0x21], &[0x22], &[0x23], &[0x24], &[0x25], &[0x28], &[0x29], &[0x2A], &[0x2B], &[0x2C], &[0x2D],
    &[0x30], &[0x31], &[0x32], &[0x33], &[0x34], &[0x35], &[0x38], &[0x39], &[0x3A], &[0x3B], &[0x3C], &[0x3D],
    &[0x80], &[0x81], &[0x82], &[0x83], &[0x84], &[0x85], &[0x86], &[0x87], &[0x88], &[0x89], &[0x8A], &[0x8B],
    &[0x8F], &[0xA0], &[0xA1], &[0xA2], &[0xA3], &[0xA4], &[0xA5], &[0xA8], &[0xA9], &[0xAA], &[0xAB], &[0xAC], &[0xAD], &[0xC6],
    &[0xC7], &[0xF6], &[0xF7], &[0xFE], &[0xFF], &[0x0F, 0xA3], &[0x0F, 0xAB], &[0x0F, 0xB3], &[0x0F, 0xBB],
    &[0x0F, 0xBA], &[0x0F, 0xB6], &[0x0F, 0xB7], &[0x0F, 0xBE], &[0x0F, 0xBF],
    //@ begin 13
    &[0x0F, 0xB0], &[0x0F, 0xB1], &[0x0F, 0xC7],
    //@ end
];

const PREFIXES: [u8; 11] = [0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF0, 0xF2, 0xF3];

/// A random byte sequence, in a random mode.
pub fn random_sequence(r: &mut Rng) -> (Vec<u8>, Mode) {
    let mode = r.pick(&[Mode::Bits16, Mode::Bits32, Mode::Bits64]);
    let mut bytes = Vec::with_capacity(16);
    if r.one_in(2) {
        let prefixes = r.pick(&[0, 0, 0, 1, 1, 2, 3, 5]);
        for _ in 0..prefixes {
            bytes.push(r.pick(&PREFIXES));
            if mode == Mode::Bits64 && r.one_in(8) {
                bytes.push(0x40 | (r.byte() & 15));
            }
        }
        if mode == Mode::Bits64 && r.one_in(2) {
            bytes.push(0x40 | (r.byte() & 15));
        }
        if r.one_in(6) {
            bytes.push(r.byte());
        } else {
            bytes.extend_from_slice(r.pick(OPCODES));
        }
        // A ModRM: memory often, and then often a SIB byte or RIP-relative.
        let mut modrm = r.byte();
        if r.one_in(3) {
            modrm &= 0x3F;
        }
        match r.below(6) {
            0 | 1 => modrm = (modrm & 0xF8) | 4,
            // mod 00, r/m 101: RIP-relative, or [disp32] outside 64-bit mode.
            2 => modrm = (modrm & 0x38) | 5,
            _ => {}
        }
        bytes.push(modrm);
    }
    let len = if r.one_in(8) { 1 + r.below(16) as usize } else { 15 + r.below(3) as usize };
    while bytes.len() < len {
        bytes.push(r.byte());
    }
    bytes.truncate(len);
    (bytes, mode)
}

/// What a comparison run found.
#[derive(Debug, Default)]
pub struct Tally {
    pub sequences: u64,
    /// The decoder accepted them, and iced agreed.
    pub accepted: u64,
    /// Accepted with a SIB byte, a RIP-relative operand, 16-bit addressing.
    pub sib: u64,
    pub rip_relative: u64,
    pub addressing16: u64,
    /// Refused by the decoder, decoded by iced as a known mnemonic in a
    /// form the decoder leaves out ([`known_form`]).
    pub refused_known: u64,
    pub failures: Vec<String>,
}

/// Whether the instruction's memory operand came with a SIB byte (as far
/// as the operand shows: `[disp32]` through a SIB byte is not counted).
fn has_sib(insn: &Instruction) -> bool {
    [insn.dst, insn.src].into_iter().any(|o| match o {
        Operand::Mem(m) => {
            m.index.is_some() || (m.address_size != Size::Word && matches!(m.base, Base::Reg(Reg::Rsp | Reg::R12)))
        }
        _ => false,
    })
}

/// Compares the decoder with iced on `sequences` random sequences.
pub fn run(stream: u64, sequences: u64) -> Tally {
    let mut r = Rng::new(stream);
    let mut tally = Tally::default();
    for _ in 0..sequences {
        let (bytes, mode) = random_sequence(&mut r);
        tally.sequences += 1;
        let theirs = iced(&bytes, mode);
        let problem = match (decode(&bytes, mode), theirs) {
            (Ok(insn), Some(theirs)) => match compare(&insn, &theirs) {
                Ok(()) => {
                    tally.accepted += 1;
                    tally.sib += u64::from(has_sib(&insn));
                    let mems = [insn.dst, insn.src];
                    let mem = mems.iter().find_map(|o| if let Operand::Mem(m) = o { Some(m) } else { None });
                    tally.rip_relative += u64::from(mem.is_some_and(|m| m.base == Base::Rip));
                    tally.addressing16 += u64::from(mem.is_some_and(|m| m.address_size == Size::Word));
                    None
                }
                Err(why) => Some(why),
            },
            (Ok(insn), None) => Some(format!("accepted as {:?}, invalid for iced", insn.op)),
            (Err(_), Some(theirs)) if known(theirs.mnemonic()) => {
                tally.refused_known += 1;
                known_form(&theirs).then(|| format!("refused, iced decodes {:?}", theirs.code()))
            }
            (Err(_), _) => None,
        };
        if let Some(why) = problem {
            tally.failures.push(format!("{}-bit {:02X?}: {why}", bitness(mode), bytes));
        }
    }
    tally
}

mod e10_1 {
    use super::super::rng::cases;
    use super::*;

    #[test]
    fn random_bytes_decode_as_iced_decodes_them() {
        let tally = run(1, cases(20_000));
        eprintln!(
            "decoder vs iced-x86: {} sequences, {} accepted and equal ({} with SIB, {} RIP-relative, {} 16-bit \
             addressing), {} refused that iced decodes as a known mnemonic, {} differences",
            tally.sequences,
            tally.accepted,
            tally.sib,
            tally.rip_relative,
            tally.addressing16,
            tally.refused_known,
            tally.failures.len()
        );
        let shown: Vec<_> = tally.failures.iter().take(20).collect();
        assert!(tally.failures.is_empty(), "{} differences, the first ones:\n{shown:#?}", tally.failures.len());
        // The generator reaches what it is meant to.
        assert!(tally.accepted > tally.sequences / 5, "{tally:?}");
        assert!(tally.sib > 0 && tally.rip_relative > 0 && tally.addressing16 > 0, "{tally:?}");
    }
}
//@ begin 13

/// `cmpxchg8b` under every prefix the decoder takes, in every mode and
/// with the ModRM forms without a SIB byte: decoded as iced decodes it;
/// with REX.W (`cmpxchg16b`) and with a register operand, refused.
#[test]
fn cmpxchg8b_decodes_as_iced_decodes_it() {
    let mut compared = 0;
    for mode in [Mode::Bits16, Mode::Bits32, Mode::Bits64] {
        let rexes: &[&[u8]] = if mode == Mode::Bits64 { &[&[], &[0x41], &[0x44], &[0x43]] } else { &[&[]] };
        for prefix in [&[][..], &[0x66], &[0x67], &[0xF0], &[0xF2], &[0xF3], &[0x26], &[0x65], &[0xF0, 0x36]] {
            for &rex in rexes {
                for modrm in [0x0E, 0x4E, 0x8E, 0x0D, 0x0B, 0x0F] {
                    let bytes = [prefix, rex, &[0x0F, 0xC7, modrm, 0x78, 0x56, 0x34, 0x12]].concat();
                    let theirs = iced(&bytes, mode).unwrap_or_else(|| panic!("{bytes:02X?}: invalid for iced"));
                    let insn = decode(&bytes, mode).unwrap_or_else(|e| panic!("{bytes:02X?}: {e:?}"));
                    assert_eq!((insn.op, theirs.mnemonic()), (Op::Cmpxchg8b, Mnemonic::Cmpxchg8b), "{bytes:02X?}");
                    compare(&insn, &theirs).unwrap_or_else(|why| panic!("{}-bit {bytes:02X?}: {why}", bitness(mode)));
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 2 * 9 * 6 + 9 * 4 * 6);
    // REX.W: cmpxchg16b m128, which the decoder leaves to others.
    let bytes = [0x48, 0x0F, 0xC7, 0x0E];
    assert_eq!(iced(&bytes, Mode::Bits64).map(|i| i.mnemonic()), Some(Mnemonic::Cmpxchg16b));
    assert_eq!(decode(&bytes, Mode::Bits64), Err(super::super::DecodeError::Unsupported));
    // A register operand: #UD, and iced knows no instruction there.
    for mode in [Mode::Bits16, Mode::Bits32, Mode::Bits64] {
        assert_eq!(iced(&[0x0F, 0xC7, 0xCE], mode), None);
        assert_eq!(decode(&[0x0F, 0xC7, 0xCE], mode), Err(super::super::DecodeError::Invalid));
    }
}

/// `invlpg m` with every ModRM form (SIB and RIP-relative included) under
/// the prefixes the decoder takes, in every mode: decoded as iced decodes
/// it; the register forms of group 7 (`swapgs`, `rdtscp`, `vmcall`, ...)
/// and its other memory forms (`sgdt`, `lidt`, ...) are refused.
#[test]
fn invlpg_decodes_as_iced_decodes_it() {
    let mut compared = 0;
    for mode in [Mode::Bits16, Mode::Bits32, Mode::Bits64] {
        let rexes: &[&[u8]] = if mode == Mode::Bits64 { &[&[], &[0x41], &[0x4B]] } else { &[&[]] };
        for prefix in [&[][..], &[0x66], &[0x67], &[0x26], &[0x64], &[0x65, 0x67]] {
            for &rex in rexes {
                for modrm in [0x38, 0x3C, 0x3D, 0x3E, 0x7B, 0xBC, 0xBF] {
                    let bytes = [prefix, rex, &[0x0F, 0x01, modrm, 0x98, 0x76, 0x54, 0x32, 0x10]].concat();
                    let theirs = iced(&bytes, mode).unwrap_or_else(|| panic!("{bytes:02X?}: invalid for iced"));
                    let insn = decode(&bytes, mode).unwrap_or_else(|e| panic!("{bytes:02X?}: {e:?}"));
                    assert_eq!((insn.op, theirs.mnemonic()), (Op::Invlpg, Mnemonic::Invlpg), "{bytes:02X?}");
                    compare(&insn, &theirs).unwrap_or_else(|why| panic!("{}-bit {bytes:02X?}: {why}", bitness(mode)));
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 2 * 6 * 7 + 6 * 3 * 7);
    for mode in [Mode::Bits16, Mode::Bits32, Mode::Bits64] {
        for modrm in [0x00, 0x18, 0x30, 0xC1, 0xF8, 0xF9, 0xFF] {
            let bytes = [0x0F, 0x01, modrm, 0, 0, 0, 0];
            let mnemonic = iced(&bytes, mode).map(|i| i.mnemonic());
            assert_ne!(mnemonic, Some(Mnemonic::Invlpg), "{bytes:02X?}");
            assert!(decode(&bytes, mode).is_err(), "{}-bit {bytes:02X?}: {mnemonic:?}", bitness(mode));
        }
    }
    // A lock prefix: #UD.
    assert_eq!(iced(&[0xF0, 0x0F, 0x01, 0x38], Mode::Bits32), None);
    assert_eq!(decode(&[0xF0, 0x0F, 0x01, 0x38], Mode::Bits32), Err(super::super::DecodeError::Invalid));
}
//@ end
