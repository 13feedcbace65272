//! Platforms: the machines L1 runs on.
//!
//! A platform boots the L1 kernel with an initramfs, streams L1's serial
//! console line by line, and says how the machine ended. What the lines mean
//! (checks passed or failed) is decided by `l1`, not here, so every platform
//! is judged the same way.

mod bochs;
mod qemu;

use crate::doctor::Need;
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Duration;

pub use bochs::{Bochs, private_network as bochs_network};
pub use qemu::Qemu;

/// Which hardware virtualization L1 sees, and so which KVM module (Linux's
/// and, for rkvm, which backend) runs there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Amd,
    Intel,
}

impl Vendor {
    /// The suffix of Linux's vendor module: `kvm-amd.ko` or `kvm-intel.ko`.
    pub fn kvm_module(self) -> &'static str {
        match self {
            Vendor::Amd => "amd",
            Vendor::Intel => "intel",
        }
    }
}

/// Everything needed to boot L1 once.
pub struct BootImage {
    /// The uncompressed kernel (QEMU boots it directly through PVH).
    pub vmlinux: PathBuf,
    /// The compressed kernel (Bochs boots it from a CD through isolinux).
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// The whole boot, from start to the machine's exit.
    pub timeout: Duration,
    /// Where the serial console is saved.
    pub log: PathBuf,
}

/// How an L1 machine ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// L1 wrote this verdict byte to the exit device: 0 means success.
    Verdict(u8),
    /// The machine stopped without a verdict: a kernel panic, a reset, a
    /// crash of the emulator.
    NoVerdict,
    /// The timeout passed and the machine was stopped.
    TimedOut,
    /// After a kernel BUG the console stayed silent this long, and the
    /// machine was stopped: a BUG in the module (an unsolved exercise's
    /// `todo!()`) can leave L1 hung, and waiting out the timeout tells
    /// nobody anything.
    SilentAfterBug(std::time::Duration),
}

/// How long QEMU's L1 may stay silent after a kernel BUG before it is
/// taken for hung and stopped: longer than any quiet stretch of a job
/// (the longest seen, 41 s, is the paging leak check under load).
pub const SILENCE_AFTER_BUG: std::time::Duration = std::time::Duration::from_secs(90);

/// Whether a console line is the kernel's report of a BUG (a Rust panic
/// in rkvm ends in one).
pub fn is_bug_line(line: &str) -> bool {
    line.contains("kernel BUG at") || line.contains("rkvm: Rust panic")
}

pub trait Platform {
    /// The name `--platform` takes.
    fn name(&self) -> &'static str;
    /// The virtualization extension L1 sees.
    fn vendor(&self) -> Vendor;
    /// What this platform needs installed.
    fn needs(&self) -> &'static [Need];
    /// Boots L1 and calls `on_line` with each line of its serial console.
    fn boot(&self, image: &BootImage, on_line: &mut dyn FnMut(&str)) -> Result<Ending>;
}

/// The platforms `--platform` accepts.
pub const NAMES: &[&str] = &["tcg-svm", "kvm", "bochs-vmx"];

/// The platform named `name`, or the best one this host offers: `kvm` when
/// the host's `/dev/kvm` offers nested VMX or SVM, else `tcg-svm`.
pub fn select(name: Option<&str>) -> Result<Box<dyn Platform>> {
    let name = match name {
        Some(n) => n.to_string(),
        None if host_virtualization().is_some() => "kvm".into(),
        None => "tcg-svm".into(),
    };
    match name.as_str() {
        "tcg-svm" => Ok(Box::new(Qemu::tcg_svm())),
        "bochs-vmx" => Ok(Box::new(Bochs::vmx())),
        "kvm" => match host_virtualization() {
            Some(vendor) => Ok(Box::new(Qemu::kvm(vendor))),
            None => bail!("platform kvm needs a host /dev/kvm with nested VMX or SVM; this host has none (use tcg-svm)"),
        },
        other => bail!("unknown platform `{other}`; choose one of: {}", NAMES.join(", ")),
    }
}

/// Like [`select`], for a module that runs only on `vendor`'s
/// virtualization: without a name, the host's KVM when it nests that
/// vendor, else the emulator that offers it (`bochs-vmx` for Intel,
/// `tcg-svm` for AMD). A named platform of the other vendor is an error.
pub fn select_for(name: Option<&str>, vendor: Vendor) -> Result<Box<dyn Platform>> {
    let platform = match name {
        Some(_) => select(name)?,
        None if host_virtualization() == Some(vendor) => select(Some("kvm"))?,
        None if vendor == Vendor::Intel => select(Some("bochs-vmx"))?,
        None => select(Some("tcg-svm"))?,
    };
    if platform.vendor() != vendor {
        bail!("this module needs {vendor:?} virtualization, which platform {} does not offer", platform.name());
    }
    Ok(platform)
}

/// The vendor whose virtualization the host's `/dev/kvm` can pass on to a
/// guest (nested virtualization), if any.
pub fn host_virtualization() -> Option<Vendor> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return None;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let nested = |module: &str| {
        std::fs::read_to_string(format!("/sys/module/{module}/parameters/nested"))
            .map(|v| matches!(v.trim(), "Y" | "1"))
            .unwrap_or(false)
    };
    if has("vmx") && nested("kvm_intel") {
        Some(Vendor::Intel)
    } else if has("svm") && nested("kvm_amd") {
        Some(Vendor::Amd)
    } else {
        None
    }
}

/// The guests' header parser (`rkvm-run`'s, which `build.rs` includes the
/// same way), for the platforms a header's `not-on:` may name.
#[cfg(test)]
#[path = "../../../testguests/runner/src/header.rs"]
#[allow(dead_code)]
mod guest_header;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bug_or_a_rust_panic_starts_the_watch_for_silence() {
        assert!(is_bug_line("[   21.015904] kernel BUG at /x/glue/rkvm_glue.c:82!"));
        assert!(is_bug_line("[   21.0] rkvm: Rust panic: panicked at src/debug.rs:180:5:"));
        assert!(!is_bug_line("RKVM-CHECK ok dmesg-clean"));
    }

    #[test]
    fn guest_headers_name_the_platforms_that_exist() {
        assert_eq!(guest_header::PLATFORMS.as_slice(), NAMES, "testguests/runner/src/header.rs must list xtask's platforms");
    }
}
