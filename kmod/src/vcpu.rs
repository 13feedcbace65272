//@ stage 3
//! A virtual CPU: the register state userspace reads and writes with
//! `KVM_GET_REGS`, `KVM_SET_REGS`, `KVM_GET_SREGS` and `KVM_SET_SREGS`.
//!
//! In stage 03 the state lives only here, in memory: no processor runs it
//! yet. From stage 05 on, the backend loads it into the VMCS or VMCB before
//! each entry and saves it after each exit; these fields are then the
//! vendor-neutral copy that the ioctls see, as 2006's `struct kvm_vcpu`
//! was beside its VMCS.

use crate::abi::{KvmDtable, KvmRegs, KvmSegment, KvmSregs};
use crate::kernel::KResult;
use crate::segments::{TYPE_ACCESSED, TYPE_CODE_EXECUTE_READ, TYPE_LDT, TYPE_TSS_BUSY};
use crate::kernel::try_box;
use crate::regs::{NR_REGS, Reg};
use alloc::boxed::Box;
//@ begin 4
use crate::arch::{self, ArchVcpu};
use crate::kernel::Errno;
//@ end
//@ begin 5
use crate::abi::KvmRun;
use crate::arch::{Entry, VmExit};
use crate::exit::{self, Action, ExitContext};
use crate::kernel::{Mutex, cpu};
use crate::memslot::MemSlots;
use crate::exit::PageFault;
use crate::mmu::{Mmu, Root};
use crate::stats::{Counter, VmStats};
//@ end
//@ begin 8
use crate::abi::KvmTranslation;
//@ end
//@ begin 12
use crate::log;
use crate::real_mode;
//@ end

// ANCHOR: regs
/// One vCPU's state.
pub struct Vcpu {
    /// The general registers, indexed by [`Reg`].
    pub regs: [u64; NR_REGS],
    pub rip: u64,
    pub rflags: u64,
    /// Segment registers, GDTR and IDTR, control registers, EFER, the APIC
    /// base and the interrupts queued for injection, as `KVM_SET_SREGS` gave
    /// them. Its `vcpu` and `padding` fields are always zero.
    pub sregs: KvmSregs,
    //@ begin 4
    /// The hardware half, from stage 04 on (the backend's VMCS or VMCB;
    /// from stage 05 also the page table the guest runs on): `None` only in
    /// the bare register state that [`Vcpu::reset_state`] returns, `Some`
    /// in every vCPU that [`Vcpu::new`] makes.
    hw: Option<Hw>,
    //@ end
}
// ANCHOR_END: regs

// ANCHOR: reset
/// RFLAGS after reset: only bit 1, which is reserved and always set.
pub const RESET_RFLAGS: u64 = 0x2;
/// RIP after reset: with CS's base 0xFFFF_0000, the first instruction is
/// fetched at 0xFFFF_FFF0, 16 bytes below 4 GiB.
pub const RESET_RIP: u64 = 0xFFF0;
/// RDX after reset holds the processor's signature (family, model,
/// stepping, as `CPUID` leaf 1 reports it in EAX). 2006 gave its guests
/// 0x600: family 6.
pub const RESET_RDX: u64 = 0x600;
/// CR0 after reset: CD (bit 30) and NW (bit 29), caches disabled, and ET
/// (bit 4). PE and PG are clear: real-address mode without paging.
pub const RESET_CR0: u64 = 0x6000_0010;
/// IA32_APIC_BASE after reset: the local APIC at 0xFEE0_0000, enabled
/// (bit 11), on the bootstrap processor (bit 8). A VM's only vCPU boots it.
pub const RESET_APIC_BASE: u64 = 0xFEE0_0000 | 1 << 11 | 1 << 8;

impl Vcpu {
    /// The state of an x86 processor after power-up or `RESET#`: real-address
    /// mode, executing from 0xFFFF_FFF0. The values are those of Intel SDM
    /// Vol. 3A, "Processor State After Reset" (the table of processor states
    /// following power-up, reset or INIT) and AMD APM Vol. 2, "Processor
    /// Initialization State", as 2006's `vmx_vcpu_setup` and svm.c's
    /// `init_vmcb` wrote them, except that 2006's VMX code put CS's base at
    /// 0xF_0000 (vm86 mode, which it used for real mode, insists on base =
    /// selector × 16). Every register not named is zero.
    pub fn reset_state() -> Vcpu {
        let mut regs = [0; NR_REGS];
        regs[Reg::Rdx as usize] = RESET_RDX;
        Vcpu {
            regs,
            rip: RESET_RIP,
            rflags: RESET_RFLAGS,
            sregs: reset_sregs(),
            //@ begin 4
            hw: None,
            //@ end
        }
    }

    /// A new vCPU in the reset state.
    pub fn new() -> KResult<Box<Vcpu>> {
        #[allow(unused_mut)]
        let mut vcpu = Vcpu::reset_state();
        //@ begin 4
        vcpu.hw = Some(Hw::new(&vcpu.sregs)?);
        //@ end
        try_box(vcpu)
    }
}

/// The segment, table and control registers after reset.
fn reset_sregs() -> KvmSregs {
    // The manuals give CS the hidden state of a data segment; like KVM, we
    // give it a code segment's type (execute/read, accessed), which is what
    // VM entry's checks on a real-mode guest expect.
    let code = TYPE_CODE_EXECUTE_READ | TYPE_ACCESSED;
    let cs = KvmSegment { base: 0xFFFF_0000, type_: code, ..KvmSegment::real_mode(0xF000) };
    let data = KvmSegment::real_mode(0);
    let system = |type_| KvmSegment { type_, s: 0, ..data };
    let table = KvmDtable { base: 0, limit: 0xFFFF, padding: [0; 3] };
    KvmSregs {
        cs,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        // A busy 32-bit TSS, as 2006's VMX code set it: VM entry requires
        // a busy TSS type in TR.
        tr: system(TYPE_TSS_BUSY),
        ldt: system(TYPE_LDT),
        gdt: table,
        idt: table,
        cr0: RESET_CR0,
        apic_base: RESET_APIC_BASE,
        ..KvmSregs::default()
    }
}
// ANCHOR_END: reset

// ANCHOR: get_set_regs
impl Vcpu {
    /// The general registers, RIP and RFLAGS, as `KVM_GET_REGS` returns
    /// them; `vcpu` and `padding` are left zero for the caller to fill.
    pub fn get_regs(&self) -> KvmRegs {
        //@ exercise E3.3
        //@ instruction: Return the registers as `KVM_GET_REGS` reports
        //@+ them: each field of `KvmRegs` holds the register it names, and
        //@+ `vcpu` and `padding` are 0. `self.regs` is indexed by `Reg`.
        //@+ A quick one, whose habit is to index by name, never by number.
        //@ hint: Read how `Reg` numbers the registers (`regs.rs`), and how
        //@+ `KvmRegs` orders its fields: they do not agree.
        //@ hint: `self.regs[Reg::Rbx as usize]` is RBX. `Reg` follows the
        //@+ instruction encodings (RAX, RCX, RDX, RBX, ...), `KvmRegs` the
        //@+ 2006 header (rax, rbx, rcx, rdx, ...). A closure `let r = |reg:
        //@+ Reg| self.regs[reg as usize];` keeps the sixteen lines short.
        let r = |reg: Reg| self.regs[reg as usize];
        KvmRegs {
            vcpu: 0,
            padding: 0,
            rax: r(Reg::Rax),
            rbx: r(Reg::Rbx),
            rcx: r(Reg::Rcx),
            rdx: r(Reg::Rdx),
            rsi: r(Reg::Rsi),
            rdi: r(Reg::Rdi),
            rsp: r(Reg::Rsp),
            rbp: r(Reg::Rbp),
            r8: r(Reg::R8),
            r9: r(Reg::R9),
            r10: r(Reg::R10),
            r11: r(Reg::R11),
            r12: r(Reg::R12),
            r13: r(Reg::R13),
            r14: r(Reg::R14),
            r15: r(Reg::R15),
            rip: self.rip,
            rflags: self.rflags,
        }
        //@ end
    }

