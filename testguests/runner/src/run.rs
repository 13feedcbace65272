//! Running one guest: load it, drive the `KVM_RUN` loop, write its trace.

use crate::backend::{Backend, Vcpu};
use crate::backend::Debug;
use crate::devices::{DEBUG_PORT, DIRTY_PORT, Devices};
use crate::exit::{Action, Exit, Reply, Stop, handle};
use crate::guests::Guest;
use crate::layout;
use crate::program::{self, Program, StepResult};
use crate::timer::Timer;
use crate::trace::{self, Event};
use anyhow::Result;
use std::path::Path;
use std::time::{Duration, Instant};

/// How to run guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub backend: Backend,
    pub timeout: Duration,
    /// Print every exit on stderr.
    pub verbose: bool,
}

/// What running a guest gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The whole trace, as `rkvm-run GUEST` prints it.
    pub trace: String,
    pub stop: Stop,
    /// How the run went, for `--repeat`.
    pub timing: Timing,
    /// A guest with a generated program: the program, and the results of
    /// the steps it finished.
    pub steps: Option<(Program, Vec<StepResult>)>,
    /// A guest whose header says `irq-counts:`: its counts and the
    /// hypervisor's.
    pub irq_counts: Option<IrqCounts>,
}

/// The interrupts a guest counted in its handlers, and what the
/// hypervisor counted in debugfs during the run (`None` where debugfs
/// does not show it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqCounts {
    /// The interrupts the guest's handlers took.
    pub taken: u32,
    /// How many of them had waited for the interrupt window.
    pub waited: u32,
    /// The hypervisor's `irq_injections`: vectors it delivered.
    pub injections: Option<u64>,
    /// The hypervisor's `irq_window_exits`: windows it waited for.
    pub window_exits: Option<u64>,
}

impl IrqCounts {
    /// Why the hypervisor's counts cannot be right, if they cannot: every
    /// interrupt the guest took was delivered by the hypervisor, and every
    /// one that waited for the window needed an exit when it opened.
    pub fn shortfall(&self) -> Option<String> {
        let (Some(injections), Some(window_exits)) = (self.injections, self.window_exits) else {
            return Some(format!("debugfs does not show {} (is it mounted on {}?)", crate::debugfs::IRQ_COUNTERS.join(" and "), crate::debugfs::DEBUGFS));
        };
        if injections < self.taken.into() {
            return Some(format!("irq_injections moved by {injections}, fewer than the {} interrupts the guest took", self.taken));
        }
        // An interrupt that waited needed the window to open, and the
        // module hears that with a window exit, unless another exit (a
        // host interrupt's) happens to come after the window opened and
        // before the processor saw it: then the module tells userspace at
        // once, with no window exit. A run sees that a handful of times in
        // thousands, so at most one waited interrupt in a hundred may have
        // gone without.
        let allowed = u64::from(self.waited) / 100;
        if window_exits + allowed < self.waited.into() {
            return Some(format!(
                "irq_window_exits moved by {window_exits}, fewer than the {} interrupts that waited for the window, less {allowed} that another exit may have found the window open for",
                self.waited
            ));
        }
        None
    }
}

impl std::fmt::Display for IrqCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        write!(
            f,
            "the guest took {} interrupts, {} of them after waiting for the window; debugfs irq_injections +{}, irq_window_exits +{}",
            self.taken,
            self.waited,
            shown(self.injections),
            shown(self.window_exits)
        )
    }
}

/// The cost of one run: the time from the first `KVM_RUN` to the stop,
/// the exits userspace saw, and the exits the hypervisor counted (from
/// debugfs, where it shows them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub elapsed: Duration,
    pub exits_to_userspace: u64,
    pub hypervisor_exits: Option<u64>,
    /// The hypervisor's MMU counters during the run
    /// ([`crate::debugfs::MMU_COUNTERS`]), where debugfs shows them.
    pub mmu_counts: [Option<u64>; 6],
}

