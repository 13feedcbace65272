//@ stage 12
//! The guest's MSRs on VMX: where each one the module keeps lives, and
//! the switch of those the VMCS does not hold.
//!
//! - The SYSENTER MSRs have guest-state fields: every VM entry loads the
//!   processor's MSRs from them and every VM exit saves the MSRs back
//!   (SDM Vol. 3C, 27.3.2.1 "Loading Guest Control Registers, Debug
//!   Registers, and MSRs"; 28.3.1 "Saving Control Registers, Debug
//!   Registers, and MSRs"), and the exit loads the host's from the
//!   host-state fields (28.5.1 "Loading Host Control Registers, Debug
//!   Registers, MSRs"), which `host.rs` writes.
//! - FS and GS base are the guest's segment bases, in its `sregs`.
//! - The TSC is the host's plus the VMCS's TSC offset, which the
//!   processor adds to every guest `rdtsc` with "use TSC offsetting"
//!   (SDM Vol. 3C, 25.6.5; 26.3).
//! - STAR, LSTAR, CSTAR, SFMASK and KERNEL_GS_BASE have no field at all:
//!   the module writes the guest's values into the processor before the
//!   entry and the host's back after the exit, with `wrmsr`, as 2006's
//!   `vmx.c` did for two of them (`load_msrs` and `save_msrs`).

use super::fields::{GUEST_SYSENTER_CS, GUEST_SYSENTER_EIP, GUEST_SYSENTER_ESP, TSC_OFFSET};
use super::guest::Fields;
use crate::arch::x86::{rdmsr, wrmsr};
use crate::exit::msr::{guest_tsc, index::*, kept_value, tsc_offset};

// ANCHOR: vmx_msr_home
/// Where the VMX backend keeps an MSR that `exit::msr::home` says is the
/// backend's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxHome {
    /// A guest-state field of the VMCS, which every entry loads and every
    /// exit saves.
    GuestField(u32),
    /// The base of FS or GS, in the guest's `sregs`.
    SegmentBase,
    /// Nowhere in the VMCS: in the processor only while the guest runs
    /// ([`GuestMsrs::swap_in`]); `SWAPPED[i]`.
    Swapped(usize),
    /// The host's TSC plus the TSC offset.
    TscOffset,
}

/// The MSRs VMX does not switch, which the module swaps around the entry:
/// the SYSCALL MSRs and KERNEL_GS_BASE (APM Vol. 2, 6.1.1 and 6.1.2; SDM
/// Vol. 3A, 5.8.8 "Fast System Calls in 64-Bit Mode").
pub const SWAPPED: [u32; 5] = [STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE];

/// Where MSR `index` lives on VMX, or `None` for one the backend does not
/// keep.
pub fn home(index: u32) -> Option<VmxHome> {
    Some(match index {
        IA32_SYSENTER_CS => VmxHome::GuestField(GUEST_SYSENTER_CS),
        IA32_SYSENTER_ESP => VmxHome::GuestField(GUEST_SYSENTER_ESP),
        IA32_SYSENTER_EIP => VmxHome::GuestField(GUEST_SYSENTER_EIP),
        FS_BASE | GS_BASE => VmxHome::SegmentBase,
        IA32_TSC => VmxHome::TscOffset,
        _ => VmxHome::Swapped(SWAPPED.iter().position(|&m| m == index)?),
    })
}
// ANCHOR_END: vmx_msr_home

// ANCHOR: guest_msrs
/// The guest's values of the MSRs the VMX backend keeps outside `sregs`.
/// Every `wrmsr` exits (no MSR bitmaps), so only the module changes them,
/// except KERNEL_GS_BASE, which the guest's `swapgs` exchanges with its GS
/// base without an exit: [`GuestMsrs::swap_out`] reads it back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestMsrs {
    /// SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP.
    sysenter: [u64; 3],
    /// In the order of [`SWAPPED`].
    swapped: [u64; 5],
    tsc_offset: u64,
    /// The SYSENTER values or the TSC offset changed since they were last
    /// written into the VMCS.
    dirty: bool,
}

/// The fields that hold the SYSENTER MSRs, in the order of `sysenter`.
const SYSENTER_FIELDS: [u32; 3] = [GUEST_SYSENTER_CS, GUEST_SYSENTER_ESP, GUEST_SYSENTER_EIP];

impl GuestMsrs {
    /// The reset state: every MSR 0, the guest's TSC the host's, and all
    /// to be written at the next entry.
    pub fn new() -> GuestMsrs {
        GuestMsrs { dirty: true, ..GuestMsrs::default() }
    }

