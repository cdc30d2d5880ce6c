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
        assert "accepted the connection but did not answer" in r.stderr, r.stderr
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
        assert r.stderr.rstrip().endswith(" free"), r.stderr
        assert "stopped by its consumer" not in r.stderr
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


def image_digest(daemon, ref):
    j = json.loads(daemon.alps("--json", "inspect", ref, check=True).stdout)
    return j["image"]["digest"] if "image" in j else j["digest"]


def test_outdated_and_refresh_after_a_repush(daemon, tmp_path):
    with rf.Registry(tmp_path, name="fresh") as reg:
        one = rf.build_image(tmp_path / "one", "one", [{"v": b"one\n"}])
        two = rf.build_image(tmp_path / "two", "two", [{"v": b"two, bigger\n"}])
        rf.push(one, "one", reg.host, "test/fresh", "v1")
        ref = f"{reg.host}/test/fresh:v1"
        r = daemon.alps("--json", "pull", ref, check=True)
        first = json_lines(r.stdout)[-1]
        assert first["refresh"] == "new" and first["previous_digest"] is None
        old = first["digest"]
        j = json.loads(daemon.alps("--json", "outdated", check=True).stdout)
        assert j["ok"] and j["images"] == [{
            "reference": ref, "status": "up_to_date", "cached_digest": old,
            "registry_digest": old, "platform": j["images"][0]["platform"], "reason": None}]
        rf.push(two, "two", reg.host, "test/fresh", "v1")
        j = json.loads(daemon.alps("--json", "outdated", ref, check=True).stdout)
        (row,) = j["images"]
        assert row["status"] == "outdated" and row["cached_digest"] == old
        new = row["registry_digest"]
        assert new.startswith("sha256:") and new != old
        assert "outdated" in daemon.alps("outdated", check=True).stdout
        # pull says the tag moved and fetches the new image.
        r = daemon.alps("pull", ref, check=True)
        assert f"{ref} changed: {old} -> {new}" in r.stderr, r.stderr
        assert f"changed on the registry: was {old}" in r.stdout
        assert image_digest(daemon, ref) == new
        # Unchanged: a HEAD, nothing downloaded.
        before = len(reg.requests())
        r = daemon.alps("--json", "pull", ref, check=True)
        done = json_lines(r.stdout)[-1]
        assert done["refresh"] == "unchanged" and done["layers_fetched"] == 0
        assert done["digest"] == new
        seen = reg.requests()[before:]
        assert seen and all(m == "HEAD" or p == "/v2/" for (m, p, s) in seen), seen
        reg.stop()
        # The registry is gone: --no-refresh does not need it ...
        r = daemon.alps("--json", "pull", "--no-refresh", ref, check=True)
        done = json_lines(r.stdout)[-1]
        assert done["refresh"] == "not checked" and done["digest"] == new
        # ... a refreshing pull says why it failed and what would work ...
        r = daemon.alps("pull", ref)
        assert r.returncode == 1 and "--no-refresh" in r.stderr, r.stderr
        # ... and outdated says unreachable, with the registry's reason.
        j = json.loads(daemon.alps("--json", "outdated", check=True).stdout)
        (row,) = j["images"]
        assert row["status"] == "unreachable" and reg.host in row["reason"]
        j = json.loads(daemon.alps("--json", "outdated", f"{reg.host}/test/none:v1",
                                   check=True).stdout)
        assert j["images"][0]["status"] == "not_cached"


def test_twin_layer_not_downloaded(daemon, world, tmp_path):
    layout = rf.build_image(tmp_path, "t", [{"twin/data": rf.random_bytes(300 << 10, "ftwin")}])
    # zstd to its own repository: skopeo would reuse the gzip blob.
    rf.push(layout, "t", world.registry.host, "test/twinz", "zst", compress="zstd")
    rf.push(layout, "t", world.registry.host, "test/twin", "gz")
    gz = f"{world.registry.host}/test/twin:gz"
    zst = f"{world.registry.host}/test/twinz:zst"
    daemon.alps("pull", gz, check=True)
    before = len(world.registry.requests())
    r = daemon.alps("--json", "pull", zst, check=True)
    assert json_lines(r.stdout)[-1]["layers_fetched"] == 0
    j = json.loads(daemon.alps("--json", "inspect", zst, check=True).stdout)
    blob = j["manifest"]["layers"][0]["digest"]
    assert "zstd" in j["manifest"]["layers"][0]["mediaType"]
    blob_gets = [p for (m, p, s) in world.registry.requests()[before:]
                 if m == "GET" and "/blobs/" in p]
    assert blob_gets and not any(blob in p for p in blob_gets), blob_gets   # the config only
    assert len(os.listdir(os.path.join(daemon.state_dir, "layers"))) == 1


