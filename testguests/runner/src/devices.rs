//! The devices a test guest can talk to, and the trace they keep.
//!
//! A handful of I/O ports and one MMIO window, each with a rule simple
//! enough to state in a line (`testguests/guests/rkvm.inc` states it for
//! the guests). Every answer is a function of what the guest did before,
//! never of time or of the host, so a trace is the same on every machine.
//! Ports no device claims read as all ones, like an ISA bus with nothing
//! on it. The CPUID table lives here too: it is what the runner answers
//! when a 2006 hypervisor hands a `cpuid` to userspace.

use crate::trace::Event;

/// `out` latches the value; `in` returns it (initially 0).
pub const ECHO_PORT: u16 = 0xE0;
/// `in` returns the bytes 0x00, 0x01, 0x02, ...; `out` sets the next byte.
pub const COUNTER_PORT: u16 = 0xE4;
/// No device: guests write here only so that the trace shows a value.
pub const REPORT_PORT: u16 = 0xE8;
/// `out` raises an interrupt line: the runner queues the vector (the low
/// byte) and hands it to the hypervisor (`KVM_INTERRUPT`) when the guest
/// can take it, lowest vector first, like an interrupt controller.
pub const IRQ_PORT: u16 = 0xE6;
/// `out` arms the timer: the next N `hlt`s (N the low byte) each wait for
/// a timer tick, which raises vector [`TIMER_VECTOR`]; a `hlt` with no
/// tick left stops the guest, as always.
pub const TIMER_PORT: u16 = 0xE7;
/// The timer's vector: IRQ 0 of an 8259 programmed as Linux programs it.
pub const TIMER_VECTOR: u8 = 0x20;
/// The interrupt storm. An `out` of 2 or 4 bytes arms it: the low byte
/// is the vector, the next the period N (0 stops the storm). While it is
/// armed, every N-th one-byte `out` to this port (a *beat*) raises the
/// vector, and so does every `hlt` (which then waits for it, as for a
/// timer tick). Beats and the storm's raises are not traced one by one:
/// a `storm` line marks every 1,000th raise, and `storm-end` the total
/// when the storm stops.
pub const STORM_PORT: u16 = 0xE5;
/// A `storm` line every this many raises.
pub const STORM_TRACE_EVERY: u64 = 1000;
/// `out` (in a guest whose header says `dirty-log: yes`) makes the runner
/// read the dirty log of guest memory into the trace (`dirty` lines): the
/// pages written since the last read.
pub const DIRTY_PORT: u16 = 0xEC;
/// `out` is a debugger command: 0 detaches the debugger, 1 single-steps
/// from the next instruction, 0x10 + n (n < 4) puts breakpoint n at the
/// guest linear address in RBX. Each stop is a `debug` line in the trace,
/// with RIP; a breakpoint is removed when it is hit, as a debugger's
/// temporary breakpoint is.
pub const DEBUG_PORT: u16 = 0xEE;
/// `out` writes a character (the low byte) to the console; `in` returns 0xE9.
pub const CONSOLE_PORT: u16 = 0xE9;
/// `out` stops the guest; the trace shows the value.
pub const EXIT_PORT: u16 = 0xF4;
/// The MMIO echo window: reads return what was written; a byte never
/// written reads as its offset in the window.
pub const MMIO_BASE: u64 = 0xC000_0000;
pub const MMIO_SIZE: u64 = 0x1000;

/// The runner's CPUID leaves. Any other leaf reads as zeros on the rkvm
/// backend; guests ask only these (Linux KVM answers others from the host).
pub const CPUID_TABLE: [(u32, [u32; 4]); 2] = [
    // The highest hypervisor leaf, and the signature "rkvm-run CPU".
    (0x4000_0000, [0x4000_0001, u32::from_le_bytes(*b"rkvm"), u32::from_le_bytes(*b"-run"), u32::from_le_bytes(*b" CPU")]),
    // 2.6.20 as bytes 02 06 14, and the date of the 2006 patch.
    (0x4000_0001, [0x0002_0614, 0x2006_1210, 0, 0]),
];

/// eax, ebx, ecx and edx for `cpuid` with `leaf` in eax.
pub fn cpuid(leaf: u32) -> [u32; 4] {
    CPUID_TABLE.iter().find(|(l, _)| *l == leaf).map_or([0; 4], |(_, regs)| *regs)
}

