//! `cargo xtask doctor --host`: this machine as a host for rkvm.ko, the
//! question a lab asks of each of its Intel and AMD machines before the
//! first student loads the module on the distribution's kernel.
//!
//! Each check is a pure function of [`Inputs`], which [`Inputs::read`]
//! gathers and nothing else does: files under /proc and /sys, two MSRs
//! through /dev/cpu/0/msr, the output of `dmesg` and `mokutil`, the
//! running kernel's headers, the rkvm.ko files at hand. The host tests
//! feed made-up inputs, one for each verdict. A check answers ok, warn,
//! problem or unknown, and for anything but ok says what to do;
//! `problem` means loading rkvm.ko (or building it for this kernel) will
//! fail until it is fixed, and only problems make the command fail.

mod build;
mod cpu;
mod signing;

use anyhow::{Result, bail};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A check's verdict, in increasing gravity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// The inputs do not decide it (a file not readable without root, say).
    Unknown,
    /// Something a lab should know or fix, which does not by itself keep
    /// rkvm.ko from loading.
    Warn,
    /// rkvm.ko cannot be built for, or loaded into, the running kernel.
    Problem,
}

/// A line of advice under a verdict: prose, or a command to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Say(String),
    Run(String),
}

/// One check's answer: its verdict, one line about this machine, and
/// what to do.
#[derive(Clone, Debug)]
pub struct Finding {
    pub status: Status,
    pub check: &'static str,
    pub summary: String,
    pub fix: Vec<Line>,
}

impl Finding {
    fn new(status: Status, check: &'static str, summary: impl Into<String>) -> Self {
        Finding { status, check, summary: summary.into(), fix: Vec::new() }
    }

    fn say(mut self, text: impl Into<String>) -> Self {
        self.fix.push(Line::Say(text.into()));
        self
    }

    fn run(mut self, command: impl Into<String>) -> Self {
        self.fix.push(Line::Run(command.into()));
        self
    }
}

/// An MSR of CPU 0, as /dev/cpu/0/msr gives it (or why it did not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Msr {
    Value(u64),
    /// No /dev/cpu/0/msr: the `msr` module is not loaded.
    NoDevice,
    /// The device is there but only root (CAP_SYS_RAWIO) may read it.
    NoPermission,
    /// The read failed (EIO: the processor has no such MSR).
    Unreadable,
    /// Not read: the processor is of the other vendor.
    #[default]
    NotRead,
}

/// A kernel module present in /sys/module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Built into the kernel: it has no `initstate` and cannot be unloaded.
    pub builtin: bool,
    /// Its reference count: open files and VMs of a hypervisor hold it.
    pub refcnt: Option<u32>,
}

/// The running kernel's build tree, /lib/modules/$(uname -r)/build.
#[derive(Clone, Debug, Default)]
pub struct Headers {
    pub dir: String,
    /// include/config/auto.conf, the configuration Kbuild reads.
    pub config: Option<String>,
    /// Module.symvers, the symbols the kernel exports.
    pub symvers: Option<String>,
    /// tools/objtool/objtool is there.
    pub objtool: bool,
    /// scripts/sign-file is there.
    pub sign_file: bool,
    /// The first line of `--version` of the compiler the configuration
    /// names (CONFIG_CC_VERSION_TEXT), `None` if it did not run.
    pub compiler_version: Option<String>,
}

/// An rkvm.ko file at hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ko {
    pub path: String,
    /// The release its `vermagic` names (`None`: compressed or unreadable).
    pub release: Option<String>,
    /// It ends with a module signature (`None`: compressed or unreadable).
    pub signed: Option<bool>,
}

/// Everything the checks look at.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// `uname -r`.
    pub release: String,
    /// /etc/os-release, for the package names.
    pub os_release: String,
    pub cpuinfo: String,
    /// The kernel log, `None` when it is not readable (dmesg_restrict).
    pub dmesg: Option<String>,
    /// /sys/class/dmi/id/sys_vendor: who made the machine, or the
    /// hypervisor of a virtual one.
    pub dmi_vendor: Option<String>,
    /// IA32_FEATURE_CONTROL (Intel) and VM_CR (AMD) of CPU 0.
    pub feature_control: Msr,
    pub vm_cr: Msr,
    /// The modules of [`MODULES`] that are present.
    pub modules: Vec<Module>,
    /// /sys/module/kvm/parameters/enable_virt_at_load (Linux 6.12 on).
    pub kvm_enable_virt_at_load: Option<String>,
    /// The output of `mokutil --sb-state`, `None` without mokutil.
    pub mokutil: Option<String>,
    /// The SecureBoot EFI variable: four bytes of attributes, then the value.
    pub secure_boot_var: Option<Vec<u8>>,
    /// /sys/firmware/efi exists: the machine booted through UEFI.
    pub efi: bool,
    /// /sys/kernel/security/lockdown, e.g. `[none] integrity confidentiality`.
    pub lockdown: Option<String>,
    /// /sys/module/module/parameters/sig_enforce, `Y` or `N`.
    pub sig_enforce: Option<String>,
    /// `None` when /lib/modules/$(uname -r)/build does not exist.
    pub headers: Option<Headers>,
    pub kos: Vec<Ko>,
}

