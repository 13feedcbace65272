//@ stage 7
//! One vCPU on SVM: its VMCB, the guest's view of the control registers,
//! and the entry itself.
//!
//! The guest runs with paging forced on, on the module's page table
//! (`mmu::nonpaging`), even in real mode: SVM's "paged real mode" allows
//! CR0.PG=1 with CR0.PE=0 (APM Vol. 2, 15.19 "Paged Real Mode"). So CR0,
//! CR3 and CR4 in the VMCB are the module's, accesses to them exit, and
//! the values the guest believes in live in [`SvmVcpu`]'s shadows.

use super::exit::{self, Guest};
use super::insn;
use super::vmcb::{self, Vmcb, kvm_segment, misc1, misc2, vmcb_segment};
use crate::abi::{KvmDtable, KvmSregs};
use crate::arch::{ArchVcpu, Entry};
use crate::exit::VmExit;
use crate::kernel::fpu::GuestFpu;
use crate::kernel::{KResult, Page};
use crate::arch::x86::{read_dr7, write_dr7};
//@ begin 12
use crate::arch::x86::{read_breakpoints, write_breakpoints};
//@ end
use crate::regs::{Cr0, Cr4, Efer, Reg};

// ANCHOR: cr_bits
/// The CR4 bits a guest without paging may set for itself: VME, PVI,
/// TSD, DE, MCE, PGE, PCE, OSFXSR, OSXMMEXCPT. Not PSE or PAE (the
/// module's table decides the paging mode), nor OSXSAVE (no AVX state:
/// the FPU switch saves legacy state only), nor anything newer.
const CR4_GUEST_BITS: Cr4 = Cr4::OFFERED.difference(Cr4::PSE.union(Cr4::PAE));
const RFLAGS_RESERVED_1: u64 = 1 << 1;
/// RFLAGS bits a guest may hold: CF, PF, AF, ZF, SF, TF, IF, DF, OF,
/// IOPL, NT, RF, VM, AC, VIF, VIP, ID, and the always-one bit 1.
const RFLAGS_VALID: u64 = 0x3F_7FD7;
// ANCHOR_END: cr_bits

// ANCHOR: hw_crs
/// The CR0 the hardware runs with: the guest's, with paging on (the
/// module's table) and write protection, and caches on (2006's
/// `svm_set_cr0` did the same: CD and NW are the host's business).
pub fn hardware_cr0(guest: u64) -> u64 {
    (guest | (Cr0::PG | Cr0::WP | Cr0::ET).bits()) & !(Cr0::CD | Cr0::NW).bits() & 0xFFFF_FFFF
}

/// The CR4 the hardware runs with: PAE, for the module's table.
pub fn hardware_cr4(guest: u64) -> u64 {
    guest & CR4_GUEST_BITS.bits() | Cr4::PAE.bits()
}

/// The EFER the hardware runs with: SVME (VMRUN requires it), no long
/// mode while the guest's paging is off.
//@ begin 8
/// From stage 08, long mode exactly when the guest's is active (the
/// shadow tree then has four levels); while the guest has only set LME,
/// its paging is still off and the module's PAE map runs it.
//@ end
pub fn hardware_efer(guest: u64) -> u64 {
    let guest = Efer::from_bits_retain(guest);
    //@ begin 8
    if guest.contains(Efer::LMA) {
        return (guest & (Efer::SCE | Efer::NXE) | Efer::LME | Efer::LMA | Efer::SVME).bits();
    }
    //@ end
    (guest & (Efer::SCE | Efer::NXE) | Efer::SVME).bits()
}
// ANCHOR_END: hw_crs

/// The guest's view of the registers the VMCB holds the module's values of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Shadows {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
}

/// A vCPU's SVM half.
pub struct SvmVcpu {
    /// The VMCB, a page of its own.
    vmcb_page: Page,
    shadows: Shadows,
    fpu: GuestFpu,
    /// The CPU the vCPU last ran on, and the ASID generation of its ASID.
    cpu: Option<usize>,
    asid_generation: u64,
    //@ begin 12
    /// DR0-DR3 to load for the guest at each entry, if any breakpoint is
    /// on (`set_debug_registers`; DR7 is in the VMCB).
    breakpoints: Option<[u64; 4]>,
    //@ end
}

