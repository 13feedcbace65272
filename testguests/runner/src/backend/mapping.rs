//! Guest memory as this process sees it: an `mmap` region.
//!
//! Linux KVM is given anonymous memory the runner maps itself; 2006 KVM
//! allocates the memory in the kernel, and userspace maps it by `mmap` of
//! the VM's file at offset = guest-physical address.

use anyhow::{Result, bail};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// A private or shared mapping, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// `len` bytes of fresh, zeroed memory.
    pub fn anonymous(len: u64) -> Result<Mapping> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        Self::map(len, flags, -1, 0)
    }

    /// `len` bytes of `file` from `offset`, shared with the kernel.
    pub fn shared(file: BorrowedFd<'_>, offset: u64, len: u64) -> Result<Mapping> {
        Self::map(len, libc::MAP_SHARED, file.as_raw_fd(), offset)
    }

    fn map(len: u64, flags: i32, fd: i32, offset: u64) -> Result<Mapping> {
        let (Ok(len), Ok(offset)) = (usize::try_from(len), libc::off_t::try_from(offset)) else {
            bail!("cannot map {len:#x} bytes at offset {offset:#x}: too large");
        };
        let protection = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new mapping at an address the kernel chooses touches no
        // existing memory; the result is checked before use.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, protection, flags, fd, offset) };
        if ptr == libc::MAP_FAILED {
            bail!("mmap of {len:#x} bytes of guest memory failed: {}", std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).expect("mmap returned a null mapping");
        Ok(Mapping { ptr, len })
    }

    /// The start of the mapping, for `KVM_SET_USER_MEMORY_REGION`.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The mapped bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` readable and writable bytes that live
        // until drop, and `&mut self` makes this the only Rust reference.
        // The guest may change them while it runs, but it only runs inside
        // KVM_RUN, which takes `&mut self` of the backend that owns us.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by `map` and nothing borrows it now.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_memory_is_zeroed_and_writable() {
        let mut mapping = Mapping::anonymous(0x2000).unwrap();
        let bytes = mapping.as_mut_slice();
        assert_eq!(bytes.len(), 0x2000);
        assert!(bytes.iter().all(|&b| b == 0));
        bytes[0x1FFF] = 0xAA;
        assert_eq!(mapping.as_mut_slice()[0x1FFF], 0xAA);
        assert_eq!(mapping.addr() % 4096, 0);
    }

    #[test]
    fn an_impossible_size_is_an_error() {
        assert!(Mapping::anonymous(u64::MAX).is_err());
    }
}
