#!/bin/bash
# Pull benchmark (issue: image pull).  A local docker-registry on 127.0.0.1
# serves a ~1.7 GB (1.1 GB gzip) four-layer image built by pull_image.py
# (cached in build/bench-pull-cache), and RUNS rounds compare, each after
# dropping the page cache:
#   alps      a fresh release alpsd with an empty store: `alps pull` of :v1
#             (client start to exit), then :v2 (shares all but the top layer),
#             peak RSS (VmHWM) and store size; store.compression_level 3 (the
#             default) and each of PULL_BENCH_LEVELS
#   pipeline  skopeo copy docker://... oci:DIR, umoci unpack, mksquashfs
#             -comp zstd at its default level and at -Xcompression-level 3
#   podman    podman pull of :v1 then :v2 into a private --root
# Rounds interleave the contenders so that background load hits them alike.
# Then (PULL_BENCH_PROFILE=1, default) one more alps pull under `perf record`
# with a per-layer timeline, and single-threaded stage costs (download, SHA-256,
# inflate, tar->squashfs) of each layer.  Prints a summary; everything
# measured is kept in build/bench-pull-cache/results-DATE/.
#
#   tests/bench/pull.sh [RUNS]        # 3 rounds by default; run as root
#
# Environment: PULL_BENCH_SCALE (data layer size factor, 1.0), PULL_BENCH_LEVELS
# ("1 6"; "" for none), PULL_BENCH_PROFILE (1), PULL_BENCH_PODMAN (1),
# PULL_BENCH_PIPELINE (1).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-3}
scale=${PULL_BENCH_SCALE:-1.0}
levels=${PULL_BENCH_LEVELS-1 6}
do_profile=${PULL_BENCH_PROFILE:-1}
do_podman=${PULL_BENCH_PODMAN:-1}
do_pipeline=${PULL_BENCH_PIPELINE:-1}
build=$top/build/bench
cache=$top/build/bench-pull-cache
for tool in docker-registry umoci skopeo mksquashfs curl python3; do
	command -v $tool >/dev/null || { echo "pull.sh: $tool is not installed" >&2; exit 1; }
done
umoci_flags=""
if [ "$(id -u)" != 0 ]; then
	echo "pull.sh: not root: the page cache is not dropped, umoci unpacks rootless," \
		"and alps cannot own what it would as root; figures are not comparable" >&2
	umoci_flags=--rootless
fi
if [ "$do_podman" = 1 ] && ! command -v podman >/dev/null; then
	apt-get install -y -q podman >/dev/null
fi

# ---- release build (as rpc.sh); retry once if someone is mid-edit
if [ ! -f "$build/Makefile" ]; then
	mkdir -p "$build"
	(cd "$build" && CFLAGS="-O2 -g" "$top/configure" -q)
fi
make -C "$build" -s -j"$(nproc)" alpsd alps >/dev/null ||
	{ sleep 60; make -C "$build" -s -j"$(nproc)" alpsd alps >/dev/null; }

python3 "$top/tests/bench/pull_image.py" "$cache" --scale "$scale"

