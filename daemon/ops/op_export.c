/* op_export.c: Export, an image's layers merged into one squashfs file
 * (daemon/squash/flatten.h) written to the fd the client passes.
 *
 * The daemon never opens a path for the user: the client creates the file
 * as the user (O_EXCL) and passes it open; here it must be a regular,
 * empty file open for reading and writing.  The image is looked up with
 * the caller's visibility (another user's private image is not found).
 * On the loop: the request's checks, a timer that sends progress, and a
 * watch on the connection that cancels the export when the client goes.
 * On a worker: the store lookup and the whole flattening.  On failure the
 * client removes its file; nothing here unlinks anything. */
#include <config.h>

#include <event2/event.h>
#include <linux/capability.h>
#include <stdatomic.h>
#include <linux/magic.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/ref.h"
#include "daemon/daemon.h"
#include "daemon/settings.h"
#include "daemon/server/handlers.h"
#include "daemon/server/work.h"
#include "daemon/squash/flatten.h"
#include "daemon/squash/squash.h"
#include "daemon/store/store.h"

#define EXPORT_TICK_MS 250

struct xp {
	struct request *rq;
	struct daemon *d;
	struct event *tick;             /* progress, on the loop */
	struct close_watch *watch;      /* NULL once fired */
	char *key;                      /* what the user named, canonical */
	char *compressor;               /* NULL: the layers' */
	bool recompress;
	int64_t viewer;
	uid_t uid;
	gid_t gid;
	int fd;
	atomic_bool cancel;
	_Atomic uint64_t done, total;
	/* results, from the worker */
	char *digest;
	uint32_t layers;
	struct flatten_result res;
	alps_error *err;
};

static void xp_free(struct xp *x)
{
	if (x->tick)
		event_free(x->tick);
	if (x->watch)
		close_watch_cancel(x->watch);
	if (x->fd >= 0)
		close(x->fd);
	request_unref(x->rq);
	free(x->key);
	free(x->compressor);
	free(x->digest);
	alps_error_free(x->err);
	free(x);
}

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
	struct xp *x = arg;
	atomic_store(&x->total, total);
	atomic_store(&x->done, done);
}

/* Writes to the user's file must count as the user's own would: ext4's
 * reserve for root admits fsuid 0 or CAP_SYS_RESOURCE, and disk quotas do
 * not bind CAP_SYS_RESOURCE.  So once the layers are open, this thread
 * (file system ids and capabilities are per thread, and libsquashfs
 * writes from the thread that drives it) takes the user's fsuid and fsgid
 * and drops CAP_SYS_RESOURCE from its effective set; as_root() undoes it
 * before the pool thread serves anyone else. */
static int resource_cap(bool on, alps_error **err)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct c[_LINUX_CAPABILITY_U32S_3];
	const unsigned word = CAP_TO_INDEX(CAP_SYS_RESOURCE);
	const uint32_t bit = CAP_TO_MASK(CAP_SYS_RESOURCE);
	if (syscall(SYS_capget, &h, c) < 0)
		return alps_fail_errno(err, "capget");
	if (!(c[word].permitted & bit))
		return 0;
	if (on)
		c[word].effective |= bit;
	else
		c[word].effective &= ~bit;
	if (syscall(SYS_capset, &h, c) < 0)
		return alps_fail_errno(err, "capset");
	return 0;
}

static int as_user(void *arg, alps_error **err)
{
	struct xp *x = arg;
	if (geteuid() != 0)
		return 0;       /* an unprivileged daemon bypasses nothing */
	setfsgid(x->gid);
	setfsuid(x->uid);
	/* setfsuid() says nothing of failure: read the ids back. */
	if ((uid_t)setfsuid((uid_t)-1) != x->uid || (gid_t)setfsgid((gid_t)-1) != x->gid)
		return alps_fail(err, ALPS_E_INTERNAL, "cannot take uid %u's file system ids",
				 (unsigned)x->uid);
	return resource_cap(false, err);
}

