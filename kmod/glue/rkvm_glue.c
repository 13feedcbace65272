//@ stage 3
// SPDX-License-Identifier: GPL-2.0-only
/*
 * rkvm_glue.c - the kernel side of rkvm.ko.
 *
 * The Rust core (rkvm_core.o) cannot include kernel headers, so this file
 * owns every kernel interface it needs: module init and exit, the misc device
 * /dev/rkvm and its file operations (mmap's fault handler among them),
 * memory and page allocation, mutexes, copies to and from user space,
 * debugfs and printk. Each function here is a thin, obvious wrapper; every
 * decision is made in Rust.
 */

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
//@ begin 5
#include <asm/fpu/api.h>
#include <asm/fpu/types.h>
//@ end
//@ begin 4
#include <linux/cpumask.h>
#include <linux/smp.h>
#include <linux/io.h>
#include <asm/tlbflush.h>
//@ end
//@ begin 5
#include <asm/cpu_entry_area.h>
#include <asm/desc.h>
#include <asm/msr.h>
#include <asm/segment.h>
#include <asm/special_insns.h>
#include <asm/tsc.h>
//@ end
//@ begin 13
#include <linux/cpuhotplug.h>
#include <linux/reboot.h>
#include <linux/stop_machine.h>
#include <asm/mce.h>
//@ end

MODULE_AUTHOR("rkvm");
MODULE_DESCRIPTION("rkvm: a kernel-based virtual machine monitor in Rust, after Linux 2.6.20's KVM");
MODULE_LICENSE("GPL");

/* ---- Entry points implemented in Rust (kmod/src/lib.rs) ---- */

int rkvm_core_init(void);
void rkvm_core_exit(void);
int rkvm_dev_open(void **private);
void rkvm_dev_release(void *private);
long rkvm_dev_ioctl(void *private, unsigned int cmd, unsigned long arg);
struct page *rkvm_dev_fault(void *private, unsigned long pgoff);
//@ begin 13
int rkvm_cpu_online(unsigned int cpu);
int rkvm_cpu_offline(unsigned int cpu);
void rkvm_core_reboot(void);
//@ end

/* One debugfs counter, as laid out by kmod/src/stats.rs. */
struct rkvm_stat {
	const char *name;
	u64 *value;
};
const struct rkvm_stat *rkvm_stats(size_t *count);

/* ---- Services the Rust core calls (kmod/src/kernel.rs) ---- */

void rkvm_glue_log(int level, const char *msg, size_t len)
{
	switch (level) {
	case 3:
		pr_err("rkvm: %.*s\n", (int)len, msg);
		break;
	case 4:
		pr_warn("rkvm: %.*s\n", (int)len, msg);
		break;
	case 7:
		pr_debug("rkvm: %.*s\n", (int)len, msg);
		break;
	default:
		pr_info("rkvm: %.*s\n", (int)len, msg);
		break;
	}
}

/* A Rust panic is a bug in rkvm: log it and oops the calling task. */
void rkvm_glue_panic(const char *msg, size_t len)
{
	pr_emerg("rkvm: Rust panic: %.*s\n", (int)len, msg);
	BUG();
}

void *rkvm_glue_kmalloc(size_t size)
{
	return kmalloc(size, GFP_KERNEL_ACCOUNT);
}

void *rkvm_glue_krealloc(void *ptr, size_t size)
{
	return krealloc(ptr, size, GFP_KERNEL_ACCOUNT);
}

/*
 * For blocks larger than a page: kmalloc if contiguous memory is at hand,
 * else vmalloc. Their sizes come from userspace (a slot's page array), so
 * a failure is reported as NULL (ENOMEM), without a warning in the log.
 */
void *rkvm_glue_kvmalloc(size_t size)
{
	return kvmalloc(size, GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
}

/* Frees blocks from kmalloc, krealloc and kvmalloc alike. */
void rkvm_glue_kvfree(void *ptr)
{
	kvfree(ptr);
}

// ANCHOR: alloc_page
/*
 * One zeroed page of guest memory, charged to the caller's memory cgroup.
 * __GFP_RETRY_MAYFAIL: userspace chooses how many pages a VM gets, so when
 * memory runs out the allocation fails (ENOMEM, rolled back by Rust)
 * instead of invoking the OOM killer; __GFP_NOWARN keeps that expected
 * failure out of the kernel log. x86-64 has no highmem: every page has a
 * kernel address.
 */
struct page *rkvm_glue_alloc_page(void **addr)
{
	struct page *page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO |
				       __GFP_RETRY_MAYFAIL | __GFP_NOWARN);

	if (page)
		*addr = page_address(page);
	return page;
}

