/* test_jobplan.c: a job's mount plan as data: building, validation, the
 * generated /etc files, mountinfo parsing.  No root needed. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/util.h"
#include "daemon/job/etcfiles.h"
#include "daemon/job/mountinfo.h"
#include "daemon/job/plan.h"

static const char *const layers[] = { "/var/lib/alps/layers/a.sqfs",
				      "/var/lib/alps/layers/b.sqfs",
				      "/var/lib/alps/layers/c.sqfs" };
static const char *const layer_ids[] = { "sha256:aaaa", "sha256:bbbb", "sha256:cccc" };
static const gid_t groups[] = { 65534, 100 };

/* A typical job of uid nobody: three layers, a user mount, a site mount. */
static struct job_spec base_spec(void)
{
	struct job_spec s = {
		.run_dir = "/run/alps",
		.job = "4242.0",
		.uid = 65534,
		.gid = 65534,
		.groups = groups,
		.ngroups = ARRAY_SIZE(groups),
		.user_name = "nobody",
		.layers = layers,
		.layer_ids = layer_ids,
		.nlayers = 3,
		.workdir = "/scratch/work",
	};
	return s;
}

/* The operation on dst; a missing one fails the test. */
static const struct mount_op *find_op(const struct ns_plan *p, const char *dst)
{
	static const struct mount_op none;
	for (size_t i = 0; i < p->nops; i++)
		if (p->ops[i].dst && strcmp(p->ops[i].dst, dst) == 0)
			return &p->ops[i];
	fail_msg("no operation on %s", dst);
	return &none;
}

static size_t count_kind(const struct ns_plan *p, enum mount_kind k)
{
	size_t n = 0;
	for (size_t i = 0; i < p->nops; i++)
		n += p->ops[i].kind == k;
	return n;
}

/* Build and validate spec: 0, or -1 with the message in *msg (caller
 * frees). */
static int build_validate(const struct job_spec *s, char **msg)
{
	alps_error *err = NULL;
	struct ns_plan *plan = NULL;
	int rc = ns_plan_build(s, &plan, &err);
	if (rc == 0)
		rc = ns_plan_validate(plan, &err);
	ns_plan_free(plan);
	*msg = err ? xstrdup(err->msg) : NULL;
	alps_error_free(err);
	return rc;
}

/* The spec must be refused with a message containing want. */
static void assert_refused(const struct job_spec *s, const char *want)
{
	char *msg = NULL;
	assert_int_equal(build_validate(s, &msg), -1);
	assert_non_null(msg);
	if (!strstr(msg, want))
		fail_msg("\"%s\" does not mention \"%s\"", msg, want);
	free(msg);
}

static void test_path_normalize(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
		{ "/", "/" },         { "//", "/" },           { "/a//b/", "/a/b" },
		{ "/a/./b", "/a/b" }, { "/a/../b", "/a/../b" }, { "a/b", "a/b" },
		{ "/./", "/" },       { ".", "." },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *n = path_normalize(cases[i][0]);
		assert_string_equal(n, cases[i][1]);
		free(n);
	}
}

static void test_names(void **state)
{
	(void)state;
	assert_true(job_name_valid("4242"));
	assert_true(job_name_valid("4242.0_step-1"));
	assert_false(job_name_valid(""));
	assert_false(job_name_valid(".hidden"));
	assert_false(job_name_valid("a/b"));
	assert_false(job_name_valid(".."));
	assert_false(job_name_valid("a b"));
	assert_false(job_name_valid(NULL));
	assert_true(layer_id_valid("sha256:0123abcdef"));
	assert_false(layer_id_valid("sha256:../x"));
	assert_false(layer_id_valid("a/b"));
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_false(job_name_valid(longname));
	assert_false(layer_id_valid(longname));
}

