//! The linux-kvm backend: today's KVM API on `/dev/kvm`, through the
//! `kvm-ioctls` crate. This is the oracle: a hypervisor nobody here wrote.
//!
//! Today's API differs from 2006's in ways this file hides: the VM and the
//! vCPU are file descriptors of their own; `struct kvm_run` is a page that
//! userspace maps from the vCPU; memory is userspace's, lent to the VM with
//! `KVM_SET_USER_MEMORY_REGION`; `in`/`ins` data goes into that page (at
//! `io.data_offset`) and KVM finishes the instruction itself on the next
//! `KVM_RUN`; and KVM answers `cpuid` in the kernel, from a table userspace
//! sets with `KVM_SET_CPUID2`. The runner sets the host's supported table
//! with its own fixed leaves on top, so a guest sees the same values as on
//! the rkvm backend. (Without a table, KVM also treats EFER.LME as a
//! reserved bit, and entering long mode faults.)

use super::Vcpu;
use super::mapping::Mapping;
use crate::devices::CPUID_TABLE;
use crate::exit::{Exit, Reply};
use crate::layout::{StartState, apply_sregs};
use anyhow::{Context, Result, bail};
use kvm_bindings::{
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_UNKNOWN, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_dtable, kvm_regs,
    kvm_segment, kvm_sregs, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::os::fd::AsRawFd;
use rkvm::abi::{KvmDtable, KvmRegs, KvmSegment, KvmSregs};

/// Where KVM may put the real-mode TSS that Intel CPUs without
/// "unrestricted guest" need: three pages just below 4 GiB - 256 KiB, far
/// from guest memory (QEMU's choice). Other CPUs ignore it.
const TSS_ADDR: usize = 0xFFFB_D000;

/// What the last exit left for `reply` to finish: where in the `kvm_run`
/// page KVM wants the data of an `in` or an MMIO read.
enum Pending {
    Nothing,
    Data { ptr: *mut u8, len: usize },
}

pub struct LinuxKvm {
    // Field order is drop order: the vCPU and the VM go before the memory
    // they use.
    vcpu: VcpuFd,
    vm: VmFd,
    _kvm: Kvm,
    memory: Mapping,
    pending: Pending,
}

impl LinuxKvm {
    /// A VM with `memory_size` bytes at guest-physical 0 and one vCPU.
    pub fn open(memory_size: u64, log_dirty: bool) -> Result<LinuxKvm> {
        let kvm = Kvm::new().context("cannot open /dev/kvm (does this machine have KVM? load kvm_intel or kvm_amd)")?;
        let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
        vm.set_tss_address(TSS_ADDR).context("KVM_SET_TSS_ADDR")?;
        let memory = Mapping::anonymous(memory_size)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: if log_dirty { kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
            guest_phys_addr: 0,
            memory_size,
            userspace_addr: memory.addr(),
        };
        // SAFETY: the region is our own mapping of exactly `memory_size`
        // bytes, and `LinuxKvm` drops the VM before the mapping.
        unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;
        let vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
        set_cpuid(&kvm, &vcpu)?;
        Ok(LinuxKvm { vcpu, vm, _kvm: kvm, memory, pending: Pending::Nothing })
    }

    /// The size of the current I/O exit's elements, from `kvm_run.io`.
    fn io_size(&mut self) -> u8 {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called only after an I/O exit, when `io` is the union's
        // valid member; it is plain integers either way.
        unsafe { run.__bindgen_anon_1.io }.size
    }

    /// The hardware's reason for `KVM_EXIT_UNKNOWN`, or an internal error's
    /// suberror.
    fn exit_detail(&mut self, reason: u32) -> u64 {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: `reason` names the valid member of the union; both are
        // plain integers.
        unsafe {
            match reason {
                KVM_EXIT_UNKNOWN => run.__bindgen_anon_1.hw.hardware_exit_reason,
                KVM_EXIT_INTERNAL_ERROR => run.__bindgen_anon_1.internal.suberror.into(),
                _ => 0,
            }
        }
    }
}

/// The host's supported CPUID table, with the runner's leaves in place of
/// whatever the host had at those numbers.
fn set_cpuid(kvm: &Kvm, vcpu: &VcpuFd) -> Result<()> {
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).context("KVM_GET_SUPPORTED_CPUID")?;
    cpuid.retain(|entry| CPUID_TABLE.iter().all(|(leaf, _)| entry.function != *leaf));
    for (leaf, [eax, ebx, ecx, edx]) in CPUID_TABLE {
        let entry = kvm_cpuid_entry2 { function: leaf, eax, ebx, ecx, edx, ..Default::default() };
        cpuid.push(entry).map_err(|e| anyhow::anyhow!("CPUID table full: {e:?}"))?;
    }
    vcpu.set_cpuid2(&cpuid).context("KVM_SET_CPUID2")
}

