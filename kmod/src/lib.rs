//@ stage 1
//! rkvm: a kernel-based virtual machine monitor, in the image of Linux 2.6.20's KVM.
//!
//! This crate is the Rust core of the `rkvm.ko` kernel module. The C glue
//! (`glue/rkvm_glue.c`) owns every kernel interface and calls the handful of
//! `extern "C"` entry points below; everything else is ordinary Rust, built
//! `no_std` for the kernel and with `std` on the host, where its unit tests
//! run under `cargo test`.
//!
//! The modules are listed bottom-up: each one uses only those above it
//! (tests aside), so the code reads top-down from `dev` to `segments`.
#![cfg_attr(target_os = "none", no_std)]

//@ begin 3
extern crate alloc;
//@ end

pub mod segments;
#[cfg(test)]
mod test_rng;
//@ begin 2
pub mod abi;
//@ end
//@ begin 3
pub mod kernel;
pub mod regs;
pub mod stats;
pub mod memslot;
//@ begin 12
pub mod irq;
pub mod real_mode;
pub mod debug;
//@ end
//@ begin 10
pub mod emulate;
//@ end
//@ end
//@ begin 5
pub mod mmu;
pub mod exit;
//@ end
//@ begin 4
pub mod arch;
pub mod hardware;
//@ end
//@ begin 3
pub mod vcpu;
pub mod vm;
pub mod dev;

use core::ffi::{c_long, c_uint, c_ulong, c_void};

// The entry points. The glue calls these and nothing else; each one is a thin
// shell around safe Rust in `dev`.

/// Called once from the module's init function, before `/dev/rkvm` exists.
/// Returns 0 or a negative errno, which makes the module refuse to load.
#[unsafe(no_mangle)]
pub extern "C" fn rkvm_core_init() -> i32 {
    match dev::init() {
        Ok(()) => 0,
        Err(e) => e.to_kernel(),
    }
}

/// Called once from the module's exit function, after `/dev/rkvm` is gone
/// and every file on it has been released.
#[unsafe(no_mangle)]
pub extern "C" fn rkvm_core_exit() {
    dev::exit();
}

/// `open("/dev/rkvm")`: create a VM. On success stores the VM's handle in
/// `*private` (the glue keeps it in `file->private_data`) and returns 0.
///
/// # Safety
/// `private` must be valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkvm_dev_open(private: *mut *mut c_void) -> i32 {
    match dev::open() {
        Ok(handle) => {
            // SAFETY: the caller guarantees `private` is writable.
            unsafe { private.write(handle) };
            0
        }
        Err(e) => e.to_kernel(),
    }
}

/// The last `close()` of a file: free its VM.
///
/// # Safety
/// `handle` must come from `rkvm_dev_open` and not have been released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkvm_dev_release(handle: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { dev::release(handle) };
}

/// A page fault in a process's mapping of `/dev/rkvm`, at file page offset
/// `pgoff`: returns the `struct page` to map, with a reference taken for
/// the mapping, or null for `SIGBUS`.
///
/// # Safety
/// `handle` must come from `rkvm_dev_open` and not have been released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkvm_dev_fault(handle: *mut c_void, pgoff: c_ulong) -> *mut c_void {
    // SAFETY: forwarded from the caller.
    unsafe { dev::fault(handle, pgoff) }
}

/// `ioctl(fd, cmd, arg)` on an open `/dev/rkvm`.
///
/// # Safety
/// `handle` must come from `rkvm_dev_open` and not have been released; the
/// glue serializes nothing, so `dev::ioctl` must be safe to call
/// concurrently on one VM.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rkvm_dev_ioctl(handle: *mut c_void, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: forwarded from the caller.
    match unsafe { dev::ioctl(handle, cmd, arg as usize) } {
        Ok(value) => value as c_long,
        Err(e) => e.to_kernel() as c_long,
    }
}
//@ end
//@ begin 13

/// The glue's CPU-hotplug callback: CPU `cpu`, the calling one, comes
/// online. Returns 0 or a negative errno, which keeps it offline.
#[unsafe(no_mangle)]
pub extern "C" fn rkvm_cpu_online(cpu: c_uint) -> i32 {
    match hardware::cpu_online(cpu as usize) {
        Ok(()) => 0,
        Err(e) => e.to_kernel(),
    }
}

/// The glue's CPU-hotplug teardown: CPU `cpu`, the calling one, goes
/// offline. Always 0: a CPU can always be turned off.
#[unsafe(no_mangle)]
pub extern "C" fn rkvm_cpu_offline(cpu: c_uint) -> i32 {
    hardware::cpu_offline(cpu as usize);
    0
}

/// The glue's reboot notifier: the machine halts, powers off or restarts.
#[unsafe(no_mangle)]
pub extern "C" fn rkvm_core_reboot() {
    hardware::reboot();
}
//@ end
