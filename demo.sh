#!/bin/bash
# The main job of alps, end to end, on a fresh Debian 12 machine (as root):
# install the packages, build, start a local registry seeded with a small
# image (busybox, built with umoci, pushed with skopeo), start alpsd with
# its embedded store, then pull, list, prepare a job, run commands inside
# it, and release it.  Everything lives under $ALPS_DEMO_DIR (default
# /tmp/alps-demo); the registry and the daemon are stopped at the end.
set -eu
cd "$(dirname "$0")"
top=$(pwd)
. tests/deps.sh
# shellcheck disable=SC2086
alps_install_deps $ALPS_BUILD_DEPS docker-registry umoci skopeo busybox-static >/dev/null

build=$top/build/demo
if [ ! -x configure ] || [ configure.ac -nt configure ]; then autoreconf -fi >/dev/null 2>&1; fi
mkdir -p "$build"
[ -f "$build/Makefile" ] || (cd "$build" && "$top/configure" -q)
make -C "$build" -s -j"$(nproc)" alps alpsd libexec/alps-nshelper libexec/alps-enter >/dev/null

demo=${ALPS_DEMO_DIR:-/tmp/alps-demo}
sock=$demo/alpsd.sock
if [ -d "$demo" ]; then
	# Never delete through a mount a previous run left.
	grep -o " $demo/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$demo"
fi
mkdir -p "$demo"
chmod 755 "$demo"
alps() { echo "\$ alps $*"; "$build/alps" --socket "$sock" "$@"; }

# Stops only what this script started, by its pid.  (|| true: a process
# ended by SIGTERM makes wait return 143, which set -e would take as ours.)
cleanup() {
	if [ -n "${daemon_pid:-}" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
	if [ -n "${registry_pid:-}" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

echo "== a local registry on 127.0.0.1 with a small image"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$demo/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $demo/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$demo/registry.yml" >"$demo/registry.log" 2>&1 &
registry_pid=$!
oci=$demo/oci
umoci init --layout "$oci"
umoci new --image "$oci:demo"
umoci config --image "$oci:demo" --config.env PATH=/bin --config.workingdir /home \
	--config.label org.opencontainers.image.title=alps-demo
umoci unpack --image "$oci:demo" "$demo/bundle" >/dev/null
root=$demo/bundle/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/home" "$root/tmp"
cp /usr/bin/busybox "$root/bin/busybox"
for a in sh cat id ls echo uname pwd; do ln -s busybox "$root/bin/$a"; done
printf 'NAME="alps demo"\nPRETTY_NAME="alps demo image (busybox)"\n' >"$root/etc/os-release"
umoci repack --image "$oci:demo" "$demo/bundle"
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$oci:demo" "docker://127.0.0.1:$port/demo/busybox:1.0"
ref=127.0.0.1:$port/demo/busybox:1.0

echo "== alpsd (store $demo/state, socket $sock)"
# The helpers of this build tree (installed ones live in libexec/alps/).
ALPS_NSHELPER=$build/libexec/alps-nshelper ALPS_ENTER_PATH=$build/libexec/alps-enter \
	"$build/alpsd" --foreground --socket "$sock" --state-dir "$demo/state" \
	--run-dir "$demo/run" >"$demo/alpsd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

alps status
echo
alps pull "$ref"
echo
alps images
echo
alps prepare --job demo-1 --user nobody --image "$ref"
echo
alps exec --job demo-1 -- cat /etc/os-release
echo "\$ su nobody -c 'alps exec --job demo-1 -- sh -c ...'   (the job's user)"
su nobody -s /bin/sh -c "'$build/alps' --socket '$sock' exec --job demo-1 -- \
	sh -c 'echo \"inside as uid \$(id -u), in \$(pwd), job \$ALPS_JOB_ID\"'"
echo
alps jobs
echo
alps release --job demo-1
echo
su nobody -s /bin/sh -c "'$build/alps' --socket '$sock' run '$ref' -- uname -a" &&
	echo "(alps run as nobody: prepared, ran, released)"
echo
echo "== stopping"
kill -TERM "$daemon_pid"
wait "$daemon_pid"
daemon_pid=
tail -n 2 "$demo/alpsd.log"
echo "demo done"
