//! The solved copy of a stage: `stages/NN-slug/` copied under `target/`
//! with `solutions/NN-slug/` laid over it, never touching either tree.
//!
//! The copy lives outside the workspace's members, so its manifest is made
//! a workspace of its own (see `stages::standalone_manifest`); it shares the
//! repository's `Cargo.lock` and target directory, so nothing already built
//! is built again.

use crate::paths;
use crate::stages::{self, dir_name};
use anyhow::{Context, Result, ensure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where solved copies are made.
fn scratch_root() -> PathBuf {
    paths::target().join("stage-solutions")
}

/// Makes the solved copy of stage `stage` and returns its directory.
///
/// Only files whose contents changed are written, each whole at once (a
/// new file renamed over the old), and files no longer wanted are removed:
/// a copy already up to date is left untouched, so cargo builds nothing
/// again, and two `cargo xtask` processes that prepare the same stage at
/// the same time (`cargo xtask test` runs `exercises --check` beside the
/// stages) never see a half-written file.
pub fn prepare(stage: u32) -> Result<PathBuf> {
    let source = stages::stage_dir(stage);
    let solutions = stages::solution_dir(stage);
    ensure!(solutions.is_dir(), "stage {stage} has no exercises, so no solutions/{}/", dir_name(stage));
    let copy = scratch_root().join(dir_name(stage));
    let mut files = BTreeMap::new();
    gather(&source, Path::new(""), &mut files)?;
    gather(&solutions, Path::new(""), &mut files)?;
    let root = paths::root();
    let stage_manifest = files.get(Path::new("Cargo.toml")).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let root_manifest = read(&root.join("Cargo.toml"))?;
    files.insert("Cargo.toml".into(), stages::standalone_manifest(&stage_manifest, &root_manifest).into_bytes());
    if root.join("Cargo.lock").is_file() {
        files.insert("Cargo.lock".into(), std::fs::read(root.join("Cargo.lock")).context("reading Cargo.lock")?);
    }
    sync(&copy, &files)?;
    Ok(copy)
}

/// Every file under `from` (but `target/`), by its path below `from`
/// prefixed with `below`, with its contents; a later call replaces what
/// an earlier one gathered at the same path.
fn gather(from: &Path, below: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
    let entries = std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", from.display()))?;
        let (src, rel) = (entry.path(), below.join(entry.file_name()));
        if src.is_dir() {
            if entry.file_name() != "target" {
                gather(&src, &rel, files)?;
            }
        } else {
            files.insert(rel, std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?);
        }
    }
    Ok(())
}

/// Makes the tree at `to` hold exactly `files` (and whatever is under its
/// `target/` directories), writing only what differs.
fn sync(to: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
    write_changed(to, files)?;
    remove_unwanted(to, Path::new(""), files)
}

/// Writes each of `files` under `to` whose contents differ from what is
/// there, whole: a new file renamed over the old.
fn write_changed(to: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
    for (rel, contents) in files {
        let dst = to.join(rel);
        if std::fs::read(&dst).is_ok_and(|old| old == *contents) {
            continue;
        }
        let dir = dst.parent().unwrap_or(to);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let part = dir.join(format!(".{name}.{}.part", std::process::id()));
        write_bytes(&part, contents)?;
        std::fs::rename(&part, &dst).with_context(|| format!("renaming {} to {}", part.display(), dst.display()))?;
    }
    Ok(())
}

/// Removes the files under `dir` that `files` does not hold (never under
/// `target/`, nor another process's `.part` files).
fn remove_unwanted(dir: &Path, below: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir.join(below)) else { return Ok(()) };
    for entry in entries.flatten() {
        let rel = below.join(entry.file_name());
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            if name != "target" {
                remove_unwanted(dir, &rel, files)?;
            }
        } else if !files.contains_key(&rel) && !name.ends_with(".part") {
            std::fs::remove_file(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Copies every file under `from` to the same place under `to`, replacing
/// what is there; `target/` directories are skipped (for tests that build
/// trees of their own).
#[cfg(test)]
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    gather(from, Path::new(""), &mut files)?;
    write_changed(to, &files)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write_bytes(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_overlays_files_and_skips_target() {
        let base = std::env::temp_dir().join(format!("rkvm-scratch-test-{}", std::process::id()));
        let (a, b, out) = (base.join("a"), base.join("b"), base.join("out"));
        for (dir, file, text) in [(&a, "src/x.rs", "hole"), (&a, "src/y.rs", "y"), (&a, "target/t", "t"), (&b, "src/x.rs", "solved")] {
            std::fs::create_dir_all(dir.join(file).parent().unwrap()).unwrap();
            std::fs::write(dir.join(file), text).unwrap();
        }
        copy_tree(&a, &out).unwrap();
        copy_tree(&b, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("src/x.rs")).unwrap(), "solved");
        assert_eq!(std::fs::read_to_string(out.join("src/y.rs")).unwrap(), "y");
        assert!(!out.join("target").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn sync_writes_only_what_differs_and_removes_what_is_gone() {
        let out = std::env::temp_dir().join(format!("rkvm-sync-test-{}", std::process::id()));
        let files = |list: &[(&str, &str)]| -> BTreeMap<PathBuf, Vec<u8>> {
            list.iter().map(|(p, t)| (PathBuf::from(p), t.as_bytes().to_vec())).collect()
        };
        sync(&out, &files(&[("src/a.rs", "a"), ("src/b.rs", "b"), ("Cargo.toml", "m")])).unwrap();
        std::fs::create_dir_all(out.join("target")).unwrap();
        std::fs::write(out.join("target/kept"), "build output").unwrap();
        let modified = |p: &str| std::fs::metadata(out.join(p)).unwrap().modified().unwrap();
        let a_before = modified("src/a.rs");
        std::thread::sleep(std::time::Duration::from_millis(20));
        sync(&out, &files(&[("src/a.rs", "a"), ("Cargo.toml", "m2")])).unwrap();
        assert_eq!(modified("src/a.rs"), a_before, "an unchanged file is not written");
        assert_eq!(std::fs::read_to_string(out.join("Cargo.toml")).unwrap(), "m2");
        assert!(!out.join("src/b.rs").exists(), "a file no longer wanted is removed");
        assert!(out.join("target/kept").exists(), "target/ is left alone");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
