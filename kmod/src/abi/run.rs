//@ stage 2
//! `struct kvm_run`, the argument of `KVM_RUN`, and the union of exit
//! details at its end.

use super::Pod;
use core::fmt;
use core::mem::{align_of, size_of};

// ANCHOR: kvm_run
/// `struct kvm_run`, for `KVM_RUN`: in 2.6.20 userspace passes it by pointer
/// on every call; the kernel reads the "in" fields and writes the "out" ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRun {
    // In: what userspace tells the kernel before the guest runs.
    /// The vCPU to run.
    pub vcpu: u32,
    /// Nonzero: userspace emulated the instruction that exited; skip it.
    pub emulated: u32,
    /// Nonzero: userspace completed the MMIO read in [`KvmRunMmio::data`].
    pub mmio_completed: u32,
    /// Nonzero: exit with `KVM_EXIT_IRQ_WINDOW_OPEN` as soon as the guest
    /// can take an interrupt.
    pub request_interrupt_window: u8,
    pub padding1: [u8; 3],

    // Out: what the kernel tells userspace after the guest exits.
    /// `KVM_EXIT_TYPE_*`.
    pub exit_type: u32,
    /// `KVM_EXIT_*`; selects the member of [`KvmRun::exit`] that is valid.
    pub exit_reason: u32,
    /// The length of the instruction that exited, when known.
    pub instruction_length: u32,
    /// Nonzero: the guest can take an interrupt now (RFLAGS.IF set, no
    /// `STI` or `MOV SS` shadow) and none is queued, so an interrupt queued
    /// by `KVM_INTERRUPT` goes in at the next entry.
    pub ready_for_interrupt_injection: u8,
    /// The guest's RFLAGS.IF.
    pub if_flag: u8,
    pub padding2: u16,
    /// The guest's task priority, CR8.
    pub cr8: u64,
    /// The guest's IA32_APIC_BASE MSR.
    pub apic_base: u64,

    /// C's anonymous union: the details of the exit.
    pub exit: KvmRunExit,
}

check_layout!(KvmRun as "kvm_run", size 72 {
    vcpu: u32 = 0,
    emulated: u32 = 4,
    mmio_completed: u32 = 8,
    request_interrupt_window: u8 = 12,
    padding1: [u8; 3] = 13,
    exit_type: u32 = 16,
    exit_reason: u32 = 20,
    instruction_length: u32 = 24,
    ready_for_interrupt_injection: u8 = 28,
    if_flag: u8 = 29,
    padding2: u16 = 30,
    cr8: u64 = 32,
    apic_base: u64 = 40,
    exit: KvmRunExit = 48,
});
// ANCHOR_END: kvm_run

// ANCHOR: kvm_run_exit
/// The union at the end of [`KvmRun`]: one member per exit reason that
/// carries details. C's empty `debug` member has no Rust counterpart.
///
/// The members are private so that every byte of the union is always
/// initialized: values are made only by [`Default`] (all zero) or the
/// `from_*` functions, which start from zero. That is what lets the
/// accessors below read any member safely.
#[repr(C)]
#[derive(Clone, Copy)]
pub union KvmRunExit {
    hw: KvmRunHw,
    ex: KvmRunEx,
    io: KvmRunIo,
    mmio: KvmRunMmio,
    /// Not in C: all 24 bytes, so that a zero value zeroes every byte.
    raw: [u64; 3],
}

const _: () = assert!(size_of::<KvmRunExit>() == 24 && align_of::<KvmRunExit>() == 8);
const _: () = assert!(size_of::<[u64; 3]>() == size_of::<KvmRunExit>());

// SAFETY: `raw` covers all 24 bytes, so no byte of the union is padding;
// every member is plain old data, so every bit pattern is valid for each.
unsafe impl Pod for KvmRunExit {}

