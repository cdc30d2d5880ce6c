/* plan.c: build and validate a job's mount plan (see plan.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "common/util.h"
#include "daemon/job/etcfiles.h"
#include "daemon/job/mountinfo.h"
#include "daemon/job/plan.h"

#define NAME_MAX_LEN 128
#define LAYER_ID_MAX_LEN 200
#define DST_MAX_LEN 4000

/* Flags every mount from an image, the site or a user carries. */
#define MS_SAFE (MS_NOSUID | MS_NODEV)

static const char *const kind_names[] = {
	[MOUNT_LAYER] = "layer",
	[MOUNT_IMAGE_SQSH] = "image squashfs",
	[MOUNT_OVERLAY] = "overlay",
	[MOUNT_PROC] = "proc",
	[MOUNT_SYSFS] = "sysfs",
	[MOUNT_DEVTMP] = "dev",
	[MOUNT_DEVICE] = "device",
	[MOUNT_TMPFS] = "tmpfs",
	[MOUNT_BIND] = "bind",
	[MOUNT_SQUASHFUSE] = "squashfuse",
	[MOUNT_FILE_OVER] = "generated file",
	[MOUNT_WORKDIR] = "workdir",
};

static const char *const origin_names[] = {
	[ORIGIN_SYSTEM] = "system",
	[ORIGIN_IMAGE] = "image",
	[ORIGIN_SITE] = "site",
	[ORIGIN_USER] = "user",
};

const char *mount_kind_name(enum mount_kind kind)
{
	if ((size_t)kind >= ARRAY_SIZE(kind_names) || !kind_names[kind])
		return "unknown";
	return kind_names[kind];
}

static const char *origin_name(enum mount_origin o)
{
	if ((size_t)o >= ARRAY_SIZE(origin_names) || !origin_names[o])
		return "unknown";
	return origin_names[o];
}

char *mount_op_describe(const struct mount_op *op)
{
	const char *kind = mount_kind_name(op->kind);
	const char *origin = origin_name(op->origin);
	if (op->kind == MOUNT_LAYER)
		return xasprintf("layer %s (%s)", op->id ? op->id : "?", op->src ? op->src : "?");
	if (op->src && op->dst)
		return xasprintf("%s %s %s on %s", origin, kind, op->src, op->dst);
	if (op->src)
		return xasprintf("%s %s %s", origin, kind, op->src);
	return xasprintf("%s %s on %s", origin, kind, op->dst ? op->dst : "?");
}

static bool name_chars_ok(const char *s, size_t max, const char *extra)
{
	size_t n = strlen(s);
	if (n == 0 || n > max || s[0] == '.')
		return false;
	for (const char *p = s; *p; p++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
			  (c && strchr(extra, c));
		if (!ok)
			return false;
	}
	return true;
}

bool job_name_valid(const char *job)
{
	return job && name_chars_ok(job, NAME_MAX_LEN, "");
}

bool layer_id_valid(const char *id)
{
	return id && name_chars_ok(id, LAYER_ID_MAX_LEN, ":+");
}

char *path_normalize(const char *path)
{
	size_t n = strlen(path);
	char *out = xmalloc(n + 2), *o = out;
	const char *p = path;
	if (*p == '/')
		*o++ = '/';
	while (*p) {
		while (*p == '/')
			p++;
		size_t len = strcspn(p, "/");
		if (len == 0)
			break;
		if (!(len == 1 && p[0] == '.')) {
			if (o > out && o[-1] != '/')
				*o++ = '/';
			memcpy(o, p, len);
			o += len;
		}
		p += len;
	}
	if (o == out)
		*o++ = path[0] == '/' ? '/' : '.';
	*o = '\0';
	return out;
}

/* --- building --- */

struct plan_builder {
	struct ns_plan *plan;
	size_t cap;
};

