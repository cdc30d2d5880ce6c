#!/bin/bash
# The README's test command: install the Debian packages the tests need,
# build with -Werror and the sanitizers, run every test (unit, toml-test,
# integration against a real alpsd/registry/mounts, a short fuzzing pass),
# and print the totals as the last line: "N passed, N failed, N skipped".
#
#   tests/run-all.sh                 # everything (CI runs this)
#   FUZZ_SECONDS=0 tests/run-all.sh  # skip fuzzing
set -u
cd "$(dirname "$0")/.." || exit 1
top=$(pwd)
. tests/deps.sh
# shellcheck disable=SC2086
alps_install_deps $ALPS_BUILD_DEPS $ALPS_TEST_DEPS || exit 1

jobs=$(nproc 2>/dev/null || echo 2)
build=$top/build/check
junit=$build/tests/junit
rm -rf "$junit"
mkdir -p "$build"
status=0

step() { echo; echo "=== $* ==="; }

step "configure (--enable-werror --enable-sanitizers)"
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ "$(find . -name '*.am' -newer configure -not -path './build/*' | head -1)" ]; then
	autoreconf -fi >/dev/null 2>&1 || autoreconf -fi || exit 1
fi
(cd "$build" && "$top/configure" -q --enable-werror --enable-sanitizers) || exit 1

step "build"
make -C "$build" -j"$jobs" -s >/dev/null || make -C "$build" || exit 1

step "make check"
make -C "$build" -j1 check || status=1
for f in "$build"/tests/*/*.log "$build"/tests/*.log; do
	[ -f "$f" ] || continue
	case "$f" in *test-suite.log) ;; *) grep -q "^FAIL\|^ERROR" "${f%.log}.trs" 2>/dev/null && {
		echo "--- $f (tail)"; tail -40 "$f"; } ;; esac
done

# The reload storm again, against a ThreadSanitizer build of the daemon
# and its helpers (ASan and TSan cannot share a build).  ALPS_TSAN=0 skips.
if [ "${ALPS_TSAN:-1}" != 0 ]; then
	step "ThreadSanitizer: the reload storm (tests/integration/test_reload.py)"
	tsan=$top/build/tsan
	mkdir -p "$tsan"
	if (cd "$tsan" && "$top/configure" -q --enable-tsan) &&
	   make -C "$tsan" -j"$jobs" -s alpsd alps libexec/alps-nshelper libexec/alps-enter >/dev/null; then
		ALPS_SRCDIR=$top ALPS_BUILDDIR=$build ALPS_TSAN_BUILDDIR=$tsan \
			/usr/bin/python3 -m pytest -q -p no:cacheprovider -o junit_family=xunit1 \
			--junitxml="$junit/pytest-tsan.xml" tests/integration/test_reload.py || status=1
	else
		echo "the TSan build failed"; status=1
	fi
fi

if [ "${FUZZ_SECONDS:-20}" != 0 ] && command -v clang >/dev/null; then
	step "fuzzing (${FUZZ_SECONDS:-20} s per target)"
	tests/fuzz/run.sh "$top/build/fuzz" "$junit" "${FUZZ_SECONDS:-20}" || status=1
fi

step "totals"
/usr/bin/python3 tests/summarize.py "$build" "$junit"
rc=$?
[ $rc -ne 0 ] && status=1
exit $status
