/* test_edf_ce.c: the EDF rules as the CSCS Container Engine documents
 * them (eth-cscs/cscs-docs, docs/software/container-engine/edf.md and
 * run.md; the Sarus Suite user guide; pyxis), each with the sentence it
 * holds the code to, and the points alps-edf(5) decides. */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/edf.h"
#include "common/expand.h"
#include "tests/unit/edf_test.h"

static void test_image_squashfs(void **state)
{
	(void)state;
	/* pyxis: an image that starts with '/' or '.' is a path ("a path to a
	 * squashfs file"), whatever its extension: what it holds decides its
	 * kind (edf_image_file_check). */
	const char *ok[] = { "/a/b.sqsh", "./x.sqfs", "../y/z.squashfs", "/a/b.tar", ".hidden" };
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		char text[128];
		snprintf(text, sizeof(text), "image = \"%s\"\n", ok[i]);
		struct edf *e = parse_ok(text);
		assert_int_equal(e->image_kind, EDF_IMAGE_SQUASHFS);
		assert_string_equal(edf_image(e), ok[i]);
		edf_free(e);
	}
	/* "The paths are interpreted as relative to the working directory of
	 * the process calling the CE, not to the location of the EDF file." */
	struct edf *e = parse_ok("image = \"./img/../img/x.sqsh\"\n");
	struct edf_context ctx = { .cwd = "/home/alice" };
	assert_int_equal(edf_expand(e, &ctx, NULL), 0);
	assert_string_equal(edf_image(e), "/home/alice/img/x.sqsh");
	edf_free(e);

	parse_fails("image = \"x.sqsh\"\n", "t.toml:1:9: image: \"x.sqsh\" looks like a squashfs "
		    "file: name it by a path, \"./x.sqsh\" or an absolute one");
	parse_fails("image = \"~/x.sqsh\"\n", "t.toml:1:9: image: \"~/x.sqsh\": '~' is not "
		    "expanded here; write \"${HOME}/...\"");
}

/* The content decides: a squashfs superblock, or a clear error. */
static void test_image_file_kind(void **state)
{
	(void)state;
	char path[] = "/tmp/alps-test-img-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	unsigned char sb[96] = { 'h', 's', 'q', 's' };
	sb[28] = 4;
	assert_int_equal(pwrite(fd, sb, sizeof(sb), 0), (ssize_t)sizeof(sb));
	assert_int_equal(edf_image_file_check(fd, "/x.sqsh", NULL), 0);
	static const unsigned char gz[4] = { 0x1f, 0x8b, 8, 0 };
	assert_int_equal(pwrite(fd, gz, sizeof(gz), 0), 4);
	alps_error *err = NULL;
	assert_int_equal(edf_image_file_check(fd, "/x.tar.gz", &err), -1);
	assert_string_equal(err->msg, "image /x.tar.gz: a gzip file (an image archive must be "
			    "imported first)");
	alps_error_free(err);
	err = NULL;
	assert_int_equal(pwrite(fd, "text", 4, 0), 4);
	assert_int_equal(edf_image_file_check(fd, "/x.sqsh", &err), -1);
	assert_string_equal(err->msg, "image /x.sqsh: not a squashfs image");
	alps_error_free(err);
	close(fd);
	err = NULL;
	fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(edf_image_file_check(fd, "/", &err), -1);
	assert_string_equal(err->msg, "image / is a directory, not a squashfs image");
	alps_error_free(err);
	close(fd);
}

/* ---- mounts ----------------------------------------------------------- */