/// The modules that tell about hypervisors: Linux's KVM, VirtualBox's and
/// VMware's drivers, and rkvm itself.
pub const MODULES: &[&str] = &["kvm", "kvm_intel", "kvm_amd", "vboxdrv", "vmmon", "rkvm"];

/// IA32_FEATURE_CONTROL (SDM Vol. 3C, 24.7) and VM_CR (APM Vol. 2, 15.30.1).
pub const MSR_FEATURE_CONTROL: u64 = 0x3A;
pub const MSR_VM_CR: u64 = 0xC001_0114;

/// Every check, in the order they print.
pub fn check(i: &Inputs) -> Vec<Finding> {
    vec![
        cpu::virtualization(i),
        cpu::other_hypervisors(i),
        signing::secure_boot(i),
        signing::unsigned_modules(i),
        build::headers(i),
        build::compiler(i),
        build::config(i),
        build::module(i),
    ]
}

/// Prints the findings, one line each and the advice indented below.
pub fn print(findings: &[Finding]) {
    for f in findings {
        let word = match f.status {
            Status::Ok => "ok",
            Status::Unknown => "unknown",
            Status::Warn => "warn",
            Status::Problem => "problem",
        };
        println!("{word:<8} {}: {}", f.check, f.summary);
        for line in &f.fix {
            match line {
                Line::Say(text) => println!("           {text}"),
                Line::Run(command) => println!("               {command}"),
            }
        }
    }
}

pub fn run(ko: Option<PathBuf>) -> Result<()> {
    let inputs = Inputs::read(ko);
    println!("doctor --host: this machine as a host for rkvm.ko (Linux {})", inputs.release);
    let findings = check(&inputs);
    print(&findings);
    let problems = findings.iter().filter(|f| f.status == Status::Problem).count();
    if problems > 0 {
        bail!("{problems} problem(s) above stand in the way of rkvm.ko on this machine");
    }
    println!("doctor --host: nothing stands in the way of rkvm.ko here");
    Ok(())
}

impl Inputs {
    /// Reads this machine. Nothing here fails: what cannot be read is
    /// `None` (or [`Msr::NoDevice`], ...), and the checks say what that
    /// leaves undecided.
    pub fn read(ko: Option<PathBuf>) -> Inputs {
        let release = output("uname", &["-r"]).map(|s| s.trim().to_string()).unwrap_or_default();
        let cpuinfo = text("/proc/cpuinfo").unwrap_or_default();
        let vendor = cpu::vendor(&cpuinfo);
        let modules = MODULES
            .iter()
            .filter(|m| Path::new(&format!("/sys/module/{m}")).exists())
            .map(|m| Module {
                name: m.to_string(),
                builtin: !Path::new(&format!("/sys/module/{m}/initstate")).exists(),
                refcnt: text(&format!("/sys/module/{m}/refcnt")).and_then(|s| s.trim().parse().ok()),
            })
            .collect();
        let build = format!("/lib/modules/{release}/build");
        Inputs {
            os_release: text("/etc/os-release").unwrap_or_default(),
            dmesg: output("dmesg", &[]),
            dmi_vendor: text("/sys/class/dmi/id/sys_vendor").map(|s| s.trim().to_string()),
            feature_control: if vendor == cpu::Vendor::Intel { read_msr(MSR_FEATURE_CONTROL) } else { Msr::NotRead },
            vm_cr: if vendor == cpu::Vendor::Amd { read_msr(MSR_VM_CR) } else { Msr::NotRead },
            modules,
            kvm_enable_virt_at_load: text("/sys/module/kvm/parameters/enable_virt_at_load"),
            mokutil: output_and_errors("mokutil", &["--sb-state"]),
            secure_boot_var: fs::read(signing::SECURE_BOOT_VAR).ok(),
            efi: Path::new("/sys/firmware/efi").exists(),
            lockdown: text("/sys/kernel/security/lockdown"),
            sig_enforce: text("/sys/module/module/parameters/sig_enforce"),
            headers: Path::new(&build).exists().then(|| read_headers(&build)),
            kos: build::candidates(ko, &release).iter().filter(|p| p.exists()).map(|p| build::read_ko(p)).collect(),
            cpuinfo,
            release,
        }
    }
}

fn read_headers(dir: &str) -> Headers {
    let at = |p: &str| Path::new(dir).join(p);
    let config = fs::read_to_string(at("include/config/auto.conf")).ok();
    let compiler_version = config
        .as_deref()
        .and_then(build::compiler_program)
        .and_then(|cc| output(&cc, &["--version"]))
        .and_then(|v| v.lines().next().map(str::to_string));
    Headers {
        dir: dir.to_string(),
        symvers: fs::read_to_string(at("Module.symvers")).ok(),
        objtool: at("tools/objtool/objtool").exists(),
        sign_file: at("scripts/sign-file").exists(),
        config,
        compiler_version,
    }
}

