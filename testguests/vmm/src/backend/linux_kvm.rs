//! The linux-kvm backend: today's KVM API on `/dev/kvm` through the
//! `kvm-ioctls` crate, with no in-kernel irqchip: the 8259s and the 8254
//! are the VMM's, and interrupts go in through `KVM_INTERRUPT`, which
//! `kvm-ioctls` does not wrap (a VMM with an in-kernel irqchip never needs
//! it), so this file makes that one ioctl itself.
//!
//! Without an irqchip KVM keeps 2006's manners: `hlt` exits to userspace
//! (`KVM_EXIT_HLT`), and `kvm_run` carries `request_interrupt_window`,
//! `ready_for_interrupt_injection` and `if_flag` as it did then.

use super::mapping::Mapping;
use super::{Exit, Reply, Vcpu};
use crate::boot::{BootState, Segment};
use crate::cpuid;
use anyhow::{Context, Result, bail};
use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_interrupt, kvm_segment, kvm_userspace_memory_region,
};
use kvm_bindings::CpuId;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::os::fd::AsRawFd;

/// Where KVM may put the real-mode TSS that Intel processors without
/// "unrestricted guest" need: below 4 GiB, far from guest memory.
const TSS_ADDR: usize = 0xFFFB_D000;

/// `KVM_INTERRUPT` = `_IOW(KVMIO, 0x86, struct kvm_interrupt)`.
const KVM_INTERRUPT: libc::c_ulong = 0x4004_AE86;
const _: () = assert!(size_of::<kvm_interrupt>() == 4);

/// Where in the `kvm_run` page KVM wants the data of the last `in` or
/// MMIO read.
enum Pending {
    Nothing,
    Data { ptr: *mut u8, len: usize },
}

pub struct LinuxKvm {
    // Field order is drop order: the vCPU and the VM go before the memory.
    vcpu: VcpuFd,
    _vm: VmFd,
    kvm: Kvm,
    memory: Mapping,
    pending: Pending,
}

impl LinuxKvm {
    pub fn open(memory_size: u64) -> Result<LinuxKvm> {
        let kvm = Kvm::new().context("cannot open /dev/kvm (load kvm_amd or kvm_intel, or use --backend rkvm)")?;
        let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
        vm.set_tss_address(TSS_ADDR).context("KVM_SET_TSS_ADDR")?;
        let memory = Mapping::anonymous(memory_size)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size,
            userspace_addr: memory.addr(),
        };
        // SAFETY: the region is our own mapping of exactly `memory_size`
        // bytes, and `LinuxKvm` drops the VM before the mapping.
        unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;
        let vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
        Ok(LinuxKvm { vcpu, _vm: vm, kvm, memory, pending: Pending::Nothing })
    }

    /// The element size of the current I/O exit.
    fn io_size(&mut self) -> u8 {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called only after an I/O exit, when `io` is the union's
        // valid member; it is plain integers either way.
        unsafe { run.__bindgen_anon_1.io }.size
    }
}

