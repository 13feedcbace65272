//@ stage 4
//! The processors: how many there are, which one runs us, running a
//! function on every one of them, and the few pieces of processor state
//! that Linux keeps copies of and so must be changed through Linux (CR4,
//! the FPU, the GDT and TSS limits).
//!
//! In the kernel each function is a call into `glue/rkvm_glue.c`. On the
//! host, for unit tests, there are four fake CPUs, the current one is CPU 0,
//! and `on_each_cpu` calls the function four times, once "on" each CPU.

use core::ffi::c_void;

/// Calls `f(arg)` on every online CPU, with interrupts disabled there, and
/// returns when all have finished (the kernel's `on_each_cpu(f, arg, 1)`).
/// `f` runs in interrupt context: it must not sleep or allocate.
pub fn on_each_cpu<T: Sync>(f: extern "C" fn(*mut c_void), arg: &T) {
    imp::on_each_cpu(f, (arg as *const T).cast_mut().cast())
}

/// Calls `f(arg)` on CPU `cpu` and waits for it (`smp_call_function_single`);
/// `false` if that CPU is not online.
pub fn on_cpu<T: Sync>(cpu: usize, f: extern "C" fn(*mut c_void), arg: &T) -> bool {
    imp::on_cpu(cpu, f, (arg as *const T).cast_mut().cast())
}

/// The number of CPU ids: every CPU's number is below it (`nr_cpu_ids`).
pub fn nr_cpu_ids() -> usize {
    imp::nr_cpu_ids()
}

/// The number of CPUs online now.
pub fn num_online_cpus() -> usize {
    imp::num_online_cpus()
}

/// The CPU this code runs on. Meaningful only while the caller cannot
/// move to another CPU: with preemption or interrupts disabled.
pub fn current_cpu() -> usize {
    imp::current_cpu()
}

/// Sets bits of CR4 on this CPU through Linux's per-CPU copy of CR4
/// (`cr4_set_bits`), so that Linux, which rewrites CR4 from its copy, keeps
/// them. Interrupts must be off or the caller pinned to the CPU.
pub fn cr4_set_bits(mask: u64) {
    imp::cr4_set_bits(mask)
}

/// Clears bits of CR4 on this CPU, through Linux's copy (`cr4_clear_bits`).
pub fn cr4_clear_bits(mask: u64) {
    imp::cr4_clear_bits(mask)
}

/// CR4 on this CPU.
pub fn read_cr4() -> u64 {
    imp::read_cr4()
}

/// The physical address of a kernel (direct-map) address (`__pa`).
pub fn virt_to_phys(addr: *const u8) -> u64 {
    imp::virt_to_phys(addr)
}

/// Disables preemption: the caller stays on this CPU until
/// [`preempt_enable`]. Calls nest.
pub fn preempt_disable() {
    imp::preempt_disable()
}

/// Undoes one [`preempt_disable`].
pub fn preempt_enable() {
    imp::preempt_enable()
}

/// True when the current task has a signal waiting (`signal_pending`).
pub fn signal_pending() -> bool {
    imp::signal_pending()
}

/// True when the scheduler wants this CPU for another task (`need_resched`).
pub fn need_resched() -> bool {
    imp::need_resched()
}

/// Lets the scheduler run another task if it wants to (`cond_resched`).
/// Preemption must be enabled.
pub fn cond_resched() {
    imp::cond_resched()
}


//@ begin 5
// ANCHOR: around_entry
/// Disables interrupts on this CPU (`local_irq_disable`).
pub fn irq_disable() {
    imp::irq_disable()
}

/// Enables them again: an interrupt that arrived meanwhile is taken now.
pub fn irq_enable() {
    imp::irq_enable()
}

/// The address of this CPU's TSS.
pub fn host_tr_base() -> u64 {
    imp::host_tr_base()
}

/// The frequency of the time-stamp counter, in kHz (Linux's `tsc_khz`).
pub fn tsc_khz() -> u64 {
    imp::tsc_khz()
}

