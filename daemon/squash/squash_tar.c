/* squash_tar.c: reading the tar: each entry checked, normalised and
 * placed in the tree; regular file data goes to the block processor. */
#include <config.h>

#include "daemon/squash/squash_int.h"

static const uint8_t zeros[64 * 1024];

/* --- reading the tar --- */

void sq_report_progress(struct squash *sq)
{
	if (sq->progress)
		sq->progress(sq->progress_arg, stream_source_bytes(sq->src), sq->tar_bytes);
}

/* Every byte of the tar stream passes here once: hash, count, limit. */
static int account(struct squash *sq, const void *buf, size_t n, alps_error **err)
{
	if (EVP_DigestUpdate(sq->sha, buf, n) != 1)
		return alps_fail(err, ALPS_E_INTERNAL, "SHA-256 update failed");
	sq->tar_bytes += n;
	if (sq->tar_bytes > sq->set.max_tar_bytes ||
	    sq->hole_bytes > sq->set.max_tar_bytes - sq->tar_bytes)
		return alps_fail(err, ALPS_E_LIMIT, "layer is larger than %llu bytes uncompressed",
				 (unsigned long long)sq->set.max_tar_bytes);
	if (sq->tar_bytes >= sq->next_progress) {
		sq->next_progress = sq->tar_bytes + PROGRESS_EVERY;
		sq_report_progress(sq);
	}
	return 0;
}

static la_ssize_t tar_read(struct archive *a, void *arg, const void **buf)
{
	struct squash *sq = arg;
	if (sq->read_err)
		return -1;
	ssize_t n = stream_read(sq->src, sq->rbuf, READ_BUF_SIZE, &sq->read_err);
	if (n > 0 && account(sq, sq->rbuf, (size_t)n, &sq->read_err) < 0)
		n = -1;
	if (n < 0) {
		archive_set_error(a, EIO, "%s", sq->read_err ? sq->read_err->msg : "read error");
		return -1;
	}
	*buf = sq->rbuf;
	return n;
}

/* A libarchive failure.  If it started in our read callback (the stream
 * failed, a limit was hit), that error is the one to report. */
static int archive_fail(struct squash *sq, alps_error **err, const char *fmt, ...)
	ALPS_PRINTF(3, 4);
static int archive_fail(struct squash *sq, alps_error **err, const char *fmt, ...)
{
	if (sq->read_err) {
		if (err && !*err)
			*err = steal_pointer(&sq->read_err);
		return -1;
	}
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *what = xvasprintf(fmt, ap);
	va_end(ap);
	const char *why = archive_error_string(sq->ar);
	return alps_fail(err, ALPS_E_INVALID, "%s: %s", what, why ? why : "unknown libarchive error");
}

/* Read what follows the end-of-archive marker: the diff_id covers the
 * whole stream, and the decompressor checks its trailer only at the end. */
static int drain(struct squash *sq, alps_error **err)
{
	for (;;) {
		ssize_t n = stream_read(sq->src, sq->rbuf, READ_BUF_SIZE, err);
		if (n <= 0)
			return (int)n;
		if (account(sq, sq->rbuf, (size_t)n, err) < 0)
			return -1;
	}
}

/* Normalise a tar path into out: leading '/', empty and '.' components
 * dropped, components joined by '/' ("" is the root).  NULL, or what is
 * wrong with it, to follow "entry '...' ". */
static const char *path_normalise(const char *raw, char out[PATH_MAX_BYTES + 1])
{
	size_t len = strlen(raw), o = 0;
	int depth = 0;
	bool dotdot = false;
	if (len == 0)
		return "has an empty name";
	if (len > PATH_MAX_BYTES)
		return "has a path longer than 4096 bytes";
	for (const char *p = raw; *p;) {
		while (*p == '/')
			p++;
		const char *c = p;
		while (*p && *p != '/')
			p++;
		size_t n = (size_t)(p - c);
		if (n == 0 || (n == 1 && c[0] == '.'))
			continue;
		if (n == 2 && c[0] == '.' && c[1] == '.') {
			if (--depth < 0)
				return "escapes the layer root";
			dotdot = true;
			continue;
		}
		if (n > NAME_MAX_BYTES)
			return "has a name longer than 255 bytes";
		depth++;
		if (o)
			out[o++] = '/';
		memcpy(out + o, c, n);
		o += n;
	}
	out[o] = '\0';
	/* "a/../b" stays inside, but nothing legitimate writes it, and
	 * refusing it keeps one meaning for every path. */
	return dotdot ? "has a '..' component" : NULL;
}

