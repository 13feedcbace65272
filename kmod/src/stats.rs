//@ stage 3
//! Statistics, as in 2006's debugfs `kvm/` directory: one counter per event,
//! shown under `/sys/kernel/debug/rkvm/`.
//!
//! The counters are plain atomics; the glue creates one read-only debugfs
//! file per entry of [`STATS`] when the module loads.

use core::ffi::{CStr, c_char};
use core::sync::atomic::{AtomicU64, Ordering};
//@ begin 5
use core::ffi::c_void;
use core::sync::atomic::AtomicPtr;
//@ end

/// The number of VMs alive now: one per open file of `/dev/rkvm`.
pub static VMS: AtomicU64 = AtomicU64::new(0);

/// The pages of guest memory that memory slots hold now, in all VMs. A page
/// that a process still has mapped after its slot shrank or its VM closed
/// is no longer counted: the mapping holds it, not a slot.
pub static GUEST_PAGES: AtomicU64 = AtomicU64::new(0);

/// The vCPUs alive now, in all VMs.
pub static VCPUS: AtomicU64 = AtomicU64::new(0);

/// One debugfs file: its name and the counter it shows. The glue reads this
/// layout as `struct rkvm_stat { const char *name; u64 *value; }`.
#[repr(C)]
pub struct StatEntry {
    name: *const c_char,
    value: &'static AtomicU64,
}

// SAFETY: `name` points to a `'static` string that is never written.
unsafe impl Sync for StatEntry {}

const fn entry(name: &'static CStr, value: &'static AtomicU64) -> StatEntry {
    StatEntry { name: name.as_ptr(), value }
}

/// Every counter rkvm exposes.
pub static STATS: &[StatEntry] = &[
    entry(c"vms", &VMS),
    entry(c"vcpus", &VCPUS),
    entry(c"guest_pages", &GUEST_PAGES),
    entry(c"allocations", &crate::kernel::ALLOCATIONS),
    //@ begin 5
    entry(c"exits", &EXITS),
    entry(c"io_exits", &IO_EXITS),
    entry(c"halt_exits", &HALT_EXITS),
    entry(c"irq_exits", &IRQ_EXITS),
    entry(c"signal_exits", &SIGNAL_EXITS),
    entry(c"pf_fixed", &PF_FIXED),
    entry(c"tlb_flush", &TLB_FLUSH),
    //@ end
    //@ begin 8
    entry(c"pf_guest", &PF_GUEST),
    entry(c"invlpg", &INVLPG),
    entry(c"mmu_shadow_made", &SHADOW_PAGES_MADE),
    entry(c"mmu_shadow_zapped", &SHADOW_PAGES_ZAPPED),
    //@ end
    //@ begin 10
    entry(c"mmio_exits", &MMIO_EXITS),
    //@ end
    //@ begin 12
    entry(c"irq_injections", &IRQ_INJECTIONS),
    entry(c"irq_window_exits", &IRQ_WINDOW_EXITS),
    //@ end
    //@ begin 13
    entry(c"mmu_pte_write", &PTE_WRITES),
    entry(c"pf_spurious", &PF_SPURIOUS),
    entry(c"pf_not_present", &PF_NOT_PRESENT),
    entry(c"pf_write_protect", &PF_WRITE_PROTECT),
    entry(c"pf_write_table", &PF_WRITE_TABLE),
    entry(c"pf_write_clean", &PF_WRITE_CLEAN),
    entry(c"pf_read_protect", &PF_READ_PROTECT),
    entry(c"pf_large_page", &PF_LARGE_PAGE),
    entry(c"mmu_prefetch", &MMU_PREFETCH),
    entry(c"mmu_sync", &MMU_SYNC),
    entry(c"mmu_resynced", &MMU_RESYNCED),
    //@ end
];

