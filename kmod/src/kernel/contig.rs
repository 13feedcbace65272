//@ stage 7
//! Physically contiguous runs of pages, for the processor structures that
//! span more than one page: SVM's I/O permission map (12 KiB) and MSR
//! permission map (8 KiB), which the VMCB names by one physical address.

use crate::kernel::{Errno, KResult, PAGE_SIZE};
use core::ffi::c_void;
use core::ptr::NonNull;

/// `2^order` contiguous, zeroed pages, owned by the module and never
/// mapped to userspace; freed when dropped.
pub struct ContiguousPages {
    raw: NonNull<c_void>,
    addr: NonNull<u8>,
    order: u32,
}

// SAFETY: the pages belong to no thread; `ContiguousPages` hands out raw
// addresses only.
unsafe impl Send for ContiguousPages {}
// SAFETY: as above: `&ContiguousPages` only reads the pointers.
unsafe impl Sync for ContiguousPages {}

impl ContiguousPages {
    /// Allocates `2^order` zeroed pages.
    pub fn alloc_zeroed(order: u32) -> KResult<ContiguousPages> {
        if order > 4 {
            return Err(Errno::EINVAL);
        }
        let (raw, addr) = imp::alloc(order).ok_or(Errno::ENOMEM)?;
        super::allocated();
        Ok(ContiguousPages { raw, addr, order })
    }

    /// Their size in bytes.
    pub fn len(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// Never empty; for the lint.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Fills every byte with `value`.
    pub fn fill(&mut self, value: u8) {
        // SAFETY: the block is alive, `len()` bytes long, and `&mut self`
        // means no one else writes it through this handle.
        unsafe { core::ptr::write_bytes(self.addr.as_ptr(), value, self.len()) };
    }

    /// The physical address of the first page.
    pub fn phys(&self) -> u64 {
        imp::phys(self.raw, self.addr)
    }

    /// The bytes, for tests.
    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the block is alive and `len()` bytes long.
        unsafe { core::slice::from_raw_parts(self.addr.as_ptr(), self.len()) }
    }
}

impl Drop for ContiguousPages {
    fn drop(&mut self) {
        super::freed();
        imp::free(self.raw, self.addr, self.order);
    }
}

#[cfg(target_os = "none")]
mod imp {
    use core::ffi::c_void;
    use core::ptr::NonNull;

    unsafe extern "C" {
        fn rkvm_glue_alloc_pages(order: u32, addr: *mut *mut c_void) -> *mut c_void;
        fn rkvm_glue_free_pages(page: *mut c_void, order: u32);
        fn rkvm_glue_page_phys(page: *mut c_void) -> u64;
    }

    pub fn alloc(order: u32) -> Option<(NonNull<c_void>, NonNull<u8>)> {
        let mut addr: *mut c_void = core::ptr::null_mut();
        // SAFETY: the glue writes the block's address on success.
        let page = unsafe { rkvm_glue_alloc_pages(order, &mut addr) };
        Some((NonNull::new(page)?, NonNull::new(addr.cast())?))
    }

    pub fn free(raw: NonNull<c_void>, _addr: NonNull<u8>, order: u32) {
        // SAFETY: `raw` came from `alloc` with this order, freed once.
        unsafe { rkvm_glue_free_pages(raw.as_ptr(), order) }
    }

    pub fn phys(raw: NonNull<c_void>, _addr: NonNull<u8>) -> u64 {
        // SAFETY: a live block's first page.
        unsafe { rkvm_glue_page_phys(raw.as_ptr()) }
    }
}

#[cfg(not(target_os = "none"))]
mod imp {
    use crate::kernel::PAGE_SIZE;
    use core::ffi::c_void;
    use core::ptr::NonNull;
    use std::alloc::Layout;

    fn layout(order: u32) -> Option<Layout> {
        Layout::from_size_align(PAGE_SIZE << order, PAGE_SIZE).ok()
    }

    pub fn alloc(order: u32) -> Option<(NonNull<c_void>, NonNull<u8>)> {
        // SAFETY: the layout has a non-zero size.
        let addr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout(order)?) })?;
        Some((addr.cast(), addr))
    }

    pub fn free(_raw: NonNull<c_void>, addr: NonNull<u8>, order: u32) {
        if let Some(layout) = layout(order) {
            // SAFETY: allocated by `alloc` with the same layout.
            unsafe { std::alloc::dealloc(addr.as_ptr(), layout) };
        }
    }

    pub fn phys(_raw: NonNull<c_void>, addr: NonNull<u8>) -> u64 {
        addr.as_ptr() as u64
    }
}
