//@ stage 3
//! A virtual machine: what one open file of `/dev/rkvm` owns — its memory
//! slots and its vCPU — and the locks that let several threads use it.
//!
//! Locking, with the roles of 2006's `kvm->lock` and each `vcpu->mutex`:
//!
//! - `memory` guards the slots. `KVM_SET_MEMORY_REGION` holds it for the
//!   whole change, allocation included; mmap's fault handler holds it while
//!   it looks a page up and takes its reference.
//! - each vCPU slot has its own lock, held by `KVM_CREATE_VCPU` and the
//!   register ioctls (and, from stage 05, by `KVM_RUN` while the vCPU runs).
//! - Order: a vCPU's lock may be held while taking `memory`, never the
//!   reverse. No lock is held while copying from or to user memory: the
//!   user buffer may be this VM's own guest memory, whose fault handler
//!   takes `memory`.
//!
//! All are sleeping locks (kernel mutexes): every path that takes them runs
//! in process context and may sleep anyway (allocation, page faults). An
//! ioctl waits for them killably: a vCPU's lock may be held for as long as
//! another thread runs its guest, and `KVM_SET_MEMORY_REGION` holds the
//! memory lock across an allocation of gigabytes, so a task waiting behind
//! either must still die when it is killed (`EINTR`, which it never sees).
//! 2006's `kvm->lock` was a spin lock, so 2006 allocated a slot's pages
//! outside it and detected concurrent changes with a version counter; a
//! mutex can simply be held across the allocation.

use crate::abi::KvmMemoryRegion;
use crate::kernel::{Errno, KResult, LockClass, Mutex, PageRef, try_box};
use crate::memslot::MemSlots;
use crate::stats;
use crate::vcpu::Vcpu;
//@ begin 8
use crate::abi::KvmTranslation;
//@ end
//@ begin 5
use crate::abi::KvmRun;
use crate::stats::VmStats;
//@ end
use alloc::boxed::Box;
use alloc::vec::Vec;

// ANCHOR: vm
/// The number of vCPUs a VM may have: one, as in 2006 (`KVM_MAX_VCPUS`).
pub const KVM_MAX_VCPUS: usize = 1;

/// One VM. It lives from `open()` to the last `close()` of its file, which
/// comes only after every mapping of the file is gone.
pub struct Vm {
    /// Guest memory.
    memory: Mutex<MemSlots>,
    /// `vcpus[i]` is vCPU `i`, `None` until `KVM_CREATE_VCPU(i)`.
    vcpus: Vec<Mutex<Option<Box<Vcpu>>>>,
    //@ begin 5
    /// The VM's event counters.
    stats: VmStats,
    //@ end
}

impl Vm {
    /// Allocates a new VM with no memory and no vCPU. Allocation failure is
    /// `ENOMEM`, never a panic; whatever was allocated before the failure
    /// is dropped, and so freed.
    pub fn new() -> KResult<Box<Vm>> {
        let memory = Mutex::new(MemSlots::new(), LockClass::Memory)?;
        let mut vcpus = Vec::new();
        vcpus.try_reserve_exact(KVM_MAX_VCPUS).map_err(|_| Errno::ENOMEM)?;
        for _ in 0..KVM_MAX_VCPUS {
            vcpus.push(Mutex::new(None, LockClass::Vcpu)?);
        }
        let vm = try_box(Vm {
            memory,
            vcpus,
            //@ begin 5
            stats: VmStats::default(),
            //@ end
        })?;
        //@ begin 5
        vm.stats.show_in_debugfs();
        //@ end
        stats::inc(&stats::VMS);
        Ok(vm)
    }
}

impl Drop for Vm {
    /// Freeing a VM frees its vCPUs and its slots' pages, through their own
    /// `Drop`s; pages still mapped by a process outlive it (see `fault`).
    fn drop(&mut self) {
        for slot in &mut self.vcpus {
            if slot.get_mut().is_some() {
                stats::dec(&stats::VCPUS);
            }
        }
        stats::dec(&stats::VMS);
    }
}
// ANCHOR_END: vm

// ANCHOR: vm_memory
impl Vm {
    /// `KVM_SET_MEMORY_REGION`.
    pub fn set_memory_region(&self, region: &KvmMemoryRegion) -> KResult<()> {
        self.memory.lock_killable()?.set_region(region)
    }

