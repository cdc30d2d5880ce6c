/* fresh.c: see fresh.h. */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "daemon/image/fresh.h"
#include "daemon/image/registry.h"
#include "daemon/store/store.h"

int fresh_cached(struct store *st, const char *reference, int64_t uid, struct image_fresh *f,
		 alps_error **err)
{
	struct store_image *img = NULL;
	memset(f, 0, sizeof(*f));
	if (store_image_find(st, reference, uid, &img, err) < 0) {
		if ((*err)->code != ALPS_E_NOT_FOUND)
			return -1;
		alps_error_free(*err);
		*err = NULL;
		return 0;
	}
	f->digest = xstrdup(img->digest);
	f->platform = xstrdup(img->platform ? img->platform : "");
	f->layers = (uint32_t)img->nlayers;
	for (size_t i = 0; i < img->nlayers; i++) {
		f->size += img->layers[i].compressed_size;
		f->damaged |= img->layers[i].damaged;
	}
	store_image_free(img);
	return 1;
}

int fresh_current(struct registry_session *s, const struct image_fresh *f, char **now,
		  alps_error **err)
{
	struct platform p;
	bool have_p = f->platform && *f->platform &&
		      manifest_platform_parse(f->platform, &p, NULL) == 0;
	int rc = registry_current_digest(s, have_p ? &p : NULL, f->digest, now, err);
	if (have_p)
		manifest_platform_free(&p);
	return rc;
}

void fresh_clear(struct image_fresh *f)
{
	free(f->digest);
	free(f->platform);
	memset(f, 0, sizeof(*f));
}