static void as_root(void)
{
	alps_error *e = NULL;
	if (geteuid() != 0)
		return;
	setfsuid(0);
	setfsgid(0);
	if (setfsuid((uid_t)-1) != 0 || setfsgid((gid_t)-1) != 0 || resource_cap(true, &e) < 0) {
		/* A pool thread left with the user's identity would fail later
		 * work in puzzling ways: stop here instead. */
		log_error("export: cannot return to root's identity%s%s", e ? ": " : "",
			  e ? e->msg : "");
		abort();
	}
}

/* Beyond flatten_check_output(): the caller's own file (the client
 * creates it), and no file of a kernel interface (/proc, /sys, cgroups),
 * whose writes act on the writer rather than store bytes. */
static int check_owner(const struct xp *x, alps_error **err)
{
	static const long kernel_fs[] = { PROC_SUPER_MAGIC, SYSFS_MAGIC, CGROUP_SUPER_MAGIC,
					  CGROUP2_SUPER_MAGIC, DEBUGFS_MAGIC, SECURITYFS_MAGIC,
					  BPF_FS_MAGIC, TRACEFS_MAGIC };
	struct stat st;
	struct statfs sf;
	if (fstat(x->fd, &st) < 0 || fstatfs(x->fd, &sf) < 0)
		return alps_fail_errno(err, "the output file");
	if (st.st_uid != x->uid)
		return alps_fail(err, ALPS_E_PERMISSION, "the output file belongs to uid %u, not "
				 "to you (uid %u)", (unsigned)st.st_uid, (unsigned)x->uid);
	for (size_t i = 0; i < ARRAY_SIZE(kernel_fs); i++)
		if ((long)sf.f_type == kernel_fs[i])
			return alps_fail(err, ALPS_E_INVALID,
					 "the output file is a kernel interface (/proc, /sys)");
	return 0;
}

/* Worker: the image the caller may see, then its layers into the fd. */
static void export_work(void *arg)
{
	struct xp *x = arg;
	struct store_image *img = NULL;
	if (flatten_check_output(x->fd, &x->err) < 0 || check_owner(x, &x->err) < 0 ||
	    store_image_find(x->d->store, x->key, x->viewer, &img, &x->err) < 0)
		return;
	const char **paths = xcalloc(img->nlayers + 1, sizeof(*paths));
	for (size_t i = 0; i < img->nlayers; i++)
		paths[i] = img->layers[i].path;
	struct flatten_opts o = {
		.compressor = x->compressor, .recompress = x->recompress,
		.budget = work_pool_budget(x->d->pool), .cancel = &x->cancel,
		.progress = on_progress, .progress_arg = x,
	};
	x->digest = xstrdup(img->digest);
	x->layers = (uint32_t)img->nlayers;
	o.before_write = as_user;
	o.before_write_arg = x;
	if (flatten_layers(paths, img->nlayers, x->fd, &o, &x->res, &x->err) < 0)
		alps_error_prefix(&x->err, "exporting %s", img->digest);
	as_root();
	free(paths);
	store_image_free(img);
}

static void send_progress(struct xp *x)
{
	Alps__ExportReply r = ALPS__EXPORT_REPLY__INIT;
	r.bytes_done = atomic_load(&x->done);
	r.bytes_total = atomic_load(&x->total);
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_EXPORT_REPLY;
	resp.export_reply = &r;
	request_progress(x->rq, &resp);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	send_progress(arg);
}