//@ begin 5
// ANCHOR: counters
/// The events counted for each VM and for the whole module, as 2006's
/// `struct kvm_stat`. The debugfs files show the module-wide totals, which
/// keep counting after a VM is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every exit from a guest.
    Exits,
    /// Port I/O exits (each `rep ins`/`outs` counts once).
    IoExits,
    /// `hlt` exits.
    HaltExits,
    /// Exits for a host interrupt.
    IrqExits,
    /// `KVM_RUN` returns with `EINTR` because a signal is pending.
    SignalExits,
    /// Faults fixed by mapping a page of guest memory.
    PfFixed,
    /// Flushes of the guest's TLB.
    TlbFlush,
    //@ begin 8
    /// Page faults the guest's own tables caused, given to the guest.
    PfGuest,
    /// `invlpg` instructions.
    Invlpg,
    /// Shadow pages made, and thrown away.
    ShadowPagesMade,
    ShadowPagesZapped,
    //@ end
    //@ begin 10
    /// Exits to userspace for MMIO.
    MmioExits,
    //@ end
    //@ begin 12
    /// External interrupts delivered into the guest.
    IrqInjections,
    /// Exits because the guest became able to take an interrupt.
    IrqWindowExits,
    //@ end
    //@ begin 13
    /// Guest writes to a protected guest page table, emulated (or, if the
    /// emulator declined, let through).
    PteWrites,
    // What the shadow faults fixed on the shadow page cache were: each
    // such fault, counted in `pf_fixed`, is counted in exactly one of the
    // next four, by the error code of the fault (SDM Vol. 3A, 4.7) and the
    // shadow entry that maps the faulting page (its leaf) before and
    // after. Faults fixed on the nonpaging map or the naive shadow are in
    // none of them.
    /// The shadow leaf was present before the fault and the fault left it
    /// exactly as it was: the processor faulted on a translation it had
    /// cached from an older shadow (Linux's KVM counts these in its
    /// `pf_spurious`, and not in its `pf_fixed`).
    PfSpurious,
    /// Not spurious, and P = 0 in the error code: the processor found no
    /// present shadow entry on the way to the page.
    PfNotPresent,
    /// Not spurious, P = 1 and W = 1: a write the present shadow entries
    /// refused.
    PfWriteProtect,
    /// Of `PfWriteProtect`, the writes to a guest page table the cache
    /// protected, which the fault let through by making the table's shadow
    /// pages unsync or throwing them away (not those it emulated: those
    /// are `PteWrites`, and not fixed).
    PfWriteTable,
    /// Of `PfWriteProtect`, not `PfWriteTable`, the writes whose walk set
    /// the D bit of the guest's entry: the shadow mapped the page
    /// read-only because the guest's entry was clean.
    PfWriteClean,
    /// Not spurious, P = 1 and W = 0: a read or an instruction fetch the
    /// present shadow entries refused (a user access to a page mapped for
    /// a supervisor write with CR0.WP = 0, a right the guest granted in an
    /// unsync page table).
    PfReadProtect,
    /// Of the four above, the faults in a guest large page (2 or 4 MiB),
    /// which the shadow maps 4 KiB at a time.
    PfLargePage,
    /// Shadow entries filled without a fault of their own: the neighbours
    /// a fault prefetched, and the new translation an `invlpg` filled.
    MmuPrefetch,
    /// Entries that first resynced the unsync page tables the root
    /// reaches: after a CR3 load, a whole `invlpg`, or a cached page linked
    /// in again.
    MmuSync,
    /// Unsync page tables those resyncs brought back in sync and
    /// protected again.
    MmuResynced,
    //@ end
}

/// The number of [`Counter`]s.
pub const NR_COUNTERS: usize = Counter::ALL.len();

