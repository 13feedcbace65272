//! One instruction of a form, encoded: prefixes, ModRM, SIB,
//! displacement and immediate (Intel SDM Vol. 2A, chapter 2), with the
//! register values that make its memory operand land where the
//! generator wants it: in the MMIO window mostly, across a page edge
//! between RAM and MMIO, in RAM, on a page that faults, through a
//! segment whose limit or rights refuse it.

use super::forms::{Class, Form, Imm, Shape, SregMove, Stack, Width};
use super::rng::Rng;
use super::space::{Kind, Seg};
use super::Config;
use crate::header::Mode;

/// Segment registers, numbered as the `sreg` field and
/// `rkvm::emulate::Segment` number them.
pub const ES: usize = 0;
pub const SS: usize = 2;
pub const DS: usize = 3;
const SEGMENT_PREFIX: [u8; 6] = [0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65];

/// General registers, numbered as instructions number them.
pub const RCX: usize = 1;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;

/// The state a step starts in, which the encoder completes: it sets the
/// registers the instruction's addresses use, and DF for a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub config: Config,
    /// The linear address of the instruction's first byte.
    pub code: u64,
    /// ES, CS, SS, DS, FS, GS as the step loads them.
    pub segs: [Seg; 6],
    pub regs: [u64; 16],
    pub rflags: u64,
    /// Whether accesses may straddle page edges and be ones that rkvm
    /// checks differently from the processor (the `within` seeds have
    /// neither).
    pub edges: bool,
    /// Registers whose value the encoder fixed (rSP always).
    pub pinned: u16,
    /// The memory the instruction is meant to access, besides the stack.
    pub accesses: Vec<Aim>,
}

/// One memory access an instruction is meant to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aim {
    /// The linear address of its first byte.
    pub at: u64,
    pub len: u64,
    pub write: bool,
    /// The segment register it goes through (ES, CS, SS, DS, FS, GS).
    pub segment: usize,
    pub seg: Seg,
}

impl Frame {
    /// Whether an access straddles a page edge.
    pub fn crosses(&self) -> bool {
        self.accesses.iter().any(|a| a.at >> 12 != a.at.wrapping_add(a.len - 1) >> 12)
    }

    /// Whether an access is, in 64-bit mode, a stack access at a
    /// non-canonical address, which rkvm makes `#GP` rather than `#SS`
    /// (chapter 10's list of where rkvm differs). Outside 64-bit mode
    /// rkvm checks an access through any segment of the steps (limit,
    /// expand-down, type, null selector) as the processor does.
    pub fn checked_differently(&self) -> bool {
        self.config.mode == Mode::Long64 && self.accesses.iter().any(|a| a.segment == SS && !canonical(a.at))
    }
}

impl Frame {
    /// Whether an access writes the read-only alias of the window.
    pub fn writes_read_only(&self, config: Config) -> bool {
        self.accesses.iter().any(|a| a.write && (0..a.len).any(|i| config.kind(a.at.wrapping_add(i)) == Kind::ReadOnly))
    }
}

/// Bits 63:47 of a 64-bit address all equal bit 47.
fn canonical(address: u64) -> bool {
    let top = address >> 47;
    top == 0 || top == 0x1_FFFF
}

/// The prefixes of one instruction.
#[derive(Clone, Debug, Default)]
struct Prefixes {
    op: bool,
    addr: bool,
    segment: Option<usize>,
    rep: Option<u8>,
    lock: bool,
    rex: u8,
    /// Legacy prefixes in the order they are emitted, repeats included.
    order: Vec<u8>,
}

/// Operand, stack and address sizes in bytes.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    op: u64,
    stack: u64,
    addr: u64,
}

