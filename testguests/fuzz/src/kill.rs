//! Children killed mid-work: each child opens a VM and does one thing that
//! takes a while (allocating and resizing large slots, running a guest
//! that loops for ever, racing threads, an ioctl storm); the parent sends
//! SIGKILL after a random delay and waits for it. The module must let the
//! child die promptly and free everything the child had.

use crate::guest::MEMORY;
use crate::rng::Rng;
use crate::stats::STATS;
use crate::sys;
use rkvm::abi::{self, KvmRun};
use rkvm_run::layout::LOAD_ADDR;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How long a killed child may take to die before it counts as a finding.
const DEATH_LIMIT: Duration = Duration::from_secs(20);

pub fn round(rng: &mut Rng, children: usize, round_seed: u64) {
    for child in 0..children {
        let seed = rng.next();
        let delay = Duration::from_millis(rng.below(100));
        // SAFETY: the fuzzer forks only from its main thread while no
        // other thread exists; the child runs on its own and ends in _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            work(seed);
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            STATS.finding(format!("fork failed: {}", sys::errno_name(sys::errno())));
            return;
        }
        std::thread::sleep(delay);
        let killed = Instant::now();
        // SAFETY: signals the child just made.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut reported = false;
        loop {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid || r < 0 {
                break;
            }
            if killed.elapsed() > DEATH_LIMIT && !reported {
                STATS.finding(format!(
                    "child {child} of the kill round with seed {round_seed:#x} is still there {} s after SIGKILL \
                     (see its state in /proc/{pid}/stack, if the kernel has it)",
                    DEATH_LIMIT.as_secs()
                ));
                reported = true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        STATS.children.fetch_add(1, Relaxed);
        STATS.kill_latency(killed.elapsed().as_millis() as u64);
    }
}

/// What a child does until it is killed.
fn work(seed: u64) {
    let mut rng = Rng::new(seed);
    match rng.below(5) {
        0 => big_slots(&mut rng),
        1 => looping_guest(),
        2 => {
            let mut a = rng.split();
            let t = std::thread::spawn(move || crate::race::round(&mut a, 1_000_000));
            crate::race::round(&mut rng, 1_000_000);
            let _ = t.join();
        }
        3 => crate::ioctls::round(&mut rng, usize::MAX),
        _ => crate::guest::round(&mut rng, usize::MAX),
    }
}

/// Slots of 16 to 128 MiB, grown and shrunk without end.
fn big_slots(rng: &mut Rng) {
    let Ok(fd) = sys::open_vm() else { return };
    loop {
        let size = rng.pick(&[16u64, 64, 128, 0]) << 20;
        let _ = sys::set_region(fd, rng.below(2) as u32, 0, rng.below(2) << 30, size);
    }
}

/// A real-mode guest that jumps to itself for ever.
fn looping_guest() {
    let Ok(fd) = sys::open_vm() else { return };
    let _ = sys::set_region(fd, 0, 0, 0, MEMORY as u64);
    let _ = sys::ioctl(fd, abi::KVM_CREATE_VCPU, 0);
    if let Ok(base) = sys::map(fd, 0, MEMORY) {
        // SAFETY: slot 0 backs the whole mapping; `jmp $` at the load address.
        unsafe { ((base + LOAD_ADDR as usize) as *mut [u8; 2]).write([0xEB, 0xFE]) };
    }
    let mut rng = Rng::new(1);
    crate::guest::set_start_state(fd, &mut rng, rkvm_run::header::Mode::Real);
    let mut regs = abi::KvmRegs { rip: LOAD_ADDR, rflags: 2, ..Default::default() };
    let _ = sys::ioctl_with(fd, abi::KVM_SET_REGS, &mut regs);
    loop {
        let _ = sys::ioctl_with(fd, abi::KVM_RUN, &mut KvmRun::default());
    }
}