impl Vcpu for LinuxKvm {
    fn memory(&mut self) -> &mut [u8] {
        self.memory.as_mut_slice()
    }

    fn set_state(&mut self, start: &StartState) -> Result<()> {
        let current = self.vcpu.get_sregs().context("KVM_GET_SREGS")?;
        let mut sregs = from_kvm_sregs(&current);
        apply_sregs(&start.sregs, &mut sregs);
        self.vcpu.set_sregs(&to_kvm_sregs(&sregs, current)).context("KVM_SET_SREGS")?;
        self.vcpu.set_regs(&to_kvm_regs(&start.regs)).context("KVM_SET_REGS")
    }

    fn run(&mut self) -> Result<Exit> {
        self.pending = Pending::Nothing;
        let (exit, pending) = match self.vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => return Ok(Exit::Interrupted),
            Err(e) => return Err(e).context("KVM_RUN"),
            Ok(VcpuExit::IoOut(port, data)) => (Exit::IoOut { port, size: 0, data: data.to_vec() }, Pending::Nothing),
            Ok(VcpuExit::IoIn(port, data)) => {
                let pending = Pending::Data { ptr: data.as_mut_ptr(), len: data.len() };
                (Exit::IoIn { port, size: 0, count: data.len() as u64 }, pending)
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => (Exit::MmioWrite { addr, data: data.to_vec() }, Pending::Nothing),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                let pending = Pending::Data { ptr: data.as_mut_ptr(), len: data.len() };
                (Exit::MmioRead { addr, len: data.len() as u8 }, pending)
            }
            Ok(VcpuExit::Hlt) => (Exit::Hlt, Pending::Nothing),
            Ok(VcpuExit::IrqWindowOpen) => (Exit::IrqWindowOpen, Pending::Nothing),
            Ok(VcpuExit::Debug(_)) => (Exit::Debug, Pending::Nothing),
            Ok(VcpuExit::Shutdown) => (Exit::Shutdown, Pending::Nothing),
            Ok(VcpuExit::FailEntry(reason, _cpu)) => (Exit::FailEntry { reason }, Pending::Nothing),
            Ok(_) => (Exit::Unknown { reason: u32::MAX, detail: 0 }, Pending::Nothing),
        };
        self.pending = pending;
        Ok(self.complete_exit(exit))
    }

    fn reply(&mut self, reply: Reply) -> Result<()> {
        let Pending::Data { ptr, len } = std::mem::replace(&mut self.pending, Pending::Nothing) else {
            return Ok(());
        };
        let (Reply::In(data) | Reply::Mmio(data)) = reply else {
            bail!("internal error: reply {reply:?} does not fit the last exit");
        };
        if data.len() != len {
            bail!("internal error: the exit wants {len} bytes, the reply has {}", data.len());
        }
        // SAFETY: `ptr` and `len` are the data slice of the last exit, in
        // the vCPU's `kvm_run` mapping, which lives as long as `self.vcpu`;
        // nothing else refers to it until the next `KVM_RUN`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, len) };
        Ok(())
    }

    fn regs(&mut self) -> Result<KvmRegs> {
        let r = self.vcpu.get_regs().context("KVM_GET_REGS")?;
        Ok(KvmRegs {
            rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx,
            rsi: r.rsi, rdi: r.rdi, rsp: r.rsp, rbp: r.rbp,
            r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11,
            r12: r.r12, r13: r.r13, r14: r.r14, r15: r.r15,
            rip: r.rip, rflags: r.rflags,
            ..KvmRegs::default()
        })
    }

    fn dirty_log(&mut self) -> Result<Vec<u64>> {
        let size = self.memory.as_mut_slice().len();
        let words = self.vm.get_dirty_log(0, size).context("KVM_GET_DIRTY_LOG of slot 0")?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        Ok(super::dirty_frames(&bytes))
    }

    fn save(&mut self) -> Result<(KvmRegs, KvmSregs)> {
        let sregs = from_kvm_sregs(&self.vcpu.get_sregs().context("KVM_GET_SREGS")?);
        Ok((self.regs()?, sregs))
    }

    fn restore(&mut self, regs: &KvmRegs, sregs: &KvmSregs) -> Result<()> {
        let current = self.vcpu.get_sregs().context("KVM_GET_SREGS")?;
        self.vcpu.set_sregs(&to_kvm_sregs(sregs, current)).context("KVM_SET_SREGS")?;
        self.vcpu.set_regs(&to_kvm_regs(regs)).context("KVM_SET_REGS")
    }

    fn interrupt_ready(&mut self) -> bool {
        self.vcpu.get_kvm_run().ready_for_interrupt_injection != 0
    }

    fn interrupt(&mut self, vector: u8) -> Result<()> {
        // `_IOW(KVMIO, 0x86, struct kvm_interrupt)`, which kvm-ioctls does
        // not wrap: without an in-kernel interrupt controller, today's KVM
        // takes interrupts from userspace as 2006's did.
        const KVM_INTERRUPT: libc::c_ulong = 0x4004_AE86;
        let irq = kvm_bindings::kvm_interrupt { irq: vector.into() };
        // SAFETY: the vCPU's descriptor, and a `kvm_interrupt` the kernel
        // only reads, alive for the call.
        let result = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_INTERRUPT as _, &irq) };
        if result < 0 {
            return Err(std::io::Error::last_os_error()).context("KVM_INTERRUPT");
        }
        Ok(())
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.vcpu.get_kvm_run().request_interrupt_window = u8::from(on);
    }

    fn set_debug(&mut self, debug: &super::Debug) -> Result<()> {
        // Today's form of 2006's KVM_DEBUG_GUEST: DR0-DR3 and DR7 as the
        // debugger wants them, each breakpoint a global execution one.
        let mut dbg = kvm_bindings::kvm_guest_debug::default();
        if debug.attached() {
            dbg.control = kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_USE_HW_BP;
            if debug.singlestep {
                dbg.control |= kvm_bindings::KVM_GUESTDBG_SINGLESTEP;
            }
            let mut dr7 = 0x400;
            for (i, b) in debug.breakpoints.iter().enumerate() {
                if let Some(address) = *b {
                    dbg.arch.debugreg[i] = address;
                    dr7 |= 2 << (2 * i);
                }
            }
            dbg.arch.debugreg[7] = dr7;
        }
        self.vcpu.set_guest_debug(&dbg).context("KVM_SET_GUEST_DEBUG")
    }
}

