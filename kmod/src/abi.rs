//@ stage 2
//! The ioctl ABI of Linux 2.6.20's KVM (stage 02): `include/linux/kvm.h` as
//! `#[repr(C)]` Rust.
//!
//! Everything userspace and the module exchange is defined here once: the
//! structs passed by pointer through `ioctl(2)`, the constants inside them,
//! and the fifteen ioctl numbers. Each struct's size and each field's offset
//! are checked at compile time against the numbers the C compiler gives the
//! 2.6.20 header (`tests/abi_layout.rs` asks gcc for them), and every struct
//! is proven free of padding, so its bytes can be copied to user space whole
//! without leaking a byte the kernel never wrote.
//!
//! Names follow the C header: `struct kvm_sregs` is [`KvmSregs`], its fields
//! keep their C names (`type` becomes `type_`), and the constants keep theirs.

use crate::segments::{SegmentDescriptor, Selector};
use core::fmt;
use core::mem::{align_of, offset_of, size_of};

// ANCHOR: constants
/// The ioctl type of every KVM ioctl: the `type` field of each number.
pub const KVMIO: u32 = 0xAE;

/// The version of the API this module speaks: Linux 2.6.20's.
/// `KVM_GET_API_VERSION` returns it; userspace refuses any other.
pub const KVM_API_VERSION: i32 = 2;

/// The number of interrupt vectors an x86 CPU has.
pub const KVM_NR_INTERRUPTS: u32 = 256;

/// The bytes of a bitmap with one bit per interrupt vector.
pub const KVM_IRQ_BITMAP_SIZE_BYTES: usize = (KVM_NR_INTERRUPTS as usize).div_ceil(8);

/// The same bitmap counted in `u64` words, C's `KVM_IRQ_BITMAP_SIZE(__u64)`.
pub const KVM_IRQ_BITMAP_SIZE_U64: usize = KVM_IRQ_BITMAP_SIZE_BYTES / size_of::<u64>();

/// [`KvmMemoryRegion::flags`]: track writes to the slot for `KVM_GET_DIRTY_LOG`.
pub const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1;

/// [`KvmRun::exit_type`]: the processor refused to enter the guest.
pub const KVM_EXIT_TYPE_FAIL_ENTRY: u32 = 1;
/// [`KvmRun::exit_type`]: the guest ran and exited.
pub const KVM_EXIT_TYPE_VM_EXIT: u32 = 2;

/// [`KvmRunIo::direction`]: the guest reads the port (`IN`, `INS`).
pub const KVM_EXIT_IO_IN: u8 = 0;
/// [`KvmRunIo::direction`]: the guest writes the port (`OUT`, `OUTS`).
pub const KVM_EXIT_IO_OUT: u8 = 1;
// ANCHOR_END: constants

// ANCHOR: exit_reasons
/// [`KvmRun::exit_reason`] values: why `KVM_RUN` returned to userspace.
/// C's `enum kvm_exit_reason`; kept as plain `u32`s because the field is
/// written by the kernel and any value may arrive.
pub const KVM_EXIT_UNKNOWN: u32 = 0;
/// The guest raised an exception the kernel does not handle (`ex`).
pub const KVM_EXIT_EXCEPTION: u32 = 1;
/// The guest accessed an I/O port (`io`).
pub const KVM_EXIT_IO: u32 = 2;
/// The guest executed `CPUID`; userspace fills in the registers.
pub const KVM_EXIT_CPUID: u32 = 3;
/// A breakpoint or single step set by `KVM_DEBUG_GUEST` hit.
pub const KVM_EXIT_DEBUG: u32 = 4;
/// The guest executed `HLT`.
pub const KVM_EXIT_HLT: u32 = 5;
/// The guest accessed memory no slot backs (`mmio`).
pub const KVM_EXIT_MMIO: u32 = 6;
/// The guest can take an interrupt now, as `request_interrupt_window` asked.
pub const KVM_EXIT_IRQ_WINDOW_OPEN: u32 = 7;
/// The guest triple-faulted: a real CPU would reset.
pub const KVM_EXIT_SHUTDOWN: u32 = 8;

/// The C name of an exit reason, for traces and error messages.
pub fn exit_reason_name(reason: u32) -> Option<&'static str> {
    const NAMES: [&str; 9] = [
        "KVM_EXIT_UNKNOWN",
        "KVM_EXIT_EXCEPTION",
        "KVM_EXIT_IO",
        "KVM_EXIT_CPUID",
        "KVM_EXIT_DEBUG",
        "KVM_EXIT_HLT",
        "KVM_EXIT_MMIO",
        "KVM_EXIT_IRQ_WINDOW_OPEN",
        "KVM_EXIT_SHUTDOWN",
    ];
    NAMES.get(usize::try_from(reason).ok()?).copied()
}
// ANCHOR_END: exit_reasons

