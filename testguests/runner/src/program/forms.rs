//! The instruction forms the generator draws from: every memory form the
//! emulator decodes (kmod/src/emulate/decode.rs), valid instructions it
//! does not know, and encodings the processor refuses.
//!
//! A form is an opcode with what follows it: a ModRM byte whose r/m names
//! memory (the generator chooses the addressing), a moffs, or nothing but
//! the implicit operands of a string instruction. It says how wide its
//! memory operand is, whether it reads and writes it, which flags it
//! leaves undefined (Intel SDM Vol. 1, Appendix A), and whether a `lock`
//! prefix is allowed on it (SDM Vol. 2A, LOCK).

use crate::header::Mode;

/// The status flags an instruction may leave undefined.
pub const CF: u64 = 1;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const OF: u64 = 1 << 11;
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// What the emulator makes of a form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Decoded and executed: it must never end a run as unknown.
    Known,
    /// A valid instruction the emulator does not know: on MMIO it ends
    /// the run with the unknown-instruction exit.
    Unknown,
    /// An encoding the processor refuses with #UD before any access.
    Undefined,
}

/// The width of the memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Byte,
    Word,
    /// The operand size: 2, 4 or 8 bytes.
    Full,
    /// A push or pop: 2 or 4 bytes, 8 in 64-bit mode.
    Stack,
    Qword,
    /// A far pointer (offset and selector), or a bound pair, or a
    /// descriptor-table register: `Full` plus 2, or twice `Full`.
    Pointer,
    Pair,
    Table,
}

/// The immediate after the ModRM (or opcode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imm {
    None,
    Byte,
    /// `Iz`: the operand size, but 4 bytes for a 64-bit operand.
    Full,
}

/// Where the memory operand comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    ModRm,
    /// A0-A3: the address is an immediate of the address size.
    Moffs,
    /// [rSI] (in DS or the override's segment) and/or ES:[rDI].
    String { src: bool, dst: bool },
    /// Fixed bytes, no memory operand.
    Bare,
}

/// A push or pop of memory: the other access is the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    None,
    Push,
    Pop,
}

/// `mov` between memory and a segment register (8C, 8E).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SregMove {
    Store,
    Load,
}

#[derive(Clone, Copy, Debug)]
pub struct Form {
    pub name: &'static str,
    opcode: [u8; 3],
    opcode_len: usize,
    /// The ModRM reg field: `Some(n)` for `/n`, `None` for a general
    /// register operand.
    pub ext: Option<u8>,
    pub shape: Shape,
    pub width: Width,
    /// The register operand's width, when it differs (movzx, movsx).
    pub reg_width: Option<Width>,
    pub imm: Imm,
    pub reads: bool,
    pub writes: bool,
    pub lockable: bool,
    /// The register operand is written: never rSP (the step's stack).
    pub writes_reg: bool,
    pub undefined: u64,
    pub class: Class,
    pub stack: Stack,
    /// `bt`-family with a register bit offset: the operand may lie
    /// outside the addressed one.
    pub bit_reg: bool,
    /// `mov` to (`Load`) or from (`Store`) a segment register: the reg
    /// field names one.
    pub sreg: Option<SregMove>,
    /// A 66 prefix would make the form #UD.
    pub no66: bool,
    /// The modes the form exists in.
    pub real: bool,
    pub prot: bool,
    pub long: bool,
}

impl Form {
    fn new(name: &'static str, opcode: &[u8], ext: Option<u8>, width: Width) -> Form {
        let mut bytes = [0; 3];
        bytes[..opcode.len()].copy_from_slice(opcode);
        Form {
            name,
            opcode: bytes,
            opcode_len: opcode.len(),
            ext,
            shape: Shape::ModRm,
            width,
            reg_width: None,
            imm: Imm::None,
            reads: true,
            writes: false,
            lockable: false,
            writes_reg: false,
            undefined: 0,
            class: Class::Known,
            stack: Stack::None,
            bit_reg: false,
            sreg: None,
            no66: false,
            real: true,
            prot: true,
            long: true,
        }
    }

    pub fn opcode(&self) -> &[u8] {
        &self.opcode[..self.opcode_len]
    }

    /// Whether the form exists in `mode`.
    pub fn in_mode(&self, mode: Mode) -> bool {
        match mode {
            Mode::Real => self.real,
            Mode::Prot32 => self.prot,
            Mode::Long64 => self.long,
        }
    }

