//! `cargo xtask vmm`: the finale's demo. `rkvm-vmm` boots the project's own
//! L1 kernel image, unmodified, as a guest, with a busybox initramfs whose
//! init runs a fork+exec workload and powers off; the guest's console
//! streams through L1's.
//!
//! It runs inside L1: with `--backend linux-kvm` on Linux's own KVM (the
//! oracle, loaded as `oracle` loads it, with or without nested paging),
//! with `--backend rkvm` on the module built from kmod/. The guest's
//! kernel is L1's bzImage: its config (tinyconfig and the fragment in
//! `xtask/l1/kernel.config`) has what a guest on this VMM needs, a 16550
//! console, the 8259 and 8254, and no ACPI to miss.

use crate::initramfs::Initramfs;
use crate::kernel::{self, L1Kernel};
use crate::l1::{self, Job};
use crate::platform::{self, Vendor};
use crate::{kmod, paths};
use anyhow::{Result, bail};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The hypervisor in L1: linux-kvm (Linux's KVM, no in-kernel irqchip) or rkvm (rkvm.ko from kmod/).
    #[arg(long, default_value = "linux-kvm")]
    pub backend: String,
    /// The L1 platform (see `cargo xtask test --help`).
    #[arg(long)]
    pub platform: Option<String>,
    /// For linux-kvm: 1 runs the guest with nested paging (npt/ept), 0 with shadow paging.
    #[arg(long, default_value_t = 1)]
    pub nested_paging: u8,
    /// How many processes the guest's workload forks and execs.
    #[arg(long, default_value_t = 500)]
    pub forks: u32,
    /// More guest kernel parameters (`quiet` spares the boot log's exits).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Seconds before L1 is stopped.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// CPUs of L1: with 2, a guest that holds one CPU still lets L1 report
    /// on the other.
    #[arg(long, default_value_t = 1)]
    pub l1_cpus: u32,
    /// Every 15 s of the run, print rkvm's debugfs counters (rkvm only).
    #[arg(long)]
    pub watch: bool,
}

/// The guest's initramfs: busybox and the guest's init.
fn guest_initramfs() -> Result<Vec<u8>> {
    let mut fs = Initramfs::busybox(&[])?;
    fs.add_file_from("init", &paths::root().join("testguests/vmm/guest/init.sh"), 0o755)?;
    let path = paths::target().join("l1").join("vmm-guest.cpio");
    std::fs::create_dir_all(path.parent().unwrap_or(&paths::target()))?;
    fs.write(&path)?;
    Ok(std::fs::read(&path)?)
}

/// Shell lines that load the hypervisor `backend` in L1.
fn load_hypervisor(kernel: &L1Kernel, backend: &str, vendor: Vendor, nested_paging: u8) -> Result<String> {
    if backend == "rkvm" {
        return Ok("insmod ./rkvm.ko || echo 'RKVM-CHECK fail load-rkvm: insmod failed'\n".into());
    }
    let setting = match vendor {
        Vendor::Amd => format!("npt={nested_paging}"),
        Vendor::Intel => format!("ept={nested_paging}"),
    };
    Ok(crate::oracle::load_kvm(kernel, vendor, &setting))
}

