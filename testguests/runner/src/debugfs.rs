//! The hypervisor's own count of exits, from debugfs, for `--repeat`'s
//! timing lines: it does not depend on how fast the machine is.
//!
//! rkvm counts every exit since it was loaded in `/sys/kernel/debug/rkvm/exits`.
//! Linux's KVM shows a VM's counters in `/sys/kernel/debug/kvm/PID-FD/`
//! only while the VM lives (its top-level `kvm/exits` also sums live VMs
//! only), so both are read after the VM is made and before it is closed,
//! and the difference is the run's.

use crate::backend::Backend;
use std::path::Path;

/// Where debugfs is mounted.
pub const DEBUGFS: &str = "/sys/kernel/debug";

/// The counters `--repeat` reports besides the exits, as (the name it
/// prints, rkvm's debugfs file, Linux KVM's): page faults fixed in the
/// shadow page tables and given to the guest, TLB flushes, `invlpg`s, and
/// shadow pages made and thrown away (Linux counts a page made as a miss
/// of its page cache).
pub const MMU_COUNTERS: [(&str, &str, &str); 6] = [
    ("pf_fixed", "pf_fixed", "pf_fixed"),
    ("pf_guest", "pf_guest", "pf_guest"),
    ("tlb_flush", "tlb_flush", "tlb_flush"),
    ("invlpg", "invlpg", "invlpg"),
    ("shadow_made", "mmu_shadow_made", "mmu_cache_miss"),
    ("shadow_zapped", "mmu_shadow_zapped", "mmu_shadow_zapped"),
];

/// The interrupt counters, by the same name in both: vectors delivered
/// into the guest, and exits because the guest became able to take one
/// (the interrupt window). Chapter 12's `stats.rs` counts them in rkvm.
pub const IRQ_COUNTERS: [&str; 2] = ["irq_injections", "irq_window_exits"];

/// The debugfs file of counter `c` of [`MMU_COUNTERS`] on `backend`.
pub fn mmu_counter_file(backend: Backend, c: (&str, &'static str, &'static str)) -> &'static str {
    match backend {
        Backend::Rkvm => c.1,
        Backend::LinuxKvm => c.2,
    }
}

/// The exits counted so far for this process's VMs on `backend`, under
/// the debugfs root `root`; `None` if debugfs does not show them.
pub fn exits(backend: Backend, root: &Path, pid: u32) -> Option<u64> {
    counter(backend, root, pid, "exits")
}

/// Counter `name` so far for this process's VMs on `backend`.
pub fn counter(backend: Backend, root: &Path, pid: u32, name: &str) -> Option<u64> {
    match backend {
        Backend::Rkvm => read_number(&root.join("rkvm").join(name)),
        Backend::LinuxKvm => {
            let prefix = format!("{pid}-");
            let mut total = None;
            for entry in std::fs::read_dir(root.join("kvm")).ok()?.flatten() {
                if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                    let n = read_number(&entry.path().join(name))?;
                    total = Some(total.unwrap_or(0) + n);
                }
            }
            total
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rkvm_has_one_global_counter_and_linux_kvm_one_per_vm() {
        let root = std::env::temp_dir().join(format!("rkvm-run-debugfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("rkvm")).unwrap();
        std::fs::write(root.join("rkvm/exits"), "1234\n").unwrap();
        std::fs::write(root.join("rkvm/pf_fixed"), "9\n").unwrap();
        for (dir, n) in [("77-11", "40\n"), ("77-12", "2\n"), ("78-11", "1000\n")] {
            std::fs::create_dir_all(root.join("kvm").join(dir)).unwrap();
            std::fs::write(root.join("kvm").join(dir).join("exits"), n).unwrap();
        }
        assert_eq!(exits(Backend::Rkvm, &root, 77), Some(1234));
        assert_eq!(exits(Backend::LinuxKvm, &root, 77), Some(42), "this process's VMs only");
        assert_eq!(exits(Backend::LinuxKvm, &root, 79), None, "no VM of this process");
        assert_eq!(exits(Backend::Rkvm, &root.join("nowhere"), 77), None);
        assert_eq!(counter(Backend::Rkvm, &root, 77, "pf_fixed"), Some(9));
        assert_eq!(counter(Backend::LinuxKvm, &root, 77, "pf_fixed"), None, "not shown");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
