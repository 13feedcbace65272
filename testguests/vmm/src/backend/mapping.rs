//! Guest memory as this process sees it: an `mmap` region, unmapped on
//! drop. Today's KVM is lent anonymous memory the VMM maps itself; 2006's
//! allocates it in the kernel, and userspace maps the VM's file.

use anyhow::{Result, bail};
use std::ptr::NonNull;

pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    flags: i32,
}

impl Mapping {
    /// `len` bytes of fresh, zeroed memory.
    pub fn anonymous(len: u64) -> Result<Mapping> {
        Self::map(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1)
    }

    /// `len` bytes of the file `fd` from offset 0, shared with the kernel.
    pub fn shared(fd: i32, len: u64) -> Result<Mapping> {
        Self::map(len, libc::MAP_SHARED, fd)
    }

    fn map(len: u64, flags: i32, fd: i32) -> Result<Mapping> {
        let Ok(len) = usize::try_from(len) else { bail!("cannot map {len:#x} bytes: too large") };
        let protection = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new mapping at an address the kernel chooses touches no
        // existing memory; the result is checked before use.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, protection, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            bail!("mmap of {len:#x} bytes of guest memory failed: {}", std::io::Error::last_os_error());
        }
        let Some(ptr) = NonNull::new(ptr.cast()) else { bail!("mmap returned a null mapping") };
        Ok(Mapping { ptr, len, flags })
    }

    /// The start of the mapping, for `KVM_SET_USER_MEMORY_REGION`.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The flags it was mapped with.
    pub fn flags(&self) -> i32 {
        self.flags
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` readable and writable bytes that live
        // until drop, and `&mut self` makes this the only Rust reference.
        // The guest changes them only inside KVM_RUN, which takes `&mut`
        // of the backend that owns the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by `map` and nothing borrows it now.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
