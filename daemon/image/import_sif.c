/* import_sif.c: the root file system of a SIF file (see import_sif.h).
 * Written from the layout described in sylabs/sif pkg/sif (header and
 * rawDescriptor, encoded with Go's binary.LittleEndian: packed, no
 * padding). */
#include <config.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/image/import_sif.h"

#define LAUNCH_LEN 32
#define MAGIC "SIF_MAGIC"               /* with its NUL: 10 bytes */
#define MAGIC_OFF LAUNCH_LEN
#define VERSION_OFF (MAGIC_OFF + 10)
#define ARCH_OFF (VERSION_OFF + 3)
#define DESCR_TOTAL_OFF (ARCH_OFF + 3 + 16 + 8 + 8 + 8)  /* after id, times, free count */
#define DATA_PARTITION 0x4004
#define DATA_OCI_ROOT_INDEX 0x400a      /* an OCI-SIF: OCI blobs, no partition */
#define FS_SQUASH 1
#define FS_ENCRYPTED_SQUASH 5
#define PART_PRIMSYS 2
/* In a descriptor: datatype(4) used(1) id(4) group(4) link(4) offset(8)
 * size(8) size_with_padding(8) created(8) modified(8) uid(8) gid(8)
 * name(128) extra(384); a partition's extra: fstype(4) parttype(4) arch(3). */
#define D_USED 4
#define D_OFFSET 17
#define D_SIZE 25
#define D_NAME 73
#define D_EXTRA 201

struct sif_src {
	int fd;                 /* -1: mem */
	const uint8_t *mem;
	uint64_t size;
};

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int src_read(const struct sif_src *s, uint64_t off, void *buf, size_t len, alps_error **err)
{
	if (off > s->size || len > s->size - off)
		return alps_fail(err, ALPS_E_INVALID, "SIF: truncated (%zu bytes at offset %llu "
				 "past the end of the file)", len, (unsigned long long)off);
	if (s->fd < 0) {
		memcpy(buf, s->mem + off, len);
		return 0;
	}
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pread(s->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return alps_fail_errno(err, "SIF: reading");
		if (n == 0)
			return alps_fail(err, ALPS_E_INVALID, "SIF: truncated");
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

bool sif_is_sif(const void *buf, size_t len)
{
	return len >= VERSION_OFF && memcmp((const uint8_t *)buf + MAGIC_OFF, MAGIC, 10) == 0;
}

static const char *arch_name(const uint8_t a[3])
{
	static const char *const names[] = {
		"", "386", "amd64", "arm", "arm64", "ppc64", "ppc64le", "mips", "mipsle",
		"mips64", "mips64le", "s390x", "riscv64", "loong64",
	};
	if (a[2] != 0 || a[0] < '0' || a[0] > '9' || a[1] < '0' || a[1] > '9')
		return "";
	unsigned n = (unsigned)(a[0] - '0') * 10 + (unsigned)(a[1] - '0');
	return n < ARRAY_SIZE(names) ? names[n] : "";
}

/* The descriptor table's place, checked against the file. */
static int header_check(const uint8_t *h, uint64_t file_size, uint64_t *off, uint64_t *n,
			alps_error **err)
{
	if (!sif_is_sif(h, SIF_HEADER_SIZE))
		return alps_fail(err, ALPS_E_INVALID, "not a SIF file (no SIF_MAGIC)");
	if (memcmp(h + VERSION_OFF, "01", 3) != 0)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "SIF: version %.2s is not supported "
				 "(01 is)", (const char *)h + VERSION_OFF);
	uint64_t total = le64(h + DESCR_TOTAL_OFF);
	*off = le64(h + DESCR_TOTAL_OFF + 8);
	uint64_t size = le64(h + DESCR_TOTAL_OFF + 16);
	if (total == 0 || total > SIF_MAX_DESCRIPTORS)
		return alps_fail(err, ALPS_E_INVALID, "SIF: %llu descriptors (1 to %d expected)",
				 (unsigned long long)total, SIF_MAX_DESCRIPTORS);
	if (size < total * SIF_DESCRIPTOR_SIZE || *off < SIF_HEADER_SIZE || *off > file_size ||
	    total * SIF_DESCRIPTOR_SIZE > file_size - *off)
		return alps_fail(err, ALPS_E_INVALID, "SIF: the descriptor table (%llu at offset "
				 "%llu) does not fit in the file", (unsigned long long)total,
				 (unsigned long long)*off);
	*n = total;
	return 0;
}

/* A used partition descriptor of type primary system: check it and fill
 * *out.  *found counts them. */
static int take_primary(const uint8_t *d, uint64_t file_size, struct sif_rootfs *out, int *found,
			alps_error **err)
{
	uint32_t fstype = le32(d + D_EXTRA);
	if (le32(d + D_EXTRA + 4) != PART_PRIMSYS)
		return 0;
	if (++*found > 1)
		return alps_fail(err, ALPS_E_INVALID, "SIF: two primary system partitions");
	if (fstype != FS_SQUASH)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "SIF: the primary partition is %s, "
				 "not squashfs", fstype == FS_ENCRYPTED_SQUASH ? "an encrypted "
				 "squashfs" : fstype == 2 ? "ext3" : "of an unknown file system type");
	uint64_t off = le64(d + D_OFFSET), size = le64(d + D_SIZE);
	if (size == 0 || off > file_size || size > file_size - off)
		return alps_fail(err, ALPS_E_INVALID, "SIF: the primary partition (%llu bytes at "
				 "offset %llu) does not fit in the file",
				 (unsigned long long)size, (unsigned long long)off);
	out->offset = off;
	out->size = size;
	snprintf(out->arch, sizeof(out->arch), "%s", arch_name(d + D_EXTRA + 8));
	memcpy(out->name, d + D_NAME, 128);
	out->name[128] = '\0';
	return 0;
}