    /// `KVM_SET_REGS`: takes every register of `regs` (not `vcpu` or
    /// `padding`). The values are stored as given; the backend checks them
    /// against what the processor allows when it loads them (stage 05).
    pub fn set_regs(&mut self, regs: &KvmRegs) {
        //@ exercise E3.4
        //@ instruction: Take every register `regs` names into the vCPU:
        //@+ after this, `self.regs` (indexed by `Reg`), `rip` and `rflags`
        //@+ hold what `regs` says, and nothing else of the vCPU changed.
        //@ hint: The same two orders as in E3.3, the other way round.
        //@ hint: A list of `(Reg, u64)` pairs and a loop keep the sixteen
        //@+ assignments readable: `for (reg, value) in [(Reg::Rax,
        //@+ regs.rax), ...] { self.regs[reg as usize] = value; }`.
        let pairs = [
            (Reg::Rax, regs.rax),
            (Reg::Rbx, regs.rbx),
            (Reg::Rcx, regs.rcx),
            (Reg::Rdx, regs.rdx),
            (Reg::Rsi, regs.rsi),
            (Reg::Rdi, regs.rdi),
            (Reg::Rsp, regs.rsp),
            (Reg::Rbp, regs.rbp),
            (Reg::R8, regs.r8),
            (Reg::R9, regs.r9),
            (Reg::R10, regs.r10),
            (Reg::R11, regs.r11),
            (Reg::R12, regs.r12),
            (Reg::R13, regs.r13),
            (Reg::R14, regs.r14),
            (Reg::R15, regs.r15),
        ];
        for (reg, value) in pairs {
            self.regs[reg as usize] = value;
        }
        self.rip = regs.rip;
        self.rflags = regs.rflags;
        //@ end
    }
}
// ANCHOR_END: get_set_regs

// ANCHOR: get_set_sregs
impl Vcpu {
    /// The special registers, as `KVM_GET_SREGS` returns them; `vcpu` is
    /// left zero for the caller to fill.
    pub fn get_sregs(&self) -> KvmSregs {
        //@ begin 5
        if let Some(hw) = &self.hw {
            let mut sregs = self.sregs;
            hw.arch.get_sregs(&mut sregs);
            return sregs;
        }
        //@ end
        self.sregs
    }

    /// `KVM_SET_SREGS`: takes everything but `vcpu` and `padding`, stored
    /// as given (stage 05's backend checks what it loads).
    pub fn set_sregs(&mut self, sregs: &KvmSregs) {
        self.sregs = KvmSregs { vcpu: 0, padding: 0, ..*sregs };
        //@ begin 5
        if let Some(hw) = &mut self.hw {
            hw.arch.set_sregs(&self.sregs);
        }
        //@ end
    }
}
// ANCHOR_END: get_set_sregs

//@ begin 4
// ANCHOR: hw
/// The hardware half of a vCPU: what it needs to run.
struct Hw {
    /// The backend's half: the VMCS or VMCB.
    //@ begin 4 until 5
    #[allow(dead_code)] // stage 04 only holds it: dropping it frees it
    //@ end
    arch: Box<dyn ArchVcpu>,
    //@ begin 5
    /// The tables the guest runs on: guest-physical memory as the guest
    /// reaches it while its own paging is off (from stage 08 also the
    /// shadow of its own tables).
    mmu: Mmu,
    /// What the next `KVM_RUN` skips if userspace says it emulated the
    /// instruction that exited: that instruction's length, or 0.
    pending_skip: u8,
    //@ end
    //@ begin 8
    /// An exception arose while a double fault was being delivered: the
    /// processor shuts down, and the next entry reports it instead.
    shutdown_pending: bool,
    //@ end
    //@ begin 12
    /// IA32_MISC_ENABLE as the guest last wrote it (nothing reads it).
    misc_enable: u64,
    //@ end
    //@ begin 10
    /// The MMIO read userspace was asked for, and the data it gave.
    mmio_read: Option<(u64, usize)>,
    mmio_data: Option<(u64, usize, [u8; 8])>,
    //@ end
    //@ begin 12
    /// The slots' generation when the virtual-8086 TSS was last written.
    real_mode_tss_generation: Option<u64>,
    /// The guest's debug registers, and what `KVM_DEBUG_GUEST` asked.
    debug: crate::debug::DebugState,
    /// An instruction the module or userspace completed while the
    /// debugger single-steps: the next `KVM_RUN` step ends in
    /// `KVM_EXIT_DEBUG` before the guest runs again.
    step_done: bool,
    //@ end
}

impl Hw {
    /// The hardware half, on the backend chosen at load, in state `sregs`.
    fn new(sregs: &KvmSregs) -> KResult<Hw> {
        #[allow(unused_mut)]
        let mut arch = arch::current().ok_or(Errno::ENODEV)?.vcpu_create()?;
        //@ begin 4 until 5
        let _ = sregs;
        //@ end
        //@ begin 5
        arch.set_sregs(sregs);
        //@ end
        Ok(Hw {
            arch,
            //@ begin 5
            mmu: Mmu::new()?,
            pending_skip: 0,
            //@ end
            //@ begin 8
            shutdown_pending: false,
            //@ end
            //@ begin 10
            mmio_read: None,
            mmio_data: None,
            //@ end
            //@ begin 12
            misc_enable: crate::exit::msr::MISC_ENABLE_RESET,
            real_mode_tss_generation: None,
            debug: crate::debug::DebugState::default(),
            step_done: false,
            //@ end
        })
    }
}
// ANCHOR_END: hw
//@ end

//@ begin 5
// ANCHOR: run_loop
impl Vcpu {
    /// `KVM_RUN`, between the copies of `kvm_run` in and out: finishes
    /// what userspace completed, then runs the guest until an exit that
    /// userspace must see (`Ok`), or until a signal is pending (`EINTR`).
    /// Events are counted in the VM's `stats`.
    pub fn run(&mut self, run: &mut KvmRun, memory: &Mutex<MemSlots>, stats: &VmStats) -> KResult<()> {
        let Some(hw) = self.hw.as_mut() else { return Err(Errno::ENODEV) };
        let regs = Regs { gprs: &mut self.regs, rip: &mut self.rip, rflags: &mut self.rflags };
        let mut vcpu = Running {
            hw,
            regs,
            sregs: &mut self.sregs,
            memory,
            stats,
            root: Root { phys: 0, flush_tlb: false },
        };
        vcpu.complete_userspace(run);
        //@ begin 12
        if vcpu.step_exit(run) {
            vcpu.report(run);
            return Ok(());
        }
        //@ end
        //@ begin 10
        if vcpu.complete_mmio(run) == Action::ToUser {
            vcpu.report(run);
            return Ok(());
        }
        //@ end
        loop {
            if cpu::signal_pending() {
                vcpu.stats.count(Counter::SignalExits);
                return Err(Errno::EINTR);
            }
            cpu::cond_resched();
            vcpu.prepare_mmu()?;
            //@ begin 12
            vcpu.prepare_real_mode_tss();
            if vcpu.plan_interrupts(run) {
                break;
            }
            //@ end
            let exit = vcpu.enter();
            if exit::handle_exit(&exit, &mut vcpu, run) == Action::ToUser {
                break;
            }
            //@ begin 12
            if vcpu.step_exit(run) {
                break;
            }
            //@ end
        }
        vcpu.report(run);
        if exit::is_shutdown(run) {
            self.reset_after_shutdown();
        }
        Ok(())
    }

