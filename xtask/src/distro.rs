//! `cargo xtask distro`: rkvm.ko on Debian's own kernels, not only on the
//! small L1 kernel this project builds.
//!
//! 1. apt says which kernel is Debian's stock one (what `linux-image-amd64`
//!    depends on) and which newer kernel headers packages the archive
//!    offers.
//! 2. `apt-get download` fetches a kernel's headers packages (and, to boot
//!    it, its image package) into `target/distro/RELEASE/`, and `dpkg-deb -x`
//!    unpacks them there: no root, nothing installed. The headers' Makefile
//!    includes its `-common` half by absolute path; that one line is pointed
//!    at the unpacked copy.
//! 3. `rkvm.ko` is built against the unpacked headers, as `cargo xtask kmod
//!    --kdir` would, with the flags the kernel's configuration demands.
//! 4. To boot, QEMU starts Debian's own `vmlinuz` with L1's initramfs (its
//!    init, busybox, the module, rkvm-devtest, rkvm-run and its guests), and
//!    the device job of `cargo xtask test` runs there: the same checks and
//!    guests, judged the same way.

use crate::kernel::L1Kernel;
use crate::l1::Check;
use crate::{jobs, kmod, paths, platform};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// A Debian kernel release to build against and boot (as in
    /// `linux-image-RELEASE`, e.g. `6.12.117+deb12-amd64`) instead of the
    /// stock one.
    #[arg(long, conflicts_with = "all")]
    pub release: Option<String>,
    /// Build against the stock kernel's headers and every newer kernel
    /// headers package the archive offers (and the running kernel's, if
    /// installed); then boot the stock kernel.
    #[arg(long)]
    pub all: bool,
    /// Only build; boot nothing.
    #[arg(long)]
    pub build_only: bool,
    /// List the stock kernel and the newer ones the archive offers, and stop.
    #[arg(long)]
    pub list: bool,
    /// Load this rkvm.ko in the booted kernel instead of the one just built
    /// (e.g. the one `dkms build` made: /var/lib/dkms/rkvm/VERSION/RELEASE/x86_64/module/rkvm.ko).
    #[arg(long)]
    pub ko: Option<PathBuf>,
    /// The platform QEMU boots the kernel on: tcg-svm or kvm (default: kvm
    /// where the host offers nested virtualization, else tcg-svm).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Seeds of each seeded guest, as in `cargo xtask test`.
const CHAOS_SEEDS: u32 = 100;

/// A Debian kernel: its release name and its packages' version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// `6.1.0-57-amd64`: what `uname -r` says, and the packages' suffix.
    pub name: String,
    /// `6.1.192-3`: the Debian version of its packages.
    pub version: String,
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let stock = stock()?;
    let newer = if args.all || args.list { newer_than(&stock)? } else { Vec::new() };
    if args.list {
        println!("stock: {} ({})", stock.name, stock.version);
        for r in &newer {
            println!("newer: {} ({})", r.name, r.version);
        }
        return Ok(());
    }
    let booted = match &args.release {
        Some(name) => release(name)?,
        None => stock.clone(),
    };
    let mut builds = vec![booted.clone()];
    builds.extend(newer.into_iter().filter(|r| r.name != booted.name));
    let mut built = Vec::new();
    for (i, r) in builds.iter().enumerate() {
        println!("== distro: [{}/{}] rkvm.ko against Debian's {} headers ({})", i + 1, builds.len(), r.name, r.version);
        let tree = fetch(r, false)?;
        // The kernel about to boot gets its module built with the job.
        if r.name == booted.name && !args.build_only {
            println!("distro: (built with the boot job below)");
            continue;
        }
        build(&tree.headers)?;
        built.push(r.name.clone());
    }
    if args.all {
        if let Some(kdir) = running_kernel_headers() {
            println!("== distro: rkvm.ko against the running kernel's headers ({})", kdir.display());
            build(&kdir)?;
            built.push(format!("{} (running)", kdir.display()));
        } else {
            println!("== distro: the running kernel has no headers in /lib/modules/$(uname -r)/build: not built against it");
        }
    }
    if !built.is_empty() {
        println!("distro: rkvm.ko built against {} kernel(s): {}", built.len(), built.join(", "));
    }
    if args.build_only {
        return Ok(());
    }
    let (passed, failed, not_run) = boot(&booted, args.platform.as_deref(), args.ko.as_deref())?;
    let not_run = if not_run > 0 { format!(", {not_run} not run") } else { String::new() };
    println!("distro: {} in {:.0?}", booted.name, start.elapsed());
    println!("{passed} passed, {failed} failed{not_run}");
    if failed > 0 {
        bail!("{failed} checks failed on Debian's {}", booted.name);
    }
    Ok(())
}