/// Generates a member's `from_`, shared and mutable accessors.
macro_rules! exit_member {
    ($member:ident, $from:ident, $get_mut:ident, $t:ty, $doc:literal) => {
        #[doc = concat!("An exit whose details are ", $doc, "; other bytes zero.")]
        pub fn $from(value: $t) -> Self {
            let mut exit = Self::default();
            exit.$member = value;
            exit
        }

        #[doc = concat!("The details as ", $doc, ".")]
        pub fn $member(&self) -> &$t {
            // SAFETY: every byte of the union is initialized (see the type's
            // doc) and every bit pattern is a valid member.
            unsafe { &self.$member }
        }

        #[doc = concat!("The details as ", $doc, ", writable.")]
        pub fn $get_mut(&mut self) -> &mut $t {
            // SAFETY: as above; writes through a plain-old-data member keep
            // every byte initialized.
            unsafe { &mut self.$member }
        }
    };
}

impl KvmRunExit {
    exit_member!(hw, from_hw, hw_mut, KvmRunHw, "`KVM_EXIT_UNKNOWN`'s");
    exit_member!(ex, from_ex, ex_mut, KvmRunEx, "`KVM_EXIT_EXCEPTION`'s");
    exit_member!(io, from_io, io_mut, KvmRunIo, "`KVM_EXIT_IO`'s");
    exit_member!(mmio, from_mmio, mmio_mut, KvmRunMmio, "`KVM_EXIT_MMIO`'s");

    /// The union as three words, whatever member is valid.
    pub fn raw(&self) -> [u64; 3] {
        // SAFETY: every byte is initialized and `[u64; 3]` accepts any bits.
        unsafe { self.raw }
    }
}

impl Default for KvmRunExit {
    fn default() -> Self {
        KvmRunExit { raw: [0; 3] }
    }
}

impl PartialEq for KvmRunExit {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl Eq for KvmRunExit {}

impl fmt::Debug for KvmRunExit {
    /// The union cannot know which member is valid, so it shows its words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.raw();
        write!(f, "KvmRunExit {{ raw: [{a:#x}, {b:#x}, {c:#x}] }}")
    }
}
// ANCHOR_END: kvm_run_exit

// ANCHOR: kvm_run_members
/// `kvm_run.hw`, for `KVM_EXIT_UNKNOWN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRunHw {
    /// The hardware's own exit reason (VMX basic exit reason or SVM exit code).
    pub hardware_exit_reason: u32,
}

check_layout!(KvmRunHw as "kvm_run.hw", size 4 {
    hardware_exit_reason: u32 = 0,
});

/// `kvm_run.ex`, for `KVM_EXIT_EXCEPTION`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRunEx {
    /// The vector: 0 (#DE) to 31.
    pub exception: u32,
    /// The error code the exception pushed, if it pushes one.
    pub error_code: u32,
}

check_layout!(KvmRunEx as "kvm_run.ex", size 8 {
    exception: u32 = 0,
    error_code: u32 = 4,
});

/// `kvm_run.io`, for `KVM_EXIT_IO`: one port access, or a string of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRunIo {
    /// [`KVM_EXIT_IO_IN`](super::KVM_EXIT_IO_IN) or [`KVM_EXIT_IO_OUT`](super::KVM_EXIT_IO_OUT).
    pub direction: u8,
    /// Bytes per access: 1, 2 or 4.
    pub size: u8,
    /// Nonzero for `INS`/`OUTS`.
    pub string: u8,
    /// Nonzero if RFLAGS.DF is set: the string runs downwards.
    pub string_down: u8,
    /// Nonzero for a `REP` prefix.
    pub rep: u8,
    pub pad: u8,
    /// The I/O port.
    pub port: u16,
    /// The number of accesses (RCX for `REP`, else 1).
    pub count: u64,
    /// C's anonymous `union { __u64 address; __u32 value; }`.
    pub data: KvmRunIoData,
}