    /// After a shutdown exit the whole vCPU is in the reset state: every
    /// register userspace can read, RIP and RDX included, and the backend's
    /// half (SVM must rebuild its VMCB anyway: its content is undefined
    /// after a shutdown). A processor that shuts down waits for INIT or
    /// RESET; this is the state RESET gives it, so that userspace that
    /// runs the vCPU again restarts the machine rather than a mix of old
    /// and new state.
    fn reset_after_shutdown(&mut self) {
        let fresh = Vcpu::reset_state();
        (self.regs, self.rip, self.rflags) = (fresh.regs, fresh.rip, fresh.rflags);
        self.set_sregs(&fresh.sregs);
        //@ begin 12
        if let Some(hw) = &mut self.hw {
            hw.debug.regs = crate::debug::DebugRegs::default();
        }
        //@ end
    }
}

/// The registers generic code keeps, lent out while the vCPU runs.
struct Regs<'a> {
    gprs: &'a mut [u64; NR_REGS],
    rip: &'a mut u64,
    rflags: &'a mut u64,
}

/// A vCPU inside `KVM_RUN`: its parts, borrowed apart so that the backend
/// and the exit handlers can each have what they need.
struct Running<'a> {
    hw: &'a mut Hw,
    regs: Regs<'a>,
    sregs: &'a mut KvmSregs,
    memory: &'a Mutex<MemSlots>,
    stats: &'a VmStats,
    /// The page table the next entry runs on.
    root: Root,
}

impl Running<'_> {
    /// What userspace did since the last exit: with `emulated` set, it
    /// finished the instruction that exited, which is skipped now. A
    /// `KVM_RUN` without it leaves RIP where it was.
    fn complete_userspace(&mut self, run: &mut KvmRun) {
        let len = core::mem::take(&mut self.hw.pending_skip);
        if run.emulated != 0 && len != 0 {
            self.hw.arch.skip_instruction(self.regs.rip, len);
            //@ begin 12
            ExitContext::instruction_done(self);
            //@ end
        }
        run.emulated = 0;
    }

    //@ begin 12
    // ANCHOR: step_exit
    /// Whether a step the module completed ends this `KVM_RUN` (then
    /// `kvm_run` says `KVM_EXIT_DEBUG`).
    fn step_exit(&mut self, run: &mut KvmRun) -> bool {
        if !core::mem::take(&mut self.hw.step_done) {
            return false;
        }
        run.exit_type = crate::abi::KVM_EXIT_TYPE_VM_EXIT;
        run.exit_reason = crate::abi::KVM_EXIT_DEBUG;
        true
    }
    // ANCHOR_END: step_exit
    //@ end

    //@ begin 10
    /// An MMIO read userspace answered (`mmio_completed`, the data in
    /// `kvm_run.mmio.data`): the instruction runs again in the emulator,
    /// which takes the data. Without an answer the guest runs the
    /// instruction again itself, and asks again.
    fn complete_mmio(&mut self, run: &mut KvmRun) -> Action {
        let Some((gpa, len)) = self.hw.mmio_read.take() else { return Action::Resume };
        if core::mem::take(&mut run.mmio_completed) == 0 {
            return Action::Resume;
        }
        self.hw.mmio_data = Some((gpa, len, run.exit.mmio().data));
        exit::mmio::resume(self, run)
    }
    //@ end

    /// One entry into the guest, with preemption off from just before to
    /// just after; returns its exit, decoded by the backend.
    fn enter(&mut self) -> VmExit {
        let hw = &mut *self.hw;
        //@ begin 8
        if core::mem::take(&mut hw.shutdown_pending) {
            return VmExit::Shutdown;
        }
        //@ end
        let (mmu_root, flush_tlb) = (self.root.phys, self.root.flush_tlb);
        if flush_tlb {
            self.stats.count(Counter::TlbFlush);
        }
        //@ begin 12
        // The debugger steps with TF, which the guest does not see: it is
        // set for the entry and taken away after the exit.
        hw.arch.set_debug_registers(crate::debug::hardware(&hw.debug));
        let tf = crate::debug::RFLAGS_TF;
        let add_tf = hw.debug.debugger.singlestep && *self.regs.rflags & tf == 0;
        if add_tf {
            *self.regs.rflags |= tf;
        }
        //@ end
        cpu::preempt_disable();
        //@ begin 13
        // ANCHOR: enter_off_cpu
        // This CPU is between its hotplug teardown and going offline, or
        // the machine is rebooting: try again (the scheduler moves the
        // task), or, when rebooting, tell userspace the entry failed.
        if cfg!(target_os = "none") && !crate::arch::is_on(cpu::current_cpu()) {
            cpu::preempt_enable();
            return match crate::hardware::rebooting() {
                true => VmExit::FailEntry { hardware_reason: u32::MAX },
                false => VmExit::ExternalInterrupt,
            };
        }
        // ANCHOR_END: enter_off_cpu
        //@ end
        let mut entry = Entry {
            cpu: cpu::current_cpu(),
            regs: self.regs.gprs,
            rip: self.regs.rip,
            rflags: self.regs.rflags,
            mmu_root,
            flush_tlb,
            fetch: &hw.mmu,
        };
        let exit = hw.arch.run(&mut entry);
        //@ begin 13
        crate::hardware::machine_check(&exit);
        //@ end
        cpu::preempt_enable();
        //@ begin 12
        if add_tf {
            *self.regs.rflags &= !tf;
        }
        //@ end
        exit
    }

    //@ begin 12
    // ANCHOR: plan_interrupts
    /// Whether the guest can take an external interrupt at the next entry.
    fn can_take_interrupt(&self) -> bool {
        const RFLAGS_IF: u64 = 1 << 9;
        *self.regs.rflags & RFLAGS_IF != 0 && self.hw.arch.interrupt_allowed()
    }

    /// Before each entry: carries out [`crate::irq::plan`]. Returns true
    /// if userspace must hear instead that its interrupt window is open
    /// (the exit is then filled in).
    fn plan_interrupts(&mut self, run: &mut KvmRun) -> bool {
        if !crate::irq::any(&self.sregs.interrupt_bitmap) && run.request_interrupt_window == 0 {
            // Nothing queued, nothing asked: the common case.
            self.hw.arch.set_window_exiting(false);
            return false;
        }
        let can_take = self.can_take_interrupt();
        let plan = crate::irq::plan(can_take, run.request_interrupt_window != 0, &mut self.sregs.interrupt_bitmap);
        if plan.exit_window_open {
            run.exit_type = crate::abi::KVM_EXIT_TYPE_VM_EXIT;
            run.exit_reason = crate::abi::KVM_EXIT_IRQ_WINDOW_OPEN;
            return true;
        }
        if let Some(vector) = plan.inject {
            if self.hw.arch.delivers_events() {
                self.hw.arch.inject_interrupt(vector);
            } else {
                self.deliver_real_mode(vector);
            }
            self.stats.count(Counter::IrqInjections);
        }
        self.hw.arch.set_window_exiting(plan.window_exiting);
        false
    }
    // ANCHOR_END: plan_interrupts

    // ANCHOR: real_mode_tss
    /// Before each entry: the virtual-8086 TSS, if the backend needs one
    /// and the slots changed since it was written (a new slot 0 holds
    /// other pages, or sits elsewhere). It goes into the last three pages
    /// of slot 0, as 2006's `init_rmode_tss` put it.
    fn prepare_real_mode_tss(&mut self) {
        if !self.hw.arch.wants_real_mode_tss() {
            return;
        }
        let (generation, slot0) = {
            let slots = self.memory.lock();
            (slots.generation(), slots.slot(0).map(|s| (s.base_gfn(), s.npages() as u64)))
        };
        if self.hw.real_mode_tss_generation == Some(generation) {
            return;
        }
        let base = slot0.and_then(|(gfn, npages)| real_mode::tss_base(gfn, npages));
        let written = base.filter(|&base| self.write_real_mode_tss(base));
        self.hw.arch.set_real_mode_tss(written);
        self.hw.real_mode_tss_generation = Some(generation);
    }

    /// Writes the TSS at `base`, a chunk at a time; `false` if guest
    /// memory does not hold it all.
    fn write_real_mode_tss(&mut self, base: u64) -> bool {
        let mut chunk = [0u8; 256];
        (0..real_mode::TSS_SIZE).step_by(chunk.len()).all(|offset| {
            let len = chunk.len().min(real_mode::TSS_SIZE - offset);
            let Some(bytes) = chunk.get_mut(..len) else { return false };
            real_mode::tss_bytes(offset, bytes);
            ExitContext::write_phys(self, base + offset as u64, bytes)
        })
    }
    // ANCHOR_END: real_mode_tss

    // ANCHOR: deliver_real_mode
    /// Delivers `vector` to a real-mode guest as the processor would,
    /// when the backend cannot: FLAGS, CS and IP onto the stack, IF, TF
    /// and AC cleared, CS:IP from the guest's interrupt vector table
    /// (`crate::real_mode`; 2006's `inject_rmode_irq`). RIP is where the
    /// handler returns: the faulting instruction for a fault, the next
    /// one for a trap or an interrupt. A delivery that cannot complete
    /// (an entry beyond IDTR's limit, a table or stack outside guest
    /// memory) shuts the guest down, where the processor would try #GP,
    /// then a double fault, before it shut down.
    fn deliver_real_mode(&mut self, vector: u8) {
        let mut sregs = ExitContext::sregs(self);
        let from = real_mode::Interrupted {
            cs: sregs.cs.selector,
            ip: *self.regs.rip,
            rflags: *self.regs.rflags,
            ss_base: sregs.ss.base,
            rsp: self.regs.gprs[Reg::Rsp as usize],
            stack_32: sregs.ss.db != 0,
        };
        let mut entry = [0u8; 4];
        let read = real_mode::ivt_entry(&sregs.idt, vector).is_some_and(|at| ExitContext::read_phys(self, at, &mut entry));
        let frame = real_mode::frame(&from);
        if !read || !frame.bytes.iter().all(|&(at, byte)| ExitContext::write_phys(self, at, &[byte])) {
            log!(Err, "real mode: vector {vector} cannot be delivered (IDTR {:?}, SS:SP {:#x}:{:#x}): shutdown", sregs.idt, from.ss_base, from.rsp);
            self.hw.shutdown_pending = true;
            return;
        }
        let (cs, ip) = real_mode::handler(entry);
        sregs.cs = real_mode::load_segment(&sregs.cs, cs);
        ExitContext::set_sregs(self, &sregs);
        // The delivery ends any interrupt shadow, as an instruction does.
        self.hw.arch.skip_instruction(self.regs.rip, 0);
        *self.regs.rip = ip;
        self.regs.gprs[Reg::Rsp as usize] = frame.rsp;
        *self.regs.rflags = frame.rflags;
    }
    // ANCHOR_END: deliver_real_mode
    //@ end

    /// Before each entry: the table the guest runs on.
    //@ begin 8
    /// From stage 08, the shadow pages made and thrown away since the
    /// last entry go to the VM's statistics.
    //@ end
    //@ begin 13
    /// From stage 13 so do the kinds of the shadow faults fixed since.
    //@ end
    fn prepare_mmu(&mut self) -> KResult<()> {
        let sregs = ExitContext::sregs(self);
        self.root = self.hw.mmu.prepare(&sregs, self.memory)?;
        //@ begin 8
        let (made, zapped) = self.hw.mmu.shadow_counts();
        self.stats.add(Counter::ShadowPagesMade, made);
        self.stats.add(Counter::ShadowPagesZapped, zapped);
        //@ end
        //@ begin 13
        for (counter, n) in self.hw.mmu.take_kinds() {
            self.stats.add(counter, n);
        }
        //@ end
        Ok(())
    }

    /// The "out" fields every exit fills, as 2006's `post_kvm_run_save`:
    /// the instruction's length, the interrupt flag, the task priority and
    /// the APIC base.
    fn report(&self, run: &mut KvmRun) {
        const RFLAGS_IF: u64 = 1 << 9;
        run.instruction_length = self.hw.pending_skip.into();
        run.if_flag = u8::from(*self.regs.rflags & RFLAGS_IF != 0);
        run.ready_for_interrupt_injection = 0;
        //@ begin 12
        // 2006's rule: the window is open and nothing of the module's own
        // is waiting for it.
        run.ready_for_interrupt_injection =
            u8::from(self.can_take_interrupt() && !crate::irq::any(&self.sregs.interrupt_bitmap));
        //@ end
        run.cr8 = self.sregs.cr8;
        run.apic_base = self.sregs.apic_base;
    }
}
// ANCHOR_END: run_loop

