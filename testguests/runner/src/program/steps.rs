//! A program: the steps of one run of an MMIO chaos guest, drawn from its
//! seed.
//!
//! Each seed has a flavour. Half the seeds are `within`: every step is an
//! instruction the emulator knows, no access straddles a page edge and
//! none goes through a segment that rkvm checks otherwise than the
//! processor (chapter 10 lists both), so that Linux's KVM must end every
//! step the same way. A quarter are `edges`: the same, with accesses
//! across the edges between the window, RAM and the pages that fault, and
//! through every segment. A quarter are `mixed`: besides known
//! instructions, random bytes (with the limits of the first chaos guest:
//! no control transfer, so that they end), instructions the emulator does
//! not know, and encodings the processor refuses.

use super::encode::{self, Frame, RBP, RCX, RSP};
use super::forms::{self, Class, Form, STATUS};
use super::rng::Rng;
use super::space::{self, Seg, WINDOW};
use super::{Config, Program, Step, What, code_address};
use crate::header::Mode;

/// FS and GS, numbered as instructions number segment registers.
const FS: usize = 4;
const GS: usize = 5;

/// Steps per run.
pub const STEPS: usize = 32;
/// DF.
const DF: u64 = 1 << 10;

/// How a seed's steps are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Within,
    Edges,
    Mixed,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Within => "within",
            Flavour::Edges => "edges",
            Flavour::Mixed => "mixed",
        }
    }
}

/// The program of `seed` for a guest starting in `mode`.
pub fn generate(mode: Mode, seed: u32) -> Program {
    let mut rng = Rng::new(u64::from(seed) << 8 | mode_number(mode));
    let flavour = match rng.below(4) {
        0 | 1 => Flavour::Within,
        2 => Flavour::Edges,
        _ => Flavour::Mixed,
    };
    let config = Config { mode, paging: mode == Mode::Prot32 && rng.one_in(2) };
    let tables = Tables::new();
    let steps = (0..STEPS).map(|i| step(&mut rng, config, flavour, &tables, code_address(i))).collect();
    Program { config, flavour, steps }
}

fn mode_number(mode: Mode) -> u64 {
    match mode {
        Mode::Real => 1,
        Mode::Prot32 => 2,
        Mode::Long64 => 3,
    }
}

/// The forms, built once per program.
struct Tables {
    known: Vec<Vec<Form>>,
    unknown: Vec<Form>,
    undefined: Vec<Form>,
}

impl Tables {
    fn new() -> Tables {
        Tables { known: forms::known(), unknown: forms::unknown(), undefined: forms::undefined() }
    }

    fn pick(&self, rng: &mut Rng, what: What, mode: Mode) -> Option<Form> {
        let list: &[Form] = match what {
            What::Known => &self.known[rng.below(self.known.len() as u64) as usize],
            What::Unknown => &self.unknown,
            What::Undefined => &self.undefined,
            What::Random => return None,
        };
        let form = rng.pick(list);
        form.in_mode(mode).then_some(form)
    }
}

fn step(rng: &mut Rng, config: Config, flavour: Flavour, tables: &Tables, code: u64) -> Step {
    let what = match flavour {
        Flavour::Mixed => [What::Known, What::Random, What::Unknown, What::Undefined][rng.weighted(&[70, 15, 8, 7])],
        _ => What::Known,
    };
    for _ in 0..200 {
        let mut frame = new_frame(rng, config, code, flavour != Flavour::Within);
        if what == What::Random {
            return random_step(rng, frame);
        }
        let Some(form) = tables.pick(rng, what, config.mode) else { continue };
        let Some(bytes) = encode::encode(rng, &form, &mut frame) else { continue };
        if flavour == Flavour::Within && (frame.crosses() || frame.checked_differently()) {
            continue;
        }
        let what = match form.class {
            Class::Known => What::Known,
            Class::Unknown => What::Unknown,
            Class::Undefined => What::Undefined,
        };
        return Step { what, name: form.name, bytes, frame, undefined: form.undefined };
    }
    // Never seen: a step that does nothing.
    Step { what: What::Known, name: "nop", bytes: vec![0x90], frame: new_frame(rng, config, code, false), undefined: 0 }
}

/// The state a step starts in before its instruction is chosen: random
/// registers (rSP in the steps' stack), random status flags and DF,
/// random data segments.
fn new_frame(rng: &mut Rng, config: Config, code: u64, edges: bool) -> Frame {
    let long = config.mode == Mode::Long64;
    let mut regs = [0u64; 16];
    for r in regs.iter_mut().take(if long { 16 } else { 8 }) {
        let v = match rng.below(5) {
            0 => WINDOW + rng.below(0x1000),
            1 => rng.small() as u64,
            2 => rng.below(0x1_0000),
            3 => rng.next_u64() & 0xFFFF_FFFF,
            _ => rng.next_u64(),
        };
        *r = if long { v } else { v & 0xFFFF_FFFF };
    }
    let align = if rng.one_in(8) { 1 } else if long { 8 } else { 4 };
    regs[RSP] = (space::STACK_LOW + 0x400 + rng.below(0xA00)) & !(align - 1);
    if config.mode == Mode::Real && rng.one_in(2) {
        // Real mode's stack is SP: the upper half of ESP stays.
        regs[RSP] |= rng.next_u64() & 0xFFFF_0000;
    }
    let (cs, ss) = space::fixed(config.mode);
    let mut pick = || pick_segment(rng, config.mode);
    let (es, ds, fs, gs) = (pick(), pick(), pick(), pick());
    let (es, ds) = if long { (space::FLAT, space::FLAT) } else { (es, ds) };
    Frame {
        config,
        code,
        segs: [es, cs, ss, ds, fs, gs],
        regs,
        rflags: 2 | (rng.next_u64() & (STATUS | DF)),
        edges,
        pinned: 1 << RSP,
        accesses: Vec::new(),
    }
}