impl Sizes {
    fn of(mode: Mode, p: &Prefixes) -> Sizes {
        let w = p.rex & 8 != 0;
        match mode {
            Mode::Real => Sizes { op: if p.op { 4 } else { 2 }, stack: if p.op { 4 } else { 2 }, addr: if p.addr { 4 } else { 2 } },
            Mode::Prot32 => Sizes { op: if p.op { 2 } else { 4 }, stack: if p.op { 2 } else { 4 }, addr: if p.addr { 2 } else { 4 } },
            Mode::Long64 => Sizes {
                op: if w { 8 } else if p.op { 2 } else { 4 },
                stack: if p.op && !w { 2 } else { 8 },
                addr: if p.addr { 4 } else { 8 },
            },
        }
    }

    fn width(&self, width: Width, mode: Mode) -> u64 {
        match width {
            Width::Byte => 1,
            Width::Word => 2,
            Width::Full => self.op,
            Width::Stack => self.stack,
            Width::Qword => 8,
            Width::Pointer => self.op + 2,
            Width::Pair => 2 * self.op,
            Width::Table => if mode == Mode::Long64 { 10 } else { 6 },
        }
    }
}

/// All ones in the low `bytes` bytes.
fn mask(bytes: u64) -> u64 {
    if bytes >= 8 { u64::MAX } else { (1 << (8 * bytes)) - 1 }
}

fn prefixes(rng: &mut Rng, form: &Form, mode: Mode) -> Prefixes {
    let mut p = Prefixes {
        op: !form.no66 && rng.one_in(5),
        addr: rng.one_in(6),
        lock: form.lockable && rng.one_in(4),
        ..Prefixes::default()
    };
    if rng.one_in(3) {
        p.segment = Some(if mode == Mode::Long64 && !rng.one_in(4) { rng.range(4, 5) as usize } else { rng.below(6) as usize });
    }
    let string = matches!(form.shape, Shape::String { .. });
    if string && !rng.one_in(3) {
        p.rep = Some(if rng.one_in(4) { 0xF2 } else { 0xF3 });
    } else if form.opcode().len() == 1 && !string && rng.one_in(40) {
        // Ignored before these opcodes (a hint at most).
        p.rep = Some(0xF3);
    }
    if mode == Mode::Long64 && rng.one_in(2) {
        let r = if form.sreg.is_some() { 0 } else { rng.below(2) as u8 };
        p.rex = 0x40 | (rng.below(2) as u8) << 3 | r << 2 | rng.below(4) as u8;
    }
    let mut order: Vec<u8> = [p.op.then_some(0x66), p.addr.then_some(0x67), p.segment.map(|s| SEGMENT_PREFIX[s]), p.rep]
        .into_iter()
        .flatten()
        .collect();
    if p.lock {
        order.push(0xF0);
    }
    // A redundant prefix now and then: the last segment and rep prefix
    // count, the others are the same however often they come.
    if !order.is_empty() && rng.one_in(10) {
        let again = rng.pick(&order);
        order.push(again);
    }
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    p.order = order;
    p
}

/// A ModRM memory operand: its bytes and the registers it adds.
#[derive(Clone, Debug, Default)]
struct Addressing {
    /// mod and r/m; the reg field is filled in later.
    modrm: u8,
    sib: Option<u8>,
    disp_len: usize,
    /// (register, multiplier): base and scaled index.
    terms: Vec<(usize, u64)>,
    rip: bool,
    /// The default segment is SS (a base of rBP or rSP, or BP).
    stack: bool,
}