/// The state of every device, and the trace of what the guest did.
pub struct Devices {
    /// Interrupt vectors raised and not yet handed to the hypervisor.
    irqs: std::collections::BTreeSet<u8>,
    /// `hlt`s left that wait for a timer tick.
    ticks: u8,
    storm: Storm,
    echo: u32,
    counter: u8,
    console: Vec<u8>,
    mmio: Vec<u8>,
    pub trace: Vec<Event>,
}

impl Default for Devices {
    fn default() -> Self {
        Devices {
            irqs: Default::default(),
            ticks: 0,
            storm: Storm::default(),
            echo: 0,
            counter: 0,
            console: Vec::new(),
            mmio: (0..MMIO_SIZE).map(|offset| offset as u8).collect(),
            trace: Vec::new(),
        }
    }
}

/// The interrupt storm of [`STORM_PORT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Storm {
    vector: u8,
    /// Every `period`-th beat raises the vector; 0 when the storm is off.
    period: u8,
    /// Beats since the last raise.
    beats: u8,
    /// Vectors raised since the storm was armed.
    raised: u64,
}

/// The low `size` bytes of `value`.
fn truncate(value: u32, size: u8) -> u32 {
    match size {
        1 => value & 0xFF,
        2 => value & 0xFFFF,
        _ => value,
    }
}

/// What an `out` to a port did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutEffect {
    /// The guest goes on.
    Continue,
    /// The guest wrote the exit port: stop.
    Exit,
}

impl Devices {
    /// The guest writes `value`, `size` bytes, to `port`.
    pub fn port_out(&mut self, port: u16, size: u8, value: u32) -> OutEffect {
        let value = truncate(value, size);
        match port {
            CONSOLE_PORT => self.console_byte(value as u8),
            STORM_PORT if size == 1 => self.storm_beat(),
            EXIT_PORT => {
                self.record_stop(Event::Exit(value));
                return OutEffect::Exit;
            }
            _ => {
                self.trace.push(Event::Out { port, size, value });
                match port {
                    ECHO_PORT => self.echo = value,
                    COUNTER_PORT => self.counter = value as u8,
                    IRQ_PORT => self.raise(value as u8),
                    TIMER_PORT => self.ticks = value as u8,
                    STORM_PORT => self.arm_storm(value as u8, (value >> 8) as u8),
                    _ => {}
                }
            }
        }
        OutEffect::Continue
    }

    /// The guest reads `size` bytes from `port`.
    pub fn port_in(&mut self, port: u16, size: u8) -> u32 {
        let value = match port {
            ECHO_PORT => truncate(self.echo, size),
            COUNTER_PORT => (0..size).fold(0, |value, i| value | u32::from(self.next_count()) << (8 * i)),
            CONSOLE_PORT => 0xE9,
            _ => truncate(u32::MAX, size),
        };
        self.trace.push(Event::In { port, size, value });
        value
    }

    /// An interrupt line goes up: the vector waits for the guest. A
    /// vector raised again before the hypervisor took it goes in once, as
    /// an 8259 keeps one request bit per line.
    pub fn raise(&mut self, vector: u8) {
        self.trace.push(Event::Irq(vector));
        self.irqs.insert(vector);
    }

    /// The storm starts with `vector` and `period`, or stops (`period`
    /// 0); a storm already going ends first.
    fn arm_storm(&mut self, vector: u8, period: u8) {
        let old = self.storm;
        if old.period != 0 {
            self.trace.push(Event::StormEnd { vector: old.vector, raised: old.raised });
        }
        self.storm = Storm { vector, period, beats: 0, raised: 0 };
    }

    /// A beat of the storm: every `period`-th raises its vector.
    fn storm_beat(&mut self) {
        if self.storm.period == 0 {
            return;
        }
        self.storm.beats += 1;
        if self.storm.beats == self.storm.period {
            self.storm.beats = 0;
            self.storm_raise();
        }
    }

    /// The storm raises its vector, quietly but for every 1,000th time.
    fn storm_raise(&mut self) {
        let Storm { vector, raised, .. } = self.storm;
        self.irqs.insert(vector);
        self.storm.raised = raised + 1;
        if self.storm.raised.is_multiple_of(STORM_TRACE_EVERY) {
            self.trace.push(Event::Storm { vector, raised: self.storm.raised });
        }
    }

    /// The vector to hand to the hypervisor next, if one waits.
    pub fn next_irq(&self) -> Option<u8> {
        self.irqs.first().copied()
    }

    /// The hypervisor took `vector`.
    pub fn irq_taken(&mut self, vector: u8) {
        self.irqs.remove(&vector);
    }

