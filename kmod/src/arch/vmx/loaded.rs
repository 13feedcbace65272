//@ stage 13
//! The VMCSs active on each CPU, so that a CPU can VMCLEAR them all before
//! it leaves VMX operation: when it goes offline, and when the machine
//! reboots.
//!
//! A VMCS stays active on the last CPU that ran its vCPU (see `vmcs`), and
//! "no VMCS should ever be active on more than one logical processor" (SDM
//! Vol. 3C, 25.11.1: the first clears it before the second loads it).
//! VMXOFF does not write an active VMCS back: a VMCS still active on a
//! processor that leaves VMX operation may be corrupted, so "software should execute
//! VMCLEAR for that VMCS before executing the VMXOFF instruction" (the same
//! section); and VMCLEAR itself is #UD outside VMX operation (31.3).
//! 2006's `vmx.c` had `vcpu_load` and `__vcpu_clear` for the move between
//! CPUs, but no list: its `hardware_disable` ran only at unload, when no
//! vCPU was left. Today's KVM keeps one list per CPU
//! (`loaded_vmcss_on_cpu`); this is the same list.
//!
//! Every change to CPU N's list is made *on CPU N with interrupts off*:
//! the vCPU links its VMCS right after VMPTRLD (preemption off, then
//! interrupts off for the link); the IPI that clears it for a vCPU that
//! moved runs there; the hotplug and reboot callbacks run there. So the
//! lists need no lock: on one CPU, with interrupts off, nothing else runs.

use super::insn;
use crate::kernel::{Errno, KResult, cpu};
use crate::log;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// `Active::cpu` of a VMCS active on no CPU.
const NOWHERE: usize = usize::MAX;

// ANCHOR: active
/// One VMCS's place in the lists. Its `Vmcs` keeps it in a box of its
/// own, so that its address stays the same while the vCPU moves.
pub struct Active {
    /// The VMCS region's physical address.
    phys: u64,
    /// The CPU the VMCS is active on, or `NOWHERE`. Written only on that
    /// CPU with interrupts off; read by the vCPU that owns the VMCS, on
    /// any CPU, to learn whether a CPU going offline cleared it.
    cpu: AtomicUsize,
    /// The neighbours in that CPU's list: touched only there, with
    /// interrupts off.
    prev: Cell<*mut Active>,
    next: Cell<*mut Active>,
}

// SAFETY: `prev` and `next` are touched only on the CPU whose list holds
// the entry, with interrupts off (see the file's comment); `cpu` is atomic.
unsafe impl Sync for Active {}
// SAFETY: as above; the entry holds no reference to anything of a thread.
unsafe impl Send for Active {}
// ANCHOR_END: active

/// The first entry of one CPU's list.
struct Head(Cell<*mut Active>);

// SAFETY: a head is touched only on its own CPU with interrupts off.
unsafe impl Sync for Head {}

/// One list per CPU, from `setup` to `unsetup`.
static HEADS: AtomicPtr<Vec<Head>> = AtomicPtr::new(ptr::null_mut());

/// Allocates the lists of CPUs `0..ncpus`, empty (at `hardware_setup`).
pub fn setup(ncpus: usize) -> KResult<()> {
    let mut heads = Vec::new();
    heads.try_reserve_exact(ncpus).map_err(|_| Errno::ENOMEM)?;
    heads.extend((0..ncpus).map(|_| Head(Cell::new(ptr::null_mut()))));
    let old = HEADS.swap(Box::into_raw(crate::kernel::try_box(heads)?), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: a table of an earlier setup, owned by nobody else.
        drop(unsafe { Box::from_raw(old) });
    }
    Ok(())
}

/// Frees the lists (at `hardware_unsetup`, when no VMCS is left).
pub fn unsetup() {
    let old = HEADS.swap(ptr::null_mut(), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: made by `setup` with `Box::into_raw`; the swap made this
        // the only owner.
        drop(unsafe { Box::from_raw(old) });
    }
}

fn head(cpu: usize) -> Option<&'static Head> {
    // SAFETY: the table lives from setup to unsetup, which bracket every
    // VMCS's life (unsetup runs when every file of /dev/rkvm is closed).
    unsafe { HEADS.load(Ordering::Acquire).as_ref() }?.get(cpu)
}

impl Active {
    /// The entry of the VMCS region at `phys`, active nowhere yet.
    pub fn new(phys: u64) -> KResult<Box<Active>> {
        let cell = || Cell::new(ptr::null_mut());
        crate::kernel::try_box(Active { phys, cpu: AtomicUsize::new(NOWHERE), prev: cell(), next: cell() })
    }

    /// The CPU the VMCS is active on, if any.
    pub fn cpu(&self) -> Option<usize> {
        Some(self.cpu.load(Ordering::Acquire)).filter(|&c| c != NOWHERE)
    }