static int find_rootfs(const struct sif_src *s, struct sif_rootfs *out, alps_error **err)
{
	uint8_t h[SIF_HEADER_SIZE];
	uint64_t off = 0, n = 0;
	memset(out, 0, sizeof(*out));
	if (s->size < SIF_HEADER_SIZE)
		return alps_fail(err, ALPS_E_INVALID, "SIF: truncated (%llu bytes, shorter than "
				 "its header)", (unsigned long long)s->size);
	if (src_read(s, 0, h, sizeof(h), err) < 0 || header_check(h, s->size, &off, &n, err) < 0)
		return -1;
	_cleanup_free_ uint8_t *tab = xmalloc(n * SIF_DESCRIPTOR_SIZE);
	if (src_read(s, off, tab, n * SIF_DESCRIPTOR_SIZE, err) < 0)
		return -1;
	int found = 0;
	bool oci = false;
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *d = tab + i * SIF_DESCRIPTOR_SIZE;
		oci |= d[D_USED] && le32(d) == DATA_OCI_ROOT_INDEX;
		if (d[D_USED] && le32(d) == DATA_PARTITION &&
		    take_primary(d, s->size, out, &found, err) < 0)
			return -1;
	}
	if (!found && oci)
		return alps_fail(err, ALPS_E_UNSUPPORTED, "SIF: an OCI-SIF (an OCI image inside "
				 "SIF, no squashfs partition) is not supported");
	if (!found)
		return alps_fail(err, ALPS_E_NOT_FOUND, "SIF: no primary system partition "
				 "(no root file system to import)");
	if (!out->arch[0])
		snprintf(out->arch, sizeof(out->arch), "%s", arch_name(h + ARCH_OFF));
	return 0;
}

int sif_find_rootfs(int fd, uint64_t file_size, struct sif_rootfs *out, alps_error **err)
{
	struct sif_src s = { .fd = fd, .size = file_size };
	return find_rootfs(&s, out, err);
}

int sif_find_rootfs_mem(const void *data, size_t len, struct sif_rootfs *out, alps_error **err)
{
	struct sif_src s = { .fd = -1, .mem = data, .size = len };
	return find_rootfs(&s, out, err);
}
