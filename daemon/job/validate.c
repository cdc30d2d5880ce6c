/* validate.c: check a whole mount plan before anything is applied
 * (ns_plan_validate in plan.h). */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "common/util.h"
#include "daemon/job/mountinfo.h"
#include "daemon/job/plan.h"

#define DST_MAX_LEN 4000
#define MS_SAFE (MS_NOSUID | MS_NODEV)

/* Where the system's own mounts live; no site or user mount goes there. */
static const char *const reserved[] = { "/proc", "/sys", "/dev" };

/* The order of the phases: the image's sources (in the host namespace),
 * the root, everything on top of it, the workdir last. */
static int phase_of(enum mount_kind k)
{
	switch (k) {
	case MOUNT_LAYER:
	case MOUNT_IMAGE_SQSH:
		return 0;
	case MOUNT_OVERLAY:
		return 1;
	case MOUNT_WORKDIR:
		return 3;
	default:
		return 2;
	}
}

static bool has_source_only(enum mount_kind k)
{
	return k == MOUNT_LAYER || k == MOUNT_IMAGE_SQSH;
}

static bool needs_src(enum mount_kind k)
{
	return k == MOUNT_LAYER || k == MOUNT_IMAGE_SQSH || k == MOUNT_BIND || k == MOUNT_DEVICE ||
	       k == MOUNT_SQUASHFUSE || k == MOUNT_SYSFS;
}

static bool has_dotdot(const char *p)
{
	for (const char *s = p; (s = strstr(s, "..")); s += 2)
		if ((s == p || s[-1] == '/') && (s[2] == '\0' || s[2] == '/'))
			return true;
	return false;
}

