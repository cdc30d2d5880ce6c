#!/bin/bash
# Build every libFuzzer target (tests/fuzz/fuzz_*.c) with clang and run each
# for a bounded time on its seed corpus; one JUnit testcase per target.
#   tests/fuzz/run.sh BUILD_DIR JUNIT_DIR SECONDS
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build/fuzz}
junit=${2:-$build/junit}
secs=${3:-20}
mkdir -p "$build" "$junit"
if [ ! -f "$build/Makefile" ]; then
	(cd "$build" && CC=clang "$top/configure" -q --enable-fuzzing --enable-sanitizers) || exit 1
fi
# Generated headers first: single targets do not trigger BUILT_SOURCES.
make -C "$build" -s proto/.stamp-pbc || exit 1
xml=$junit/fuzz.xml
cases=""
fails=0
n=0
for src in "$top"/tests/fuzz/fuzz_*.c; do
	name=$(basename "$src" .c)
	n=$((n + 1))
	log=$build/$name.log
	corpus=$top/tests/fuzz/corpus/${name#fuzz_}
	work=$(mktemp -d)
	[ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null
	if make -C "$build" -s "tests/fuzz/$name" >"$log" 2>&1 &&
		(cd "$build" && "tests/fuzz/$name" -max_total_time="$secs" -rss_limit_mb=2048 \
			-timeout=10 "$work" >>"$log" 2>&1); then
		echo "fuzz $name: ok ($(grep -c . "$log") log lines)"
		cases="$cases<testcase classname=\"fuzz\" name=\"$name\"/>"
	else
		fails=$((fails + 1))
		echo "fuzz $name: FAILED, see $log"; tail -30 "$log"
		cases="$cases<testcase classname=\"fuzz\" name=\"$name\"><failure message=\"crash or build failure\"/></testcase>"
	fi
	rm -rf "$work"
done
echo "<testsuite name=\"fuzz\" tests=\"$n\" failures=\"$fails\">$cases</testsuite>" >"$xml"
[ $fails -eq 0 ]
