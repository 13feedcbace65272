//! `rkvm-devtest`: checks `/dev/rkvm` from inside L1.
//!
//! It runs in L1's busybox initramfs (so it is linked statically) right
//! after `insmod rkvm.ko`, and prints one line per check on the console:
//! `RKVM-CHECK ok NAME` or `RKVM-CHECK fail NAME: why`, and measurements as
//! `RKVM-INFO` lines. The harness (`cargo xtask test`) collects those lines.
//!
//! Each check names the first stage whose module must pass it.
//! `--max-stage N` runs only the checks of stages 1 to N, so that the
//! module of an earlier stage is not judged by a later stage's checks.
//! `--list` prints the names of the checks it would run, one a line, and
//! runs none: the harness announces them before the module is loaded, so
//! that a check that never reports is shown as not run.

mod harden;
mod hostmem;
mod memory;
mod sys;
mod translate;
mod vcpu;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use sys::{Check, DEVICE, NOT_RUN, Vm, expect_counter};

/// One check: its name, the first stage that must pass it, and its code.
struct CheckDef {
    name: &'static str,
    stage: u32,
    run: fn() -> Check,
}

const fn check(name: &'static str, stage: u32, run: fn() -> Check) -> CheckDef {
    CheckDef { name, stage, run }
}

/// Every check, in the order they run. The leak check comes last, after
/// everything else has had its chance to leak.
const CHECKS: &[CheckDef] = &[
    check("device-node", 3, device_node),
    check("api-version", 3, api_version),
    check("unknown-ioctls-get-enotty", 3, unknown_ioctls),
    check("bad-arguments-get-errnos", 3, bad_arguments),
    check("open-creates-and-close-frees-vms", 3, open_and_close),
    check("thousand-opens-leave-no-vm", 3, many_opens),
    check("memory-is-zeroed-at-its-guest-physical-offset", 3, memory::zeroed_at_its_offset),
    check("mappings-share-guest-memory", 3, memory::mappings_share_memory),
    check("resizing-keeps-contents", 3, memory::resizing_keeps_contents),
    check("memory-outside-every-slot-is-sigbus", 3, memory::outside_is_sigbus),
    check("set-memory-region-errors", 3, memory::region_errors),
    check("overlapping-slots-are-eexist", 3, memory::overlaps),
    check("create-vcpu-errors", 3, vcpu::create_errors),
    check("regs-reset-state-and-round-trip", 3, vcpu::regs_round_trip),
    check("regs-errors", 3, vcpu::regs_errors),
    check("sregs-reset-state-and-round-trip", 3, vcpu::sregs_round_trip),
    check("sregs-errors", 3, vcpu::sregs_errors),
    check("ioctl-arguments-in-guest-memory", 3, vcpu::arguments_in_guest_memory),
    check("threads-share-a-vm", 3, vcpu::threads_share_a_vm),
    check("translate-walks-the-guests-tables", 8, translate::walks_the_guests_tables),
    check("translate-errors", 8, translate::errors),
    check("msrs-round-trip-through-the-backend", 12, vcpu::msrs_round_trip),
    check("slot-larger-than-free-memory-is-enomem-at-once", 3, hostmem::larger_than_free_memory),
    check("a-fatal-signal-ends-a-large-allocation", 3, hostmem::killed_during_allocation),
    check("guest-memory-is-charged-to-the-memory-cgroup", 3, hostmem::charged_to_memory_cgroup),
    check("memory-held-by-another-vm-is-enomem-not-oom", 3, hostmem::filled_by_another_process),
    check("guest-memory-is-left-out-of-core-dumps", 3, harden::guest_memory_left_out_of_core_dumps),
    check("a-task-waiting-for-a-running-vcpu-can-be-killed", 5, harden::waiting_for_a_running_vcpu_is_killable),
    check("thousand-vms-with-memory-leak-nothing", 3, memory::leak_check),
];

fn main() {
    let Args { max_stage, list, leak_vms } = match parse_args(std::env::args().skip(1).collect()) {
        Ok(args) => args,
        Err(why) => {
            eprintln!("rkvm-devtest: {why}");
            std::process::exit(2);
        }
    };
    if let Some(vms) = leak_vms {
        let _ = memory::LEAK_VMS.set(vms);
    }
    if list {
        CHECKS.iter().filter(|c| c.stage <= max_stage).for_each(|c| println!("{}", c.name));
        return;
    }
    let mut failed = 0;
    for c in CHECKS.iter().filter(|c| c.stage <= max_stage) {
        match (c.run)() {
            Ok(()) => println!("RKVM-CHECK ok {}", c.name),
            Err(why) if why.starts_with(NOT_RUN) => println!("RKVM-INFO {} {why}", c.name),
            Err(why) => {
                failed += 1;
                println!("RKVM-CHECK fail {}: {why}", c.name);
            }
        }
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Args {
    /// The last stage whose checks run (every stage when not given).
    max_stage: u32,
    /// Only list the checks.
    list: bool,
    /// How many VMs each round of the leak check opens and closes
    /// (`memory::LEAK_VMS`; the harness asks for fewer under Bochs).
    leak_vms: Option<usize>,
}

const USAGE: &str = "usage: rkvm-devtest [--list] [--max-stage N] [--leak-vms N]";

/// `[--list] [--max-stage N] [--leak-vms N]`, in any order (`--opt=N`
/// too).
fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut parsed = Args { max_stage: u32::MAX, list: false, leak_vms: None };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let mut value = |what: &str| -> Result<usize, String> {
            let text = inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} wants {what}; {USAGE}"))?;
            text.parse().map_err(|_| format!("{flag} wants {what}, not {text:?}"))
        };
        match flag.as_str() {
            "--list" if inline.is_none() => parsed.list = true,
            "--max-stage" => parsed.max_stage = value("a stage number")? as u32,
            "--leak-vms" => match value("a number of VMs")? {
                0 => return Err(format!("--leak-vms wants at least 1 VM; {USAGE}")),
                n => parsed.leak_vms = Some(n),
            },
            _ => return Err(format!("{USAGE}, not {flag:?}")),
        }
    }
    Ok(parsed)
}

