//! Generated programs for the MMIO chaos guests (header `program: ADDR`):
//! steps of instructions aimed at the MMIO window, drawn from the seed,
//! written into guest memory before the run, and the results the guest
//! wrote back, read after it.
//!
//! The layout is `testguests/guests/chaos-mmio.inc`'s (a test below keeps
//! the two in step). `steps` draws the steps, `forms` lists the instructions
//! they are made of, `encode` encodes one with registers that aim its
//! memory operand, `space` says what lies where in the guests' address
//! space. The run's trace then gets one line per step, which says how
//! the step ended and what it changed; two hypervisors that run the same
//! seed must write the same lines.

pub mod encode;
pub mod forms;
pub mod steps;
pub mod rng;
pub mod space;

use crate::header::Mode;
use encode::Frame;
pub use steps::{Flavour, STEPS, generate};

/// The program's layout (see `chaos-mmio.inc`).
pub const P_STEPS: u64 = 0x00;
pub const P_FLAGS: u64 = 0x04;
pub const P_AFTER: u64 = 0x08;
pub const P_DONE: u64 = 0x10;
pub const P_FIRST: u64 = 0x40;
pub const PAGING_FLAG: u32 = 1;
pub const RECORD_SIZE: u64 = 0x100;
pub const R_CODE: u64 = 0x00;
pub const R_STATE: u64 = 0x40;
pub const S_REGS: u64 = 0x00;
pub const S_FLAGS: u64 = 0x80;
pub const S_CODE: u64 = 0x88;
pub const S_SEGS: u64 = 0x90;
pub const S_SIZE: u64 = 0xA0;
pub const RESULTS_ADDR: u64 = 0xC100;
pub const RESULT_SIZE: u64 = 0xC0;
pub const X_VECTOR: u64 = 0x00;
pub const X_ERROR: u64 = 0x08;
pub const X_RIP: u64 = 0x10;
pub const X_CR2: u64 = 0x18;
pub const X_FLAGS: u64 = 0x20;
pub const X_REGS: u64 = 0x28;
pub const NO_VECTOR: u64 = 0xFFFF_FFFF;
pub const STEP_MARK: u32 = 0x5EED_0000;
/// Where every chaos guest's program is (its header says so too).
pub const PROGRAM_ADDR: u64 = 0xA000;

/// The CPU state the program's steps run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Protected mode with paging (long mode always pages).
    pub paging: bool,
}

impl Config {
    pub fn paging(&self) -> bool {
        self.paging || self.mode == Mode::Long64
    }
}

/// What a step's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// An instruction the emulator knows.
    Known,
    /// A valid instruction it does not know.
    Unknown,
    /// An encoding the processor refuses.
    Undefined,
    /// Random bytes.
    Random,
}

impl What {
    pub fn name(self) -> &'static str {
        match self {
            What::Known => "known",
            What::Unknown => "unknown",
            What::Undefined => "undefined",
            What::Random => "random",
        }
    }
}

/// One step: an instruction (or random bytes) and the state it starts in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub what: What,
    /// The mnemonic, for the report.
    pub name: &'static str,
    /// The instruction, without what follows it.
    pub bytes: Vec<u8>,
    pub frame: Frame,
    /// The status flags it may leave either way (SDM Vol. 1, Appendix A).
    pub undefined: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub config: Config,
    pub flavour: Flavour,
    pub steps: Vec<Step>,
}

/// The linear (and guest-physical) address of step `i`'s code.
pub fn code_address(i: usize) -> u64 {
    PROGRAM_ADDR + P_FIRST + i as u64 * RECORD_SIZE + R_CODE
}

/// What follows a step's instruction: a call of the guest's after-step
/// entry through P_AFTER, addressed so that no step can change where it
/// reads (CS in 16- and 32-bit code, an absolute address in 64-bit mode).
pub fn terminator(mode: Mode) -> Vec<u8> {
    let after = PROGRAM_ADDR + P_AFTER;
    match mode {
        Mode::Real => [&[0x2E, 0xFF, 0x16][..], &(after as u16).to_le_bytes()].concat(),
        Mode::Prot32 => [&[0x2E, 0xFF, 0x15][..], &(after as u32).to_le_bytes()].concat(),
        Mode::Long64 => [&[0xFF, 0x14, 0x25][..], &(after as u32).to_le_bytes()].concat(),
    }
}

impl Step {
    /// The step's code field: the instruction, the terminator (random
    /// bytes end at the int3s instead), then int3s.
    fn code(&self, mode: Mode) -> [u8; (R_STATE - R_CODE) as usize] {
        let mut code = [0xCC; (R_STATE - R_CODE) as usize];
        let mut bytes = self.bytes.clone();
        if self.what != What::Random {
            bytes.extend(terminator(mode));
        }
        let n = bytes.len().min(code.len());
        code[..n].copy_from_slice(&bytes[..n]);
        code
    }

    /// Where the step's code ends when the instruction completes: the
    /// return address of the terminator's call.
    pub fn completed_at(&self, mode: Mode) -> u64 {
        self.frame.code + (self.bytes.len() + terminator(mode).len()) as u64
    }
}