// ANCHOR: exit_context
/// The vCPU as exit handlers see it, between two entries.
impl ExitContext for Running<'_> {
    fn skip_instruction(&mut self, len: u8) {
        self.hw.arch.skip_instruction(self.regs.rip, len);
        //@ begin 12
        self.instruction_done();
        //@ end
    }
    //@ begin 12

    // ANCHOR: instruction_done
    /// An instruction the guest did not run itself is complete (the
    /// module or userspace carried it out): if TF was set, a single-step
    /// trap follows it, as the processor would raise one. It is the
    /// debugger's if the debugger steps (`KVM_EXIT_DEBUG` before the next
    /// entry), else the guest's, a #DB with DR6.BS (SDM Vol. 3B, 19.3.1.4
    /// "Single-Step Exception Condition"). And RF goes, as the processor
    /// clears it when an instruction completes (SDM Vol. 3B, 19.3.1.1): an
    /// instruction a fault handler returned to, with RF set in the frame
    /// an injected fault pushed, may be the one the module completes.
    fn instruction_done(&mut self) {
        *self.regs.rflags &= !crate::arch::RFLAGS_RF;
        if self.hw.debug.debugger.singlestep {
            self.hw.step_done = true;
        } else if *self.regs.rflags & crate::debug::RFLAGS_TF != 0 {
            self.hw.debug.regs.dr6 |= crate::debug::DR6_BS;
            self.queue_exception(1, None);
        }
    }
    // ANCHOR_END: instruction_done
    //@ end

    fn skip_if_emulated(&mut self, len: u8) {
        self.hw.pending_skip = len;
    }

    fn gpr(&self, reg: u8) -> u64 {
        self.regs.gprs.get(usize::from(reg)).copied().unwrap_or(0)
    }

    fn set_gpr(&mut self, reg: u8, value: u64) {
        if let Some(r) = self.regs.gprs.get_mut(usize::from(reg)) {
            *r = value;
        }
    }

    fn sregs(&self) -> KvmSregs {
        let mut sregs = *self.sregs;
        self.hw.arch.get_sregs(&mut sregs);
        sregs
    }

    fn set_sregs(&mut self, sregs: &KvmSregs) {
        *self.sregs = KvmSregs { vcpu: 0, padding: 0, ..*sregs };
        self.hw.arch.set_sregs(sregs);
    }

    fn page_fault(&mut self, address: u64, error_code: u32) -> PageFault {
        self.hw.mmu.page_fault(address, error_code, self.memory)
    }
    //@ begin 8

    fn flush_guest_tlb(&mut self) {
        self.hw.mmu.flush();
    }

    fn invlpg(&mut self, address: u64) {
        //@ begin 13
        if self.hw.mmu.invalidate_page(address, self.memory) {
            return;
        }
        //@ end
        self.hw.mmu.invlpg(address);
    }

    fn pdptes_valid(&self, cr3: u64) -> bool {
        self.hw.mmu.pdptes_valid(cr3, self.memory)
    }

    //@ begin 12
    fn read_msr(&self, index: u32) -> Option<u64> {
        self.hw.read_msr(index, self.sregs)
    }

    fn write_msr(&mut self, index: u32, value: u64) -> bool {
        self.hw.write_msr(index, value, self.sregs)
    }

    fn debug_state(&mut self) -> &mut crate::debug::DebugState {
        &mut self.hw.debug
    }
    //@ end

    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        //@ begin 12
        if !self.hw.arch.delivers_events() {
            // Real mode on VMX: through the IVT, now. Real mode has no
            // double faults to combine: a delivery that cannot complete
            // shuts the processor down (`deliver_real_mode`).
            self.deliver_real_mode(vector);
            return;
        }
        //@ end
        match self.hw.arch.pending_exception().map(|first| arch::combine(first, vector)) {
            Some(arch::Combined::DoubleFault) => self.hw.arch.queue_exception(8, Some(0)),
            Some(arch::Combined::Shutdown) => {
                self.hw.arch.clear_pending_event();
                self.hw.shutdown_pending = true;
            }
            _ => {
                //@ begin 12
                if arch::is_fault(vector) {
                    *self.regs.rflags |= arch::RFLAGS_RF;
                }
                //@ end
                self.hw.arch.queue_exception(vector, error_code)
            }
        }
    }
    //@ end
    //@ begin 10

    fn rip(&self) -> u64 {
        *self.regs.rip
    }
    fn set_rip(&mut self, rip: u64) {
        *self.regs.rip = rip;
    }
    fn rflags(&self) -> u64 {
        *self.regs.rflags
    }
    fn set_rflags(&mut self, rflags: u64) {
        *self.regs.rflags = rflags;
    }

    fn translate(&mut self, address: u64, access: exit::mmio::LinearAccess) -> Result<u64, u32> {
        self.hw.mmu.translate_access(address, access, self.memory)
    }

    fn read_phys(&mut self, gpa: u64, data: &mut [u8]) -> bool {
        crate::mmu::read_phys(gpa, data, self.memory)
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        let written = crate::mmu::write_phys(gpa, data, self.memory);
        if written {
            self.hw.mmu.guest_wrote(gpa, data.len());
        }
        written
    }

    fn expect_mmio_read(&mut self, gpa: u64, len: usize) {
        self.hw.mmio_read = Some((gpa, len));
    }

    //@ begin 13
    fn table_write_declined(&mut self, address: u64, error_code: u32) -> PageFault {
        self.hw.mmu.table_write_declined(address, error_code, self.memory)
    }
    //@ end

    fn completed_mmio_read(&mut self, gpa: u64, len: usize) -> Option<[u8; 8]> {
        match self.hw.mmio_data {
            Some((g, l, data)) if (g, l) == (gpa, len) => {
                self.hw.mmio_data = None;
                Some(data)
            }
            _ => None,
        }
    }
    //@ end

    fn count(&mut self, counter: Counter) {
        self.stats.count(counter);
    }
}
// ANCHOR_END: exit_context
//@ end

