//! Races: threads on one VM, each doing what the module must survive at
//! any moment of another's work. One runs random guests; one creates,
//! resizes, moves and deletes slots, the one the guest runs in among them;
//! one maps, touches, remaps and unmaps guest memory; one sets and gets
//! registers and translates addresses; and, in half the rounds, one closes
//! the VM's file in the middle of it all (and sometimes opens a new VM,
//! which may get the same descriptor number).

use crate::guest::{self, MEMORY};
use crate::rng::Rng;
use crate::stats::STATS;
use crate::sys::{self, Alarm, Copier, PAGE};
use rkvm::abi::{self, KvmRegs, KvmSregs, KvmTranslation};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI32};
use std::time::Duration;

/// One race: the guest thread makes `runs` runs; the others go on until it
/// is done.
pub fn round(rng: &mut Rng, runs: usize) {
    let Ok(fd) = sys::open_vm() else {
        STATS.finding("open /dev/rkvm failed in a race round".into());
        return;
    };
    STATS.vms.fetch_add(1, Relaxed);
    let _ = STATS.ioctl(sys::set_region(fd, 0, 0, 0, MEMORY as u64));
    let _ = STATS.ioctl(sys::ioctl(fd, abi::KVM_CREATE_VCPU, 0));
    let vm = AtomicI32::new(fd);
    let stop = AtomicBool::new(false);
    let closer = rng.one_in(2);
    let mut rngs: Vec<Rng> = (0..5).map(|_| rng.split()).collect();
    let close_after = Duration::from_millis(rng.below(300));
    std::thread::scope(|s| {
        let (vm, stop) = (&vm, &stop);
        let mut r = rngs.pop().expect("five");
        s.spawn(move || {
            let (alarm, copier) = (Alarm::new(), Copier::new());
            let base = sys::map(vm.load(SeqCst), 0, MEMORY).ok();
            for _ in 0..runs {
                let fd = vm.load(SeqCst);
                let mode = guest::random_mode(&mut r);
                if let Some(base) = base {
                    guest::write_random_guest(&copier, base, &mut r, mode);
                }
                guest::set_start_state(fd, &mut r, mode);
                STATS.guests.fetch_add(1, Relaxed);
                guest::run_vcpu(fd, &mut r, &alarm, 16, 50);
            }
            if let Some(base) = base {
                sys::unmap(base, MEMORY);
            }
            stop.store(true, SeqCst);
        });
        let mut r = rngs.pop().expect("five");
        s.spawn(move || {
            while !stop.load(SeqCst) {
                let fd = vm.load(SeqCst);
                if fd < 0 {
                    break;
                }
                let region = if r.one_in(8) {
                    crate::ioctls::random_region(&mut r)
                } else {
                    let slot = r.pick(&[0, 0, 1, 2, 3]);
                    let gpa = if slot == 0 { 0 } else { u64::from(slot) * 0x20_0000 + r.below(4) * PAGE as u64 };
                    let size = r.below(300) * PAGE as u64;
                    abi::KvmMemoryRegion { slot, flags: r.below(2) as u32, guest_phys_addr: gpa, memory_size: size }
                };
                let _ = STATS.ioctl(sys::set_region(fd, region.slot, region.flags, region.guest_phys_addr, region.memory_size));
            }
        });
        let mut r = rngs.pop().expect("five");
        s.spawn(move || {
            let copier = Copier::new();
            let mut maps: Vec<(usize, usize)> = Vec::new();
            while !stop.load(SeqCst) {
                let fd = vm.load(SeqCst);
                match r.below(5) {
                    // Once the file is closed for good, only the mappings
                    // made before are left to use.
                    0 | 1 if fd >= 0 => {
                        STATS.mmaps.fetch_add(1, Relaxed);
                        let offset = r.below(0x80) * PAGE as u64 * r.pick(&[1, 8]);
                        let len = r.range(1, 512) as usize * PAGE;
                        if let Ok(addr) = sys::map(fd, offset, len) {
                            maps.push((addr, len));
                        }
                    }
                    2 if !maps.is_empty() => {
                        let (addr, len) = maps[r.below(maps.len() as u64) as usize];
                        let at = addr + r.below(len as u64 / PAGE as u64) as usize * PAGE;
                        if r.one_in(2) {
                            copier.touch(at, PAGE);
                        } else {
                            copier.write_to(at, &r.next().to_le_bytes());
                        }
                    }
                    3 if !maps.is_empty() => {
                        let m = r.below(maps.len() as u64) as usize;
                        let (addr, len) = maps[m];
                        let new = r.range(1, 512) as usize * PAGE;
                        STATS.remaps.fetch_add(1, Relaxed);
                        if let Ok(moved) = sys::remap(addr, len, new) {
                            maps[m] = (moved, new);
                        }
                    }
                    _ if !maps.is_empty() => {
                        let (addr, len) = maps.swap_remove(r.below(maps.len() as u64) as usize);
                        sys::unmap(addr, len);
                    }
                    _ => {}
                }
            }
            for (addr, len) in maps {
                sys::unmap(addr, len);
            }
        });
        let mut r = rngs.pop().expect("five");
        s.spawn(move || {
            while !stop.load(SeqCst) {
                let fd = vm.load(SeqCst);
                if fd < 0 {
                    break;
                }
                let _ = match r.below(5) {
                    0 => STATS.ioctl(sys::ioctl_with(fd, abi::KVM_GET_REGS, &mut KvmRegs::default())),
                    1 => STATS.ioctl(sys::ioctl_with(fd, abi::KVM_GET_SREGS, &mut KvmSregs::default())),
                    2 => {
                        let mut regs = crate::ioctls::random_regs(&mut r);
                        regs.vcpu = 0;
                        STATS.ioctl(sys::ioctl_with(fd, abi::KVM_SET_REGS, &mut regs))
                    }
                    3 => {
                        let mut tr = KvmTranslation { linear_address: r.boundary_u64(), ..KvmTranslation::default() };
                        STATS.ioctl(sys::ioctl_with(fd, abi::KVM_TRANSLATE, &mut tr))
                    }
                    _ => STATS.ioctl(sys::ioctl(fd, abi::KVM_CREATE_VCPU, 0)),
                };
            }
        });
        if closer {
            let mut r = rngs.pop().expect("five");
            s.spawn(move || {
                std::thread::sleep(close_after);
                let fd = vm.load(SeqCst);
                sys::close(fd);
                let next = if r.one_in(2) { sys::open_vm().unwrap_or(-1) } else { -1 };
                if next >= 0 {
                    STATS.vms.fetch_add(1, Relaxed);
                }
                vm.store(next, SeqCst);
            });
        }
    });
    let fd = vm.load(SeqCst);
    if fd >= 0 {
        sys::close(fd);
    }
}
