//! The system calls the checks make, wrapped: `ioctl` on a VM, `mmap` of
//! guest memory, touching memory in a child process to see whether it
//! faults, and reading rkvm's debugfs counters and `/proc/meminfo`.

use rkvm::abi::{self, KvmMemoryRegion, KvmRegs, KvmSregs};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

pub const DEVICE: &str = "/dev/rkvm";
pub const PAGE: usize = 4096;

/// The result of a check: `Err` says what went wrong.
pub type Check = Result<(), String>;

/// The start of an `Err` that means the check could not run here (the
/// kernel lacks what it needs): reported as a note, neither pass nor fail.
pub const NOT_RUN: &str = "not run: ";

/// An errno, as the checks compare them.
pub type Errno = i32;

/// One open file of `/dev/rkvm`: one VM.
pub struct Vm {
    pub file: File,
}

impl Vm {
    pub fn open() -> Result<Vm, String> {
        let file = File::options().read(true).write(true).open(DEVICE).map_err(|e| format!("open {DEVICE}: {e}"))?;
        Ok(Vm { file })
    }

    /// `ioctl(fd, cmd, arg)`, as `Ok(return value)` or `Err(errno)`.
    pub fn ioctl(&self, cmd: u32, arg: usize) -> Result<i32, Errno> {
        // SAFETY: the driver reads or writes at most the size the command
        // encodes at `arg`; callers pass either a number, a pointer to a
        // live value of that size, or an address the driver must refuse
        // with EFAULT (no memory of this process is handed over then).
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), cmd as _, arg) };
        if r < 0 { Err(last_errno()) } else { Ok(r) }
    }

    /// `ioctl` with a pointer to `value`.
    pub fn ioctl_with<T>(&self, cmd: u32, value: &mut T) -> Result<i32, Errno> {
        self.ioctl(cmd, value as *mut T as usize)
    }

    pub fn set_region(&self, slot: u32, guest_phys_addr: u64, memory_size: u64) -> Result<(), Errno> {
        self.set_region_flags(slot, 0, guest_phys_addr, memory_size)
    }

    pub fn set_region_flags(&self, slot: u32, flags: u32, gpa: u64, size: u64) -> Result<(), Errno> {
        let mut r = KvmMemoryRegion { slot, flags, guest_phys_addr: gpa, memory_size: size };
        self.ioctl_with(abi::KVM_SET_MEMORY_REGION, &mut r).map(drop)
    }

    pub fn create_vcpu(&self, index: usize) -> Result<(), Errno> {
        self.ioctl(abi::KVM_CREATE_VCPU, index).map(drop)
    }

    pub fn get_regs(&self, vcpu: u32) -> Result<KvmRegs, Errno> {
        let mut regs = KvmRegs { vcpu, ..KvmRegs::default() };
        self.ioctl_with(abi::KVM_GET_REGS, &mut regs).map(|_| regs)
    }

    pub fn set_regs(&self, regs: &KvmRegs) -> Result<(), Errno> {
        let mut regs = *regs;
        self.ioctl_with(abi::KVM_SET_REGS, &mut regs).map(drop)
    }

    pub fn get_sregs(&self, vcpu: u32) -> Result<KvmSregs, Errno> {
        let mut sregs = KvmSregs { vcpu, ..KvmSregs::default() };
        self.ioctl_with(abi::KVM_GET_SREGS, &mut sregs).map(|_| sregs)
    }

    pub fn set_sregs(&self, sregs: &KvmSregs) -> Result<(), Errno> {
        let mut sregs = *sregs;
        self.ioctl_with(abi::KVM_SET_SREGS, &mut sregs).map(drop)
    }

    /// Maps `len` bytes of the VM's guest-physical memory from `gpa`.
    pub fn map(&self, gpa: u64, len: usize) -> Result<Mapping, String> {
        Mapping::new(&self.file, gpa, len, libc::PROT_READ | libc::PROT_WRITE)
    }
}

