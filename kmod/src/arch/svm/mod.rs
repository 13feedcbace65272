//@ stage 7
//! The AMD SVM backend, after 2006's `svm.c`: the same [`Arch`] trait the
//! VMX backend implements, on AMD's secure virtual machine extension (APM
//! Vol. 2, chapter 15 "Secure Virtual Machine").
//!
//! - Detection: CPUID Fn8000_0001 ECX.SVM, VM_CR.SVMDIS, EFER.SVME not
//!   already set by another hypervisor (APM Vol. 2, 15.4 "Enabling SVM").
//! - Per CPU: EFER.SVME and a host save area in VM_HSAVE_PA, a page for
//!   the host state that `vmrun` does not switch, and a pool of ASIDs.
//! - Module-wide: the I/O and MSR permission maps, all ones: every port
//!   and every MSR access exits.
//! - Per vCPU: a VMCB ([`vcpu::SvmVcpu`]).
//!
//! The backend uses nothing QEMU's SVM lacks: no nrip_save, no decode
//! assists, no flush-by-ASID, no VMCB clean bits, no nested paging.

pub mod exit;
pub mod insn;
pub mod vcpu;
pub mod vmcb;

use super::x86::{rdmsr, wrmsr};
use super::{Arch, ArchVcpu, Unsupported};
use crate::kernel::contig::ContiguousPages;
use crate::kernel::{Errno, KResult, Page};
use crate::log;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use crate::regs::Efer;
use core::sync::atomic::{AtomicPtr, Ordering};
use insn::{MSR_VM_CR, MSR_VM_HSAVE_PA, VM_CR_SVMDIS};
use x86::msr::IA32_EFER;

/// The SVM backend.
pub struct Svm;

/// The one instance, which `arch::select` offers.
pub static SVM: Svm = Svm;

// ANCHOR: detect
/// CPUID Fn8000_0001 ECX bit 2: SVM.
const CPUID_SVM: u32 = 1 << 2;

/// Whether SVM is present and free, from the processor's answers: CPUID
/// first, since reading VM_CR or EFER.SVME means nothing (or faults)
/// without SVM.
pub fn check(cpuid: impl Fn(u32) -> [u32; 4], rdmsr: impl Fn(u32) -> u64) -> Result<(), Unsupported> {
    let [max_extended, ..] = cpuid(0x8000_0000);
    if max_extended < 0x8000_000A || cpuid(0x8000_0001)[2] & CPUID_SVM == 0 {
        return Err(Unsupported::NoExtension("AMD SVM"));
    }
    if rdmsr(MSR_VM_CR) & VM_CR_SVMDIS != 0 {
        return Err(Unsupported::DisabledByFirmware("AMD SVM"));
    }
    if Efer::from_bits_retain(rdmsr(IA32_EFER)).contains(Efer::SVME) {
        return Err(Unsupported::InUse("AMD SVM"));
    }
    // Fn8000_000A EBX: the number of ASIDs, the host's (0) included.
    if cpuid(0x8000_000A)[1] < 2 {
        return Err(Unsupported::MissingFeature("address space identifiers (ASIDs) for guests"));
    }
    Ok(())
}
// ANCHOR_END: detect

// ANCHOR: asid
/// One CPU's address space identifiers (APM Vol. 2, 15.16 "TLB Control"):
/// each guest's TLB entries are tagged with its ASID, so nothing needs
/// flushing at `vmrun` or `#VMEXIT`. A vCPU that must flush its TLB, or
/// that moved from another CPU, takes a new ASID; when they run out, the
/// generation changes, every vCPU takes a new one, and the one `vmrun`
/// that starts the new generation flushes every ASID: 2006's `new_asid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidPool {
    /// Counts the times the ASIDs ran out; starts at 1.
    pub generation: u64,
    /// The next free ASID.
    pub next: u32,
    /// The largest ASID.
    pub max: u32,
}

/// An ASID handed out by [`AsidPool::assign`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub asid: u32,
    pub generation: u64,
    /// Flush every ASID at this `vmrun`: the pool started over.
    pub flush_all: bool,
}

impl AsidPool {
    /// A pool of ASIDs 1 to `count - 1`: ASID 0 is the host's.
    pub fn new(count: u32) -> AsidPool {
        AsidPool { generation: 1, next: 1, max: count.saturating_sub(1).max(1) }
    }

