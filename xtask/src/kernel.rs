//! The L1 kernel: built once from Debian's `linux-source-6.1` with the config
//! fragment in `xtask/l1/kernel.config`, then cached.
//!
//! The build tree is also what `rkvm.ko` builds against by default, and it
//! carries Linux's own KVM modules, the oracle that runs the same guests.
//! The cache key covers the source tarball, the fragments and the compiler,
//! so changing any of them rebuilds.
//!
//! The debug variant is the same source with a second fragment on top,
//! `xtask/l1/kernel-debug.config` (KASAN, lockdep, kmemleak, the lockup and
//! hung-task detectors), cached beside the default one; `--debug-kernel`
//! boots it, and builds the module against it.

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
    /// Build the debug variant (`xtask/l1/kernel-debug.config` on top),
    /// which `--debug-kernel` boots.
    #[arg(long)]
    pub debug: bool,
}

/// The L1 kernels built from the same source.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    Default,
    /// With the checks of `kernel-debug.config`.
    Debug,
}

impl Variant {
    /// Its config fragments in `xtask/l1/`, applied in this order after
    /// tinyconfig.
    fn fragments(self) -> &'static [&'static str] {
        match self {
            Variant::Default => &["kernel.config"],
            Variant::Debug => &["kernel.config", "kernel-debug.config"],
        }
    }

    /// Its name in progress lines, and the start of its build directory's.
    fn name(self) -> &'static str {
        match self {
            Variant::Default => "kernel",
            Variant::Debug => "debug kernel",
        }
    }

    /// About how many files its build compiles, for the progress line.
    fn expected_files(self) -> usize {
        match self {
            Variant::Default => 800,
            Variant::Debug => 1100,
        }
    }

    fn dir_prefix(self) -> &'static str {
        match self {
            Variant::Default => "build",
            Variant::Debug => "build-debug",
        }
    }
}

/// Which kernel a command boots as L1, for the commands that offer a
/// choice: the default L1 kernel, its debug variant, or a build tree.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Choice {
    /// Boot this kernel build tree (with its vmlinux) as L1, and build the
    /// module against it, instead of the cached L1 kernel.
    #[arg(long, conflicts_with = "debug_kernel")]
    pub l1_tree: Option<PathBuf>,
    /// Boot the debug L1 kernel (KASAN, lockdep, kmemleak, lockup and
    /// hung-task detectors: `xtask/l1/kernel-debug.config`), built once and
    /// cached like the default one, and build the module against it.
    #[arg(long)]
    pub debug_kernel: bool,
}

impl Choice {
    /// The kernel chosen, built first if it is one of ours and not cached.
    pub fn kernel(&self) -> Result<L1Kernel> {
        match (&self.l1_tree, self.debug_kernel) {
            (Some(tree), _) => Ok(L1Kernel::tree(tree.clone())),
            (None, true) => build(Variant::Debug, false),
            (None, false) => ensure(),
        }
    }
}

/// A built L1 kernel.
pub struct L1Kernel {
    /// The kernel build tree (`O=`): modules build against it (`KDIR`).
    pub build: PathBuf,
    /// A packaged compressed kernel (a distribution's `vmlinuz`) booted
    /// instead of the build tree's images; `build` is then its headers.
    pub image: Option<PathBuf>,
    /// Built with KASAN or lockdep (the debug variant, or a tree like it):
    /// L1 gets more memory and its jobs more time.
    pub debug: bool,
}

impl L1Kernel {
    /// A kernel build tree, booted from its own images.
    pub fn tree(build: PathBuf) -> Self {
        let config = fs::read_to_string(build.join(".config")).unwrap_or_default();
        let debug = config.lines().any(|l| l == "CONFIG_KASAN=y" || l == "CONFIG_PROVE_LOCKING=y");
        L1Kernel { build, image: None, debug }
    }

    /// L1's memory: KASAN keeps an eighth of it as shadow and holds freed
    /// objects back for a while, lockdep and kmemleak keep tables of their
    /// own; the debug kernel gets twice the default's 512 MiB, to leave the
    /// jobs what they have on the default kernel.
    pub fn memory_mib(&self) -> u32 {
        if self.debug { 1024 } else { 512 }
    }

    /// How many times a job's time limit is stretched on this kernel: the
    /// debug kernel's checks make it several times slower.
    pub fn slowdown(&self) -> u32 {
        if self.debug { 3 } else { 1 }
    }

