//! The hypervisor's own counters, from debugfs, read once the guest has
//! stopped and before its VM is closed: `cargo xtask bench linux` compares
//! them across hypervisors.
//!
//! rkvm counts every event since it was loaded, in one file per counter
//! under `/sys/kernel/debug/rkvm/`. Linux's KVM shows a VM's counters in
//! `/sys/kernel/debug/kvm/PID-FD/` only while the VM lives (the vCPU's
//! counters summed into the VM's directory), so the VMM reads them itself.

use crate::backend::Backend;
use std::path::Path;

/// Where debugfs is mounted.
const DEBUGFS: &str = "/sys/kernel/debug";

/// Every numeric counter `backend` shows for this process's VM, by name,
/// in the order of their names; empty if debugfs does not show them.
pub fn read(backend: Backend) -> Vec<(String, u64)> {
    read_under(backend, Path::new(DEBUGFS), std::process::id())
}

/// [`read`] under the debugfs root `root`, for process `pid`.
pub fn read_under(backend: Backend, root: &Path, pid: u32) -> Vec<(String, u64)> {
    match backend {
        Backend::Rkvm => numbers_in(&root.join("rkvm")),
        Backend::LinuxKvm => {
            let prefix = format!("{pid}-");
            let Ok(entries) = std::fs::read_dir(root.join("kvm")) else { return Vec::new() };
            let mut dirs: Vec<_> = entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
                .map(|e| e.path())
                .collect();
            dirs.sort();
            // One VM per VMM: its directory's counters.
            dirs.first().map(|d| numbers_in(d)).unwrap_or_default()
        }
    }
}

/// The files of `dir` that hold one decimal number, as (name, number).
fn numbers_in(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut counters: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let value = std::fs::read_to_string(e.path()).ok()?.trim().parse().ok()?;
            Some((name, value))
        })
        .collect();
    counters.sort();
    counters
}

/// The one line the VMM prints: `name=value` pairs, space-separated.
pub fn line(counters: &[(String, u64)]) -> String {
    let pairs: Vec<String> = counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
    pairs.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_reads_its_own_directory() {
        let root = std::env::temp_dir().join(format!("rkvm-vmm-counters-{}", std::process::id()));
        std::fs::create_dir_all(root.join("rkvm/vms-dir")).unwrap();
        std::fs::write(root.join("rkvm/exits"), "12\n").unwrap();
        std::fs::write(root.join("rkvm/pf_fixed"), "3\n").unwrap();
        std::fs::create_dir_all(root.join("kvm/77-12/vcpu0")).unwrap();
        std::fs::create_dir_all(root.join("kvm/78-12")).unwrap();
        std::fs::write(root.join("kvm/77-12/exits"), "40\n").unwrap();
        std::fs::write(root.join("kvm/78-12/exits"), "99\n").unwrap();
        std::fs::write(root.join("kvm/exits"), "139\n").unwrap();
        let rkvm = read_under(Backend::Rkvm, &root, 77);
        assert_eq!(line(&rkvm), "exits=12 pf_fixed=3");
        assert_eq!(line(&read_under(Backend::LinuxKvm, &root, 77)), "exits=40");
        assert!(read_under(Backend::LinuxKvm, &root, 5).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