enum entry_kind { KIND_NORMAL, KIND_WHITEOUT, KIND_OPAQUE, KIND_SKIP };

/* What an entry is by its name (OCI image spec, "whiteouts"); NULL or
 * what is wrong with it.  *last is the last component. */
static const char *classify(const char *path, enum entry_kind *kind, const char **last)
{
	const char *slash = strrchr(path, '/');
	*last = slash ? slash + 1 : path;
	*kind = KIND_NORMAL;
	for (const char *c = path; c < *last; c = strchr(c, '/') + 1) {
		/* .wh..wh.* is AUFS bookkeeping (.wh..wh.plnk and its
		 * contents): no file of the image. */
		if (str_has_prefix(c, WH_META_PREFIX)) {
			*kind = KIND_SKIP;
			return NULL;
		}
		if (str_has_prefix(c, WH_PREFIX))
			return "is inside a whiteout";
	}
	if (strcmp(*last, WH_OPAQUE) == 0) {
		*kind = KIND_OPAQUE;
	} else if (str_has_prefix(*last, WH_META_PREFIX)) {
		*kind = KIND_SKIP;
	} else if (str_has_prefix(*last, WH_PREFIX)) {
		const char *name = *last + strlen(WH_PREFIX);
		if (!*name)
			return "is a whiteout without a name";
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			return "is a whiteout of '.' or '..'";
		*kind = KIND_WHITEOUT;
	}
	return NULL;
}

static struct sq_inode *implied_dir(struct squash *sq)
{
	return sq_inode_new(sq, S_IFDIR | 0755);
}

/* A whiteout or opaque marker below a non-directory of this layer hides
 * nothing the non-directory does not hide already (umoci writes dir/.wh.x
 * after turning dir into a symlink): drop it.  The link is never followed. */
static int parent_not_dir(struct squash *sq, enum entry_kind kind, const char *slash,
			  alps_error **err)
{
	if (kind == KIND_WHITEOUT || kind == KIND_OPAQUE) {
		_cleanup_free_ char *esc = log_escape(sq->path, 256);
		log_debug("squash: dropping whiteout '%s' below a non-directory", esc);
		return 1;
	}
	return sq_entry_fail(sq, err, ALPS_E_INVALID, "has a parent '%.*s' that is not a directory",
			  (int)(slash - sq->path), sq->path);
}

/* The directory holding the last component of sq->path, creating the
 * missing ones as implied directories (0755 root:root, mtime 0).  1: the
 * entry is to be dropped (parent_not_dir()). */
static int walk_parents(struct squash *sq, enum entry_kind kind, const char *last,
			struct sq_dentry **out, alps_error **err)
{
	struct sq_dentry *dir = sq->root;
	for (const char *c = sq->path; c < last;) {
		const char *slash = strchr(c, '/');
		size_t n = (size_t)(slash - c);
		struct sq_dentry *d = sq_ht_lookup(&sq->ht, dir, c, n);
		bool opaque = false;
		if (d && d->inode->whiteout) {
			/* Deleted from below, re-created here: only this
			 * layer's content shows. */
			sq_dentry_remove(sq, d);
			d = NULL;
			opaque = true;
		}
		if (!d) {
			if (sq_dentry_add(sq, dir, c, n, implied_dir(sq), &d, err) < 0)
				return -1;
			d->inode->opaque = opaque;
		} else if (!S_ISDIR(d->inode->mode)) {
			return parent_not_dir(sq, kind, slash, err);
		}
		dir = d;
		c = slash + 1;
	}
	*out = dir;
	return 0;
}

/* A later directory entry for an existing directory updates its metadata
 * and keeps its children (tar semantics). */
