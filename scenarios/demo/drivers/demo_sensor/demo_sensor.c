// SPDX-License-Identifier: GPL-2.0
/*
 * demo_sensor: a tiny content interpreter, bootgate's model of the July 2024
 * "Channel File 291" failure.
 *
 * A "sensor" supplies SENSOR_INPUTS (20) u32 input values. Content files (format:
 * scenarios/demo/content/FORMAT.md) declare templates (an id and a field count) and
 * instances (one criterion per template field). Interpreting the content matches every
 * instance's criteria against the inputs.
 *
 * The bug (fixed=0, the default): the matcher trusts the template's field count. A
 * template declaring 21 fields makes it read input[20], one past the end of the inputs.
 * The inputs sit at the very end of a vmalloc'd page, so that read lands in the vmalloc
 * guard page and faults every time ("BUG: unable to handle page fault ... RIP:
 * sensor_match_fields"), with oops=panic a panic: on a live update (write 1 to
 * /sys/module/demo_sensor/parameters/reload) and again at every boot, since the module
 * loads the same content from disk in its init (a boot loop).
 *
 * fixed=1 adds the one missing check (field count <= inputs) and rejects such content.
 * All other checks (lengths and counts against the file size) are in both variants, so
 * the two differ by exactly the bug.
 *
 * loop_guard=K: a boot-loop guard. Before interpreting content at boot the module
 * records "an unclean boot is in progress" in the state file (count + CRC-32 of the
 * content) and clears it once interpretation returns. A crash leaves the count raised;
 * once K boots in a row have crashed on the same content, later boots skip the content
 * until it changes (a different CRC-32 resets the count) or a live reload succeeds.
 *
 * boot_delay_ms=N: interpret the boot's content N ms after the module loads (from a
 * work item) instead of in init, the way a real sensor first processes content when
 * its event sources come up rather than at load. The guest's services (its agent)
 * then start before the crash, which leaves a window for a rollback through the
 * agent; that window is what the agent-rollback recovery drill measures.
 */
#define pr_fmt(fmt) "demo_sensor: " fmt

#include <linux/crc32.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/kernel_read_file.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <asm/unaligned.h>

#define SENSOR_INPUTS		20
#define SENSOR_INPUT_BASE	0x1000u		/* input[i] = SENSOR_INPUT_BASE + i */

#define DSC_MAGIC		"DSC1"
#define DSC_HEADER_LEN		12		/* magic, u32 total_length, u16 x2 counts */
#define DSC_TEMPLATE_LEN	4		/* u16 id, u16 field_count */
#define DSC_INSTANCE_HDR_LEN	4		/* u16 template_id, u16 reserved */
#define DSC_WILDCARD		0xFFFFFFFFu
#define DSC_MAX_SIZE		(64 * 1024)
#define DSC_MAX_TEMPLATES	64		/* format limits, checked in both variants */
#define DSC_MAX_INSTANCES	1024

static char *content = "/system/content/demo_sensor.content";
module_param(content, charp, 0444);
MODULE_PARM_DESC(content, "content file, read at load and on reload");

static bool fixed;
module_param(fixed, bool, 0444);
MODULE_PARM_DESC(fixed, "1: reject templates declaring more fields than the 20 inputs");

static int loop_guard;
module_param(loop_guard, int, 0444);
MODULE_PARM_DESC(loop_guard, "K>0: skip content after K unclean boots in a row (0: off)");

static int boot_delay_ms;
module_param(boot_delay_ms, int, 0444);
MODULE_PARM_DESC(boot_delay_ms, "N>0: interpret the boot's content N ms after load (0: in init)");

static char *state = "/system/var/demo_sensor.unclean";
module_param(state, charp, 0444);
MODULE_PARM_DESC(state, "boot-loop guard state file (\"COUNT CRC32\")");

struct dsc_template {
	u16 id;
	u16 field_count;
};

struct dsc_instance {
	u16 template_id;
	u16 field_count;		/* copied from the template */
	const __le32 *criteria;		/* points into dsc_content.buf */
};

struct dsc_content {
	void *buf;			/* the file, vmalloc'd by kernel_read_file */
	size_t size;
	unsigned int ntemplates, ninstances;
	struct dsc_template *templates;
	struct dsc_instance *instances;
};