    fn rmw(self) -> Form {
        Form { writes: true, ..self }
    }
    fn store(self) -> Form {
        Form { reads: false, writes: true, ..self }
    }
    fn no_access(self) -> Form {
        Form { reads: false, writes: false, ..self }
    }
    fn lock(self) -> Form {
        Form { lockable: true, ..self }
    }
    fn to_reg(self) -> Form {
        Form { writes_reg: true, ..self }
    }
    fn imm(self, imm: Imm) -> Form {
        Form { imm, ..self }
    }
    fn undef(self, undefined: u64) -> Form {
        Form { undefined, ..self }
    }
    fn class(self, class: Class) -> Form {
        Form { class, ..self }
    }
    fn not64(self) -> Form {
        Form { long: false, ..self }
    }
    fn only64(self) -> Form {
        Form { real: false, prot: false, ..self }
    }
    fn not_real(self) -> Form {
        Form { real: false, ..self }
    }
    fn shape(self, shape: Shape) -> Form {
        Form { shape, ..self }
    }
}

/// Groups of forms, drawn first so that the 64 ALU forms do not crowd
/// out the rest.
pub fn known() -> Vec<Vec<Form>> {
    let full = Width::Full;
    let byte = Width::Byte;
    let mut alu = Vec::new();
    for (n, name) in ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"].into_iter().enumerate() {
        let n = n as u8;
        let cmp = n == 7;
        let undefined = if matches!(n, 1 | 4 | 6) { AF } else { 0 };
        let rmw = |f: Form| if cmp { f.undef(undefined) } else { f.rmw().lock().undef(undefined) };
        let to_reg = |f: Form| if cmp { f.undef(undefined) } else { f.to_reg().undef(undefined) };
        alu.push(rmw(Form::new(name, &[n * 8], None, byte)));
        alu.push(rmw(Form::new(name, &[n * 8 + 1], None, full)));
        alu.push(to_reg(Form::new(name, &[n * 8 + 2], None, byte)));
        alu.push(to_reg(Form::new(name, &[n * 8 + 3], None, full)));
        alu.push(rmw(Form::new(name, &[0x80], Some(n), byte).imm(Imm::Byte)));
        alu.push(rmw(Form::new(name, &[0x81], Some(n), full).imm(Imm::Full)));
        alu.push(rmw(Form::new(name, &[0x82], Some(n), byte).imm(Imm::Byte)).not64());
        alu.push(rmw(Form::new(name, &[0x83], Some(n), full).imm(Imm::Byte)));
    }
    let mov = vec![
        Form::new("mov", &[0x88], None, byte).store(),
        Form::new("mov", &[0x89], None, full).store(),
        Form::new("mov", &[0x8A], None, byte).to_reg(),
        Form::new("mov", &[0x8B], None, full).to_reg(),
        Form::new("mov", &[0xC6], Some(0), byte).store().imm(Imm::Byte),
        Form::new("mov", &[0xC7], Some(0), full).store().imm(Imm::Full),
    ];
    let moffs = vec![
        Form::new("mov", &[0xA0], None, byte).shape(Shape::Moffs),
        Form::new("mov", &[0xA1], None, full).shape(Shape::Moffs),
        Form::new("mov", &[0xA2], None, byte).store().shape(Shape::Moffs),
        Form::new("mov", &[0xA3], None, full).store().shape(Shape::Moffs),
    ];
    let movx = vec![
        Form::new("movzx", &[0x0F, 0xB6], None, byte).to_reg().wide(),
        Form::new("movzx", &[0x0F, 0xB7], None, Width::Word).to_reg().wide(),
        Form::new("movsx", &[0x0F, 0xBE], None, byte).to_reg().wide(),
        Form::new("movsx", &[0x0F, 0xBF], None, Width::Word).to_reg().wide(),
    ];
    let unary = vec![
        Form::new("test", &[0x84], None, byte).undef(AF),
        Form::new("test", &[0x85], None, full).undef(AF),
        Form::new("test", &[0xF6], Some(0), byte).imm(Imm::Byte).undef(AF),
        Form::new("test", &[0xF7], Some(0), full).imm(Imm::Full).undef(AF),
        Form::new("not", &[0xF6], Some(2), byte).rmw().lock(),
        Form::new("not", &[0xF7], Some(2), full).rmw().lock(),
        Form::new("neg", &[0xF6], Some(3), byte).rmw().lock(),
        Form::new("neg", &[0xF7], Some(3), full).rmw().lock(),
        Form::new("inc", &[0xFE], Some(0), byte).rmw().lock(),
        Form::new("dec", &[0xFE], Some(1), byte).rmw().lock(),
        Form::new("inc", &[0xFF], Some(0), full).rmw().lock(),
        Form::new("dec", &[0xFF], Some(1), full).rmw().lock(),
    ];
    let xchg = vec![
        Form::new("xchg", &[0x86], None, byte).rmw().lock().to_reg(),
        Form::new("xchg", &[0x87], None, full).rmw().lock().to_reg(),
    ];
    let stack = vec![
        Form { stack: Stack::Push, ..Form::new("push", &[0xFF], Some(6), Width::Stack) },
        Form { stack: Stack::Pop, ..Form::new("pop", &[0x8F], Some(0), Width::Stack).store() },
    ];
    let bt_undefined = OF | SF | ZF | AF | PF;
    let mut bits = Vec::new();
    for (n, name) in ["bt", "bts", "btr", "btc"].into_iter().enumerate() {
        let f = |f: Form| if n == 0 { f.undef(bt_undefined) } else { f.rmw().lock().undef(bt_undefined) };
        bits.push(f(Form { bit_reg: true, ..Form::new(name, &[0x0F, [0xA3, 0xAB, 0xB3, 0xBB][n]], None, full) }));
        bits.push(f(Form::new(name, &[0x0F, 0xBA], Some(4 + n as u8), full).imm(Imm::Byte)));
    }
    let string = |name, op, src, dst, writes| {
        let f = Form::new(name, &[op], None, if op & 1 == 0 { byte } else { full }).shape(Shape::String { src, dst });
        if writes { f.rmw() } else { f }
    };
    let strings = vec![
        string("movs", 0xA4, true, true, true),
        string("movs", 0xA5, true, true, true),
        string("stos", 0xAA, false, true, true),
        string("stos", 0xAB, false, true, true),
        string("lods", 0xAC, true, false, false),
        string("lods", 0xAD, true, false, false),
    ];
    vec![alu, mov, moffs, movx, unary, xchg, stack, bits, strings]
}

