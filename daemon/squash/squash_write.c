/* squash_write.c: writing the tree after the tar: inodes children
 * first, directories, then the fragment, id and xattr tables and the superblock. */
#include <config.h>

#include "daemon/squash/squash_int.h"

static const uint8_t zeros[64 * 1024];

/* --- writing the tree --- */

static int dentry_cmp(const void *a, const void *b)
{
	const struct sq_dentry *x = *(const struct sq_dentry *const *)a;
	const struct sq_dentry *y = *(const struct sq_dentry *const *)b;
	return strcmp(x->name, y->name);
}

/* squashfs lists a directory sorted by name (bytewise). */
static void sort_children(struct sq_dentry *d)
{
	size_t n = 0;
	for (struct sq_dentry *c = d->child; c; c = c->next)
		n++;
	d->sorted = xcalloc(n, sizeof(*d->sorted));
	d->nsorted = n;
	n = 0;
	for (struct sq_dentry *c = d->child; c; c = c->next)
		d->sorted[n++] = c;
	qsort(d->sorted, d->nsorted, sizeof(*d->sorted), dentry_cmp);
}

/* Number inodes breadth first, so a directory's children get consecutive
 * numbers and its listing needs few headers.  Hard links share a number. */
static int number_inodes(struct squash *sq, alps_error **err)
{
	size_t cap = 64, head = 0, tail = 0;
	struct sq_dentry **queue = xcalloc(cap, sizeof(*queue));
	uint32_t count = 1;
	sq->root->inode->ino = count;
	queue[tail++] = sq->root;
	while (head < tail) {
		struct sq_dentry *d = queue[head++];
		sort_children(d);
		for (size_t i = 0; i < d->nsorted; i++) {
			struct sq_inode *ino = d->sorted[i]->inode;
			if (!ino->ino && count == UINT32_MAX - 1) {
				free(queue);
				return alps_fail(err, ALPS_E_LIMIT, "layer has too many inodes for squashfs");
			}
			if (!ino->ino)
				ino->ino = ++count;
			if (!S_ISDIR(ino->mode))
				continue;
			if (tail == cap)
				queue = xreallocarray(queue, cap *= 2, sizeof(*queue));
			queue[tail++] = d->sorted[i];
		}
	}
	free(queue);
	sq->inode_count = count;
	return 0;
}

static int write_xattrs(struct squash *sq, const struct sq_inode *ino, uint32_t *idx,
			alps_error **err)
{
	*idx = NO_XATTRS;
	if (!ino->nxattrs && !ino->opaque)
		return 0;
	int ret = sqfs_xattr_writer_begin(sq->xw, 0);
	for (size_t i = 0; ret == 0 && i < ino->nxattrs; i++)
		ret = sqfs_xattr_writer_add(sq->xw, ino->xattrs[i].key, ino->xattrs[i].value,
					    ino->xattrs[i].size);
	if (ret == 0 && ino->opaque)
		ret = sqfs_xattr_writer_add(sq->xw, OVERLAY_OPAQUE_XATTR, "y", 1);
	if (ret == 0)
		ret = sqfs_xattr_writer_end(sq->xw, idx);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing extended attributes");
	return 0;
}

/* Fill the common fields of gen from ino and append it to the inode table. */
static int emit_inode(struct squash *sq, struct sq_inode *ino, sqfs_inode_generic_t *gen,
		      alps_error **err)
{
	gen->base.mode = (sqfs_u16)ino->mode;
	gen->base.mod_time = ino->mtime;
	gen->base.inode_number = ino->ino;
	int ret = sqfs_id_table_id_to_index(sq->ids, ino->uid, &gen->base.uid_idx);
	if (ret == 0)
		ret = sqfs_id_table_id_to_index(sq->ids, ino->gid, &gen->base.gid_idx);
	if (ret != 0)
		return alps_fail(err, ALPS_E_LIMIT,
				 "layer has more distinct owners than squashfs can store (65536)");
	sqfs_u64 block;
	sqfs_u32 offset;
	sqfs_meta_writer_get_position(sq->im, &block, &offset);
	ino->ref = (block << 16) | offset;
	ret = sqfs_meta_writer_write_inode(sq->im, gen);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing an inode");
	ino->written = true;
	return 0;
}