fn addressing(rng: &mut Rng, addr: u64, rex: u8, long: bool) -> Addressing {
    let md = rng.below(3) as u8;
    let rm = rng.below(8) as u8;
    let mut a = Addressing { modrm: md << 6 | rm, ..Addressing::default() };
    if addr == 2 {
        // Intel SDM Vol. 2A, Table 2-1.
        const PAIRS: [(Option<usize>, Option<usize>); 8] = [
            (Some(3), Some(6)),
            (Some(3), Some(7)),
            (Some(5), Some(6)),
            (Some(5), Some(7)),
            (Some(6), None),
            (Some(7), None),
            (Some(5), None),
            (Some(3), None),
        ];
        let (base, index) = if rm == 6 && md == 0 { (None, None) } else { PAIRS[usize::from(rm)] };
        a.terms = base.into_iter().chain(index).map(|r| (r, 1)).collect();
        a.stack = matches!(rm, 2 | 3) || (rm == 6 && md != 0);
        a.disp_len = match md {
            0 if rm == 6 => 2,
            0 => 0,
            1 => 1,
            _ => 2,
        };
        return a;
    }
    let b = usize::from(rex & 1) << 3;
    let x = usize::from(rex & 2) << 2;
    let mut no_base = false;
    if rm == 4 {
        let sib = rng.below(256) as u8;
        a.sib = Some(sib);
        let index = usize::from(sib >> 3 & 7) | x;
        if index != 4 {
            a.terms.push((index, 1 << (sib >> 6)));
        }
        if sib & 7 == 5 && md == 0 {
            no_base = true;
        } else {
            let base = usize::from(sib & 7) | b;
            a.terms.push((base, 1));
            a.stack = base == 4 || base == 5;
        }
    } else if rm == 5 && md == 0 {
        no_base = true;
        // 64-bit mode: RIP-relative, whatever the address size.
        a.rip = long;
    } else {
        let base = usize::from(rm) | b;
        a.terms.push((base, 1));
        a.stack = base == 5;
    }
    a.disp_len = match md {
        0 if no_base => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    a
}

/// The inverse of an odd number modulo 2^64 (Newton's iteration).
fn inverse(m: u64) -> u64 {
    let mut x = m;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
    }
    x
}

/// A random value for a register the address does not fix.
fn free_value(rng: &mut Rng, ea: u64) -> u64 {
    match rng.below(4) {
        0 => rng.small() as u64,
        1 => rng.below(0x1_0000),
        2 => ea.wrapping_add(rng.small() as u64),
        _ => rng.next_u64(),
    }
}

/// Gives the address's registers values (and picks the displacement)
/// so that the effective address is `ea` modulo the address size.
/// `sp_delta` is added to rSP where it is a term (`pop` reads rSP after
/// the pop). Returns the displacement, or `None` if this form cannot
/// reach `ea` with the registers already fixed.
fn solve(rng: &mut Rng, a: &Addressing, ea: u64, addr: u64, frame: &mut Frame, sp_delta: u64, long: bool) -> Option<u64> {
    let m = mask(addr);
    // Each register once, with its multiplier: [eax + eax * 4] is 5 eax.
    let mut terms: Vec<(usize, u64)> = Vec::new();
    for &(r, k) in &a.terms {
        match terms.iter_mut().find(|(t, _)| *t == r) {
            Some(t) => t.1 += k,
            None => terms.push((r, k)),
        }
    }
    let pinned = |r: usize, frame: &Frame| frame.pinned & (1 << r) != 0;
    let disp_fits = |d: u64| match a.disp_len {
        0 => d & m == 0,
        1 => (d as i8) as u64 & m == d & m,
        2 => true,
        _ => addr <= 4 || (d as i32) as u64 == d,
    };
    let mut disp = match a.disp_len {
        0 => 0,
        1 => rng.small() as i8 as u64,
        2 => rng.small() as u64,
        _ => match rng.below(3) {
            0 => rng.small() as u64,
            1 => rng.next_u64() as i32 as u64,
            _ => ea.wrapping_sub(rng.below(0x100)),
        },
    };
    // The register solved for: one with an odd multiplier if there is
    // one (odd numbers have an inverse modulo 2^n).
    let solved = terms.iter().filter(|(r, _)| !pinned(*r, frame)).min_by_key(|(_, k)| k % 2 == 0).copied();
    for &(r, _) in &terms {
        if !pinned(r, frame) && Some(r) != solved.map(|s| s.0) {
            frame.regs[r] = free_value(rng, ea);
        }
    }
    let value = |r: usize, frame: &Frame| if r == RSP { frame.regs[r].wrapping_add(sp_delta) } else { frame.regs[r] };
    let others = terms
        .iter()
        .filter(|(r, _)| Some(*r) != solved.map(|s| s.0))
        .fold(0u64, |sum, &(r, k)| sum.wrapping_add(value(r, frame).wrapping_mul(k)));
    match solved {
        None => disp = ea.wrapping_sub(others),
        Some((r, k)) => {
            let mut rest = ea.wrapping_sub(others).wrapping_sub(disp);
            let zeros = k.trailing_zeros();
            let low = rest & ((1 << zeros) - 1);
            // An even multiplier reaches only multiples of itself: the
            // displacement makes up the difference, if there is one.
            if low != 0 && a.disp_len == 0 {
                return None;
            }
            disp = disp.wrapping_add(low);
            rest -= low;
            frame.regs[r] = (rest >> zeros).wrapping_mul(inverse(k >> zeros));
        }
    }
    for &(r, _) in &terms {
        if !pinned(r, frame) {
            // Bits above the address size do not count: make them random.
            let upper = if long || addr < 4 { rng.next_u64() & !m } else { 0 };
            frame.regs[r] = (frame.regs[r] & m) | upper;
            if !long {
                frame.regs[r] &= 0xFFFF_FFFF;
            }
            frame.pinned |= 1 << r;
        }
    }
    let sum = terms.iter().fold(disp, |s, &(r, k)| s.wrapping_add(value(r, frame).wrapping_mul(k)));
    (sum & m == ea & m && disp_fits(disp)).then_some(disp & m)
}

