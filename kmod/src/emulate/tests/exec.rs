//@ stage 10
//! Each instruction form on the [fake](super::fake) guest: registers and
//! memory before and after, every flag, RIP, and the outcome; string
//! instructions with and without `rep`, both directions, each address
//! size; MMIO reads and writes, alone and in the middle of `rep movs`;
//! faults. No test here has a SIB byte, runs `sub`, `sbb` or `cmp`, or
//! runs a bit test with a register bit offset on memory, except those in
//! `e10_1`, `e10_2` and `e10_3`.

use super::super::flags::{AF, CF, DF, OF, PF, SF, STATUS, ZF};
use super::super::{DecodeError, Exception, MAX_ITERATIONS, Mode, Outcome, Segment, Size, emulate};
use super::fake::{FAULTY, Fake, MMIO};
use crate::regs::Reg::{self, *};

const RAM: u64 = 0x2000;

fn run(fake: &mut Fake, bytes: &[u8], mode: Mode) -> Outcome {
    emulate(fake, bytes, mode, Size::Dword)
}

fn run64(fake: &mut Fake, bytes: &[u8]) -> Outcome {
    run(fake, bytes, Mode::Bits64)
}

/// Runs `bytes` in 64-bit mode with RBX = RAM and `before` there; returns
/// the guest after.
fn at_rbx(bytes: &[u8], regs: &[(Reg, u64)], before: &[u8]) -> Fake {
    let mut fake = Fake::with_regs(regs);
    fake.regs[Rbx as usize] = RAM;
    fake.poke(RAM, before);
    assert_eq!(run64(&mut fake, bytes), Outcome::Done, "{bytes:02X?}");
    assert_eq!(fake.rip, 0x1000 + bytes.len() as u64, "{bytes:02X?}");
    fake
}

#[test]
fn mov_to_memory_in_every_size() {
    let rax: u64 = 0x1122_3344_5566_7788;
    let cases: &[(&[u8], &[u8])] = &[
        (&[0x88, 0x03], &[0x88]),                      // mov [rbx], al
        (&[0x88, 0x23], &[0x77]),                      // mov [rbx], ah
        (&[0x40, 0x88, 0x23], &[0x08]),                // mov [rbx], spl
        (&[0x44, 0x88, 0x03], &[0x99]),                // mov [rbx], r8b
        (&[0x66, 0x89, 0x03], &[0x88, 0x77]),          // mov [rbx], ax
        (&[0x89, 0x03], &[0x88, 0x77, 0x66, 0x55]),    // mov [rbx], eax
        (&[0x48, 0x89, 0x03], &rax.to_le_bytes()),     // mov [rbx], rax
        (&[0x4C, 0x89, 0x43, 0x08], &[0; 0]),          // mov [rbx+8], r8: checked below
    ];
    for &(bytes, expected) in cases {
        let fake = at_rbx(bytes, &[(Rax, rax), (Rsp, 0x0102_0304_0506_0708), (R8, 0xAABB_CCDD_EEFF_0099)], &[0; 16]);
        assert_eq!(fake.peek(RAM, expected.len()), expected, "{bytes:02X?}");
        assert_eq!(fake.peek(RAM + expected.len() as u64, 1), [0], "{bytes:02X?} wrote too much");
    }
    let fake = at_rbx(&[0x4C, 0x89, 0x43, 0x08], &[(R8, 0xAABB_CCDD_EEFF_0099)], &[]);
    assert_eq!(fake.peek_u64(RAM + 8, 8), 0xAABB_CCDD_EEFF_0099);
}

#[test]
fn mov_from_memory_merges_or_zero_extends() {
    let memory = 0x8877_6655_4433_2211u64.to_le_bytes();
    let rax = 0xFFFF_FFFF_FFFF_FFFF;
    let cases: &[(&[u8], Reg, u64)] = &[
        (&[0x8A, 0x03], Rax, 0xFFFF_FFFF_FFFF_FF11),       // mov al, [rbx]
        (&[0x8A, 0x23], Rax, 0xFFFF_FFFF_FFFF_11FF),       // mov ah, [rbx]
        (&[0x40, 0x8A, 0x23], Rsp, 0x11),                  // mov spl, [rbx]
        (&[0x66, 0x8B, 0x03], Rax, 0xFFFF_FFFF_FFFF_2211), // mov ax, [rbx]
        (&[0x8B, 0x03], Rax, 0x4433_2211),                 // mov eax, [rbx]: zero-extends
        (&[0x48, 0x8B, 0x03], Rax, 0x8877_6655_4433_2211), // mov rax, [rbx]
        (&[0x4C, 0x8B, 0x7B, 0x01], R15, 0x0088_7766_5544_3322), // mov r15, [rbx+1]
    ];
    for &(bytes, reg, expected) in cases {
        let fake = at_rbx(bytes, &[(Rax, rax)], &memory);
        assert_eq!(fake.get(reg), expected, "{bytes:02X?}");
        assert_eq!(fake.rflags, 0x2, "mov changes no flag");
    }
}

#[test]
fn mov_between_registers_with_high_bytes() {
    let mut fake = Fake::with_regs(&[(Rax, 0x1234), (Rsp, 0xAB00_00CD)]);
    assert_eq!(run64(&mut fake, &[0x88, 0xE0]), Outcome::Done); // mov al, ah
    assert_eq!(fake.get(Rax), 0x1212);
    assert_eq!(run64(&mut fake, &[0x40, 0x88, 0xE0]), Outcome::Done); // mov al, spl
    assert_eq!(fake.get(Rax), 0x12CD);
    assert_eq!(run(&mut fake, &[0x88, 0xC4], Mode::Bits32), Outcome::Done); // mov ah, al
    assert_eq!(fake.get(Rax), 0xCDCD);
}

#[test]
fn mov_immediates() {
    let fake = at_rbx(&[0xC6, 0x03, 0xAB], &[], &[0; 8]);
    assert_eq!(fake.peek_u64(RAM, 8), 0xAB);
    let fake = at_rbx(&[0x66, 0xC7, 0x43, 0x02, 0x34, 0x12], &[], &[0; 8]);
    assert_eq!(fake.peek_u64(RAM, 8), 0x1234_0000);
    let fake = at_rbx(&[0xC7, 0x03, 0x78, 0x56, 0x34, 0x12], &[], &[0xEE; 8]);
    assert_eq!(fake.peek_u64(RAM, 8), 0xEEEE_EEEE_1234_5678);
    // REX.W: the 32-bit immediate is sign-extended to 64 bits.
    let fake = at_rbx(&[0x48, 0xC7, 0x03, 0x00, 0x00, 0x00, 0x80], &[], &[0; 8]);
    assert_eq!(fake.peek_u64(RAM, 8), 0xFFFF_FFFF_8000_0000);
}

#[test]
fn mov_moffs_in_each_address_size() {
    // 64-bit: an 8-byte address.
    let mut fake = Fake::new();
    fake.poke(0x1_0000_2000, &0xCAFE_F00Du32.to_le_bytes());
    assert_eq!(run64(&mut fake, &[0xA1, 0x00, 0x20, 0x00, 0x00, 0x01, 0, 0, 0]), Outcome::Done);
    assert_eq!((fake.get(Rax), fake.rip), (0xCAFE_F00D, 0x1009));
    // 48 A3: mov [moffs64], rax, with FS's base.
    fake.bases[Segment::Fs as usize] = 0x10_0000;
    fake.regs[Rax as usize] = 0x0102_0304_0506_0708;
    assert_eq!(run64(&mut fake, &[0x64, 0x48, 0xA3, 0x10, 0, 0, 0, 0, 0, 0, 0]), Outcome::Done);
    assert_eq!(fake.peek_u64(0x10_0010, 8), 0x0102_0304_0506_0708);
    // 67 A0: a 4-byte address in 64-bit mode.
    fake.poke(0x3000, &[0x5A]);
    assert_eq!(run64(&mut fake, &[0x67, 0xA0, 0x00, 0x30, 0x00, 0x00]), Outcome::Done);
    assert_eq!(fake.get(Rax) & 0xFF, 0x5A);
    // 16-bit mode: a 2-byte address in DS.
    let mut fake = Fake::new();
    fake.bases[Segment::Ds as usize] = 0x1_0000;
    fake.regs[Rax as usize] = 0xFFFF_BEEF;
    assert_eq!(run(&mut fake, &[0xA3, 0x34, 0x12], Mode::Bits16), Outcome::Done);
    assert_eq!(fake.peek(0x1_1234, 3), [0xEF, 0xBE, 0]);
    assert_eq!(fake.rip, 0x1003);
}

#[test]
fn rip_relative_addresses_from_the_next_instruction() {
    let mut fake = Fake::new();
    fake.poke(0x1000 + 6 + 0x10, &[0x11, 0x22, 0x33, 0x44]);
    assert_eq!(run64(&mut fake, &[0x8B, 0x05, 0x10, 0x00, 0x00, 0x00]), Outcome::Done);
    assert_eq!(fake.get(Rax), 0x4433_2211);
    // A negative displacement.
    fake.poke(0x1000 + 6 - 0x20, &[0x99]);
    assert_eq!(fake.rip, 0x1006);
    fake.rip = 0x1000;
    assert_eq!(run64(&mut fake, &[0x8A, 0x0D, 0xE0, 0xFF, 0xFF, 0xFF]), Outcome::Done);
    assert_eq!(fake.get(Rcx) & 0xFF, 0x99);
}