static DEFINE_MUTEX(sensor_lock);	/* serialises loads (init vs reload writes) */
static struct dsc_content *loaded;	/* current content, NULL when none */
static unsigned int generation;		/* successful loads, shown by reading reload */
static void *inputs_page;
static u32 *inputs;			/* SENSOR_INPUTS values, end of inputs_page */

static void dsc_free(struct dsc_content *c)
{
	if (!c)
		return;
	vfree(c->buf);
	kfree(c->templates);
	kfree(c->instances);
	kfree(c);
}

#define reject(fmt, ...) \
	({ pr_info("content rejected: " fmt "\n", ##__VA_ARGS__); -EINVAL; })

/*
 * Validate the layout against the real file size and index it. Takes ownership of buf.
 * Identical in both variants except for the one `fixed` check.
 */
static int dsc_parse(void *buf, size_t size, struct dsc_content **out)
{
	const u8 *p = buf;
	struct dsc_content *c;
	size_t off, need;
	unsigned int i, j;
	u32 total;
	int ret;

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c) {
		vfree(buf);
		return -ENOMEM;
	}
	c->buf = buf;
	c->size = size;

	if (size < DSC_HEADER_LEN) {
		ret = reject("truncated header (%zu bytes)", size);
		goto err;
	}
	if (memcmp(p, DSC_MAGIC, 4)) {
		ret = reject("bad magic");
		goto err;
	}
	total = get_unaligned_le32(p + 4);
	if (total > size) {
		ret = reject("truncated: header claims %u bytes, file has %zu", total, size);
		goto err;
	}
	if (total < size) {
		ret = reject("length mismatch: header claims %u bytes, file has %zu", total, size);
		goto err;
	}
	c->ntemplates = get_unaligned_le16(p + 8);
	c->ninstances = get_unaligned_le16(p + 10);
	if (c->ntemplates > DSC_MAX_TEMPLATES || c->ninstances > DSC_MAX_INSTANCES) {
		ret = reject("too many templates/instances (%u/%u, limits %d/%d)",
			     c->ntemplates, c->ninstances, DSC_MAX_TEMPLATES, DSC_MAX_INSTANCES);
		goto err;
	}
	off = DSC_HEADER_LEN;
	need = (size_t)c->ntemplates * DSC_TEMPLATE_LEN;
	if (size - off < need) {
		ret = reject("truncated template table (%zu bytes at offset %zu, file has %zu)",
			     need, off, size);
		goto err;
	}

	c->templates = kcalloc(c->ntemplates, sizeof(*c->templates), GFP_KERNEL);
	c->instances = kcalloc(c->ninstances, sizeof(*c->instances), GFP_KERNEL);
	if ((c->ntemplates && !c->templates) || (c->ninstances && !c->instances)) {
		ret = -ENOMEM;
		goto err;
	}
	for (i = 0; i < c->ntemplates; i++, off += DSC_TEMPLATE_LEN) {
		struct dsc_template *t = &c->templates[i];

		t->id = get_unaligned_le16(p + off);
		t->field_count = get_unaligned_le16(p + off + 2);
		for (j = 0; j < i; j++) {
			if (c->templates[j].id == t->id) {
				ret = reject("duplicate template id %u", t->id);
				goto err;
			}
		}
		/* The check the July 2024 content interpreter lacked. */
		if (fixed && t->field_count > SENSOR_INPUTS) {
			ret = reject("template %u declares %u fields, sensor supplies %d",
				     t->id, t->field_count, SENSOR_INPUTS);
			goto err;
		}
	}

	for (i = 0; i < c->ninstances; i++) {
		struct dsc_instance *in = &c->instances[i];
		const struct dsc_template *t = NULL;

		if (size - off < DSC_INSTANCE_HDR_LEN) {
			ret = reject("truncated instance %u header at offset %zu, file has %zu",
				     i, off, size);
			goto err;
		}
		in->template_id = get_unaligned_le16(p + off);
		for (j = 0; j < c->ntemplates; j++)
			if (c->templates[j].id == in->template_id)
				t = &c->templates[j];
		if (!t) {
			ret = reject("instance %u references unknown template %u",
				     i, in->template_id);
			goto err;
		}
		off += DSC_INSTANCE_HDR_LEN;	/* reserved u16 ignored */
		in->field_count = t->field_count;
		need = (size_t)t->field_count * sizeof(__le32);
		if (size - off < need) {
			ret = reject("truncated instance %u (%zu bytes of criteria at offset %zu, file has %zu)",
				     i, need, off, size);
			goto err;
		}
		in->criteria = (const __le32 *)(p + off);
		off += need;
	}
	if (off != size) {
		ret = reject("%zu trailing bytes after the instance table", size - off);
		goto err;
	}
	*out = c;
	return 0;
err:
	dsc_free(c);
	return ret;
}

/*
 * Match one instance against the sensor inputs: true when every non-wildcard criterion
 * equals its input. Every field is evaluated (no early exit), so a non-wildcard 21st
 * criterion always reads in[20]. noinline so that crash reports name this function.
 */
static noinline bool sensor_match_fields(const __le32 *criteria, unsigned int nfields,
					 const u32 *in)
{
	bool match = true;
	unsigned int i;

	for (i = 0; i < nfields; i++) {
		u32 want = le32_to_cpu(criteria[i]);

		if (want == DSC_WILDCARD)
			continue;
		/* BUG when !fixed: nothing bounds i by SENSOR_INPUTS. */
		if (READ_ONCE(in[i]) != want)
			match = false;
	}
	return match;
}

/* Run the interpreter over every instance, as a content update or a boot does. */
static void dsc_evaluate(const struct dsc_content *c)
{
	unsigned int i;

	for (i = 0; i < c->ninstances; i++) {
		const struct dsc_instance *in = &c->instances[i];

		if (sensor_match_fields(in->criteria, in->field_count, inputs))
			pr_info("matched instance %u (template %u)\n", i, in->template_id);
	}
}

/* Read a content file into a vmalloc buffer. -ENOENT is logged by the caller. */
static int dsc_read(const char *path, void **buf, size_t *size)
{
	ssize_t n;

	*buf = NULL;
	n = kernel_read_file_from_path(path, 0, buf, DSC_MAX_SIZE, NULL, READING_UNKNOWN);
	if (n == -ENOENT)
		return -ENOENT;
	if (n == -EFBIG)
		return reject("larger than %d bytes", DSC_MAX_SIZE);
	if (n == -EINVAL)
		return reject("empty or not a regular file: %s", path);
	if (n < 0) {
		pr_info("cannot read %s (err %zd)\n", path, n);
		return n;
	}
	*size = n;
	return 0;
}

/* Validate, install (replacing the old content on success) and interpret. */
static int dsc_install(void *buf, size_t size, const char *path)
{
	struct dsc_content *c;
	int ret;

	ret = dsc_parse(buf, size, &c);
	if (ret)
		return ret;	/* the old content, if any, stays */
	dsc_free(loaded);
	loaded = c;
	generation++;
	pr_info("loaded %u templates, %u instances from %s\n",
		c->ntemplates, c->ninstances, path);
	dsc_evaluate(c);
	return 0;
}

/* ---- boot-loop guard: the state file holds "COUNT CRC32HEX\n" ---- */

static unsigned int guard_read(u32 crc)
{
	char line[64] = "";
	unsigned int n;
	struct file *f;
	loff_t pos = 0;
	u32 scrc;

	f = filp_open(state, O_RDONLY, 0);
	if (IS_ERR(f))
		return 0;	/* missing: no unclean boot recorded */
	kernel_read(f, line, sizeof(line) - 1, &pos);
	filp_close(f, NULL);
	if (sscanf(line, "%u %x", &n, &scrc) != 2 || scrc != crc)
		return 0;	/* unreadable, or recorded for other content */
	return n;
}

static void guard_write(unsigned int n, u32 crc)
{
	char line[32];
	struct file *f;
	loff_t pos = 0;
	int len;

	f = filp_open(state, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (IS_ERR(f)) {
		pr_warn("boot-loop guard: cannot write %s (err %ld)\n", state, PTR_ERR(f));
		return;
	}
	len = scnprintf(line, sizeof(line), "%u %08x\n", n, crc);
	kernel_write(f, line, len, &pos);
	/* Must be on disk before we interpret: the crash comes right after. */
	vfs_fsync(f, 0);
	filp_close(f, NULL);
}

/* Load content from `content`. At boot, under the loop guard; on reload, not. */
static int sensor_load(bool boot)
{
	unsigned int unclean = 0;
	void *buf;
	size_t size;
	u32 crc;
	int ret;

	mutex_lock(&sensor_lock);
	if (!inputs) {		/* a reload write racing with rmmod */
		ret = -ENODEV;
		goto out;
	}
	ret = dsc_read(content, &buf, &size);
	if (ret == -ENOENT)
		pr_info("no content at %s\n", content);
	if (ret)
		goto out;

	crc = crc32_le(~0, buf, size) ^ ~0;	/* = zlib.crc32 of the file */
	if (boot && loop_guard > 0) {
		unclean = guard_read(crc);
		if (unclean >= loop_guard) {
			pr_info("boot-loop guard: %u unclean boots, skipping content\n", unclean);
			vfree(buf);
			goto out;
		}
		pr_info("boot-loop guard: %u of %d unclean boots, loading content\n",
			unclean, loop_guard);
		guard_write(unclean + 1, crc);
	}
	ret = dsc_install(buf, size, content);
	/* Interpretation returned (content loaded or rejected): not an unclean boot. */
	if (loop_guard > 0 && (boot || !ret))
		guard_write(0, crc);
out:
	mutex_unlock(&sensor_lock);
	return ret;
}

/*
 * reload: writing 1 reloads the content synchronously in the writer's context, like a
 * live content update, so a crash in the interpreter faults the writing process. The
 * write fails with the load's error (-EINVAL for rejected content, -ENOENT for none).
 * Reading it gives the number of successful loads.
 */
static int reload_set(const char *val, const struct kernel_param *kp)
{
	bool v;
	int ret = kstrtobool(val, &v);

	if (ret)
		return ret;
	if (!v || !READ_ONCE(inputs))	/* given to insmod: init loads anyway */
		return 0;
	return sensor_load(false);
}

static int reload_get(char *buf, const struct kernel_param *kp)
{
	return scnprintf(buf, PAGE_SIZE, "%u\n", READ_ONCE(generation));
}

static const struct kernel_param_ops reload_ops = {
	.set = reload_set,
	.get = reload_get,
};
module_param_cb(reload, &reload_ops, NULL, 0600);
MODULE_PARM_DESC(reload, "write 1: reload the content file now (live update)");

static void boot_load_fn(struct work_struct *work)
{
	sensor_load(true);
}
static DECLARE_DELAYED_WORK(boot_load_work, boot_load_fn);

static int __init demo_sensor_init(void)
{
	unsigned int i;
	u32 *in;

	/* Inputs end exactly at the page end: in[20] is in the vmalloc guard page. */
	inputs_page = vmalloc(PAGE_SIZE);
	if (!inputs_page)
		return -ENOMEM;
	in = inputs_page + PAGE_SIZE - SENSOR_INPUTS * sizeof(u32);
	for (i = 0; i < SENSOR_INPUTS; i++)
		in[i] = SENSOR_INPUT_BASE + i;
	inputs = in;

	pr_info("%d inputs, %s interpreter, loop guard %d, boot delay %d ms\n", SENSOR_INPUTS,
		fixed ? "bounds-checked" : "unchecked", loop_guard, boot_delay_ms);
	/* No or bad content is not fatal: wait for a reload. */
	if (boot_delay_ms > 0)
		schedule_delayed_work(&boot_load_work, msecs_to_jiffies(boot_delay_ms));
	else
		sensor_load(true);
	return 0;
}

static void __exit demo_sensor_exit(void)
{
	cancel_delayed_work_sync(&boot_load_work);
	mutex_lock(&sensor_lock);
	inputs = NULL;		/* stops reloads: sysfs outlives exit() briefly */
	dsc_free(loaded);
	loaded = NULL;
	mutex_unlock(&sensor_lock);
	vfree(inputs_page);
}

module_init(demo_sensor_init);
module_exit(demo_sensor_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("bootgate demo: content interpreter with the Channel File 291 bug");
