//@ stage 4
//! Virtualization on and off, on every CPU, at module load and unload, as
//! 2006's `kvm_init_arch` did: choose the backend, let it allocate what
//! each CPU needs (in process context), then run its `hardware_enable` on
//! every CPU with `on_each_cpu` (interrupts off, no allocation).
//!
//! Each CPU records whether its call succeeded. If any CPU failed, the
//! CPUs that succeeded are turned off again, the backend frees its per-CPU
//! state, and the module refuses to load; the backend has logged why.
//!
//! CPUs that come online after the module loaded are not turned on (2006
//! registered no CPU-hotplug callback either: its `hardware_enable` says
//! "FIXME: not cpu hotplug safe"; it had only a reboot notifier). The table
//! of CPUs that are on is published to [`arch::is_on`], which lets the
//! backends refuse to run on such a CPU instead of executing VMX or SVM
//! instructions where they are not enabled.

use crate::arch::{self, Arch};
use crate::kernel::{Errno, KResult, cpu};
use crate::log;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};

// ANCHOR: per_cpu
/// What the per-CPU calls need: the backend, and where to record success.
struct Call<'a> {
    arch: &'a dyn Arch,
    enabled: &'a [AtomicBool],
    /// Set by any CPU whose enable failed.
    failed: AtomicBool,
}
// ANCHOR_END: per_cpu

// ANCHOR: enable
/// Chooses the backend and turns it on on every online CPU. On failure
/// every CPU is left as it was and the module refuses to load.
pub fn enable() -> KResult<()> {
    let arch = match arch::select() {
        Ok(arch) => arch,
        Err(reasons) => {
            for (name, why) in reasons.iter().flatten() {
                log!(Err, "{name}: {why}");
            }
            log!(Err, "no usable hardware virtualization: rkvm needs Intel VMX (VT-x) or AMD SVM (AMD-V), enabled in the firmware and not in use by another hypervisor");
            return Err(Errno::EOPNOTSUPP);
        }
    };
    let n = cpu::nr_cpu_ids();
    let mut enabled = Vec::new();
    enabled.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    enabled.extend((0..n).map(|_| AtomicBool::new(false)));
    let enabled = crate::kernel::try_box(enabled)?;
    if let Err(e) = arch.hardware_setup(n) {
        arch.hardware_unsetup();
        arch::deselect();
        return Err(e);
    }
    let call = Call { arch, enabled: &enabled, failed: AtomicBool::new(false) };
    cpu::on_each_cpu(enable_this_cpu, &call);
    if call.failed.load(Ordering::Acquire) {
        cpu::on_each_cpu(disable_this_cpu, &call);
        arch.hardware_unsetup();
        arch::deselect();
        log!(Err, "{} could not be turned on on every CPU; nothing was left on", arch.name());
        return Err(Errno::EBUSY);
    }
    let on = enabled.iter().filter(|c| c.load(Ordering::Acquire)).count();
    log!(Info, "{} on, on {on} of {} online CPUs", arch.name(), cpu::num_online_cpus());
    arch::publish_enabled(enabled);
    Ok(())
}

/// Turns the backend off on every CPU it is on, and lets it free its
/// per-CPU state.
pub fn disable() {
    let table = arch::take_enabled();
    let Some(arch) = arch::current() else { return };
    let Some(enabled) = table else { return };
    let call = Call { arch, enabled: &enabled, failed: AtomicBool::new(false) };
    cpu::on_each_cpu(disable_this_cpu, &call);
    if enabled.iter().any(|c| c.load(Ordering::Acquire)) {
        // A CPU went offline with the extension on: its per-CPU state
        // may still be in the processor's hands, so it is not freed.
        log!(Err, "a CPU went offline with {} on; its per-CPU state is leaked", arch.name());
    } else {
        arch.hardware_unsetup();
    }
    arch::deselect();
}

// ANCHOR_END: enable

// ANCHOR: per_cpu_calls
/// Runs on each CPU, interrupts off.
extern "C" fn enable_this_cpu(arg: *mut c_void) {
    // SAFETY: `enable` passes its `Call` and waits for every CPU.
    let call = unsafe { &*arg.cast::<Call<'_>>() };
    let this = cpu::current_cpu();
    let Some(flag) = call.enabled.get(this) else {
        call.failed.store(true, Ordering::Release);
        return;
    };
    match call.arch.hardware_enable(this) {
        Ok(()) => flag.store(true, Ordering::Release),
        Err(_) => call.failed.store(true, Ordering::Release),
    }
}

/// Runs on each CPU, interrupts off: off again where it is on.
extern "C" fn disable_this_cpu(arg: *mut c_void) {
    // SAFETY: the caller passes its `Call` and waits for every CPU.
    let call = unsafe { &*arg.cast::<Call<'_>>() };
    let this = cpu::current_cpu();
    if let Some(flag) = call.enabled.get(this)
        && flag.swap(false, Ordering::AcqRel)
    {
        call.arch.hardware_disable(this);
    }
}
// ANCHOR_END: per_cpu_calls