/// Builds `rkvm.ko` from kmod/ against the kernel headers `kdir`.
fn build(kdir: &Path) -> Result<PathBuf> {
    let build = kmod::Build::for_crate_and_kernel(kdir.to_path_buf(), paths::root().join("kmod"))?;
    kmod::build_module(&build)
}

/// Boots Debian's kernel `r` with the device job (and the module `ko`, if
/// given, instead of the one built from kmod/) and returns its counts:
/// passed, failed, not run.
fn boot(r: &Release, platform: Option<&str>, ko: Option<&Path>) -> Result<(u32, u32, u32)> {
    let checks = boot_checks(r, platform, ko)?;
    let count = |f: &dyn Fn(&Check) -> bool| checks.iter().filter(|c| f(c)).count() as u32;
    Ok((count(&|c| c.passed), count(&|c| c.failed()), count(&|c| c.not_run)))
}

/// The part of `cargo xtask test` that runs on Debian's stock kernel: its
/// checks, named `debian RELEASE: CHECK`. Not run (one check, with the
/// reason) where apt knows no Debian archive, or on Bochs.
pub fn checks(platform: Option<&str>) -> Result<Vec<Check>> {
    const NAME: &str = "debian: the device checks on Debian's stock kernel";
    if platform::select(platform)?.name() == "bochs-vmx" {
        return Ok(vec![Check::not_run(NAME, "Debian's kernel boots under QEMU only (platform tcg-svm or kvm)")]);
    }
    let stock = match stock() {
        Ok(r) => r,
        Err(e) => return Ok(vec![Check::not_run(NAME, format!("{e:#}"))]),
    };
    let checks = boot_checks(&stock, platform, None)?;
    Ok(checks.into_iter().map(|c| Check { name: format!("debian {}: {}", stock.name, c.name), ..c }).collect())
}

/// Boots Debian's kernel `r` with the device job and returns its checks.
fn boot_checks(r: &Release, platform: Option<&str>, ko: Option<&Path>) -> Result<Vec<Check>> {
    let platform = platform::select(platform)?;
    println!("== distro: Debian's {} kernel in QEMU ({}), running the device checks and every guest", r.name, platform.name());
    let tree = fetch(r, true)?;
    let image = tree.image.context("the image package was not unpacked")?;
    let config = fs::read_to_string(&tree.config).with_context(|| format!("reading {}", tree.config.display()))?;
    let missing = missing_builtins(&config);
    if !missing.is_empty() {
        bail!(
            "Debian's {} kernel does not build in what L1's init needs (a module would have to be loaded first): {}",
            r.name,
            missing.join(", ")
        );
    }
    let kernel = L1Kernel { build: tree.headers, image: Some(image), debug: false };
    let mut job = jobs::module_job_on(&format!("distro-{}", r.name), &paths::root().join("kmod"), jobs::kmod_stage()?, &kernel)?;
    if let Some(ko) = ko {
        println!("distro: loading {} instead of the module built from kmod/", ko.display());
        let data = fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
        for file in job.files.iter_mut().filter(|f| f.0 == "rkvm/rkvm.ko") {
            file.1 = data.clone();
        }
    }
    job.script = format!("{PROLOGUE}CHAOS_SEEDS={CHAOS_SEEDS}\n{}", job.script);
    // Debian's kernel boots its many drivers more slowly than L1's.
    job.timeout = Duration::from_secs(600);
    jobs::fit_to_platform(&mut job, platform.as_ref());
    jobs::run_checks(platform.as_ref(), &kernel, &job)
}

