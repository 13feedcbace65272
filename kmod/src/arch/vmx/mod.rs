//@ stage 4
//! The Intel VMX backend, as 2006's `vmx.c`.
//!
//! - `insn`: one wrapper per VMX instruction, and their failures as errors;
//! - `caps`: CPUID, IA32_FEATURE_CONTROL and the capability MSRs;
//! - `vmcs`: VMXON regions and VMCSs;
//! - `vcpu`: a vCPU's VMCS and, from stage 05, its run step;
//! - from stage 05: `fields` (VMCS encodings), `guest` and `host` (the
//!   guest- and host-state areas), `entry` (the entry and exit assembly)
//!   and `exit` (exits decoded into `VmExit`);
//! - from stage 12: `msrs` (where the guest's MSRs live, and their switch)
//!   and `entry_checks` (a protected-mode guest's segments in the form VM
//!   entry accepts);
//! - this file: the backend as a whole, VMX operation on and off.

pub mod caps;
pub mod insn;
pub mod vcpu;
pub mod vmcs;
//@ begin 5
pub mod entry;
pub mod exit;
pub mod fields;
pub mod guest;
pub mod host;
//@ end
//@ begin 12
pub mod entry_checks;
pub mod msrs;
//@ end
//@ begin 13
pub mod loaded;
//@ end

use super::x86::wrmsr;
use super::{Arch, ArchVcpu, Unsupported};
use crate::kernel::{Errno, KResult, cpu};
use crate::log;
use crate::regs::Cr4;
use alloc::boxed::Box;
use alloc::vec::Vec;
use caps::{HardwareMsrs, Msrs, VmxBasic};
use core::sync::atomic::{AtomicPtr, Ordering};
use insn::VmxError;
use vcpu::VmxVcpu;
use vmcs::Region;

/// The VMX backend.
pub struct Vmx;

/// The one value of it, which `arch::select` offers.
pub static VMX: Vmx = Vmx;

/// Each CPU's VMXON region, indexed by CPU number, from `hardware_setup`
/// to `hardware_unsetup`.
static VMXON_REGIONS: AtomicPtr<Vec<Region>> = AtomicPtr::new(core::ptr::null_mut());

// ANCHOR: check_support
/// Checks that this processor can run the backend, and records its VMCS
/// revision identifier. Changes no hardware state.
fn check_support() -> Result<VmxBasic, Unsupported> {
    if !caps::cpu_has_vmx() {
        return Err(Unsupported::NoExtension("VMX (Intel VT-x): CPUID.1:ECX.VMX is 0"));
    }
    let msrs = HardwareMsrs;
    if caps::feature_control_update(msrs.read(caps::IA32_FEATURE_CONTROL)).is_err() {
        return Err(Unsupported::DisabledByFirmware(
            "VMX (IA32_FEATURE_CONTROL is locked without VMXON outside SMX; enable \"Intel Virtualization Technology\" in the firmware setup)",
        ));
    }
    if Cr4::from_bits_retain(cpu::read_cr4()).contains(Cr4::VMXE) {
        return Err(Unsupported::InUse("VMX (CR4.VMXE is set)"));
    }
    let basic = VmxBasic::from_msr(msrs.read(caps::IA32_VMX_BASIC));
    if basic.check().is_err() {
        return Err(Unsupported::MissingFeature("a write-back VMCS region of at most 4 KiB (IA32_VMX_BASIC)"));
    }
    //@ begin 5
    if let Err(missing) = caps::Controls::for_processor(&msrs, basic.true_controls) {
        log!(Err, "VMX lacks controls rkvm needs: {missing:?}");
        return Err(Unsupported::MissingFeature("VM-execution controls rkvm needs (HLT, I/O and CR3 exiting, a 64-bit host)"));
    }
    //@ end
    vmcs::set_revision_id(basic.revision_id);
    Ok(basic)
}
// ANCHOR_END: check_support

impl Arch for Vmx {
    fn name(&self) -> &'static str {
        "vmx"
    }

    fn check_support(&self) -> Result<(), Unsupported> {
        check_support().map(|_| ())
    }

    // ANCHOR: hardware_setup
    /// One VMXON region per CPU (2006's `alloc_kvm_area`).
    fn hardware_setup(&self, ncpus: usize) -> KResult<()> {
        let mut regions = Vec::new();
        regions.try_reserve_exact(ncpus).map_err(|_| Errno::ENOMEM)?;
        for _ in 0..ncpus {
            regions.push(Region::new()?);
        }
        let regions = crate::kernel::try_box(regions)?;
        //@ begin 13
        loaded::setup(ncpus)?;
        //@ end
        let old = VMXON_REGIONS.swap(Box::into_raw(regions), Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: a table left by an earlier setup, owned by nobody else.
            drop(unsafe { Box::from_raw(old) });
        }
        Ok(())
    }

    fn hardware_unsetup(&self) {
        let old = VMXON_REGIONS.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: made by `hardware_setup` with `Box::into_raw`; every
            // CPU is off, so the processor no longer uses the regions.
            drop(unsafe { Box::from_raw(old) });
        }
        //@ begin 13
        loaded::unsetup();
        //@ end
    }
    // ANCHOR_END: hardware_setup

    fn hardware_enable(&self, cpu: usize) -> KResult<()> {
        // SAFETY: the table lives from setup to unsetup, which bracket
        // every enable and disable.
        let regions = unsafe { VMXON_REGIONS.load(Ordering::Acquire).as_ref() };
        let Some(region) = regions.and_then(|r| r.get(cpu)) else { return Err(Errno::EINVAL) };
        hardware_enable(region.phys()).map_err(|e| {
            log!(Err, "CPU {cpu}: {e:?}: {}", e.advice());
            match e {
                EnableError::InUse | EnableError::Vmxon(_) => Errno::EBUSY,
                _ => Errno::EOPNOTSUPP,
            }
        })
    }

    /// Called only on CPUs that `hardware_enable` turned on.
    fn hardware_disable(&self, _cpu: usize) {
        hardware_disable();
    }

    fn vcpu_create(&self) -> KResult<Box<dyn ArchVcpu>> {
        Ok(crate::kernel::try_box(VmxVcpu::new()?)?)
    }
    //@ begin 13

    // ANCHOR: clear_cpu
    /// Every VMCS active here is written back and made inactive, so that
    /// VMXOFF loses nothing and the vCPUs can be loaded on other CPUs.
    fn clear_cpu(&self, cpu: usize) {
        let n = loaded::clear_all(cpu);
        if n > 0 {
            log!(Info, "vmx: CPU {cpu}: {n} active VMCS cleared before VMXOFF");
        }
    }
    // ANCHOR_END: clear_cpu
    //@ end
}

