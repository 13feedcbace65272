//@ stage 10
//! The arithmetic against the processor the tests run on: the same
//! instruction, on the same operands and the same incoming flags, run by
//! the emulator (decoded and executed on the fake guest, register forms)
//! and by the host (inline assembly between `popfq` and `pushfq`). The
//! results must be equal, and so must every flag the SDM defines for the
//! instruction, including those it leaves unaffected.
//@ begin 13
//! From stage 13 also `cmpxchg`, and `cmpxchg8b`, which has a memory form
//! only: the host runs it on a variable, the emulator on the fake guest's
//! memory.
//@ end
//!
//! The flags the SDM leaves undefined (AF after `and`, `or`, `xor` and
//! `test`; OF, SF, AF and PF after the bit tests) are compared too, and
//! counted; they must agree on an Intel processor, whose behaviour the
//! emulator copies (AF cleared; the others left as they were), and are
//! only reported on others.
//!
//! Operands are random, half of them near the edges where carries and
//! overflows happen; the incoming status flags are random. Each test runs
//! `RKVM_EMU_CASES` cases per operand size (20,000 by default).
//! `sub`, `sbb` and `cmp` reach the exercise E10.2: their tests are in
//! `e10_2`, with one that gives `flags::sub` operands with bits above the
//! operand size, which the processor never sees.

use super::super::flags::{CF, STATUS, ZF};
use super::super::{Mode, Outcome, Size, emulate};
use super::fake::Fake;
use super::rng::{Rng, cases};
use crate::regs::Reg;
use std::arch::asm;

/// The host's result and RFLAGS for `op a, b` with RFLAGS = `rflags`.
type Host = fn(u64, u64, u64) -> (u64, u64);

/// `insn a, b` on the host, in registers of one size.
macro_rules! binary {
    ($name:ident, $insn:literal, $ty:ty, $class:ident, $modifier:literal) => {
        fn $name(a: u64, b: u64, rflags: u64) -> (u64, u64) {
            let mut a = a as $ty;
            let b = b as $ty;
            let out: u64;
            // SAFETY: the instruction touches only its two registers and
            // RFLAGS, which is saved by pushfq and set by popfq around it
            // (with DF, TF and the system flags clear, as the caller
            // passes them); the stack is used below the stack pointer
            // only between push and pop (no `nostack`, so no red zone).
            unsafe {
                asm!(
                    "push {fin}",
                    "popfq",
                    concat!($insn, " {a", $modifier, "}, {b", $modifier, "}"),
                    "pushfq",
                    "pop {fout}",
                    a = inout($class) a,
                    b = in($class) b,
                    fin = in(reg) rflags,
                    fout = lateout(reg) out,
                );
            }
            (a as u64, out)
        }
    };
}

/// `insn a` on the host.
macro_rules! unary {
    ($name:ident, $insn:literal, $ty:ty, $class:ident, $modifier:literal) => {
        fn $name(a: u64, _b: u64, rflags: u64) -> (u64, u64) {
            let mut a = a as $ty;
            let out: u64;
            // SAFETY: as in `binary!`.
            unsafe {
                asm!(
                    "push {fin}",
                    "popfq",
                    concat!($insn, " {a", $modifier, "}"),
                    "pushfq",
                    "pop {fout}",
                    a = inout($class) a,
                    fin = in(reg) rflags,
                    fout = lateout(reg) out,
                );
            }
            (a as u64, out)
        }
    };
}

/// The host functions of one instruction in every size: `[byte, word,
/// dword, qword]`.
macro_rules! sizes {
    // The bit tests have no byte form.
    (bits, $insn:literal) => {{
        binary!(w, $insn, u16, reg, ":x");
        binary!(d, $insn, u32, reg, ":e");
        binary!(q, $insn, u64, reg, ":r");
        [None, Some(w as Host), Some(d as Host), Some(q as Host)]
    }};
    ($kind:ident, $insn:literal) => {{
        $kind!(b, $insn, u8, reg_byte, "");
        $kind!(w, $insn, u16, reg, ":x");
        $kind!(d, $insn, u32, reg, ":e");
        $kind!(q, $insn, u64, reg, ":r");
        [Some(b as Host), Some(w as Host), Some(d as Host), Some(q as Host)]
    }};
}

pub const SIZES: [Size; 4] = [Size::Byte, Size::Word, Size::Dword, Size::Qword];