impl Form {
    /// movzx and movsx: the register operand has the operand size.
    fn wide(self) -> Form {
        Form { reg_width: Some(Width::Full), ..self }
    }
}

/// Valid instructions with a memory operand that the emulator does not
/// decode.
pub fn unknown() -> Vec<Form> {
    let (byte, full, word) = (Width::Byte, Width::Full, Width::Word);
    let u = |f: Form| f.class(Class::Unknown).undef(STATUS);
    let mut forms = Vec::new();
    for n in [0, 1, 2, 3, 4, 5, 7] {
        forms.push(u(Form::new("shift", &[0xD0], Some(n), byte).rmw()));
        forms.push(u(Form::new("shift", &[0xD1], Some(n), full).rmw()));
        forms.push(u(Form::new("shift", &[0xD2], Some(n), byte).rmw()));
        forms.push(u(Form::new("shift", &[0xD3], Some(n), full).rmw()));
        forms.push(u(Form::new("shift", &[0xC0], Some(n), byte).rmw().imm(Imm::Byte)));
        forms.push(u(Form::new("shift", &[0xC1], Some(n), full).rmw().imm(Imm::Byte)));
    }
    // `cmpxchg` and `cmpxchg8b` are in neither list: the emulator knows
    // them from stage 13 on and not before, and the chaos guests run on
    // every stage from 10.
    forms.extend([
        u(Form::new("xadd", &[0x0F, 0xC0], None, byte).rmw().lock().to_reg()),
        u(Form::new("xadd", &[0x0F, 0xC1], None, full).rmw().lock().to_reg()),
        u(Form::new("cmovne", &[0x0F, 0x45], None, full).to_reg()),
        u(Form::new("setc", &[0x0F, 0x92], Some(0), byte).store()),
        u(Form::new("imul", &[0x0F, 0xAF], None, full).to_reg()),
        u(Form::new("imul", &[0x69], None, full).to_reg().imm(Imm::Full)),
        u(Form::new("imul", &[0x6B], None, full).to_reg().imm(Imm::Byte)),
        u(Form::new("test", &[0xF6], Some(1), byte).imm(Imm::Byte)),
        u(Form::new("mul", &[0xF7], Some(4), full)),
        u(Form::new("imul", &[0xF6], Some(5), byte)),
        u(Form::new("div", &[0xF7], Some(6), full)),
        u(Form::new("idiv", &[0xF6], Some(7), byte)),
        u(Form::new("bsf", &[0x0F, 0xBC], None, full).to_reg()),
        u(Form::new("bsr", &[0x0F, 0xBD], None, full).to_reg()),
        u(Form::new("shld", &[0x0F, 0xA4], None, full).rmw().imm(Imm::Byte)),
        u(Form::new("shrd", &[0x0F, 0xAD], None, full).rmw()),
        u(Form::new("mov", &[0x8C], None, word).store().sreg()),
        u(Form::new("mov", &[0x8E], None, word).sreg_load()),
        u(Form::new("cmps", &[0xA6], None, byte).shape(Shape::String { src: true, dst: true })),
        u(Form::new("cmps", &[0xA7], None, full).shape(Shape::String { src: true, dst: true })),
        u(Form::new("scas", &[0xAE], None, byte).shape(Shape::String { src: false, dst: true })),
        u(Form::new("scas", &[0xAF], None, full).shape(Shape::String { src: false, dst: true })),
        u(Form::new("movsxd", &[0x63], None, Width::Full).to_reg().only64()),
        u(Form::new("les", &[0xC4], None, Width::Pointer).to_reg().not64()),
        u(Form::new("lfs", &[0x0F, 0xB4], None, Width::Pointer).to_reg()),
        u(Form::new("fnstcw", &[0xD9], Some(7), word).store()),
        u(Form::new("fnstsw", &[0xDD], Some(7), word).store()),
        u(Form::new("movq", &[0x0F, 0x6F], None, Width::Qword)),
        u(Form::new("movq", &[0x0F, 0x7F], None, Width::Qword).store()),
        u(Form::new("movnti", &[0x0F, 0xC3], None, full).store().not_real().no66()),
        u(Form::new("movbe", &[0x0F, 0x38, 0xF0], None, full).to_reg()),
        u(Form::new("movbe", &[0x0F, 0x38, 0xF1], None, full).store()),
        u(Form::new("sgdt", &[0x0F, 0x01], Some(0), Width::Table).store()),
        u(Form::new("sidt", &[0x0F, 0x01], Some(1), Width::Table).store()),
        u(Form::new("smsw", &[0x0F, 0x01], Some(4), word).store()),
        u(Form::new("sldt", &[0x0F, 0x00], Some(0), word).store().not_real()),
        u(Form::new("clflush", &[0x0F, 0xAE], Some(7), byte)),
        u(Form::new("bound", &[0x62], None, Width::Pair).not64()),
    ]);
    forms
}

