//@ stage 3
// SPDX-License-Identifier: GPL-2.0-only
/*
 * rkvm_glue.c - the kernel side of rkvm.ko.
 *
 * The Rust core (rkvm_core.o) cannot include kernel headers, so this file
 * owns every kernel interface it needs: module init and exit, the misc device
 * /dev/rkvm and its file operations, memory allocation, copies to and from
 * user space, debugfs and printk. Each function here is a thin, obvious
 * wrapper; every decision is made in Rust.
 */

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

MODULE_AUTHOR("rkvm");
MODULE_DESCRIPTION("rkvm: a kernel-based virtual machine monitor in Rust, after Linux 2.6.20's KVM");
MODULE_LICENSE("GPL");

/* ---- Entry points implemented in Rust (kmod/src/lib.rs) ---- */

int rkvm_core_init(void);
void rkvm_core_exit(void);
int rkvm_dev_open(void **private);
void rkvm_dev_release(void *private);
long rkvm_dev_ioctl(void *private, unsigned int cmd, unsigned long arg);

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

void rkvm_glue_kfree(void *ptr)
{
	kfree(ptr);
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

static const struct file_operations rkvm_fops = {
	.owner		= THIS_MODULE,
	.open		= rkvm_open,
	.release	= rkvm_release,
	.unlocked_ioctl	= rkvm_ioctl,
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
	return r;
}

static void __exit rkvm_exit(void)
{
	misc_deregister(&rkvm_dev);
	debugfs_remove_recursive(rkvm_debugfs_dir);
	rkvm_core_exit();
}

module_init(rkvm_init);
module_exit(rkvm_exit);
