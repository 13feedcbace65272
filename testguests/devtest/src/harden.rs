//! Checks that a lab machine's host is not hurt through the VMM: guest
//! memory stays out of the VMM's core dumps, and a task stuck behind a
//! running vCPU can still be killed.

use crate::sys::{Check, Vm};
use rkvm::abi::{self, KvmRegs, KvmRun, KvmSregs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The mapping of guest memory carries VM_DONTDUMP: `/proc/self/smaps`
/// shows `dd` among its `VmFlags`.
pub fn guest_memory_left_out_of_core_dumps() -> Check {
    let vm = Vm::open()?;
    vm.set_region(0, 0, 0x4000).map_err(|e| format!("a 16 KiB slot: errno {e}"))?;
    let m = vm.map(0, 0x4000)?;
    let start = format!("{:x}-", m.addr());
    let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(|e| format!("/proc/self/smaps: {e}"))?;
    let block: Vec<&str> = smaps.lines().skip_while(|l| !l.starts_with(&start)).skip(1).take_while(|l| !l.contains('-') || l.starts_with("VmFlags")).collect();
    let flags = block.iter().find_map(|l| l.strip_prefix("VmFlags:")).ok_or("no VmFlags line for the mapping")?;
    if flags.split_whitespace().any(|f| f == "dd") {
        Ok(())
    } else {
        Err(format!("the mapping of guest memory lacks VM_DONTDUMP (VmFlags:{flags}): a core dump of the VMM would hold the guest's memory"))
    }
}

extern "C" fn on_usr1(_: libc::c_int) {}

/// A child that waits for the vCPU while another thread runs a guest that
/// never exits by itself (`jmp $`) dies at once when it is killed: the
/// ioctls wait for the vCPU with `mutex_lock_killable`, so the child is not
/// left in uninterruptible sleep until the guest stops.
pub fn waiting_for_a_running_vcpu_is_killable() -> Check {
    let vm = Vm::open()?;
    vm.set_region(0, 0, 0x10000).map_err(|e| format!("a 64 KiB slot: errno {e}"))?;
    vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: errno {e}"))?;
    let m = vm.map(0, 0x10000)?;
    m.write(0x1000, 0xEB); // jmp $
    m.write(0x1001, 0xFE);
    let mut sregs = vm.get_sregs(0).map_err(|e| format!("KVM_GET_SREGS: errno {e}"))?;
    sregs.cs.selector = 0;
    sregs.cs.base = 0;
    vm.set_sregs(&KvmSregs { vcpu: 0, ..sregs }).map_err(|e| format!("KVM_SET_SREGS: errno {e}"))?;
    vm.set_regs(&KvmRegs { rip: 0x1000, rflags: 2, ..KvmRegs::default() }).map_err(|e| format!("KVM_SET_REGS: errno {e}"))?;

    // SIGUSR1 interrupts KVM_RUN (no SA_RESTART) and does nothing else.
    // SAFETY: a zeroed sigaction with an empty, async-signal-safe handler.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
    }
    let fd = vm.file.as_raw_fd();
    let (started, running) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        started.send(unsafe { libc::pthread_self() }).ok();
        let mut run = KvmRun::default();
        // SAFETY: `run` is a live kvm_run for the whole call.
        unsafe { libc::ioctl(fd, abi::KVM_RUN as _, &mut run as *mut KvmRun) }
    });
    let thread = running.recv().map_err(|_| "the runner thread did not start")?;
    std::thread::sleep(Duration::from_millis(300));

    // SAFETY: the child only makes an ioctl and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let mut regs = KvmRegs::default();
        // SAFETY: async-signal-safe calls only, on a live buffer.
        unsafe {
            libc::ioctl(fd, abi::KVM_GET_REGS as _, &mut regs as *mut KvmRegs);
            libc::_exit(0);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut status = 0;
    // SAFETY: our own child.
    let verdict = if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } != 0 {
        Err("the child's KVM_GET_REGS did not wait for the running vCPU: the check cannot tell".to_string())
    } else {
        // SAFETY: our own child, still there.
        unsafe { libc::kill(child, libc::SIGKILL) };
        let killed = Instant::now();
        let mut reaped = false;
        while killed.elapsed() < Duration::from_secs(3) {
            // SAFETY: as above.
            if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == child {
                reaped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if reaped {
            Ok(())
        } else {
            Err("a task waiting for a running vCPU was still alive 3 s after SIGKILL: it waits uninterruptibly \
                 (the vCPU lock must be taken with mutex_lock_killable)"
                .to_string())
        }
    };
    // Stop the guest: SIGUSR1 until KVM_RUN returns.
    while !runner.is_finished() {
        // SAFETY: the runner thread is alive until it finishes.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = runner.join();
    // SAFETY: reaps the child if it is still there (it was killed).
    unsafe { libc::waitpid(child, &mut status, 0) };
    verdict
}
