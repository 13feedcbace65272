//! `rkvm-run`: the command. See `rkvm_run::cli::USAGE`, or run it with `--help`.

use rkvm_run::cli::{self, Cli, Command};
use rkvm_run::exit::Stop;
use rkvm_run::guests::{self, EmbeddedGuest};
use rkvm_run::header;
use rkvm_run::run::{Options, run};
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
        Command::Run(name) => run_one(name, &options),
        Command::All => run_all(&cli, &options),
        Command::Check => check(&cli, &options),
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
fn list(cli: &Cli) -> anyhow::Result<ExitCode> {
    for guest in guests::up_to_stage(cli.max_stage) {
        let h = header::parse(guest.source)?;
        println!("{:<14} stage {:>2}  {:<6}  {}", h.name, h.stage, h.mode.name(), h.demonstrates);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_one(name: &str, options: &Options) -> anyhow::Result<ExitCode> {
    let outcome = run(&guests::find(name)?, options)?;
    print!("{}", outcome.trace);
    io::stdout().flush()?;
    Ok(status(outcome.stop))
}

fn run_all(cli: &Cli, options: &Options) -> anyhow::Result<ExitCode> {
    let mut worst = ExitCode::SUCCESS;
    for (i, guest) in guests::up_to_stage(cli.max_stage).enumerate() {
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
    let selected: Vec<&EmbeddedGuest> = guests::up_to_stage(cli.max_stage).collect();
    let all_passed = rkvm_run::check::check(selected.into_iter(), options, &mut io::stdout().lock())?;
    Ok(if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// 3 for a timeout; 0 for a guest that stopped by itself.
fn status(stop: Stop) -> ExitCode {
    match stop {
        Stop::Timeout => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    }
}
