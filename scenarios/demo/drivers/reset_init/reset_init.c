// SPDX-License-Identifier: GPL-2.0
/*
 * reset_init: a driver that resets the machine from its init, without a panic. No
 * oops, no panic notifier, so no pvpanic event: the host sees only the guest's own
 * reset (QMP RESET with reason "guest-reset"), as it does for a Windows boot-start
 * driver that crashes in DriverEntry before the pvpanic driver (demand-start PnP) has
 * loaded, or for a triple fault. Installed to load at boot, every boot resets before
 * ready: a boot loop that only the reset reveals.
 *
 * emergency_restart() (kernel/reboot.c, exported GPL-only) goes straight to
 * machine_emergency_restart(): no reboot notifiers, no device shutdown, no sync.
 */
#define pr_fmt(fmt) "reset_init: " fmt

#include <linux/module.h>
#include <linux/reboot.h>

static int __init reset_init_init(void)
{
	pr_info("resetting the machine from init, without a panic\n");
	emergency_restart();
	/* Not reached: the machine is gone. */
	return 0;
}

module_init(reset_init_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("bootgate demo: a driver that resets the machine in init");