/// Reads MSR `msr` of CPU 0 through the `msr` driver: eight bytes at the
/// MSR's number as the file offset.
fn read_msr(msr: u64) -> Msr {
    let file = match fs::File::open("/dev/cpu/0/msr") {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Msr::NoDevice,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Msr::NoPermission,
        Err(_) => return Msr::Unreadable,
    };
    let mut bytes = [0u8; 8];
    match file.read_exact_at(&mut bytes, msr) {
        Ok(()) => Msr::Value(u64::from_le_bytes(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Msr::NoPermission,
        Err(_) => Msr::Unreadable,
    }
}

fn text(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// A program's standard output, if it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A program's standard output and error, whatever its exit status
/// (`mokutil --sb-state` fails on machines without EFI variables).
fn output_and_errors(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The distribution family, for package names: `debian` (Ubuntu too),
/// `fedora` (RHEL and its rebuilds too), or `None`.
pub fn distro(os_release: &str) -> Option<&'static str> {
    let field = |key: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let ids = format!("{} {}", field("ID"), field("ID_LIKE"));
    let has = |name: &str| ids.split_whitespace().any(|w| w == name);
    if has("debian") || has("ubuntu") {
        Some("debian")
    } else if has("fedora") || has("rhel") || has("centos") {
        Some("fedora")
    } else {
        None
    }
}

#[cfg(test)]
pub mod fake {
    //! Inputs of made-up machines for the checks' tests.

    use super::*;

    pub const INTEL_FLAGS: &str = "vendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse msr pae vmx sse2\nvmx flags\t: vnmi preemption_timer invvpid ept_x_only ept\n";
    pub const AMD_FLAGS: &str = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu vme de pse msr pae svm sse2\n";
    pub const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
    pub const RELEASE: &str = "6.1.0-57-amd64";
    pub const CONFIG: &str = "CONFIG_X86_64=y\nCONFIG_MODULES=y\nCONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_HASH=\"sha256\"\nCONFIG_RETPOLINE=y\nCONFIG_RETHUNK=y\nCONFIG_SLS=y\nCONFIG_OBJTOOL=y\nCONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n";
    pub const SYMVERS: &str = "0x00000000\t__x86_return_thunk\tvmlinux\tEXPORT_SYMBOL\t\n0x00000000\t__x86_indirect_thunk_rax\tvmlinux\tEXPORT_SYMBOL\t\n";

    /// A Debian 12 machine on an Intel processor where everything is in
    /// order: the tests change one thing each.
    pub fn intel() -> Inputs {
        Inputs {
            release: RELEASE.into(),
            os_release: DEBIAN.into(),
            cpuinfo: INTEL_FLAGS.into(),
            dmesg: Some(String::new()),
            dmi_vendor: Some("Dell Inc.".into()),
            feature_control: Msr::Value(0x5),
            vm_cr: Msr::NotRead,
            modules: Vec::new(),
            kvm_enable_virt_at_load: None,
            mokutil: Some("SecureBoot disabled\n".into()),
            secure_boot_var: None,
            efi: true,
            lockdown: Some("[none] integrity confidentiality\n".into()),
            sig_enforce: Some("N\n".into()),
            headers: Some(Headers {
                dir: format!("/lib/modules/{RELEASE}/build"),
                config: Some(CONFIG.into()),
                symvers: Some(SYMVERS.into()),
                objtool: true,
                sign_file: true,
                compiler_version: Some("gcc-12 (Debian 12.2.0-14) 12.2.0".into()),
            }),
            kos: vec![Ko { path: "target/kmod/rkvm/rkvm.ko".into(), release: Some(RELEASE.into()), signed: Some(false) }],
        }
    }

    /// The same machine on an AMD processor.
    pub fn amd() -> Inputs {
        Inputs { cpuinfo: AMD_FLAGS.into(), feature_control: Msr::NotRead, vm_cr: Msr::Value(0), ..intel() }
    }

    pub fn module(name: &str, refcnt: u32) -> Module {
        Module { name: name.into(), builtin: false, refcnt: Some(refcnt) }
    }

    pub fn text(f: &Finding) -> String {
        let mut s = f.summary.clone();
        for line in &f.fix {
            let (Line::Say(t) | Line::Run(t)) = line;
            s += "\n";
            s += t;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_in_order_has_no_problem() {
        for inputs in [fake::intel(), fake::amd()] {
            for f in check(&inputs) {
                assert_eq!(f.status, Status::Ok, "{}: {}", f.check, fake::text(&f));
            }
        }
    }

    #[test]
    fn the_distribution_family_names_the_packages() {
        assert_eq!(distro(fake::DEBIAN), Some("debian"));
        assert_eq!(distro("ID=ubuntu\nID_LIKE=debian\n"), Some("debian"));
        assert_eq!(distro("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n"), Some("fedora"));
        assert_eq!(distro("ID=fedora\n"), Some("fedora"));
        assert_eq!(distro("ID=arch\n"), None);
    }
}