impl LinuxKvm {
    /// Fills in what `VcpuExit` leaves out: the element size of port I/O
    /// (and so an `ins`'s count), and the reason of an exit it does not name.
    fn complete_exit(&mut self, exit: Exit) -> Exit {
        match exit {
            Exit::IoOut { port, data, .. } => Exit::IoOut { port, size: self.io_size(), data },
            Exit::IoIn { port, count: bytes, .. } => {
                let size = self.io_size();
                Exit::IoIn { port, size, count: bytes / u64::from(size.max(1)) }
            }
            Exit::Unknown { .. } => {
                let reason = self.vcpu.get_kvm_run().exit_reason;
                Exit::Unknown { reason, detail: self.exit_detail(reason) }
            }
            exit => exit,
        }
    }
}

fn to_kvm_regs(r: &KvmRegs) -> kvm_regs {
    kvm_regs {
        rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx,
        rsi: r.rsi, rdi: r.rdi, rsp: r.rsp, rbp: r.rbp,
        r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11,
        r12: r.r12, r13: r.r13, r14: r.r14, r15: r.r15,
        rip: r.rip, rflags: r.rflags,
    }
}

fn from_kvm_segment(s: &kvm_segment) -> KvmSegment {
    KvmSegment {
        base: s.base, limit: s.limit, selector: s.selector, type_: s.type_, present: s.present,
        dpl: s.dpl, db: s.db, s: s.s, l: s.l, g: s.g, avl: s.avl, unusable: s.unusable, padding: 0,
    }
}

