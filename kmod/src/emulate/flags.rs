//@ stage 10
//! Arithmetic and the status flags, exactly as the processor computes them.
//!
//! Six bits of RFLAGS describe the result of an arithmetic or logical
//! instruction (Intel SDM Vol. 1, 3.4.3.1 "Status Flags"): CF, the carry
//! out of (or the borrow into) the most significant bit; PF, set when the
//! low byte of the result has an even number of ones; AF, the carry out of
//! (or borrow into) bit 3, for BCD arithmetic; ZF, the result is zero; SF,
//! its sign bit; OF, the signed result does not fit. Which instruction
//! sets, clears, leaves or leaves undefined which flag is Appendix A
//! "EFLAGS Cross-Reference" of Vol. 1 and each instruction's "Flags
//! Affected" in Vol. 2.
//!
//! Where the manual says "undefined", the emulator does what the
//! processors it was checked on do, and the tests compare it with the host
//! processor: the logical operations (`and`, `or`, `xor`, `test`) clear AF;
//! the bit tests leave OF, SF, AF and PF as they were.
//!
//! Every function is pure: values in, a value and flags out, all of them
//! reduced to the operand size.

use super::Size;
use super::decode::{Alu, BitOp};

// ANCHOR: bits
/// The status flags and DF (SDM Vol. 1, 3.4.3, Figure 3-8).
pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
/// The six status flags.
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
// ANCHOR_END: bits

/// A result and the status flags it sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arith {
    /// Reduced to the operand size.
    pub value: u64,
    /// Only bits of [`STATUS`].
    pub flags: u64,
}

/// PF: the low byte of `value` has an even number of ones.
pub const fn parity(value: u64) -> u64 {
    if (value as u8).count_ones().is_multiple_of(2) { PF } else { 0 }
}

/// ZF, SF and PF of `value`, a result of `size`.
pub const fn zf_sf_pf(size: Size, value: u64) -> u64 {
    let value = value & size.mask();
    let zf = if value == 0 { ZF } else { 0 };
    let sf = if value & size.sign() != 0 { SF } else { 0 };
    zf | sf | parity(value)
}

/// `flag` if `condition`.
const fn when(condition: bool, flag: u64) -> u64 {
    if condition { flag } else { 0 }
}

// ANCHOR: add
/// `a + b + carry` (`add`, and `adc` with CF as `carry`). CF is the carry
/// out of the top bit; OF is set when both operands have the same sign and
/// the result the other (SDM Vol. 2A, ADD, ADC).
pub fn add(size: Size, a: u64, b: u64, carry: bool) -> Arith {
    let (a, b) = (a & size.mask(), b & size.mask());
    let wide = u128::from(a) + u128::from(b) + u128::from(carry);
    let value = wide as u64 & size.mask();
    let cf = when(wide > u128::from(size.mask()), CF);
    let of = when((a ^ value) & (b ^ value) & size.sign() != 0, OF);
    let af = (a ^ b ^ value) & AF;
    Arith { value, flags: cf | of | af | zf_sf_pf(size, value) }
}
// ANCHOR_END: add

// ANCHOR: sub
/// `a - b - borrow` (`sub` and `cmp`, and `sbb` with CF as `borrow`),
/// with the six status flags it sets.
pub fn sub(size: Size, a: u64, b: u64, borrow: bool) -> Arith {
    //@ exercise E10.2
    //@ instruction: Compute `a - b - borrow` reduced to `size`, and the six
    //@+ status flags the processor sets for it: Intel SDM Vol. 1, 3.4.3.1
    //@+ "Status Flags" defines each one, Appendix A "EFLAGS
    //@+ Cross-Reference" (Table A-2) says that SUB, SBB and CMP set all six,
    //@+ and the SBB page of Vol. 2B shows where the borrow enters. `a` and
    //@+ `b` may have bits above `size`: ignore them.
    //@ hint: `add` above is the mirror image: read it next to the
    //@+ definitions of CF, OF and AF in 3.4.3.1, and ask what each
    //@+ becomes when the operation subtracts. Cut `a` and `b` to the size
    //@+ first.
    //@ hint: CF is a borrow here, not a carry: it is set when `b + borrow`
    //@+ is greater than `a` as unsigned numbers, which 65-bit (u128)
    //@+ arithmetic answers without a case for each size. OF is set when
    //@+ `a` and `b` have different signs and the result has `b`'s sign. AF
    //@+ is the borrow into bit 4, found in bit 4 of `a ^ b ^ result`.
    //@+ `zf_sf_pf` does the rest.
    //@ hint: With `a` and `b` masked: `value = a.wrapping_sub(b)
    //@+ .wrapping_sub(u64::from(borrow)) & size.mask()`; CF when
    //@+ `u128::from(b) + u128::from(borrow) > u128::from(a)`; OF when
    //@+ `(a ^ b) & (a ^ value) & size.sign() != 0`; AF is `(a ^ b ^ value)
    //@+ & AF`.
    let (a, b) = (a & size.mask(), b & size.mask());
    let value = a.wrapping_sub(b).wrapping_sub(u64::from(borrow)) & size.mask();
    let cf = when(u128::from(b) + u128::from(borrow) > u128::from(a), CF);
    let of = when((a ^ b) & (a ^ value) & size.sign() != 0, OF);
    let af = (a ^ b ^ value) & AF;
    Arith { value, flags: cf | of | af | zf_sf_pf(size, value) }
    //@ end
}
// ANCHOR_END: sub

