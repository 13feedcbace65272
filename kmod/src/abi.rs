//@ stage 2
//! The ioctl ABI of Linux 2.6.20's KVM (stage 02).

/// The ioctl type of every KVM ioctl.
pub const KVMIO: u32 = 0xAE;

/// The version of the API this module speaks: Linux 2.6.20's.
pub const KVM_API_VERSION: i32 = 2;

/// `_IO(KVMIO, 1)`: returns `KVM_API_VERSION`.
pub const KVM_GET_API_VERSION: u32 = 0xAE01;