impl SvmVcpu {
    /// A vCPU with a fresh VMCB; `set_sregs` then gives it its state.
    pub fn new(iopm_pa: u64, msrpm_pa: u64) -> KResult<SvmVcpu> {
        let mut vcpu = SvmVcpu {
            vmcb_page: Page::alloc_zeroed()?,
            shadows: Shadows::default(),
            fpu: GuestFpu::new()?,
            cpu: None,
            asid_generation: 0,
            //@ begin 12
            breakpoints: None,
            //@ end
        };
        init_vmcb(vcpu.vmcb_mut(), iopm_pa, msrpm_pa);
        Ok(vcpu)
    }

    fn vmcb(&self) -> &Vmcb {
        // SAFETY: the page is the module's own, 4 KiB and page aligned, so
        // it holds exactly one `Vmcb` (plain data, valid for any bits);
        // the processor writes it only inside `run`, which takes `&mut self`.
        unsafe { &*self.vmcb_page.addr().cast::<Vmcb>() }
    }

    fn vmcb_mut(&mut self) -> &mut Vmcb {
        // SAFETY: as in `vmcb`; `&mut self` makes this the only reference.
        unsafe { &mut *self.vmcb_page.addr().cast::<Vmcb>() }
    }
}

// ANCHOR: init_vmcb
/// The VMCB's control area, as 2006's `init_vmcb`: what to intercept, and
/// the permission maps. The save area is filled by `set_sregs`.
pub fn init_vmcb(vmcb: &mut Vmcb, iopm_pa: u64, msrpm_pa: u64) {
    let c = &mut vmcb.control;
    // CR0, CR3 and CR4: their reads and writes (bits 0-15 and 16-31).
    let crs = 1 << 0 | 1 << 3 | 1 << 4;
    c.intercept_cr = crs | crs << 16;
    // Debug registers: the host's DR0-DR3 stay live in the guest.
    c.intercept_dr = 0x00FF_00FF;
    // Page faults: on the module's table, they are the MMU's business.
    c.intercept_exceptions = 1 << 14;
    //@ begin 8
    // #DB and #AC: the processor can deliver either forever without an
    // instruction boundary where the host's interrupt would end the run
    // (CVE-2015-8104, CVE-2015-5307); intercepted, each delivery exits
    // and the exit handler gives it back to the guest.
    c.intercept_exceptions |= 1 << 1 | 1 << 17;
    //@ end
    //@ begin 13
    // #MC: a machine check in the guest is the host's to handle
    // (`hardware::machine_check`), as today's `svm_handle_mce` does;
    // 2006 intercepted page faults only.
    c.intercept_exceptions |= 1 << 18;
    //@ end
    c.intercept_misc1 = misc1_intercepts();
    c.intercept_misc2 = misc2::VMRUN
        | misc2::VMMCALL
        | misc2::VMLOAD
        | misc2::VMSAVE
        | misc2::STGI
        | misc2::CLGI
        | misc2::SKINIT
        | misc2::MONITOR
        | misc2::MWAIT
        | misc2::XSETBV;
    c.iopm_base_pa = iopm_pa;
    c.msrpm_base_pa = msrpm_pa;
    c.int_ctl = vmcb::V_INTR_MASKING;
    let s = &mut vmcb.save;
    s.dr6 = 0xFFFF_0FF0;
    s.dr7 = 0x400;
    // The reset value of the PAT (APM Vol. 2, 7.8.2).
    s.g_pat = 0x0007_0406_0007_0406;
}

/// Intercept vector 3: host interrupts (so the host keeps its CPU),
/// `cpuid` and `hlt` (2006's userspace answers them), port I/O and MSRs
/// (through their permission maps), task switches, shutdown, and the
/// instructions that would reach the host's caches or TLB.
pub fn misc1_intercepts() -> u32 {
    misc1::INTR
        | misc1::NMI
        | misc1::SMI
        | misc1::CPUID
        | misc1::INVD
        | misc1::HLT
        | misc1::INVLPGA
        //@ begin 8
        | misc1::INVLPG
        | misc1::RDPMC
        //@ end
        | misc1::IOIO_PROT
        | misc1::MSR_PROT
        | misc1::TASK_SWITCH
        | misc1::SHUTDOWN
}
// ANCHOR_END: init_vmcb

