//@ stage 4
//! A backend for host tests, where there is no VMX or SVM: every call
//! succeeds, and (from stage 05) a vCPU "runs" by taking its next exit from
//! a script the test wrote, recording what each entry was given.

use super::{Arch, ArchVcpu, Unsupported};
use crate::kernel::KResult;
use alloc::boxed::Box;
//@ begin 5
use super::{Entry, VmExit};
use crate::abi::KvmSregs;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::vec::Vec;
//@ end

/// The fake backend.
pub struct FakeArch;

/// The one instance, which `arch::current()` returns on the host.
pub static FAKE: FakeArch = FakeArch;

impl Arch for FakeArch {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn check_support(&self) -> Result<(), Unsupported> {
        Ok(())
    }
    fn hardware_setup(&self, _ncpus: usize) -> KResult<()> {
        Ok(())
    }
    fn hardware_unsetup(&self) {}
    fn hardware_enable(&self, _cpu: usize) -> KResult<()> {
        Ok(())
    }
    fn hardware_disable(&self, _cpu: usize) {}
    fn vcpu_create(&self) -> KResult<Box<dyn ArchVcpu>> {
        Ok(Box::new(FakeVcpu::default()))
    }
}

//@ begin 5
/// One step of a script: the exit the guest makes, after moving RIP by
/// `advance` bytes (the instructions it ran).
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub advance: u64,
    pub exit: VmExit,
}

/// What one entry was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entered {
    pub rip: u64,
    pub rax: u64,
    pub flush_tlb: bool,
    //@ begin 8
    /// The exception queued for this entry, and the guest's CR2 then.
    pub exception: Option<(u8, Option<u32>)>,
    pub cr2: u64,
    //@ end
    //@ begin 12
    /// The external interrupt injected at this entry, and whether the
    /// interrupt-window exit was on.
    pub interrupt: Option<u8>,
    pub window_exiting: bool,
    /// The virtual-8086 TSS generic code gave the vCPU.
    pub real_mode_tss: Option<u64>,
    //@ end
}

std::thread_local! {
    static SCRIPT: RefCell<VecDeque<Step>> = const { RefCell::new(VecDeque::new()) };
    static ENTRIES: RefCell<Vec<Entered>> = const { RefCell::new(Vec::new()) };
    //@ begin 12
    static LIKE_VMX: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    //@ end
}

/// Sets the exits the next entries make, on this thread. When the script
/// runs out, the guest shuts down.
pub fn script(steps: &[Step]) {
    SCRIPT.with(|s| *s.borrow_mut() = steps.iter().copied().collect());
    ENTRIES.with(|e| e.borrow_mut().clear());
    //@ begin 12
    real_mode_like_vmx(false);
    //@ end
}

/// The entries made since the last [`script`].
pub fn entries() -> Vec<Entered> {
    ENTRIES.with(|e| e.borrow().clone())
}
//@ begin 12

/// With `on`, fake vCPUs on this thread treat real mode as VMX does: they
/// cannot deliver events to it and want a virtual-8086 TSS. Off (as
/// [`script`] leaves it), they deliver every event themselves, as SVM
/// does.
pub fn real_mode_like_vmx(on: bool) {
    LIKE_VMX.with(|c| c.set(on));
}
//@ end
//@ end

/// A fake vCPU: it keeps the special registers it is given.
#[derive(Default)]
pub struct FakeVcpu {
    //@ begin 5
    sregs: KvmSregs,
    //@ end
    //@ begin 8
    queued: Option<(u8, Option<u32>)>,
    //@ end
    //@ begin 12
    injected: Option<u8>,
    window_exiting: bool,
    msrs: Vec<(u32, u64)>,
    real_mode_tss: Option<u64>,
    //@ end
}

impl ArchVcpu for FakeVcpu {
    //@ begin 5
    fn get_sregs(&self, sregs: &mut KvmSregs) {
        let s = &self.sregs;
        (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (s.cs, s.ds, s.es, s.fs, s.gs, s.ss);
        (sregs.tr, sregs.ldt, sregs.gdt, sregs.idt) = (s.tr, s.ldt, s.gdt, s.idt);
        (sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer) = (s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
    }

    fn set_sregs(&mut self, sregs: &KvmSregs) {
        self.sregs = *sregs;
    }

    fn run(&mut self, entry: &mut Entry<'_>) -> VmExit {
        let entered = Entered {
            rip: *entry.rip,
            rax: entry.regs[0],
            flush_tlb: entry.flush_tlb,
            //@ begin 8
            exception: self.queued.take(),
            cr2: self.sregs.cr2,
            //@ end
            //@ begin 12
            interrupt: self.injected.take(),
            window_exiting: self.window_exiting,
            real_mode_tss: self.real_mode_tss,
            //@ end
        };
        ENTRIES.with(|e| e.borrow_mut().push(entered));
        let Some(step) = SCRIPT.with(|s| s.borrow_mut().pop_front()) else {
            return VmExit::Shutdown;
        };
        *entry.rip = entry.rip.wrapping_add(step.advance);
        step.exit
    }

    fn skip_instruction(&mut self, rip: &mut u64, len: u8) {
        *rip = rip.wrapping_add(len.into());
    }
    //@ end
    //@ begin 8

    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.queued = Some((vector, error_code));
    }

    fn pending_exception(&self) -> Option<u8> {
        self.queued.map(|(vector, _)| vector)
    }

    fn clear_pending_event(&mut self) {
        self.queued = None;
    }
    //@ end
    //@ begin 12

    fn interrupt_allowed(&self) -> bool {
        self.queued.is_none() && self.injected.is_none()
    }

    fn inject_interrupt(&mut self, vector: u8) {
        self.injected = Some(vector);
    }

    fn set_window_exiting(&mut self, on: bool) {
        self.window_exiting = on;
    }

    fn get_msr(&self, index: u32) -> Option<u64> {
        self.msrs.iter().find(|(i, _)| *i == index).map(|(_, v)| *v)
    }

    fn set_msr(&mut self, index: u32, value: u64) -> bool {
        self.msrs.retain(|(i, _)| *i != index);
        self.msrs.push((index, value));
        true
    }

    fn delivers_events(&self) -> bool {
        !(LIKE_VMX.with(|c| c.get()) && crate::real_mode::is_real_mode(&self.sregs))
    }

    fn wants_real_mode_tss(&self) -> bool {
        !self.delivers_events()
    }

    fn set_real_mode_tss(&mut self, base: Option<u64>) {
        self.real_mode_tss = base;
    }

    fn set_debug_registers(&mut self, _hw: crate::debug::Hardware) {}
    //@ end
}
