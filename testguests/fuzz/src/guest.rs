//! The guest fuzzer: random bytes as guest code, in the three start states
//! of `rkvm-run` (real mode, 32-bit protected mode, 64-bit long mode; see
//! `testguests/runner/src/layout.rs`), with random general registers and
//! flags and, now and then, perturbed control registers and segments.
//!
//! Each run ends in a defined way: an exit that stops the guest (HLT,
//! shutdown, an exception, a failed entry, an unknown exit), the limit of
//! exits the fuzzer answers (I/O, MMIO, CPUID), or the timer's SIGALRM,
//! which makes `KVM_RUN` return EINTR.
//!
//! TR is always a present, available 32-bit TSS (type 9), never the busy
//! TSS (type 0xB) of the reset state: QEMU's TCG aborts the whole machine
//! ("qemu: fatal: invalid tss type") when a nested guest whose TR is busy
//! takes an exception that switches stacks (see the platform notes), and
//! that would kill L1 instead of testing rkvm. Random code could still
//! build and load a TSS of its own; that needs a TSS descriptor in the
//! guest's GDT, which no start state has.

use crate::rng::Rng;
use crate::stats::{self, STATS};
use crate::sys::{self, Alarm, PAGE, ioctl_with};
use rkvm::abi::{self, KvmRegs, KvmRun, KvmSregs};
use rkvm_run::header::{Header, Mode};
use rkvm_run::layout::{self, SCRATCH_ADDR};

/// Guest memory: slot 0, 1 MiB from address 0, as `rkvm-run` gives guests.
pub const MEMORY: usize = 0x10_0000;

/// The exits the fuzzer answers before it stops a guest.
const MAX_EXITS: usize = 48;

/// Instructions worth more than their share of random bytes: exits,
/// control-register and descriptor-table loads, string I/O, interrupts,
/// SVM and system instructions, prefixes.
const SNIPPETS: &[&[u8]] = &[
    &[0xF4],
    &[0xE6, 0x80],
    &[0xE4, 0x71],
    &[0xEE],
    &[0xED],
    &[0x0F, 0xA2],
    &[0xCD, 0x03],
    &[0xCD, 0x80],
    &[0xCC],
    &[0xF1],
    &[0xCF],
    &[0x0F, 0x22, 0xC0],
    &[0x0F, 0x22, 0xD8],
    &[0x0F, 0x22, 0xE0],
    &[0x0F, 0x20, 0xC0],
    &[0x0F, 0x01, 0x10],
    &[0x0F, 0x01, 0x18],
    &[0x0F, 0x30],
    &[0x0F, 0x32],
    &[0x0F, 0x31],
    &[0xF3, 0xA4],
    &[0xF3, 0x6C],
    &[0xF3, 0x6E],
    &[0xF3, 0xA5],
    &[0x0F, 0x0B],
    &[0x0F, 0x01, 0xD8],
    &[0x0F, 0x01, 0xD9],
    &[0x0F, 0x01, 0xC1],
    &[0x0F, 0x09],
    &[0x0F, 0x08],
    &[0x0F, 0x01, 0x38],
    &[0xFA],
    &[0xFB],
    &[0x9C],
    &[0x9D],
    &[0x0F, 0x05],
    &[0x0F, 0x34],
    &[0x0F, 0x07],
    &[0xEA, 0x00, 0x80, 0x00, 0x00, 0x08, 0x00],
    &[0x8E, 0xD8],
    &[0x8E, 0xD0],
    &[0xA1, 0x00, 0x00, 0x20, 0x00],
    &[0xA3, 0x00, 0x00, 0xF0, 0xFE],
    &[0xF0],
    &[0x66],
    &[0x67],
    &[0x48],
    &[0xEB, 0xFE],
];

/// Random code: bytes, with snippets mixed in.
fn random_code(rng: &mut Rng) -> Vec<u8> {
    let len = rng.pick(&[1, 8, 64, 512, 4096]).min(rng.range(1, 4096) as usize).max(1);
    let mut code = vec![0u8; len];
    rng.fill(&mut code);
    let snippets = rng.below(1 + len as u64 / 4);
    for _ in 0..snippets {
        let s = rng.pick(SNIPPETS);
        let at = rng.below(len as u64) as usize;
        let end = (at + s.len()).min(len);
        code[at..end].copy_from_slice(&s[..end - at]);
    }
    code
}

/// Flags a guest may start with, each set one time in four.
const FLAG_BITS: [u64; 17] = [
    0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800, 0x1000, 0x2000, 0x4000, 0x1_0000, 0x2_0000, 0x4_0000,
    0x8_0000, 0x20_0000,
];

