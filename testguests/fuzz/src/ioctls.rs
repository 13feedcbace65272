//! The ioctl storm: every command of the 2006 ABI, and numbers near them,
//! on several VMs at once, with arguments built field by field from
//! random and boundary values, placed at every kind of address: null, small,
//! wild, kernel, non-canonical, the top of user space, an unmapped page, a
//! page without access, a read-only page, a buffer that runs into a page
//! without access, ordinary memory, and the VM's own guest memory (mapped
//! or not backed by any slot).
//!
//! Two answers are checked on the spot, because they hold whatever the
//! arguments: `KVM_GET_API_VERSION` is 2, and a number of another driver
//! type is `ENOTTY`. The rest is judged by the kernel's log afterwards.

use crate::guest::{self, tcg_safe_tr};
use crate::rng::Rng;
use crate::stats::STATS;
use crate::sys::{self, Alarm, Copier, PAGE};
use rkvm::abi::{self, Direction, Pod};
use rkvm::abi::{KvmDebugGuest, KvmDirtyLog, KvmInterrupt, KvmMemoryRegion, KvmRegs, KvmRun, KvmSregs, KvmTranslation};
use rkvm_run::header::Mode;
use std::sync::atomic::Ordering::Relaxed;

/// Scratch memory for arguments: two read-write pages, a page without
/// access, and a read-only page of random bytes.
pub struct Arena {
    base: usize,
}

impl Arena {
    pub fn new(rng: &mut Rng) -> Arena {
        let base = sys::anonymous(4 * PAGE, libc::PROT_READ | libc::PROT_WRITE);
        let mut junk = [0u8; PAGE];
        rng.fill(&mut junk);
        // SAFETY: page 3 of the arena is ours and PAGE bytes long; then
        // pages 2 and 3 lose access they no longer need.
        unsafe {
            std::ptr::copy_nonoverlapping(junk.as_ptr(), (base + 3 * PAGE) as *mut u8, PAGE);
            libc::mprotect((base + 2 * PAGE) as *mut _, PAGE, libc::PROT_NONE);
            libc::mprotect((base + 3 * PAGE) as *mut _, PAGE, libc::PROT_READ);
        }
        Arena { base }
    }

    fn write(&self, offset: usize, bytes: &[u8]) -> usize {
        let n = bytes.len().min(2 * PAGE - offset);
        // SAFETY: the first two pages are read-write and `offset + n` stays in them.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.base + offset) as *mut u8, n) };
        self.base + offset
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        sys::unmap(self.base, 4 * PAGE);
    }
}

/// A VM of the storm: its file and its mappings of guest memory.
struct VmState {
    fd: i32,
    maps: Vec<(usize, usize)>,
}

/// Where an argument goes: `payload` is written there when it can be.
fn place(rng: &mut Rng, arena: &Arena, copier: &Copier, vm: &VmState, payload: &[u8]) -> usize {
    match rng.below(20) {
        0 => 0,
        1 => rng.range(1, 4095) as usize,
        2 => 0xDEAD_B000 + rng.below(PAGE as u64) as usize,
        3 => rng.pick(&[0xFFFF_8880_0000_0000, 0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_FFFF_F000, 0xFFFF_C900_0000_0000]),
        4 => rng.pick(&[0x8000_0000_0000_0000, 0x0000_8000_0000_0000, 0x00FF_FFFF_FFFF_F000]),
        5 => 0x7FFF_FFFF_FFFF - rng.below(256) as usize,
        6 => arena.base + 2 * PAGE + rng.below(PAGE as u64) as usize,
        7 => arena.base + 3 * PAGE + rng.below(PAGE as u64) as usize,
        8 => {
            // Runs off the end of the read-write pages into the page
            // without access.
            let inside = rng.range(1, payload.len().max(2) as u64 - 1) as usize;
            arena.write(2 * PAGE - inside, payload)
        }
        9..=11 if !vm.maps.is_empty() => {
            let (addr, len) = vm.maps[rng.below(vm.maps.len() as u64) as usize];
            let at = addr + (rng.below(len as u64) as usize & !7);
            copier.write_to(at, payload);
            at
        }
        _ => arena.write(rng.below(PAGE as u64) as usize & !rng.pick(&[0, 7]), payload),
    }
}

/// The `vcpu` field: mostly 0, the only vCPU 2006 allowed.
fn vcpu_field(rng: &mut Rng) -> u32 {
    match rng.below(8) {
        0..=4 => 0,
        5 => 1,
        6 => u32::MAX,
        _ => rng.boundary_u32(),
    }
}