fn pick_segment(rng: &mut Rng, mode: Mode) -> Seg {
    let choices = space::choices(mode);
    let weights: &[u64] = match mode {
        Mode::Real => &[2, 2, 4, 3, 2, 1, 2],
        Mode::Prot32 => &[4, 3, 3, 2, 1, 2, 1],
        Mode::Long64 => &[1, 1, 1],
    };
    choices[rng.weighted(weights)]
}

/// One-byte opcodes random bytes may not hold, which become `nop`: string
/// I/O (2006's ABI leaves a port-to-MMIO copy to userspace, which this
/// runner does not do), and every control transfer (jcc, loop, jecxz,
/// call, jmp, ret, iret), so that a step runs forwards into its int3s.
const FORBIDDEN: [u8; 34] = [
    0x6C, 0x6D, 0x6E, 0x6F, 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x7B, 0x7C, 0x7D,
    0x7E, 0x7F, 0xE0, 0xE1, 0xE2, 0xE3, 0xE8, 0xE9, 0xEA, 0xEB, 0x9A, 0xC2, 0xC3, 0xCA, 0xCB, 0xCF,
];
/// Second bytes of 0F xx that become 0F 0B (ud2): descriptor tables,
/// control and debug registers, the SVM and VMX instructions, the fast
/// system calls; and jcc rel32 (0F 80-8F).
const FORBIDDEN_0F: [u8; 8] = [0x00, 0x01, 0x22, 0x23, 0x05, 0x07, 0x34, 0x35];

/// Sixteen random bytes within the limits above, the registers all in
/// the window but rSP, and rCX a small count (`rep` only as the first
/// byte). The step ends at the int3s after them, not with a call.
///
/// In real mode every address is 16 bits, and the guest's own memory
/// (its interrupt vectors, code, program and results) lies in the first
/// 64 KiB: there the data segments all have bases near the window, and
/// BP points into the steps' stack, as SP does, so that the random bytes
/// rarely write over the guest itself.
fn random_step(rng: &mut Rng, mut frame: Frame) -> Step {
    let long = frame.config.mode == Mode::Long64;
    for r in 0..if long { 16 } else { 8 } {
        if r != RSP {
            frame.regs[r] = WINDOW + rng.below(0x1000);
        }
    }
    frame.regs[RCX] = rng.below(8);
    if frame.config.mode == Mode::Real {
        frame.regs[RBP] = space::STACK_LOW + rng.below(0x800);
        for s in [encode::ES, encode::DS, FS, GS] {
            frame.segs[s] = rng.pick(&[space::WIN, space::BELOW, space::TIGHT, space::DOWN16]);
        }
    }
    let mut b: Vec<u8> = (0..16).map(|_| rng.next_u64() as u8).collect();
    b.push(0xCC);
    for (i, x) in b.iter_mut().enumerate().take(16) {
        if FORBIDDEN.contains(x) || (matches!(x, 0xF2 | 0xF3) && i > 0) {
            *x = 0x90;
        }
    }
    // Then the pairs, on the bytes as they now are: FF /2 to /5 (call
    // and jmp, near and far) become FE (#UD), 0F xx as listed above
    // becomes 0F 0B.
    for i in 0..16 {
        let next = b[i + 1];
        if b[i] == 0xFF && (2..=5).contains(&(next >> 3 & 7)) {
            b[i] = 0xFE;
        } else if b[i] == 0x0F && (FORBIDDEN_0F.contains(&next) || next & 0xF0 == 0x80) {
            b[i + 1] = 0x0B;
        }
    }
    if b[0] == 0xF4 {
        // hlt first would end too many runs at once: cmc.
        b[0] = 0xF5;
    }
    b.truncate(16);
    Step { what: What::Random, name: "random", bytes: b, frame, undefined: STATUS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_program_every_time() {
        let a = generate(Mode::Prot32, 77);
        let b = generate(Mode::Prot32, 77);
        assert_eq!(a.steps.len(), STEPS);
        assert!(a.steps.iter().zip(&b.steps).all(|(x, y)| x.bytes == y.bytes && x.frame.regs == y.frame.regs));
        assert_ne!(generate(Mode::Prot32, 78).steps[0].bytes, a.steps[0].bytes);
    }

    #[test]
    fn random_bytes_never_transfer_control() {
        let config = Config { mode: Mode::Prot32, paging: false };
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            let frame = new_frame(&mut rng, config, 0xA040, true);
            let step = random_step(&mut rng, frame);
            let b = &step.bytes;
            assert!(b.iter().all(|x| !FORBIDDEN.contains(x)), "{b:02x?}");
            assert!(b.iter().skip(1).all(|&x| x != 0xF2 && x != 0xF3), "{b:02x?}");
            for w in b.windows(2) {
                assert!(!(w[0] == 0xFF && (2..=5).contains(&(w[1] >> 3 & 7))), "{b:02x?}");
            }
            assert!(step.frame.regs[RCX] < 8);
        }
    }

    #[test]
    fn flavours_come_in_their_shares() {
        let flavours: Vec<Flavour> = (0..400).map(|s| generate(Mode::Long64, s).flavour).collect();
        let within = flavours.iter().filter(|&&f| f == Flavour::Within).count();
        let mixed = flavours.iter().filter(|&&f| f == Flavour::Mixed).count();
        assert!((160..240).contains(&within) && (60..140).contains(&mixed), "{within} {mixed}");
    }
}
