//@ stage 3
//! The only Rust that calls the C glue: memory, user copies, logging, panics.
//!
//! In the kernel (`target_os = "none"`) each function here is a one-line
//! call into `glue/rkvm_glue.c`. On the host the same functions are small
//! fakes built on `std`, so the code above this file runs under `cargo test`
//! unchanged: a "user pointer" is then simply a pointer into the test's own
//! memory.

use core::fmt;

/// An error number, as the kernel's `include/uapi/asm-generic/errno*.h`
/// defines it. Every failing ioctl returns one, negated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(i32);

impl Errno {
    pub const EINTR: Errno = Errno(4);
    pub const EIO: Errno = Errno(5);
    pub const ENXIO: Errno = Errno(6);
    pub const E2BIG: Errno = Errno(7);
    pub const ENOMEM: Errno = Errno(12);
    pub const EFAULT: Errno = Errno(14);
    pub const EBUSY: Errno = Errno(16);
    pub const EEXIST: Errno = Errno(17);
    pub const ENODEV: Errno = Errno(19);
    pub const EINVAL: Errno = Errno(22);
    pub const ENOSPC: Errno = Errno(28);
    pub const ENOTTY: Errno = Errno(25);
    pub const EOPNOTSUPP: Errno = Errno(95);

    /// The positive error number.
    pub const fn get(self) -> i32 {
        self.0
    }

    /// The value a kernel function returns for this error: `-errno`.
    pub const fn to_kernel(self) -> i32 {
        -self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({})", self.0)
    }
}

/// The result of anything that can fail with an errno.
pub type KResult<T> = Result<T, Errno>;

/// Log levels, as `printk`'s `KERN_*` prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Err = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

/// Logs `args` at `level`, prefixed with `rkvm: `. Long messages are cut at
/// 255 bytes rather than allocated for.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    let mut buf = FmtBuf::new();
    let _ = fmt::write(&mut buf, args);
    imp::log(level, buf.as_bytes());
}

/// `pr_info!`-like logging: `log!(Info, "loaded, {} cpus", n)`.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        $crate::kernel::log($crate::kernel::Level::$level, format_args!($($arg)*))
    };
}

/// Copies `dst.len()` bytes from user address `src` into `dst`.
/// Fails with `EFAULT` if any byte is not readable.
pub fn copy_from_user(dst: &mut [u8], src: usize) -> KResult<()> {
    if imp::copy_from_user(dst, src) { Ok(()) } else { Err(Errno::EFAULT) }
}

/// Copies `src` to user address `dst`. Fails with `EFAULT` if any byte is not
/// writable.
pub fn copy_to_user(dst: usize, src: &[u8]) -> KResult<()> {
    if imp::copy_to_user(dst, src) { Ok(()) } else { Err(Errno::EFAULT) }
}

/// A fixed buffer that `core::fmt` can write into, so a log line or a panic
/// message needs no allocation.
struct FmtBuf {
    bytes: [u8; 256],
    len: usize,
}

impl FmtBuf {
    const fn new() -> Self {
        FmtBuf { bytes: [0; 256], len: 0 }
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl fmt::Write for FmtBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the glue's terminating NUL.
        let room = self.bytes.len() - 1 - self.len;
        let n = s.len().min(room);
        if let Some(dst) = self.bytes.get_mut(self.len..self.len + n) {
            dst.copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
        }
        Ok(())
    }
}

#[cfg(target_os = "none")]
mod imp {
    //! The kernel side: calls into `glue/rkvm_glue.c`.

    use super::{FmtBuf, Level};
    use core::alloc::{GlobalAlloc, Layout};
    use core::ffi::c_void;

    unsafe extern "C" {
        fn rkvm_glue_log(level: i32, msg: *const u8, len: usize);
        fn rkvm_glue_panic(msg: *const u8, len: usize);
        fn rkvm_glue_kmalloc(size: usize) -> *mut c_void;
        fn rkvm_glue_krealloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        fn rkvm_glue_kfree(ptr: *mut c_void);
        fn rkvm_glue_copy_from_user(dst: *mut c_void, src: usize, len: usize) -> usize;
        fn rkvm_glue_copy_to_user(dst: usize, src: *const c_void, len: usize) -> usize;
    }

    pub fn log(level: Level, msg: &[u8]) {
        // SAFETY: the glue reads exactly `len` bytes of `msg`.
        unsafe { rkvm_glue_log(level as i32, msg.as_ptr(), msg.len()) }
    }

