//@ stage 5
//! The guest's FPU, SSE and MXCSR state, kept apart from the host's.
//!
//! The host task that runs a vCPU has user FPU state of its own, which
//! Linux may keep live in the registers; the kernel's own code never uses
//! the FPU. A guest that executes `fld` or `movaps` would clobber that
//! user state, so every entry is wrapped as follows (the glue's
//! `rkvm_glue_fpu_enter` and `rkvm_glue_fpu_exit`):
//!
//! 1. `kernel_fpu_begin()`: Linux saves the task's user state if it is
//!    live (and restores it on the way back to user mode); preemption is
//!    off until `kernel_fpu_end()`.
//! 2. `fxrstor` of the guest's 512-byte image; the guest runs;
//!    `fxsave` of it again.
//! 3. `kernel_fpu_end()`.
//!
//! `fxsave` covers x87, MMX, SSE and MXCSR: all the state a guest can
//! reach, since the backends run guests with CR4.OSXSAVE clear (no AVX, no
//! XSETBV). 2006's KVM did the same with `fx_save`/`fx_restore` of a host
//! and a guest image on every entry; with today's lazily restored user
//! FPU state, `kernel_fpu_begin` does the host half.

use crate::kernel::{Errno, KResult};
use crate::kernel::try_box;
use alloc::boxed::Box;

/// An `fxsave` image: 512 bytes, 16-byte aligned (Intel SDM Vol. 1,
/// 10.5.1 "FXSAVE Area").
#[repr(C, align(16))]
struct FxImage([u8; 512]);

/// A guest's FPU state, between entries.
pub struct GuestFpu {
    image: Box<FxImage>,
}

impl GuestFpu {
    /// The state after `fninit` and reset: FCW 0x037F (all exceptions
    /// masked, 64-bit precision), MXCSR 0x1F80, every register empty.
    pub fn new() -> KResult<GuestFpu> {
        let mut image = try_box(FxImage([0; 512])).map_err(|_| Errno::ENOMEM)?;
        image.0[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        image.0[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        Ok(GuestFpu { image })
    }

    /// Loads the guest's state into the FPU, after saving the host's;
    /// preemption is off until [`GuestFpu::save`].
    pub fn load(&mut self) {
        imp::enter(self.image.0.as_mut_ptr());
    }

    /// Saves the guest's state and gives the FPU back to the host.
    pub fn save(&mut self) {
        imp::exit(self.image.0.as_mut_ptr());
    }
}

#[cfg(target_os = "none")]
mod imp {
    unsafe extern "C" {
        fn rkvm_glue_fpu_enter(image: *mut u8);
        fn rkvm_glue_fpu_exit(image: *mut u8);
    }

    pub fn enter(image: *mut u8) {
        // SAFETY: `image` is a live, 16-byte aligned 512-byte fxsave image
        // whose MXCSR holds no reserved bit (only `fxsave` writes it).
        unsafe { rkvm_glue_fpu_enter(image) }
    }

    pub fn exit(image: *mut u8) {
        // SAFETY: as above; balanced with `enter`.
        unsafe { rkvm_glue_fpu_exit(image) }
    }
}

#[cfg(not(target_os = "none"))]
mod imp {
    /// The host has no guest: nothing to switch.
    pub fn enter(_image: *mut u8) {}
    pub fn exit(_image: *mut u8) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_image_is_the_reset_state() {
        let fpu = GuestFpu::new().expect("an image");
        assert_eq!(fpu.image.0[..2], [0x7F, 0x03]);
        assert_eq!(fpu.image.0[24..28], [0x80, 0x1F, 0, 0]);
        assert_eq!(fpu.image.0.as_ptr() as usize % 16, 0);
    }
}