/// A memory region mostly small and valid, sometimes on every edge:
/// slots 0 to 4 and beyond, unknown flags, unaligned or wrapping
/// addresses, sizes up to 2^52. Valid sizes stay small (L1 has 512 MiB);
/// sizes that must fail are far larger than memory.
pub fn random_region(rng: &mut Rng) -> KvmMemoryRegion {
    let slot = match rng.below(10) {
        0 => rng.boundary_u32(),
        1 => 4,
        _ => rng.below(4) as u32,
    };
    let flags = match rng.below(10) {
        0 => rng.boundary_u32(),
        1..=3 => abi::KVM_MEM_LOG_DIRTY_PAGES,
        _ => 0,
    };
    let guest_phys_addr = match rng.below(10) {
        0 => rng.boundary_u64(),
        1 => (1 << 52) - PAGE as u64 * rng.range(1, 4),
        2 => rng.next() & 0xFFFF_FFFF_F000,
        _ => rng.below(64) * 0x10_0000 + rng.below(4) * PAGE as u64,
    };
    let memory_size = match rng.below(12) {
        0 => rng.boundary_u64(),
        1 => rng.pick(&[(4 << 30) + PAGE as u64, 8 << 30, 1 << 51, !0xFFF]),
        2 => 0,
        3 => rng.range(1, 0x10_0000),
        4 => 16 << 20,
        _ => rng.range(1, 64) * PAGE as u64,
    };
    KvmMemoryRegion { slot, flags, guest_phys_addr, memory_size }
}

/// Registers with boundary values.
pub fn random_regs(rng: &mut Rng) -> KvmRegs {
    let mut r = KvmRegs { vcpu: vcpu_field(rng), padding: rng.boundary_u32(), ..KvmRegs::default() };
    let bytes = r.as_bytes_mut();
    for chunk in bytes[8..].chunks_mut(8) {
        chunk.copy_from_slice(&rng.boundary_u64().to_le_bytes());
    }
    r
}

/// System registers: a start state of `rkvm-run`, or the reset state, or
/// random bytes, perturbed; TR made safe for QEMU's TCG (see `guest.rs`).
pub fn random_sregs(rng: &mut Rng) -> KvmSregs {
    let mut s = match rng.below(4) {
        0 => rkvm_run::layout::start_state(Mode::Real).sregs,
        1 => rkvm_run::layout::start_state(Mode::Prot32).sregs,
        2 => rkvm_run::layout::start_state(Mode::Long64).sregs,
        _ => {
            let mut s = KvmSregs::default();
            rng.fill(s.as_bytes_mut());
            s
        }
    };
    for _ in 0..rng.below(4) {
        let fields = [&mut s.cr0, &mut s.cr3, &mut s.cr4, &mut s.cr8, &mut s.efer, &mut s.apic_base, &mut s.cr2];
        let i = rng.below(fields.len() as u64) as usize;
        *fields.into_iter().nth(i).expect("in range") = rng.boundary_u64();
    }
    if rng.one_in(4) {
        s.interrupt_bitmap[rng.below(4) as usize] = rng.next();
    }
    s.vcpu = vcpu_field(rng);
    tcg_safe_tr(&mut s);
    s
}

