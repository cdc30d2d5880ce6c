#!/bin/sh
# run.sh: `make check`'s entry to the toml-test corpus (see run.py).
#
# The harness runs it from the build tree, as tests/toml-test/run.sh or
# $(srcdir)/tests/toml-test/run.sh; the decoder is always built in the
# build tree.  77 is automake's "skipped".
command -v python3 >/dev/null 2>&1 || { echo "python3 not found: skipped"; exit 77; }
here=$(dirname "$0")
exec python3 "$here/run.py" --decoder "${ALPS_BUILDDIR:-.}/tests/toml-test/toml2json" "$@"
