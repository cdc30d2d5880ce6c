#!/bin/bash
# Client start: a whole `alps` call as a user's shell or a Slurm prolog makes
# it, against /bin/true (process start alone) and `alps --version` (start
# without the daemon); `alps status` is start + connect + one request to a
# release build of alpsd on a private socket.  Medians of N runs, in ms.
#   tests/bench/client_start.sh [RUNS]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-50}
build=$top/build/bench
if [ ! -f "$build/Makefile" ]; then
	mkdir -p "$build"
	(cd "$build" && CFLAGS="-O2 -g" "$top/configure" -q)
fi
make -C "$build" -s -j"$(nproc)" alpsd alps >/dev/null
dir=$(mktemp -d /tmp/alps-bench-XXXXXX)
"$build/alpsd" --foreground --log-level warn --socket "$dir/s" --state-dir "$dir/state" \
	--run-dir "$dir/run" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$dir/s" ] && break; sleep 0.05; done
python3 - "$runs" "$build/alps" "$dir/s" <<'PY'
import statistics, subprocess, sys, time
runs, alps, sock = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def median_ms(argv):
    t = []
    for _ in range(runs):
        a = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
        t.append((time.perf_counter() - a) * 1000)
    return statistics.median(t)
base = median_ms(["/bin/true"])
for name, argv in (("/bin/true", ["/bin/true"]), ("alps --version", [alps, "--version"]),
                   ("alps status", [alps, "--socket", sock, "status"])):
    m = median_ms(argv)
    print(f"{name:16} median {m:6.1f} ms  ({m / base:5.1f}x /bin/true)")
print("libraries alps loads:", subprocess.run(["sh", "-c", f"ldd {alps} | wc -l"],
      capture_output=True, text=True).stdout.strip())
PY