static void test_mounts(void **state)
{
	(void)state;
	/* "Mount flags are separated with a plus symbol, for example:
	 * ro+private."  Binds are recursive unless norbind (pyxis adds rbind to
	 * every bind). */
	struct edf *e = parse_ok("mounts = [\"/a:/b\", \"/c:/d:ro+rprivate\", "
				 "\"/e:/f:rw+recursive\", \"/x.sqsh:/g:sqsh+ro\", "
				 "\"/h:/i:private\", \"/j:/k:norbind\", \"/l:/m:nosuid+nodev+rbind\", "
				 "\"/n:/o:sqsh\", \"/p://./r/./s//\"]\n");
	assert_int_equal(e->nmounts, 9);
	assert_string_equal(e->mounts[0].src, "/a");
	assert_string_equal(e->mounts[0].dst, "/b");
	assert_int_equal(e->mounts[0].flags, EDF_MOUNT_RECURSIVE);
	assert_int_equal(e->mounts[1].flags, EDF_MOUNT_RO | EDF_MOUNT_RPRIVATE | EDF_MOUNT_RECURSIVE);
	assert_int_equal(e->mounts[2].flags, EDF_MOUNT_RW | EDF_MOUNT_RECURSIVE);
	assert_int_equal(e->mounts[3].flags, EDF_MOUNT_SQSH | EDF_MOUNT_RO);
	assert_int_equal(e->mounts[4].flags, EDF_MOUNT_PRIVATE | EDF_MOUNT_RECURSIVE);
	assert_int_equal(e->mounts[5].flags, EDF_MOUNT_NORBIND);
	assert_int_equal(e->mounts[6].flags,
			 EDF_MOUNT_NOSUID | EDF_MOUNT_NODEV | EDF_MOUNT_RECURSIVE);
	assert_int_equal(e->mounts[7].flags, EDF_MOUNT_SQSH);
	/* Destinations are normalized. */
	assert_string_equal(e->mounts[8].dst, "/r/s");
	assert_string_equal(e->mounts[8].loc.key, "mounts[8]");
	char *f = edf_mount_flags_format(e->mounts[1].flags);
	assert_string_equal(f, "ro+rprivate+rbind");
	free(f);
	edf_free(e);

	/* Sources are host paths: ".." is the user's business there. */
	e = parse_ok("mounts = [\"/a/../b:/c\"]\n");
	assert_string_equal(e->mounts[0].src, "/a/../b");
	edf_free(e);
	e = parse_ok("mounts = []\n");
	assert_int_equal(e->nmounts, 0);
	edf_free(e);
}

/* Decided (alps-edf(5)): a mount with only a source mounts it at the same
 * path, as pyxis does ("${SCRATCH}"). */
static void test_mount_source_only(void **state)
{
	(void)state;
	struct edf *e = parse_ok("mounts = [\"/capstor/scratch\", \"${SCRATCH}\", \"./data\"]\n");
	assert_string_equal(e->mounts[0].dst, "/capstor/scratch");
	static const char *const env[] = { "SCRATCH=/scratch/alice", NULL };
	struct edf_context ctx = { .caller_env = env, .cwd = "/home/alice/run" };
	assert_int_equal(edf_expand(e, &ctx, NULL), 0);
	assert_string_equal(e->mounts[1].src, "/scratch/alice");
	assert_string_equal(e->mounts[1].dst, "/scratch/alice");
	assert_string_equal(e->mounts[2].src, "/home/alice/run/data");
	assert_string_equal(e->mounts[2].dst, "/home/alice/run/data");
	assert_int_equal(e->mounts[2].flags, EDF_MOUNT_RECURSIVE);
	edf_free(e);
}

/* "Relative filesystem paths can be used within EDF parameters ... The
 * paths are interpreted as relative to the working directory of the
 * process calling the CE ... Relative paths should be prepended by ./." */
static void test_mount_relative_source(void **state)
{
	(void)state;
	struct edf *e = parse_ok("mounts = [\"./in:/in\", \"../out:/out:ro\"]\n");
	struct edf_context ctx = { .cwd = "/home/alice/run" };
	assert_int_equal(edf_expand(e, &ctx, NULL), 0);
	assert_string_equal(e->mounts[0].src, "/home/alice/run/in");
	assert_string_equal(e->mounts[1].src, "/home/alice/out");
	edf_free(e);
	/* No working directory known: refused, never resolved elsewhere. */
	e = parse_ok("mounts = [\"./in:/in\"]\n");
	alps_error *err = NULL;
	assert_int_equal(edf_expand(e, NULL, &err), -1);
	assert_string_equal(err->msg, "t.toml:1:11: mounts[0]: relative source \"./in\" and no "
			    "working directory to resolve it against");
	alps_error_free(err);
	edf_free(e);
}

