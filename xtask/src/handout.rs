//! `cargo xtask handout N DIR`: the tree a course hands out for stage N.
//!
//! A student working on stage N gets the repository's files (those git
//! tracks, so no build output) without what would give the answers away:
//! `kmod/` (the whole hypervisor), `solutions/`, and the stages after N
//! (stage N+1's skeleton holds stage N's answers). The workspace's
//! `Cargo.toml` then lists only the members left, the stages up to N and
//! `xtask`, and `Cargo.lock` is pruned to them. The L1 programs that
//! `test-stage N` and `l1 --stage N` put beside the module, `rkvm-run` and
//! `rkvm-devtest`, are built from crates that take the ABI from `kmod/`:
//! they come prebuilt, linked statically, in [`PREBUILT`], and their
//! crates stay out. `HANDOUT.md` at the top says what the tree is.
//!
//! [`check`] keeps it true for `cargo xtask test`: it writes stage
//! [`CHECK_STAGE`]'s handout and runs `progress` (which reports on that
//! stage alone there) and `hint` there.

use crate::stages::{LAST_STAGE, dir_name};
use crate::{hint, l1, paths};
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where a handout keeps the L1 programs, prebuilt.
pub const PREBUILT: &str = "testguests/bin";

/// The L1 programs a stage's jobs use (see `jobs::module_job`).
const PROGRAMS: [&str; 2] = ["rkvm-run", "rkvm-devtest"];

/// What a handout leaves out besides the later stages: the answers, the
/// crates that need `kmod/` (their programs come prebuilt), and the CI
/// script, which runs `cargo xtask test`.
const LEFT_OUT: [&str; 7] =
    ["kmod/", "solutions/", "testguests/devtest/", "testguests/fuzz/", "testguests/runner/", "testguests/vmm/", ".ci/"];

/// The stage whose handout `cargo xtask test` writes and uses.
pub const CHECK_STAGE: u32 = 8;

#[derive(clap::Args)]
pub struct Args {
    /// The stage the student works on, 1 to 13: the tree holds stages 1 to N.
    #[arg(required_unless_present = "check")]
    pub stage: Option<u32>,
    /// Where to write the tree: a directory that does not exist yet, or is empty.
    #[arg(required_unless_present = "check")]
    pub dir: Option<PathBuf>,
    /// Instead: write stage 8's handout under target/handout-check/ and run
    /// `progress` and `hint` there, as `cargo xtask test` does.
    #[arg(long, conflicts_with_all = ["stage", "dir"])]
    pub check: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (Some(stage), Some(dir)) = (args.stage, args.dir) else { return check(true) };
    let busy = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    ensure!(!busy, "{} is not empty: give a new directory, so that nothing of a student's is overwritten", dir.display());
    let start = Instant::now();
    let files = write(stage, &dir, true)?;
    println!(
        "stage {}'s handout: {files} files in {} ({}); HANDOUT.md there says what it holds",
        dir_name(stage),
        dir.display(),
        crate::progress::elapsed_text(start.elapsed())
    );
    Ok(())
}

/// Writes stage `stage`'s handout into `dir`, with the L1 programs if
/// `programs`, and returns how many files it holds. Only files whose
/// contents changed are written, and files of an earlier handout that no
/// longer belong are removed (`target/` is left alone), so that cargo
/// rebuilds nothing when the tree is written again.
fn write(stage: u32, dir: &Path, programs: bool) -> Result<usize> {
    ensure!((1..=LAST_STAGE).contains(&stage), "there is no stage {stage}: stages are 1 to {LAST_STAGE}");
    let root = paths::root();
    let mut tree = BTreeMap::new();
    for path in tracked(&root)?.into_iter().filter(|p| keep(p, stage)) {
        let data = std::fs::read(root.join(&path)).with_context(|| format!("reading {path}"))?;
        let mode = std::fs::metadata(root.join(&path))?.permissions().mode() & 0o777;
        tree.insert(path, (data, mode));
    }
    ensure!(tree.contains_key(&format!("stages/{}/Cargo.toml", dir_name(stage))), "stages/{}/ is not generated", dir_name(stage));
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    let kept: Vec<&str> = tree.keys().map(String::as_str).collect();
    tree.insert("Cargo.toml".into(), (manifest(&workspace, stage, &kept).into_bytes(), 0o644));
    tree.insert("HANDOUT.md".into(), (readme(&root, stage, programs)?.into_bytes(), 0o644));
    if programs {
        for program in PROGRAMS {
            tree.insert(format!("{PREBUILT}/{program}"), (l1::static_binary(program)?, 0o755));
        }
    }
    sync(dir, &tree)?;
    prune_lock(dir);
    Ok(tree.len())
}

