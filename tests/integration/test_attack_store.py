"""Attacks on the image store by an unprivileged local user (issue 8, items
3 to 6): each is performed as users.attacker against a real alpsd, with the
victim's private image on a real docker-registry with Basic auth, and each
asserts that the attack fails.

  - a manifest of the attacker's own naming a private layer's digest
    (learnt from the mount table) must not give the layer's content;
  - the victim's manifest re-served from the attacker's registry must not
    make the private image public (nor give its config);
  - alps.db, -wal and -shm must not be readable (nor lockable);
  - a store call waiting on the database lock must not stop the loop."""
import base64
import hashlib
import http.server
import json
import os
import sqlite3
import stat
import subprocess
import threading
import time

import pytest

import registry_fixture as rf

SECRET = b"the victim's private content 7c1e\n"


def docker_config(user, host, name, password):
    """~/.docker/config.json of user with Basic credentials for host."""
    d = os.path.join(user.home, ".docker")
    os.makedirs(d, exist_ok=True)
    auth = base64.b64encode(f"{name}:{password}".encode()).decode()
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"auths": {host: {"auth": auth}}}, f)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", d], check=True)


def alps_binary(daemon):
    return os.path.join(os.path.dirname(daemon.argv()[0]), "alps")


def as_user(daemon, user, *args):
    return user.run([alps_binary(daemon), "--socket", daemon.socket] + list(args))


