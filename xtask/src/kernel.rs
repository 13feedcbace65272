//! The L1 kernel: built once from Debian's `linux-source-6.1` with the config
//! fragment in `xtask/l1/kernel.config`, then cached.
//!
//! The build tree is also what `rkvm.ko` builds against by default, and it
//! carries Linux's own KVM modules, the oracle that runs the same guests.
//! The cache key covers the source tarball, the fragment and the compiler,
//! so changing any of them rebuilds.

use crate::{doctor, paths, progress};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use xshell::{Shell, cmd};

/// Debian's packaged kernel source, from `apt-get install linux-source-6.1`.
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

#[derive(clap::Args)]
pub struct Args {
    /// Rebuild even if a cached build exists.
    #[arg(long)]
    pub force: bool,
}

/// A built L1 kernel.
pub struct L1Kernel {
    /// The kernel build tree (`O=`): modules build against it (`KDIR`).
    pub build: PathBuf,
    /// A packaged compressed kernel (a distribution's `vmlinuz`) booted
    /// instead of the build tree's images; `build` is then its headers.
    pub image: Option<PathBuf>,
}

impl L1Kernel {
    /// A kernel build tree, booted from its own images.
    pub fn tree(build: PathBuf) -> Self {
        L1Kernel { build, image: None }
    }

    /// The uncompressed ELF image, which QEMU boots through PVH quickly
    /// (QEMU boots a packaged `vmlinuz` as well, more slowly).
    pub fn vmlinux(&self) -> PathBuf {
        self.image.clone().unwrap_or_else(|| self.build.join("vmlinux"))
    }

    /// The compressed image, for bootloaders (Bochs boots an ISO).
    pub fn bzimage(&self) -> PathBuf {
        self.image.clone().unwrap_or_else(|| self.build.join("arch/x86/boot/bzImage"))
    }

    /// Linux's own KVM modules, in the order `insmod` must load them.
    pub fn kvm_modules(&self, vendor: &str) -> Vec<PathBuf> {
        ["virt/lib/irqbypass.ko", "arch/x86/kvm/kvm.ko", &format!("arch/x86/kvm/kvm-{vendor}.ko")]
            .iter()
            .map(|p| self.build.join(p))
            .collect()
    }
}

pub fn run(args: Args) -> Result<()> {
    let kernel = build(args.force)?;
    println!("L1 kernel: {}", kernel.build.display());
    Ok(())
}

/// Returns the cached L1 kernel, building it first if needed.
pub fn ensure() -> Result<L1Kernel> {
    build(false)
}

fn build(force: bool) -> Result<L1Kernel> {
    doctor::require(doctor::KERNEL_BUILD)?;
    let sh = Shell::new()?;
    let fragment = paths::l1_sources().join("kernel.config");
    let fragment_text = fs::read_to_string(&fragment).with_context(|| format!("reading {}", fragment.display()))?;
    let gcc = cmd!(sh, "gcc --version").quiet().read()?;
    let tar_len = fs::metadata(SOURCE_TARBALL)?.len();
    let src_key = hash(&format!("{SOURCE_TARBALL} {tar_len}"));
    let key = hash(&format!("{src_key} {fragment_text} {}", gcc.lines().next().unwrap_or("")));
    let build = paths::cache().join("kernel").join(format!("build-{key}"));
    let done = build.join(".rkvm-built");
    let kernel = L1Kernel::tree(build.clone());
    if done.exists() && !force {
        return Ok(kernel);
    }
    let src = unpack_source(&sh, &src_key)?;
    configure(&sh, &src, &build, &fragment, &fragment_text)?;
    compile(&src, &build)?;
    fs::write(&done, "")?;
    Ok(kernel)
}

/// Unpacks the source tarball once per tarball version.
fn unpack_source(sh: &Shell, src_key: &str) -> Result<PathBuf> {
    let dir = paths::cache().join("kernel").join(format!("src-{src_key}"));
    let tree = dir.join("linux-source-6.1");
    if dir.join(".rkvm-unpacked").exists() {
        return Ok(tree);
    }
    println!("kernel: unpacking {SOURCE_TARBALL} (about 20 s)");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    cmd!(sh, "tar -xf {SOURCE_TARBALL} -C {dir}").run()?;
    fs::write(dir.join(".rkvm-unpacked"), "")?;
    Ok(tree)
}