/// The argument bytes of command number `nr` (1 to 15), built field by field.
fn payload(rng: &mut Rng, nr: u8, vm: &VmState) -> Vec<u8> {
    match nr {
        2 => {
            let mut run = KvmRun { vcpu: vcpu_field(rng), ..KvmRun::default() };
            run.emulated = rng.pick(&[0, 0, 1, u32::MAX]);
            let wild = rng.boundary_u32();
            run.mmio_completed = rng.pick(&[0, 0, 1, wild]);
            run.request_interrupt_window = rng.pick(&[0, 1, 0xFF]);
            run.as_bytes().to_vec()
        }
        3 | 4 => random_regs(rng).as_bytes().to_vec(),
        5 | 6 => random_sregs(rng).as_bytes().to_vec(),
        7 => KvmTranslation { linear_address: rng.boundary_u64(), vcpu: vcpu_field(rng), ..KvmTranslation::default() }
            .as_bytes()
            .to_vec(),
        8 => {
            let wild = rng.boundary_u32();
            KvmInterrupt { vcpu: vcpu_field(rng), irq: rng.pick(&[0, 32, 255, 256, u32::MAX, wild]) }.as_bytes().to_vec()
        }
        9 => {
            let mut d = KvmDebugGuest::default();
            rng.fill(d.as_bytes_mut());
            d.vcpu = vcpu_field(rng);
            d.as_bytes().to_vec()
        }
        10 => random_region(rng).as_bytes().to_vec(),
        12 => {
            let bitmap = match (rng.below(3), vm.maps.first()) {
                (0, Some(&(addr, _))) => addr as u64,
                (1, _) => rng.boundary_u64(),
                _ => 0,
            };
            KvmDirtyLog { slot: rng.boundary_u32(), padding: 0, dirty_bitmap: bitmap }.as_bytes().to_vec()
        }
        13 | 14 => {
            // struct kvm_msrs, then entries of 16 bytes: index, reserved, data.
            let n = rng.pick(&[0u32, 1, 2, 8, 100, 0xFFFF, u32::MAX]);
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&vcpu_field(rng).to_le_bytes());
            bytes.extend_from_slice(&n.to_le_bytes());
            for _ in 0..n.min(16) {
                let wild = rng.boundary_u32();
                let index = rng.pick(&[0x10u32, 0x1B, 0x174, 0xC000_0080, 0xC000_0081, 0xC000_0100, wild]);
                bytes.extend_from_slice(&index.to_le_bytes());
                bytes.extend_from_slice(&0u32.to_le_bytes());
                bytes.extend_from_slice(&rng.boundary_u64().to_le_bytes());
            }
            bytes
        }
        15 => rng.pick(&[0u32, 1, 4, 64, u32::MAX]).to_le_bytes().to_vec(),
        _ => {
            let mut b = vec![0u8; rng.range(0, 512) as usize];
            rng.fill(&mut b);
            b
        }
    }
}

/// A command number: one of the fifteen, or one with its size, direction,
/// number or type changed.
fn command(rng: &mut Rng) -> u32 {
    let base = rng.pick(&abi::IOCTLS).cmd;
    let (dir, size, ty, nr) = (base >> 30, (base >> 16) & 0x3FFF, (base >> 8) & 0xFF, base & 0xFF);
    let (dir, size, ty, nr) = match rng.below(10) {
        0 => (dir, rng.pick(&[0, size.wrapping_sub(1) & 0x3FFF, size + 8, 0x3FFF]), ty, nr),
        1 => ((dir + 1) & 3, size, ty, nr),
        2 => (dir, size, ty, rng.below(256) as u32),
        3 => (rng.below(4) as u32, rng.below(0x4000) as u32, rng.below(256) as u32, rng.below(256) as u32),
        _ => (dir, size, ty, nr),
    };
    dir << 30 | size << 16 | ty << 8 | nr
}

/// One storm: `count` operations on 1 to 4 VMs.
pub fn round(rng: &mut Rng, count: usize) {
    let arena = Arena::new(rng);
    let copier = Copier::new();
    let alarm = Alarm::new();
    let mut vms: Vec<VmState> = Vec::new();
    for _ in 0..count {
        if vms.is_empty() || (vms.len() < 4 && rng.one_in(50)) {
            match sys::open_vm() {
                Ok(fd) => {
                    STATS.vms.fetch_add(1, Relaxed);
                    vms.push(VmState { fd, maps: Vec::new() });
                }
                Err(e) => STATS.finding(format!("open /dev/rkvm: {}", sys::errno_name(e))),
            }
            continue;
        }
        let i = rng.below(vms.len() as u64) as usize;
        match rng.below(40) {
            0 => {
                // Close, with or without its mappings still there.
                let vm = vms.swap_remove(i);
                if rng.one_in(2) {
                    for (addr, len) in &vm.maps {
                        copier.touch(*addr, (*len).min(PAGE));
                    }
                }
                sys::close(vm.fd);
                for (addr, len) in vm.maps {
                    sys::unmap(addr, len);
                }
            }
            1 | 2 => map_something(rng, &copier, &mut vms[i]),
            3 if !vms[i].maps.is_empty() => {
                let m = rng.below(vms[i].maps.len() as u64) as usize;
                let (addr, len) = vms[i].maps.swap_remove(m);
                sys::unmap(addr, len);
            }
            4 if !vms[i].maps.is_empty() => {
                let m = rng.below(vms[i].maps.len() as u64) as usize;
                let (addr, len) = vms[i].maps[m];
                let new = rng.range(1, 64) as usize * PAGE;
                STATS.remaps.fetch_add(1, Relaxed);
                if let Ok(moved) = sys::remap(addr, len, new) {
                    vms[i].maps[m] = (moved, new);
                }
            }
            5 => {
                let _ = STATS.ioctl(sys::ioctl(vms[i].fd, abi::KVM_CREATE_VCPU, create_vcpu_arg(rng)));
            }
            6 => {
                // A short guest run on whatever state the VM has.
                guest::run_vcpu(vms[i].fd, rng, &alarm, 8, 30);
            }
            _ => one_ioctl(rng, &arena, &copier, &alarm, &vms[i]),
        }
    }
    for vm in vms {
        sys::close(vm.fd);
        for (addr, len) in vm.maps {
            sys::unmap(addr, len);
        }
    }
}

