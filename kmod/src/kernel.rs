//@ stage 3
//! The only Rust that calls the C glue: memory, pages, locks, user copies,
//! logging, panics.
//!
//! In the kernel (`target_os = "none"`) each function here is a one-line
//! call into `glue/rkvm_glue.c`. On the host the same functions are small
//! fakes built on `std`, so the code above this file runs under `cargo test`
//! unchanged: a "user pointer" is then simply a pointer into the test's own
//! memory, a page is an aligned heap block with a reference count, and a
//! mutex is a spin lock.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

/// An error number, as the kernel's `include/uapi/asm-generic/errno*.h`
/// defines it. Every failing ioctl returns one, negated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(i32);

impl Errno {
    pub const ENOENT: Errno = Errno(2);
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

/// `Box::new`, but returning `ENOMEM` instead of aborting when memory is short.
pub fn try_box<T>(value: T) -> KResult<alloc::boxed::Box<T>> {
    let layout = core::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(alloc::boxed::Box::new(value));
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { alloc::alloc::alloc(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(Errno::ENOMEM);
    }
    // SAFETY: `ptr` is a fresh, properly aligned allocation for one `T`, and
    // `Box` frees it with the same global allocator and layout.
    unsafe {
        ptr.write(value);
        Ok(alloc::boxed::Box::from_raw(ptr))
    }
}

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

/// What rkvm holds from the kernel's allocators now: blocks from kmalloc
/// and kvmalloc (every `Box` and `Vec`), its references to pages, and its
/// locks. Once every VM is closed it is back where it was after the
/// module loaded, exactly: the leak checks in L1 compare it (debugfs
/// `allocations`), which finds a leak of a single block that MemFree, a
/// count of whole pages that moves with the kernel's caches, cannot.
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Counts one more allocation in [`ALLOCATIONS`].
fn allocated() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
}

/// Counts one allocation less in [`ALLOCATIONS`].
fn freed() {
    ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
}

// ANCHOR: page
/// The size of a page on x86: 4 KiB. Guest memory is allocated, looked up
/// and mapped in pages.
pub const PAGE_SHIFT: u32 = 12;
/// `1 << PAGE_SHIFT`.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// One zeroed page from the kernel's page allocator, owned by rkvm: the
/// kernel's `struct page` and the page's kernel (direct-map) address.
///
/// Dropping a `Page` gives back rkvm's reference to it. The page is freed
/// only when no one else holds one: a process that has the page mapped (see
/// [`Page::get`]) keeps it alive until it unmaps it.
pub struct Page {
    /// The `struct page *`.
    raw: NonNull<c_void>,
    /// Its kernel address; x86-64 has no high memory, so every page has one.
    addr: NonNull<u8>,
}

// SAFETY: a page belongs to no thread; its reference count is atomic, and
// `Page` hands out only raw addresses, never references to its bytes.
unsafe impl Send for Page {}
// SAFETY: as above: `&Page` allows only `get` (an atomic increment) and
// reading the two pointers.
unsafe impl Sync for Page {}

impl Page {
    /// Allocates a zeroed page. `ENOMEM` when memory is short: the glue asks
    /// the allocator to fail rather than to invoke the OOM killer, because
    /// the number of pages is chosen by userspace.
    pub fn alloc_zeroed() -> KResult<Page> {
        let (raw, addr) = imp::alloc_page().ok_or(Errno::ENOMEM)?;
        allocated();
        Ok(Page { raw, addr })
    }

