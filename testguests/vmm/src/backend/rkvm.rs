//! The rkvm backend: Linux 2.6.20's ABI on `/dev/rkvm`, as 2006's
//! qemu-kvm spoke it.
//!
//! One open file is one VM; `KVM_SET_MEMORY_REGION` makes the kernel
//! allocate slot 0, which the VMM maps by `mmap` of the file; `kvm_run`
//! travels through `KVM_RUN` itself. The kernel leaves an exiting `in`,
//! `out` or `cpuid` unfinished: userspace writes the result registers with
//! `KVM_SET_REGS` and sets `emulated`, and the next `KVM_RUN` skips the
//! instruction. An MMIO read is completed through `mmio.data` and
//! `mmio_completed`.
//!
//! The test runner (`rkvm-run`) speaks the same protocol for its traces;
//! this file is the VMM's own, because the VMM needs what the runner never
//! does: the interrupt-window fields and `KVM_INTERRUPT`. String I/O, which
//! needs `KVM_TRANSLATE` and which the runner does handle, is refused here:
//! a Linux guest with a 16550 and no disk does not use it.
//!
//! The module gains `KVM_INTERRUPT` at the course's stage 12 ("events").
//! Until then the guest runs until its first timer interrupt is due, and
//! the VMM stops with a message that names the missing ioctl.

use super::mapping::Mapping;
use super::{Exit, Reply, Vcpu};
use crate::boot::{BootState, Segment};
use crate::cpuid;
use anyhow::{Context, Result, bail};
use rkvm::abi::*;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

const DEVICE: &str = "/dev/rkvm";
/// The only vCPU: 2006's KVM had one per VM.
const VCPU: u32 = 0;

/// What the last exit left for `reply` to finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Nothing,
    /// `out`: done by the VMM; skip the instruction.
    Skip,
    /// `in` of `size` bytes into rax.
    In { size: u8 },
    Cpuid,
    MmioRead { len: usize },
}

pub struct Rkvm {
    // Drop order: the mapping goes before the file that backs it.
    memory: Mapping,
    device: File,
    run: KvmRun,
    pending: Pending,
}

impl Rkvm {
    /// The steps of Avi Kivity's 2006 description: open, check the API
    /// version, give the VM memory, map it, create vCPU 0.
    pub fn open(memory_size: u64) -> Result<Rkvm> {
        let device = OpenOptions::new().read(true).write(true).open(DEVICE).with_context(|| {
            format!("cannot open {DEVICE} (load the module with insmod rkvm.ko, or use --backend linux-kvm)")
        })?;
        let version = ioctl_value(&device, KVM_GET_API_VERSION, 0).context("KVM_GET_API_VERSION")?;
        if version != KVM_API_VERSION {
            bail!("{DEVICE} speaks KVM API version {version}; this VMM needs {KVM_API_VERSION} (Linux 2.6.20's)");
        }
        let mut region = KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size };
        ioctl(&device, KVM_SET_MEMORY_REGION, &mut region).context("KVM_SET_MEMORY_REGION of slot 0")?;
        let memory = Mapping::shared(device.as_raw_fd(), memory_size).context("mmap of /dev/rkvm")?;
        ioctl_value(&device, KVM_CREATE_VCPU, VCPU.into()).context("KVM_CREATE_VCPU 0")?;
        Ok(Rkvm { memory, device, run: KvmRun::default(), pending: Pending::Nothing })
    }

    fn get_regs(&self) -> Result<KvmRegs> {
        let mut regs = KvmRegs { vcpu: VCPU, ..KvmRegs::default() };
        ioctl(&self.device, KVM_GET_REGS, &mut regs).context("KVM_GET_REGS")?;
        Ok(regs)
    }

    fn set_regs(&self, regs: KvmRegs) -> Result<()> {
        ioctl(&self.device, KVM_SET_REGS, &mut KvmRegs { vcpu: VCPU, ..regs }).context("KVM_SET_REGS").map(drop)
    }
}

