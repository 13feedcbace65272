//! `cargo xtask`: the one entry point of the rkvm course.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line and dispatches.

mod bench;
mod bench_linux;
mod bench_mmu;
mod book;
mod counts;
mod course;
mod distro;
mod dkms;
mod doctor;
mod exercises;
mod fuzz;
mod handout;
mod hint;
mod initramfs;
mod jobs;
mod kernel;
mod kmod;
mod l1;
mod objcheck;
mod oracle;
mod paths;
mod platform;
mod progress;
mod report;
mod smp;
mod stages;
mod test;
mod test_stage;
mod vmm;
mod watch;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The rkvm harness: builds the module, boots L1, runs the course's tests.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Whether the harness accepts `words` (what follows `cargo xtask`) as a
/// command line: the book's check runs every command it shows through this.
pub fn parse_args(words: &[String]) -> Result<(), clap::Error> {
    Cli::try_parse_from(std::iter::once("cargo xtask").chain(words.iter().map(String::as_str))).map(|_| ())
}

#[derive(Subcommand)]
enum Command {
    /// Check that this machine has everything rkvm needs; as root, install what is missing.
    Doctor(doctor::Args),
    /// Build the L1 kernel (once; later calls reuse the cached build).
    Kernel(kernel::Args),
    /// Build rkvm.ko from kmod/ (or from a stage) and check its Rust object.
    Kmod(kmod::Args),
    /// Build rkvm.ko against Debian's stock kernel headers (or every newer one) and run every guest on Debian's own kernel.
    Distro(distro::Args),
    /// Write the module's source tree for dkms (kmod/ with a Cargo.toml of its own) and print how to install it.
    Dkms(dkms::Args),
    /// Boot L1, load rkvm.ko, and boot Linux on it with rkvm-vmm, its console streaming (`--device`: only /dev/rkvm answering).
    Demo(test::DemoArgs),
    /// Boot L1 and run shell commands there, with rkvm.ko, rkvm-run and Linux's KVM modules at hand.
    ///
    /// Every command that boots L1 appends the words of the environment's
    /// RKVM_L1_CMDLINE to L1's kernel command line (for example
    /// `RKVM_L1_CMDLINE=loglevel=7` shows the boot messages `quiet` hides).
    L1(jobs::RunArgs),
    /// Run every test: host unit tests, generated-tree checks, and the L1 checks.
    Test(test::Args),
    /// Generate stages/ and solutions/ from kmod/ (or check them with --check).
    Stages(stages::Args),
    /// Prove every stage's skeleton fails its exercises and its solution passes.
    Exercises(exercises::Args),
    /// Print an exercise's instruction and first hint (`cargo xtask hint E1.2`); `--more` prints the next hint.
    Hint(hint::Args),
    /// Which exercises of each stage are solved (their host tests), and what to do next.
    Progress(course::Args),
    /// Rerun a stage's exercise tests each time one of its source files is saved.
    Watch(watch::Args),
    /// Write the tree a course hands out for stage N: the stages up to N, without kmod/ and solutions/.
    Handout(handout::Args),
    /// Run the tests of stage N (its skeleton, or with --solution its answers).
    TestStage(test_stage::Args),
    /// Build the book and check its includes, anchors and links.
    Book(book::Args),
    /// Run every test guest on Linux's own KVM and compare with the golden traces.
    Oracle(oracle::Args),
    /// Rewrite the golden traces from Linux KVM's behaviour.
    Bless(oracle::BlessArgs),
    /// Benchmarks in one L1 boot: `exits` (rkvm against Linux's KVM) `mmu` (naive and cached shadow MMU against Linux's KVM without nested paging) or `linux` (Linux as a guest on four MMUs).
    Bench(bench::Args),
    /// Fuzz /dev/rkvm in L1: random ioctls, races, killed processes, random guests.
    Fuzz(fuzz::Args),
    /// Stage 13's SMP stress in L1: VMs on every CPU, moved between CPUs, CPUs offline and online, processes killed.
    Stress(smp::Args),
    /// Count each paging guest's exits and page faults on rkvm and on Linux's KVM without nested paging.
    Counts(counts::Args),
    /// Boot the L1 kernel as a guest of rkvm-vmm in L1, on Linux's KVM or on rkvm, and run a fork+exec workload.
    Vmm(vmm::Args),
}