    /// The page's kernel address, valid for `PAGE_SIZE` bytes while the
    /// page is alive. Userspace may write the page at any moment through a
    /// mapping, so read and write it only through raw pointers.
    pub fn addr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    /// Takes one more reference to the page (the kernel's `get_page`), for
    /// a user mapping: the page then outlives this `Page` until the
    /// [`PageRef`] is dropped or handed to the kernel.
    pub fn get(&self) -> PageRef {
        imp::get_page(self.raw);
        PageRef { raw: self.raw, addr: self.addr }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        freed();
        imp::put_page(self.raw);
    }
}

/// A counted reference to a page, taken by [`Page::get`]. The fault handler
/// hands it to the kernel, which keeps it in the process's page table and
/// drops it when the page is unmapped.
pub struct PageRef {
    raw: NonNull<c_void>,
    addr: NonNull<u8>,
}

impl PageRef {
    /// The page's kernel address.
    pub fn addr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    /// Gives up the reference to the caller, as a `struct page *`: whoever
    /// receives it must drop the reference (`put_page`) exactly once.
    pub fn into_raw(self) -> *mut c_void {
        let raw = self.raw.as_ptr();
        core::mem::forget(self);
        raw
    }
}

impl Drop for PageRef {
    fn drop(&mut self) {
        imp::put_page(self.raw);
    }
}

//@ begin 5
impl Page {
    /// A zeroed page whose physical address is below 4 GiB (`__GFP_DMA32`),
    /// for a structure that the processor addresses with 32 bits: the
    /// page-directory-pointer table of PAE paging, which CR3 holds while a
    /// guest runs in 32-bit mode.
    pub fn alloc_zeroed_below_4g() -> KResult<Page> {
        let (raw, addr) = imp::alloc_page_below_4g().ok_or(Errno::ENOMEM)?;
        allocated();
        Ok(Page { raw, addr })
    }

    /// The page's physical address, for the processor's tables.
    pub fn phys(&self) -> u64 {
        imp::page_phys(self.raw)
    }
}

impl PageRef {
    /// The page's physical address, for the processor's tables.
    pub fn phys(&self) -> u64 {
        imp::page_phys(self.raw)
    }
}

// SAFETY: as for `Page`: a reference belongs to no thread, and dropping it
// (`put_page`) may happen on any.
unsafe impl Send for PageRef {}
//@ end

/// A best-effort estimate of the pages the kernel could give without
/// swapping (`MemAvailable` in `/proc/meminfo`).
pub fn available_pages() -> usize {
    imp::available_pages()
}
// ANCHOR_END: page

/// Whether the calling process is being killed (`fatal_signal_pending`):
/// long loops on its behalf, such as allocating a large slot, stop early.
pub fn fatal_signal_pending() -> bool {
    imp::fatal_signal_pending()
}

/// Lets the scheduler run another task if it wants to (`cond_resched`):
/// long loops in the kernel must, or on a kernel without preemption they
/// keep their CPU to themselves.
pub fn cond_resched() {
    imp::cond_resched()
}

// ANCHOR: mutex
/// Which kind of lock a [`Mutex`] is, for the kernel's lock validator
/// (lockdep), which checks the order of locks by class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockClass {
    /// A VM's memory slots.
    Memory = 0,
    /// One vCPU.
    Vcpu = 1,
}

/// A sleeping lock around a `T`: the kernel's `struct mutex`. Taking it may
/// sleep, so it is for process context only (ioctl, mmap's fault handler),
/// never with interrupts off. A guard unlocks it when dropped.
pub struct Mutex<T> {
    /// The `struct mutex`, allocated by the glue so that it never moves.
    raw: NonNull<c_void>,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex hands `&mut T` to one thread at a time, so sending or
// sharing it is sound exactly when `T` may be sent between threads.
unsafe impl<T: Send> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    /// A new, unlocked mutex holding `value`. `ENOMEM` if the kernel cannot
    /// allocate the lock.
    pub fn new(value: T, class: LockClass) -> KResult<Self> {
        let raw = imp::mutex_alloc(class).ok_or(Errno::ENOMEM)?;
        allocated();
        Ok(Mutex { raw, data: UnsafeCell::new(value) })
    }

    /// Waits for the lock and returns a guard that gives access to the data.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        imp::mutex_lock(self.raw);
        MutexGuard { mutex: self, _not_send: PhantomData }
    }

    /// As `lock`, but a task killed while it waits stops waiting: `EINTR`
    /// (the process is dying and will never see the answer). Used by
    /// every path that waits for a vCPU, which another thread may be
    /// running for as long as its guest does.
    pub fn lock_killable(&self) -> KResult<MutexGuard<'_, T>> {
        if !imp::mutex_lock_killable(self.raw) {
            return Err(Errno::EINTR);
        }
        Ok(MutexGuard { mutex: self, _not_send: PhantomData })
    }

    /// The data, without locking: `&mut self` proves no one else holds it.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T> Drop for Mutex<T> {
    fn drop(&mut self) {
        freed();
        imp::mutex_free(self.raw);
    }
}

