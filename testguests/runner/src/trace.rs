//! The trace: what a guest did that its surroundings could see, as text.
//!
//! One line per event, in the order the guest caused them. The format is
//! the contract between the runner, the golden files and the oracle, so it
//! is small and fixed; the book's appendix "The trace format" describes it
//! line by line. Two rules keep it readable: each element of a string
//! instruction is its own line (so the trace does not depend on how a
//! hypervisor batches `rep outsb`), and a run of identical lines is printed
//! once, followed by ` (xN)`.

use rkvm::abi::KvmRegs;
use std::fmt;

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The guest wrote `value` (`size` bytes) to a port other than the
    /// console and the exit port.
    Out { port: u16, size: u8, value: u32 },
    /// The guest read `value` from a port.
    In { port: u16, size: u8, value: u32 },
    /// The guest wrote memory no slot backs.
    MmioWrite { addr: u64, len: u8, value: u64 },
    /// The guest read memory no slot backs and got `value`.
    MmioRead { addr: u64, len: u8, value: u64 },
    /// A line of console text (with its newline), or the unfinished rest.
    Console(Vec<u8>),
    /// The guest executed `hlt`.
    Hlt,
    /// The guest wrote `value` to the exit port.
    Exit(u32),
    /// The guest triple-faulted.
    Shutdown,
    /// The hypervisor stopped the guest on an exception (2006's
    /// `KVM_EXIT_EXCEPTION`).
    Exception { vector: u32, error_code: u32 },
    /// An exit the runner does not handle: the backend's exit reason and
    /// the detail it gave (the hardware exit reason, or a suberror).
    UnknownExit { reason: u32, detail: u64 },
    /// The CPU refused to enter the guest: the hardware's reason.
    FailEntry(u64),
    /// The guest did not stop within this many seconds.
    Timeout(u64),
    /// Guest memory the header asked to see, at most 16 bytes per line.
    Dump { addr: u64, bytes: Vec<u8> },
    /// A general register after the guest stopped.
    Reg(&'static str, u64),
    /// The dirty log read at the guest's request: the guest frames written
    /// since the last read.
    Dirty(Vec<u64>),
    /// An interrupt line went up with this vector (the guest asked for it,
    /// or the timer ticked); it reaches the guest when the guest can take it.
    Irq(u8),
    /// The interrupt storm raised its vector for the `raised`-th time, a
    /// multiple of [`crate::devices::STORM_TRACE_EVERY`].
    Storm { vector: u8, raised: u64 },
    /// The interrupt storm stopped after raising its vector `raised` times.
    StormEnd { vector: u8, raised: u64 },
    /// How a step of a generated program ended (`program::line`).
    Step(String),
    /// The debugger stopped the guest (a breakpoint, or a single step)
    /// with RIP here.
    Debug(u64),
}

/// `0x` and exactly `2 * bytes` hex digits.
struct Hex(u64, u8);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#0width$x}", self.0, width = 2 + 2 * usize::from(self.1))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Out { port, size, value } => write!(f, "out {:#06x} {size} {}", port, Hex((*value).into(), *size)),
            Event::In { port, size, value } => write!(f, "in {:#06x} {size} {}", port, Hex((*value).into(), *size)),
            Event::MmioWrite { addr, len, value } => write!(f, "mmio-write {} {len} {}", Hex(*addr, 4), Hex(*value, *len)),
            Event::MmioRead { addr, len, value } => write!(f, "mmio-read {} {len} {}", Hex(*addr, 4), Hex(*value, *len)),
            Event::Console(text) => write!(f, "console \"{}\"", escape(text)),
            Event::Hlt => write!(f, "hlt"),
            Event::Exit(value) => write!(f, "exit {value:#04x}"),
            Event::Shutdown => write!(f, "shutdown"),
            Event::Exception { vector, error_code } => write!(f, "exception {vector} {}", Hex((*error_code).into(), 4)),
            Event::UnknownExit { reason, detail } => write!(f, "unknown-exit {reason} {detail:#x}"),
            Event::FailEntry(reason) => write!(f, "fail-entry {reason:#x}"),
            Event::Timeout(seconds) => write!(f, "timeout {seconds}"),
            Event::Dump { addr, bytes } => {
                write!(f, "dump {}", Hex(*addr, 4))?;
                bytes.iter().try_for_each(|b| write!(f, " {b:02x}"))
            }
            Event::Reg(name, value) => write!(f, "reg {name} {}", Hex(*value, 8)),
            Event::Dirty(frames) => write!(f, "dirty{}", frame_ranges(frames)),
            Event::Irq(vector) => write!(f, "irq {vector:#04x}"),
            Event::Storm { vector, raised } => write!(f, "storm {vector:#04x} {raised}"),
            Event::StormEnd { vector, raised } => write!(f, "storm-end {vector:#04x} {raised}"),
            Event::Step(line) => f.write_str(line),
            Event::Debug(rip) => write!(f, "debug {}", Hex(*rip, 8)),
        }
    }
}

