//! System calls, unwrapped only as far as the fuzzer needs: a VM is a raw
//! file descriptor (threads close it under each other on purpose), guest
//! memory is copied through a pipe (so that an unbacked page is `EFAULT`
//! instead of SIGBUS), and a per-thread POSIX timer sends SIGALRM to end a
//! `KVM_RUN` that would not end by itself.

use std::io;

pub const DEVICE: &[u8] = b"/dev/rkvm\0";
pub const PAGE: usize = 4096;

pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Opens a new VM: a file descriptor of `/dev/rkvm`, or the errno.
pub fn open_vm() -> Result<i32, i32> {
    // SAFETY: DEVICE is a NUL-terminated path.
    let fd = unsafe { libc::open(DEVICE.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 { Err(errno()) } else { Ok(fd) }
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor number has no memory effects; a number
    // already closed is EBADF.
    unsafe { libc::close(fd) };
}

/// `ioctl(fd, cmd, arg)` as `Ok(value)` or `Err(errno)`.
pub fn ioctl(fd: i32, cmd: u32, arg: usize) -> Result<i32, i32> {
    // SAFETY: the fuzzer passes wild arguments on purpose; the kernel
    // checks them. Where `arg` is an address in this process, it points at
    // memory the fuzzer does not rely on keeping (a scratch buffer, or
    // guest memory), so whatever the driver writes there is harmless.
    let r = unsafe { libc::ioctl(fd, cmd as _, arg) };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

pub fn ioctl_with<T>(fd: i32, cmd: u32, value: &mut T) -> Result<i32, i32> {
    ioctl(fd, cmd, value as *mut T as usize)
}

pub fn set_region(fd: i32, slot: u32, flags: u32, gpa: u64, size: u64) -> Result<i32, i32> {
    let mut r = rkvm::abi::KvmMemoryRegion { slot, flags, guest_phys_addr: gpa, memory_size: size };
    ioctl_with(fd, rkvm::abi::KVM_SET_MEMORY_REGION, &mut r)
}

/// `mmap` of `len` bytes of `fd` at `offset`, shared, read-write; the
/// address or the errno.
pub fn map(fd: i32, offset: u64, len: usize) -> Result<usize, i32> {
    // SAFETY: a new mapping at an address of the kernel's choosing.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, offset as i64)
    };
    if p == libc::MAP_FAILED { Err(errno()) } else { Ok(p as usize) }
}

/// Anonymous private memory with the given protection.
pub fn anonymous(len: usize, prot: i32) -> usize {
    // SAFETY: as in `map`.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    assert!(p != libc::MAP_FAILED, "anonymous mmap of {len} bytes: {}", io::Error::last_os_error());
    p as usize
}

pub fn unmap(addr: usize, len: usize) {
    // SAFETY: callers unmap only mappings they made and no longer use.
    unsafe { libc::munmap(addr as *mut _, len) };
}

/// `mremap` with MREMAP_MAYMOVE: the new address or the errno.
pub fn remap(addr: usize, old: usize, new: usize) -> Result<usize, i32> {
    // SAFETY: as in `unmap`: the old mapping is the caller's own.
    let p = unsafe { libc::mremap(addr as *mut _, old, new, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED { Err(errno()) } else { Ok(p as usize) }
}

/// A pipe that copies bytes between this process's memory and itself,
/// through the kernel: a page that faults is an errno, not a signal.
pub struct Copier {
    read_end: i32,
    write_end: i32,
}

impl Copier {
    pub fn new() -> Copier {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
        Copier { read_end: fds[0], write_end: fds[1] }
    }

    /// Copies `bytes` to address `to`; whether every byte arrived.
    pub fn write_to(&self, to: usize, bytes: &[u8]) -> bool {
        let bytes = &bytes[..bytes.len().min(PAGE * 8)];
        // SAFETY: reads `bytes`, a live slice.
        let put = unsafe { libc::write(self.write_end, bytes.as_ptr().cast(), bytes.len()) };
        if put <= 0 {
            return false;
        }
        // SAFETY: the kernel writes at most `put` bytes at `to`, and
        // reports EFAULT for pages it cannot reach.
        let got = unsafe { libc::read(self.read_end, to as *mut _, put as usize) };
        self.drain();
        got == put && put as usize == bytes.len()
    }

    /// Copies `len` bytes from address `from` into the pipe and drops
    /// them: whether the kernel could read them all.
    pub fn touch(&self, from: usize, len: usize) -> bool {
        let len = len.min(PAGE * 8);
        // SAFETY: the kernel reads `len` bytes at `from`, or fails.
        let put = unsafe { libc::write(self.write_end, from as *const _, len) };
        self.drain();
        put == len as isize
    }

    fn drain(&self) {
        let mut sink = [0u8; 4096];
        // SAFETY: reads into `sink`, a live buffer of its size.
        while unsafe { libc::read(self.read_end, sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        close(self.read_end);
        close(self.write_end);
    }
}

extern "C" fn on_alarm(_signal: libc::c_int) {}

/// SIGALRM interrupts system calls (no SA_RESTART) and does nothing else.
pub fn install_alarm_handler() {
    // SAFETY: a zeroed sigaction is empty; the handler does nothing.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
    }
}

/// A POSIX timer that sends SIGALRM to the thread that made it: armed
/// before `KVM_RUN`, it ends a guest that never exits with EINTR. It
/// repeats every 10 ms after the first expiry, so that a signal that lands
/// just before the call is followed by one that lands inside it.
pub struct Alarm {
    id: libc::timer_t,
}

impl Alarm {
    pub fn new() -> Alarm {
        // SAFETY: a zeroed sigevent, then the fields SIGEV_THREAD_ID reads.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGALRM;
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `event` and `id` are live for the call.
        let r = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut id) };
        assert_eq!(r, 0, "timer_create: {}", io::Error::last_os_error());
        Alarm { id }
    }

    /// Fires after `ms` milliseconds, then every 10 ms; 0 disarms.
    pub fn arm(&self, ms: u64) {
        let ts = |ms: u64| libc::timespec { tv_sec: (ms / 1000) as i64, tv_nsec: ((ms % 1000) * 1_000_000) as i64 };
        let spec = libc::itimerspec { it_value: ts(ms), it_interval: if ms == 0 { ts(0) } else { ts(10) } };
        // SAFETY: `spec` is live; the timer is this object's own.
        unsafe { libc::timer_settime(self.id, 0, &spec, std::ptr::null_mut()) };
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // SAFETY: deletes the timer this object created.
        unsafe { libc::timer_delete(self.id) };
    }
}

/// A counter from rkvm's debugfs directory.
pub fn counter(name: &str) -> Result<u64, String> {
    let path = format!("/sys/kernel/debug/rkvm/{name}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.trim().parse().map_err(|e| format!("{path} holds {text:?}: {e}"))
}

/// Writes `line` to the kernel's log, so that whatever the kernel logs
/// next can be traced to the round that caused it.
pub fn log_to_kernel(line: &str) {
    use std::io::Write;
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(line.as_bytes());
    }
}

pub fn errno_name(e: i32) -> String {
    let known = [
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EINTR, "EINTR"),
        (libc::EIO, "EIO"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EFAULT, "EFAULT"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENODEV, "ENODEV"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENOTTY, "ENOTTY"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::E2BIG, "E2BIG"),
        (libc::ENXIO, "ENXIO"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    ];
    known.iter().find(|(n, _)| *n == e).map_or_else(|| format!("errno {e}"), |(_, name)| name.to_string())
}