/// Proof that a [`Mutex`] is held. Not `Send`: a kernel mutex must be
/// unlocked by the task that locked it.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and `&mut
        // self` makes this the only reference made through it.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        imp::mutex_unlock(self.mutex.raw);
    }
}
// ANCHOR_END: mutex

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

//@ begin 4
pub mod cpu;
//@ end

//@ begin 5
pub mod fpu;
//@ end
//@ begin 7
pub mod contig;
//@ end
//@ begin 13
pub mod hotplug;
//@ end

//@ begin 9
/// Whether a new VM gets the shadow page cache of stage 09 (the module
/// parameter `shadow_cache`), or the naive shadow MMU of stage 08.
pub fn shadow_cache() -> bool {
    imp::shadow_cache()
}
//@ end

// The kernel side, calls into the glue (`kernel/glue.rs`), and the host
// side, fakes for unit tests (`kernel/host.rs`): the same functions, one
// module or the other.
#[cfg(target_os = "none")]
#[path = "kernel/glue.rs"]
mod imp;
#[cfg(not(target_os = "none"))]
#[path = "kernel/host.rs"]
mod imp;

/// Controls of the host fakes, for unit tests. Each setting belongs to the
/// calling thread, so tests running in parallel do not see each other's.
#[cfg(not(target_os = "none"))]
pub mod fake {
    /// Pages that this thread allocated and that are not freed yet: a leak
    /// check for code that owns pages.
    pub fn live_pages() -> isize {
        super::imp::control::live_pages()
    }

    /// Lets the next `n` page allocations of this thread succeed and every
    /// one after them fail; `None` lets all succeed again.
    pub fn fail_page_alloc_after(n: Option<usize>) {
        super::imp::control::fail_page_alloc_after(n)
    }

    /// What [`super::available_pages`] reports on this thread
    /// (4 GiB's worth unless set).
    pub fn set_available_pages(n: usize) {
        super::imp::control::set_available_pages(n)
    }

    /// Lets [`super::fatal_signal_pending`] answer "no" `n` times on this
    /// thread, then "yes"; `None`: "no" for ever.
    pub fn fatal_signal_after(n: Option<usize>) {
        super::imp::control::fatal_signal_after(n)
    }

    /// How often this thread asked [`super::fatal_signal_pending`] since
    /// the last `fatal_signal_after`.
    pub fn fatal_signal_pending_checks() -> usize {
        super::imp::control::fatal_signal_pending_checks()
    }
    //@ begin 9

    /// What [`super::shadow_cache`] answers on this thread (yes unless set).
    pub fn set_shadow_cache(on: bool) {
        super::imp::control::set_shadow_cache(on)
    }
    //@ end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_zeroed_aligned_and_freed_with_their_last_reference() {
        let before = fake::live_pages();
        let page = Page::alloc_zeroed().expect("a page");
        assert_eq!(page.addr() as usize % PAGE_SIZE, 0);
        // SAFETY: the page is alive and PAGE_SIZE bytes long.
        let bytes = unsafe { core::slice::from_raw_parts(page.addr(), PAGE_SIZE) };
        assert!(bytes.iter().all(|&b| b == 0));
        let mapping = page.get();
        drop(page);
        assert_eq!(fake::live_pages(), before + 1, "the mapping's reference keeps the page");
        // SAFETY: still alive through `mapping`.
        unsafe { mapping.addr().write(7) };
        drop(mapping);
        assert_eq!(fake::live_pages(), before);
    }

    #[test]
    fn page_allocation_failures_can_be_injected() {
        fake::fail_page_alloc_after(Some(1));
        let first = Page::alloc_zeroed();
        let second = Page::alloc_zeroed();
        fake::fail_page_alloc_after(None);
        assert!(first.is_ok());
        assert_eq!(second.err(), Some(Errno::ENOMEM));
        assert!(Page::alloc_zeroed().is_ok());
    }

    #[test]
    fn a_mutex_serializes_its_users() {
        let counter = std::sync::Arc::new(Mutex::new(0u64, LockClass::Memory).expect("a mutex"));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let mut guard = counter.lock();
                        let seen = *guard;
                        std::thread::yield_now();
                        *guard = seen + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert_eq!(*counter.lock(), 4000);
    }
}