/// What the job does first on Debian's kernel: say which kernel it is, and
/// unload Linux's KVM if something loaded it (it would hold the processor's
/// virtualization extension, and rkvm.ko refuses to load then). Nothing
/// loads modules in L1's initramfs, so normally there is nothing to unload.
const PROLOGUE: &str = r#"echo "RKVM-INFO Debian's kernel: $(cat /proc/version)"
for m in kvm_amd kvm_intel kvm; do
	if grep -q "^$m " /proc/modules; then rmmod "$m" && echo "RKVM-INFO unloaded $m, which held the virtualization extension"; fi
done
"#;

/// Options L1's init and the job need from the kernel itself: the serial
/// console, the file systems init mounts, the module loader, and the port
/// QEMU's exit device listens on.
const BUILTINS: &[&str] = &[
    "SERIAL_8250",
    "SERIAL_8250_CONSOLE",
    "BLK_DEV_INITRD",
    "DEVTMPFS",
    "PROC_FS",
    "SYSFS",
    "TMPFS",
    "DEBUG_FS",
    "MODULES",
    "MODULE_UNLOAD",
    "DEVPORT",
];

/// The options of [`BUILTINS`] that `config` does not build in.
fn missing_builtins(config: &str) -> Vec<String> {
    BUILTINS
        .iter()
        .filter(|o| !config.lines().any(|l| l == format!("CONFIG_{o}=y")))
        .map(|o| format!("CONFIG_{o}"))
        .collect()
}

/// The running kernel's build tree, if its headers are installed.
fn running_kernel_headers() -> Option<PathBuf> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let dir = PathBuf::from(format!("/lib/modules/{}/build", release.trim()));
    dir.join("include/config/auto.conf").is_file().then_some(dir)
}

/// Runs an apt tool and returns its standard output.
fn apt(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Debian's stock kernel: the one `linux-image-amd64` depends on.
fn stock() -> Result<Release> {
    let deps = apt("apt-cache", &["depends", "linux-image-amd64"])?;
    let name = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .context("`apt-cache depends linux-image-amd64` names no kernel image (is the Debian archive in apt's sources?)")?;
    release(name.trim())
}

/// The release `name`, with the version the archive offers.
fn release(name: &str) -> Result<Release> {
    let show = apt("apt-cache", &["show", "--no-all-versions", &format!("linux-headers-{name}")])
        .with_context(|| format!("the archive offers no headers for the kernel {name} (`cargo xtask distro --list`)"))?;
    let version = field(&show, "Version").context("no Version")?;
    Ok(Release { name: name.into(), version })
}

/// The first `Name: value` field of apt's output.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_string()))
}

/// Every kernel release (standard flavour, amd64) whose headers the archive
/// offers and whose version is newer than `stock`'s, oldest first.
fn newer_than(stock: &Release) -> Result<Vec<Release>> {
    let names = apt("apt-cache", &["search", "--names-only", "^linux-headers-[0-9].*-amd64$"])?;
    let mut releases = Vec::new();
    for line in names.lines() {
        let Some(name) = line.split_whitespace().next().and_then(|p| p.strip_prefix("linux-headers-")) else { continue };
        if !is_standard_release(name) {
            continue;
        }
        let r = release(name)?;
        if upstream(&r.version) > upstream(&stock.version) {
            releases.push(r);
        }
    }
    releases.sort_by_key(|r| upstream(&r.version));
    Ok(releases)
}

