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
//!
//! The protocol works on any [`Vm2006`]: `dev_rkvm.rs` makes the ioctls on
//! `/dev/rkvm`, and the tests below play the kernel's part with a fake VM.

use super::Vcpu;
use super::dev_rkvm::{DevRkvm, VCPU, Vm2006};
use crate::exit::{Exit, Reply};
use crate::layout::{StartState, apply_sregs};
use anyhow::{Context, Result, bail};
use rkvm::abi::*;

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

/// A 2006 VM and the state of the protocol: the `kvm_run` that travels
/// through `KVM_RUN`, and what the last exit left to finish.
pub struct Rkvm<V: Vm2006 = DevRkvm> {
    vm: V,
    run: KvmRun,
    pending: Pending,
}

impl Rkvm {
    /// Opens a VM of the rkvm module with `memory_size` bytes.
    pub fn open(memory_size: u64, log_dirty: bool) -> Result<Rkvm> {
        Ok(Rkvm::new(DevRkvm::open(memory_size, log_dirty)?))
    }
}

impl<V: Vm2006> Rkvm<V> {
    pub fn new(vm: V) -> Rkvm<V> {
        Rkvm { vm, run: KvmRun::default(), pending: Pending::Nothing }
    }

    fn get_regs(&mut self) -> Result<KvmRegs> {
        self.vm.get_regs().context("KVM_GET_REGS")
    }