    /// The page userspace faulted on in a mapping of the device, at file
    /// page offset `pgoff`, which is a guest frame number; `None` (the glue
    /// answers `SIGBUS`) if no slot backs it.
    ///
    /// The reference is taken with the lock held. A concurrent
    /// `KVM_SET_MEMORY_REGION` that shrinks or deletes the slot waits for
    /// the lock; when it then drops the slot's reference, the one taken
    /// here keeps the page alive, in the process's page table, until the
    /// process unmaps it. Freed memory is never mapped, and a page is never
    /// freed while mapped.
    pub fn fault(&self, pgoff: u64) -> Option<PageRef> {
        self.memory.lock().gfn_to_page(pgoff).map(|page| page.get())
    }

    /// Runs `f` on the slots, with their lock held (for tests and, from
    /// later stages, for the MMU).
    pub fn with_memory<R>(&self, f: impl FnOnce(&MemSlots) -> R) -> R {
        f(&self.memory.lock())
    }
}
// ANCHOR_END: vm_memory

// ANCHOR: vm_vcpus
impl Vm {
    /// `KVM_CREATE_VCPU`: `EINVAL` for an index beyond the VM's vCPUs,
    /// `EEXIST` if that vCPU exists already.
    pub fn create_vcpu(&self, index: usize) -> KResult<()> {
        let mut slot = self.vcpus.get(index).ok_or(Errno::EINVAL)?.lock_killable()?;
        if slot.is_some() {
            return Err(Errno::EEXIST);
        }
        *slot = Some(Vcpu::new()?);
        stats::inc(&stats::VCPUS);
        Ok(())
    }

    /// Runs `f` on vCPU `index` with its lock held: `EINVAL` if the index
    /// is beyond the VM's vCPUs, `ENOENT` if that vCPU was not created, as
    /// in 2006.
    pub fn with_vcpu<R>(&self, index: u32, f: impl FnOnce(&mut Vcpu) -> R) -> KResult<R> {
        let index = usize::try_from(index).map_err(|_| Errno::EINVAL)?;
        let mut slot = self.vcpus.get(index).ok_or(Errno::EINVAL)?.lock_killable()?;
        let vcpu = slot.as_deref_mut().ok_or(Errno::ENOENT)?;
        Ok(f(vcpu))
    }
}
// ANCHOR_END: vm_vcpus

//@ begin 5
// ANCHOR: vm_run
impl Vm {
    /// `KVM_RUN` on vCPU `run.vcpu`, whose lock is held while the guest
    /// runs; the memory lock is taken only between entries, by the exit
    /// handlers that need the slots.
    pub fn run(&self, run: &mut KvmRun) -> KResult<()> {
        let index = usize::try_from(run.vcpu).map_err(|_| Errno::EINVAL)?;
        let mut slot = self.vcpus.get(index).ok_or(Errno::EINVAL)?.lock_killable()?;
        let vcpu = slot.as_deref_mut().ok_or(Errno::ENOENT)?;
        vcpu.run(run, &self.memory, &self.stats)
    }

    /// This VM's counters.
    pub fn stats(&self) -> &VmStats {
        &self.stats
    }
}
// ANCHOR_END: vm_run
//@ end

//@ begin 8
// ANCHOR: vm_translate
impl Vm {
    /// `KVM_TRANSLATE` on vCPU `tr.vcpu`.
    pub fn translate(&self, tr: &KvmTranslation) -> KResult<KvmTranslation> {
        let index = usize::try_from(tr.vcpu).map_err(|_| Errno::EINVAL)?;
        let mut slot = self.vcpus.get(index).ok_or(Errno::EINVAL)?.lock_killable()?;
        let vcpu = slot.as_deref_mut().ok_or(Errno::ENOENT)?;
        Ok(KvmTranslation { vcpu: tr.vcpu, ..vcpu.translate(tr.linear_address, &self.memory) })
    }
}
// ANCHOR_END: vm_translate
//@ end

//@ begin 11
// ANCHOR: vm_dirty_log
/// A dirty log taken from a slot, on its way to userspace.
pub struct TakenLog {
    pub slot: usize,
    pub base_gfn: u64,
    /// The log as userspace receives it: bit `i % 8` of byte `i / 8` for
    /// page `i` of the slot.
    pub bytes: Vec<u8>,
}

