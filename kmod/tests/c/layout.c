//@ stage 2
/*
 * Prints what gcc knows about the 2.6.20 KVM interface, one fact a line:
 *
 *	struct NAME SIZE ALIGN
 *	field STRUCT.FIELD OFFSET SIZE ALIGN
 *	ioctl NAME NUMBER
 *	const NAME VALUE
 *
 * Field names are Rust's: where Rust renames a C field, the C name is the
 * third argument of FIELD_AS. Members of kvm_run's anonymous union are
 * structs named "kvm_run.hw", "kvm_run.io" and so on, with offsets counted
 * from the member's start.
 */
#include <stddef.h>
#include <stdio.h>

#include "kvm-2.6.20.h"

// ANCHOR: macros
#define MEMBER(s, m) (((struct s *)0)->m)
#define ALIGN_OF(expr) _Alignof(__typeof__(expr))

#define STRUCT(s) \
	printf("struct %s %zu %zu\n", #s, sizeof(struct s), _Alignof(struct s))

#define FIELD_AS(s, rust, c) \
	printf("field %s.%s %zu %zu %zu\n", #s, #rust, offsetof(struct s, c), \
	       sizeof(MEMBER(s, c)), ALIGN_OF(MEMBER(s, c)))

#define FIELD(s, f) FIELD_AS(s, f, f)
// ANCHOR_END: macros

/* A member of kvm_run's anonymous union, seen as a struct of its own. */
#define RUN_MEMBER(m) \
	printf("struct kvm_run.%s %zu %zu\n", #m, sizeof(MEMBER(kvm_run, m)), \
	       ALIGN_OF(MEMBER(kvm_run, m)))

#define RUN_FIELD_AS(m, rust, c) \
	printf("field kvm_run.%s.%s %zu %zu %zu\n", #m, #rust, \
	       offsetof(struct kvm_run, m.c) - offsetof(struct kvm_run, m), \
	       sizeof(MEMBER(kvm_run, m.c)), ALIGN_OF(MEMBER(kvm_run, m.c)))

#define RUN_FIELD(m, f) RUN_FIELD_AS(m, f, f)

#define IOCTL(name) printf("ioctl %s %lu\n", #name, (unsigned long)(name))
#define CONST(name) printf("const %s %lu\n", #name, (unsigned long)(name))

/* io.address and io.value share their bytes; Rust keeps one field for both. */
_Static_assert(offsetof(struct kvm_run, io.value) == offsetof(struct kvm_run, io.address),
	       "io.value overlays io.address");
/* The anonymous union is kvm_run's last member; Rust calls it `exit`. */
_Static_assert(offsetof(struct kvm_run, hw) + sizeof(MEMBER(kvm_run, io)) == sizeof(struct kvm_run),
	       "the exit union ends kvm_run");

static void memory_region(void)
{
	STRUCT(kvm_memory_region);
	FIELD(kvm_memory_region, slot);
	FIELD(kvm_memory_region, flags);
	FIELD(kvm_memory_region, guest_phys_addr);
	FIELD(kvm_memory_region, memory_size);
}

static void run(void)
{
	STRUCT(kvm_run);
	FIELD(kvm_run, vcpu);
	FIELD(kvm_run, emulated);
	FIELD(kvm_run, mmio_completed);
	FIELD(kvm_run, request_interrupt_window);
	FIELD(kvm_run, padding1);
	FIELD(kvm_run, exit_type);
	FIELD(kvm_run, exit_reason);
	FIELD(kvm_run, instruction_length);
	FIELD(kvm_run, ready_for_interrupt_injection);
	FIELD(kvm_run, if_flag);
	FIELD(kvm_run, padding2);
	FIELD(kvm_run, cr8);
	FIELD(kvm_run, apic_base);
	/* The anonymous union: its offset is any member's, its size the largest. */
	printf("field kvm_run.exit %zu %zu %zu\n", offsetof(struct kvm_run, hw),
	       sizeof(struct kvm_run) - offsetof(struct kvm_run, hw), ALIGN_OF(MEMBER(kvm_run, io)));
}

static void run_members(void)
{
	RUN_MEMBER(hw);
	RUN_FIELD(hw, hardware_exit_reason);

	RUN_MEMBER(ex);
	RUN_FIELD(ex, exception);
	RUN_FIELD(ex, error_code);

	RUN_MEMBER(io);
	RUN_FIELD(io, direction);
	RUN_FIELD(io, size);
	RUN_FIELD(io, string);
	RUN_FIELD(io, string_down);
	RUN_FIELD(io, rep);
	RUN_FIELD(io, pad);
	RUN_FIELD(io, port);
	RUN_FIELD(io, count);
	RUN_FIELD_AS(io, data, address);

	RUN_MEMBER(mmio);
	RUN_FIELD(mmio, phys_addr);
	RUN_FIELD(mmio, data);
	RUN_FIELD(mmio, len);
	RUN_FIELD(mmio, is_write);
}

static void regs(void)
{
	STRUCT(kvm_regs);
	FIELD(kvm_regs, vcpu);
	FIELD(kvm_regs, padding);
	FIELD(kvm_regs, rax);
	FIELD(kvm_regs, rbx);
	FIELD(kvm_regs, rcx);
	FIELD(kvm_regs, rdx);
	FIELD(kvm_regs, rsi);
	FIELD(kvm_regs, rdi);
	FIELD(kvm_regs, rsp);
	FIELD(kvm_regs, rbp);
	FIELD(kvm_regs, r8);
	FIELD(kvm_regs, r9);
	FIELD(kvm_regs, r10);
	FIELD(kvm_regs, r11);
	FIELD(kvm_regs, r12);
	FIELD(kvm_regs, r13);
	FIELD(kvm_regs, r14);
	FIELD(kvm_regs, r15);
	FIELD(kvm_regs, rip);
	FIELD(kvm_regs, rflags);
}

// ANCHOR: segment
static void segment_and_dtable(void)
{
	STRUCT(kvm_segment);
	FIELD(kvm_segment, base);
	FIELD(kvm_segment, limit);
	FIELD(kvm_segment, selector);
	FIELD_AS(kvm_segment, type_, type);
	FIELD(kvm_segment, present);
	FIELD(kvm_segment, dpl);
	FIELD(kvm_segment, db);
	FIELD(kvm_segment, s);
	FIELD(kvm_segment, l);
	FIELD(kvm_segment, g);
	FIELD(kvm_segment, avl);
	FIELD(kvm_segment, unusable);
	FIELD(kvm_segment, padding);

	STRUCT(kvm_dtable);
	FIELD(kvm_dtable, base);
	FIELD(kvm_dtable, limit);
	FIELD(kvm_dtable, padding);
}
// ANCHOR_END: segment

static void sregs(void)
{
	STRUCT(kvm_sregs);
	FIELD(kvm_sregs, vcpu);
	FIELD(kvm_sregs, padding);
	FIELD(kvm_sregs, cs);
	FIELD(kvm_sregs, ds);
	FIELD(kvm_sregs, es);
	FIELD(kvm_sregs, fs);
	FIELD(kvm_sregs, gs);
	FIELD(kvm_sregs, ss);
	FIELD(kvm_sregs, tr);
	FIELD(kvm_sregs, ldt);
	FIELD(kvm_sregs, gdt);
	FIELD(kvm_sregs, idt);
	FIELD(kvm_sregs, cr0);
	FIELD(kvm_sregs, cr2);
	FIELD(kvm_sregs, cr3);
	FIELD(kvm_sregs, cr4);
	FIELD(kvm_sregs, cr8);
	FIELD(kvm_sregs, efer);
	FIELD(kvm_sregs, apic_base);
	FIELD(kvm_sregs, interrupt_bitmap);
}

static void msrs(void)
{
	STRUCT(kvm_msr_entry);
	FIELD(kvm_msr_entry, index);
	FIELD(kvm_msr_entry, reserved);
	FIELD(kvm_msr_entry, data);

	STRUCT(kvm_msrs);
	FIELD(kvm_msrs, vcpu);
	FIELD(kvm_msrs, nmsrs);
	FIELD(kvm_msrs, entries);

	STRUCT(kvm_msr_list);
	FIELD(kvm_msr_list, nmsrs);
	FIELD(kvm_msr_list, indices);
}

static void translation_and_interrupt(void)
{
	STRUCT(kvm_translation);
	FIELD(kvm_translation, linear_address);
	FIELD(kvm_translation, vcpu);
	FIELD(kvm_translation, padding);
	FIELD(kvm_translation, physical_address);
	FIELD(kvm_translation, valid);
	FIELD(kvm_translation, writeable);
	FIELD(kvm_translation, usermode);

	STRUCT(kvm_interrupt);
	FIELD(kvm_interrupt, vcpu);
	FIELD(kvm_interrupt, irq);
}

static void debug_and_dirty_log(void)
{
	STRUCT(kvm_breakpoint);
	FIELD(kvm_breakpoint, enabled);
	FIELD(kvm_breakpoint, padding);
	FIELD(kvm_breakpoint, address);

	STRUCT(kvm_debug_guest);
	FIELD(kvm_debug_guest, vcpu);
	FIELD(kvm_debug_guest, enabled);
	FIELD(kvm_debug_guest, breakpoints);
	FIELD(kvm_debug_guest, singlestep);

	STRUCT(kvm_dirty_log);
	FIELD(kvm_dirty_log, slot);
	FIELD(kvm_dirty_log, padding);
	FIELD(kvm_dirty_log, dirty_bitmap);
}

static void ioctls(void)
{
	IOCTL(KVM_GET_API_VERSION);
	IOCTL(KVM_RUN);
	IOCTL(KVM_GET_REGS);
	IOCTL(KVM_SET_REGS);
	IOCTL(KVM_GET_SREGS);
	IOCTL(KVM_SET_SREGS);
	IOCTL(KVM_TRANSLATE);
	IOCTL(KVM_INTERRUPT);
	IOCTL(KVM_DEBUG_GUEST);
	IOCTL(KVM_SET_MEMORY_REGION);
	IOCTL(KVM_CREATE_VCPU);
	IOCTL(KVM_GET_DIRTY_LOG);
	IOCTL(KVM_GET_MSRS);
	IOCTL(KVM_SET_MSRS);
	IOCTL(KVM_GET_MSR_INDEX_LIST);
}

static void constants(void)
{
	CONST(KVMIO);
	CONST(KVM_API_VERSION);
	CONST(KVM_NR_INTERRUPTS);
	CONST(KVM_IRQ_BITMAP_SIZE_BYTES);
	printf("const KVM_IRQ_BITMAP_SIZE_U64 %zu\n", KVM_IRQ_BITMAP_SIZE(__u64));
	CONST(KVM_MEM_LOG_DIRTY_PAGES);
	CONST(KVM_EXIT_TYPE_FAIL_ENTRY);
	CONST(KVM_EXIT_TYPE_VM_EXIT);
	CONST(KVM_EXIT_UNKNOWN);
	CONST(KVM_EXIT_EXCEPTION);
	CONST(KVM_EXIT_IO);
	CONST(KVM_EXIT_CPUID);
	CONST(KVM_EXIT_DEBUG);
	CONST(KVM_EXIT_HLT);
	CONST(KVM_EXIT_MMIO);
	CONST(KVM_EXIT_IRQ_WINDOW_OPEN);
	CONST(KVM_EXIT_SHUTDOWN);
	CONST(KVM_EXIT_IO_IN);
	CONST(KVM_EXIT_IO_OUT);
}

int main(void)
{
	memory_region();
	run();
	run_members();
	regs();
	segment_and_dtable();
	sregs();
	msrs();
	translation_and_interrupt();
	debug_and_dirty_log();
	ioctls();
	constants();
	return 0;
}