static void test_build_order_and_flags(void **state)
{
	(void)state;
	struct user_mount site[] = { { USER_MOUNT_BIND, "/opt/site", "/opt/site", USER_MOUNT_RO } };
	struct user_mount user[] = {
		{ USER_MOUNT_BIND, "/home/u/data/sub", "/data//sub/", 0 },
		{ USER_MOUNT_BIND, "/home/u/data", "/data", USER_MOUNT_REC },
		{ USER_MOUNT_SQSH, "/home/u/tools.sqfs", "/tools", 0 },
	};
	const char *devices[] = { "/dev/nvidia0" };
	struct job_spec s = base_spec();
	s.site_mounts = site;
	s.nsite_mounts = ARRAY_SIZE(site);
	s.mounts = user;
	s.nmounts = ARRAY_SIZE(user);
	s.devices = devices;
	s.ndevices = 1;
	struct ns_plan *p = NULL;
	alps_error *err = NULL;
	assert_int_equal(ns_plan_build(&s, &p, &err), 0);
	assert_int_equal(ns_plan_validate(p, &err), 0);

	/* Layers bottom first, then the root, the system, the mounts, the workdir. */
	assert_int_equal(count_kind(p, MOUNT_LAYER), 3);
	assert_int_equal(p->ops[0].kind, MOUNT_LAYER);
	assert_string_equal(p->ops[0].id, "sha256:aaaa");
	assert_string_equal(p->ops[2].src, layers[2]);
	assert_int_equal(p->ops[3].kind, MOUNT_OVERLAY);
	assert_string_equal(p->ops[3].dst, "/");
	assert_true(p->ops[3].flags & MS_RDONLY);
	assert_int_equal(p->ops[p->nops - 1].kind, MOUNT_WORKDIR);
	assert_string_equal(p->ops[p->nops - 1].dst, "/scratch/work");

	/* Every user mount: nosuid, nodev, opened as the user. */
	const struct mount_op *data = find_op(p, "/data");
	const struct mount_op *sub = find_op(p, "/data/sub");
	assert_true(data < sub);    /* parents first */
	assert_true(data->as_user && sub->as_user);
	assert_int_equal(data->flags & (MS_NOSUID | MS_NODEV | MS_REC), MS_NOSUID | MS_NODEV | MS_REC);
	assert_false(data->flags & MS_RDONLY);
	const struct mount_op *tools = find_op(p, "/tools");
	assert_int_equal(tools->kind, MOUNT_SQUASHFUSE);
	assert_true(tools->as_user);
	assert_true(tools->flags & MS_RDONLY);
	const struct mount_op *site_op = find_op(p, "/opt/site");
	assert_false(site_op->as_user);
	assert_int_equal(site_op->origin, ORIGIN_SITE);
	assert_true(site_op->flags & MS_RDONLY);
	assert_int_equal(find_op(p, "/dev/nvidia0")->kind, MOUNT_DEVICE);

	/* The system's own mounts. */
	assert_int_equal(find_op(p, "/proc")->kind, MOUNT_PROC);
	assert_int_equal(find_op(p, "/sys")->kind, MOUNT_SYSFS);
	assert_true(find_op(p, "/sys")->flags & MS_RDONLY);
	assert_int_equal(find_op(p, "/dev")->kind, MOUNT_DEVTMP);
	assert_int_equal(find_op(p, "/tmp")->kind, MOUNT_TMPFS);
	assert_true(find_op(p, "/etc/hosts")->optional);
	const struct mount_op *pw = find_op(p, "/etc/passwd");
	assert_int_equal(pw->kind, MOUNT_FILE_OVER);
	assert_non_null(strstr(pw->data, "nobody:x:65534:65534:"));
	const struct mount_op *gr = find_op(p, "/etc/group");
	assert_non_null(strstr(gr->data, ":x:65534:"));
	ns_plan_free(p);
}

static void test_build_writable_and_sqsh_image(void **state)
{
	(void)state;
	struct job_spec s = base_spec();
	s.writable = true;
	s.workdir = NULL;
	struct ns_plan *p = NULL;
	alps_error *err = NULL;
	assert_int_equal(ns_plan_build(&s, &p, &err), 0);
	assert_int_equal(ns_plan_validate(p, &err), 0);
	assert_false(find_op(p, "/")->flags & MS_RDONLY);
	assert_int_equal(count_kind(p, MOUNT_WORKDIR), 0);
	ns_plan_free(p);

	s = base_spec();
	s.nlayers = 0;
	s.image_sqsh = "/home/u/image.sqfs";
	assert_int_equal(ns_plan_build(&s, &p, &err), 0);
	assert_int_equal(ns_plan_validate(p, &err), 0);
	assert_int_equal(p->ops[0].kind, MOUNT_IMAGE_SQSH);
	assert_true(p->ops[0].as_user);
	assert_int_equal(p->ops[1].kind, MOUNT_OVERLAY);
	ns_plan_free(p);
}

