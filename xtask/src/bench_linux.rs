//! `cargo xtask bench linux`: Linux as a guest, on four MMUs.
//!
//! One L1 boot runs `rkvm-vmm` with L1's own kernel as the guest (as
//! `cargo xtask vmm` does), with a workload of fork+exec, four times: on
//! rkvm with the naive shadow MMU of stage 08 (`shadow_cache=0`), on rkvm
//! with the shadow page cache of stage 09 and the write emulation of stage
//! 13, and on Linux's KVM with nested paging off (kvm-amd `npt=0`,
//! kvm-intel `ept=0`) and on. Each hypervisor is loaded for its own run
//! only. The guest boots with `quiet`, so that its console's port I/O
//! does not drown the MMU's exits.
//!
//! Each run ends with `rkvm-vmm --counters`, which reads its hypervisor's
//! own debugfs counters before the VM closes (rkvm's are the module's
//! since it was loaded, Linux's the VM's). Counts do not depend on the
//! emulator's speed; times are compared only as ratios within the run.
//! Every run has a time limit: a run that reaches it is reported as such,
//! with the counts it reached.

use crate::l1::{self, Job};
use crate::platform::{self, Vendor};
use crate::{kernel, paths, vmm};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::time::Duration;

/// `bench linux`'s options (from `cargo xtask bench`'s).
pub struct Args {
    /// The L1 platform.
    pub platform: Option<String>,
    /// How many processes the guest's workload forks and execs.
    pub forks: u32,
    /// Seconds each of the four runs may take before the VMM stops it.
    pub limit: u64,
    /// Print the table and draw the picture from this L1 console log (a
    /// `target/l1/bench-linux.log` kept from an earlier run), without
    /// booting L1.
    pub from_log: Option<std::path::PathBuf>,
}

/// One configuration: its name in the table and its hypervisor.
struct Config {
    name: &'static str,
    backend: &'static str,
}

const CONFIGS: [Config; 4] = [
    Config { name: "rkvm naive", backend: "rkvm" },
    Config { name: "rkvm cached", backend: "rkvm" },
    Config { name: "kvm npt=0", backend: "linux-kvm" },
    Config { name: "kvm npt=1", backend: "linux-kvm" },
];

/// The columns of the table: (heading, rkvm's counter, Linux KVM's).
/// Linux counts a shadow page made as a miss of its page cache.
pub const COLUMNS: [(&str, &str, &str); 10] = [
    ("exits", "exits", "exits"),
    ("io", "io_exits", "io_exits"),
    ("irq_win", "irq_window_exits", "irq_window_exits"),
    ("halt", "halt_exits", "halt_exits"),
    ("pf_fixed", "pf_fixed", "pf_fixed"),
    ("pf_guest", "pf_guest", "pf_guest"),
    ("invlpg", "invlpg", "invlpg"),
    ("tlb_flush", "tlb_flush", "tlb_flush"),
    ("pte_write", "mmu_pte_write", "mmu_pte_write"),
    ("sp_made", "mmu_shadow_made", "mmu_cache_miss"),
];

/// The columns of the second table: what the shadow faults rkvm fixed
/// were, by kind (counted on its shadow page cache only, so 0 on the naive
/// MMU), and the entries it prefetched, as (heading, rkvm's counter, Linux
/// KVM's). An empty name: Linux's KVM has no such counter. Linux's KVM
/// counts spurious faults apart from `pf_fixed`; rkvm's `pf_fixed`
/// includes them. (Linux's KVM's `mmu_unsync` is not a count of events
/// but of the pages unsync at the moment, so `w_table` has no match.)
/// The last two: the entries that resynced unsync page tables first, and
/// the tables they brought back in sync and protected again.
pub const FAULT_COLUMNS: [(&str, &str, &str); 11] = [
    ("pf_fixed", "pf_fixed", "pf_fixed"),
    ("spurious", "pf_spurious", "pf_spurious"),
    ("not_pres", "pf_not_present", ""),
    ("write_pr", "pf_write_protect", ""),
    ("w_table", "pf_write_table", ""),
    ("w_clean", "pf_write_clean", ""),
    ("read_pr", "pf_read_protect", ""),
    ("large", "pf_large_page", ""),
    ("prefetch", "mmu_prefetch", ""),
    ("syncs", "mmu_sync", ""),
    ("resynced", "mmu_resynced", ""),
];

/// Marks the bench's lines in L1's console: `RKVM-LINUX <i> <line>`.
const MARK: &str = "RKVM-LINUX ";