struct mount_case {
	const char *spec;
	const char *msg;        /* after "t.toml:1:11: mounts[0]: " */
};

#define KNOWN "(ro, rw, rbind, norbind, nosuid, nodev, private, rprivate, sqsh)"
#define PROPAGATION "propagation is not supported: every job mount is private"

static const struct mount_case mount_errors[] = {
	{ "/a:/b:rwx", "unknown mount flag 'rwx' " KNOWN },
	{ "/a:/b:ro+bind", "mount flag 'bind': ambiguous: binds are recursive (rbind) by "
	  "default; write norbind for a non-recursive one" },
	{ ":/b", "empty source in \":/b\"" },
	{ "/a:", "empty destination in \"/a:\"" },
	{ "/a::ro", "empty destination in \"/a::ro\"" },
	{ "/a:/b:", "empty flags after ':' in \"/a:/b:\"" },
	{ "/a:/b:ro:x", "too many ':' in \"/a:/b:ro:x\" (expected SRC[:DST[:FLAGS]]; paths "
	  "cannot contain ':')" },
	{ "a:/b", "source \"a\" is not absolute (write \"./a\" for a path relative to the "
	  "working directory)" },
	{ "~/a:/b", "source \"~/a\": '~' is not expanded here; write \"${HOME}/...\"" },
	{ "/a:b", "destination \"b\" is not absolute (it is a path inside the container)" },
	{ "/a:/b/../c", "destination \"/b/../c\" contains \"..\"" },
	{ "/a:/..", "destination \"/..\" contains \"..\"" },
	{ "/a:/", "destination \"/\" is the container's root" },
	{ "/a:/./", "destination \"/./\" is the container's root" },
	{ "/a:/b:ro+rw", "conflicting mount flags 'ro' and 'rw'" },
	{ "/a:/b:rw+ro", "conflicting mount flags 'ro' and 'rw'" },
	{ "/a:/b:ro++rw", "empty mount flag" },
	{ "/a:/b:+ro", "empty mount flag" },
	{ "/a:/b:ro+", "empty mount flag" },
	{ "/a:/b:ro+ro", "mount flag 'ro' given twice" },
	{ "/a:/b:rbind+recursive", "mount flag 'recursive' given twice" },
	{ "/a:/b:rbind+norbind", "conflicting mount flags 'rbind' and 'norbind'" },
	{ "/a:/b:private+rprivate", "conflicting mount flags 'private' and 'rprivate'" },
	/* Propagation flags are honoured or refused, never applied as private. */
	{ "/a:/b:shared", "mount flag 'shared': " PROPAGATION },
	{ "/a:/b:rshared", "mount flag 'rshared': " PROPAGATION },
	{ "/a:/b:slave", "mount flag 'slave': " PROPAGATION },
	{ "/a:/b:ro+rslave", "mount flag 'rslave': " PROPAGATION },
	/* The floor: nosuid,nodev are always applied and no flag lifts them. */
	{ "/a:/b:suid", "mount flag 'suid': cannot be lifted: every job mount is nosuid" },
	{ "/a:/b:dev", "mount flag 'dev': cannot be lifted: every job mount is nodev" },
	{ "/a:/b:noexec", "mount flag 'noexec': not implemented: alps cannot apply it to a bind "
	  "mount yet" },
	{ "/a:/b:noatime", "mount flag 'noatime': not supported: a bind keeps the access-time "
	  "setting of its source" },
	{ "/a:/b:x-create=dir", "unknown mount flag 'x-create=dir' " KNOWN },
	{ "/a.sqsh:/b:sqsh+rw", "conflicting mount flags 'sqsh' and 'rw'" },
	{ "/a.sqsh:/b:sqsh+recursive", "conflicting mount flags 'sqsh' and 'rbind'" },
	{ "/a.sqsh:/b:sqsh+norbind", "conflicting mount flags 'sqsh' and 'norbind'" },
	{ "/a:/b:RO", "unknown mount flag 'RO' " KNOWN },
};