/// `/dev/rkvm` is a character device, mode 0660, owned by root:root.
fn device_node() -> Check {
    let meta = std::fs::metadata(DEVICE).map_err(|e| format!("{DEVICE}: {e}"))?;
    if !meta.file_type().is_char_device() {
        return Err(format!("{DEVICE} is not a character device"));
    }
    let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
    if (mode, uid, gid) != (0o660, 0, 0) {
        return Err(format!("mode {mode:o} owner {uid}:{gid}, expected 660 0:0"));
    }
    Ok(())
}

fn api_version() -> Check {
    let vm = Vm::open()?;
    match vm.ioctl(rkvm::abi::KVM_GET_API_VERSION, 0) {
        Ok(2) => Ok(()),
        other => Err(format!("KVM_GET_API_VERSION returned {other:?}, expected Ok(2)")),
    }
}

fn unknown_ioctls() -> Check {
    let vm = Vm::open()?;
    // Another type byte, an unused number of type 0xAE, KVM_GET_API_VERSION
    // with a size field (a different command number altogether), and
    // KVM_GET_REGS with the wrong size, each given a valid buffer.
    let mut buffer = [0u64; 64];
    for cmd in [0x0000_AF01u32, 0x0000_AEFF, 0x8004_AE01, 0xC008_AE7F, 0xC090_AE03, 0] {
        match vm.ioctl_with(cmd, &mut buffer) {
            Err(libc::ENOTTY) => {}
            other => return Err(format!("ioctl {cmd:#x} returned {other:?}, expected ENOTTY")),
        }
    }
    Ok(())
}

/// Every command of the 2006 ABI, given a null or wild pointer, gets an
/// errno back (which one depends on the stage), never a crash.
fn bad_arguments() -> Check {
    let vm = Vm::open()?;
    for nr in 2..=15u32 {
        for size in [0u32, 8, 0x1000] {
            for dir in [1u32, 2, 3] {
                let cmd = dir << 30 | size << 16 | 0xAE << 8 | nr;
                for arg in [0usize, 1, usize::MAX - 4095] {
                    if let Ok(v) = vm.ioctl(cmd, arg) {
                        return Err(format!("ioctl {cmd:#x} with argument {arg:#x} succeeded ({v})"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Each open is a new VM; each close frees exactly its own.
fn open_and_close() -> Check {
    expect_counter("vms", 0, "before any open")?;
    let a = Vm::open()?;
    expect_counter("vms", 1, "after one open")?;
    let b = Vm::open()?;
    expect_counter("vms", 2, "after two opens")?;
    drop(a);
    expect_counter("vms", 1, "after closing the first")?;
    match b.ioctl(rkvm::abi::KVM_GET_API_VERSION, 0) {
        Ok(2) => {}
        other => return Err(format!("the second VM stopped answering after the first closed: {other:?}")),
    }
    drop(b);
    expect_counter("vms", 0, "after closing both")
}

fn many_opens() -> Check {
    for i in 0..1000 {
        let vm = Vm::open().map_err(|e| format!("open number {i}: {e}"))?;
        drop(vm);
    }
    expect_counter("vms", 0, "after 1000 opens and closes")
}

#[cfg(test)]
mod tests {
    use super::{Args, parse_args};

    fn parse(line: &str) -> Result<Args, String> {
        parse_args(line.split_whitespace().map(String::from).collect())
    }

    #[test]
    fn options_come_in_any_order_and_in_either_form() {
        assert_eq!(parse(""), Ok(Args { max_stage: u32::MAX, list: false, leak_vms: None }));
        assert_eq!(parse("--max-stage 5 --list"), Ok(Args { max_stage: 5, list: true, leak_vms: None }));
        assert_eq!(parse("--leak-vms=250 --max-stage=13"), Ok(Args { max_stage: 13, list: false, leak_vms: Some(250) }));
    }

    #[test]
    fn bad_options_say_what_was_wanted() {
        assert!(parse("--max-stage").unwrap_err().contains("wants a stage number"));
        assert!(parse("--max-stage x").unwrap_err().contains("not \"x\""));
        assert!(parse("--leak-vms 0").unwrap_err().contains("at least 1"));
        assert!(parse("--verbose").unwrap_err().starts_with("usage: "));
    }
}