static struct mount_op *plan_add(struct plan_builder *b, enum mount_kind kind,
				 enum mount_origin origin, const char *src, const char *dst,
				 unsigned long flags)
{
	struct ns_plan *p = b->plan;
	if (p->nops == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 32;
		p->ops = xreallocarray(p->ops, b->cap, sizeof(*p->ops));
	}
	struct mount_op *op = &p->ops[p->nops++];
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->origin = origin;
	op->src = src ? xstrdup(src) : NULL;
	op->dst = dst ? path_normalize(dst) : NULL;
	op->flags = flags;
	return op;
}

/* A layer that appears again higher up adds nothing below its topmost
 * place (all it holds is there again), and overlayfs refuses a directory
 * twice in one stack: keep the topmost. */
static bool layer_repeats_above(const struct job_spec *spec, size_t i)
{
	if (!spec->layer_ids || !spec->layer_ids[i])
		return false;
	for (size_t j = i + 1; j < spec->nlayers; j++)
		if (spec->layer_ids[j] && strcmp(spec->layer_ids[i], spec->layer_ids[j]) == 0)
			return true;
	return false;
}

/* "mode=...,size=..." (or mode alone); caller frees. */
static char *tmpfs_options(const char *mode, const char *size)
{
	return size ? xasprintf("%s,size=%s", mode, size) : xstrdup(mode);
}

bool tmpfs_size_valid(const char *size)
{
	size_t digits = size ? strspn(size, "0123456789") : 0;
	if (digits == 0 || digits > 15 || strspn(size, "0") == digits)
		return false;
	const char *unit = size + digits;
	if (strcmp(unit, "%") == 0)
		return strtoul(size, NULL, 10) <= 100;
	return unit[0] == '\0' || (unit[1] == '\0' && strchr("kKmMgGtT", unit[0]));
}

static int check_sizes(const struct job_spec *spec, alps_error **err)
{
	const struct {
		const char *what, *size;
	} sizes[] = { { "/tmp", spec->tmp_size }, { "/dev/shm", spec->shm_size },
		      { "the overlay's upper layer", spec->upper_size } };
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
		if (sizes[i].size && !tmpfs_size_valid(sizes[i].size))
			return alps_fail(err, ALPS_E_INVALID, "the size of %s, \"%s\", is not a number "
					 "of bytes (k, m, g, t) or a percentage of the memory",
					 sizes[i].what, sizes[i].size);
	return 0;
}

static void add_image(struct plan_builder *b, const struct job_spec *spec)
{
	for (size_t i = 0; i < spec->nlayers; i++) {
		if (layer_repeats_above(spec, i))
			continue;
		struct mount_op *op = plan_add(b, MOUNT_LAYER, ORIGIN_IMAGE, spec->layers[i], NULL,
					       MS_RDONLY | MS_SAFE);
		op->id = spec->layer_ids && spec->layer_ids[i] ? xstrdup(spec->layer_ids[i]) : NULL;
	}
	if (spec->image_sqsh) {
		struct mount_op *op = plan_add(b, MOUNT_IMAGE_SQSH, ORIGIN_USER, spec->image_sqsh,
					       NULL, MS_RDONLY | MS_SAFE);
		op->as_user = true;
	}
	struct mount_op *root = plan_add(b, MOUNT_OVERLAY, ORIGIN_IMAGE, NULL, "/",
					 MS_SAFE | (spec->writable ? 0 : MS_RDONLY));
	root->data = tmpfs_options("mode=0700", spec->upper_size);
}

