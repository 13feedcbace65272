//@ stage 2
/*
 * The userspace interface of Linux 2.6.20's KVM (KVM_API_VERSION 2), written
 * out again for the layout oracle: tests/abi_layout.rs compiles layout.c
 * against this header and compares what gcc says with what rustc says.
 *
 * Only the declarations matter here; they follow include/linux/kvm.h of
 * 2.6.20 field for field. The _IO* macros come from the system's
 * <linux/ioctl.h>, so the ioctl numbers are computed by code rkvm did not
 * write.
 */
#ifndef RKVM_TEST_KVM_2_6_20_H
#define RKVM_TEST_KVM_2_6_20_H

#include <linux/ioctl.h>
#include <linux/types.h>

#ifndef __user
#define __user
#endif

#define KVM_API_VERSION 2

/* Interrupt vectors, and a bitmap with one bit for each. */
#define KVM_NR_INTERRUPTS 256
#define KVM_IRQ_BITMAP_SIZE_BYTES ((KVM_NR_INTERRUPTS + 7) / 8)
#define KVM_IRQ_BITMAP_SIZE(type) (KVM_IRQ_BITMAP_SIZE_BYTES / sizeof(type))

/* KVM_SET_MEMORY_REGION */
struct kvm_memory_region {
	__u32 slot;
	__u32 flags;
	__u64 guest_phys_addr;
	__u64 memory_size;
};

#define KVM_MEM_LOG_DIRTY_PAGES 1UL

#define KVM_EXIT_TYPE_FAIL_ENTRY 1
#define KVM_EXIT_TYPE_VM_EXIT 2

enum kvm_exit_reason {
	KVM_EXIT_UNKNOWN = 0,
	KVM_EXIT_EXCEPTION = 1,
	KVM_EXIT_IO = 2,
	KVM_EXIT_CPUID = 3,
	KVM_EXIT_DEBUG = 4,
	KVM_EXIT_HLT = 5,
	KVM_EXIT_MMIO = 6,
	KVM_EXIT_IRQ_WINDOW_OPEN = 7,
	KVM_EXIT_SHUTDOWN = 8,
};

#define KVM_EXIT_IO_IN 0
#define KVM_EXIT_IO_OUT 1

/* KVM_RUN */
struct kvm_run {
	/* set by userspace */
	__u32 vcpu;
	__u32 emulated;
	__u32 mmio_completed;
	__u8 request_interrupt_window;
	__u8 padding1[3];

	/* set by the kernel */
	__u32 exit_type;
	__u32 exit_reason;
	__u32 instruction_length;
	__u8 ready_for_interrupt_injection;
	__u8 if_flag;
	__u16 padding2;
	__u64 cr8;
	__u64 apic_base;

	union {
		struct {
			__u32 hardware_exit_reason;
		} hw;
		struct {
			__u32 exception;
			__u32 error_code;
		} ex;
		struct {
			__u8 direction;
			__u8 size;
			__u8 string;
			__u8 string_down;
			__u8 rep;
			__u8 pad;
			__u16 port;
			__u64 count;
			union {
				__u64 address;
				__u32 value;
			};
		} io;
		struct {
		} debug;
		struct {
			__u64 phys_addr;
			__u8 data[8];
			__u32 len;
			__u8 is_write;
		} mmio;
	};
};

/* KVM_GET_REGS, KVM_SET_REGS */
struct kvm_regs {
	__u32 vcpu;
	__u32 padding;
	__u64 rax, rbx, rcx, rdx;
	__u64 rsi, rdi, rsp, rbp;
	__u64 r8, r9, r10, r11;
	__u64 r12, r13, r14, r15;
	__u64 rip, rflags;
};

struct kvm_segment {
	__u64 base;
	__u32 limit;
	__u16 selector;
	__u8 type;
	__u8 present, dpl, db, s, l, g, avl;
	__u8 unusable;
	__u8 padding;
};

struct kvm_dtable {
	__u64 base;
	__u16 limit;
	__u16 padding[3];
};

/* KVM_GET_SREGS, KVM_SET_SREGS */
struct kvm_sregs {
	__u32 vcpu;
	__u32 padding;
	struct kvm_segment cs, ds, es, fs, gs, ss;
	struct kvm_segment tr, ldt;
	struct kvm_dtable gdt, idt;
	__u64 cr0, cr2, cr3, cr4, cr8;
	__u64 efer;
	__u64 apic_base;
	__u64 interrupt_bitmap[KVM_IRQ_BITMAP_SIZE(__u64)];
};

struct kvm_msr_entry {
	__u32 index;
	__u32 reserved;
	__u64 data;
};

/* KVM_GET_MSRS, KVM_SET_MSRS */
struct kvm_msrs {
	__u32 vcpu;
	__u32 nmsrs;
	struct kvm_msr_entry entries[0];
};

/* KVM_GET_MSR_INDEX_LIST */
struct kvm_msr_list {
	__u32 nmsrs;
	__u32 indices[0];
};

/* KVM_TRANSLATE */
struct kvm_translation {
	__u64 linear_address;
	__u32 vcpu;
	__u32 padding;
	__u64 physical_address;
	__u8 valid;
	__u8 writeable;
	__u8 usermode;
};

/* KVM_INTERRUPT */
struct kvm_interrupt {
	__u32 vcpu;
	__u32 irq;
};

struct kvm_breakpoint {
	__u32 enabled;
	__u32 padding;
	__u64 address;
};

/* KVM_DEBUG_GUEST */
struct kvm_debug_guest {
	__u32 vcpu;
	__u32 enabled;
	struct kvm_breakpoint breakpoints[4];
	__u32 singlestep;
};

/* ANCHOR: kvm_dirty_log */
/*
 * KVM_GET_DIRTY_LOG. In 2.6.20 the union's second member is also named
 * `padding`, which clashes with the struct's own `padding`; gcc of 2006
 * accepted that, today's rejects it. Later kernels renamed it; so do we.
 */
struct kvm_dirty_log {
	__u32 slot;
	__u32 padding;
	union {
		void __user *dirty_bitmap;
		__u64 padding2;
	};
};
/* ANCHOR_END: kvm_dirty_log */

#define KVMIO 0xAE

#define KVM_GET_API_VERSION _IO(KVMIO, 1)
#define KVM_RUN _IOWR(KVMIO, 2, struct kvm_run)
#define KVM_GET_REGS _IOWR(KVMIO, 3, struct kvm_regs)
#define KVM_SET_REGS _IOW(KVMIO, 4, struct kvm_regs)
#define KVM_GET_SREGS _IOWR(KVMIO, 5, struct kvm_sregs)
#define KVM_SET_SREGS _IOW(KVMIO, 6, struct kvm_sregs)
#define KVM_TRANSLATE _IOWR(KVMIO, 7, struct kvm_translation)
#define KVM_INTERRUPT _IOW(KVMIO, 8, struct kvm_interrupt)
#define KVM_DEBUG_GUEST _IOW(KVMIO, 9, struct kvm_debug_guest)
#define KVM_SET_MEMORY_REGION _IOW(KVMIO, 10, struct kvm_memory_region)
#define KVM_CREATE_VCPU _IOW(KVMIO, 11, int)
#define KVM_GET_DIRTY_LOG _IOW(KVMIO, 12, struct kvm_dirty_log)
#define KVM_GET_MSRS _IOWR(KVMIO, 13, struct kvm_msrs)
#define KVM_SET_MSRS _IOWR(KVMIO, 14, struct kvm_msrs)
#define KVM_GET_MSR_INDEX_LIST _IOWR(KVMIO, 15, struct kvm_msr_list)

#endif
