//! `cargo xtask counts`: what each paging guest costs each hypervisor, in
//! the hypervisors' own words.
//!
//! One L1 boot runs every guest of a stage (by default the paging guests of
//! stage 08) once on rkvm and once on Linux's KVM with nested paging off
//! (kvm-amd `npt=0` on `tcg-svm`, kvm-intel `ept=0` on `bochs-vmx`), so
//! that both use shadow page tables. Around each run the script reads each
//! hypervisor's debugfs counters: exits, page faults fixed in the shadow
//! (`pf_fixed`), page faults given to the guest (`pf_guest`), TLB flushes
//! and `invlpg`s. The counts do not depend on how fast the emulator is;
//! they show where the naive shadow MMU spends its exits.

use crate::l1::{self, Job};
use crate::platform::Vendor;
use crate::{jobs, paths, platform};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The L1 platform (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    /// The guests whose first stage is this one.
    #[arg(long, default_value_t = 8)]
    pub stage: u32,
    /// Run rkvm with the naive shadow MMU of stage 08 (`shadow_cache=0`)
    /// rather than the shadow page cache of stage 09.
    #[arg(long)]
    pub naive: bool,
}

/// The counters read, by their debugfs names (the same in both).
const COUNTERS: [&str; 5] = ["exits", "pf_fixed", "pf_guest", "tlb_flush", "invlpg"];

/// The L1 script: for each guest, rkvm (loaded for its run only, since one
/// hypervisor at a time can own the CPU's virtualization), then Linux's
/// KVM. `rkvm-run --repeat 1` reads each hypervisor's counters while the
/// VM lives (Linux's KVM shows a VM's counters only then) and prints them
/// on its timing line, which the script tags `RKVM-COUNT side guest`.
fn script(stage: u32, vendor_modules: &[String], setting: &str, rkvm_setting: &str) -> String {
    let mut s = String::from("status=0\n");
    s += &format!("guests=$(./rkvm-run --list --max-stage {stage} | awk '$3 == {stage} {{ print $1 }}')\n");
    s += "count() { ./rkvm-run --repeat 1 --backend $1 $2 2>&1 >/dev/null | grep '^rkvm-run: run' | sed \"s/^/RKVM-COUNT $1 $2 /\"; }\n";
    for m in vendor_modules {
        let extra = if m.starts_with("kvm-") { setting } else { "" };
        s += &format!("insmod ./{m} {extra} || {{ echo 'RKVM-CHECK fail load-{m}: insmod failed'; exit 1; }}\n");
    }
    s += "for g in $guests; do\n\
          \tinsmod ./rkvm.ko RKVM_SETTING || { echo 'RKVM-CHECK fail load-rkvm: insmod failed'; exit 1; }\n\
          \tcount rkvm $g\n\
          \trmmod rkvm\n\
          \tcount linux-kvm $g\n\
          done\n\
          echo 'RKVM-CHECK ok counts-ran'\nexit $status\n";
    s.replace("RKVM_SETTING", rkvm_setting)
}

/// One guest's counts on one side, in the order of `COUNTERS` (`None`
/// where the hypervisor did not show one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    pub side: String,
    pub guest: String,
    pub values: Vec<Option<u64>>,
}

/// Parses `RKVM-COUNT side guest rkvm-run: run 1 of 1: E exits to
/// userspace, H hypervisor exits, S s, pf_fixed=F pf_guest=G ...`.
pub fn parse_count(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("RKVM-COUNT ")?;
    let (side, rest) = rest.split_once(' ')?;
    let (guest, rest) = rest.split_once(' ')?;
    let exits = rest.split(", ").find_map(|f| f.strip_suffix(" hypervisor exits"))?;
    let mut values = vec![exits.parse().ok()];
    for name in &COUNTERS[1..] {
        let value = rest.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?;
        values.push(value.parse().ok());
    }
    Some(Counts { side: side.to_string(), guest: guest.to_string(), values })
}