/// `and`, `or`, `xor` and `test`: CF and OF cleared, AF undefined (cleared,
/// as processors do), ZF, SF and PF from the result.
pub fn logic(size: Size, value: u64) -> Arith {
    let value = value & size.mask();
    Arith { value, flags: zf_sf_pf(size, value) }
}

/// The eight ALU operations, with CF (for `adc` and `sbb`) from `rflags`.
/// `cmp` gives `sub`'s value, which the caller does not store.
pub fn alu(op: Alu, size: Size, a: u64, b: u64, rflags: u64) -> Arith {
    let cf = rflags & CF != 0;
    match op {
        Alu::Add => add(size, a, b, false),
        Alu::Adc => add(size, a, b, cf),
        Alu::Sub | Alu::Cmp => sub(size, a, b, false),
        Alu::Sbb => sub(size, a, b, cf),
        Alu::And => logic(size, a & b),
        Alu::Or => logic(size, a | b),
        Alu::Xor => logic(size, a ^ b),
    }
}

// ANCHOR: inc
/// `inc`: as `add a, 1`, but CF is not affected: the flags returned lack
/// it, and the caller keeps the old one (SDM Vol. 2A, INC). OF is set only
/// when the result is the smallest negative number; AF when the low
/// nibble wrapped to 0.
pub fn inc(size: Size, a: u64) -> Arith {
    let value = a.wrapping_add(1) & size.mask();
    let of = when(value == size.sign(), OF);
    let af = when(value & 0xF == 0, AF);
    Arith { value, flags: of | af | zf_sf_pf(size, value) }
}

/// `dec`: as `sub a, 1` without CF (SDM Vol. 2A, DEC). OF is set only when
/// `a` was the smallest negative number; AF when its low nibble was 0.
pub fn dec(size: Size, a: u64) -> Arith {
    let a = a & size.mask();
    let value = a.wrapping_sub(1) & size.mask();
    let of = when(a == size.sign(), OF);
    let af = when(a & 0xF == 0, AF);
    Arith { value, flags: of | af | zf_sf_pf(size, value) }
}
// ANCHOR_END: inc

/// `neg`: `0 - a`, with CF set unless `a` is 0 (SDM Vol. 2B, NEG); OF only
/// when `a` is the smallest negative number, which is its own negation;
/// AF when the low nibble of `a` is not 0 (a borrow into bit 4).
pub fn neg(size: Size, a: u64) -> Arith {
    let a = a & size.mask();
    let value = a.wrapping_neg() & size.mask();
    let cf = when(a != 0, CF);
    let of = when(a == size.sign(), OF);
    let af = when(a & 0xF != 0, AF);
    Arith { value, flags: cf | of | af | zf_sf_pf(size, value) }
}

// ANCHOR: bit
/// `bt`, `bts`, `btr` and `btc` on `value`, a `size` operand, at bit
/// `offset` modulo the operand's width: the new value and the old bit,
/// which goes to CF (SDM Vol. 2A, BT). The other flags are the caller's:
/// ZF unaffected, OF, SF, AF and PF undefined (left as they were, as
/// processors do).
pub fn bit(op: BitOp, size: Size, value: u64, offset: u64) -> (u64, bool) {
    let mask = 1u64 << (offset % u64::from(size.bits()));
    let old = value & mask != 0;
    let value = match op {
        BitOp::Bt => value,
        BitOp::Bts => value | mask,
        BitOp::Btr => value & !mask,
        BitOp::Btc => value ^ mask,
    };
    (value & size.mask(), old)
}
// ANCHOR_END: bit

/// `rflags` with the bits of `mask` taken from `flags`.
pub const fn merge(rflags: u64, flags: u64, mask: u64) -> u64 {
    (rflags & !mask) | (flags & mask)
}