/// Writes `program` into guest memory at [`PROGRAM_ADDR`].
pub fn write(memory: &mut [u8], program: &Program) {
    let mut put = |addr: u64, bytes: &[u8]| {
        let at = addr as usize;
        memory[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(PROGRAM_ADDR + P_STEPS, &(program.steps.len() as u32).to_le_bytes());
    let flags = if program.config.paging { PAGING_FLAG } else { 0 };
    put(PROGRAM_ADDR + P_FLAGS, &flags.to_le_bytes());
    for (i, step) in program.steps.iter().enumerate() {
        let record = PROGRAM_ADDR + P_FIRST + i as u64 * RECORD_SIZE;
        put(record + R_CODE, &step.code(program.config.mode));
        let state = record + R_STATE;
        for (r, value) in step.frame.regs.iter().enumerate() {
            put(state + S_REGS + 8 * r as u64, &value.to_le_bytes());
        }
        put(state + S_FLAGS, &step.frame.rflags.to_le_bytes());
        put(state + S_CODE, &step.frame.code.to_le_bytes());
        for (s, seg) in step.frame.segs.iter().enumerate() {
            put(state + S_SEGS + 2 * s as u64, &seg.selector.to_le_bytes());
        }
    }
}

/// How a step ended, as the guest wrote it down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepResult {
    /// The exception's vector, or `None` if the instruction completed.
    pub vector: Option<u8>,
    pub error_code: u32,
    pub rip: u64,
    pub cr2: u64,
    pub rflags: u64,
    pub regs: [u64; 16],
}

/// The results of the steps the guest finished, in order.
pub fn results(memory: &[u8]) -> Vec<StepResult> {
    let qword = |addr: u64| {
        let at = addr as usize;
        memory.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let done = (qword(PROGRAM_ADDR + P_DONE) & 0xFFFF_FFFF).min(STEPS as u64);
    (0..done)
        .map(|i| {
            let r = RESULTS_ADDR + i * RESULT_SIZE;
            let vector = qword(r + X_VECTOR);
            StepResult {
                vector: (vector != NO_VECTOR).then_some(vector as u8),
                error_code: qword(r + X_ERROR) as u32,
                rip: qword(r + X_RIP),
                cr2: qword(r + X_CR2),
                rflags: qword(r + X_FLAGS),
                regs: core::array::from_fn(|n| qword(r + X_REGS + 8 * n as u64)),
            }
        })
        .collect()
}

const NAMES64: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
const NAMES32: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];

/// The exception names of vectors 0 to 31 (Intel SDM Vol. 3A, Table 6-1).
const VECTORS: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "9", "#TS", "#NP", "#SS", "#GP", "#PF", "15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
];

/// The program as text: its flavour and paging, then per step its
/// bytes, the accesses it aims at, and the state it starts in.
pub fn describe(program: &Program) -> String {
    let mut text = format!("flavour {} paging {}\n", program.flavour.name(), program.config.paging());
    let long = program.config.mode == Mode::Long64;
    for (i, step) in program.steps.iter().enumerate() {
        let bytes: Vec<String> = step.bytes.iter().map(|b| format!("{b:02x}")).collect();
        text += &format!("step {i:02} {} {} {} at {:#x}\n", step.what.name(), step.name, bytes.join(" "), step.frame.code);
        for a in &step.frame.accesses {
            let segment = ["es", "cs", "ss", "ds", "fs", "gs"][a.segment];
            text += &format!("  aims at {:#x}, {} bytes through {segment}{}\n", a.at, a.len, if a.write { ", written" } else { "" });
        }
        let names: &[&str] = if long { &NAMES64 } else { &NAMES32 };
        let regs: Vec<String> = names.iter().zip(step.frame.regs).map(|(n, v)| format!("{n}={v:#x}")).collect();
        text += &format!("  {}\n", regs.join(" "));
        let segs: Vec<String> = ["es", "cs", "ss", "ds", "fs", "gs"]
            .iter()
            .zip(step.frame.segs)
            .map(|(n, s)| format!("{n}={:#x} (base {:#x})", s.selector, s.base))
            .collect();
        text += &format!("  rflags={:#x} {}\n", step.frame.rflags, segs.join(" "));
    }
    text
}

/// An exception's name (`#GP`), or `int 0x80` for a vector above 31.
pub fn vector_name(vector: u8) -> String {
    VECTORS.get(usize::from(vector)).map_or(format!("int {vector:#x}"), |n| n.to_string())
}

/// The trace line of step `i`: what it was, how it ended, and what it
/// changed: `step 03 known add 01 58 10 -> done, ebx=0x12345678 flags=0x0846`.
/// A fault says where (`at +0` is the instruction itself), and CR2 for a
/// page fault. Flags the instruction leaves undefined are left out, and
/// only status flags and DF are shown.
pub fn line(program: &Program, i: usize, outcome: &StepResult) -> String {
    let step = &program.steps[i];
    let mode = program.config.mode;
    let bytes: Vec<String> = step.bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut text = format!("step {i:02} {} {} {} ->", step.what.name(), step.name, bytes.join(" "));
    match outcome.vector {
        None if outcome.rip == step.completed_at(mode) => text.push_str(" done"),
        None => text.push_str(&format!(" done at +{:#x}", outcome.rip.wrapping_sub(step.frame.code))),
        Some(v) => {
            let name = vector_name(v);
            text.push_str(&format!(" {name} {:#x} at +{:#x}", outcome.error_code, outcome.rip.wrapping_sub(step.frame.code)));
            if v == 14 {
                text.push_str(&format!(" cr2={:#x}", outcome.cr2));
            }
        }
    }
    let (names, width): (&[&str], usize) = if mode == Mode::Long64 { (&NAMES64, 16) } else { (&NAMES32, 8) };
    for (r, name) in names.iter().enumerate() {
        let (before, after) = (step.frame.regs[r], outcome.regs[r]);
        if before != after {
            text.push_str(&format!(", {name}={after:#0w$x}", w = width + 2));
        }
    }
    let shown = (forms::STATUS | 1 << 10) & !step.undefined;
    text.push_str(&format!(" flags={:#06x}", outcome.rflags & shown));
    text
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
