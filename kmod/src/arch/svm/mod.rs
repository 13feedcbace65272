//@ stage 7
//! The AMD SVM backend.

use super::{Arch, ArchVcpu, Entry, Unsupported, VmExit};
use crate::abi::KvmSregs;
use crate::kernel::{Errno, KResult};
use alloc::boxed::Box;

/// The SVM backend.
pub struct Svm;

/// The one instance.
pub static SVM: Svm = Svm;

impl Arch for Svm {
    fn name(&self) -> &'static str {
        "svm"
    }
    fn check_support(&self) -> Result<(), Unsupported> {
        Err(Unsupported::NoExtension("AMD SVM"))
    }
    fn hardware_setup(&self, _ncpus: usize) -> KResult<()> {
        Err(Errno::ENODEV)
    }
    fn hardware_unsetup(&self) {}
    fn hardware_enable(&self, _cpu: usize) -> KResult<()> {
        Err(Errno::ENODEV)
    }
    fn hardware_disable(&self, _cpu: usize) {}
    fn vcpu_create(&self) -> KResult<Box<dyn ArchVcpu>> {
        Err(Errno::ENODEV)
    }
}

#[allow(dead_code)]
fn _unused(_: &KvmSregs, _: &mut Entry<'_>) -> VmExit {
    VmExit::Shutdown
}
