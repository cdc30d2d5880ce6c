/* plan.h: a job's mount namespace as data.
 *
 * The request handler fills a struct job_spec (plain inputs: the user, the
 * image's layer files, the EDF's mounts...).  ns_plan_build() turns it into
 * a list of mount operations, ns_plan_validate() checks the whole list, and
 * only then does the helper process apply it, one operation after the
 * other, in one loop (apply.c).  Nothing about a job's mounts is decided
 * while mounting.
 *
 *	struct ns_plan *plan;
 *	if (ns_plan_build(spec, &plan, err) < 0 || ns_plan_validate(plan, err) < 0) ...
 *	ns_plan_free(plan);
 */
#ifndef ALPS_DAEMON_JOB_PLAN_H
#define ALPS_DAEMON_JOB_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"

/* The most lower layers overlayfs stacks (OVL_MAX_STACK). */
#define NS_MAX_LAYERS 500

enum user_mount_kind {
	USER_MOUNT_BIND = 0,    /* bind a host directory or file */
	USER_MOUNT_SQSH = 1,    /* mount a squashfs file (with squashfuse, as the user) */
};

enum user_mount_flag {
	USER_MOUNT_RO = 1u << 0,        /* read-only */
	USER_MOUNT_REC = 1u << 1,       /* recursive bind: submounts of src come along */
	USER_MOUNT_PRIVATE = 1u << 2,   /* accepted for the EDF's sake: all job mounts are private */
};
#define USER_MOUNT_FLAGS_ALL (USER_MOUNT_RO | USER_MOUNT_REC | USER_MOUNT_PRIVATE)

/* A mount the site or the user asks for. */
struct user_mount {
	enum user_mount_kind kind;
	const char *src;        /* host path */
	const char *dst;        /* absolute path in the container */
	unsigned flags;         /* USER_MOUNT_* */
};

/* A host device node bound into the container's /dev at path (CDI specs
 * and hooks may put a node elsewhere than where the host has it). */
struct job_device {
	const char *host;       /* absolute host path of the node */
	const char *path;       /* below /dev in the container */
};

/* What the request handler knows about a job; borrowed for the call. */
struct job_spec {
	const char *run_dir;            /* e.g. /run/alps */
	const char *job;                /* [A-Za-z0-9._-]+, not starting with '.' */
	uid_t uid;
	gid_t gid;
	const gid_t *groups;            /* supplementary groups */
	size_t ngroups;
	const char *user_name;          /* NULL: the host's name for uid */
	/* The image: either layer files alps wrote (bottom first) with their
	 * digests, which name the node-wide shared mounts... */
	const char *const *layers;
	const char *const *layer_ids;
	size_t nlayers;
	/* ...or one squashfs file the user named, served by squashfuse. */
	const char *image_sqsh;
	bool writable;                  /* tmpfs upper layer; else a read-only root */
	const char *workdir;            /* created if missing; NULL: "/" */
	const struct user_mount *site_mounts;   /* sources opened as root */
	size_t nsite_mounts;
	const struct user_mount *mounts;        /* sources opened as the user */
	size_t nmounts;
	const char *const *devices;     /* host device nodes to expose, e.g. /dev/nvidia0 */
	size_t ndevices;
	const struct job_device *extra_devices; /* CDI and hooks' nodes (daemon/hooks) */
	size_t nextra_devices;
	/* tmpfs sizes as tmpfs takes them ("64m", "25%" of the node's memory;
	 * tmpfs_size_valid): /tmp, /dev/shm, the overlay's upper layer (what a
	 * writable job writes).  NULL: tmpfs's default, half the memory. */
	const char *tmp_size;
	const char *shm_size;
	const char *upper_size;
	unsigned prepare_timeout_ms;    /* the helper is killed after; 0: ns.h's default */
};

