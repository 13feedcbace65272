//@ stage 13
//! What the full module asks of the kernel beyond stage 12: a CPU-hotplug
//! state, `stop_machine` for the reboot, and the host's machine-check
//! handler. In the kernel each function is a call into the glue; on the
//! host, for unit tests, the hotplug state registers nothing and
//! `stop_machine` calls the function once "on" each fake CPU.

use super::{Errno, KResult};
use core::ffi::c_void;

/// Keeps every CPU online or offline as it is (`cpus_read_lock`) until
/// [`unlock`]: the module turns the online CPUs on and registers its
/// hotplug state in between, so no CPU slips past both.
pub fn lock() {
    imp::lock()
}

pub fn unlock() {
    imp::unlock()
}

/// Registers the module's CPU-hotplug state, under [`lock`], once every
/// online CPU is on: the glue's callbacks then run `rkvm_cpu_online` on
/// each CPU that comes online and `rkvm_cpu_offline` on each CPU that goes
/// offline, each on that CPU, in its hotplug thread.
pub fn register() -> KResult<()> {
    match imp::register() {
        0 => Ok(()),
        e => Err(e.checked_neg().filter(|&n| n > 0).map_or(Errno::EIO, Errno)),
    }
}

/// Removes the state; `rkvm_cpu_offline` runs on every online CPU first.
pub fn unregister() {
    imp::unregister()
}

/// Runs `f(arg)` on every online CPU at the same time, interrupts off,
/// while no other task runs on any CPU (`stop_machine`), and waits.
pub fn stop_machine<T: Sync>(f: extern "C" fn(*mut c_void) -> i32, arg: &T) {
    imp::stop_machine(f, (arg as *const T).cast_mut().cast())
}

/// Calls the host's machine-check handler, on the CPU that took the
/// machine check, as if it had happened in user mode (nothing where the
/// kernel has no machine-check support).
pub fn machine_check() {
    imp::machine_check()
}

#[cfg(target_os = "none")]
mod imp {
    use core::ffi::c_void;

    unsafe extern "C" {
        fn rkvm_glue_hotplug_lock();
        fn rkvm_glue_hotplug_unlock();
        fn rkvm_glue_hotplug_register() -> i32;
        fn rkvm_glue_hotplug_unregister();
        fn rkvm_glue_stop_machine(f: extern "C" fn(*mut c_void) -> i32, arg: *mut c_void) -> i32;
        fn rkvm_glue_machine_check();
    }

    pub fn lock() {
        // SAFETY: process context (module load), balanced by `unlock`.
        unsafe { rkvm_glue_hotplug_lock() }
    }
    pub fn unlock() {
        // SAFETY: the caller holds the lock.
        unsafe { rkvm_glue_hotplug_unlock() }
    }
    pub fn register() -> i32 {
        // SAFETY: process context (module load), under `lock`; the
        // callbacks are the module's own and live until `unregister`.
        unsafe { rkvm_glue_hotplug_register() }
    }
    pub fn unregister() {
        // SAFETY: process context (module unload or failed load).
        unsafe { rkvm_glue_hotplug_unregister() }
    }
    pub fn stop_machine(f: extern "C" fn(*mut c_void) -> i32, arg: *mut c_void) {
        // SAFETY: `arg` outlives the call, which waits for every CPU.
        unsafe { rkvm_glue_stop_machine(f, arg) };
    }
    pub fn machine_check() {
        // SAFETY: called right after a machine-check exit, on its CPU.
        unsafe { rkvm_glue_machine_check() }
    }
}

#[cfg(not(target_os = "none"))]
mod imp {
    use crate::kernel::cpu;
    use core::ffi::c_void;

    pub fn lock() {}
    pub fn unlock() {}
    pub fn register() -> i32 {
        0
    }
    pub fn unregister() {}
    pub fn stop_machine(f: extern "C" fn(*mut c_void) -> i32, arg: *mut c_void) {
        struct Call(extern "C" fn(*mut c_void) -> i32, *mut c_void);
        // SAFETY: the host's fake CPUs are calls on this thread.
        unsafe impl Sync for Call {}
        extern "C" fn each(arg: *mut c_void) {
            // SAFETY: `stop_machine` passes its `Call`.
            let call = unsafe { &*arg.cast::<Call>() };
            (call.0)(call.1);
        }
        cpu::on_each_cpu(each, &Call(f, arg));
    }
    pub fn machine_check() {}
}