/// The exit in `run`, and what `reply` will have to do; `cpuid`'s leaf is
/// filled in by the caller, from the registers.
fn decode(run: &KvmRun) -> (Exit, Pending) {
    if run.exit_type == KVM_EXIT_TYPE_FAIL_ENTRY {
        return (Exit::Failed(format!("the VM entry failed, hardware reason {:#x}", run.exit_reason)), Pending::Nothing);
    }
    match run.exit_reason {
        KVM_EXIT_IO => decode_io(run.exit.io()),
        KVM_EXIT_MMIO => {
            let mmio = run.exit.mmio();
            let len = (mmio.len as usize).min(mmio.data.len());
            match mmio.is_write != 0 {
                true => (Exit::MmioWrite { addr: mmio.phys_addr, data: mmio.data[..len].to_vec() }, Pending::Nothing),
                false => (Exit::MmioRead { addr: mmio.phys_addr, len: len as u8 }, Pending::MmioRead { len }),
            }
        }
        KVM_EXIT_CPUID => (Exit::Cpuid { leaf: 0, subleaf: 0 }, Pending::Cpuid),
        KVM_EXIT_HLT => (Exit::Hlt { interrupts_enabled: run.if_flag != 0 }, Pending::Nothing),
        KVM_EXIT_IRQ_WINDOW_OPEN => (Exit::IrqWindowOpen, Pending::Nothing),
        KVM_EXIT_SHUTDOWN => (Exit::Shutdown, Pending::Nothing),
        KVM_EXIT_EXCEPTION => {
            let ex = run.exit.ex();
            let text = format!("KVM_EXIT_EXCEPTION: vector {}, error code {:#x}", ex.exception, ex.error_code);
            (Exit::Failed(text), Pending::Nothing)
        }
        KVM_EXIT_UNKNOWN => {
            let reason = run.exit.hw().hardware_exit_reason;
            (Exit::Failed(format!("KVM_EXIT_UNKNOWN: hardware exit reason {reason:#x}")), Pending::Nothing)
        }
        reason => (Exit::Failed(format!("exit reason {reason}, which this VMM does not know")), Pending::Nothing),
    }
}

fn decode_io(io: &KvmRunIo) -> (Exit, Pending) {
    let (port, size) = (io.port, io.size);
    if io.string != 0 {
        let text = format!("string I/O on port {port:#x}: this VMM does not do it on the 2006 ABI");
        return (Exit::Failed(text), Pending::Nothing);
    }
    if !matches!(size, 1 | 2 | 4) {
        return (Exit::Failed(format!("KVM_EXIT_IO of size {size}: not 1, 2 or 4")), Pending::Nothing);
    }
    if io.direction == KVM_EXIT_IO_IN {
        (Exit::IoIn { port, size, count: 1 }, Pending::In { size })
    } else {
        let data = io.data.value().to_le_bytes()[..usize::from(size)].to_vec();
        (Exit::IoOut { port, size, data }, Pending::Skip)
    }
}

impl Vcpu for Rkvm {
    fn memory(&mut self) -> &mut [u8] {
        self.memory.as_mut_slice()
    }

    fn memory_flags(&self) -> i32 {
        self.memory.flags()
    }

    fn set_boot_state(&mut self, state: &BootState) -> Result<()> {
        let mut sregs = KvmSregs { vcpu: VCPU, ..KvmSregs::default() };
        ioctl(&self.device, KVM_GET_SREGS, &mut sregs).context("KVM_GET_SREGS")?;
        let (code, data) = (to_kvm_segment(&state.code), to_kvm_segment(&state.data));
        (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (code, data, data, data, data, data);
        sregs.gdt.base = state.gdt_base;
        sregs.gdt.limit = state.gdt_limit;
        sregs.cr0 = state.cr0;
        sregs.efer = 0;
        ioctl(&self.device, KVM_SET_SREGS, &mut sregs).context("KVM_SET_SREGS")?;
        let mut regs = self.get_regs()?;
        (regs.rip, regs.rsi, regs.rflags) = (state.rip, state.rsi, state.rflags);
        self.set_regs(regs)
    }

    fn supported_cpuid(&mut self) -> Result<Vec<cpuid::Entry>> {
        // `cpuid::filter` takes out what the vCPU does not have.
        Ok(cpuid::host_table())
    }

    fn set_cpuid(&mut self, _table: &[cpuid::Entry]) -> Result<()> {
        // 2006's `cpuid` exits to userspace: the run loop answers.
        Ok(())
    }

    fn run(&mut self, request_interrupt_window: bool) -> Result<Exit> {
        self.run.vcpu = VCPU;
        self.run.request_interrupt_window = request_interrupt_window.into();
        let result = ioctl(&self.device, KVM_RUN, &mut self.run);
        // As 2006's userspace did: each asks for one completion only.
        self.run.emulated = 0;
        self.run.mmio_completed = 0;
        self.pending = Pending::Nothing;
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(Exit::Interrupted),
            Err(e) => return Err(e).context("KVM_RUN"),
            Ok(_) => {}
        }
        let (exit, pending) = decode(&self.run);
        self.pending = pending;
        Ok(match exit {
            Exit::Cpuid { .. } => {
                let regs = self.get_regs()?;
                Exit::Cpuid { leaf: regs.rax as u32, subleaf: regs.rcx as u32 }
            }
            Exit::Failed(why) if self.run.exit_reason == KVM_EXIT_UNKNOWN => {
                let reason = self.run.exit.hw().hardware_exit_reason;
                Exit::Failed(explain_unknown(&why, reason.into(), &self.get_regs()?))
            }
            exit => exit,
        })
    }

