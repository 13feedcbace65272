//! Reading `kmod/`: every file but its README, parsed for stage markers.
//!
//! The files are those git would commit: tracked files plus untracked ones
//! that `.gitignore` does not exclude, so build products in `kmod/` are
//! never mistaken for sources. Without git, the directory is walked.

use super::marker::{self, Exercise, Node, SourceFile};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The parsed `kmod/` and the stages it defines.
pub struct Sources {
    /// Sorted by path.
    pub files: Vec<SourceFile>,
    /// The highest stage any marker names.
    pub last_stage: u32,
}

impl Sources {
    /// Every exercise, ordered by id.
    pub fn exercises(&self) -> Vec<Exercise> {
        let mut all = Vec::new();
        for file in &self.files {
            gather(&file.body, &mut all);
        }
        all.sort_by_key(|e| e.id);
        all
    }
}

fn gather(nodes: &[Node], all: &mut Vec<Exercise>) {
    for node in nodes {
        match node {
            Node::Line(_) => {}
            Node::Region { body, .. } => gather(body, all),
            Node::Exercise(exercise) => all.push(exercise.clone()),
        }
    }
}

/// Reads and parses `kmod/` under `root`.
pub fn load(root: &Path) -> Result<Sources> {
    let mut files = Vec::new();
    for path in list(root)? {
        let full = root.join("kmod").join(&path);
        let text = std::fs::read_to_string(&full)
            .with_context(|| format!("reading {}: every file in kmod/ must be UTF-8 text", full.display()))?;
        files.push(marker::parse(&path, &text)?);
    }
    from_files(files)
}

/// Checks what spans files (exercise ids are unique) and finds the last
/// stage.
pub fn from_files(mut files: Vec<SourceFile>) -> Result<Sources> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut seen = BTreeMap::new();
    let mut last_stage = 0;
    for file in &files {
        last_stage = last_stage.max(file.stage).max(highest_stage(&file.body));
        let mut found = Vec::new();
        gather(&file.body, &mut found);
        for exercise in found {
            let here = format!("kmod/{}:{}", exercise.file, exercise.line);
            if let Some(first) = seen.insert(exercise.id, here.clone()) {
                bail!("exercise {} is defined twice, at {first} and at {here}; ids must be unique", exercise.id);
            }
        }
    }
    if files.is_empty() {
        bail!("kmod/ has no source files; nothing to generate");
    }
    Ok(Sources { files, last_stage })
}

/// The highest stage named by any marker in `nodes`.
fn highest_stage(nodes: &[Node]) -> u32 {
    nodes
        .iter()
        .map(|node| match node {
            Node::Line(_) => 0,
            Node::Region { range, body } => range.until.unwrap_or(0).max(range.from).max(highest_stage(body)),
            Node::Exercise(exercise) => exercise.id.stage,
        })
        .max()
        .unwrap_or(0)
}

/// The source files of `kmod/`, relative to it, sorted; `README.md` and
/// anything under a `target/` directory excluded.
fn list(root: &Path) -> Result<Vec<String>> {
    let mut paths = git_files(root).unwrap_or_else(|| walk(&root.join("kmod"), ""));
    paths.retain(|p| p != "README.md" && !p.split('/').any(|part| part == "target"));
    paths.retain(|p| root.join("kmod").join(p).is_file());
    paths.sort();
    paths.dedup();
    Ok(paths)
}

fn git_files(root: &Path) -> Option<Vec<String>> {
    let output = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "kmod"])
        .current_dir(root)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let paths = text.split('\0').filter_map(|p| p.strip_prefix("kmod/")).map(str::to_string).collect();
    Some(paths)
}

fn walk(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}{name}");
        if entry.path().is_dir() {
            if name != "target" && name != ".git" {
                paths.extend(walk(&entry.path(), &format!("{path}/")));
            }
        } else {
            paths.push(path);
        }
    }
    paths
}