/// `tinyconfig`, then the fragment, then `olddefconfig`; and a check that
/// every option of the fragment survived (Kconfig silently drops options
/// whose dependencies are not met).
fn configure(sh: &Shell, src: &Path, build: &Path, fragment: &Path, fragment_text: &str) -> Result<()> {
    println!("kernel: configuring (tinyconfig + {})", fragment.display());
    let _ = fs::remove_dir_all(build);
    fs::create_dir_all(build)?;
    let o = format!("O={}", build.display());
    sh.change_dir(src);
    cmd!(sh, "make -s {o} ARCH=x86_64 tinyconfig").quiet().ignore_stdout().run()?;
    let config = build.join(".config");
    cmd!(sh, "scripts/kconfig/merge_config.sh -m -O {build} {config} {fragment}").quiet().ignore_stdout().run()?;
    cmd!(sh, "make -s {o} ARCH=x86_64 olddefconfig").quiet().ignore_stdout().ignore_stderr().run()?;
    let result = fs::read_to_string(&config)?;
    let lost = lost_options(fragment_text, &result);
    if !lost.is_empty() {
        bail!("the L1 kernel config lost these options (unmet dependencies?):\n  {}", lost.join("\n  "));
    }
    Ok(())
}

/// Lines of `fragment` (`CONFIG_X=v` or `# CONFIG_X is not set`) that are not
/// in the final `config`.
fn lost_options(fragment: &str, config: &str) -> Vec<String> {
    let wanted = fragment.lines().map(str::trim).filter(|l| {
        l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set"))
    });
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    wanted
        .filter(|l| {
            // An option that is "not set" may also simply be absent.
            let absent_ok = l.starts_with('#')
                && !config.lines().any(|c| c.starts_with(&l[2..l.len() - 11]) && c.contains('='));
            !have.contains(l) && !absent_ok
        })
        .map(str::to_string)
        .collect()
}

/// Runs the kernel build, showing progress every few seconds. The full log
/// goes to `build.log` in the build tree.
fn compile(src: &Path, build: &Path) -> Result<()> {
    let jobs = std::thread::available_parallelism().map(|n| n.get() + 1).unwrap_or(2);
    let log_path = build.join("build.log");
    println!("kernel: building with {jobs} jobs; log in {}", log_path.display());
    let start = Instant::now();
    let mut child = Command::new("make")
        .current_dir(src)
        .arg(format!("O={}", build.display()))
        .args(["ARCH=x86_64", &format!("-j{jobs}"), "vmlinux", "bzImage", "modules"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting make")?;
    let status = progress::follow_build(&mut child, &log_path, "kernel", EXPECTED_FILES)?;
    if !status.success() {
        bail!(
            "the L1 kernel build failed after {:.0?}; the last lines of {}:\n{}",
            start.elapsed(),
            log_path.display(),
            progress::tail(&log_path, 25)
        );
    }
    println!("kernel: built in {:.0?}", start.elapsed());
    Ok(())
}

/// About how many files the L1 kernel build compiles, for the progress line.
const EXPECTED_FILES: usize = 800;

/// FNV-1a, 64-bit: a stable cache key that needs no dependency.
fn hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_options_finds_dropped_and_changed_lines() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n# CONFIG_D is not set\n";
        let config = "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=y\n";
        assert_eq!(lost_options(fragment, config), vec!["CONFIG_B=m", "# CONFIG_D is not set"]);
    }

    #[test]
    fn a_not_set_option_may_be_absent() {
        assert!(lost_options("# CONFIG_X is not set\n", "CONFIG_Y=y\n").is_empty());
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(hash(""), "cbf29ce484222325");
        assert_ne!(hash("a"), hash("b"));
    }
}