//@ begin 5
/*
 * The same, below 4 GiB physical: for the PAE page-directory-pointer
 * table that a guest's CR3 points to while it runs in 32-bit mode.
 */
struct page *rkvm_glue_alloc_page_below_4g(void **addr)
{
	struct page *page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_DMA32 |
				       __GFP_RETRY_MAYFAIL | __GFP_NOWARN);

	if (page)
		*addr = page_address(page);
	return page;
}

/* The physical address of a page, for the processor's page tables. */
u64 rkvm_glue_page_phys(struct page *page)
{
	return (u64)page_to_pfn(page) << PAGE_SHIFT;
}

/*
 * The guest's FPU around an entry (kmod/src/kernel/fpu.rs): the host
 * task's user state is saved by kernel_fpu_begin() and restored on its
 * return to user mode; the guest's lives in a 512-byte fxsave image.
 */
void rkvm_glue_fpu_enter(void *image)
{
	kernel_fpu_begin();
	asm volatile("fxrstorq %0" : : "m" (*(struct fxregs_state *)image));
}

void rkvm_glue_fpu_exit(void *image)
{
	asm volatile("fxsaveq %0" : "=m" (*(struct fxregs_state *)image));
	kernel_fpu_end();
}
//@ end

//@ begin 7
/*
 * 2^order physically contiguous zeroed pages (kmod/src/kernel/contig.rs),
 * for SVM's I/O and MSR permission maps.
 */
struct page *rkvm_glue_alloc_pages(unsigned int order, void **addr)
{
	struct page *page = alloc_pages(GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_NOWARN, order);

	if (page)
		*addr = page_address(page);
	return page;
}

void rkvm_glue_free_pages(struct page *page, unsigned int order)
{
	__free_pages(page, order);
}
//@ end

void rkvm_glue_get_page(struct page *page)
{
	get_page(page);
}

/* Drops one reference; the page is freed with the last one. */
void rkvm_glue_put_page(struct page *page)
{
	put_page(page);
}
// ANCHOR_END: alloc_page

/* MemAvailable, in pages. */
unsigned long rkvm_glue_available_pages(void)
{
	long pages = si_mem_available();

	return pages > 0 ? pages : 0;
}

/* Whether the current task is being killed: SIGKILL, or the OOM killer. */
int rkvm_glue_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

/* Lets the scheduler run another task, on kernels without preemption too. */
void rkvm_glue_cond_resched(void)
{
	cond_resched();
}

/*
 * Mutexes live in their own allocation so that Rust can move the handle
 * freely: a struct mutex must not move once initialized. Each lock class
 * (kmod/src/kernel.rs: LockClass) has its own lockdep key, so that lockdep
 * checks the order "vCPU lock, then memory lock".
 */
static struct lock_class_key rkvm_lock_keys[2];
static const char *const rkvm_lock_names[2] = { "rkvm_memory", "rkvm_vcpu" };

struct mutex *rkvm_glue_mutex_alloc(int class)
{
	struct mutex *m;

	if (class < 0 || class >= ARRAY_SIZE(rkvm_lock_names))
		return NULL;
	m = kmalloc(sizeof(*m), GFP_KERNEL_ACCOUNT);
	if (m)
		__mutex_init(m, rkvm_lock_names[class], &rkvm_lock_keys[class]);
	return m;
}

void rkvm_glue_mutex_free(struct mutex *m)
{
	mutex_destroy(m);
	kfree(m);
}

void rkvm_glue_mutex_lock(struct mutex *m)
{
	mutex_lock(m);
}

/* 0 with the lock held, or -EINTR if the task was killed while it waited. */
int rkvm_glue_mutex_lock_killable(struct mutex *m)
{
	return mutex_lock_killable(m);
}

void rkvm_glue_mutex_unlock(struct mutex *m)
{
	mutex_unlock(m);
}

/* Both return the number of bytes NOT copied: 0 on success. */
unsigned long rkvm_glue_copy_from_user(void *dst, unsigned long src, size_t len)
{
	return copy_from_user(dst, (const void __user *)src, len);
}

unsigned long rkvm_glue_copy_to_user(unsigned long dst, const void *src, size_t len)
{
	return copy_to_user((void __user *)dst, src, len);
}

//@ begin 4
/* ---- Processors (kmod/src/kernel/cpu.rs) ---- */