    /// A `hlt`: if the timer is armed, the guest waits for its tick, which
    /// raises [`TIMER_VECTOR`]; else, in a storm, for the storm's vector;
    /// `false` if neither (the guest stops).
    pub fn halt_waits(&mut self) -> bool {
        if self.ticks > 0 {
            self.ticks -= 1;
            self.raise(TIMER_VECTOR);
            return true;
        }
        if self.storm.period != 0 {
            self.storm_raise();
            return true;
        }
        false
    }

    fn next_count(&mut self) -> u8 {
        let byte = self.counter;
        self.counter = byte.wrapping_add(1);
        byte
    }

    /// A console character; a finished line goes into the trace.
    fn console_byte(&mut self, byte: u8) {
        self.console.push(byte);
        if byte == b'\n' {
            self.trace.push(Event::Console(std::mem::take(&mut self.console)));
        }
    }

    /// The guest stopped: an unfinished console line goes into the trace,
    /// then the event that says why.
    pub fn record_stop(&mut self, why: Event) {
        if !self.console.is_empty() {
            self.trace.push(Event::Console(std::mem::take(&mut self.console)));
        }
        self.trace.push(why);
    }

    /// The guest writes `data` at guest-physical `addr`, where no memory is.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) {
        for (i, &byte) in data.iter().enumerate() {
            if let Some(slot) = self.mmio_byte(addr + i as u64) {
                *slot = byte;
            }
        }
        self.trace.push(Event::MmioWrite { addr, len: data.len() as u8, value: little_endian(data) });
    }

    /// The guest reads `len` bytes at guest-physical `addr`.
    pub fn mmio_read(&mut self, addr: u64, len: u8) -> Vec<u8> {
        let data: Vec<u8> = (0..u64::from(len)).map(|i| self.mmio_byte(addr + i).map_or(0xFF, |b| *b)).collect();
        self.trace.push(Event::MmioRead { addr, len, value: little_endian(&data) });
        data
    }

    fn mmio_byte(&mut self, addr: u64) -> Option<&mut u8> {
        let offset = addr.checked_sub(MMIO_BASE)?;
        self.mmio.get_mut(usize::try_from(offset).ok()?)
    }
}