    /// The image QEMU boots: the uncompressed ELF image, through PVH
    /// quickly (QEMU boots a packaged `vmlinuz` as well, more slowly). The
    /// debug kernel boots from its bzImage: PVH enters the kernel through
    /// C code that KASAN instruments (`arch/x86/platform/pvh/enlighten.c`)
    /// before KASAN's shadow is mapped, and the machine resets at once.
    pub fn vmlinux(&self) -> PathBuf {
        if self.debug {
            return self.bzimage();
        }
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
    let variant = if args.debug { Variant::Debug } else { Variant::Default };
    let kernel = build(variant, args.force)?;
    println!("L1 {}: {}", variant.name(), kernel.build.display());
    Ok(())
}

/// Returns the cached L1 kernel, building it first if needed.
pub fn ensure() -> Result<L1Kernel> {
    build(Variant::Default, false)
}

/// Returns the cached build of `variant`, building it first if needed (or
/// if `force`).
fn build(variant: Variant, force: bool) -> Result<L1Kernel> {
    doctor::require(doctor::KERNEL_BUILD)?;
    let sh = Shell::new()?;
    let fragments: Vec<PathBuf> = variant.fragments().iter().map(|f| paths::l1_sources().join(f)).collect();
    let mut fragments_text = String::new();
    for fragment in &fragments {
        fragments_text += &fs::read_to_string(fragment).with_context(|| format!("reading {}", fragment.display()))?;
    }
    let gcc = cmd!(sh, "gcc --version").quiet().read()?;
    let tar_len = fs::metadata(SOURCE_TARBALL)?.len();
    let src_key = hash(&format!("{SOURCE_TARBALL} {tar_len}"));
    let key = hash(&format!("{src_key} {fragments_text} {}", gcc.lines().next().unwrap_or("")));
    let build = paths::cache().join("kernel").join(format!("{}-{key}", variant.dir_prefix()));
    let done = build.join(".rkvm-built");
    if done.exists() && !force {
        return Ok(L1Kernel::tree(build));
    }
    let src = unpack_source(&sh, &src_key)?;
    configure(&sh, variant, &src, &build, &fragments, &fragments_text)?;
    compile(variant, &src, &build)?;
    fs::write(&done, "")?;
    Ok(L1Kernel::tree(build))
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

/// `tinyconfig`, then the fragments in order, then `olddefconfig`; and a
/// check that every option of the fragments survived (Kconfig silently
/// drops options whose dependencies are not met).
fn configure(
    sh: &Shell,
    variant: Variant,
    src: &Path,
    build: &Path,
    fragments: &[PathBuf],
    fragments_text: &str,
) -> Result<()> {
    let shown: Vec<String> = fragments.iter().map(|f| f.display().to_string()).collect();
    println!("{}: configuring (tinyconfig + {})", variant.name(), shown.join(" + "));
    let _ = fs::remove_dir_all(build);
    fs::create_dir_all(build)?;
    let o = format!("O={}", build.display());
    sh.change_dir(src);
    cmd!(sh, "make -s {o} ARCH=x86_64 tinyconfig").quiet().ignore_stdout().run()?;
    let config = build.join(".config");
    cmd!(sh, "scripts/kconfig/merge_config.sh -m -O {build} {config} {fragments...}").quiet().ignore_stdout().run()?;
    cmd!(sh, "make -s {o} ARCH=x86_64 olddefconfig").quiet().ignore_stdout().ignore_stderr().run()?;
    let result = fs::read_to_string(&config)?;
    let lost = lost_options(fragments_text, &result);
    if !lost.is_empty() {
        bail!("the L1 {} config lost these options (unmet dependencies?):\n  {}", variant.name(), lost.join("\n  "));
    }
    Ok(())
}

/// Lines of `fragments` (`CONFIG_X=v` or `# CONFIG_X is not set`) that are
/// not in the final `config`. The fragments are checked as one text: where
/// a later line sets an option again, only its value must hold.
fn lost_options(fragments: &str, config: &str) -> Vec<String> {
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    for line in fragments.lines().map(str::trim) {
        let Some(name) = option_name(line) else { continue };
        wanted.retain(|(n, _)| *n != name);
        wanted.push((name, line));
    }
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    wanted
        .into_iter()
        .filter(|(name, line)| {
            // An option that is "not set" may also simply be absent.
            let set = |c: &str| c.split_once('=').is_some_and(|(n, _)| n == *name);
            let absent_ok = line.starts_with('#') && !config.lines().any(set);
            !have.contains(line) && !absent_ok
        })
        .map(|(_, line)| line.to_string())
        .collect()
}

/// The option a config line sets (`CONFIG_X` of `CONFIG_X=v` or of
/// `# CONFIG_X is not set`); `None` for comments and blank lines.
fn option_name(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("# ") {
        return rest.strip_suffix(" is not set").filter(|n| n.starts_with("CONFIG_"));
    }
    line.split_once('=').map(|(n, _)| n).filter(|n| n.starts_with("CONFIG_"))
}

/// Runs the kernel build, showing progress every few seconds. The full log
/// goes to `build.log` in the build tree.
fn compile(variant: Variant, src: &Path, build: &Path) -> Result<()> {
    let jobs = std::thread::available_parallelism().map(|n| n.get() + 1).unwrap_or(2);
    let log_path = build.join("build.log");
    let label = variant.name();
    println!("{label}: building with {jobs} jobs; log in {}", log_path.display());
    let start = Instant::now();
    let mut child = Command::new("make")
        .current_dir(src)
        .arg(format!("O={}", build.display()))
        .args(["ARCH=x86_64", &format!("-j{jobs}"), "vmlinux", "bzImage", "modules"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting make")?;
    let status = progress::follow_build(&mut child, &log_path, label, variant.expected_files())?;
    if !status.success() {
        bail!(
            "the L1 {label} build failed after {:.0?}; the last lines of {}:\n{}",
            start.elapsed(),
            log_path.display(),
            progress::tail(&log_path, 25)
        );
    }
    println!("{label}: built in {:.0?}", start.elapsed());
    Ok(())
}


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
        assert_eq!(lost_options("# CONFIG_X is not set\n", "CONFIG_XY=y\nCONFIG_X=y\n"), vec!["# CONFIG_X is not set"]);
    }

    #[test]
    fn a_later_fragment_sets_an_option_again() {
        let fragments = "CONFIG_A=y\n# CONFIG_B is not set\n# the debug fragment\n# CONFIG_A is not set\nCONFIG_B=y\n";
        assert!(lost_options(fragments, "CONFIG_B=y\n").is_empty());
        assert_eq!(lost_options(fragments, "CONFIG_A=y\n"), vec!["# CONFIG_A is not set", "CONFIG_B=y"]);
    }

    #[test]
    fn both_fragments_are_read_in_order() {
        assert_eq!(Variant::Default.fragments(), ["kernel.config"]);
        assert_eq!(Variant::Debug.fragments(), ["kernel.config", "kernel-debug.config"]);
        for variant in [Variant::Default, Variant::Debug] {
            for fragment in variant.fragments() {
                let text = fs::read_to_string(paths::l1_sources().join(fragment)).unwrap();
                assert!(text.lines().any(|l| option_name(l).is_some()), "{fragment} sets no option");
            }
        }
    }

    #[test]
    fn a_debug_tree_boots_its_bzimage_with_more_memory_and_time() {
        let dir = std::env::temp_dir().join(format!("rkvm-kernel-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(".config"), "CONFIG_SMP=y\n").unwrap();
        let plain = L1Kernel::tree(dir.clone());
        assert!(!plain.debug && plain.vmlinux().ends_with("vmlinux"));
        assert_eq!((plain.memory_mib(), plain.slowdown()), (512, 1));
        fs::write(dir.join(".config"), "CONFIG_SMP=y\nCONFIG_KASAN=y\n").unwrap();
        let debug = L1Kernel::tree(dir.clone());
        assert!(debug.debug && debug.vmlinux().ends_with("arch/x86/boot/bzImage"));
        assert_eq!((debug.memory_mib(), debug.slowdown()), (1024, 3));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tree_and_the_debug_kernel_exclude_each_other() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            kernel: Choice,
        }
        use clap::Parser;
        assert!(Cli::try_parse_from(["x", "--debug-kernel", "--l1-tree", "/k"]).is_err());
        let debug = Cli::try_parse_from(["x", "--debug-kernel"]).unwrap().kernel;
        assert!(debug.debug_kernel && debug.l1_tree.is_none());
        let tree = Cli::try_parse_from(["x", "--l1-tree", "/k"]).unwrap().kernel;
        assert!(!tree.debug_kernel && tree.l1_tree == Some(PathBuf::from("/k")));
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(hash(""), "cbf29ce484222325");
        assert_ne!(hash("a"), hash("b"));
    }
}