static void add_system(struct plan_builder *b, const struct job_spec *spec)
{
	plan_add(b, MOUNT_PROC, ORIGIN_SYSTEM, NULL, "/proc", MS_SAFE | MS_NOEXEC);
	plan_add(b, MOUNT_SYSFS, ORIGIN_SYSTEM, "/sys", "/sys",
		 MS_RDONLY | MS_SAFE | MS_NOEXEC | MS_REC);
	/* The device nodes in /dev are bind mounts of the host's, each its own
	 * mount, so the tmpfs under them can be nodev too. */
	struct mount_op *dev = plan_add(b, MOUNT_DEVTMP, ORIGIN_SYSTEM, NULL, "/dev",
					MS_SAFE | MS_NOEXEC);
	dev->data = xstrdup("mode=0755,size=256k");
	struct mount_op *shm = plan_add(b, MOUNT_TMPFS, ORIGIN_SYSTEM, NULL, "/dev/shm", MS_SAFE);
	shm->data = tmpfs_options("mode=1777", spec->shm_size);
	for (size_t i = 0; i < spec->ndevices; i++)
		plan_add(b, MOUNT_DEVICE, ORIGIN_SITE, spec->devices[i], spec->devices[i],
			 MS_NOSUID | MS_NOEXEC);
	for (size_t i = 0; i < spec->nextra_devices; i++)
		plan_add(b, MOUNT_DEVICE, ORIGIN_SITE, spec->extra_devices[i].host,
			 spec->extra_devices[i].path, MS_NOSUID | MS_NOEXEC);
	struct mount_op *tmp = plan_add(b, MOUNT_TMPFS, ORIGIN_SYSTEM, NULL, "/tmp", MS_SAFE);
	tmp->data = tmpfs_options("mode=1777", spec->tmp_size);
	static const char *const host_files[] = { "/etc/hosts", "/etc/resolv.conf" };
	for (size_t i = 0; i < ARRAY_SIZE(host_files); i++) {
		struct mount_op *op = plan_add(b, MOUNT_BIND, ORIGIN_SYSTEM, host_files[i],
					       host_files[i], MS_RDONLY | MS_SAFE | MS_NOEXEC);
		op->optional = true;
	}
}

static int add_etc(struct plan_builder *b, const struct job_spec *spec, alps_error **err)
{
	char *pw = etc_passwd_line(spec->uid, spec->gid, spec->user_name, err);
	if (!pw)
		return alps_error_prefix(err, "the job user's /etc/passwd line");
	const char *name = spec->user_name;
	_cleanup_free_ char *pw_name = xstrndup(pw, strcspn(pw, ":"));
	if (!name)
		name = pw_name;
	struct mount_op *op = plan_add(b, MOUNT_FILE_OVER, ORIGIN_SYSTEM, NULL, "/etc/passwd",
				       MS_RDONLY | MS_SAFE | MS_NOEXEC);
	op->data = pw;
	op = plan_add(b, MOUNT_FILE_OVER, ORIGIN_SYSTEM, NULL, "/etc/group",
		      MS_RDONLY | MS_SAFE | MS_NOEXEC);
	op->data = etc_group_lines(spec->gid, spec->groups, spec->ngroups, name);
	return 0;
}

static unsigned long user_mount_flags(const struct user_mount *m)
{
	unsigned long f = MS_SAFE;
	if (m->flags & USER_MOUNT_RO)
		f |= MS_RDONLY;
	if (m->flags & USER_MOUNT_REC)
		f |= MS_REC;
	if (m->kind == USER_MOUNT_SQSH)
		f |= MS_RDONLY;
	return f;
}

/* One site or user mount; squashfs files are always served by squashfuse
 * running as the user, whoever names them. */