/// Up to 8 bytes as the little-endian number they make.
fn little_endian(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |value, &b| value << 8 | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_port_returns_what_was_written_cut_to_the_read_size() {
        let mut d = Devices::default();
        assert_eq!(d.port_in(ECHO_PORT, 4), 0);
        assert_eq!(d.port_out(ECHO_PORT, 4, 0x89AB_CDEF), OutEffect::Continue);
        assert_eq!(d.port_in(ECHO_PORT, 1), 0xEF);
        assert_eq!(d.port_in(ECHO_PORT, 2), 0xCDEF);
        d.port_out(ECHO_PORT, 1, 0x1234_565A);
        assert_eq!(d.port_in(ECHO_PORT, 4), 0x5A);
        assert_eq!(d.trace[1], Event::Out { port: ECHO_PORT, size: 4, value: 0x89AB_CDEF });
        assert_eq!(d.trace[4], Event::Out { port: ECHO_PORT, size: 1, value: 0x5A });
    }

    #[test]
    fn the_counter_counts_bytes_and_can_be_set() {
        let mut d = Devices::default();
        assert_eq!(d.port_in(COUNTER_PORT, 1), 0x00);
        assert_eq!(d.port_in(COUNTER_PORT, 2), 0x0201);
        assert_eq!(d.port_in(COUNTER_PORT, 4), 0x0605_0403);
        d.port_out(COUNTER_PORT, 1, 0xFF);
        assert_eq!(d.port_in(COUNTER_PORT, 2), 0x00FF);
    }

    #[test]
    fn unclaimed_ports_read_all_ones_and_are_traced() {
        let mut d = Devices::default();
        assert_eq!(d.port_in(0x510, 2), 0xFFFF);
        assert_eq!(d.port_in(CONSOLE_PORT, 1), 0xE9);
        d.port_out(REPORT_PORT, 4, 7);
        assert_eq!(d.trace.last(), Some(&Event::Out { port: REPORT_PORT, size: 4, value: 7 }));
    }

    #[test]
    fn console_text_becomes_lines_not_port_writes() {
        let mut d = Devices::default();
        for &b in b"ab\ncd" {
            d.port_out(CONSOLE_PORT, 1, u32::from(b));
        }
        assert_eq!(d.trace, [Event::Console(b"ab\n".to_vec())]);
        d.record_stop(Event::Hlt);
        assert_eq!(d.trace[1..], [Event::Console(b"cd".to_vec()), Event::Hlt]);
    }

    #[test]
    fn the_exit_port_stops_with_its_value_after_the_console_text() {
        let mut d = Devices::default();
        d.port_out(CONSOLE_PORT, 1, u32::from(b'x'));
        assert_eq!(d.port_out(EXIT_PORT, 2, 0x1_002A), OutEffect::Exit);
        assert_eq!(d.trace, [Event::Console(b"x".to_vec()), Event::Exit(0x2A)]);
    }

    #[test]
    fn the_mmio_window_echoes_and_its_outside_reads_all_ones() {
        let mut d = Devices::default();
        assert_eq!(d.mmio_read(MMIO_BASE + 0x10, 4), [0x10, 0x11, 0x12, 0x13]);
        d.mmio_write(MMIO_BASE + 2, &[0x33, 0x22]);
        assert_eq!(d.mmio_read(MMIO_BASE, 4), [0x00, 0x01, 0x33, 0x22]);
        assert_eq!(d.mmio_read(MMIO_BASE + MMIO_SIZE - 2, 4), [0xFE, 0xFF, 0xFF, 0xFF]);
        assert_eq!(d.mmio_read(0xFEE0_0000, 1), [0xFF]);
        d.mmio_write(MMIO_BASE - 1, &[1, 2]);
        assert_eq!(d.mmio_read(MMIO_BASE, 1), [2]);
        assert_eq!(d.trace[1], Event::MmioWrite { addr: MMIO_BASE + 2, len: 2, value: 0x2233 });
        assert_eq!(d.trace[2], Event::MmioRead { addr: MMIO_BASE, len: 4, value: 0x2233_0100 });
    }

    #[test]
    fn the_storm_raises_its_vector_every_nth_beat_and_at_every_hlt() {
        let mut d = Devices::default();
        d.port_out(STORM_PORT, 1, 0);
        assert_eq!(d.next_irq(), None, "no storm, no raise");
        d.port_out(STORM_PORT, 2, 0x0330);
        assert_eq!(d.trace, [Event::Out { port: STORM_PORT, size: 2, value: 0x0330 }]);
        for beat in 1..=6 {
            d.port_out(STORM_PORT, 1, 0);
            assert_eq!(d.next_irq(), (beat % 3 == 0).then_some(0x30), "beat {beat}");
            d.irq_taken(0x30);
        }
        assert!(d.halt_waits(), "a hlt waits for the storm");
        assert_eq!(d.next_irq(), Some(0x30));
        d.port_out(STORM_PORT, 2, 0);
        assert!(!d.halt_waits(), "a hlt after the storm stops the guest");
        let lines: Vec<String> = d.trace.iter().map(Event::to_string).collect();
        assert_eq!(lines, ["out 0x00e5 2 0x0330", "out 0x00e5 2 0x0000", "storm-end 0x30 3"]);
    }

    #[test]
    fn the_storm_marks_every_thousandth_raise_and_merges_a_vector_not_yet_taken() {
        let mut d = Devices::default();
        d.port_out(STORM_PORT, 4, 0x0141);
        for _ in 0..2500 {
            d.port_out(STORM_PORT, 1, 0);
        }
        assert_eq!(d.next_irq(), Some(0x41));
        d.irq_taken(0x41);
        assert_eq!(d.next_irq(), None, "2500 raises, never taken: one request");
        d.port_out(STORM_PORT, 2, 0x0142);
        let lines: Vec<String> = d.trace.iter().map(Event::to_string).collect();
        assert_eq!(lines[1..], ["storm 0x41 1000", "storm 0x41 2000", "out 0x00e5 2 0x0142", "storm-end 0x41 2500"]);
    }

    #[test]
    fn the_timer_goes_before_the_storm() {
        let mut d = Devices::default();
        d.port_out(STORM_PORT, 2, 0x0130);
        d.port_out(TIMER_PORT, 1, 1);
        assert!(d.halt_waits());
        assert_eq!(d.next_irq(), Some(TIMER_VECTOR));
        d.irq_taken(TIMER_VECTOR);
        assert!(d.halt_waits());
        assert_eq!(d.next_irq(), Some(0x30));
    }

    #[test]
    fn cpuid_answers_from_the_table_and_zero_elsewhere() {
        let [eax, ebx, ecx, edx] = cpuid(0x4000_0000);
        assert_eq!(eax, 0x4000_0001);
        let signature: Vec<u8> = [ebx, ecx, edx].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(signature, b"rkvm-run CPU");
        assert_eq!(cpuid(0x4000_0001), [0x0002_0614, 0x2006_1210, 0, 0]);
        assert_eq!(cpuid(0), [0; 4]);
    }
}