impl Vm {
    /// `KVM_GET_DIRTY_LOG` of slot `slot`, up to the copy to userspace:
    /// takes the slot's log (clearing it) and write-protects every page it
    /// names, so that the guest's next write to one is seen. `EINVAL` for
    /// a slot number beyond the slots, `ENOENT` for a slot that does not
    /// log, as 2006 answered.
    ///
    /// The vCPU is held throughout (before the memory, the lock order), so
    /// the guest does not run between the clearing and the write
    /// protection: a write in that gap would reach the page through a
    /// writable translation and be in no log. 2006 took the vCPU only to
    /// flush its TLB. With more vCPUs, every one would be held.
    pub fn get_dirty_log(&self, slot: u32) -> KResult<TakenLog> {
        let slot = usize::try_from(slot).map_err(|_| Errno::EINVAL)?;
        let mut vcpu = self.vcpus.first().ok_or(Errno::EINVAL)?.lock_killable()?;
        let (bytes, base_gfn) = self.memory.lock().take_dirty_log(slot)?;
        if let Some(vcpu) = vcpu.as_deref_mut() {
            vcpu.write_protect(crate::memslot::dirty::dirty_pages(&bytes).map(|i| base_gfn + i as u64));
        }
        Ok(TakenLog { slot, base_gfn, bytes })
    }

    /// A log `get_dirty_log` took that could not be copied to userspace:
    /// its bits go back, to be reported next time.
    pub fn put_back_dirty_log(&self, log: &TakenLog) {
        self.memory.lock().put_back_dirty_log(log.slot, log.base_gfn, &log.bytes);
    }
}
// ANCHOR_END: vm_dirty_log
//@ end