/// The files git tracks, relative to `root`, that are on disk; says which
/// files git does not track are left out, if any.
fn tracked(root: &Path) -> Result<Vec<String>> {
    let list = |args: &[&str]| -> Result<Vec<String>> {
        let output = Command::new("git").current_dir(root).args(["ls-files", "-z"]).args(args).output();
        let output = output.context("running git ls-files")?;
        ensure!(output.status.success(), "a handout is made from a git checkout, and {} is not one", root.display());
        let text = String::from_utf8(output.stdout).context("git ls-files printed a path that is not UTF-8")?;
        Ok(text.split('\0').filter(|p| !p.is_empty() && root.join(p).is_file()).map(str::to_string).collect())
    };
    let untracked: Vec<String> = list(&["--others", "--exclude-standard"])?.into_iter().filter(|p| keep(p, LAST_STAGE)).collect();
    if !untracked.is_empty() {
        let files = if untracked.len() == 1 { "1 file" } else { &format!("{} files", untracked.len()) };
        println!("handout: left out {files} git does not track: {}", untracked.join(", "));
    }
    list(&["--cached"])
}

/// Whether the repository's file `path` belongs in stage `stage`'s handout.
fn keep(path: &str, stage: u32) -> bool {
    if LEFT_OUT.iter().any(|dir| path.starts_with(dir)) {
        return false;
    }
    match path.strip_prefix("stages/").and_then(|rest| rest.split_once('/')) {
        Some((name, _)) => (1..=stage).any(|n| dir_name(n) == name),
        None => true,
    }
}

