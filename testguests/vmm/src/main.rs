//! `rkvm-vmm`: boots a Linux bzImage with an initramfs on Linux's KVM or
//! on rkvm, with the serial console on stdout, and exits with the status
//! the guest wrote to the exit port (see `devices.rs`).

use anyhow::{Context, Result, bail};
use clap::Parser;
use rkvm_vmm::backend::Backend;
use rkvm_vmm::boot::{self, BootImage};
use rkvm_vmm::counters;
use rkvm_vmm::cpuid;
use rkvm_vmm::devices::Devices;
use rkvm_vmm::run::{Ending, Machine, Stats};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The kernel command line for this machine: the console on COM1; no
/// local APIC or I/O APIC (the 8259s take interrupts, the PIT is the
/// clock event device); no PCI bus to probe; no port-0x80 delays; one
/// serial port; reset through the 8042, and a panic resets; and the TSC
/// trusted as the clock (no HPET or ACPI PM timer could check it).
const BASE_CMDLINE: &str = "console=ttyS0 noapic nolapic pci=off io_delay=none 8250.nr_uarts=1 \
                            reboot=k panic=-1 tsc=reliable";

#[derive(Parser)]
#[command(name = "rkvm-vmm", version, about)]
struct Args {
    /// The hypervisor: linux-kvm (/dev/kvm, no in-kernel irqchip) or rkvm (/dev/rkvm, 2006's ABI).
    #[arg(long, default_value = "linux-kvm")]
    backend: String,
    /// The guest kernel, a bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// The initramfs (an uncompressed or compressed cpio archive).
    #[arg(long)]
    initrd: PathBuf,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u64,
    /// More kernel parameters, after the machine's own.
    #[arg(long, default_value = "")]
    append: String,
    /// Stop the guest after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// After the run, list the ports the guest used that no device answers.
    #[arg(long)]
    verbose: bool,
    /// After the run, print the hypervisor's own counters from debugfs
    /// (`rkvm-vmm: hypervisor counters: exits=N ...`).
    #[arg(long)]
    counters: bool,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(status) => std::process::exit(status),
        Err(e) => {
            eprintln!("rkvm-vmm: error: {e:#}");
            std::process::exit(100);
        }
    }
}

fn run(args: &Args) -> Result<i32> {
    let backend = Backend::parse(&args.backend)?;
    let kernel = std::fs::read(&args.kernel).with_context(|| format!("reading {}", args.kernel.display()))?;
    let initrd = std::fs::read(&args.initrd).with_context(|| format!("reading {}", args.initrd.display()))?;
    let mut vcpu = backend.open(args.memory << 20)?;
    let mut table = vcpu.supported_cpuid()?;
    cpuid::filter(&mut table);
    vcpu.set_cpuid(&table)?;
    let tsc_khz = vcpu.tsc_khz().unwrap_or_else(measure_tsc_khz);
    let cmdline = format!("{BASE_CMDLINE} tsc_early_khz={tsc_khz} {}", args.append);
    let flags = vcpu.memory_flags();
    let image = BootImage { kernel: &kernel, initrd: &initrd, cmdline: cmdline.trim() };
    let state = boot::load(vcpu.memory(), flags, &image)?;
    vcpu.set_boot_state(&state)?;
    eprintln!("rkvm-vmm: booting {} on {} with {} MiB: {}", args.kernel.display(), backend.name(), args.memory, image.cmdline);
    let start = Instant::now();
    let mut machine = Machine::new(Devices::new(std::io::stdout()), table, args.timeout.map(Duration::from_secs));
    let ending = machine.run(vcpu.as_mut())?;
    let elapsed = start.elapsed();
    eprintln!("rkvm-vmm: {} after {:.1} s", describe(&ending), elapsed.as_secs_f64());
    eprintln!("rkvm-vmm: {}", summary(&machine.stats));
    if args.counters {
        // Before the VM closes: Linux's KVM shows its counters only while it lives.
        eprintln!("rkvm-vmm: hypervisor counters: {}", counters::line(&counters::read(backend)));
    }
    if !matches!(ending, Ending::PowerOff(_)) {
        match vcpu.where_it_is() {
            Ok(line) => eprintln!("rkvm-vmm: the guest stopped at {line}"),
            Err(e) => eprintln!("rkvm-vmm: where the guest stopped is unknown: {e:#}"),
        }
    }
    if args.verbose && !machine.devices.unclaimed.is_empty() {
        let ports: Vec<String> = machine.devices.unclaimed.iter().map(|p| format!("{p:#x}")).collect();
        eprintln!("rkvm-vmm: ports no device answered: {}", ports.join(" "));
    }
    match ending {
        Ending::PowerOff(status) => Ok(status.into()),
        Ending::Failed(why) => bail!("{why}"),
        _ => Ok(101),
    }
}

fn describe(ending: &Ending) -> String {
    match ending {
        Ending::PowerOff(status) => format!("the guest powered off with status {status}"),
        Ending::Reset => "the guest reset the machine".into(),
        Ending::TripleFault => "the guest triple-faulted (KVM_EXIT_SHUTDOWN)".into(),
        Ending::Halted => "the guest halted with interrupts off".into(),
        Ending::TimedOut => "the guest ran out of time".into(),
        Ending::Failed(why) => format!("the run failed: {why}"),
    }
}

fn summary(s: &Stats) -> String {
    format!(
        "{} exits to userspace: {} port I/O, {} MMIO, {} hlt, {} interrupt windows, {} timer signals, {} cpuid; \
         {} interrupts injected",
        s.exits, s.io, s.mmio, s.hlt, s.irq_windows, s.signals, s.cpuid, s.injected
    )
}

/// The TSC's rate, measured against the monotonic clock over 50 ms, for
/// a hypervisor that does not say it (the guest's TSC is the host's).
fn measure_tsc_khz() -> u32 {
    let start = Instant::now();
    // SAFETY: rdtsc has no preconditions on x86-64.
    let tsc0 = unsafe { std::arch::x86_64::_rdtsc() };
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: as above.
    let tsc1 = unsafe { std::arch::x86_64::_rdtsc() };
    let nanos = start.elapsed().as_nanos().max(1);
    (u128::from(tsc1.wrapping_sub(tsc0)) * 1_000_000 / nanos) as u32
}