static void dir_update(struct sq_inode *dst, struct sq_inode *src)
{
	dst->mode = src->mode;
	dst->uid = src->uid;
	dst->gid = src->gid;
	dst->mtime = src->mtime;
	for (size_t i = 0; i < dst->nxattrs; i++) {
		free(dst->xattrs[i].key);
		free(dst->xattrs[i].value);
	}
	free(dst->xattrs);
	dst->xattrs = steal_pointer(&src->xattrs);
	dst->nxattrs = src->nxattrs;
	src->nxattrs = 0;
}

/* Put ino at dir/name.  A later entry replaces an earlier one; whiteouts
 * only hide lower layers, so they never replace what this layer has. */
static int place(struct squash *sq, struct sq_dentry *dir, const char *name,
		 struct sq_inode *ino, alps_error **err)
{
	size_t len = strlen(name);
	struct sq_dentry *old = sq_ht_lookup(&sq->ht, dir, name, len);
	if (old) {
		struct sq_inode *o = old->inode;
		if (o == ino)
			return 0;
		if (ino->whiteout) {
			if (S_ISDIR(o->mode))
				o->opaque = true;
			return 0;
		}
		if (S_ISDIR(o->mode) && S_ISDIR(ino->mode)) {
			dir_update(o, ino);
			return 0;
		}
		if (o->whiteout && S_ISDIR(ino->mode))
			ino->opaque = true;
		sq_dentry_remove(sq, old);
	}
	return sq_dentry_add(sq, dir, name, len, ino, NULL, err);
}

static bool xattr_kept(const char *key)
{
	/* overlayfs reads trusted.overlay.* on lower layers (opaque,
	 * redirect, metacopy...): from a layer they would change what the
	 * stack shows, so only the converter sets them. */
	if (str_has_prefix(key, "trusted.overlay."))
		return false;
	return (str_has_prefix(key, "user.") && key[5]) ||
	       (str_has_prefix(key, "trusted.") && key[8]) ||
	       (str_has_prefix(key, "security.") && key[9]);
}

static void xattr_set(struct sq_inode *ino, const char *key, const void *value, size_t size)
{
	for (size_t i = 0; i < ino->nxattrs; i++) {
		if (strcmp(ino->xattrs[i].key, key) == 0) {
			free(ino->xattrs[i].value);
			ino->xattrs[i].value = xmemdup(value, size);
			ino->xattrs[i].size = size;
			return;
		}
	}
	ino->xattrs = xreallocarray(ino->xattrs, ino->nxattrs + 1, sizeof(*ino->xattrs));
	ino->xattrs[ino->nxattrs++] = (struct sq_xattr){
		.key = xstrdup(key), .value = xmemdup(value, size), .size = size,
	};
}

/* Extended attributes from pax SCHILY.xattr / LIBARCHIVE.xattr records. */
static int entry_xattrs(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
			alps_error **err)
{
	const char *key;
	const void *value;
	size_t size;
	if (archive_entry_xattr_reset(e) > XATTRS_PER_ENTRY_MAX)
		return sq_entry_fail(sq, err, ALPS_E_LIMIT, "has more than %d extended attributes",
				  XATTRS_PER_ENTRY_MAX);
	while (archive_entry_xattr_next(e, &key, &value, &size) == ARCHIVE_OK) {
		if (!xattr_kept(key)) {
			_cleanup_free_ char *k = log_escape(key, 64), *p = log_escape(sq->path, 256);
			log_debug("squash: dropping xattr '%s' of '%s'", k, p);
			continue;
		}
		if (strlen(key) > NAME_MAX_BYTES || size > XATTR_VALUE_MAX)
			return sq_entry_fail(sq, err, ALPS_E_INVALID,
					  "has an extended attribute over Linux's size limits");
		xattr_set(ino, key, value ? value : "", value ? size : 0);
	}
	return 0;
}

static int entry_meta(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
		      alps_error **err)
{
	la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "has owner %lld:%lld, outside 0..%u",
				  (long long)uid, (long long)gid, UINT32_MAX);
	ino->uid = (uint32_t)uid;
	ino->gid = (uint32_t)gid;
	/* squashfs keeps unsigned 32-bit seconds: clamp rather than wrap. */
	time_t t = archive_entry_mtime(e);
	ino->mtime = t < 0 ? 0 : (uint64_t)t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
	ino->mode = (ino->mode & S_IFMT) | (archive_entry_perm(e) & 07777);
	return entry_xattrs(sq, e, ino, err);
}

