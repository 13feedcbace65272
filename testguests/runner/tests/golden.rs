//! The golden traces, against Linux KVM on this machine's `/dev/kvm`.
//!
//! `testguests/golden/NAME.trace` is exactly what
//! `rkvm-run --backend linux-kvm NAME` prints. Where this machine has a
//! usable `/dev/kvm`, every guest runs on it and `goldenfile` compares its
//! trace with the golden file; `UPDATE_GOLDENFILES=1 cargo test -p rkvm-run`
//! rewrites the files instead. Where there is no `/dev/kvm`, the tests that
//! need one say so on stderr and compare nothing; the oracle of record,
//! Linux's kvm_amd inside the L1 test machine (`cargo xtask oracle`),
//! compares every guest there. Run with `--nocapture` to see which guests
//! were compared.

use goldenfile::Mint;
use rkvm_run::backend::Backend;
use rkvm_run::exit::Stop;
use rkvm_run::guests::{GUESTS, Guest};
use rkvm_run::header::{Header, Mode};
use rkvm_run::run::{Options, run};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../golden")
}

fn options(timeout: u64) -> Options {
    Options { backend: Backend::LinuxKvm, timeout: Duration::from_secs(timeout), verbose: false }
}

/// Whether this machine's `/dev/kvm` can run a VM; if not, says why.
fn host_kvm(test: &str) -> bool {
    match Backend::LinuxKvm.open(0x10000, false) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("{test}: no usable /dev/kvm on this machine ({e:#}): compared nothing here; \
                       the L1 oracle (cargo xtask oracle) compares the golden traces");
            false
        }
    }
}

/// The guests that turn on 32-bit or PAE paging themselves.
/// Guests whose 32-bit interrupt handlers return with `iret`, which this
/// host's paravirtual KVM ends with an internal error.
const IRET_FROM_32_BIT_HANDLER: &[&str] = &["rdpmc", "debug-regs", "msr-roundtrip", "irq-timer", "irq-window", "irq-storm", "exceptions32"];

const LEGACY_PAGING: &[&str] =
    &["paging32", "pae", "pf-codes", "pf-pae", "pf-user", "ad-bits", "large-pages", "invlpg", "cr3-switch", "pt-edit", "shadow-bound", "mmu-switch", "dirty-rounds", "migrate-paging"];

/// Why this host's KVM cannot stand in for the oracle on `guest`, if it cannot.
fn host_quirk(guest: &str) -> Option<&'static str> {
    let paravirtual = Path::new("/sys/module/kvm_pvm").exists();
    if paravirtual && guest == "ac-loop" {
        return Some(
            "this host's processor raises the #AC that QEMU's TCG does not, and its paravirtual KVM \
             (kvm_pvm) ends the loop with an internal error where Linux's KVM gives #AC back to the guest; \
             the L1 oracle checks this golden trace",
        );
    }
    if paravirtual && guest == "debug-step" {
        return Some(
            "this host's paravirtual KVM (kvm_pvm) does not stop after the `out` whose completion comes with \
             single-stepping just turned on, where Linux's kvm_amd (and the processor) does; the L1 oracle checks \
             this golden trace",
        );
    }
    if paravirtual && guest == "debug-break" {
        return Some(
            "this host's paravirtual KVM (kvm_pvm) ends the guest's 32-bit `iret` (which sets RF to step over \
             a breakpoint) with an internal error (emulation failure), where Linux's kvm_intel returns; the L1 \
             oracle on bochs-vmx checks this golden trace",
        );
    }
    if paravirtual && IRET_FROM_32_BIT_HANDLER.contains(&guest) {
        return Some(
            "this host's paravirtual KVM (kvm_pvm) ends the guest's first `iret` from a 32-bit interrupt \
             handler with an internal error (emulation failure), where Linux's kvm_amd returns; the L1 oracle \
             checks this golden trace",
        );
    }
    (paravirtual && LEGACY_PAGING.contains(&guest)).then_some(
        "this host's paravirtual KVM (kvm_pvm) triple-faults guests that turn on 32-bit or PAE paging, \
         which Linux's kvm_amd runs; the L1 oracle checks this golden trace",
    )
}

