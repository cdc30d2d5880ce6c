/* progress.c: alps pull's progress on stderr.
 *
 * On a terminal that understands escape sequences: a block of one line per
 * layer and a total, redrawn in place.  The cursor moves up by the lines
 * the last draw wrote (never more, so the user's scrollback is never
 * overwritten), every line is cut to the terminal's width (a wrapped line
 * would make that count wrong), and the block is erased when the pull
 * ends, so that no stale state stays above the summary.  Sizes are
 * compressed (download) bytes, as in the summary.  Elsewhere (a
 * pipe, a file, TERM=dumb): a plain line when a layer changes state. */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "client/progress.h"

static bool terminal_can_redraw(void)
{
	const char *term = getenv("TERM");
	return isatty(STDERR_FILENO) && term && *term && strcmp(term, "dumb") != 0;
}

void progress_init(struct progress *p, bool enabled)
{
	memset(p, 0, sizeof(*p));
	p->enabled = enabled;
	p->redraw = enabled && terminal_can_redraw();
}

static unsigned terminal_width(void)
{
	struct winsize ws;
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

static const char *short_digest(const char *d)
{
	const char *colon = strchr(d, ':');
	return colon ? colon + 1 : d;
}

/* One line of the block, cleared first and cut to width - 1 columns (the
 * text is ASCII: digests, states, sizes). */
static void put_line(struct progress *p, unsigned width, const char *text)
{
	size_t max = width > 1 ? width - 1 : 1;
	fprintf(stderr, "\033[2K%.*s\n", (int)(strlen(text) < max ? strlen(text) : max), text);
	p->drawn++;
}

static void total_text(const Alps__PullProgress *pp, char *buf, size_t size)
{
	char done[32], total[32], rate[32];
	format_size(pp->bytes_done, done, sizeof(done));
	format_size(pp->bytes_total, total, sizeof(total));
	int n = snprintf(buf, size, "%s: %s / %s", pp->phase, done, total);
	/* The first reports have no rate yet: say nothing rather than 0 B/s. */
	if (n > 0 && (size_t)n < size && pp->rate_bps > 0) {
		format_size(pp->rate_bps, rate, sizeof(rate));
		n += snprintf(buf + n, size - (size_t)n, ", %s/s", rate);
		if (n > 0 && (size_t)n < size && pp->eta_ms > 0)
			snprintf(buf + n, size - (size_t)n, ", ETA %" PRIu64 " s",
				 (pp->eta_ms + 999) / 1000);
	}
}

static void draw(struct progress *p, const Alps__PullProgress *pp)
{
	unsigned width = terminal_width();
	size_t before = p->drawn;
	if (before > 0)
		fprintf(stderr, "\r\033[%zuA", before);
	p->drawn = 0;
	char line[512];
	for (size_t i = 0; i < pp->n_layers; i++) {
		const Alps__LayerProgress *l = pp->layers[i];
		char done[32], total[32];
		format_size(l->bytes_done, done, sizeof(done));
		format_size(l->bytes_total, total, sizeof(total));
		/* Sizes before the state: what a narrow terminal cuts is the
		 * end of the state, not the numbers. */
		snprintf(line, sizeof(line), "%.*s %9s / %-9s %s", width < 60 ? 7 : 12,
			 short_digest(l->digest), done, total, l->state);
		put_line(p, width, line);
	}
	total_text(pp, line, sizeof(line));
	put_line(p, width, line);
	while (p->drawn < before)       /* fewer lines than last time: blank the rest */
		put_line(p, width, "");
	fflush(stderr);
}

static void plain(struct progress *p, const Alps__PullProgress *pp)
{
	if (p->nstates < pp->n_layers) {
		p->states = xreallocarray(p->states, pp->n_layers, sizeof(char *));
		for (size_t i = p->nstates; i < pp->n_layers; i++)
			p->states[i] = NULL;
		p->nstates = pp->n_layers;
	}
	for (size_t i = 0; i < pp->n_layers; i++) {
		const Alps__LayerProgress *l = pp->layers[i];
		if (p->states[i] && strcmp(p->states[i], l->state) == 0)
			continue;
		free(p->states[i]);
		p->states[i] = xstrdup(l->state);
		char total[32];
		format_size(l->bytes_total, total, sizeof(total));
		fprintf(stderr, "layer %.12s: %s (%s compressed)\n", short_digest(l->digest),
			l->state, total);
	}
}

void progress_update(struct progress *p, const Alps__PullProgress *pp)
{
	if (!p->enabled)
		return;
	if (p->redraw)
		draw(p, pp);
	else
		plain(p, pp);
}

void progress_finish(struct progress *p)
{
	if (p->redraw && p->drawn > 0) {
		fprintf(stderr, "\r\033[%zuA\033[J", p->drawn);
		fflush(stderr);
	}
	p->drawn = 0;
	for (size_t i = 0; i < p->nstates; i++)
		free(p->states[i]);
	free(p->states);
	p->states = NULL;
	p->nstates = 0;
}