/// Frames as ` 0x10-0x12 0x20` (runs of consecutive frames joined), or
/// ` none`.
fn frame_ranges(frames: &[u64]) -> String {
    if frames.is_empty() {
        return " none".into();
    }
    let mut text = String::new();
    let mut i = 0;
    while let Some(&first) = frames.get(i) {
        let mut last = first;
        while frames.get(i + 1) == Some(&(last + 1)) {
            (last, i) = (last + 1, i + 1);
        }
        text += &if last == first { format!(" {first:#x}") } else { format!(" {first:#x}-{last:#x}") };
        i += 1;
    }
    text
}

/// Console bytes as a quoted string's contents: printable ASCII stays,
/// `"` and `\` are escaped, newline, tab and return are `\n`, `\t`, `\r`,
/// and every other byte is `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut text = String::new();
    for &b in bytes {
        match b {
            b'"' => text.push_str("\\\""),
            b'\\' => text.push_str("\\\\"),
            b'\n' => text.push_str("\\n"),
            b'\t' => text.push_str("\\t"),
            b'\r' => text.push_str("\\r"),
            0x20..=0x7E => text.push(char::from(b)),
            _ => text.push_str(&format!("\\x{b:02x}")),
        }
    }
    text
}

/// The general registers in trace order, as `Reg` events.
pub fn registers(regs: &KvmRegs) -> Vec<Event> {
    let r = regs;
    [
        ("rax", r.rax), ("rbx", r.rbx), ("rcx", r.rcx), ("rdx", r.rdx),
        ("rsi", r.rsi), ("rdi", r.rdi), ("rsp", r.rsp), ("rbp", r.rbp),
        ("r8", r.r8), ("r9", r.r9), ("r10", r.r10), ("r11", r.r11),
        ("r12", r.r12), ("r13", r.r13), ("r14", r.r14), ("r15", r.r15),
        ("rip", r.rip), ("rflags", r.rflags),
    ]
    .into_iter()
    .map(|(name, value)| Event::Reg(name, value))
    .collect()
}

/// Guest memory as `Dump` events of 16 bytes each.
pub fn dump(addr: u64, bytes: &[u8]) -> Vec<Event> {
    (addr..)
        .step_by(16)
        .zip(bytes.chunks(16))
        .map(|(addr, chunk)| Event::Dump { addr, bytes: chunk.to_vec() })
        .collect()
}

