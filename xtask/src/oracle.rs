//! `cargo xtask oracle` and `cargo xtask bless`: Linux's own KVM as the
//! judge of the golden traces.
//!
//! A golden trace counts only if a hypervisor nobody here wrote produces it.
//! `oracle` boots L1 with Linux's KVM modules from the L1 kernel build
//! (kvm-amd on `tcg-svm`, kvm-intel on `bochs-vmx`) and runs every test
//! guest through `rkvm-run check --backend linux-kvm`, twice: with nested
//! paging (npt=1 / ept=1) and with shadow paging (npt=0 / ept=0). Where the
//! host's own `/dev/kvm` is a hardware KVM, the guests run there too.
//! `bless` rewrites the golden files from what Linux KVM did in L1 (all of
//! them, or those `--guest` names).
//!
//! A guest whose header says `not-on: PLATFORM: REASON` is not run on that
//! platform by either: `oracle` lists it as not run, with the reason, and
//! `bless` leaves its golden file alone.

use crate::kernel::{self, L1Kernel};
use crate::l1::{self, Check, Job};
use crate::platform::{self, Vendor};
use crate::paths;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The L1 platform (tcg-svm runs kvm-amd, bochs-vmx runs kvm-intel).
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(clap::Args)]
pub struct BlessArgs {
    /// The L1 platform whose Linux KVM writes the golden traces.
    #[arg(long)]
    pub platform: Option<String>,
    /// Bless only this guest (repeat for several); the other golden files
    /// are left as they are.
    #[arg(long = "guest", value_name = "NAME")]
    pub guests: Vec<String>,
}

/// The module parameter that turns nested paging on and off.
fn paging_parameter(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Amd => "npt",
        Vendor::Intel => "ept",
    }
}

/// Shell lines that load Linux's KVM for `vendor` with `param=value`.
pub fn load_kvm(kernel: &L1Kernel, vendor: Vendor, setting: &str) -> String {
    let mut lines = String::new();
    for module in kernel.kvm_modules(vendor.kvm_module()) {
        let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let extra = if name.starts_with("kvm-") { setting } else { "" };
        lines += &format!("insmod ./{name} {extra} || echo 'RKVM-CHECK fail load-{name}: insmod failed'\n");
    }
    lines
}

/// The job: Linux KVM loaded twice, every guest checked each time.
fn oracle_job(kernel: &L1Kernel, vendor: Vendor, body: impl Fn(&str) -> String) -> Result<Job> {
    let param = paging_parameter(vendor);
    let vendor_module = format!("kvm_{}", vendor.kvm_module());
    let mut script = String::from("status=0\necho 'RKVM-PLAN job dmesg-clean'\n");
    for value in [1, 0] {
        let setting = format!("{param}={value}");
        script += &load_kvm(kernel, vendor, &setting);
        script += &body(&setting);
        script += &format!("rmmod {vendor_module} kvm irqbypass\n");
    }
    script += DMESG_CHECK;
    let mut files = vec![("rkvm/rkvm-run".into(), l1::static_binary("rkvm-run")?, 0o755)];
    for module in kernel.kvm_modules(vendor.kvm_module()) {
        let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.ko").to_string();
        files.push((format!("rkvm/{name}"), std::fs::read(&module)?, 0o644));
    }
    Ok(Job { name: "oracle".into(), script, files, cpus: oracle_cpus(vendor), timeout: Duration::from_secs(900), verbose: false })
}

/// L1's CPUs for the oracle. One, except on Intel (Bochs): there a host
/// timer interrupt does not take the CPU back from a guest that runs with
/// interrupts off (see [`left_out`]), and `migrate` stops its source guest
/// with a signal that must land while the guest runs: on one CPU the
/// thread that sends it never gets to run before `migrate-mem` ends
/// (with ept=1, where that guest makes no exit for a long stretch), so
/// the signal comes from a second CPU.
fn oracle_cpus(vendor: Vendor) -> u32 {
    match vendor {
        Vendor::Amd => 1,
        Vendor::Intel => 2,
    }
}

const DMESG_CHECK: &str = r#"
bad=$(dmesg | grep -E 'WARNING:|BUG:|Oops|Call Trace|general protection' | head -n 5)
if [ -z "$bad" ]; then echo "RKVM-CHECK ok dmesg-clean"; else echo "RKVM-CHECK fail dmesg-clean: $(echo "$bad" | tr '\n' '|')"; fi
exit $status
"#;

