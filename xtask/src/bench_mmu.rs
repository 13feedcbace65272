//! `cargo xtask bench mmu`: the seed's one performance promise, measured.
//!
//! The 2006 announcement names its cost ("throws away most of the shadow
//! page table entries every context switch") and its fix ("cache shadow
//! page tables across tlb flushes"). The `mmu-switch` guest switches round
//! robin among eight address spaces. One L1 boot runs it, in turns and for
//! several rounds, on rkvm with the naive shadow MMU of stage 08
//! (`shadow_cache=0`), on rkvm with the cache of stage 09, and on Linux's
//! KVM with nested paging off (kvm-amd `npt=0`, kvm-intel `ept=0`), so that
//! all three shadow the guest's tables. Each run reports, from its own
//! hypervisor's debugfs: exits, page faults fixed in the shadow, shadow
//! pages made and thrown away, and its time. Counts do not depend on the
//! emulator's speed; times are compared only as ratios within the run.

use crate::bench::{median, parse_run};
use crate::l1::{self, Job};
use crate::platform::Vendor;
use crate::{jobs, paths, platform};
use anyhow::{Context, Result, bail};
use std::time::Duration;

/// The guest.
const GUEST: &str = "mmu-switch";

/// The three configurations, as the script names them.
const SIDES: [(&str, &str); 3] = [("naive", "rkvm naive"), ("cached", "rkvm cached"), ("linux-kvm", "")];

/// The counters of a run, in the order of the table's columns.
const COLUMNS: [&str; 4] = ["exits", "pf_fixed", "shadow_made", "shadow_zapped"];

/// One run of one side.
#[derive(Clone, Debug, PartialEq)]
pub struct MmuRun {
    pub side: String,
    pub counts: [Option<u64>; 4],
    pub seconds: f64,
}

/// Parses `RKVM-MMU SIDE ROUND rkvm-run: run I of N: ..., H hypervisor
/// exits, S s, pf_fixed=F ... shadow_made=M shadow_zapped=Z`.
pub fn parse_line(line: &str) -> Option<MmuRun> {
    let (_, rest) = line.split_once("RKVM-MMU ")?;
    let mut parts = rest.splitn(3, ' ');
    let (side, _round, report) = (parts.next()?, parts.next()?, parts.next()?);
    let run = parse_run(report)?;
    let field = |name: &str| -> Option<u64> {
        report.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?.parse().ok()
    };
    let counts = [run.hypervisor_exits, field("pf_fixed"), field("shadow_made"), field("shadow_zapped")];
    Some(MmuRun { side: side.to_string(), counts, seconds: run.seconds })
}

/// The L1 script: Linux's KVM loaded with nested paging off for the whole
/// boot; rkvm loaded only for its own runs, with the MMU the side names.
fn script(rounds: u32, repeat: u32, vendor_modules: &[String], setting: &str) -> String {
    let mut s = String::from("status=0\n");
    for m in vendor_modules {
        let extra = if m.starts_with("kvm-") { setting } else { "" };
        s += &format!("insmod ./{m} {extra} || {{ echo 'RKVM-CHECK fail load-{m}: insmod failed'; exit 1; }}\n");
    }
    s += "run() { ./rkvm-run --repeat $3 --backend $2 mmu-switch 2>&1 >/dev/null | grep '^rkvm-run: run' | sed \"s/^/RKVM-MMU $1 $4 /\"; }\n";
    s += &format!(
        "for i in $(seq {rounds}); do\n\
         \tinsmod ./rkvm.ko shadow_cache=0 || {{ echo 'RKVM-CHECK fail load-rkvm: insmod failed'; exit 1; }}\n\
         \trun naive rkvm {repeat} $i\n\
         \trmmod rkvm\n\
         \tinsmod ./rkvm.ko shadow_cache=1 || {{ echo 'RKVM-CHECK fail load-rkvm: insmod failed'; exit 1; }}\n\
         \trun cached rkvm {repeat} $i\n\
         \trmmod rkvm\n\
         \trun linux-kvm linux-kvm {repeat} $i\n\
         done\n"
    );
    s += "echo 'RKVM-CHECK ok bench-mmu-ran'\nexit $status\n";
    s
}

/// Each side's medians: the four counts and the time.
fn medians(runs: &[MmuRun], side: &str) -> Option<([Option<f64>; 4], f64)> {
    let mine: Vec<&MmuRun> = runs.iter().filter(|r| r.side == side).collect();
    let time = median(&mine.iter().map(|r| r.seconds).collect::<Vec<_>>())?;
    let counts = std::array::from_fn(|i| {
        let values: Vec<f64> = mine.iter().filter_map(|r| r.counts[i]).map(|v| v as f64).collect();
        median(&values)
    });
    Some((counts, time))
}