/// The workspace's `Cargo.toml` with only the members the handout holds
/// (`files`, its paths): a member is kept when its `Cargo.toml` is there,
/// a glob `dir/*` when some `dir/NAME/Cargo.toml` is.
fn manifest(workspace: &str, stage: u32, files: &[&str]) -> String {
    let present = |member: &str| match member.strip_suffix("/*") {
        Some(dir) => files.iter().any(|f| {
            f.strip_prefix(dir).and_then(|r| r.strip_prefix('/')).and_then(|r| r.strip_suffix("/Cargo.toml")).is_some_and(|n| !n.contains('/'))
        }),
        None => files.contains(&format!("{member}/Cargo.toml").as_str()),
    };
    let mut out = format!("# Written by `cargo xtask handout {stage}` from the rkvm repository's Cargo.toml: the members are those of this tree.\n");
    let mut in_members = false;
    for line in workspace.lines() {
        let text = line.trim();
        in_members = in_members || text.starts_with("members");
        let member = text.strip_suffix(',').unwrap_or(text).trim_matches('"');
        if in_members && text.starts_with('"') && !present(member) {
            continue;
        }
        in_members = in_members && !text.ends_with(']');
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `HANDOUT.md`: what this tree is, what it holds and leaves out, and the
/// commands that work in it.
fn readme(root: &Path, stage: u32, programs: bool) -> Result<String> {
    let describe = Command::new("git").current_dir(root).args(["describe", "--always", "--dirty"]).output()?;
    let commit = String::from_utf8_lossy(&describe.stdout).trim().to_string();
    let later = match stage {
        LAST_STAGE => String::new(),
        _ => format!(";\n- the stages after {stage:02}: stage {:02}'s crate holds stage {stage:02}'s answers", stage + 1),
    };
    let programs = if programs {
        format!(
            "The programs L1 runs beside\n\
             the module, `rkvm-run` (it runs the test guests) and `rkvm-devtest`, take the ABI from\n\
             `kmod/`: they are prebuilt in `{PREBUILT}/`, linked statically, and their crates are\n\
             left out.\n"
        )
    } else {
        "The programs L1 runs beside\n\
         the module are left out, with their crates: `test-stage` and `l1` cannot run here.\n"
            .into()
    };
    let progress = match stage {
        1 => "which of the stage's exercises are solved, and what next".to_string(),
        _ => format!("which of stage {stage:02}'s exercises are solved, and what next (--all: stages 01 to {stage:02})"),
    };
    let mut commands = vec![
        ("cargo xtask progress".to_string(), progress),
        ("cargo xtask watch".into(), "the stage's exercise tests again on every save".into()),
        (format!("cargo xtask test-stage {stage}"), "all of the stage's tests (from stage 03 on, in L1 too)".into()),
        (format!("cargo xtask l1 --stage {stage} 'cmds'"), "boot L1 with the stage's module and run commands".into()),
        ("cargo xtask doctor".into(), "what this machine lacks, and how to get it".into()),
    ];
    if let Some(first) = hint::all(root)?.into_iter().find(|e| e.id.stage == stage) {
        let hint = "an exercise's instruction and first hint (--more: the next)".into();
        commands.insert(1, (format!("cargo xtask hint {}", first.id), hint));
    }
    let width = commands.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    let commands: String = commands.iter().map(|(command, what)| format!("    {command:<width$}   {what}\n")).collect();
    Ok(format!(
        "# rkvm, stage {name}\n\n\
         Written by `cargo xtask handout {stage}` from the rkvm repository at {commit}.\n\n\
         This tree is what a course hands out for stage {stage:02}: the stage crates up to it\n\
         (`stages/`), the book's source (`book/`), the test guests with their golden traces\n\
         (`testguests/`) and the harness (`xtask/`). It leaves out what would give answers away:\n\n\
         - `kmod/`, the whole hypervisor;\n\
         - `solutions/`, the answers to every stage's exercises{later}.\n\n\
         The workspace's `Cargo.toml` lists the crates that are here. {programs}\n\
         What works here:\n\n\
         {commands}\n\
         The commands that need `kmod/` or `solutions/` (`test`, `stages`, `exercises`, `book`,\n\
         `kmod`, `--solution`, ...) say so and stop. The book's code excerpts come from the stages,\n\
         so it cannot be built here: read the book the course publishes.\n\n\
         Builds go to this tree's `target/`. Do not point `CARGO_TARGET_DIR` at a directory that\n\
         another copy of rkvm uses too (a handout of another stage, say): cargo decides what to\n\
         rebuild by the files' times, and could run a build made from the other copy.\n",
        name = dir_name(stage),
    ))
}

/// Makes `dir` hold exactly `tree` (path: contents, mode), outside its
/// `target/`: writes the files that differ and removes the others.
fn sync(dir: &Path, tree: &BTreeMap<String, (Vec<u8>, u32)>) -> Result<()> {
    for old in files_under(dir, "")? {
        if !tree.contains_key(&old) {
            std::fs::remove_file(dir.join(&old)).with_context(|| format!("removing {}", dir.join(&old).display()))?;
            // Its directories too, once empty: an empty `stages/NN-slug/`
            // would still match the workspace's `stages/*`.
            let mut parent = Path::new(&old).parent();
            while let Some(rel) = parent.filter(|p| !p.as_os_str().is_empty()) {
                if std::fs::remove_dir(dir.join(rel)).is_err() {
                    break;
                }
                parent = rel.parent();
            }
        }
    }
    for (path, (data, mode)) in tree {
        let dest = dir.join(path);
        if std::fs::read(&dest).ok().as_ref() != Some(data) {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&dest, data).with_context(|| format!("writing {}", dest.display()))?;
        }
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// The files under `dir` (relative to it, with `prefix`), skipping the
/// top `target/` and `Cargo.lock`, which cargo keeps.
fn files_under(dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if path == "target" || path == "Cargo.lock" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            files.extend(files_under(&entry.path(), &format!("{path}/"))?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Gives the handout the repository's `Cargo.lock` without the packages
/// only the left-out crates used: `cargo update --workspace` removes them
/// and changes no version. Should that fail, the whole lock stays, which
/// cargo accepts (and prunes itself at the first build).
fn prune_lock(dir: &Path) {
    let (from, to) = (paths::root().join("Cargo.lock"), dir.join("Cargo.lock"));
    if std::fs::copy(&from, &to).is_err() {
        return;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let pruned = |offline: bool| {
        let mut command = Command::new(&cargo);
        command.current_dir(dir).args(["update", "--workspace", "--quiet"]);
        if offline {
            command.arg("--offline");
        }
        command.status().is_ok_and(|s| s.success())
    };
    if !pruned(true) && !pruned(false) {
        println!("handout: Cargo.lock is the repository's whole lock (cargo update could not prune it)");
    }
}

/// `cargo xtask test`'s check: stage [`CHECK_STAGE`]'s handout, written
/// under `target/handout-check/` (with the L1 programs if `programs`),
/// where `cargo xtask progress` and `cargo xtask hint` must work. The tree
/// and its own target directory stay between runs, so a run after an
/// unchanged one builds nothing.
pub fn check(programs: bool) -> Result<()> {
    let base = paths::target().join("handout-check");
    let dir = base.join("tree");
    let start = Instant::now();
    write(CHECK_STAGE, &dir, programs)?;
    let stage = CHECK_STAGE.to_string();
    // Not told which stage, `progress` reports on the handout's own.
    let progress = xtask_in(&dir, &base.join("target"), &["progress"])?;
    let own = format!("== stage {} ", dir_name(CHECK_STAGE));
    let reported = progress.lines().filter(|l| l.starts_with("== stage ")).count();
    ensure!(
        progress.contains(&own) && reported == 1 && progress.contains("todo"),
        "`cargo xtask progress` in stage {stage}'s handout did not report on stage {stage} alone with its exercises todo:\n{progress}"
    );
    let id = format!("E{CHECK_STAGE}.1");
    let hint = xtask_in(&dir, &base.join("target"), &["hint", &id])?;
    ensure!(hint.starts_with(&format!("Exercise {id}, ")), "`cargo xtask hint {id}` printed:\n{hint}");
    println!("  handout {stage}: progress and hint ran in {} ({})", dir.display(), crate::progress::elapsed_text(start.elapsed()));
    Ok(())
}

/// Runs `cargo xtask ARGS` in the tree `dir`, built in `target`; returns
/// what it printed, or fails with it.
fn xtask_in(dir: &Path, target: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(dir)
        .arg("xtask")
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .context("running cargo")?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        let lines: Vec<&str> = text.lines().collect();
        bail!("`cargo xtask {}` failed in {}:\n{}", args.join(" "), dir.display(), lines[lines.len().saturating_sub(20)..].join("\n"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handout_keeps_the_stages_up_to_its_own_and_leaves_out_the_answers() {
        assert!(keep("stages/08-shadow-paging/src/lib.rs", 8));
        assert!(keep("stages/01-segments/Cargo.toml", 8));
        assert!(keep("stages/README.md", 8));
        assert!(!keep("stages/09-shadow-cache/src/lib.rs", 8));
        assert!(!keep("kmod/src/lib.rs", 13));
        assert!(!keep("solutions/08-shadow-paging/src/mmu.rs", 13));
        assert!(!keep("testguests/runner/src/main.rs", 8));
        assert!(keep("testguests/guests/hlt.asm", 8));
        assert!(keep("testguests/golden/hlt.trace", 8));
        assert!(keep("xtask/src/main.rs", 1));
        assert!(keep("book/src/SUMMARY.md", 1));
    }

    #[test]
    fn the_workspace_lists_only_the_members_that_are_there() {
        let workspace = "[workspace]\nresolver = \"3\"\nmembers = [\n    \"kmod\",\n    \"stages/*\",\n    \"testguests/runner\",\n    \"xtask\",\n]\n\n[profile.kmod]\nlto = true\n";
        let files = ["stages/01-segments/Cargo.toml", "stages/README.md", "xtask/Cargo.toml", "testguests/guests/hlt.asm"];
        let text = manifest(workspace, 1, &files);
        assert!(text.starts_with("# Written by `cargo xtask handout 1` "), "{text}");
        assert!(text.ends_with("members = [\n    \"stages/*\",\n    \"xtask\",\n]\n\n[profile.kmod]\nlto = true\n"), "{text}");
        assert!(!manifest(workspace, 1, &["stages/README.md", "xtask/Cargo.toml"]).contains("stages/*"));
    }

    #[test]
    fn sync_writes_what_changed_and_removes_what_no_longer_belongs() {
        let dir = std::env::temp_dir().join(format!("rkvm-handout-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = |files: &[(&str, &str)]| -> BTreeMap<String, (Vec<u8>, u32)> {
            files.iter().map(|(p, t)| (p.to_string(), (t.as_bytes().to_vec(), 0o644))).collect()
        };
        sync(&dir, &tree(&[("a/x", "1"), ("b", "2")])).unwrap();
        std::fs::create_dir_all(dir.join("target")).unwrap();
        std::fs::write(dir.join("target/kept"), "built").unwrap();
        let before = std::fs::metadata(dir.join("b")).unwrap().modified().unwrap();
        sync(&dir, &tree(&[("b", "2"), ("c", "3")])).unwrap();
        assert!(!dir.join("a").exists());
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "3");
        assert_eq!(std::fs::metadata(dir.join("b")).unwrap().modified().unwrap(), before);
        assert!(dir.join("target/kept").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