enum mount_kind {
	MOUNT_LAYER = 1,        /* a layer's shared read-only mount (host namespace) */
	MOUNT_IMAGE_SQSH,       /* the image is a user's squashfs, under squashfuse */
	MOUNT_OVERLAY,          /* the root: overlayfs of the layers over a tmpfs upper */
	MOUNT_PROC,             /* a new procfs */
	MOUNT_SYSFS,            /* the host's /sys, recursive and read-only */
	MOUNT_DEVTMP,           /* a tmpfs /dev with the standard nodes, pts and shm */
	MOUNT_DEVICE,           /* one host device node bound into /dev */
	MOUNT_TMPFS,            /* a new tmpfs */
	MOUNT_BIND,             /* bind src (a directory or a file) onto dst */
	MOUNT_SQUASHFUSE,       /* a squashfs file under squashfuse, as the user */
	MOUNT_FILE_OVER,        /* the image's file plus data's lines, bound read-only over it */
	MOUNT_WORKDIR,          /* not a mount: create dst if missing */
};

/* Who asked for a mount; images and users get nosuid,nodev always. */
enum mount_origin {
	ORIGIN_SYSTEM = 0,      /* alps itself: /proc, /dev, /etc/hosts... */
	ORIGIN_IMAGE,
	ORIGIN_SITE,
	ORIGIN_USER,
};

struct mount_op {
	enum mount_kind kind;
	enum mount_origin origin;
	char *src;              /* owned; host path, or NULL */
	char *dst;              /* owned; path in the container, or NULL (LAYER, IMAGE_SQSH) */
	char *id;               /* owned; LAYER: the shared mount's name */
	unsigned long flags;    /* MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC */
	char *data;             /* owned; TMPFS, DEVTMP: options; OVERLAY: the upper tmpfs's
				 * options; FILE_OVER: lines to add */
	bool as_user;           /* src is opened with the job user's credentials */
	bool optional;          /* a missing src skips the operation (host /etc/hosts) */
};

struct ns_plan {
	char *run_dir;          /* owned */
	char *job;              /* owned */
	uid_t uid;
	gid_t gid;
	gid_t *groups;          /* owned */
	size_t ngroups;
	bool writable;
	struct mount_op *ops;   /* owned; applied in this order */
	size_t nops;
};

/* Build the plan of spec: normalizes destinations, sorts site and user
 * mounts parents first, reads the host's passwd and group entries of the
 * user, checks the tmpfs sizes.  Validation is separate.  *out is the
 * caller's (ns_plan_free).
 *
 * The order: the image's layers, the root, the generated /etc/passwd and
 * /etc/group (the image's files are read before anything is mounted on the
 * root, so no link in the image reaches the host's /sys or /proc), the
 * system's mounts, site and user mounts, the workdir. */
int ns_plan_build(const struct job_spec *spec, struct ns_plan **out, alps_error **err);
/* Check a whole plan before anything is applied: absolute normalized
 * destinations without "..", no duplicates, nothing of the user's or the
 * site's on /, /proc, /sys or /dev, nosuid,nodev on what images and users
 * bring, the operations in a sound order.  The error names the mount. */
int ns_plan_validate(const struct ns_plan *plan, alps_error **err);
void ns_plan_free(struct ns_plan *plan);
void cleanup_ns_planp(struct ns_plan **plan);
#define _cleanup_ns_plan_ __attribute__((cleanup(cleanup_ns_planp)))

/* "bind", "overlay"... */
const char *mount_kind_name(enum mount_kind kind);
/* A one-line description for errors and `alps jobs`: "user bind /data/x on
 * /data".  Caller frees. */
char *mount_op_describe(const struct mount_op *op);

/* Names alps puts into paths: a job ([A-Za-z0-9._-], at most 128 bytes,
 * not starting with '.') and a layer id (the same plus ':' and '+'). */
bool job_name_valid(const char *job);
bool layer_id_valid(const char *id);
/* A tmpfs size= value alps passes on: a positive number of bytes with an
 * optional k, m, g or t (either case), or 1% to 100% of the memory.  "0"
 * (no limit, to tmpfs) is not one. */
bool tmpfs_size_valid(const char *size);
/* Collapse "//", drop "." components and a trailing '/'; ".." stays for
 * validation to refuse.  Caller frees. */
char *path_normalize(const char *path);

#endif
