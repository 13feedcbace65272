//@ stage 10
//! The executor: a decoded [`Instruction`] carried out on a [`Guest`].
//!
//! An instruction reads what it needs first (at most one memory read),
//! computes, writes memory last (at most one memory write), and only then
//! are its register, RFLAGS and RIP changes made, all at once. So an
//! access that stops the emulator (an MMIO read to hand to userspace, a
//! fault) stops it before anything of the instruction is visible: running
//! the instruction again later repeats it from its start, as 2006 did
//! after userspace answered an MMIO read.
//!
//! A repeated string instruction (`rep movs`, `rep stos`, `rep lods`) is a
//! loop of such iterations, each one complete or not begun, exactly the
//! points at which the processor itself may be interrupted (SDM Vol. 2B,
//! REP, "interrupted"): after each, rCX, rSI and rDI count what was done
//! and RIP stays on the instruction until rCX reaches 0. One run stops
//! after an iteration whose write was MMIO, before an iteration whose read
//! is, or after [`MAX_ITERATIONS`]; 2006 did one iteration per run.

use super::decode::{Base, DecodeError, Instruction, MemOperand, Op, Operand, RegOperand, decode};
use super::flags::{self, CF, DF, STATUS};
use super::{Access, Exception, Guest, Mode, Outcome, Segment, Size};
use crate::regs::Reg;

/// The most iterations of a repeated string instruction one run of
/// [`emulate`] does, so that a huge rCX cannot keep the module busy: the
/// guest goes on with the rest.
pub const MAX_ITERATIONS: u64 = 1024;

// ANCHOR: emulate
/// Decodes the instruction at the start of `bytes` (the caller reads up to
/// 15 bytes at CS:RIP) and carries it out on `guest`, in `mode`, with a
/// stack of `stack` addresses (SS.B: 32 bits if set, 16 if not; ignored in
/// 64-bit mode, where it is 64).
pub fn emulate(guest: &mut dyn Guest, bytes: &[u8], mode: Mode, stack: Size) -> Outcome {
    match decode(bytes, mode) {
        Ok(insn) => execute(guest, &insn, mode, stack),
        Err(DecodeError::Invalid) => Outcome::Exception(Exception::UD),
        Err(DecodeError::TooLong) => Outcome::Exception(Exception::GP0),
        Err(e) => Outcome::Unhandled(e),
    }
}

/// Carries out `insn`, decoded in `mode`, as [`emulate`] does.
pub fn execute(guest: &mut dyn Guest, insn: &Instruction, mode: Mode, stack: Size) -> Outcome {
    let stack = match (mode, stack) {
        (Mode::Bits64, _) => Size::Qword,
        (_, Size::Dword | Size::Qword) => Size::Dword,
        _ => Size::Word,
    };
    let mut next_rip = guest.rip().wrapping_add(insn.len as u64);
    if mode != Mode::Bits64 {
        next_rip &= 0xFFFF_FFFF;
    }
    let mut run = Run { guest, stack, next_rip, posted: false };
    match insn.op {
        Op::Movs | Op::Stos | Op::Lods => run.string(insn),
        //@ begin 13
        Op::Invlpg => Outcome::Unhandled(DecodeError::Unsupported),
        //@ end
        _ => match run.step(insn) {
            Ok(effects) => {
                run.commit(&effects);
                run.guest.set_rip(next_rip);
                if run.posted { Outcome::MmioWrite } else { Outcome::Done }
            }
            Err(stop) => stop.outcome(),
        },
    }
}
// ANCHOR_END: emulate

// ANCHOR: address
/// The effective address of `mem`: `base + index * scale + disp` modulo 2
/// to the power of the address size (SDM Vol. 1, 3.7.5), with rIP the
/// address of the next instruction, `next_rip`.
pub fn effective_address(guest: &dyn Guest, mem: &MemOperand, next_rip: u64) -> u64 {
    address(mem, next_rip, |r| guest.reg(r))
}