pub fn run(platform_name: Option<&str>, rounds: u32, repeat: u32) -> Result<()> {
    let platform = platform::select(platform_name)?;
    let vendor = platform.vendor();
    let setting = match vendor {
        Vendor::Amd => "npt=0",
        Vendor::Intel => "ept=0",
    };
    let default = crate::kernel::Choice::default();
    let (mut job, kernel) = jobs::module_job("bench-mmu", &paths::root().join("kmod"), jobs::kmod_stage()?, &default)?;
    let mut names = Vec::new();
    for module in kernel.kvm_modules(vendor.kvm_module()) {
        let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.ko").to_string();
        job.files.push((format!("rkvm/{name}"), std::fs::read(&module)?, 0o644));
        names.push(name);
    }
    let job = Job { script: script(rounds, repeat, &names, setting), cpus: 1, timeout: Duration::from_secs(1800), ..job };
    println!(
        "== bench mmu: {GUEST} on rkvm naive, rkvm cached and Linux's kvm-{} {setting}, {rounds} rounds of {repeat} runs, in turns ({})",
        vendor.kvm_module(),
        platform.name()
    );
    let outcome = l1::run(platform.as_ref(), &kernel, &job)?;
    l1::print_check(&l1::completion_check(&job, &outcome));
    l1::print_kernel_messages(&outcome);
    let log = std::fs::read_to_string(&outcome.log).with_context(|| format!("reading {}", outcome.log.display()))?;
    let runs: Vec<MmuRun> = log.lines().filter_map(parse_line).collect();
    let linux_name = format!("kvm {setting}");
    let mut table = Vec::new();
    for (side, name) in SIDES {
        let name = if name.is_empty() { linux_name.as_str() } else { name };
        let Some((counts, time)) = medians(&runs, side) else {
            bail!("no runs of {name} in L1's log ({})", outcome.log.display());
        };
        table.push((name.to_string(), counts, time));
    }
    print_table(&table);
    Ok(())
}

/// The medians, then the ratios the stage's promise is judged by.
fn print_table(table: &[(String, [Option<f64>; 4], f64)]) {
    let show = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.0}"));
    println!("  {:<16} {:>9} {:>9} {:>12} {:>14} {:>10}", "median per run", COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], "time (s)");
    for (name, counts, time) in table {
        println!(
            "  {name:<16} {:>9} {:>9} {:>12} {:>14} {time:>10.4}",
            show(counts[0]),
            show(counts[1]),
            show(counts[2]),
            show(counts[3])
        );
    }
    let exits = |i: usize| table.get(i).and_then(|t| t.1[0]);
    let time = |i: usize| table.get(i).map(|t| t.2);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "?".to_string(),
    };
    println!("  exits: naive / cached {}; cached / Linux KVM {}", ratio(exits(0), exits(1)), ratio(exits(1), exits(2)));
    println!("  time:  naive / cached {}; cached / Linux KVM {}", ratio(time(0), time(1)), ratio(time(1), time(2)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gives_exits_counters_and_time() {
        let line = "RKVM-MMU cached 2 rkvm-run: run 1 of 3: 402 exits to userspace, 460 hypervisor exits, 0.25 s, \
                    pf_fixed=40 pf_guest=0 tlb_flush=400 invlpg=0 shadow_made=52 shadow_zapped=0";
        let r = parse_line(line).expect("a run");
        assert_eq!(r.side, "cached");
        assert_eq!(r.counts, [Some(460), Some(40), Some(52), Some(0)]);
        assert!((r.seconds - 0.25).abs() < 1e-9);
        assert_eq!(parse_line("RKVM-MMU cached 2 garbage"), None);
    }

    #[test]
    fn the_script_loads_each_mmu_for_its_own_runs() {
        let s = script(3, 2, &["kvm.ko".into(), "kvm-amd.ko".into()], "npt=0");
        assert!(s.contains("insmod ./kvm-amd.ko npt=0"));
        let (naive, cached) = (s.find("shadow_cache=0").expect("naive"), s.find("shadow_cache=1").expect("cached"));
        let linux = s.find("run linux-kvm").expect("linux");
        assert!(naive < cached && cached < linux);
        assert!(s.contains("seq 3"));
    }

    #[test]
    fn medians_per_side() {
        let run = |side: &str, exits, secs| MmuRun { side: side.into(), counts: [Some(exits), None, None, None], seconds: secs };
        let runs = [run("naive", 10, 1.0), run("naive", 30, 3.0), run("naive", 20, 2.0), run("cached", 5, 0.5)];
        let (counts, time) = medians(&runs, "naive").expect("naive runs");
        assert_eq!((counts[0], time), (Some(20.0), 2.0));
        assert_eq!(medians(&runs, "linux-kvm"), None);
    }
}