/// Runs `guest` in a new VM and returns its trace. A seeded guest gets
/// the seed 0.
pub fn run(guest: &Guest, options: &Options) -> Result<Outcome> {
    run_seeded(guest, options, 0)
}

/// Runs `guest` in a new VM with `seed` in the register its header's
/// `seed:` names (a guest without one ignores the seed).
pub fn run_seeded(guest: &Guest, options: &Options, seed: u32) -> Result<Outcome> {
    let header = &guest.header;
    let mut vcpu = options.backend.open(header.memory, header.dirty_log)?;
    layout::prepare(vcpu.memory(), header, &guest.image)?;
    if let Some(addr) = header.program.filter(|&a| a != program::PROGRAM_ADDR) {
        anyhow::bail!("guest {}: `program: {addr:#x}`, but the runner writes programs at {:#x}", header.name, program::PROGRAM_ADDR);
    }
    let generated = header.program.map(|_| program::generate(header.mode, seed));
    if let Some(p) = &generated {
        program::write(vcpu.memory(), p);
    }
    let mut start = layout::start_state(header.mode);
    if let Some(register) = header.seed {
        layout::put_seed(&mut start.regs, register, seed);
    }
    vcpu.set_state(&start)?;
    let mut devices = Devices::default();
    let counted = || crate::debugfs::exits(options.backend, Path::new(crate::debugfs::DEBUGFS), std::process::id());
    let mmu_counted = || {
        crate::debugfs::MMU_COUNTERS
            .map(|c| crate::debugfs::mmu_counter_file(options.backend, c))
            .map(|f| crate::debugfs::counter(options.backend, Path::new(crate::debugfs::DEBUGFS), std::process::id(), f))
    };
    let irq_counted = || {
        crate::debugfs::IRQ_COUNTERS.map(|c| crate::debugfs::counter(options.backend, Path::new(crate::debugfs::DEBUGFS), std::process::id(), c))
    };
    let counted_before = counted();
    let mmu_before = mmu_counted();
    let irq_before = irq_counted();
    let start = Instant::now();
    let options = &Options { timeout: header.timeout.map_or(options.timeout, Duration::from_secs), ..*options };
    let (stop, exits_to_userspace) = drive(vcpu.as_mut(), &mut devices, options, header.dirty_log)?;
    let elapsed = start.elapsed();
    let hypervisor_exits = counted_before.zip(counted()).map(|(before, after)| after.saturating_sub(before));
    let mmu_after = mmu_counted();
    let mmu_counts = core::array::from_fn(|i| mmu_before[i].zip(mmu_after[i]).map(|(b, a)| a.saturating_sub(b)));
    let timing = Timing { elapsed, exits_to_userspace, hypervisor_exits, mmu_counts };
    let irq_after = irq_counted();
    let irq_moved: [Option<u64>; 2] = core::array::from_fn(|i| irq_before[i].zip(irq_after[i]).map(|(b, a)| a.saturating_sub(b)));
    let memory: &[u8] = vcpu.memory();
    let irq_counts = header.irq_counts.map(|addr| {
        let word = |at: u64| {
            let bytes = memory.get(at as usize..at as usize + 4).and_then(|b| <[u8; 4]>::try_from(b).ok());
            bytes.map_or(0, u32::from_le_bytes)
        };
        IrqCounts { taken: word(addr), waited: word(addr + 4), injections: irq_moved[0], window_exits: irq_moved[1] }
    });
    if let Some(region) = header.dump {
        let bytes = &vcpu.memory()[region.addr as usize..(region.addr + region.len) as usize];
        devices.trace.extend(trace::dump(region.addr, bytes));
    }
    let steps = generated.map(|p| {
        let results = program::results(vcpu.memory());
        devices.trace.extend(results.iter().enumerate().map(|(i, r)| Event::Step(program::line(&p, i, r))));
        (p, results)
    });
    if stop.shows_registers() {
        devices.trace.extend(trace::registers(&vcpu.regs()?));
    }
    Ok(Outcome { trace: trace::render(&header.name, &devices.trace), stop, timing, steps, irq_counts })
}