pub fn run(args: Args) -> Result<()> {
    let platform = platform::select(args.platform.as_deref())?;
    let vendor = platform.vendor();
    let setting = match vendor {
        Vendor::Amd => "npt=0",
        Vendor::Intel => "ept=0",
    };
    let default = crate::kernel::Choice::default();
    let (mut job, kernel) = jobs::module_job("counts", &paths::root().join("kmod"), jobs::kmod_stage()?, &default)?;
    let mut names = Vec::new();
    for module in kernel.kvm_modules(vendor.kvm_module()) {
        let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.ko").to_string();
        job.files.push((format!("rkvm/{name}"), std::fs::read(&module)?, 0o644));
        names.push(name);
    }
    let rkvm_setting = if args.naive { "shadow_cache=0" } else { "" };
    let job =
        Job { script: script(args.stage, &names, setting, rkvm_setting), cpus: 1, timeout: Duration::from_secs(900), ..job };
    println!(
        "== counts: stage {} guests on rkvm and on Linux's kvm-{} {setting} ({})",
        args.stage,
        vendor.kvm_module(),
        platform.name()
    );
    let outcome = l1::run(platform.as_ref(), &kernel, &job)?;
    l1::print_check(&l1::completion_check(&job, &outcome));
    l1::print_kernel_messages(&outcome);
    let log = std::fs::read_to_string(&outcome.log).with_context(|| format!("reading {}", outcome.log.display()))?;
    let counts: Vec<Counts> = log.lines().filter_map(parse_count).collect();
    if counts.is_empty() {
        bail!("no counts from L1 (see its console log: {})", outcome.log.display());
    }
    if args.naive {
        println!("  (rkvm with the naive shadow MMU of stage 08: shadow_cache=0)");
    }
    print_table(&counts, &format!("kvm {setting}"));
    Ok(())
}

/// One row per guest: each counter on rkvm beside Linux's KVM.
fn print_table(counts: &[Counts], linux: &str) {
    let mut by_guest: BTreeMap<&str, (Option<&Counts>, Option<&Counts>)> = BTreeMap::new();
    for c in counts {
        let entry = by_guest.entry(c.guest.as_str()).or_default();
        if c.side == "rkvm" { entry.0 = Some(c) } else { entry.1 = Some(c) }
    }
    let header: Vec<String> = COUNTERS.iter().map(|c| format!("{c:>15}")).collect();
    println!("  {:<14} {}", "guest", header.join(" "));
    println!("  {:<14} {}", "", COUNTERS.map(|_| format!("{:>15}", format!("rkvm / {}", &linux[..3]))).join(" "));
    for (guest, (rkvm, kvm)) in by_guest {
        let cell = |i: usize| {
            let get = |c: Option<&Counts>| c.and_then(|c| c.values.get(i).copied().flatten()).map_or("?".to_string(), |v| v.to_string());
            format!("{:>15}", format!("{} / {}", get(rkvm), get(kvm)))
        };
        let cells: Vec<String> = (0..COUNTERS.len()).map(cell).collect();
        println!("  {guest:<14} {}", cells.join(" "));
    }
    println!("  (each cell: rkvm / Linux's {linux}, counted in each hypervisor's debugfs)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_line_gives_each_counter() {
        let line = "RKVM-COUNT linux-kvm pae rkvm-run: run 1 of 1: 5 exits to userspace, 50 hypervisor exits, \
                    0.012 s, pf_fixed=28 pf_guest=1 tlb_flush=2 invlpg=0";
        let c = parse_count(line).expect("a count");
        assert_eq!((c.side.as_str(), c.guest.as_str()), ("linux-kvm", "pae"));
        assert_eq!(c.values, [Some(50), Some(28), Some(1), Some(2), Some(0)]);
    }

    #[test]
    fn unknown_counters_and_malformed_lines() {
        let line = "RKVM-COUNT rkvm x rkvm-run: run 1 of 1: 5 exits to userspace, ? hypervisor exits, 0.1 s, \
                    pf_fixed=? pf_guest=? tlb_flush=? invlpg=?";
        assert_eq!(parse_count(line).map(|c| c.values), Some(vec![None; 5]));
        assert_eq!(parse_count("RKVM-COUNT rkvm pae garbage"), None);
        assert_eq!(parse_count("RKVM-CHECK ok x"), None);
    }

    #[test]
    fn the_script_runs_rkvm_alone_then_linux_kvm_without_nested_paging() {
        let s = script(8, &["kvm.ko".into(), "kvm-amd.ko".into()], "npt=0", "shadow_cache=0");
        assert!(s.contains("insmod ./rkvm.ko shadow_cache=0"));
        assert!(s.contains("insmod ./kvm-amd.ko npt=0"));
        assert!(s.contains("insmod ./kvm.ko  ||"));
        let (rkvm, linux) = (s.find("count rkvm").expect("rkvm"), s.find("count linux-kvm").expect("kvm"));
        assert!(rkvm < s.find("rmmod rkvm").expect("rmmod") && s.find("rmmod rkvm").expect("rmmod") < linux);
    }
}