dir=$(mktemp -d /tmp/alps-bench-pull-XXXXXX)
out=$cache/results-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
results=$out/results.jsonl
export DOCKER_CONFIG=$dir/docker      # no credentials from the caller
mkdir -p "$DOCKER_CONFIG"
echo '{"auths": {}}' >"$DOCKER_CONFIG/config.json"
pids=""
cleanup() {
	set +e
	for p in $pids; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	# podman's overlay driver leaves (private bind) mounts under its root
	findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r |
		while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
stop_pid() {    # stop one process we started
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	pids=$(echo " $pids " | sed "s/ $1 / /")
}
now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
drop_caches() {
	sync
	if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
emit() { echo "$1" >>"$results"; }
fsize() { stat -c %s "$1"; }

# ---- registry over the cached storage
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $cache/registry
http:
  addr: 127.0.0.1:$port
  secret: alps-bench-secret
EOF
docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
regpid=$!
pids="$pids $regpid"
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
ref=127.0.0.1:$port/bench/pull
blob_gets() { grep -c 'GET /v2/bench/pull/blobs/' "$dir/registry.log" || true; }

# ---- alps: fresh daemon, empty store, pull :v1 then :v2
start_alpsd() {     # LEVEL DIR [perf]
	mkdir -p "$2"
	: >"$2/alpsd.conf"
	"$build/alpsd" --foreground --config "$2/alpsd.conf" --log-level info --socket "$2/s" \
		--state-dir "$2/state" --run-dir "$2/run" --set "store.compression_level=$1" \
		>"$2/alpsd.log" 2>&1 &
	apid=$!
	pids="$pids $apid"
	for _ in $(seq 200); do [ -S "$2/s" ] && break; sleep 0.05; done
	[ -S "$2/s" ] || { cat "$2/alpsd.log" >&2; exit 1; }
}
alps_run() {        # LEVEL ROUND
	local level=$1 round=$2 d=$dir/alps
	start_alpsd "$level" "$d"
	drop_caches
	local c0 t0 t1 c1 t2 t3 g0 g1
	c0=$(cpu_ticks $apid)
	t0=$(now)
	"$build/alps" --socket "$d/s" --json pull "$ref:v1" >"$d/v1.jsonl"
	t1=$(now)
	c1=$(cpu_ticks $apid)
	drop_caches
	g0=$(blob_gets)
	t2=$(now)
	"$build/alps" --socket "$d/s" --json pull "$ref:v2" >"$d/v2.jsonl"
	t3=$(now)
	g1=$(blob_gets)
	local hwm store f1 f2
	hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$apid/status")
	store=$(du -sb "$d/state/layers" | cut -f1)
	f1=$(tail -n1 "$d/v1.jsonl" | python3 -c 'import json, sys; print(json.load(sys.stdin)["layers_fetched"])')
	f2=$(tail -n1 "$d/v2.jsonl" | python3 -c 'import json, sys; print(json.load(sys.stdin)["layers_fetched"])')
	stop_pid $apid
	local sizes
	sizes=$(grep -o 'bytes -> [0-9]* bytes squashfs' "$d/alpsd.log" | awk '{ printf "%s%s", s, $3; s = "," }')
	emit "{\"kind\": \"alps\", \"level\": $level, \"round\": $round, \"v1_s\": $(secs "$t0" "$t1"), \"v1_cpu_s\": $(awk -v a="$c0" -v b="$c1" -v t="$tck" 'BEGIN { printf "%.2f", (b - a) / t }'), \"v1_fetched\": $f1, \"v2_s\": $(secs "$t2" "$t3"), \"v2_fetched\": $f2, \"v2_blob_gets\": $((g1 - g0)), \"hwm_kb\": $hwm, \"store_bytes\": $store, \"layer_sqfs\": [$sizes]}"
	echo "  alps level $level: v1 $(secs "$t0" "$t1") s, v2 $(secs "$t2" "$t3") s ($f2 fetched), VmHWM $((hwm / 1024)) MB, store $((store / 1048576)) MB"
	cp "$d/alpsd.log" "$out/alpsd-level$level-round$round.log"
	rm -rf "$d"
}

# ---- the level-3 pipeline: skopeo copy + umoci unpack + mksquashfs
pipe_run() {        # ROUND
	local round=$1 p=$dir/pipe
	mkdir -p "$p"
	drop_caches
	local t0 t1 t2 ta tb tc
	t0=$(now)
	skopeo copy --quiet --src-tls-verify=false "docker://$ref:v1" "oci:$p/oci:v1"
	t1=$(now)
	# shellcheck disable=SC2086
	umoci unpack $umoci_flags --image "$p/oci:v1" "$p/bundle" >/dev/null
	t2=$(now)
	# Both compressions read the rootfs umoci just wrote (in the page cache,
	# as in a real pipeline); the order alternates between rounds.
	local first="" second="-Xcompression-level 3" n1=default n2=l3
	if [ $((round % 2)) = 0 ]; then first="-Xcompression-level 3" second="" n1=l3 n2=default; fi
	ta=$(now)
	# shellcheck disable=SC2086
	mksquashfs "$p/bundle/rootfs" "$p/$n1.sqfs" -comp zstd $first -noappend -quiet -no-progress >/dev/null
	tb=$(now)
	# shellcheck disable=SC2086
	mksquashfs "$p/bundle/rootfs" "$p/$n2.sqfs" -comp zstd $second -noappend -quiet -no-progress >/dev/null
	tc=$(now)
	local sq_def sq_l3 size_def size_l3
	if [ $n1 = default ]; then sq_def=$(secs "$ta" "$tb") sq_l3=$(secs "$tb" "$tc")
	else sq_l3=$(secs "$ta" "$tb") sq_def=$(secs "$tb" "$tc"); fi
	size_def=$(fsize "$p/default.sqfs")
	size_l3=$(fsize "$p/l3.sqfs")
	emit "{\"kind\": \"pipeline\", \"round\": $round, \"skopeo_s\": $(secs "$t0" "$t1"), \"umoci_s\": $(secs "$t1" "$t2"), \"mksquashfs_default_s\": $sq_def, \"mksquashfs_l3_s\": $sq_l3, \"sqfs_default_bytes\": $size_def, \"sqfs_l3_bytes\": $size_l3}"
	echo "  pipeline: skopeo $(secs "$t0" "$t1") s, umoci $(secs "$t1" "$t2") s, mksquashfs default $sq_def s, level 3 $sq_l3 s"
	rm -rf "$p"
}

# ---- podman pull into a private storage
pm() {
	podman --root "$dir/podman/root" --runroot "$dir/podman/runroot" --tmpdir "$dir/podman/tmp" \
		--storage-driver overlay --cgroup-manager cgroupfs --events-backend none "$@"
}
podman_run() {      # ROUND
	local round=$1 r=$dir/podman
	mkdir -p "$r"
	drop_caches
	local t0 t1 t2 t3
	t0=$(now)
	pm pull -q --tls-verify=false "docker://$ref:v1" >/dev/null
	t1=$(now)
	drop_caches
	t2=$(now)
	pm pull -q --tls-verify=false "docker://$ref:v2" >/dev/null
	t3=$(now)
	local size
	size=$(du -sb "$r/root" | cut -f1)
	pm rmi -a -f >/dev/null 2>&1 || true
	findmnt -rn -o TARGET | awk -v d="$r/" 'index($0, d) == 1' | sort -r |
		while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
	rm -rf "$r"
	emit "{\"kind\": \"podman\", \"round\": $round, \"v1_s\": $(secs "$t0" "$t1"), \"v2_s\": $(secs "$t2" "$t3"), \"storage_bytes\": $size}"
	echo "  podman: v1 $(secs "$t0" "$t1") s, v2 $(secs "$t2" "$t3") s"
}

echo "pull benchmark: $runs rounds, registry 127.0.0.1:$port, results in $out"
for round in $(seq "$runs"); do
	echo "round $round ($(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
	alps_run 3 "$round"
	if [ "$do_pipeline" = 1 ]; then pipe_run "$round"; fi
	if [ "$do_podman" = 1 ]; then podman_run "$round"; fi
	for level in $levels; do
		if [ "$level" != 3 ]; then alps_run "$level" "$round"; fi
	done
done

# ---- where the time goes: a profiled pull with a timeline, stage costs
if [ "$do_profile" = 1 ]; then
	echo "profile ($(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
	d=$dir/alps
	start_alpsd 3 "$d"
	drop_caches
	perf record -q -g -F 499 -p $apid -o "$dir/perf.data" >/dev/null 2>&1 &
	perfpid=$!
	pids="$pids $perfpid"
	sleep 1
	c0=$(cpu_ticks $apid)
	t0=$(now)
	"$build/alps" --socket "$d/s" --json pull "$ref:v1" |
		while IFS= read -r line; do echo "{\"t\": $(secs "$t0" "$EPOCHREALTIME"), \"ev\": $line}"; done \
			>"$out/timeline.jsonl"
	t1=$(now)
	c1=$(cpu_ticks $apid)
	kill -INT $perfpid
	wait $perfpid 2>/dev/null || true
	pids=$(echo " $pids " | sed "s/ $perfpid / /")
	stop_pid $apid
	cp "$d/alpsd.log" "$out/alpsd-profile.log"
	emit "{\"kind\": \"profile\", \"v1_s\": $(secs "$t0" "$t1"), \"v1_cpu_s\": $(awk -v a="$c0" -v b="$c1" -v t="$tck" 'BEGIN { printf "%.2f", (b - a) / t }')}"
	perf report -i "$dir/perf.data" --no-children --sort dso,sym --stdio -g none --percent-limit 0.4 \
		2>/dev/null | grep -v '^#' | grep -v '^$' | head -45 >"$out/perf-symbols.txt" || true
	perf report -i "$dir/perf.data" --no-children --sort dso --stdio -g none --percent-limit 0.4 \
		2>/dev/null | grep -v '^#' | grep -v '^$' | head -20 >"$out/perf-dso.txt" || true
	rm -f "$dir/perf.data"
	rm -rf "$d"

	# Stage costs of each layer, hot page cache, one thread each: the blob
	# over HTTP (curl), SHA-256 and inflate (alps's own stream code, ISA-L and
	# libcrypto), and the whole conversion (squash_bench: inflate, tar,
	# diff_id, squashfs with daemon.workers threads).
	cat >"$dir/stages.c" <<'EOF'
#include <config.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/evp.h>
#include "common/util.h"
#include "daemon/image/stream.h"
static char buf[1 << 20];
static double pass(const char *path, enum layer_compression z, int hash, unsigned long long *n)
{
	alps_error *err = NULL;
	struct stream *s = stream_decompress(stream_from_fd(open(path, O_RDONLY | O_CLOEXEC)), z, &err);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	uint64_t t0 = now_monotonic_ns();
	ssize_t r;
	*n = 0;
	while ((r = stream_read(s, buf, sizeof(buf), &err)) > 0) {
		if (hash)
			EVP_DigestUpdate(md, buf, (size_t)r);
		*n += (unsigned long long)r;
	}
	if (r < 0) { fprintf(stderr, "%s\n", err->msg); exit(1); }
	double secs = (double)(now_monotonic_ns() - t0) / 1e9;
	EVP_MD_CTX_free(md);
	stream_close(s);
	return secs;
}
int main(int argc, char **argv)
{
	unsigned long long n, m;
	pass(argv[1], LAYER_COMPRESSION_NONE, 0, &n);       /* warm the page cache */
	double read = pass(argv[1], LAYER_COMPRESSION_NONE, 0, &n);
	double sha_in = pass(argv[1], LAYER_COMPRESSION_NONE, 1, &n) - read;
	double inflate = pass(argv[1], LAYER_COMPRESSION_GZIP, 0, &m) - read;
	double sha_out = pass(argv[1], LAYER_COMPRESSION_GZIP, 1, &m) - read - inflate;
	printf("\"compressed\": %llu, \"uncompressed\": %llu, \"sha256_compressed_s\": %.3f, "
	       "\"inflate_s\": %.3f, \"sha256_uncompressed_s\": %.3f", n, m, sha_in, inflate, sha_out);
	return 0;
}
EOF
	cflags=$(make -C "$build" -s --no-print-directory \
		--eval 'print-cflags: ; @echo $(DEFS) -I. $(AM_CPPFLAGS) $(CPPFLAGS) $(libalpsd_a_CFLAGS) $(CFLAGS)' print-cflags | tail -n1)
	libs=$(make -C "$build" -s --no-print-directory \
		--eval 'print-libs: ; @echo $(alpsd_LDADD) $(LIBS)' print-libs | tail -n1)
	# shellcheck disable=SC2086
	(cd "$build" && ${CC:-cc} $cflags -o "$dir/stages" "$dir/stages.c" $libs)
	# shellcheck disable=SC2086
	(cd "$build" && ${CC:-cc} $cflags -o "$dir/squash_bench" "$top/tests/bench/squash_bench.c" $libs) ||
		echo "  (squash_bench did not build: conversion stage skipped)"
	python3 - "$cache/image.json" "$cache/registry" <<'EOF' >"$dir/layers.txt"
import json, sys
info = json.load(open(sys.argv[1]))
for l in info["layers"]["v1"]["layers"]:
    algo, hexd = l["digest"].split(":")
    print(l["name"], l["digest"], f"{sys.argv[2]}/docker/registry/v2/blobs/{algo}/{hexd[:2]}/{hexd}/data")
EOF
	# the four blobs at once (as max_parallel_layers = 4), cold and hot
	for cold in 1 0; do
		[ $cold = 1 ] && drop_caches
		t0=$(now)
		cpids=""
		while read -r name digest path; do
			curl -sf -o /dev/null "http://127.0.0.1:$port/v2/bench/pull/blobs/$digest" &
			cpids="$cpids $!"
		done <"$dir/layers.txt"
		for j in $cpids; do wait "$j"; done
		t1=$(now)
		emit "{\"kind\": \"download\", \"cold\": $cold, \"s\": $(secs "$t0" "$t1")}"
	done
	while read -r name digest path; do
		st=$("$dir/stages" "$path")
		conv=null conv1=null convlz4=null
		if [ -x "$dir/squash_bench" ]; then
			for v in 3 1 lz4; do
				if [ $v = lz4 ]; then o="-c lz4"; else o="-l $v"; fi
				t0=$(now)
				# shellcheck disable=SC2086
				"$dir/squash_bench" -z gzip $o -t 4 -n 1 "$path" "$dir/layer.sqfs" >/dev/null
				case $v in
				3) conv=$(secs "$t0" "$(now)") ;;
				1) conv1=$(secs "$t0" "$(now)") ;;
				lz4) convlz4=$(secs "$t0" "$(now)") ;;
				esac
				rm -f "$dir/layer.sqfs"
			done
		fi
		emit "{\"kind\": \"stage\", \"layer\": \"$name\", $st, \"convert_s\": $conv, \"convert_l1_s\": $conv1, \"convert_lz4_s\": $convlz4}"
		echo "  stage $name: {$st, \"convert_s\": $conv, \"convert_l1_s\": $conv1, \"convert_lz4_s\": $convlz4}"
	done <"$dir/layers.txt"