/// The host segment state a VM exit does not restore, saved before an
/// entry by [`HostSegments::save`] and put back by
/// [`HostSegments::restore`] after the exit. The layout is the glue's
/// `struct rkvm_host_segments`.
#[repr(C)]
#[derive(Default)]
pub struct HostSegments {
    ds: u16,
    es: u16,
    fs: u16,
    gs: u16,
    ldt: u16,
    kernel_gs_base: u64,
}

impl HostSegments {
    pub fn save() -> HostSegments {
        let mut h = HostSegments::default();
        imp::save_host_segments(&mut h);
        h
    }

    pub fn restore(&self) {
        imp::restore_host_segments(self)
    }
}
// ANCHOR_END: around_entry
//@ end

#[cfg(target_os = "none")]
mod imp {
    use core::ffi::c_void;

    unsafe extern "C" {
        fn rkvm_glue_on_each_cpu(f: extern "C" fn(*mut c_void), arg: *mut c_void);
        fn rkvm_glue_on_cpu(cpu: usize, f: extern "C" fn(*mut c_void), arg: *mut c_void) -> i32;
        fn rkvm_glue_nr_cpu_ids() -> usize;
        fn rkvm_glue_num_online_cpus() -> usize;
        fn rkvm_glue_current_cpu() -> usize;
        fn rkvm_glue_cr4_set_bits(mask: u64);
        fn rkvm_glue_cr4_clear_bits(mask: u64);
        fn rkvm_glue_read_cr4() -> u64;
        fn rkvm_glue_virt_to_phys(addr: *const c_void) -> u64;
        fn rkvm_glue_preempt_disable();
        fn rkvm_glue_preempt_enable();
        fn rkvm_glue_signal_pending() -> i32;
        fn rkvm_glue_need_resched() -> i32;
        fn rkvm_glue_cond_resched();
        //@ begin 5
        fn rkvm_glue_irq_disable();
        fn rkvm_glue_irq_enable();
        fn rkvm_glue_host_tr_base() -> u64;
        fn rkvm_glue_tsc_khz() -> u64;
        fn rkvm_glue_save_host_segments(h: *mut super::HostSegments);
        fn rkvm_glue_restore_host_segments(h: *const super::HostSegments);
        //@ end
    }

    pub fn on_each_cpu(f: extern "C" fn(*mut c_void), arg: *mut c_void) {
        // SAFETY: `arg` outlives the call, which waits for every CPU.
        unsafe { rkvm_glue_on_each_cpu(f, arg) }
    }
    pub fn on_cpu(cpu: usize, f: extern "C" fn(*mut c_void), arg: *mut c_void) -> bool {
        // SAFETY: as above; the glue checks `cpu`.
        unsafe { rkvm_glue_on_cpu(cpu, f, arg) == 0 }
    }
    pub fn nr_cpu_ids() -> usize {
        // SAFETY: reads a kernel variable.
        unsafe { rkvm_glue_nr_cpu_ids() }
    }
    pub fn num_online_cpus() -> usize {
        // SAFETY: reads a kernel variable.
        unsafe { rkvm_glue_num_online_cpus() }
    }
    pub fn current_cpu() -> usize {
        // SAFETY: reads a per-CPU variable.
        unsafe { rkvm_glue_current_cpu() }
    }
    pub fn cr4_set_bits(mask: u64) {
        // SAFETY: the callers set only CR4.VMXE, which Linux leaves alone.
        unsafe { rkvm_glue_cr4_set_bits(mask) }
    }
    pub fn cr4_clear_bits(mask: u64) {
        // SAFETY: as above.
        unsafe { rkvm_glue_cr4_clear_bits(mask) }
    }
    pub fn read_cr4() -> u64 {
        // SAFETY: reads Linux's copy of CR4.
        unsafe { rkvm_glue_read_cr4() }
    }
    pub fn virt_to_phys(addr: *const u8) -> u64 {
        // SAFETY: pure address arithmetic on a direct-map address.
        unsafe { rkvm_glue_virt_to_phys(addr.cast()) }
    }
    pub fn preempt_disable() {
        // SAFETY: balanced by the callers.
        unsafe { rkvm_glue_preempt_disable() }
    }
    pub fn preempt_enable() {
        // SAFETY: balanced by the callers.
        unsafe { rkvm_glue_preempt_enable() }
    }
    pub fn signal_pending() -> bool {
        // SAFETY: reads the current task's flags.
        unsafe { rkvm_glue_signal_pending() != 0 }
    }
    pub fn need_resched() -> bool {
        // SAFETY: reads the current task's flags.
        unsafe { rkvm_glue_need_resched() != 0 }
    }
    pub fn cond_resched() {
        // SAFETY: called from process context with preemption enabled.
        unsafe { rkvm_glue_cond_resched() }
    }
    //@ begin 5
    pub fn irq_disable() {
        // SAFETY: balanced with `irq_enable` by the caller.
        unsafe { rkvm_glue_irq_disable() }
    }
    pub fn irq_enable() {
        // SAFETY: balanced with `irq_disable` by the caller.
        unsafe { rkvm_glue_irq_enable() }
    }
    pub fn host_tr_base() -> u64 {
        // SAFETY: reads a per-CPU address; the caller is pinned.
        unsafe { rkvm_glue_host_tr_base() }
    }
    pub fn tsc_khz() -> u64 {
        // SAFETY: reads a kernel variable.
        unsafe { rkvm_glue_tsc_khz() }
    }
    pub fn save_host_segments(h: &mut super::HostSegments) {
        // SAFETY: the glue writes exactly its `struct rkvm_host_segments`.
        unsafe { rkvm_glue_save_host_segments(h) }
    }
    pub fn restore_host_segments(h: &super::HostSegments) {
        // SAFETY: the values were saved on this CPU by this task.
        unsafe { rkvm_glue_restore_host_segments(h) }
    }
    //@ end
}

