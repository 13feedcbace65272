//! The encoder against two decoders: iced-x86, a disassembler nobody here
//! wrote, must read each generated instruction with the length it has and
//! its memory operand at the address the generator aimed at; rkvm's own
//! decoder must know every `Known` step and no `Unknown` one.

use super::super::{What, generate};
use super::*;
use iced_x86::{Decoder, DecoderOptions, InstructionInfoFactory, Register};
use rkvm::emulate::{self, DecodeError};

fn bitness(mode: Mode) -> u32 {
    match mode {
        Mode::Real => 16,
        Mode::Prot32 => 32,
        Mode::Long64 => 64,
    }
}

/// The value iced asks for: a general register (any width) or a segment
/// register's base.
fn register_value(frame: &Frame, long: bool, register: Register) -> Option<u64> {
    let segment = [Register::ES, Register::CS, Register::SS, Register::DS, Register::FS, Register::GS].iter().position(|&s| s == register);
    if let Some(s) = segment {
        return Some(if long && s < 4 { 0 } else { frame.segs[s].base });
    }
    if register == Register::RIP || register == Register::EIP {
        return None;
    }
    let full = register.full_register();
    let index = [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ]
    .iter()
    .position(|&r| r == full)?;
    let value = frame.regs[index];
    Some(match register.size() {
        2 => value & 0xFFFF,
        4 => value & 0xFFFF_FFFF,
        _ => value,
    })
}

fn emulator_mode(mode: Mode) -> emulate::Mode {
    match mode {
        Mode::Real => emulate::Mode::Bits16,
        Mode::Prot32 => emulate::Mode::Bits32,
        Mode::Long64 => emulate::Mode::Bits64,
    }
}

#[test]
fn iced_reads_every_instruction_with_its_length_and_its_target() {
    let mut checked = 0;
    for mode in [Mode::Real, Mode::Prot32, Mode::Long64] {
        let long = mode == Mode::Long64;
        for seed in 0..300 {
            let program = generate(mode, seed);
            for step in program.steps.iter().filter(|s| s.what != What::Random && s.bytes.len() <= 15) {
                let mut decoder = Decoder::with_ip(bitness(mode), &step.bytes, step.frame.code, DecoderOptions::NONE);
                let insn = decoder.decode();
                let text = format!("{:?} seed {seed} step {} {:02x?}", mode, step.name, step.bytes);
                if step.what == What::Undefined {
                    continue;
                }
                assert!(!insn.is_invalid(), "iced cannot decode {text}");
                assert_eq!(insn.len(), step.bytes.len(), "{text}");
                let mut factory = InstructionInfoFactory::new();
                let info = factory.info(&insn);
                let Some(target) = step.frame.accesses.first().map(|a| a.at) else { continue };
                let memory = info.used_memory();
                // String instructions and pushes also use the stack or a
                // second operand: the target is one of them.
                let reached: Vec<u64> = memory
                    .iter()
                    .filter_map(|m| m.virtual_address(0, |r, _, _| register_value(&step.frame, long, r)))
                    .map(|a| if long { a } else { a & 0xFFFF_FFFF })
                    .collect();
                let bit_offset = step.name.starts_with("bt") && step.bytes.iter().any(|&b| matches!(b, 0xA3 | 0xAB | 0xB3 | 0xBB));
                if !bit_offset {
                    assert!(reached.contains(&target) || step.frame.accesses.len() > 1 || string(step), "{text}: {reached:x?}, aimed at {target:#x}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

fn string(step: &super::super::Step) -> bool {
    matches!(step.name, "movs" | "stos" | "lods" | "cmps" | "scas")
}

#[test]
fn rkvm_knows_the_known_steps_and_not_the_unknown_ones() {
    for mode in [Mode::Real, Mode::Prot32, Mode::Long64] {
        for seed in 0..300 {
            let program = generate(mode, seed);
            for step in &program.steps {
                let text = format!("{mode:?} seed {seed} step {} {:02x?}", step.name, step.bytes);
                let decoded = emulate::decode(&step.bytes, emulator_mode(mode));
                match step.what {
                    What::Known if step.bytes.len() > 15 => assert_eq!(decoded.err(), Some(DecodeError::TooLong), "{text}"),
                    What::Known => assert_eq!(decoded.map(|i| i.len), Ok(step.bytes.len()), "{text}"),
                    What::Unknown => assert!(decoded.is_err(), "{text}"),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn accesses_stay_off_the_guests_own_memory() {
    for mode in [Mode::Real, Mode::Prot32, Mode::Long64] {
        for seed in 0..300 {
            let program = generate(mode, seed);
            for step in program.steps.iter().filter(|s| s.what == What::Known) {
                for a in step.frame.accesses.iter().filter(|a| a.write) {
                    for i in 0..a.len {
                        assert!(program.config.may_write(a.at.wrapping_add(i)), "{mode:?} seed {seed} {} at {:#x}", step.name, a.at);
                    }
                }
            }
        }
    }
}

#[test]
fn within_seeds_stay_where_rkvm_and_the_processor_agree() {
    let mut edges = 0;
    for mode in [Mode::Real, Mode::Prot32, Mode::Long64] {
        for seed in 0..200 {
            let program = generate(mode, seed);
            let differ = program.steps.iter().filter(|s| s.frame.crosses() || s.frame.checked_differently()).count();
            if program.flavour == super::super::Flavour::Within {
                assert_eq!(differ, 0, "{mode:?} seed {seed}");
            } else {
                edges += differ;
            }
        }
    }
    assert!(edges > 500, "{edges}");
}

#[test]
fn odd_multipliers_have_inverses() {
    for m in [1u64, 3, 5, 9, 0x1234_5677] {
        assert_eq!(m.wrapping_mul(inverse(m)), 1);
    }
}
