#!/bin/sh
# Run the integration suite (pytest) against the binaries of the build
# tree; called by `make check`.  Results go to $ALPS_JUNIT_DIR/pytest.xml.
set -u
here=$(cd "$(dirname "$0")" && pwd)
junit=${ALPS_JUNIT_DIR:-.}/pytest.xml
/usr/bin/python3 -m pytest -q -p no:cacheprovider -o junit_family=xunit1 --junitxml="$junit" \
	${ALPS_PYTEST_ARGS:-} "$here"
rc=$?
# 5: no tests collected; that is a failure of the harness, not a skip.
exit $rc