// ANCHOR: pod
/// Plain old data: a type whose every byte belongs to a field and whose
/// fields accept every bit pattern. Such a value can be viewed as bytes
/// (to copy it to user space) and filled from bytes (to copy it in).
///
/// # Safety
/// The type has no padding bytes, and every bit pattern of its size is a
/// valid value. [`check_layout!`] implements it only after proving both.
pub unsafe trait Pod: Copy + 'static {
    /// The value's bytes, as C sees the struct in memory.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self` has no padding, so all `size_of::<Self>()` bytes
        // are initialized, and they live as long as `self`.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast(), size_of::<Self>()) }
    }

    /// The value's bytes, writable: any bytes written leave a valid value.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`; and every bit pattern is a valid `Self`,
        // so no write through the slice can break an invariant.
        unsafe { core::slice::from_raw_parts_mut((self as *mut Self).cast(), size_of::<Self>()) }
    }
}

// SAFETY: integers have no padding and accept every bit pattern.
unsafe impl Pod for u8 {}
// SAFETY: as for `u8`.
unsafe impl Pod for u16 {}
// SAFETY: as for `u8`.
unsafe impl Pod for u32 {}
// SAFETY: as for `u8`.
unsafe impl Pod for u64 {}
// SAFETY: as for `u8`.
unsafe impl Pod for i32 {}
// SAFETY: an array's elements follow each other without gaps, so an array
// of plain old data is plain old data.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
// ANCHOR_END: pod

// ANCHOR: layout_types
/// One field of an ABI struct: where it sits and what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// The field's Rust name.
    pub name: &'static str,
    /// Bytes from the start of the struct, `offsetof()` in C.
    pub offset: usize,
    /// The field's size in bytes.
    pub size: usize,
    /// The alignment the field's type demands.
    pub align: usize,
}

/// The layout of one ABI struct, for the layout oracle and the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// The C name: `kvm_segment`, or `kvm_run.io` for a member of an
    /// anonymous union.
    pub c_name: &'static str,
    /// `sizeof` in C.
    pub size: usize,
    /// `_Alignof` in C.
    pub align: usize,
    /// The fields C declares, in order. A Rust struct may end with one more
    /// field, `tail_padding`, that names the bytes C leaves unnamed.
    pub fields: &'static [FieldLayout],
}
// ANCHOR_END: layout_types

// ANCHOR: check_layout
/// Checks an ABI struct at compile time and records its layout.
///
/// `check_layout!(T as "c_name", size N { field: Type = offset, ... })`
/// asserts that `T` is `N` bytes, that each field has the type and offset
/// written (the same numbers the C header gives), and that the field sizes
/// add up to `N`, so no byte is padding. Only then does it implement
/// [`Pod`] for `T`. A trailing `tail_padding` field, which the C struct
/// leaves unnamed, follows a `;`.
macro_rules! check_layout {
    ($t:ident as $c_name:literal, size $size:literal {
        $($field:ident: $fty:ty = $offset:literal),+ $(,)?
    } $(; $tail:ident: $tail_ty:ty = $tail_offset:literal)?) => {
        const _: () = {
            assert!(size_of::<$t>() == $size);
            $(assert!(offset_of!($t, $field) == $offset);)+
            $(assert!(offset_of!($t, $tail) == $tail_offset);)?
            // Every byte belongs to a field: nothing is padding.
            assert!(0 $(+ size_of::<$fty>())+ $(+ size_of::<$tail_ty>())? == $size);
            // Every field is plain old data itself.
            const fn is_pod<T: Pod>() {}
            $(is_pod::<$fty>();)+
            $(is_pod::<$tail_ty>();)?
        };
        // Compiles only if each field really has the type written above.
        const _: fn(&$t) = |s| {
            $(let _: &$fty = &s.$field;)+
            $(let _: &$tail_ty = &s.$tail;)?
        };
        // SAFETY: the assertions above prove that the fields, all plain old
        // data, cover every byte of the struct.
        unsafe impl Pod for $t {}
        impl $t {
            /// This struct's layout, as checked at compile time.
            pub const LAYOUT: StructLayout = StructLayout {
                c_name: $c_name,
                size: $size,
                align: align_of::<$t>(),
                fields: &[$(FieldLayout {
                    name: stringify!($field),
                    offset: $offset,
                    size: size_of::<$fty>(),
                    align: align_of::<$fty>(),
                }),+],
            };
        }
    };
}
// ANCHOR_END: check_layout

// ANCHOR: kvm_memory_region
/// `struct kvm_memory_region`, for `KVM_SET_MEMORY_REGION`: one slot of
/// guest-physical memory, which the kernel allocates and userspace maps by
/// `mmap` of the device at offset `guest_phys_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMemoryRegion {
    /// The slot number: 0 to 3 in 2006.
    pub slot: u32,
    /// [`KVM_MEM_LOG_DIRTY_PAGES`] or 0.
    pub flags: u32,
    /// Where the slot starts in guest-physical memory; page aligned.
    pub guest_phys_addr: u64,
    /// Bytes; a multiple of the page size. 0 deletes the slot.
    pub memory_size: u64,
}

check_layout!(KvmMemoryRegion as "kvm_memory_region", size 24 {
    slot: u32 = 0,
    flags: u32 = 4,
    guest_phys_addr: u64 = 8,
    memory_size: u64 = 16,
});
// ANCHOR_END: kvm_memory_region

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
    /// [`KVM_EXIT_IO_IN`] or [`KVM_EXIT_IO_OUT`].
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

// ANCHOR: kvm_regs
/// `struct kvm_regs`, for `KVM_GET_REGS` and `KVM_SET_REGS`: the general
/// registers, RIP and RFLAGS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRegs {
    /// In: the vCPU.
    pub vcpu: u32,
    pub padding: u32,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

