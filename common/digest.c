/* digest.c: see digest.h. */
#include <config.h>

#include <string.h>

#include "digest.h"
#include "log.h"

static const struct {
	const char *name;
	size_t hex_len;
} algos[] = {
	[DIGEST_SHA256] = { "sha256", 64 },
	[DIGEST_SHA512] = { "sha512", 128 },
};

const char *digest_algo_name(enum digest_algo algo)
{
	return algos[algo].name;
}

size_t digest_hex_len(enum digest_algo algo)
{
	return algos[algo].hex_len;
}

const char *digest_hex(const char *digest)
{
	const char *colon = strchr(digest, ':');
	return colon ? colon + 1 : digest;
}

/* The grammar of the algorithm part: components of [a-z0-9] joined by one
 * of "+._-".  A digest of an algorithm we do not know is well formed but
 * unusable, and the caller deserves to hear which of the two it is. */
static bool algorithm_well_formed(const char *s, size_t len)
{
	bool need_alnum = true;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (alnum) {
			need_alnum = false;
		} else if (strchr("+._-", c) && !need_alnum) {
			need_alnum = true;
		} else {
			return false;
		}
	}
	return len > 0 && !need_alnum;
}

static bool hex_lower(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static int fail_digest(alps_error **err, int code, const char *what, const char *s,
		       const char *why)
{
	_cleanup_free_ char *esc = log_escape(s, 160);
	return alps_fail(err, code, "%s \"%s\" is not valid: %s", what, esc, why);
}

int digest_parse(const char *s, const char *what, enum digest_algo *algo, alps_error **err)
{
	const char *colon = s ? strchr(s, ':') : NULL;
	if (!what)
		what = "digest";
	if (!colon)
		return fail_digest(err, ALPS_E_INVALID, what, s ? s : "",
				   "expected algorithm:hex");
	size_t alen = (size_t)(colon - s);
	if (!algorithm_well_formed(s, alen))
		return fail_digest(err, ALPS_E_INVALID, what, s, "malformed algorithm");
	for (size_t i = 0; i < ARRAY_SIZE(algos); i++) {
		if (strlen(algos[i].name) != alen || memcmp(s, algos[i].name, alen) != 0)
			continue;
		const char *hex = colon + 1;
		size_t hlen = strlen(hex);
		if (hlen != algos[i].hex_len || !hex_lower(hex, hlen)) {
			_cleanup_free_ char *why = xasprintf(
				"%s needs %zu lowercase hex digits", algos[i].name, algos[i].hex_len);
			return fail_digest(err, ALPS_E_INVALID, what, s, why);
		}
		if (algo)
			*algo = (enum digest_algo)i;
		return 0;
	}
	return fail_digest(err, ALPS_E_UNSUPPORTED, what, s,
			   "unsupported algorithm (sha256 and sha512 are)");
}

bool digest_valid(const char *s)
{
	return digest_parse(s, NULL, NULL, NULL) == 0;
}
