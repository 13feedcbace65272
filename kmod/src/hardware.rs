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
//@ begin 13
//!
//! From stage 13 the module follows the CPUs as they come and go: a
//! CPU-hotplug state turns virtualization on on each CPU that comes online
//! and off on each CPU that goes offline, after VMCLEARing what VMX keeps
//! active there ([`offline`]); a reboot notifier turns it off on every CPU
//! before the machine halts or restarts, as 2006's `kvm_reboot` did
//! ([`reboot`]); and a machine check that a guest took is handed to the
//! host's handler ([`machine_check`]).
//@ end

use crate::arch::{self, Arch};
use crate::kernel::{Errno, KResult, cpu};
use crate::log;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};
//@ begin 13
use crate::arch::VmExit;
use crate::kernel::hotplug;
use core::sync::atomic::AtomicUsize;
//@ end

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
    //@ begin 13
    // No CPU comes or goes until the hotplug state is registered below.
    hotplug::lock();
    //@ end
    if let Err(e) = arch.hardware_setup(n) {
        arch.hardware_unsetup();
        arch::deselect();
        //@ begin 13
        hotplug::unlock();
        //@ end
        return Err(e);
    }
    let call = Call { arch, enabled: &enabled, failed: AtomicBool::new(false) };
    cpu::on_each_cpu(enable_this_cpu, &call);
    if call.failed.load(Ordering::Acquire) {
        cpu::on_each_cpu(disable_this_cpu, &call);
        arch.hardware_unsetup();
        arch::deselect();
        //@ begin 13
        hotplug::unlock();
        //@ end
        log!(Err, "{} could not be turned on on every CPU; nothing was left on", arch.name());
        return Err(Errno::EBUSY);
    }
    let on = enabled.iter().filter(|c| c.load(Ordering::Acquire)).count();
    log!(Info, "{} on, on {on} of {} online CPUs", arch.name(), cpu::num_online_cpus());
    arch::publish_enabled(enabled);
    //@ begin 13
    let registered = hotplug::register();
    hotplug::unlock();
    if let Err(e) = registered {
        log!(Err, "the CPU-hotplug state could not be registered: {e:?}");
        disable();
        return Err(e);
    }
    //@ end
    Ok(())
}

