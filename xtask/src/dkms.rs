//! `cargo xtask dkms`: the module's source as dkms wants it, a directory
//! `rkvm-VERSION` holding `dkms.conf` and everything `make` needs to build
//! `rkvm.ko` without the rest of the project.
//!
//! It is kmod/'s files as they are (the stage markers are comments to make,
//! bash and the compilers), except `Cargo.toml`, which in the project takes
//! its edition, license and build profile from the workspace: the copy
//! spells them out, leaves out the host tests' dependencies, and is a
//! workspace of its own. The project's `Cargo.lock` and
//! `rust-toolchain.toml` come along, so that the same crates and the same
//! toolchain build it.

use crate::paths;
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the tree `rkvm-VERSION` (default: target/dkms/).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let out = args.out.unwrap_or_else(|| paths::target().join("dkms"));
    let tree = write_tree(&out)?;
    let version = tree.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("rkvm-")).unwrap_or("");
    println!("dkms: the source tree is {}", tree.display());
    println!("dkms: as root, with the toolchain installed for root (see the README, \"Installing with dkms\"):");
    println!("  dkms add {}", tree.display());
    println!("  dkms install rkvm/{version}");
    Ok(())
}

/// Writes `out/rkvm-VERSION` afresh and returns its path.
pub fn write_tree(out: &Path) -> Result<PathBuf> {
    let root = paths::root();
    let kmod = root.join("kmod");
    let manifest = fs::read_to_string(kmod.join("Cargo.toml"))?;
    let workspace = fs::read_to_string(root.join("Cargo.toml"))?;
    let version = section(&manifest, "package")
        .and_then(|s| value(&s, "version"))
        .map(|v| v.trim_matches('"').to_string())
        .context("no version in kmod/Cargo.toml")?;
    let conf = fs::read_to_string(kmod.join("dkms.conf"))?;
    if !conf.contains(&format!("PACKAGE_VERSION=\"{version}\"")) {
        bail!("kmod/dkms.conf's PACKAGE_VERSION is not kmod/Cargo.toml's version {version}");
    }
    let tree = out.join(format!("rkvm-{version}"));
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree)?;
    for name in ["Kbuild", "Makefile", "dkms.conf"] {
        fs::copy(kmod.join(name), tree.join(name)).with_context(|| format!("copying kmod/{name}"))?;
    }
    copy_dir(&kmod.join("src"), &tree.join("src"))?;
    copy_dir(&kmod.join("glue"), &tree.join("glue"))?;
    fs::write(tree.join("Cargo.toml"), standalone_manifest(&manifest, &workspace)?)?;
    for name in ["Cargo.lock", "rust-toolchain.toml"] {
        fs::copy(root.join(name), tree.join(name)).with_context(|| format!("copying {name}"))?;
    }
    Ok(tree)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()))?;
        } else {
            fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// kmod/'s manifest without the workspace: `key.workspace = true` replaced
/// by the workspace's value, no `[lints]` (they only warn) and no
/// `[dev-dependencies]` (host tests do not run there), with an empty
/// `[workspace]` and the workspace's `[profile.kmod]`.
fn standalone_manifest(manifest: &str, workspace: &str) -> Result<String> {
    let package = section(workspace, "workspace.package").context("no [workspace.package] in Cargo.toml")?;
    let profile = section(workspace, "profile.kmod").context("no [profile.kmod] in Cargo.toml")?;
    let mut out = String::from("# Written by `cargo xtask dkms` from the project's kmod/Cargo.toml.\n");
    let mut skipping = false;
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("#@") {
            continue;
        }
        if trimmed.starts_with('[') {
            skipping = matches!(trimmed, "[lints]" | "[dev-dependencies]");
        }
        if skipping {
            continue;
        }
        match trimmed.strip_suffix(".workspace = true") {
            Some(key) => {
                let v = value(&package, key).with_context(|| format!("no `{key}` in [workspace.package]"))?;
                out += &format!("{key} = {v}\n");
            }
            None => {
                out += line;
                out += "\n";
            }
        }
    }
    out += "\n[workspace]\n\n[profile.kmod]\n";
    out += &profile;
    Ok(out)
}

/// The body of section `[name]` of a TOML file: its lines up to the next
/// section, without blank lines at the end.
fn section(toml: &str, name: &str) -> Option<String> {
    let header = format!("[{name}]");
    let mut lines = toml.lines().skip_while(|l| l.trim() != header);
    lines.next()?;
    let body: Vec<&str> = lines.take_while(|l| !l.trim_start().starts_with('[')).collect();
    Some(body.join("\n").trim_end().to_string() + "\n")
}

/// The value of `key = value` in a section's body, as written (a string
/// keeps its quotes).
fn value(body: &str, key: &str) -> Option<String> {
    body.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_stands_alone() {
        let workspace = "[workspace]\nmembers = [\"kmod\"]\n\n[workspace.package]\nedition = \"2024\"\nlicense = \"GPL-2.0-only\"\npublish = false\n\n[profile.kmod]\ninherits = \"release\"\nlto = true\n";
        let manifest = "#@ stage 1\n[package]\nname = \"rkvm\"\nedition.workspace = true\nlicense.workspace = true\npublish.workspace = true\n\n[dependencies]\nx86 = \"0.52\"\n\n[lints]\nworkspace = true\n\n[dev-dependencies]\niced-x86 = \"1\"\n";
        let out = standalone_manifest(manifest, workspace).unwrap();
        assert!(out.contains("edition = \"2024\"\nlicense = \"GPL-2.0-only\"\npublish = false\n"), "{out}");
        assert!(out.contains("x86 = \"0.52\""));
        assert!(!out.contains("iced") && !out.contains("[lints]") && !out.contains("#@") && !out.contains(".workspace"));
        assert!(out.ends_with("[workspace]\n\n[profile.kmod]\ninherits = \"release\"\nlto = true\n"), "{out}");
    }

    /// kmod/Makefile (what dkms runs) derives the same rustc flags from a
    /// kernel's configuration as `cargo xtask kmod` does.
    #[test]
    fn the_makefile_and_the_harness_agree_on_the_flags() {
        let configs = [
            "CONFIG_RETPOLINE=y\nCONFIG_RETHUNK=y\nCONFIG_SLS=y\n",
            "CONFIG_MITIGATION_RETPOLINE=y\nCONFIG_MITIGATION_RETHUNK=y\nCONFIG_MITIGATION_SLS=y\nCONFIG_X86_KERNEL_IBT=y\nCONFIG_CALL_PADDING=y\nCONFIG_FUNCTION_PADDING_BYTES=16\n",
            "CONFIG_X86_KERNEL_IBT=y\n# CONFIG_RETPOLINE is not set\n",
            "",
        ];
        for (i, config) in configs.iter().enumerate() {
            let kdir = std::env::temp_dir().join(format!("rkvm-makefile-flags-{}-{i}", std::process::id()));
            fs::create_dir_all(kdir.join("include/config")).unwrap();
            fs::write(kdir.join("include/config/auto.conf"), config).unwrap();
            let out = std::process::Command::new("make")
                .args(["-s", "-C"])
                .arg(paths::root().join("kmod"))
                .arg(format!("KDIR={}", kdir.display()))
                .arg("rustflags")
                .output()
                .unwrap();
            let _ = fs::remove_dir_all(&kdir);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), crate::kmod::rustflags(config).join(" "), "{config}");
        }
    }
}
