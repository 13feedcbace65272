//! `/dev/rkvm`: one open file is one VM, spoken to with the ioctls of
//! Linux 2.6.20. The protocol on top of them is in `rkvm.rs`; this file
//! only opens the device and passes the ABI's structs to the kernel.

use super::mapping::Mapping;
use anyhow::{Context, Result, bail};
use rkvm::abi::*;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// The device of this course's module.
const DEVICE: &str = "/dev/rkvm";
/// The only vCPU; 2006 KVM had one per VM.
pub const VCPU: u32 = 0;

/// What the 2006 protocol needs from a VM: its ioctls and its memory. The
/// module implements it through `/dev/rkvm`; the tests, with a fake.
pub trait Vm2006 {
    /// `KVM_RUN`: runs vCPU `run.vcpu` until it exits to userspace.
    fn run(&mut self, run: &mut KvmRun) -> io::Result<()>;
    fn get_regs(&mut self) -> io::Result<KvmRegs>;
    fn set_regs(&mut self, regs: &KvmRegs) -> io::Result<()>;
    fn get_sregs(&mut self) -> io::Result<KvmSregs>;
    fn set_sregs(&mut self, sregs: &KvmSregs) -> io::Result<()>;
    /// `KVM_TRANSLATE`: walks the guest's page tables for `linear`.
    fn translate(&mut self, linear: u64) -> io::Result<KvmTranslation>;
    /// Slot 0, as this process maps it.
    fn memory(&mut self) -> &mut [u8];
    /// `KVM_INTERRUPT` on the vCPU.
    fn interrupt(&mut self, irq: u32) -> io::Result<()> {
        let _ = irq;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// `KVM_GET_DIRTY_LOG` of slot 0 into `bitmap`.
    fn get_dirty_log(&mut self, bitmap: &mut [u8]) -> io::Result<()> {
        let _ = bitmap;
        Err(io::ErrorKind::Unsupported.into())
    }
    /// `KVM_DEBUG_GUEST` on the vCPU.
    fn debug_guest(&mut self, dbg: &KvmDebugGuest) -> io::Result<()> {
        let _ = dbg;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A VM of the rkvm module.
pub struct DevRkvm {
    device: File,
    memory: Mapping,
}

impl DevRkvm {
    /// Opens a VM with `memory_size` bytes in slot 0 and creates vCPU 0: the
    /// steps of Avi Kivity's 2006 description of how userspace drives KVM.
    pub fn open(memory_size: u64, log_dirty: bool) -> Result<DevRkvm> {
        let device = OpenOptions::new().read(true).write(true).open(DEVICE).with_context(|| {
            format!("cannot open {DEVICE} (load the module with insmod rkvm.ko, or use --backend linux-kvm)")
        })?;
        let version = ioctl_value(&device, KVM_GET_API_VERSION, 0).context("KVM_GET_API_VERSION")?;
        if version != KVM_API_VERSION {
            bail!("{DEVICE} speaks KVM API version {version}; this runner needs {KVM_API_VERSION} (Linux 2.6.20's)");
        }
        let flags = if log_dirty { KVM_MEM_LOG_DIRTY_PAGES } else { 0 };
        let mut region = KvmMemoryRegion { slot: 0, flags, guest_phys_addr: 0, memory_size };
        ioctl(&device, KVM_SET_MEMORY_REGION, &mut region).context("KVM_SET_MEMORY_REGION of slot 0")?;
        let memory = Mapping::shared(device.as_fd(), 0, memory_size).context("mmap of /dev/rkvm")?;
        ioctl_value(&device, KVM_CREATE_VCPU, VCPU.into()).context("KVM_CREATE_VCPU 0")?;
        Ok(DevRkvm { device, memory })
    }
}

impl Vm2006 for DevRkvm {
    fn run(&mut self, run: &mut KvmRun) -> io::Result<()> {
        ioctl(&self.device, KVM_RUN, run).map(drop)
    }

    fn get_regs(&mut self) -> io::Result<KvmRegs> {
        let mut regs = KvmRegs { vcpu: VCPU, ..KvmRegs::default() };
        ioctl(&self.device, KVM_GET_REGS, &mut regs)?;
        Ok(regs)
    }

    fn set_regs(&mut self, regs: &KvmRegs) -> io::Result<()> {
        ioctl(&self.device, KVM_SET_REGS, &mut KvmRegs { vcpu: VCPU, ..*regs }).map(drop)
    }

    fn get_sregs(&mut self) -> io::Result<KvmSregs> {
        let mut sregs = KvmSregs { vcpu: VCPU, ..KvmSregs::default() };
        ioctl(&self.device, KVM_GET_SREGS, &mut sregs)?;
        Ok(sregs)
    }

    fn set_sregs(&mut self, sregs: &KvmSregs) -> io::Result<()> {
        ioctl(&self.device, KVM_SET_SREGS, &mut KvmSregs { vcpu: VCPU, ..*sregs }).map(drop)
    }

    fn translate(&mut self, linear: u64) -> io::Result<KvmTranslation> {
        let mut tr = KvmTranslation { linear_address: linear, vcpu: VCPU, ..KvmTranslation::default() };
        ioctl(&self.device, KVM_TRANSLATE, &mut tr)?;
        Ok(tr)
    }

    fn memory(&mut self) -> &mut [u8] {
        self.memory.as_mut_slice()
    }

    fn interrupt(&mut self, irq: u32) -> io::Result<()> {
        ioctl(&self.device, KVM_INTERRUPT, &mut KvmInterrupt { vcpu: VCPU, irq }).map(drop)
    }

    fn get_dirty_log(&mut self, bitmap: &mut [u8]) -> io::Result<()> {
        let mut log = KvmDirtyLog { slot: 0, padding: 0, dirty_bitmap: bitmap.as_mut_ptr() as u64 };
        ioctl(&self.device, KVM_GET_DIRTY_LOG, &mut log).map(drop)
    }

    fn debug_guest(&mut self, dbg: &KvmDebugGuest) -> io::Result<()> {
        ioctl(&self.device, KVM_DEBUG_GUEST, &mut KvmDebugGuest { vcpu: VCPU, ..*dbg }).map(drop)
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

    #[test]
    fn a_missing_device_says_what_to_do() {
        if std::path::Path::new(DEVICE).exists() {
            return assert!(DevRkvm::open(0x10_0000, false).is_ok(), "{DEVICE} exists but a VM cannot be made");
        }
        let error = format!("{:#}", DevRkvm::open(0x10_0000, false).err().unwrap());
        assert!(error.starts_with("cannot open /dev/rkvm (load the module with insmod rkvm.ko"), "{error}");
    }
}
