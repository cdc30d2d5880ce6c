"""Warm fabric endpoints and the peer table: three fabric_node instances.

Each instance (tests/tools/fabric_node) runs one fabric on its own loop with
the tcp provider, bound to 127.0.0.2, .3 and .4 on one port, the others as
its peers.  Everything stays on loopback; every process is started here and
ended by its PID."""
import json
import os
import queue
import random
import signal
import socket
import subprocess
import threading
import time

import pytest

SRCDIR = os.environ.get("ALPS_SRCDIR",
                        os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILDDIR = os.environ.get("ALPS_BUILDDIR", SRCDIR)

ADDRS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
INTERVAL_MS = 200
DOWN_AFTER_MS = 1200
DIGEST = "sha256:" + "ab" * 32
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def tool_path():
    path = os.environ.get("ALPS_FABRIC_NODE") or os.path.join(BUILDDIR, "tests", "tools",
                                                              "fabric_node")
    if not os.path.exists(path):
        pytest.skip(f"fabric_node not built ({path})")
    return path


def free_port():
    """A port free on all three addresses (bound and released at once)."""
    for _ in range(50):
        port = random.randint(20000, 60000)
        socks = []
        try:
            for a in ADDRS:
                s = socket.socket()
                socks.append(s)
                s.bind((a, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no free port on loopback")


def wait_until(pred, timeout, step=0.05):
    """Seconds until pred() held; fails the test after timeout."""
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)


class Node:
    """One fabric_node process; commands on stdin, JSON events on stdout."""

    def __init__(self, addr, port, tmpdir, peers=None, extra=()):
        self.addr = addr
        self.port = port
        peers = peers if peers is not None else [a for a in ADDRS if a != addr]
        self.argv = [tool_path(), "--node", addr, "--address", addr, "--port", str(port),
                     "--peers", ",".join(peers), "--interval", str(INTERVAL_MS),
                     "--down-after", str(DOWN_AFTER_MS), "--log-level", "info", *extra]
        self.err_path = os.path.join(tmpdir, f"{addr}.err")
        self.proc = None

    def start(self):
        self.events = queue.Queue()
        self.err = open(self.err_path, "ab")
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, bufsize=1, env=env)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_event("ready", 20)
        return self

    def _read(self, proc):
        for line in proc.stdout:
            self.events.put(json.loads(line))

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_event(self, kind, timeout=10, fail_on_error=True):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{self.addr}: no '{kind}' event; stderr:\n{self.stderr()}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev["event"] == kind:
                return ev
            if ev["event"] == "error" and fail_on_error:
                pytest.fail(f"{self.addr}: {ev['message']}")

    def command(self, line, kind):
        self.send(line)
        return self.wait_event(kind)

    def table(self):
        return self.command("table", "table")

    def states(self):
        return {p["name"]: p["state"] for p in self.table()["peers"]}

    def all_up(self):
        return all(s == "up" for s in self.states().values())

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.err.close()

    def stop(self):
        """Quit cleanly (end of input) and check the sanitizers' verdict."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
                pytest.fail(f"{self.addr} did not exit on end of input")
        self.err.close()
        return self.proc.returncode


@pytest.fixture
def cluster(tmp_path):
    port = free_port()
    nodes = [Node(a, port, str(tmp_path)) for a in ADDRS]
    for n in nodes:
        n.start()
    yield nodes
    codes = []
    for n in nodes:
        if n.proc.poll() is None:
            codes.append((n.addr, n.stop()))
    for n in nodes:
        for mark in SANITIZER_MARKS:
            assert mark not in n.stderr(), n.stderr()
    assert all(c == 0 for _, c in codes), codes


def test_peer_table_converges(cluster):
    took = wait_until(lambda: all(n.all_up() for n in cluster), timeout=10)
    # Both directions ping once per interval; a few intervals is plenty.
    assert took < 5, took
    for n in cluster:
        t = n.table()
        assert t["state"] == "open"
        ep = t["endpoints"][0]
        assert ep["provider"] == "tcp;ofi_rxm"
        assert ep["address"] == f"fi_sockaddr_in://{n.addr}:{n.port}"
        assert ep["control"] is True
        for p in t["peers"]:
            assert p["address"] == f"{p['name']}:{n.port}"
        wait_until(lambda: all(p["rtt_us"] for p in n.table()["peers"]), timeout=5)


def test_peer_down_and_back(cluster):
    wait_until(lambda: all(n.all_up() for n in cluster), timeout=10)
    victim, watchers = cluster[2], cluster[:2]
    victim.kill9()
    took = wait_until(lambda: all(w.states()[victim.addr] == "down" for w in watchers),
                      timeout=10, step=0.02)
    # Silent for peer_down_after_ms means down; allow one interval for the
    # last ping in flight and some scheduling slack.
    assert took <= (DOWN_AFTER_MS + INTERVAL_MS) / 1000 + 0.5, took
    for w in watchers:
        assert w.states()[watchers[0].addr if w is watchers[1] else watchers[1].addr] == "up"
    victim.start()
    back = wait_until(lambda: all(n.all_up() for n in cluster), timeout=10)
    assert back < 5, back
    assert "restarted" in watchers[0].stderr()


def test_job_map(cluster):
    wait_until(lambda: all(n.all_up() for n in cluster), timeout=10)
    # Up comes with the first message heard; the round-trip time with the
    # first pong.
    wait_until(lambda: all(p["rtt_us"] for p in cluster[0].table()["peers"]), timeout=5)
    ev = cluster[0].command("map " + ",".join(ADDRS + ["nosuchnode"]), "map")
    m = ev["map"]
    assert m["provider"] == "tcp;ofi_rxm"
    assert m["from"] == ADDRS[0]
    assert [x["name"] for x in m["nodes"]] == ADDRS + ["nosuchnode"]
    assert ev["down"] == ["nosuchnode"]
    for node, addr in zip(m["nodes"], ADDRS):
        assert node["state"] == "up"
        assert node["addresses"][0]["address"] == f"fi_sockaddr_in://{addr}:{cluster[0].port}"
        assert node["addresses"][0]["provider"] == "tcp;ofi_rxm"
        # sockaddr_in in hex: family 2, then the port and the address.
        assert node["addresses"][0]["hex"].startswith("0200%04x" % cluster[0].port)
        if addr != ADDRS[0]:
            assert node["rtt_us"] > 0 and node["last_seen"]
    assert m["nodes"][0]["self"] is True
    assert m["nodes"][3]["state"] == "not-a-peer"
    # A node that dies is reported down by the map, for prepare to say so.
    cluster[1].kill9()
    wait_until(lambda: cluster[0].states()[ADDRS[1]] == "down", timeout=10)
    ev = cluster[0].command("map " + ",".join(ADDRS), "map")
    assert ev["down"] == [ADDRS[1]]


def test_pin_reaches_the_job(cluster):
    wait_until(lambda: all(n.all_up() for n in cluster), timeout=10)
    ref = "registry.example/ngc-pytorch:26.01-py3"
    ev = cluster[0].command(f"pin 4242 {ref} {DIGEST} " + ",".join(ADDRS), "pin")
    assert ev["queued"] == 2
    for n in cluster:
        wait_until(lambda: n.command(f"lookup 4242 {ref}", "lookup")["digest"] == DIGEST,
                   timeout=5)
        assert n.command(f"lookup 4243 {ref}", "lookup")["digest"] is None
        assert n.command("lookup 4242 other:tag", "lookup")["digest"] is None
    # A bad digest is refused before anything is sent.
    cluster[0].send(f"pin 4242 {ref} sha256:0123")
    assert "digest" in cluster[0].wait_event("error", fail_on_error=False)["message"]


def hostile_payloads():
    """Datagrams a broken or hostile sender could put on the fabric."""
    hdr = lambda t, n, magic=b"ALPF", ver=1, res=0: (
        magic + bytes([ver, t]) + res.to_bytes(2, "big") + n.to_bytes(4, "big"))
    rng = random.Random(7)
    yield b"\x00"
    yield hdr(1, 0)                                     # ping without a payload
    yield hdr(1, 100)                                   # length past the end
    yield hdr(9, 0)                                     # unknown type
    yield hdr(1, 0, magic=b"XXXX")
    yield hdr(1, 0, ver=2)
    yield hdr(1, 0, res=1)
    yield hdr(3, 4) + b"\xff\xff\x00\x00"               # string longer than the datagram
    yield hdr(3, 6) + b"\x00\x04abcd"                   # string without its NUL
    for _ in range(40):
        yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    # Larger than any receive buffer: the receiving side's RxM drops the
    # connection (what was in flight behind it fails), so it comes last.
    yield b"ALPF" + bytes(1500)


def test_reload_peers(cluster):
    """SIGHUP's path: a peer removed from the list leaves the table, one
    added back starts unknown and comes up; the others keep their state."""
    wait_until(lambda: all(n.all_up() for n in cluster), timeout=10)
    n0 = cluster[0]
    n0.command(f"peers {ADDRS[1]}", "reloaded")
    after = n0.table()["peers"]
    assert [p["name"] for p in after] == [ADDRS[1]]
    assert after[0]["state"] == "up" and after[0]["last_seen"]
    assert n0.command(f"map {ADDRS[2]}", "map")["down"] == [ADDRS[2]]
    n0.command(f"peers {ADDRS[1]},{ADDRS[2]}", "reloaded")
    assert n0.states()[ADDRS[2]] in ("unknown", "up")
    wait_until(n0.all_up, timeout=5)
    # A bad list is refused and the running one kept.
    n0.send("peers 127.0.0.3:0")
    assert "bad port" in n0.wait_event("error", fail_on_error=False)["message"]
    assert sorted(n0.states()) == sorted(ADDRS[1:])


def test_hostile_messages_are_rejected(cluster):
    wait_until(lambda: all(n.all_up() for n in cluster), timeout=10)
    sender, target = cluster[0], cluster[1]
    sent = 0
    for payload in hostile_payloads():
        assert sender.command(f"raw {target.addr} {payload.hex()}", "raw")["queued"]
        sent += 1
    wait_until(lambda: target.table()["counters"]["messages_rejected"] >= sent, timeout=10)
    assert target.proc.poll() is None
    assert "rejected a message" in target.stderr()
    # Still a working member of the cluster.
    wait_until(lambda: all(n.all_up() for n in cluster), timeout=5)


def test_raw_tcp_garbage_on_the_port(cluster):
    """Bytes that are not even libfabric's wire protocol."""
    wait_until(lambda: all(n.all_up() for n in cluster), timeout=10)
    target = cluster[1]
    rng = random.Random(11)
    for i in range(20):
        with socket.create_connection((target.addr, target.port), timeout=2) as s:
            try:
                s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))))
            except OSError:
                pass
    assert target.proc.poll() is None
    wait_until(lambda: all(n.all_up() for n in cluster), timeout=5)