/* Runs fn(arg) on every online CPU, this one included, and waits. */
void rkvm_glue_on_each_cpu(smp_call_func_t fn, void *arg)
{
	on_each_cpu(fn, arg, 1);
}

/* Runs fn(arg) on one CPU and waits; nonzero if it is not online. */
int rkvm_glue_on_cpu(unsigned long cpu, smp_call_func_t fn, void *arg)
{
	if (cpu >= nr_cpu_ids)
		return -EINVAL;
	return smp_call_function_single(cpu, fn, arg, 1);
}

unsigned long rkvm_glue_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

unsigned long rkvm_glue_num_online_cpus(void)
{
	return num_online_cpus();
}

/* The caller is pinned (interrupt context, or preemption disabled). */
unsigned long rkvm_glue_current_cpu(void)
{
	return raw_smp_processor_id();
}

/*
 * Linux keeps a per-CPU copy of CR4 and rewrites CR4 from it, so CR4.VMXE
 * is changed through that copy, as Linux's own KVM does.
 */
void rkvm_glue_cr4_set_bits(unsigned long mask)
{
	cr4_set_bits(mask);
}

void rkvm_glue_cr4_clear_bits(unsigned long mask)
{
	cr4_clear_bits(mask);
}

unsigned long rkvm_glue_read_cr4(void)
{
	return __read_cr4();
}

unsigned long rkvm_glue_virt_to_phys(void *addr)
{
	return __pa(addr);
}

void rkvm_glue_preempt_disable(void)
{
	preempt_disable();
}

void rkvm_glue_preempt_enable(void)
{
	preempt_enable();
}

int rkvm_glue_signal_pending(void)
{
	return signal_pending(current);
}

int rkvm_glue_need_resched(void)
{
	return need_resched();
}
//@ end

//@ begin 5
/* ---- Around a VM entry (kmod/src/kernel/cpu.rs, stage 05) ---- */

void rkvm_glue_irq_disable(void)
{
	local_irq_disable();
}

void rkvm_glue_irq_enable(void)
{
	local_irq_enable();
}

/* The address of this CPU's TSS, for the VMCS's host TR base. */
unsigned long rkvm_glue_host_tr_base(void)
{
	return (unsigned long)&get_cpu_entry_area(raw_smp_processor_id())->tss.x86_tss;
}

//@ begin 9
/*
 * The shadow MMU each new VM gets: the page cache of 2.6.20-rc4 (1, the
 * default) or the naive MMU of rc1 (0), kept so that the two can be
 * compared on the same guest in the same boot. Writable at run time in
 * /sys/module/rkvm/parameters/shadow_cache; a VM keeps what it started
 * with.
 */
static bool shadow_cache = true;
module_param(shadow_cache, bool, 0644);
MODULE_PARM_DESC(shadow_cache, "cache shadow page tables across CR3 loads (1) or rebuild them at each (0)");

bool rkvm_glue_shadow_cache(void)
{
	return READ_ONCE(shadow_cache);
}
//@ end

/* The time-stamp counter's rate, in kHz. */
unsigned long rkvm_glue_tsc_khz(void)
{
	return tsc_khz;
}

/*
 * What a VM exit does not restore, as Linux's KVM handles it: the segment
 * selectors userspace may use (the exit loads the VMCS's host selectors,
 * which must be kernel ones), the LDT (the exit clears LDTR), the GDT
 * limit (set to 0xffff) and the TSS limit (set to 0x67).
 */
struct rkvm_host_segments {
	u16 ds, es, fs, gs, ldt;
	unsigned long kernel_gs_base;
};

