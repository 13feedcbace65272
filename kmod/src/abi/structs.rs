//@ stage 2
//! The arguments of every ioctl but `KVM_RUN`: memory regions, registers,
//! segments and descriptor tables, MSRs, translations, interrupts, debug
//! state and dirty logs.

use super::KVM_IRQ_BITMAP_SIZE_U64;

// ANCHOR: kvm_memory_region
/// `struct kvm_memory_region`, for `KVM_SET_MEMORY_REGION`: one slot of
/// guest-physical memory, which the kernel allocates and userspace maps by
/// `mmap` of the device at offset `guest_phys_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMemoryRegion {
    /// The slot number: 0 to 3 in 2006.
    pub slot: u32,
    /// [`KVM_MEM_LOG_DIRTY_PAGES`](super::KVM_MEM_LOG_DIRTY_PAGES) or 0.
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

impl KvmSregs {
    /// Whether vector `irq` is pending in [`KvmSregs::interrupt_bitmap`].
    pub fn interrupt_pending(&self, irq: u8) -> bool {
        let word = self.interrupt_bitmap.get(usize::from(irq / 64)).copied().unwrap_or(0);
        word & (1 << (irq % 64)) != 0
    }
}

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
    /// The vector, below [`KVM_NR_INTERRUPTS`](super::KVM_NR_INTERRUPTS).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::KVM_IRQ_BITMAP_SIZE_BYTES;

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
}
