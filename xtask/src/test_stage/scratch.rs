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
use std::path::{Path, PathBuf};

/// Where solved copies are made.
fn scratch_root() -> PathBuf {
    paths::target().join("stage-solutions")
}

/// Makes the solved copy of stage `stage` and returns its directory.
pub fn prepare(stage: u32) -> Result<PathBuf> {
    let source = stages::stage_dir(stage);
    let solutions = stages::solution_dir(stage);
    ensure!(solutions.is_dir(), "stage {stage} has no exercises, so no solutions/{}/", dir_name(stage));
    let copy = scratch_root().join(dir_name(stage));
    if copy.exists() {
        std::fs::remove_dir_all(&copy).with_context(|| format!("clearing {}", copy.display()))?;
    }
    copy_tree(&source, &copy)?;
    copy_tree(&solutions, &copy)?;
    let root = paths::root();
    let stage_manifest = read(&copy.join("Cargo.toml"))?;
    let root_manifest = read(&root.join("Cargo.toml"))?;
    write(&copy.join("Cargo.toml"), &stages::standalone_manifest(&stage_manifest, &root_manifest))?;
    if root.join("Cargo.lock").is_file() {
        std::fs::copy(root.join("Cargo.lock"), copy.join("Cargo.lock")).context("copying Cargo.lock")?;
    }
    Ok(copy)
}

/// Copies every file under `from` to the same place under `to`, replacing
/// what is there; `target/` directories are skipped.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let entries = std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", from.display()))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&src, &dst)?;
            }
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
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
}