// ANCHOR: sregs
impl SvmVcpu {
    /// Loads the special registers into the VMCB, the control registers
    /// as the hardware must run them.
    fn load_sregs(&mut self, s: &KvmSregs) {
        self.shadows = Shadows { cr0: s.cr0, cr3: s.cr3, cr4: s.cr4, efer: s.efer };
        let paging = (hardware_cr0(s.cr0), hardware_cr4(s.cr4), hardware_efer(s.efer));
        let v = &self.vmcb().save;
        if paging != (v.cr0, v.cr4, v.efer) {
            // "When the VMM changes a guest's paging mode by changing
            // entries in the guest's VMCB, the VMM must ensure that the
            // guest's TLB entries are flushed" (APM Vol. 2, 15.16): a new
            // ASID at the next entry does it.
            self.asid_generation = 0;
        }
        let v = &mut self.vmcb_mut().save;
        (v.cs, v.ds, v.es, v.fs, v.gs, v.ss) =
            (vmcb_segment(&s.cs), vmcb_segment(&s.ds), vmcb_segment(&s.es), vmcb_segment(&s.fs), vmcb_segment(&s.gs), vmcb_segment(&s.ss));
        (v.tr, v.ldtr) = (vmcb_segment(&s.tr), vmcb_segment(&s.ldt));
        (v.gdtr.base, v.gdtr.limit) = (s.gdt.base, s.gdt.limit.into());
        (v.idtr.base, v.idtr.limit) = (s.idt.base, s.idt.limit.into());
        (v.cr0, v.cr4, v.efer) = paging;
        v.cr2 = s.cr2;
        // The CPL is CS's DPL, 0 in real mode (2006's svm_set_segment).
        v.cpl = if Cr0::from_bits_retain(s.cr0).contains(Cr0::PE) { s.cs.dpl & 3 } else { 0 };
    }

    /// After a shutdown the VMCB's content is undefined (APM Vol. 2,
    /// 15.14.3 "Shutdown Intercept"): it is made anew, as 2006 did. Its
    /// save area is filled again by the `set_sregs` with the reset state
    /// that generic code makes after every shutdown.
    fn reinit_after_shutdown(&mut self) {
        let (iopm, msrpm) = (self.vmcb().control.iopm_base_pa, self.vmcb().control.msrpm_base_pa);
        // SAFETY: the page holds the VMCB, which is plain data.
        unsafe { core::ptr::write_bytes(self.vmcb_page.addr(), 0, core::mem::size_of::<Vmcb>()) };
        init_vmcb(self.vmcb_mut(), iopm, msrpm);
        self.load_sregs(&KvmSregs::default());
        self.cpu = None;
    }
}

impl ArchVcpu for SvmVcpu {
    fn get_sregs(&self, s: &mut KvmSregs) {
        let v = &self.vmcb().save;
        (s.cs, s.ds, s.es, s.fs, s.gs, s.ss) =
            (kvm_segment(&v.cs), kvm_segment(&v.ds), kvm_segment(&v.es), kvm_segment(&v.fs), kvm_segment(&v.gs), kvm_segment(&v.ss));
        (s.tr, s.ldt) = (kvm_segment(&v.tr), kvm_segment(&v.ldtr));
        s.gdt = KvmDtable { base: v.gdtr.base, limit: v.gdtr.limit as u16, padding: [0; 3] };
        s.idt = KvmDtable { base: v.idtr.base, limit: v.idtr.limit as u16, padding: [0; 3] };
        (s.cr0, s.cr3, s.cr4, s.efer) = (self.shadows.cr0, self.shadows.cr3, self.shadows.cr4, self.shadows.efer);
        s.cr2 = v.cr2;
    }

    fn set_sregs(&mut self, sregs: &KvmSregs) {
        self.load_sregs(sregs);
    }
    // ANCHOR_END: sregs