//@ begin 8
// ANCHOR: translate
impl Vcpu {
    /// `KVM_TRANSLATE`, as 2006 answered it: the guest-physical address of
    /// `linear` through the guest's own tables (the address itself while
    /// its paging is off), and whether there is one. Like 2006 (and
    /// Linux's KVM today), `writeable` is always 1 and `usermode` 0; unlike
    /// them, the walk sets no accessed bit: a debugger's look must not
    /// change the guest.
    pub fn translate(&mut self, linear: u64, memory: &Mutex<MemSlots>) -> KvmTranslation {
        let mut out = KvmTranslation { linear_address: linear, writeable: 1, ..KvmTranslation::default() };
        let sregs = self.get_sregs();
        let Some(hw) = self.hw.as_mut() else { return out };
        let gpa = match crate::mmu::paging_mode(&sregs) {
            None => Some(linear & 0xFFFF_FFFF),
            Some(_) => {
                if hw.mmu.prepare(&sregs, memory).is_err() {
                    return out;
                }
                hw.mmu.translate(linear, memory).map(|t| t.gpa)
            }
        };
        if let Some(gpa) = gpa {
            (out.physical_address, out.valid) = (gpa, 1);
        }
        out
    }
}
// ANCHOR_END: translate
//@ end

//@ begin 12
// ANCHOR: msr_access
impl Hw {
    /// The guest's MSR `index` where [`crate::exit::msr::home`] puts it.
    fn read_msr(&self, index: u32, sregs: &KvmSregs) -> Option<u64> {
        use crate::exit::msr::MsrHome;
        match crate::exit::msr::home(index)? {
            MsrHome::Backend => self.arch.get_msr(index),
            MsrHome::ApicBase => Some(sregs.apic_base),
            MsrHome::Kept => Some(self.misc_enable),
            MsrHome::Constant(value) => Some(value),
        }
    }

    /// Writes it; `false` for an MSR the module does not keep, or a value
    /// the backend refuses.
    fn write_msr(&mut self, index: u32, value: u64, sregs: &mut KvmSregs) -> bool {
        use crate::exit::msr::MsrHome;
        match crate::exit::msr::home(index) {
            None => false,
            Some(MsrHome::Backend) => self.arch.set_msr(index, value),
            Some(MsrHome::ApicBase) => {
                sregs.apic_base = value;
                true
            }
            Some(MsrHome::Kept) => {
                self.misc_enable = value;
                true
            }
            Some(MsrHome::Constant(_)) => true,
        }
    }
}

impl Vcpu {
    /// `KVM_GET_MSRS`: fills each entry's data, in order, and stops at the
    /// first MSR the module does not keep; returns how many were read, as
    /// 2006's `msr_io` did.
    pub fn get_msrs(&mut self, entries: &mut [crate::abi::KvmMsrEntry]) -> usize {
        let Some(hw) = self.hw.as_ref() else { return 0 };
        let sregs = self.sregs;
        let mut done = 0;
        for entry in entries.iter_mut() {
            let Some(value) = hw.read_msr(entry.index, &sregs) else { break };
            entry.data = value;
            done += 1;
        }
        done
    }

    /// `KVM_SET_MSRS`: the same, writing.
    pub fn set_msrs(&mut self, entries: &[crate::abi::KvmMsrEntry]) -> usize {
        let Some(hw) = self.hw.as_mut() else { return 0 };
        let sregs = &mut self.sregs;
        entries.iter().take_while(|e| hw.write_msr(e.index, e.data, sregs)).count()
    }
}
// ANCHOR_END: msr_access

impl Vcpu {
    /// `KVM_INTERRUPT`: queues external interrupt `irq` for the guest
    /// (`EINVAL` beyond vector 255). The next entries deliver it when the
    /// guest can take it.
    pub fn queue_interrupt(&mut self, irq: u32) -> KResult<()> {
        crate::irq::raise(&mut self.sregs.interrupt_bitmap, irq)
    }

    /// `KVM_DEBUG_GUEST`: the debugger's breakpoints and single-stepping
    /// from the next entry on (`crate::debug`).
    pub fn set_debugger(&mut self, dbg: &crate::abi::KvmDebugGuest) -> KResult<()> {
        let hw = self.hw.as_mut().ok_or(Errno::ENODEV)?;
        hw.debug.debugger = crate::debug::Debugger::from_abi(dbg);
        Ok(())
    }
}
//@ end