check_layout!(KvmRegs as "kvm_regs", size 152 {
    vcpu: u32 = 0, padding: u32 = 4,
    rax: u64 = 8, rbx: u64 = 16, rcx: u64 = 24, rdx: u64 = 32,
    rsi: u64 = 40, rdi: u64 = 48, rsp: u64 = 56, rbp: u64 = 64,
    r8: u64 = 72, r9: u64 = 80, r10: u64 = 88, r11: u64 = 96,
    r12: u64 = 104, r13: u64 = 112, r14: u64 = 120, r15: u64 = 128,
    rip: u64 = 136, rflags: u64 = 144,
});
// ANCHOR_END: kvm_regs

// ANCHOR: kvm_segment
/// `struct kvm_segment`: a segment register, visible part (the selector) and
/// hidden part (what the processor loaded from the descriptor), unpacked one
/// byte per attribute.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmSegment {
    pub base: u64,
    /// The byte-granular limit: the last valid offset, already scaled by G.
    pub limit: u32,
    pub selector: u16,
    /// The 4-bit segment type.
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    /// Nonzero: the register holds no usable segment (a null selector was
    /// loaded, or the segment is not present).
    pub unusable: u8,
    pub padding: u8,
}

check_layout!(KvmSegment as "kvm_segment", size 24 {
    base: u64 = 0,
    limit: u32 = 8,
    selector: u16 = 12,
    type_: u8 = 14,
    present: u8 = 15,
    dpl: u8 = 16,
    db: u8 = 17,
    s: u8 = 18,
    l: u8 = 19,
    g: u8 = 20,
    avl: u8 = 21,
    unusable: u8 = 22,
    padding: u8 = 23,
});
// ANCHOR_END: kvm_segment

// ANCHOR: kvm_dtable
/// `struct kvm_dtable`: GDTR or IDTR, a table's base and byte limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmDtable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

check_layout!(KvmDtable as "kvm_dtable", size 16 {
    base: u64 = 0,
    limit: u16 = 8,
    padding: [u16; 3] = 10,
});
// ANCHOR_END: kvm_dtable

// ANCHOR: kvm_sregs
/// `struct kvm_sregs`, for `KVM_GET_SREGS` and `KVM_SET_SREGS`: the state
/// that decides the processor's mode — segments, descriptor tables, control
/// registers, EFER — and the interrupts waiting to be injected.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmSregs {
    /// In: the vCPU.
    pub vcpu: u32,
    pub padding: u32,
    pub cs: KvmSegment,
    pub ds: KvmSegment,
    pub es: KvmSegment,
    pub fs: KvmSegment,
    pub gs: KvmSegment,
    pub ss: KvmSegment,
    pub tr: KvmSegment,
    pub ldt: KvmSegment,
    pub gdt: KvmDtable,
    pub idt: KvmDtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    /// One bit per vector: the interrupts queued by `KVM_INTERRUPT` and not
    /// yet injected.
    pub interrupt_bitmap: [u64; KVM_IRQ_BITMAP_SIZE_U64],
}

check_layout!(KvmSregs as "kvm_sregs", size 320 {
    vcpu: u32 = 0, padding: u32 = 4,
    cs: KvmSegment = 8, ds: KvmSegment = 32, es: KvmSegment = 56,
    fs: KvmSegment = 80, gs: KvmSegment = 104, ss: KvmSegment = 128,
    tr: KvmSegment = 152, ldt: KvmSegment = 176,
    gdt: KvmDtable = 200, idt: KvmDtable = 216,
    cr0: u64 = 232, cr2: u64 = 240, cr3: u64 = 248, cr4: u64 = 256, cr8: u64 = 264,
    efer: u64 = 272, apic_base: u64 = 280,
    interrupt_bitmap: [u64; 4] = 288,
});
// ANCHOR_END: kvm_sregs

// ANCHOR: kvm_msrs
/// `struct kvm_msr_entry`: one model-specific register and its value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMsrEntry {
    pub index: u32,
    pub reserved: u32,
    pub data: u64,
}

check_layout!(KvmMsrEntry as "kvm_msr_entry", size 16 {
    index: u32 = 0,
    reserved: u32 = 4,
    data: u64 = 8,
});

/// `struct kvm_msrs`, for `KVM_GET_MSRS` and `KVM_SET_MSRS`: a header
/// followed in memory by `nmsrs` [`KvmMsrEntry`]s. The ioctl number encodes
/// only the header's size; the kernel copies the entries separately.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMsrs {
    pub vcpu: u32,
    /// The number of entries that follow.
    pub nmsrs: u32,
    /// C's `entries[0]`: no bytes, but the entries' alignment.
    pub entries: [KvmMsrEntry; 0],
}

check_layout!(KvmMsrs as "kvm_msrs", size 8 {
    vcpu: u32 = 0,
    nmsrs: u32 = 4,
    entries: [KvmMsrEntry; 0] = 8,
});

/// `struct kvm_msr_list`, for `KVM_GET_MSR_INDEX_LIST`: a header followed
/// by `nmsrs` `u32` MSR indices. Userspace sets `nmsrs` to the room it has;
/// the kernel sets it to the number of MSRs it supports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMsrList {
    pub nmsrs: u32,
    /// C's `indices[0]`.
    pub indices: [u32; 0],
}