/// Encodes one instruction of `form` into the step `frame` describes, or
/// `None` if the draws did not fit together (the caller draws again).
pub fn encode(rng: &mut Rng, form: &Form, frame: &mut Frame) -> Option<Vec<u8>> {
    let mode = frame.config.mode;
    let p = prefixes(rng, form, mode);
    let sizes = Sizes::of(mode, &p);
    let mut bytes = p.order.clone();
    if p.rex != 0 {
        bytes.push(p.rex);
    }
    bytes.extend_from_slice(form.opcode());
    match form.shape {
        Shape::Bare => {}
        Shape::ModRm => modrm_operand(rng, form, frame, &p, sizes, &mut bytes)?,
        Shape::Moffs => moffs_operand(rng, form, frame, &p, sizes, &mut bytes)?,
        Shape::String { src, dst } => string_operands(rng, form, frame, &p, sizes, src, dst)?,
    }
    // Longer than 15 bytes: #GP(0), before any access; rare, and fine.
    (bytes.len() <= 15 || rng.one_in(8)).then_some(bytes)
}

/// The segment an operand uses: the override's, or `default`.
fn segment_of(p: &Prefixes, default: usize) -> usize {
    p.segment.unwrap_or(default)
}

/// A linear address for an access of `len` bytes (`span` bytes for a
/// whole string), reachable as `seg`'s base plus an offset of `addr`
/// bytes, that the instruction may touch. Returns it with the offset.
fn place(rng: &mut Rng, frame: &Frame, seg: &Seg, seg_index: usize, span: u64, addr: u64, write: bool) -> Option<(u64, u64)> {
    let config = frame.config;
    let long = config.mode == Mode::Long64;
    // In 64-bit mode only FS and GS have a base, and no segment a limit.
    let base = if long && seg_index < 4 { 0 } else { seg.base };
    for _ in 0..40 {
        let linear = pick_linear(rng, frame, span);
        let linear = if long { linear } else { linear & 0xFFFF_FFFF };
        let ea = if long { linear.wrapping_sub(base) } else { linear.wrapping_sub(base) & 0xFFFF_FFFF };
        if ea & !mask(addr) != 0 || (addr < 8 && ea.checked_add(span - 1).is_none_or(|end| end > mask(addr))) {
            continue;
        }
        // Now and then an access the segment refuses: #GP or #SS.
        if !long && !seg.allows(ea, span, write) && !rng.one_in(10) {
            continue;
        }
        let differs = long && seg_index == SS && !canonical(linear);
        if differs && !frame.edges {
            continue;
        }
        if write && !(0..span).all(|i| config.may_write(linear.wrapping_add(i))) {
            continue;
        }
        return Some((linear, ea));
    }
    None
}