def lie_about_diff_id(layout, tag, diff_id):
    """Rewrite tag's config to claim its layer's uncompressed content is
    diff_id (what a hostile registry can serve)."""
    man = layout.manifest(tag)
    cfg = json.loads(layout.blob(man["config"]["digest"]))
    cfg["rootfs"]["diff_ids"] = [diff_id]
    data = json.dumps(cfg).encode()
    man["config"]["digest"], man["config"]["size"] = layout.write_blob(data), len(data)
    mdata = json.dumps(man).encode()
    idx = layout.index()
    for m in idx["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            m["digest"], m["size"] = layout.write_blob(mdata), len(mdata)
    with open(os.path.join(layout.path, "index.json"), "w") as f:
        json.dump(idx, f)


def test_attack_diff_id_claim_does_not_reach_a_private_layer(daemon, world, tmp_path):
    """A user pulled a private layer with credentials.  Another user's
    image, from a registry the attacker controls, claims that layer's
    diff_id for a blob of its own: deduplication before download must not
    hand the attacker the private layer (the blob is fetched and its real
    content refutes the claim)."""
    pw = rf.htpasswd_file(tmp_path, {"alice": "s3cret"})
    secret = rf.build_image(tmp_path / "secret", "p", [{"secret": b"the private layer\n"}])
    with rf.Registry(tmp_path, htpasswd=pw, name="private") as reg:
        rf.push(secret, "p", reg.host, "test/secret", "v1", creds="alice:s3cret")
        home = os.path.join(daemon.dir, "home-alice")
        os.makedirs(os.path.join(home, ".docker"))
        import base64
        with open(os.path.join(home, ".docker", "config.json"), "w") as f:
            json.dump({"auths": {reg.host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}, f)
        subprocess.run(["chown", "-R", "65534:65534", home], check=True)
        os.chmod(home, 0o700)
        ref = f"{reg.host}/test/secret:v1"
        r = daemon.alps("pull", ref, user=65534, env={"HOME": home})
        assert r.returncode == 0, r.stderr
    j = json.loads(daemon.alps("--json", "inspect", ref, check=True).stdout)
    private_diff_id = j["layers"][0]["diff_id"]
    evil = rf.build_image(tmp_path / "evil", "e", [{"junk": b"not the secret\n"}])
    lie_about_diff_id(evil, "e", private_diff_id)
    rf.push(evil, "e", world.registry.host, "test/evil", "v1")
    r = daemon.alps("pull", f"{world.registry.host}/test/evil:v1", user=1,
                    env={"HOME": "/nonexistent"})
    assert r.returncode == 1
    assert f"but the image config says {private_diff_id}" in r.stderr, r.stderr
    assert json.loads(daemon.alps("--json", "images", user=1, check=True).stdout)["images"] == []
    assert "not fetched" not in daemon.read_log()


def test_refresh_falls_back_to_get_without_a_digest_header(daemon, world):
    proxy = rf.FaultProxy(world.registry.host).start()
    try:
        ref = f"{proxy.host}/test/small:v1"
        daemon.alps("pull", ref, check=True)
        # HEAD answers without Docker-Content-Digest: the manifest is fetched.
        proxy._add("fail", r"/manifests/", None, method="HEAD", status=200,
                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        before = len(proxy.requests)
        r = daemon.alps("--json", "pull", ref, check=True)
        assert json_lines(r.stdout)[-1]["refresh"] == "unchanged"
        seen = [(q["method"], q["path"]) for q in proxy.requests[before:]]
        assert ("HEAD", "/v2/test/small/manifests/v1") in seen, seen
        assert ("GET", "/v2/test/small/manifests/v1") in seen, seen
        assert not [p for (m, p) in seen if "/blobs/" in p], seen
    finally:
        proxy.stop()


def test_server_error_retry_is_shown(daemon, world):
    proxy = rf.FaultProxy(world.registry.host).start()
    try:
        proxy.fail(r"/manifests/", status=503, count=1)
        r = daemon.alps("--json", "pull", f"{proxy.host}/test/small:v1", check=True)
        notices = [e["message"] for e in json_lines(r.stdout) if e["event"] == "notice"]
        assert notices == [f"registry {proxy.host}: HTTP 503, retry 1 of 5 in 0.5 s"], notices
    finally:
        proxy.stop()


def test_resolve_private_image_with_the_users_credentials(daemon, tmp_path):
    """alps resolve (and the Slurm plugin's pin at submission) sends the
    caller's registry credentials, read as the caller: a private tag
    resolves for its owner, not for a user without them, and nothing of it
    is stored."""
    import base64
    pw = rf.htpasswd_file(tmp_path, {"alice": "s3cret"})
    img = rf.build_image(tmp_path / "priv", "p", [{"f": b"private\n"}])
    with rf.Registry(tmp_path, htpasswd=pw, name="resolvepriv") as reg:
        rf.push(img, "p", reg.host, "test/priv", "v1", creds="alice:s3cret")
        home = os.path.join(daemon.dir, "home-resolve")
        os.makedirs(os.path.join(home, ".docker"))
        with open(os.path.join(home, ".docker", "config.json"), "w") as f:
            json.dump({"auths": {reg.host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}},
                      f)
        subprocess.run(["chown", "-R", "65534:65534", home], check=True)
        os.chmod(home, 0o700)
        ref = f"{reg.host}/test/priv:v1"
        r = daemon.alps("--json", "resolve", ref, user=65534, env={"HOME": home})
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert doc["pinned"] == f"{ref}@{doc['digest']}" and doc["digest"].startswith("sha256:")
        r = daemon.alps("--json", "resolve", ref, user=1, env={"HOME": "/nonexistent"})
        assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False, r.stdout
    assert json.loads(daemon.alps("--json", "images", check=True).stdout)["images"] == []