/// A kernel release of the standard amd64 flavour (`6.1.0-57-amd64`,
/// `6.12.117+deb12-amd64`), not the cloud or realtime flavour, and not a
/// meta-package (`6.12-amd64`).
fn is_standard_release(name: &str) -> bool {
    let Some(base) = name.strip_suffix("-amd64") else { return false };
    !base.ends_with("-cloud") && !base.ends_with("-rt") && base.split(['-', '+']).next().is_some_and(|v| v.matches('.').count() == 2)
}

/// The upstream kernel version of a Debian package version, for ordering:
/// `6.12.117-1~deb12u1` gives [6, 12, 117].
fn upstream(version: &str) -> Vec<u32> {
    let up = version.split(['-', '~', '+']).next().unwrap_or("");
    up.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// An unpacked Debian kernel.
struct Tree {
    /// The headers' build tree: `KDIR`.
    headers: PathBuf,
    /// The kernel image (`vmlinuz`), when it was fetched.
    image: Option<PathBuf>,
    /// The kernel's configuration, as packaged with the headers.
    config: PathBuf,
}

/// Downloads (once) and unpacks (once) release `r`'s headers packages and,
/// with `image`, its image package, under `target/distro/RELEASE/`.
fn fetch(r: &Release, image: bool) -> Result<Tree> {
    let dir = paths::target().join("distro").join(&r.name);
    let (debs, root) = (dir.join("debs"), dir.join("root"));
    fs::create_dir_all(&debs)?;
    fs::create_dir_all(&root)?;
    let headers = format!("linux-headers-{}", r.name);
    let show = apt("apt-cache", &["show", "--no-all-versions", &headers])?;
    let depends = field(&show, "Depends").unwrap_or_default();
    let mut packages = vec![headers.clone()];
    packages.extend(depends.split(',').map(|d| d.split_whitespace().next().unwrap_or("").to_string()).filter(|p| {
        p.starts_with("linux-headers-") || p.starts_with("linux-kbuild-")
    }));
    if image {
        packages.push(format!("linux-image-{}", r.name));
    }
    require_compiler(&r.name, &depends)?;
    for package in &packages {
        let marker = root.join(format!(".rkvm-unpacked-{package}"));
        if marker.exists() {
            continue;
        }
        let deb = download(package, &debs)?;
        println!("distro: unpacking {}", deb.file_name().and_then(|n| n.to_str()).unwrap_or(""));
        let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status().context("running dpkg-deb")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
        fs::write(&marker, "")?;
    }
    let kdir = root.join("usr/src").join(&headers);
    point_makefile_at(&kdir, &root)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{}", r.name));
    Ok(Tree {
        config: kdir.join(".config"),
        headers: kdir,
        image: (image && vmlinuz.is_file()).then_some(vmlinuz),
    })
}

/// `apt-get download PACKAGE` into `debs`, unless a `.deb` of it is there.
fn download(package: &str, debs: &Path) -> Result<PathBuf> {
    let find = || -> Result<Option<PathBuf>> {
        for entry in fs::read_dir(debs)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    println!("distro: apt-get download {package}");
    let start = Instant::now();
    let out = Command::new("apt-get").args(["download", "-q", package]).current_dir(debs).output().context("running apt-get")?;
    if !out.status.success() {
        bail!("`apt-get download {package}` failed:\n{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let deb = find()?.with_context(|| format!("apt-get download {package} left no .deb in {}", debs.display()))?;
    let mib = fs::metadata(&deb)?.len() as f64 / (1024.0 * 1024.0);
    println!("distro: {package}: {mib:.1} MiB in {:.1?}", start.elapsed());
    Ok(deb)
}

/// Debian's headers build modules with the compiler Debian built the
/// kernel with (`gcc-12`, named by the headers' dependencies as such or
/// through `linux-compiler-gcc-12-x86`).
fn require_compiler(release: &str, depends: &str) -> Result<()> {
    let Some((package, gcc)) = compiler(depends) else { return Ok(()) };
    if which(&gcc) {
        return Ok(());
    }
    bail!("the headers of Debian's {release} kernel build modules with {gcc}, which is not installed: sudo apt-get install {package}")
}

/// The compiler package a headers package depends on, and its program.
fn compiler(depends: &str) -> Option<(String, String)> {
    depends.split(',').map(|d| d.split_whitespace().next().unwrap_or("")).find_map(|p| {
        if let Some(rest) = p.strip_prefix("linux-compiler-gcc-") {
            let n = rest.split('-').next()?;
            Some((p.to_string(), format!("gcc-{n}")))
        } else if p.starts_with("gcc-") {
            Some((p.to_string(), p.to_string()))
        } else {
            None
        }
    })
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// The headers' Makefile includes `/usr/src/linux-headers-...-common/Makefile`
/// by absolute path; point it at the unpacked copy under `root`.
fn point_makefile_at(kdir: &Path, root: &Path) -> Result<()> {
    let makefile = kdir.join("Makefile");
    let text = fs::read_to_string(&makefile).with_context(|| format!("reading {}", makefile.display()))?;
    let fixed = redirect_includes(&text, root);
    if fixed != text {
        fs::write(&makefile, fixed)?;
    }
    Ok(())
}

fn redirect_includes(makefile: &str, root: &Path) -> String {
    let to = format!("include {}/usr/src/", root.display());
    makefile.lines().map(|l| l.replacen("include /usr/src/", &to, 1) + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_standard_flavour_of_a_kernel_release_counts() {
        assert!(is_standard_release("6.1.0-57-amd64"));
        assert!(is_standard_release("6.12.117+deb12-amd64"));
        assert!(!is_standard_release("6.12-amd64"));
        assert!(!is_standard_release("6.1.0-57-cloud-amd64"));
        assert!(!is_standard_release("6.12.117+deb12-rt-amd64"));
        assert!(!is_standard_release("6.1.0-57-common"));
    }

    #[test]
    fn package_versions_order_by_their_upstream_kernel() {
        assert_eq!(upstream("6.12.117-1~deb12u1"), vec![6, 12, 117]);
        assert!(upstream("6.12.107-1~deb12u1") > upstream("6.1.192-3"));
        assert!(upstream("6.1.176-1") < upstream("6.1.192-3"));
    }

    #[test]
    fn the_compiler_comes_from_the_headers_dependencies() {
        let d61 = "linux-headers-6.1.0-57-common (= 6.1.192-3), linux-kbuild-6.1 (>= 6.1.192-3), linux-compiler-gcc-12-x86";
        assert_eq!(compiler(d61), Some(("linux-compiler-gcc-12-x86".into(), "gcc-12".into())));
        let d612 = "linux-base (>= 4.12~), linux-kbuild-6.12.117+deb12, gcc-12";
        assert_eq!(compiler(d612), Some(("gcc-12".into(), "gcc-12".into())));
    }

    #[test]
    fn the_common_makefile_is_found_under_the_unpacked_root() {
        let text = "include /usr/src/linux-headers-6.1.0-57-common/Makefile\noverride ARCH = x86\n";
        let fixed = redirect_includes(text, Path::new("/t/root"));
        assert_eq!(fixed, "include /t/root/usr/src/linux-headers-6.1.0-57-common/Makefile\noverride ARCH = x86\n");
        assert_eq!(redirect_includes(&fixed, Path::new("/t/root")), fixed);
    }

    #[test]
    fn debian_builds_in_what_l1_needs() {
        let config: String = BUILTINS.iter().map(|o| format!("CONFIG_{o}=y\n")).collect();
        assert!(missing_builtins(&config).is_empty());
        assert_eq!(missing_builtins(&config.replace("CONFIG_DEVPORT=y", "CONFIG_DEVPORT=m")), vec!["CONFIG_DEVPORT"]);
    }
}