/// Turns the backend off on every CPU it is on, and lets it free its
/// per-CPU state.
pub fn disable() {
    //@ begin 13
    // Every online CPU's teardown runs: each is off when this returns.
    hotplug::unregister();
    //@ end
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
//@ begin 13

// ANCHOR: hotplug
/// A CPU came online (the glue's hotplug callback, on that CPU, in its
/// hotplug thread): turns the backend on there. An error keeps the CPU
/// offline, which is better than a CPU where no vCPU can run.
pub fn cpu_online(cpu: usize) -> KResult<()> {
    let (Some(arch), Some(enabled)) = (arch::current(), arch::enabled_table()) else { return Ok(()) };
    if REBOOTING.load(Ordering::Acquire) {
        return Err(Errno::EBUSY);
    }
    cpu::irq_disable();
    let result = online(arch, enabled, cpu);
    cpu::irq_enable();
    result
}

/// Turns the backend on on `cpu`, the calling CPU, interrupts off, and
/// only then says so in `enabled`: no vCPU may run there before.
pub fn online(arch: &dyn Arch, enabled: &[AtomicBool], cpu: usize) -> KResult<()> {
    let flag = enabled.get(cpu).ok_or(Errno::EINVAL)?;
    if flag.load(Ordering::Acquire) {
        return Ok(());
    }
    arch.hardware_enable(cpu)?;
    flag.store(true, Ordering::Release);
    Ok(())
}

/// A CPU is going offline (the glue's teardown callback, on that CPU, in
/// its hotplug thread): turns the backend off there.
pub fn cpu_offline(cpu: usize) {
    let (Some(arch), Some(enabled)) = (arch::current(), arch::enabled_table()) else { return };
    cpu::irq_disable();
    offline(arch, enabled, cpu);
    cpu::irq_enable();
}
// ANCHOR_END: hotplug

// ANCHOR: offline
/// Turns the backend off on `cpu`, the calling CPU, interrupts off, if
/// it is on; returns whether it was. For a CPU going offline and for the
/// reboot, which may both come to the same CPU: the second finds it off.
pub fn offline(arch: &dyn Arch, enabled: &[AtomicBool], cpu: usize) -> bool {
    //@ exercise E13.1
    //@ instruction: Turn the backend off on this CPU if `enabled` says it
    //@+ is on, and say whether it was; a CPU that is not on, or a number
    //@+ past the table, is left alone, with no call to the backend. What
    //@+ must hold when it returns: the CPU has left VMX or SVM operation,
    //@+ and nothing a vCPU needs is left inside the processor only, so
    //@+ that its vCPUs can run on other CPUs (SDM Vol. 3C, 25.11.1, its
    //@+ last paragraphs, and the Operation of VMCLEAR and VMXOFF in
    //@+ 31.3); the `Arch` trait (src/arch/mod.rs) says what this stage
    //@+ gives the backends for it. `enabled[cpu]` is the claim on the
    //@+ CPU: the hotplug teardown and the reboot may both come here,
    //@+ exactly one of them does the work, and `is_on` never says on for
    //@+ a CPU the backend is leaving. `online`, above, is the mirror. The
    //@+ `e13_1` tests record each call to the backend with what
    //@+ `enabled[cpu]` said then.
    //@ hint: Read SDM Vol. 3C, 25.11.1 to its last paragraphs: what becomes
    //@+ of a VMCS that is still active on a processor that leaves VMX
    //@+ operation, and what software must do about it first. Then find the
    //@+ operation this stage adds to `Arch` for it.
    //@ hint: VMCLEAR is #UD outside VMX operation (its Operation in 31.3),
    //@+ and VMXOFF writes no VMCS back: which of the backend's two calls
    //@+ must come first? For the flag: if two callers reach one CPU, what
    //@+ must the second find, and what must each call to the backend find?
    //@ hint: Turn the flag off first, with `swap`, which returns what it
    //@+ held, and return false if it was off already (`get` for a number
    //@+ past the table); then `clear_cpu`, then `hardware_disable`, then
    //@+ true. `online` does the same backwards.
    let Some(flag) = enabled.get(cpu) else { return false };
    if !flag.swap(false, Ordering::AcqRel) {
        return false;
    }
    arch.clear_cpu(cpu);
    arch.hardware_disable(cpu);
    true
    //@ end
}
// ANCHOR_END: offline

// ANCHOR: reboot
/// Set by [`reboot`]: no CPU is turned on again, and no vCPU enters.
static REBOOTING: AtomicBool = AtomicBool::new(false);

/// Whether the machine is going down (see [`reboot`]).
pub fn rebooting() -> bool {
    REBOOTING.load(Ordering::Acquire)
}

/// What `reboot_this_cpu` needs on every CPU.
struct RebootCall<'a> {
    arch: &'a dyn Arch,
    enabled: &'a [AtomicBool],
    turned_off: AtomicUsize,
}

/// The machine halts, powers off or restarts (the glue's reboot notifier,
/// in process context): every CPU leaves VMX or SVM first, as 2006's
/// `kvm_reboot` did. `stop_machine` runs the CPUs' calls while no task
/// runs anywhere, so none interrupts a vCPU between its VMPTRLD and its
/// exit (an IPI would: `on_each_cpu`, which 2006 used, can land where a
/// vCPU has interrupts on and preemption off, and the vCPU's next VMREAD
/// would fault after the VMXOFF). vCPUs that run after it are refused.
pub fn reboot() {
    REBOOTING.store(true, Ordering::Release);
    let (Some(arch), Some(enabled)) = (arch::current(), arch::enabled_table()) else { return };
    let call = RebootCall { arch, enabled, turned_off: AtomicUsize::new(0) };
    hotplug::stop_machine(reboot_this_cpu, &call);
    let n = call.turned_off.load(Ordering::Acquire);
    log!(Info, "reboot: {} off on {n} CPUs, {} still on", arch.name(), enabled.iter().filter(|c| c.load(Ordering::Acquire)).count());
}