def images_of(daemon, user=None, uid=None):
    if user is not None:
        r = as_user(daemon, user, "--json", "images")
    else:
        r = daemon.alps("--json", "images", user=uid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["images"]


@pytest.fixture(scope="module")
def victim_world(tmp_path_factory, users):
    """The victim's private registry holding one image with a secret layer,
    pushed with credentials."""
    rf.require_tools("docker-registry", "umoci", "skopeo")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("victimworld")
    os.chmod(w.dir, 0o755)
    pw = rf.htpasswd_file(w.dir, {"victim": "v1ct1m-pw"})
    w.registry = rf.Registry(w.dir, htpasswd=pw, name="private").start()
    w.layout = rf.build_image(w.dir, "secret", [{"etc/secret": SECRET}],
                              config={"config.env": ["API_KEY=victim-secret-key"]})
    rf.push(w.layout, "secret", w.registry.host, "victim/app", "v1",
            creds="victim:v1ct1m-pw")
    w.ref = f"{w.registry.host}/victim/app:v1"
    w.manifest_digest = w.layout.manifest_digest("secret")
    w.manifest_bytes = w.layout.blob(w.manifest_digest)
    w.manifest = json.loads(w.manifest_bytes)
    w.config_bytes = w.layout.blob(w.manifest["config"]["digest"])
    w.config = json.loads(w.config_bytes)
    w.layer = w.manifest["layers"][-1]
    docker_config(users.victim, w.registry.host, "victim", "v1ct1m-pw")
    yield w
    w.registry.stop()


class HostileRegistry:
    """The attacker's own registry (http.server on loopback): serves one
    manifest under hostile/app:latest and the blobs it is given; for a blob
    it does not have it answers HEAD with 200 and the size it was told (a
    registry of one's own can claim anything) and GET with 404."""

    def __init__(self, manifest_bytes, blobs, claimed=None):
        self.manifest = manifest_bytes
        self.blobs = dict(blobs)
        self.claimed = dict(claimed or {})
        self.seen = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, body_too):
                outer.seen.append((self.command, self.path))
                if self.path == "/v2/":
                    return self._send(200, b"{}", "application/json", body_too)
                if self.path.startswith("/v2/hostile/app/manifests/"):
                    return self._send(200, outer.manifest,
                                      "application/vnd.oci.image.manifest.v1+json", body_too,
                                      {"Docker-Content-Digest": rf.sha256_digest(outer.manifest)})
                if self.path.startswith("/v2/hostile/app/blobs/"):
                    d = self.path.rsplit("/", 1)[1]
                    if d in outer.blobs:
                        return self._send(200, outer.blobs[d], "application/octet-stream",
                                          body_too, {"Docker-Content-Digest": d})
                    if d in outer.claimed and not body_too:
                        self.send_response(200)
                        self.send_header("Content-Length", str(outer.claimed[d]))
                        self.send_header("Docker-Content-Digest", d)
                        self.end_headers()
                        return
                return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}',
                                  "application/json", body_too)

            def _send(self, status, body, ctype, body_too, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if body_too:
                    self.wfile.write(body)

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

        self.httpd = http.server.ThreadingHTTPServer((rf.LOOPBACK, 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def host(self):
        return f"{rf.LOOPBACK}:{self.httpd.server_address[1]}"

    @property
    def ref(self):
        return f"{self.host}/hostile/app:latest"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def victim_pulls(daemon, users, w):
    r = as_user(daemon, users.victim, "pull", w.ref)
    assert r.returncode == 0, r.stderr
    assert [i["references"] for i in images_of(daemon, users.victim)] == [[w.ref]]
    assert images_of(daemon, users.attacker) == []


def assert_victim_image_private(daemon, users, w):
    """Nobody but the victim (and admins) sees the victim's image."""
    for who in (users.attacker,):
        refs = [r for i in images_of(daemon, who) for r in i["references"]]
        assert w.ref not in refs
        assert as_user(daemon, who, "inspect", w.ref).returncode != 0
    assert images_of(daemon, uid=65534) == []
    r = daemon.alps("inspect", w.ref, user=65534)
    assert r.returncode != 0
    assert as_user(daemon, users.victim, "inspect", w.ref).returncode == 0


@pytest.mark.parametrize("head_lies", [False, True], ids=["no-blob", "head-lies"])
def test_layer_digest_does_not_give_private_content(daemon, users, victim_world, head_lies):
    """The attacker names the victim's layer digest (and its diff_id) in a
    manifest of their own: the pull must fetch the layer from the
    attacker's registry, which does not have it, and fail."""
    w = victim_world
    victim_pulls(daemon, users, w)
    cfg = dict(w.config)
    cfg["config"] = {"Env": ["ATTACKER=1"]}
    cfg_bytes = json.dumps(cfg).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": rf.sha256_digest(cfg_bytes), "size": len(cfg_bytes)},
                "layers": [w.layer]}
    mbytes = json.dumps(manifest).encode()
    claimed = {w.layer["digest"]: w.layer["size"]} if head_lies else {}
    with HostileRegistry(mbytes, {rf.sha256_digest(cfg_bytes): cfg_bytes}, claimed) as reg:
        r = as_user(daemon, users.attacker, "pull", reg.ref)
        assert r.returncode != 0, f"the attacker got the private layer:\n{r.stdout}"
        assert "cached" not in r.stdout
        # It did ask its own registry for the layer itself.
        assert ("GET", f"/v2/hostile/app/blobs/{w.layer['digest']}") in reg.seen
    assert images_of(daemon, users.attacker) == []
    assert_victim_image_private(daemon, users, w)


def test_reserved_manifest_without_blobs_gets_nothing(daemon, users, victim_world):
    """The victim's exact manifest bytes, re-served from the attacker's
    registry, which has neither the config nor the layers: nothing may come
    from the store (neither the config with its secrets nor the layers), and
    the image must stay private."""
    w = victim_world
    victim_pulls(daemon, users, w)
    with HostileRegistry(w.manifest_bytes, {}) as reg:
        r = as_user(daemon, users.attacker, "pull", reg.ref)
        assert r.returncode != 0, f"the attacker's re-serve succeeded:\n{r.stdout}"
    assert images_of(daemon, users.attacker) == []
    assert_victim_image_private(daemon, users, w)


def test_reserved_manifest_from_other_origin_does_not_widen(daemon, users, victim_world):
    """Even when the attacker's registry really serves every blob (so the
    attacker has the content), an anonymous pull from that origin must not
    make the victim's privately pulled image public under its name."""
    w = victim_world
    victim_pulls(daemon, users, w)
    blobs = {w.manifest["config"]["digest"]: w.config_bytes}
    for l in w.manifest["layers"]:
        blobs[l["digest"]] = w.layout.blob(l["digest"])
    with HostileRegistry(w.manifest_bytes, blobs) as reg:
        r = as_user(daemon, users.attacker, "pull", reg.ref)
        assert r.returncode == 0, r.stderr
        assert images_of(daemon, uid=65534) == []
        assert daemon.alps("inspect", w.ref, user=65534).returncode != 0
        assert as_user(daemon, users.victim, "inspect", w.ref).returncode == 0
        mine = images_of(daemon, users.attacker)
        assert [i["digest"] for i in mine] == [w.manifest_digest]
        # The layers came from the attacker's own registry, not the store.
        assert ("GET", f"/v2/hostile/app/blobs/{w.layer['digest']}") in reg.seen
        # The attacker sees the image under their name only, not the
        # victim's (which would tell them what the victim pulled).
        assert mine[0]["references"] == [reg.ref]
        assert as_user(daemon, users.attacker, "inspect", w.ref).returncode != 0
        assert as_user(daemon, users.attacker, "inspect", reg.ref).returncode == 0
        assert [i["references"] for i in images_of(daemon, users.victim)] == [[w.ref]]


def test_victim_pulls_again_from_cache(daemon, users, victim_world):
    """What the fixes must keep: the victim's own re-pull and root's pull
    use the store."""
    w = victim_world
    victim_pulls(daemon, users, w)
    r = as_user(daemon, users.victim, "pull", w.ref)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def public_world(tmp_path_factory):
    """An open registry with one public image."""
    rf.require_tools("docker-registry", "umoci", "skopeo")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("publicworld")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    w.layout = rf.build_image(w.dir, "pub", [{"etc/public": b"public\n"}])
    rf.push(w.layout, "pub", w.registry.host, "open/app", "v1")
    w.ref = f"{w.registry.host}/open/app:v1"
    w.manifest = w.layout.manifest("pub")
    w.config = json.loads(w.layout.blob(w.manifest["config"]["digest"]))
    yield w
    w.registry.stop()


def test_cached_layer_checked_against_diff_id(daemon, users, public_world):
    """A config that lies about a cached layer's uncompressed digest is
    refused as it would be for a downloaded layer."""
    w = public_world
    r = as_user(daemon, users.attacker, "pull", w.ref)
    assert r.returncode == 0, r.stderr
    cfg = dict(w.config)
    cfg["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + "ab" * 32]}
    cfg_bytes = json.dumps(cfg).encode()
    manifest = dict(w.manifest)
    manifest["config"] = {"mediaType": "application/vnd.oci.image.config.v1+json",
                          "digest": rf.sha256_digest(cfg_bytes), "size": len(cfg_bytes)}
    mbytes = json.dumps(manifest).encode()
    with HostileRegistry(mbytes, {rf.sha256_digest(cfg_bytes): cfg_bytes}) as reg:
        r = as_user(daemon, users.attacker, "pull", reg.ref)
        assert r.returncode != 0, r.stdout
        assert "uncompressed" in r.stderr, r.stderr
    assert len(images_of(daemon, users.attacker)) == 1


def test_mount_table_names_no_layer_digest(daemon, users, victim_world):
    """The host's mount table is world-readable: a layer mounted at a
    directory named by its digest told every user which private layers the
    node has.  With the victim's job prepared, the attacker's view of the
    mount table holds no digest of the victim's image."""
    w = victim_world
    victim_pulls(daemon, users, w)
    r = daemon.alps("prepare", "--job", "victimjob", "--user", str(users.victim.uid),
                    "--image", w.ref)
    assert r.returncode == 0, r.stderr
    try:
        r = users.attacker.run(["cat", "/proc/self/mountinfo"])
        assert r.returncode == 0, r.stderr
        assert daemon.run_dir in r.stdout      # the layer mounts are there...
        for l in w.manifest["layers"]:
            hexd = l["digest"].split(":", 1)[1]
            assert hexd not in r.stdout, "a layer digest in the mount table"
            assert hexd[:12] not in r.stdout
    finally:
        daemon.alps("release", "--job", "victimjob", check=True)


LIST_LOOPS = r"""
import glob
for p in glob.glob("/sys/block/loop*/loop/backing_file"):
    try:
        print(p, open(p).read().strip())
    except OSError:
        pass
"""


def test_loop_devices_name_no_layer_digest(daemon, users, victim_world):
    """/sys/block/loopN/loop/backing_file is world-readable too: the
    loop devices of the victim's layers must not name the layer files
    (which are named by digest)."""
    w = victim_world
    victim_pulls(daemon, users, w)
    r = daemon.alps("prepare", "--job", "victimloop", "--user", str(users.victim.uid),
                    "--image", w.ref)
    assert r.returncode == 0, r.stderr
    try:
        r = users.attacker.run(["python3", "-c", LIST_LOOPS])
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip(), "no loop device at all"
        for l in w.manifest["layers"]:
            hexd = l["digest"].split(":", 1)[1]
            assert hexd[:12] not in r.stdout, f"a layer digest names a loop device:\n{r.stdout}"
        assert daemon.state_dir not in r.stdout
    finally:
        daemon.alps("release", "--job", "victimloop", check=True)


# ---- the database files ----

ATTACK_OPEN = r"""
import os, sys
out = []
for p in sys.argv[1:]:
    for flags, name in ((os.O_RDONLY, "r"), (os.O_RDWR, "rw")):
        try:
            os.close(os.open(p, flags))
            out.append(f"opened {name} {p}")
        except OSError as e:
            pass
print("\n".join(out))
"""


def db_files(state):
    return [os.path.join(state, n) for n in ("alps.db", "alps.db-wal", "alps.db-shm")]


def test_attacker_cannot_read_or_lock_the_database(daemon, users):
    """Any user could read alps.db (tags, access rows, configs with their
    secrets) and take the WAL lock through -shm."""
    daemon.alps("images", check=True)
    files = db_files(daemon.state_dir)
    for p in files:
        assert os.path.exists(p), p
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    assert stat.S_IMODE(os.stat(daemon.state_dir).st_mode) == 0o700
    r = users.attacker.run(["python3", "-c", ATTACK_OPEN] + files)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"the attacker opened:\n{r.stdout}"
    # And sqlite itself, read-only, cannot even start.
    r = users.attacker.run(["python3", "-c",
                            "import sqlite3,sys; db=sqlite3.connect(f'file:{sys.argv[1]}?mode=ro',"
                            " uri=True); print(db.execute('SELECT count(*) FROM images')"
                            ".fetchone())", files[0]])
    assert r.returncode != 0, r.stdout


def test_startup_repairs_modes(daemon_factory, users):
    """A store left world-readable (by an older alpsd) is made private at
    start, and the log says what changed."""
    d = daemon_factory()
    d.alps("images", check=True)
    assert d.stop() == 0
    os.chmod(d.state_dir, 0o755)
    for p in db_files(d.state_dir):
        if os.path.exists(p):
            os.chmod(p, 0o644)
    d.start()
    d.alps("images", check=True)
    assert stat.S_IMODE(os.stat(d.state_dir).st_mode) == 0o700
    for p in db_files(d.state_dir):
        if os.path.exists(p):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    log = d.read_log()
    assert "0755" in log and "0700" in log, log[-3000:]
    r = users.attacker.run(["python3", "-c", ATTACK_OPEN] + db_files(d.state_dir))
    assert r.stdout.strip() == ""


# ---- the loop never waits on the database ----

def test_status_answers_while_the_database_is_locked(daemon):
    """A root process holds the write lock: rm waits (up to sqlite's busy
    timeout), and meanwhile status must still answer."""
    db = sqlite3.connect(os.path.join(daemon.state_dir, "alps.db"), isolation_level=None,
                         timeout=1)
    db.execute("BEGIN EXCLUSIVE")
    try:
        rms = [subprocess.Popen([alps_binary(daemon), "--socket",
                                 daemon.socket, "rm", f"example.org/nothing/x{i}:1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i in range(3)]
        time.sleep(0.3)
        t0 = time.monotonic()
        r = daemon.alps("status", timeout=10)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert took < 2.0, f"status took {took:.1f} s while the database was locked"
    finally:
        db.execute("ROLLBACK")
        db.close()
    for p in rms:
        p.wait(timeout=30)