    // ANCHOR: run
    fn run(&mut self, entry: &mut Entry<'_>) -> VmExit {
        // A CPU that came online after the module loaded has SVM off:
        // `vmrun` there would fault in the kernel. Refuse the entry instead.
        if !crate::arch::is_on(entry.cpu) {
            return VmExit::FailEntry { hardware_reason: u32::MAX };
        }
        // SAFETY: preemption is off on `entry.cpu` until `run` returns.
        let Some((host_pa, asids)) = (unsafe { super::this_cpu(entry.cpu) }) else {
            return VmExit::FailEntry { hardware_reason: u32::MAX };
        };
        self.prepare(entry, asids);
        let vmcb_pa = self.vmcb_page.phys();
        let dr7 = read_dr7();
        self.fpu.load();
        // SAFETY: SVM is on on this CPU (`is_on`: `hardware_enable` ran
        // here) with its host save area; the VMCB and the host's page are
        // the module's. GIF is clear from `clgi` to `stgi`, so
        // no interrupt or NMI sees the guest's GS base or half-restored
        // state; host interrupts still end the guest's run (INTR
        // intercept, V_INTR_MASKING, RFLAGS.IF=1 at `vmrun`).
        unsafe {
            insn::clgi();
            //@ begin 12
            // The guest's breakpoints, with the host's off (DR7 = 0x400)
            // until its own addresses are back; GIF is clear, so no
            // interrupt handler sees the guest's.
            let host_breakpoints = self.breakpoints.map(|guest| {
                let host = read_breakpoints();
                write_dr7(0x400);
                write_breakpoints(&guest);
                host
            });
            //@ end
            insn::vmsave(host_pa);
            insn::svm_enter(vmcb_pa, host_pa, &mut *entry.regs);
            //@ begin 12
            if let Some(host) = host_breakpoints {
                write_breakpoints(&host);
            }
            //@ end
            insn::stgi();
        }
        self.fpu.save();
        if dr7 != 0x400 {
            // SAFETY: the value read above, on this CPU.
            unsafe { write_dr7(dr7) };
        }
        self.finish(entry)
    }
    // ANCHOR_END: run

