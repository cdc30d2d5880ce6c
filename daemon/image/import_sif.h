/* import_sif.h: finding the root file system in a Singularity/Apptainer SIF
 * file (the format of github.com/sylabs/sif, specification version 01).
 *
 * A SIF file is a 128-byte global header (a launch script, "SIF_MAGIC",
 * the version "01", the architecture, counts and offsets, all integers
 * little-endian), a table of fixed-size descriptors, and the data objects
 * the descriptors point at.  alps wants one object: the partition of type
 * "primary system" whose file system is squashfs.  Everything read here is
 * untrusted: counts, offsets and sizes are checked against the file's size
 * before use, and a file with two primary partitions is refused rather
 * than guessed at.  Pure code over pread(), for unit tests and fuzzing. */
#ifndef ALPS_DAEMON_IMAGE_IMPORT_SIF_H
#define ALPS_DAEMON_IMAGE_IMPORT_SIF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define SIF_HEADER_SIZE 128
#define SIF_DESCRIPTOR_SIZE 585
#define SIF_MAX_DESCRIPTORS 4096

/* The primary system partition. */
struct sif_rootfs {
	uint64_t offset;        /* of the squashfs image in the file */
	uint64_t size;
	char arch[16];          /* OCI architecture ("amd64"), "" if unknown */
	char name[129];         /* the object's name in the SIF ("rootfs.squashfs") */
};

/* Whether buf (len bytes, the start of a file) looks like SIF. */
bool sif_is_sif(const void *buf, size_t len);

/* Find the root file system of the SIF file fd of file_size bytes.
 * ALPS_E_INVALID for a malformed file, ALPS_E_UNSUPPORTED for a version
 * other than 01 or a primary partition that is not squashfs (ext3, an
 * encrypted squashfs), ALPS_E_NOT_FOUND when there is no primary system
 * partition. */
int sif_find_rootfs(int fd, uint64_t file_size, struct sif_rootfs *out, alps_error **err);

/* The same over a file held in memory (tests, fuzzing). */
int sif_find_rootfs_mem(const void *data, size_t len, struct sif_rootfs *out, alps_error **err);

#endif