pub static EXITS: AtomicU64 = AtomicU64::new(0);
pub static IO_EXITS: AtomicU64 = AtomicU64::new(0);
pub static HALT_EXITS: AtomicU64 = AtomicU64::new(0);
pub static IRQ_EXITS: AtomicU64 = AtomicU64::new(0);
pub static SIGNAL_EXITS: AtomicU64 = AtomicU64::new(0);
pub static PF_FIXED: AtomicU64 = AtomicU64::new(0);
pub static TLB_FLUSH: AtomicU64 = AtomicU64::new(0);
//@ begin 8
pub static PF_GUEST: AtomicU64 = AtomicU64::new(0);
pub static INVLPG: AtomicU64 = AtomicU64::new(0);
pub static SHADOW_PAGES_MADE: AtomicU64 = AtomicU64::new(0);
pub static SHADOW_PAGES_ZAPPED: AtomicU64 = AtomicU64::new(0);
//@ end
//@ begin 10
pub static MMIO_EXITS: AtomicU64 = AtomicU64::new(0);
//@ begin 12
pub static IRQ_INJECTIONS: AtomicU64 = AtomicU64::new(0);
pub static IRQ_WINDOW_EXITS: AtomicU64 = AtomicU64::new(0);
//@ end
//@ end
//@ begin 13
pub static PTE_WRITES: AtomicU64 = AtomicU64::new(0);
pub static PF_SPURIOUS: AtomicU64 = AtomicU64::new(0);
pub static PF_NOT_PRESENT: AtomicU64 = AtomicU64::new(0);
pub static PF_WRITE_PROTECT: AtomicU64 = AtomicU64::new(0);
pub static PF_WRITE_TABLE: AtomicU64 = AtomicU64::new(0);
pub static PF_WRITE_CLEAN: AtomicU64 = AtomicU64::new(0);
pub static PF_READ_PROTECT: AtomicU64 = AtomicU64::new(0);
pub static PF_LARGE_PAGE: AtomicU64 = AtomicU64::new(0);
pub static MMU_PREFETCH: AtomicU64 = AtomicU64::new(0);
pub static MMU_SYNC: AtomicU64 = AtomicU64::new(0);
pub static MMU_RESYNCED: AtomicU64 = AtomicU64::new(0);
//@ end

impl Counter {
    /// The module-wide counter.
    pub fn global(self) -> &'static AtomicU64 {
        match self {
            Counter::Exits => &EXITS,
            Counter::IoExits => &IO_EXITS,
            Counter::HaltExits => &HALT_EXITS,
            Counter::IrqExits => &IRQ_EXITS,
            Counter::SignalExits => &SIGNAL_EXITS,
            Counter::PfFixed => &PF_FIXED,
            Counter::TlbFlush => &TLB_FLUSH,
            //@ begin 8
            Counter::PfGuest => &PF_GUEST,
            Counter::Invlpg => &INVLPG,
            Counter::ShadowPagesMade => &SHADOW_PAGES_MADE,
            Counter::ShadowPagesZapped => &SHADOW_PAGES_ZAPPED,
            //@ end
            //@ begin 10
            Counter::MmioExits => &MMIO_EXITS,
            //@ end
            //@ begin 12
            Counter::IrqInjections => &IRQ_INJECTIONS,
            Counter::IrqWindowExits => &IRQ_WINDOW_EXITS,
            //@ end
            //@ begin 13
            Counter::PteWrites => &PTE_WRITES,
            Counter::PfSpurious => &PF_SPURIOUS,
            Counter::PfNotPresent => &PF_NOT_PRESENT,
            Counter::PfWriteProtect => &PF_WRITE_PROTECT,
            Counter::PfWriteTable => &PF_WRITE_TABLE,
            Counter::PfWriteClean => &PF_WRITE_CLEAN,
            Counter::PfReadProtect => &PF_READ_PROTECT,
            Counter::PfLargePage => &PF_LARGE_PAGE,
            Counter::MmuPrefetch => &MMU_PREFETCH,
            Counter::MmuSync => &MMU_SYNC,
            Counter::MmuResynced => &MMU_RESYNCED,
            //@ end
        }
    }
}

