//! The machine's devices on the I/O port bus, and how the guest leaves.
//!
//! ```text
//! 0x20-0x21, 0xA0-0xA1   8259 master and slave        (pic.rs)
//! 0x40-0x43, 0x61        8254 and port B              (pit.rs)
//! 0x60, 0x64             a stub 8042 keyboard controller: reset only
//! 0x70-0x71              CMOS clock                   (rtc.rs)
//! 0x3F8-0x3FF            COM1, a 16550A on ISA line 4 (vm-superio)
//! 0xF4                   the exit port: the guest powers off
//! 0x80                   POST codes and I/O delays: ignored
//! ```
//!
//! Every other port reads as all ones, as an empty ISA bus does, and
//! takes writes without effect.
//!
//! Leaving: a kernel with no ACPI cannot power a PC off, so the machine
//! has an exit port at 0xF4, where QEMU puts its `isa-debug-exit` device:
//! a byte written there ends the VMM with that byte as exit status. The
//! guest's init writes it with busybox
//! (`printf '\000' | dd of=/dev/port bs=1 seek=244`). A reset (the 8042's
//! pulse-reset command 0xFE on port 0x64, which `reboot=k` uses, and which
//! `panic=-1` leads to) also ends the VMM.
//!
//! The 8042 stub reports its output buffer always full and its input
//! buffer always empty: Linux's i8042 driver then finds "no controller"
//! after 16 reads, and `reboot=k` never waits before writing 0xFE.

use crate::pic::{self, Pic};
use crate::pit::{self, Pit};
use crate::rtc::{self, Rtc};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

pub const COM1: u16 = 0x3F8;
pub const COM1_IRQ: u8 = 4;
pub const EXIT_PORT: u16 = 0xF4;
const I8042_DATA: u16 = 0x60;
const I8042_COMMAND: u16 = 0x64;
/// The 8042 command that pulses the processor's reset line.
const I8042_RESET: u8 = 0xFE;
/// Output buffer full, input buffer empty.
const I8042_STATUS: u8 = 0x01;
const POST_PORT: u16 = 0x80;

/// How the guest left the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A byte written to the exit port.
    PowerOff(u8),
    /// The 8042 reset command.
    Reset,
}

/// The serial port's interrupt output, seen by the run loop: vm-superio
/// calls `trigger` when the 16550 raises its interrupt.
#[derive(Clone, Default)]
pub struct IrqLine(Rc<Cell<bool>>);

impl Trigger for IrqLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.set(true);
        Ok(())
    }
}

impl IrqLine {
    /// Whether the device raised its interrupt since the last call.
    fn take(&self) -> bool {
        self.0.replace(false)
    }
}

/// The console: the serial port's output, written to stdout a line at a
/// time (vm-superio flushes after every byte; that would be a system call
/// per character).
pub struct Console<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> Console<W> {
    pub fn new(out: W) -> Self {
        Console { out, line: Vec::new() }
    }

    /// Writes out whatever is waiting, complete line or not.
    pub fn flush_all(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.line)?;
        self.line.clear();
        self.out.flush()
    }
}

impl<W: Write> Write for Console<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    /// Writes out every complete line (or everything, past 4 KiB).
    fn flush(&mut self) -> std::io::Result<()> {
        let end = match self.line.iter().rposition(|&b| b == b'\n') {
            _ if self.line.len() >= 4096 => Some(self.line.len()),
            newline => newline.map(|i| i + 1),
        };
        if let Some(end) = end {
            self.out.write_all(&self.line[..end])?;
            self.line.drain(..end);
            self.out.flush()?;
        }
        Ok(())
    }
}

/// Every device of the machine.
pub struct Devices<W: Write> {
    pub pic: Pic,
    pub pit: Pit,
    rtc: Rtc,
    serial: Serial<IrqLine, NoEvents, Console<W>>,
    serial_irq: IrqLine,
    stop: Option<Stop>,
    /// Ports nobody answers that the guest used, for `--verbose`.
    pub unclaimed: BTreeSet<u16>,
}

impl<W: Write> Devices<W> {
    pub fn new(console: W) -> Self {
        let serial_irq = IrqLine::default();
        Devices {
            pic: Pic::default(),
            pit: Pit::default(),
            rtc: Rtc::default(),
            serial: Serial::new(serial_irq.clone(), Console::new(console)),
            serial_irq,
            stop: None,
            unclaimed: BTreeSet::new(),
        }
    }

    /// An `in` of `size` bytes from `port` at time `now`.
    pub fn read(&mut self, port: u16, size: u8, now: Duration) -> u32 {
        let byte = match port {
            pic::MASTER_PORT | 0x21 | pic::SLAVE_PORT | 0xA1 => self.pic.read(port),
            0x40..=0x42 | pit::PORT_B => self.pit.read(port, now),
            rtc::DATA_PORT => self.rtc.read_data(&Rtc::host_time()),
            I8042_COMMAND => I8042_STATUS,
            I8042_DATA => 0,
            COM1..=0x3FF => {
                let value = self.serial.read((port - COM1) as u8);
                self.route_serial_irq();
                value
            }
            _ => {
                self.unclaimed.insert(port);
                return all_ones(size);
            }
        };
        // An 8-bit device on a wider access: the upper bytes float high.
        u32::from(byte) | (all_ones(size) & !0xFF)
    }

