/* cdi_yaml.c: a YAML spec as a jansson value (cdi_yaml_to_json, cdi.h).
 *
 * libyaml's event parser, one document, into the shapes JSON has: plain
 * scalars that read as integers, booleans or null become those, every
 * other scalar a string.  Aliases are refused (they expand a small file
 * into a large tree), depth and node count are bounded, and a key may
 * appear once per mapping. */
#include <config.h>

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common/util.h"
#include "daemon/hooks/cdi.h"

#define YAML_MAX_DEPTH 32
#define YAML_MAX_NODES 100000

struct yreader {
	yaml_parser_t parser;
	size_t nodes;
	alps_error **err;
};

static json_t *fail_at(struct yreader *r, const yaml_event_t *ev, const char *why)
{
	alps_fail(r->err, ALPS_E_INVALID, "line %zu, column %zu: %s",
		  ev ? ev->start_mark.line + 1 : r->parser.problem_mark.line + 1,
		  ev ? ev->start_mark.column + 1 : r->parser.problem_mark.column + 1, why);
	return NULL;
}

static int next(struct yreader *r, yaml_event_t *ev)
{
	if (yaml_parser_parse(&r->parser, ev))
		return 0;
	fail_at(r, NULL, r->parser.problem ? r->parser.problem : "malformed YAML");
	return -1;
}

/* An integer in decimal, 0x hex or 0 octal (YAML 1.1), else false. */
static bool scalar_int(const char *s, json_int_t *out)
{
	if (!*s || strspn(s, "+-0123456789abcdefABCDEFxXoO_") != strlen(s))
		return false;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 0);
	if (errno || *end)
		return false;
	*out = (json_int_t)v;
	return true;
}

static json_t *scalar(const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return json_stringn(s, ev->data.scalar.length);
	json_int_t n;
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0)
		return json_true();
	if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0)
		return json_false();
	if (!*s || strcmp(s, "null") == 0 || strcmp(s, "~") == 0)
		return json_null();
	if (scalar_int(s, &n))
		return json_integer(n);
	return json_stringn(s, ev->data.scalar.length);
}

static json_t *node(struct yreader *r, yaml_event_t *ev, int depth);

static json_t *sequence(struct yreader *r, int depth)
{
	json_t *a = json_array();
	for (;;) {
		yaml_event_t ev;
		if (next(r, &ev) < 0)
			break;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			return a;
		}
		json_t *v = node(r, &ev, depth + 1);
		yaml_event_delete(&ev);
		if (!v)
			break;
		json_array_append_new(a, v);
	}
	json_decref(a);
	return NULL;
}

static json_t *mapping(struct yreader *r, int depth)
{
	json_t *o = json_object();
	for (;;) {
		yaml_event_t ev;
		if (next(r, &ev) < 0)
			break;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return o;
		}
		if (ev.type != YAML_SCALAR_EVENT || memchr(ev.data.scalar.value, 0,
							   ev.data.scalar.length)) {
			fail_at(r, &ev, "a mapping key must be a plain string");
			yaml_event_delete(&ev);
			break;
		}
		_cleanup_free_ char *key = xstrdup((const char *)ev.data.scalar.value);
		bool dup = json_object_get(o, key) != NULL;
		if (dup)
			fail_at(r, &ev, "a key appears twice in a mapping");
		yaml_event_delete(&ev);
		if (dup || next(r, &ev) < 0)
			break;
		json_t *v = node(r, &ev, depth + 1);
		yaml_event_delete(&ev);
		if (!v)
			break;
		json_object_set_new(o, key, v);
	}
	json_decref(o);
	return NULL;
}

/* The value that starts with ev. */
static json_t *node(struct yreader *r, yaml_event_t *ev, int depth)
{
	if (depth > YAML_MAX_DEPTH)
		return fail_at(r, ev, "nested more than 32 levels deep");
	if (++r->nodes > YAML_MAX_NODES)
		return fail_at(r, ev, "more than 100000 values");
	switch (ev->type) {
	case YAML_SCALAR_EVENT: {
		json_t *v = scalar(ev);
		return v ? v : fail_at(r, ev, "a string that is not UTF-8");
	}
	case YAML_SEQUENCE_START_EVENT:
		return sequence(r, depth);
	case YAML_MAPPING_START_EVENT:
		return mapping(r, depth);
	case YAML_ALIAS_EVENT:
		return fail_at(r, ev, "aliases are not accepted in a CDI spec");
	default:
		return fail_at(r, ev, "unexpected YAML structure");
	}
}

/* Skip the events before the document's root; ev is that root's first. */
static int document_start(struct yreader *r, yaml_event_t *ev)
{
	for (;;) {
		if (next(r, ev) < 0)
			return -1;
		if (ev->type != YAML_STREAM_START_EVENT && ev->type != YAML_DOCUMENT_START_EVENT)
			return 0;
		yaml_event_delete(ev);
	}
}

static int document_end(struct yreader *r)
{
	yaml_event_t ev;
	if (next(r, &ev) < 0)
		return -1;
	bool ok = ev.type == YAML_DOCUMENT_END_EVENT;
	yaml_event_delete(&ev);
	if (ok && next(r, &ev) < 0)
		return -1;
	ok = ok && ev.type == YAML_STREAM_END_EVENT;
	if (!ok)
		fail_at(r, &ev, "a spec is one YAML document");
	yaml_event_delete(&ev);
	return ok ? 0 : -1;
}

json_t *cdi_yaml_to_json(const char *text, size_t len, alps_error **err)
{
	struct yreader r = { .err = err };
	if (!yaml_parser_initialize(&r.parser)) {
		alps_fail(err, ALPS_E_INTERNAL, "cannot start the YAML parser");
		return NULL;
	}
	yaml_parser_set_input_string(&r.parser, (const unsigned char *)text, len);
	yaml_event_t ev;
	json_t *root = NULL;
	if (document_start(&r, &ev) == 0) {
		if (ev.type == YAML_STREAM_END_EVENT)
			fail_at(&r, &ev, "an empty document");
		else
			root = node(&r, &ev, 0);
		yaml_event_delete(&ev);
	}
	if (root && document_end(&r) < 0) {
		json_decref(root);
		root = NULL;
	}
	yaml_parser_delete(&r.parser);
	return root;
}
