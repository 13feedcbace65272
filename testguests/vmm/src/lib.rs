//! rkvm-vmm: a small virtual machine monitor that boots an unmodified
//! Linux kernel, with its devices in userspace as 2006's qemu-kvm had them
//! when KVM had no interrupt controller of its own.
//!
//! From the top: `main.rs` reads the command line; `boot` loads the
//! bzImage, the initramfs and the zero page (with `linux-loader`) and says
//! where the vCPU starts; `run` drives the `KVM_RUN` loop of a `backend`
//! (Linux's KVM, or rkvm's `/dev/rkvm`), handing port I/O to the
//! `devices`: the 8259 pair (`pic`), the 8254 (`pit`), the CMOS clock
//! (`rtc`) and a 16550 (`vm-superio`). `cpuid` builds the guest's CPUID
//! table, `alarm` wakes the loop when the timer is due, and `counters`
//! reads the hypervisor's own counters from debugfs.

pub mod alarm;
pub mod backend;
pub mod boot;
pub mod counters;
pub mod cpuid;
pub mod devices;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod run;