/// The L1 job: load the hypervisor, run the VMM, report.
fn vmm_job(args: &Args, kernel: &L1Kernel, vendor: Vendor) -> Result<Job> {
    let backend = args.backend.as_str();
    if !matches!(backend, "linux-kvm" | "rkvm") {
        bail!("unknown backend `{backend}`: use linux-kvm or rkvm");
    }
    let mut files = vec![
        ("rkvm/rkvm-vmm".to_string(), l1::static_binary("rkvm-vmm")?, 0o755),
        ("rkvm/guest-bzImage".to_string(), std::fs::read(kernel.bzimage())?, 0o644),
        ("rkvm/guest.cpio".to_string(), guest_initramfs()?, 0o644),
    ];
    if backend == "rkvm" {
        let build = kmod::Build::for_crate(kernel.build.clone(), paths::root().join("kmod"))?;
        files.push(("rkvm/rkvm.ko".into(), std::fs::read(kmod::build_module(&build)?)?, 0o644));
    } else {
        for module in kernel.kvm_modules(vendor.kvm_module()) {
            let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module.ko").to_string();
            files.push((format!("rkvm/{name}"), std::fs::read(&module)?, 0o644));
        }
    }
    let append = format!("RKVM_FORKS={} {}", args.forks, args.append);
    let script = format!(
        "{load}\
         start=$(cut -d' ' -f1 /proc/uptime)\n\
         {watch}./rkvm-vmm --backend {backend} --kernel guest-bzImage --initrd guest.cpio --verbose --timeout {guest_timeout} --append '{append}'\n\
         rc=$?\n\
         [ -d /sys/kernel/debug/rkvm ] && grep -H . /sys/kernel/debug/rkvm/* 2>/dev/null | sed 's/^/rkvm counters: /'\n\
         echo \"RKVM-INFO rkvm-vmm ran $(awk -v s=$start '{{print $1 - s}}' /proc/uptime) s of L1 time\"\n\
         if [ $rc -eq 0 ]; then echo 'RKVM-CHECK ok vmm-{backend}: the guest booted, ran its workload and powered off'; \
         else echo \"RKVM-CHECK fail vmm-{backend}: rkvm-vmm exited with status $rc\"; fi\n\
         exit $rc\n",
        load = load_hypervisor(kernel, backend, vendor, args.nested_paging)?,
        // The guest's own limit comes first, so that rkvm-vmm says where
        // the guest was; L1's, a minute later, catches a hung VMM.
        guest_timeout = args.timeout.saturating_sub(60).max(30),
        watch = if args.watch {
            "(while sleep 15; do grep -H . /sys/kernel/debug/rkvm/* 2>/dev/null | tr '\\n' ' '; echo; done) &\n"
        } else {
            ""
        },
    );
    let name = match backend {
        "rkvm" => "vmm-rkvm".to_string(),
        _ => format!("vmm-linux-kvm-nested-paging-{}", args.nested_paging),
    };
    Ok(Job {
        name,
        script,
        files,
        cpus: args.l1_cpus,
        timeout: Duration::from_secs(args.timeout),
        verbose: true,
    })
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let platform = platform::select(args.platform.as_deref())?;
    let kernel = kernel::ensure()?;
    let job = vmm_job(&args, &kernel, platform.vendor())?;
    println!(
        "== vmm: Linux ({}) boots on rkvm-vmm over {} in L1 ({})",
        kernel.bzimage().display(),
        args.backend,
        platform.name()
    );
    let checks = crate::jobs::run_checks(platform.as_ref(), &kernel, &job)?;
    println!("== vmm finished in {:.0?}", start.elapsed());
    let passed = checks.iter().filter(|c| c.passed).count();
    println!("{} passed, {} failed", passed, checks.len() - passed);
    if passed < checks.len() {
        bail!("the guest did not run to its end (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_loads_its_own_hypervisor() {
        let kernel = L1Kernel::tree("/k".into());
        let rkvm = load_hypervisor(&kernel, "rkvm", Vendor::Amd, 1).unwrap();
        assert!(rkvm.starts_with("insmod ./rkvm.ko "), "{rkvm}");
        let amd = load_hypervisor(&kernel, "linux-kvm", Vendor::Amd, 0).unwrap();
        assert!(amd.contains("insmod ./kvm-amd.ko npt=0 "), "{amd}");
        let intel = load_hypervisor(&kernel, "linux-kvm", Vendor::Intel, 1).unwrap();
        assert!(intel.contains("insmod ./kvm-intel.ko ept=1 "), "{intel}");
        assert!(!intel.contains("rkvm.ko"));
    }
}
