"""The operator's view: `alps metrics` (Prometheus text, parsed with
Debian's python3-prometheus-client), the scrape listener of metrics.listen
(loopback TCP or a Unix socket; anything else refused at start; a slow
client stalls no one), the figures `alps status` adds, the key=value event
lines and log.target.  Root only (a job is prepared)."""
import http.client
import json
import os
import signal
import socket
import subprocess
import time

import pytest

import images
import registry_fixture as rf
from conftest import binary

parser = pytest.importorskip("prometheus_client.parser")

NOBODY = 65534


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    if os.geteuid() != 0:
        pytest.skip("job containers need root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("metricsworld")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    layout = rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}],
                            config={"config.env": ["PATH=/bin:/usr/bin"]})
    images.umoci_modify(layout, "bb", w.dir, images.busybox_root, "bb")
    rf.push(layout, "bb", w.registry.host, "test/bb", "v1")
    w.ref = f"{w.registry.host}/test/bb:v1"
    yield w
    w.registry.stop()


def samples(text):
    """{(name, ((label, value), ...)): value} of every sample; the text must
    parse, and each family must say its type."""
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        assert fam.type in ("counter", "gauge", "histogram"), fam
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0)


def scrape_alps(d):
    return samples(d.alps("metrics", check=True).stdout)