    fn reply(&mut self, reply: Reply) -> Result<()> {
        match (std::mem::replace(&mut self.pending, Pending::Nothing), reply) {
            (Pending::Nothing, _) => return Ok(()),
            (Pending::Skip, Reply::Done) => {}
            (Pending::In { size }, Reply::In(data)) if data.len() == usize::from(size) => {
                let mut regs = self.get_regs()?;
                let mut bytes = regs.rax.to_le_bytes();
                bytes[..data.len()].copy_from_slice(&data);
                regs.rax = u64::from_le_bytes(bytes);
                self.set_regs(regs)?;
            }
            (Pending::Cpuid, Reply::Cpuid(values)) => {
                let mut regs = self.get_regs()?;
                [regs.rax, regs.rbx, regs.rcx, regs.rdx] = values.map(u64::from);
                self.set_regs(regs)?;
            }
            (Pending::MmioRead { len }, Reply::Mmio(data)) if data.len() == len => {
                self.run.exit.mmio_mut().data[..len].copy_from_slice(&data);
                self.run.mmio_completed = 1;
                return Ok(());
            }
            (pending, reply) => bail!("internal error: reply {reply:?} does not fit the last exit ({pending:?})"),
        }
        self.run.emulated = 1;
        Ok(())
    }

    fn can_inject(&mut self) -> bool {
        self.run.ready_for_interrupt_injection != 0 && self.run.if_flag != 0
    }

    fn interrupt(&mut self, vector: u8) -> Result<()> {
        let mut irq = KvmInterrupt { vcpu: VCPU, irq: vector.into() };
        match ioctl(&self.device, KVM_INTERRUPT, &mut irq) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => bail!(
                "{DEVICE} does not implement KVM_INTERRUPT yet (ENOTTY): the guest's first interrupt \
                 (vector {vector:#x}) cannot be delivered. The module gains KVM_INTERRUPT and the interrupt \
                 window at stage 12 (events); until then run this guest with --backend linux-kvm"
            ),
            Err(e) => Err(e).context(format!("KVM_INTERRUPT of vector {vector:#x}")),
        }
    }

    fn tsc_khz(&self) -> Option<u32> {
        None
    }

    fn where_it_is(&mut self) -> Result<String> {
        let r = self.get_regs()?;
        let mut s = KvmSregs { vcpu: VCPU, ..KvmSregs::default() };
        ioctl(&self.device, KVM_GET_SREGS, &mut s).context("KVM_GET_SREGS")?;
        Ok(super::where_line(r.rip, r.rsp, r.rflags, [s.cr0, s.cr2, s.cr3, s.cr4], s.efer, (s.cs.selector, s.cs.base)))
    }
}

/// The hardware exit reasons of `rdmsr`/`wrmsr`: SVM's VMEXIT_MSR, and
/// VMX's RDMSR and WRMSR (which SVM's numbering gives to debug registers).
const SVM_EXIT_MSR: u64 = 0x7C;
const VMX_EXIT_RDMSR: u64 = 31;
const VMX_EXIT_WRMSR: u64 = 32;

/// An unknown exit, with what the registers say about it. An MSR the
/// module does not handle is the usual one: until stage 12 the module
/// handles EFER alone and sends every other MSR to userspace this way.
fn explain_unknown(why: &str, reason: u64, regs: &KvmRegs) -> String {
    let on_amd = cpuid::host_table().first().is_some_and(|leaf0| leaf0.ebx == u32::from_le_bytes(*b"Auth"));
    let msr = match (on_amd, reason) {
        (true, SVM_EXIT_MSR) => Some("rdmsr or wrmsr"),
        (false, VMX_EXIT_RDMSR) => Some("rdmsr"),
        (false, VMX_EXIT_WRMSR) => Some("wrmsr"),
        _ => None,
    };
    match msr {
        Some(insn) => format!(
            "{why}: the guest's {insn} of MSR {:#x} at rip {:#x}, which this module leaves to userspace; \
             2006's ABI lets userspace do nothing with it (the module handles MSRs from stage 12, events)",
            regs.rcx as u32, regs.rip
        ),
        None => format!("{why} at rip {:#x}", regs.rip),
    }
}

fn to_kvm_segment(s: &Segment) -> KvmSegment {
    KvmSegment {
        base: s.base, limit: s.limit, selector: s.selector, type_: s.type_, present: 1,
        dpl: 0, db: s.db, s: 1, l: 0, g: s.g, avl: 0, unusable: 0, padding: 0,
    }
}