/// The exit `KVM_RUN` gave, as owned values, and where its data goes.
fn decode(request: Result<VcpuExit<'_>, kvm_ioctls::Error>) -> Result<(Exit, Pending)> {
    Ok(match request {
        Err(e) if e.errno() == libc::EINTR => (Exit::Interrupted, Pending::Nothing),
        Err(e) => return Err(e).context("KVM_RUN"),
        Ok(VcpuExit::IoOut(port, data)) => (Exit::IoOut { port, size: 0, data: data.to_vec() }, Pending::Nothing),
        Ok(VcpuExit::IoIn(port, data)) => {
            let pending = Pending::Data { ptr: data.as_mut_ptr(), len: data.len() };
            (Exit::IoIn { port, size: 0, count: data.len() as u32 }, pending)
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => (Exit::MmioWrite { addr, data: data.to_vec() }, Pending::Nothing),
        Ok(VcpuExit::MmioRead(addr, data)) => {
            let pending = Pending::Data { ptr: data.as_mut_ptr(), len: data.len() };
            (Exit::MmioRead { addr, len: data.len() as u8 }, pending)
        }
        Ok(VcpuExit::Hlt) => (Exit::Hlt { interrupts_enabled: false }, Pending::Nothing),
        Ok(VcpuExit::IrqWindowOpen) => (Exit::IrqWindowOpen, Pending::Nothing),
        Ok(VcpuExit::Intr) => (Exit::Interrupted, Pending::Nothing),
        Ok(VcpuExit::Shutdown) => (Exit::Shutdown, Pending::Nothing),
        Ok(VcpuExit::FailEntry(reason, cpu)) => {
            (Exit::Failed(format!("KVM_EXIT_FAIL_ENTRY: hardware reason {reason:#x} on CPU {cpu}")), Pending::Nothing)
        }
        Ok(VcpuExit::InternalError) => (Exit::Failed("KVM_EXIT_INTERNAL_ERROR".into()), Pending::Nothing),
        Ok(other) => (Exit::Failed(format!("an exit this VMM does not handle: {other:?}")), Pending::Nothing),
    })
}

impl LinuxKvm {
    /// Fills in what `VcpuExit` leaves out: the I/O element size, and IF.
    fn complete_exit(&mut self, exit: Exit) -> Exit {
        match exit {
            Exit::IoOut { port, data, .. } => Exit::IoOut { port, size: self.io_size(), data },
            Exit::IoIn { port, count: bytes, .. } => {
                let size = self.io_size();
                Exit::IoIn { port, size, count: bytes / u32::from(size.max(1)) }
            }
            Exit::Hlt { .. } => Exit::Hlt { interrupts_enabled: self.vcpu.get_kvm_run().if_flag != 0 },
            exit => exit,
        }
    }
}

impl Vcpu for LinuxKvm {
    fn memory(&mut self) -> &mut [u8] {
        self.memory.as_mut_slice()
    }

    fn memory_flags(&self) -> i32 {
        self.memory.flags()
    }

    fn set_boot_state(&mut self, state: &BootState) -> Result<()> {
        let mut sregs = self.vcpu.get_sregs().context("KVM_GET_SREGS")?;
        let code = to_kvm_segment(&state.code);
        let data = to_kvm_segment(&state.data);
        (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (code, data, data, data, data, data);
        sregs.gdt.base = state.gdt_base;
        sregs.gdt.limit = state.gdt_limit;
        sregs.cr0 = state.cr0;
        sregs.efer = 0;
        self.vcpu.set_sregs(&sregs).context("KVM_SET_SREGS")?;
        let mut regs = self.vcpu.get_regs().context("KVM_GET_REGS")?;
        (regs.rip, regs.rsi, regs.rflags) = (state.rip, state.rsi, state.rflags);
        self.vcpu.set_regs(&regs).context("KVM_SET_REGS")
    }

    fn supported_cpuid(&mut self) -> Result<Vec<cpuid::Entry>> {
        let supported = self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).context("KVM_GET_SUPPORTED_CPUID")?;
        Ok(supported
            .as_slice()
            .iter()
            .map(|e| cpuid::Entry {
                function: e.function, index: e.index, flags: e.flags,
                eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx,
            })
            .collect())
    }

    fn set_cpuid(&mut self, table: &[cpuid::Entry]) -> Result<()> {
        let entries: Vec<kvm_cpuid_entry2> = table
            .iter()
            .map(|e| kvm_cpuid_entry2 {
                function: e.function, index: e.index, flags: e.flags,
                eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx,
                ..Default::default()
            })
            .collect();
        let cpuid = CpuId::from_entries(&entries).map_err(|e| anyhow::anyhow!("CPUID table too big: {e:?}"))?;
        self.vcpu.set_cpuid2(&cpuid).context("KVM_SET_CPUID2")
    }

    fn run(&mut self, request_interrupt_window: bool) -> Result<Exit> {
        self.pending = Pending::Nothing;
        self.vcpu.get_kvm_run().request_interrupt_window = request_interrupt_window.into();
        let (exit, pending) = decode(self.vcpu.run())?;
        self.pending = pending;
        Ok(match self.complete_exit(exit) {
            Exit::Failed(why) => match self.vcpu.get_regs() {
                Ok(regs) => Exit::Failed(format!("{why} at rip {:#x}", regs.rip)),
                Err(_) => Exit::Failed(why),
            },
            exit => exit,
        })
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
        // SAFETY: `ptr` and `len` are the data slice of the last exit, in the
        // vCPU's `kvm_run` mapping, which lives as long as `self.vcpu`;
        // nothing else refers to it until the next `KVM_RUN`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, len) };
        Ok(())
    }

    fn can_inject(&mut self) -> bool {
        let run = self.vcpu.get_kvm_run();
        run.ready_for_interrupt_injection != 0 && run.if_flag != 0
    }

    fn interrupt(&mut self, vector: u8) -> Result<()> {
        let irq = kvm_interrupt { irq: vector.into() };
        // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt`, which
        // `irq` is, and keeps no pointer to it.
        let result = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_INTERRUPT, &irq) };
        if result < 0 {
            return Err(std::io::Error::last_os_error()).context(format!("KVM_INTERRUPT of vector {vector:#x}"));
        }
        Ok(())
    }

    fn tsc_khz(&self) -> Option<u32> {
        self.vcpu.get_tsc_khz().ok()
    }

    fn where_it_is(&mut self) -> Result<String> {
        let r = self.vcpu.get_regs().context("KVM_GET_REGS")?;
        let s = self.vcpu.get_sregs().context("KVM_GET_SREGS")?;
        Ok(super::where_line(r.rip, r.rsp, r.rflags, [s.cr0, s.cr2, s.cr3, s.cr4], s.efer, (s.cs.selector, s.cs.base)))
    }
}

fn to_kvm_segment(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base, limit: s.limit, selector: s.selector, type_: s.type_, present: 1,
        dpl: 0, db: s.db, s: 1, l: 0, g: s.g, avl: 0, unusable: 0, padding: 0,
    }
}
