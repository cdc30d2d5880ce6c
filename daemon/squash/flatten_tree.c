/* flatten_tree.c: the layers' trees merged into one, bottom first, as
 * overlayfs shows them (see flatten.h). */
#include <config.h>

#include "daemon/squash/flatten_int.h"

/* --- hard links within a layer --- */

static size_t link_slot(const struct fl_links *l, uint32_t num)
{
	size_t i = (num * 2654435761u) & l->mask;
	while (l->slots[i].num && l->slots[i].num != num)
		i = (i + 1) & l->mask;
	return i;
}

static void links_reset(struct fl_links *l)
{
	free(l->slots);
	l->mask = 255;
	l->used = 0;
	l->slots = xcalloc(l->mask + 1, sizeof(*l->slots));
}

static void links_grow(struct fl_links *l)
{
	struct fl_links n = { .mask = l->mask * 2 + 1, .used = l->used };
	n.slots = xcalloc(n.mask + 1, sizeof(*n.slots));
	for (size_t i = 0; i <= l->mask; i++)
		if (l->slots[i].num)
			n.slots[link_slot(&n, l->slots[i].num)] = l->slots[i];
	free(l->slots);
	*l = n;
}

static void links_put(struct fl_links *l, uint32_t num, struct sq_inode *ino)
{
	if (2 * (l->used + 1) > l->mask)
		links_grow(l);
	size_t i = link_slot(l, num);
	if (!l->slots[i].num)
		l->used++;
	l->slots[i].num = num;
	l->slots[i].ino = ino;
}

/* --- metadata --- */

static void xattrs_clear(struct sq_inode *ino)
{
	for (size_t i = 0; i < ino->nxattrs; i++) {
		free(ino->xattrs[i].key);
		free(ino->xattrs[i].value);
	}
	free(ino->xattrs);
	ino->xattrs = NULL;
	ino->nxattrs = 0;
}

/* One key and value; the overlay's own (opaque) are noted, not kept. */
static int xattr_one(struct fl_layer *L, struct sq_inode *ino, bool *opaque)
{
	sqfs_xattr_entry_t *key = NULL;
	sqfs_xattr_value_t *val = NULL;
	int ret = sqfs_xattr_reader_read_key(L->xr, &key);
	if (ret == 0)
		ret = sqfs_xattr_reader_read_value(L->xr, key, &val);
	if (ret == 0) {
		const char *k = (const char *)key->key;
		if (strcmp(k, OVERLAY_OPAQUE_XATTR) == 0) {
			*opaque = val->size == 1 && val->value[0] == 'y';
		} else if (!str_has_prefix(k, "trusted.overlay.")) {
			ino->xattrs = xreallocarray(ino->xattrs, ino->nxattrs + 1, sizeof(*ino->xattrs));
			struct sq_xattr *x = &ino->xattrs[ino->nxattrs++];
			x->key = xstrdup(k);
			x->value = xmemdup(val->value, val->size);
			x->size = val->size;
		}
	}
	sqfs_free(key);
	sqfs_free(val);
	return ret;
}

static int read_xattrs(struct flatten *fl, struct fl_layer *L, const sqfs_inode_generic_t *src,
		       struct sq_inode *ino, bool *opaque, alps_error **err)
{
	*opaque = false;
	xattrs_clear(ino);
	sqfs_u32 idx = NO_XATTRS;
	sqfs_inode_get_xattr_index(src, &idx);
	if (idx == NO_XATTRS)
		return 0;
	sqfs_xattr_id_t desc;
	int ret = sqfs_xattr_reader_get_desc(L->xr, idx, &desc);
	if (ret == 0 && desc.count > XATTRS_PER_ENTRY_MAX)
		ret = SQFS_ERROR_CORRUPTED;
	if (ret == 0)
		ret = sqfs_xattr_reader_seek_kv(L->xr, &desc);
	for (sqfs_u32 i = 0; ret == 0 && i < desc.count; i++)
		ret = xattr_one(L, ino, opaque);
	if (ret != 0)
		return sq_fail(&fl->sq, err, ret, "reading extended attributes");
	return 0;
}

static int apply_meta(struct flatten *fl, struct fl_layer *L, const sqfs_tree_node_t *n,
		      struct sq_inode *ino, bool *opaque, alps_error **err)
{
	ino->mode = n->inode->base.mode;
	ino->uid = n->uid;
	ino->gid = n->gid;
	ino->mtime = n->inode->base.mod_time;
	return read_xattrs(fl, L, n->inode, ino, opaque, err);
}

/* --- entries --- */

static bool is_whiteout(const sqfs_inode_generic_t *i)
{
	if (i->base.type == SQFS_INODE_CDEV)
		return i->data.dev.devno == 0;
	return i->base.type == SQFS_INODE_EXT_CDEV && i->data.dev_ext.devno == 0;
}

