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
use ::rkvm::abi::KvmRegs;

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

    /// A new VM with `memory_size` bytes of memory and one vCPU.
    pub fn open(self, memory_size: u64) -> Result<Box<dyn Vcpu>> {
        Ok(match self {
            Backend::Rkvm => Box::new(rkvm::Rkvm::open(memory_size)?),
            Backend::LinuxKvm => Box::new(linux_kvm::LinuxKvm::open(memory_size)?),
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
        let error = Backend::parse("kvm").unwrap_err().to_string();
        assert_eq!(error, "unknown backend `kvm`: use rkvm or linux-kvm");
    }
}