#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake;
    use std::sync::Arc;

    fn region(slot: u32, guest_phys_addr: u64, memory_size: u64) -> KvmMemoryRegion {
        KvmMemoryRegion { slot, flags: 0, guest_phys_addr, memory_size }
    }

    #[test]
    fn a_vcpu_is_created_once_and_only_at_index_0() {
        let vm = Vm::new().expect("a VM");
        assert_eq!(vm.with_vcpu(0, |_| ()), Err(Errno::ENOENT));
        assert_eq!(vm.create_vcpu(1), Err(Errno::EINVAL));
        assert_eq!(vm.create_vcpu(usize::MAX), Err(Errno::EINVAL));
        assert_eq!(vm.create_vcpu(0), Ok(()));
        assert_eq!(vm.create_vcpu(0), Err(Errno::EEXIST));
        assert_eq!(vm.with_vcpu(0, |v| v.rip), Ok(0xFFF0));
        assert_eq!(vm.with_vcpu(1, |_| ()), Err(Errno::EINVAL));
        assert_eq!(vm.with_vcpu(u32::MAX, |_| ()), Err(Errno::EINVAL));
    }

    #[test]
    fn dropping_a_vm_frees_its_memory() {
        let before = fake::live_pages();
        let vm = Vm::new().expect("a VM");
        assert_eq!(vm.create_vcpu(0), Ok(()));
        let with_vcpu = fake::live_pages();
        assert_eq!(vm.set_memory_region(&region(0, 0, 32 * 4096)), Ok(()));
        assert_eq!(fake::live_pages(), with_vcpu + 32);
        drop(vm);
        assert_eq!(fake::live_pages(), before);
    }

    #[test]
    fn threads_can_change_memory_and_registers_at_once() {
        let vm: Arc<Vm> = Arc::from(Vm::new().expect("a VM"));
        assert_eq!(vm.create_vcpu(0), Ok(()));
        let memory = {
            let vm = vm.clone();
            std::thread::spawn(move || {
                for i in 1..=50u64 {
                    assert_eq!(vm.set_memory_region(&region(0, 0, (i % 7 + 1) * 4096)), Ok(()));
                    assert_eq!(vm.set_memory_region(&region(0, 0, 0)), Ok(()));
                }
            })
        };
        let registers = {
            let vm = vm.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    assert_eq!(vm.with_vcpu(0, |v| v.rip = i), Ok(()));
                }
            })
        };
        memory.join().expect("no panic");
        registers.join().expect("no panic");
        assert_eq!(vm.with_memory(MemSlots::npages), 0);
        assert_eq!(vm.with_vcpu(0, |v| v.rip), Ok(49));
    }

    #[test]
    fn a_task_killed_while_it_waits_for_a_busy_vcpu_stops_waiting() {
        let vm: Arc<Vm> = Arc::from(Vm::new().expect("a VM"));
        assert_eq!(vm.create_vcpu(0), Ok(()));
        let (held, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let runner = {
            let vm = vm.clone();
            let (held, release) = (held.0, release.1);
            // Holds the vCPU as KVM_RUN does while its guest runs.
            std::thread::spawn(move || vm.with_vcpu(0, |_| {
                held.send(()).expect("the test waits");
                release.recv().expect("the test releases");
            }))
        };
        held.1.recv().expect("the vCPU is held");
        fake::fatal_signal_after(Some(10));
        assert_eq!(vm.with_vcpu(0, |v| v.rip), Err(Errno::EINTR), "killed while waiting");
        fake::fatal_signal_after(None);
        assert_eq!(vm.set_memory_region(&region(0, 0, 4096)), Ok(()), "the memory lock is another");
        release.0.send(()).expect("the holder waits");
        assert_eq!(runner.join().expect("no panic"), Ok(()));
        assert_eq!(vm.with_vcpu(0, |v| v.rip), Ok(0xFFF0), "and the lock works after");
    }

    mod e3_2 {
        use super::super::*;
        use super::region;
        use crate::kernel::{PAGE_SIZE, fake};

        #[test]
        fn a_fault_maps_the_page_at_the_guest_physical_address() {
            let vm = Vm::new().expect("a VM");
            assert_eq!(vm.set_memory_region(&region(0, 0x10_0000, 0x2000)), Ok(()));
            let page = vm.fault(0x101).expect("gfn 0x101 is backed");
            // SAFETY: `page` holds a reference, so the page is alive.
            unsafe { page.addr().add(5).write(0x42) };
            let again = vm.fault(0x101).expect("still backed");
            assert_eq!(page.addr(), again.addr(), "the same page both times");
            assert!(vm.fault(0x100).is_some_and(|p| p.addr() != page.addr()));
            // SAFETY: as above.
            assert_eq!(unsafe { again.addr().add(5).read() }, 0x42);
        }

        #[test]
        fn a_fault_outside_every_slot_is_refused() {
            let vm = Vm::new().expect("a VM");
            assert!(vm.fault(0).is_none());
            assert_eq!(vm.set_memory_region(&region(0, 0x10_0000, 0x2000)), Ok(()));
            assert!(vm.fault(0xFF).is_none());
            assert!(vm.fault(0x102).is_none());
            assert!(vm.fault(u64::MAX).is_none());
        }

        #[test]
        fn a_mapped_page_outlives_its_slot_and_its_vm() {
            let before = fake::live_pages();
            let vm = Vm::new().expect("a VM");
            assert_eq!(vm.set_memory_region(&region(2, 0, PAGE_SIZE as u64)), Ok(()));
            let mapping = vm.fault(0).expect("backed");
            assert_eq!(vm.set_memory_region(&region(2, 0, 0)), Ok(()));
            assert!(vm.fault(0).is_none(), "the slot is gone");
            drop(vm);
            assert_eq!(fake::live_pages(), before + 1, "the mapping holds the page");
            // SAFETY: `mapping` still holds its reference.
            unsafe { mapping.addr().write(1) };
            drop(mapping);
            assert_eq!(fake::live_pages(), before, "unmapping freed it");
        }

        #[test]
        fn faults_race_slot_changes_safely() {
            let vm: std::sync::Arc<Vm> = std::sync::Arc::from(Vm::new().expect("a VM"));
            let changer = {
                let vm = vm.clone();
                std::thread::spawn(move || {
                    for i in 0..200u64 {
                        let size = if i % 2 == 0 { 4 * PAGE_SIZE as u64 } else { 0 };
                        assert_eq!(vm.set_memory_region(&region(0, 0, size)), Ok(()));
                    }
                })
            };
            let mut mapped = std::vec::Vec::new();
            for _ in 0..200 {
                if let Some(page) = vm.fault(3) {
                    // SAFETY: the reference keeps the page alive.
                    unsafe { page.addr().write(0xEE) };
                    mapped.push(page);
                }
            }
            changer.join().expect("no panic");
            drop(mapped);
        }
    }
}
