//! Exits, and what the runner does about each one.
//!
//! A backend turns its own exit (2006's `struct kvm_run` or today's) into an
//! [`Exit`] value, in which a string instruction's elements are listed in
//! the order the guest made them, whoever batched them. [`handle`] is then a
//! pure function of that value and the device state: it records the trace
//! and says whether the guest goes on (and with which data) or stops. The
//! tests below drive it with made-up exits; no hypervisor is needed.

use crate::devices::{Devices, OutEffect, cpuid};
use crate::trace::Event;

/// Why `KVM_RUN` returned, as the runner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `out` or `outs`: `data` holds the elements, `size` bytes each.
    IoOut { port: u16, size: u8, data: Vec<u8> },
    /// `in` or `ins`: the guest reads `count` elements of `size` bytes.
    IoIn { port: u16, size: u8, count: u64 },
    /// A write to memory no slot backs.
    MmioWrite { addr: u64, data: Vec<u8> },
    /// A read of `len` bytes of memory no slot backs.
    MmioRead { addr: u64, len: u8 },
    /// `cpuid` (the 2006 ABI's `KVM_EXIT_CPUID`): eax held `leaf`.
    Cpuid { leaf: u32 },
    /// `hlt`.
    Hlt,
    /// A triple fault.
    Shutdown,
    /// An exception the hypervisor gave to userspace.
    Exception { vector: u32, error_code: u32 },
    /// Anything else: the backend's exit reason and its detail.
    Unknown { reason: u32, detail: u64 },
    /// VM entry failed, for this hardware reason.
    FailEntry { reason: u64 },
    /// A signal interrupted `KVM_RUN` (the timeout's timer, usually).
    Interrupted,
    /// The guest can take an interrupt now, as the runner asked
    /// (`KVM_EXIT_IRQ_WINDOW_OPEN`).
    IrqWindowOpen,
    /// The debugger's breakpoint or single step (`KVM_EXIT_DEBUG`): the
    /// run loop records where, and goes on.
    Debug,
}

/// What the backend gives the guest before running it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing but "the instruction is done".
    Done,
    /// The bytes an `in` or `ins` reads, elements in order.
    In(Vec<u8>),
    /// The bytes an MMIO read returns.
    Mmio(Vec<u8>),
    /// eax, ebx, ecx and edx for a `cpuid`.
    Cpuid([u32; 4]),
}

/// Why the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Hlt,
    ExitPort,
    Shutdown,
    Exception,
    Unknown,
    FailEntry,
    Timeout,
}

impl Stop {
    /// Whether the final registers mean anything. They do after `hlt`,
    /// which is complete when KVM exits. At the exit port the `out` is
    /// half done, and whether rip is already past it depends on whether
    /// KVM emulated the instruction; after a shutdown SVM even resets the
    /// registers; a failed entry or a timeout leaves nothing to compare.
    pub fn shows_registers(self) -> bool {
        matches!(self, Stop::Hlt | Stop::Exception)
    }
}

/// The runner's decision after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Resume(Reply),
    Stop(Stop),
}

/// Handles one exit: updates the devices and the trace, and decides.
pub fn handle(exit: Exit, devices: &mut Devices) -> Action {
    match exit {
        Exit::IoOut { port, size, data } => io_out(port, size, &data, devices),
        Exit::IoIn { port, size, count } => {
            let data = (0..count).flat_map(|_| devices.port_in(port, size).to_le_bytes().into_iter().take(size.into()));
            Action::Resume(Reply::In(data.collect()))
        }
        Exit::MmioWrite { addr, data } => {
            devices.mmio_write(addr, &data);
            Action::Resume(Reply::Done)
        }
        Exit::MmioRead { addr, len } => Action::Resume(Reply::Mmio(devices.mmio_read(addr, len))),
        Exit::Cpuid { leaf } => Action::Resume(Reply::Cpuid(cpuid(leaf))),
        Exit::Interrupted | Exit::IrqWindowOpen | Exit::Debug => Action::Resume(Reply::Done),
        Exit::Hlt if devices.halt_waits() => Action::Resume(Reply::Done),
        Exit::Hlt => stop(devices, Event::Hlt, Stop::Hlt),
        Exit::Shutdown => stop(devices, Event::Shutdown, Stop::Shutdown),
        Exit::Exception { vector, error_code } => stop(devices, Event::Exception { vector, error_code }, Stop::Exception),
        Exit::Unknown { reason, detail } => stop(devices, Event::UnknownExit { reason, detail }, Stop::Unknown),
        Exit::FailEntry { reason } => stop(devices, Event::FailEntry(reason), Stop::FailEntry),
    }
}

/// Each element of an `out` or `outs`, in order, until one hits the exit port.
fn io_out(port: u16, size: u8, data: &[u8], devices: &mut Devices) -> Action {
    for element in data.chunks(size.into()) {
        let value = element.iter().rev().fold(0, |value, &b| value << 8 | u32::from(b));
        if devices.port_out(port, size, value) == OutEffect::Exit {
            return Action::Stop(Stop::ExitPort);
        }
    }
    Action::Resume(Reply::Done)
}

