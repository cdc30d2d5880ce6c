#!/bin/bash
# Worker pool benchmark: a cold pull, and two unrelated images pulled at
# once, by a release alpsd of this tree and of BASE (default: the commit
# before the one bounded worker pool), with the peak thread count of each.
# See pool_bench.py for the images and what is measured.
#
#   tests/bench/pool.sh [RUNS] [BASE]     # 3 rounds by default; run as root
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-3}
base=${2:-$(git -C "$top" rev-list -1 --grep='one bounded worker pool' HEAD)^}
base=$(git -C "$top" rev-parse --short "$base")
for tool in docker-registry umoci skopeo; do
	command -v $tool >/dev/null || { echo "pool.sh: $tool is not installed" >&2; exit 1; }
done

# Release builds (as rpc.sh and pull.sh): this tree, and BASE from git.
build_tree() {     # SRC BUILD
	if [ ! -f "$2/Makefile" ]; then
		mkdir -p "$2"
		(cd "$1" && [ -x configure ] || autoreconf -fi >/dev/null 2>&1)
		(cd "$2" && CFLAGS="-O2 -g" "$1/configure" -q)
	fi
	make -C "$2" -s -j"$(nproc)" alpsd alps >/dev/null
}
build_tree "$top" "$top/build/bench"
src=$top/build/bench-src-$base
if [ ! -d "$src" ]; then
	mkdir -p "$src"
	git -C "$top" archive "$base" | tar -x -C "$src"
fi
build_tree "$src" "$top/build/bench-$base"

/usr/bin/python3 "$top/tests/bench/pool_bench.py" "$top/build/bench-pool-cache" \
	"before-$base=$top/build/bench-$base" "after=$top/build/bench" --runs "$runs"
