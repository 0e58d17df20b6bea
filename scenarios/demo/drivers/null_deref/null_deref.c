// SPDX-License-Identifier: GPL-2.0
/*
 * null_deref: a driver that dereferences NULL in its init. With the demo guest's
 * oops=panic the boot crashes at insmod, and every later boot too (a boot loop until
 * the driver is removed, e.g. from a safe-mode boot). The fault happens in a noinline
 * function so that crash reports name it:
 *   BUG: kernel NULL pointer dereference, address: 0000000000000000 ...
 *   RIP: 0010:null_deref_trigger+...
 */
#define pr_fmt(fmt) "null_deref: " fmt

#include <linux/compiler.h>
#include <linux/module.h>

struct null_deref_dev {
	int status;
};

/* The pointer goes through a variable the compiler cannot see through. */
static struct null_deref_dev *null_deref_dev;

static noinline int null_deref_trigger(struct null_deref_dev *dev)
{
	return READ_ONCE(dev->status);
}

static int __init null_deref_init(void)
{
	pr_info("reading status through a NULL device pointer\n");
	return null_deref_trigger(READ_ONCE(null_deref_dev));
}

static void __exit null_deref_exit(void)
{
}

module_init(null_deref_init);
module_exit(null_deref_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("bootgate demo: a driver that dereferences NULL in init");
