#!/usr/bin/python3
"""Add up the JUnit XML of every runner (cmocka, toml-test, pytest, fuzz)
and the automake .trs results, print each failure, and end with the line
"N passed, N failed, N skipped".  Exit 1 if anything failed or nothing ran.

A test program that failed (crashed, sanitizer report, non-zero exit) counts
as one failure of its own when its JUnit file shows none, so a crash that
wrote no XML is never lost."""
import glob
import os
import sys
import xml.etree.ElementTree as ET


def junit_counts(path):
    passed = failed = skipped = 0
    names = []
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        return 0, 1, 0, [f"{os.path.basename(path)}: unreadable JUnit XML ({e})"]
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            names.append(f"{case.get('classname') or os.path.basename(path)}::{case.get('name')}")
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, names


def main():
    build, junit = sys.argv[1], sys.argv[2]
    passed = failed = skipped = 0
    failures = []
    for path in sorted(glob.glob(os.path.join(junit, "*.xml"))):
        p, f, s, names = junit_counts(path)
        passed, failed, skipped = passed + p, failed + f, skipped + s
        failures += names
    junit_failed = failed
    for trs in sorted(glob.glob(os.path.join(build, "tests", "**", "*.trs"), recursive=True)):
        with open(trs) as fh:
            results = [l.split(":", 2)[2].strip() for l in fh if l.startswith(":test-result:")]
        name = os.path.relpath(trs, build)[:-4]
        if any(r in ("FAIL", "ERROR", "XPASS") for r in results) and junit_failed == 0:
            failed += 1
            failures.append(f"{name}: exited with failure (see {name}.log)")
        elif results and all(r == "SKIP" for r in results):
            skipped += 1
    for f in failures:
        print(f"FAILED {f}")
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