/// What one configuration did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// How the VMM ended: `powered off` or what stopped it.
    pub ending: String,
    /// Seconds of L1's time the VMM ran (its own measure).
    pub seconds: Option<f64>,
    /// Seconds from the guest's boot to its init, on the guest's clock.
    pub init: Option<f64>,
    /// Seconds of the workload, on the guest's clock.
    pub workload: Option<f64>,
    pub exits_to_userspace: Option<u64>,
    pub counters: BTreeMap<String, u64>,
}

/// The L1 script: each configuration in turn, its hypervisor loaded for
/// its run only; every line of the VMM's and the guest's that the table
/// needs, marked with the configuration's index.
fn script(kernel: &kernel::L1Kernel, vendor: Vendor, forks: u32, limit: u64) -> String {
    let paging = match vendor {
        Vendor::Amd => "npt",
        Vendor::Intel => "ept",
    };
    let mut s = String::new();
    for (i, config) in CONFIGS.iter().enumerate() {
        let load = match i {
            0 => "insmod ./rkvm.ko shadow_cache=0 || echo 'RKVM-CHECK fail load-rkvm: insmod failed'\n".to_string(),
            1 => "insmod ./rkvm.ko shadow_cache=1 || echo 'RKVM-CHECK fail load-rkvm: insmod failed'\n".to_string(),
            2 => crate::oracle::load_kvm(kernel, vendor, &format!("{paging}=0")),
            _ => crate::oracle::load_kvm(kernel, vendor, &format!("{paging}=1")),
        };
        s += &format!("echo 'RKVM-INFO bench linux: {} ({forks} fork+exec, at most {limit} s)'\n", config.name);
        s += &load;
        s += &format!(
            "{command} --counters > run.out 2> run.err\n\
             rc=$?\n\
             grep RKVM-VMM run.out | sed 's/^/{MARK}{i} /'\n\
             sed 's/^/{MARK}{i} /' run.err\n\
             echo \"{MARK}{i} rc=$rc\"\n",
            command = vmm::vmm_command(config.backend, forks, limit, "quiet"),
        );
        s += &vmm::unload_hypervisor(config.backend, vendor);
    }
    s += "echo 'RKVM-CHECK ok bench-linux-ran'\n";
    s
}

/// A number before `suffix` in `text`: `after 12.3 s` gives 12.3 for `s`.
fn number_before(text: &str, suffix: &str) -> Option<f64> {
    let (head, _) = text.split_once(suffix)?;
    head.rsplit(' ').next()?.parse().ok()
}

/// Each configuration's outcome, from L1's console log.
pub fn parse_log(log: &str) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::default(); CONFIGS.len()];
    for line in log.lines() {
        let Some(rest) = line.trim_end().strip_prefix(MARK) else { continue };
        let Some((index, text)) = rest.split_once(' ') else { continue };
        let Some(o) = index.parse::<usize>().ok().and_then(|i| outcomes.get_mut(i)) else { continue };
        if let Some(pairs) = text.strip_prefix("rkvm-vmm: hypervisor counters: ") {
            for pair in pairs.split_whitespace() {
                if let Some((name, value)) = pair.split_once('=')
                    && let Ok(value) = value.parse()
                {
                    o.counters.insert(name.to_string(), value);
                }
            }
        } else if let Some(said) = text.strip_prefix("rkvm-vmm: the ") {
            // `the guest powered off with status 0 after 76.2 s`
            if let Some((what, after)) = said.rsplit_once(" after ") {
                o.ending = what.trim_start_matches("guest ").to_string();
                o.seconds = number_before(&format!(" {after}"), " s");
            }
        } else if let Some(count) = text.strip_prefix("rkvm-vmm: ").and_then(|t| t.split_once(" exits to userspace:")) {
            o.exits_to_userspace = count.0.parse().ok();
        } else if text.contains("reached init after ") {
            o.init = number_before(text, " s");
        } else if text.contains("fork+exec of /bin/true in ") {
            o.workload = number_before(text, " s (guest clock)");
        } else if let Some(rc) = text.strip_prefix("rc=")
            && rc != "0"
            && o.ending.is_empty()
        {
            o.ending = format!("rkvm-vmm exited with status {rc}");
        }
    }
    outcomes
}

/// A configuration's counter for a column of [`COLUMNS`] or
/// [`FAULT_COLUMNS`]; `None` if it has none.
fn counter(outcome: &Outcome, backend: &str, column: (&str, &str, &str)) -> Option<u64> {
    let name = if backend == "rkvm" { column.1 } else { column.2 };
    outcome.counters.get(name).copied()
}