/// One instruction to compare: its encoding with ModRM `C1` style
/// operands (`rm` = ECX, `reg` = EAX), the byte opcode and the full one.
pub struct Case {
    pub name: &'static str,
    /// The opcode bytes for a byte operand and for a full one, before the
    /// ModRM byte.
    pub byte_opcode: &'static [u8],
    pub opcode: &'static [u8],
    pub modrm: u8,
    /// The flags the SDM defines for it (set, cleared or unaffected).
    pub defined: u64,
    pub host: [Option<Host>; 4],
}

/// The instruction bytes of `case` in `size`: `66` or `REX.W` for the
/// operand size, then the opcode and ModRM (rm = rCX, reg = rAX).
fn encode(case: &Case, size: Size) -> Vec<u8> {
    let mut bytes = match size {
        Size::Word => vec![0x66],
        Size::Qword => vec![0x48],
        _ => Vec::new(),
    };
    bytes.extend_from_slice(if size == Size::Byte { case.byte_opcode } else { case.opcode });
    bytes.push(case.modrm);
    bytes
}

/// What a comparison found.
#[derive(Debug, Default)]
pub struct Tally {
    pub compared: u64,
    /// Cases whose undefined flags differ from the host's.
    pub undefined_differ: u64,
    pub failures: Vec<String>,
}

/// Whether the host is an Intel processor.
fn intel() -> bool {
    let id = core::arch::x86_64::__cpuid(0);
    (id.ebx, id.edx, id.ecx) == (0x756E_6547, 0x4965_6E69, 0x6C65_746E)
}

/// Compares `case` with the host on `n` random cases per size.
pub fn compare(case: &Case, n: u64, stream: u64) -> Tally {
    let mut r = Rng::new(stream);
    let mut tally = Tally::default();
    for (size, host) in SIZES.iter().zip(case.host) {
        let Some(host) = host else { continue };
        let bytes = encode(case, *size);
        for _ in 0..n {
            let (a, b) = (r.operand(), r.operand());
            let rflags = (r.next() & STATUS) | 0x2;
            let (host_value, host_flags) = host(a, b, rflags);
            let mut fake = Fake::with_regs(&[(Reg::Rcx, a), (Reg::Rax, b)]);
            fake.rflags = rflags;
            let outcome = emulate(&mut fake, &bytes, Mode::Bits64, Size::Qword);
            let value = fake.get(Reg::Rcx);
            // A write of 32 bits zero-extends; `cmp`, `test` and `bt` write
            // nothing.
            let writes = !matches!(case.name, "cmp" | "test" | "bt");
            let expected_upper = if *size == Size::Dword && writes { 0 } else { a & !size.mask() };
            tally.compared += 1;
            let defined = case.defined;
            let undefined = STATUS & !defined;
            if outcome != Outcome::Done
                || value & size.mask() != host_value & size.mask()
                || value & !size.mask() != expected_upper
                || fake.rflags & defined != host_flags & defined
                || fake.rflags & !STATUS != rflags & !STATUS
            {
                tally.failures.push(format!(
                    "{} {size:?} a={a:#x} b={b:#x} rflags={rflags:#x}: emulator {outcome:?} {value:#x} {:#x}, host \
                     {host_value:#x} {:#x}",
                    case.name,
                    fake.rflags & STATUS,
                    host_flags & STATUS
                ));
            } else if fake.rflags & undefined != host_flags & undefined {
                tally.undefined_differ += 1;
            }
        }
    }
    tally
}

/// Runs [`compare`] and fails on any difference.
pub fn check(case: &Case, stream: u64) {
    let tally = compare(case, cases(20_000), stream);
    eprintln!(
        "{} vs the host processor: {} cases, {} with undefined flags different, {} differences",
        case.name,
        tally.compared,
        tally.undefined_differ,
        tally.failures.len()
    );
    let shown: Vec<_> = tally.failures.iter().take(10).collect();
    assert!(tally.failures.is_empty(), "{} differences, the first ones:\n{shown:#?}", tally.failures.len());
    if intel() {
        assert_eq!(tally.undefined_differ, 0, "undefined flags differ from this Intel processor's");
    }
}

const ALL: u64 = STATUS;
/// `and`, `or`, `xor`, `test`: AF undefined.
const LOGIC: u64 = STATUS & !super::super::flags::AF;
/// The bit tests: CF set, ZF unaffected, the others undefined.
const BITS: u64 = CF | ZF;

#[test]
fn add() {
    check(&Case { name: "add", byte_opcode: &[0x00], opcode: &[0x01], modrm: 0xC1, defined: ALL, host: sizes!(binary, "add") }, 10);
}