    fn set_regs(&mut self, regs: KvmRegs) -> Result<()> {
        self.vm.set_regs(&regs).context("KVM_SET_REGS")
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
            KVM_EXIT_IRQ_WINDOW_OPEN => (Exit::IrqWindowOpen, Pending::Nothing),
            KVM_EXIT_DEBUG => (Exit::Debug, Pending::Nothing),
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
        let sregs = self.vm.get_sregs().context("KVM_GET_SREGS")?;
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
    fn translate(&mut self, sregs: &KvmSregs, linear: u64) -> Result<u64> {
        const CR0_PG: u64 = 1 << 31;
        if sregs.cr0 & CR0_PG == 0 {
            return Ok(linear);
        }
        let tr = self.vm.translate(linear).context("KVM_TRANSLATE")?;
        if tr.valid == 0 {
            bail!("string I/O at linear address {linear:#x}, which the guest's page tables do not map");
        }
        Ok(tr.physical_address)
    }

    fn guest_bytes(&mut self, gpa: u64, len: u8) -> Result<&mut [u8]> {
        let memory = self.vm.memory();
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

impl<V: Vm2006> Vcpu for Rkvm<V> {
    fn memory(&mut self) -> &mut [u8] {
        self.vm.memory()
    }

    fn set_state(&mut self, start: &StartState) -> Result<()> {
        let mut sregs = self.vm.get_sregs().context("KVM_GET_SREGS")?;
        apply_sregs(&start.sregs, &mut sregs);
        self.vm.set_sregs(&sregs).context("KVM_SET_SREGS")?;
        self.set_regs(start.regs)
    }

    fn run(&mut self) -> Result<Exit> {
        self.run.vcpu = VCPU;
        let result = self.vm.run(&mut self.run);
        // As 2006's userspace did: these ask for one completion only.
        self.run.emulated = 0;
        self.run.mmio_completed = 0;
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(Exit::Interrupted),
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                bail!("KVM_RUN: this module does not know the ioctl yet (ENOTTY); stage 05 adds it")
            }
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

    fn dirty_log(&mut self) -> Result<Vec<u64>> {
        let pages = self.vm.memory().len().div_ceil(4096);
        let mut bitmap = vec![0u8; pages.div_ceil(8)];
        self.vm.get_dirty_log(&mut bitmap).context("KVM_GET_DIRTY_LOG of slot 0")?;
        Ok(super::dirty_frames(&bitmap))
    }

    fn save(&mut self) -> Result<(KvmRegs, KvmSregs)> {
        if !matches!(self.pending, Pending::Nothing) {
            bail!("internal error: the registers are saved with an instruction half done");
        }
        Ok((self.get_regs()?, self.vm.get_sregs().context("KVM_GET_SREGS")?))
    }

    fn restore(&mut self, regs: &KvmRegs, sregs: &KvmSregs) -> Result<()> {
        self.vm.set_sregs(sregs).context("KVM_SET_SREGS")?;
        self.set_regs(*regs)
    }

    fn interrupt_ready(&mut self) -> bool {
        self.run.ready_for_interrupt_injection != 0
    }

    fn interrupt(&mut self, vector: u8) -> Result<()> {
        self.vm.interrupt(vector.into()).context("KVM_INTERRUPT")
    }

    fn set_debug(&mut self, debug: &super::Debug) -> Result<()> {
        let breakpoints = debug.breakpoints.map(|b| KvmBreakpoint {
            enabled: u32::from(b.is_some()),
            padding: 0,
            address: b.unwrap_or(0),
        });
        let dbg = KvmDebugGuest {
            vcpu: VCPU,
            enabled: u32::from(debug.attached()),
            breakpoints,
            singlestep: u32::from(debug.singlestep),
            tail_padding: 0,
        };
        self.vm.debug_guest(&dbg).context("KVM_DEBUG_GUEST")
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.run.request_interrupt_window = u8::from(on);
    }
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

    /// The kernel's part, played from a script of exits.
    struct FakeVm {
        exits: std::collections::VecDeque<KvmRun>,
        /// The `kvm_run` each `KVM_RUN` was given: what the kernel would read.
        entries: Vec<KvmRun>,
        regs: KvmRegs,
        sregs: KvmSregs,
        memory: Vec<u8>,
        /// What `KVM_TRANSLATE` adds to a linear address.
        paging_offset: u64,
        /// The errno of `KVM_RUN` once the script is over: EINTR.
        after_script: i32,
    }

    impl Vm2006 for FakeVm {
        fn run(&mut self, run: &mut KvmRun) -> std::io::Result<()> {
            self.entries.push(*run);
            let exit = self.exits.pop_front().ok_or_else(|| std::io::Error::from_raw_os_error(self.after_script))?;
            *run = KvmRun { vcpu: run.vcpu, emulated: 0, ..exit };
            Ok(())
        }
        fn get_regs(&mut self) -> std::io::Result<KvmRegs> {
            Ok(self.regs)
        }
        fn set_regs(&mut self, regs: &KvmRegs) -> std::io::Result<()> {
            self.regs = *regs;
            Ok(())
        }
        fn get_sregs(&mut self) -> std::io::Result<KvmSregs> {
            Ok(self.sregs)
        }
        fn set_sregs(&mut self, sregs: &KvmSregs) -> std::io::Result<()> {
            self.sregs = *sregs;
            Ok(())
        }
        fn translate(&mut self, linear: u64) -> std::io::Result<KvmTranslation> {
            Ok(KvmTranslation { linear_address: linear, physical_address: linear.wrapping_add(self.paging_offset), valid: 1, ..Default::default() })
        }
        fn memory(&mut self) -> &mut [u8] {
            &mut self.memory
        }
    }

    /// A protected-mode VM that will exit with `exits`, then with EINTR.
    fn vm(exits: &[KvmRun]) -> Rkvm<FakeVm> {
        Rkvm::new(FakeVm {
            exits: exits.iter().copied().collect(),
            entries: Vec::new(),
            regs: KvmRegs::default(),
            sregs: start_state(Mode::Prot32).sregs,
            memory: vec![0; 0x1_0000],
            paging_offset: 0,
            after_script: libc::EINTR,
        })
    }

    fn exit(reason: u32, details: KvmRunExit) -> KvmRun {
        KvmRun { exit_type: KVM_EXIT_TYPE_VM_EXIT, exit_reason: reason, exit: details, ..KvmRun::default() }
    }

    fn io(direction: u8, size: u8, port: u16) -> KvmRunIo {
        KvmRunIo { direction, size, port, count: 1, ..KvmRunIo::default() }
    }

    /// `rep ins`/`rep outs` of `count` elements from linear `address`.
    fn string(io: KvmRunIo, count: u64, address: u64, down: bool) -> KvmRun {
        let io = KvmRunIo { string: 1, rep: 1, string_down: down.into(), count, data: KvmRunIoData::from_address(address), ..io };
        exit(KVM_EXIT_IO, KvmRunExit::from_io(io))
    }

    /// `ins`/`outs` without `rep`, at linear `address`.
    fn single(io: KvmRunIo, address: u64) -> KvmRun {
        let io = KvmRunIo { string: 1, data: KvmRunIoData::from_address(address), ..io };
        exit(KVM_EXIT_IO, KvmRunExit::from_io(io))
    }

    /// Runs once more, to see what the kernel would be told.
    fn next_entry(r: &mut Rkvm<FakeVm>) -> KvmRun {
        assert_eq!(r.run().unwrap(), Exit::Interrupted);
        *r.vm.entries.last().unwrap()
    }

    #[test]
    fn an_in_writes_al_keeps_the_rest_of_rax_and_skips_the_instruction() {
        let mut r = vm(&[exit(KVM_EXIT_IO, KvmRunExit::from_io(io(KVM_EXIT_IO_IN, 1, 0xE0)))]);
        r.vm.regs.rax = 0x1122_3344;
        assert_eq!(r.run().unwrap(), Exit::IoIn { port: 0xE0, size: 1, count: 1 });
        r.reply(Reply::In(vec![0xEF])).unwrap();
        assert_eq!(r.vm.regs.rax, 0x1122_33EF);
        let entry = next_entry(&mut r);
        assert_eq!((entry.emulated, entry.exit.io().data.value()), (1, 0x1122_33EF));
    }

    #[test]
    fn an_out_gives_its_value_and_is_skipped() {
        let out = KvmRunIo { data: KvmRunIoData::from_value(0x1234_5678), ..io(KVM_EXIT_IO_OUT, 2, 0xE0) };
        let mut r = vm(&[exit(KVM_EXIT_IO, KvmRunExit::from_io(out))]);
        assert_eq!(r.run().unwrap(), Exit::IoOut { port: 0xE0, size: 2, data: vec![0x78, 0x56] });
        r.reply(Reply::Done).unwrap();
        assert_eq!(next_entry(&mut r).emulated, 1);
    }

    #[test]
    fn a_rep_outsb_reads_guest_memory_and_advances_rsi_and_rcx() {
        let mut r = vm(&[string(io(KVM_EXIT_IO_OUT, 1, 0xE9), 3, 0x9000, false)]);
        r.vm.memory[0x9000..0x9003].copy_from_slice(b"abc");
        r.vm.regs = KvmRegs { rsi: 0x9000, rcx: 3, ..KvmRegs::default() };
        assert_eq!(r.run().unwrap(), Exit::IoOut { port: 0xE9, size: 1, data: b"abc".to_vec() });
        r.reply(Reply::Done).unwrap();
        assert_eq!((r.vm.regs.rsi, r.vm.regs.rcx), (0x9003, 0));
        assert_eq!(next_entry(&mut r).emulated, 1);
    }

    #[test]
    fn a_backwards_rep_insw_fills_memory_downwards() {
        let mut r = vm(&[string(io(KVM_EXIT_IO_IN, 2, 0xE4), 2, 0x9006, true)]);
        r.vm.regs = KvmRegs { rdi: 0x9006, rcx: 2, ..KvmRegs::default() };
        assert_eq!(r.run().unwrap(), Exit::IoIn { port: 0xE4, size: 2, count: 2 });
        r.reply(Reply::In(vec![0x00, 0x01, 0x02, 0x03])).unwrap();
        assert_eq!(&r.vm.memory[0x9004..0x9008], &[0x02, 0x03, 0x00, 0x01]);
        assert_eq!((r.vm.regs.rdi, r.vm.regs.rcx), (0x9002, 0));
    }

    #[test]
    fn real_mode_index_registers_wrap_at_64_kib() {
        let mut r = vm(&[single(io(KVM_EXIT_IO_OUT, 1, 0xE0), 0xFFFF)]);
        r.vm.sregs = start_state(Mode::Real).sregs;
        r.vm.memory[0xFFFF] = 0x5A;
        r.vm.regs = KvmRegs { rsi: 0x1234_FFFF, rcx: 7, ..KvmRegs::default() };
        assert_eq!(r.run().unwrap(), Exit::IoOut { port: 0xE0, size: 1, data: vec![0x5A] });
        r.reply(Reply::Done).unwrap();
        assert_eq!((r.vm.regs.rsi, r.vm.regs.rcx), (0x1234_0000, 7), "no rep: rcx stays");
    }

    #[test]
    fn with_paging_on_string_addresses_go_through_kvm_translate() {
        let mut r = vm(&[string(io(KVM_EXIT_IO_OUT, 1, 0xE0), 2, 0x4000_0000, false)]);
        r.vm.sregs.cr0 |= 1 << 31;
        r.vm.paging_offset = 0x9000u64.wrapping_sub(0x4000_0000);
        r.vm.memory[0x9000..0x9002].copy_from_slice(&[7, 8]);
        assert_eq!(r.run().unwrap(), Exit::IoOut { port: 0xE0, size: 1, data: vec![7, 8] });
    }

    #[test]
    fn string_io_outside_guest_memory_is_an_error() {
        let mut r = vm(&[string(io(KVM_EXIT_IO_OUT, 4, 0xE0), 1, 0xFFFE, false)]);
        let error = r.run().unwrap_err().to_string();
        assert_eq!(error, "string I/O at guest-physical 0xfffe, outside guest memory");
    }

    #[test]
    fn cpuid_is_answered_through_the_registers() {
        let mut r = vm(&[exit(KVM_EXIT_CPUID, KvmRunExit::default())]);
        r.vm.regs.rax = 0xFFFF_FFFF_4000_0001;
        assert_eq!(r.run().unwrap(), Exit::Cpuid { leaf: 0x4000_0001 });
        r.reply(Reply::Cpuid([1, 2, 3, 4])).unwrap();
        let regs = r.vm.regs;
        assert_eq!((regs.rax, regs.rbx, regs.rcx, regs.rdx), (1, 2, 3, 4));
        assert_eq!(next_entry(&mut r).emulated, 1);
    }

    #[test]
    fn an_mmio_read_is_completed_through_mmio_data_once() {
        let read = KvmRunMmio { phys_addr: 0xC000_0010, len: 4, is_write: 0, ..KvmRunMmio::default() };
        let mut r = vm(&[exit(KVM_EXIT_MMIO, KvmRunExit::from_mmio(read)), exit(KVM_EXIT_HLT, KvmRunExit::default())]);
        assert_eq!(r.run().unwrap(), Exit::MmioRead { addr: 0xC000_0010, len: 4 });
        r.reply(Reply::Mmio(vec![0x10, 0x11, 0x12, 0x13])).unwrap();
        assert_eq!(r.run().unwrap(), Exit::Hlt);
        let entry = r.vm.entries[1];
        assert_eq!((entry.mmio_completed, entry.emulated), (1, 0));
        assert_eq!(entry.exit.mmio().data[..4], [0x10, 0x11, 0x12, 0x13]);
        assert_eq!(next_entry(&mut r).mmio_completed, 0);
    }

    #[test]
    fn stops_and_failures_decode_and_need_no_completion() {
        let hw = KvmRunExit::from_hw(KvmRunHw { hardware_exit_reason: 0x1E });
        let ex = KvmRunExit::from_ex(KvmRunEx { exception: 13, error_code: 0x18 });
        let fail = KvmRun { exit_type: KVM_EXIT_TYPE_FAIL_ENTRY, exit_reason: 0x21, ..KvmRun::default() };
        let cases = [
            (exit(KVM_EXIT_HLT, KvmRunExit::default()), Exit::Hlt),
            (exit(KVM_EXIT_SHUTDOWN, KvmRunExit::default()), Exit::Shutdown),
            (exit(KVM_EXIT_EXCEPTION, ex), Exit::Exception { vector: 13, error_code: 0x18 }),
            (exit(KVM_EXIT_UNKNOWN, hw), Exit::Unknown { reason: KVM_EXIT_UNKNOWN, detail: 0x1E }),
            (exit(KVM_EXIT_IRQ_WINDOW_OPEN, KvmRunExit::default()), Exit::IrqWindowOpen),
            (exit(KVM_EXIT_DEBUG, KvmRunExit::default()), Exit::Debug),
            (exit(99, KvmRunExit::default()), Exit::Unknown { reason: 99, detail: 0 }),
            (fail, Exit::FailEntry { reason: 0x21 }),
        ];
        for (run, expected) in cases {
            let mut r = vm(&[run]);
            assert_eq!(r.run().unwrap(), expected);
            r.reply(Reply::Done).unwrap();
            assert_eq!(next_entry(&mut r).emulated, 0, "{expected:?}");
        }
    }

    #[test]
    fn a_module_without_kvm_run_is_named_as_such() {
        let mut r = vm(&[]);
        r.vm.after_script = libc::ENOTTY;
        assert!(r.run().unwrap_err().to_string().contains("stage 05 adds it"));
    }

    #[test]
    fn a_reply_that_does_not_fit_the_exit_is_refused() {
        let mut r = vm(&[exit(KVM_EXIT_IO, KvmRunExit::from_io(io(KVM_EXIT_IO_IN, 4, 0xE0)))]);
        r.run().unwrap();
        assert!(r.reply(Reply::Cpuid([0; 4])).unwrap_err().to_string().starts_with("internal error"));
    }

    #[test]
    fn set_state_keeps_what_the_kernel_had() {
        let mut r = vm(&[]);
        r.vm.sregs.apic_base = 0xFEE0_0900;
        let start = start_state(Mode::Long64);
        r.set_state(&start).unwrap();
        assert_eq!((r.vm.sregs.apic_base, r.vm.sregs.efer, r.vm.sregs.cs), (0xFEE0_0900, 0x500, start.sregs.cs));
        assert_eq!(r.vm.regs, start.regs);
    }
}