/// A counter as the tables show it: `-` if there is none.
fn show(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

/// The lines of a table of `columns`, heading first, each row followed by
/// what `more` gives for its configuration.
fn table_lines(columns: &[(&str, &str, &str)], outcomes: &[Outcome], more: &dyn Fn(&Outcome) -> String) -> Vec<String> {
    let mut heading = format!("  {:<12}", "");
    for c in columns {
        heading += &format!(" {:>9}", c.0);
    }
    let mut lines = vec![heading];
    for (config, o) in CONFIGS.iter().zip(outcomes) {
        let mut row = format!("  {:<12}", config.name);
        for &c in columns {
            row += &format!(" {:>9}", show(counter(o, config.backend, c)));
        }
        lines.push(row + &more(o));
    }
    lines
}

/// The tables, then the ratios the targets are judged by.
fn print_table(outcomes: &[Outcome], forks: u32) {
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let times = |o: &Outcome| {
        format!(" {:>9} {:>7} {:>7} {:>9}", show(o.exits_to_userspace), secs(o.init), secs(o.workload), secs(o.seconds))
    };
    let mut lines = table_lines(&COLUMNS, outcomes, &times);
    if let Some(heading) = lines.first_mut() {
        *heading += &format!(" {:>9} {:>7} {:>7} {:>9}", "to_user", "init s", "work s", "L1 s");
    }
    lines.iter().for_each(|l| println!("{l}"));
    println!("  the shadow faults fixed, by kind, and the entries prefetched (rkvm's cache only):");
    table_lines(&FAULT_COLUMNS, outcomes, &|_| String::new()).iter().for_each(|l| println!("{l}"));
    for (config, o) in CONFIGS.iter().zip(outcomes) {
        if o.ending != "powered off with status 0" {
            let ending = if o.ending.is_empty() { "no report (see L1's log)" } else { o.ending.as_str() };
            println!("  {}: {ending}; its counts are those it reached", config.name);
        }
    }
    let exits = |i: usize| CONFIGS.get(i).zip(outcomes.get(i)).and_then(|(c, o)| counter(o, c.backend, COLUMNS[0]));
    let time = |i: usize| outcomes.get(i).and_then(|o| o.seconds);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "?".to_string(),
    };
    let as_f = |v: Option<u64>| v.map(|v| v as f64);
    println!("  (boot with `quiet` and {forks} fork+exec; times in seconds of L1, counts from each hypervisor's debugfs)");
    println!(
        "  exits: naive / cached {}; cached / kvm npt=0 {}; kvm npt=0 / kvm npt=1 {}",
        ratio(as_f(exits(0)), as_f(exits(1))),
        ratio(as_f(exits(1)), as_f(exits(2))),
        ratio(as_f(exits(2)), as_f(exits(3)))
    );
    println!(
        "  time:  naive / cached {}; cached / kvm npt=0 {}; kvm npt=0 / kvm npt=1 {}",
        ratio(time(0), time(1)),
        ratio(time(1), time(2)),
        ratio(time(2), time(3))
    );
}

