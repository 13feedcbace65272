//! Where things are: the project tree, the build outputs, the shared cache.

use std::path::PathBuf;

/// The root of the rkvm checkout.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