static void test_mount_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(mount_errors); i++) {
		char text[256], want[512];
		snprintf(text, sizeof(text), "mounts = [\"%s\"]\n", mount_errors[i].spec);
		snprintf(want, sizeof(want), "t.toml:1:11: mounts[0]: %s", mount_errors[i].msg);
		parse_fails(text, want);
	}
	parse_fails("mounts = \"/a:/b\"\n", "t.toml:1:10: mounts: expected an array of "
		    "\"SRC[:DST[:FLAGS]]\" strings, got string");
	parse_fails("mounts = [\n  \"/a:/b\",\n  3,\n]\n",
		    "t.toml:3:3: mounts[1]: expected a string, got integer");
}

/* "the flags are forwarded to the system mount operation": flags expand
 * like every value ("This capability applies across all configuration
 * parameters in the EDF"). */
static void test_mount_flags_expand(void **state)
{
	(void)state;
	struct edf *e = parse_ok("mounts = [\"/a:/b:${MODE:-ro}\", \"/c:/d:${MODE2}+nosuid\"]\n");
	static const char *const env[] = { "MODE2=rw", NULL };
	expand_ok(e, env);
	assert_int_equal(e->mounts[0].flags, EDF_MOUNT_RO | EDF_MOUNT_RECURSIVE);
	assert_int_equal(e->mounts[1].flags, EDF_MOUNT_RW | EDF_MOUNT_NOSUID | EDF_MOUNT_RECURSIVE);
	edf_free(e);
	e = parse_ok("mounts = [\"/a:/b:${MODE}\"]\n");
	static const char *const bad[] = { "MODE=shared", NULL };
	struct edf_context ctx = { .caller_env = bad };
	alps_error *err = NULL;
	assert_int_equal(edf_expand(e, &ctx, &err), -1);
	assert_string_equal(err->msg, "t.toml:1:11: mounts[0]: mount flag 'shared': " PROPAGATION);
	alps_error_free(err);
	edf_free(e);
}

static void test_mount_duplicates(void **state)
{
	(void)state;
	/* Decided: two different mounts on one destination in one file are an
	 * error, normalized destinations compared... */
	parse_fails("mounts = [\"/a:/d\",\n  \"/b:/d/\"]\n",
		    "t.toml:2:3: mounts[1]: destination /d is already mounted by mounts[0] "
		    "(line 1)");
	/* ...and the exact same mount twice is dropped with a warning. */
	struct edf *e = parse_ok("mounts = [\"/a:/d:ro\",\n  \"/a:/d/:ro\"]\n");
	assert_int_equal(e->nmounts, 1);
	assert_warning(e, "t.toml:2:3: mounts[1]: the same mount as mounts[0] (line 1): dropped");
	edf_free(e);
	/* "When evaluating mounts or env parameters, values from downstream
	 * EDFs are appended to inherited values": all kept, in order, even on
	 * the same destination. */
	const struct memfile files[] = {
		{ "top", NULL, "base_environment = \"base\"\nmounts = [\"/mine:/data:ro\"]\n" },
		{ "base", NULL, "mounts = [\"/site:/data\", \"/opt:/opt\"]\n" },
	};
	struct memfs fs = MEMFS(files);
	e = load_ok(&fs, "top");
	assert_int_equal(e->nmounts, 3);
	assert_string_equal(e->mounts[0].src, "/site");
	assert_string_equal(e->mounts[1].src, "/opt");
	assert_string_equal(e->mounts[2].src, "/mine");
	assert_int_equal(e->mounts[2].flags, EDF_MOUNT_RO | EDF_MOUNT_RECURSIVE);
	edf_free(e);
}