#[test]
fn sixteen_bit_addressing_forms() {
    let mut fake = Fake::with_regs(&[(Rbx, 0x100), (Rbp, 0x200), (Rsi, 0x10), (Rdi, 0x20)]);
    fake.bases[Segment::Ds as usize] = 0x1_0000;
    fake.bases[Segment::Ss as usize] = 0x2_0000;
    fake.poke(0x1_0110, &[1, 0]); // DS:[bx+si]
    fake.poke(0x2_0210, &[2, 0]); // SS:[bp+si]
    fake.poke(0x2_01FE, &[3, 0]); // SS:[bp-2]
    fake.poke(0x1_1234, &[4, 0]); // DS:[0x1234]
    fake.poke(0x1_0120, &[5, 0]); // DS:[bx+di]
    fake.poke(0x1_0000, &[6, 0]); // DS:[bx+si+0xFEF0], wrapped
    let cases: &[(&[u8], u64)] =
        &[(&[0x8B, 0x00], 1), (&[0x8B, 0x02], 2), (&[0x8B, 0x46, 0xFE], 3), (&[0x8B, 0x06, 0x34, 0x12], 4), (&[0x8B, 0x01], 5), (&[0x8B, 0x80, 0xF0, 0xFE], 6)];
    for &(bytes, value) in cases {
        fake.rip = 0x1000;
        assert_eq!(run(&mut fake, bytes, Mode::Bits16), Outcome::Done);
        assert_eq!(fake.get(Rax) & 0xFFFF, value, "{bytes:02X?}");
    }
    // 67 in 32-bit mode selects 16-bit addressing too; a 32-bit operand.
    fake.poke(0x1_0110, &[1, 2, 3, 4]);
    assert_eq!(run(&mut fake, &[0x67, 0x8B, 0x00], Mode::Bits32), Outcome::Done);
    assert_eq!(fake.get(Rax), 0x0403_0201);
}

#[test]
fn thirty_two_bit_addresses_wrap() {
    let mut fake = Fake::with_regs(&[(Rbx, 0xFFFF_FFFE)]);
    fake.poke(2, &[0x42]);
    assert_eq!(run(&mut fake, &[0x8A, 0x43, 0x04], Mode::Bits32), Outcome::Done);
    assert_eq!(fake.get(Rax), 0x42);
    // 67 in 64-bit mode: [ebx+4], wrapped at 4 GiB, upper bits of RBX ignored.
    let mut fake = Fake::with_regs(&[(Rbx, 0x1234_FFFF_FFFE)]);
    fake.poke(2, &[0x43]);
    assert_eq!(run64(&mut fake, &[0x67, 0x8A, 0x43, 0x04]), Outcome::Done);
    assert_eq!(fake.get(Rax), 0x43);
}

#[test]
fn movzx_and_movsx() {
    let cases: &[(&[u8], u64)] = &[
        (&[0x0F, 0xB6, 0x03], 0x80),                        // movzx eax, byte [rbx]
        (&[0x0F, 0xB7, 0x03], 0xFF80),                      // movzx eax, word [rbx]
        (&[0x0F, 0xBE, 0x03], 0xFFFF_FF80),                 // movsx eax, byte [rbx]
        (&[0x48, 0x0F, 0xBE, 0x03], 0xFFFF_FFFF_FFFF_FF80), // movsx rax, byte [rbx]
        (&[0x48, 0x0F, 0xBF, 0x03], 0xFFFF_FFFF_FFFF_FF80), // movsx rax, word [rbx]
        (&[0x66, 0x0F, 0xBE, 0x03], 0x5555_5555_5555_FF80), // movsx ax, byte [rbx]
        (&[0x66, 0x0F, 0xB6, 0x03], 0x5555_5555_5555_0080), // movzx ax, byte [rbx]
    ];
    for &(bytes, expected) in cases {
        let fake = at_rbx(bytes, &[(Rax, 0x5555_5555_5555_5555)], &[0x80, 0xFF]);
        assert_eq!(fake.get(Rax), expected, "{bytes:02X?}");
    }
    let fake = at_rbx(&[0x0F, 0xBE, 0x03], &[], &[0x7F]);
    assert_eq!(fake.get(Rax), 0x7F);
    // From a high byte register: movsx ecx, ah.
    let mut fake = Fake::with_regs(&[(Rax, 0x9000)]);
    assert_eq!(run64(&mut fake, &[0x0F, 0xBE, 0xCC]), Outcome::Done);
    assert_eq!(fake.get(Rcx), 0xFFFF_FF90);
}

/// `op [rbx], src` on `a` in memory: the memory after and the flags.
fn alu_memory(bytes: &[u8], a: u64, size: usize, regs: &[(Reg, u64)], rflags: u64) -> (u64, u64) {
    let mut fake = Fake::with_regs(regs);
    fake.regs[Rbx as usize] = RAM;
    fake.rflags = rflags;
    fake.poke(RAM, &a.to_le_bytes()[..size]);
    assert_eq!(run64(&mut fake, bytes), Outcome::Done, "{bytes:02X?}");
    assert_eq!(fake.rip, 0x1000 + bytes.len() as u64);
    (fake.peek_u64(RAM, size), fake.rflags)
}

#[test]
fn add_in_each_encoding() {
    // 00 /r, 01 /r: add [rbx], reg.
    assert_eq!(alu_memory(&[0x00, 0x03], 0xFF, 1, &[(Rax, 1)], 0x2), (0, 0x2 | CF | ZF | AF | PF));
    assert_eq!(alu_memory(&[0x66, 0x01, 0x03], 0x7FFF, 2, &[(Rax, 1)], 0x2), (0x8000, 0x2 | OF | SF | AF | PF));
    assert_eq!(alu_memory(&[0x01, 0x03], 1, 4, &[(Rax, 2)], 0x2 | STATUS), (3, 0x2 | PF));
    assert_eq!(alu_memory(&[0x48, 0x01, 0x03], u64::MAX, 8, &[(Rax, 2)], 0x2), (1, 0x2 | CF | AF));
    // 02 /r, 03 /r: add reg, [rbx].
    let fake = at_rbx(&[0x02, 0x23], &[(Rax, 0x7F00)], &[1]);
    assert_eq!((fake.get(Rax), fake.rflags), (0x8000, 0x2 | OF | SF | AF));
    let fake = at_rbx(&[0x03, 0x03], &[(Rax, 0xFFFF_FFFF_0000_0001)], &[1, 0, 0, 0]);
    assert_eq!(fake.get(Rax), 2, "a 32-bit result zero-extends");
    // 04 ib, 05 iz: add al, imm8; add rax, imm32 sign-extended.
    let mut fake = Fake::with_regs(&[(Rax, 0x1FF)]);
    assert_eq!(run64(&mut fake, &[0x04, 0x01]), Outcome::Done);
    assert_eq!((fake.get(Rax), fake.rflags & CF), (0x100, CF));
    let mut fake = Fake::with_regs(&[(Rax, 5)]);
    assert_eq!(run64(&mut fake, &[0x48, 0x05, 0xFF, 0xFF, 0xFF, 0xFF]), Outcome::Done);
    assert_eq!(fake.get(Rax), 4);
    // 80 /0 ib, 81 /0 iz, 83 /0 ib (sign-extended).
    assert_eq!(alu_memory(&[0x80, 0x03, 0x10], 0xF0, 1, &[], 0x2).0, 0);
    assert_eq!(alu_memory(&[0x81, 0x03, 0x00, 0x00, 0x01, 0x00], 1, 4, &[], 0x2).0, 0x1_0001);
    assert_eq!(alu_memory(&[0x66, 0x81, 0x03, 0x01, 0x80], 1, 2, &[], 0x2).0, 0x8002);
    assert_eq!(alu_memory(&[0x48, 0x83, 0x03, 0xFF], 0, 8, &[], 0x2).0, u64::MAX);
    assert_eq!(alu_memory(&[0x83, 0x43, 0x00, 0x80], 0x100, 4, &[], 0x2).0, 0x80);
}

