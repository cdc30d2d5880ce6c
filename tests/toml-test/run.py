#!/usr/bin/env python3
"""Run the toml-test corpus (TOML 1.0.0 cases) against the toml2json decoder.

Every case listed in tests/files-toml-1.0.0 is run: a valid case must
decode to JSON equal to the expected .json beside it, an invalid case must
be rejected (exit status 1 and an error on stderr, not a crash).  Values
compare as toml-test compares them: integers and floats by value, nan and
inf as spelled, date-times after normalizing the separator, the 'Z' and
the fractional seconds.

The corpus is $TOML_TEST_DIR, else $ALPS_SRCDIR/../shared/testdata/toml-test;
without one the run is skipped (exit 77, automake's skip).  Each case is a
testcase in $ALPS_JUNIT_DIR/toml-test.xml.
"""

import argparse
import concurrent.futures
import json
import math
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

SKIP = 77
HARD_ERROR = 99
TIMEOUT = 20
SCALARS = {"string", "integer", "float", "bool", "datetime", "datetime-local",
           "date-local", "time-local"}
# What sanitizers and crashes leave on stderr: a rejection must not look
# like this, or a crash on invalid input would pass as a rejection.
CRASH = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                   r"runtime error:|Segmentation fault|Aborted")


def find_corpus():
    """The directory that holds files-toml-1.0.0, or None."""
    roots = []
    if os.environ.get("TOML_TEST_DIR"):
        roots.append(os.environ["TOML_TEST_DIR"])
    else:
        srcdir = os.environ.get("ALPS_SRCDIR") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..")
        roots.append(os.path.join(srcdir, "..", "shared", "testdata", "toml-test"))
    for root in roots:
        for sub in ("tests", "."):
            d = os.path.normpath(os.path.join(root, sub))
            if os.path.isfile(os.path.join(d, "files-toml-1.0.0")):
                return d
    return None


def find_decoder(arg):
    if arg:
        return arg
    if os.environ.get("TOML2JSON"):
        return os.environ["TOML2JSON"]
    builddir = os.environ.get("ALPS_BUILDDIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..")
    return os.path.join(builddir, "tests", "toml-test", "toml2json")


# ---- semantic comparison ----

def is_leaf(v):
    return (isinstance(v, dict) and set(v) == {"type", "value"}
            and v["type"] in SCALARS and isinstance(v["value"], str))


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


DT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
                r"([Zz]|[+-]\d{2}:\d{2})?$")
TM = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(\.\d+)?$")


def frac(s):
    """Fractional seconds without trailing zeros: '.600' == '.6' == ''+'.0'."""
    return (s or ".")[1:].rstrip("0")


def norm_datetime(kind, text):
    """A comparable form of a date or time, or the text if it does not parse."""
    if kind == "date-local":
        return text
    if kind == "time-local":
        m = TM.match(text)
        return (m.group(1, 2, 3), frac(m.group(4))) if m else text
    m = DT.match(text)
    if not m:
        return text
    y, mo, d, h, mi, s = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if kind == "datetime-local":
        return (y, mo, d, h, mi, s, frac(m.group(7)))
    off = m.group(8) or "Z"
    off_s = 0
    if off not in "Zz":
        off_s = (int(off[1:3]) * 60 + int(off[4:6])) * 60 * (-1 if off[0] == "-" else 1)
    # Offset date-times are equal when they name the same instant.
    instant = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - off_s
    return (instant, frac(m.group(7)))


def norm_float(text):
    t = text.lstrip("+")
    if t in ("nan", "-nan"):
        return "nan"
    if t in ("inf", "-inf"):
        return t
    return float(t)


def same_scalar(want, have):
    kind = want["type"]
    if kind != have["type"]:
        return "type %s, want %s" % (have["type"], kind)
    w, h = want["value"], have["value"]
    try:
        if kind == "integer":
            ok = int(w) == int(h)
        elif kind == "float":
            ok = norm_float(w) == norm_float(h)
        elif kind in ("datetime", "datetime-local", "date-local", "time-local"):
            ok = norm_datetime(kind, w) == norm_datetime(kind, h)
        else:
            ok = w == h
    except ValueError:
        ok = False
    return None if ok else "value %r, want %r" % (h, w)