#[test]
fn adc() {
    check(&Case { name: "adc", byte_opcode: &[0x10], opcode: &[0x11], modrm: 0xC1, defined: ALL, host: sizes!(binary, "adc") }, 11);
}

#[test]
fn or() {
    check(&Case { name: "or", byte_opcode: &[0x08], opcode: &[0x09], modrm: 0xC1, defined: LOGIC, host: sizes!(binary, "or") }, 12);
}

#[test]
fn and() {
    check(&Case { name: "and", byte_opcode: &[0x20], opcode: &[0x21], modrm: 0xC1, defined: LOGIC, host: sizes!(binary, "and") }, 13);
}

#[test]
fn xor() {
    check(&Case { name: "xor", byte_opcode: &[0x30], opcode: &[0x31], modrm: 0xC1, defined: LOGIC, host: sizes!(binary, "xor") }, 14);
}

#[test]
fn test() {
    check(&Case { name: "test", byte_opcode: &[0x84], opcode: &[0x85], modrm: 0xC1, defined: LOGIC, host: sizes!(binary, "test") }, 15);
}

#[test]
fn inc() {
    check(&Case { name: "inc", byte_opcode: &[0xFE], opcode: &[0xFF], modrm: 0xC1, defined: ALL, host: sizes!(unary, "inc") }, 16);
}

#[test]
fn dec() {
    check(&Case { name: "dec", byte_opcode: &[0xFE], opcode: &[0xFF], modrm: 0xC9, defined: ALL, host: sizes!(unary, "dec") }, 17);
}

#[test]
fn neg() {
    check(&Case { name: "neg", byte_opcode: &[0xF6], opcode: &[0xF7], modrm: 0xD9, defined: ALL, host: sizes!(unary, "neg") }, 18);
}

#[test]
fn not() {
    check(&Case { name: "not", byte_opcode: &[0xF6], opcode: &[0xF7], modrm: 0xD1, defined: ALL, host: sizes!(unary, "not") }, 19);
}

#[test]
fn bt() {
    check(&Case { name: "bt", byte_opcode: &[], opcode: &[0x0F, 0xA3], modrm: 0xC1, defined: BITS, host: sizes!(bits, "bt") }, 20);
}

#[test]
fn bts() {
    check(&Case { name: "bts", byte_opcode: &[], opcode: &[0x0F, 0xAB], modrm: 0xC1, defined: BITS, host: sizes!(bits, "bts") }, 21);
}

#[test]
fn btr() {
    check(&Case { name: "btr", byte_opcode: &[], opcode: &[0x0F, 0xB3], modrm: 0xC1, defined: BITS, host: sizes!(bits, "btr") }, 22);
}

#[test]
fn btc() {
    check(&Case { name: "btc", byte_opcode: &[], opcode: &[0x0F, 0xBB], modrm: 0xC1, defined: BITS, host: sizes!(bits, "btc") }, 23);
}

mod e10_2 {
    use super::*;

    #[test]
    fn sub() {
        check(&Case { name: "sub", byte_opcode: &[0x28], opcode: &[0x29], modrm: 0xC1, defined: ALL, host: sizes!(binary, "sub") }, 30);
    }

    #[test]
    fn sbb() {
        check(&Case { name: "sbb", byte_opcode: &[0x18], opcode: &[0x19], modrm: 0xC1, defined: ALL, host: sizes!(binary, "sbb") }, 31);
    }

    #[test]
    fn cmp() {
        check(&Case { name: "cmp", byte_opcode: &[0x38], opcode: &[0x39], modrm: 0xC1, defined: ALL, host: sizes!(binary, "cmp") }, 32);
    }