/// Why VMX could not be turned on on one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// CR4.VMXE was set already: another hypervisor runs VMX here.
    InUse,
    /// IA32_FEATURE_CONTROL forbids VMXON on this CPU.
    DisabledByFirmware,
    /// CR0 or CR4 has bits VMX operation does not allow (the mask).
    FixedBits(u64),
    /// VMXON itself failed.
    Vmxon(VmxError),
}

impl EnableError {
    /// A log line that says what to do.
    pub fn advice(&self) -> &'static str {
        match self {
            EnableError::InUse => "VMX is already in use by another hypervisor (CR4.VMXE is set): unload it first (`rmmod kvm_intel`, or stop its VMs)",
            EnableError::DisabledByFirmware => "VMX is disabled by the firmware: enable \"Intel Virtualization Technology\" (VT-x) in the firmware setup",
            EnableError::FixedBits(_) => "CR0 or CR4 has a value VMX operation forbids (IA32_VMX_CR0/CR4_FIXED0/1)",
            EnableError::Vmxon(_) => "VMXON failed: VMX may be in use by another hypervisor; unload it first (`rmmod kvm_intel`)",
        }
    }
}

/// Reads CR0, every bit of it: the `x86` crate's `cr0()` keeps only the
/// bits its type names.
fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effects; the module runs at CPL 0.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) value, options(nostack, nomem)) };
    value
}

// ANCHOR: enable
/// Turns VMX on on this CPU, with `vmxon_region` (the physical address of
/// this CPU's VMXON region): IA32_FEATURE_CONTROL, CR4.VMXE, VMXON, in the
/// order of SDM Vol. 3C, 24.7: "Before system software can enter VMX
/// operation, it enables VMX by setting CR4.VMXE[bit 13] = 1." Runs with
/// interrupts disabled, on the CPU it enables. On failure the CPU is left
/// as it was found.
pub fn hardware_enable(vmxon_region: u64) -> Result<(), EnableError> {
    let msrs = HardwareMsrs;
    if Cr4::from_bits_retain(cpu::read_cr4()).contains(Cr4::VMXE) {
        return Err(EnableError::InUse);
    }
    match caps::feature_control_update(msrs.read(caps::IA32_FEATURE_CONTROL)) {
        Err(_) => return Err(EnableError::DisabledByFirmware),
        // SAFETY: the MSR is unlocked, so writing it cannot fault; the new
        // value only adds the lock and the permission for VMXON.
        Ok(Some(value)) => unsafe { wrmsr(caps::IA32_FEATURE_CONTROL, value) },
        Ok(None) => {}
    }
    let bad = caps::fixed_bits_violations(read_cr0(), msrs.read(caps::IA32_VMX_CR0_FIXED0), msrs.read(caps::IA32_VMX_CR0_FIXED1))
        | caps::fixed_bits_violations(cpu::read_cr4() | Cr4::VMXE.bits(), msrs.read(caps::IA32_VMX_CR4_FIXED0), msrs.read(caps::IA32_VMX_CR4_FIXED1));
    if bad != 0 {
        return Err(EnableError::FixedBits(bad));
    }
    cpu::cr4_set_bits(Cr4::VMXE.bits());
    // SAFETY: CR4.VMXE is set, IA32_FEATURE_CONTROL allows VMXON, CR0 and
    // CR4 meet the fixed bits, and the region is this CPU's own page.
    if let Err(e) = unsafe { insn::vmxon(vmxon_region) } {
        cpu::cr4_clear_bits(Cr4::VMXE.bits());
        return Err(EnableError::Vmxon(e));
    }
    Ok(())
}

/// Turns VMX off on this CPU: VMXOFF, then CR4.VMXE cleared. Only for a
/// CPU that [`hardware_enable`] turned on, with no VMCS current on it.
pub fn hardware_disable() {
    // SAFETY: the caller turned VMX on on this CPU. A VMCS stays active on
    // the CPU of its last KVM_RUN after the ioctl returns, until its vCPU
    // is freed: `Vmcs::drop` VMCLEARs it there, writing it back. This runs
    // when the module unloads or its load fails, which happens only once
    // every file of /dev/rkvm is closed and so every vCPU freed (or none
    // made): no VMCS of rkvm is active here, and no guest runs.
    if let Err(e) = unsafe { insn::vmxoff() } {
        log!(Err, "VMXOFF failed on CPU {}: {e:?}", cpu::current_cpu());
    }
    cpu::cr4_clear_bits(Cr4::VMXE.bits());
}
// ANCHOR_END: enable