    /// An `out` of `size` bytes of `value` to `port` at time `now`.
    pub fn write(&mut self, port: u16, size: u8, value: u32, now: Duration) {
        let byte = value as u8;
        match port {
            pic::MASTER_PORT | 0x21 | pic::SLAVE_PORT | 0xA1 => self.pic.write(port, byte),
            0x40..=0x43 | pit::PORT_B => self.pit.write(port, byte, now),
            rtc::INDEX_PORT => self.rtc.write_index(byte),
            rtc::DATA_PORT => self.rtc.write_data(byte),
            I8042_COMMAND if byte == I8042_RESET => self.stop = Some(Stop::Reset),
            I8042_COMMAND | I8042_DATA | POST_PORT => {}
            COM1..=0x3FF => {
                // Writing to stdout failed: the byte is lost, the guest goes on.
                let _ = self.serial.write((port - COM1) as u8, byte);
                self.route_serial_irq();
            }
            EXIT_PORT => self.stop = Some(Stop::PowerOff(byte)),
            _ if size > 0 => {
                self.unclaimed.insert(port);
            }
            _ => {}
        }
    }

    /// The 16550's interrupt, as an edge on ISA line 4.
    fn route_serial_irq(&mut self) {
        if self.serial_irq.take() {
            self.pic.pulse(COM1_IRQ);
        }
    }

    /// Lets the timer raise its line if a tick fell due by `now`.
    pub fn poll_timers(&mut self, now: Duration) {
        if self.pit.poll(now) {
            self.pic.pulse(0);
        }
    }

    /// When a device next wants the vCPU's attention.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.pit.next_irq()
    }

    /// Whether, and how, the guest left.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// Writes out the console's last, incomplete line.
    pub fn flush_console(&mut self) {
        let _ = self.serial.writer_mut().flush_all();
    }
}

fn all_ones(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> Devices<Vec<u8>> {
        Devices::new(Vec::new())
    }

    fn console_text(d: &mut Devices<Vec<u8>>) -> String {
        d.flush_console();
        String::from_utf8(d.serial.writer().out.clone()).unwrap()
    }

    #[test]
    fn serial_output_reaches_the_console_and_raises_line_4_when_enabled() {
        let mut d = devices();
        let now = Duration::ZERO;
        for (port, value) in [(0x21, 0x00), (0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xEF)] {
            d.write(port, 1, value, now);
        }
        for byte in b"hi\n" {
            d.write(COM1, 1, u32::from(*byte), now);
        }
        assert_eq!(console_text(&mut d), "hi\n");
        assert!(!d.pic.has_interrupt(), "IER is clear: no interrupt");
        d.write(COM1 + 1, 1, 0x02, now); // IER: transmitter empty
        assert_eq!(d.pic.acknowledge(), Some(0x34));
        assert_eq!(d.read(COM1 + 2, 1, now) & 0x0F, 0x02, "IIR: transmitter empty");
    }

    #[test]
    fn the_console_writes_whole_lines_and_the_rest_on_demand() {
        let mut console = Console::new(Vec::new());
        console.write_all(b"ab").unwrap();
        console.flush().unwrap();
        assert!(console.out.is_empty());
        console.write_all(b"c\nd").unwrap();
        console.flush().unwrap();
        assert_eq!(console.out, b"abc\n");
        console.flush_all().unwrap();
        assert_eq!(console.out, b"abc\nd");
        console.write_all(&[b'x'; 4096]).unwrap();
        console.flush().unwrap();
        assert_eq!(console.out.len(), 5 + 4096, "a long line goes out unfinished");
    }

    #[test]
    fn the_guest_leaves_through_the_exit_port_or_a_reset() {
        let mut d = devices();
        assert_eq!(d.stop(), None);
        d.write(EXIT_PORT, 1, 0x03, Duration::ZERO);
        assert_eq!(d.stop(), Some(Stop::PowerOff(3)));
        let mut d = devices();
        assert_eq!(d.read(I8042_COMMAND, 1, Duration::ZERO) & 0x02, 0, "the input buffer is empty: no wait");
        d.write(I8042_COMMAND, 1, 0xFE, Duration::ZERO);
        assert_eq!(d.stop(), Some(Stop::Reset));
    }

    #[test]
    fn the_timer_tick_reaches_the_pic() {
        let mut d = devices();
        let ms = Duration::from_millis;
        d.write(0x21, 1, 0xFE, ms(0));
        for (port, value) in [(0x43, 0x34), (0x40, 0xA5), (0x40, 0x12)] {
            d.write(port, 1, value, ms(0));
        }
        assert_eq!(d.next_deadline().map(|t| t.as_micros()), Some(4000));
        d.poll_timers(ms(2));
        assert!(!d.pic.has_interrupt());
        d.poll_timers(ms(5));
        assert_eq!(d.pic.acknowledge(), Some(0x00), "vector base 0 before initialization");
    }

    #[test]
    fn nobody_answers_other_ports() {
        let mut d = devices();
        assert_eq!(d.read(0x2F8, 1, Duration::ZERO), 0xFF);
        assert_eq!(d.read(0xCFC, 4, Duration::ZERO), 0xFFFF_FFFF);
        assert_eq!(d.read(0x21, 2, Duration::ZERO), 0xFF00, "an 8-bit device read 16 bits wide");
        assert_eq!(d.unclaimed.iter().copied().collect::<Vec<_>>(), vec![0x2F8, 0xCFC]);
    }
}
