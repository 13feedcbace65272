//! `cargo xtask vmm`: the finale's demo. `rkvm-vmm` boots the project's own
//! L1 kernel image, unmodified, as a guest, with a busybox initramfs whose
//! init runs a fork+exec workload and powers off; the guest's console
//! streams through L1's.
//!
//! It runs inside L1: with `--backend linux-kvm` on Linux's own KVM (the
//! oracle, loaded as `oracle` loads it, with or without nested paging),
//! with `--backend rkvm` on the module built from kmod/. The guest's
//! kernel is L1's bzImage: its config (tinyconfig and the fragment in
//! `xtask/l1/kernel.config`) has what a guest on this VMM needs, a 16550
//! console, the 8259 and 8254, and no ACPI to miss.

use crate::initramfs::Initramfs;
use crate::kernel::{self, L1Kernel};
use crate::l1::{self, Check, Job};
use crate::platform::{self, Platform, Vendor};
use crate::{kmod, paths};
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The hypervisor in L1: linux-kvm (Linux's KVM, no in-kernel irqchip) or rkvm (rkvm.ko from kmod/).
    #[arg(long, default_value = "linux-kvm")]
    pub backend: String,
    /// The L1 platform (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    /// For linux-kvm: 1 runs the guest with nested paging (npt/ept), 0 with shadow paging.
    #[arg(long, default_value_t = 1)]
    pub nested_paging: u8,
    /// How many processes the guest's workload forks and execs.
    #[arg(long, default_value_t = Args::DEFAULT_FORKS)]
    pub forks: u32,
    /// More guest kernel parameters (`quiet` spares the boot log's exits).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Seconds before L1 is stopped.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// CPUs of L1: with 2, a guest that holds one CPU still lets L1 report
    /// on the other.
    #[arg(long, default_value_t = 1)]
    pub l1_cpus: u32,
    /// Every 15 s of the run, print rkvm's debugfs counters (rkvm only).
    #[arg(long)]
    pub watch: bool,
    /// Instead: `cargo xtask test`'s job, which boots the guest on Linux's
    /// KVM and then on rkvm in one L1 boot and compares their consoles
    /// (`--forks` defaults to 100 there).
    #[arg(long)]
    pub compare: bool,
}

impl Args {
    const DEFAULT_FORKS: u32 = 500;
}

/// The guest's workload in `cargo xtask test`: 100 fork+exec take about
/// 12 s of L1's time on rkvm under tcg-svm, 7 s on Linux's KVM.
pub const TEST_FORKS: u32 = 100;

/// The two hypervisors of the console comparison, the judge first.
const COMPARED: [&str; 2] = ["linux-kvm", "rkvm"];

/// Marks a line of the guest's console in L1's: `RKVM-GUEST backend| line`.
const GUEST_LINE: &str = "RKVM-GUEST ";

/// The L1 script of the comparison: the guest on Linux's KVM (with nested
/// paging, its usual setting), then on rkvm, each console kept in a file
/// and then printed with its backend's mark, so that L1's own messages do
/// not mix into it.
/// The guest's extra kernel parameters when its consoles are compared: the
/// initramfs is unpacked in its place in the boot, not by a work item
/// whose messages land wherever the scheduler puts them (on a loaded
/// host, `Unpacking initramfs...` came after `workingset: ...` on one
/// backend and before it on the other).
const COMPARED_APPEND: &str = "initramfs_async=0";

fn compare_script(kernel: &L1Kernel, vendor: Vendor, forks: u32, seconds: u64) -> Result<String> {
    let mut s = String::from("status=0\n");
    for backend in COMPARED {
        s += &load_hypervisor(kernel, backend, vendor, 1)?;
        s += &format!(
            "{command} > {backend}.out 2> {backend}.err\n\
             rc=$?\n\
             sed 's/^/{GUEST_LINE}{backend}| /' {backend}.out\n\
             sed 's/^/  {backend}: /' {backend}.err\n\
             if [ $rc -eq 0 ]; then echo 'RKVM-CHECK ok vmm/{backend}: Linux booted, ran {forks} fork+exec and powered off'; \
             else echo \"RKVM-CHECK fail vmm/{backend}: rkvm-vmm exited with status $rc\"; status=1; fi\n",
            command = vmm_command(backend, forks, seconds, COMPARED_APPEND),
        );
        s += &unload_hypervisor(backend, vendor);
    }
    s += "exit $status\n";
    Ok(s)
}