    pub fn copy_from_user(dst: &mut [u8], src: usize) -> bool {
        // SAFETY: `dst` is valid for `dst.len()` bytes of writes; the glue
        // checks the user range with `copy_from_user`.
        unsafe { rkvm_glue_copy_from_user(dst.as_mut_ptr().cast(), src, dst.len()) == 0 }
    }

    pub fn copy_to_user(dst: usize, src: &[u8]) -> bool {
        // SAFETY: `src` is valid for `src.len()` bytes of reads; the glue
        // checks the user range with `copy_to_user`.
        unsafe { rkvm_glue_copy_to_user(dst, src.as_ptr().cast(), src.len()) == 0 }
    }

    /// `kmalloc` returns memory aligned to at least 8 bytes, and blocks whose
    /// size is a power of two aligned to that size. A larger alignment is
    /// therefore met by asking for a power-of-two size at least as large.
    fn kmalloc_size(layout: Layout) -> usize {
        if layout.align() <= 8 {
            layout.size()
        } else {
            layout.size().max(layout.align()).next_power_of_two()
        }
    }

    struct KernelAllocator;

    // SAFETY: kmalloc returns unique, suitably aligned blocks (see
    // `kmalloc_size`) and kfree releases them.
    unsafe impl GlobalAlloc for KernelAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: kmalloc has no preconditions in process context.
            unsafe { rkvm_glue_kmalloc(kmalloc_size(layout)).cast() }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` came from kmalloc or krealloc.
            unsafe { rkvm_glue_kfree(ptr.cast()) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if layout.align() > 8 {
                // krealloc keeps only kmalloc's minimum alignment.
                // SAFETY: forwarded to the default implementation's contract.
                return unsafe { super::realloc_by_copy(self, ptr, layout, new_size) };
            }
            // SAFETY: `ptr` came from kmalloc or krealloc.
            unsafe { rkvm_glue_krealloc(ptr.cast(), new_size).cast() }
        }
    }

    #[global_allocator]
    static ALLOCATOR: KernelAllocator = KernelAllocator;

    /// A Rust panic is a bug in rkvm: the glue logs the message and BUG()s,
    /// which oopses the calling task and leaves the rest of the kernel running.
    /// No user or guest input may lead here.
    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        let mut buf = FmtBuf::new();
        let _ = core::fmt::write(&mut buf, format_args!("{}", info));
        let msg = buf.as_bytes();
        // SAFETY: the glue reads exactly `len` bytes of `msg`, then BUG()s.
        unsafe { rkvm_glue_panic(msg.as_ptr(), msg.len()) };
        // The glue does not return. `ud2` tells objtool (and the CPU) so.
        // SAFETY: raises #UD, which BUG() handling turns into an oops.
        unsafe { core::arch::asm!("ud2", options(noreturn)) }
    }
}

/// `GlobalAlloc::realloc`'s default behaviour: allocate, copy, free.
///
/// # Safety
/// As `GlobalAlloc::realloc`.
#[cfg(target_os = "none")]
unsafe fn realloc_by_copy<A: core::alloc::GlobalAlloc>(
    a: &A,
    ptr: *mut u8,
    layout: core::alloc::Layout,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: the caller upholds realloc's contract, which makes this layout valid.
    let new_layout = unsafe { core::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
    // SAFETY: `new_layout` has a non-zero size, as realloc's contract requires.
    let new = unsafe { a.alloc(new_layout) };
    if !new.is_null() {
        // SAFETY: both blocks are valid for the smaller of the two sizes and
        // do not overlap; `ptr` is then freed exactly once.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            a.dealloc(ptr, layout);
        }
    }
    new
}

#[cfg(not(target_os = "none"))]
mod imp {
    //! The host side: fakes for unit tests. A "user address" is a plain
    //! pointer into the test's memory; address 0 (and anything below 4096)
    //! faults, as the first page does in a real process.

    use super::Level;

    const FIRST_VALID_ADDRESS: usize = 4096;

    pub fn log(level: Level, msg: &[u8]) {
        std::eprintln!("rkvm: <{:?}> {}", level, std::string::String::from_utf8_lossy(msg));
    }

    pub fn copy_from_user(dst: &mut [u8], src: usize) -> bool {
        if src < FIRST_VALID_ADDRESS {
            return false;
        }
        // SAFETY: in host tests, user addresses are pointers the test made
        // from live buffers of at least `dst.len()` bytes.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        true
    }

    pub fn copy_to_user(dst: usize, src: &[u8]) -> bool {
        if dst < FIRST_VALID_ADDRESS {
            return false;
        }
        // SAFETY: as in `copy_from_user`.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        true
    }
}