    //@ begin 13
    /// Ends the current generation at once (no vCPU's ASID is of the
    /// new one, so every vCPU takes a new ASID) and uses it up (so the
    /// next `assign` starts another, flushing every ASID).
    pub fn start_over(&mut self) {
        self.generation += 1;
        self.next = self.max + 1;
    }

    //@ end
    /// Hands out an ASID for a vCPU that needs a new one.
    pub fn assign(&mut self) -> Assigned {
        //@ exercise E7.3
        //@ instruction: Hand out an ASID, with its generation, for a vCPU
        //@+ that needs a fresh one. What must hold (AMD APM Vol. 2, 15.16
        //@+ "TLB Control"; the fields' doc comments above): never ASID 0
        //@+ nor one above `max`; within a generation, no ASID twice, since
        //@+ two address spaces under one ASID would share TLB entries; a
        //@+ new generation only once every ASID of the current one is
        //@+ out; and `flush_all` exactly on the first ASID of each
        //@+ generation after the first, because the TLB may still hold
        //@+ entries tagged with the ASIDs it reuses. The `e7_3` tests check
        //@+ these rules over long runs of pools of every size.
        //@ hint: `next` is the state that carries everything from one call
        //@+ to the next. Ask what its value means when the pool has run
        //@+ out, and what must happen before you hand out the next ASID.
        //@ hint: When `next` has passed `max`, start a new generation
        //@+ first: one more `generation`, `next` back to 1 (0 is the
        //@+ host's), and a flush. Then hand out `next` and advance it.
        //@ hint: `let mut flush_all = false; if self.next > self.max {
        //@+ self.generation += 1; self.next = 1; flush_all = true; }`, then
        //@+ `let asid = self.next; self.next += 1;` and return `Assigned {
        //@+ asid, generation: self.generation, flush_all }`.
        let mut flush_all = false;
        if self.next > self.max {
            self.generation += 1;
            self.next = 1;
            flush_all = true;
        }
        let asid = self.next;
        self.next += 1;
        Assigned { asid, generation: self.generation, flush_all }
        //@ end
    }
}
// ANCHOR_END: asid

// ANCHOR: per_cpu
/// What SVM needs on each CPU.
struct CpuState {
    /// VM_HSAVE_PA points here: `vmrun` saves the host's state in it.
    hsave: Page,
    /// `vmsave` puts the host's FS, GS, TR, LDTR and syscall MSRs here
    /// before each entry, `vmload` takes them back after.
    host_vmcb: Page,
    /// Used only on this CPU, with preemption off.
    asids: UnsafeCell<AsidPool>,
}

/// The backend's module-wide state, from `hardware_setup` to
/// `hardware_unsetup`.
struct Globals {
    cpus: Vec<CpuState>,
    /// 12 KiB of ones: intercept every port (APM Vol. 2, 15.10.1 "I/O
    /// Permissions Map").
    iopm: ContiguousPages,
    /// 8 KiB of ones: intercept every MSR (APM Vol. 2, 15.11 "MSR
    /// Intercepts").
    msrpm: ContiguousPages,
}

// SAFETY: `asids` is touched only by its own CPU with preemption off
// (see `CpuState`); everything else is written once, in `hardware_setup`,
// before any CPU or vCPU uses it.
unsafe impl Sync for Globals {}

static GLOBALS: AtomicPtr<Globals> = AtomicPtr::new(core::ptr::null_mut());

/// The state, while the backend is set up. The module keeps it from
/// `hardware_setup` until `hardware_unsetup`, which runs only after every
/// file, and so every vCPU, is gone.
fn globals() -> Option<&'static Globals> {
    // SAFETY: the pointer is null or a leaked `Box<Globals>` that lives
    // until `hardware_unsetup`, which no user of it can outlive.
    unsafe { GLOBALS.load(Ordering::Acquire).as_ref() }
}

/// The physical addresses of the permission maps.
pub fn permission_maps() -> Option<(u64, u64)> {
    globals().map(|g| (g.iopm.phys(), g.msrpm.phys()))
}

/// What `run` needs of CPU `cpu`: the host's save page, and its ASIDs.
///
/// # Safety
/// The caller runs on `cpu` with preemption off, and does not keep the
/// `&mut AsidPool` past that.
pub unsafe fn this_cpu(cpu: usize) -> Option<(u64, &'static mut AsidPool)> {
    let state = globals()?.cpus.get(cpu)?;
    // SAFETY: only this CPU touches its pool, and preemption is off.
    Some((state.host_vmcb.phys(), unsafe { &mut *state.asids.get() }))
}
// ANCHOR_END: per_cpu

