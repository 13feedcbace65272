//@ stage 3
//! A virtual machine: what one open file of `/dev/rkvm` owns.

use crate::kernel::{Errno, KResult};
use crate::stats;
use alloc::boxed::Box;
use core::alloc::Layout;

/// One VM. It lives from `open()` to the last `close()` of its file.
pub struct Vm {
    _private: (),
}

impl Vm {
    /// Allocates a new, empty VM. Allocation failure is `ENOMEM`, never a
    /// panic.
    pub fn new() -> KResult<Box<Vm>> {
        let vm = try_box(Vm { _private: () })?;
        stats::inc(&stats::VMS);
        Ok(vm)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        stats::dec(&stats::VMS);
    }
}

/// `Box::new`, but returning `ENOMEM` instead of aborting when memory is short.
pub fn try_box<T>(value: T) -> KResult<Box<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
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
        Ok(Box::from_raw(ptr))
    }
}