static void export_done(void *arg)
{
	struct xp *x = arg;
	if (x->err) {
		_cleanup_free_ char *msg = log_escape(x->err->msg, 512);
		log_info("export %s for uid %u failed: %s", x->key, (unsigned)x->uid, msg);
		request_fail(x->rq, steal_pointer(&x->err));
		return xp_free(x);
	}
	log_info("export %s (%s) for uid %u: %llu files, %llu bytes, %llu blocks copied, "
		 "%llu recompressed", x->key, x->digest, (unsigned)x->uid,
		 (unsigned long long)x->res.files, (unsigned long long)x->res.out_bytes,
		 (unsigned long long)x->res.blocks_copied,
		 (unsigned long long)x->res.blocks_recompressed);
	Alps__ExportReply r = ALPS__EXPORT_REPLY__INIT;
	r.bytes_done = r.bytes_total = x->res.file_bytes;
	r.digest = x->digest;
	r.layers = x->layers;
	r.entries = x->res.entries;
	r.files = x->res.files;
	r.blocks_copied = x->res.blocks_copied;
	r.blocks_recompressed = x->res.blocks_recompressed;
	r.size = x->res.out_bytes;
	r.compressor = x->res.compressor;
	r.block_size = x->res.block_size;
	Alps__Response resp = ALPS__RESPONSE__INIT;
	resp.payload_case = ALPS__RESPONSE__PAYLOAD_EXPORT_REPLY;
	resp.export_reply = &r;
	request_finish(x->rq, &resp);
	xp_free(x);
}

/* The client went away: its file is removed, stop writing it. */
static void on_closed(void *arg)
{
	struct xp *x = arg;
	x->watch = NULL;
	atomic_store(&x->cancel, true);
}

/* A digest (prefix) as it is, a reference in its canonical form. */
static char *export_key(struct daemon *d, const char *text, alps_error **err)
{
	size_t hex = strspn(text, "0123456789abcdef");
	if (str_has_prefix(text, "sha256:") || str_has_prefix(text, "sha512:") ||
	    (hex >= 12 && text[hex] == '\0'))
		return xstrdup(text);
	struct image_ref ref;
	if (ref_parse(text, d->cfg->default_registry, &ref, err) < 0)
		return NULL;
	char *s = ref_format(&ref);
	ref_free(&ref);
	return s;
}

static int check_request(const Alps__ExportRequest *e, size_t nfds, alps_error **err)
{
	if (!e || !e->reference || !*e->reference)
		return alps_fail(err, ALPS_E_INVALID, "export: no image given");
	if (nfds != 1)
		return alps_fail(err, ALPS_E_INVALID, "export needs the output file's descriptor "
				 "(got %zu file descriptors)", nfds);
	if (e->compressor && *e->compressor) {
		struct squash_opts so = { .compressor = e->compressor };
		if (squash_opts_check(&so, err) < 0)
			return -1;
	}
	return 0;
}

static struct xp *xp_new(struct request *rq, const Alps__ExportRequest *e, int fd, char *key)
{
	struct xp *x = xzalloc(sizeof(*x));
	x->rq = request_ref(rq);
	x->d = request_daemon(rq);
	x->fd = fd;
	x->key = key;
	x->compressor = e->compressor && *e->compressor ? xstrdup(e->compressor) : NULL;
	x->recompress = e->recompress;
	x->uid = request_peer(rq)->uid;
	x->gid = request_peer(rq)->gid;
	x->viewer = request_peer_is_admin(rq) ? STORE_UID_ANY : (int64_t)x->uid;
	atomic_init(&x->cancel, false);
	x->tick = event_new(x->d->base, -1, EV_PERSIST, on_tick, x);
	struct timeval tv = { 0, EXPORT_TICK_MS * 1000 };
	event_add(x->tick, &tv);
	x->watch = request_watch_close(rq, on_closed, x);
	if (!x->watch)
		atomic_store(&x->cancel, true);
	return x;
}

static int op_export(struct request *rq, const Alps__Request *req, alps_error **err)
{
	const Alps__ExportRequest *e = req->export;
	int fd = -1;
	size_t nfds = request_take_fds(rq, &fd, 1);
	char *key = NULL;
	if (check_request(e, nfds, err) < 0 ||
	    !(key = export_key(request_daemon(rq), e->reference, err))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	struct xp *x = xp_new(rq, e, fd, key);
	if (work_submit(x->d, export_work, export_done, x, err) < 0) {
		xp_free(x);
		return -1;
	}
	return 0;
}

const struct handler handler_export = {
	ALPS__REQUEST__OP_EXPORT, "export", PRIV_USER, op_export,
};