/// `ioctl(fd, cmd, arg)` for the ABI's structs.
fn ioctl<T: Pod>(device: &File, cmd: u32, arg: &mut T) -> io::Result<i32> {
    // SAFETY: `arg` is an exclusively borrowed, plain-old-data `T`; the ABI
    // builds each number in `cmd` from the size of the very type it takes,
    // so the kernel reads and writes only those bytes.
    let result = unsafe { libc::ioctl(device.as_raw_fd(), cmd as _, arg as *mut T) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

/// `ioctl(fd, cmd, value)` for the ioctls that take a number.
fn ioctl_value(device: &File, cmd: u32, value: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: these ioctls take their argument by value; no memory is shared.
    let result = unsafe { libc::ioctl(device.as_raw_fd(), cmd as _, value) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(reason: u32, details: KvmRunExit) -> KvmRun {
        KvmRun { exit_type: KVM_EXIT_TYPE_VM_EXIT, exit_reason: reason, exit: details, ..KvmRun::default() }
    }

    fn io(direction: u8, size: u8, port: u16, value: u32) -> KvmRun {
        let io = KvmRunIo { direction, size, port, count: 1, data: KvmRunIoData::from_value(value), ..KvmRunIo::default() };
        exit(KVM_EXIT_IO, KvmRunExit::from_io(io))
    }

    #[test]
    fn port_io_decodes_with_its_completion() {
        assert_eq!(decode(&io(KVM_EXIT_IO_IN, 1, 0x3FD, 0)), (Exit::IoIn { port: 0x3FD, size: 1, count: 1 }, Pending::In { size: 1 }));
        let (out, pending) = decode(&io(KVM_EXIT_IO_OUT, 2, 0x40, 0x1234_5678));
        assert_eq!((out, pending), (Exit::IoOut { port: 0x40, size: 2, data: vec![0x78, 0x56] }, Pending::Skip));
    }

    #[test]
    fn string_io_is_refused_with_a_reason() {
        let mut run = io(KVM_EXIT_IO_OUT, 1, 0x3F8, 0);
        run.exit.io_mut().string = 1;
        let (exit, _) = decode(&run);
        assert!(matches!(exit, Exit::Failed(text) if text.contains("string I/O on port 0x3f8")));
    }

    #[test]
    fn halts_carry_the_interrupt_flag_and_windows_decode() {
        let mut run = exit(KVM_EXIT_HLT, KvmRunExit::default());
        run.if_flag = 1;
        assert_eq!(decode(&run).0, Exit::Hlt { interrupts_enabled: true });
        assert_eq!(decode(&exit(KVM_EXIT_IRQ_WINDOW_OPEN, KvmRunExit::default())).0, Exit::IrqWindowOpen);
        assert_eq!(decode(&exit(KVM_EXIT_SHUTDOWN, KvmRunExit::default())).0, Exit::Shutdown);
    }

    #[test]
    fn failures_say_what_happened() {
        let fail = KvmRun { exit_type: KVM_EXIT_TYPE_FAIL_ENTRY, exit_reason: 0x21, ..KvmRun::default() };
        assert_eq!(decode(&fail).0, Exit::Failed("the VM entry failed, hardware reason 0x21".into()));
        let hw = exit(KVM_EXIT_UNKNOWN, KvmRunExit::from_hw(KvmRunHw { hardware_exit_reason: 0x7B }));
        assert_eq!(decode(&hw).0, Exit::Failed("KVM_EXIT_UNKNOWN: hardware exit reason 0x7b".into()));
    }

    #[test]
    fn an_unknown_msr_exit_names_the_msr_and_the_stage_that_handles_it() {
        let regs = KvmRegs { rcx: 0xC001_0131, rip: 0x10_0123, ..KvmRegs::default() };
        let (reason, insn) = match cpuid::host_table()[0].ebx == u32::from_le_bytes(*b"Auth") {
            true => (SVM_EXIT_MSR, "rdmsr or wrmsr"),
            false => (VMX_EXIT_WRMSR, "wrmsr"),
        };
        let text = explain_unknown("KVM_EXIT_UNKNOWN", reason, &regs);
        assert!(text.contains(&format!("{insn} of MSR 0xc0010131 at rip 0x100123")), "{text}");
        assert!(text.contains("stage 12"), "{text}");
        assert_eq!(explain_unknown("KVM_EXIT_UNKNOWN", 0x400, &regs), "KVM_EXIT_UNKNOWN at rip 0x100123");
    }

    #[test]
    fn a_missing_device_says_what_to_do() {
        if std::path::Path::new(DEVICE).exists() {
            return;
        }
        let error = format!("{:#}", Rkvm::open(0x10_0000).err().unwrap());
        assert!(error.starts_with("cannot open /dev/rkvm (load the module"), "{error}");
    }
}