/// A linear address to aim at.
fn pick_linear(rng: &mut Rng, frame: &Frame, span: u64) -> u64 {
    let config = frame.config;
    let bases = config.window_bases();
    let base = rng.pick(bases);
    let inside = |rng: &mut Rng, page: u64| page + rng.below(0x1001u64.saturating_sub(span).max(1));
    let weights = [60, if frame.edges { 25 } else { 0 }, 12, 6, 4];
    match rng.weighted(&weights) {
        0 => inside(rng, base),
        1 => {
            let edge = rng.pick(&config.edges());
            edge.wrapping_sub(rng.range(1, span.max(2) - 1))
        }
        2 => {
            let page = rng.range(0, 5);
            inside(rng, base.wrapping_add(page * 0x1000).wrapping_sub(0x1000))
        }
        3 => inside(rng, super::space::DATA),
        _ => match rng.below(3) {
            0 => rng.next_u64() & 0xFFFF_FFFF,
            1 => rng.below(0x1_0000),
            _ => rng.next_u64(),
        },
    }
}

fn modrm_operand(rng: &mut Rng, form: &Form, frame: &mut Frame, p: &Prefixes, sizes: Sizes, bytes: &mut Vec<u8>) -> Option<()> {
    let mode = frame.config.mode;
    let long = mode == Mode::Long64;
    let a = addressing(rng, sizes.addr, p.rex, long);
    let len = sizes.width(form.width, mode);
    let seg_index = segment_of(p, if a.stack { SS } else { DS });
    let seg = frame.segs[seg_index];
    let write = form.writes;
    let accessed = form.class != Class::Undefined;
    let (linear, mut ea) = place(rng, frame, &seg, seg_index, len, sizes.addr, write && accessed)?;
    // The register operand: a register, an opcode extension, or a
    // segment register.
    let reg_field = match (form.ext, form.sreg) {
        (Some(n), _) => n,
        (None, Some(SregMove::Load)) => rng.pick(&[0, 3, 4, 5]),
        (None, Some(SregMove::Store)) => rng.below(6) as u8,
        (None, None) => rng.below(8) as u8,
    };
    let reg = usize::from(reg_field) | usize::from(p.rex & 4) << 1;
    let reg_width = sizes.width(form.reg_width.unwrap_or(form.width), mode);
    // Never a new rSP (a byte write to SPL keeps the stack in place).
    if form.ext.is_none() && form.sreg.is_none() && form.writes_reg && reg == RSP && reg_width > 1 {
        return None;
    }
    if form.bit_reg {
        if reg == RSP || a.terms.iter().any(|(r, _)| *r == reg) {
            return None;
        }
        // The bit offset is signed and may point outside the operand: the
        // operand is then `offset / width` operands away (SDM Vol. 2A, BT).
        let bits = 8 * len;
        let offset = rng.small() * if rng.one_in(3) { 64 } else { 1 };
        let displacement = (offset >> bits.trailing_zeros()).wrapping_mul(len as i64) as u64;
        ea = ea.wrapping_sub(displacement) & mask(sizes.addr);
        let upper = if long { rng.next_u64() & !mask(len) } else { rng.next_u64() & 0xFFFF_FFFF & !mask(len) };
        frame.regs[reg] = (offset as u64 & mask(len)) | upper;
        frame.pinned |= 1 << reg;
    }
    let sp_delta = if form.stack == Stack::Pop { sizes.stack } else { 0 };
    let disp = if a.rip { 0 } else { solve(rng, &a, ea, sizes.addr, frame, sp_delta, long)? };
    frame.accesses.push(Aim { at: linear, len, write: write && accessed, segment: seg_index, seg });
    bytes.push(a.modrm | reg_field << 3);
    bytes.extend(a.sib);
    let disp_at = bytes.len();
    bytes.extend_from_slice(&disp.to_le_bytes()[..a.disp_len]);
    immediate(rng, form, sizes, bytes);
    if a.rip {
        // RIP-relative: from the end of the whole instruction.
        let next = frame.code.wrapping_add(bytes.len() as u64);
        let disp = ea.wrapping_sub(next) & mask(sizes.addr);
        let fits = if sizes.addr == 8 { disp as i64 as i32 as i64 as u64 == disp } else { true };
        if !fits {
            return None;
        }
        bytes[disp_at..disp_at + 4].copy_from_slice(&(disp as u32).to_le_bytes());
    }
    Some(())
}