/// The start registers, randomized.
fn random_regs(rng: &mut Rng, start: KvmRegs) -> KvmRegs {
    let mut r = start;
    if rng.one_in(2) {
        for reg in [
            &mut r.rax, &mut r.rbx, &mut r.rcx, &mut r.rdx, &mut r.rsi, &mut r.rdi, &mut r.rbp, &mut r.r8, &mut r.r9,
            &mut r.r10, &mut r.r11, &mut r.r12, &mut r.r13, &mut r.r14, &mut r.r15,
        ] {
            *reg = rng.boundary_u64();
        }
    }
    if rng.one_in(4) {
        r.rsp = rng.boundary_u64();
    }
    if rng.one_in(8) {
        r.rip = rng.boundary_u64();
    }
    r.rflags = 0x2;
    for bit in FLAG_BITS {
        if rng.one_in(4) {
            r.rflags |= bit;
        }
    }
    if rng.one_in(16) {
        r.rflags = rng.next();
    }
    r
}

/// Makes TR what QEMU's TCG can switch stacks with (see the file's doc).
pub fn tcg_safe_tr(sregs: &mut KvmSregs) {
    sregs.tr.type_ = rkvm::segments::TYPE_TSS_AVAILABLE;
    sregs.tr.present = 1;
    sregs.tr.s = 0;
}

/// A few of the system registers, perturbed.
fn perturb_sregs(rng: &mut Rng, s: &mut KvmSregs) {
    for _ in 0..rng.range(1, 4) {
        match rng.below(12) {
            0 => s.cr0 ^= rng.pick(&[1 << 18, 1 << 16, 1 << 5, 1 << 3, 2, 4, 1 << 30, 1 << 29, 1 << 31, 1]),
            1 => s.cr4 ^= rng.pick(&[1, 2, 4, 8, 0x10, 0x20, 0x80, 0x200, 0x400, 0x800, 0x1_0000]),
            2 => s.efer ^= rng.pick(&[1, 0x100, 0x400, 0x800, 0x1000]),
            3 => s.cr0 = rng.boundary_u64(),
            4 => s.cr3 = rng.boundary_u64() & !0xFFF,
            5 => s.cr8 = rng.below(16),
            6 => s.idt.limit = rng.boundary_u32() as u16,
            7 => s.gdt.limit = rng.boundary_u32() as u16,
            8 => {
                let dpl = rng.below(4) as u8;
                match rng.below(3) {
                    0 => s.cs.dpl = dpl,
                    1 => s.ss.dpl = dpl,
                    _ => s.ds.dpl = dpl,
                }
            }
            9 => {
                s.ds.type_ = rng.below(16) as u8;
                s.ds.unusable = rng.below(2) as u8;
                s.es.present = rng.below(2) as u8;
            }
            10 => {
                s.cs.db = rng.below(2) as u8;
                s.cs.l = rng.below(2) as u8;
                s.cs.limit = rng.boundary_u32();
            }
            _ => s.cr2 = rng.boundary_u64(),
        }
    }
}

/// How a `KVM_RUN` that returned normally ended, as a stats index.
fn kind_of(run: &KvmRun) -> usize {
    if run.exit_type == abi::KVM_EXIT_TYPE_FAIL_ENTRY {
        stats::FAIL_ENTRY
    } else if run.exit_reason <= abi::KVM_EXIT_SHUTDOWN {
        run.exit_reason as usize
    } else {
        stats::OTHER_REASON
    }
}

/// Runs vCPU 0 of VM `fd` until it stops, `max_exits` exits were
/// answered, or `timeout_ms` passed (SIGALRM, EINTR).
pub fn run_vcpu(fd: i32, rng: &mut Rng, alarm: &Alarm, max_exits: usize, timeout_ms: u64) {
    let mut run = KvmRun::default();
    alarm.arm(timeout_ms);
    for _ in 0..max_exits {
        let result = STATS.ioctl(ioctl_with(fd, abi::KVM_RUN, &mut run));
        run.emulated = 0;
        run.mmio_completed = 0;
        let kind = match result {
            Ok(_) => kind_of(&run),
            Err(e) => {
                STATS.run_ended(Err(e));
                alarm.arm(0);
                return;
            }
        };
        STATS.run_ended(Ok(kind));
        match run.exit_reason {
            _ if kind == stats::FAIL_ENTRY => break,
            abi::KVM_EXIT_IO | abi::KVM_EXIT_CPUID => run.emulated = 1,
            abi::KVM_EXIT_MMIO => {
                if run.exit.mmio().is_write == 0 {
                    let data = rng.next().to_le_bytes();
                    run.exit.mmio_mut().data = data;
                    run.mmio_completed = 1;
                }
            }
            abi::KVM_EXIT_IRQ_WINDOW_OPEN => run.request_interrupt_window = 0,
            _ => {
                alarm.arm(0);
                return;
            }
        }
        if rng.one_in(16) {
            run.request_interrupt_window = 1;
        }
    }
    STATS.exit_limit();
    alarm.arm(0);
}