//@ begin 11
impl Vcpu {
    /// Write-protects guest frames `gfns` in this vCPU's MMU, for
    /// `KVM_GET_DIRTY_LOG`.
    pub fn write_protect(&mut self, gfns: impl Iterator<Item = u64>) {
        if let Some(hw) = self.hw.as_mut() {
            hw.mmu.write_protect(gfns);
        }
    }
}
//@ end


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_is_real_mode_at_the_top_of_the_first_megabyte_alias() {
        let v = Vcpu::reset_state();
        let s = &v.sregs;
        assert_eq!((s.cs.selector, s.cs.base, s.cs.limit), (0xF000, 0xFFFF_0000, 0xFFFF));
        assert_eq!(s.cs.base + v.rip, 0xFFFF_FFF0, "the reset vector");
        assert_eq!((s.cs.type_, s.cs.s, s.cs.present, s.cs.db, s.cs.g), (0xB, 1, 1, 0, 0));
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!((seg.selector, seg.base, seg.limit, seg.type_, seg.s, seg.present), (0, 0, 0xFFFF, 3, 1, 1));
            assert_eq!(seg.unusable, 0);
        }
        assert_eq!((s.tr.type_, s.tr.s, s.tr.present, s.tr.limit), (0xB, 0, 1, 0xFFFF));
        assert_eq!((s.ldt.type_, s.ldt.s, s.ldt.present, s.ldt.limit), (2, 0, 1, 0xFFFF));
        assert_eq!((s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit), (0, 0xFFFF, 0, 0xFFFF));
        assert_eq!((s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer), (0x6000_0010, 0, 0, 0, 0, 0));
        assert_eq!(s.apic_base, 0xFEE0_0900);
        assert_eq!(s.interrupt_bitmap, [0; 4]);
        assert_eq!((v.rip, v.rflags), (0xFFF0, 2));
        let mut expected = [0; NR_REGS];
        expected[2] = 0x600;
        assert_eq!(v.regs, expected, "all zero but RDX");
    }

    #[test]
    fn sregs_round_trip_without_their_vcpu_field() {
        let mut v = Vcpu::reset_state();
        let mut sregs = v.get_sregs();
        sregs.vcpu = 7;
        sregs.padding = 9;
        sregs.cr0 = 0x8000_0011;
        sregs.cr3 = 0x1000;
        sregs.efer = 0x500;
        sregs.cs = KvmSegment { selector: 8, base: 0, limit: 0xFFFF_FFFF, g: 1, db: 1, ..sregs.cs };
        sregs.interrupt_bitmap[3] = 1 << 63;
        v.set_sregs(&sregs);
        let back = v.get_sregs();
        assert_eq!((back.vcpu, back.padding), (0, 0));
        assert_eq!(KvmSregs { vcpu: 7, padding: 9, ..back }, sregs);
    }

    mod e3_3 {
        use super::super::*;

        #[test]
        fn get_regs_reports_the_reset_state() {
            let regs = Vcpu::reset_state().get_regs();
            let expected = KvmRegs { rdx: 0x600, rip: 0xFFF0, rflags: 2, ..KvmRegs::default() };
            assert_eq!(regs, expected);
        }

        #[test]
        fn get_regs_maps_each_encoding_number_to_its_field() {
            let mut v = Vcpu::reset_state();
            for (i, r) in v.regs.iter_mut().enumerate() {
                *r = 0x1000 + i as u64;
            }
            v.rip = 0xAB;
            v.rflags = 0x246;
            let regs = v.get_regs();
            let in_encoding_order = [
                regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8, regs.r9,
                regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
            ];
            for (i, value) in in_encoding_order.iter().enumerate() {
                assert_eq!(*value, 0x1000 + i as u64, "register number {i}");
            }
            assert_eq!((regs.rip, regs.rflags, regs.vcpu, regs.padding), (0xAB, 0x246, 0, 0));
        }
    }

    mod e3_4 {
        use super::super::*;

        #[test]
        fn set_regs_stores_each_field_at_its_encoding_number() {
            let mut v = Vcpu::reset_state();
            let regs = KvmRegs {
                vcpu: 3,
                padding: 4,
                rax: 0,
                rcx: 1,
                rdx: 2,
                rbx: 3,
                rsp: 4,
                rbp: 5,
                rsi: 6,
                rdi: 7,
                r8: 8,
                r9: 9,
                r10: 10,
                r11: 11,
                r12: 12,
                r13: 13,
                r14: 14,
                r15: 15,
                rip: 0x7C00,
                rflags: 0x202,
            };
            v.set_regs(&regs);
            let expected: [u64; NR_REGS] = core::array::from_fn(|i| i as u64);
            assert_eq!(v.regs, expected);
            assert_eq!((v.rip, v.rflags), (0x7C00, 0x202));
        }

        #[test]
        fn set_regs_leaves_the_special_registers_alone() {
            let mut v = Vcpu::reset_state();
            v.set_regs(&KvmRegs { rax: u64::MAX, r15: u64::MAX, ..KvmRegs::default() });
            assert_eq!(v.regs[Reg::Rax as usize], u64::MAX);
            assert_eq!(v.regs[Reg::R15 as usize], u64::MAX);
            assert_eq!(v.regs[Reg::Rdx as usize], 0, "RDX was written too");
            assert_eq!(v.sregs, Vcpu::reset_state().sregs);
        }
    }
}

//@ begin 5
/// The run loop on the fake backend: its exits come from a script, and the
/// entries record what the backend was given.
#[cfg(test)]
mod run_loop_tests {
    use super::*;
    use crate::abi::{self, KvmMemoryRegion};
    use crate::arch::fake::{self, Entered, Step};
    use crate::exit::VmExit;
    use crate::kernel::LockClass;
    //@ begin 6
    use crate::exit::IoExit;
    //@ end

