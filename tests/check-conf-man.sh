#!/bin/sh
# alpsd.conf(5), generated at build time from the option table: it must
# format without a groff warning and name every option that
# `alpsd --print-config` prints (section headers and keys), so the page
# and the daemon cannot drift apart.
build=${ALPS_BUILDDIR:-.}
page="$build/doc/alpsd.conf.5"
if ! command -v groff >/dev/null 2>&1; then
	echo "groff not found (Debian: groff-base); skipped"
	exit 77
fi
[ -f "$page" ] || { echo "$page: missing (make builds it)"; exit 1; }
rc=0
out=$(groff -man -ww -z "$page" 2>&1)
if [ -n "$out" ]; then
	echo "$page:"
	echo "$out"
	rc=1
fi
text=$(groff -man -Tutf8 -P-c "$page" 2>/dev/null | sed 's/\x08.//g')
# "[section]" then "key = value" lines: every section.key in the page's
# section of the same name.
keys=$(ASAN_OPTIONS=detect_leaks=0 "$build/alpsd" --print-config |
	awk '/^\[\[/ { exit } /^\[/ { gsub(/[][]/, ""); sec = $0; next }
	     /^[a-z_.]+ = / { print sec "." $1 }')
[ -n "$keys" ] || { echo "alpsd --print-config printed no option"; exit 1; }
n=0
for key in $keys; do
	n=$((n + 1))
	sec=${key%%.*}
	name=${key#*.}
	# The section's part of the page, from its [sec] heading to the next.
	part=$(printf '%s\n' "$text" | awk -v h="[$sec]" '
		$0 ~ /^   \[/ { on = (index($0, h) > 0 && length($0) == length(h) + 3) }
		on')
	if ! printf '%s\n' "$part" | grep -Eq "^       $name( |\$)"; then
		echo "alpsd.conf(5) does not document $key"
		rc=1
	fi
done
echo "alpsd.conf(5): $n options checked"
exit $rc