impl Form {
    /// `mov` from a segment register to memory (any of them) or from
    /// memory to one (DS, ES, FS or GS: never CS, never SS, so that the
    /// step keeps its stack).
    fn sreg(self) -> Form {
        Form { sreg: Some(SregMove::Store), ..self }
    }
    fn sreg_load(self) -> Form {
        Form { sreg: Some(SregMove::Load), ..self }
    }
    fn no66(self) -> Form {
        Form { no66: true, ..self }
    }
}

/// Encodings the processor refuses with #UD before touching memory.
pub fn undefined() -> Vec<Form> {
    let ud = |f: Form| f.class(Class::Undefined).no_access();
    let mut forms = vec![
        ud(Form::new("ud2", &[0x0F, 0x0B], None, Width::Byte).shape(Shape::Bare)),
        ud(Form::new("ud1", &[0x0F, 0xB9], None, Width::Full)),
        ud(Form::new("lea", &[0x8D, 0xC1], None, Width::Full).shape(Shape::Bare)),
        ud(Form::new("ff/7", &[0xFF], Some(7), Width::Full)),
        ud(Form::new("salc", &[0xD6], None, Width::Byte).shape(Shape::Bare).only64()),
        ud(Form::new("pusha", &[0x60], None, Width::Byte).shape(Shape::Bare).only64()),
        ud(Form::new("grp1", &[0x82], Some(0), Width::Byte).imm(Imm::Byte).only64()),
    ];
    for n in 2..8 {
        forms.push(ud(Form::new("fe/n", &[0xFE], Some(n), Width::Byte)));
    }
    for n in 1..7 {
        forms.push(ud(Form::new("c6/n", &[0xC6], Some(n), Width::Byte).imm(Imm::Byte)));
        forms.push(ud(Form::new("c7/n", &[0xC7], Some(n), Width::Full).imm(Imm::Full)));
    }
    forms
}
