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
//!
//! This file holds the constants and the machinery that checks layouts; the
//! header's parts are in `abi/`: `structs.rs` (every ioctl argument but one),
//! `run.rs` (`kvm_run`), `ioctl.rs` (the numbers) and `segment.rs` (between
//! `kvm_segment` and the descriptors of stage 01). All their items are
//! items of `abi`, as all declarations are part of `kvm.h`.

use core::mem::size_of;

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
/// valid value. The `check_layout!` macro below implements it only after
/// proving both.
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
            assert!(::core::mem::size_of::<$t>() == $size);
            $(assert!(::core::mem::offset_of!($t, $field) == $offset);)+
            $(assert!(::core::mem::offset_of!($t, $tail) == $tail_offset);)?
            // Every byte belongs to a field: nothing is padding.
            assert!(0 $(+ ::core::mem::size_of::<$fty>())+ $(+ ::core::mem::size_of::<$tail_ty>())? == $size);
            // Every field is plain old data itself.
            const fn is_pod<T: $crate::abi::Pod>() {}
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
        unsafe impl $crate::abi::Pod for $t {}
        impl $t {
            /// This struct's layout, as checked at compile time.
            pub const LAYOUT: $crate::abi::StructLayout = $crate::abi::StructLayout {
                c_name: $c_name,
                size: $size,
                align: ::core::mem::align_of::<$t>(),
                fields: &[$($crate::abi::FieldLayout {
                    name: stringify!($field),
                    offset: $offset,
                    size: ::core::mem::size_of::<$fty>(),
                    align: ::core::mem::align_of::<$fty>(),
                }),+],
            };
        }
    };
}
// ANCHOR_END: check_layout

mod ioctl;
mod run;
mod segment;
mod structs;

pub use ioctl::*;
pub use run::*;
pub use structs::*;

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
/// the C rules of the System V x86-64 psABI (3.1.2, "Aggregates and
/// Unions"). Writes each field's offset to `offsets` (as many as fit) and
/// returns the struct's size.
///
/// `#[repr(C)]` asks rustc for exactly this; the tests replay it on every
/// struct above.
pub fn c_layout(fields: &[FieldLayout], offsets: &mut [usize]) -> usize {
    //@ exercise E2.2
    //@ instruction: Lay the fields out as a C compiler for x86-64 Linux
    //@+ does. The rules are the System V x86-64 psABI's, 3.1.2 "Data
    //@+ Representation", under "Aggregates and Unions", and the chapter's
    //@+ section on `#[repr(C)]` restates them: they say what must hold, not
    //@+ how to compute it. Write each field's offset into `offsets` (as
    //@+ many as it has room for; it may be shorter than `fields`) and
    //@+ return the struct's size; an empty struct has size 0. The `e2_2`
    //@+ tests compare with rustc on every ABI struct and on random ones.
    //@ hint: Place the fields one by one, in order, remembering where the
    //@+ last one ended. "The lowest available offset with the appropriate
    //@+ alignment": available means not before that end, appropriate means
    //@+ a multiple of the field's alignment.
    //@ hint: `usize::next_multiple_of` rounds up. The struct's alignment is
    //@+ the largest of its fields' (1 with none), and its size is the end
    //@+ of the last field rounded up to it. `fields.iter().zip(...)` would
    //@+ stop at the shorter of the two; the size needs every field.
    //@ hint: For each field: `let offset = end.next_multiple_of(f.align);`,
    //@+ store it if `offsets` has a slot left (`slots.next()` on
    //@+ `offsets.iter_mut()`), `end = offset + f.size;`, `align =
    //@+ align.max(f.align);`. Return `end.next_multiple_of(align)`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
        fn offsets_may_have_room_for_fewer_fields() {
            let mut offsets = [usize::MAX; 1];
            let size = c_layout(&[field(2, 2), field(8, 8), field(1, 1)], &mut offsets);
            assert_eq!((offsets, size), ([0], 24));
        }

        /// C's rule, searched for rather than computed: each field at the
        /// first multiple of its alignment at or after the end of the one
        /// before; the size, the first multiple of every field's alignment
        /// at or after the end of the last.
        fn reference(fields: &[FieldLayout]) -> (Vec<usize>, usize) {
            let (mut offsets, mut end) = (Vec::new(), 0);
            for f in fields {
                let offset = (end..).find(|&o| o % f.align == 0).expect("an aligned offset");
                offsets.push(offset);
                end = offset + f.size;
            }
            let size = (end..).find(|&s| fields.iter().all(|f| s % f.align == 0)).expect("a size");
            (offsets, size)
        }

        #[test]
        fn random_structs_are_laid_out_as_c_lays_them_out() {
            let mut rng = crate::test_rng::Rng::new(0xE22);
            for _ in 0..2_000 {
                let n = rng.below(7) as usize;
                let fields: Vec<FieldLayout> = (0..n)
                    .map(|_| {
                        let align = 1 << rng.below(4);
                        field(align * rng.below(4) as usize, align)
                    })
                    .collect();
                let (expected, size) = reference(&fields);
                let mut offsets = [usize::MAX; 8];
                assert_eq!(c_layout(&fields, &mut offsets), size, "size of {fields:?}");
                assert_eq!(offsets[..n], expected[..], "offsets of {fields:?}");
            }
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