// ANCHOR: hand_over
/// Before each run, as 2006's QEMU did without an in-kernel interrupt
/// controller: the lowest raised vector goes to the hypervisor if the
/// last exit said the guest could take it; if one is left waiting, the
/// runner asks to hear when the guest can.
pub fn hand_over_interrupts(vcpu: &mut dyn Vcpu, devices: &mut Devices) -> Result<()> {
    if let Some(vector) = devices.next_irq()
        && vcpu.interrupt_ready()
    {
        vcpu.interrupt(vector)?;
        devices.irq_taken(vector);
    }
    vcpu.request_interrupt_window(devices.next_irq().is_some());
    Ok(())
}
// ANCHOR_END: hand_over

// ANCHOR: debugger
/// A command the guest wrote to [`DEBUG_PORT`], carried out as a debugger
/// would: through the hypervisor's debug ioctl. Returns false for a byte
/// that is no command (0 off, 1 step, 0x10-0x13 breakpoint at RBX): like
/// a device, the debugger ignores it, and the trace shows the write.
fn debugger_command(vcpu: &mut dyn Vcpu, debug: &mut Debug, command: u8) -> Result<bool> {
    match command {
        0 => *debug = Debug::default(),
        1 => debug.singlestep = true,
        0x10..=0x13 => debug.breakpoints[usize::from(command - 0x10)] = Some(vcpu.regs()?.rbx),
        _ => return Ok(false),
    }
    vcpu.set_debug(debug)?;
    Ok(true)
}

/// The debugger stopped the guest: the trace says where, and a
/// breakpoint that was hit goes away, so that the guest can run past it.
fn debugger_stop(vcpu: &mut dyn Vcpu, devices: &mut Devices, debug: &mut Debug) -> Result<()> {
    let rip = vcpu.regs()?.rip;
    devices.trace.push(Event::Debug(rip));
    if let Some(hit) = debug.breakpoints.iter_mut().find(|b| **b == Some(rip)) {
        *hit = None;
        vcpu.set_debug(debug)?;
    }
    Ok(())
}
// ANCHOR_END: debugger

/// The `KVM_RUN` loop: run, handle the exit, reply, until the guest stops.
/// Returns how it stopped and how many times `KVM_RUN` returned.
fn drive(vcpu: &mut dyn Vcpu, devices: &mut Devices, options: &Options, dirty_log: bool) -> Result<(Stop, u64)> {
    let timer = Timer::start(options.timeout)?;
    let mut runs = 0;
    let mut debug = Debug::default();
    loop {
        hand_over_interrupts(vcpu, devices)?;
        let exit = vcpu.run()?;
        runs += 1;
        if options.verbose {
            eprintln!("rkvm-run: exit {exit:?}");
        }
        if timer.expired() {
            devices.record_stop(Event::Timeout(options.timeout.as_secs()));
            return Ok((Stop::Timeout, runs));
        }
        if dirty_log && matches!(exit, Exit::IoOut { port: DIRTY_PORT, .. }) {
            devices.trace.push(Event::Dirty(vcpu.dirty_log()?));
            vcpu.reply(Reply::Done)?;
            continue;
        }
        if let Exit::IoOut { port: DEBUG_PORT, ref data, .. } = exit
            && debugger_command(vcpu, &mut debug, data.first().copied().unwrap_or(0))?
        {
            vcpu.reply(Reply::Done)?;
            continue;
        }
        if exit == Exit::Debug {
            debugger_stop(vcpu, devices, &mut debug)?;
        }
        match handle(exit, devices) {
            Action::Resume(reply) => vcpu.reply(reply)?,
            Action::Stop(stop) => return Ok((stop, runs)),
        }
    }
}
