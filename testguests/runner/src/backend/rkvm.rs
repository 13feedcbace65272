//! The rkvm backend: Linux 2.6.20's KVM ABI, on `/dev/rkvm`.
//!
//! The protocol is the one 2006's userspace (qemu-kvm's `kvmctl.c`)
//! followed. One open file is one VM. `KVM_SET_MEMORY_REGION` makes the
//! kernel allocate slot 0, which userspace maps by `mmap` of the file at
//! offset 0; `KVM_CREATE_VCPU` makes vCPU 0, named by the `vcpu` field of
//! every later argument. `struct kvm_run` travels through `KVM_RUN` itself.
//!
//! The kernel leaves an exiting instruction unfinished, and userspace
//! finishes it: for an `in` it writes al/ax/eax through `KVM_SET_REGS`; for
//! `ins`/`outs` it copies the data between the port and guest memory itself
//! (translating the linear address with `KVM_TRANSLATE` when paging is on)
//! and advances rsi/rdi and rcx; for `cpuid` it writes eax..edx. Then it
//! sets `emulated`, and the next `KVM_RUN` skips the instruction. An MMIO
//! read is different: the kernel's emulator is in the middle of the
//! instruction, so userspace puts the data in `mmio.data`, sets
//! `mmio_completed`, and the kernel finishes the instruction.

use super::Vcpu;
use super::mapping::Mapping;
use crate::exit::{Exit, Reply};
use crate::layout::{StartState, apply_sregs};
use anyhow::{Context, Result, bail};
use rkvm::abi::*;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// The device of this course's module.
const DEVICE: &str = "/dev/rkvm";
/// The only vCPU; 2006 KVM had one per VM.
const VCPU: u32 = 0;
/// A bound on one string instruction's elements, against a runaway rcx.
const MAX_STRING_ELEMENTS: u64 = 1 << 20;

/// What the last exit left for `reply` to finish.
enum Pending {
    /// Nothing: the exit was a stop or an interruption.
    Nothing,
    /// `out`: the runner did the write; skip the instruction.
    Skip,
    /// `in` of `size` bytes into rax.
    In { size: u8 },
    /// `ins` or `outs`.
    String(StringIo),
    /// `cpuid`.
    Cpuid,
    /// An MMIO read of `len` bytes.
    MmioRead { len: usize },
}

/// A string instruction: where its elements are, and how its registers move.
struct StringIo {
    is_in: bool,
    /// The guest-physical address of each element, in the guest's order.
    addresses: Vec<u64>,
    size: u8,
    rep: bool,
    /// `+size` or `-size` (DF=1).
    delta: i64,
    /// The bits of rsi/rdi/rcx the address size uses.
    address_mask: u64,
}

pub struct Rkvm {
    device: File,
    memory: Mapping,
    run: KvmRun,
    pending: Pending,
}

