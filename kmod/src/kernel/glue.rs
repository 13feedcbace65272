//@ stage 3
//! The kernel side of `kernel.rs`: each function a call into
//! `glue/rkvm_glue.c`; the global allocator on kmalloc and kvmalloc; the
//! panic handler.

use super::{FmtBuf, Level, LockClass, PAGE_SIZE};
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr::NonNull;

unsafe extern "C" {
    fn rkvm_glue_log(level: i32, msg: *const u8, len: usize);
    fn rkvm_glue_panic(msg: *const u8, len: usize);
    fn rkvm_glue_kmalloc(size: usize) -> *mut c_void;
    fn rkvm_glue_krealloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn rkvm_glue_kvmalloc(size: usize) -> *mut c_void;
    fn rkvm_glue_kvfree(ptr: *mut c_void);
    fn rkvm_glue_copy_from_user(dst: *mut c_void, src: usize, len: usize) -> usize;
    fn rkvm_glue_copy_to_user(dst: usize, src: *const c_void, len: usize) -> usize;
    fn rkvm_glue_alloc_page(addr: *mut *mut c_void) -> *mut c_void;
    //@ begin 5
    fn rkvm_glue_alloc_page_below_4g(addr: *mut *mut c_void) -> *mut c_void;
    fn rkvm_glue_page_phys(page: *mut c_void) -> u64;
    //@ end
    fn rkvm_glue_get_page(page: *mut c_void);
    fn rkvm_glue_put_page(page: *mut c_void);
    fn rkvm_glue_available_pages() -> usize;
    fn rkvm_glue_fatal_signal_pending() -> i32;
    fn rkvm_glue_cond_resched();
    fn rkvm_glue_mutex_alloc(class: i32) -> *mut c_void;
    fn rkvm_glue_mutex_free(mutex: *mut c_void);
    fn rkvm_glue_mutex_lock(mutex: *mut c_void);
    fn rkvm_glue_mutex_lock_killable(mutex: *mut c_void) -> i32;
    fn rkvm_glue_mutex_unlock(mutex: *mut c_void);
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

pub fn alloc_page() -> Option<(NonNull<c_void>, NonNull<u8>)> {
    let mut addr: *mut c_void = core::ptr::null_mut();
    // SAFETY: the glue writes the page's address to `addr` on success.
    let page = unsafe { rkvm_glue_alloc_page(&mut addr) };
    Some((NonNull::new(page)?, NonNull::new(addr.cast())?))
}

//@ begin 5
pub fn alloc_page_below_4g() -> Option<(NonNull<c_void>, NonNull<u8>)> {
    let mut addr: *mut c_void = core::ptr::null_mut();
    // SAFETY: the glue writes the page's address to `addr` on success.
    let page = unsafe { rkvm_glue_alloc_page_below_4g(&mut addr) };
    Some((NonNull::new(page)?, NonNull::new(addr.cast())?))
}

pub fn page_phys(page: NonNull<c_void>) -> u64 {
    // SAFETY: `page` is a live page: its holder owns a reference.
    unsafe { rkvm_glue_page_phys(page.as_ptr()) }
}
//@ end

pub fn get_page(page: NonNull<c_void>) {
    // SAFETY: `page` is a live page: its holder owns a reference.
    unsafe { rkvm_glue_get_page(page.as_ptr()) }
}

pub fn put_page(page: NonNull<c_void>) {
    // SAFETY: the caller gives up one reference it owns.
    unsafe { rkvm_glue_put_page(page.as_ptr()) }
}

//@ begin 9
pub fn shadow_cache() -> bool {
    unsafe extern "C" {
        fn rkvm_glue_shadow_cache() -> bool;
    }
    // SAFETY: reads a module parameter.
    unsafe { rkvm_glue_shadow_cache() }
}
//@ end

pub fn available_pages() -> usize {
    // SAFETY: reads the kernel's memory counters; no preconditions.
    unsafe { rkvm_glue_available_pages() }
}

pub fn fatal_signal_pending() -> bool {
    // SAFETY: reads the current task's signal state; no preconditions.
    unsafe { rkvm_glue_fatal_signal_pending() != 0 }
}

pub fn cond_resched() {
    // SAFETY: may sleep; callers are in process context, holding at most
    // sleeping locks (a VM's mutexes), never a spinlock.
    unsafe { rkvm_glue_cond_resched() }
}

pub fn mutex_alloc(class: LockClass) -> Option<NonNull<c_void>> {
    // SAFETY: returns a new, initialized mutex or NULL.
    NonNull::new(unsafe { rkvm_glue_mutex_alloc(class as i32) })
}

pub fn mutex_free(mutex: NonNull<c_void>) {
    // SAFETY: the mutex came from `mutex_alloc`, is unlocked (no guard
    // outlives its `Mutex`) and is freed once.
    unsafe { rkvm_glue_mutex_free(mutex.as_ptr()) }
}

pub fn mutex_lock(mutex: NonNull<c_void>) {
    // SAFETY: the mutex is alive for as long as its `Mutex`; process context.
    unsafe { rkvm_glue_mutex_lock(mutex.as_ptr()) }
}

/// `true` with the lock held; `false` if the task was killed while it
/// waited.
pub fn mutex_lock_killable(mutex: NonNull<c_void>) -> bool {
    // SAFETY: as in `mutex_lock`.
    unsafe { rkvm_glue_mutex_lock_killable(mutex.as_ptr()) == 0 }
}

pub fn mutex_unlock(mutex: NonNull<c_void>) {
    // SAFETY: called by the guard's owner, which holds the lock.
    unsafe { rkvm_glue_mutex_unlock(mutex.as_ptr()) }
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

/// Blocks larger than a page (a big slot's page array can take
/// megabytes) come from `kvmalloc`, which falls back to `vmalloc` when
/// physically contiguous memory is scarce; `vmalloc` memory is page
/// aligned, which covers any alignment up to a page.
fn use_kvmalloc(layout: Layout) -> bool {
    layout.size() > PAGE_SIZE && layout.align() <= PAGE_SIZE
}

struct KernelAllocator;

// SAFETY: kmalloc and kvmalloc return unique, suitably aligned blocks
// (see `kmalloc_size` and `use_kvmalloc`), and kvfree releases blocks
// from either.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block: *mut u8 = if use_kvmalloc(layout) {
            // SAFETY: kvmalloc has no preconditions in process context.
            unsafe { rkvm_glue_kvmalloc(layout.size()).cast() }
        } else {
            // SAFETY: kmalloc has no preconditions in process context.
            unsafe { rkvm_glue_kmalloc(kmalloc_size(layout)).cast() }
        };
        if !block.is_null() {
            super::allocated();
        }
        block
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        super::freed();
        // SAFETY: `ptr` came from kmalloc, krealloc or kvmalloc.
        unsafe { rkvm_glue_kvfree(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() > 8 || layout.size() > PAGE_SIZE || new_size > PAGE_SIZE {
            // krealloc keeps only kmalloc's minimum alignment, and
            // cannot resize a block that kvmalloc took from vmalloc.
            // SAFETY: forwarded to the default implementation's contract.
            return unsafe { realloc_by_copy(self, ptr, layout, new_size) };
        }
        // SAFETY: `ptr` came from kmalloc or krealloc (it is at most a
        // page, so not from kvmalloc).
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

/// `GlobalAlloc::realloc`'s default behaviour: allocate, copy, free.
///
/// # Safety
/// As `GlobalAlloc::realloc`.
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