#[cfg(not(target_os = "none"))]
mod imp {
    use core::ffi::c_void;
    use std::cell::Cell;

    /// The fake machine's CPUs.
    pub const FAKE_CPUS: usize = 4;

    std::thread_local! {
        static CPU: Cell<usize> = const { Cell::new(0) };
        static CR4: Cell<[u64; FAKE_CPUS]> = const { Cell::new([0; FAKE_CPUS]) };
    }

    pub fn on_each_cpu(f: extern "C" fn(*mut c_void), arg: *mut c_void) {
        for cpu in 0..FAKE_CPUS {
            on_cpu(cpu, f, arg);
        }
    }
    pub fn on_cpu(cpu: usize, f: extern "C" fn(*mut c_void), arg: *mut c_void) -> bool {
        if cpu >= FAKE_CPUS {
            return false;
        }
        let before = CPU.with(|c| c.replace(cpu));
        f(arg);
        CPU.with(|c| c.set(before));
        true
    }
    pub fn nr_cpu_ids() -> usize {
        FAKE_CPUS
    }
    pub fn num_online_cpus() -> usize {
        FAKE_CPUS
    }
    pub fn current_cpu() -> usize {
        CPU.with(Cell::get)
    }
    fn update_cr4(f: impl FnOnce(u64) -> u64) {
        let cpu = current_cpu();
        CR4.with(|c| {
            let mut all = c.get();
            all[cpu] = f(all[cpu]);
            c.set(all);
        });
    }
    pub fn cr4_set_bits(mask: u64) {
        update_cr4(|v| v | mask)
    }
    pub fn cr4_clear_bits(mask: u64) {
        update_cr4(|v| v & !mask)
    }
    pub fn read_cr4() -> u64 {
        let cpu = current_cpu();
        CR4.with(|c| c.get()[cpu])
    }
    pub fn virt_to_phys(addr: *const u8) -> u64 {
        addr as u64
    }
    pub fn preempt_disable() {}
    pub fn preempt_enable() {}
    pub fn signal_pending() -> bool {
        false
    }
    pub fn need_resched() -> bool {
        false
    }
    pub fn cond_resched() {}
    //@ begin 5
    pub fn irq_disable() {}
    pub fn irq_enable() {}
    pub fn host_tr_base() -> u64 {
        0
    }
    pub fn tsc_khz() -> u64 {
        2_000_000
    }
    pub fn save_host_segments(_: &mut super::HostSegments) {}
    pub fn restore_host_segments(_: &super::HostSegments) {}
    //@ end
}