fn address(mem: &MemOperand, next_rip: u64, reg: impl Fn(Reg) -> u64) -> u64 {
    let base = match mem.base {
        Base::None => 0,
        Base::Reg(r) => reg(r),
        Base::Rip => next_rip,
    };
    let index = mem.index.map_or(0, |r| reg(r).wrapping_mul(u64::from(mem.scale)));
    base.wrapping_add(index).wrapping_add(mem.disp) & mem.address_size.mask()
}
// ANCHOR_END: address

// ANCHOR: registers
/// The value of a register operand: bits 7:0, 15:8 (AH to BH), 15:0, 31:0
/// or 63:0 of the register.
pub fn read_reg(guest: &dyn Guest, r: RegOperand) -> u64 {
    let shift = if r.high { 8 } else { 0 };
    (guest.reg(r.reg) >> shift) & r.size.mask()
}

/// The register `old` after a write of `value` to operand `r`: a byte or
/// word write leaves the other bits, a doubleword write zero-extends to 64
/// bits (SDM Vol. 1, 3.4.1.1: "32-bit operands generate a 32-bit result,
/// zero-extended to a 64-bit result"). Outside 64-bit mode bits 63:32
/// cannot be seen, and are cleared just the same.
pub const fn merge_reg(old: u64, r: RegOperand, value: u64) -> u64 {
    match (r.size, r.high) {
        (Size::Byte, true) => (old & !0xFF00) | (value & 0xFF) << 8,
        (Size::Byte, false) => (old & !0xFF) | (value & 0xFF),
        (Size::Word, _) => (old & !0xFFFF) | (value & 0xFFFF),
        (Size::Dword, _) => value & 0xFFFF_FFFF,
        (Size::Qword, _) => value,
    }
}
// ANCHOR_END: registers

/// Why an instruction stopped before its end.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// A read is MMIO.
    MmioRead,
    Fault(Exception),
}

impl Stop {
    fn outcome(self) -> Outcome {
        match self {
            Stop::MmioRead => Outcome::MmioRead,
            Stop::Fault(e) => Outcome::Exception(e),
        }
    }
}

/// The register and RFLAGS changes of one instruction (or iteration), made
/// only once it is complete. At most four registers change: rSI, rDI, rCX
/// and rAX for `lods`.
#[derive(Clone, Copy, Debug, Default)]
struct Effects {
    regs: [Option<(RegOperand, u64)>; 4],
    rflags: Option<u64>,
}

impl Effects {
    fn set(&mut self, r: RegOperand, value: u64) {
        if let Some(slot) = self.regs.iter_mut().find(|s| s.is_none()) {
            *slot = Some((r, value));
        }
    }
}

/// Where an operand lives, its address computed once.
#[derive(Clone, Copy, Debug)]
enum Place {
    Reg(RegOperand),
    Mem { segment: Segment, offset: u64, size: Size },
    Imm(u64),
    None,
}

/// One run of the executor.
struct Run<'a> {
    guest: &'a mut dyn Guest,
    /// The stack's address size.
    stack: Size,
    next_rip: u64,
    /// A write was recorded as MMIO: stop after this instruction or
    /// iteration.
    posted: bool,
}

