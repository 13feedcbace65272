//@ stage 3
//! The host side of `kernel.rs`: fakes for unit tests. A "user address" is a plain
//! pointer into the test's memory; address 0 (and anything below 4096)
//! faults, as the first page does in a real process. A `struct page` is
//! a [`FakePage`]: a reference count and a page-aligned, zeroed block.
//! A mutex is a spin lock that yields the thread while it waits.

use super::{Level, LockClass, PAGE_SIZE};
use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::alloc::Layout;
use std::boxed::Box;
use std::cell::Cell;
use std::sync::Arc;

const FIRST_VALID_ADDRESS: usize = 4096;

/// The fake `struct page`.
struct FakePage {
    refs: AtomicUsize,
    data: NonNull<u8>,
    /// The live-page counter of the thread that allocated the page.
    owner: Arc<AtomicIsize>,
}

const PAGE_LAYOUT: Layout = match Layout::from_size_align(PAGE_SIZE, PAGE_SIZE) {
    Ok(layout) => layout,
    Err(_) => panic!("a page is a valid layout"),
};

std::thread_local! {
    static LIVE_PAGES: Arc<AtomicIsize> = Arc::new(AtomicIsize::new(0));
    static FAIL_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    static AVAILABLE: Cell<usize> = const { Cell::new(1 << 20) };
    static FATAL_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    static FATAL_CHECKS: Cell<usize> = const { Cell::new(0) };
    //@ begin 9
    static SHADOW_CACHE: Cell<bool> = const { Cell::new(true) };
    //@ end
}

pub fn alloc_page() -> Option<(NonNull<c_void>, NonNull<u8>)> {
    let fail = FAIL_AFTER.with(|f| match f.get() {
        Some(0) => true,
        Some(n) => {
            f.set(Some(n - 1));
            false
        }
        None => false,
    });
    if fail {
        return None;
    }
    // SAFETY: the layout has a non-zero size.
    let data = NonNull::new(unsafe { std::alloc::alloc_zeroed(PAGE_LAYOUT) })?;
    let owner = LIVE_PAGES.with(|live| {
        live.fetch_add(1, Ordering::Relaxed);
        live.clone()
    });
    let page = Box::new(FakePage { refs: AtomicUsize::new(1), data, owner });
    Some((NonNull::from(Box::leak(page)).cast(), data))
}

//@ begin 5
/// Host memory has no physical addresses; any page will do.
pub fn alloc_page_below_4g() -> Option<(NonNull<c_void>, NonNull<u8>)> {
    alloc_page()
}

/// A fake page's "physical address" is its data's address, so that tests
/// can walk page tables the way the processor would.
pub fn page_phys(page: NonNull<c_void>) -> u64 {
    // SAFETY: a live fake page: its holder owns a reference.
    unsafe { page.cast::<FakePage>().as_ref() }.data.as_ptr() as u64
}
//@ end

pub fn get_page(page: NonNull<c_void>) {
    // SAFETY: a live fake page: its holder owns a reference.
    let page = unsafe { page.cast::<FakePage>().as_ref() };
    page.refs.fetch_add(1, Ordering::Relaxed);
}

pub fn put_page(page: NonNull<c_void>) {
    let raw = page.cast::<FakePage>();
    // SAFETY: the caller owns a reference, so the page is alive.
    if unsafe { raw.as_ref() }.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    // SAFETY: that was the last reference: no one else can reach the
    // page, which `alloc_page` made with `Box` and `PAGE_LAYOUT`.
    let page = unsafe { Box::from_raw(raw.as_ptr()) };
    // SAFETY: as above.
    unsafe { std::alloc::dealloc(page.data.as_ptr(), PAGE_LAYOUT) };
    page.owner.fetch_sub(1, Ordering::Relaxed);
}

pub fn available_pages() -> usize {
    AVAILABLE.with(Cell::get)
}

pub fn cond_resched() {}

pub fn fatal_signal_pending() -> bool {
    FATAL_CHECKS.with(|c| c.set(c.get() + 1));
    FATAL_AFTER.with(|f| match f.get() {
        Some(0) => true,
        Some(n) => {
            f.set(Some(n - 1));
            false
        }
        None => false,
    })
}

pub fn mutex_alloc(_class: LockClass) -> Option<NonNull<c_void>> {
    Some(NonNull::from(Box::leak(Box::new(AtomicBool::new(false)))).cast())
}

pub fn mutex_free(mutex: NonNull<c_void>) {
    // SAFETY: made by `mutex_alloc` from a `Box`, freed once.
    drop(unsafe { Box::from_raw(mutex.cast::<AtomicBool>().as_ptr()) });
}

fn lock_word(mutex: &NonNull<c_void>) -> &AtomicBool {
    // SAFETY: the lock lives as long as its `Mutex`, which outlives the call.
    unsafe { mutex.cast::<AtomicBool>().as_ref() }
}

pub fn mutex_lock(mutex: NonNull<c_void>) {
    let word = lock_word(&mutex);
    while word.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
}

pub fn mutex_lock_killable(mutex: NonNull<c_void>) -> bool {
    let word = lock_word(&mutex);
    while word.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        if fatal_signal_pending() {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

pub fn mutex_unlock(mutex: NonNull<c_void>) {
    lock_word(&mutex).store(false, Ordering::Release);
}

/// See [`super::fake`].
pub mod control {
    use super::*;

    pub fn live_pages() -> isize {
        LIVE_PAGES.with(|live| live.load(Ordering::Relaxed))
    }

    pub fn fail_page_alloc_after(n: Option<usize>) {
        FAIL_AFTER.with(|f| f.set(n));
    }

    pub fn set_available_pages(n: usize) {
        AVAILABLE.with(|a| a.set(n));
    }

    pub fn fatal_signal_after(n: Option<usize>) {
        FATAL_AFTER.with(|f| f.set(n));
        FATAL_CHECKS.with(|c| c.set(0));
    }

    pub fn fatal_signal_pending_checks() -> usize {
        FATAL_CHECKS.with(Cell::get)
    }
    //@ begin 9

    pub fn set_shadow_cache(on: bool) {
        SHADOW_CACHE.with(|c| c.set(on));
    }
    //@ end
}

//@ begin 9
pub fn shadow_cache() -> bool {
    SHADOW_CACHE.with(Cell::get)
}
//@ end

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