    // ANCHOR: link
    /// Records that the VMCS was just made active on `cpu` (VMPTRLD), the
    /// calling CPU, preemption off. The entry must be in no list.
    pub fn link(&self, cpu: usize) {
        let Some(head) = head(cpu) else { return };
        let this = ptr::from_ref(self).cast_mut();
        cpu::irq_disable();
        let first = head.0.get();
        self.prev.set(ptr::null_mut());
        self.next.set(first);
        // SAFETY: entries in this CPU's list are alive (a `Vmcs` leaves
        // its list before its entry is freed) and touched only here.
        if let Some(first) = unsafe { first.as_ref() } {
            first.prev.set(this);
        }
        head.0.set(this);
        self.cpu.store(cpu, Ordering::Release);
        cpu::irq_enable();
    }
    // ANCHOR_END: link
}

/// Takes `node` out of `head`'s list. On the list's CPU, interrupts off.
fn unlink(node: &Active, head: &Head) {
    let (prev, next) = (node.prev.replace(ptr::null_mut()), node.next.replace(ptr::null_mut()));
    // SAFETY: the neighbours are alive entries of the same list.
    match unsafe { prev.as_ref() } {
        Some(prev) => prev.next.set(next),
        None => head.0.set(next),
    }
    // SAFETY: as above.
    if let Some(next) = unsafe { next.as_ref() } {
        next.prev.set(prev);
    }
}

// ANCHOR: clear_here
/// Takes the VMCS region at `phys` out of the list of `this`, the calling
/// CPU (interrupts off), for the IPI that VMCLEARs it there (`vmcs`).
/// False if the list does not hold it: the CPU's hotplug teardown or the
/// reboot cleared it first, and VMX may be off here already.
pub fn forget_here(phys: u64, this: usize) -> bool {
    let Some(head) = head(this) else { return false };
    let mut at = head.0.get();
    // SAFETY: entries in this CPU's list are alive and touched only here.
    while let Some(node) = unsafe { at.as_ref() } {
        if node.phys == phys {
            unlink(node, head);
            node.cpu.store(NOWHERE, Ordering::Release);
            return true;
        }
        at = node.next.get();
    }
    false
}

/// VMCLEARs every VMCS active on `cpu`, the calling CPU, interrupts off,
/// and returns how many there were. Each is out of the list, and says
/// `NOWHERE`, only after its VMCLEAR: a vCPU that reads `NOWHERE` may
/// load it on another CPU at once.
pub fn clear_all(cpu: usize) -> usize {
    clear_all_with(cpu, &|phys| {
        // SAFETY: the VMCS is active on this CPU, which is still in VMX
        // operation (the caller turns it off after this).
        if let Err(e) = unsafe { insn::vmclear(phys) } {
            log!(Err, "VMCLEAR failed on CPU {cpu}: {e:?}");
        }
    })
}

/// `clear_all`, with the instruction given (tests give a fake one).
fn clear_all_with(cpu: usize, vmclear: &dyn Fn(u64)) -> usize {
    let Some(head) = head(cpu) else { return 0 };
    let mut cleared = 0;
    // SAFETY: entries in the list are alive; each is unlinked below.
    while let Some(first) = unsafe { head.0.get().as_ref() } {
        vmclear(first.phys);
        unlink(first, head);
        first.cpu.store(NOWHERE, Ordering::Release);
        cleared += 1;
    }
    cleared
}
// ANCHOR_END: clear_here

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_cpu_clears_exactly_the_vmcss_active_on_it() {
        setup(4).unwrap();
        let (a, b, c) = (Active::new(0xA000).unwrap(), Active::new(0xB000).unwrap(), Active::new(0xC000).unwrap());
        a.link(1);
        b.link(2);
        c.link(1);
        assert_eq!((a.cpu(), b.cpu(), c.cpu()), (Some(1), Some(2), Some(1)));
        let log = RefCell::new(Vec::new());
        let record = |phys| log.borrow_mut().push(phys);
        assert_eq!(clear_all_with(1, &record), 2);
        assert_eq!(*log.borrow(), [0xC000, 0xA000], "the newest first");
        assert_eq!((a.cpu(), b.cpu(), c.cpu()), (None, Some(2), None));
        assert_eq!(clear_all_with(1, &record), 0, "the list is empty now");
        // A late IPI for a VMCS the CPU cleared already finds nothing.
        assert!(!forget_here(0xA000, 1));
        // One taken from the middle of a list leaves the rest linked.
        a.link(2);
        c.link(2);
        assert!(forget_here(0xA000, 2));
        assert_eq!(a.cpu(), None);
        assert_eq!(clear_all_with(2, &record), 2);
        assert_eq!(*log.borrow(), [0xC000, 0xA000, 0xC000, 0xB000]);
        unsetup();
    }
}