impl Counter {
    /// Every counter, in the order of their debugfs files.
    pub const ALL: &[Counter] = &[
        Counter::Exits,
        Counter::IoExits,
        Counter::HaltExits,
        Counter::IrqExits,
        Counter::SignalExits,
        Counter::PfFixed,
        Counter::TlbFlush,
        //@ begin 8
        Counter::PfGuest,
        Counter::Invlpg,
        Counter::ShadowPagesMade,
        Counter::ShadowPagesZapped,
        //@ end
        //@ begin 10
        Counter::MmioExits,
        //@ end
        //@ begin 12
        Counter::IrqInjections,
        Counter::IrqWindowExits,
        //@ end
        //@ begin 13
        Counter::PteWrites,
        Counter::PfSpurious,
        Counter::PfNotPresent,
        Counter::PfWriteProtect,
        Counter::PfWriteTable,
        Counter::PfWriteClean,
        Counter::PfReadProtect,
        Counter::PfLargePage,
        Counter::MmuPrefetch,
        Counter::MmuSync,
        Counter::MmuResynced,
        //@ end
    ];

    /// The name of its debugfs file.
    pub fn name(self) -> &'static CStr {
        match self {
            Counter::Exits => c"exits",
            Counter::IoExits => c"io_exits",
            Counter::HaltExits => c"halt_exits",
            Counter::IrqExits => c"irq_exits",
            Counter::SignalExits => c"signal_exits",
            Counter::PfFixed => c"pf_fixed",
            Counter::TlbFlush => c"tlb_flush",
            //@ begin 8
            Counter::PfGuest => c"pf_guest",
            Counter::Invlpg => c"invlpg",
            Counter::ShadowPagesMade => c"mmu_shadow_made",
            Counter::ShadowPagesZapped => c"mmu_shadow_zapped",
            //@ end
            //@ begin 10
            Counter::MmioExits => c"mmio_exits",
            //@ end
            //@ begin 12
            Counter::IrqInjections => c"irq_injections",
            Counter::IrqWindowExits => c"irq_window_exits",
            //@ end
            //@ begin 13
            Counter::PteWrites => c"mmu_pte_write",
            Counter::PfSpurious => c"pf_spurious",
            Counter::PfNotPresent => c"pf_not_present",
            Counter::PfWriteProtect => c"pf_write_protect",
            Counter::PfWriteTable => c"pf_write_table",
            Counter::PfWriteClean => c"pf_write_clean",
            Counter::PfReadProtect => c"pf_read_protect",
            Counter::PfLargePage => c"pf_large_page",
            Counter::MmuPrefetch => c"mmu_prefetch",
            Counter::MmuSync => c"mmu_sync",
            Counter::MmuResynced => c"mmu_resynced",
            //@ end
        }
    }
}

/// One VM's counters. Besides the module-wide files, each VM's own appear
/// in a directory of `rkvm/` named `PID-N` (the process that opened it, and
/// a serial number) while the VM lives, as in today's KVM.
#[derive(Debug, Default)]
pub struct VmStats {
    counts: [AtomicU64; NR_COUNTERS],
    /// The VM's debugfs directory, once shown there.
    dir: AtomicPtr<c_void>,
}

impl VmStats {
    /// Shows the counters in debugfs. `self` must not move until dropped
    /// (it lives in the boxed VM): the files point at its counters.
    pub fn show_in_debugfs(&self) {
        let entries: [RawStat; NR_COUNTERS] = core::array::from_fn(|i| {
            let c = Counter::ALL.get(i).copied().unwrap_or(Counter::Exits);
            RawStat { name: c.name().as_ptr(), value: self.counter(c) }
        });
        let dir = imp::vm_dir(&entries);
        self.dir.store(dir, Ordering::Release);
    }

    fn counter(&self, counter: Counter) -> *const AtomicU64 {
        self.counts.get(counter as usize).map_or(core::ptr::null(), |c| c as *const AtomicU64)
    }

    /// Counts one `counter` event, in this VM and module-wide.
    pub fn count(&self, counter: Counter) {
        if let Some(c) = self.counts.get(counter as usize) {
            inc(c);
        }
        inc(counter.global());
    }