/// `cargo xtask test`'s Linux job: one L1 boot, the guest on Linux's KVM
/// and then on rkvm, each to its power-off; then the check that rkvm's
/// console equals Linux KVM's, line by line, apart from what legitimately
/// varies (see [`normalise`]).
/// L1 boots `kernel`, the guest the bzImage `guest`.
pub fn console_checks(platform: &dyn Platform, kernel: &L1Kernel, guest: &Path, forks: u32) -> Result<Vec<Check>> {
    let vendor = platform.vendor();
    // Bochs runs tens of times slower than QEMU.
    let seconds = if platform.name() == "bochs-vmx" { 1800 } else { 240 };
    let job = Job {
        name: "vmm-compare".into(),
        script: compare_script(kernel, vendor, forks, seconds)?,
        files: vmm_files(kernel, guest, vendor, &COMPARED)?,
        cpus: 1,
        timeout: Duration::from_secs(2 * seconds + 120),
        verbose: false,
    };
    println!("  Linux as a guest of rkvm-vmm: {forks} fork+exec on Linux's kvm-{}, then on rkvm", vendor.kvm_module());
    let mut checks = crate::jobs::run_checks(platform, kernel, &job)?;
    let log = std::fs::read_to_string(paths::target().join("l1/vmm-compare.log"))?;
    let consoles = guest_consoles(&log);
    let check = match (consoles.get("linux-kvm"), consoles.get("rkvm")) {
        (Some(judge), Some(rkvm)) => {
            let name = "vmm/console: the guest's console on rkvm equals Linux KVM's (timings and counts aside)";
            match first_difference(judge, rkvm) {
                None => Check::new(name, true, ""),
                Some(why) => Check::new(name, false, why),
            }
        }
        _ => Check::not_run("vmm/console: the guest's consoles compared", "a console is missing from L1's log"),
    };
    l1::print_check(&check);
    checks.push(check);
    Ok(checks)
}

/// Each backend's guest console, from the marked lines of L1's log.
fn guest_consoles(log: &str) -> BTreeMap<String, Vec<String>> {
    let mut consoles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix(GUEST_LINE) else { continue };
        let Some((backend, text)) = rest.split_once("| ") else { continue };
        consoles.entry(backend.to_string()).or_default().push(text.trim_end().to_string());
    }
    consoles
}

