//@ stage 3
//! `/dev/rkvm`'s file operations: `open` makes a VM, `ioctl` decodes the
//! command, the last `close` frees the VM.
//!
//! The glue keeps each VM behind `file->private_data` as an opaque handle:
//! a `Box<Vm>` turned into a raw pointer by [`open`] and back by [`release`].

use crate::abi;
use crate::kernel::{Errno, KResult};
use crate::log;
use crate::vm::Vm;
use alloc::boxed::Box;
use core::ffi::c_void;

/// Module load. Nothing to set up yet.
pub fn init() -> KResult<()> {
    log!(Info, "loaded, API version {}", abi::KVM_API_VERSION);
    Ok(())
}

/// Module unload.
pub fn exit() {
    log!(Info, "unloaded");
}

/// Creates the VM of a newly opened file and returns its handle.
pub fn open() -> KResult<*mut c_void> {
    let vm = Vm::new()?;
    Ok(Box::into_raw(vm).cast())
}

/// Frees the VM of a file being released.
///
/// # Safety
/// `handle` must come from [`open`] and must not be used again.
pub unsafe fn release(handle: *mut c_void) {
    if handle.is_null() {
        return;
    }
    // SAFETY: `handle` came from `Box::into_raw` in `open` and is released once.
    drop(unsafe { Box::from_raw(handle.cast::<Vm>()) });
}

/// Decodes and runs one ioctl on the VM behind `handle`.
///
/// # Safety
/// `handle` must come from [`open`] and not yet be released.
pub unsafe fn ioctl(handle: *mut c_void, cmd: u32, arg: usize) -> KResult<isize> {
    // SAFETY: the glue passes the live handle of the file being operated on.
    let Some(vm) = (unsafe { handle.cast::<Vm>().as_ref() }) else {
        return Err(Errno::EINVAL);
    };
    dispatch(vm, cmd, arg)
}

/// The ioctl table: one arm per command this stage knows.
fn dispatch(_vm: &Vm, cmd: u32, _arg: usize) -> KResult<isize> {
    match cmd {
        abi::KVM_GET_API_VERSION => Ok(abi::KVM_API_VERSION as isize),
        _ => Err(Errno::ENOTTY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_vm(f: impl FnOnce(*mut c_void)) {
        let handle = open().expect("open");
        f(handle);
        // SAFETY: `handle` came from `open` and is released once.
        unsafe { release(handle) };
    }

    #[test]
    fn api_version_is_2() {
        // SAFETY: the handle is live inside `with_vm`.
        with_vm(|h| assert_eq!(unsafe { ioctl(h, 0xAE01, 0) }, Ok(2)));
    }

    #[test]
    fn unknown_ioctls_are_enotty() {
        for cmd in [0, 0xAE00, 0xAEFF, 0xAF01, 0x8090_AE03, u32::MAX] {
            // SAFETY: the handle is live inside `with_vm`.
            with_vm(|h| assert_eq!(unsafe { ioctl(h, cmd, 0) }, Err(Errno::ENOTTY), "cmd {cmd:#x}"));
        }
    }

    #[test]
    fn a_null_handle_is_einval_not_a_crash() {
        // SAFETY: a null handle is checked before use.
        assert_eq!(unsafe { ioctl(core::ptr::null_mut(), 0xAE01, 0) }, Err(Errno::EINVAL));
    }
}
