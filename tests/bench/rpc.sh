#!/bin/bash
# RPC benchmark: a release build of alpsd on a private socket, then
# tests/bench/rpc with 1, 16 and 64 clients; prints one line per run and the
# median of 3 runs for 64 clients.
#   tests/bench/rpc.sh [SECONDS]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-5}
build=$top/build/bench
if [ ! -f "$build/Makefile" ]; then
	mkdir -p "$build"
	(cd "$build" && CFLAGS="-O2 -g" "$top/configure" -q)
fi
make -C "$build" -s -j"$(nproc)" alpsd tests/bench/rpc >/dev/null
dir=$(mktemp -d /tmp/alps-bench-XXXXXX)
"$build/alpsd" --foreground --log-level warn --socket "$dir/s" --state-dir "$dir/state" \
	--run-dir "$dir/run" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$dir/s" ] && break; sleep 0.05; done
for k in 1 16 64; do "$build/tests/bench/rpc" "$dir/s" $k "$secs"; done
for i in 1 2 3; do "$build/tests/bench/rpc" "$dir/s" 64 "$secs" --json; done | python3 -c '
import json, sys, statistics
runs = [json.loads(l) for l in sys.stdin]
print("64 clients, median of %d runs: %.0f req/s, p50 %.1f us, p99 %.1f us" % (len(runs),
      statistics.median(r["rps"] for r in runs), statistics.median(r["p50_us"] for r in runs),
      statistics.median(r["p99_us"] for r in runs)))'
echo "alpsd peak RSS: $(grep VmHWM /proc/$pid/status | awk '{print $2, $3}')"