    fn skip_instruction(&mut self, rip: &mut u64, len: u8) {
        *rip = rip.wrapping_add(len.into());
        // The skipped instruction's interrupt shadow ends with it.
        self.vmcb_mut().control.int_state &= !1;
    }
    //@ begin 8

    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.vmcb_mut().control.event_inj = event_inj(vector, error_code);
    }

    fn pending_exception(&self) -> Option<u8> {
        const VALID: u64 = 1 << 31;
        const TYPE_EXCEPTION: u64 = 3;
        let e = self.vmcb().control.event_inj;
        (e & VALID != 0 && (e >> 8) & 7 == TYPE_EXCEPTION).then_some(e as u8)
    }

    fn clear_pending_event(&mut self) {
        self.vmcb_mut().control.event_inj = 0;
    }
    //@ end
    //@ begin 12

    // ANCHOR: svm_interrupts
    fn interrupt_allowed(&self) -> bool {
        const VALID: u64 = 1 << 31;
        let c = &self.vmcb().control;
        c.int_state & 1 == 0 && c.event_inj & VALID == 0
    }

    fn inject_interrupt(&mut self, vector: u8) {
        // Type 0, "external or virtual interrupt" (APM Vol. 2, 15.20).
        const VALID: u64 = 1 << 31;
        self.vmcb_mut().control.event_inj = u64::from(vector) | VALID;
    }

    fn set_window_exiting(&mut self, on: bool) {
        let c = &mut self.vmcb_mut().control;
        if on {
            c.int_ctl |= vmcb::V_IRQ | vmcb::V_IGN_TPR | vmcb::V_INTR_PRIO;
            c.intercept_misc1 |= vmcb::misc1::VINTR;
        } else {
            c.int_ctl &= !(vmcb::V_IRQ | vmcb::V_IGN_TPR | vmcb::V_INTR_PRIO);
            c.intercept_misc1 &= !vmcb::misc1::VINTR;
        }
    }
    // ANCHOR_END: svm_interrupts

    // ANCHOR: svm_msrs
    /// The VMCB's save area holds the MSRs `vmload` and `vmsave` switch
    /// (APM Vol. 2, 15.5.2), the segment bases, and the TSC offset.
    fn get_msr(&self, index: u32) -> Option<u64> {
        use crate::exit::msr::{guest_tsc, index::*};
        let v = self.vmcb();
        let s = &v.save;
        Some(match index {
            IA32_SYSENTER_CS => s.sysenter_cs,
            IA32_SYSENTER_ESP => s.sysenter_esp,
            IA32_SYSENTER_EIP => s.sysenter_eip,
            STAR => s.star,
            LSTAR => s.lstar,
            CSTAR => s.cstar,
            SFMASK => s.sfmask,
            KERNEL_GS_BASE => s.kernel_gs_base,
            FS_BASE => s.fs.base,
            GS_BASE => s.gs.base,
            // SAFETY: `rdtsc` has no preconditions at CPL 0.
            IA32_TSC => guest_tsc(unsafe { core::arch::x86_64::_rdtsc() }, v.control.tsc_offset),
            _ => return None,
        })
    }

    fn set_msr(&mut self, index: u32, value: u64) -> bool {
        use crate::exit::msr::{index::*, kept_value, tsc_offset};
        let Some(value) = kept_value(index, value) else { return false };
        let v = self.vmcb_mut();
        let s = &mut v.save;
        match index {
            IA32_SYSENTER_CS => s.sysenter_cs = value,
            IA32_SYSENTER_ESP => s.sysenter_esp = value,
            IA32_SYSENTER_EIP => s.sysenter_eip = value,
            STAR => s.star = value,
            LSTAR => s.lstar = value,
            CSTAR => s.cstar = value,
            SFMASK => s.sfmask = value,
            KERNEL_GS_BASE => s.kernel_gs_base = value,
            FS_BASE => s.fs.base = value,
            GS_BASE => s.gs.base = value,
            // SAFETY: as in `get_msr`.
            IA32_TSC => v.control.tsc_offset = tsc_offset(value, unsafe { core::arch::x86_64::_rdtsc() }),
            _ => return false,
        }
        true
    }
    // ANCHOR_END: svm_msrs

    // SVM runs real mode as it is (APM Vol. 2, 15.19 "Paged Real Mode"):
    // the processor delivers every event and needs no TSS of the module's.
    fn delivers_events(&self) -> bool {
        true
    }

    fn wants_real_mode_tss(&self) -> bool {
        false
    }

    fn set_real_mode_tss(&mut self, _base: Option<u64>) {}

    fn set_debug_registers(&mut self, hw: crate::debug::Hardware) {
        self.vmcb_mut().save.dr7 = hw.dr7;
        self.breakpoints = hw.db;
    }
    //@ end
}

//@ begin 8
// ANCHOR: event_inj
/// The EVENTINJ field that delivers hardware exception `vector` at the next
/// VMRUN (APM Vol. 2, 15.20 "Event Injection", Figure 15-5): the vector in
/// bits 7:0, type 3 ("exception") in bits 10:8, EV (an error code is
/// pushed) in bit 11, V (valid) in bit 31, the error code in bits 63:32.
pub fn event_inj(vector: u8, error_code: Option<u32>) -> u64 {
    const VALID: u64 = 1 << 31;
    const TYPE_EXCEPTION: u64 = 3 << 8;
    const ERROR_CODE_VALID: u64 = 1 << 11;
    let pushed = error_code.map_or(0, |code| ERROR_CODE_VALID | u64::from(code) << 32);
    u64::from(vector) | TYPE_EXCEPTION | pushed | VALID
}
// ANCHOR_END: event_inj
//@ end