    /// `flags::sub` (through `flags::alu`, as the executor calls it) with
    /// bits above the operand size in both operands: the processor never
    /// sees them, so the value and the flags are the host's for the low
    /// bits alone.
    #[test]
    fn bits_above_the_operand_size_change_nothing() {
        use crate::emulate::Alu;
        use crate::emulate::flags::{self, AF, Arith, PF, SF};
        // AL = 0 minus 1 is 0xFF with a borrow, whatever is above AL.
        assert_eq!(flags::sub(Size::Byte, 0x100, 1, false), Arith { value: 0xFF, flags: CF | SF | AF | PF });
        assert_eq!(flags::sub(Size::Word, 0x1_0005, 0xFFFF_0005, false), Arith { value: 0, flags: ZF | PF });
        assert_eq!(flags::sub(Size::Dword, 0xFFFF_FFFF_0000_0000, 0, true), Arith { value: 0xFFFF_FFFF, flags: CF | SF | AF | PF });
        let mut r = Rng::new(33);
        let mut compared = 0;
        for (op, hosts) in [(Alu::Sub, sizes!(binary, "sub")), (Alu::Sbb, sizes!(binary, "sbb")), (Alu::Cmp, sizes!(binary, "cmp"))] {
            for (size, host) in SIZES.into_iter().zip(hosts) {
                let Some(host) = host.filter(|_| size != Size::Qword) else { continue };
                for _ in 0..cases(20_000) {
                    let mut above = || if r.one_in(2) { !size.mask() } else { r.next() & !size.mask() };
                    let (high_a, high_b) = (above(), above());
                    let (a, b) = ((r.operand() & size.mask()) | high_a, (r.operand() & size.mask()) | high_b);
                    let rflags = (r.next() & STATUS) | 0x2;
                    let (host_value, host_flags) = host(a, b, rflags);
                    let emulated = flags::alu(op, size, a, b, rflags);
                    // `cmp` leaves its operand: only its flags count.
                    let value_agrees = op == Alu::Cmp || emulated.value == host_value & size.mask();
                    assert!(
                        value_agrees && emulated.flags == host_flags & STATUS,
                        "{op:?} {size:?} a={a:#x} b={b:#x} rflags={rflags:#x}: emulator {:#x} {:#x}, host {host_value:#x} {:#x}",
                        emulated.value,
                        emulated.flags,
                        host_flags & STATUS
                    );
                    compared += 1;
                }
            }
        }
        eprintln!("sub, sbb and cmp with bits above the operand size vs the host processor: {compared} cases, 0 differences");
    }
}
//@ begin 13

/// `cmpxchg rcx, rdx` (and its smaller sizes) on the host: RAX, RCX and
/// RFLAGS after it.
fn host_cmpxchg(size: Size, rax: u64, rcx: u64, rdx: u64, rflags: u64) -> (u64, u64, u64) {
    let (mut a, mut c) = (rax, rcx);
    let out: u64;
    macro_rules! run {
        ($insn:literal) => {
            // SAFETY: the instruction touches only RAX, RCX (read from RDX)
            // and RFLAGS, which pushfq/popfq save and set around it, as in
            // `binary!`.
            unsafe {
                asm!(
                    "push {fin}",
                    "popfq",
                    $insn,
                    "pushfq",
                    "pop {fout}",
                    inout("rax") a,
                    inout("rcx") c,
                    in("rdx") rdx,
                    fin = in(reg) rflags,
                    fout = lateout(reg) out,
                )
            }
        };
    }
    match size {
        Size::Byte => run!("cmpxchg cl, dl"),
        Size::Word => run!("cmpxchg cx, dx"),
        Size::Dword => run!("cmpxchg ecx, edx"),
        Size::Qword => run!("cmpxchg rcx, rdx"),
    }
    (a, c, out)
}

#[test]
fn cmpxchg() {
    let mut r = Rng::new(13);
    let mut compared = 0;
    for size in SIZES {
        let bytes: Vec<u8> = match size {
            Size::Byte => vec![0x0F, 0xB0, 0xD1],
            Size::Word => vec![0x66, 0x0F, 0xB1, 0xD1],
            Size::Dword => vec![0x0F, 0xB1, 0xD1],
            Size::Qword => vec![0x48, 0x0F, 0xB1, 0xD1],
        };
        for n in 0..cases(20_000) {
            let (rcx, rdx) = (r.next(), r.next());
            // Half the cases equal in the operand size, so both ways are
            // taken.
            let rax = if n % 2 == 0 { (r.next() & !size.mask()) | (rcx & size.mask()) } else { r.operand() };
            let rflags = (r.next() & STATUS) | 0x2;
            let (host_rax, host_rcx, host_flags) = host_cmpxchg(size, rax, rcx, rdx, rflags);
            // The host runs with IF set: only the status flags compare.
            let host = (host_rax, host_rcx, host_flags & STATUS);
            let mut fake = Fake::with_regs(&[(Reg::Rax, rax), (Reg::Rcx, rcx), (Reg::Rdx, rdx)]);
            fake.rflags = rflags;
            let outcome = emulate(&mut fake, &bytes, Mode::Bits64, Size::Qword);
            assert_eq!(fake.rflags & !STATUS, rflags & !STATUS, "only the status flags change");
            let emulated = (fake.get(Reg::Rax), fake.get(Reg::Rcx), fake.rflags & STATUS);
            assert_eq!(
                (outcome, emulated),
                (Outcome::Done, host),
                "cmpxchg {size:?} rax={rax:#x} rcx={rcx:#x} rdx={rdx:#x} rflags={rflags:#x}: (rax, rcx, status flags)"
            );
            compared += 1;
        }
    }
    eprintln!("cmpxchg vs the host processor: {compared} cases, 0 differences");
}