/// Guests a platform cannot judge, as `rkvm-run` options. Bochs does not
/// turn a host timer interrupt into a VM exit while a guest spins with
/// interrupts off, so under Linux's kvm_intel the `spin` guest holds L1's
/// CPU until an RCU-stall NMI, or for ever with one CPU (rkvm avoids this
/// with the VMX-preemption timer; Linux's KVM does not use it there). And
/// `ac-loop` shows an architectural loop that Linux's KVM cuts short;
/// `rdpmc` and `debug-step` meet two differences of kvm_intel's from the
/// kvm_amd that made their goldens (rkvm matches the goldens on VMX).
fn left_out(platform: &str) -> Vec<&'static str> {
    if platform == "bochs-vmx" {
        println!("  leaving out guest `spin`: under Bochs, Linux's kvm_intel never takes it back from a guest spinning with interrupts off");
        println!(
            "  leaving out guest `ac-loop`: Linux's kvm_intel ends its #AC-within-#AC loop with KVM_EXIT_INTERNAL_ERROR \
             (simultaneous exceptions), where the processor and rkvm go on delivering #AC; its golden trace comes from \
             kvm_amd under TCG, which raises no #AC"
        );
        println!(
            "  leaving out guest `rdpmc`: under Bochs, Linux's kvm_intel makes the guest's `rdpmc` of counter 0 a #GP \
             (Bochs's processor has no performance counters for it to virtualize); the golden trace comes from \
             kvm_amd, which reads 0 there, as rkvm does on both backends"
        );
        println!(
            "  leaving out guest `debug-step`: Linux's kvm_intel (6.1) stops its debugger twice on the instruction \
             after an `out` it completes while single-stepping; the processor, kvm_amd (whose golden trace it is) and \
             rkvm stop once"
        );
        vec!["spin", "ac-loop", "rdpmc", "debug-step"]
    } else {
        Vec::new()
    }
}

/// `left_out` as an `rkvm-run` option, with the platform (whose guests
/// left out by their headers are not run) and its guest timeout.
fn except_option(guests: &[&str], platform: &str) -> String {
    let except = if guests.is_empty() { String::new() } else { format!("--except {} ", guests.join(",")) };
    match crate::jobs::guest_timeout(platform) {
        Some(seconds) => format!("{except}--platform {platform} --timeout {seconds}"),
        None => format!("{except}--platform {platform}"),
    }
}

/// Shell lines that announce a check per guest for `setting`
/// (`RKVM-PLAN oracle npt=1/guest/hlt`), and one per guest that `migrate`
/// moves (`npt=1/migrate/migrate-mem`), but `left_out`'s: a guest that
/// `rkvm-run check` does not run there (its header's `not-on:`) is then
/// listed as not run, with the reason it gives.
fn plan(setting: &str, left_out: &[&str]) -> String {
    let skip = if left_out.is_empty() { "-".to_string() } else { left_out.join("|") };
    format!(
        "./rkvm-run --list | cut -d' ' -f1 | grep -vxE '{skip}' | sed 's#^#RKVM-PLAN oracle {setting}/guest/#'\n\
         ./rkvm-run --list | cut -d' ' -f1 | grep -vxE '{skip}' | grep '^migrate-' | sed 's#^#RKVM-PLAN oracle {setting}/migrate/#'\n"
    )
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let platform = platform::select(args.platform.as_deref())?;
    let kernel = kernel::ensure()?;
    let left_out = left_out(platform.name());
    let except = except_option(&left_out, platform.name());
    let job = oracle_job(&kernel, platform.vendor(), |setting| {
        // Each check line names the setting: `RKVM-CHECK ok npt=1/guest/hlt`,
        // and so does each guest's line of why it did not run.
        let named = format!(
            "sed -e 's#^RKVM-CHECK \\([a-z]*\\) #RKVM-CHECK \\1 {setting}/#' -e 's#^RKVM-INFO guest/#RKVM-INFO {setting}/guest/#'"
        );
        format!(
            "{}./rkvm-run check --backend linux-kvm {except} | {named} | grep -v '^rkvm-run check'\n\
             ./rkvm-run migrate --backend linux-kvm {except} | {named}\n",
            plan(setting, &left_out)
        )
    })?;
    println!("== oracle: every guest on Linux's kvm-{} in L1 ({})", platform.vendor().kvm_module(), platform.name());
    let mut checks = crate::jobs::run_checks(platform.as_ref(), &kernel, &job)?;
    checks.extend(host_checks()?);
    let passed = checks.iter().filter(|c| c.passed).count();
    let failed = checks.iter().filter(|c| c.failed()).count();
    let not_run = checks.len() - passed - failed;
    println!("== oracle finished in {:.0?}", start.elapsed());
    let not_run_text = if not_run > 0 { format!(", {not_run} not run") } else { String::new() };
    println!("{passed} passed, {failed} failed{not_run_text}");
    if failed > 0 {
        bail!("Linux KVM's traces differ from the golden files (see above)");
    }
    Ok(())
}