impl Rkvm {
    /// Opens a VM with `memory_size` bytes in slot 0 and one vCPU.
    pub fn open(memory_size: u64) -> Result<Rkvm> {
        let device = OpenOptions::new().read(true).write(true).open(DEVICE).with_context(|| {
            format!("cannot open {DEVICE} (load the module with insmod rkvm.ko, or use --backend linux-kvm)")
        })?;
        let version = ioctl_value(&device, KVM_GET_API_VERSION, 0).context("KVM_GET_API_VERSION")?;
        if version != KVM_API_VERSION {
            bail!("{DEVICE} speaks KVM API version {version}; this runner needs {KVM_API_VERSION} (Linux 2.6.20's)");
        }
        let mut region = KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size };
        ioctl(&device, KVM_SET_MEMORY_REGION, &mut region).context("KVM_SET_MEMORY_REGION of slot 0")?;
        let memory = Mapping::shared(device.as_fd(), 0, memory_size).context("mmap of /dev/rkvm")?;
        ioctl_value(&device, KVM_CREATE_VCPU, VCPU.into()).context("KVM_CREATE_VCPU 0")?;
        Ok(Rkvm { device, memory, run: KvmRun::default(), pending: Pending::Nothing })
    }

    fn get_regs(&self) -> Result<KvmRegs> {
        let mut regs = KvmRegs { vcpu: VCPU, ..KvmRegs::default() };
        ioctl(&self.device, KVM_GET_REGS, &mut regs).context("KVM_GET_REGS")?;
        Ok(regs)
    }

    fn set_regs(&self, mut regs: KvmRegs) -> Result<()> {
        regs.vcpu = VCPU;
        ioctl(&self.device, KVM_SET_REGS, &mut regs).context("KVM_SET_REGS")?;
        Ok(())
    }

    fn get_sregs(&self) -> Result<KvmSregs> {
        let mut sregs = KvmSregs { vcpu: VCPU, ..KvmSregs::default() };
        ioctl(&self.device, KVM_GET_SREGS, &mut sregs).context("KVM_GET_SREGS")?;
        Ok(sregs)
    }

    /// The exit `KVM_RUN` reported, with what `reply` will need.
    fn decode(&mut self) -> Result<(Exit, Pending)> {
        let run = self.run;
        if run.exit_type == KVM_EXIT_TYPE_FAIL_ENTRY {
            return Ok((Exit::FailEntry { reason: run.exit_reason.into() }, Pending::Nothing));
        }
        Ok(match run.exit_reason {
            KVM_EXIT_IO => self.decode_io(run.exit.io())?,
            KVM_EXIT_MMIO => decode_mmio(run.exit.mmio()),
            KVM_EXIT_CPUID => (Exit::Cpuid { leaf: self.get_regs()?.rax as u32 }, Pending::Cpuid),
            KVM_EXIT_HLT => (Exit::Hlt, Pending::Nothing),
            KVM_EXIT_SHUTDOWN => (Exit::Shutdown, Pending::Nothing),
            KVM_EXIT_EXCEPTION => {
                let ex = run.exit.ex();
                (Exit::Exception { vector: ex.exception, error_code: ex.error_code }, Pending::Nothing)
            }
            KVM_EXIT_UNKNOWN => {
                let detail = run.exit.hw().hardware_exit_reason.into();
                (Exit::Unknown { reason: KVM_EXIT_UNKNOWN, detail }, Pending::Nothing)
            }
            reason => (Exit::Unknown { reason, detail: 0 }, Pending::Nothing),
        })
    }

    fn decode_io(&mut self, io: &KvmRunIo) -> Result<(Exit, Pending)> {
        let (port, size, is_in) = (io.port, io.size, io.direction == KVM_EXIT_IO_IN);
        if !matches!(size, 1 | 2 | 4) {
            bail!("KVM_EXIT_IO with size {size}: the module must report 1, 2 or 4");
        }
        if io.string == 0 {
            return Ok(match is_in {
                true => (Exit::IoIn { port, size, count: 1 }, Pending::In { size }),
                false => {
                    let data = io.data.value().to_le_bytes()[..usize::from(size)].to_vec();
                    (Exit::IoOut { port, size, data }, Pending::Skip)
                }
            });
        }
        let string = self.string_io(io)?;
        let exit = match is_in {
            true => Exit::IoIn { port, size, count: string.addresses.len() as u64 },
            false => Exit::IoOut { port, size, data: self.read_elements(&string)? },
        };
        Ok((exit, Pending::String(string)))
    }

    /// Where each element of a string instruction lies in guest memory.
    fn string_io(&mut self, io: &KvmRunIo) -> Result<StringIo> {
        let count = if io.rep != 0 { io.count } else { 1 };
        if count > MAX_STRING_ELEMENTS {
            bail!("string I/O of {count} elements: more than this runner allows ({MAX_STRING_ELEMENTS})");
        }
        let sregs = self.get_sregs()?;
        let delta = if io.string_down != 0 { -i64::from(io.size) } else { i64::from(io.size) };
        let linear = |i: u64| io.data.address().wrapping_add_signed(delta.wrapping_mul(i as i64));
        let addresses = (0..count).map(|i| self.translate(&sregs, linear(i))).collect::<Result<_>>()?;
        Ok(StringIo {
            is_in: io.direction == KVM_EXIT_IO_IN,
            addresses,
            size: io.size,
            rep: io.rep != 0,
            delta,
            address_mask: address_mask(&sregs),
        })
    }

    /// The guest-physical address of a linear one: the same with paging
    /// off, else what the guest's page tables say (`KVM_TRANSLATE`).
    fn translate(&self, sregs: &KvmSregs, linear: u64) -> Result<u64> {
        const CR0_PG: u64 = 1 << 31;
        if sregs.cr0 & CR0_PG == 0 {
            return Ok(linear);
        }
        let mut tr = KvmTranslation { linear_address: linear, vcpu: VCPU, ..KvmTranslation::default() };
        ioctl(&self.device, KVM_TRANSLATE, &mut tr).context("KVM_TRANSLATE")?;
        if tr.valid == 0 {
            bail!("string I/O at linear address {linear:#x}, which the guest's page tables do not map");
        }
        Ok(tr.physical_address)
    }

    fn guest_bytes(&mut self, gpa: u64, len: u8) -> Result<&mut [u8]> {
        let memory = self.memory.as_mut_slice();
        let range = usize::try_from(gpa).ok().and_then(|start| Some(start..start.checked_add(len.into())?));
        match range.and_then(|r| memory.get_mut(r)) {
            Some(bytes) => Ok(bytes),
            None => bail!("string I/O at guest-physical {gpa:#x}, outside guest memory"),
        }
    }

    fn read_elements(&mut self, string: &StringIo) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        for &gpa in &string.addresses {
            data.extend_from_slice(self.guest_bytes(gpa, string.size)?);
        }
        Ok(data)
    }

    /// Finishes a string instruction: the data, then rsi or rdi, and rcx.
    fn finish_string(&mut self, string: &StringIo, data: &[u8]) -> Result<()> {
        if string.is_in {
            for (&gpa, element) in string.addresses.iter().zip(data.chunks(string.size.into())) {
                self.guest_bytes(gpa, string.size)?.copy_from_slice(element);
            }
        }
        let mut regs = self.get_regs()?;
        let n = string.addresses.len() as u64;
        let moved = string.delta.wrapping_mul(n as i64);
        let index = if string.is_in { &mut regs.rdi } else { &mut regs.rsi };
        *index = advance(*index, moved, string.address_mask);
        if string.rep {
            regs.rcx = advance(regs.rcx, (n as i64).wrapping_neg(), string.address_mask);
        }
        self.set_regs(regs)
    }

    /// Writes an `in`'s value into al, ax or eax. 2.6.20's kernel never
    /// reads `io.value` back; the runner leaves the value there as well,
    /// for a module that completes `in` itself.
    fn finish_in(&mut self, size: u8, data: &[u8]) -> Result<()> {
        let mut regs = self.get_regs()?;
        let mut bytes = regs.rax.to_le_bytes();
        bytes[..usize::from(size)].copy_from_slice(data);
        regs.rax = u64::from_le_bytes(bytes);
        let io = self.run.exit.io_mut();
        io.data = KvmRunIoData::from_value(regs.rax as u32);
        self.set_regs(regs)
    }

    fn finish_cpuid(&mut self, values: [u32; 4]) -> Result<()> {
        let mut regs = self.get_regs()?;
        [regs.rax, regs.rbx, regs.rcx, regs.rdx] = values.map(u64::from);
        self.set_regs(regs)
    }
}