fn immediate(rng: &mut Rng, form: &Form, sizes: Sizes, bytes: &mut Vec<u8>) {
    let n = match form.imm {
        Imm::None => 0,
        Imm::Byte => 1,
        Imm::Full => sizes.op.min(4) as usize,
    };
    bytes.extend_from_slice(&rng.next_u64().to_le_bytes()[..n]);
}

fn moffs_operand(rng: &mut Rng, form: &Form, frame: &mut Frame, p: &Prefixes, sizes: Sizes, bytes: &mut Vec<u8>) -> Option<()> {
    let mode = frame.config.mode;
    let seg_index = segment_of(p, DS);
    let seg = frame.segs[seg_index];
    let len = sizes.width(form.width, mode);
    let (linear, ea) = place(rng, frame, &seg, seg_index, len, sizes.addr, form.writes)?;
    frame.accesses.push(Aim { at: linear, len, write: form.writes, segment: seg_index, seg });
    bytes.extend_from_slice(&ea.to_le_bytes()[..sizes.addr as usize]);
    Some(())
}

/// `movs`, `stos`, `lods` (and `cmps`, `scas`): rSI and rDI where the
/// elements are, rCX a small count if repeated, DF either way.
fn string_operands(rng: &mut Rng, form: &Form, frame: &mut Frame, p: &Prefixes, sizes: Sizes, src: bool, dst: bool) -> Option<()> {
    let mode = frame.config.mode;
    let long = mode == Mode::Long64;
    let len = sizes.width(form.width, mode);
    let count = if p.rep.is_some() { rng.pick(&[0, 1, 1, 2, 3, 4, 5, 8]) } else { 1 };
    let down = rng.one_in(2);
    frame.rflags = frame.rflags & !(1 << 10) | u64::from(down) << 10;
    let span = len * count.max(1);
    let m = mask(sizes.addr);
    let upper = |rng: &mut Rng| if long { rng.next_u64() & !m } else { rng.next_u64() & 0xFFFF_FFFF & !m };
    if p.rep.is_some() {
        frame.regs[RCX] = count | upper(rng);
        frame.pinned |= 1 << RCX;
    }
    let mut mmio = false;
    for (used, reg, seg_index, write) in [(src, RSI, segment_of(p, DS), false), (dst, RDI, ES, form.writes)] {
        if !used {
            continue;
        }
        let seg = frame.segs[seg_index];
        let (linear, ea) = place(rng, frame, &seg, seg_index, span, sizes.addr, write)?;
        mmio |= frame.config.kind(linear) != Kind::Ram;
        if count > 0 {
            frame.accesses.push(Aim { at: linear, len: span, write, segment: seg_index, seg });
        }
        // The first element is the lowest when counting up, the highest
        // when counting down.
        let ea = if down { ea + span - len } else { ea };
        frame.regs[reg] = ea | upper(rng);
        frame.pinned |= 1 << reg;
    }
    mmio.then_some(())
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
