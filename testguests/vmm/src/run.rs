//! The vCPU loop: deliver what the 8259s have, enter the guest, handle
//! the exit, repeat; as 2006's qemu-kvm did with no irqchip in the kernel.
//!
//! Before each entry the loop lets the PIT raise its tick on the PIC and
//! arms the alarm for the next tick. If the PIC has an interrupt and the
//! last exit said the guest can take one, the loop acknowledges it and
//! queues its vector with `KVM_INTERRUPT`; if something is still pending,
//! it asks for an interrupt window. A `hlt` with interrupts on is where
//! the guest idles: the loop sleeps until the next tick instead of
//! entering it.

use crate::backend::{Exit, Reply, Vcpu};
use crate::cpuid;
use crate::devices::{Devices, Stop};
use crate::alarm::Alarm;
use anyhow::Result;
use std::io::Write;
use std::time::{Duration, Instant};

/// How the run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest wrote this byte to the exit port.
    PowerOff(u8),
    /// The guest reset the machine through the 8042.
    Reset,
    /// A triple fault (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// `hlt` with interrupts off and nothing to wake it.
    Halted,
    /// The run took longer than allowed.
    TimedOut,
    /// The hypervisor could not go on; says why.
    Failed(String),
}

/// What the run cost, counted in userspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub exits: u64,
    pub io: u64,
    pub mmio: u64,
    pub hlt: u64,
    pub irq_windows: u64,
    /// Returns from `KVM_RUN` because of the alarm.
    pub signals: u64,
    pub cpuid: u64,
    pub injected: u64,
}

impl Stats {
    fn count(&mut self, exit: &Exit) {
        self.exits += 1;
        match exit {
            Exit::IoIn { .. } | Exit::IoOut { .. } => self.io += 1,
            Exit::MmioRead { .. } | Exit::MmioWrite { .. } => self.mmio += 1,
            Exit::Hlt { .. } => self.hlt += 1,
            Exit::IrqWindowOpen => self.irq_windows += 1,
            Exit::Interrupted => self.signals += 1,
            Exit::Cpuid { .. } => self.cpuid += 1,
            _ => {}
        }
    }
}

/// The machine: the vCPU's devices, its CPUID table, the clock.
pub struct Machine<W: Write> {
    pub devices: Devices<W>,
    pub cpuid: Vec<cpuid::Entry>,
    pub stats: Stats,
    start: Instant,
    timeout: Option<Duration>,
}

/// What the loop does after an exit.
enum Next {
    Continue(Reply),
    Stop(Ending),
}

impl<W: Write> Machine<W> {
    pub fn new(devices: Devices<W>, cpuid: Vec<cpuid::Entry>, timeout: Option<Duration>) -> Self {
        Machine { devices, cpuid, stats: Stats::default(), start: Instant::now(), timeout }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Runs the guest until it leaves.
    pub fn run(&mut self, vcpu: &mut dyn Vcpu) -> Result<Ending> {
        let mut alarm = Alarm::for_this_thread()?;
        let ending = loop {
            let now = self.now();
            if self.timeout.is_some_and(|t| now > t) {
                break Ending::TimedOut;
            }
            self.devices.poll_timers(now);
            let window = self.deliver_interrupt(vcpu)?;
            alarm.set(self.devices.next_deadline(), now)?;
            let exit = vcpu.run(window)?;
            self.stats.count(&exit);
            match self.handle(exit) {
                Next::Continue(reply) => vcpu.reply(reply)?,
                Next::Stop(ending) => break ending,
            }
            if let Some(stop) = self.devices.stop() {
                break match stop {
                    Stop::PowerOff(status) => Ending::PowerOff(status),
                    Stop::Reset => Ending::Reset,
                };
            }
        };
        alarm.set(None, self.now())?;
        self.devices.flush_console();
        Ok(ending)
    }

    /// Queues the PIC's interrupt if the guest can take it now; returns
    /// whether to ask for an interrupt window (something still waits).
    fn deliver_interrupt(&mut self, vcpu: &mut dyn Vcpu) -> Result<bool> {
        if self.devices.pic.has_interrupt()
            && vcpu.can_inject()
            && let Some(vector) = self.devices.pic.acknowledge()
        {
            vcpu.interrupt(vector)?;
            self.stats.injected += 1;
        }
        Ok(self.devices.pic.has_interrupt())
    }

    /// One exit, handled: the reply that completes it, or the end.
    fn handle(&mut self, exit: Exit) -> Next {
        let now = self.now();
        let reply = match exit {
            Exit::IoIn { port, size, count } => {
                let mut data = Vec::new();
                for _ in 0..count {
                    let value = self.devices.read(port, size, now);
                    data.extend_from_slice(&value.to_le_bytes()[..usize::from(size)]);
                }
                Reply::In(data)
            }
            Exit::IoOut { port, size, data } => {
                for element in data.chunks(usize::from(size.max(1))) {
                    let mut bytes = [0; 4];
                    bytes[..element.len()].copy_from_slice(element);
                    self.devices.write(port, size, u32::from_le_bytes(bytes), now);
                }
                Reply::Done
            }
            // Nothing is mapped outside RAM: reads float high, writes vanish.
            Exit::MmioRead { len, .. } => Reply::Mmio(vec![0xFF; usize::from(len)]),
            Exit::MmioWrite { .. } => Reply::Done,
            Exit::Cpuid { leaf, subleaf } => Reply::Cpuid(cpuid::lookup(&self.cpuid, leaf, subleaf)),
            Exit::Hlt { interrupts_enabled } => {
                if !interrupts_enabled && !self.devices.pic.has_interrupt() {
                    return Next::Stop(Ending::Halted);
                }
                self.wait_for_interrupt();
                Reply::Done
            }
            Exit::IrqWindowOpen | Exit::Interrupted => Reply::Done,
            Exit::Shutdown => return Next::Stop(Ending::TripleFault),
            Exit::Failed(why) => return Next::Stop(Ending::Failed(why)),
        };
        Next::Continue(reply)
    }

    /// The guest idles in `hlt`: sleep until a device raises a line (only
    /// the PIT does so on its own), at most 100 ms at a time.
    fn wait_for_interrupt(&mut self) {
        self.devices.flush_console();
        loop {
            let now = self.now();
            self.devices.poll_timers(now);
            if self.devices.pic.has_interrupt() || self.timeout.is_some_and(|t| now > t) {
                return;
            }
            let next = self.devices.next_deadline().unwrap_or(now + Duration::from_millis(100));
            std::thread::sleep(next.saturating_sub(now).min(Duration::from_millis(100)));
        }
    }
}
