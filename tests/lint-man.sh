#!/bin/sh
# The man pages must format without a single groff warning (-ww): a typo
# in a macro silently drops text from the page.  groff is in groff-base.
src=${ALPS_SRCDIR:-${srcdir:-.}}
if ! command -v groff >/dev/null 2>&1; then
	echo "groff not found (Debian: groff-base); skipped"
	exit 77
fi
rc=0
for page in "$src"/doc/*.[1-8]; do
	out=$(groff -man -ww -z "$page" 2>&1)
	if [ -n "$out" ]; then
		echo "$page:"
		echo "$out"
		rc=1
	fi
done
exit $rc
