"""alps pull against a real registry (docker-registry on loopback), with
images built by umoci/skopeo and hand-made hostile layers.  The oracle for
conversion: the overlay of an image's layer squashfs files equals what
`umoci unpack` makes of the same image."""
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

import http.client
import http.server

import pytest

import images
import registry_fixture as rf


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo")
    if os.geteuid() != 0:
        pytest.skip("pull tests build images with device nodes and mount: run as root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("pullworld")
    w.registry = rf.Registry(w.dir).start()
    host = w.registry.host
    layout = rf.build_image(w.dir, "base", [{"etc/base": b"base\n"}],
                            config={"config.label": ["org.opencontainers.image.source=https://example.org/x"],
                                    "config.env": ["FOO=bar"]})
    images.umoci_modify(layout, "base", w.dir, images.rich_base, "rich-base")
    images.umoci_modify(layout, "base", w.dir, images.rich_change, "rich-change")
    raw, blob = images.tar_layer([
        ("data/keep/", "dir", None, {}),
        ("data/keep/.wh..wh..opq", "file", b"", {}),
        ("data/keep/only", "file", b"only this\n", {}),
        ("etc/.wh.fifo", "file", b"", {}),
    ])
    images.append_layer(layout, "base", "rich", raw, blob)
    rf.push(layout, "rich", host, "test/rich", "v1")
    w.rich_layout = layout
    # Two images sharing all but the top layer (the benchmark's shape, small).
    shared = rf.build_image(w.dir / "shared", "a", [{"big/one": rf.random_bytes(2 << 20, "one")},
                                                    {"big/two": rf.random_bytes(1 << 20, "two")}])
    rf.push(shared, "a", host, "test/shared", "a")
    rf.run(["umoci", "tag", "--image", f"{shared.path}:a", "b"])

    def add_top(root):
        os.makedirs(f"{root}/top", exist_ok=True)
        with open(f"{root}/top/b", "w") as f:
            f.write("only b\n")

    images.umoci_modify(shared, "b", w.dir, add_top, "shared-b")
    rf.push(shared, "b", host, "test/shared", "b")
    w.shared = shared
    w.small = rf.build_image(w.dir / "small", "s", [{"hello": b"hello\n"}])
    rf.push(w.small, "s", host, "test/small", "v1")
    yield w
    w.registry.stop()


def layer_files(daemon, ref):
    j = json.loads(daemon.alps("--json", "inspect", ref, check=True).stdout)
    return [os.path.join(daemon.state_dir, "layers", l["digest"].replace(":", "-") + ".sqfs")
            for l in j["manifest"]["layers"]]


def store_consistent(daemon):
    """Database sound, every row's file there, no stray files, tmp/ empty."""
    db = sqlite3.connect(os.path.join(daemon.state_dir, "alps.db"))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    names = {r[0] for r in db.execute("SELECT digest FROM layers")}
    db.close()
    files = {f[:-5].replace("-", ":", 1) for f in os.listdir(os.path.join(daemon.state_dir, "layers"))}
    assert files == names, (files, names)
    assert os.listdir(os.path.join(daemon.state_dir, "tmp")) == []


def test_pull_images_inspect(daemon, world):
    ref = f"{world.registry.host}/test/small:v1"
    r = daemon.alps("pull", ref, check=True)
    assert ref in r.stdout and "1 layers (1 fetched)" in r.stdout
    imgs = json.loads(daemon.alps("--json", "images", check=True).stdout)["images"]
    assert [i["references"] for i in imgs] == [[ref]]
    assert imgs[0]["digest"] == world.small.manifest_digest("s")
    j = json.loads(daemon.alps("--json", "inspect", ref, check=True).stdout)
    assert j["manifest"]["layers"][0]["digest"] == world.small.manifest("s")["layers"][0]["digest"]
    assert j["config"]["rootfs"]["diff_ids"]
    assert j["layers"][0]["diff_id"] == j["config"]["rootfs"]["diff_ids"][0]
    assert os.path.isfile(j["layers"][0]["file"]) and j["layers"][0]["squashfs_size"] > 0
    # Users see the layers but not where the store keeps them.
    ju = json.loads(daemon.alps("--json", "inspect", ref, user=65534, check=True).stdout)
    assert ju["layers"][0]["file"] == ""
    # By digest prefix too.
    assert daemon.alps("inspect", imgs[0]["digest"][7:19], check=True).returncode == 0
    store_consistent(daemon)


def test_pull_json_events_and_quiet(daemon, world):
    ref = f"{world.registry.host}/test/small:v1"
    r = daemon.alps("--json", "pull", ref, check=True)
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert lines[-1]["event"] == "done" and lines[-1]["digest"].startswith("sha256:")
    r = daemon.alps("pull", "--quiet", ref, check=True)
    assert r.stderr == ""


def test_tree_equals_umoci_unpack(daemon, world, tmp_path):
    ref = f"{world.registry.host}/test/rich:v1"
    daemon.alps("pull", ref, check=True)
    bundle = tmp_path / "bundle"
    rf.run(["umoci", "unpack", "--image", f"{world.rich_layout.path}:rich", str(bundle)])
    want, want_links = images.tree(str(bundle / "rootfs"))
    with images.Overlay(layer_files(daemon, ref), str(tmp_path / "ov")) as ov:
        got, got_links = images.tree(ov.root)
    assert "data/keep/only" in want and "data/keep/f1" not in want     # the oracle is sane
    assert "etc/fifo" not in want and "data/gone" not in want
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, (missing[:10], extra[:10])
    diff = {p: (want[p], got[p]) for p in want if want[p] != got[p]}
    assert not diff, list(diff.items())[:5]
    assert got_links == want_links and want_links


def test_shared_layers_fetched_once(daemon, world):
    host = world.registry.host
    r = daemon.alps("--json", "pull", f"{host}/test/shared:a", check=True)
    assert json.loads(r.stdout.splitlines()[-1])["layers_fetched"] == 2
    before = len(world.registry.blob_gets())
    r = daemon.alps("--json", "pull", f"{host}/test/shared:b", check=True)
    done = json.loads(r.stdout.splitlines()[-1])
    assert done["layer_count"] == 3 and done["layers_fetched"] == 1
    new_gets = world.registry.blob_gets()[before:]
    top = world.shared.manifest("b")["layers"][2]["digest"]
    layer_gets = [p for p in new_gets if p.endswith(tuple(l["digest"] for l in
                                                          world.shared.manifest("b")["layers"]))]
    assert layer_gets and all(p.endswith(top) for p in layer_gets), layer_gets
    assert len(os.listdir(os.path.join(daemon.state_dir, "layers"))) == 3
    store_consistent(daemon)


def test_fifty_concurrent_pulls_fetch_each_blob_once(daemon_factory, world, tmp_path):
    # A fresh registry so that the access log holds only this test's requests.
    reg = rf.Registry(tmp_path, storage_dir=world.registry.storage, name="reg50").start()
    try:
        d = daemon_factory()
        ref = f"{reg.host}/test/shared:b"
        results = []

        def one():
            results.append(d.alps("--json", "pull", ref, timeout=300))

        threads = [threading.Thread(target=one) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert len(results) == 50
        bad = [r for r in results if r.returncode != 0]
        assert not bad, bad[0].stderr
        digests = {json.loads(r.stdout.splitlines()[-1])["digest"] for r in results}
        assert len(digests) == 1
        gets = [p for (m, p, s) in reg.requests() if m == "GET" and "/blobs/" in p and s == 200]
        assert len(gets) == len(set(gets)) == 4, gets      # config + 3 layers, once each
    finally:
        reg.stop()


def test_unknown_tag_and_bad_reference(daemon, world):
    r = daemon.alps("pull", f"{world.registry.host}/test/small:nope")
    assert r.returncode == 1 and "not found" in r.stderr.lower()
    r = daemon.alps("pull", "UPPER/Case:bad tag")
    assert r.returncode == 1 and "reference" in r.stderr.lower()
    r = daemon.alps("pull")
    assert r.returncode == 2
    assert json.loads(daemon.alps("--json", "images").stdout)["images"] == []
    store_consistent(daemon)


HOSTILE = {
    "dotdot": ([("a/../../etc/evil", "file", b"x", {})], "escapes"),
    "hardlink-missing": ([("h", "hardlink", "not/there", {})], "not/there"),
    "garbage": (None, "not a tar archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_rejected_and_nothing_stored(daemon, world, tmp_path, case):
    entries, want = HOSTILE[case]
    layout = rf.build_image(tmp_path, "h", [{"ok": b"ok\n"}])
    if entries is None:
        raw = b"\x13\x37 this is not a tarball " * 100
        import gzip
        blob = gzip.compress(raw)
    else:
        raw, blob = images.tar_layer(entries)
    images.append_layer(layout, "h", "h2", raw, blob)
    rf.push(layout, "h2", world.registry.host, f"test/hostile-{case}", "v1")
    r = daemon.alps("pull", f"{world.registry.host}/test/hostile-{case}:v1")
    assert r.returncode == 1
    assert want in r.stderr, r.stderr
    assert json.loads(daemon.alps("--json", "images").stdout)["images"] == []
    store_consistent(daemon)
    assert daemon.alive()


def test_absolute_paths_are_kept_inside(daemon, world, tmp_path):
    layout = rf.build_image(tmp_path, "h", [{"ok": b"ok\n"}])
    raw, blob = images.tar_layer([("/abs/file", "file", b"inside\n", {})])
    images.append_layer(layout, "h", "abs", raw, blob)
    rf.push(layout, "abs", world.registry.host, "test/abs", "v1")
    ref = f"{world.registry.host}/test/abs:v1"
    daemon.alps("pull", ref, check=True)
    assert not os.path.exists("/abs/file")
    with images.Overlay(layer_files(daemon, ref), str(tmp_path / "ov")) as ov:
        with open(os.path.join(ov.root, "abs/file")) as f:
            assert f.read() == "inside\n"


def test_limits(daemon_factory, world, tmp_path):
    d = daemon_factory("[store]\nmax_layer_entries = 20\nmax_layer_bytes = \"1M\"\n")
    layout = rf.build_image(tmp_path, "m", [{f"f{i}": b"x" for i in range(40)}])
    rf.push(layout, "m", world.registry.host, "test/many", "v1")
    r = d.alps("pull", f"{world.registry.host}/test/many:v1")
    assert r.returncode == 1 and "more than 20" in r.stderr, r.stderr
    bomb = rf.build_image(tmp_path / "b", "b", [{"zeros": b"\0" * (4 << 20)}])
    rf.push(bomb, "b", world.registry.host, "test/bomb", "v1")
    r = d.alps("pull", f"{world.registry.host}/test/bomb:v1")
    assert r.returncode == 1 and "larger than 1048576 bytes uncompressed" in r.stderr, r.stderr
    store_consistent(d)


def test_corrupted_blob_stores_nothing(daemon, world, tmp_path):
    layout = rf.build_image(tmp_path, "c", [{"c": rf.random_bytes(100000, "corrupt")}])
    rf.push(layout, "c", world.registry.host, "test/corrupt", "v1")
    digest = layout.manifest("c")["layers"][0]["digest"]
    path = os.path.join(world.registry.storage, "docker/registry/v2/blobs/sha256",
                        digest[7:9], digest[7:], "data")
    with open(path, "r+b") as f:
        f.seek(5000)
        f.write(b"CORRUPT")
    r = daemon.alps("pull", f"{world.registry.host}/test/corrupt:v1")
    assert r.returncode == 1
    assert digest in r.stderr and ("digest" in r.stderr or "integrity" in r.stderr.lower())
    store_consistent(daemon)
    assert os.listdir(os.path.join(daemon.state_dir, "layers")) == []


def test_rm(daemon, world):
    host = world.registry.host
    daemon.alps("pull", f"{host}/test/shared:a", check=True)
    daemon.alps("pull", f"{host}/test/shared:b", check=True)
    r = daemon.alps("rm", f"{host}/test/shared:a", check=True)
    assert "0 layers" in r.stdout              # b still uses both of a's layers
    assert len(os.listdir(os.path.join(daemon.state_dir, "layers"))) == 3
    r = daemon.alps("--json", "rm", f"{host}/test/shared:b", check=True)
    assert json.loads(r.stdout)["results"][0]["layers_removed"] == 3
    assert os.listdir(os.path.join(daemon.state_dir, "layers")) == []
    r = daemon.alps("rm", f"{host}/test/shared:b")
    assert r.returncode == 1 and "no such tag" in r.stderr.lower()
    store_consistent(daemon)


def test_rm_is_for_admins(daemon, world):
    daemon.alps("pull", f"{world.registry.host}/test/small:v1", check=True)
    r = daemon.alps("rm", f"{world.registry.host}/test/small:v1", user=65534)
    assert r.returncode == 1 and "administrators" in r.stderr
    # Any user may list and pull.
    r = daemon.alps("--json", "images", user=65534, check=True)
    assert len(json.loads(r.stdout)["images"]) == 1


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Forward GET/HEAD to the registry; blob bodies trickle (64 KiB / 20 ms)."""

    def log_message(self, *a):
        pass

    def _forward(self, body):
        up = http.client.HTTPConnection(self.server.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        up.request(self.command, self.path, headers=headers)
        r = up.getresponse()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection"):
                self.send_header(k, v)
        self.end_headers()
        slow = "/blobs/" in self.path
        try:
            while body:
                chunk = r.read(65536)
                if not chunk:
                    break
                self.wfile.write(chunk)
                if slow:
                    time.sleep(0.02)
        except OSError:
            pass
        up.close()

    def do_GET(self):
        self._forward(True)

    def do_HEAD(self):
        self._forward(False)


def test_kill_during_pull_then_restart(daemon_factory, world, tmp_path):
    layout = rf.build_image(tmp_path, "k", [{"a": rf.random_bytes(6 << 20, "ka")},
                                            {"b": rf.random_bytes(6 << 20, "kb")}])
    port = rf.free_port()
    proxy = http.server.ThreadingHTTPServer((rf.LOOPBACK, port), _SlowHandler)
    proxy.upstream = world.registry.host
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    proxy.host = f"{rf.LOOPBACK}:{port}"
    try:
        rf.push(layout, "k", world.registry.host, "test/kill", "v1")
        d = daemon_factory()
        ref = f"{proxy.host}/test/kill:v1"
        p = subprocess.Popen([d.argv()[0].replace("alpsd", "alps"), "--socket", d.socket,
                              "--json", "pull", ref], stdout=subprocess.PIPE, text=True)
        # Wait until bytes flow, then kill -9 the daemon mid-pull.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            ev = json.loads(line)
            if ev.get("event") == "progress" and ev["compressed_done"] > 0:
                break
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait()
        p.wait(30)
        d.log.close()
        d.proc = None
        d.start()
        store_consistent(d)          # start-up emptied tmp/ and repaired
        d.alps("pull", ref, check=True)
        store_consistent(d)
        assert len(os.listdir(os.path.join(d.state_dir, "layers"))) == 2
    finally:
        proxy.shutdown()
        proxy.server_close()


def docker_config(home, host, user, password):
    import base64
    os.makedirs(os.path.join(home, ".docker"), exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = os.path.join(home, ".docker", "config.json")
    with open(path, "w") as f:
        json.dump({"auths": {host: {"auth": auth}}}, f)
    return path


def test_private_image_is_the_pulling_users(daemon, world, tmp_path):
    """Pulled with a user's registry credentials: listed for that user (and
    admins), not for others, until the registry lets them in too."""
    pw = rf.htpasswd_file(tmp_path, {"alice": "s3cret"})
    with rf.Registry(tmp_path, storage_dir=world.registry.storage, htpasswd=pw,
                     name="private") as reg:
        ref = f"{reg.host}/test/small:v1"
        home = os.path.join(daemon.dir, "home-nobody")
        os.makedirs(home)
        docker_config(home, reg.host, "alice", "s3cret")
        subprocess.run(["chown", "-R", "65534:65534", home], check=True)
        os.chmod(home, 0o700)
        r = daemon.alps("pull", ref, user=65534, env={"HOME": home})
        assert r.returncode == 0, r.stderr
        mine = json.loads(daemon.alps("--json", "images", user=65534,
                                      env={"HOME": home}, check=True).stdout)["images"]
        assert [i["references"] for i in mine] == [[ref]]
        assert len(json.loads(daemon.alps("--json", "images", check=True).stdout)["images"]) == 1
        other = json.loads(daemon.alps("--json", "images", user=1, check=True).stdout)["images"]
        assert other == []
        r = daemon.alps("inspect", ref, user=1)
        assert r.returncode == 1
        # Without credentials the registry says no, and nothing is granted.
        r = daemon.alps("pull", ref, user=1, env={"HOME": "/nonexistent"})
        assert r.returncode == 1
        assert json.loads(daemon.alps("--json", "images", user=1, check=True).stdout)["images"] == []


def test_disk_full_store_stays_consistent(daemon_factory, world, tmp_path):
    state = tmp_path / "small-store"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], check=True)
    try:
        d = daemon_factory(extra_args=["--state-dir", str(state)], start=False)
        d.state_dir = str(state)
        d.start()
        r = d.alps("pull", f"{world.registry.host}/test/shared:a")     # 3 MiB of layers
        assert r.returncode == 1
        # Said before downloading, or by whichever write meets the full disk.
        assert "no space left on device in" in r.stderr and "free" in r.stderr, r.stderr
        store_consistent(d)
        d.alps("pull", f"{world.registry.host}/test/small:v1", check=True)   # small still fits
        store_consistent(d)
        assert d.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(state)])