static int feed(struct squash *sq, const void *buf, size_t len, alps_error **err)
{
	int ret = sqfs_block_processor_append(sq->proc, buf, len);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing file data");
	return 0;
}

/* Where a regular file is: logical bytes so far, and whole blocks of holes
 * recorded instead of fed (so the processor has pos - skipped * bs bytes). */
struct file_pos {
	uint64_t pos, skipped;
};

static int feed_zeros(struct squash *sq, uint64_t len, alps_error **err)
{
	while (len > 0) {
		size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
		if (feed(sq, zeros, n, err) < 0)
			return -1;
		len -= n;
	}
	return 0;
}

static void record_hole(struct sq_inode *ino, uint64_t index, uint64_t count)
{
	if (ino->nholes && ino->holes[ino->nholes - 1].index == index) {
		ino->holes[ino->nholes - 1].count += count;
		return;
	}
	ino->holes = xreallocarray(ino->holes, ino->nholes + 1, sizeof(*ino->holes));
	ino->holes[ino->nholes++] = (struct sq_hole){ index, count };
}

/* A hole of a sparse file.  The zeros up to the next block boundary and
 * after the last whole block go to the block processor (under two blocks);
 * the whole blocks between are only recorded and become sparse blocks of
 * the inode at the end (sq_apply_holes()), so a few bytes of sparse map cost
 * no CPU per byte of hole.  Holes still count against the size limit: the
 * inode's block list grows with them. */
static int feed_hole(struct squash *sq, struct sq_inode *ino, struct file_pos *fp,
		     uint64_t len, alps_error **err)
{
	/* account() keeps tar_bytes + hole_bytes <= max_tar_bytes. */
	if (len > sq->set.max_tar_bytes - sq->tar_bytes - sq->hole_bytes)
		return sq_entry_fail(sq, err, ALPS_E_LIMIT,
				  "expands the layer beyond %llu bytes (sparse holes included)",
				  (unsigned long long)sq->set.max_tar_bytes);
	sq->hole_bytes += len;
	uint64_t bs = sq->set.block_size;
	uint64_t head = (bs - fp->pos % bs) % bs;
	if (head > len)
		head = len;
	if (feed_zeros(sq, head, err) < 0)
		return -1;
	fp->pos += head;
	len -= head;
	uint64_t whole = len / bs;
	if (whole > 0) {
		/* pos is on a block boundary, so is what the processor has. */
		record_hole(ino, (fp->pos - fp->skipped * bs) / bs, whole);
		fp->skipped += whole;
		fp->pos += whole * bs;
		len -= whole * bs;
	}
	fp->pos += len;
	return feed_zeros(sq, len, err);
}

static int file_data(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
		     alps_error **err)
{
	int ret = sqfs_block_processor_begin_file(sq->proc, &ino->file, NULL, 0);
	if (ret != 0)
		return sq_fail(sq, err, ret, "starting a file");
	struct file_pos fp = { 0 };
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t off;
		int r = archive_read_data_block(sq->ar, &buf, &size, &off);
		if (r == ARCHIVE_EOF)
			break;
		/* ARCHIVE_RETRY (damaged data) ranks above ARCHIVE_WARN:
		 * only OK and WARN mean there is data. */
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			_cleanup_free_ char *esc = log_escape(sq->raw_path, 256);
			return archive_fail(sq, err, "entry '%s' cannot be read", esc);
		}
		if (off < 0 || (uint64_t)off < fp.pos)
			return sq_entry_fail(sq, err, ALPS_E_INVALID, "has overlapping sparse data");
		if (feed_hole(sq, ino, &fp, (uint64_t)off - fp.pos, err) < 0 ||
		    feed(sq, buf, size, err) < 0)
			return -1;
		fp.pos += size;
	}
	la_int64_t size = archive_entry_size(e);
	if (archive_entry_size_is_set(e) && size > 0 && (uint64_t)size > fp.pos &&
	    feed_hole(sq, ino, &fp, (uint64_t)size - fp.pos, err) < 0)
		return -1;
	ret = sqfs_block_processor_end_file(sq->proc);
	if (ret != 0)
		return sq_fail(sq, err, ret, "finishing a file");
	sq->files++;
	return 0;
}

