//@ stage 4
//! VMX regions: the VMXON region each CPU lends the processor, and the
//! VMCS ("virtual-machine control structure") each vCPU owns, with its
//! life cycle of `VMCLEAR` and `VMPTRLD`.
//!
//! "A logical processor may maintain a number of VMCSs that are active.
//! The processor may optimize VMX operation by maintaining the state of an
//! active VMCS in memory, on the processor, or both. At any given time, at
//! most one of the active VMCSs is the current VMCS." (SDM Vol. 3C, 25.1
//! "Overview".)

use super::insn::{self, VmxError};
use crate::kernel::{KResult, PAGE_SIZE, Page, cpu};
use core::sync::atomic::{AtomicU32, Ordering};
//@ begin 13
use alloc::boxed::Box;
use core::mem::ManuallyDrop;
//@ end

/// The VMCS revision identifier of this processor, from IA32_VMX_BASIC,
/// set once when the module loads.
static REVISION_ID: AtomicU32 = AtomicU32::new(0);

/// Records the revision identifier every region must start with.
pub fn set_revision_id(id: u32) {
    REVISION_ID.store(id, Ordering::Relaxed);
}

// ANCHOR: region
/// One page that the processor uses as a VMXON region or a VMCS: "the
/// first 4 bytes of the VMCS region contain the VMCS revision identifier
/// at bits 30:0" and bit 31 is clear for an ordinary VMCS (SDM Vol. 3C,
/// 25.2 "Format of the VMCS Region"); the VMXON region starts the same way
/// (SDM Vol. 3C, 25.11.5 "VMXON Region").
pub struct Region {
    page: Page,
    phys: u64,
}

impl Region {
    /// A zeroed page carrying the revision identifier.
    pub fn new() -> KResult<Region> {
        let page = Page::alloc_zeroed()?;
        let id = REVISION_ID.load(Ordering::Relaxed) & 0x7FFF_FFFF;
        // SAFETY: the page is ours, PAGE_SIZE bytes, page-aligned, and no
        // processor uses it yet.
        unsafe { page.addr().cast::<u32>().write(id) };
        let phys = cpu::virt_to_phys(page.addr());
        Ok(Region { page, phys })
    }

    /// Its physical address, the operand of VMXON, VMCLEAR and VMPTRLD.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Its first 4 bytes: the revision identifier it was made with.
    pub fn revision_id(&self) -> u32 {
        // SAFETY: the page is alive and at least 4 bytes long.
        unsafe { self.page.addr().cast::<u32>().read() }
    }
}

const _: () = assert!(PAGE_SIZE == 4096, "a VMCS region is one 4-KiB page");
// ANCHOR_END: region

// ANCHOR: vmcs
/// A vCPU's VMCS. As in 2006, it stays active on the last CPU that ran
/// it: `KVM_RUN` on the same CPU only makes it current again (if another
/// VMCS became current meanwhile), with its launch state kept, so the
/// next entry is a `VMRESUME`. When the vCPU's thread moves to another
/// CPU, the VMCS is first cleared on the old one (an IPI runs `VMCLEAR`
/// there: "no VMCS should ever be active on more than one logical
/// processor", SDM Vol. 3C, 25.11.1 "Software Use of Virtual-Machine
/// Control Structures", which asks for `VMCLEAR` on the first before
/// `VMPTRLD` on the second), then loaded
/// here and launched again.
pub struct Vmcs {
    region: Region,
    /// The CPU it is active on, if any.
    loaded_on: Option<usize>,
    /// Whether VMLAUNCH has succeeded since the last VMCLEAR: the next
    /// entry must then be VMRESUME (SDM Vol. 3C, 25.11.3 "Initializing a
    /// VMCS").
    pub launched: bool,
    //@ begin 13
    /// Its entry in the list of the CPU it is active on (`loaded`), which
    /// a CPU going offline clears. Kept, not freed, if the VMCS could not
    /// be cleared (see `drop`).
    active: ManuallyDrop<Box<super::loaded::Active>>,
    //@ end
}

impl Vmcs {
    /// A new VMCS, not yet active anywhere.
    pub fn new() -> KResult<Vmcs> {
        let region = Region::new()?;
        Ok(Vmcs {
            //@ begin 13
            active: ManuallyDrop::new(super::loaded::Active::new(region.phys())?),
            //@ end
            region,
            loaded_on: None,
            launched: false,
        })
    }