check_layout!(KvmMsrList as "kvm_msr_list", size 4 {
    nmsrs: u32 = 0,
    indices: [u32; 0] = 4,
});
// ANCHOR_END: kvm_msrs

// ANCHOR: kvm_translation
/// `struct kvm_translation`, for `KVM_TRANSLATE`: walk the guest's page
/// tables for one linear address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmTranslation {
    /// In.
    pub linear_address: u64,
    /// In.
    pub vcpu: u32,
    pub padding: u32,
    /// Out.
    pub physical_address: u64,
    /// Out: nonzero if the address is mapped.
    pub valid: u8,
    /// Out: nonzero if the mapping allows writes.
    pub writeable: u8,
    /// Out: nonzero if the mapping allows user-mode access.
    pub usermode: u8,
    /// Not in C: the five bytes C leaves as padding.
    pub tail_padding: [u8; 5],
}

check_layout!(KvmTranslation as "kvm_translation", size 32 {
    linear_address: u64 = 0,
    vcpu: u32 = 8,
    padding: u32 = 12,
    physical_address: u64 = 16,
    valid: u8 = 24,
    writeable: u8 = 25,
    usermode: u8 = 26,
}; tail_padding: [u8; 5] = 27);
// ANCHOR_END: kvm_translation

// ANCHOR: kvm_interrupt
/// `struct kvm_interrupt`, for `KVM_INTERRUPT`: queue an external interrupt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmInterrupt {
    pub vcpu: u32,
    /// The vector, below [`KVM_NR_INTERRUPTS`].
    pub irq: u32,
}

check_layout!(KvmInterrupt as "kvm_interrupt", size 8 {
    vcpu: u32 = 0,
    irq: u32 = 4,
});
// ANCHOR_END: kvm_interrupt

// ANCHOR: kvm_debug_guest
/// `struct kvm_breakpoint`: one hardware breakpoint (a debug register).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmBreakpoint {
    pub enabled: u32,
    pub padding: u32,
    /// The guest linear address.
    pub address: u64,
}

check_layout!(KvmBreakpoint as "kvm_breakpoint", size 16 {
    enabled: u32 = 0,
    padding: u32 = 4,
    address: u64 = 8,
});

/// `struct kvm_debug_guest`, for `KVM_DEBUG_GUEST`: breakpoints and single
/// stepping, reported as `KVM_EXIT_DEBUG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmDebugGuest {
    pub vcpu: u32,
    /// Nonzero: debugging on.
    pub enabled: u32,
    /// DR0 to DR3.
    pub breakpoints: [KvmBreakpoint; 4],
    /// Nonzero: exit after every instruction.
    pub singlestep: u32,
    /// Not in C: the four bytes C leaves as padding.
    pub tail_padding: u32,
}

check_layout!(KvmDebugGuest as "kvm_debug_guest", size 80 {
    vcpu: u32 = 0,
    enabled: u32 = 4,
    breakpoints: [KvmBreakpoint; 4] = 8,
    singlestep: u32 = 72,
}; tail_padding: u32 = 76);
// ANCHOR_END: kvm_debug_guest

// ANCHOR: kvm_dirty_log
/// `struct kvm_dirty_log`, for `KVM_GET_DIRTY_LOG`: the kernel writes one
/// bit per page of the slot, set if the page was written since the last call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmDirtyLog {
    pub slot: u32,
    pub padding: u32,
    /// The user address of the bitmap. C's `union { void __user
    /// *dirty_bitmap; __u64 padding; }` makes a pointer 8 bytes wide for
    /// 32-bit userspace too; the kernel only passes it to `copy_to_user`.
    pub dirty_bitmap: u64,
}

check_layout!(KvmDirtyLog as "kvm_dirty_log", size 16 {
    slot: u32 = 0,
    padding: u32 = 4,
    dirty_bitmap: u64 = 8,
});
// ANCHOR_END: kvm_dirty_log

// ANCHOR: layouts
/// Every ABI struct's layout, in the order of the C header.
pub const LAYOUTS: [StructLayout; 18] = [
    KvmMemoryRegion::LAYOUT,
    KvmRun::LAYOUT,
    KvmRunHw::LAYOUT,
    KvmRunEx::LAYOUT,
    KvmRunIo::LAYOUT,
    KvmRunMmio::LAYOUT,
    KvmRegs::LAYOUT,
    KvmSegment::LAYOUT,
    KvmDtable::LAYOUT,
    KvmSregs::LAYOUT,
    KvmMsrEntry::LAYOUT,
    KvmMsrs::LAYOUT,
    KvmMsrList::LAYOUT,
    KvmTranslation::LAYOUT,
    KvmInterrupt::LAYOUT,
    KvmBreakpoint::LAYOUT,
    KvmDebugGuest::LAYOUT,
    KvmDirtyLog::LAYOUT,
];
// ANCHOR_END: layouts