#[test]
fn golden_traces_match_linux_kvm_on_this_host() {
    if !host_kvm("golden_traces_match_linux_kvm_on_this_host") {
        return;
    }
    let mut mint = Mint::new(golden_dir());
    let (mut compared, mut left) = (Vec::new(), Vec::new());
    for embedded in GUESTS.iter().filter(|g| !g.is_seeded()) {
        if let Some(why) = host_quirk(embedded.name) {
            left.push(format!("{}: {why}", embedded.name));
            continue;
        }
        // Guests that end in a timeout say so in their headers; the others
        // get a minute. This host's paravirtual KVM runs migrate-long's
        // copies and loops slowly: 13 to 15 s with the host's two cores
        // busy, past rkvm-run's default of 10.
        let outcome = run(&embedded.guest().unwrap(), &options(60)).unwrap();
        let mut file = mint.new_goldenfile(format!("{}.trace", embedded.name)).unwrap();
        file.write_all(outcome.trace.as_bytes()).unwrap();
        compared.push(embedded.name);
    }
    eprintln!("compared with Linux KVM on this host: {}", compared.join(" "));
    for line in left {
        eprintln!("not compared here: {line}");
    }
    // ac-loop, debug-step and debug-break, and the lists' guests.
    let aside = LEGACY_PAGING.len() + IRET_FROM_32_BIT_HANDLER.len() + 3;
    assert!(compared.len() >= rkvm_run::guests::up_to_stage(None).count() - aside, "ac-loop, debug-step, debug-break and the listed guests aside");
}

#[test]
fn every_guest_has_a_golden_trace_and_every_trace_a_guest() {
    let mut traces: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".trace").map(String::from))
        .collect();
    traces.sort();
    // Seeded guests change their trace with the seed: they have none.
    let (seeded, golden): (Vec<_>, Vec<_>) = GUESTS.iter().partition(|g| g.is_seeded());
    let mut names: Vec<String> = golden.iter().map(|g| g.name.to_string()).collect();
    names.sort();
    assert_eq!(traces, names);
    assert!(seeded.iter().all(|g| g.golden.is_none()));
    for guest in golden {
        let golden = guest.golden.expect("build.rs embeds every golden trace");
        assert!(golden.starts_with(&format!("guest {}\n", guest.name)), "{}", guest.name);
        let last_event = golden.lines().rfind(|l| !l.starts_with("reg ") && !l.starts_with("dump "));
        let stopped = matches!(last_event, Some("hlt" | "shutdown")) || last_event.is_some_and(|l| l.starts_with("exit "));
        // A guest that never stops says so in its header, and only then
        // does its trace end in the runner's timeout.
        let timeout = rkvm_run::header::parse(guest.source).unwrap().timeout;
        let timed_out = timeout.is_some_and(|t| last_event == Some(format!("timeout {t}").as_str()));
        assert!(stopped || timed_out, "{}: a golden trace ends with the guest stopping by itself", guest.name);
        assert!(timeout.is_none() || timed_out, "{}: a guest with a timeout key must end in that timeout", guest.name);
    }
}

#[test]
fn a_guest_that_never_stops_is_stopped_by_the_timeout() {
    if !host_kvm("a_guest_that_never_stops_is_stopped_by_the_timeout") {
        return;
    }
    let header = Header {
        name: "spin".into(),
        stage: 5,
        mode: Mode::Real,
        memory: 0x10000,
        preload: None,
        dump: None,
        timeout: None,
        seed: None,
        dirty_log: false,
        program: None,
        irq_counts: None,
        not_on: None,
        demonstrates: "jmp $".into(),
    };
    let guest = Guest { header, image: vec![0xEB, 0xFE] };
    let started = std::time::Instant::now();
    let outcome = run(&guest, &options(1)).unwrap();
    assert_eq!((outcome.stop, outcome.trace.as_str()), (Stop::Timeout, "guest spin\ntimeout 1\n"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_l1_check_command_passes_up_to_stage_6() {
    if !host_kvm("the_l1_check_command_passes_up_to_stage_6") {
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_rkvm-run"))
        .args(["check", "--backend", "linux-kvm", "--max-stage", "6"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let verdicts: Vec<&str> = text.lines().filter(|l| l.starts_with("RKVM-CHECK")).collect();
    assert!(verdicts.contains(&"RKVM-CHECK ok guest/io-sizes"), "{text}");
    assert!(verdicts.iter().all(|v| v.starts_with("RKVM-CHECK ok guest/")), "{text}");
    assert_eq!(verdicts.len(), 14, "{text}");
    assert!(text.ends_with("rkvm-run check (linux-kvm): 14 passed, 0 failed\n"), "{text}");
    assert!(output.status.success());
}