    fn memory(pages: u64) -> Mutex<MemSlots> {
        let m = Mutex::new(MemSlots::new(), LockClass::Memory).expect("a mutex");
        let region = KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: pages * 4096 };
        m.lock().set_region(&region).expect("a slot");
        m
    }

    fn vcpu_at(rip: u64) -> Box<Vcpu> {
        let mut v = Vcpu::new().expect("a vCPU on the fake backend");
        v.rip = rip;
        v
    }

    fn step(advance: u64, exit: VmExit) -> Step {
        Step { advance, exit }
    }

    //@ begin 6
    fn out(insn_len: u8) -> VmExit {
        VmExit::Io(IoExit { port: 0xE0, size: 1, is_in: false, string: None, value: 0x2A, insn_len })
    }
    //@ end

    #[test]
    fn hlt_ends_the_run_past_the_instruction() {
        let m = memory(1);
        let mut v = vcpu_at(0x8000);
        let st = VmStats::default();
        fake::script(&[step(0, VmExit::Hlt { insn_len: 1 })]);
        let mut run = KvmRun::default();
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!((run.exit_type, run.exit_reason), (abi::KVM_EXIT_TYPE_VM_EXIT, abi::KVM_EXIT_HLT));
        assert_eq!(v.rip, 0x8001);
        assert_eq!((st.get(Counter::Exits), st.get(Counter::HaltExits)), (1, 1));
    }

    //@ begin 6
    #[test]
    fn an_instruction_userspace_emulated_is_skipped_once() {
        let m = memory(1);
        let mut v = vcpu_at(0x8000);
        let st = VmStats::default();
        fake::script(&[step(0, out(2)), step(0, out(2)), step(0, VmExit::Hlt { insn_len: 1 })]);
        let mut run = KvmRun::default();
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!((run.exit_reason, run.instruction_length, run.exit.io().port), (abi::KVM_EXIT_IO, 2, 0xE0));
        run.emulated = 1;
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!(run.emulated, 0, "consumed");
        // Without `emulated` the instruction runs again: RIP stays.
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        let rips: std::vec::Vec<u64> = fake::entries().iter().map(|e| e.rip).collect();
        assert_eq!(rips, [0x8000, 0x8002, 0x8002]);
        assert_eq!(st.get(Counter::IoExits), 2);
    }
    //@ end

    #[test]
    fn interrupts_and_fixed_faults_resume_without_userspace() {
        let m = memory(16);
        let mut v = vcpu_at(0x8000);
        let st = VmStats::default();
        fake::script(&[
            step(0, VmExit::PageFault { address: 0x8000, error_code: 0x10 }),
            step(0, VmExit::ExternalInterrupt),
            step(4, VmExit::Hlt { insn_len: 1 }),
        ]);
        let mut run = KvmRun::default();
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!(run.exit_reason, abi::KVM_EXIT_HLT);
        assert_eq!(fake::entries().len(), 3, "one KVM_RUN, three entries");
        assert_eq!(v.rip, 0x8005);
        assert_eq!((st.get(Counter::PfFixed), st.get(Counter::IrqExits), st.get(Counter::Exits)), (1, 1, 3));
    }

    #[test]
    fn a_fault_outside_every_slot_reaches_userspace() {
        let m = memory(16);
        let mut v = vcpu_at(0x8000);
        let st = VmStats::default();
        fake::script(&[step(0, VmExit::PageFault { address: 0xC000_0000, error_code: 6 })]);
        let mut run = KvmRun::default();
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!((run.exit_reason, run.exit.ex().exception, run.exit.ex().error_code), (abi::KVM_EXIT_EXCEPTION, 14, 6));
        assert_eq!(st.get(Counter::PfFixed), 0);
    }

    #[test]
    fn a_slot_change_flushes_the_guests_tlb_once() {
        let m = memory(16);
        let mut v = vcpu_at(0x8000);
        let st = VmStats::default();
        let hlt = step(0, VmExit::Hlt { insn_len: 1 });
        fake::script(&[step(0, VmExit::PageFault { address: 0x8000, error_code: 0x10 }), hlt, hlt, hlt]);
        let mut run = KvmRun::default();
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        let region = KvmMemoryRegion { slot: 1, flags: 0, guest_phys_addr: 0x10_0000, memory_size: 4096 };
        m.lock().set_region(&region).expect("a second slot");
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        let flushes: std::vec::Vec<bool> = fake::entries().iter().map(|e: &Entered| e.flush_tlb).collect();
        assert_eq!(flushes, [false, false, true, false], "the map was dropped once, after the change");
        assert_eq!(st.get(Counter::TlbFlush), 1);
    }

    #[test]
    fn registers_travel_to_the_backend_and_flags_to_kvm_run() {
        let m = memory(1);
        let mut v = vcpu_at(0x8000);
        let st = VmStats::default();
        v.regs[Reg::Rax as usize] = 0x1234;
        v.rflags = 0x202;
        fake::script(&[step(0, VmExit::Shutdown)]);
        let mut run = KvmRun::default();
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!(fake::entries()[0].rax, 0x1234);
        assert_eq!((run.exit_reason, run.if_flag, run.apic_base), (abi::KVM_EXIT_SHUTDOWN, 1, RESET_APIC_BASE));
    }

    #[test]
    fn a_shutdown_leaves_the_whole_vcpu_in_the_reset_state() {
        let m = memory(1);
        let mut v = vcpu_at(0x8000);
        let st = VmStats::default();
        v.regs[Reg::Rax as usize] = 0x1234;
        let mut s = v.get_sregs();
        s.cr0 = 0x11;
        v.set_sregs(&s);
        fake::script(&[step(0, VmExit::Shutdown)]);
        let mut run = KvmRun::default();
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!(run.exit_reason, abi::KVM_EXIT_SHUTDOWN);
        let reset = Vcpu::reset_state();
        assert_eq!((v.regs, v.rip, v.rflags), (reset.regs, reset.rip, reset.rflags), "RIP and RDX too");
        assert_eq!(v.get_sregs(), reset.sregs);
    }

    #[test]
    fn sregs_go_through_the_backend() {
        let mut v = vcpu_at(0x8000);
        let mut s = v.get_sregs();
        s.cr0 = 0x11;
        s.cr8 = 5;
        v.set_sregs(&s);
        let back = v.get_sregs();
        assert_eq!((back.cr0, back.cr8), (0x11, 5));
    }
    //@ begin 13

    #[test]
    fn the_kinds_of_the_shadow_faults_fixed_reach_the_vms_counters() {
        const PDE: u32 = 0x1 | 0x2 | 0x4 | 0x20 | 0x40 | 0x80; // P, RW, US, A, D, PS
        let m = memory(16);
        let page = m.lock().gfn_to_page(1).expect("backed").addr();
        // SAFETY: the first entry of a live fake page.
        unsafe { page.cast::<u32>().write(PDE) };
        let mut v = vcpu_at(0x8000);
        let st = VmStats::default();
        let mut s = v.get_sregs();
        (s.cr0, s.cr3, s.cr4) = (0x8001_0011, 0x1000, 0x10);
        v.set_sregs(&s);
        // A read in the 4 MiB page at 0 that the guest's directory maps.
        let read = VmExit::PageFault { address: 0x8000, error_code: 0 };
        fake::script(&[step(0, read), step(0, VmExit::Hlt { insn_len: 1 })]);
        let mut run = KvmRun::default();
        assert_eq!(v.run(&mut run, &m, &st), Ok(()));
        assert_eq!(run.exit_reason, abi::KVM_EXIT_HLT);
        let counts = [Counter::PfFixed, Counter::PfNotPresent, Counter::PfLargePage, Counter::MmuPrefetch];
        assert_eq!(counts.map(|c| st.get(c)), [1, 1, 1, 7], "pages 9-15 of the fault's group prefetched");
        assert_eq!(st.get(Counter::PfSpurious), 0);
    }
    //@ end

    //@ begin 12
    mod e12_1 {
        use super::*;

        const IF: u64 = 1 << 9;

        #[test]
        fn a_queued_interrupt_goes_in_when_the_guest_can_take_it() {
            let m = memory(16);
            let mut v = vcpu_at(0x8000);
            let st = VmStats::default();
            assert_eq!(v.queue_interrupt(256), Err(Errno::EINVAL));
            assert_eq!(v.queue_interrupt(0x21), Ok(()));
            assert_eq!(v.queue_interrupt(0x20), Ok(()));
            assert_eq!(v.get_sregs().interrupt_bitmap[0], 3 << 32, "KVM_GET_SREGS shows the queue");
            v.rflags = 0x2 | IF;
            let hlt = step(0, VmExit::Hlt { insn_len: 1 });
            fake::script(&[hlt, hlt, hlt]);
            let mut run = KvmRun::default();
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            let e = fake::entries();
            assert_eq!(e.iter().map(|e| e.interrupt).collect::<std::vec::Vec<_>>(), [Some(0x20), Some(0x21)]);
            assert_eq!(e.iter().map(|e| e.window_exiting).collect::<std::vec::Vec<_>>(), [true, false]);
            // The first `hlt`, with 0x21 still queued, went on; the second,
            // with nothing queued, reached userspace.
            assert_eq!((run.exit_reason, v.rip), (abi::KVM_EXIT_HLT, 0x8002));
            assert_eq!(st.get(Counter::IrqInjections), 2);
            assert_eq!(run.ready_for_interrupt_injection, 1);
        }

        #[test]
        fn interrupts_off_keep_it_queued_and_ask_for_the_window() {
            let m = memory(16);
            let mut v = vcpu_at(0x8000);
            let st = VmStats::default();
            v.rflags = 0x2;
            assert_eq!(v.queue_interrupt(0x30), Ok(()));
            fake::script(&[step(0, VmExit::Shutdown)]);
            let mut run = KvmRun::default();
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            let e = fake::entries();
            assert_eq!((e[0].interrupt, e[0].window_exiting), (None, true));
            assert_eq!((run.if_flag, run.ready_for_interrupt_injection), (0, 0));
        }

        #[test]
        fn userspace_that_asks_for_the_window_hears_when_it_opens() {
            let m = memory(16);
            let mut v = vcpu_at(0x8000);
            let st = VmStats::default();
            v.rflags = 0x2;
            fake::script(&[step(3, VmExit::InterruptWindow)]);
            let mut run = KvmRun { request_interrupt_window: 1, ..KvmRun::default() };
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            assert!(fake::entries()[0].window_exiting);
            assert_eq!(run.exit_reason, abi::KVM_EXIT_IRQ_WINDOW_OPEN);
            assert_eq!(st.get(Counter::IrqWindowExits), 1);
            // With the window open already, userspace hears before any entry.
            v.rflags = 0x2 | IF;
            fake::script(&[]);
            run.exit_reason = 0;
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            assert_eq!((run.exit_reason, fake::entries().len()), (abi::KVM_EXIT_IRQ_WINDOW_OPEN, 0));
            assert_eq!(run.ready_for_interrupt_injection, 1);
        }
    }

    /// A backend that runs real mode as VMX does: the run loop writes the
    /// TSS and delivers events through the IVT.
    mod real_mode {
        use super::*;
        use crate::mmu::{read_phys, write_phys};

        /// A real-mode vCPU at 0:0x8000, its stack at 0:0x7000, with 16
        /// pages of memory and IVT entry `vector` pointing at 0:0x9000.
        fn real_mode_vcpu(m: &Mutex<MemSlots>, vector: u8) -> Box<Vcpu> {
            let mut v = vcpu_at(0x8000);
            let mut s = v.get_sregs();
            (s.cs, s.ss) = (KvmSegment { type_: 0xB, ..KvmSegment::real_mode(0) }, KvmSegment::real_mode(0));
            s.idt = KvmDtable { base: 0, limit: 0x3FF, padding: [0; 3] };
            v.set_sregs(&s);
            v.regs[Reg::Rsp as usize] = 0x7000;
            assert!(write_phys(4 * u64::from(vector), &[0x00, 0x90, 0x00, 0x00], m));
            v
        }

        fn stack(m: &Mutex<MemSlots>) -> [u8; 6] {
            let mut frame = [0; 6];
            assert!(read_phys(0x6FFA, &mut frame, m));
            frame
        }

        #[test]
        fn an_exception_goes_through_the_ivt_and_the_tss_is_written() {
            let m = memory(16);
            let mut v = real_mode_vcpu(&m, 6);
            let st = VmStats::default();
            v.rflags = 0x4_0302;
            fake::script(&[step(0, VmExit::Exception { vector: 6, error_code: 0 }), step(0, VmExit::Hlt { insn_len: 1 })]);
            fake::real_mode_like_vmx(true);
            let mut run = KvmRun::default();
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            let e = fake::entries();
            assert_eq!((e[0].rip, e[0].real_mode_tss), (0x8000, Some(0xD000)));
            assert_eq!((e[1].rip, e[1].exception), (0x9000, None), "the handler, not the backend's injection");
            assert_eq!(stack(&m), [0x00, 0x80, 0x00, 0x00, 0x02, 0x03], "IP of the ud2, CS, FLAGS");
            assert_eq!((v.regs[Reg::Rsp as usize], v.rflags, v.rip), (0x6FFA, 0x2, 0x9001), "IF, TF and AC cleared");
            let (mut base, mut ones) = ([0; 2], [0; 1]);
            assert!(read_phys(0xD066, &mut base, &m) && read_phys(0xF088, &mut ones, &m));
            assert_eq!((base, ones), ([0x88, 0x00], [0xFF]), "the I/O map base, the byte after the bitmap");
            assert_eq!(run.exit_reason, abi::KVM_EXIT_HLT);
        }

        #[test]
        fn the_tss_is_written_again_only_when_the_slots_change() {
            let m = memory(16);
            let mut v = real_mode_vcpu(&m, 0);
            let st = VmStats::default();
            let hlt = step(0, VmExit::Hlt { insn_len: 1 });
            fake::script(&[hlt, hlt]);
            fake::real_mode_like_vmx(true);
            let mut run = KvmRun::default();
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            assert!(write_phys(0xD066, &[0xAA], &m));
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            let mut byte = [0];
            assert!(read_phys(0xD066, &mut byte, &m));
            assert_eq!(byte, [0xAA], "the same slots: not written again");
            let region = KvmMemoryRegion { slot: 1, flags: 0, guest_phys_addr: 0x10_0000, memory_size: 4096 };
            m.lock().set_region(&region).expect("a second slot");
            fake::script(&[hlt]);
            fake::real_mode_like_vmx(true);
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            assert!(read_phys(0xD066, &mut byte, &m));
            assert_eq!(byte, [0x88]);
        }

        #[test]
        fn a_vector_beyond_the_idt_limit_shuts_the_guest_down() {
            let m = memory(16);
            let mut v = real_mode_vcpu(&m, 6);
            let mut s = v.get_sregs();
            s.idt.limit = 0x17;
            v.set_sregs(&s);
            let st = VmStats::default();
            fake::script(&[step(0, VmExit::Exception { vector: 6, error_code: 0 })]);
            fake::real_mode_like_vmx(true);
            let mut run = KvmRun::default();
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            assert_eq!((run.exit_reason, fake::entries().len()), (abi::KVM_EXIT_SHUTDOWN, 1));
        }

        #[test]
        fn a_far_pointer_in_mmio_comes_from_userspace_then_the_load_completes() {
            // les bx, [0x20] at 0:0x8000, DS at 0x1000: the pointer at
            // 0x10020, past the 16 pages of memory.
            let m = memory(16);
            let mut v = real_mode_vcpu(&m, 0);
            let mut s = v.get_sregs();
            s.ds = KvmSegment::real_mode(0x1000);
            v.set_sregs(&s);
            assert!(write_phys(0x8000, &[0xC4, 0x1E, 0x20, 0x00], &m));
            let st = VmStats::default();
            fake::script(&[step(0, VmExit::Exception { vector: 13, error_code: 0 })]);
            fake::real_mode_like_vmx(true);
            let mut run = KvmRun::default();
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            assert_eq!((run.exit_reason, run.exit.mmio().phys_addr, run.exit.mmio().len), (abi::KVM_EXIT_MMIO, 0x10020, 4));
            run.exit.mmio_mut().data = [0x34, 0x12, 0x00, 0x30, 0, 0, 0, 0];
            run.mmio_completed = 1;
            fake::script(&[step(0, VmExit::Hlt { insn_len: 1 })]);
            fake::real_mode_like_vmx(true);
            assert_eq!(v.run(&mut run, &m, &st), Ok(()));
            let s = v.get_sregs();
            assert_eq!((v.regs[Reg::Rbx as usize], s.es.selector, s.es.base), (0x1234, 0x3000, 0x30000));
            assert_eq!((fake::entries()[0].rip, run.exit_reason), (0x8004, abi::KVM_EXIT_HLT));
            assert_eq!(st.get(Counter::MmioExits), 1);
        }

        /// Interrupts reach the IVT through the plan (E12.1).
        mod e12_1 {
            use super::*;

            #[test]
            fn a_real_mode_interrupt_goes_through_the_ivt_when_the_backend_cannot() {
                let m = memory(16);
                let mut v = real_mode_vcpu(&m, 0x20);
                let st = VmStats::default();
                v.rflags = 0x202;
                assert_eq!(v.queue_interrupt(0x20), Ok(()));
                fake::script(&[step(0, VmExit::Hlt { insn_len: 1 })]);
                fake::real_mode_like_vmx(true);
                let mut run = KvmRun::default();
                assert_eq!(v.run(&mut run, &m, &st), Ok(()));
                let e = fake::entries();
                assert_eq!((e[0].interrupt, e[0].rip), (None, 0x9000));
                assert_eq!(stack(&m), [0x00, 0x80, 0x00, 0x00, 0x02, 0x02], "IP, CS, FLAGS");
                assert_eq!((v.regs[Reg::Rsp as usize], v.rflags), (0x6FFA, 0x2));
                assert_eq!(st.get(Counter::IrqInjections), 1);
                assert_eq!(run.ready_for_interrupt_injection, 0, "IF is clear in the handler");
            }

            #[test]
            fn a_backend_that_delivers_gets_the_interrupt() {
                let m = memory(16);
                let mut v = real_mode_vcpu(&m, 0x20);
                let st = VmStats::default();
                v.rflags = 0x202;
                assert_eq!(v.queue_interrupt(0x20), Ok(()));
                fake::script(&[step(0, VmExit::Hlt { insn_len: 1 })]);
                let mut run = KvmRun::default();
                assert_eq!(v.run(&mut run, &m, &st), Ok(()));
                let e = fake::entries();
                assert_eq!((e[0].interrupt, e[0].rip, e[0].real_mode_tss), (Some(0x20), 0x8000, None), "as SVM");
            }
        }
    }
    //@ end
}
//@ end