// ANCHOR: prepare
impl SvmVcpu {
    /// Everything the VMCB needs before `vmrun`: the registers generic
    /// code keeps, the module's page table, and an ASID valid on this CPU.
    fn prepare(&mut self, entry: &Entry<'_>, asids: &mut super::AsidPool) {
        let new_asid = entry.flush_tlb || self.cpu != Some(entry.cpu) || self.asid_generation != asids.generation;
        let v = self.vmcb_mut();
        v.save.rax = entry.regs[Reg::Rax as usize];
        v.save.rsp = entry.regs[Reg::Rsp as usize];
        v.save.rip = *entry.rip;
        v.save.rflags = *entry.rflags & RFLAGS_VALID | RFLAGS_RESERVED_1;
        v.save.cr3 = entry.mmu_root;
        //@ begin 12
        // DR6 as after reset, so that a #DB's exit shows only its causes.
        v.save.dr6 = crate::debug::DR6_RESET;
        //@ end
        v.control.tlb_control = 0;
        if new_asid {
            let assigned = asids.assign();
            v.control.asid = assigned.asid;
            if assigned.flush_all {
                v.control.tlb_control = vmcb::TLB_CONTROL_FLUSH_ALL;
            }
            self.asid_generation = assigned.generation;
            self.cpu = Some(entry.cpu);
        }
    }

    /// After `#VMEXIT`: the registers back to generic code, an event whose
    /// delivery the exit cut short queued again, and the exit decoded.
    fn finish(&mut self, entry: &mut Entry<'_>) -> VmExit {
        let v = self.vmcb_mut();
        entry.regs[Reg::Rax as usize] = v.save.rax;
        entry.regs[Reg::Rsp as usize] = v.save.rsp;
        *entry.rip = v.save.rip;
        *entry.rflags = v.save.rflags;
        v.control.event_inj = reinject(v.control.exit_int_info);
        let exit = exit::decode(&Guest { vmcb: self.vmcb(), regs: entry.regs, fetch: entry.fetch });
        if exit == VmExit::Shutdown {
            self.reinit_after_shutdown();
        }
        exit
    }
}

/// What to inject at the next entry, given EXITINTINFO (APM Vol. 2,
/// 15.7.2 "Intercepts During IDT Interrupt Delivery"): an interrupt or
/// exception whose delivery the exit interrupted (a page fault on the
/// guest's IDT or stack, say) must be delivered again, or it is lost.
/// A software interrupt (`int n`) and `int3`/`into` are not: their RIP
/// still points at the instruction, which simply runs again.
pub fn reinject(exit_int_info: u64) -> u64 {
    const VALID: u64 = 1 << 31;
    const TYPE_EXCEPTION: u64 = 3;
    const TYPE_SOFTWARE: u64 = 4;
    if exit_int_info & VALID == 0 {
        return 0;
    }
    let kind = (exit_int_info >> 8) & 7;
    let vector = exit_int_info & 0xFF;
    let instruction_made = kind == TYPE_SOFTWARE || (kind == TYPE_EXCEPTION && (vector == 3 || vector == 4));
    if instruction_made { 0 } else { exit_int_info }
}
// ANCHOR_END: prepare

#[cfg(test)]
mod tests {
    use super::*;

    fn vcpu() -> SvmVcpu {
        SvmVcpu::new(0x10_0000, 0x20_0000).expect("a vCPU")
    }

    #[test]
    fn the_vmcb_intercepts_what_isolation_needs() {
        let v = vcpu();
        let c = &v.vmcb().control;
        assert_eq!(c.intercept_misc2 & misc2::VMRUN, misc2::VMRUN, "VMRUN refuses a VMCB without it");
        for bit in [misc1::INTR, misc1::IOIO_PROT, misc1::MSR_PROT, misc1::HLT, misc1::CPUID, misc1::SHUTDOWN] {
            assert_ne!(c.intercept_misc1 & bit, 0, "{bit:#x}");
        }
        assert_eq!(c.intercept_cr, 0x0019_0019, "CR0, CR3, CR4 reads and writes");
        assert_eq!(c.intercept_exceptions & !(1 << 1 | 1 << 17 | 1 << 18), 1 << 14, "#PF: the guest's IDT gets the rest");
        assert_eq!((c.iopm_base_pa, c.msrpm_base_pa), (0x10_0000, 0x20_0000));
        assert_ne!(c.int_ctl & vmcb::V_INTR_MASKING, 0);
    }