fn decode_mmio(mmio: &KvmRunMmio) -> (Exit, Pending) {
    let len = (mmio.len as usize).min(mmio.data.len());
    match mmio.is_write != 0 {
        true => (Exit::MmioWrite { addr: mmio.phys_addr, data: mmio.data[..len].to_vec() }, Pending::Nothing),
        false => (Exit::MmioRead { addr: mmio.phys_addr, len: len as u8 }, Pending::MmioRead { len }),
    }
}

/// The bits of an index register a string instruction uses: 16 in real and
/// 16-bit code, 32 in 32-bit code, 64 in 64-bit code.
fn address_mask(sregs: &KvmSregs) -> u64 {
    const EFER_LMA: u64 = 1 << 10;
    if sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0 {
        u64::MAX
    } else if sregs.cs.db != 0 {
        0xFFFF_FFFF
    } else {
        0xFFFF
    }
}

/// `register + delta` within the bits of `mask`; the other bits stay.
fn advance(register: u64, delta: i64, mask: u64) -> u64 {
    (register & !mask) | (register.wrapping_add_signed(delta) & mask)
}

impl Vcpu for Rkvm {
    fn memory(&mut self) -> &mut [u8] {
        self.memory.as_mut_slice()
    }

    fn set_state(&mut self, start: &StartState) -> Result<()> {
        let mut sregs = self.get_sregs()?;
        apply_sregs(&start.sregs, &mut sregs);
        ioctl(&self.device, KVM_SET_SREGS, &mut sregs).context("KVM_SET_SREGS")?;
        self.set_regs(start.regs)
    }

