// SPDX-License-Identifier: GPL-2.0
/*
 * hang_init: a driver whose init never returns and never schedules. insmod never
 * finishes, so the demo guest never starts its agent nor prints its ready line: a hang,
 * for bootgate's "no ready before the timeout" path. The guest has one CPU and the
 * kernel is not fully preemptible (PREEMPT_VOLUNTARY), so nothing else runs on it, yet
 * timer interrupts are still delivered. Measured under TCG: an RCU stall report about
 * 21 s into the spin, then "watchdog: BUG: soft lockup - CPU#0 stuck for 49s!
 * [insmod:PID]" about 49 s in (the RCU report touches the watchdog, which delays it past
 * its 20 s threshold), repeating every 28-32 s. softlockup_panic=0, so no panic: the
 * guest stays hung.
 */
#define pr_fmt(fmt) "hang_init: " fmt

#include <linux/module.h>
#include <asm/processor.h>

static int __init hang_init_init(void)
{
	pr_info("spinning forever in init\n");
	for (;;)
		cpu_relax();	/* a pause instruction: no scheduling point */
	return 0;
}

module_init(hang_init_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("bootgate demo: a driver whose init hangs");