def http_get(port, path="/metrics", timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, r.getheader("Content-Type"), body


def test_values_move_and_listener_serves(daemon_factory, world):
    port = rf.free_port()
    d = daemon_factory(f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    before = scrape_alps(d)
    assert val(before, "alps_pulls_total", result="ok") == 0

    d.alps("pull", "--quiet", world.ref, check=True)
    d.alps("prepare", "--job", "501", "--user", str(NOBODY), "--image", world.ref, check=True)
    r = d.alps("exec", "--job", "501", "--", "true", user=NOBODY)
    assert r.returncode == 0, r
    mid = scrape_alps(d)
    d.alps("inspect", "no/such:image")          # one error
    d.alps("release", "--job", "501", check=True)
    d.alps("pull", "--quiet", world.ref, check=True)   # all layers cached now

    status, ctype, body = http_get(port)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    after = samples(body)

    assert val(mid, "alps_pulls_total", result="ok") == 1
    assert val(after, "alps_pulls_total", result="ok") == 2
    assert val(mid, "alps_fetched_bytes_total") > 0
    assert val(mid, "alps_converted_bytes_total") > 0
    assert val(mid, "alps_layers_converted_total") >= 1
    assert val(mid, "alps_conversion_seconds_total") > 0
    assert val(mid, "alps_cache_misses_total") >= 1
    assert val(after, "alps_cache_hits_total") > val(mid, "alps_cache_hits_total")
    assert val(mid, "alps_jobs_prepared") == 1 and val(after, "alps_jobs_prepared") == 0
    assert val(mid, "alps_images") == 1 and val(mid, "alps_layers") >= 1
    assert val(mid, "alps_store_bytes") > 0 and val(mid, "alps_store_fs_free_bytes") > 0
    assert val(mid, "alps_prepare_duration_seconds_count") == 1
    assert val(mid, "alps_prepare_duration_seconds_sum") > 0
    assert val(mid, "alps_prepare_duration_seconds_bucket", le="+Inf") == 1
    assert val(mid, "alps_exec_duration_seconds_count") == 1
    assert val(mid, "alps_requests_total", op="prepare", status="ok") == 1
    assert val(after, "alps_requests_total", op="inspect", status="not_found") == 1
    assert val(after, "alps_errors_total", op="inspect") == 1
    assert val(after, "alps_requests_total", op="release", status="ok") == 1
    assert val(after, "alps_evictions_total") == 0

    # Anything but GET /metrics: 404.
    assert http_get(port, "/")[0] == 404
    assert http_get(port, "/metricsx")[0] == 404

    # One structured line per pull, prepare, release, request error.
    log = d.read_log()
    assert f"event=pull ref={world.ref} digest=sha256:" in log
    assert "result=ok" in log and f"uid={os.getuid()}" in log
    assert f"event=prepare job=501 user=nobody uid={NOBODY} image={world.ref}" in log
    assert "event=release job=501 uid=0 result=ok" in log
    assert 'event=error op=inspect uid=0 code="not found" error="' in log


def test_status_figures_and_failed_reload(daemon_factory, world):
    d = daemon_factory()
    d.alps("pull", "--quiet", world.ref, check=True)
    st = json.loads(d.alps("--json", "status", check=True).stdout)
    assert st["images"] == 1 and st["layers"] >= 1 and st["store_bytes"] > 0
    assert st["fs_size"] >= st["fs_free"] > 0
    assert st["jobs"] == 0 and st["pulls_in_flight"] == 0
    assert st["reload_failed"] is False and st["reload_error"] is None

    with open(d.config, "w") as f:
        f.write("[store]\ncompression = \"brotli\"\n")
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = json.loads(d.alps("--json", "status", check=True).stdout)
        if st["reload_failed"]:
            break
        time.sleep(0.05)
    assert st["reload_failed"] is True and "store.compression" in st["reload_error"]
    text = d.alps("status", check=True).stdout
    assert "reload:    the last one failed:" in text and "1 image(s)" in text
    assert val(scrape_alps(d), "alps_reload_failed") == 1

    with open(d.config, "w") as f:
        f.write("")
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while st["reload_failed"] and time.monotonic() < deadline:
        time.sleep(0.05)
        st = json.loads(d.alps("--json", "status", check=True).stdout)
    assert st["reload_failed"] is False


@pytest.mark.parametrize("listen,why", [
    ("0.0.0.0:9464", "0.0.0.0 is not a loopback address"),
    ("10.1.2.3:9464", "10.1.2.3 is not a loopback address"),
    ("[::]:9464", ":: is not the loopback address [::1]"),
    ("127.0.0.1:0", "the port must be 1 to 65535"),
    ("unix:run/m.sock", "a Unix socket path must be absolute"),
    ("example.org:80", "'example.org' is not an IP address"),
])
def test_non_loopback_listen_refused(tmpdir_short, listen, why):
    r = subprocess.run([binary("alpsd"), "--foreground", "--socket", f"{tmpdir_short}/s.sock",
                        "--state-dir", f"{tmpdir_short}/st", "--run-dir", f"{tmpdir_short}/run",
                        "--set", f"metrics.listen=\"{listen}\""],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    assert f"metrics.listen: '{listen}': {why}" in r.stderr, r.stderr
    assert not os.path.exists(f"{tmpdir_short}/s.sock")


def test_unix_listener_and_slow_clients(daemon_factory):
    path_ = None
    d = daemon_factory(start=False)
    path_ = os.path.join(d.dir, "metrics.sock")
    with open(d.config, "w") as f:
        f.write(f'[metrics]\nlisten = "unix:{path_}"\n')
    d.start()
    assert os.stat(path_).st_mode & 0o777 == 0o666

    def unix_get(req=b"GET /metrics HTTP/1.0\r\n\r\n"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path_)
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.decode()

    head, _, body = unix_get().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK") and "alps_requests_total" in body
    samples(body)
    # A request head larger than the bound is refused, not buffered.
    try:
        big = unix_get(b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 8192 + b"\r\n\r\n")
    except ConnectionResetError:        # closed with the rest unread
        big = "HTTP/1.1 431"
    assert big.startswith("HTTP/1.1 431")

    # A slow loris: a request head trickled a byte at a time, and many idle
    # connections besides (more than the listener's cap: those past it are
    # closed at accept).  The daemon's other requests go on at once.
    loris = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    loris.connect(path_)
    loris.sendall(b"GET /met")
    idle = []
    for _ in range(40):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path_)
        idle.append(s)
    t0 = time.monotonic()
    r = d.alps("status", check=True)
    assert "alpsd" in r.stdout
    assert time.monotonic() - t0 < 2
    # The loris is cut at its deadline (5 s in all), whatever it sends.
    loris.settimeout(10)
    t0 = time.monotonic()
    cut = False
    while time.monotonic() - t0 < 9:
        try:
            loris.sendall(b"r")
            if loris.recv(1, socket.MSG_DONTWAIT) == b"":
                cut = True
                break
        except BlockingIOError:
            pass
        except OSError:
            cut = True
            break
        time.sleep(0.2)
    assert cut, "a trickling client was never cut"
    for s in idle:
        s.close()
    loris.close()
    # Slots freed: scrapes work again.
    assert unix_get().startswith("HTTP/1.1 200 OK")


def test_log_target_file_and_detached(tmpdir_short):
    """A detached alpsd logs to its log.target, not to the stderr it was
    started with."""
    logfile = f"{tmpdir_short}/alpsd.log"
    sock = f"{tmpdir_short}/s.sock"
    r = subprocess.run([binary("alpsd"), "--socket", sock, "--state-dir", f"{tmpdir_short}/st",
                        "--run-dir", f"{tmpdir_short}/run", "--set", f"log.target=file:{logfile}"],
                       capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"})
    assert r.returncode == 0, r
    with open(f"{tmpdir_short}/st/alpsd.lock") as f:
        pid = int(f.read().strip())
    try:
        subprocess.run([binary("alps"), "--socket", sock, "inspect", "x/y:z"],
                       capture_output=True, timeout=30)
        with open(logfile) as f:
            text = f.read()
        assert "ready on " + sock in text
        assert "event=error op=inspect" in text
        assert r.stderr == "" and r.stdout == ""
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
    with open(logfile) as f:
        text = f.read()
    assert "stopped" in text
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert marker not in text

    r = subprocess.run([binary("alpsd"), "--foreground", "--socket", sock,
                        "--set", "log.target=file:relative.log"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "log.target: must be auto, stderr, syslog or " \
        "file:/absolute/path, not 'file:relative.log'" in r.stderr


def test_figures_never_wait_for_a_busy_store(daemon_factory, world):
    """A store held by a prepare waiting on sqlite's lock (an admin's
    sqlite3 shell): status and a scrape answer within half a second, with
    the last figures read and a note."""
    import sqlite3
    d = daemon_factory()
    d.alps("pull", "--quiet", world.ref, check=True)
    assert json.loads(d.alps("--json", "status", check=True).stdout)["images"] == 1
    db = sqlite3.connect(os.path.join(d.state_dir, "alps.db"), isolation_level=None, timeout=10)
    db.execute("BEGIN EXCLUSIVE")
    db.execute("UPDATE stats SET value = value WHERE 0")
    try:
        prep = subprocess.Popen([binary("alps"), "--socket", d.socket, "prepare", "--job",
                                 "busy", "--user", str(NOBODY), "--image", world.ref],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        t0 = time.monotonic()
        st = json.loads(d.alps("--json", "status", check=True, timeout=5).stdout)
        m = samples(d.alps("metrics", check=True, timeout=5).stdout)
        assert time.monotonic() - t0 < 3
        if prep.poll() is None:         # it still holds the store: the figures are old
            assert st["store_error"].startswith("the store is busy: its figures are ")
        assert st["images"] == 1 and val(m, "alps_images") == 1
    finally:
        db.close()
    prep.communicate(timeout=60)
    d.alps("release", "--job", "busy")
