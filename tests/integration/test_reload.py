"""Reloads and stops while work runs: SIGHUP in a tight loop under
concurrent prepares and pulls (the configuration and topology are snapshots
each piece of work holds), and SIGTERM with an exec and a slow pull in
flight (the daemon waits for them, within daemon.shutdown_grace).

With ALPS_TSAN_BUILDDIR set (a build configured with --enable-tsan), the
daemon and client of that build run instead, and the log must hold no
ThreadSanitizer report either.  Root only (jobs mount)."""
import http.server
import json
import os
import signal
import subprocess
import threading
import time

import pytest

import conftest
import images
import registry_fixture as rf
from conftest import binary, mounts_under

NOBODY = 65534
TSAN_MARKERS = ("WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer")


@pytest.fixture(autouse=True)
def tsan_build(monkeypatch):
    """Use the TSan build's binaries when one is named."""
    d = os.environ.get("ALPS_TSAN_BUILDDIR")
    if d:
        if not os.path.exists(os.path.join(d, "alpsd")):
            pytest.fail(f"ALPS_TSAN_BUILDDIR={d} has no alpsd")
        monkeypatch.setattr(conftest, "BUILDDIR", d)
    return d


def check_no_tsan(d):
    text = d.read_log()
    for m in TSAN_MARKERS:
        at = text.find(m)
        assert at < 0, f"ThreadSanitizer report in alpsd log:\n{text[at:at + 12000]}"