check_layout!(KvmRunIo as "kvm_run.io", size 24 {
    direction: u8 = 0,
    size: u8 = 1,
    string: u8 = 2,
    string_down: u8 = 3,
    rep: u8 = 4,
    pad: u8 = 5,
    port: u16 = 6,
    count: u64 = 8,
    data: KvmRunIoData = 16,
});

/// The data of a port access: for a string, the guest linear address of the
/// buffer; otherwise the value itself (the low 32 bits; x86 is little-endian,
/// so C's `value` is the first half of `address`). A `u64` inside, so
/// every byte is always initialized.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRunIoData(u64);

// SAFETY: a transparent wrapper around a `u64`.
unsafe impl Pod for KvmRunIoData {}

impl KvmRunIoData {
    /// Data holding a string's buffer address (`address` in C).
    pub const fn from_address(address: u64) -> Self {
        KvmRunIoData(address)
    }

    /// Data holding a single access's value (`value` in C).
    pub const fn from_value(value: u32) -> Self {
        KvmRunIoData(value as u64)
    }

    /// C's `io.address`.
    pub const fn address(self) -> u64 {
        self.0
    }

    /// C's `io.value`.
    pub const fn value(self) -> u32 {
        self.0 as u32
    }
}

/// `kvm_run.mmio`, for `KVM_EXIT_MMIO`: one access to memory no slot backs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRunMmio {
    /// The guest-physical address accessed.
    pub phys_addr: u64,
    /// Written bytes, or where userspace puts the bytes a read returns.
    pub data: [u8; 8],
    /// Bytes accessed: 1 to 8.
    pub len: u32,
    /// Nonzero for a write.
    pub is_write: u8,
    /// Not in C: the three bytes C leaves as padding.
    pub tail_padding: [u8; 3],
}

check_layout!(KvmRunMmio as "kvm_run.mmio", size 24 {
    phys_addr: u64 = 0,
    data: [u8; 8] = 8,
    len: u32 = 16,
    is_write: u8 = 20,
}; tail_padding: [u8; 3] = 21);
// ANCHOR_END: kvm_run_members

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::KVM_EXIT_IO_OUT;

    #[test]
    fn a_default_kvm_run_is_all_zero() {
        let run = KvmRun::default();
        assert!(run.as_bytes().iter().all(|&b| b == 0));
    }

    #[test]
    fn exit_members_share_the_union() {
        let io = KvmRunIo {
            direction: KVM_EXIT_IO_OUT,
            size: 1,
            port: 0x3F8,
            count: 1,
            data: KvmRunIoData::from_value(b'A'.into()),
            ..KvmRunIo::default()
        };
        let mut exit = KvmRunExit::from_io(io);
        assert_eq!(*exit.io(), io);
        assert_eq!(exit.hw().hardware_exit_reason, 0x0000_0101, "direction and size overlay hw");
        exit.mmio_mut().data = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(exit.raw()[1], 0x0807_0605_0403_0201);
        assert_eq!(KvmRunExit::from_hw(KvmRunHw { hardware_exit_reason: 7 }).raw(), [7, 0, 0]);
        assert_eq!(KvmRunExit::from_ex(KvmRunEx { exception: 13, error_code: 8 }).ex().error_code, 8);
    }

    #[test]
    fn io_data_is_an_address_or_a_value() {
        let data = KvmRunIoData::from_address(0x1_2345_6789);
        assert_eq!(data.address(), 0x1_2345_6789);
        assert_eq!(data.value(), 0x2345_6789);
        assert_eq!(KvmRunIoData::from_value(u32::MAX).address(), 0xFFFF_FFFF);
    }

    #[test]
    fn debug_output_shows_the_exit_words() {
        let run = KvmRun { exit: KvmRunExit::from_hw(KvmRunHw { hardware_exit_reason: 0x30 }), ..KvmRun::default() };
        let text = std::format!("{run:?}");
        assert!(text.contains("raw: [0x30, 0x0, 0x0]"), "{text}");
    }
}
