#!/bin/bash
# The main job of alps, end to end, on a fresh Debian 12 machine (as root):
# install the packages, build, start alpsd with its embedded store, and use
# it with the alps client.  Everything lives under $ALPS_DEMO_DIR
# (default /tmp/alps-demo); the daemon is stopped at the end.
set -eu
cd "$(dirname "$0")"
top=$(pwd)
. tests/deps.sh
# shellcheck disable=SC2086
alps_install_deps $ALPS_BUILD_DEPS docker-registry umoci skopeo squashfs-tools python3 >/dev/null

build=$top/build/demo
if [ ! -x configure ] || [ configure.ac -nt configure ]; then autoreconf -fi >/dev/null 2>&1; fi
mkdir -p "$build"
[ -f "$build/Makefile" ] || (cd "$build" && "$top/configure" -q)
make -C "$build" -s -j"$(nproc)" >/dev/null

demo=${ALPS_DEMO_DIR:-/tmp/alps-demo}
sock=$demo/alpsd.sock
rm -rf "$demo"
mkdir -p "$demo"
alps() { echo "\$ alps $*"; "$build/alps" --socket "$sock" "$@"; }

cleanup() {
	[ -n "${daemon_pid:-}" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	return 0
}
trap cleanup EXIT

echo "== starting alpsd (store $demo/state, socket $sock)"
"$build/alpsd" --foreground --socket "$sock" --state-dir "$demo/state" \
	--run-dir "$demo/run" >"$demo/alpsd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

alps status
echo
alps --json status
echo
echo "== stopping alpsd"
kill -TERM "$daemon_pid"
wait "$daemon_pid"
daemon_pid=
tail -n 3 "$demo/alpsd.log"
echo "demo done"
