#!/bin/bash
# Export and squash benchmark (cache issue: imports and exports).
#
#   tests/bench/export.sh [RUNS]      # 3 by default; run as root
#
# 1. alps export of the pull benchmark's image (tests/bench/pull_image.py,
#    cached in build/bench-export-cache; EXPORT_BENCH_SCALE, default 0.5,
#    scales its data layer: 1.0 is the 1.7 GB image) from a release alpsd:
#    data blocks copied as they are (the default) against `--recompress`
#    (every block decompressed and compressed again: the same zstd level 3,
#    128 KiB blocks), each run after dropping the page cache.
# 2. alps squash of a Python venv (`python3 -m venv --without-pip` plus a
#    copy of the host's stdlib in its site-packages: thousands of small
#    files) against `mksquashfs -comp zstd -Xcompression-level 3 -b 128K`
#    (the same compression; mksquashfs on every CPU as alps), page cache
#    dropped before each.
# Prints medians of RUNS and ratios; the raw times are kept in
# build/bench-export-cache/results-DATE/.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-3}
scale=${EXPORT_BENCH_SCALE:-0.5}
build=$top/build/bench
cache=$top/build/bench-export-cache
for tool in docker-registry umoci skopeo mksquashfs unsquashfs curl python3; do
	command -v $tool >/dev/null || { echo "export.sh: $tool is not installed" >&2; exit 1; }
done

# ---- release build (as pull.sh)
if [ ! -f "$build/Makefile" ]; then
	mkdir -p "$build"
	(cd "$build" && CFLAGS="-O2 -g" "$top/configure" -q)
fi
make -C "$build" -s -j"$(nproc)" alpsd alps >/dev/null
python3 "$top/tests/bench/pull_image.py" "$cache" --scale "$scale"

dir=$(mktemp -d /tmp/alps-bench-export-XXXXXX)
out=$cache/results-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
times=$out/times.txt
export DOCKER_CONFIG=$dir/docker
mkdir -p "$DOCKER_CONFIG"
echo '{"auths": {}}' >"$DOCKER_CONFIG/config.json"
pids=""
cleanup() {
	set +e
	for p in $pids; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
drop_caches() {
	sync
	if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
timed() {       # NAME COMMAND...: one run, its seconds into $times
	local name=$1 t0 t1
	shift
	drop_caches
	t0=$(now)
	"$@" >"$out/last.out" 2>>"$out/commands.log"
	t1=$(now)
	cp "$out/last.out" "$out/$name.json"
	echo "$name $(secs "$t0" "$t1")" >>"$times"
}

# ---- registry over the cached storage, a release alpsd, the image pulled
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $cache/registry
http:
  addr: 127.0.0.1:$port
  secret: alps-bench-secret
EOF
docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
pids="$pids $!"
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
: >"$dir/alpsd.conf"
"$build/alpsd" --foreground --config "$dir/alpsd.conf" --socket "$dir/s" \
	--state-dir "$dir/state" --run-dir "$dir/run" >"$out/alpsd.log" 2>&1 &
pids="$pids $!"
for _ in $(seq 200); do [ -S "$dir/s" ] && break; sleep 0.05; done
alps() { "$build/alps" --socket "$dir/s" "$@"; }
ref=127.0.0.1:$port/bench/pull:v1
alps pull --quiet "$ref"
alps --json inspect "$ref" >"$out/inspect.json"

# ---- export: block copy against recompression
for i in $(seq "$runs"); do
	timed export-copy alps --json export "$ref" "$dir/copy.sqsh"
	timed export-recompress alps --json export --recompress "$ref" "$dir/re.sqsh"
	if [ "$i" = 1 ]; then       # the two files hold the same tree
		unsquashfs -lls "$dir/copy.sqsh" | sort >"$dir/copy.ls"
		unsquashfs -lls "$dir/re.sqsh" | sort >"$dir/re.ls"
		cmp -s "$dir/copy.ls" "$dir/re.ls" || echo "export.sh: the trees differ" >&2
	fi
	rm -f "$dir/copy.sqsh" "$dir/re.sqsh"
done

# ---- squash: a venv of many small files, alps against mksquashfs
py=$(python3 -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
python3 -m venv --without-pip "$dir/venv"
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
cp -a "$stdlib" "$dir/venv/lib/$py/site-packages/stdlib-copy"
find "$dir/venv" -type f | wc -l >"$out/venv-files"
du -sb "$dir/venv" | cut -f1 >"$out/venv-bytes"
for i in $(seq "$runs"); do
	timed squash-alps "$build/alps" squash "$dir/venv" "$dir/v-alps.sqsh"
	timed squash-mksquashfs mksquashfs "$dir/venv" "$dir/v-mk.sqsh" -comp zstd \
		-Xcompression-level 3 -b 128K -noappend -no-progress -quiet
	stat -c '%n %s' "$dir/v-alps.sqsh" "$dir/v-mk.sqsh" >"$out/squash-sizes"
	rm -f "$dir/v-alps.sqsh" "$dir/v-mk.sqsh"
done

# ---- summary
python3 - "$out" <<'EOF'
import json, os, statistics, sys
out = sys.argv[1]
t = {}
for line in open(os.path.join(out, "times.txt")):
    name, s = line.split()
    t.setdefault(name, []).append(float(s))
med = {k: statistics.median(v) for k, v in t.items()}
cp = json.load(open(os.path.join(out, "export-copy.json")))
re = json.load(open(os.path.join(out, "export-recompress.json")))
print(f"image: {cp['file_bytes'] / 2**20:.0f} MiB of file data, {cp['files']} files, "
      f"{cp['layer_count']} layers; export {cp['bytes'] / 2**20:.0f} MiB (copy), "
      f"{re['bytes'] / 2**20:.0f} MiB (recompressed)")
for k in sorted(med):
    print(f"{k:20s} median {med[k]:7.2f} s   runs {', '.join(f'{x:.2f}' for x in t[k])}")
print(f"recompress / copy:       {med['export-recompress'] / med['export-copy']:.2f}")
print(f"mksquashfs / alps squash: {med['squash-mksquashfs'] / med['squash-alps']:.2f}")
print(f"venv: {open(os.path.join(out, 'venv-files')).read().strip()} files, "
      f"{int(open(os.path.join(out, 'venv-bytes')).read()) / 2**20:.0f} MiB; sizes: "
      + open(os.path.join(out, "squash-sizes")).read().replace("\n", "; "))
EOF
echo "results: $out"
