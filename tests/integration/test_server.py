"""alpsd's server: status, concurrency, hostile input, lifecycle, config."""
import json
import sys
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import alpsclient
from conftest import binary


def test_status_cli_human_and_json(daemon):
    r = daemon.alps("status", check=True)
    assert f"(pid {daemon.pid})" in r.stdout
    assert daemon.state_dir in r.stdout
    r = daemon.alps("--json", "status", check=True)
    j = json.loads(r.stdout)
    assert j["ok"] is True
    assert j["pid"] == daemon.pid
    assert j["store"] == daemon.state_dir
    assert j["socket"] == daemon.socket
    assert j["protocol_version"] == 1
    assert j["peak_rss_kb"] > 0
    assert j["clients"] >= 1


def test_status_python_client(daemon, pb):
    with daemon.conn() as c:
        h = c.hello()
        assert h.status == pb.OK
        assert h.hello.protocol_version == pb.PROTOCOL_VERSION_CURRENT
        assert h.hello.server.startswith("alpsd ")
        s1 = c.status()
        s2 = c.status()
        assert s1.status_reply.pid == daemon.pid
        assert s2.status_reply.requests_served > s1.status_reply.requests_served
        assert s2.status_reply.uptime_ms >= s1.status_reply.uptime_ms


def test_cli_unreachable_usage_version(tmpdir_short):
    alps = binary("alps")
    sock = os.path.join(tmpdir_short, "none.sock")
    r = subprocess.run([alps, "--socket", sock, "status"], capture_output=True, text=True)
    assert r.returncode == 3
    assert sock in r.stderr and "alpsd" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([alps, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = subprocess.run([alps], capture_output=True, text=True)
    assert r.returncode == 2
    r = subprocess.run([alps, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "status" in r.stdout
    r = subprocess.run([alps, "status", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Usage: alps" in r.stdout
    r = subprocess.run([alps, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("alps ")
    r = subprocess.run([alps, "--socket", sock, "--json", "status"], capture_output=True,
                       text=True)
    assert r.returncode == 3
    assert json.loads(r.stdout)["ok"] is False


def test_concurrent_clients(daemon):
    errors = []

    def worker():
        try:
            with daemon.conn() as c:
                for _ in range(25):
                    assert c.status().status == 0
        except Exception as e:  # noqa: BLE001 - collected for the assert below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    with daemon.conn() as c:
        assert c.status().status_reply.requests_served >= 40 * 25


def still_serving(daemon):
    with daemon.conn() as c:
        return c.status().status == 0


def test_random_bytes(daemon):
    rnd = random.Random(1234)
    for _ in range(30):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(daemon.socket)
        try:
            s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 2000))))
        except OSError:
            pass
        s.close()
    assert still_serving(daemon)
    assert daemon.alive()


def test_malformed_protobuf_gets_protocol_error(daemon, pb):
    with daemon.conn() as c:
        c.send_frame(b"\xff\xff\xff\xff\xff")
        resp = c.recv()
        assert resp is not None and resp.status == pb.PROTOCOL_ERROR and resp.final
        assert "malformed" in resp.message
        assert c.recv() is None          # then the daemon closes
    assert still_serving(daemon)


def test_oversized_frame_closes(daemon, pb):
    with daemon.conn() as c:
        c.send_raw(struct.pack(">I", 64 * 1024 * 1024))
        resp = c.recv()
        assert resp.status == pb.PROTOCOL_ERROR and "larger" in resp.message
        assert c.recv() is None
    assert still_serving(daemon)


def test_configured_frame_limit(daemon_factory, pb):
    d = daemon_factory("[daemon]\nmax_frame_size = 4096\n")
    with d.conn() as c:
        c.send_raw(struct.pack(">I", 4097))
        assert c.recv().status == pb.PROTOCOL_ERROR
    with d.conn() as c:
        req = pb.Request()
        req.hello.client = "x" * 4000
        req.hello.protocol_version = 1
        assert c.call(req)[1].status == pb.OK


def test_truncated_frame_and_disconnect(daemon):
    for cut in (1, 3, 4, 10):
        s = socket.socket(socket.AF_UNIX)
        s.connect(daemon.socket)
        s.sendall((struct.pack(">I", 100) + b"x" * 100)[:cut])
        s.close()
    assert still_serving(daemon)


def test_half_sent_frame_times_out(daemon_factory):
    d = daemon_factory("[daemon]\nidle_timeout = 1\n")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(d.socket)
    s.sendall(struct.pack(">I", 100) + b"abc")
    t0 = time.monotonic()
    assert s.recv(100) == b""            # closed by the daemon
    assert 0.5 < time.monotonic() - t0 < 8
    s.close()
    assert still_serving(d)


def test_wrong_version(daemon, pb):
    with daemon.conn() as c:
        resp = c.hello(version=99)
        assert resp.status == pb.VERSION_MISMATCH
        assert "99" in resp.message and "version 1" in resp.message
        assert c.recv() is None
    assert still_serving(daemon)


def test_unknown_operation(daemon, pb):
    with daemon.conn() as c:
        # id = 7, then field 99 (length-delimited, empty): an operation from a
        # future protocol this daemon does not know.
        c.send_frame(bytes([0x08, 0x07, 0x9a, 0x06, 0x00]))
        resp = c.recv()
        assert resp.id == 7 and resp.final
        assert resp.status == pb.UNSUPPORTED
        assert "unsupported operation" in resp.message
        assert c.status().status == pb.OK   # the connection goes on


def test_endpoints_with_fabric_disabled(daemon, pb):
    with daemon.conn() as c:
        req = pb.Request()
        req.endpoints.SetInParent()
        resp = c.call(req)[1]
        assert resp.status == pb.OK
        assert json.loads(resp.endpoints_reply.endpoints_json)["enabled"] is False


def test_pipelined_requests_answered_in_order(daemon, pb):
    with daemon.conn() as c:
        ids = []
        blob = b""
        for i in range(50):
            req = pb.Request()
            req.id = 1000 + i
            req.status.SetInParent()
            data = req.SerializeToString()
            blob += struct.pack(">I", len(data)) + data
            ids.append(req.id)
        c.send_raw(blob)
        got = [c.recv().id for _ in ids]
        assert got == ids


def test_admin_operation_refused_for_user(daemon, pb):
    def as_nobody():
        os.setgid(65534)
        os.setuid(65534)

    script = (
        "import sys; sys.path.insert(0, %r); import alpsclient; alpsclient.load_proto(%r);"
        "c = alpsclient.Conn(%r); r = c.pb.Request(); r.remove.reference = 'x';"
        "resp = c.call(r)[1]; print(resp.status, resp.message)"
    ) % (os.path.dirname(__file__), os.environ.get("ALPS_SRCDIR", "."), daemon.socket)
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       preexec_fn=as_nobody, cwd="/")
    assert r.returncode == 0, r.stderr
    code, msg = r.stdout.split(" ", 1)
    assert int(code) == pb.PERMISSION_DENIED
    assert "administrators" in msg and "65534" in msg


def test_thousand_idle_connections(daemon):
    socks = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(daemon.socket)
            socks.append(s)
        t0 = time.monotonic()
        assert still_serving(daemon)
        assert time.monotonic() - t0 < 2
        with daemon.conn() as c:
            assert c.status().status_reply.clients >= 1000
    finally:
        for s in socks:
            s.close()
    assert still_serving(daemon)


def test_connection_limit(daemon_factory, pb):
    d = daemon_factory("[daemon]\nmax_connections = 5\n")
    socks = [socket.socket(socket.AF_UNIX) for _ in range(5)]
    for s in socks:
        s.connect(d.socket)
    with d.conn() as c:
        resp = c.recv()
        assert resp.status == pb.LIMIT_EXCEEDED and "too many connections" in resp.message
    for s in socks:
        s.close()
    time.sleep(0.2)
    assert still_serving(d)


def test_sigterm_leaves_nothing_behind(daemon_factory):
    d = daemon_factory()
    with d.conn() as c:
        assert c.status().status == 0
    pid = d.pid
    assert d.stop() == 0
    assert not os.path.exists(d.socket)
    assert not os.path.exists(f"/proc/{pid}")
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    assert children.stdout.strip() == ""
    assert "stopped" in d.read_log()
    d.check_log_clean()


def test_sigterm_with_idle_client(daemon_factory):
    d = daemon_factory()
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(d.socket)
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 5
    idle.close()


def test_second_daemon_on_same_store_refused(daemon, daemon_factory):
    other = daemon_factory(start=False, subdir="other")
    other.state_dir = daemon.state_dir
    r = subprocess.run(other.argv(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "another alpsd" in r.stderr and daemon.state_dir in r.stderr
    assert still_serving(daemon)


def test_second_daemon_on_same_socket_refused(daemon, daemon_factory):
    other = daemon_factory(start=False, subdir="other")
    other.socket = daemon.socket
    r = subprocess.run(other.argv(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "already listening" in r.stderr
    assert still_serving(daemon)


def test_stale_socket_file_is_replaced(daemon_factory):
    d = daemon_factory(start=False)
    s = socket.socket(socket.AF_UNIX)
    s.bind(d.socket)
    s.close()                       # a socket file nobody listens on
    d.start()
    assert still_serving(d)


@pytest.mark.parametrize("text,want", [
    ("[daemon]\nsockett = \"/x\"\n", "alpsd.conf:2:1: daemon.sockett: unknown key (did you mean 'daemon.socket'?)"),
    ("[store]\ncompression = \"bz2\"\n", "store.compression: 'bz2' is not one of: zstd, gzip, xz, lz4, lzo"),
    ("[daemon\n", "alpsd.conf:1:"),
    ("[jobs]\nallow_user_run = 1\n", "alpsd.conf:2:1: jobs.allow_user_run: must be true or false, not integer"),
])
def test_bad_config_is_refused(daemon_factory, text, want):
    d = daemon_factory(text, start=False)
    r = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert want in r.stderr, r.stderr
    assert not os.path.exists(d.socket)


def test_print_config_round_trips(daemon_factory):
    d = daemon_factory("[store]\ncompression_level = 7\n[[registry.host]]\nhost = \"localhost:5000\"\n"
                       "insecure = true\n", start=False)
    r = subprocess.run(d.argv() + ["--print-config"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "compression_level = 7" in r.stdout
    assert f'socket = "{d.socket}"' in r.stdout
    # The printed config is itself a valid config.
    with open(d.config, "w") as f:
        f.write(r.stdout)
    r2 = subprocess.run(d.argv() + ["--print-config"], capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == r.stdout
    # Without [[registry.host]] entries the section is still shown, commented.
    d = daemon_factory("", start=False)
    r = subprocess.run(d.argv() + ["--print-config"], capture_output=True, text=True)
    assert "# [[registry.host]]" in r.stdout


def test_set_option_on_command_line(daemon_factory):
    d = daemon_factory(start=False, extra_args=["--set", "daemon.nope=1"])
    r = subprocess.run(d.argv(), capture_output=True, text=True)
    assert r.returncode == 1 and "daemon.nope: unknown key" in r.stderr
    # TOML values: an array for a list option.
    d = daemon_factory(start=False, extra_args=["--set", 'jobs.default_mounts=["/opt:/opt"]',
                                                "--print-config"])
    r = subprocess.run(d.argv(), capture_output=True, text=True)
    assert r.returncode == 0 and 'default_mounts = ["/opt:/opt"]' in r.stdout, r.stderr
    d = daemon_factory(start=False, extra_args=["--topology-xml", "/nonexistent/topo.xml"])
    r = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr == ("alpsd: command line: topology.xml: cannot read /nonexistent/topo.xml: "
                        "No such file or directory\n"), r.stderr


def test_sighup_reload(daemon_factory):
    d = daemon_factory(start=False)
    d.run_dir_on_cmdline = False     # the file decides it, so a reload may try to change it
    with open(d.config, "w") as f:
        f.write(f"[daemon]\nlog_level = \"info\"\nrun_dir = \"{d.run_dir}\"\n")
    d.start()
    with open(d.config, "w") as f:
        f.write(f"[daemon]\nlog_level = \"debug\"\nmax_connections = 100\nrun_dir = \"{d.run_dir}\"\n")
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in d.read_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "configuration reloaded" in d.read_log()
    with open(d.config, "w") as f:
        f.write("[daemon]\nrun_dir = \"/tmp/elsewhere\"\n")
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in d.read_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "daemon.run_dir cannot change" in d.read_log()
    with open(d.config, "w") as f:
        f.write("[daemon\n")
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in d.read_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "keeping the running configuration" in d.read_log()
    assert still_serving(d)


def test_log_escapes_untrusted_text(daemon, pb):
    with daemon.conn() as c:
        c.send_frame(b"\x12\x05evil\n")   # malformed: field 2 wire type 2 inside garbage
        c.recv()
    log = daemon.read_log()
    for line in log.splitlines():
        assert not line.startswith("evil")


def test_daemonizes_without_foreground(daemon_factory):
    d = daemon_factory(start=False)
    argv = [a for a in d.argv() if a != "--foreground"]
    # The detached daemon keeps stderr: give it a file, not a pipe we wait on.
    with open(d.log_path, "ab") as log:
        r = subprocess.run(argv, stdout=log, stderr=log, timeout=30)
    assert r.returncode == 0, d.read_log()
    assert os.path.exists(d.socket)
    with d.conn() as c:
        pid = c.status().status_reply.pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(d.socket)


def test_systemd_notify_and_socket_activation(daemon_factory, tmpdir_short):
    d = daemon_factory(start=False)
    notify_path = os.path.join(tmpdir_short, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(20)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(d.socket)
    listener.listen(16)
    script = ("import os,sys; os.dup2(%d, 3); os.environ['LISTEN_PID']=str(os.getpid());"
              "os.environ['LISTEN_FDS']='1'; os.execv(sys.argv[1], sys.argv[1:])"
              % listener.fileno())
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    proc = subprocess.Popen([sys.executable, "-c", script] + d.argv(), env=env,
                            pass_fds=(listener.fileno(),), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert notify.recv(100) == b"READY=1"
        listener.close()
        with alpsclient.Conn(d.socket) as c:
            assert c.status().status_reply.pid == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(100) == b"STOPPING=1"
        assert proc.wait(20) == 0
        # The socket belongs to systemd: the daemon leaves it in place.
        assert os.path.exists(d.socket)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
