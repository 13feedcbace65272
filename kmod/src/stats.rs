//@ stage 3
//! Statistics, as in 2006's debugfs `kvm/` directory: one counter per event,
//! shown under `/sys/kernel/debug/rkvm/`.
//!
//! The counters are plain atomics; the glue creates one read-only debugfs
//! file per entry of [`STATS`] when the module loads.

use core::ffi::{CStr, c_char};
use core::sync::atomic::{AtomicU64, Ordering};

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
pub static STATS: [StatEntry; 3] = [
    entry(c"vms", &VMS),
    entry(c"vcpus", &VCPUS),
    entry(c"guest_pages", &GUEST_PAGES),
];

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