static int entry_symlink(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
			 alps_error **err)
{
	const char *target = archive_entry_symlink(e);
	if (!target || !*target)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "is a symlink without a target");
	if (strlen(target) > SYMLINK_MAX_BYTES)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "is a symlink with a target over %d bytes",
				  SYMLINK_MAX_BYTES);
	ino->target = xstrdup(target);
	return 0;
}

static int entry_device(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
			alps_error **err)
{
	unsigned long long major = (unsigned long long)archive_entry_rdevmajor(e);
	unsigned long long minor = (unsigned long long)archive_entry_rdevminor(e);
	/* squashfs stores the kernel's 32-bit encoding: 12-bit major,
	 * 20-bit minor. */
	if (major > 0xfff || minor > 0xfffff)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "is a device %llu:%llu beyond 4095:1048575",
				  major, minor);
	ino->devno = (uint32_t)((minor & 0xff) | (major << 8) | ((minor & ~0xffull) << 12));
	return 0;
}

/* The content of a non-link entry into ino, by type. */
static int entry_content(struct squash *sq, struct archive_entry *e, struct sq_inode *ino,
			 alps_error **err)
{
	switch (ino->mode & S_IFMT) {
	case S_IFREG:
		return file_data(sq, e, ino, err);
	case S_IFLNK:
		return entry_symlink(sq, e, ino, err);
	case S_IFCHR:
	case S_IFBLK:
		return entry_device(sq, e, ino, err);
	case S_IFDIR:
	case S_IFIFO:
	case S_IFSOCK:
		return 0;
	}
	return sq_entry_fail(sq, err, ALPS_E_UNSUPPORTED, "has an unsupported file type (0%o)",
			  (unsigned)(ino->mode & S_IFMT));
}

static int add_node(struct squash *sq, struct archive_entry *e, struct sq_dentry *dir,
		    const char *name, alps_error **err)
{
	struct sq_inode *ino = sq_inode_new(sq, archive_entry_filetype(e));
	if (entry_meta(sq, e, ino, err) < 0 || entry_content(sq, e, ino, err) < 0)
		return -1;
	return place(sq, dir, name, ino, err);
}

static int add_whiteout(struct squash *sq, struct archive_entry *e, struct sq_dentry *dir,
			const char *name, alps_error **err)
{
	/* overlayfs's whiteout: a character device 0:0. */
	struct sq_inode *ino = sq_inode_new(sq, S_IFCHR);
	ino->whiteout = true;
	la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	ino->uid = uid >= 0 && uid <= UINT32_MAX ? (uint32_t)uid : 0;
	ino->gid = gid >= 0 && gid <= UINT32_MAX ? (uint32_t)gid : 0;
	time_t t = archive_entry_mtime(e);
	ino->mtime = t < 0 ? 0 : (uint64_t)t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
	return place(sq, dir, name + strlen(WH_PREFIX), ino, err);
}

/* The dentry at a normalised path, or NULL; never creates anything. */
static struct sq_dentry *lookup_path(struct squash *sq, const char *path)
{
	struct sq_dentry *d = sq->root;
	for (const char *c = path; d;) {
		const char *slash = strchr(c, '/');
		size_t n = slash ? (size_t)(slash - c) : strlen(c);
		if (!S_ISDIR(d->inode->mode))
			return NULL;
		d = sq_ht_lookup(&sq->ht, d, c, n);
		if (!slash)
			break;
		c = slash + 1;
	}
	return d;
}

static int add_hardlink(struct squash *sq, const char *target_raw, struct sq_dentry *dir,
			const char *name, alps_error **err)
{
	char target[PATH_MAX_BYTES + 1];
	_cleanup_free_ char *esc = log_escape(target_raw, 256);
	const char *why = path_normalise(target_raw, target);
	if (why)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "is a hard link to '%s', which %s", esc, why);
	struct sq_dentry *t = target[0] ? lookup_path(sq, target) : sq->root;
	if (!t || t->inode->whiteout)
		return sq_entry_fail(sq, err, ALPS_E_INVALID,
				  "is a hard link to '%s', which is not in the layer before it", esc);
	if (S_ISDIR(t->inode->mode))
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "is a hard link to directory '%s'", esc);
	return place(sq, dir, name, t->inode, err);
}

