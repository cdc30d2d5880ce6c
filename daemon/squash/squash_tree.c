/* squash_tree.c: the in-memory tree of a layer: dentries (names, in a
 * keyed hash table by parent and name) and the inodes they point at. */
#include <config.h>

#include "daemon/squash/squash_int.h"

/* --- keyed hash table of dentries --- */

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND()                                                              \
	do {                                                                    \
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);   \
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                        \
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                        \
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);   \
	} while (0)

/* SipHash-1-3 (the variant hash tables use).  Words are read in host
 * order: the value only has to be stable within one process. */
static uint64_t siphash13(uint64_t k0, uint64_t k1, const uint8_t *m, size_t len)
{
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
	uint64_t w;
	size_t i;
	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&w, m + i, 8);
		v3 ^= w;
		SIPROUND();
		v0 ^= w;
	}
	w = 0;
	memcpy(&w, m + i, len - i);
	w |= (uint64_t)len << 56;
	v3 ^= w;
	SIPROUND();
	v0 ^= w;
	v2 ^= 0xff;
	SIPROUND();
	SIPROUND();
	SIPROUND();
	return v0 ^ v1 ^ v2 ^ v3;
}

void sq_ht_init(struct sq_htab *ht)
{
	uint64_t k[2];
	if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
		/* No entropy yet (early boot): a weaker key beats failing. */
		k[0] = now_realtime_ms() ^ ((uint64_t)getpid() << 32);
		k[1] = now_monotonic_ns() ^ (uint64_t)(uintptr_t)ht;
	}
	ht->k0 = k[0];
	ht->k1 = k[1];
	ht->mask = 1023;
	ht->buckets = xcalloc(ht->mask + 1, sizeof(*ht->buckets));
}

static uint64_t ht_hash(const struct sq_htab *ht, const struct sq_dentry *parent,
			const char *name, size_t len)
{
	return siphash13(ht->k0 ^ (uint64_t)(uintptr_t)parent, ht->k1, (const uint8_t *)name, len);
}

struct sq_dentry *sq_ht_lookup(const struct sq_htab *ht, const struct sq_dentry *parent,
			       const char *name, size_t len)
{
	uint64_t h = ht_hash(ht, parent, name, len);
	for (struct sq_dentry *d = ht->buckets[h & ht->mask]; d; d = d->hnext) {
		if (d->hash == h && d->parent == parent && d->namelen == len &&
		    memcmp(d->name, name, len) == 0)
			return d;
	}
	return NULL;
}

static void ht_grow(struct sq_htab *ht)
{
	size_t nmask = ht->mask * 2 + 1;
	struct sq_dentry **nb = xcalloc(nmask + 1, sizeof(*nb));
	for (size_t i = 0; i <= ht->mask; i++) {
		struct sq_dentry *d = ht->buckets[i];
		while (d) {
			struct sq_dentry *next = d->hnext;
			d->hnext = nb[d->hash & nmask];
			nb[d->hash & nmask] = d;
			d = next;
		}
	}
	free(ht->buckets);
	ht->buckets = nb;
	ht->mask = nmask;
}

static void ht_insert(struct sq_htab *ht, struct sq_dentry *d)
{
	if (ht->count > ht->mask)
		ht_grow(ht);
	struct sq_dentry **b = &ht->buckets[d->hash & ht->mask];
	d->hnext = *b;
	*b = d;
	ht->count++;
}

static void ht_remove(struct sq_htab *ht, struct sq_dentry *d)
{
	struct sq_dentry **p = &ht->buckets[d->hash & ht->mask];
	while (*p != d)
		p = &(*p)->hnext;
	*p = d->hnext;
	ht->count--;
}

/* --- the tree --- */

struct sq_inode *sq_inode_new(struct squash *sq, uint32_t mode)
{
	struct sq_inode *ino = xzalloc(sizeof(*ino));
	ino->mode = mode;
	ino->all_next = sq->inodes;
	sq->inodes = ino;
	return ino;
}

static void inode_free(struct sq_inode *ino)
{
	for (size_t i = 0; i < ino->nxattrs; i++) {
		free(ino->xattrs[i].key);
		free(ino->xattrs[i].value);
	}
	free(ino->xattrs);
	free(ino->target);
	free(ino->holes);
	sqfs_free(ino->file);
	free(ino);
}

struct sq_dentry *sq_dentry_alloc(const char *name, size_t len, struct sq_inode *ino)
{
	struct sq_dentry *d = xzalloc(sizeof(*d) + len + 1);
	memcpy(d->name, name, len);
	d->namelen = (uint16_t)len;
	d->inode = ino;
	ino->nlink++;
	return d;
}

/* Count a new dentry against the limit: entries and the directories they
 * imply, created over the whole layer, so that neither many entries nor
 * deep paths re-created over and over can use unbounded memory. */
static int node_budget(struct squash *sq, alps_error **err)
{
	if (++sq->nodes <= sq->set.max_entries)
		return 0;
	return alps_fail(err, ALPS_E_LIMIT, "layer has more than %llu entries",
			 (unsigned long long)sq->set.max_entries);
}

int sq_dentry_add(struct squash *sq, struct sq_dentry *dir, const char *name, size_t len,
		  struct sq_inode *ino, struct sq_dentry **out, alps_error **err)
{
	if (node_budget(sq, err) < 0)
		return -1;
	struct sq_dentry *d = sq_dentry_alloc(name, len, ino);
	d->parent = dir;
	d->hash = ht_hash(&sq->ht, dir, name, len);
	ht_insert(&sq->ht, d);
	d->next = dir->child;
	if (dir->child)
		dir->child->prev = d;
	dir->child = d;
	if (out)
		*out = d;
	return 0;
}

static void dentry_free_one(struct squash *sq, struct sq_dentry *d)
{
	ht_remove(&sq->ht, d);
	if (d->prev)
		d->prev->next = d->next;
	else
		d->parent->child = d->next;
	if (d->next)
		d->next->prev = d->prev;
	d->inode->nlink--;
	free(d->sorted);
	free(d);
}

/* Remove d and everything under it, without recursion: a layer decides
 * how deep the tree is. */
void sq_dentry_remove(struct squash *sq, struct sq_dentry *d)
{
	struct sq_dentry *cur = d;
	for (;;) {
		if (cur->child) {
			cur = cur->child;
			continue;
		}
		struct sq_dentry *up = cur->parent;
		bool done = cur == d;
		dentry_free_one(sq, cur);
		if (done)
			return;
		cur = up;
	}
}

void sq_tree_free(struct squash *sq)
{
	if (sq->ht.buckets) {
		for (size_t i = 0; i <= sq->ht.mask; i++) {
			struct sq_dentry *d = sq->ht.buckets[i];
			while (d) {
				struct sq_dentry *next = d->hnext;
				free(d->sorted);
				free(d);
				d = next;
			}
		}
		free(sq->ht.buckets);
	}
	if (sq->root) {
		free(sq->root->sorted);
		free(sq->root);
	}
	while (sq->inodes) {
		struct sq_inode *next = sq->inodes->all_next;
		inode_free(sq->inodes);
		sq->inodes = next;
	}
}