pub fn last_errno() -> Errno {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `Ok(())` if `got` is `want`; otherwise an error naming `what`.
pub fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Check {
    if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, expected {want:?}")) }
}

/// `Err(errno)` as an expected result, with the errno's name in messages.
pub fn expect_errno<T: std::fmt::Debug>(what: &str, got: Result<T, Errno>, want: Errno) -> Check {
    match got {
        Err(e) if e == want => Ok(()),
        other => Err(format!("{what}: got {}, expected {}", show(&other), errno_name(want))),
    }
}

fn show<T: std::fmt::Debug>(r: &Result<T, Errno>) -> String {
    match r {
        Ok(v) => format!("success ({v:?})"),
        Err(e) => errno_name(*e).to_string(),
    }
}

pub fn errno_name(e: Errno) -> &'static str {
    match e {
        libc::ENOENT => "ENOENT",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        _ => "another errno",
    }
}

/// A shared mapping of a file; unmapped when dropped.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    pub fn new(file: &File, offset: u64, len: usize, prot: i32) -> Result<Mapping, String> {
        let off = libc::off_t::try_from(offset).map_err(|_| format!("offset {offset:#x} too large"))?;
        // SAFETY: a new mapping at an address of the kernel's choosing
        // touches no existing memory of this process.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, file.as_raw_fd(), off) };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap of {len:#x} bytes at offset {offset:#x}: {}", io::Error::last_os_error()));
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    /// Anonymous memory, for user buffers with chosen permissions.
    pub fn anonymous(len: usize, prot: i32) -> Result<Mapping, String> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: as in `new`.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(format!("anonymous mmap: {}", io::Error::last_os_error()));
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// Reads the byte at `offset`. The page must be backed (check first
    /// with `touch_in_child` where it may not be): otherwise SIGBUS kills
    /// this process.
    pub fn read(&self, offset: usize) -> u8 {
        assert!(offset < self.len);
        // SAFETY: inside the mapping; volatile, since the kernel and other
        // mappings share the page.
        unsafe { self.ptr.add(offset).read_volatile() }
    }

    /// Writes the byte at `offset` (see `read`).
    pub fn write(&self, offset: usize, value: u8) {
        assert!(offset < self.len);
        // SAFETY: as in `read`.
        unsafe { self.ptr.add(offset).write_volatile(value) }
    }

    /// Whether every byte of the mapping is zero.
    pub fn all_zero(&self) -> bool {
        (0..self.len).all(|i| self.read(i) == 0)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// How a child process ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signal(i32),
}

/// Reads (or writes) the byte at `addr` in a forked child and reports how
/// the child ended: `Exited(0)` if the access worked, `Signal(SIGBUS)` if
/// the kernel refused the page.
pub fn touch_in_child(addr: usize, write: bool) -> Ended {
    // SAFETY: the child only touches memory and calls `_exit`; no locks
    // are taken (every other thread of this program has been joined).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let p = addr as *mut u8;
        // SAFETY: the access under test; a fault kills only the child.
        unsafe {
            if write {
                p.write_volatile(0xA5);
            } else {
                p.read_volatile();
            }
            libc::_exit(0)
        }
    }
    if pid < 0 {
        return Ended::Exited(-1);
    }
    let mut status = 0;
    // SAFETY: waits for the child just made.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) { Ended::Signal(libc::WTERMSIG(status)) } else { Ended::Exited(libc::WEXITSTATUS(status)) }
}

/// A counter from rkvm's debugfs directory.
pub fn counter(name: &str) -> Result<u64, String> {
    let path = format!("/sys/kernel/debug/rkvm/{name}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.trim().parse().map_err(|e| format!("{path} holds {text:?}: {e}"))
}

pub fn expect_counter(name: &str, want: u64, when: &str) -> Check {
    match counter(name)? {
        v if v == want => Ok(()),
        v => Err(format!("debugfs rkvm/{name} is {v} {when}, expected {want}")),
    }
}

/// A line of `/proc/meminfo`, in kB.
pub fn meminfo(field: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("/proc/meminfo has no {field} line"))
}