fn stop(devices: &mut Devices, event: Event, why: Stop) -> Action {
    devices.record_stop(event);
    Action::Stop(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{CONSOLE_PORT, COUNTER_PORT, ECHO_PORT, EXIT_PORT, MMIO_BASE};

    fn out(port: u16, size: u8, data: &[u8]) -> Exit {
        Exit::IoOut { port, size, data: data.to_vec() }
    }

    #[test]
    fn a_string_out_is_one_event_per_element() {
        let mut d = Devices::default();
        let action = handle(out(ECHO_PORT, 2, &[0x01, 0x02, 0x03, 0x04]), &mut d);
        assert_eq!(action, Action::Resume(Reply::Done));
        assert_eq!(d.trace, [
            Event::Out { port: ECHO_PORT, size: 2, value: 0x0201 },
            Event::Out { port: ECHO_PORT, size: 2, value: 0x0403 },
        ]);
    }

    #[test]
    fn a_string_in_gets_its_elements_in_order() {
        let mut d = Devices::default();
        let action = handle(Exit::IoIn { port: COUNTER_PORT, size: 2, count: 3 }, &mut d);
        assert_eq!(action, Action::Resume(Reply::In(vec![0, 1, 2, 3, 4, 5])));
        assert_eq!(d.trace.len(), 3);
        assert_eq!(d.trace[2], Event::In { port: COUNTER_PORT, size: 2, value: 0x0504 });
    }

    #[test]
    fn an_in_of_zero_elements_reads_nothing() {
        let mut d = Devices::default();
        assert_eq!(handle(Exit::IoIn { port: ECHO_PORT, size: 1, count: 0 }, &mut d), Action::Resume(Reply::In(vec![])));
        assert!(d.trace.is_empty());
    }

    #[test]
    fn the_exit_port_stops_even_inside_a_string() {
        let mut d = Devices::default();
        assert_eq!(handle(out(EXIT_PORT, 1, &[7, 8]), &mut d), Action::Stop(Stop::ExitPort));
        assert_eq!(d.trace, [Event::Exit(7)]);
        assert!(!Stop::ExitPort.shows_registers());
    }

    #[test]
    fn console_writes_are_text() {
        let mut d = Devices::default();
        handle(out(CONSOLE_PORT, 1, b"hi\n"), &mut d);
        assert_eq!(d.trace, [Event::Console(b"hi\n".to_vec())]);
    }

    #[test]
    fn mmio_reads_return_what_mmio_writes_left() {
        let mut d = Devices::default();
        let write = Exit::MmioWrite { addr: MMIO_BASE + 4, data: vec![0x77, 0x66, 0x55, 0x44] };
        assert_eq!(handle(write, &mut d), Action::Resume(Reply::Done));
        let read = handle(Exit::MmioRead { addr: MMIO_BASE + 4, len: 4 }, &mut d);
        assert_eq!(read, Action::Resume(Reply::Mmio(vec![0x77, 0x66, 0x55, 0x44])));
        assert_eq!(d.trace[1].to_string(), "mmio-read 0xc0000004 4 0x44556677");
    }

    #[test]
    fn cpuid_is_answered_but_not_traced() {
        let mut d = Devices::default();
        let action = handle(Exit::Cpuid { leaf: 0x4000_0001 }, &mut d);
        assert_eq!(action, Action::Resume(Reply::Cpuid([0x0002_0614, 0x2006_1210, 0, 0])));
        assert!(d.trace.is_empty());
    }

    #[test]
    fn stops_are_traced_and_say_whether_registers_follow() {
        let cases = [
            (Exit::Hlt, Stop::Hlt, "hlt", true),
            (Exit::Shutdown, Stop::Shutdown, "shutdown", false),
            (Exit::Exception { vector: 6, error_code: 0 }, Stop::Exception, "exception 6 0x00000000", true),
            (Exit::Unknown { reason: 0, detail: 0x30 }, Stop::Unknown, "unknown-exit 0 0x30", false),
            (Exit::FailEntry { reason: 0x21 }, Stop::FailEntry, "fail-entry 0x21", false),
        ];
        for (exit, why, line, registers) in cases {
            let mut d = Devices::default();
            assert_eq!(handle(exit, &mut d), Action::Stop(why));
            assert_eq!(d.trace.iter().map(Event::to_string).collect::<Vec<_>>(), [line]);
            assert_eq!(why.shows_registers(), registers, "{line}");
        }
    }

    #[test]
    fn an_interrupted_run_simply_resumes() {
        let mut d = Devices::default();
        assert_eq!(handle(Exit::Interrupted, &mut d), Action::Resume(Reply::Done));
        assert!(d.trace.is_empty());
    }
}
