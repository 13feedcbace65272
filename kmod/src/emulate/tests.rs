//@ stage 10
//! Tests of the emulator: the decoder against a disassembler on random
//! bytes ([`iced`]), the arithmetic against the host processor ([`host`]),
//! and each instruction on a made-up guest ([`exec`], over [`fake`]).
//!
//! Only the tests in the `e10_1` modules reach [`decode_sib`](super::decode::decode_sib)
//! (every memory operand with a SIB byte), only those in `e10_2` reach
//! [`flags::sub`](super::flags::sub) (`sub`, `sbb` and `cmp`), and only
//! those in `e10_3` reach the bit offset of a bit test on memory (a
//! register offset, which may reach outside the operand): the others use
//! none of them.

mod decode;
mod exec;
mod fake;
mod host;
pub(crate) mod iced;
mod rng;