// ANCHOR: arch_svm
impl Arch for Svm {
    fn name(&self) -> &'static str {
        "svm"
    }

    fn check_support(&self) -> Result<(), Unsupported> {
        // SAFETY: `check` reads the MSRs only after CPUID said SVM exists,
        // and VM_CR and EFER exist on every processor with SVM.
        check(insn::cpuid, |msr| unsafe { rdmsr(msr) })
    }

    fn hardware_setup(&self, ncpus: usize) -> KResult<()> {
        let count = insn::cpuid(0x8000_000A)[1];
        let mut cpus = Vec::new();
        cpus.try_reserve_exact(ncpus).map_err(|_| Errno::ENOMEM)?;
        for _ in 0..ncpus {
            let (hsave, host_vmcb) = (Page::alloc_zeroed()?, Page::alloc_zeroed()?);
            cpus.push(CpuState { hsave, host_vmcb, asids: UnsafeCell::new(AsidPool::new(count)) });
        }
        let mut iopm = ContiguousPages::alloc_zeroed(2)?;
        iopm.fill(0xFF);
        let mut msrpm = ContiguousPages::alloc_zeroed(1)?;
        msrpm.fill(0xFF);
        let globals = crate::kernel::try_box(Globals { cpus, iopm, msrpm })?;
        let old = GLOBALS.swap(Box::into_raw(globals), Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: a previous setup's box, never freed: free it now.
            drop(unsafe { Box::from_raw(old) });
        }
        log!(Info, "svm: {count} ASIDs per CPU");
        Ok(())
    }

    fn hardware_unsetup(&self) {
        let old = GLOBALS.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: made by `Box::into_raw` in `hardware_setup`; the swap
            // made this the only owner, and no CPU uses it any more.
            drop(unsafe { Box::from_raw(old) });
        }
    }

    fn hardware_enable(&self, cpu: usize) -> KResult<()> {
        let state = globals().and_then(|g| g.cpus.get(cpu)).ok_or(Errno::ENODEV)?;
        // SAFETY: SVM exists (check_support); EFER and VM_HSAVE_PA are
        // written as 2006's svm_hardware_enable did, on this CPU only.
        unsafe {
            let efer = Efer::from_bits_retain(rdmsr(IA32_EFER));
            if efer.contains(Efer::SVME) {
                log!(Err, "svm: EFER.SVME is already set on CPU {cpu}: another hypervisor runs");
                return Err(Errno::EBUSY);
            }
            wrmsr(IA32_EFER, (efer | Efer::SVME).bits());
            wrmsr(MSR_VM_HSAVE_PA, state.hsave.phys());
        }
        //@ begin 13
        // A CPU that comes back online may have lost or kept its TLB:
        // its next `vmrun` starts a new generation of ASIDs, which flushes
        // them all, as today's `svm_hardware_enable` does.
        // SAFETY: interrupts are off on this CPU, the pool's only user.
        unsafe { (*state.asids.get()).start_over() };
        //@ end
        Ok(())
    }

    fn hardware_disable(&self, _cpu: usize) {
        // SAFETY: clearing VM_HSAVE_PA and EFER.SVME turns SVM off; no
        // vCPU runs (the module is unloading or never loaded).
        unsafe {
            let efer = Efer::from_bits_retain(rdmsr(IA32_EFER));
            if efer.contains(Efer::SVME) {
                wrmsr(MSR_VM_HSAVE_PA, 0);
                wrmsr(IA32_EFER, (efer - Efer::SVME).bits());
            }
        }
    }

    fn vcpu_create(&self) -> KResult<Box<dyn ArchVcpu>> {
        let (iopm, msrpm) = permission_maps().ok_or(Errno::ENODEV)?;
        Ok(crate::kernel::try_box(vcpu::SvmVcpu::new(iopm, msrpm)?)?)
    }
}
// ANCHOR_END: arch_svm

#[cfg(test)]
mod tests {
    use super::*;