fn to_kvm_segment(s: &KvmSegment) -> kvm_segment {
    kvm_segment {
        base: s.base, limit: s.limit, selector: s.selector, type_: s.type_, present: s.present,
        dpl: s.dpl, db: s.db, s: s.s, l: s.l, g: s.g, avl: s.avl, unusable: s.unusable, padding: 0,
    }
}

/// Today's `kvm_sregs` in 2006's shape, for the fields both have.
fn from_kvm_sregs(k: &kvm_sregs) -> KvmSregs {
    let table = |t: &kvm_dtable| KvmDtable { base: t.base, limit: t.limit, padding: [0; 3] };
    KvmSregs {
        cs: from_kvm_segment(&k.cs), ds: from_kvm_segment(&k.ds), es: from_kvm_segment(&k.es),
        fs: from_kvm_segment(&k.fs), gs: from_kvm_segment(&k.gs), ss: from_kvm_segment(&k.ss),
        tr: from_kvm_segment(&k.tr), ldt: from_kvm_segment(&k.ldt),
        gdt: table(&k.gdt), idt: table(&k.idt),
        cr0: k.cr0, cr2: k.cr2, cr3: k.cr3, cr4: k.cr4, cr8: k.cr8, efer: k.efer, apic_base: k.apic_base,
        ..KvmSregs::default()
    }
}

/// `s` written over today's `base`, which keeps what 2006 lacks.
fn to_kvm_sregs(s: &KvmSregs, base: kvm_sregs) -> kvm_sregs {
    let table = |t: &KvmDtable| kvm_dtable { base: t.base, limit: t.limit, padding: [0; 3] };
    kvm_sregs {
        cs: to_kvm_segment(&s.cs), ds: to_kvm_segment(&s.ds), es: to_kvm_segment(&s.es),
        fs: to_kvm_segment(&s.fs), gs: to_kvm_segment(&s.gs), ss: to_kvm_segment(&s.ss),
        tr: to_kvm_segment(&s.tr), ldt: to_kvm_segment(&s.ldt),
        gdt: table(&s.gdt), idt: table(&s.idt),
        cr0: s.cr0, cr2: s.cr2, cr3: s.cr3, cr4: s.cr4, cr8: s.cr8, efer: s.efer, apic_base: s.apic_base,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Mode;
    use crate::layout::start_state;

    #[test]
    fn sregs_survive_the_trip_through_todays_layout() {
        let start = start_state(Mode::Long64).sregs;
        let back = from_kvm_sregs(&to_kvm_sregs(&start, kvm_sregs::default()));
        assert_eq!(back, start);
    }

    #[test]
    fn registers_keep_their_names() {
        let regs = KvmRegs { rax: 1, r15: 15, rip: 0x8000, rflags: 2, ..KvmRegs::default() };
        let k = to_kvm_regs(&regs);
        assert_eq!((k.rax, k.r15, k.rip, k.rflags), (1, 15, 0x8000, 2));
    }
}