fn main() {
    // Errors are shown with their causes, without a backtrace: they are
    // meant for the reader at the terminal, and say what to do next.
    if let Err(e) = dispatch(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    if let Some((name, dirs)) = cli.command.needs() {
        paths::require(name, dirs)?;
    }
    match cli.command {
        Command::Doctor(args) => doctor::run(args),
        Command::Kernel(args) => kernel::run(args),
        Command::Kmod(args) => kmod::run(args),
        Command::Distro(args) => distro::run(args),
        Command::Dkms(args) => dkms::run(args),
        Command::Demo(args) => test::demo(args),
        Command::L1(args) => jobs::run_commands(args),
        Command::Test(args) => test::run(args),
        Command::Stages(args) => stages::run(args),
        Command::Exercises(args) => exercises::run(args),
        Command::Hint(args) => hint::run(args),
        Command::Progress(args) => course::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Handout(args) => handout::run(args),
        Command::TestStage(args) => test_stage::run(args),
        Command::Book(args) => book::run(args),
        Command::Oracle(args) => oracle::run(args),
        Command::Bless(args) => oracle::bless(args),
        Command::Bench(args) => bench::run(args),
        Command::Counts(args) => counts::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Stress(args) => smp::run(args),
        Command::Vmm(args) => vmm::run(args),
    }
}

impl Command {
    /// The command's name and the directories it needs beyond the stages
    /// (a stage's handout has neither `kmod/` nor `solutions/`); `None` for
    /// the commands that work in a handout (`l1` without `--stage` says
    /// itself that it needs a stage there).
    fn needs(&self) -> Option<(&'static str, &'static [&'static str])> {
        const KMOD: &[&str] = &["kmod"];
        const ALL: &[&str] = &["kmod", "solutions"];
        match self {
            Command::Kmod(_) => Some(("kmod", KMOD)),
            Command::Distro(_) => Some(("distro", KMOD)),
            Command::Dkms(_) => Some(("dkms", KMOD)),
            Command::Demo(_) => Some(("demo", KMOD)),
            Command::L1(args) if args.solution => Some(("l1 --solution", ALL)),
            Command::Test(_) => Some(("test", ALL)),
            Command::Stages(_) => Some(("stages", KMOD)),
            Command::Exercises(_) => Some(("exercises", ALL)),
            Command::TestStage(args) if args.solution => Some(("test-stage --solution", ALL)),
            Command::Handout(_) => Some(("handout", ALL)),
            Command::Book(_) => Some(("book", KMOD)),
            Command::Bench(_) => Some(("bench", KMOD)),
            Command::Fuzz(_) => Some(("fuzz", KMOD)),
            Command::Stress(_) => Some(("stress", KMOD)),
            Command::Counts(_) => Some(("counts", KMOD)),
            Command::Vmm(_) => Some(("vmm", KMOD)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directories `cargo xtask LINE` needs beyond the stages.
    fn needs(line: &str) -> Option<&'static [&'static str]> {
        let cli = Cli::try_parse_from(std::iter::once("cargo xtask").chain(line.split_whitespace())).unwrap();
        cli.command.needs().map(|(_, dirs)| dirs)
    }

    #[test]
    fn a_handout_runs_the_students_commands_and_refuses_the_others() {
        let students = ["progress", "progress --stage 8", "progress --all", "hint E8.1", "watch", "watch --stage 8"];
        for line in students.into_iter().chain(["test-stage 8", "l1 --stage 8 true", "doctor"]) {
            assert_eq!(needs(line), None, "{line}");
        }
        for line in ["test", "exercises --check", "test-stage 8 --solution", "l1 --stage 8 --solution true", "handout 8 dir"] {
            assert_eq!(needs(line), Some(&["kmod", "solutions"][..]), "{line}");
        }
        for line in ["stages", "kmod", "book", "fuzz", "demo", "dkms", "vmm"] {
            assert_eq!(needs(line), Some(&["kmod"][..]), "{line}");
        }
    }
}