// ANCHOR: c_layout
/// Lays out `fields` (their sizes and alignments, in declaration order) by
/// the C rules of the System V x86-64 psABI: each field starts at the next
/// multiple of its alignment, and the struct's size is rounded up to a
/// multiple of its largest alignment. Writes each field's offset to
/// `offsets` (as many as fit) and returns the struct's size.
///
/// `#[repr(C)]` asks rustc for exactly this; the tests replay it on every
/// struct above.
pub fn c_layout(fields: &[FieldLayout], offsets: &mut [usize]) -> usize {
    //@ exercise E2.2
    //@ instruction: Compute where C places each field and how big the struct
    //@+ is: round the running end up to each field's alignment, place the
    //@+ field there, and at the end round up to the largest alignment.
    //@ hint: `usize::next_multiple_of` rounds up. An empty struct has
    //@+ alignment 1. Zip `fields` with `offsets.iter_mut()` to write offsets.
    let mut end: usize = 0;
    let mut align: usize = 1;
    let mut slots = offsets.iter_mut();
    for field in fields {
        let offset = end.next_multiple_of(field.align);
        if let Some(slot) = slots.next() {
            *slot = offset;
        }
        end = offset + field.size;
        align = align.max(field.align);
    }
    end.next_multiple_of(align)
    //@ end
}
// ANCHOR_END: c_layout

// ANCHOR: ioc
/// The direction of an ioctl's data, as userspace sees it: `Write` means
/// userspace writes the struct and the kernel reads it. The two bits of
/// `_IOC_NONE`, `_IOC_WRITE` and `_IOC_READ` on x86.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `_IO`: no data, or an integer passed by value.
    None = 0,
    /// `_IOW`: userspace passes a struct in.
    Write = 1,
    /// `_IOR`: the kernel fills a struct.
    Read = 2,
    /// `_IOWR`: both.
    ReadWrite = 3,
}

/// Bits of an ioctl number: `dir:2 | size:14 | type:8 | nr:8`, high to low,
/// as in Linux's `<asm-generic/ioctl.h>`.
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_SIZEBITS: u32 = 14;

/// C's `_IOC(dir, type, nr, size)`. Only ever evaluated at compile time;
/// a struct too big for the 14-bit size field fails the build.
pub const fn ioc(dir: Direction, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(size < 1 << IOC_SIZEBITS && ty <= 0xFF && nr <= 0xFF);
    (dir as u32) << IOC_DIRSHIFT | (size as u32) << IOC_SIZESHIFT | ty << IOC_TYPESHIFT | nr << IOC_NRSHIFT
}
// ANCHOR_END: ioc

// ANCHOR: ioctl_table
/// One ioctl: its name, number and the fields the number encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ioctl {
    /// The C name, `KVM_RUN`.
    pub name: &'static str,
    /// The number userspace passes to `ioctl(2)`.
    pub cmd: u32,
    pub dir: Direction,
    /// The command's index within [`KVMIO`].
    pub nr: u8,
    /// The size of the argument's type; 0 for `_IO`.
    pub size: usize,
    /// The argument's Rust type, or `""` for `_IO`.
    pub arg: &'static str,
}