static void test_annotations_expand(void **state)
{
	(void)state;
	struct edf *e = parse_ok("[annotations.com.hooks.ssh]\n"
				 "authorize_ssh_key = \"/capstor/scratch/cscs/${USER}/keys\"\n"
				 "enabled = \"true\"\n"
				 "[annotations]\nliteral = \"$${USER}\"\n");
	static const char *const env[] = { "USER=alice", NULL };
	expand_ok(e, env);
	assert_string_equal(edf_annotation_get(e, "com.hooks.ssh.authorize_ssh_key"),
			    "/capstor/scratch/cscs/alice/keys");
	/* "$${VAR} will render as the literal string ${VAR}." */
	assert_string_equal(edf_annotation_get(e, "literal"), "${USER}");
	edf_free(e);
}

/* Sarus Suite: "EDFs support a devices array. Each entry must be a valid
 * value for Podman's --device option" -- here CDI names or /dev paths,
 * validated; prepare takes CDI names and refuses /dev paths (any host node). */
static void test_devices(void **state)
{
	(void)state;
	struct edf *e = parse_ok("devices = [\"nvidia.com/gpu=all\", \"/dev/gdrdrv\", "
				 "\"${GPU:-amd.com/gpu=0}\"]\n");
	expand_ok(e, NULL);
	assert_int_equal(e->ndevices, 3);
	assert_string_equal(e->devices[2].value, "amd.com/gpu=0");
	alps_error *err = NULL;
	assert_int_equal(edf_job_check(e, &err), -1);
	assert_int_equal(err->code, ALPS_E_INVALID);
	assert_non_null(strstr(err->msg, "devices[1]: device paths are not accepted; name a CDI "
			       "device (vendor.com/class=name)"));
	alps_error_free(err);
	edf_free(e);
	e = parse_ok("devices = []\n");
	assert_int_equal(edf_job_check(e, NULL), 0);
	edf_free(e);
	parse_fails("devices = [\"gpu\"]\n", "t.toml:1:12: devices[0]: \"gpu\" is neither a CDI "
		    "device name (vendor.com/class=name) nor an absolute /dev path");
	parse_fails("devices = [\"/etc/shadow\"]\n", "t.toml:1:12: devices[0]: \"/etc/shadow\" is "
		    "not a normalized path below /dev");
	parse_fails("devices = [\"/dev/../etc\"]\n", "t.toml:1:12: devices[0]: \"/dev/../etc\" is "
		    "not a normalized path below /dev");
	parse_fails("devices = [\"nvidia/gpu=all\"]\n", "t.toml:1:12: devices[0]: "
		    "\"nvidia/gpu=all\" is neither a CDI device name (vendor.com/class=name) nor an "
		    "absolute /dev path");
	parse_fails("devices = \"/dev/x\"\n", "t.toml:1:11: devices: expected an array of "
		    "strings, got string");
}

/* `alps edf check` "Reports every error in a file, not just the first". */
static void test_every_error(void **state)
{
	(void)state;
	parse_fails("image = 3\nmounts = [\"/a:/b:shared\", \"/c:d\"]\n[env]\nA = 1\n",
		    "t.toml:1:9: image: expected a string, got integer\n"
		    "t.toml:2:11: mounts[0]: mount flag 'shared': propagation is not supported: "
		    "every job mount is private\n"
		    "t.toml:2:27: mounts[1]: destination \"d\" is not absolute (it is a path inside "
		    "the container)\n"
		    "t.toml:4:5: env.A: expected a string, got integer (quote it: the environment "
		    "holds strings)");
	struct edf *e = parse_ok("workdir = \"${A}\"\nmounts = [\"${B}:/b\"]\n");
	alps_error *err = NULL;
	assert_int_equal(edf_expand(e, NULL, &err), -1);
	assert_string_equal(err->msg, "t.toml:1:11: workdir: ${A} is not defined (write ${A:-} for "
			    "an empty default)\nt.toml:2:11: mounts[0]: ${B} is not defined (write "
			    "${B:-} for an empty default)");
	alps_error_free(err);
	edf_free(e);
	/* Up to a limit. */
	char text[4096] = "mounts = [";
	for (int i = 0; i < 30; i++)
		strcat(text, "\"x:/y\", ");
	strcat(text, "]\n");
	e = NULL;
	err = NULL;
	assert_int_equal(edf_parse("t.toml", text, strlen(text), &e, &err), -1);
	assert_non_null(strstr(err->msg, "\n(10 more errors not shown)"));
	alps_error_free(err);
}