static int leaf_payload(struct flatten *fl, size_t li, const sqfs_tree_node_t *n,
			struct sq_inode *ino, alps_error **err)
{
	const sqfs_inode_generic_t *s = n->inode;
	switch (s->base.type) {
	case SQFS_INODE_SLINK:
	case SQFS_INODE_EXT_SLINK: {
		size_t len = s->base.type == SQFS_INODE_SLINK ? s->data.slink.target_size
							      : s->data.slink_ext.target_size;
		if (len > s->payload_bytes_used || len > SYMLINK_MAX_BYTES)
			return alps_fail(err, ALPS_E_INTEGRITY, "layer %s: a malformed symbolic link",
					 fl->layers[li].path);
		ino->target = xstrndup((const char *)s->extra, len);
		return 0;
	}
	case SQFS_INODE_CDEV:
	case SQFS_INODE_BDEV:
		ino->devno = s->data.dev.devno;
		return 0;
	case SQFS_INODE_EXT_CDEV:
	case SQFS_INODE_EXT_BDEV:
		ino->devno = s->data.dev_ext.devno;
		return 0;
	case SQFS_INODE_FILE:
	case SQFS_INODE_EXT_FILE:
		if (fl->nfiles == fl->cap)
			fl->files = xreallocarray(fl->files, fl->cap = fl->cap ? 2 * fl->cap : 256,
						  sizeof(*fl->files));
		fl->files[fl->nfiles++] = (struct fl_file){ .ino = ino, .layer = li, .src = s };
		return 0;
	default:
		return 0;
	}
}

/* The output inode of a non-directory: a new one, or the one an earlier
 * name of the same layer inode got (a hard link). */
static int leaf_inode(struct flatten *fl, size_t li, const sqfs_tree_node_t *n,
		      struct sq_inode **out, alps_error **err)
{
	uint32_t num = n->inode->base.inode_number;
	size_t slot = link_slot(&fl->links, num);
	if (num && fl->links.slots[slot].num == num) {
		*out = fl->links.slots[slot].ino;
		return 0;
	}
	struct sq_inode *ino = sq_inode_new(&fl->sq, n->inode->base.mode);
	bool opaque;
	if (apply_meta(fl, &fl->layers[li], n, ino, &opaque, err) < 0 ||
	    leaf_payload(fl, li, n, ino, err) < 0)
		return -1;
	if (num)
		links_put(&fl->links, num, ino);
	*out = ino;
	return 0;
}

static int merge_dir(struct flatten *fl, size_t li, const sqfs_tree_node_t *src,
		     struct sq_dentry *dst, unsigned depth, alps_error **err);

/* A directory of the layer over what the name was below. */
static int merge_subdir(struct flatten *fl, size_t li, const sqfs_tree_node_t *n,
			struct sq_dentry *dir, struct sq_dentry *old, unsigned depth,
			alps_error **err)
{
	const char *name = (const char *)n->name;
	struct sq_inode *ino = old && S_ISDIR(old->inode->mode) ? old->inode
							       : sq_inode_new(&fl->sq, S_IFDIR);
	bool opaque;
	if (apply_meta(fl, &fl->layers[li], n, ino, &opaque, err) < 0)
		return -1;
	/* Opaque: nothing from below shows through. */
	if (old && (opaque || old->inode != ino)) {
		sq_dentry_remove(&fl->sq, old);
		old = NULL;
	}
	struct sq_dentry *d = old;
	if (!d && sq_dentry_add(&fl->sq, dir, name, strlen(name), ino, &d, err) < 0)
		return -1;
	return merge_dir(fl, li, n, d, depth + 1, err);
}

static bool name_ok(const char *n)
{
	size_t len = strlen(n);
	return len > 0 && len <= NAME_MAX_BYTES && !strchr(n, '/') && strcmp(n, ".") != 0 &&
	       strcmp(n, "..") != 0;
}

static int merge_entry(struct flatten *fl, size_t li, const sqfs_tree_node_t *n,
		       struct sq_dentry *dir, unsigned depth, alps_error **err)
{
	const char *name = (const char *)n->name;
	if (!name_ok(name)) {
		_cleanup_free_ char *esc = log_escape(name, 300);
		return alps_fail(err, ALPS_E_INTEGRITY, "layer %s: an entry named '%s'",
				 fl->layers[li].path, esc);
	}
	struct sq_dentry *old = sq_ht_lookup(&fl->sq.ht, dir, name, strlen(name));
	if (S_ISDIR(n->inode->base.mode))
		return merge_subdir(fl, li, n, dir, old, depth, err);
	if (old)
		sq_dentry_remove(&fl->sq, old);
	if (is_whiteout(n->inode))
		return 0;
	struct sq_inode *ino;
	if (leaf_inode(fl, li, n, &ino, err) < 0)
		return -1;
	return sq_dentry_add(&fl->sq, dir, name, strlen(name), ino, NULL, err);
}

static int merge_dir(struct flatten *fl, size_t li, const sqfs_tree_node_t *src,
		     struct sq_dentry *dst, unsigned depth, alps_error **err)
{
	if (depth > FL_MAX_DEPTH)
		return alps_fail(err, ALPS_E_LIMIT, "layer %s: directories nested deeper than %u",
				 fl->layers[li].path, FL_MAX_DEPTH);
	for (const sqfs_tree_node_t *n = src->children; n; n = n->next)
		if (merge_entry(fl, li, n, dst, depth, err) < 0)
			return -1;
	return 0;
}

/* Layer li over the tree so far; its root's metadata is the root's. */
int fl_merge_layer(struct flatten *fl, size_t li, alps_error **err)
{
	links_reset(&fl->links);
	bool opaque;
	const sqfs_tree_node_t *root = fl->layers[li].root;
	if (!S_ISDIR(root->inode->base.mode))
		return alps_fail(err, ALPS_E_INTEGRITY, "layer %s: its root is not a directory",
				 fl->layers[li].path);
	if (apply_meta(fl, &fl->layers[li], root, fl->sq.root->inode, &opaque, err) < 0)
		return -1;
	return merge_dir(fl, li, root, fl->sq.root, 0, err);
}