def compare(want, have, path="root"):
    """None when equal, else a message naming where they differ."""
    if is_leaf(want):
        if not is_leaf(have):
            return "%s: got %s, want a %s" % (path, kind_of(have), want["type"])
        msg = same_scalar(want, have)
        return "%s: %s" % (path, msg) if msg else None
    if isinstance(want, dict):
        if not isinstance(have, dict) or is_leaf(have):
            return "%s: got %s, want a table" % (path, kind_of(have))
        if set(want) != set(have):
            return "%s: keys %s, want %s" % (path, sorted(have), sorted(want))
        for k in want:
            msg = compare(want[k], have[k], "%s.%s" % (path, json.dumps(k)))
            if msg:
                return msg
        return None
    if isinstance(want, list):
        if not isinstance(have, list):
            return "%s: got %s, want an array" % (path, kind_of(have))
        if len(want) != len(have):
            return "%s: %d items, want %d" % (path, len(have), len(want))
        for k, (w, h) in enumerate(zip(want, have)):
            msg = compare(w, h, "%s[%d]" % (path, k))
            if msg:
                return msg
        return None
    return "%s: unexpected %r in the expected JSON" % (path, want)


def kind_of(v):
    if is_leaf(v):
        return "a " + v["type"]
    return "a table" if isinstance(v, dict) else "an array" if isinstance(v, list) else repr(v)


# ---- running the cases ----

def run_case(decoder, corpus, case):
    """(case, failure message or None, seconds)."""
    start = time.monotonic()
    path = os.path.join(corpus, case)
    try:
        with open(path, "rb") as f:
            proc = subprocess.run([decoder], stdin=f, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return case, "timed out after %ds" % TIMEOUT, time.monotonic() - start
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    took = time.monotonic() - start
    if CRASH.search(err) or proc.returncode not in (0, 1):
        return case, "decoder crashed (status %d):\n%s" % (proc.returncode, err), took
    if case.startswith("invalid/"):
        if proc.returncode == 0:
            return case, "accepted an invalid document, decoded as:\n" + out, took
        if "toml2json: line" not in err:
            return case, "rejected without an error message:\n" + err, took
        return case, None, took
    if proc.returncode != 0:
        return case, "rejected a valid document: " + err.strip(), took
    with open(path[:-len(".toml")] + ".json", encoding="utf-8") as f:
        want = json.load(f)
    try:
        have = json.loads(out)
    except ValueError as e:
        return case, "decoder printed invalid JSON (%s):\n%s" % (e, out), took
    msg = compare(want, have)
    return case, msg, took


def write_junit(results, seconds):
    junit_dir = os.environ.get("ALPS_JUNIT_DIR")
    if not junit_dir:
        return
    os.makedirs(junit_dir, exist_ok=True)
    failures = sum(1 for _, msg, _ in results if msg)
    suite = ET.Element("testsuite", name="toml-test", tests=str(len(results)),
                       failures=str(failures), errors="0", skipped="0",
                       time="%.3f" % seconds)
    for case, msg, took in results:
        stem = case[:-len(".toml")]
        classname, _, name = stem.rpartition("/")
        tc = ET.SubElement(suite, "testcase", classname="toml-test." + classname.replace("/", "."),
                           name=name, time="%.3f" % took)
        if msg:
            ET.SubElement(tc, "failure", message=msg.splitlines()[0] if msg else "").text = msg
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(os.path.join(junit_dir, "toml-test.xml"),
                               encoding="utf-8", xml_declaration=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decoder", help="the toml2json program")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("cases", nargs="*", help="run only these cases (as listed)")
    args = ap.parse_args()

    corpus = find_corpus()
    if not corpus:
        print("toml-test: corpus not found (set TOML_TEST_DIR): skipped")
        return SKIP
    decoder = find_decoder(args.decoder)
    if not os.access(decoder, os.X_OK):
        print("toml-test: decoder %s not found or not executable" % decoder)
        return HARD_ERROR
    with open(os.path.join(corpus, "files-toml-1.0.0"), encoding="utf-8") as f:
        listed = [line.strip() for line in f if line.strip()]
    # The list names each valid case's .json too; a case is its .toml.
    cases = [c for c in listed if c.endswith(".toml")]
    if args.cases:
        cases = [c for c in cases if c in args.cases]

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda c: run_case(decoder, corpus, c), cases))
    seconds = time.monotonic() - start

    failed = [(case, msg) for case, msg, _ in results if msg]
    for case, msg in failed:
        print("FAIL %s: %s" % (case, msg))
    write_junit(results, seconds)
    print("toml-test (TOML 1.0.0, %d files listed): %d cases, %d passed, %d failed"
          % (len(listed), len(results), len(results) - len(failed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
