/* base64.h: standard base64 (RFC 4648, '+' '/', '=' padding). */
#ifndef ALPS_BASE64_H
#define ALPS_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* NUL-terminated encoding of len bytes.  Caller frees. */
char *base64_encode(const void *data, size_t len);
/* Decode in (padding optional); NULL on a character outside the alphabet
 * or an impossible length.  *len gets the byte count; the result has a
 * NUL after it.  Caller frees. */
uint8_t *base64_decode(const char *in, size_t *len);

#endif