def build_world(w):
    """The images, pushed to w.registry."""
    host = w.registry.host
    layout = rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}])
    images.umoci_modify(layout, "bb", w.dir, images.busybox_root, "bb")
    rf.push(layout, "bb", host, "test/bb", "v1")
    w.bb = f"{host}/test/bb:v1"
    # Images that prepares pull on their way (each a new busybox top layer)
    # and images pulled alone: real downloads and conversions under reloads.
    w.prep_refs, w.pull_refs = [], []
    for i in range(4):
        def top(root, i=i):
            with open(f"{root}/etc/which", "w") as f:
                f.write(f"prep {i}\n")
        rf.run(["umoci", "tag", "--image", f"{layout.path}:bb", f"bbp{i}"])
        images.umoci_modify(layout, f"bbp{i}", w.dir, top, f"bbp{i}")
        rf.push(layout, f"bbp{i}", host, "test/bbp", f"v{i}")
        w.prep_refs.append(f"{host}/test/bbp:v{i}")
    for i in range(5):
        lay = rf.build_image(w.dir / f"p{i}", "p", [{"a": rf.random_bytes(1 << 20, f"pa{i}")},
                                                     {"b": rf.random_bytes(2 << 20, f"pb{i}")}])
        rf.push(lay, "p", host, "test/pulled", f"v{i}")
        w.pull_refs.append(f"{host}/test/pulled:v{i}")
    slow = rf.build_image(w.dir / "slow", "s", [{"s": rf.random_bytes(3 << 20, "slow")}])
    rf.push(slow, "s", host, "test/slow", "v1")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    if os.geteuid() != 0:
        pytest.skip("job containers need root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("reloadworld")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    try:
        build_world(w)
        yield w
    finally:
        w.registry.stop()


# Two configurations the reloads alternate between: strings a prepare or a
# pull reads (a freed one would show under ASan) change each time.
# jobs.prepare_timeout stays: it is still a module global of the namespace
# code, written on the loop (TSan sees that race until the job spec carries
# it).
CONFIGS = [
    '[daemon]\nshutdown_grace = 20\n[jobs]\nprepare_timeout = 60\n'
    '[registry]\ntimeout = 60\ndefault = "docker.io"\n',
    '[daemon]\nshutdown_grace = 21\n[jobs]\nprepare_timeout = 60\n'
    '[registry]\ntimeout = 61\ndefault = "registry.example.org"\n'
    '[store]\ncompression_level = 4\n',
]


class Hupper:
    """SIGHUP the daemon in a tight loop, rewriting its config each time."""

    def __init__(self, d):
        self.d, self.count = d, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            # Whole files only (rename): a reload never reads a half one.
            with open(self.d.config + ".new", "w") as f:
                f.write(CONFIGS[self.count % 2])
            os.rename(self.d.config + ".new", self.d.config)
            os.kill(self.d.pid, signal.SIGHUP)
            self.count += 1
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join()


def test_sighup_storm_during_prepares_and_pulls(daemon_factory, world):
    d = daemon_factory(CONFIGS[0])
    d.alps("pull", "--quiet", world.bb, check=True)
    argvs = []
    for i in range(25):
        ref = world.bb if i % 2 == 0 else world.prep_refs[i % len(world.prep_refs)]
        argvs.append(["prepare", "--job", f"r{i}", "--user", str(NOBODY), "--image", ref])
    for i in range(25):
        argvs.append(["--json", "pull", world.pull_refs[i % len(world.pull_refs)]])
    with Hupper(d) as h:
        procs = [subprocess.Popen([binary("alps"), "--socket", d.socket] + a,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for a in argvs]
        outs = [p.communicate(timeout=600) for p in procs]
    assert d.alive(), d.read_log()[-6000:]
    bad = [(a, p.returncode, e) for a, p, (o, e) in zip(argvs, procs, outs) if p.returncode != 0]
    assert not bad, bad[:3]
    for a, (o, e) in zip(argvs[25:], outs[25:]):
        assert json.loads(o.splitlines()[-1])["digest"].startswith("sha256:"), o
    assert h.count >= 50, h.count
    log = d.read_log()
    assert log.count("configuration reloaded") >= 5, log[-3000:]
    # The jobs are whole: each runs, each releases.
    for i in range(25):
        r = d.alps("exec", "--job", f"r{i}", "--", "cat", "/etc/base", user=NOBODY)
        assert r.returncode == 0 and r.stdout == "base\n", (i, r.stderr)
        d.alps("release", "--job", f"r{i}", check=True)
    assert mounts_under(d.run_dir + "/jobs") == []
    rc = d.stop()
    d.check_log_clean()
    check_no_tsan(d)
    assert rc == 0


# Blob bodies trickle (64 KiB / 20 ms): test_pull's forwarding proxy.
from test_pull import _SlowHandler as _TrickleHandler  # noqa: E402


@pytest.fixture
def trickle(world):
    port = rf.free_port()
    proxy = http.server.ThreadingHTTPServer((rf.LOOPBACK, port), _TrickleHandler)
    proxy.upstream = world.registry.host
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield f"{rf.LOOPBACK}:{port}"
    proxy.shutdown()
    proxy.server_close()


def wait_progress(p, timeout=30):
    """Read a --json pull's events until bytes flow."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            return False
        ev = json.loads(line)
        if ev.get("event") == "progress" and ev.get("compressed_done", 0) > 0:
            return True
    return False


def test_sigterm_waits_for_exec_and_pull(daemon_factory, world, trickle):
    d = daemon_factory("[daemon]\nshutdown_grace = 30\n")
    d.alps("pull", "--quiet", world.bb, check=True)
    d.alps("prepare", "--job", "t1", "--user", str(NOBODY), "--image", world.bb, check=True)
    slow_ref = f"{trickle}/test/slow:v1"
    for i in range(20):
        if i:
            d.start()
        ex = subprocess.Popen([binary("alps"), "--socket", d.socket, "exec", "--job", "t1",
                               "--", "sh", "-c", "sleep 1; echo done"], user=NOBODY,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pull = subprocess.Popen([binary("alps"), "--socket", d.socket, "--json", "pull",
                                 slow_ref], stdout=subprocess.PIPE, text=True)
        assert wait_progress(pull), d.read_log()[-3000:]
        t0 = time.monotonic()
        assert d.stop() == 0
        stopped = time.monotonic() - t0
        out, err = ex.communicate(timeout=30)
        assert ex.returncode == 0 and out == "done\n", (i, ex.returncode, out, err)
        rest = pull.communicate(timeout=30)[0]
        assert pull.returncode == 0, (i, rest)
        assert json.loads(rest.splitlines()[-1])["digest"].startswith("sha256:")
        assert stopped < 25, stopped
        d.start()
        d.alps("rm", slow_ref, check=True)
        d.stop()
    log = d.read_log()
    assert "still in flight" not in log, log[-3000:]
    d.start()
    d.alps("release", "--job", "t1", check=True)
    assert mounts_under(d.run_dir + "/jobs") == []
    d.stop()
    d.check_log_clean()
    check_no_tsan(d)


def test_sigterm_gives_up_after_the_grace(daemon_factory, world, trickle):
    d = daemon_factory("[daemon]\nshutdown_grace = 1\n")
    d.alps("pull", "--quiet", world.bb, check=True)
    d.alps("prepare", "--job", "t2", "--user", str(NOBODY), "--image", world.bb, check=True)
    ex = subprocess.Popen([binary("alps"), "--socket", d.socket, "exec", "--job", "t2",
                           "--", "sleep", "30"], user=NOBODY, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    assert d.stop() == 0
    waited = time.monotonic() - t0
    assert 0.9 <= waited < 10, waited
    assert "still in flight after" in d.read_log()
    # The client waits for its command (alpsd is gone, the job is not),
    # then says its status is unknown.
    d.start()
    d.alps("release", "--job", "t2", check=True)
    assert ex.wait(20) == 125
    d.stop()
    d.check_log_clean()
    check_no_tsan(d)


def test_prepare_does_not_wait_behind_conversions(daemon_factory, world, trickle):
    # One conversion at a time: trickled layers keep it busy for seconds.
    d = daemon_factory("[daemon]\nworkers = 1\n")
    d.alps("pull", "--quiet", world.bb, check=True)
    pulls = [subprocess.Popen([binary("alps"), "--socket", d.socket, "pull", "--quiet",
                               ref.replace(world.registry.host, trickle)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for ref in world.pull_refs]
    time.sleep(0.5)
    t0 = time.monotonic()
    d.alps("prepare", "--job", "q1", "--user", str(NOBODY), "--image", world.bb, check=True)
    took = time.monotonic() - t0
    busy = sum(p.poll() is None for p in pulls)
    for p in pulls:
        assert p.wait(300) == 0, p.stderr.read()
    assert busy > 0 and took < 5, (busy, took)
    d.alps("release", "--job", "q1", check=True)
    rc = d.stop()
    d.check_log_clean()
    check_no_tsan(d)
    assert rc == 0