/// Runs on every CPU at once, interrupts off.
extern "C" fn reboot_this_cpu(arg: *mut c_void) -> i32 {
    // SAFETY: `reboot` passes its `RebootCall` and waits for every CPU.
    let call = unsafe { &*arg.cast::<RebootCall<'_>>() };
    if offline(call.arch, call.enabled, cpu::current_cpu()) {
        call.turned_off.fetch_add(1, Ordering::AcqRel);
    }
    0
}
// ANCHOR_END: reboot

// ANCHOR: machine_check
/// VMX's exit reason for "VM-entry failure due to machine-check event"
/// (SDM Vol. 3C, Appendix C): the entry itself met a machine check.
const VMX_MCE_DURING_VMENTRY: u32 = 41;

/// The machine-check vector (SDM Vol. 3A, 6.15 "Interrupt 18—Machine-Check
/// Exception (#MC)").
pub const MC_VECTOR: u8 = 18;

/// Whether `exit` means that the processor took a machine check while
/// the guest ran (or entered): both backends intercept #MC from stage 13,
/// and then the host's own handler was not called. It must be, on the
/// same CPU, before anything else runs there ([`machine_check`]).
pub fn is_machine_check(exit: &VmExit) -> bool {
    match *exit {
        VmExit::Exception { vector, .. } => vector == MC_VECTOR,
        VmExit::FailEntry { hardware_reason } => hardware_reason == VMX_MCE_DURING_VMENTRY,
        _ => false,
    }
}

/// After an exit, with preemption still off: hands a machine check the
/// guest took to the host's handler, as today's KVM does
/// (`kvm_machine_check`), which decides what to do (log it, kill the
/// process whose memory failed, or panic). The exit handler then resumes
/// the guest.
pub fn machine_check(exit: &VmExit) {
    if is_machine_check(exit) {
        hotplug::machine_check();
    }
}
// ANCHOR_END: machine_check

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_checks_are_known_from_both_backends_exits() {
        assert!(is_machine_check(&VmExit::Exception { vector: 18, error_code: 0 }));
        assert!(is_machine_check(&VmExit::FailEntry { hardware_reason: 41 }));
        assert!(!is_machine_check(&VmExit::Exception { vector: 17, error_code: 0 }));
        assert!(!is_machine_check(&VmExit::FailEntry { hardware_reason: 7 }), "an entry refused for bad controls");
        assert!(!is_machine_check(&VmExit::ExternalInterrupt));
    }
}

#[cfg(test)]
mod e13_1 {
    use super::*;
    use crate::arch::{ArchVcpu, Unsupported};
    use alloc::boxed::Box;
    use std::sync::Mutex;
    use std::vec::Vec;

    /// A backend that records each call, with what `enabled[cpu]` said.
    struct Recorder<'a> {
        enabled: &'a [AtomicBool],
        calls: Mutex<Vec<(&'static str, usize, bool)>>,
    }