/* A generic inode for what is not a file or directory; caller frees. */
static sqfs_inode_generic_t *leaf_inode(const struct sq_inode *ino)
{
	size_t extra = S_ISLNK(ino->mode) ? strlen(ino->target) : 0;
	sqfs_inode_generic_t *gen = xzalloc(sizeof(*gen) + extra);
	switch (ino->mode & S_IFMT) {
	case S_IFLNK:
		gen->base.type = SQFS_INODE_SLINK;
		gen->data.slink.nlink = ino->nlink;
		gen->data.slink.target_size = (sqfs_u32)extra;
		gen->payload_bytes_available = gen->payload_bytes_used = (sqfs_u32)extra;
		memcpy(gen->extra, ino->target, extra);
		break;
	case S_IFCHR:
	case S_IFBLK:
		gen->base.type = S_ISCHR(ino->mode) ? SQFS_INODE_CDEV : SQFS_INODE_BDEV;
		gen->data.dev.nlink = ino->nlink;
		gen->data.dev.devno = ino->devno;
		break;
	default:
		gen->base.type = S_ISFIFO(ino->mode) ? SQFS_INODE_FIFO : SQFS_INODE_SOCKET;
		gen->data.ipc.nlink = ino->nlink;
		break;
	}
	return gen;
}

static int write_leaf(struct squash *sq, struct sq_inode *ino, alps_error **err)
{
	uint32_t xattr;
	if (write_xattrs(sq, ino, &xattr, err) < 0)
		return -1;
	sqfs_inode_generic_t *gen = S_ISREG(ino->mode) ? ino->file : leaf_inode(ino);
	if (xattr != NO_XATTRS)
		sqfs_inode_set_xattr_index(gen, xattr);
	/* Only extended file inodes have a link count; the basic ones
	 * mean 1.  Set after the xattr index, which may demote. */
	if (S_ISREG(ino->mode) && ino->nlink > 1) {
		sqfs_inode_make_extended(gen);
		gen->data.file_ext.nlink = ino->nlink;
	}
	int ret = emit_inode(sq, ino, gen, err);
	if (gen != ino->file)
		free(gen);
	return ret;
}

static int write_dir(struct squash *sq, struct sq_dentry *d, alps_error **err)
{
	uint32_t nsub = 0, xattr;
	int ret = sqfs_dir_writer_begin(sq->dw, 0);
	for (size_t i = 0; ret == 0 && i < d->nsorted; i++) {
		const struct sq_inode *c = d->sorted[i]->inode;
		nsub += S_ISDIR(c->mode);
		ret = sqfs_dir_writer_add_entry(sq->dw, d->sorted[i]->name, c->ino, c->ref,
						(sqfs_u16)c->mode);
	}
	if (ret == 0)
		ret = sqfs_dir_writer_end(sq->dw);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing a directory listing");
	if (write_xattrs(sq, d->inode, &xattr, err) < 0)
		return -1;
	/* The root's parent: one past the last inode, as mksquashfs does. */
	uint32_t parent = d->parent ? d->parent->inode->ino : sq->inode_count + 1;
	sqfs_inode_generic_t *gen = sq_must(sqfs_dir_writer_create_inode(sq->dw, 2 + nsub, xattr, parent),
					 "a directory inode");
	if (gen->base.type == SQFS_INODE_DIR)
		gen->data.dir.nlink = 2 + nsub;
	else
		gen->data.dir_ext.nlink = 2 + nsub;
	ret = emit_inode(sq, d->inode, gen, err);
	sqfs_free(gen);
	return ret;
}