    /// Makes this VMCS current on `cpu`, the calling CPU, which must stay
    /// the same (preemption off) while the VMCS is used. When it comes from
    /// another CPU, its launch state is clear again: the next entry is a
    /// `VMLAUNCH`.
    pub fn load(&mut self, cpu: usize) -> Result<(), VmxError> {
        let phys = self.region.phys();
        //@ begin 13
        // A CPU that went offline since cleared it (`loaded::clear_all`).
        self.loaded_on = self.active.cpu();
        //@ end
        if self.loaded_on == Some(cpu) {
            // SAFETY: this CPU is in VMX operation (it runs rkvm's vCPUs).
            if unsafe { insn::vmptrst() } != phys {
                // SAFETY: the VMCS is active on this CPU only.
                unsafe { insn::vmptrld(phys) }?;
            }
            return Ok(());
        }
        match self.loaded_on.take() {
            Some(old) => clear_on(old, phys),
            // "Software should use VMCLEAR on a VMCS region before using
            // it for the first time" (SDM Vol. 3C, 25.11.3): it is active
            // nowhere, so clearing it here is safe.
            // SAFETY: this CPU is in VMX operation.
            None => unsafe { insn::vmclear(phys) }?,
        }
        self.launched = false;
        // SAFETY: the region is active on no CPU and carries the revision
        // identifier.
        unsafe { insn::vmptrld(phys) }?;
        self.loaded_on = Some(cpu);
        //@ begin 13
        self.active.link(cpu);
        //@ end
        Ok(())
    }

    /// The physical address of the region.
    pub fn phys(&self) -> u64 {
        self.region.phys()
    }
}

impl Drop for Vmcs {
    /// A VMCS must not be freed while a CPU may still write it back.
    fn drop(&mut self) {
        //@ begin 13
        // A CPU that went offline cleared it already.
        self.loaded_on = self.active.cpu();
        //@ end
        if let Some(cpu) = self.loaded_on.take() {
            clear_on(cpu, self.region.phys());
        }
        //@ begin 13
        if self.active.cpu().is_none() {
            // SAFETY: dropped once, here; no list holds the entry any
            // more. (One still listed is kept: a list must not point to
            // freed memory.)
            unsafe { ManuallyDrop::drop(&mut self.active) };
        }
        //@ end
    }
}

/// VMCLEAR of the region at `phys` on CPU `cpu`, and waits for it.
fn clear_on(cpu: usize, phys: u64) {
    if !crate::kernel::cpu::on_cpu(cpu, vmclear_this_cpu, &phys) {
        crate::log!(Err, "CPU {cpu} is offline: cannot VMCLEAR a VMCS active there");
    }
}

/// Runs on the CPU where the VMCS is active, interrupts off.
extern "C" fn vmclear_this_cpu(arg: *mut core::ffi::c_void) {
    // SAFETY: `clear_on` passes a `u64` and waits for the call.
    let phys = unsafe { *arg.cast::<u64>() };
    //@ begin 13
    // Unless this CPU's hotplug teardown cleared it first: then VMX may
    // be off here already.
    if !super::loaded::forget_here(phys, crate::kernel::cpu::current_cpu()) {
        return;
    }
    //@ end
    // SAFETY: the VMCS is active on this CPU, which is in VMX operation.
    if let Err(e) = unsafe { insn::vmclear(phys) } {
        crate::log!(Err, "VMCLEAR failed: {e:?}");
    }
}
// ANCHOR_END: vmcs

//@ begin 5
// ANCHOR: current_vmcs
/// The current VMCS's fields, through VMREAD and VMWRITE. Only made
/// while a VMCS of rkvm is current on this CPU (after [`Vmcs::load`],
/// preemption off): a failing access is then a bug in rkvm, logged rather
/// than trusted.
pub struct CurrentVmcs(());

impl CurrentVmcs {
    /// # Safety
    /// A VMCS loaded by [`Vmcs::load`] must be current on this CPU for as
    /// long as the value is used.
    pub unsafe fn new() -> CurrentVmcs {
        CurrentVmcs(())
    }
}

impl super::guest::Fields for CurrentVmcs {
    fn read(&self, field: u32) -> u64 {
        // SAFETY: a VMCS is current (see `new`).
        unsafe { insn::vmread(field) }.unwrap_or_else(|e| {
            crate::log!(Err, "VMREAD {field:#x}: {e:?}");
            0
        })
    }

    fn write(&mut self, field: u32, value: u64) {
        // SAFETY: a VMCS of rkvm is current (see `new`); the values written
        // are the host's own state or guest state the entry checks.
        if let Err(e) = unsafe { insn::vmwrite(field, value) } {
            crate::log!(Err, "VMWRITE {field:#x} = {value:#x}: {e:?}");
        }
    }
}
// ANCHOR_END: current_vmcs
//@ end

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_start_with_the_revision_id_and_are_page_aligned() {
        set_revision_id(0x8000_0012);
        let region = Region::new().expect("a page");
        assert_eq!(region.revision_id(), 0x12, "bit 31 stays clear: not a shadow VMCS");
        assert_eq!(region.phys() % 4096, 0);
    }
}