    impl Recorder<'_> {
        fn note(&self, what: &'static str, cpu: usize) {
            let on = self.enabled.get(cpu).is_some_and(|f| f.load(Ordering::Acquire));
            self.calls.lock().unwrap().push((what, cpu, on));
        }
        fn calls(&self) -> Vec<(&'static str, usize, bool)> {
            core::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    impl Arch for Recorder<'_> {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn check_support(&self) -> Result<(), Unsupported> {
            Ok(())
        }
        fn hardware_setup(&self, _ncpus: usize) -> KResult<()> {
            Ok(())
        }
        fn hardware_unsetup(&self) {}
        fn hardware_enable(&self, cpu: usize) -> KResult<()> {
            self.note("enable", cpu);
            Ok(())
        }
        fn hardware_disable(&self, cpu: usize) {
            self.note("disable", cpu);
        }
        fn vcpu_create(&self) -> KResult<Box<dyn ArchVcpu>> {
            Err(Errno::ENOMEM)
        }
        fn clear_cpu(&self, cpu: usize) {
            self.note("clear", cpu);
        }
    }

    fn table(on: &[bool]) -> Vec<AtomicBool> {
        on.iter().map(|&b| AtomicBool::new(b)).collect()
    }

    /// SDM Vol. 3C, 25.11.1: a VMCS still active on a processor that
    /// leaves VMX operation may be corrupted, so software executes VMCLEAR
    /// for it before VMXOFF; and VMCLEAR is #UD outside VMX operation
    /// (31.3). What the backend keeps for vCPUs on the CPU is written back
    /// once, while the backend is still on there, and only there.
    #[test]
    fn what_vcpus_left_on_the_cpu_is_written_back_before_the_backend_leaves() {
        let enabled = table(&[true, true]);
        let arch = Recorder { enabled: &enabled, calls: Mutex::default() };
        assert!(offline(&arch, &enabled, 1));
        let calls = arch.calls();
        let count = |what| calls.iter().filter(|c| c.0 == what).count();
        assert_eq!((count("clear"), count("disable")), (1, 1), "written back once, turned off once: {calls:?}");
        let at = |what| calls.iter().position(|c| c.0 == what);
        assert!(at("clear") < at("disable"), "written back after the backend left: {calls:?}");
        assert!(calls.iter().all(|c| c.1 == 1), "a call for another CPU: {calls:?}");
        assert!(enabled[0].load(Ordering::Acquire), "another CPU stays on");
    }

    /// `enabled[cpu]` is the claim on the CPU. The hotplug teardown and the
    /// reboot may both come to one CPU, and only the caller that turns the
    /// flag from on to off goes on; and `is_on` must never say on for a
    /// CPU whose backend is being turned off. So no call to the backend
    /// finds the flag still on.
    #[test]
    fn the_cpu_is_claimed_before_the_backend_is_touched() {
        let enabled = table(&[true, true]);
        let arch = Recorder { enabled: &enabled, calls: Mutex::default() };
        assert!(offline(&arch, &enabled, 1));
        let calls = arch.calls();
        assert!(!calls.is_empty(), "the backend was not called");
        assert!(calls.iter().all(|&(_, _, on)| !on), "a call found enabled[1] still on: {calls:?}");
        assert!(!enabled[1].load(Ordering::Acquire));
        assert!(!offline(&arch, &enabled, 1), "the second caller finds the CPU off");
        assert!(arch.calls().is_empty(), "and calls nothing");
    }

    #[test]
    fn a_cpu_that_is_off_is_left_alone() {
        let enabled = table(&[true, false]);
        let arch = Recorder { enabled: &enabled, calls: Mutex::default() };
        assert!(!offline(&arch, &enabled, 1), "never turned on");
        assert!(!offline(&arch, &enabled, 7), "past the table");
        assert!(arch.calls().is_empty());
        assert!(offline(&arch, &enabled, 0));
        assert!(!offline(&arch, &enabled, 0), "the reboot after the teardown, or the other way round");
        assert_eq!(arch.calls().len(), 2);
    }

    #[test]
    fn offline_then_online_turns_the_cpu_on_again() {
        let enabled = table(&[true]);
        let arch = Recorder { enabled: &enabled, calls: Mutex::default() };
        assert!(offline(&arch, &enabled, 0));
        assert_eq!(online(&arch, &enabled, 0), Ok(()));
        assert_eq!(online(&arch, &enabled, 0), Ok(()), "on already: nothing to do");
        let calls = arch.calls();
        assert_eq!(calls.last(), Some(&("enable", 0, false)), "enabled only after the hardware is on: {calls:?}");
        assert_eq!(calls.iter().filter(|c| c.0 == "enable").count(), 1);
        assert!(enabled[0].load(Ordering::Acquire));
    }
}
//@ end