def test_bad_peer_list_is_refused(tmp_path):
    port = free_port()
    for peers in (["127.0.0.3:0"], ["127.0.0.3:99999"], ["127.0.0.3:x"], ["bad/name"],
                  ["127.0.0.3:1:2"]):
        n = Node(ADDRS[0], port, str(tmp_path), peers=peers)
        proc = subprocess.run(n.argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=20)
        assert proc.returncode != 0, peers
        assert "peer" in proc.stderr, proc.stderr


def test_non_loopback_refused_by_the_tool(tmp_path):
    n = Node(ADDRS[0], free_port(), str(tmp_path), peers=["192.0.2.1"])
    proc = subprocess.run(n.argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr


def test_port_in_use_is_retried(tmp_path):
    """An endpoint that cannot open is reported and retried with backoff."""
    port = free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind((ADDRS[0], port))
    holder.listen()
    n = Node(ADDRS[0], port, str(tmp_path)).start()
    try:
        t = n.table()
        assert t["state"] == "retrying"
        assert "in use" in t["last_error"]
        holder.close()
        wait_until(lambda: n.table()["state"] == "open", timeout=10)
        assert n.table()["counters"]["endpoint_reopens"] == 1
    finally:
        holder.close()
        assert n.stop() == 0


def test_nic_addresses_travel_with_liveness(tmp_path):
    """A provider that does not address by host:port (shm here, cxi on a
    Slingshot machine) gets its own warm endpoints; the daemons talk over a
    tcp control endpoint and learn each other's NIC addresses from the
    pings, so the job map lists them with no exchange at job start."""
    port = free_port()
    nodes = [Node(a, port, str(tmp_path), peers=[b for b in ADDRS[:2] if b != a],
                  extra=("--provider", "shm")).start() for a in ADDRS[:2]]
    try:
        wait_until(lambda: all(n.all_up() for n in nodes), timeout=10)
        eps = nodes[0].table()["endpoints"]
        assert [(e["provider"], e["control"]) for e in eps] == [("tcp;ofi_rxm", True),
                                                                  ("shm", False)]
        ev = nodes[0].command("map " + ",".join(ADDRS[:2]), "map")
        assert ev["down"] == [] and ev["map"]["provider"] == "shm"
        peer_shm = nodes[1].table()["endpoints"][1]["address"]
        assert ev["map"]["nodes"][1]["addresses"] == [
            {"hex": ev["map"]["nodes"][1]["addresses"][0]["hex"], "address": peer_shm,
             "provider": "shm"}]
        assert ev["map"]["nodes"][0]["addresses"][0]["address"] == eps[1]["address"]
    finally:
        for n in nodes:
            assert n.stop() == 0
        for n in nodes:
            for mark in SANITIZER_MARKS:
                assert mark not in n.stderr(), n.stderr()