    //@ begin 8
    /// Counts `n` `counter` events at once.
    pub fn add(&self, counter: Counter, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(c) = self.counts.get(counter as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
        counter.global().fetch_add(n, Ordering::Relaxed);
    }
    //@ end

    /// This VM's count of `counter` events.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counts.get(counter as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl Drop for VmStats {
    /// The directory goes before the counters: debugfs waits for readers.
    fn drop(&mut self) {
        imp::remove_vm_dir(self.dir.swap(core::ptr::null_mut(), Ordering::AcqRel));
    }
}

/// A per-VM debugfs file, for the glue: `struct rkvm_stat`'s layout.
#[repr(C)]
struct RawStat {
    name: *const c_char,
    value: *const AtomicU64,
}

const _: () = assert!(core::mem::size_of::<RawStat>() == core::mem::size_of::<StatEntry>());

#[cfg(target_os = "none")]
mod imp {
    use super::RawStat;
    use core::ffi::c_void;

    unsafe extern "C" {
        fn rkvm_glue_vm_debugfs(stats: *const RawStat, count: usize) -> *mut c_void;
        fn rkvm_glue_vm_debugfs_remove(dir: *mut c_void);
    }

    pub fn vm_dir(entries: &[RawStat]) -> *mut c_void {
        // SAFETY: the glue reads `count` entries, copying the names; the
        // counters they point to outlive the directory (see `Drop`).
        unsafe { rkvm_glue_vm_debugfs(entries.as_ptr(), entries.len()) }
    }

    pub fn remove_vm_dir(dir: *mut c_void) {
        if !dir.is_null() {
            // SAFETY: `dir` came from `vm_dir` and is removed once.
            unsafe { rkvm_glue_vm_debugfs_remove(dir) }
        }
    }
}

#[cfg(not(target_os = "none"))]
mod imp {
    use super::RawStat;
    use core::ffi::c_void;

    /// The host has no debugfs.
    pub fn vm_dir(_entries: &[RawStat]) -> *mut c_void {
        core::ptr::null_mut()
    }
    pub fn remove_vm_dir(_dir: *mut c_void) {}
}
// ANCHOR_END: counters
//@ end

/// Adds one to `counter`.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Subtracts one from `counter`.
pub fn dec(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

/// Adds `delta`, which may be negative, to `counter`.
pub fn add(counter: &AtomicU64, delta: i64) {
    // Atomic addition wraps, so adding a negative delta's two's complement
    // subtracts it.
    counter.fetch_add(delta as u64, Ordering::Relaxed);
}

/// Hands the glue the table of counters.
///
/// # Safety
/// `count` must be valid for a write of one `usize`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkvm_stats(count: *mut usize) -> *const StatEntry {
    // SAFETY: the caller guarantees `count` is writable.
    unsafe { count.write(STATS.len()) };
    STATS.as_ptr()
}

//@ begin 5
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_counts_for_itself_and_for_the_module() {
        let vm = VmStats::default();
        let before = EXITS.load(Ordering::Relaxed);
        vm.count(Counter::Exits);
        vm.count(Counter::Exits);
        vm.count(Counter::TlbFlush);
        assert_eq!((vm.get(Counter::Exits), vm.get(Counter::TlbFlush), vm.get(Counter::IoExits)), (2, 1, 0));
        assert!(EXITS.load(Ordering::Relaxed) >= before + 2);
    }

    #[test]
    fn every_counter_has_a_name_and_a_place() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert!(STATS.iter().any(|e| core::ptr::eq(e.value, c.global())), "{:?}", c.name());
        }
    }

    #[test]
    fn every_counter_has_a_debugfs_file() {
        // SAFETY: every name is a `'static` C string (see `entry`).
        let name = |e: &StatEntry| unsafe { CStr::from_ptr(e.name) }.to_str().unwrap_or("?");
        let names: std::vec::Vec<_> = STATS.iter().map(name).collect();
        for name in ["exits", "io_exits", "halt_exits", "irq_exits", "signal_exits", "pf_fixed", "tlb_flush"] {
            assert!(names.contains(&name), "{name}");
        }
    }
}
//@ end