/* Children before their directory (post-order), without recursion. */
static int write_tree(struct squash *sq, alps_error **err)
{
	struct frame {
		struct sq_dentry *dir;
		size_t next;
	};
	size_t cap = 64, depth = 0;
	_cleanup_free_ struct frame *stack = xcalloc(cap, sizeof(*stack));
	stack[depth++] = (struct frame){ sq->root, 0 };
	while (depth > 0) {
		struct frame *f = &stack[depth - 1];
		if (f->next == f->dir->nsorted) {
			if (write_dir(sq, f->dir, err) < 0)
				return -1;
			depth--;
			continue;
		}
		struct sq_dentry *c = f->dir->sorted[f->next++];
		if (S_ISDIR(c->inode->mode)) {
			if (depth == cap)
				stack = xreallocarray(stack, cap *= 2, sizeof(*stack));
			stack[depth++] = (struct frame){ c, 0 };
		} else if (!c->inode->written && write_leaf(sq, c->inode, err) < 0) {
			return -1;
		}
	}
	return 0;
}

int sq_write_inodes_and_dirs(struct squash *sq, alps_error **err)
{
	sq->super.inode_table_start = sq->out.size;
	if (number_inodes(sq, err) < 0 || write_tree(sq, err) < 0)
		return -1;
	int ret = sqfs_meta_writer_flush(sq->im);
	if (ret == 0)
		ret = sqfs_meta_writer_flush(sq->dm);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing the inode table");
	sq->super.inode_count = sq->inode_count;
	sq->super.root_inode_ref = sq->root->inode->ref;
	sq->super.directory_table_start = sq->out.size;
	ret = sqfs_meta_write_write_to_file(sq->dm);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing the directory table");
	return 0;
}

int sq_write_tables(struct squash *sq, alps_error **err)
{
	int ret = sqfs_frag_table_write(sq->frag, &sq->out.base, &sq->super, sq->cmp);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing the fragment table");
	ret = sqfs_id_table_write(sq->ids, &sq->out.base, &sq->super, sq->cmp);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing the id table");
	ret = sqfs_xattr_writer_flush(sq->xw, &sq->out.base, &sq->super, sq->cmp);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing the xattr table");
	sq->super.bytes_used = sq->out.size;
	ret = sqfs_super_write(&sq->super, &sq->out.base);
	if (ret != 0)
		return sq_fail(sq, err, ret, "writing the superblock");
	/* Loop devices want whole 4 KiB blocks. */
	size_t pad = (size_t)(-sq->out.size % SQFS_DEVBLK_SIZE);
	if (pad && (ret = sq->out.base.write_at(&sq->out.base, sq->out.size, zeros, pad)) != 0)
		return sq_fail(sq, err, ret, "padding the image");
	return 0;
}

/* The recorded holes into ino's block list, as sparse blocks (size 0: no
 * data on disk, the kernel reads zeros), once the block processor is done
 * with the inode. */
int sq_apply_holes(struct squash *sq, struct sq_inode *ino, alps_error **err)
{
	sqfs_inode_generic_t *old = ino->file;
	size_t nold = sqfs_inode_get_file_block_count(old);
	uint64_t added = 0;
	for (size_t h = 0; h < ino->nholes; h++)
		added += ino->holes[h].count;
	/* libsquashfs keeps the block list's byte count in 32 bits. */
	if (added > (UINT32_MAX / sizeof(sqfs_u32)) - nold)
		return alps_fail(err, ALPS_E_LIMIT, "layer has a sparse file with more blocks than squashfs can list");
	size_t total = nold + (size_t)added;
	sqfs_inode_generic_t *gen = xzalloc(sizeof(*gen) + total * sizeof(sqfs_u32));
	memcpy(gen, old, sizeof(*gen));
	gen->payload_bytes_available = gen->payload_bytes_used = (sqfs_u32)(total * sizeof(sqfs_u32));
	size_t o = 0, h = 0;
	for (size_t i = 0; i <= nold; i++) {
		for (; h < ino->nholes && ino->holes[h].index == i; h++)
			for (uint64_t k = 0; k < ino->holes[h].count; k++)
				gen->extra[o++] = 0;
		if (i < nold)
			gen->extra[o++] = old->extra[i];
	}
	sqfs_u64 size = 0;
	uint64_t hole = added * sq->set.block_size;
	sqfs_inode_get_file_size(gen, &size);
	sqfs_inode_make_extended(gen);
	sqfs_inode_set_file_size(gen, size + hole);
	gen->data.file_ext.sparse += hole;
	sqfs_free(old);
	ino->file = gen;
	return 0;
}