/// Defines each ioctl number as a `pub const` and lists all of them in
/// [`IOCTLS`], from one table written like the C header's.
macro_rules! ioctls {
    ($($(#[$doc:meta])* $name:ident = $kind:ident($nr:literal $(, $arg:ty)?);)+) => {
        $(
            $(#[$doc])*
            pub const $name: u32 = ioc(ioctls!(@dir $kind), KVMIO, $nr, ioctls!(@size $($arg)?));
        )+

        /// Every ioctl of the 2.6.20 ABI, in number order.
        pub const IOCTLS: [Ioctl; [$($nr),+].len()] = [$(Ioctl {
            name: stringify!($name),
            cmd: $name,
            dir: ioctls!(@dir $kind),
            nr: $nr,
            size: ioctls!(@size $($arg)?),
            arg: stringify!($($arg)?),
        }),+];
    };
    (@dir _IO) => { Direction::None };
    (@dir _IOR) => { Direction::Read };
    (@dir _IOW) => { Direction::Write };
    (@dir _IOWR) => { Direction::ReadWrite };
    (@size) => { 0 };
    (@size $arg:ty) => { size_of::<$arg>() };
}

ioctls! {
    /// Returns [`KVM_API_VERSION`].
    KVM_GET_API_VERSION    = _IO(1);
    /// Runs a vCPU until it exits to userspace.
    KVM_RUN                = _IOWR(2, KvmRun);
    KVM_GET_REGS           = _IOWR(3, KvmRegs);
    KVM_SET_REGS           = _IOW(4, KvmRegs);
    KVM_GET_SREGS          = _IOWR(5, KvmSregs);
    KVM_SET_SREGS          = _IOW(6, KvmSregs);
    /// Translates a guest linear address to a guest-physical one.
    KVM_TRANSLATE          = _IOWR(7, KvmTranslation);
    /// Queues an external interrupt.
    KVM_INTERRUPT          = _IOW(8, KvmInterrupt);
    KVM_DEBUG_GUEST        = _IOW(9, KvmDebugGuest);
    /// Creates, resizes or deletes a slot of guest memory.
    KVM_SET_MEMORY_REGION  = _IOW(10, KvmMemoryRegion);
    /// Creates a vCPU; the argument is its slot number, passed by value
    /// (the `int` in the number is only its size).
    KVM_CREATE_VCPU        = _IOW(11, i32);
    KVM_GET_DIRTY_LOG      = _IOW(12, KvmDirtyLog);
    KVM_GET_MSRS           = _IOWR(13, KvmMsrs);
    KVM_SET_MSRS           = _IOWR(14, KvmMsrs);
    KVM_GET_MSR_INDEX_LIST = _IOWR(15, KvmMsrList);
}
// ANCHOR_END: ioctl_table

// ANCHOR: decode_ioctl
/// The four fields of an ioctl number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlFields {
    pub dir: Direction,
    /// `_IOC_TYPE`: which driver; [`KVMIO`] for ours.
    pub ty: u8,
    /// `_IOC_NR`: which command of that driver.
    pub nr: u8,
    /// `_IOC_SIZE`: the size of the argument's type.
    pub size: u16,
}

/// Splits an ioctl number into its fields: `_IOC_DIR`, `_IOC_TYPE`,
/// `_IOC_NR` and `_IOC_SIZE` at once. Every `u32` splits; none is refused.
pub fn decode_ioctl(cmd: u32) -> IoctlFields {
    //@ exercise E2.1
    //@ instruction: Undo `ioc`: shift each field down and mask it to its
    //@+ width (dir 2 bits, size 14, type 8, nr 8).
    //@ hint: The direction has four values and two bits, so a `match` on
    //@+ `cmd >> IOC_DIRSHIFT` with arms 0, 1, 2 and `_` covers every case.
    let dir = match cmd >> IOC_DIRSHIFT {
        0 => Direction::None,
        1 => Direction::Write,
        2 => Direction::Read,
        _ => Direction::ReadWrite,
    };
    IoctlFields {
        dir,
        ty: (cmd >> IOC_TYPESHIFT) as u8,
        nr: (cmd >> IOC_NRSHIFT) as u8,
        size: ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as u16,
    }
    //@ end
}
// ANCHOR_END: decode_ioctl

// ANCHOR: segment_conversion
impl KvmSegment {
    /// The register KVM reports after the processor loads `selector`, whose
    /// descriptor is `descriptor`: the descriptor's fields unpacked one per
    /// byte, the limit scaled to bytes, and `unusable` set exactly when the
    /// segment is not present (a null selector loads the all-zero null
    /// descriptor, whose P is 0).
    pub fn from_descriptor(selector: Selector, descriptor: &SegmentDescriptor) -> KvmSegment {
        let d = descriptor;
        KvmSegment {
            base: u64::from(d.base),
            limit: d.effective_limit(),
            selector: selector.0,
            type_: d.type_ & 0xF,
            present: u8::from(d.present),
            dpl: d.dpl & 3,
            db: u8::from(d.db),
            s: u8::from(d.s),
            l: u8::from(d.l),
            g: u8::from(d.g),
            avl: u8::from(d.avl),
            unusable: u8::from(!d.present),
            padding: 0,
        }
    }

    /// The descriptor that, loaded into a segment register, gives this
    /// register's hidden part; `None` if no 8-byte descriptor can: a base
    /// above 4 GiB (only FS and GS, through MSRs, or a 16-byte system
    /// descriptor hold one), or a limit that G cannot express. An unusable
    /// segment yields a descriptor with P clear.
    pub fn to_descriptor(&self) -> Option<SegmentDescriptor> {
        Some(SegmentDescriptor {
            base: u32::try_from(self.base).ok()?,
            limit: SegmentDescriptor::limit_field(self.limit, self.g != 0)?,
            type_: self.type_ & 0xF,
            s: self.s != 0,
            dpl: self.dpl & 3,
            present: self.present != 0 && self.unusable == 0,
            avl: self.avl != 0,
            l: self.l != 0,
            db: self.db != 0,
            g: self.g != 0,
        })
    }

    /// The segment register after a real-mode load of `selector`: base
    /// `selector * 16`, a 64 KiB limit, and a read/write, accessed data
    /// segment — what the processor has after reset (the values KVM's vCPU
    /// setup writes), except that CS's type is execute/read.
    pub fn real_mode(selector: u16) -> KvmSegment {
        KvmSegment {
            base: u64::from(selector) << 4,
            limit: 0xFFFF,
            selector,
            type_: crate::segments::TYPE_DATA_READ_WRITE | crate::segments::TYPE_ACCESSED,
            present: 1,
            s: 1,
            ..KvmSegment::default()
        }
    }
}
// ANCHOR_END: segment_conversion

impl KvmSregs {
    /// Whether vector `irq` is pending in [`KvmSregs::interrupt_bitmap`].
    pub fn interrupt_pending(&self, irq: u8) -> bool {
        let word = self.interrupt_bitmap.get(usize::from(irq / 64)).copied().unwrap_or(0);
        word & (1 << (irq % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::Table;

    // ANCHOR: golden_ioctls
    #[test]
    fn ioctl_numbers_match_the_2_6_20_header() {
        assert_eq!(KVM_GET_API_VERSION, 0x0000_AE01);
        assert_eq!(KVM_RUN, 0xC048_AE02);
        assert_eq!(KVM_GET_REGS, 0xC098_AE03);
        assert_eq!(KVM_SET_REGS, 0x4098_AE04);
        assert_eq!(KVM_GET_SREGS, 0xC140_AE05);
        assert_eq!(KVM_SET_SREGS, 0x4140_AE06);
        assert_eq!(KVM_TRANSLATE, 0xC020_AE07);
        assert_eq!(KVM_INTERRUPT, 0x4008_AE08);
        assert_eq!(KVM_DEBUG_GUEST, 0x4050_AE09);
        assert_eq!(KVM_SET_MEMORY_REGION, 0x4018_AE0A);
        assert_eq!(KVM_CREATE_VCPU, 0x4004_AE0B);
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_AE0C);
        assert_eq!(KVM_GET_MSRS, 0xC008_AE0D);
        assert_eq!(KVM_SET_MSRS, 0xC008_AE0E);
        assert_eq!(KVM_GET_MSR_INDEX_LIST, 0xC004_AE0F);
    }
    // ANCHOR_END: golden_ioctls

    #[test]
    fn the_table_lists_all_fifteen_ioctls_in_number_order() {
        assert_eq!(IOCTLS.len(), 15);
        for (i, ioctl) in IOCTLS.iter().enumerate() {
            assert_eq!(usize::from(ioctl.nr), i + 1, "{}", ioctl.name);
            assert!(ioctl.name.starts_with("KVM_"));
        }
    }

    #[test]
    fn each_table_entry_encodes_its_own_fields() {
        for i in IOCTLS {
            assert_eq!(i.cmd, ioc(i.dir, KVMIO, u32::from(i.nr), i.size), "{}", i.name);
        }
    }

    #[test]
    fn ioc_places_each_field() {
        assert_eq!(ioc(Direction::None, 0, 0, 0), 0);
        assert_eq!(ioc(Direction::Read, 0, 0, 0), 0x8000_0000);
        assert_eq!(ioc(Direction::Write, 0, 0, 0), 0x4000_0000);
        assert_eq!(ioc(Direction::None, 0, 0, 0x3FFF), 0x3FFF_0000);
        assert_eq!(ioc(Direction::None, 0xAE, 0, 0), 0xAE00);
        assert_eq!(ioc(Direction::None, 0, 0xFF, 0), 0xFF);
    }

    #[test]
    fn exit_reasons_have_their_c_names() {
        assert_eq!(exit_reason_name(KVM_EXIT_UNKNOWN), Some("KVM_EXIT_UNKNOWN"));
        assert_eq!(exit_reason_name(KVM_EXIT_MMIO), Some("KVM_EXIT_MMIO"));
        assert_eq!(exit_reason_name(KVM_EXIT_IRQ_WINDOW_OPEN), Some("KVM_EXIT_IRQ_WINDOW_OPEN"));
        assert_eq!(exit_reason_name(KVM_EXIT_SHUTDOWN), Some("KVM_EXIT_SHUTDOWN"));
        assert_eq!(exit_reason_name(9), None);
        assert_eq!(exit_reason_name(u32::MAX), None);
    }

    #[test]
    fn the_interrupt_bitmap_holds_one_bit_per_vector() {
        assert_eq!(KVM_IRQ_BITMAP_SIZE_BYTES, 32);
        assert_eq!(KVM_IRQ_BITMAP_SIZE_U64, 4);
        let mut sregs = KvmSregs::default();
        sregs.interrupt_bitmap[1] = 1 << 3;
        assert!(sregs.interrupt_pending(67));
        assert!(!sregs.interrupt_pending(66));
        assert!(!sregs.interrupt_pending(255));
    }

    #[test]
    fn layouts_list_every_struct_once() {
        for (i, a) in LAYOUTS.iter().enumerate() {
            assert!(LAYOUTS[..i].iter().all(|b| b.c_name != a.c_name), "{}", a.c_name);
            assert!(!a.fields.is_empty());
        }
    }

    #[test]
    fn bytes_are_the_struct_in_memory() {
        let mut region = KvmMemoryRegion { slot: 1, flags: 0, guest_phys_addr: 0x1000, memory_size: 0 };
        let bytes = region.as_bytes();
        assert_eq!(bytes.len(), 24);
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[9], 0x10);
        region.as_bytes_mut()[16] = 0x20;
        assert_eq!(region.memory_size, 0x20);
    }

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

    // ANCHOR: segment_tests
    #[test]
    fn a_flat_code_segment_unpacks_to_kvm_segment() {
        let code = SegmentDescriptor::from_bits(0x00CF_9A00_0000_FFFF);
        let seg = KvmSegment::from_descriptor(Selector(0x08), &code);
        let expected = KvmSegment {
            base: 0,
            limit: 0xFFFF_FFFF,
            selector: 0x08,
            type_: 0xA,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        assert_eq!(seg, expected);
        assert_eq!(seg.to_descriptor(), Some(code));
    }

    #[test]
    fn a_64_bit_code_segment_has_l_set_and_db_clear() {
        let seg = KvmSegment::from_descriptor(Selector(0x10), &SegmentDescriptor::from_bits(0x00AF_9A00_0000_FFFF));
        assert_eq!((seg.l, seg.db, seg.g, seg.limit), (1, 0, 1, 0xFFFF_FFFF));
    }

    #[test]
    fn a_64_bit_tss_keeps_its_byte_limit() {
        let tss = SegmentDescriptor::tss64(0x0012_3000, 0x67);
        let seg = KvmSegment::from_descriptor(Selector::new(4, Table::Gdt, 0), &tss);
        assert_eq!((seg.s, seg.type_, seg.g, seg.limit, seg.base), (0, 9, 0, 0x67, 0x12_3000));
        assert_eq!(seg.selector, 0x20);
    }

    #[test]
    fn a_not_present_segment_is_unusable_and_stays_so() {
        let seg = KvmSegment::from_descriptor(Selector(0), &SegmentDescriptor::NULL);
        assert_eq!((seg.present, seg.unusable), (0, 1));
        let back = KvmSegment { present: 1, ..seg }.to_descriptor();
        assert_eq!(back.map(|d| d.present), Some(false));
    }

    #[test]
    fn descriptors_round_trip_through_kvm_segment() {
        for bits in SAMPLE_DESCRIPTORS {
            let d = SegmentDescriptor::from_bits(bits);
            let seg = KvmSegment::from_descriptor(Selector(0x2B), &d);
            assert_eq!(seg.to_descriptor().map(|d| d.to_bits()), Some(bits), "{bits:#018x}");
            assert_eq!(seg.selector, 0x2B);
        }
    }

    /// Present descriptors of every kind: flat code and data, 64-bit code,
    /// a TSS, a real-mode-like data segment, and a few odd bit mixes.
    const SAMPLE_DESCRIPTORS: [u64; 8] = [
        0x00CF_9A00_0000_FFFF,
        0x00CF_9200_0000_FFFF,
        0x00AF_9A00_0000_FFFF,
        0x1200_8934_5678_0067,
        0x0000_930F_0000_FFFF,
        0xFF5F_FDFF_FFFF_FFFF,
        0x0011_F100_0000_0000,
        0xAB80_8BCD_EF01_2345,
    ];

    #[test]
    fn limits_g_cannot_express_have_no_descriptor() {
        let byte_granular = KvmSegment { limit: 0x10_0000, g: 0, present: 1, ..KvmSegment::default() };
        assert_eq!(byte_granular.to_descriptor(), None);
        let page_granular = KvmSegment { limit: 0x1000, g: 1, present: 1, ..KvmSegment::default() };
        assert_eq!(page_granular.to_descriptor(), None);
        let high_base = KvmSegment { base: 1 << 32, ..KvmSegment::default() };
        assert_eq!(high_base.to_descriptor(), None);
    }

    #[test]
    fn real_mode_segments_are_selector_times_16() {
        let cs = KvmSegment::real_mode(0xF000);
        assert_eq!((cs.base, cs.limit, cs.selector), (0xF_0000, 0xFFFF, 0xF000));
        assert_eq!((cs.type_, cs.present, cs.s, cs.db, cs.g, cs.unusable), (3, 1, 1, 0, 0, 0));
        let d = cs.to_descriptor().map(|d| d.to_bits());
        assert_eq!(d, Some(0x0000_930F_0000_FFFF));
    }
    // ANCHOR_END: segment_tests

    mod e2_1 {
        use super::super::*;

        #[test]
        fn every_ioctl_decodes_to_its_table_entry() {
            for i in IOCTLS {
                let f = decode_ioctl(i.cmd);
                assert_eq!((f.dir, f.ty, f.nr, usize::from(f.size)), (i.dir, 0xAE, i.nr, i.size), "{}", i.name);
            }
        }

        #[test]
        fn decoding_handles_every_direction_and_the_widest_size() {
            let f = decode_ioctl(0xFFFF_FFFF);
            assert_eq!((f.dir, f.ty, f.nr, f.size), (Direction::ReadWrite, 0xFF, 0xFF, 0x3FFF));
            assert_eq!(decode_ioctl(0x8004_5401).dir, Direction::Read);
            assert_eq!(decode_ioctl(0x4000_0000).dir, Direction::Write);
            assert_eq!(decode_ioctl(0x5401), IoctlFields { dir: Direction::None, ty: 0x54, nr: 1, size: 0 });
        }
    }

    mod e2_2 {
        use super::super::*;

        fn field(size: usize, align: usize) -> FieldLayout {
            FieldLayout { name: "", offset: 0, size, align }
        }

        #[test]
        fn fields_are_aligned_and_the_size_rounded() {
            let mut offsets = [0; 3];
            let size = c_layout(&[field(1, 1), field(8, 8), field(4, 4)], &mut offsets);
            assert_eq!((offsets, size), ([0, 8, 16], 24));
            let size = c_layout(&[field(2, 2), field(1, 1), field(4, 4)], &mut offsets);
            assert_eq!((offsets, size), ([0, 2, 4], 8));
            assert_eq!(c_layout(&[], &mut []), 0);
        }

        #[test]
        fn the_c_rules_reproduce_every_abi_struct() {
            for layout in LAYOUTS {
                let mut offsets = [usize::MAX; 32];
                let size = c_layout(layout.fields, &mut offsets);
                assert_eq!(size, layout.size, "sizeof(struct {})", layout.c_name);
                for (f, offset) in layout.fields.iter().zip(offsets) {
                    assert_eq!(offset, f.offset, "{}.{}", layout.c_name, f.name);
                }
            }
        }
    }
}