void rkvm_glue_save_host_segments(struct rkvm_host_segments *h)
{
	savesegment(ds, h->ds);
	savesegment(es, h->es);
	savesegment(fs, h->fs);
	savesegment(gs, h->gs);
	asm volatile("sldt %0" : "=r"(h->ldt));
	rdmsrl(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
}

void rkvm_glue_restore_host_segments(const struct rkvm_host_segments *h)
{
	if (h->ldt || (h->gs & 7)) {
		if (h->ldt)
			asm volatile("lldt %0" : : "r"(h->ldt));
		load_gs_index(h->gs);
		wrmsrl(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
	}
	if (h->fs & 7) {
		unsigned long base;

		rdmsrl(MSR_FS_BASE, base);
		loadsegment(fs, h->fs);
		wrmsrl(MSR_FS_BASE, base);
	}
	if (h->ds)
		loadsegment(ds, h->ds);
	if (h->es)
		loadsegment(es, h->es);
	load_fixmap_gdt(raw_smp_processor_id());
	invalidate_tss_limit();
}
//@ end

/* ---- /dev/rkvm ---- */

static int rkvm_open(struct inode *inode, struct file *file)
{
	void *vm = NULL;
	int r = rkvm_dev_open(&vm);

	if (r)
		return r;
	file->private_data = vm;
	return 0;
}

static int rkvm_release(struct inode *inode, struct file *file)
{
	rkvm_dev_release(file->private_data);
	file->private_data = NULL;
	return 0;
}

static long rkvm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return rkvm_dev_ioctl(file->private_data, cmd, arg);
}

// ANCHOR: mmap
/*
 * Guest memory in a process: a mapping of /dev/rkvm at file offset F shows
 * guest-physical address F. Pages are found on first touch, as 2006's
 * nopage handler did: Rust looks the page up under the VM's memory lock and
 * takes a reference for the page table (the mapping holds the file, so the
 * VM outlives every fault). Returning the page unlocked, without
 * VM_FAULT_LOCKED, lets the core lock it. An offset that no slot backs, now
 * or after a slot shrank, is SIGBUS.
 */
static vm_fault_t rkvm_vm_fault(struct vm_fault *vmf)
{
	struct page *page = rkvm_dev_fault(vmf->vma->vm_file->private_data, vmf->pgoff);

	if (!page)
		return VM_FAULT_SIGBUS;
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct rkvm_vm_ops = {
	.fault = rkvm_vm_fault,
};

/*
 * Any offset and length may be mapped, as in 2006: 2006's QEMU mapped all
 * of guest RAM in one piece, holes included. Whether a page exists is
 * decided at each fault.
 */
static int rkvm_mmap(struct file *file, struct vm_area_struct *vma)
{
	vma->vm_ops = &rkvm_vm_ops;
	/*
	 * Guest memory stays out of the process's core dumps: a crashing VMM
	 * must not write gigabytes of a guest (and its secrets) to disk.
	 * Linux's KVM marks its guest memory the same way (QEMU asks with
	 * madvise(MADV_DONTDUMP)).
	 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, VM_DONTDUMP);
#else
	vma->vm_flags |= VM_DONTDUMP;
#endif
	return 0;
}
// ANCHOR_END: mmap

static const struct file_operations rkvm_fops = {
	.owner		= THIS_MODULE,
	.open		= rkvm_open,
	.release	= rkvm_release,
	.unlocked_ioctl	= rkvm_ioctl,
	.mmap		= rkvm_mmap,
	.llseek		= noop_llseek,
};

/*
 * Permissions: 0660, owned by root. As in 2006 ("standard security model:
 * permissions on /dev/kvm"), who may run VMs is decided by the device
 * node's owner, group and mode; a distribution gives the group to a
 * `kvm` group with a udev rule (see the README).
 */
static struct miscdevice rkvm_dev = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "rkvm",
	.fops	= &rkvm_fops,
	.mode	= 0660,
};

/* ---- debugfs: /sys/kernel/debug/rkvm/ ---- */

static struct dentry *rkvm_debugfs_dir;

static void rkvm_debugfs_init(void)
{
	const struct rkvm_stat *stats;
	size_t i, count = 0;

	rkvm_debugfs_dir = debugfs_create_dir("rkvm", NULL);
	stats = rkvm_stats(&count);
	for (i = 0; i < count; i++)
		debugfs_create_u64(stats[i].name, 0444, rkvm_debugfs_dir, stats[i].value);
}

//@ begin 5
/*
 * One VM's counters (kmod/src/stats.rs: VmStats), in rkvm/PID-N/ while the
 * VM lives. Returns the directory, or NULL if debugfs has none to give;
 * the counters must outlive it. Removal waits for readers of its files.
 */
void *rkvm_glue_vm_debugfs(const struct rkvm_stat *stats, size_t count)
{
	static atomic_t serial = ATOMIC_INIT(0);
	struct dentry *dir;
	char name[32];
	size_t i;

	if (IS_ERR_OR_NULL(rkvm_debugfs_dir))
		return NULL;
	snprintf(name, sizeof(name), "%d-%d", task_pid_nr(current), atomic_inc_return(&serial));
	dir = debugfs_create_dir(name, rkvm_debugfs_dir);
	if (IS_ERR_OR_NULL(dir))
		return NULL;
	for (i = 0; i < count; i++)
		debugfs_create_u64(stats[i].name, 0444, dir, stats[i].value);
	return dir;
}

void rkvm_glue_vm_debugfs_remove(void *dir)
{
	debugfs_remove_recursive(dir);
}
//@ end

//@ begin 13
/* ---- CPU hotplug, reboot, machine checks (kmod/src/hardware.rs) ---- */

/*
 * A dynamic CPU-hotplug state in the AP_ONLINE range: the online callback
 * runs on each CPU that comes online, the teardown on each CPU going
 * offline (and, at removal, on every CPU online then), each time on that
 * CPU, in its hotplug thread. The scheduler takes a CPU (CPUHP_AP_ACTIVE) only after the
 * online callback, and gives it up before the teardown, so no vCPU runs
 * there without virtualization on.
 */
static int rkvm_cpuhp_state = -1;

static int rkvm_cpuhp_online(unsigned int cpu)
{
	return rkvm_cpu_online(cpu);
}

static int rkvm_cpuhp_offline(unsigned int cpu)
{
	return rkvm_cpu_offline(cpu);
}

/* Holds CPUs where they are (online or not) while the module turns them on. */
void rkvm_glue_hotplug_lock(void)
{
	cpus_read_lock();
}

void rkvm_glue_hotplug_unlock(void)
{
	cpus_read_unlock();
}

/*
 * Registers the state, under rkvm_glue_hotplug_lock, once every online
 * CPU is on: no callback runs now, only for CPUs that come and go later.
 */
int rkvm_glue_hotplug_register(void)
{
	int r = cpuhp_setup_state_nocalls_cpuslocked(CPUHP_AP_ONLINE_DYN, "rkvm:online",
						     rkvm_cpuhp_online, rkvm_cpuhp_offline);

	if (r < 0)
		return r;
	rkvm_cpuhp_state = r;
	return 0;
}

/* Removes it; the teardown runs on every online CPU first. */
void rkvm_glue_hotplug_unregister(void)
{
	if (rkvm_cpuhp_state >= 0)
		cpuhp_remove_state(rkvm_cpuhp_state);
	rkvm_cpuhp_state = -1;
}

/*
 * Runs fn(arg) on every online CPU at once, interrupts off, while no
 * other task runs anywhere (stop_machine): in particular no vCPU between
 * its VMPTRLD and its exit.
 */
int rkvm_glue_stop_machine(int (*fn)(void *), void *arg)
{
	return stop_machine(fn, arg, cpu_online_mask);
}

/*
 * A machine check that a guest took, and the processor turned into an
 * exit, handed to the host's handler as if it had happened in user mode,
 * as Linux's KVM does (kvm_machine_check). Kernels without machine-check
 * support have no handler: nothing to do.
 */
void rkvm_glue_machine_check(void)
{
#ifdef CONFIG_X86_MCE
	struct pt_regs regs = {
		.cs = 3, /* as if in ring 3, whatever ring the guest ran in */
		.flags = X86_EFLAGS_IF,
	};

	do_machine_check(&regs);
#endif
}

/*
 * 2006's kvm_reboot: "Some (well, at least mine) BIOSes hang on reboot if
 * in vmx root mode." Before the machine halts, powers off or restarts,
 * every CPU leaves VMX or SVM.
 */
static int rkvm_reboot(struct notifier_block *nb, unsigned long code, void *unused)
{
	if (code == SYS_RESTART || code == SYS_HALT || code == SYS_POWER_OFF)
		rkvm_core_reboot();
	return NOTIFY_OK;
}

static struct notifier_block rkvm_reboot_notifier = {
	.notifier_call = rkvm_reboot,
	.priority = 0,
};
//@ end

/* ---- Module init and exit ---- */

static int __init rkvm_init(void)
{
	int r = rkvm_core_init();

	if (r)
		return r;
	rkvm_debugfs_init();
	r = misc_register(&rkvm_dev);
	if (r) {
		pr_err("rkvm: cannot register /dev/rkvm: %d\n", r);
		debugfs_remove_recursive(rkvm_debugfs_dir);
		rkvm_core_exit();
	}
	//@ begin 13
	if (!r)
		register_reboot_notifier(&rkvm_reboot_notifier);
	//@ end
	return r;
}

static void __exit rkvm_exit(void)
{
	//@ begin 13
	unregister_reboot_notifier(&rkvm_reboot_notifier);
	//@ end
	misc_deregister(&rkvm_dev);
	debugfs_remove_recursive(rkvm_debugfs_dir);
	rkvm_core_exit();
}

module_init(rkvm_init);
module_exit(rkvm_exit);
