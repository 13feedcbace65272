//! `cargo xtask doctor`: what this machine needs, whether it has it, and how
//! to get it.
//!
//! Every other command calls [`require`] for the few things it needs, so a
//! missing program is reported with the exact command that installs it
//! rather than as a confusing failure deep in a build.
//!
//! `--host` asks another question: can this machine load rkvm.ko, on its
//! own processor and kernel, as a lab's machines do ([`host`])?

mod host;

use anyhow::{Result, bail};
use std::path::Path;
use xshell::{Shell, cmd};

#[derive(clap::Args)]
pub struct Args {
    /// Only report; do not install anything even when run as root.
    #[arg(long)]
    pub check_only: bool,
    /// Check this machine as a host for rkvm.ko instead: hardware
    /// virtualization, other hypervisors, Secure Boot and module
    /// signatures, the running kernel's headers. Fails only if something
    /// stands in the way of loading the module.
    #[arg(long)]
    pub host: bool,
    /// With --host: the rkvm.ko to check (default: `cargo xtask kmod`'s
    /// and dkms's for the running kernel).
    #[arg(long, requires = "host")]
    pub ko: Option<std::path::PathBuf>,
}

/// How to tell whether a requirement is met.
#[derive(Clone, Copy)]
pub enum Probe {
    /// A program on `PATH`.
    Program(&'static str),
    /// A file (a header, a data file).
    File(&'static str),
}

/// One thing a command needs and the Debian/Ubuntu package that provides it.
#[derive(Clone, Copy)]
pub struct Need {
    pub probe: Probe,
    pub package: &'static str,
    pub why: &'static str,
}

const fn program(name: &'static str, package: &'static str, why: &'static str) -> Need {
    Need { probe: Probe::Program(name), package, why }
}

const fn file(path: &'static str, package: &'static str, why: &'static str) -> Need {
    Need { probe: Probe::File(path), package, why }
}

/// What building the L1 kernel and the module needs.
pub const KERNEL_BUILD: &[Need] = &[
    file("/usr/src/linux-source-6.1.tar.xz", "linux-source-6.1", "the L1 kernel's source"),
    program("make", "make", "kernel and module builds"),
    program("gcc", "gcc", "kernel and module builds"),
    program("flex", "flex", "the kernel's config tools"),
    program("bison", "bison", "the kernel's config tools"),
    program("bc", "bc", "the kernel build"),
    program("lz4", "lz4", "the compressed L1 kernel image"),
    program("xz", "xz-utils", "unpacking the kernel source"),
    file("/usr/include/gelf.h", "libelf-dev", "objtool"),
    file("/usr/include/openssl/ssl.h", "libssl-dev", "the kernel's signing tools"),
    program("pahole", "dwarves", "module BTF on kernels that want it"),
];

/// What booting L1 under QEMU needs.
pub const QEMU: &[Need] = &[
    program("qemu-system-x86_64", "qemu-system-x86", "the tcg-svm and kvm platforms"),
    file("/bin/busybox", "busybox-static", "L1's userspace"),
];

/// What booting L1 under Bochs needs (platform bochs-vmx).
pub const BOCHS: &[Need] = &[
    program("bochs-bin", "bochs", "the bochs-vmx platform, an emulated CPU with VMX and EPT"),
    file("/usr/share/bochs/BIOS-bochs-latest", "bochsbios", "Bochs's BIOS"),
    file("/usr/share/vgabios/vgabios.bin", "vgabios", "Bochs's VGA BIOS"),
    program("xorriso", "xorriso", "the boot CD Bochs starts L1 from"),
    file("/usr/lib/ISOLINUX/isolinux.bin", "isolinux", "the boot CD's loader"),
    file("/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common", "the boot CD's loader"),
    program("unshare", "util-linux", "running Bochs without a network"),
    file("/bin/busybox", "busybox-static", "L1's userspace"),
];

/// What `cargo xtask book` needs beyond the Rust toolchain.
pub const BOOK: &[Need] =
    &[program("chromium", "chromium", "looking at the built book's pages and taking their screenshots")];

/// What the test guests need.
pub const GUESTS: &[Need] = &[program("nasm", "nasm", "assembling the test guests")];

fn is_met(need: &Need) -> bool {
    match need.probe {
        Probe::Program(name) => find_program(name),
        Probe::File(path) => Path::new(path).exists(),
    }
}

fn find_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

fn describe(need: &Need) -> String {
    match need.probe {
        Probe::Program(name) => format!("program `{name}`"),
        Probe::File(path) => format!("file {path}"),
    }
}

/// Fails, naming each missing requirement and the one command that installs
/// them all, unless every need in `needs` is met.
pub fn require(needs: &[Need]) -> Result<()> {
    let missing: Vec<&Need> = needs.iter().filter(|n| !is_met(n)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut msg = String::from("this machine lacks:\n");
    for need in &missing {
        msg += &format!("  - {} (for {}), from package {}\n", describe(need), need.why, need.package);
    }
    msg += &format!("Install with:\n  sudo apt-get install -y {}\nor run `cargo xtask doctor` as root.", packages(&missing));
    bail!(msg)
}

fn packages(needs: &[&Need]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for need in needs {
        if !names.contains(&need.package) {
            names.push(need.package);
        }
    }
    names.join(" ")
}

/// The rustup pieces the module build needs beyond a default toolchain.
const RUST_TARGET: &str = "x86_64-unknown-none";

fn rust_ready(sh: &Shell) -> (bool, bool) {
    let targets = cmd!(sh, "rustup target list --installed").quiet().read().unwrap_or_default();
    let components = cmd!(sh, "rustup component list --installed").quiet().read().unwrap_or_default();
    (targets.lines().any(|l| l.trim() == RUST_TARGET), components.lines().any(|l| l.starts_with("rust-src")))
}

pub fn run(args: Args) -> Result<()> {
    if args.host {
        return host::run(args.ko);
    }
    let sh = Shell::new()?;
    sh.change_dir(crate::paths::root());
    let needs: Vec<Need> = [KERNEL_BUILD, QEMU, BOCHS, GUESTS, BOOK].concat();
    let mut all: Vec<&Need> = needs.iter().collect();
    let mut seen = std::collections::HashSet::new();
    all.retain(|n| seen.insert(describe(n)));
    let root = cmd!(sh, "id -u").quiet().read().map(|s| s.trim() == "0").unwrap_or(false);
    let missing: Vec<&Need> = all.iter().copied().filter(|n| !is_met(n)).collect();
    for need in &all {
        let mark = if is_met(need) { "ok  " } else { "MISS" };
        println!("{mark} {} ({}; package {})", describe(need), need.why, need.package);
    }
    if !missing.is_empty() && root && !args.check_only {
        println!("installing: {}", packages(&missing));
        cmd!(sh, "apt-get update -q").run()?;
        let pkgs: Vec<&str> = missing.iter().map(|n| n.package).collect();
        cmd!(sh, "apt-get install -y -q {pkgs...}").env("DEBIAN_FRONTEND", "noninteractive").run()?;
    }
    let (target, src) = rust_ready(&sh);
    if !(args.check_only || target && src) {
        cmd!(sh, "rustup target add {RUST_TARGET}").run()?;
        cmd!(sh, "rustup component add rust-src").run()?;
    }
    report_platforms();
    let (target, src) = rust_ready(&sh);
    println!("{} rust target {RUST_TARGET}", if target { "ok  " } else { "MISS" });
    println!("{} rust component rust-src", if src { "ok  " } else { "MISS" });
    println!("doctor: to check this machine as a host for rkvm.ko (a lab machine), run `cargo xtask doctor --host`");
    let still: Vec<&Need> = all.iter().copied().filter(|n| !is_met(n)).collect();
    if still.is_empty() && target && src {
        println!("doctor: this machine has everything rkvm needs");
        Ok(())
    } else {
        require(&still.into_iter().copied().collect::<Vec<_>>())?;
        bail!("add the Rust pieces with: rustup target add {RUST_TARGET} && rustup component add rust-src")
    }
}

fn report_platforms() {
    let host = crate::platform::host_virtualization();
    println!("platform tcg-svm: available wherever QEMU is (QEMU emulates AMD SVM)");
    match host {
        Some(kind) => println!("platform kvm: available (the host's /dev/kvm offers nested {kind:?} virtualization)"),
        None => println!(
            "platform kvm: not available (no /dev/kvm with nested VMX or SVM on this host; that is fine, tcg-svm is used)"
        ),
    }
    report_bochs();
}

fn report_bochs() {
    if BOCHS.iter().any(|n| !is_met(n)) {
        println!("platform bochs-vmx: not available (Bochs or its boot pieces are missing; see MISS above)");
        return;
    }
    match crate::platform::bochs_network() {
        Ok(_) => println!("platform bochs-vmx: available (Bochs emulates Intel VMX with EPT; slower than tcg-svm)"),
        Err(e) => println!("platform bochs-vmx: not available: {e:#}"),
    }
}