    /// The guest's value of MSR `index` when the host's TSC reads
    /// `host_tsc`; `None` for one kept elsewhere or not at all.
    pub fn get(&self, index: u32, host_tsc: u64) -> Option<u64> {
        match home(index)? {
            VmxHome::GuestField(field) => SYSENTER_FIELDS.iter().zip(self.sysenter).find(|(f, _)| **f == field).map(|(_, v)| v),
            VmxHome::Swapped(i) => self.swapped.get(i).copied(),
            VmxHome::TscOffset => Some(guest_tsc(host_tsc, self.tsc_offset)),
            VmxHome::SegmentBase => None,
        }
    }

    /// Sets it, as `wrmsr` would; `false` for one kept elsewhere or not at
    /// all, or a value the processor refuses. A TSC write sets the offset
    /// so that the guest reads `value` now.
    pub fn set(&mut self, index: u32, value: u64, host_tsc: u64) -> bool {
        let (Some(home), Some(value)) = (home(index), kept_value(index, value)) else { return false };
        let slot = match home {
            VmxHome::GuestField(field) => SYSENTER_FIELDS.iter().position(|&f| f == field).and_then(|i| self.sysenter.get_mut(i)),
            VmxHome::Swapped(i) => {
                return self.swapped.get_mut(i).map(|slot| *slot = value).is_some();
            }
            VmxHome::TscOffset => {
                self.tsc_offset = tsc_offset(value, host_tsc);
                self.dirty = true;
                return true;
            }
            VmxHome::SegmentBase => None,
        };
        let Some(slot) = slot else { return false };
        *slot = value;
        self.dirty = true;
        true
    }

    /// Writes the SYSENTER fields and the TSC offset into the VMCS if they
    /// changed since they were last written, or [`GuestMsrs::rewrite`]
    /// asked for it.
    pub fn write_fields(&mut self, vmcs: &mut dyn Fields) {
        if !self.dirty {
            return;
        }
        for (field, value) in SYSENTER_FIELDS.iter().zip(self.sysenter) {
            vmcs.write(*field, value);
        }
        vmcs.write(TSC_OFFSET, self.tsc_offset);
        self.dirty = false;
    }

    /// Has the next [`GuestMsrs::write_fields`] write every field: the
    /// VMCS's other fields were written anew.
    pub fn rewrite(&mut self) {
        self.dirty = true;
    }
}
// ANCHOR_END: guest_msrs

// ANCHOR: swap
/// The host's values of the [`SWAPPED`] MSRs while the guest's are in the
/// processor. Dropping it without [`GuestMsrs::swap_out`] would leave the
/// guest's values to the host: it must not be dropped.
#[must_use = "the host's MSRs must go back with GuestMsrs::swap_out"]
pub struct HostMsrs([u64; 5]);

impl GuestMsrs {
    /// Puts the guest's values of the [`SWAPPED`] MSRs into the processor
    /// and returns the host's.
    ///
    /// # Safety
    /// Interrupts must be off until [`GuestMsrs::swap_out`], which must
    /// follow on this CPU whatever the entry did: with the guest's LSTAR,
    /// STAR or SFMASK loaded, a `syscall` of a host process would jump to
    /// the guest's address, and with its KERNEL_GS_BASE a context switch
    /// would save it as the task's GS base.
    pub unsafe fn swap_in(&self) -> HostMsrs {
        let mut host = [0; 5];
        for ((msr, saved), guest) in SWAPPED.iter().zip(host.iter_mut()).zip(self.swapped) {
            // SAFETY: the MSRs exist on every 64-bit processor (the
            // module runs only on one); the guest's value passed
            // `kept_value`, so the processor accepts it (canonical
            // addresses, SFMASK's upper half clear); the caller puts the
            // host's back before interrupts are on.
            unsafe {
                *saved = rdmsr(*msr);
                wrmsr(*msr, guest);
            }
        }
        HostMsrs(host)
    }

    /// After the exit (or a failed entry): keeps the guest's
    /// KERNEL_GS_BASE, which its `swapgs` may have changed, and puts the
    /// host's values back.
    ///
    /// # Safety
    /// `host` is what [`GuestMsrs::swap_in`] returned on this CPU, with
    /// interrupts off since.
    pub unsafe fn swap_out(&mut self, host: HostMsrs) {
        if let Some(kernel_gs_base) = self.swapped.last_mut() {
            // SAFETY: KERNEL_GS_BASE exists on every 64-bit processor.
            *kernel_gs_base = unsafe { rdmsr(KERNEL_GS_BASE) };
        }
        for (msr, value) in SWAPPED.iter().zip(host.0) {
            // SAFETY: the host's own values, read by `swap_in` on this CPU.
            unsafe { wrmsr(*msr, value) };
        }
    }
}