impl Run<'_> {
    fn read_mem(&mut self, segment: Segment, offset: u64, size: Size) -> Result<u64, Stop> {
        let mut bytes = [0u8; 8];
        let Some(data) = bytes.get_mut(..size.bytes()) else { return Ok(0) };
        match self.guest.read(segment, offset, data) {
            Access::Done => Ok(u64::from_le_bytes(bytes)),
            Access::Mmio => Err(Stop::MmioRead),
            Access::Fault(e) => Err(Stop::Fault(e)),
        }
    }

    fn write_mem(&mut self, segment: Segment, offset: u64, size: Size, value: u64) -> Result<(), Stop> {
        let bytes = value.to_le_bytes();
        let Some(data) = bytes.get(..size.bytes()) else { return Ok(()) };
        match self.guest.write(segment, offset, data) {
            Access::Done => Ok(()),
            Access::Mmio => {
                self.posted = true;
                Ok(())
            }
            Access::Fault(e) => Err(Stop::Fault(e)),
        }
    }

    fn place(&self, operand: &Operand) -> Place {
        match *operand {
            Operand::None => Place::None,
            Operand::Reg(r) => Place::Reg(r),
            Operand::Imm(v) => Place::Imm(v),
            Operand::Mem(m) => {
                Place::Mem { segment: m.segment, offset: effective_address(&*self.guest, &m, self.next_rip), size: m.size }
            }
        }
    }

    fn get(&mut self, place: Place) -> Result<u64, Stop> {
        match place {
            Place::None => Ok(0),
            Place::Imm(v) => Ok(v),
            Place::Reg(r) => Ok(read_reg(&*self.guest, r)),
            Place::Mem { segment, offset, size } => self.read_mem(segment, offset, size),
        }
    }

    /// Stores `value` at `place`: memory now, a register at the commit.
    fn put(&mut self, place: Place, value: u64, fx: &mut Effects) -> Result<(), Stop> {
        match place {
            Place::Reg(r) => fx.set(r, value),
            Place::Mem { segment, offset, size } => self.write_mem(segment, offset, size, value)?,
            Place::Imm(_) | Place::None => {}
        }
        Ok(())
    }

    fn commit(&mut self, fx: &Effects) {
        for &(r, value) in fx.regs.iter().flatten() {
            let old = self.guest.reg(r.reg);
            self.guest.set_reg(r.reg, merge_reg(old, r, value));
        }
        if let Some(rflags) = fx.rflags {
            self.guest.set_rflags(rflags);
        }
    }

    // ANCHOR: step
    /// Every instruction but the string ones.
    fn step(&mut self, insn: &Instruction) -> Result<Effects, Stop> {
        let mut fx = Effects::default();
        let rflags = self.guest.rflags();
        let size = insn.size;
        match insn.op {
            Op::Mov | Op::Movzx | Op::Movsx => {
                let src = self.place(&insn.src);
                let mut value = self.get(src)?;
                if let (Op::Movsx, Operand::Mem(MemOperand { size: from, .. }) | Operand::Reg(RegOperand { size: from, .. })) =
                    (insn.op, insn.src)
                {
                    value = from.sign_extend(value) & size.mask();
                }
                let dst = self.place(&insn.dst);
                self.put(dst, value, &mut fx)?;
            }
            Op::Alu(op) => {
                let dst = self.place(&insn.dst);
                let a = self.get(dst)?;
                let src = self.place(&insn.src);
                let b = self.get(src)?;
                let result = flags::alu(op, size, a, b, rflags);
                if op != super::Alu::Cmp {
                    self.put(dst, result.value, &mut fx)?;
                }
                fx.rflags = Some(flags::merge(rflags, result.flags, STATUS));
            }
            Op::Test => {
                let dst = self.place(&insn.dst);
                let a = self.get(dst)?;
                let src = self.place(&insn.src);
                let b = self.get(src)?;
                fx.rflags = Some(flags::merge(rflags, flags::logic(size, a & b).flags, STATUS));
            }
            Op::Inc | Op::Dec | Op::Neg | Op::Not => {
                let dst = self.place(&insn.dst);
                let a = self.get(dst)?;
                let (result, mask) = match insn.op {
                    Op::Inc => (flags::inc(size, a), STATUS & !CF),
                    Op::Dec => (flags::dec(size, a), STATUS & !CF),
                    Op::Neg => (flags::neg(size, a), STATUS),
                    _ => (flags::Arith { value: !a & size.mask(), flags: 0 }, 0),
                };
                self.put(dst, result.value, &mut fx)?;
                fx.rflags = Some(flags::merge(rflags, result.flags, mask));
            }
            Op::Xchg => {
                let dst = self.place(&insn.dst);
                let a = self.get(dst)?;
                let src = self.place(&insn.src);
                let b = self.get(src)?;
                self.put(dst, b, &mut fx)?;
                self.put(src, a, &mut fx)?;
            }
            //@ begin 13
            Op::Cmpxchg => {
                // SDM Vol. 2A, CMPXCHG: the flags of `cmp rAX, dst`. If
                // the comparison fails, the processor writes a memory
                // destination back with its own value ("DEST := TEMP"), so
                // that the access is always a locked read-modify-write; a
                // register destination it leaves alone (on Intel
                // processors, a 32-bit one keeps bits 63:32, which a write
                // would clear), and the accumulator takes the value.
                let dst = self.place(&insn.dst);
                let old = self.get(dst)?;
                let src = self.place(&insn.src);
                let new = self.get(src)?;
                let acc = RegOperand { reg: Reg::Rax, size, high: false };
                let result = flags::alu(super::Alu::Cmp, size, read_reg(&*self.guest, acc), old, rflags);
                let equal = result.flags & flags::ZF != 0;
                if equal {
                    self.put(dst, new, &mut fx)?;
                } else {
                    if let Place::Mem { .. } = dst {
                        self.put(dst, old, &mut fx)?;
                    }
                    fx.set(acc, old);
                }
                fx.rflags = Some(flags::merge(rflags, result.flags, STATUS));
            }
            Op::Cmpxchg8b => {
                // SDM Vol. 2A, CMPXCHG8B/CMPXCHG16B: EDX:EAX against the
                // 8 bytes of memory, ZF the only flag changed. As with
                // cmpxchg, the memory is written either way ("DEST :=
                // TEMP64" when they differ); then EDX and EAX take its two
                // halves, 32-bit writes which clear bits 63:32 of RDX and
                // RAX (SDM Vol. 1, 3.4.1.1). When they are equal, no
                // register changes.
                let dst = self.place(&insn.dst);
                let old = self.get(dst)?;
                let half = |reg| RegOperand { reg, size: Size::Dword, high: false };
                let value = |reg| read_reg(&*self.guest, half(reg));
                let (expected, new) = (value(Reg::Rdx) << 32 | value(Reg::Rax), value(Reg::Rcx) << 32 | value(Reg::Rbx));
                let equal = old == expected;
                if equal {
                    self.put(dst, new, &mut fx)?;
                } else {
                    self.put(dst, old, &mut fx)?;
                    fx.set(half(Reg::Rax), old & 0xFFFF_FFFF);
                    fx.set(half(Reg::Rdx), old >> 32);
                }
                fx.rflags = Some(flags::merge(rflags, if equal { flags::ZF } else { 0 }, flags::ZF));
            }
            //@ end
            Op::Push => {
                // The source's address uses rSP before the push (SDM Vol. 2B,
                // PUSH).
                let src = self.place(&insn.src);
                let value = self.get(src)?;
                let sp = RegOperand { reg: Reg::Rsp, size: self.stack, high: false };
                let top = read_reg(&*self.guest, sp).wrapping_sub(size.bytes() as u64) & self.stack.mask();
                self.write_mem(Segment::Ss, top, size, value)?;
                fx.set(sp, top);
            }
            Op::Pop => {
                // A destination addressed with rSP uses its value after the
                // pop (SDM Vol. 2B, POP); a pop into rSP keeps the value read.
                let sp = RegOperand { reg: Reg::Rsp, size: self.stack, high: false };
                let rsp = self.guest.reg(Reg::Rsp);
                let top = read_reg(&*self.guest, sp);
                let value = self.read_mem(Segment::Ss, top, size)?;
                let after = top.wrapping_add(size.bytes() as u64) & self.stack.mask();
                fx.set(sp, after);
                match insn.dst {
                    Operand::Mem(m) => {
                        let rsp = merge_reg(rsp, sp, after);
                        let guest = &*self.guest;
                        let offset = address(&m, self.next_rip, |r| if r == Reg::Rsp { rsp } else { guest.reg(r) });
                        self.write_mem(m.segment, offset, size, value)?;
                    }
                    Operand::Reg(r) => fx.set(r, value),
                    Operand::Imm(_) | Operand::None => {}
                }
            }
            Op::Bit(op) => {
                let (dst, offset) = self.bit_operand(insn)?;
                let value = self.get(dst)?;
                let (value, old) = flags::bit(op, size, value, offset);
                if op != super::BitOp::Bt {
                    self.put(dst, value, &mut fx)?;
                }
                fx.rflags = Some(flags::merge(rflags, if old { CF } else { 0 }, CF));
            }
            Op::Movs | Op::Stos | Op::Lods => {}
            //@ begin 13
            Op::Invlpg => {}
            //@ end
        }
        Ok(fx)
    }
    // ANCHOR_END: step

    // ANCHOR: bit_operand
    /// The operand of a bit test and the bit number in it. An immediate bit
    /// offset, and any offset on a register, counts modulo the operand's
    /// width; a register offset on a memory operand is
    /// [`bit_in_memory`](Self::bit_in_memory)'s.
    fn bit_operand(&mut self, insn: &Instruction) -> Result<(Place, u64), Stop> {
        let src = self.place(&insn.src);
        let offset = self.get(src)?;
        match (self.place(&insn.dst), insn.dst, insn.src) {
            (Place::Mem { segment, offset: base, size }, Operand::Mem(m), Operand::Reg(_)) => {
                let (offset, bit) = Self::bit_in_memory(base, offset, size, m.address_size);
                Ok((Place::Mem { segment, offset, size }, bit))
            }
            (dst, _, _) => Ok((dst, offset % u64::from(insn.size.bits()))),
        }
    }

    /// Bit `offset` of the bit string whose bit 0 is bit 0 of the byte at
    /// `base`, for a bit test of operand size `size` addressed with
    /// `address_size` bits: the offset of the operand that holds the bit,
    /// and the bit's number in it. `offset` is the bit offset register's
    /// value, `size` bits wide.
    fn bit_in_memory(base: u64, offset: u64, size: Size, address_size: Size) -> (u64, u64) {
        //@ exercise E10.3
        //@ instruction: Say which operand of `size` holds bit `offset` of
        //@+ the bit string at `base`, and which bit of it. Intel SDM
        //@+ Vol. 2A, BT, says how the processor reads a register bit
        //@+ offset on a memory bit base (its range for each operand size,
        //@+ Table 3-2, and the notation `Bit(BitBase, BitOffset)` the page
        //@+ refers to) and which bytes it then accesses; BTS, BTR and BTC
        //@+ do the same. The operand returned is those bytes, `size` of
        //@+ them; the bit number is from 0 to width - 1; and the offset is
        //@+ an effective address like any other, of `address_size` bits
        //@+ (Vol. 1, 3.7.5).
        //@ hint: Read Table 3-2 and the BT page's note on the bytes the
        //@+ processor accesses: the offset is a signed number of `size`
        //@+ bits, so a register value may name a bit before `base`, and
        //@+ the operand moves in steps of its own size, not of one byte.
        //@+ The `e10_3` tests in `emulate/tests/exec.rs` say, for each
        //@+ case, which bytes must change and which accesses a device must
        //@+ see.
        //@ hint: The bit is in the operand `offset DIV width` operands
        //@+ from `base`, at bit `offset MOD width`, with the manual's DIV
        //@+ (rounding towards minus infinity) and MOD (never negative): -1
        //@+ is the top bit of the operand just before `base`. The
        //@+ notation's DIV 8 and MOD 8 name the same bit, but the processor
        //@+ accesses the whole operand. `Size::sign_extend` makes the
        //@+ offset an `i64`, whose `div_euclid` and `rem_euclid` round that
        //@+ way; the address arithmetic wraps, then is cut to
        //@+ `address_size`.
        //@ hint: `let signed = size.sign_extend(offset) as i64;` and
        //@+ `let width = i64::from(size.bits());`; the operand's offset is
        //@+ `base.wrapping_add(signed.div_euclid(width).wrapping_mul(size
        //@+ .bytes() as i64) as u64) & address_size.mask()`, the bit
        //@+ `signed.rem_euclid(width) as u64`.
        let signed = size.sign_extend(offset) as i64;
        let width = i64::from(size.bits());
        let operands = signed.div_euclid(width);
        let address = base.wrapping_add(operands.wrapping_mul(size.bytes() as i64) as u64) & address_size.mask();
        (address, signed.rem_euclid(width) as u64)
        //@ end
    }
    // ANCHOR_END: bit_operand

    // ANCHOR: string
    /// `movs`, `stos` and `lods`, repeated or not (SDM Vol. 2B, MOVS, STOS,
    /// LODS and REP). rCX, rSI and rDI are used and updated in the address
    /// size; DF = 1 makes rSI and rDI go down.
    fn string(&mut self, insn: &Instruction) -> Outcome {
        let a = insn.address_size;
        let size = insn.size;
        let counter = RegOperand { reg: Reg::Rcx, size: a, high: false };
        let si = RegOperand { reg: Reg::Rsi, size: a, high: false };
        let di = RegOperand { reg: Reg::Rdi, size: a, high: false };
        let ax = RegOperand { reg: Reg::Rax, size, high: false };
        let source = match insn.src {
            Operand::Mem(m) => m.segment,
            _ => Segment::Ds,
        };
        let mut iterations = 0;
        loop {
            let count = read_reg(&*self.guest, counter);
            if insn.rep.is_some() && count == 0 {
                self.guest.set_rip(self.next_rip);
                return Outcome::Done;
            }
            let step = if self.guest.rflags() & DF != 0 { (size.bytes() as u64).wrapping_neg() } else { size.bytes() as u64 };
            let mut fx = Effects::default();
            let done = match insn.op {
                Op::Movs => self.movs(source, si, di, size, step, &mut fx),
                Op::Stos => self.stos(ax, di, size, step, &mut fx),
                _ => self.lods(source, ax, si, size, step, &mut fx),
            };
            if let Err(stop) = done {
                return stop.outcome();
            }
            if insn.rep.is_some() {
                fx.set(counter, count.wrapping_sub(1));
            }
            self.commit(&fx);
            if insn.rep.is_none() || count == 1 {
                self.guest.set_rip(self.next_rip);
                return if self.posted { Outcome::MmioWrite } else { Outcome::Done };
            }
            if self.posted {
                return Outcome::MmioWrite;
            }
            iterations += 1;
            if iterations >= MAX_ITERATIONS {
                return Outcome::Again;
            }
        }
    }

    fn movs(&mut self, source: Segment, si: RegOperand, di: RegOperand, size: Size, step: u64, fx: &mut Effects) -> Result<(), Stop> {
        let from = read_reg(&*self.guest, si);
        let to = read_reg(&*self.guest, di);
        let value = self.read_mem(source, from, size)?;
        self.write_mem(Segment::Es, to, size, value)?;
        fx.set(si, from.wrapping_add(step));
        fx.set(di, to.wrapping_add(step));
        Ok(())
    }

    fn stos(&mut self, ax: RegOperand, di: RegOperand, size: Size, step: u64, fx: &mut Effects) -> Result<(), Stop> {
        let to = read_reg(&*self.guest, di);
        let value = read_reg(&*self.guest, ax);
        self.write_mem(Segment::Es, to, size, value)?;
        fx.set(di, to.wrapping_add(step));
        Ok(())
    }

    fn lods(&mut self, source: Segment, ax: RegOperand, si: RegOperand, size: Size, step: u64, fx: &mut Effects) -> Result<(), Stop> {
        let from = read_reg(&*self.guest, si);
        let value = self.read_mem(source, from, size)?;
        fx.set(ax, value);
        fx.set(si, from.wrapping_add(step));
        Ok(())
    }
    // ANCHOR_END: string
}