fn create_vcpu_arg(rng: &mut Rng) -> usize {
    match rng.below(4) {
        0..=1 => 0,
        2 => rng.pick(&[1, usize::MAX, 1 << 32, 0x8000_0000]),
        _ => rng.boundary_u64() as usize,
    }
}

/// A mapping of the VM's guest memory at a random offset and length.
fn map_something(rng: &mut Rng, copier: &Copier, vm: &mut VmState) {
    let offset = match rng.below(4) {
        0 => rng.boundary_u64() & !0xFFF,
        _ => rng.below(64) * 0x10_0000 + rng.below(16) * PAGE as u64,
    };
    let len = rng.range(1, 256) as usize * PAGE;
    STATS.mmaps.fetch_add(1, Relaxed);
    if let Ok(addr) = sys::map(vm.fd, offset, len) {
        if rng.one_in(2) {
            let mut bytes = vec![0u8; PAGE];
            rng.fill(&mut bytes);
            copier.write_to(addr + rng.below(len as u64 / PAGE as u64) as usize * PAGE, &bytes);
        }
        vm.maps.push((addr, len));
    }
}

/// One ioctl with a random command and argument.
fn one_ioctl(rng: &mut Rng, arena: &Arena, copier: &Copier, alarm: &Alarm, vm: &VmState) {
    let cmd = command(rng);
    let (dir, ty, nr) = (cmd >> 30, (cmd >> 8) & 0xFF, (cmd & 0xFF) as u8);
    let arg = if cmd == abi::KVM_CREATE_VCPU || (dir == Direction::None as u32 && rng.one_in(2)) {
        create_vcpu_arg(rng)
    } else {
        let bytes = payload(rng, nr, vm);
        place(rng, arena, copier, vm, &bytes)
    };
    if cmd == abi::KVM_RUN {
        alarm.arm(30);
    }
    let result = STATS.ioctl(sys::ioctl(vm.fd, cmd, arg));
    if cmd == abi::KVM_RUN {
        alarm.arm(0);
    }
    if cmd == abi::KVM_GET_API_VERSION && result != Ok(abi::KVM_API_VERSION) {
        STATS.finding(format!("KVM_GET_API_VERSION returned {result:?}, expected Ok(2)"));
    }
    if ty != abi::KVMIO && result != Err(libc::ENOTTY) {
        STATS.finding(format!("ioctl {cmd:#x}, of another driver's type, returned {result:?}, expected ENOTTY"));
    }
    if cmd == abi::KVM_SET_REGS && result.is_ok() && rng.one_in(2) {
        regs_round_trip(vm.fd, arg);
    }
}

/// After a successful `KVM_SET_REGS` from `arg`, `KVM_GET_REGS` returns
/// the same registers (the storm runs on one thread: nothing else changed
/// them).
fn regs_round_trip(fd: i32, arg: usize) {
    let mut sent = KvmRegs::default();
    // The kernel read the argument, so it can be read back here, through
    // a pipe since it may be guest memory that has gone since.
    let mut buf = vec![0u8; std::mem::size_of::<KvmRegs>()];
    if !read_back(arg, &mut buf) {
        return;
    }
    sent.as_bytes_mut().copy_from_slice(&buf);
    let mut got = KvmRegs { vcpu: sent.vcpu, ..KvmRegs::default() };
    if STATS.ioctl(sys::ioctl_with(fd, abi::KVM_GET_REGS, &mut got)).is_ok() {
        let strip = |r: KvmRegs| KvmRegs { vcpu: 0, padding: 0, ..r };
        if strip(got) != strip(sent) {
            STATS.finding(format!("KVM_GET_REGS after KVM_SET_REGS: got {got:?}, set {sent:?}"));
        }
    }
}

fn read_back(from: usize, into: &mut [u8]) -> bool {
    let mut fds = [0; 2];
    // SAFETY: a pipe for one copy; the kernel reads `into.len()` bytes at
    // `from` or fails with EFAULT; `into` is a live buffer.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return false;
        }
        let put = libc::write(fds[1], from as *const _, into.len());
        let got = if put == into.len() as isize { libc::read(fds[0], into.as_mut_ptr().cast(), into.len()) } else { -1 };
        libc::close(fds[0]);
        libc::close(fds[1]);
        got == into.len() as isize
    }
}