    fn run(&mut self) -> Result<Exit> {
        self.run.vcpu = VCPU;
        let result = ioctl(&self.device, KVM_RUN, &mut self.run);
        // As 2006's userspace did: these ask for one completion only.
        self.run.emulated = 0;
        self.run.mmio_completed = 0;
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(Exit::Interrupted),
            Err(e) => return Err(e).context("KVM_RUN"),
            Ok(_) => {}
        }
        let (exit, pending) = self.decode()?;
        self.pending = pending;
        Ok(exit)
    }

    fn reply(&mut self, reply: Reply) -> Result<()> {
        match (std::mem::replace(&mut self.pending, Pending::Nothing), reply) {
            (Pending::Nothing, _) => return Ok(()),
            (Pending::Skip, Reply::Done) => {}
            (Pending::In { size }, Reply::In(data)) => self.finish_in(size, &data)?,
            (Pending::String(string), Reply::Done) => self.finish_string(&string, &[])?,
            (Pending::String(string), Reply::In(data)) => self.finish_string(&string, &data)?,
            (Pending::Cpuid, Reply::Cpuid(values)) => self.finish_cpuid(values)?,
            (Pending::MmioRead { len }, Reply::Mmio(data)) => {
                self.run.exit.mmio_mut().data[..len].copy_from_slice(&data[..len]);
                self.run.mmio_completed = 1;
                return Ok(());
            }
            (_, reply) => bail!("internal error: reply {reply:?} does not fit the last exit"),
        }
        self.run.emulated = 1;
        Ok(())
    }

    fn regs(&mut self) -> Result<KvmRegs> {
        self.get_regs()
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

/// `ioctl(fd, cmd, value)` for the ioctls that take a number, not a pointer.
fn ioctl_value(device: &File, cmd: u32, value: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: these ioctls take their argument by value; no memory is shared.
    let result = unsafe { libc::ioctl(device.as_raw_fd(), cmd as _, value) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Mode;
    use crate::layout::start_state;

    #[test]
    fn the_address_size_follows_the_code_segment() {
        assert_eq!(address_mask(&start_state(Mode::Real).sregs), 0xFFFF);
        assert_eq!(address_mask(&start_state(Mode::Prot32).sregs), 0xFFFF_FFFF);
        assert_eq!(address_mask(&start_state(Mode::Long64).sregs), u64::MAX);
    }

    #[test]
    fn index_registers_wrap_within_the_address_size() {
        assert_eq!(advance(0x1_0000_FFFF, 1, 0xFFFF), 0x1_0000_0000);
        assert_eq!(advance(0x1234_0000, -4, 0xFFFF), 0x1234_FFFC);
        assert_eq!(advance(0x8010, 16, 0xFFFF_FFFF), 0x8020);
        assert_eq!(advance(8, -8, u64::MAX), 0);
    }

    #[test]
    fn mmio_exits_decode_to_reads_and_writes() {
        let write = KvmRunMmio { phys_addr: 0xC000_0000, data: [1, 2, 3, 4, 5, 6, 7, 8], len: 2, is_write: 1, ..Default::default() };
        let (exit, _) = decode_mmio(&write);
        assert_eq!(exit, Exit::MmioWrite { addr: 0xC000_0000, data: vec![1, 2] });
        let read = KvmRunMmio { len: 4, is_write: 0, ..write };
        let (exit, pending) = decode_mmio(&read);
        assert_eq!(exit, Exit::MmioRead { addr: 0xC000_0000, len: 4 });
        assert!(matches!(pending, Pending::MmioRead { len: 4 }));
    }

    #[test]
    fn a_missing_device_says_what_to_do() {
        if std::path::Path::new(DEVICE).exists() {
            return assert!(Rkvm::open(0x10_0000).is_ok(), "{DEVICE} exists but a VM cannot be made");
        }
        let error = format!("{:#}", Rkvm::open(0x10_0000).err().unwrap());
        assert!(error.contains("insmod rkvm.ko"), "{error}");
    }
}