/// A console line with what legitimately varies between two boots made
/// the same: the kernel's timestamp goes, every number (decimal, or hex
/// after `0x`) becomes `#`. What is left is what the guest said.
pub fn normalise(line: &str) -> String {
    let line = line.trim_end();
    // `[   12.345678] ` before a kernel message.
    let line = match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((stamp, rest)) if stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.') => rest,
        _ => line,
    };
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '0' && chars.peek() == Some(&'x') {
            chars.next();
            while chars.peek().is_some_and(char::is_ascii_hexdigit) {
                chars.next();
            }
            out += "0x#";
        } else if c.is_ascii_digit() {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// Kernel messages whose place in the log depends on timing, not on
/// the machine: the TSC becomes a clocksource from a work item, whenever
/// it runs. They are compared as a set, not in place.
const MOVABLE: [&str; 1] = ["clocksource: "];

/// A console's lines, normalised, with their line numbers: those in
/// place, and the [`MOVABLE`] ones apart (sorted).
fn split_console(lines: &[String]) -> (Vec<(usize, String)>, Vec<String>) {
    let (mut fixed, mut movable) = (Vec::new(), Vec::new());
    for (i, line) in lines.iter().enumerate() {
        let n = normalise(line);
        if MOVABLE.iter().any(|m| n.starts_with(m)) {
            movable.push(n);
        } else {
            fixed.push((i + 1, n));
        }
    }
    movable.sort();
    (fixed, movable)
}

/// The first line where `other` differs from `judge` once both are
/// normalised, said in one sentence; `None` if they agree.
pub fn first_difference(judge: &[String], other: &[String]) -> Option<String> {
    let ((judge_fixed, judge_movable), (other_fixed, other_movable)) = (split_console(judge), split_console(other));
    let shown = |lines: &[String], at: Option<&(usize, String)>| match at {
        Some((n, _)) => format!("line {n} `{}`", lines.get(n - 1).map_or("", |l| l.trim_end())),
        None => "(the console ended)".to_string(),
    };
    for i in 0..judge_fixed.len().max(other_fixed.len()) {
        let (a, b) = (judge_fixed.get(i), other_fixed.get(i));
        if a.map(|l| &l.1) != b.map(|l| &l.1) {
            return Some(format!("Linux's KVM {}, rkvm {}", shown(judge, a), shown(other, b)));
        }
    }
    if judge_movable != other_movable {
        let only = |a: &[String], b: &[String]| a.iter().find(|l| !b.contains(l)).cloned().unwrap_or_default();
        return Some(format!(
            "the clocksource lines differ: Linux's KVM has `{}`, rkvm `{}`",
            only(&judge_movable, &other_movable),
            only(&other_movable, &judge_movable)
        ));
    }
    None
}

/// The guest's initramfs: busybox and the guest's init.
fn guest_initramfs() -> Result<Vec<u8>> {
    let mut fs = Initramfs::busybox(&[])?;
    fs.add_file_from("init", &paths::root().join("testguests/vmm/guest/init.sh"), 0o755)?;
    let path = paths::target().join("l1").join("vmm-guest.cpio");
    std::fs::create_dir_all(path.parent().unwrap_or(&paths::target()))?;
    fs.write(&path)?;
    Ok(std::fs::read(&path)?)
}

/// Shell lines that load the hypervisor `backend` in L1.
fn load_hypervisor(kernel: &L1Kernel, backend: &str, vendor: Vendor, nested_paging: u8) -> Result<String> {
    if backend == "rkvm" {
        return Ok("insmod ./rkvm.ko || echo 'RKVM-CHECK fail load-rkvm: insmod failed'\n".into());
    }
    let setting = match vendor {
        Vendor::Amd => format!("npt={nested_paging}"),
        Vendor::Intel => format!("ept={nested_paging}"),
    };
    Ok(crate::oracle::load_kvm(kernel, vendor, &setting))
}

/// The files every VMM job puts into L1: the VMM, the guest's kernel (the
/// bzImage `guest`, L1's own but on the debug kernel) and its initramfs,
/// and the hypervisors `backends` name, built for L1's `kernel`.
pub fn vmm_files(
    kernel: &L1Kernel,
    guest: &Path,
    vendor: Vendor,
    backends: &[&str],
) -> Result<Vec<(String, Vec<u8>, u32)>> {
    let mut files = vec![
        ("rkvm/rkvm-vmm".to_string(), l1::static_binary("rkvm-vmm")?, 0o755),
        ("rkvm/guest-bzImage".to_string(), std::fs::read(guest)?, 0o644),
        ("rkvm/guest.cpio".to_string(), guest_initramfs()?, 0o644),
    ];
    for backend in backends {
        if !matches!(*backend, "linux-kvm" | "rkvm") {
            bail!("unknown backend `{backend}`: use linux-kvm or rkvm");
        }
    }
    if backends.contains(&"rkvm") {
        let build = kmod::Build::for_crate(kernel.build.clone(), paths::root().join("kmod"))?;
        files.push(("rkvm/rkvm.ko".into(), std::fs::read(kmod::build_module(&build)?)?, 0o644));
    }
    if backends.contains(&"linux-kvm") {
        for module in kernel.kvm_modules(vendor.kvm_module()) {
            let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.ko").to_string();
            files.push((format!("rkvm/{name}"), std::fs::read(&module)?, 0o644));
        }
    }
    Ok(files)
}

/// The shell command that runs the VMM on `backend` with the guest's
/// workload of `forks` processes and `seconds` to live.
pub fn vmm_command(backend: &str, forks: u32, seconds: u64, append: &str) -> String {
    format!(
        "./rkvm-vmm --backend {backend} --kernel guest-bzImage --initrd guest.cpio --verbose --timeout {seconds} \
         --append 'RKVM_FORKS={forks} {append}'"
    )
}

/// Shell lines that unload `backend` in L1 (as loaded by [`load_hypervisor`]).
pub fn unload_hypervisor(backend: &str, vendor: Vendor) -> String {
    match backend {
        "rkvm" => "rmmod rkvm\n".into(),
        _ => format!("rmmod kvm_{} kvm irqbypass\n", vendor.kvm_module()),
    }
}

/// The L1 job: load the hypervisor, run the VMM, report.
fn vmm_job(args: &Args, kernel: &L1Kernel, vendor: Vendor) -> Result<Job> {
    let backend = args.backend.as_str();
    let files = vmm_files(kernel, &kernel.bzimage(), vendor, &[backend])?;
    let script = format!(
        "{load}\
         start=$(cut -d' ' -f1 /proc/uptime)\n\
         {watch}{command}\n\
         rc=$?\n\
         [ -d /sys/kernel/debug/rkvm ] && grep -H . /sys/kernel/debug/rkvm/* 2>/dev/null | sed 's/^/rkvm counters: /'\n\
         echo \"RKVM-INFO rkvm-vmm ran $(awk -v s=$start '{{print $1 - s}}' /proc/uptime) s of L1 time\"\n\
         if [ $rc -eq 0 ]; then echo 'RKVM-CHECK ok vmm-{backend}: the guest booted, ran its workload and powered off'; \
         else echo \"RKVM-CHECK fail vmm-{backend}: rkvm-vmm exited with status $rc\"; fi\n\
         exit $rc\n",
        load = load_hypervisor(kernel, backend, vendor, args.nested_paging)?,
        // The guest's own limit comes first, so that rkvm-vmm says where
        // the guest was; L1's, a minute later, catches a hung VMM.
        command = vmm_command(backend, args.forks, args.timeout.saturating_sub(60).max(30), &args.append),
        watch = if args.watch {
            "(while sleep 15; do grep -H . /sys/kernel/debug/rkvm/* 2>/dev/null | tr '\\n' ' '; echo; done) &\n"
        } else {
            ""
        },
    );
    let name = match backend {
        "rkvm" => "vmm-rkvm".to_string(),
        _ => format!("vmm-linux-kvm-nested-paging-{}", args.nested_paging),
    };
    Ok(Job {
        name,
        script,
        files,
        cpus: args.l1_cpus,
        timeout: Duration::from_secs(args.timeout),
        verbose: true,
    })
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let platform = platform::select(args.platform.as_deref())?;
    if args.compare {
        let kernel = kernel::ensure()?;
        let forks = if args.forks == Args::DEFAULT_FORKS { TEST_FORKS } else { args.forks };
        let checks = console_checks(platform.as_ref(), &kernel, &kernel.bzimage(), forks)?;
        println!("== vmm --compare finished in {:.0?}", start.elapsed());
        let passed = checks.iter().filter(|c| c.passed).count();
        println!("{} passed, {} failed", passed, checks.len() - passed);
        if passed < checks.len() {
            bail!("the guest's consoles differ, or a run did not end (see above)");
        }
        return Ok(());
    }
    let kernel = kernel::ensure()?;
    let job = vmm_job(&args, &kernel, platform.vendor())?;
    println!(
        "== vmm: Linux ({}) boots on rkvm-vmm over {} in L1 ({})",
        kernel.bzimage().display(),
        args.backend,
        platform.name()
    );
    let checks = crate::jobs::run_checks(platform.as_ref(), &kernel, &job)?;
    println!("== vmm finished in {:.0?}", start.elapsed());
    let passed = checks.iter().filter(|c| c.passed).count();
    println!("{} passed, {} failed", passed, checks.len() - passed);
    if passed < checks.len() {
        bail!("the guest did not run to its end (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_loads_its_own_hypervisor() {
        let kernel = L1Kernel::tree("/k".into());
        let rkvm = load_hypervisor(&kernel, "rkvm", Vendor::Amd, 1).unwrap();
        assert!(rkvm.starts_with("insmod ./rkvm.ko "), "{rkvm}");
        let amd = load_hypervisor(&kernel, "linux-kvm", Vendor::Amd, 0).unwrap();
        assert!(amd.contains("insmod ./kvm-amd.ko npt=0 "), "{amd}");
        let intel = load_hypervisor(&kernel, "linux-kvm", Vendor::Intel, 1).unwrap();
        assert!(intel.contains("insmod ./kvm-intel.ko ept=1 "), "{intel}");
        assert!(!intel.contains("rkvm.ko"));
    }

    #[test]
    fn normalising_keeps_the_words_and_drops_the_numbers() {
        assert_eq!(normalise("[    1.234567] Memory: 115880K/130552K available"), "Memory: #K/#K available");
        assert_eq!(normalise("BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable"), "BIOS-e#: [mem 0x#-0x#] usable");
        assert_eq!(normalise("RKVM-VMM workload: 100 fork+exec in 7.12 s  "), "RKVM-VMM workload: # fork+exec in #.# s");
        assert_eq!(normalise("[a] b"), "[a] b");
    }

    #[test]
    fn the_first_differing_line_is_named() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let judge = lines(&["[ 0.1] Linux version 6.1", "init after 12.01 s", "powering off"]);
        assert_eq!(first_difference(&judge, &lines(&["[ 0.2] Linux version 6.1", "init after 10.63 s", "powering off"])), None);
        let why = first_difference(&judge, &lines(&["[ 0.2] Linux version 6.1", "unchecked MSR access", "powering off"])).unwrap();
        assert_eq!(why, "Linux's KVM line 2 `init after 12.01 s`, rkvm line 2 `unchecked MSR access`");
        let short = first_difference(&judge, &judge[..2]).unwrap();
        assert!(short.contains("line 3") && short.contains("(the console ended)"), "{short}");
    }

    #[test]
    fn clocksource_lines_may_move() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let judge = lines(&["a", "[ 1.0] clocksource: Switched to clocksource tsc", "b", "c"]);
        assert_eq!(first_difference(&judge, &lines(&["a", "b", "c", "[ 2.0] clocksource: Switched to clocksource tsc"])), None);
        let why = first_difference(&judge, &lines(&["a", "b", "c", "clocksource: Switched to clocksource jiffies"])).unwrap();
        assert!(why.contains("clocksource tsc") && why.contains("jiffies"), "{why}");
    }

    #[test]
    fn consoles_are_cut_out_of_l1s_log() {
        let log = "RKVM-GUEST linux-kvm| a\r\nnoise\nRKVM-GUEST rkvm| b\nRKVM-GUEST linux-kvm| c\n";
        let c = guest_consoles(log);
        assert_eq!(c["linux-kvm"], ["a", "c"]);
        assert_eq!(c["rkvm"], ["b"]);
    }

    #[test]
    fn the_comparison_runs_linux_kvm_first_and_unloads_it() {
        let kernel = L1Kernel::tree("/k".into());
        let s = compare_script(&kernel, Vendor::Amd, 100, 240).unwrap();
        let (kvm, rmmod, rkvm) = (s.find("--backend linux-kvm").unwrap(), s.find("rmmod kvm_amd").unwrap(), s.find("--backend rkvm").unwrap());
        assert!(kvm < rmmod && rmmod < rkvm, "{s}");
        assert!(s.contains("RKVM_FORKS=100") && s.contains("rmmod rkvm"));
    }
}
