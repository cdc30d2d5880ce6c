/* squash_out.c: the output file as libsquashfs sees it (struct out_file). */
#include <config.h>

#include "daemon/squash/squash_int.h"

/* --- the output file --- */

static int out_read_at(sqfs_file_t *f, sqfs_u64 off, void *buf, size_t size)
{
	struct out_file *o = (struct out_file *)f;
	if (off > o->size || size > o->size - off)
		return SQFS_ERROR_OUT_OF_BOUNDS;
	if (o->broken) {
		memset(buf, 0, size);
		return 0;
	}
	uint8_t *p = buf;
	while (size > 0) {
		ssize_t n = pread(o->fd, p, size, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			o->errnum = n < 0 ? errno : EIO;
			return SQFS_ERROR_IO;
		}
		p += n;
		off += (uint64_t)n;
		size -= (size_t)n;
	}
	return 0;
}

static int out_write_at(sqfs_file_t *f, sqfs_u64 off, const void *buf, size_t size)
{
	struct out_file *o = (struct out_file *)f;
	const uint8_t *p = buf;
	uint64_t end = off + size;
	while (size > 0 && !o->broken) {
		ssize_t n = pwrite(o->fd, p, size, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			o->errnum = n < 0 ? errno : EIO;
			o->broken = true;
			break;
		}
		p += n;
		off += (uint64_t)n;
		size -= (size_t)n;
	}
	if (end > o->size)
		o->size = end;
	return 0;
}

static sqfs_u64 out_get_size(const sqfs_file_t *f)
{
	return ((const struct out_file *)f)->size;
}

static int out_truncate(sqfs_file_t *f, sqfs_u64 size)
{
	struct out_file *o = (struct out_file *)f;
	if (!o->broken && ftruncate(o->fd, (off_t)size) < 0) {
		o->errnum = errno;
		return SQFS_ERROR_IO;
	}
	o->size = size;
	return 0;
}

/* The fd belongs to struct squash, which closes it. */
static void out_destroy(sqfs_object_t *obj)
{
	(void)obj;
}

/* An open, empty, readable and writable file (alps export writes the
 * client's); it stays the caller's to close. */
void sq_out_adopt(struct squash *sq, int fd)
{
	sq->out.fd = fd;
	sq->out.base.base.destroy = out_destroy;
	sq->out.base.read_at = out_read_at;
	sq->out.base.write_at = out_write_at;
	sq->out.base.get_size = out_get_size;
	sq->out.base.truncate = out_truncate;
}

int sq_out_open(struct squash *sq, alps_error **err)
{
	sq->out.fd = open(sq->out_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (sq->out.fd < 0)
		return alps_fail_errno(err, "creating %s", sq->out_path);
	sq->created = true;
	sq->out.base.base.destroy = out_destroy;
	sq->out.base.read_at = out_read_at;
	sq->out.base.write_at = out_write_at;
	sq->out.base.get_size = out_get_size;
	sq->out.base.truncate = out_truncate;
	return 0;
}
