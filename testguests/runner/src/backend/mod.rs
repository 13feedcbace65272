//! The two hypervisors a guest can run on, behind one trait.
//!
//! `rkvm` is this course's module on `/dev/rkvm`, spoken to in Linux
//! 2.6.20's ABI; `linux-kvm` is the host's own KVM on `/dev/kvm`, spoken to
//! in today's API through the `kvm-ioctls` crate. Each turns its exits into
//! [`Exit`] values and takes [`Reply`] values back, so the run loop and the
//! trace never know which one they drive.

mod dev_rkvm;
mod linux_kvm;
mod mapping;
mod rkvm;

use crate::exit::{Exit, Reply};
use crate::layout::StartState;
use anyhow::{Result, bail};
use ::rkvm::abi::{KvmRegs, KvmSregs};

/// One VM with one vCPU and one memory slot at guest-physical 0.
pub trait Vcpu {
    /// Guest memory, as this process maps it; all zero when the VM is new.
    fn memory(&mut self) -> &mut [u8];
    /// Sets the registers and system registers before the first run.
    fn set_state(&mut self, start: &StartState) -> Result<()>;
    /// Runs the guest until it exits to userspace.
    fn run(&mut self) -> Result<Exit>;
    /// Completes the last exit's instruction before the next run.
    fn reply(&mut self, reply: Reply) -> Result<()>;
    /// The general registers, rip and rflags.
    fn regs(&mut self) -> Result<KvmRegs>;
    /// `KVM_GET_DIRTY_LOG` of guest memory (which must have been opened
    /// with the log on): the guest frames written since the last call, in
    /// order, and the log cleared.
    fn dirty_log(&mut self) -> Result<Vec<u64>>;
    /// Every register, to move the guest to another VM. Call it only
    /// after `run` returned [`Exit::Interrupted`]: then no instruction is
    /// half done.
    fn save(&mut self) -> Result<(KvmRegs, KvmSregs)>;
    /// Sets what `save` gave, in a VM that has not run yet.
    fn restore(&mut self, regs: &KvmRegs, sregs: &KvmSregs) -> Result<()>;
    /// Whether the last exit said an interrupt could go in now
    /// (`kvm_run.ready_for_interrupt_injection`).
    fn interrupt_ready(&mut self) -> bool;
    /// `KVM_INTERRUPT`: hands vector `vector` to the hypervisor.
    fn interrupt(&mut self, vector: u8) -> Result<()>;
    /// Sets `kvm_run.request_interrupt_window` for the next run: exit
    /// (`Exit::IrqWindowOpen`) as soon as the guest can take an interrupt.
    fn request_interrupt_window(&mut self, on: bool);
    /// Attaches the debugger (`KVM_DEBUG_GUEST`, today's
    /// `KVM_SET_GUEST_DEBUG`), or detaches it when `debug` asks for
    /// nothing: its hits are [`Exit::Debug`].
    fn set_debug(&mut self, debug: &Debug) -> Result<()>;
}

/// What a debugger asks of the guest: an exit after every instruction,
/// and up to four execution breakpoints at guest linear addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Debug {
    pub singlestep: bool,
    pub breakpoints: [Option<u64>; 4],
}

impl Debug {
    /// Whether it asks for anything.
    pub fn attached(&self) -> bool {
        self.singlestep || self.breakpoints.iter().any(Option::is_some)
    }
}

/// Which hypervisor to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Rkvm,
    LinuxKvm,
}

impl Backend {
    /// The name `--backend` takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Rkvm => "rkvm",
            Backend::LinuxKvm => "linux-kvm",
        }
    }

    /// The backend called `name`.
    pub fn parse(name: &str) -> Result<Backend> {
        match name {
            "rkvm" => Ok(Backend::Rkvm),
            "linux-kvm" => Ok(Backend::LinuxKvm),
            _ => bail!("unknown backend `{name}`: use rkvm or linux-kvm"),
        }
    }

    /// A new VM with `memory_size` bytes of memory and one vCPU; with
    /// `log_dirty`, the memory logs the pages the guest writes.
    pub fn open(self, memory_size: u64, log_dirty: bool) -> Result<Box<dyn Vcpu>> {
        Ok(match self {
            Backend::Rkvm => Box::new(rkvm::Rkvm::open(memory_size, log_dirty)?),
            Backend::LinuxKvm => Box::new(linux_kvm::LinuxKvm::open(memory_size, log_dirty)?),
        })
    }
}

/// The frames whose bits are set in a dirty log of `bytes` (bit `i % 8`
/// of byte `i / 8` for frame `i`, as both KVMs give it).
pub fn dirty_frames(bytes: &[u8]) -> Vec<u64> {
    let bits = bytes.iter().enumerate().flat_map(|(i, &b)| (0..8).map(move |bit| (i * 8 + bit, b & (1 << bit) != 0)));
    bits.filter(|&(_, set)| set).map(|(frame, _)| frame as u64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_their_own_names_only() {
        for backend in [Backend::Rkvm, Backend::LinuxKvm] {
            assert_eq!(Backend::parse(backend.name()).unwrap(), backend);
        }
        let error = Backend::parse("kvm").unwrap_err().to_string();
        assert_eq!(error, "unknown backend `kvm`: use rkvm or linux-kvm");
    }

    #[test]
    fn dirty_frames_read_bits_little_end_first() {
        assert_eq!(dirty_frames(&[0x81, 0x00, 0x02]), [0, 7, 17]);
        assert!(dirty_frames(&[0; 4]).is_empty());
    }
}