/// The table as a picture: one bar chart of the exits, one of the time,
/// a bar per configuration, each scaled to its chart's largest value. A
/// run stopped at its limit is marked so.
pub fn svg(outcomes: &[Outcome], forks: u32, platform: &str) -> String {
    let exits: Vec<Option<f64>> =
        CONFIGS.iter().zip(outcomes).map(|(c, o)| counter(o, c.backend, COLUMNS[0]).map(|v| v as f64)).collect();
    let times: Vec<Option<f64>> = outcomes.iter().map(|o| o.seconds).collect();
    let stopped: Vec<bool> = outcomes.iter().map(|o| o.ending != "powered off with status 0").collect();
    let (width, left, bar_width, row) = (1000.0, 150.0, 620.0, 34.0);
    let footer = format!(
        "Linux 6.1 as a guest of rkvm-vmm in L1 ({platform}): boot with quiet, then {forks} fork+exec; \
         counts from each hypervisor's debugfs (cargo xtask bench linux)"
    );
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1000\" height=\"420\" viewBox=\"0 0 1000 420\"\n     \
         font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"14\">\n  \
         <title>Linux on four MMUs: exits and time</title>\n  \
         <desc>Linux booting with quiet and running {forks} fork+exec as a guest of rkvm-vmm in L1 ({platform}), \
         made by cargo xtask bench linux. Top: the exits each hypervisor counted in its debugfs. Bottom: the seconds \
         of L1's time each run took. Configurations: {}.</desc>\n  \
         <rect x=\"0\" y=\"0\" width=\"{width}\" height=\"420\" fill=\"#ffffff\"/>\n",
        CONFIGS.iter().zip(&exits).zip(&times).map(|((c, e), t)| format!(
            "{} {} exits in {} s",
            c.name,
            e.map_or("?".into(), |e| format!("{e:.0}")),
            t.map_or("?".into(), |t| format!("{t:.1}"))
        )).collect::<Vec<_>>().join("; ")
    );
    let colours = ["#c0504d", "#3b6ea8", "#9bbb59", "#8064a2"];
    let mut chart = |title: &str, top: f64, values: &[Option<f64>], unit: &str| {
        out += &format!("  <text x=\"20\" y=\"{top}\" font-weight=\"bold\">{title}</text>\n");
        let max = values.iter().flatten().fold(0.0f64, |a, &b| a.max(b)).max(1.0);
        for (i, (config, value)) in CONFIGS.iter().zip(values).enumerate() {
            let y = top + 16.0 + i as f64 * row;
            out += &format!("  <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", left - 10.0, y + 18.0, config.name);
            let Some(v) = value else {
                out += &format!("  <text x=\"{left}\" y=\"{}\" fill=\"#444444\">no count</text>\n", y + 18.0);
                continue;
            };
            let w = (v / max * bar_width).max(1.0);
            let colour = colours.get(i).copied().unwrap_or("#555555");
            out += &format!(
                "  <rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"24\" fill=\"{colour}\" stroke=\"#555555\" stroke-width=\"1\"/>\n"
            );
            let limit = if stopped.get(i).copied().unwrap_or(false) { " (stopped at its limit)" } else { "" };
            let shown = if unit == "s" { format!("{v:.1} s") } else { format!("{v:.0}") };
            out += &format!("  <text x=\"{:.1}\" y=\"{}\">{shown}{limit}</text>\n", left + w + 8.0, y + 18.0);
        }
    };
    chart("exits (each hypervisor's own count)", 36.0, &exits, "");
    chart("time (seconds of L1's time; compare only as ratios)", 226.0, &times, "s");
    out += &format!("  <text x=\"20\" y=\"404\" font-size=\"12\" font-style=\"italic\" fill=\"#444444\">{footer}</text>\n");
    out += "</svg>\n";
    out
}

