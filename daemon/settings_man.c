/* settings_man.c: alpsd.conf(5), written from the option table
 * (config_option_info) by `alpsd --print-options-man` when the package is
 * built, so the page lists every option and cannot drift from the code. */
#include <config.h>

#include <inttypes.h>
#include <string.h>

#include "daemon/settings.h"
#include "common/util.h"

/* Text as roff: backslashes doubled, hyphens as \-, and a line never
 * starting with a control character. */
static void roff(FILE *out, const char *s)
{
	if (*s == '.' || *s == '\'')
		fputs("\\&", out);
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\e", out);
		else if (*s == '-')
			fputs("\\-", out);
		else
			fputc(*s, out);
	}
}

static void print_bounds(FILE *out, const struct config_option_info *o)
{
	if (o->choices) {
		fputs("; one of", out);
		for (const char *const *c = o->choices; *c; c++)
			fprintf(out, "%s \\fB%s\\fR", c == o->choices ? "" : ",", *c);
	}
	if (o->bounded && o->max != INT64_MAX)
		fprintf(out, "; %" PRId64 " to %" PRId64, o->min, o->max);
	else if (o->bounded)
		fprintf(out, "; at least %" PRId64, o->min);
}

static void print_option(FILE *out, const struct config_option_info *o)
{
	const char *name = strchr(o->key, '.') + 1;
	fputs(".TP\n.B ", out);
	roff(out, name);
	fputs("\n(", out);
	roff(out, o->type);
	fputs(", default \\(lq", out);
	roff(out, o->def);
	fputs("\\(rq", out);
	print_bounds(out, o);
	fputs(")\n.br\n", out);
	roff(out, o->help);
	fputs(".\n", out);
}

static const char head[] =
	".TH ALPSD.CONF 5 \"2026\" \"alps " PACKAGE_VERSION "\" \"File Formats\"\n"
	".SH NAME\nalpsd.conf \\- configuration of alpsd, the alps node daemon\n"
	".SH SYNOPSIS\n" ALPS_CONFDIR "/alpsd.conf\n"
	".SH DESCRIPTION\nA TOML file of sections ([daemon], [store]...) whose keys are "
	"listed below, with their type, default and bounds.  An unknown section or key, a "
	"value of the wrong type or out of bounds stops \\fBalpsd\\fR at start (or a reload) "
	"with the file, line and key.  \\fBalpsd \\-\\-set\\fR \\fISECTION.KEY=VALUE\\fR sets "
	"any of them on the command line; \\fBalpsd \\-\\-print\\-config\\fR prints the "
	"effective configuration.  SIGHUP reloads the file; daemon.socket, daemon.state_dir "
	"and daemon.run_dir need a restart, and options marked \\(lqread at start\\(rq take "
	"effect at the next one.\n"
	".PP\nSizes are bytes or a number with k, M, G or T (powers of 1024).  Lists are "
	"TOML arrays of strings.  A [hooks.cxi] table holds the keys named hooks.cxi.* "
	"below.\n"
	"This page is generated from the daemon's option table when alps is built.\n";

static const char tail[] =
	".SS [[registry.host]]\nOne table per registry: \\fBhost\\fR (\"name[:port]\"), "
	"\\fBmirrors\\fR (an array of hosts tried first), \\fBinsecure\\fR (plain HTTP), "
	"\\fBca_file\\fR (an absolute path to extra CA certificates).\n"
	".SH FILES\n.TP\n" ALPS_CONFDIR "/alpsd.conf\nThis file; a commented example is "
	"installed with the package.\n"
	".SH SEE ALSO\n.BR alpsd (8),\n.BR alps (1),\n.BR alps\\-edf (5)\n";

void config_print_man(FILE *out)
{
	fputs(head, out);
	struct config_option_info o;
	size_t seclen = 0;
	const char *sec = NULL;
	for (size_t i = 0; config_option_info(i, &o); i++) {
		size_t len = (size_t)(strchr(o.key, '.') - o.key);
		if (!sec || len != seclen || strncmp(sec, o.key, len) != 0) {
			fprintf(out, ".SS [%.*s]\n", (int)len, o.key);
			sec = o.key;
			seclen = len;
		}
		print_option(out, &o);
	}
	fputs(tail, out);
}