/// The whole trace of guest `name`: a `guest` line, then the events, runs
/// of identical lines folded into one.
pub fn render(name: &str, events: &[Event]) -> String {
    let mut text = format!("guest {name}\n");
    let lines: Vec<String> = events.iter().map(Event::to_string).collect();
    let mut rest = lines.as_slice();
    while let Some(line) = rest.first() {
        let run = rest.iter().take_while(|l| *l == line).count();
        match run {
            1 => text.push_str(&format!("{line}\n")),
            n => text.push_str(&format!("{line} (x{n})\n")),
        }
        rest = &rest[run..];
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_has_one_fixed_spelling() {
        let cases = [
            (Event::Out { port: 0xE0, size: 1, value: 0x5A }, "out 0x00e0 1 0x5a"),
            (Event::Out { port: 0x510, size: 2, value: 0xFFFF }, "out 0x0510 2 0xffff"),
            (Event::In { port: 0xE4, size: 4, value: 0x0605_0403 }, "in 0x00e4 4 0x06050403"),
            (Event::MmioWrite { addr: 0xC000_0000, len: 1, value: 0x11 }, "mmio-write 0xc0000000 1 0x11"),
            (Event::MmioRead { addr: 0xC000_0004, len: 8, value: 1 }, "mmio-read 0xc0000004 8 0x0000000000000001"),
            (Event::Console(b"Hi \"x\"\\\n".to_vec()), r#"console "Hi \"x\"\\\n""#),
            (Event::Console(vec![0, 0xE9, b'\t']), r#"console "\x00\xe9\t""#),
            (Event::Hlt, "hlt"),
            (Event::Exit(0x2A), "exit 0x2a"),
            (Event::Shutdown, "shutdown"),
            (Event::Exception { vector: 13, error_code: 0x18 }, "exception 13 0x00000018"),
            (Event::UnknownExit { reason: 0, detail: 0x1E }, "unknown-exit 0 0x1e"),
            (Event::FailEntry(0x8000_0021), "fail-entry 0x80000021"),
            (Event::Timeout(10), "timeout 10"),
            (Event::Reg("r15", 0x0123_4567_89AB_CDEF), "reg r15 0x0123456789abcdef"),
            (Event::Irq(0x20), "irq 0x20"),
            (Event::Storm { vector: 0x30, raised: 2000 }, "storm 0x30 2000"),
            (Event::StormEnd { vector: 0x30, raised: 10_000 }, "storm-end 0x30 10000"),
        ];
        for (event, text) in cases {
            assert_eq!(event.to_string(), text);
        }
    }

    #[test]
    fn dumps_are_cut_into_lines_of_sixteen_bytes() {
        let bytes: Vec<u8> = (0..20).collect();
        let lines: Vec<String> = dump(0x11000, &bytes).iter().map(Event::to_string).collect();
        assert_eq!(lines, [
            "dump 0x00011000 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
            "dump 0x00011010 10 11 12 13",
        ]);
    }

    #[test]
    fn registers_come_in_a_fixed_order() {
        let regs = KvmRegs { rax: 1, r8: 8, rip: 0x8001, rflags: 2, ..KvmRegs::default() };
        let events = registers(&regs);
        assert_eq!(events.len(), 18);
        assert_eq!(events[0], Event::Reg("rax", 1));
        assert_eq!(events[8], Event::Reg("r8", 8));
        assert_eq!(events[16..], [Event::Reg("rip", 0x8001), Event::Reg("rflags", 2)]);
    }

    #[test]
    fn identical_neighbours_fold_into_one_line() {
        let out = Event::Out { port: 0xE0, size: 1, value: 0x2A };
        let mut events = vec![out.clone(); 1000];
        events.push(Event::Hlt);
        events.push(out.clone());
        assert_eq!(render("loop", &events), "guest loop\nout 0x00e0 1 0x2a (x1000)\nhlt\nout 0x00e0 1 0x2a\n");
        assert_eq!(render("none", &[]), "guest none\n");
    }

    #[test]
    fn dirty_frames_print_as_runs() {
        assert_eq!(Event::Dirty(vec![]).to_string(), "dirty none");
        assert_eq!(Event::Dirty(vec![8, 0x10, 0x11, 0x12, 0x20, 0x22, 0x23]).to_string(), "dirty 0x8 0x10-0x12 0x20 0x22-0x23");
    }
}