#[test]
fn or_adc_and_xor() {
    assert_eq!(alu_memory(&[0x08, 0x03], 0x0F, 1, &[(Rax, 0xF0)], 0x2), (0xFF, 0x2 | SF | PF));
    assert_eq!(alu_memory(&[0x0B, 0x03], 0, 4, &[], 0x2 | CF | OF | AF), (0, 0x2 | ZF | PF)); // or eax, [rbx]
    // adc: the carry comes in.
    assert_eq!(alu_memory(&[0x10, 0x03], 0xFE, 1, &[(Rax, 1)], 0x2 | CF), (0, 0x2 | CF | ZF | AF | PF));
    assert_eq!(alu_memory(&[0x10, 0x03], 0xFE, 1, &[(Rax, 1)], 0x2), (0xFF, 0x2 | SF | PF));
    assert_eq!(alu_memory(&[0x83, 0x13, 0x00], 0x7FFF_FFFF, 4, &[], 0x2 | CF), (0x8000_0000, 0x2 | OF | SF | AF | PF));
    assert_eq!(alu_memory(&[0x20, 0x03], 0xF0, 1, &[(Rax, 0x3C)], 0x2 | CF | OF | AF), (0x30, 0x2 | PF));
    assert_eq!(alu_memory(&[0x81, 0x23, 0, 0, 0, 0x80], 0x8000_0001, 4, &[], 0x2), (0x8000_0000, 0x2 | SF | PF));
    assert_eq!(alu_memory(&[0x30, 0x03], 0xAA, 1, &[(Rax, 0xAA)], 0x2), (0, 0x2 | ZF | PF));
    assert_eq!(alu_memory(&[0x48, 0x31, 0x03], 1, 8, &[(Rax, u64::MAX)], 0x2), (u64::MAX - 1, 0x2 | SF));
    // 82 is 80 outside 64-bit mode, and #UD in it.
    let mut fake = Fake::with_regs(&[(Rax, 0x0F)]);
    assert_eq!(run(&mut fake, &[0x82, 0xC8, 0xF0], Mode::Bits32), Outcome::Done); // or al, 0xF0
    assert_eq!(fake.get(Rax), 0xFF);
    assert_eq!(run64(&mut fake, &[0x82, 0xC8, 0xF0]), Outcome::Exception(Exception::UD));
}

#[test]
fn test_sets_flags_and_writes_nothing() {
    let cases: &[(&[u8], u64)] = &[
        (&[0x84, 0x03], 0x2 | ZF | PF),                   // test [rbx], al: 0x0F & 0xF0
        (&[0x85, 0x03], 0x2 | SF | PF),                   // test [rbx], eax
        (&[0xF6, 0x03, 0x08], 0x2),                       // test byte [rbx], 8
        (&[0xF7, 0x03, 0x00, 0x00, 0x00, 0x80], 0x2 | SF | PF), // test dword [rbx], 0x80000000
        (&[0x48, 0xF7, 0x03, 0xFF, 0xFF, 0xFF, 0xFF], 0x2 | SF | PF), // imm32 sign-extended
    ];
    for &(bytes, flags) in cases {
        let memory = [0x0F, 0x00, 0x00, 0x80, 0, 0, 0, 0x80];
        let fake = at_rbx(bytes, &[(Rax, 0x8000_00F0)], &memory);
        assert_eq!(fake.rflags, flags, "{bytes:02X?}");
        assert_eq!(fake.peek(RAM, 8), memory);
        assert!(fake.log.iter().all(|l| !l.write));
    }
    let mut fake = Fake::with_regs(&[(Rax, 0x80)]);
    fake.rflags = 0x2 | CF | OF | AF;
    assert_eq!(run64(&mut fake, &[0xA8, 0x80]), Outcome::Done);
    assert_eq!(fake.rflags, 0x2 | SF);
    assert_eq!(run64(&mut fake, &[0x48, 0xA9, 0x00, 0x00, 0x00, 0x00]), Outcome::Done);
    assert_eq!(fake.rflags, 0x2 | ZF | PF);
}

#[test]
fn inc_and_dec_keep_cf() {
    assert_eq!(alu_memory(&[0xFE, 0x03], 0xFF, 1, &[], 0x2 | CF), (0, 0x2 | CF | ZF | AF | PF));
    assert_eq!(alu_memory(&[0xFE, 0x03], 0x7F, 1, &[], 0x2), (0x80, 0x2 | OF | SF | AF));
    assert_eq!(alu_memory(&[0x66, 0xFF, 0x03], 0x7FFF, 2, &[], 0x2), (0x8000, 0x2 | OF | SF | AF | PF));
    assert_eq!(alu_memory(&[0xFF, 0x03], 0xFFFF_FFFF, 4, &[], 0x2), (0, 0x2 | ZF | AF | PF));
    assert_eq!(alu_memory(&[0xFE, 0x0B], 0x80, 1, &[], 0x2 | CF), (0x7F, 0x2 | CF | OF | AF));
    assert_eq!(alu_memory(&[0x48, 0xFF, 0x0B], 0, 8, &[], 0x2), (u64::MAX, 0x2 | SF | AF | PF));
    assert_eq!(alu_memory(&[0xFF, 0x0B], 0x11, 4, &[], 0x2 | CF), (0x10, 0x2 | CF));
    // Registers: inc ah; dec r9w.
    let mut fake = Fake::with_regs(&[(Rax, 0xFF00), (R9, 0x1_0000)]);
    assert_eq!(run64(&mut fake, &[0xFE, 0xC4]), Outcome::Done);
    assert_eq!(fake.get(Rax), 0);
    assert_eq!(run64(&mut fake, &[0x66, 0x41, 0xFF, 0xC9]), Outcome::Done);
    assert_eq!(fake.get(R9), 0x1_FFFF);
}

#[test]
fn neg_and_not() {
    assert_eq!(alu_memory(&[0xF6, 0x1B], 0, 1, &[], 0x2 | CF), (0, 0x2 | ZF | PF));
    assert_eq!(alu_memory(&[0xF6, 0x1B], 1, 1, &[], 0x2), (0xFF, 0x2 | CF | SF | AF | PF));
    assert_eq!(alu_memory(&[0xF7, 0x1B], 0x8000_0000, 4, &[], 0x2), (0x8000_0000, 0x2 | CF | OF | SF | PF));
    assert_eq!(alu_memory(&[0x48, 0xF7, 0x1B], 0x10, 8, &[], 0x2), (0xFFFF_FFFF_FFFF_FFF0, 0x2 | CF | SF | PF));
    // not changes no flag.
    assert_eq!(alu_memory(&[0xF6, 0x13], 0x0F, 1, &[], 0x2 | STATUS), (0xF0, 0x2 | STATUS));
    assert_eq!(alu_memory(&[0x66, 0xF7, 0x13], 0x00FF, 2, &[], 0x2), (0xFF00, 0x2));
}

#[test]
fn xchg_with_memory_and_registers() {
    let fake = at_rbx(&[0x87, 0x03], &[(Rax, 0xFFFF_FFFF_1111_1111)], &[0x22, 0x22, 0x22, 0x22, 0x33]);
    assert_eq!((fake.get(Rax), fake.peek(RAM, 5)), (0x2222_2222, vec![0x11, 0x11, 0x11, 0x11, 0x33]));
    let fake = at_rbx(&[0x86, 0x23], &[(Rax, 0xAB00)], &[0xCD]);
    assert_eq!((fake.get(Rax), fake.peek(RAM, 1)), (0xCD00, vec![0xAB]));
    // xchg al, ah: both halves of one register.
    let mut fake = Fake::with_regs(&[(Rax, 0x1234)]);
    assert_eq!(run64(&mut fake, &[0x86, 0xE0]), Outcome::Done);
    assert_eq!(fake.get(Rax), 0x3412);
    // xchg rcx, r10.
    let mut fake = Fake::with_regs(&[(Rcx, 1), (R10, 2)]);
    assert_eq!(run64(&mut fake, &[0x4C, 0x87, 0xD1]), Outcome::Done);
    assert_eq!((fake.get(Rcx), fake.get(R10)), (2, 1));
}