static bool has_control(const char *p)
{
	for (; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

/* Fail naming the operation. */
static int op_fail(alps_error **err, const struct mount_op *op, const char *why)
{
	_cleanup_free_ char *what = mount_op_describe(op);
	return alps_fail(err, ALPS_E_INVALID, "%s: %s", what, why);
}

static int check_path(const char *p, const struct mount_op *op, const char *which,
		      alps_error **err)
{
	_cleanup_free_ char *why = NULL;
	if (!p || p[0] != '/')
		why = xasprintf("the %s must be an absolute path", which);
	else if (has_dotdot(p))
		why = xasprintf("the %s must not contain \"..\"", which);
	else if (has_control(p))
		why = xasprintf("the %s contains control characters", which);
	else if (strlen(p) > DST_MAX_LEN)
		why = xasprintf("the %s is too long", which);
	if (why)
		return op_fail(err, op, why);
	return 0;
}

static int check_dst(const struct mount_op *op, alps_error **err)
{
	if (check_path(op->dst, op, "destination", err) < 0)
		return -1;
	_cleanup_free_ char *norm = path_normalize(op->dst);
	if (strcmp(norm, op->dst) != 0)
		return op_fail(err, op, "the destination is not in normal form");
	if (op->origin != ORIGIN_SITE && op->origin != ORIGIN_USER)
		return 0;
	if (strcmp(op->dst, "/") == 0)
		return op_fail(err, op, "the container's root cannot be replaced");
	for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
		if (path_is_under(op->dst, reserved[i]) && op->kind != MOUNT_DEVICE &&
		    op->kind != MOUNT_WORKDIR) {
			_cleanup_free_ char *why = xasprintf("%s belongs to the system", reserved[i]);
			return op_fail(err, op, why);
		}
	return 0;
}

static int check_flags(const struct mount_op *op, bool writable, alps_error **err)
{
	bool from_outside = op->origin == ORIGIN_IMAGE || op->origin == ORIGIN_USER ||
			    op->origin == ORIGIN_SITE;
	if (op->kind == MOUNT_WORKDIR)
		return 0;
	if (op->kind == MOUNT_DEVICE)
		return (op->flags & MS_NOSUID) ? 0 : op_fail(err, op, "a device needs nosuid");
	if (from_outside && (op->flags & MS_SAFE) != MS_SAFE)
		return op_fail(err, op, "mounts from images, the site and users need nosuid,nodev");
	if (has_source_only(op->kind) && !(op->flags & MS_RDONLY))
		return op_fail(err, op, "image layers are read-only");
	if (op->kind == MOUNT_OVERLAY && !!(op->flags & MS_RDONLY) == writable)
		return op_fail(err, op, "the root's read-only flag disagrees with writable");
	return 0;
}

static int check_user(const struct mount_op *op, alps_error **err)
{
	bool fuse = op->kind == MOUNT_SQUASHFUSE || op->kind == MOUNT_IMAGE_SQSH;
	if (fuse && !op->as_user)
		return op_fail(err, op, "squashfs files users name are opened as the user");
	if (op->origin == ORIGIN_USER && !op->as_user)
		return op_fail(err, op, "a user's source must be opened as the user");
	if (op->as_user && op->origin != ORIGIN_USER && !fuse)
		return op_fail(err, op, "only users' sources are opened as the user");
	return 0;
}

static int check_kind(const struct mount_op *op, alps_error **err)
{
	if (op->kind < MOUNT_LAYER || op->kind > MOUNT_WORKDIR)
		return op_fail(err, op, "unknown mount kind");
	if (needs_src(op->kind) && check_path(op->src, op, "source", err) < 0)
		return -1;
	if (op->kind == MOUNT_LAYER && !layer_id_valid(op->id))
		return op_fail(err, op, "invalid layer id");
	/* The host's node may live elsewhere (a CDI spec's hostPath); where it
	 * lands is below /dev. */
	if (op->kind == MOUNT_DEVICE &&
	    (!op->dst || !path_is_under(op->dst, "/dev") || strcmp(op->dst, "/dev") == 0))
		return op_fail(err, op, "a device is a node below /dev");
	if (op->kind == MOUNT_OVERLAY && strcmp(op->dst ? op->dst : "", "/") != 0)
		return op_fail(err, op, "the overlay is the root");
	if (op->kind == MOUNT_FILE_OVER && !op->data)
		return op_fail(err, op, "a generated file needs its lines");
	if (!has_source_only(op->kind) && check_dst(op, err) < 0)
		return -1;
	return 0;
}

static int check_duplicates(const struct ns_plan *plan, size_t i, alps_error **err)
{
	const struct mount_op *op = &plan->ops[i];
	for (size_t j = 0; j < i; j++) {
		const struct mount_op *o = &plan->ops[j];
		if (op->kind == MOUNT_LAYER && o->kind == MOUNT_LAYER && strcmp(op->id, o->id) == 0)
			return op_fail(err, op, "the layer appears twice");
		if (!op->dst || !o->dst || has_source_only(o->kind))
			continue;
		if (strcmp(op->dst, o->dst) == 0 && op->kind != MOUNT_WORKDIR) {
			_cleanup_free_ char *other = mount_op_describe(o);
			_cleanup_free_ char *why = xasprintf("the destination is taken by %s", other);
			return op_fail(err, op, why);
		}
	}
	return 0;
}

/* The phases in order, one root, one image source kind.  The generated
 * files come right after the root: the image's files they start from are
 * read before anything is mounted on it (a link in the image to /sys/...
 * would otherwise read the host's). */
static int check_order(const struct ns_plan *plan, alps_error **err)
{
	size_t nlayer = 0, nsqsh = 0, noverlay = 0, nworkdir = 0;
	int phase = 0;
	bool mounted_on_root = false;
	for (size_t i = 0; i < plan->nops; i++) {
		const struct mount_op *op = &plan->ops[i];
		int p = phase_of(op->kind);
		if (p < phase)
			return op_fail(err, op, "out of order in the plan");
		if (op->kind == MOUNT_FILE_OVER && mounted_on_root)
			return op_fail(err, op, "the image's files are read before anything is "
				       "mounted on the root");
		mounted_on_root |= p == 2 && op->kind != MOUNT_FILE_OVER;
		phase = p;
		nlayer += op->kind == MOUNT_LAYER;
		nsqsh += op->kind == MOUNT_IMAGE_SQSH;
		noverlay += op->kind == MOUNT_OVERLAY;
		nworkdir += op->kind == MOUNT_WORKDIR;
	}
	if (noverlay != 1)
		return alps_fail(err, ALPS_E_INVALID, "the plan needs exactly one root overlay");
	if ((nlayer > 0) + (nsqsh > 0) != 1 || nsqsh > 1)
		return alps_fail(err, ALPS_E_INVALID,
				 "the image is either layers or one squashfs file");
	if (nlayer > NS_MAX_LAYERS)
		return alps_fail(err, ALPS_E_LIMIT, "the image has %zu layers; at most %d stack",
				 nlayer, NS_MAX_LAYERS);
	if (nworkdir > 1)
		return alps_fail(err, ALPS_E_INVALID, "the plan has more than one workdir");
	return 0;
}

int ns_plan_validate(const struct ns_plan *plan, alps_error **err)
{
	if (!job_name_valid(plan->job))
		return alps_fail(err, ALPS_E_INVALID,
				 "invalid job name \"%s\": letters, digits, '.', '_' and '-' only",
				 plan->job);
	_cleanup_free_ char *rd = path_normalize(plan->run_dir);
	if (plan->run_dir[0] != '/' || has_dotdot(plan->run_dir) || strcmp(rd, plan->run_dir))
		return alps_fail(err, ALPS_E_INVALID, "the run directory \"%s\" is not a normal "
				 "absolute path", plan->run_dir);
	if (check_order(plan, err) < 0)
		return -1;
	for (size_t i = 0; i < plan->nops; i++) {
		const struct mount_op *op = &plan->ops[i];
		if (check_kind(op, err) < 0 || check_user(op, err) < 0 ||
		    check_flags(op, plan->writable, err) < 0 || check_duplicates(plan, i, err) < 0)
			return -1;
	}
	return 0;
}
