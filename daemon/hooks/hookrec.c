/* hookrec.c: what each hook of a job's prepare did, for `alps jobs`
 * (hooks.h: hook_record, hooks_job_record_runs, hooks_runs_info).
 *
 * A record is {name, result, duration_ms, output}: built-in hooks and CDI
 * devices when resolved (they check host files and add binds: their time
 * is the whole resolve's, which does them all), OCI hooks as run (their
 * last lines of output).  The records live in the job row's
 * environment_json under "hooks_run", so they last as long as the job and
 * cost no schema change; the jobs reply turns them into HookRun messages. */
#include <config.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/hooks/hooks.h"
#include "proto/wire.h"

#define RUNS_KEY "hooks_run"
#define TAIL_LINES 5
#define TAIL_BYTES 1024

char *hook_output_tail(const char *out)
{
	size_t len = out ? strlen(out) : 0;
	while (len && (out[len - 1] == '\n' || out[len - 1] == '\r'))
		len--;
	size_t start = len, lines = 0;
	while (start > 0 && len - start < TAIL_BYTES) {
		if (out[start - 1] == '\n' && ++lines == TAIL_LINES)
			break;
		start--;
	}
	_cleanup_free_ char *tail = xstrndup(out ? out + start : "", len - start);
	/* Lines stay lines; anything else unprintable is escaped. */
	char *res = xstrdup("");
	char *save = NULL;
	for (char *l = strtok_r(tail, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		_cleanup_free_ char *esc = log_escape(l, 0);
		char *next = xasprintf("%s%s%s", res, *res ? "\n" : "", esc);
		free(res);
		res = next;
	}
	return res;
}

void hook_record(struct json_t *runs, const char *name, const char *result, uint64_t ms,
		 const char *output)
{
	if (!runs)
		return;
	json_array_append_new(runs, json_pack("{s:s, s:s, s:I, s:s}", "name", name, "result",
					      result, "duration_ms", (json_int_t)ms, "output",
					      output ? output : ""));
}

char *hooks_job_record_runs(const struct hook_job *hj, char *env_json)
{
	if (!hj || !json_array_size(hj->runs))
		return env_json;
	json_t *j = json_loads(env_json, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return env_json;
	}
	json_object_set(j, RUNS_KEY, hj->runs);
	free(env_json);
	env_json = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return env_json;
}

size_t hooks_runs_info(const char *env_json, Alps__HookRun ***out)
{
	json_t *j = env_json ? json_loads(env_json, 0, NULL) : NULL;
	json_t *runs = json_object_get(j, RUNS_KEY);
	size_t n = json_array_size(runs), i;
	json_t *r;
	*out = xcalloc(n + 1, sizeof(**out));
	json_array_foreach(runs, i, r) {
		Alps__HookRun *h = xmalloc(sizeof(*h));
		alps__hook_run__init(h);
		h->name = xstrdup(json_string_value(json_object_get(r, "name")) ?: "");
		h->result = xstrdup(json_string_value(json_object_get(r, "result")) ?: "");
		h->duration_ms = (uint64_t)json_integer_value(json_object_get(r, "duration_ms"));
		h->output = xstrdup(json_string_value(json_object_get(r, "output")) ?: "");
		(*out)[i] = h;
	}
	json_decref(j);
	return n;
}

void hooks_runs_info_free(Alps__HookRun **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i]->name);
		free(v[i]->result);
		free(v[i]->output);
		free(v[i]);
	}
	free(v);
}