#[test]
fn push_memory() {
    // 64-bit: push qword [rbx]; with 66, a word.
    let mut fake = Fake::with_regs(&[(Rbx, RAM), (Rsp, 0x8000)]);
    fake.poke(RAM, &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(run64(&mut fake, &[0xFF, 0x33]), Outcome::Done);
    assert_eq!((fake.get(Rsp), fake.peek_u64(0x7FF8, 8)), (0x7FF8, 0x0102_0304_0506_0708));
    assert_eq!(run64(&mut fake, &[0x66, 0xFF, 0x33]), Outcome::Done);
    assert_eq!((fake.get(Rsp), fake.peek_u64(0x7FF6, 2)), (0x7FF6, 0x0708));
    assert_eq!(fake.log.last().map(|l| l.segment), Some(Segment::Ss));
    // 32-bit code, 16-bit stack: SP wraps, the upper half of ESP stays.
    let mut fake = Fake::with_regs(&[(Rbx, RAM), (Rsp, 0xABCD_0002)]);
    fake.bases[Segment::Ss as usize] = 0x10_0000;
    fake.poke(RAM, &[1, 2, 3, 4]);
    assert_eq!(emulate(&mut fake, &[0xFF, 0x33], Mode::Bits32, Size::Word), Outcome::Done);
    assert_eq!(fake.get(Rsp), 0xABCD_FFFE);
    assert_eq!(fake.peek(0x10_FFFE, 4), [1, 2, 3, 4]);
    // push [rbp]: the address is taken before RSP moves (rBP here).
    let mut fake = Fake::with_regs(&[(Rbp, 0x8000), (Rsp, 0x8000)]);
    fake.poke(0x8000, &[9, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(run64(&mut fake, &[0xFF, 0x75, 0x00]), Outcome::Done);
    assert_eq!(fake.peek_u64(0x7FF8, 8), 9);
}

#[test]
fn pop_memory_and_registers() {
    let mut fake = Fake::with_regs(&[(Rbx, RAM), (Rsp, 0x7FF8)]);
    fake.poke(0x7FF8, &0xAABB_CCDD_EEFF_0011u64.to_le_bytes());
    assert_eq!(run64(&mut fake, &[0x8F, 0x03]), Outcome::Done);
    assert_eq!((fake.get(Rsp), fake.peek_u64(RAM, 8)), (0x8000, 0xAABB_CCDD_EEFF_0011));
    // 8F C0: pop rax; 8F C4: pop rsp keeps the value read.
    fake.regs[Rsp as usize] = 0x7FF8;
    assert_eq!(run64(&mut fake, &[0x8F, 0xC0]), Outcome::Done);
    assert_eq!((fake.get(Rax), fake.get(Rsp)), (0xAABB_CCDD_EEFF_0011, 0x8000));
    fake.regs[Rsp as usize] = 0x7FF8;
    assert_eq!(run64(&mut fake, &[0x8F, 0xC4]), Outcome::Done);
    assert_eq!(fake.get(Rsp), 0xAABB_CCDD_EEFF_0011);
    // 16-bit code: pop word [bx].
    let mut fake = Fake::with_regs(&[(Rbx, 0x10), (Rsp, 0xFFFE)]);
    fake.poke(0xFFFE, &[0x34, 0x12]);
    assert_eq!(emulate(&mut fake, &[0x8F, 0x07], Mode::Bits16, Size::Word), Outcome::Done);
    assert_eq!((fake.get(Rsp), fake.peek(0x10, 2)), (0, vec![0x34, 0x12]));
}

#[test]
fn bit_tests_on_memory_with_an_immediate_stay_in_the_operand() {
    // The immediate form takes the bit number modulo the width, no further.
    let fake = at_rbx(&[0x0F, 0xBA, 0x2B, 0x45], &[], &[0x20, 0, 0, 0, 0xFF]); // bts dword [rbx], 0x45
    assert_eq!((fake.rflags, fake.peek(RAM, 5)), (0x2 | CF, vec![0x20, 0, 0, 0, 0xFF]));
    let fake = at_rbx(&[0x0F, 0xBA, 0x3B, 0x01], &[], &[0xFF]); // btc dword [rbx], 1
    assert_eq!((fake.rflags, fake.peek(RAM, 1)), (0x2 | CF, vec![0xFD]));
    let fake = at_rbx(&[0x0F, 0xBA, 0x33, 0x07], &[], &[0x00]); // btr dword [rbx], 7
    assert_eq!((fake.rflags, fake.peek(RAM, 1)), (0x2, vec![0x00]));
    // bts word [rbx], 0xFF: bit 15 of the word itself; the immediate is
    // not sign-extended.
    let fake = at_rbx(&[0x66, 0x0F, 0xBA, 0x2B, 0xFF], &[], &[0, 0, 0]);
    assert_eq!((fake.rflags, fake.peek(RAM, 3)), (0x2, vec![0, 0x80, 0]));
}

#[test]
fn bit_tests_on_registers_and_the_other_flags() {
    // bt ecx, eax: the offset modulo 32; ZF, OF, SF, AF and PF kept.
    for rflags in [0x2, 0x2 | ZF | OF | SF | AF | PF] {
        let mut fake = Fake::with_regs(&[(Rcx, 1 << 3), (Rax, 35)]);
        fake.rflags = rflags | CF;
        assert_eq!(run64(&mut fake, &[0x0F, 0xA3, 0xC1]), Outcome::Done);
        assert_eq!(fake.rflags, rflags | CF);
        fake.regs[Rax as usize] = 36;
        assert_eq!(run64(&mut fake, &[0x0F, 0xA3, 0xC1]), Outcome::Done);
        assert_eq!(fake.rflags, rflags);
    }
    // bts r8, 63.
    let mut fake = Fake::new();
    assert_eq!(run64(&mut fake, &[0x49, 0x0F, 0xBA, 0xE8, 0x3F]), Outcome::Done);
    assert_eq!(fake.get(R8), 1 << 63);
}

#[test]
fn lock_is_accepted_only_where_the_processor_takes_it() {
    let fake = at_rbx(&[0xF0, 0x01, 0x03], &[(Rax, 1)], &[1]);
    assert_eq!(fake.peek(RAM, 1), [2]);
    at_rbx(&[0xF0, 0x0F, 0xBA, 0x2B, 0x00], &[], &[0]); // lock bts dword [rbx], 0
    at_rbx(&[0xF0, 0x87, 0x03], &[], &[0]);
    for bytes in [&[0xF0, 0x01, 0xC3][..], &[0xF0, 0x8B, 0x03], &[0xF0, 0x0F, 0xA3, 0x03], &[0xF0, 0x85, 0x03], &[0xF0, 0xFF, 0x33]] {
        let mut fake = Fake::with_regs(&[(Rbx, RAM)]);
        assert_eq!(run64(&mut fake, bytes), Outcome::Exception(Exception::UD), "{bytes:02X?}");
        assert_eq!(fake.rip, 0x1000);
    }
}

#[test]
fn what_is_not_an_instruction() {
    let mut fake = Fake::new();
    assert_eq!(run64(&mut fake, &[0x90]), Outcome::Unhandled(DecodeError::Unsupported));
    assert_eq!(run64(&mut fake, &[0x0F, 0x0B]), Outcome::Unhandled(DecodeError::Unsupported));
    assert_eq!(run64(&mut fake, &[0x8B]), Outcome::Unhandled(DecodeError::Truncated));
    assert_eq!(run64(&mut fake, &[0xC7, 0x03, 0x00]), Outcome::Unhandled(DecodeError::Truncated));
    // Fifteen bytes are fine, sixteen are #GP.
    let mut bytes = vec![0x66; 13];
    bytes.extend_from_slice(&[0x01, 0xC0]);
    assert_eq!(run64(&mut fake, &bytes), Outcome::Done);
    let mut bytes = vec![0x66; 14];
    bytes.extend_from_slice(&[0x01, 0xC0]);
    fake.rip = 0x1000;
    assert_eq!(run64(&mut fake, &bytes), Outcome::Exception(Exception::GP0));
    assert_eq!(fake.rip, 0x1000);
}

#[test]
fn rip_wraps_at_4_gib_outside_64_bit_mode() {
    let mut fake = Fake::new();
    fake.rip = 0xFFFF_FFFF;
    assert_eq!(run(&mut fake, &[0x01, 0xC0], Mode::Bits32), Outcome::Done);
    assert_eq!(fake.rip, 1);
}

#[test]
fn faults_change_nothing() {
    for bytes in [&[0x8B, 0x03][..], &[0x01, 0x03], &[0x89, 0x03], &[0xFF, 0x03], &[0x87, 0x03], &[0x0F, 0xBA, 0x2B, 0x07]] {
        let mut fake = Fake::with_regs(&[(Rbx, FAULTY), (Rax, 7)]);
        fake.rflags = 0x2 | ZF;
        let before = fake.clone();
        assert_eq!(run64(&mut fake, bytes), Outcome::Exception(Exception { vector: 14, error_code: fake_code(bytes) }));
        assert_eq!((fake.regs, fake.rip, fake.rflags), (before.regs, before.rip, before.rflags), "{bytes:02X?}");
    }
    // push: the stack faults.
    let mut fake = Fake::with_regs(&[(Rbx, RAM), (Rsp, FAULTY + 8)]);
    assert_eq!(run64(&mut fake, &[0xFF, 0x33]), Outcome::Exception(Exception { vector: 14, error_code: Some(2) }));
    assert_eq!(fake.get(Rsp), FAULTY + 8);
}

/// The fake's #PF error code: 2 for a write, 0 for a read (the first
/// access that faults is the read of a read-modify-write).
fn fake_code(bytes: &[u8]) -> Option<u32> {
    Some(if bytes.first() == Some(&0x89) { 2 } else { 0 })
}

// ANCHOR: string_tests
#[test]
fn rep_stos_forward_and_backward() {
    // rep stosb, 5 bytes up from RDI.
    let mut fake = Fake::with_regs(&[(Rax, 0xAB), (Rcx, 5), (Rdi, RAM)]);
    assert_eq!(run64(&mut fake, &[0xF3, 0xAA]), Outcome::Done);
    assert_eq!(fake.peek(RAM, 6), [0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0]);
    assert_eq!((fake.get(Rcx), fake.get(Rdi), fake.rip), (0, RAM + 5, 0x1002));
    // DF = 1: rep stosd down, 3 dwords ending at RDI.
    let mut fake = Fake::with_regs(&[(Rax, 0x1122_3344), (Rcx, 3), (Rdi, RAM + 8)]);
    fake.rflags = 0x2 | DF;
    assert_eq!(run64(&mut fake, &[0xF3, 0xAB]), Outcome::Done);
    assert_eq!(fake.peek_u64(RAM, 8), 0x1122_3344_1122_3344);
    assert_eq!(fake.peek_u64(RAM + 8, 4), 0x1122_3344);
    assert_eq!((fake.get(Rcx), fake.get(Rdi)), (0, RAM - 4));
    assert!(fake.log.iter().map(|l| l.segment).all(|s| s == Segment::Es));
    // repne (F2) repeats stos as rep does.
    let mut fake = Fake::with_regs(&[(Rax, 1), (Rcx, 2), (Rdi, RAM)]);
    assert_eq!(run64(&mut fake, &[0xF2, 0x48, 0xAB]), Outcome::Done);
    assert_eq!((fake.peek_u64(RAM + 8, 8), fake.get(Rcx)), (1, 0));
}

#[test]
fn rep_with_a_zero_count_does_nothing_but_move_on() {
    let mut fake = Fake::with_regs(&[(Rcx, 0x1_0000_0000), (Rdi, RAM)]);
    // 67: ECX counts, and it is 0.
    assert_eq!(run64(&mut fake, &[0x67, 0xF3, 0xAA]), Outcome::Done);
    assert!(fake.log.is_empty());
    assert_eq!((fake.get(Rcx), fake.rip), (0x1_0000_0000, 0x1003));
}

#[test]
fn string_registers_live_in_the_address_size() {
    // 16-bit addressing: SI and DI wrap at 64 KiB, CX counts, the upper
    // halves stay.
    let mut fake = Fake::with_regs(&[(Rcx, 0xABCD_0002), (Rsi, 0x1234_FFFF), (Rdi, 0x5678_0000)]);
    fake.bases[Segment::Ds as usize] = 0x1_0000;
    fake.bases[Segment::Es as usize] = 0x3_0000;
    fake.poke(0x1_FFFF, &[0x11]);
    fake.poke(0x1_0000, &[0x22]);
    assert_eq!(run(&mut fake, &[0xF3, 0xA4], Mode::Bits16), Outcome::Done);
    assert_eq!(fake.peek(0x3_0000, 2), [0x11, 0x22]);
    assert_eq!((fake.get(Rcx), fake.get(Rsi), fake.get(Rdi)), (0xABCD_0000, 0x1234_0001, 0x5678_0002));
    // 32-bit addressing in 64-bit mode: the registers are written as
    // 32-bit registers, zero-extended.
    let mut fake = Fake::with_regs(&[(Rcx, 0xFFFF_0000_0000_0001), (Rsi, 0x1_0000_2000), (Rdi, 0x2_0000_3000)]);
    fake.poke(0x2000, &[0x5A, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(run64(&mut fake, &[0x67, 0xF3, 0x48, 0xA5]), Outcome::Done);
    assert_eq!(fake.peek(0x3000, 1), [0x5A]);
    assert_eq!((fake.get(Rcx), fake.get(Rsi), fake.get(Rdi)), (0, 0x2008, 0x3008));
}

#[test]
fn movs_and_lods_without_rep_leave_rcx() {
    let mut fake = Fake::with_regs(&[(Rcx, 9), (Rsi, RAM), (Rdi, RAM + 0x100)]);
    fake.poke(RAM, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(run64(&mut fake, &[0x48, 0xA5]), Outcome::Done);
    assert_eq!((fake.peek_u64(RAM + 0x100, 8), fake.get(Rcx)), (0x0807_0605_0403_0201, 9));
    assert_eq!((fake.get(Rsi), fake.get(Rdi)), (RAM + 8, RAM + 0x108));
    // lodsw with DF = 1, source in ES by override.
    let mut fake = Fake::with_regs(&[(Rax, 0xFFFF_FFFF), (Rsi, 0x10)]);
    fake.bases[Segment::Es as usize] = 0x5000;
    fake.poke(0x5010, &[0x34, 0x12]);
    fake.rflags = 0x2 | DF;
    assert_eq!(run(&mut fake, &[0x26, 0x66, 0xAD], Mode::Bits32), Outcome::Done);
    assert_eq!((fake.get(Rax), fake.get(Rsi)), (0xFFFF_1234, 0xE));
    assert_eq!(fake.log[0].segment, Segment::Es);
    // rep lodsb: each iteration loads AL; the last one stays.
    let mut fake = Fake::with_regs(&[(Rcx, 3), (Rsi, RAM)]);
    fake.poke(RAM, &[7, 8, 9]);
    assert_eq!(run64(&mut fake, &[0xF3, 0xAC]), Outcome::Done);
    assert_eq!((fake.get(Rax), fake.get(Rsi), fake.get(Rcx)), (9, RAM + 3, 0));
}

#[test]
fn long_rep_stops_between_iterations() {
    let count = MAX_ITERATIONS + 10;
    let mut fake = Fake::with_regs(&[(Rax, 0xEE), (Rcx, count), (Rdi, RAM)]);
    assert_eq!(run64(&mut fake, &[0xF3, 0xAA]), Outcome::Again);
    assert_eq!((fake.get(Rcx), fake.get(Rdi), fake.rip), (10, RAM + MAX_ITERATIONS, 0x1000));
    assert_eq!(run64(&mut fake, &[0xF3, 0xAA]), Outcome::Done);
    assert_eq!((fake.get(Rcx), fake.get(Rdi), fake.rip), (0, RAM + count, 0x1002));
    assert_eq!(fake.peek(RAM, count as usize + 1).iter().filter(|&&b| b == 0xEE).count() as u64, count);
}
// ANCHOR_END: string_tests

// ANCHOR: mmio_tests
#[test]
fn mmio_read_leaves_and_resumes_with_the_data() {
    let mut fake = Fake::with_regs(&[(Rbx, MMIO + 0x30), (Rax, 0xFFFF_FFFF_FFFF_FFFF)]);
    assert_eq!(run64(&mut fake, &[0x8B, 0x43, 0x10]), Outcome::MmioRead);
    assert_eq!((fake.get(Rax), fake.rip), (u64::MAX, 0x1000));
    let exit = fake.exit.clone().expect("an exit");
    assert_eq!((exit.write, exit.address, exit.len), (false, MMIO + 0x40, 4));
    fake.answer_read(&[0x78, 0x56, 0x34, 0x12]);
    assert_eq!(run64(&mut fake, &[0x8B, 0x43, 0x10]), Outcome::Done);
    assert_eq!((fake.get(Rax), fake.rip), (0x1234_5678, 0x1003));
}

#[test]
fn mmio_write_completes_the_instruction_then_leaves() {
    let mut fake = Fake::with_regs(&[(Rbx, MMIO), (Rax, 0xAABB)]);
    assert_eq!(run64(&mut fake, &[0x66, 0x89, 0x03]), Outcome::MmioWrite);
    assert_eq!(fake.rip, 0x1003);
    let exit = fake.take_write();
    assert_eq!((exit.address, exit.data), (MMIO, vec![0xBB, 0xAA]));
    // A read-modify-write: the read leaves first, then the write.
    let mut fake = Fake::with_regs(&[(Rbx, MMIO), (Rax, 1)]);
    fake.rflags = 0x2 | CF;
    assert_eq!(run64(&mut fake, &[0x01, 0x03]), Outcome::MmioRead);
    fake.answer_read(&[0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(run64(&mut fake, &[0x01, 0x03]), Outcome::MmioWrite);
    assert_eq!(fake.take_write().data, vec![0, 0, 0, 0]);
    assert_eq!((fake.rflags, fake.rip), (0x2 | CF | ZF | AF | PF, 0x1002));
}

#[test]
fn rep_movs_through_mmio_one_iteration_per_exit() {
    // RAM to MMIO: each write leaves after its iteration; RIP stays on the
    // instruction until the last.
    let mut fake = Fake::with_regs(&[(Rcx, 3), (Rsi, RAM), (Rdi, MMIO)]);
    fake.poke(RAM, &[1, 0, 2, 0, 3, 0]);
    let movsw = [0xF3, 0x66, 0xA5];
    for (i, expected) in [[1, 0], [2, 0], [3, 0]].into_iter().enumerate() {
        assert_eq!(run64(&mut fake, &movsw), Outcome::MmioWrite);
        let exit = fake.take_write();
        assert_eq!((exit.address, exit.data), (MMIO + 2 * i as u64, expected.to_vec()));
        assert_eq!(fake.get(Rcx), 2 - i as u64);
        assert_eq!(fake.rip, if i == 2 { 0x1003 } else { 0x1000 });
    }
    // MMIO to RAM, starting in RAM: two iterations from RAM, then the
    // third reads MMIO and leaves before doing anything; answered, it
    // completes, and the fourth leaves again.
    let mut fake = Fake::with_regs(&[(Rcx, 4), (Rsi, MMIO - 2), (Rdi, RAM)]);
    fake.poke(MMIO - 2, &[0xA1, 0xA2]);
    let movsb = [0xF3, 0xA4];
    assert_eq!(run64(&mut fake, &movsb), Outcome::MmioRead);
    assert_eq!((fake.get(Rcx), fake.get(Rsi), fake.get(Rdi), fake.rip), (2, MMIO, RAM + 2, 0x1000));
    fake.answer_read(&[0xB1]);
    assert_eq!(run64(&mut fake, &movsb), Outcome::MmioRead);
    assert_eq!((fake.get(Rcx), fake.get(Rsi), fake.exit.as_ref().map(|e| e.address)), (1, MMIO + 1, Some(MMIO + 1)));
    fake.answer_read(&[0xB2]);
    assert_eq!(run64(&mut fake, &movsb), Outcome::Done);
    assert_eq!(fake.peek(RAM, 4), [0xA1, 0xA2, 0xB1, 0xB2]);
    assert_eq!((fake.get(Rcx), fake.rip), (0, 0x1002));
}

#[test]
fn a_fault_in_the_middle_of_rep_keeps_the_iterations_done() {
    let mut fake = Fake::with_regs(&[(Rcx, 8), (Rsi, RAM), (Rdi, FAULTY - 4)]);
    fake.bases[Segment::Es as usize] = 0;
    assert_eq!(run64(&mut fake, &[0xF3, 0xA5]), Outcome::Exception(Exception { vector: 14, error_code: Some(2) }));
    // The first dword went below the faulting page; the second faulted.
    assert_eq!((fake.get(Rcx), fake.get(Rsi), fake.get(Rdi), fake.rip), (7, RAM + 4, FAULTY, 0x1000));
}
// ANCHOR_END: mmio_tests

mod e10_1 {
    //! Instructions whose memory operand has a SIB byte.
    use super::*;

    #[test]
    fn base_index_scale_displacement() {
        // mov eax, [rbx+rcx*4+8]
        let mut fake = Fake::with_regs(&[(Rbx, RAM), (Rcx, 3)]);
        fake.poke(RAM + 20, &[1, 2, 3, 4]);
        assert_eq!(run64(&mut fake, &[0x8B, 0x44, 0x8B, 0x08]), Outcome::Done);
        assert_eq!((fake.get(Rax), fake.rip), (0x0403_0201, 0x1004));
        // mov [r13+r12*2], r8b (REX.RXB).
        let mut fake = Fake::with_regs(&[(R13, RAM), (R12, 0x40), (R8, 0x77)]);
        assert_eq!(run64(&mut fake, &[0x47, 0x88, 0x44, 0x65, 0x00]), Outcome::Done);
        assert_eq!(fake.peek(RAM + 0x80, 1), [0x77]);
        // mov eax, [disp32] through a SIB byte: no base, no index.
        let mut fake = Fake::new();
        fake.poke(RAM, &[9]);
        assert_eq!(run64(&mut fake, &[0x8B, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00]), Outcome::Done);
        assert_eq!(fake.get(Rax), 9);
    }

    #[test]
    fn push_and_pop_addressed_by_rsp() {
        // push qword [rsp+8]: the address uses RSP before the push.
        let mut fake = Fake::with_regs(&[(Rsp, 0x8000)]);
        fake.poke(0x8008, &0x1111_2222_3333_4444u64.to_le_bytes());
        assert_eq!(run64(&mut fake, &[0xFF, 0x74, 0x24, 0x08]), Outcome::Done);
        assert_eq!((fake.get(Rsp), fake.peek_u64(0x7FF8, 8)), (0x7FF8, 0x1111_2222_3333_4444));
        // pop qword [rsp+8]: the address uses RSP after the pop.
        let mut fake = Fake::with_regs(&[(Rsp, 0x7FF8)]);
        fake.poke(0x7FF8, &0x5555_6666_7777_8888u64.to_le_bytes());
        assert_eq!(run64(&mut fake, &[0x8F, 0x44, 0x24, 0x08]), Outcome::Done);
        assert_eq!((fake.get(Rsp), fake.peek_u64(0x8008, 8)), (0x8000, 0x5555_6666_7777_8888));
        assert_eq!(fake.peek_u64(0x8000, 8), 0);
    }
}

mod e10_2 {
    //! `sub`, `sbb` and `cmp`.
    use super::*;

    #[test]
    fn sub_in_each_encoding() {
        assert_eq!(alu_memory(&[0x28, 0x03], 0, 1, &[(Rax, 1)], 0x2), (0xFF, 0x2 | CF | SF | AF | PF));
        assert_eq!(alu_memory(&[0x66, 0x29, 0x03], 0x8000, 2, &[(Rax, 1)], 0x2), (0x7FFF, 0x2 | OF | AF | PF));
        assert_eq!(alu_memory(&[0x29, 0x03], 5, 4, &[(Rax, 5)], 0x2 | CF), (0, 0x2 | ZF | PF));
        assert_eq!(alu_memory(&[0x48, 0x83, 0x2B, 0x01], 0, 8, &[], 0x2), (u64::MAX, 0x2 | CF | SF | AF | PF));
        let fake = at_rbx(&[0x2B, 0x03], &[(Rax, 0xFFFF_FFFF_0000_0010)], &[0x20, 0, 0, 0]);
        assert_eq!((fake.get(Rax), fake.rflags), (0xFFFF_FFF0, 0x2 | CF | SF | PF));
        let mut fake = Fake::with_regs(&[(Rax, 0x80)]);
        assert_eq!(run64(&mut fake, &[0x2C, 0x01]), Outcome::Done); // sub al, 1
        assert_eq!((fake.get(Rax), fake.rflags), (0x7F, 0x2 | OF | AF));
    }

    #[test]
    fn sbb_takes_the_borrow() {
        assert_eq!(alu_memory(&[0x18, 0x03], 0, 1, &[(Rax, 0)], 0x2 | CF), (0xFF, 0x2 | CF | SF | AF | PF));
        assert_eq!(alu_memory(&[0x18, 0x03], 0, 1, &[(Rax, 0)], 0x2), (0, 0x2 | ZF | PF));
        assert_eq!(alu_memory(&[0x19, 0x03], 1, 4, &[(Rax, 0xFFFF_FFFF)], 0x2 | CF), (1, 0x2 | CF | AF));
        assert_eq!(alu_memory(&[0x81, 0x1B, 0, 0, 0, 0], 0x8000_0000, 4, &[], 0x2 | CF), (0x7FFF_FFFF, 0x2 | OF | AF | PF));
    }

    #[test]
    fn cmp_sets_flags_and_writes_nothing() {
        let fake = at_rbx(&[0x39, 0x03], &[(Rax, 2)], &[1, 0, 0, 0]);
        assert_eq!((fake.rflags, fake.peek(RAM, 4)), (0x2 | CF | SF | AF | PF, vec![1, 0, 0, 0]));
        assert!(fake.log.iter().all(|l| !l.write));
        let fake = at_rbx(&[0x3A, 0x03], &[(Rax, 0x42)], &[0x42]); // cmp al, [rbx]
        assert_eq!((fake.rflags, fake.get(Rax)), (0x2 | ZF | PF, 0x42));
        let fake = at_rbx(&[0x80, 0x3B, 0x80], &[], &[0x7F]); // cmp byte [rbx], 0x80
        assert_eq!(fake.rflags, 0x2 | CF | OF | SF | PF);
        let mut fake = Fake::with_regs(&[(Rax, 0x1234)]);
        assert_eq!(run64(&mut fake, &[0x66, 0x3D, 0x34, 0x12]), Outcome::Done);
        assert_eq!(fake.rflags, 0x2 | ZF | PF);
    }

    #[test]
    fn sub_from_mmio() {
        let mut fake = Fake::with_regs(&[(Rbx, MMIO), (Rax, 1)]);
        assert_eq!(run64(&mut fake, &[0x29, 0x03]), Outcome::MmioRead);
        fake.answer_read(&[0, 0, 0, 0]);
        assert_eq!(run64(&mut fake, &[0x29, 0x03]), Outcome::MmioWrite);
        assert_eq!(fake.take_write().data, vec![0xFF; 4]);
        assert_eq!(fake.rflags, 0x2 | CF | SF | AF | PF);
    }
}

mod e10_3 {
    //! Bit tests with a register bit offset on a memory operand: which
    //! operand the offset reaches and which bit of it, the accesses a
    //! device sees, and the address size's wrap.
    use super::*;

    /// The accesses the guest saw: (write, offset, length).
    fn accesses(fake: &Fake) -> Vec<(bool, u64, usize)> {
        fake.log.iter().map(|l| (l.write, l.offset, l.data.len())).collect()
    }

    /// The bytes of the guest's memory that are not zero: (address, value).
    fn ones(fake: &Fake) -> Vec<(u64, u8)> {
        fake.memory.iter().filter(|&(_, &v)| v != 0).map(|(&a, &v)| (a, v)).collect()
    }

    /// Runs `bytes`, a `bts` whose operand is at rBX and whose bit offset
    /// is rAX, in `mode` with RBX = `base`, RAX = `rax` and memory all
    /// zeros; checks that it reads and then writes the `len` bytes at
    /// `operand`, sets its bit `bit` and no other, and finds CF clear.
    #[track_caller]
    fn bts(bytes: &[u8], mode: Mode, (base, rax): (u64, u64), (operand, len, bit): (u64, usize, u64)) {
        let what = format!("{bytes:02X?} in {mode:?} with rbx={base:#x} rax={rax:#x}");
        let mut fake = Fake::with_regs(&[(Rbx, base), (Rax, rax)]);
        assert_eq!(run(&mut fake, bytes, mode), Outcome::Done, "{what}");
        let (seen, expected) = (accesses(&fake), [(false, operand, len), (true, operand, len)]);
        assert!(seen == expected, "{what}: the accesses (write, offset, length) were {seen:x?}, not {expected:x?}");
        let (set, expected) = (ones(&fake), [(operand.wrapping_add(bit / 8), 1 << (bit % 8))]);
        assert!(set == expected, "{what}: the bytes not zero (address, value) were {set:x?}, not {expected:x?} (bit {bit})");
        assert_eq!((fake.rflags, fake.rip), (0x2, 0x1000 + bytes.len() as u64), "{what}: CF clear, RIP past it");
    }

    #[test]
    fn a_32_bit_offset_is_signed_and_moves_by_doublewords() {
        let bts_32 = [0x0F, 0xAB, 0x03]; // bts [rbx], eax
        let cases = [
            (0, (RAM, 4, 0)),
            (31, (RAM, 4, 31)),
            (32, (RAM + 4, 4, 0)),
            (100, (RAM + 12, 4, 4)),
            (0xFFFF_FFFF, (RAM - 4, 4, 31)), // -1
            (0xFFFF_FFDF, (RAM - 8, 4, 31)), // -33
            (0xFFFF_FFE0, (RAM - 4, 4, 0)),  // -32
            (0x7FFF_FFFF, (RAM + 0x0FFF_FFFC, 4, 31)),
            (0x8000_0000, (RAM.wrapping_sub(0x1000_0000), 4, 0)), // -2^31
            (0xFFFF_FFFF_0000_0021, (RAM + 4, 4, 1)), // only EAX counts
        ];
        for (rax, operand) in cases {
            bts(&bts_32, Mode::Bits64, (RAM, rax), operand);
        }
        // The same in 32-bit code.
        bts(&bts_32, Mode::Bits32, (RAM, 0xFFFF_FFDF), (RAM - 8, 4, 31));
        // lock changes nothing of it.
        bts(&[0xF0, 0x0F, 0xAB, 0x03], Mode::Bits64, (RAM, 0xFFFF_FFFF), (RAM - 4, 4, 31));
    }

    #[test]
    fn a_16_bit_offset_is_signed_and_moves_by_words() {
        let bts_16 = [0x66, 0x0F, 0xAB, 0x03]; // bts [rbx], ax
        let cases = [
            (15, (RAM, 2, 15)),
            (16, (RAM + 2, 2, 0)),
            (0xFFFF, (RAM - 2, 2, 15)), // -1
            (0xFFEF, (RAM - 4, 2, 15)), // -17
            (0xFFF0, (RAM - 2, 2, 0)),  // -16
            (0x7FFF, (RAM + 0xFFE, 2, 15)),
            (0x8000, (RAM - 0x1000, 2, 0)), // -2^15
            (0x1234_0000_FFFF, (RAM - 2, 2, 15)), // only AX counts
        ];
        for (rax, operand) in cases {
            bts(&bts_16, Mode::Bits64, (RAM, rax), operand);
        }
    }

    #[test]
    fn a_64_bit_offset_is_signed_and_moves_by_quadwords() {
        let bts_64 = [0x48, 0x0F, 0xAB, 0x03]; // bts [rbx], rax
        let cases = [
            (63, (RAM, 8, 63)),
            (64, (RAM + 8, 8, 0)),
            (127, (RAM + 8, 8, 63)),
            (u64::MAX, (RAM - 8, 8, 63)), // -1
            ((-65i64) as u64, (RAM - 16, 8, 63)),
            (0x7FFF_FFFF, (RAM + 0x0FFF_FFF8, 8, 63)),
            (0x8000_0000, (RAM + 0x1000_0000, 8, 0)), // positive in 64 bits
            (1 << 63, (RAM.wrapping_sub(1 << 60), 8, 0)), // -2^63
        ];
        for (rax, operand) in cases {
            bts(&bts_64, Mode::Bits64, (RAM, rax), operand);
        }
    }

    #[test]
    fn the_operand_address_wraps_at_the_address_size() {
        // 16-bit addresses: bts [bx], ax and bts [bx], eax (66).
        let (bts_16, bts_32) = ([0x0F, 0xAB, 0x07], [0x66, 0x0F, 0xAB, 0x07]);
        bts(&bts_16, Mode::Bits16, (0, 0xFFFF), (0xFFFE, 2, 15));
        bts(&bts_16, Mode::Bits16, (0xFFFE, 16), (0, 2, 0));
        bts(&bts_16, Mode::Bits16, (0x0010, 0x8000), (0xF010, 2, 0));
        bts(&bts_32, Mode::Bits16, (0, 0xFFFF_FFFF), (0xFFFC, 4, 31));
        bts(&bts_32, Mode::Bits16, (0x0100, 0x7FFF_FFFF), (0x00FC, 4, 31));
        // 32-bit addresses in 64-bit code: bts [ebx], eax (67).
        let bts_67 = [0x67, 0x0F, 0xAB, 0x03];
        bts(&bts_67, Mode::Bits64, (0, 0xFFFF_FFFF), (0xFFFF_FFFC, 4, 31));
        bts(&bts_67, Mode::Bits64, (0xFFFF_FFFC, 32), (0, 4, 0));
        // 32-bit code: its addresses are 32 bits.
        bts(&[0x0F, 0xAB, 0x03], Mode::Bits32, (2, 0xFFFF_FFDF), (0xFFFF_FFFA, 4, 31));
    }

    #[test]
    fn bt_btr_and_btc_reach_the_same_bit_and_set_cf_from_it() {
        // The bit: -2 is bit 30 of the doubleword before RBX, bit 6 of the
        // byte at RBX - 1. Every other flag is kept.
        let flags = 0x2 | ZF | SF | OF | AF | PF;
        for (bytes, before, after, cf) in [
            ([0x0F, 0xA3, 0x03], 0x40, 0x40, CF), // bt
            ([0x0F, 0xA3, 0x03], 0xBF, 0xBF, 0),
            ([0x0F, 0xB3, 0x03], 0xFF, 0xBF, CF), // btr
            ([0x0F, 0xB3, 0x03], 0x00, 0x00, 0),
            ([0x0F, 0xBB, 0x03], 0x40, 0x00, CF), // btc
            ([0x0F, 0xBB, 0x03], 0x80, 0xC0, 0),
            ([0x0F, 0xAB, 0x03], 0x40, 0x40, CF), // bts
        ] {
            let mut fake = Fake::with_regs(&[(Rbx, RAM), (Rax, 0xFFFF_FFFE)]);
            fake.rflags = flags | (CF ^ cf);
            fake.poke(RAM - 1, &[before]);
            assert_eq!(run64(&mut fake, &bytes), Outcome::Done, "{bytes:02X?}");
            let expected = (vec![0, 0, 0, after, 0, 0, 0, 0], flags | cf);
            assert_eq!((fake.peek(RAM - 4, 8), fake.rflags), expected, "{bytes:02X?} on {before:#x}");
            let writes: Vec<_> = accesses(&fake).into_iter().filter(|a| a.0).collect();
            let expected = if bytes[1] == 0xA3 { vec![] } else { vec![(true, RAM - 4, 4)] };
            assert_eq!(writes, expected, "{bytes:02X?}: the writes (bt makes none)");
        }
    }

    #[test]
    fn a_device_sees_the_whole_operand_the_offset_reaches() {
        // bts [rbx], rAX with a negative offset, in each operand size: the
        // device sees a read of the whole operand the offset reaches, at
        // its address, then, once the read is answered, its write with
        // the bit set.
        for (bytes, rax, address, data) in [
            // -1: bit 31 of the doubleword before.
            (&[0x0F, 0xAB, 0x03][..], 0xFFFF_FFFF, MMIO + 0x7FC, vec![0x11, 0, 0, 0x80]),
            // -8: bit 8 of the word before.
            (&[0x66, 0x0F, 0xAB, 0x03], 0xFFF8, MMIO + 0x7FE, vec![0x11, 0x01]),
            // -65: bit 63 of the quadword two before.
            (&[0x48, 0x0F, 0xAB, 0x03], (-65i64) as u64, MMIO + 0x7F0, vec![0x11, 0, 0, 0, 0, 0, 0, 0x80]),
        ] {
            let mut fake = Fake::with_regs(&[(Rbx, MMIO + 0x800), (Rax, rax)]);
            assert_eq!(run64(&mut fake, bytes), Outcome::MmioRead, "{bytes:02X?}");
            let exit = fake.exit.clone().expect("an exit");
            assert_eq!((exit.write, exit.address, exit.len), (false, address, data.len()), "{bytes:02X?}: the read");
            let mut answer = vec![0; data.len()];
            answer[0] = 0x11;
            fake.answer_read(&answer);
            assert_eq!(run64(&mut fake, bytes), Outcome::MmioWrite, "{bytes:02X?}");
            let exit = fake.take_write();
            assert_eq!((exit.address, exit.data), (address, data), "{bytes:02X?}: the write");
            assert_eq!(fake.rflags, 0x2, "{bytes:02X?}");
        }
    }

    #[test]
    fn a_fault_where_the_offset_reaches_changes_nothing() {
        // RBX is past the faulting 64 KiB, EAX = -1 reaches back into them.
        for bytes in [&[0x0F, 0xA3, 0x03][..], &[0x0F, 0xAB, 0x03]] {
            let mut fake = Fake::with_regs(&[(Rbx, FAULTY + 0x1_0000), (Rax, 0xFFFF_FFFF)]);
            fake.rflags = 0x2 | ZF;
            let before = fake.clone();
            assert_eq!(run64(&mut fake, bytes), Outcome::Exception(Exception { vector: 14, error_code: Some(0) }), "{bytes:02X?}");
            assert_eq!((fake.regs, fake.rip, fake.rflags), (before.regs, before.rip, before.rflags), "{bytes:02X?}");
        }
    }
}
//@ begin 13

#[test]
fn cmpxchg_on_memory_swaps_when_equal_and_loads_rax_when_not() {
    // lock cmpxchg [rbx], rcx: equal, so RCX goes to memory.
    let entry = 0x0000_0000_0012_3067u64.to_le_bytes();
    let fake = at_rbx(&[0xF0, 0x48, 0x0F, 0xB1, 0x0B], &[(Rax, 0x12_3067), (Rcx, 0x12_3065)], &entry);
    assert_eq!(fake.peek_u64(RAM, 8), 0x12_3065);
    assert_eq!((fake.get(Rax), fake.rflags & ZF), (0x12_3067, ZF));
    // Not equal: memory is written with its own value, RAX gets it.
    let fake = at_rbx(&[0xF0, 0x48, 0x0F, 0xB1, 0x0B], &[(Rax, 0x99), (Rcx, 0x12_3065)], &entry);
    assert_eq!(fake.peek_u64(RAM, 8), 0x12_3067);
    assert_eq!((fake.get(Rax), fake.rflags & ZF), (0x12_3067, 0));
    assert_eq!(fake.log.iter().filter(|l| l.write).count(), 1, "the destination is written either way");
    // 32 bits: a failed compare writes EAX, zero-extended; a good one
    // leaves all of RAX as it was.
    let fake = at_rbx(&[0x0F, 0xB1, 0x0B], &[(Rax, 0xFFFF_FFFF_0000_0001), (Rcx, 5)], &[2, 0, 0, 0]);
    assert_eq!((fake.get(Rax), fake.peek(RAM, 4)), (2, vec![2, 0, 0, 0]));
    let fake = at_rbx(&[0x0F, 0xB1, 0x0B], &[(Rax, 0xFFFF_FFFF_0000_0002), (Rcx, 5)], &[2, 0, 0, 0]);
    assert_eq!((fake.get(Rax), fake.peek(RAM, 4)), (0xFFFF_FFFF_0000_0002, vec![5, 0, 0, 0]));
}

#[test]
fn lock_is_allowed_on_cmpxchg_to_memory_only() {
    use super::super::decode::decode;
    assert!(decode(&[0xF0, 0x0F, 0xB1, 0x0B], Mode::Bits64).is_ok());
    assert_eq!(decode(&[0xF0, 0x0F, 0xB1, 0xCB], Mode::Bits64), Err(DecodeError::Invalid));
}

/// `lock cmpxchg8b [rsi]` in 64-bit mode with the memory at RSI holding
/// `memory`; the guest after it.
fn cmpxchg8b(regs: &[(Reg, u64)], memory: u64, rflags: u64) -> Fake {
    let bytes = [0xF0, 0x0F, 0xC7, 0x0E];
    let mut fake = Fake::with_regs(regs);
    fake.regs[Rsi as usize] = RAM;
    fake.rflags = rflags;
    fake.poke(RAM, &memory.to_le_bytes());
    assert_eq!(run64(&mut fake, &bytes), Outcome::Done);
    assert_eq!(fake.rip, 0x1004);
    fake
}

#[test]
fn cmpxchg8b_swaps_when_equal_and_loads_edx_eax_when_not() {
    // A PAE entry, 0x8000_0001_2345_6067: EDX:EAX holds it (bits 63:32 of
    // RDX and RAX do not count), so ECX:EBX goes to memory and ZF is set;
    // no register changes, no other flag.
    let regs = [(Rax, 0xFFFF_FFFF_2345_6067), (Rdx, 0x1234_5678_8000_0001), (Rbx, 0xAAAA_AAAA_2345_6065), (Rcx, 0xBBBB_BBBB_8000_0001)];
    let fake = cmpxchg8b(&regs, 0x8000_0001_2345_6067, 0x2 | CF | OF | SF);
    assert_eq!(fake.peek_u64(RAM, 8), 0x8000_0001_2345_6065);
    assert_eq!(fake.rflags, 0x2 | CF | OF | SF | ZF);
    assert_eq!((fake.get(Rax), fake.get(Rdx), fake.get(Rbx), fake.get(Rcx)), (regs[0].1, regs[1].1, regs[2].1, regs[3].1));
    let accesses: Vec<_> = fake.log.iter().map(|l| (l.write, l.offset, l.data.len())).collect();
    assert_eq!(accesses, [(false, RAM, 8), (true, RAM, 8)], "one read and one write of 8 bytes");
    // Another processor changed the entry: memory is written with its own
    // value, EDX:EAX takes it with bits 63:32 of RDX and RAX cleared, ZF
    // is cleared and no other flag changes.
    let fake = cmpxchg8b(&regs, 0x8000_0001_2345_6027, 0x2 | ZF | PF | AF);
    assert_eq!(fake.peek_u64(RAM, 8), 0x8000_0001_2345_6027);
    assert_eq!((fake.get(Rax), fake.get(Rdx)), (0x2345_6027, 0x8000_0001));
    assert_eq!((fake.get(Rbx), fake.get(Rcx)), (regs[2].1, regs[3].1));
    assert_eq!(fake.rflags, 0x2 | PF | AF);
    assert_eq!(fake.log.iter().filter(|l| l.write).count(), 1, "the destination is written either way");
}

#[test]
fn cmpxchg8b_in_16_bit_code_and_on_a_device() {
    // cmpxchg8b [si] with 16-bit addressing: the operand is 8 bytes in
    // every mode, and 66 does not change it.
    for bytes in [&[0x0F, 0xC7, 0x0C][..], &[0x66, 0x0F, 0xC7, 0x0C]] {
        let mut fake = Fake::with_regs(&[(Rsi, RAM), (Rax, 1), (Rdx, 2), (Rbx, 3), (Rcx, 4)]);
        fake.poke(RAM, &0x0000_0002_0000_0001u64.to_le_bytes());
        assert_eq!(run(&mut fake, bytes, Mode::Bits16), Outcome::Done, "{bytes:02X?}");
        assert_eq!((fake.peek_u64(RAM, 8), fake.rflags & ZF), (0x0000_0004_0000_0003, ZF), "{bytes:02X?}");
    }
    // On MMIO: the 8-byte read leaves first; answered, the instruction
    // runs again and its write leaves after it, with ECX:EBX.
    let mut fake = Fake::with_regs(&[(Rsi, MMIO + 8), (Rax, 0x1111), (Rdx, 0x2222), (Rbx, 0x3333), (Rcx, 0x4444)]);
    assert_eq!(run64(&mut fake, &[0x0F, 0xC7, 0x0E]), Outcome::MmioRead);
    let exit = fake.exit.clone().expect("an exit");
    assert_eq!((exit.write, exit.address, exit.len), (false, MMIO + 8, 8));
    fake.answer_read(&0x0000_2222_0000_1111u64.to_le_bytes());
    assert_eq!(run64(&mut fake, &[0x0F, 0xC7, 0x0E]), Outcome::MmioWrite);
    assert_eq!(fake.take_write().data, 0x0000_4444_0000_3333u64.to_le_bytes());
    assert_eq!((fake.rip, fake.rflags & ZF), (0x1003, ZF));
}

#[test]
fn cmpxchg8b_of_a_register_is_invalid_and_cmpxchg16b_is_not_emulated() {
    let mut fake = Fake::new();
    assert_eq!(run64(&mut fake, &[0x0F, 0xC7, 0xCE]), Outcome::Exception(Exception::UD));
    assert_eq!(run64(&mut fake, &[0xF0, 0x0F, 0xC7, 0xCE]), Outcome::Exception(Exception::UD));
    assert_eq!(run64(&mut fake, &[0x48, 0x0F, 0xC7, 0x0E]), Outcome::Unhandled(DecodeError::Unsupported));
    // Other members of group 9 (here vmptrld [rsi]) are not emulated.
    assert_eq!(run64(&mut fake, &[0x0F, 0xC7, 0x36]), Outcome::Unhandled(DecodeError::Unsupported));
    assert_eq!((fake.rip, fake.log.len()), (0x1000, 0));
}
//@ end