/// Writes `bytes` to guest memory mapped at `base` (slot 0, fully backed).
fn fill(base: usize, bytes: &[u8]) {
    assert!(bytes.len() <= MEMORY);
    // SAFETY: `base` maps MEMORY bytes of slot 0, which backs every page;
    // only this thread uses the VM.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), base as *mut u8, bytes.len()) };
}

/// Guest memory for one random guest in `mode`: `rkvm-run`'s layout with
/// random code at its load address, and sometimes random data or (in
/// real mode) a random interrupt vector table.
fn random_memory(rng: &mut Rng, mode: Mode) -> Vec<u8> {
    let header = Header {
        name: "fuzz".into(),
        stage: 8,
        mode,
        memory: MEMORY as u64,
        preload: None,
        dump: None,
        timeout: None,
        seed: None,
        dirty_log: false,
        program: None,
        irq_counts: None,
        not_on: None,
        demonstrates: String::new(),
    };
    let mut memory = vec![0u8; MEMORY];
    let code = random_code(rng);
    layout::prepare(&mut memory, &header, &code).expect("at most 4 KiB of code fits in 1 MiB");
    if rng.one_in(3) {
        let at = SCRATCH_ADDR as usize + rng.below(0x1_0000) as usize;
        rng.fill(&mut memory[at..at + PAGE]);
    }
    if mode == Mode::Real && rng.one_in(3) {
        rng.fill(&mut memory[..0x400]);
    }
    memory
}

/// Gives vCPU 0 the start state of `mode`, randomized: `rkvm-run`'s
/// registers with random values, its system registers sometimes
/// perturbed, TR always safe for TCG.
pub fn set_start_state(fd: i32, rng: &mut Rng, mode: Mode) {
    let start = layout::start_state(mode);
    let mut regs = KvmRegs { vcpu: 0, ..random_regs(rng, start.regs) };
    let mut sregs = KvmSregs::default();
    if STATS.ioctl(ioctl_with(fd, abi::KVM_GET_SREGS, &mut sregs)).is_err() {
        return;
    }
    layout::apply_sregs(&start.sregs, &mut sregs);
    if rng.one_in(4) {
        perturb_sregs(rng, &mut sregs);
    }
    tcg_safe_tr(&mut sregs);
    sregs.vcpu = 0;
    let _ = STATS.ioctl(ioctl_with(fd, abi::KVM_SET_SREGS, &mut sregs));
    let _ = STATS.ioctl(ioctl_with(fd, abi::KVM_SET_REGS, &mut regs));
}

pub fn random_mode(rng: &mut Rng) -> Mode {
    rng.pick(&[Mode::Real, Mode::Prot32, Mode::Long64])
}

/// Sets up one random guest and runs it.
fn one_guest(fd: i32, base: usize, rng: &mut Rng, alarm: &Alarm) {
    let mode = random_mode(rng);
    fill(base, &random_memory(rng, mode));
    set_start_state(fd, rng, mode);
    STATS.guests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    run_vcpu(fd, rng, alarm, MAX_EXITS, 200);
}

/// Random code for a guest whose memory may change under it: written
/// through the copier, so that a page no slot backs is skipped.
pub fn write_random_guest(copier: &crate::sys::Copier, base: usize, rng: &mut Rng, mode: Mode) {
    let memory = random_memory(rng, mode);
    for page in (0..0x2_0000).step_by(PAGE) {
        copier.write_to(base + page, &memory[page..page + PAGE]);
    }
}

/// A round of `count` random guests on one VM.
pub fn round(rng: &mut Rng, count: usize) {
    let Ok(fd) = sys::open_vm() else {
        STATS.finding("open /dev/rkvm failed in a guest round".into());
        return;
    };
    STATS.vms.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ready = STATS.ioctl(sys::set_region(fd, 0, 0, 0, MEMORY as u64)).is_ok()
        && STATS.ioctl(sys::ioctl(fd, abi::KVM_CREATE_VCPU, 0)).is_ok();
    if !ready {
        STATS.finding("a 1 MiB slot and vCPU 0 could not be set up for the guest fuzzer".into());
        sys::close(fd);
        return;
    }
    let Ok(base) = sys::map(fd, 0, MEMORY) else {
        STATS.finding("mmap of guest memory failed".into());
        sys::close(fd);
        return;
    };
    let alarm = Alarm::new();
    for _ in 0..count {
        one_guest(fd, base, rng, &alarm);
    }
    sys::unmap(base, MEMORY);
    sys::close(fd);
}
