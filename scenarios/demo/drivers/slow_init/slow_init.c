// SPDX-License-Identifier: GPL-2.0
/*
 * slow_init: a driver whose init takes delay_ms (default 15 s) before it returns.
 * The demo guest loads drivers one by one before it starts its agent, so this delays
 * the "bootgate: ready" line by about delay_ms: a boot-time regression that is not a
 * crash, for bootgate's boot-time gate. msleep() sleeps (no CPU use, no lockup).
 */
#define pr_fmt(fmt) "slow_init: " fmt

#include <linux/delay.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static unsigned int delay_ms = 15000;
module_param(delay_ms, uint, 0444);
MODULE_PARM_DESC(delay_ms, "how long init sleeps, in milliseconds");

static int __init slow_init_init(void)
{
	pr_info("sleeping %u ms in init\n", delay_ms);
	msleep(delay_ms);
	pr_info("init done\n");
	return 0;
}

static void __exit slow_init_exit(void)
{
}

module_init(slow_init_init);
module_exit(slow_init_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("bootgate demo: a driver with a slow init");