/* A layer that repeats keeps its topmost place only. */
static void test_build_repeated_layer(void **state)
{
	(void)state;
	const char *l[] = { "/l/a", "/l/b", "/l/a2", "/l/c" };
	const char *ids[] = { "sha256:a", "sha256:b", "sha256:a", "sha256:c" };
	struct job_spec s = base_spec();
	s.layers = l;
	s.layer_ids = ids;
	s.nlayers = 4;
	struct ns_plan *p = NULL;
	alps_error *err = NULL;
	assert_int_equal(ns_plan_build(&s, &p, &err), 0);
	assert_int_equal(ns_plan_validate(p, &err), 0);
	assert_int_equal(count_kind(p, MOUNT_LAYER), 3);
	assert_string_equal(p->ops[0].id, "sha256:b");
	assert_string_equal(p->ops[1].id, "sha256:a");
	assert_string_equal(p->ops[1].src, "/l/a2");
	ns_plan_free(p);
}

static void test_refuse_destinations(void **state)
{
	(void)state;
	static const struct {
		const char *dst;
		const char *why;
	} bad[] = {
		{ "data", "absolute" },
		{ "/data/../../etc", "\"..\"" },
		{ "/proc", "belongs to the system" },
		{ "/proc/sys", "belongs to the system" },
		{ "/sys/fs", "belongs to the system" },
		{ "/dev", "belongs to the system" },
		{ "/dev/shm", "belongs to the system" },
		{ "/", "root" },
		{ "/tmp", "taken by system tmpfs on /tmp" },
		{ "/etc/passwd", "taken by system generated file" },
		{ "/a\nb", "control characters" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct user_mount m[] = { { USER_MOUNT_BIND, "/home/u", bad[i].dst, 0 } };
		struct job_spec s = base_spec();
		s.mounts = m;
		s.nmounts = 1;
		assert_refused(&s, bad[i].why);
		/* The error names the mount. */
		if (bad[i].dst[0] == '/' && !strchr(bad[i].dst, '\n'))
			assert_refused(&s, "/home/u");
	}
}

static void test_refuse_duplicates_and_kinds(void **state)
{
	(void)state;
	struct user_mount dup[] = { { USER_MOUNT_BIND, "/a", "/data", 0 },
				    { USER_MOUNT_BIND, "/b", "/data/", 0 } };
	struct job_spec s = base_spec();
	s.mounts = dup;
	s.nmounts = 2;
	assert_refused(&s, "taken by user bind /a on /data");

	struct user_mount site_user[] = { { USER_MOUNT_BIND, "/a", "/opt", 0 } };
	s = base_spec();
	s.site_mounts = site_user;
	s.nsite_mounts = 1;
	s.mounts = site_user;
	s.nmounts = 1;
	assert_refused(&s, "taken by site bind");

	struct user_mount kind[] = { { (enum user_mount_kind)7, "/a", "/x", 0 } };
	s = base_spec();
	s.mounts = kind;
	s.nmounts = 1;
	assert_refused(&s, "unknown kind");

	struct user_mount flags[] = { { USER_MOUNT_BIND, "/a", "/x", 1u << 9 } };
	s.mounts = flags;
	assert_refused(&s, "unknown flags");

	struct user_mount nosrc[] = { { USER_MOUNT_BIND, NULL, "/x", 0 } };
	s.mounts = nosrc;
	assert_refused(&s, "without a source");

	struct user_mount relsrc[] = { { USER_MOUNT_BIND, "home/u", "/x", 0 } };
	s.mounts = relsrc;
	assert_refused(&s, "source must be an absolute path");
}

static void test_refuse_image_and_names(void **state)
{
	(void)state;
	struct job_spec s = base_spec();
	s.nlayers = 0;
	assert_refused(&s, "either layers or one squashfs");
	s = base_spec();
	s.image_sqsh = "/x.sqfs";
	assert_refused(&s, "either layers or one squashfs");
	s = base_spec();
	s.job = "../etc";
	assert_refused(&s, "invalid job name");
	s = base_spec();
	s.run_dir = "run/alps";
	assert_refused(&s, "run directory");
	s = base_spec();
	const char *bad_ids[] = { "sha256:aaaa", "../../x", "sha256:cccc" };
	s.layer_ids = bad_ids;
	assert_refused(&s, "invalid layer id");
	s = base_spec();
	const char *devices[] = { "/etc/shadow" };
	s.devices = devices;
	s.ndevices = 1;
	assert_refused(&s, "below /dev");
	s = base_spec();
	s.workdir = "work";
	assert_refused(&s, "absolute");
	/* CDI and hook devices: the host node anywhere, the place below /dev */
	s = base_spec();
	const struct job_device extra_bad[] = { { "/srv/dev/cxi0", "/etc/cxi0" } };
	s.extra_devices = extra_bad;
	s.nextra_devices = 1;
	assert_refused(&s, "below /dev");
	const struct job_device extra_dotdot[] = { { "/srv/../dev/cxi0", "/dev/cxi0" } };
	s.extra_devices = extra_dotdot;
	assert_refused(&s, "the source must not contain \"..\"");
	const struct job_device extra_dup[] = { { "/srv/a", "/dev/cxi0" }, { "/srv/b", "/dev/cxi0" } };
	s.extra_devices = extra_dup;
	s.nextra_devices = 2;
	assert_refused(&s, "the destination is taken");
	const struct job_device extra_ok[] = { { "/srv/dev/cxi0", "/dev/cxi0" } };
	s.extra_devices = extra_ok;
	s.nextra_devices = 1;
	char *msg = NULL;
	assert_int_equal(build_validate(&s, &msg), 0);
	free(msg);

	/* More layers than overlayfs stacks. */
	size_t n = NS_MAX_LAYERS + 1;
	const char **l = xcalloc(n, sizeof(char *));
	char **ids = xcalloc(n, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		l[i] = "/l.sqfs";
		ids[i] = xasprintf("sha256:%zu", i);
	}
	s = base_spec();
	s.layers = l;
	s.layer_ids = (const char *const *)ids;
	s.nlayers = n;
	assert_refused(&s, "at most 500");
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	free(l);
}

/* Plans are data: one tampered with after building is caught. */
static void test_refuse_tampered_plan(void **state)
{
	(void)state;
	struct user_mount m[] = { { USER_MOUNT_BIND, "/home/u", "/data", 0 } };
	struct job_spec s = base_spec();
	s.mounts = m;
	s.nmounts = 1;
	struct ns_plan *p = NULL;
	alps_error *err = NULL;
	assert_int_equal(ns_plan_build(&s, &p, &err), 0);
	struct mount_op *data = (struct mount_op *)find_op(p, "/data");
	unsigned long flags = data->flags;

	data->flags &= ~MS_NOSUID;
	assert_int_equal(ns_plan_validate(p, &err), -1);
	assert_non_null(strstr(err->msg, "nosuid,nodev"));
	assert_non_null(strstr(err->msg, "/data"));
	cleanup_errorp(&err);
	data->flags = flags;

	data->as_user = false;
	assert_int_equal(ns_plan_validate(p, &err), -1);
	assert_non_null(strstr(err->msg, "opened as the user"));
	cleanup_errorp(&err);
	data->as_user = true;

	/* The root after a system mount. */
	struct mount_op tmp = p->ops[3];
	p->ops[3] = p->ops[4];
	p->ops[4] = tmp;
	assert_int_equal(ns_plan_validate(p, &err), -1);
	assert_non_null(strstr(err->msg, "out of order"));
	cleanup_errorp(&err);
	p->ops[4] = p->ops[3];
	p->ops[3] = tmp;

	free(p->ops[0].id);
	p->ops[0].id = xstrdup("sha256:bbbb");
	assert_int_equal(ns_plan_validate(p, &err), -1);
	assert_non_null(strstr(err->msg, "twice"));
	cleanup_errorp(&err);

	ns_plan_free(p);
}

static void test_etc_merge(void **state)
{
	(void)state;
	const char *image = "root:x:0:0:root:/root:/bin/sh\n"
			    "nobody:x:99:99:old:/:/sbin/nologin\n"
			    "daemon:x:1:1::/:/bin/false\n"
			    "other:x:65534:1::/:/bin/false"; /* no final newline */
	char *m = etc_merge(image, strlen(image), "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n");
	assert_string_equal(m, "root:x:0:0:root:/root:/bin/sh\n"
			       "daemon:x:1:1::/:/bin/false\n"
			       "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n");
	free(m);
	m = etc_merge("", 0, "g:x:5:u");
	assert_string_equal(m, "g:x:5:u\n");
	free(m);
	/* Lines without fields are kept as they are. */
	m = etc_merge("# comment\n\n", 11, "a:x:1:\n");
	assert_string_equal(m, "# comment\n\na:x:1:\n");
	free(m);
}

static void test_etc_lines(void **state)
{
	(void)state;
	alps_error *err = NULL;
	char *pw = etc_passwd_line(65534, 65534, NULL, &err);
	assert_non_null(pw);
	assert_true(str_has_prefix(pw, "nobody:x:65534:65534:"));
	free(pw);
	/* A uid the host does not know needs a name. */
	assert_null(etc_passwd_line(3999999, 3999999, NULL, &err));
	assert_int_equal(err->code, ALPS_E_NOT_FOUND);
	cleanup_errorp(&err);
	pw = etc_passwd_line(3999999, 3999999, "ghost", &err);
	assert_string_equal(pw, "ghost:x:3999999:3999999::/:/bin/sh\n");
	free(pw);
	assert_null(etc_passwd_line(3999999, 1, "evil:0:0", &err));
	cleanup_errorp(&err);
	gid_t g[] = { 0, 3999999, 0 };
	char *gr = etc_group_lines(65534, g, ARRAY_SIZE(g), "nobody");
	/* The primary group, then root once (with the user), unnamed skipped. */
	assert_non_null(strstr(gr, ":x:65534:\n"));
	assert_non_null(strstr(gr, ":x:0:nobody\n"));
	assert_null(strstr(gr, "3999999"));
	assert_null(strstr(strstr(gr, ":x:0:nobody\n") + 1, ":x:0:"));
	free(gr);
}

static void test_mountinfo_parse(void **state)
{
	(void)state;
	const char *text =
		"22 27 0:21 / /proc rw,relatime - proc proc rw\n"
		"44 42 7:0 / /run/alps/layers/sha256:x/root ro,nosuid,nodev shared:5 master:1 - "
		"squashfs /dev/loop0 ro\n"
		"46 43 0:4 mnt:[4026532177] /a\\040b\\134c rw - nsfs nsfs rw\n";
	struct mountinfo mi;
	alps_error *err = NULL;
	assert_int_equal(mountinfo_parse(text, &mi, &err), 0);
	assert_int_equal(mi.count, 3);
	assert_string_equal(mi.entries[1].mountpoint, "/run/alps/layers/sha256:x/root");
	assert_string_equal(mi.entries[1].optional, "shared:5 master:1");
	assert_string_equal(mi.entries[1].fstype, "squashfs");
	assert_int_equal(mi.entries[1].major, 7);
	assert_true(mountinfo_has_option(mi.entries[1].options, "nosuid"));
	assert_false(mountinfo_has_option(mi.entries[1].options, "suid"));
	assert_string_equal(mi.entries[2].mountpoint, "/a b\\c");
	assert_string_equal(mi.entries[0].optional, "");
	assert_ptr_equal(mountinfo_find(&mi, "/proc"), &mi.entries[0]);
	assert_null(mountinfo_find(&mi, "/sys"));
	mountinfo_free(&mi);
	assert_int_equal(mountinfo_parse("1 2 3:4 / /x rw shared:1\n", &mi, &err), -1);
	cleanup_errorp(&err);
	assert_true(path_is_under("/a/b", "/a"));
	assert_true(path_is_under("/a", "/a"));
	assert_false(path_is_under("/ab", "/a"));
	assert_true(path_is_under("/x", "/"));
}

/* The image's /etc files are read right after the root is mounted, before
 * /proc, /sys and /dev exist in it (issue 8, item 13). */
static void test_etc_files_before_system_mounts(void **state)
{
	(void)state;
	struct job_spec s = base_spec();
	struct ns_plan *p = NULL;
	alps_error *err = NULL;
	assert_int_equal(ns_plan_build(&s, &p, &err), 0);
	assert_int_equal(ns_plan_validate(p, &err), 0);
	size_t root = 0;
	while (root < p->nops && p->ops[root].kind != MOUNT_OVERLAY)
		root++;
	assert_true(root + 3 < p->nops);
	assert_int_equal(p->ops[root + 1].kind, MOUNT_FILE_OVER);
	assert_string_equal(p->ops[root + 1].dst, "/etc/passwd");
	assert_int_equal(p->ops[root + 2].kind, MOUNT_FILE_OVER);
	assert_string_equal(p->ops[root + 2].dst, "/etc/group");
	assert_int_equal(p->ops[root + 3].kind, MOUNT_PROC);
	/* A plan that reads them after /proc is mounted is refused. */
	struct mount_op tmp = p->ops[root + 2];
	p->ops[root + 2] = p->ops[root + 3];
	p->ops[root + 3] = tmp;
	assert_int_equal(ns_plan_validate(p, &err), -1);
	assert_non_null(strstr(err->msg, "before anything is mounted on the root"));
	assert_non_null(strstr(err->msg, "/etc/group"));
	cleanup_errorp(&err);
	ns_plan_free(p);
}

static void test_tmpfs_sizes(void **state)
{
	(void)state;
	static const char *const good[] = { "1", "64m", "4G", "2t", "1%", "25%", "100%",
					    "123456789012345" };
	static const char *const bad[] = { NULL, "", "0", "00", "0%", "101%", "5x", "5mb",
					   "-1", "1.5g", "%", "m", "25 %", "1234567890123456",
					   "1,nr_inodes=0" };
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		if (!tmpfs_size_valid(good[i]))
			fail_msg("\"%s\" refused", good[i]);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (tmpfs_size_valid(bad[i]))
			fail_msg("\"%s\" accepted", bad[i] ? bad[i] : "(null)");

	struct job_spec s = base_spec();
	s.tmp_size = "3m";
	s.shm_size = "50%";
	s.upper_size = "7m";
	struct ns_plan *p = NULL;
	alps_error *err = NULL;
	assert_int_equal(ns_plan_build(&s, &p, &err), 0);
	assert_int_equal(ns_plan_validate(p, &err), 0);
	assert_string_equal(find_op(p, "/tmp")->data, "mode=1777,size=3m");
	assert_string_equal(find_op(p, "/dev/shm")->data, "mode=1777,size=50%");
	assert_int_equal(find_op(p, "/dev/shm")->kind, MOUNT_TMPFS);
	assert_string_equal(find_op(p, "/")->data, "mode=0700,size=7m");
	ns_plan_free(p);
	/* No size: tmpfs's own default. */
	s = base_spec();
	assert_int_equal(ns_plan_build(&s, &p, &err), 0);
	assert_string_equal(find_op(p, "/tmp")->data, "mode=1777");
	ns_plan_free(p);
	/* A bad one is refused, naming the mount; an option smuggled in too. */
	s.shm_size = "lots";
	assert_refused(&s, "/dev/shm");
	s.shm_size = NULL;
	s.tmp_size = "1m,mode=4777";
	assert_refused(&s, "\"1m,mode=4777\"");
}

static void test_describe(void **state)
{
	(void)state;
	struct mount_op op = { .kind = MOUNT_BIND, .origin = ORIGIN_USER, .src = "/home/u",
			       .dst = "/data" };
	char *d = mount_op_describe(&op);
	assert_string_equal(d, "user bind /home/u on /data");
	free(d);
	struct mount_op layer = { .kind = MOUNT_LAYER, .origin = ORIGIN_IMAGE, .src = "/l.sqfs",
				  .id = "sha256:a" };
	d = mount_op_describe(&layer);
	assert_string_equal(d, "layer sha256:a (/l.sqfs)");
	free(d);
	assert_string_equal(mount_kind_name(MOUNT_SQUASHFUSE), "squashfuse");
	assert_string_equal(mount_kind_name((enum mount_kind)99), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_normalize),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_build_order_and_flags),
		cmocka_unit_test(test_build_writable_and_sqsh_image),
		cmocka_unit_test(test_build_repeated_layer),
		cmocka_unit_test(test_refuse_destinations),
		cmocka_unit_test(test_refuse_duplicates_and_kinds),
		cmocka_unit_test(test_refuse_image_and_names),
		cmocka_unit_test(test_refuse_tampered_plan),
		cmocka_unit_test(test_etc_merge),
		cmocka_unit_test(test_etc_lines),
		cmocka_unit_test(test_mountinfo_parse),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_etc_files_before_system_mounts),
		cmocka_unit_test(test_tmpfs_sizes),
	};
	return cmocka_run_group_tests_name("jobplan", tests, NULL, NULL);
}