static int add_user_mount(struct plan_builder *b, const struct user_mount *m,
			  enum mount_origin origin, alps_error **err)
{
	const char *who = origin == ORIGIN_USER ? "user" : "site";
	if (m->kind != USER_MOUNT_BIND && m->kind != USER_MOUNT_SQSH)
		return alps_fail(err, ALPS_E_INVALID, "%s mount on %s: unknown kind %d", who,
				 m->dst ? m->dst : "?", (int)m->kind);
	if (m->flags & ~USER_MOUNT_FLAGS_ALL)
		return alps_fail(err, ALPS_E_INVALID, "%s mount on %s: unknown flags 0x%x", who,
				 m->dst ? m->dst : "?", m->flags & ~USER_MOUNT_FLAGS_ALL);
	if (!m->src || !m->dst)
		return alps_fail(err, ALPS_E_INVALID, "%s mount without %s", who,
				 m->src ? "a destination" : "a source");
	enum mount_kind kind = m->kind == USER_MOUNT_SQSH ? MOUNT_SQUASHFUSE : MOUNT_BIND;
	struct mount_op *op = plan_add(b, kind, origin, m->src, m->dst, user_mount_flags(m));
	op->as_user = origin == ORIGIN_USER || kind == MOUNT_SQUASHFUSE;
	return 0;
}

static size_t path_depth(const char *p)
{
	size_t d = 0;
	for (; *p; p++)
		d += *p == '/';
	return d;
}

/* Parents before children, so /data/x lands inside /data and not under
 * it; insertion sort keeps the given order among equals (a handful of
 * mounts). */
static void sort_by_depth(struct mount_op *ops, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		struct mount_op tmp = ops[i];
		size_t d = path_depth(tmp.dst ? tmp.dst : "");
		size_t j = i;
		while (j > 0 && path_depth(ops[j - 1].dst ? ops[j - 1].dst : "") > d) {
			ops[j] = ops[j - 1];
			j--;
		}
		ops[j] = tmp;
	}
}

static int add_mounts(struct plan_builder *b, const struct job_spec *spec, alps_error **err)
{
	size_t first = b->plan->nops;
	for (size_t i = 0; i < spec->nsite_mounts; i++)
		if (add_user_mount(b, &spec->site_mounts[i], ORIGIN_SITE, err) < 0)
			return -1;
	for (size_t i = 0; i < spec->nmounts; i++)
		if (add_user_mount(b, &spec->mounts[i], ORIGIN_USER, err) < 0)
			return -1;
	sort_by_depth(b->plan->ops + first, b->plan->nops - first);
	return 0;
}

int ns_plan_build(const struct job_spec *spec, struct ns_plan **out, alps_error **err)
{
	_cleanup_ns_plan_ struct ns_plan *plan = xzalloc(sizeof(*plan));
	struct plan_builder b = { .plan = plan };
	plan->run_dir = xstrdup(spec->run_dir ? spec->run_dir : "");
	plan->job = xstrdup(spec->job ? spec->job : "");
	plan->uid = spec->uid;
	plan->gid = spec->gid;
	plan->ngroups = spec->ngroups;
	if (spec->ngroups)
		plan->groups = xmemdup(spec->groups, spec->ngroups * sizeof(gid_t));
	plan->writable = spec->writable;
	if (check_sizes(spec, err) < 0)
		return -1;
	add_image(&b, spec);
	/* The image's /etc files are read before /proc, /sys and /dev exist
	 * in the root: see read_image_file in apply.c. */
	if (add_etc(&b, spec, err) < 0)
		return -1;
	add_system(&b, spec);
	if (add_mounts(&b, spec, err) < 0)
		return -1;
	if (spec->workdir && strcmp(spec->workdir, "/") != 0) {
		struct mount_op *op = plan_add(&b, MOUNT_WORKDIR, ORIGIN_USER, NULL, spec->workdir, 0);
		op->as_user = true;
	}
	*out = steal_pointer(&plan);
	return 0;
}

void ns_plan_free(struct ns_plan *plan)
{
	if (!plan)
		return;
	for (size_t i = 0; i < plan->nops; i++) {
		free(plan->ops[i].src);
		free(plan->ops[i].dst);
		free(plan->ops[i].id);
		free(plan->ops[i].data);
	}
	free(plan->ops);
	free(plan->groups);
	free(plan->run_dir);
	free(plan->job);
	free(plan);
}

void cleanup_ns_planp(struct ns_plan **plan)
{
	ns_plan_free(*plan);
	*plan = NULL;
}
