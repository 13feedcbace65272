//! Where things are: the project tree, the build outputs, the shared cache.

use std::path::PathBuf;

/// The root of the rkvm checkout: the directory above xtask's own. `cargo
/// xtask` (`cargo run -p xtask`) names xtask's directory at run time, and
/// that one wins over the directory compiled in: when one target directory
/// serves several trees (two handouts sharing `CARGO_TARGET_DIR`), cargo
/// may run a binary built in the other tree, and it must still work on the
/// tree it was run from.
pub fn root() -> PathBuf {
    let run_from = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.file_name().is_some_and(|n| n == "xtask") && dir.join("Cargo.toml").is_file());
    run_from
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("xtask lives one directory below the project root")
        .to_path_buf()
}

/// Cargo's target directory: build outputs of this checkout.
pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// The cache shared by every checkout on this machine: the L1 kernel build
/// takes minutes and depends only on the kernel source and the config
/// fragment, so a fresh clone reuses it. `RKVM_CACHE` overrides the place.
pub fn cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("RKVM_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| target().join("cache"));
    base.join("rkvm")
}

/// The L1 pieces kept in the repository (kernel config, init script).
pub fn l1_sources() -> PathBuf {
    root().join("xtask").join("l1")
}

/// Fails, in one sentence, unless this tree has `dirs` (`kmod`,
/// `solutions`): commands that build or judge the whole hypervisor need the
/// repository itself, not a stage's handout (see `handout.rs`).
pub fn require(command: &str, dirs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<String> = dirs.iter().filter(|d| !root().join(d).is_dir()).map(|d| format!("{d}/")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let handout = if root().join("HANDOUT.md").is_file() { " (see HANDOUT.md)" } else { "" };
    anyhow::bail!(
        "`cargo xtask {command}` needs the full rkvm repository, and this tree has no {}: it is a stage's \
         handout{handout}, where `progress`, `hint`, `watch`, `test-stage N` and `l1 --stage N` work",
        missing.join(" and no ")
    )
}