/// The guests on the host's own `/dev/kvm`, where that is Linux's hardware
/// KVM (kvm_intel or kvm_amd). Other implementations (a paravirtual KVM,
/// for one) are reported but not counted: they are not the oracle.
fn host_checks() -> Result<Vec<Check>> {
    let hardware = ["kvm_intel", "kvm_amd"].iter().any(|m| std::path::Path::new(&format!("/sys/module/{m}")).exists());
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("== host: no /dev/kvm here; the oracle is L1's KVM alone");
        return Ok(Vec::new());
    }
    let sh = xshell::Shell::new()?;
    sh.change_dir(paths::root());
    xshell::cmd!(sh, "cargo build --quiet --release -p rkvm-run").run()?;
    let runner = paths::target().join("release/rkvm-run");
    let output = xshell::cmd!(sh, "{runner} check --backend linux-kvm").ignore_status().quiet().read()?;
    let counted = if hardware { "counted" } else { "shown, not counted: the host's /dev/kvm is not kvm_intel or kvm_amd" };
    println!("== host /dev/kvm ({counted})");
    let mut checks = Vec::new();
    for line in output.lines().filter_map(|l| l.strip_prefix("RKVM-CHECK ")) {
        let (verdict, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
        let check = Check::new(format!("host/{name}"), verdict == "ok", detail);
        l1::print_check(&check);
        checks.push(check);
    }
    Ok(if hardware { checks } else { Vec::new() })
}

/// Marks a guest's trace in L1's console log for `bless`.
const TRACE_LINE: &str = "RKVM-T| ";

pub fn bless(args: BlessArgs) -> Result<()> {
    if let Some(bad) = args.guests.iter().find(|g| g.is_empty() || !g.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')) {
        bail!("`{bad}` is not a guest's name (`rkvm-run --list` shows them)");
    }
    let platform = platform::select(args.platform.as_deref())?;
    let kernel = kernel::ensure()?;
    let left_out = left_out(platform.name());
    // A pattern no guest name matches when nothing is left out.
    let skip = if left_out.is_empty() { "-".to_string() } else { left_out.join("|") };
    let timeout = crate::jobs::guest_timeout(platform.name()).map_or(String::new(), |s| format!("--timeout {s} "));
    // The guests to bless: those named, or every one the platform runs
    // (`--list --platform` leaves out those whose header says `not-on:`).
    let chosen = match args.guests.as_slice() {
        [] => format!("$(./rkvm-run --list --platform {} | cut -d' ' -f1 | grep -vxE '{skip}')", platform.name()),
        named => named.join(" "),
    };
    let name = platform.name();
    let mut job = oracle_job(&kernel, platform.vendor(), |setting| {
        if !setting.ends_with("=1") {
            return String::new();
        }
        format!(
            "for g in {chosen}; do echo \"RKVM-TRACE $g\"; \
             ./rkvm-run --backend linux-kvm --platform {name} {timeout}$g | sed 's/^/{TRACE_LINE}/'; done\n"
        )
    })?;
    job.name = "bless".into();
    println!("== bless: golden traces from Linux's kvm-{} in L1 ({})", platform.vendor().kvm_module(), platform.name());
    let checks = crate::jobs::run_checks(platform.as_ref(), &kernel, &job)?;
    if checks.iter().any(Check::failed) {
        bail!("L1 did not run cleanly; no golden file was written");
    }
    let log = std::fs::read_to_string(paths::target().join("l1/bless.log")).context("reading the bless log")?;
    let traces = traces_from_log(&log);
    // A named guest that did not run (unknown, or left out here) printed
    // no trace: its golden file is not emptied.
    if let Some((guest, _)) = traces.iter().find(|(_, trace)| trace.is_empty()) {
        bail!("guest {guest} gave no trace on {} (see the log above); no golden file was written", platform.name());
    }
    let dir = paths::root().join("testguests/golden");
    for (guest, trace) in &traces {
        std::fs::write(dir.join(format!("{guest}.trace")), trace)?;
    }
    println!("wrote {} golden traces in {}; review them with `git diff testguests/golden`", traces.len(), dir.display());
    Ok(())
}

/// Each guest's trace, from the marked lines of a console log.
fn traces_from_log(log: &str) -> BTreeMap<String, String> {
    let mut traces = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if let Some(name) = line.strip_prefix("RKVM-TRACE ") {
            current = Some(name.trim().to_string());
            traces.insert(name.trim().to_string(), String::new());
        } else if let (Some(text), Some(name)) = (line.strip_prefix(TRACE_LINE), &current)
            && let Some(trace) = traces.get_mut(name)
        {
            *trace += text;
            *trace += "\n";
        }
    }
    traces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_cut_out_of_the_console_log() {
        let log = "noise\nRKVM-TRACE hlt\nRKVM-T| hlt\nRKVM-T| regs rax=0\n[ 1.0] kernel says\nRKVM-TRACE console\nRKVM-T| console \"hi\"\n";
        let traces = traces_from_log(log);
        assert_eq!(traces.len(), 2);
        assert_eq!(traces["hlt"], "hlt\nregs rax=0\n");
        assert_eq!(traces["console"], "console \"hi\"\n");
    }

    #[test]
    fn nested_paging_is_switched_by_the_vendor_parameter() {
        assert_eq!(paging_parameter(Vendor::Amd), "npt");
        assert_eq!(paging_parameter(Vendor::Intel), "ept");
    }
}
