//! The `Cargo.toml` of a stage crate, derived from `kmod/Cargo.toml`.
//!
//! Two edits, made on the projected lines: the package is renamed
//! `rkvm-stageNN` (so every stage can sit in the workspace beside `kmod`),
//! and the library keeps kmod's crate name through `[lib] name`, so that
//! tests, doc examples and the book say `rkvm::...` in every stage.
//! [`standalone_manifest`] makes a stage buildable outside the workspace.

use super::dir_name;
use anyhow::{Result, bail};

/// The package name of stage `stage`'s crate.
pub fn package_name(stage: u32) -> String {
    format!("rkvm-stage{stage:02}")
}

/// Rewrites the projected lines of `kmod/Cargo.toml` for stage `stage`.
pub fn stage_manifest(lines: &[String], stage: u32) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(lines.len() + 2);
    let mut section = String::new();
    let mut crate_name = None;
    let mut lib_has_name = false;
    for line in lines {
        let text = line.trim();
        if text.starts_with('[') {
            section = text.to_string();
        }
        match (section.as_str(), key(text)) {
            ("[package]", Some("name")) => {
                crate_name = Some(value(text).replace('-', "_"));
                out.push(format!("name = \"{}\"", package_name(stage)));
            }
            ("[package]", Some("description")) => {
                out.push(format!("description = \"{} (stage {})\"", value(text), dir_name(stage)));
            }
            ("[lib]", Some("name")) => {
                lib_has_name = true;
                out.push(line.clone());
            }
            _ => out.push(line.clone()),
        }
    }
    let Some(crate_name) = crate_name else {
        bail!("kmod/Cargo.toml has no `name` under [package]; the stage crates take their crate name from it");
    };
    if !lib_has_name {
        name_the_lib(&mut out, &crate_name);
    }
    Ok(out)
}

/// Adds `name = "<crate>"` right under `[lib]`, adding `[lib]` if needed.
fn name_the_lib(out: &mut Vec<String>, crate_name: &str) {
    let line = format!("name = \"{crate_name}\"");
    match out.iter().position(|l| l.trim() == "[lib]") {
        Some(at) => {
            let comment = format!("# The library is `{crate_name}` in every stage, so code and tests read alike.");
            out.insert(at + 1, comment);
            out.insert(at + 2, line);
        }
        None => out.extend(["".to_string(), "[lib]".to_string(), line]),
    }
}

/// The key of a `key = value` line.
fn key(text: &str) -> Option<&str> {
    let (key, _) = text.split_once('=')?;
    Some(key.trim())
}

/// The value of a `key = "value"` line, without its quotes.
fn value(text: &str) -> String {
    let raw = text.split_once('=').map_or("", |(_, v)| v.trim());
    raw.trim_matches('"').to_string()
}

/// A stage crate's manifest made into its own workspace, for building a copy
/// of the stage outside the repository's workspace: appends `[workspace]`
/// and the workspace tables that the crate inherits from (package fields,
/// lints, dependencies) or is built with (profiles), copied from the root
/// `Cargo.toml`.
pub fn standalone_manifest(stage_manifest: &str, root_manifest: &str) -> String {
    let mut out = stage_manifest.trim_end().to_string();
    out.push_str("\n\n# Copied from the repository's Cargo.toml: this copy is its own workspace.\n[workspace]\n");
    let mut keep = false;
    for line in root_manifest.lines() {
        let text = line.trim();
        if text.starts_with('[') {
            keep = ["[workspace.package]", "[workspace.lints", "[workspace.dependencies]", "[profile."]
                .iter()
                .any(|prefix| text.starts_with(prefix));
            if keep {
                out.push('\n');
            }
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    const KMOD: &str = "[package]\nname = \"rkvm\"\ndescription = \"The core\"\nedition.workspace = true\n\n\
                        [lib]\npath = \"src/lib.rs\"\n\n[lints]\nworkspace = true";

    #[test]
    fn renames_the_package_and_keeps_the_library_name() {
        let out = stage_manifest(&lines(KMOD), 2).unwrap().join("\n");
        assert!(out.contains("name = \"rkvm-stage02\""), "{out}");
        assert!(out.contains("[lib]\n# The library is `rkvm` in every stage"), "{out}");
        assert!(out.contains("\nname = \"rkvm\"\npath = \"src/lib.rs\""), "{out}");
        assert!(out.contains("description = \"The core (stage 02-abi)\""), "{out}");
    }

    #[test]
    fn adds_a_lib_section_when_there_is_none() {
        let out = stage_manifest(&lines("[package]\nname = \"rkvm-core\""), 1).unwrap().join("\n");
        assert!(out.ends_with("[lib]\nname = \"rkvm_core\""), "{out}");
    }

    #[test]
    fn a_manifest_without_a_package_name_is_an_error() {
        let err = stage_manifest(&lines("[package]\nversion = \"1\""), 1).unwrap_err();
        assert!(err.to_string().contains("no `name`"), "{err}");
    }

    #[test]
    fn standalone_copies_the_inherited_tables_only() {
        let root = "[workspace]\nmembers = [\"kmod\"]\n\n[workspace.package]\nedition = \"2024\"\n\n\
                    [workspace.lints.rust]\nx = \"deny\"\n\n[profile.kmod]\nlto = true\n\n[patch.crates-io]\ny = 1\n";
        let out = standalone_manifest("[package]\nname = \"s\"\n", root);
        assert!(out.contains("[workspace]\n\n[workspace.package]\nedition = \"2024\""), "{out}");
        assert!(out.contains("[workspace.lints.rust]\nx = \"deny\""), "{out}");
        assert!(out.contains("[profile.kmod]\nlto = true"), "{out}");
        assert!(!out.contains("members") && !out.contains("patch"), "{out}");
    }
}