/// The table and the picture from the log `log` of platform `platform`.
fn report(log: &str, forks: u32, platform: &str) -> Result<()> {
    let outcomes = parse_log(log);
    if outcomes.iter().all(|o| o.counters.is_empty()) {
        bail!("no counters in L1's log");
    }
    print_table(&outcomes, forks);
    let picture = paths::target().join("bench-linux.svg");
    std::fs::write(&picture, svg(&outcomes, forks, platform))?;
    println!("  the table as a picture: {}", picture.display());
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let platform = platform::select(args.platform.as_deref())?;
    if let Some(path) = &args.from_log {
        let log = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // The log says how many forks the guest ran.
        let forks = log
            .lines()
            .find_map(|l| l.split_once("RKVM_FORKS=").and_then(|(_, r)| r.split_whitespace().next()?.parse().ok()))
            .unwrap_or(args.forks);
        return report(&log, forks, platform.name());
    }
    let vendor = platform.vendor();
    let kernel = kernel::ensure()?;
    let job = Job {
        name: "bench-linux".into(),
        script: script(&kernel, vendor, args.forks, args.limit),
        files: vmm::vmm_files(&kernel, &kernel.bzimage(), vendor, &["rkvm", "linux-kvm"])?,
        cpus: 1,
        // Each run stops itself at its limit; L1's limit catches a hung VMM.
        timeout: Duration::from_secs(4 * (args.limit + 30) + 120),
        verbose: false,
    };
    println!(
        "== bench linux: Linux boots and runs {} fork+exec on rkvm naive, rkvm cached, and Linux's kvm-{} without and with nested paging ({})",
        args.forks,
        vendor.kvm_module(),
        platform.name()
    );
    let outcome = l1::run(platform.as_ref(), &kernel, &job)?;
    l1::print_check(&l1::completion_check(&job, &outcome));
    l1::print_kernel_messages(&outcome);
    let log = std::fs::read_to_string(&outcome.log).with_context(|| format!("reading {}", outcome.log.display()))?;
    report(&log, args.forks, platform.name()).with_context(|| format!("reading {}", outcome.log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_read_from_its_marked_lines() {
        let log = "RKVM-LINUX 1 RKVM-VMM guest: Linux 6.1.192 reached init after 10.63 s\n\
                   RKVM-LINUX 1 RKVM-VMM workload: 500 fork+exec of /bin/true in 62.38 s (guest clock), 124760 us each\n\
                   RKVM-LINUX 1 rkvm-vmm: the guest powered off with status 0 after 76.2 s\n\
                   RKVM-LINUX 1 rkvm-vmm: 166672 exits to userspace: 1 port I/O, 0 MMIO\n\
                   RKVM-LINUX 1 rkvm-vmm: hypervisor counters: exits=631881 pf_fixed=12 pf_not_present=7 vms=0\n\
                   RKVM-LINUX 1 rc=0\n\
                   RKVM-LINUX 0 rkvm-vmm: the guest ran out of time after 360.0 s\n\
                   RKVM-LINUX 0 rc=101\n\
                   RKVM-LINUX 3 rc=100\n";
        let o = parse_log(log);
        assert_eq!(o.len(), 4);
        assert_eq!(o[1].ending, "powered off with status 0");
        assert_eq!((o[1].init, o[1].workload, o[1].seconds), (Some(10.63), Some(62.38), Some(76.2)));
        assert_eq!(o[1].exits_to_userspace, Some(166672));
        assert_eq!(o[1].counters["exits"], 631881);
        assert_eq!(counter(&o[1], "rkvm", COLUMNS[4]), Some(12));
        assert_eq!(counter(&o[1], "rkvm", FAULT_COLUMNS[2]), Some(7));
        assert_eq!(counter(&o[1], "linux-kvm", FAULT_COLUMNS[2]), None, "Linux's KVM has no such counter");
        assert_eq!(o[0].ending, "ran out of time");
        assert_eq!(o[3].ending, "rkvm-vmm exited with status 100");
        assert_eq!(o[2], Outcome::default());
    }

    #[test]
    fn the_fault_table_shows_rkvms_kinds_and_a_dash_where_kvm_has_none() {
        let mut o = vec![Outcome::default(); 4];
        for (name, value) in [("pf_fixed", 30), ("pf_spurious", 4), ("pf_not_present", 11), ("mmu_prefetch", 9)] {
            o[1].counters.insert(name.into(), value);
            o[2].counters.insert(name.into(), value + 100);
        }
        let lines = table_lines(&FAULT_COLUMNS, &o, &|_| String::new());
        assert_eq!(lines.len(), 5, "a heading and a row per configuration");
        let cells = |i: usize| lines[i].split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(cells(0), FAULT_COLUMNS.map(|c| c.0));
        assert_eq!(cells(2)[2..], ["30", "4", "11", "-", "-", "-", "-", "-", "9", "-", "-"], "rkvm cached");
        assert_eq!(cells(3)[2..], ["130", "104", "-", "-", "-", "-", "-", "-", "-", "-", "-"], "kvm npt=0: its own two only");
    }

    #[test]
    fn the_picture_has_a_bar_per_configuration_and_marks_a_stopped_run() {
        let mut o = vec![Outcome::default(); 4];
        for (i, x) in o.iter_mut().enumerate() {
            x.counters.insert("exits".into(), 1000 * (i as u64 + 1));
            x.seconds = Some(10.0 * (i as f64 + 1.0));
            x.ending = "powered off with status 0".into();
        }
        o[0].ending = "ran out of time".into();
        o[3].counters.clear();
        let svg = svg(&o, 100, "tcg-svm");
        assert_eq!(svg.matches("<rect x=\"150\"").count(), 7, "4 time bars, 3 exit bars");
        assert!(svg.contains("no count") && svg.contains("(stopped at its limit)"));
        assert!(svg.contains("rkvm naive 1000 exits in 10.0 s"));
    }

    #[test]
    fn each_configuration_loads_its_own_hypervisor() {
        let kernel = kernel::L1Kernel::tree("/k".into());
        let s = script(&kernel, Vendor::Amd, 100, 360);
        let at = |p: &str| s.find(p).unwrap_or_else(|| panic!("{p} in {s}"));
        assert!(at("shadow_cache=0") < at("shadow_cache=1"));
        assert!(at("shadow_cache=1") < at("npt=0") && at("npt=0") < at("npt=1"));
        assert_eq!(s.matches("--counters").count(), 4);
        assert_eq!(s.matches("rmmod rkvm").count(), 2);
        assert!(s.contains("RKVM_FORKS=100 quiet"));
    }
}