    #[test]
    fn the_guest_cannot_turn_on_long_mode_or_avx_for_real() {
        assert_eq!(hardware_efer(0x100 | 1 << 11), 1 << 12 | 1 << 11, "LME alone is not long mode");
        assert_eq!(hardware_efer(1 << 13 | 1), 1 << 12 | 1, "SCE kept, unnamed bits dropped");
        assert_eq!(hardware_cr4(1 << 18 | 1 << 9 | 1 << 4), 1 << 9 | 1 << 5, "no OSXSAVE, no PSE");
        assert_eq!(hardware_cr4(0x7FF | 1 << 13), 0x7EF, "VME to OSXMMEXCPT but PSE, with PAE");
        assert_eq!(hardware_cr0(0x11), 0x8001_0011);
        assert_eq!(hardware_cr0(1 << 40 | 0x6000_0001), 0x8001_0011, "caches on, high half clear");
    }

    #[test]
    fn interrupted_deliveries_are_injected_again_but_not_int_n() {
        let page_fault_during_ud = 1 << 31 | 3 << 8 | 6;
        assert_eq!(reinject(page_fault_during_ud), page_fault_during_ud);
        let external = 1 << 31 | 0x20;
        assert_eq!(reinject(external), external);
        assert_eq!(reinject(1 << 31 | 4 << 8 | 0x21), 0, "int 0x21 runs again");
        assert_eq!(reinject(1 << 31 | 3 << 8 | 3), 0, "int3 runs again");
        assert_eq!(reinject(0x21), 0, "not valid");
    }

    //@ begin 8
    #[test]
    fn debug_and_alignment_exceptions_are_intercepted() {
        let intercepted = vcpu().vmcb().control.intercept_exceptions;
        assert_eq!(intercepted & !(1 << 18), 1 << 1 | 1 << 14 | 1 << 17);
    }
    //@ begin 13

    #[test]
    fn machine_checks_are_intercepted() {
        assert_ne!(vcpu().vmcb().control.intercept_exceptions & 1 << 18, 0);
    }
    //@ end

    #[test]
    fn a_queued_page_fault_is_an_exception_event_with_its_error_code() {
        assert_eq!(event_inj(14, Some(6)), 0x0000_0006_8000_0B0E);
        assert_eq!(event_inj(6, None), 0x8000_0306, "#UD pushes no error code");
        let mut v = vcpu();
        v.queue_exception(13, Some(0));
        assert_eq!(v.vmcb().control.event_inj, 0x8000_0B0D);
    }
    //@ end

    #[test]
    fn skipping_ends_the_interrupt_shadow() {
        let mut v = vcpu();
        v.vmcb_mut().control.int_state = 1;
        let mut rip = 0x8000;
        v.skip_instruction(&mut rip, 2);
        assert_eq!((rip, v.vmcb().control.int_state), (0x8002, 0));
    }

    /// These load segments into the VMCB, which takes E7.1's attributes.
    mod e7_1 {
        use super::super::*;
        use crate::vcpu::Vcpu;
        use super::vcpu;
        use crate::abi::KvmSegment;

        #[test]
        fn real_mode_runs_paged_and_the_guest_sees_its_own_crs() {
            let mut v = vcpu();
            let reset = Vcpu::reset_state().sregs;
            v.set_sregs(&reset);
            let save = &v.vmcb().save;
            assert_eq!(save.cr0, 0x8001_0010, "PG, WP, ET; CD and NW off; PE stays off");
            assert_eq!(save.cr4, 1 << 5, "PAE");
            assert_eq!(save.efer, 1 << 12, "SVME");
            assert_eq!(save.cpl, 0);
            let mut back = KvmSregs::default();
            v.get_sregs(&mut back);
            assert_eq!((back.cr0, back.cr3, back.cr4, back.efer), (0x6000_0010, 0, 0, 0));
            assert_eq!((back.cs, back.ds, back.tr, back.ldt), (reset.cs, reset.ds, reset.tr, reset.ldt));
            assert_eq!((back.gdt, back.idt), (reset.gdt, reset.idt));
        }

        #[test]
        fn protected_mode_cpl_is_cs_dpl() {
            let mut v = vcpu();
            let mut s = Vcpu::reset_state().sregs;
            s.cr0 = 0x11;
            s.cs = KvmSegment { dpl: 3, ..s.cs };
            v.set_sregs(&s);
            assert_eq!(v.vmcb().save.cpl, 3);
        }
    }
}
