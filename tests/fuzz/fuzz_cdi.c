/* fuzz_cdi: libFuzzer target for the CDI spec parser (daemon/hooks/cdi.h).
 *
 * The first byte picks the reader (odd: YAML, even: JSON); the rest is
 * the spec, not NUL-terminated, so a read past its end trips
 * AddressSanitizer.  Beyond not crashing, a spec that parses must hold
 * what the job's plan relies on: absolute paths without "..", device
 * nodes below /dev, env entries NAME=VALUE, bounded counts.
 *
 *	./fuzz_cdi tests/fuzz/corpus/cdi */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "daemon/hooks/cdi.h"

static void check(bool ok)
{
	if (!ok)
		abort();
}

static void check_path(const char *p)
{
	check(p && p[0] == '/' && strlen(p) <= CDI_MAX_STRING);
	for (const char *s = p; (s = strstr(s, "..")); s += 2)
		check(!((s == p || s[-1] == '/') && (s[2] == '\0' || s[2] == '/')));
}

static void check_edits(const struct cdi_edits *e)
{
	check(e->nenv <= CDI_MAX_ITEMS && e->nnodes <= CDI_MAX_ITEMS &&
	      e->nmounts <= CDI_MAX_ITEMS && e->nhooks <= CDI_MAX_ITEMS);
	for (size_t i = 0; i < e->nenv; i++)
		check(strchr(e->env[i], '=') && e->env[i][0] != '=');
	for (size_t i = 0; i < e->nnodes; i++) {
		check_path(e->nodes[i].path);
		check_path(e->nodes[i].host_path);
		check(strncmp(e->nodes[i].path, "/dev/", 5) == 0);
	}
	for (size_t i = 0; i < e->nmounts; i++) {
		check_path(e->mounts[i].host_path);
		check_path(e->mounts[i].container_path);
	}
	for (size_t i = 0; i < e->nhooks; i++)
		check_path(e->hooks[i].path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool yaml = data[0] & 1;
	char *text = malloc(size - 1 ? size - 1 : 1);
	memcpy(text, data + 1, size - 1);
	struct cdi_spec *spec = NULL;
	alps_error *err = NULL;
	if (cdi_spec_parse(text, size - 1, yaml, "fuzz", &spec, &err) == 0) {
		check(spec && spec->ndevices >= 1 && spec->ndevices <= CDI_MAX_ITEMS);
		check_edits(&spec->edits);
		for (size_t i = 0; i < spec->ndevices; i++)
			check_edits(&spec->devices[i].edits);
		cdi_spec_free(spec);
	} else {
		check(err && err->msg && !spec);
		alps_error_free(err);
	}
	free(text);
	return 0;
}
