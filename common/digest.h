/* digest.h: content digests as the OCI image spec writes them.
 *
 * A digest is "algorithm:encoded".  alps accepts the two registered
 * algorithms, sha256 (64 hex digits) and sha512 (128), with lowercase hex
 * only: the spec makes the encoded part case sensitive for both, so an
 * uppercase digest would name different content than it seems to.
 *
 * This file is pure string handling so that the client links it without
 * OpenSSL; hashing lives with the daemon code (daemon/image/manifest.h). */
#ifndef ALPS_DIGEST_H
#define ALPS_DIGEST_H

#include "error.h"

enum digest_algo {
	DIGEST_SHA256 = 0,
	DIGEST_SHA512 = 1,
};

/* "sha512:" + 128 hex digits + NUL. */
#define DIGEST_STRLEN_MAX (7 + 128 + 1)

/* Check s; on success store its algorithm in *algo (may be NULL).
 * ALPS_E_INVALID for a malformed digest, ALPS_E_UNSUPPORTED for a
 * well-formed one of another algorithm.  what names the digest in the
 * message ("layer digest"). */
int digest_parse(const char *s, const char *what, enum digest_algo *algo, alps_error **err);
bool digest_valid(const char *s);

/* "sha256", "sha512". */
const char *digest_algo_name(enum digest_algo algo);
/* Number of hex digits of the encoded part. */
size_t digest_hex_len(enum digest_algo algo);
/* The encoded part of a valid digest (after the colon). */
const char *digest_hex(const char *digest);

#endif