/* "When root runs alps prepare --user U": USER, LOGNAME, HOME, UID from
 * the user database, whatever the caller's environment says. */
static void test_user_env(void **state)
{
	(void)state;
	static const char *const root_env[] = { "USER=root", "HOME=/root", "LOGNAME=root",
						"SCRATCH=/capstor/alice", "UID=0", NULL };
	char **env = edf_user_env(root_env, "alice", 1234, "/users/alice");
	const char *const *v = (const char *const *)env;
	assert_string_equal(expand_envv_get(v, "USER"), "alice");
	assert_string_equal(expand_envv_get(v, "LOGNAME"), "alice");
	assert_string_equal(expand_envv_get(v, "HOME"), "/users/alice");
	assert_string_equal(expand_envv_get(v, "UID"), "1234");
	assert_string_equal(expand_envv_get(v, "SCRATCH"), "/capstor/alice");
	/* The README's own example mounts the user's directory. */
	struct edf *e = parse_ok("mounts = [\"/scratch/${USER}:/scratch\"]\n");
	struct edf_context ctx = { .caller_env = v };
	assert_int_equal(edf_expand(e, &ctx, NULL), 0);
	assert_string_equal(e->mounts[0].src, "/scratch/alice");
	edf_free(e);
	edf_strv_free(env);
	/* No home in the database: HOME is not defined (never root's). */
	env = edf_user_env(root_env, "1234", 1234, NULL);
	assert_null(expand_envv_get((const char *const *)env, "HOME"));
	edf_strv_free(env);
}

/* jobs.default_mounts: the same reading and expansion, with the user
 * database's names only; checked at start, naming the key. */