fi

cp "$cache/image.json" "$out/"
{
	echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/^Mem/ { print $2 }') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), Linux $(uname -r); load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "alps: $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown), alpsd built $(date -r "$build/alpsd" '+%F %T')"
	python3 - "$results" "$cache/image.json" "$out" <<'EOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
info = json.load(open(sys.argv[2]))
med = lambda xs: statistics.median(xs) if xs else float("nan")
MB = 1 << 20
v1, v2 = info["layers"]["v1"], info["layers"]["v2"]
print(f"image: {len(v1['layers'])} layers, {v1['uncompressed'] / 1e9:.2f} GB uncompressed, "
      f"{v1['compressed'] / 1e9:.2f} GB gzip; base: {info['base']}")
for l in v1["layers"]:
    print(f"  {l['name']:8} {l['uncompressed'] / MB:8.0f} MiB tar {l['compressed'] / MB:8.0f} MiB gzip")
alps = {}
for r in rows:
    if r["kind"] == "alps":
        alps.setdefault(r["level"], []).append(r)
pipe = [r for r in rows if r["kind"] == "pipeline"]
pod = [r for r in rows if r["kind"] == "podman"]
a3 = alps.get(3, [])
t_alps = med([r["v1_s"] for r in a3])
print()
print("| what | median s | runs (s) | ratio (this / alps) |")
print("| --- | --- | --- | --- |")
def line(name, xs):
    ratio = med(xs) / t_alps if t_alps else float("nan")
    runs_s = ", ".join("%.1f" % x for x in xs)
    print(f"| {name} | {med(xs):.1f} | {runs_s} | {ratio:.2f} |")
line("alps pull (cold, level 3)", [r["v1_s"] for r in a3])
if pipe:
    line("pipeline, mksquashfs level 3", [r["skopeo_s"] + r["umoci_s"] + r["mksquashfs_l3_s"] for r in pipe])
    line("pipeline, mksquashfs default (15)", [r["skopeo_s"] + r["umoci_s"] + r["mksquashfs_default_s"] for r in pipe])
    for k in ("skopeo_s", "umoci_s", "mksquashfs_l3_s", "mksquashfs_default_s"):
        line(f"&nbsp; stage {k[:-2]}", [r[k] for r in pipe])
if pod:
    line("podman pull (cold)", [r["v1_s"] for r in pod])
line("alps pull :v2 after :v1", [r["v2_s"] for r in a3])
if pod:
    line("podman pull :v2 after :v1", [r["v2_s"] for r in pod])
print()
if a3:
  print(f"alps :v2 layers fetched {[r['v2_fetched'] for r in a3]}, blob GETs {[r['v2_blob_gets'] for r in a3]}; "
      f"v2/v1 time {med([r['v2_s'] for r in a3]) / t_alps * 100:.1f} %")
  print(f"alps CPU s per cold pull (level 3): {med([r['v1_cpu_s'] for r in a3]):.1f} "
      f"(= {med([r['v1_cpu_s'] / r['v1_s'] for r in a3]):.2f} cores busy on average)")
  print(f"alpsd peak RSS (VmHWM) over all daemons: median {med([r['hwm_kb'] for rs in alps.values() for r in rs]) / 1024:.0f} MB, "
      f"max {max(r['hwm_kb'] for rs in alps.values() for r in rs) / 1024:.0f} MB")
print()
print("| store.compression_level | cold pull median s | runs (s) | store MiB | CPU s |")
print("| --- | --- | --- | --- | --- |")
for lv in sorted(alps):
    rs = alps[lv]
    runs_s = ", ".join("%.1f" % r["v1_s"] for r in rs)
    print(f"| {lv} | {med([r['v1_s'] for r in rs]):.1f} | {runs_s} | "
          f"{med([r['store_bytes'] for r in rs]) / MB:.0f} | {med([r['v1_cpu_s'] for r in rs]):.1f} |")
if pipe:
    print(f"| mksquashfs level 3 (one file) | | | {med([r['sqfs_l3_bytes'] for r in pipe]) / MB:.0f} | |")
    print(f"| mksquashfs default (one file) | | | {med([r['sqfs_default_bytes'] for r in pipe]) / MB:.0f} | |")
if pod:
    print(f"| podman overlay storage | | | {med([r['storage_bytes'] for r in pod]) / MB:.0f} | |")
if pipe or pod:
    print()
    print("| alps level | level-3 pipeline / alps (aim >= 2.5) | podman / alps (aim >= 2) | :v2 / :v1 (aim < 10 %) | peak RSS MB (aim < 300) |")
    print("| --- | --- | --- | --- | --- |")
    tp = med([r["skopeo_s"] + r["umoci_s"] + r["mksquashfs_l3_s"] for r in pipe]) if pipe else float("nan")
    tpod = med([r["v1_s"] for r in pod]) if pod else float("nan")
    for lv in sorted(alps):
        rs = alps[lv]
        t = med([r["v1_s"] for r in rs])
        print(f"| {lv} | {tp / t:.2f} | {tpod / t:.2f} | {med([r['v2_s'] for r in rs]) / t * 100:.1f} % | "
              f"{max(r['hwm_kb'] for r in rs) / 1024:.0f} |")
prof = [r for r in rows if r["kind"] == "profile"]
if prof:
    p = prof[0]
    print()
    print(f"profiled pull (perf record -g -F 499): {p['v1_s']:.1f} s, alpsd CPU {p['v1_cpu_s']:.1f} s")
    tl = [json.loads(l) for l in open(os.path.join(sys.argv[3], "timeline.jsonl"))]
    names = {l["digest"]: l["name"] for l in v1["layers"]}
    first, fetched, last = {}, {}, {}
    for e in tl:
        if e["ev"].get("event") != "progress":
            continue
        for l in e["ev"]["layers"]:
            d = l["digest"]
            if l["compressed_done"] > 0 and d not in first:
                first[d] = e["t"]
            if l["compressed_done"] >= l["compressed_total"] and d not in fetched:
                fetched[d] = e["t"]
            if l["state"] in ("done", "cached") and d not in last:
                last[d] = e["t"]
    print("  per layer (progress events every 250 ms): first byte .. all bytes downloaded .. converted and committed")
    for l in v1["layers"]:
        d = l["digest"]
        if d in first and d in last:
            s = last[d] - first[d]
            print(f"  {names[d]:8} {first[d]:6.1f} .. {fetched.get(d, float('nan')):6.1f} .. {last[d]:6.1f} s: "
                  f"{l['compressed'] / MB / max(s, 0.01):6.1f} MiB/s gzip, {l['uncompressed'] / MB / max(s, 0.01):6.1f} MiB/s tar")
dl = [r for r in rows if r["kind"] == "download"]
for r in dl:
    print(f"download of the four blobs at once with curl ({'cold' if r['cold'] else 'hot'} cache): {r['s']:.1f} s")
st = [r for r in rows if r["kind"] == "stage"]
if st:
    print()
    print("| layer | gzip MiB | tar MiB | SHA-256 gzip s | inflate s | SHA-256 tar s | convert zstd -3 s | zstd -1 s | lz4 s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    f = lambda x: "-" if x is None else f"{x:.1f}"
    for r in st:
        print(f"| {r['layer']} | {r['compressed'] / MB:.0f} | {r['uncompressed'] / MB:.0f} | {r['sha256_compressed_s']:.2f} | "
              f"{r['inflate_s']:.2f} | {r['sha256_uncompressed_s']:.2f} | {f(r.get('convert_s'))} | {f(r.get('convert_l1_s'))} | {f(r.get('convert_lz4_s'))} |")
    tot = lambda k: sum(r.get(k) for r in st if r.get(k) is not None)
    print(f"| all | {tot('compressed') / MB:.0f} | {tot('uncompressed') / MB:.0f} | {tot('sha256_compressed_s'):.2f} | "
          f"{tot('inflate_s'):.2f} | {tot('sha256_uncompressed_s'):.2f} | {tot('convert_s'):.1f} | {tot('convert_l1_s'):.1f} | {tot('convert_lz4_s'):.1f} |")
EOF
	if [ -s "$out/perf-symbols.txt" ]; then
		echo
		echo "perf, alpsd, top symbols (self %):"
		head -25 "$out/perf-symbols.txt"
		echo "perf, by DSO:"
		head -12 "$out/perf-dso.txt"
	fi
} | tee "$out/summary.txt"