/// `lock cmpxchg8b` on the host, on a variable holding `memory`: RAX, RDX,
/// the variable and RFLAGS after it.
fn host_cmpxchg8b(rax: u64, rdx: u64, rcx: u64, rbx: u64, memory: u64, rflags: u64) -> (u64, u64, u64, u64) {
    let (mut a, mut d, mut m) = (rax, rdx, memory);
    let out: u64;
    // SAFETY: the instruction touches RAX, RDX (both outputs), RCX and RBX
    // (read only), the 8 bytes of `m`, which the pointer points to, and
    // RFLAGS, which pushfq/popfq save and set around it, as in `binary!`.
    // RBX, which the compiler keeps for itself, is swapped with a scratch
    // register around the instruction and so given back unchanged. Every
    // other operand has a register named here: one left to the compiler
    // could be RBX itself, and the swap would then change it under the
    // instruction (inlined in an optimised build, this test failed so).
    unsafe {
        asm!(
            "xchg rdi, rbx",
            "push r8",
            "popfq",
            "lock cmpxchg8b qword ptr [rsi]",
            "pushfq",
            "pop r9",
            "xchg rdi, rbx",
            inout("rdi") rbx => _,
            in("rsi") core::ptr::addr_of_mut!(m),
            in("r8") rflags,
            out("r9") out,
            inout("rax") a,
            inout("rdx") d,
            in("rcx") rcx,
        );
    }
    (a, d, m, out)
}

/// `cmpxchg8b` has a memory form only: the host runs it on a variable,
/// the emulator on the fake guest's memory at RSI (`lock cmpxchg8b
/// [rsi]`).
#[test]
fn cmpxchg8b() {
    let mut r = Rng::new(14);
    let bytes = [0xF0, 0x0F, 0xC7, 0x0E];
    let address = 0x2000;
    let mut compared = 0;
    for n in 0..cases(20_000) {
        let (rax, rdx, rcx, rbx) = (r.next(), r.next(), r.next(), r.next());
        // Half the cases equal to EDX:EAX, some of the others in one half
        // only, so that both ways are taken and both halves count.
        let memory = match n % 4 {
            0 | 1 => (rdx << 32) | (rax & 0xFFFF_FFFF),
            2 => (r.next() << 32) | (rax & 0xFFFF_FFFF),
            _ => r.operand(),
        };
        let rflags = (r.next() & STATUS) | 0x2;
        let (host_rax, host_rdx, host_memory, host_flags) = host_cmpxchg8b(rax, rdx, rcx, rbx, memory, rflags);
        // The host runs with IF set: only the status flags compare.
        let host = (host_rax, host_rdx, host_memory, host_flags & STATUS);
        let regs = [(Reg::Rax, rax), (Reg::Rdx, rdx), (Reg::Rcx, rcx), (Reg::Rbx, rbx), (Reg::Rsi, address)];
        let mut fake = Fake::with_regs(&regs);
        fake.rflags = rflags;
        fake.poke(address, &memory.to_le_bytes());
        let outcome = emulate(&mut fake, &bytes, Mode::Bits64, Size::Qword);
        assert_eq!(fake.rflags & !STATUS, rflags & !STATUS, "only the status flags change");
        assert_eq!((fake.get(Reg::Rcx), fake.get(Reg::Rbx)), (rcx, rbx), "ECX:EBX is only read");
        let emulated = (fake.get(Reg::Rax), fake.get(Reg::Rdx), fake.peek_u64(address, 8), fake.rflags & STATUS);
        assert_eq!(
            (outcome, emulated),
            (Outcome::Done, host),
            "cmpxchg8b rax={rax:#x} rdx={rdx:#x} rcx={rcx:#x} rbx={rbx:#x} memory={memory:#x} rflags={rflags:#x}: \
             (rax, rdx, memory, status flags)"
        );
        compared += 1;
    }
    eprintln!("cmpxchg8b vs the host processor: {compared} cases, 0 differences");
}
//@ end
