//! The two hypervisors the VMM runs on, behind one trait.
//!
//! `linux-kvm` is Linux's own KVM through today's API, with no in-kernel
//! irqchip (no `KVM_CREATE_IRQCHIP`), so that the interrupt controllers
//! live in userspace as they did in 2006. `rkvm` is this course's module on
//! `/dev/rkvm`, spoken to in Linux 2.6.20's ABI. The run loop sees only
//! [`Exit`] values and answers with [`Reply`] values.
//!
//! Interrupts follow 2006's protocol on both: after each exit the kernel
//! says whether the guest can take an interrupt now
//! (`ready_for_interrupt_injection` and `if_flag` in `kvm_run`); if it can,
//! userspace gives the vector with `KVM_INTERRUPT`; if it cannot, userspace
//! sets `request_interrupt_window` and the kernel exits with
//! `KVM_EXIT_IRQ_WINDOW_OPEN` as soon as the guest can.

mod linux_kvm;
pub(crate) mod mapping;
mod rkvm;

use crate::boot::BootState;
use crate::cpuid;
use anyhow::{Result, bail};

/// Why `KVM_RUN` returned, decoded once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `in` (or `ins`: `count` elements of `size` bytes); answered with
    /// [`Reply::In`].
    IoIn { port: u16, size: u8, count: u32 },
    /// `out` (or `outs`): `data` holds every element.
    IoOut { port: u16, size: u8, data: Vec<u8> },
    /// A read of memory nothing backs; answered with [`Reply::Mmio`].
    MmioRead { addr: u64, len: u8 },
    MmioWrite { addr: u64, data: Vec<u8> },
    /// `cpuid`, on a hypervisor that hands it to userspace (2006's);
    /// answered with [`Reply::Cpuid`].
    Cpuid { leaf: u32, subleaf: u32 },
    /// `hlt`, with RFLAGS.IF as the guest had it.
    Hlt { interrupts_enabled: bool },
    /// The guest can take the interrupt userspace asked to inject.
    IrqWindowOpen,
    /// A signal (the VMM's timer) interrupted `KVM_RUN`.
    Interrupted,
    /// A triple fault: the processor would reset.
    Shutdown,
    /// Anything else: the hypervisor could not go on. Says what happened.
    Failed(String),
}

/// Userspace's part of an exit, given before the next run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to give back (an `out`, a write, a stop).
    Done,
    /// The bytes an `in` or `ins` reads.
    In(Vec<u8>),
    /// The bytes an MMIO read reads.
    Mmio(Vec<u8>),
    /// EAX, EBX, ECX and EDX for `cpuid`.
    Cpuid([u32; 4]),
}

/// One VM with one vCPU and its memory at guest-physical 0.
pub trait Vcpu {
    /// Guest memory, as this process maps it.
    fn memory(&mut self) -> &mut [u8];
    /// How this process maps guest memory: `MAP_SHARED` (2006's memory
    /// belongs to the kernel) or `MAP_PRIVATE` (today's is ours).
    fn memory_flags(&self) -> i32;
    /// The registers the boot protocol asks for.
    fn set_boot_state(&mut self, state: &BootState) -> Result<()>;
    /// Gives the guest its CPUID table. Today's KVM answers `cpuid` in the
    /// kernel from it; 2006's exits to userspace, where the run loop
    /// answers from the same table.
    fn set_cpuid(&mut self, table: &[cpuid::Entry]) -> Result<()>;
    /// The host's CPUID table this hypervisor offers a guest, unfiltered.
    fn supported_cpuid(&mut self) -> Result<Vec<cpuid::Entry>>;
    /// Runs the guest until it exits to userspace; with
    /// `request_interrupt_window`, exits as soon as it can take an interrupt.
    fn run(&mut self, request_interrupt_window: bool) -> Result<Exit>;
    /// Completes the last exit before the next run.
    fn reply(&mut self, reply: Reply) -> Result<()>;
    /// Whether the last exit left the guest able to take an interrupt now.
    fn can_inject(&mut self) -> bool;
    /// `KVM_INTERRUPT`: delivers `vector` at the next entry.
    fn interrupt(&mut self, vector: u8) -> Result<()>;
    /// The guest's TSC frequency, where the hypervisor says it.
    fn tsc_khz(&self) -> Option<u32>;
    /// Where the guest is, in one line (RIP, RSP, RFLAGS, the control
    /// registers, EFER and CS), for a run that did not end as it should.
    fn where_it_is(&mut self) -> Result<String>;
}

/// The line [`Vcpu::where_it_is`] gives, from the registers both ABIs name alike.
#[allow(clippy::too_many_arguments)]
pub fn where_line(rip: u64, rsp: u64, rflags: u64, cr: [u64; 4], efer: u64, cs: (u16, u64)) -> String {
    let [cr0, cr2, cr3, cr4] = cr;
    format!(
        "rip {rip:#x} rsp {rsp:#x} rflags {rflags:#x} cr0 {cr0:#x} cr2 {cr2:#x} cr3 {cr3:#x} cr4 {cr4:#x} efer {efer:#x} cs {:#x} base {:#x}",
        cs.0, cs.1
    )
}

/// Which hypervisor to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    LinuxKvm,
    Rkvm,
}

impl Backend {
    /// The name `--backend` takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::LinuxKvm => "linux-kvm",
            Backend::Rkvm => "rkvm",
        }
    }

    pub fn parse(name: &str) -> Result<Backend> {
        match name {
            "linux-kvm" => Ok(Backend::LinuxKvm),
            "rkvm" => Ok(Backend::Rkvm),
            _ => bail!("unknown backend `{name}`: use linux-kvm or rkvm"),
        }
    }

    /// A new VM with `memory_size` bytes of memory and one vCPU.
    pub fn open(self, memory_size: u64) -> Result<Box<dyn Vcpu>> {
        Ok(match self {
            Backend::LinuxKvm => Box::new(linux_kvm::LinuxKvm::open(memory_size)?),
            Backend::Rkvm => Box::new(rkvm::Rkvm::open(memory_size)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_their_own_names_only() {
        for backend in [Backend::Rkvm, Backend::LinuxKvm] {
            assert_eq!(Backend::parse(backend.name()).unwrap(), backend);
        }
        assert!(Backend::parse("kvm").is_err());
    }
}
