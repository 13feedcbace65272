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
            // The time limit wakes the loop too: a guest that never exits to
            // userspace (before it programs the PIT, say) still ends on time.
            let deadline = match (self.devices.next_deadline(), self.timeout) {
                (Some(device), Some(limit)) => Some(device.min(limit)),
                (device, limit) => device.or(limit),
            };
            alarm.set(deadline, now)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::BootState;
    use std::collections::VecDeque;

    /// The hypervisor's part, played from a script of exits.
    #[derive(Default)]
    struct FakeVcpu {
        exits: VecDeque<Exit>,
        /// What `can_inject` answers.
        interruptible: bool,
        /// `request_interrupt_window` of each run.
        windows: Vec<bool>,
        replies: Vec<Reply>,
        injected: Vec<u8>,
    }

    impl Vcpu for FakeVcpu {
        fn memory(&mut self) -> &mut [u8] {
            &mut []
        }
        fn memory_flags(&self) -> i32 {
            0
        }
        fn set_boot_state(&mut self, _: &BootState) -> Result<()> {
            Ok(())
        }
        fn set_cpuid(&mut self, _: &[cpuid::Entry]) -> Result<()> {
            Ok(())
        }
        fn supported_cpuid(&mut self) -> Result<Vec<cpuid::Entry>> {
            Ok(Vec::new())
        }
        fn run(&mut self, request_interrupt_window: bool) -> Result<Exit> {
            self.windows.push(request_interrupt_window);
            Ok(self.exits.pop_front().unwrap_or(Exit::Failed("the script is over".into())))
        }
        fn reply(&mut self, reply: Reply) -> Result<()> {
            self.replies.push(reply);
            Ok(())
        }
        fn can_inject(&mut self) -> bool {
            self.interruptible
        }
        fn interrupt(&mut self, vector: u8) -> Result<()> {
            self.injected.push(vector);
            Ok(())
        }
        fn tsc_khz(&self) -> Option<u32> {
            None
        }

        fn where_it_is(&mut self) -> Result<String> {
            Ok(crate::backend::where_line(0x1000, 0x2000, 2, [0x11, 0, 0, 0], 0, (0x10, 0)))
        }
    }

    fn out(port: u16, value: u8) -> Exit {
        Exit::IoOut { port, size: 1, data: vec![value] }
    }

    /// Linux's 8259 setup with only line 0 unmasked, then the PIT at 250 Hz.
    fn timer_setup() -> Vec<Exit> {
        let mut exits: Vec<Exit> = [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xFE)]
            .into_iter()
            .map(|(port, value)| out(port, value))
            .collect();
        exits.extend([out(0x43, 0x34), out(0x40, 0xA5), out(0x40, 0x12)]);
        exits
    }

    fn machine() -> Machine<Vec<u8>> {
        let table = vec![cpuid::Entry { function: 0, eax: 1, ebx: 0x6874_7541, ..Default::default() }];
        Machine::new(Devices::new(Vec::new()), table, Some(Duration::from_secs(5)))
    }

    fn run(script: Vec<Exit>, interruptible: bool) -> (Ending, FakeVcpu, Machine<Vec<u8>>) {
        let mut vcpu = FakeVcpu { exits: script.into(), interruptible, ..FakeVcpu::default() };
        let mut machine = machine();
        let ending = machine.run(&mut vcpu).unwrap();
        (ending, vcpu, machine)
    }

    #[test]
    fn the_guest_powers_off_through_the_exit_port() {
        let (ending, vcpu, machine) = run(vec![out(0x21, 0xAB), Exit::IoIn { port: 0x21, size: 1, count: 1 }, out(0xF4, 7)], false);
        assert_eq!(ending, Ending::PowerOff(7));
        assert_eq!(vcpu.replies, vec![Reply::Done, Reply::In(vec![0xAB]), Reply::Done]);
        assert_eq!(vcpu.windows.len(), 3, "no run after the exit port's write");
        assert_eq!((machine.stats.exits, machine.stats.io), (3, 3));
    }

    #[test]
    fn a_halted_guest_is_woken_by_the_timer_tick_and_gets_vector_0x30() {
        let mut script = timer_setup();
        script.push(Exit::Hlt { interrupts_enabled: true });
        script.push(out(0x20, 0x60)); // the guest's EOI
        script.push(out(0xF4, 0));
        let (ending, vcpu, machine) = run(script, true);
        assert_eq!(ending, Ending::PowerOff(0));
        assert_eq!(vcpu.injected, vec![0x30]);
        assert_eq!(machine.stats.injected, 1);
        assert!(vcpu.windows.iter().all(|w| !w), "an interruptible guest needs no window");
        assert_eq!(machine.devices.pic.master.isr, 0, "ended by the EOI");
    }

    #[test]
    fn an_uninterruptible_guest_gets_a_window_request_instead() {
        let mut script = timer_setup();
        script.push(Exit::Hlt { interrupts_enabled: true });
        script.push(Exit::IrqWindowOpen);
        let (ending, vcpu, machine) = run(script, false);
        assert!(matches!(ending, Ending::Failed(_)), "the script ran out: {ending:?}");
        assert!(vcpu.injected.is_empty());
        assert_eq!(vcpu.windows.last(), Some(&true), "after the tick, every run asks for the window");
        assert!(machine.devices.pic.has_interrupt(), "the tick still waits");
    }

    #[test]
    fn halting_with_interrupts_off_ends_the_run() {
        let (ending, ..) = run(vec![Exit::Hlt { interrupts_enabled: false }], true);
        assert_eq!(ending, Ending::Halted);
    }

    #[test]
    fn cpuid_is_answered_from_the_table_and_unknown_leaves_are_zero() {
        let script = vec![Exit::Cpuid { leaf: 0, subleaf: 0 }, Exit::Cpuid { leaf: 0x4000_0000, subleaf: 0 }, Exit::Shutdown];
        let (ending, vcpu, _) = run(script, false);
        assert_eq!(ending, Ending::TripleFault);
        assert_eq!(vcpu.replies, vec![Reply::Cpuid([1, 0x6874_7541, 0, 0]), Reply::Cpuid([0; 4])]);
    }

    #[test]
    fn reads_of_unbacked_memory_float_high_and_string_io_reads_each_element() {
        let script = vec![
            Exit::MmioRead { addr: 0xFEE0_0030, len: 4 },
            Exit::IoIn { port: 0x2F8, size: 2, count: 2 },
            Exit::Failed("stop".into()),
        ];
        let (ending, vcpu, _) = run(script, false);
        assert_eq!(ending, Ending::Failed("stop".into()));
        assert_eq!(vcpu.replies, vec![Reply::Mmio(vec![0xFF; 4]), Reply::In(vec![0xFF; 4])]);
    }
}
