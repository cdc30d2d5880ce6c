"""The namespace helper (alps-nshelper): prepares of different jobs run in
parallel, each in a helper program of its own, and a helper that stalls
(on a FUSE file system whose server is stopped, as a user can do to their
own squashfuse) holds its own job only, until the prepare timeout.
Root only (real mounts)."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import binary, mounts_under
from test_job import NOBODY, bbworld, edf, exec_, prepare  # noqa: F401 (fixture)

N = 20
STALL_TIMEOUT_S = 10
# Another job's prepare while one helper is stalled: far below the stalled
# one's timeout, far above a prepare's usual time (0.1-0.5 s under ASan).
OTHER_PREPARE_BOUND_S = 5.0


@pytest.fixture
def pd(daemon_factory, bbworld):  # noqa: F811
    d = daemon_factory(f"[jobs]\nprepare_timeout = {STALL_TIMEOUT_S}\n")
    d.alps("pull", "--quiet", bbworld.ref, check=True)
    d.ref = bbworld.ref
    return d


def helper_spans(log):
    """(start, end) line numbers of each namespace helper, by pid."""
    starts, spans = {}, []
    for n, line in enumerate(log.splitlines()):
        m = re.search(r"namespace helper (\d+) (started|done)", line)
        if not m:
            continue
        if m.group(2) == "started":
            starts[m.group(1)] = n
        elif m.group(1) in starts:
            spans.append((starts.pop(m.group(1)), n))
    return spans


def most_at_once(spans):
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def test_concurrent_prepares_overlap(pd):
    procs = [subprocess.Popen([binary("alps"), "--socket", pd.socket, "prepare", "--job",
                               f"c{i}", "--user", str(NOBODY), "--image", pd.ref],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(N)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    log = pd.read_log()
    spans = helper_spans(log)
    # One helper per job, none retried, and they ran side by side.
    assert len(spans) == N, log[-3000:]
    assert "trying once more" not in log
    assert most_at_once(spans) > 1, spans
    for i in range(N):
        assert exec_(pd, f"c{i}", "true").returncode == 0
        pd.alps("release", "--job", f"c{i}", check=True)
    assert mounts_under(pd.run_dir + "/jobs") == []


@pytest.fixture
def stopped_fuse(tmpdir_short):
    """A squashfuse mount (allow_other) whose server is SIGSTOPped: any
    lookup below its root waits until the server runs again."""
    if not shutil.which("squashfuse") or not os.path.exists("/dev/fuse"):
        pytest.skip("needs squashfuse and /dev/fuse")
    tree, img, mnt = (os.path.join(tmpdir_short, n) for n in ("tree", "fuse.sqfs", "fuse"))
    os.makedirs(os.path.join(tree, "d"))
    os.makedirs(mnt)
    subprocess.run(["mksquashfs", tree, img, "-quiet", "-noappend"], check=True,
                   capture_output=True)
    fuse = subprocess.Popen(["squashfuse", "-f", "-o", "allow_other", img, mnt])
    deadline = time.monotonic() + 10
    while not os.path.ismount(mnt):
        assert time.monotonic() < deadline and fuse.poll() is None, "squashfuse did not mount"
        time.sleep(0.05)
    fuse.send_signal(signal.SIGSTOP)
    yield mnt
    fuse.send_signal(signal.SIGCONT)
    fuse.terminate()        # squashfuse unmounts on SIGTERM
    fuse.wait(timeout=10)
    if os.path.ismount(mnt):
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def wait_path(path, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_stalled_helper_holds_only_its_job(pd, stopped_fuse, tmpdir_short):
    e = edf(tmpdir_short, "stall.toml",
            f'image = "{pd.ref}"\nmounts = ["{stopped_fuse}/d:/data:ro"]\n')
    t0 = time.monotonic()
    stalled = subprocess.Popen([binary("alps"), "--socket", pd.socket, "prepare", "--job",
                                "stall", "--user", str(NOBODY), "--environment", e],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The helper holds its layers (it wrote their list) and goes on to the
    # mounts; the user bind's lookup then waits on the stopped server.
    wait_path(os.path.join(pd.run_dir, "jobs", "stall", "layers"), 30)
    time.sleep(1)
    assert stalled.poll() is None, "the stalled prepare ended early"
    t1 = time.monotonic()
    prepare(pd, "other", "--image", pd.ref)
    other = time.monotonic() - t1
    print(f"another job's prepare while a helper is stalled: {other:.2f} s")
    assert other < OTHER_PREPARE_BOUND_S, f"another job's prepare took {other:.1f} s"
    assert stalled.poll() is None
    assert exec_(pd, "other", "true").returncode == 0
    # The stalled one ends at its timeout, once, naming where it was.
    _, err = stalled.communicate(timeout=STALL_TIMEOUT_S * 3)
    took = time.monotonic() - t0
    assert stalled.returncode != 0
    assert f"took over {STALL_TIMEOUT_S * 1000} ms" in err, err
    assert "last report" in err
    assert took < STALL_TIMEOUT_S * 1.8, f"the stalled prepare took {took:.1f} s"
    log = pd.read_log()
    assert "trying once more" not in log
    assert not os.path.exists(os.path.join(pd.run_dir, "jobs", "stall"))
    pd.alps("release", "--job", "other", check=True)
    assert mounts_under(pd.run_dir + "/jobs") == []


def test_missing_helper_is_a_clear_error(daemon_factory, bbworld):  # noqa: F811
    missing = "/nonexistent/alps-nshelper"
    d = daemon_factory(env={"ALPS_NSHELPER": missing})
    d.alps("pull", "--quiet", bbworld.ref, check=True)
    r = prepare(d, "nohelper", "--image", bbworld.ref, check=False)
    assert r.returncode != 0
    assert f"starting the namespace helper {missing}" in r.stderr, r.stderr
    assert "No such file" in r.stderr
    assert not os.path.exists(os.path.join(d.run_dir, "jobs", "nohelper"))
    assert mounts_under(d.run_dir + "/jobs") == []
    assert "nohelper" not in d.alps("jobs").stdout