static void test_site_mounts(void **state)
{
	(void)state;
	static const char *const env[] = { "USER=alice", "HOME=/users/alice", "SCRATCH=/evil",
					   NULL };
	char *out = NULL;
	assert_int_equal(edf_site_mount("/scratch/${USER}:/scratch:ro", 0, env, &out, NULL), 0);
	assert_string_equal(out, "/scratch/alice:/scratch:ro+rbind");
	free(out);
	assert_int_equal(edf_site_mount("/opt/site", 1, env, &out, NULL), 0);
	assert_string_equal(out, "/opt/site:/opt/site:rw+rbind");
	free(out);
	assert_int_equal(edf_site_mount("/a:/b:norbind", 1, NULL, &out, NULL), 0);
	assert_string_equal(out, "/a:/b:rw");
	free(out);
	struct {
		const char *spec, *want;
	} bad[] = {
		/* A user's SCRATCH never steers a mount the daemon opens as root. */
		{ "${SCRATCH}:/s", "jobs.default_mounts[2]: ${SCRATCH} is not defined (write "
		  "${SCRATCH:-} for an empty default)" },
		{ "./x:/x", "jobs.default_mounts[2]: relative source \"./x\" and no working "
		  "directory to resolve it against" },
		{ "/a:/b:shared", "jobs.default_mounts[2]: mount flag 'shared': propagation is not "
		  "supported: every job mount is private" },
		{ "/a.sqsh:/b:sqsh", "jobs.default_mounts[2]: 'sqsh' is not supported in site "
		  "mounts" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		alps_error *err = NULL;
		assert_int_equal(edf_site_mount(bad[i].spec, 2, env, &out, &err), -1);
		assert_null(out);
		if (strcmp(err->msg, bad[i].want) != 0)
			fail_msg("got: %s\nwant: %s", err->msg, bad[i].want);
		alps_error_free(err);
	}
}

static void test_base_empty_and_expanded(void **state)
{
	(void)state;
	const struct memfile files[] = {
		{ "top", NULL, "base_environment = \"\"\nimage = \"ubuntu:24.04\"\n" },
		{ "arr", NULL, "base_environment = [\"${NOPE:-}\", \"${WHICH}\"]\n" },
		{ "site-x", NULL, "writable = false\n" },
		{ "undef", NULL, "base_environment = \"${NOPE}\"\n" },
	};
	struct memfs fs = MEMFS(files);
	struct edf *e = load_ok(&fs, "top");
	assert_int_equal(e->nfiles, 1);
	edf_free(e);
	static const char *const env[] = { "WHICH=site-x", NULL };
	struct edf_context ctx = { .caller_env = env };
	struct edf_loader loader = { .load = mem_load, .arg = &fs };
	alps_error *err = NULL;
	assert_int_equal(edf_load_all_ctx("arr", &loader, &ctx, &e, NULL, NULL, &err), 0);
	assert_int_equal(e->nfiles, 2);
	assert_false(edf_writable(e));
	edf_free(e);
	assert_int_equal(edf_load_all_ctx("undef", &loader, &ctx, &e, NULL, NULL, &err), -1);
	assert_string_equal(err->msg, "undef.toml:1:20: base_environment: ${NOPE} is not defined "
			    "(write ${NOPE:-} for an empty default)");
	alps_error_free(err);
}

static void test_fixture_ce_doc(void **state)
{
	(void)state;
	char *dir = fixture_dir();
	char *path = xasprintf("%s/ce-doc.toml", dir);
	size_t len;
	char *text = slurp(path, &len);
	struct edf *e = NULL;
	alps_error *err = NULL;
	if (edf_parse("ce-doc", text, len, &e, &err) < 0)
		fail_msg("%s", err->msg);
	static const char *const env[] = { "USER=amadonna", "SCRATCH=/capstor/scratch/cscs/amadonna",
					   "PATH=/usr/bin", NULL };
	expand_ok(e, env);
	assert_int_equal(e->nbases, 1);         /* "" is no base */
	/* ${SCRATCH} is /capstor/scratch/cscs/${USER} here: the second mount
	 * is the first one again, dropped with a warning. */
	assert_int_equal(e->nmounts, 3);
	assert_string_equal(e->mounts[0].dst, "/capstor/scratch/cscs/amadonna");
	assert_warning(e, "ce-doc.toml:9:5: mounts[1]: the same mount as mounts[0] (line 8): "
		       "dropped");
	/* "By default, it performs bind mount unless the only flag is sqsh" */
	assert_int_equal(e->mounts[1].flags, EDF_MOUNT_SQSH);
	assert_int_equal(e->mounts[2].flags, EDF_MOUNT_RO | EDF_MOUNT_PRIVATE | EDF_MOUNT_RECURSIVE);
	assert_string_equal(edf_env_get(e, "MY_NODE"), "none");
	assert_string_equal(edf_env_get(e, "PATH"), "/usr/bin:/custom/bin");
	assert_string_equal(edf_env_get(e, "LITERAL"), "${VAR}");
	assert_string_equal(edf_annotation_get(e, "com.hooks.ssh.authorize_ssh_key"),
			    "/capstor/scratch/cscs/amadonna/tests/edf/authorized_keys");
	assert_int_equal(e->ndevices, 2);
	edf_free(e);
	free(text);
	free(path);
	free(dir);
}


int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_image_squashfs),
		cmocka_unit_test(test_image_file_kind),
		cmocka_unit_test(test_mounts),
		cmocka_unit_test(test_mount_source_only),
		cmocka_unit_test(test_mount_relative_source),
		cmocka_unit_test(test_mount_errors),
		cmocka_unit_test(test_mount_flags_expand),
		cmocka_unit_test(test_mount_duplicates),
		cmocka_unit_test(test_annotations_expand),
		cmocka_unit_test(test_devices),
		cmocka_unit_test(test_every_error),
		cmocka_unit_test(test_user_env),
		cmocka_unit_test(test_site_mounts),
		cmocka_unit_test(test_base_empty_and_expanded),
		cmocka_unit_test(test_fixture_ce_doc),
	};
	return cmocka_run_group_tests_name("edf_ce", tests, NULL, NULL);
}
