"""alps pull against registries that fail: refused connections fail in
seconds, silent ones after the configured timeout, retries are shown to
the client, a full store says so, a broken docker config only warns; a
cached tag is re-checked (alps outdated, pull's refresh, --no-refresh);
gzip/zstd twins are not downloaded twice."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

import registry_fixture as rf


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo")
    if os.geteuid() != 0:
        pytest.skip("pull tests build images with device nodes and mount: run as root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("pullfail")
    w.registry = rf.Registry(w.dir).start()
    w.small = rf.build_image(w.dir / "small", "s", [{"hello": b"hello\n"}])
    rf.push(w.small, "s", w.registry.host, "test/small", "v1")
    yield w
    w.registry.stop()


def json_lines(out):
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def test_refused_registry_fails_fast_and_shows_retries(daemon):
    port = rf.free_port()               # nobody listens there
    ref = f"{rf.LOOPBACK}:{port}/test/x:1"
    t0 = time.monotonic()
    r = daemon.alps("--json", "pull", ref)
    took = time.monotonic() - t0
    assert r.returncode == 1
    assert took < 6, took               # was 31 s
    events = json_lines(r.stdout)
    notices = [e["message"] for e in events if e.get("event") == "notice"]
    assert f"registry {rf.LOOPBACK}:{port}: connection refused, retry 1 of 2 in 0.5 s" in notices
    assert any("retry 2 of 2 in 1 s" in n for n in notices), notices
    assert events[-1]["ok"] is False and "cannot connect" in events[-1]["message"]
    r = daemon.alps("pull", ref)        # the same lines in text, on stderr
    assert "connection refused, retry 1 of 2" in r.stderr, r.stderr


class SilentListener:
    """Accepts TCP connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((rf.LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


def test_silent_registry_fails_after_the_timeout(daemon_factory):
    silent = SilentListener()
    try:
        d = daemon_factory("[registry]\ntimeout = 2\n")
        host = f"{rf.LOOPBACK}:{silent.port}"
        t0 = time.monotonic()
        r = d.alps("pull", f"{host}/test/x:1")
        took = time.monotonic() - t0
        assert r.returncode == 1
        assert took < 8, took           # was 391 s
        assert host in r.stderr and "within 2 s" in r.stderr, r.stderr
        # --timeout on the command line wins over the configuration.
        t0 = time.monotonic()
        r = d.alps("pull", "--timeout", "1", f"{host}/test/x:1")
        took = time.monotonic() - t0
        assert r.returncode == 1 and took < 5, (took, r.stderr)
        assert host in r.stderr and "within 1 s" in r.stderr, r.stderr
        r = d.alps("pull", "--timeout", "0", f"{host}/test/x:1")
        assert r.returncode == 2
    finally:
        silent.close()


def test_full_store_says_so(daemon_factory, world, tmp_path):
    state = tmp_path / "tiny-store"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    try:
        layout = rf.build_image(tmp_path, "big", [{"big": rf.random_bytes(3 << 20, "full")}])
        rf.push(layout, "big", world.registry.host, "test/big", "v1")
        d = daemon_factory(extra_args=["--state-dir", str(state)], start=False)
        d.state_dir = str(state)
        d.start()
        r = d.alps("pull", f"{world.registry.host}/test/big:v1")
        assert r.returncode == 1
        assert f"no space left on device in {state}: need 3.0 MiB," in r.stderr, r.stderr
        assert "free" in r.stderr and "stopped by its consumer" not in r.stderr
        assert d.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(state)])


def test_broken_docker_config_warns(daemon, world):
    home = os.path.join(daemon.dir, "home-broken")
    os.makedirs(os.path.join(home, ".docker"))
    with open(os.path.join(home, ".docker", "config.json"), "w") as f:
        f.write('{"auths": {"x": ')
    ref = f"{world.registry.host}/test/small:v1"
    r = daemon.alps("pull", ref, env={"HOME": home})
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "config.json" in r.stderr, r.stderr
    r = daemon.alps("--json", "pull", ref, env={"HOME": home})
    assert r.returncode == 0
    events = json_lines(r.stdout)
    assert events[0]["event"] == "warning" and "config.json" in events[0]["message"]
    assert events[-1]["event"] == "done"
