//! `rkvm-run`: the command. See `rkvm_run::cli::USAGE`, or run it with `--help`.

use rkvm_run::cli::{self, Cli, Command};
use rkvm_run::exit::Stop;
use rkvm_run::guests::{self, EmbeddedGuest};
use rkvm_run::header;
use rkvm_run::run::{Options, run, run_seeded};
use std::io::{self, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => return fail(e),
    };
    let options = Options { backend: cli.backend, timeout: cli.timeout, verbose: cli.verbose };
    let result = match &cli.command {
        Command::Help => Ok(print_usage()),
        Command::List => list(&cli),
        Command::Run(name) if cli.program => print_program(name, cli.seed.unwrap_or(0)),
        Command::Run(name) => run_one(name, &options, cli.platform, cli.repeat, cli.seed.unwrap_or(0)),
        Command::All => run_all(&cli, &options),
        Command::Check => check(&cli, &options),
        Command::Chaos => chaos(&cli, &options),
        Command::Migrate => migrate(&cli, &options),
    };
    result.unwrap_or_else(fail)
}

fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("rkvm-run: {error:#}");
    ExitCode::FAILURE
}

fn print_usage() -> ExitCode {
    println!("{}", cli::USAGE);
    ExitCode::SUCCESS
}

/// One line per guest: name, first stage, start mode, what it shows.
/// With `--platform`, the guests left out there are not listed.
fn list(cli: &Cli) -> anyhow::Result<ExitCode> {
    for guest in guests::up_to_stage(cli.max_stage) {
        let h = header::parse(guest.source)?;
        if cli.platform.is_some_and(|p| h.left_out_on(p).is_some()) {
            continue;
        }
        println!("{:<14} stage {:>2}  {:<6}  {}", h.name, h.stage, h.mode.name(), h.demonstrates);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs guest `name` once, or `repeat` times, each in a new VM, and prints
/// the last trace; a seeded guest gets `seed`. With `--repeat`, each run's
/// timing goes to stderr as
/// `rkvm-run: run I of N: E exits to userspace, H hypervisor exits, S s,
/// pf_fixed=F pf_guest=G tlb_flush=T invlpg=I shadow_made=M shadow_zapped=Z`
/// (H and the counters are `?` where debugfs does not show them). A run
/// that ends in an error ends the command; the status is a timeout's if
/// any run timed out. A guest whose header leaves it out on `platform` is
/// an error.
fn run_one(name: &str, options: &Options, platform: Option<&str>, repeat: Option<u32>, seed: u32) -> anyhow::Result<ExitCode> {
    let guest = guests::find(name)?;
    if let Some(why) = platform.and_then(|p| guest.header.left_out_on(p).map(|why| (p, why))) {
        anyhow::bail!("guest {name} is not run on {}: {}", why.0, why.1);
    }
    let mut outcome = run_seeded(&guest, options, seed)?;
    let mut timed_out = false;
    let times = repeat.unwrap_or(1);
    for i in 1..=times {
        if i > 1 {
            outcome = run_seeded(&guest, options, seed)?;
        }
        timed_out |= outcome.stop == Stop::Timeout;
        if let Some(repeat) = repeat {
            let t = outcome.timing;
            let counted = t.hypervisor_exits.map_or("?".to_string(), |n| n.to_string());
            let secs = t.elapsed.as_secs_f64();
            let mmu: Vec<String> = rkvm_run::debugfs::MMU_COUNTERS
                .iter()
                .zip(t.mmu_counts)
                .map(|((name, _, _), n)| format!("{name}={}", n.map_or("?".to_string(), |n| n.to_string())))
                .collect();
            eprintln!(
                "rkvm-run: run {i} of {repeat}: {} exits to userspace, {counted} hypervisor exits, {secs:.6} s, {}",
                t.exits_to_userspace,
                mmu.join(" ")
            );
        }
    }
    print!("{}", outcome.trace);
    io::stdout().flush()?;
    // Any run that timed out makes the status a timeout's, not only the last.
    Ok(if timed_out { status(Stop::Timeout) } else { status(outcome.stop) })
}

/// The steps the runner generates for guest `name` with `seed`.
fn print_program(name: &str, seed: u32) -> anyhow::Result<ExitCode> {
    let guest = guests::find(name)?;
    if guest.header.program.is_none() {
        anyhow::bail!("guest {name} has no generated program (header `program:`)");
    }
    print!("{}", rkvm_run::program::describe(&rkvm_run::program::generate(guest.header.mode, seed)));
    Ok(ExitCode::SUCCESS)
}

fn run_all(cli: &Cli, options: &Options) -> anyhow::Result<ExitCode> {
    let mut worst = ExitCode::SUCCESS;
    let selected = guests::up_to_stage(cli.max_stage)
        .filter(|g| !cli.except.iter().any(|e| e == g.name))
        .filter(|g| cli.platform.is_none_or(|p| g.left_out_on(p).is_none()));
    for (i, guest) in selected.enumerate() {
        if i > 0 {
            println!();
        }
        match guest.guest().and_then(|g| run(&g, options)) {
            Ok(outcome) => {
                print!("{}", outcome.trace);
                if outcome.stop == Stop::Timeout {
                    worst = status(Stop::Timeout);
                }
            }
            Err(e) => {
                eprintln!("rkvm-run: guest {}: {e:#}", guest.name);
                worst = ExitCode::FAILURE;
            }
        }
    }
    Ok(worst)
}

fn check(cli: &Cli, options: &Options) -> anyhow::Result<ExitCode> {
    let selected: Vec<&EmbeddedGuest> =
        guests::up_to_stage(cli.max_stage).filter(|g| !cli.except.iter().any(|e| e == g.name)).collect();
    let all_passed = rkvm_run::check::check(selected.into_iter(), options, cli.platform, &mut io::stdout().lock())?;
    Ok(if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Every seeded guest (but `--except`'s), once per seed of `--first` and
/// `--seeds`; fails if any run failed.
fn chaos(cli: &Cli, options: &Options) -> anyhow::Result<ExitCode> {
    let selected: Vec<&EmbeddedGuest> =
        guests::seeded(cli.max_stage).filter(|g| !cli.except.iter().any(|e| e == g.name)).collect();
    if selected.is_empty() {
        anyhow::bail!("no seeded guest (header `seed:`) is selected");
    }
    let no_failure =
        rkvm_run::chaos::chaos(selected.into_iter(), cli.seed_range(), options, &cli.traces, &mut io::stdout().lock())?;
    Ok(if no_failure { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Moves each migration guest (up to `--max-stage`, but `--except`'s) to
/// a second VM while it runs, with the dirty log; one `RKVM-CHECK` line
/// each, which passes if the moved run's trace equals an unmoved run's.
fn migrate(cli: &Cli, options: &Options) -> anyhow::Result<ExitCode> {
    let mut all_passed = true;
    let names: Vec<&str> = guests::up_to_stage(cli.max_stage)
        .filter(|g| cli.platform.is_none_or(|p| g.left_out_on(p).is_none()))
        .map(|g| g.name)
        .filter(|n| rkvm_run::migrate::GUESTS.contains(n) && !cli.except.iter().any(|e| e == n))
        .collect();
    for name in names {
        let verdict = guests::find(name).and_then(|g| rkvm_run::migrate::migrate(&g, options));
        match verdict {
            Ok(m) => match m.difference() {
                None => println!("RKVM-CHECK ok migrate/{name}: copied {}", rkvm_run::migrate::describe(&m.rounds)),
                Some(diff) => {
                    all_passed = false;
                    println!("RKVM-CHECK fail migrate/{name}: the moved run differs at {diff} (copied {})",
                             rkvm_run::migrate::describe(&m.rounds));
                }
            },
            Err(e) => {
                all_passed = false;
                println!("RKVM-CHECK fail migrate/{name}: {e:#}");
            }
        }
        io::stdout().flush()?;
    }
    Ok(if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// 3 for a timeout; 0 for a guest that stopped by itself.
fn status(stop: Stop) -> ExitCode {
    match stop {
        Stop::Timeout => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    }
}