/* "./" and the like: the root directory's own metadata. */
static int add_root(struct squash *sq, struct archive_entry *e, alps_error **err)
{
	if (archive_entry_hardlink(e) || archive_entry_filetype(e) != AE_IFDIR)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "would replace the layer root with a non-directory");
	struct sq_inode *tmp = sq_inode_new(sq, S_IFDIR);
	if (entry_meta(sq, e, tmp, err) < 0)
		return -1;
	dir_update(sq->root->inode, tmp);
	return 0;
}

static int add_entry(struct squash *sq, struct archive_entry *e, alps_error **err)
{
	sq->raw_path = archive_entry_pathname(e);
	if (!sq->raw_path)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "has no name");
	const char *why = path_normalise(sq->raw_path, sq->path);
	if (why)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "%s", why);
	if (!sq->path[0])
		return add_root(sq, e, err);
	enum entry_kind kind;
	const char *last;
	why = classify(sq->path, &kind, &last);
	if (why)
		return sq_entry_fail(sq, err, ALPS_E_INVALID, "%s", why);
	if (kind == KIND_SKIP) {
		_cleanup_free_ char *esc = log_escape(sq->path, 256);
		log_debug("squash: skipping AUFS metadata '%s'", esc);
		return 0;
	}
	struct sq_dentry *dir = NULL;
	int r = walk_parents(sq, kind, last, &dir, err);
	if (r != 0)
		return r < 0 ? -1 : 0;
	if (kind == KIND_OPAQUE) {
		dir->inode->opaque = true;
		return 0;
	}
	if (kind == KIND_WHITEOUT)
		return add_whiteout(sq, e, dir, last, err);
	const char *link_target = archive_entry_hardlink(e);
	if (link_target)
		return add_hardlink(sq, link_target, dir, last, err);
	return add_node(sq, e, dir, last, err);
}

/* libarchive could not start: an empty stream is an empty layer (as Go's
 * tar reader, and so containerd, treat it); anything else is not a tar. */
static int open_failed(struct squash *sq, alps_error **err)
{
	if (sq->read_err)
		return archive_fail(sq, err, "reading the layer");
	if (sq->tar_bytes == 0)
		return 0;
	const char *why = archive_error_string(sq->ar);
	return alps_fail(err, ALPS_E_INVALID, "layer is not a tar archive: %s",
			 why ? why : "unrecognised data");
}

static int next_failed(struct squash *sq, alps_error **err)
{
	if (sq->entries == 0)
		return open_failed(sq, err);
	_cleanup_free_ char *esc = log_escape(sq->path, 256);
	return archive_fail(sq, err, "reading the layer after entry '%s'", esc);
}

int sq_out_failed(struct squash *sq, alps_error **err)
{
	return alps_fail_errnum(err, sq->out.errnum, "writing %s", sq->out_path);
}

static int read_entries(struct squash *sq, alps_error **err)
{
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(sq->ar, &e);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			/* An empty stream fails at the first header. */
			if (next_failed(sq, err) < 0)
				return -1;
			return 0;
		}
		if (r == ARCHIVE_WARN)
			log_debug("squash: libarchive: %s", archive_error_string(sq->ar));
		if (++sq->entries > sq->set.max_entries)
			return alps_fail(err, ALPS_E_LIMIT, "layer has more than %llu entries",
					 (unsigned long long)sq->set.max_entries);
		if (add_entry(sq, e, err) < 0)
			return -1;
		if (sq->out.broken)
			return sq_out_failed(sq, err);
	}
}

int sq_read_layer(struct squash *sq, alps_error **err)
{
	sq->ar = archive_read_new();
	if (!sq->ar || archive_read_support_format_tar(sq->ar) != ARCHIVE_OK ||
	    archive_read_support_filter_none(sq->ar) != ARCHIVE_OK)
		return alps_fail(err, ALPS_E_INTERNAL, "setting up libarchive");
	if (archive_read_open(sq->ar, sq, NULL, tar_read, NULL) != ARCHIVE_OK) {
		if (open_failed(sq, err) < 0)
			return -1;
	} else if (read_entries(sq, err) < 0) {
		return -1;
	}
	return drain(sq, err);
}