    /// A processor: CPUID leaves and MSRs as given.
    fn cpu(svm: bool, vm_cr: u64, efer: u64, asids: u32) -> (impl Fn(u32) -> [u32; 4], impl Fn(u32) -> u64) {
        let cpuid = move |leaf| match leaf {
            0x8000_0000 => [0x8000_001F, 0, 0, 0],
            0x8000_0001 => [0, 0, if svm { CPUID_SVM } else { 0 }, 0],
            0x8000_000A => [1, asids, 0, 0],
            _ => [0; 4],
        };
        let rdmsr = move |msr| {
            assert!(svm, "an MSR read on a processor without SVM would fault");
            match msr {
                MSR_VM_CR => vm_cr,
                IA32_EFER => efer,
                _ => 0,
            }
        };
        (cpuid, rdmsr)
    }

    #[test]
    fn svm_is_found_free_on_a_processor_that_has_it() {
        let (cpuid, rdmsr) = cpu(true, 0, 0xD01, 16);
        assert_eq!(check(cpuid, rdmsr), Ok(()));
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let (cpuid, rdmsr) = cpu(false, 0, 0, 16);
        assert_eq!(check(cpuid, rdmsr), Err(Unsupported::NoExtension("AMD SVM")));
        let (cpuid, rdmsr) = cpu(true, VM_CR_SVMDIS, 0, 16);
        assert_eq!(check(cpuid, rdmsr), Err(Unsupported::DisabledByFirmware("AMD SVM")));
        let (cpuid, rdmsr) = cpu(true, 0, 1 << 12, 16);
        assert_eq!(check(cpuid, rdmsr), Err(Unsupported::InUse("AMD SVM")));
        let (cpuid, rdmsr) = cpu(true, 0, 0, 1);
        assert!(matches!(check(cpuid, rdmsr), Err(Unsupported::MissingFeature(_))));
    }

    #[test]
    fn the_host_build_has_no_svm() {
        assert_eq!(SVM.check_support(), Err(Unsupported::NoExtension("AMD SVM")));
    }

    //@ begin 13
    #[test]
    fn a_pool_started_over_flushes_before_any_asid_is_reused() {
        let mut pool = AsidPool::new(8);
        let old = pool.assign();
        pool.start_over();
        assert_ne!(pool.generation, old.generation, "the vCPU that had ASID 1 takes a new one");
        let new = pool.assign();
        assert!(new.flush_all && new.generation > old.generation, "{new:?}");
    }

    //@ end
    mod e7_3 {
        use super::super::*;

        #[test]
        fn asids_start_at_1_and_count_up() {
            let mut pool = AsidPool::new(4);
            let a = pool.assign();
            assert_eq!(a, Assigned { asid: 1, generation: 1, flush_all: false });
            assert_eq!(pool.assign().asid, 2);
            assert_eq!(pool.assign().asid, 3);
        }

        #[test]
        fn running_out_starts_a_new_generation_with_a_flush() {
            let mut pool = AsidPool::new(3);
            assert_eq!((pool.assign().asid, pool.assign().asid), (1, 2));
            let again = pool.assign();
            assert_eq!(again, Assigned { asid: 1, generation: 2, flush_all: true });
            assert_eq!(pool.assign(), Assigned { asid: 2, generation: 2, flush_all: false });
        }

        /// Pools of every size up to 40 and a large one, each run through
        /// several generations, checked against the rules themselves.
        #[test]
        fn long_runs_keep_the_rules() {
            for count in (0..=40).chain([1 << 16]) {
                let mut pool = AsidPool::new(count);
                let max = pool.max;
                let (mut generation, mut seen) = (1u64, std::collections::BTreeSet::new());
                for n in 0..3 * u64::from(max) + 5 {
                    let a = pool.assign();
                    assert!(a.asid >= 1 && a.asid <= max, "pool of {count}: ASID {}", a.asid);
                    let new_generation = seen.len() == max as usize;
                    if new_generation {
                        generation += 1;
                        seen.clear();
                    }
                    assert_eq!(a.generation, generation, "pool of {count}, assignment {n}");
                    assert_eq!(a.flush_all, new_generation, "pool of {count}, assignment {n}: flush");
                    assert!(seen.insert(a.asid), "pool of {count}: ASID {} twice in generation {generation}", a.asid);
                }
            }
        }

        #[test]
        fn the_host_asid_is_never_handed_out() {
            let mut pool = AsidPool::new(2);
            for _ in 0..5 {
                assert_eq!(pool.assign().asid, 1);
            }
        }
    }
}