/// The host's TSC now.
pub fn host_tsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions at CPL 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}
// ANCHOR_END: swap

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::vmx::guest::tests::FakeVmcs;
    use crate::exit::msr::MSR_INDEX_LIST;

    #[test]
    fn every_msr_of_the_backend_has_one_home_on_vmx() {
        use crate::exit::msr::{MsrHome, home as generic_home};
        for index in MSR_INDEX_LIST.iter().copied().chain([FS_BASE, GS_BASE]) {
            let backend = generic_home(index) == Some(MsrHome::Backend);
            assert_eq!(home(index).is_some(), backend, "{index:#x}");
        }
        assert_eq!(home(IA32_SYSENTER_EIP), Some(VmxHome::GuestField(GUEST_SYSENTER_EIP)));
        assert_eq!(home(KERNEL_GS_BASE), Some(VmxHome::Swapped(4)));
        assert_eq!(home(IA32_TSC), Some(VmxHome::TscOffset));
        assert_eq!((home(IA32_MISC_ENABLE), home(0xC000_0080)), (None, None), "generic code's, and EFER");
    }

    #[test]
    fn values_round_trip_as_the_processor_keeps_them() {
        let mut m = GuestMsrs::new();
        for (index, value) in [(IA32_SYSENTER_ESP, 0xFFFF_8000_0000_1000), (STAR, 0x0023_0010_0000_0000), (LSTAR, 0x1234), (KERNEL_GS_BASE, 0x5000)] {
            assert!(m.set(index, value, 0), "{index:#x}");
            assert_eq!(m.get(index, 0), Some(value), "{index:#x}");
        }
        assert!(m.set(IA32_SYSENTER_CS, 0x1_0008, 0));
        assert_eq!(m.get(IA32_SYSENTER_CS, 0), Some(0x8), "a selector: 16 bits");
        assert!(m.set(SFMASK, 0xFFFF_FFFF_0004_0300, 0));
        assert_eq!(m.get(SFMASK, 0), Some(0x4_0300), "wrmsr would fault on the upper half");
        assert!(!m.set(LSTAR, 0x0000_8000_0000_0000, 0), "not canonical: #GP, never loaded");
        assert_eq!(m.get(LSTAR, 0), Some(0x1234));
        assert!(!m.set(FS_BASE, 0, 0) && m.get(GS_BASE, 0).is_none(), "the segment bases are sregs'");
    }

    #[test]
    fn a_tsc_write_sets_the_offset_from_the_host_tsc() {
        let mut m = GuestMsrs::new();
        assert_eq!(m.get(IA32_TSC, 5_000), Some(5_000), "the host's TSC at reset");
        assert!(m.set(IA32_TSC, 1 << 32, 3_000));
        assert_eq!(m.get(IA32_TSC, 3_000), Some(1 << 32), "the value written, at once");
        assert_eq!(m.get(IA32_TSC, 3_500), Some((1 << 32) + 500), "and counting with the host");
        assert!(m.set(IA32_TSC, 0, u64::MAX));
        assert_eq!(m.get(IA32_TSC, u64::MAX), Some(0), "the offset wraps");
        let mut vmcs = FakeVmcs::default();
        m.write_fields(&mut vmcs);
        assert_eq!(vmcs.read(TSC_OFFSET), 1, "0 - u64::MAX");
    }

    #[test]
    fn the_vmcs_is_written_only_when_something_changed() {
        let mut m = GuestMsrs::new();
        let mut vmcs = FakeVmcs::default();
        m.write_fields(&mut vmcs);
        assert_eq!(vmcs.0.len(), 4, "the three SYSENTER fields and the TSC offset, at reset");
        vmcs.0.clear();
        m.write_fields(&mut vmcs);
        assert!(vmcs.0.is_empty());
        assert!(m.set(LSTAR, 0x1000, 0));
        m.write_fields(&mut vmcs);
        assert!(vmcs.0.is_empty(), "a swapped MSR is not in the VMCS");
        assert!(m.set(IA32_SYSENTER_EIP, 0x2000, 0));
        m.write_fields(&mut vmcs);
        assert_eq!(vmcs.read(GUEST_SYSENTER_EIP), 0x2000);
        vmcs.0.clear();
        m.rewrite();
        m.write_fields(&mut vmcs);
        assert_eq!(vmcs.0.len(), 4, "forced after the fixed fields were written");
    }

    #[test]
    fn swapping_keeps_the_guests_kernel_gs_base() {
        // On the host the MSR wrappers are fakes: every MSR reads as 0.
        let mut m = GuestMsrs::new();
        assert!(m.set(KERNEL_GS_BASE, 0x7000, 0) && m.set(LSTAR, 0x8000, 0));
        // SAFETY: the host fakes touch no processor state.
        let host = unsafe { m.swap_in() };
        // SAFETY: as above.
        unsafe { m.swap_out(host) };
        assert_eq!((m.get(KERNEL_GS_BASE, 0), m.get(LSTAR, 0)), (Some(0), Some(0x8000)), "read back: the fake's 0");
    }
}
