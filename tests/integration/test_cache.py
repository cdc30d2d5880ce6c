"""The cache over its life (issue 13): store.max_size and eviction, pins,
alps gc, the timer, what a failed pull leaves.  Real alpsd, a real registry
on loopback, images built with umoci and pushed with skopeo; layers are
random bytes, so their squashfs sizes are known to within a few KiB."""
import json
import os
import sqlite3
import threading
import time

import pytest

import registry_fixture as rf
from conftest import binary

KIB = 1024


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo")
    if os.geteuid() != 0:
        pytest.skip("cache tests prepare jobs (mounts): run as root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("cacheworld")
    w.registry = rf.Registry(w.dir).start()
    w.refs = {}
    w.layouts = {}
    # Five images of one random 400 KiB layer each, and a large one.
    for name, size in [("a", 400), ("b", 400), ("c", 400), ("d", 400), ("e", 400),
                       ("big", 1200)]:
        layout = rf.build_image(w.dir / name, name,
                                [{f"data/{name}": rf.random_bytes(size * KIB, name)}])
        rf.push(layout, name, w.registry.host, f"cache/{name}", "v1")
        w.refs[name] = f"{w.registry.host}/cache/{name}:v1"
        w.layouts[name] = layout
    yield w
    w.registry.stop()


def images(d):
    r = d.alps("--json", "images", check=True)
    out = {}
    for im in json.loads(r.stdout)["images"]:
        for ref in im["references"]:
            out[ref] = im
    return out


def layer_rows_and_files(d):
    db = sqlite3.connect(os.path.join(d.state_dir, "alps.db"))
    rows = {r[0] for r in db.execute("SELECT file FROM layers")}
    used = db.execute("SELECT coalesce(sum(squashfs_size), 0) FROM layers").fetchone()[0]
    db.close()
    files = set(os.listdir(os.path.join(d.state_dir, "layers")))
    return rows, files, used


def store_consistent(d):
    rows, files, used = layer_rows_and_files(d)
    assert rows == files, (rows, files)
    assert os.listdir(os.path.join(d.state_dir, "tmp")) == []
    return used


def pull(d, world, name, **kw):
    return d.alps("pull", world.refs[name], **kw)


def test_eviction_keeps_pinned_and_in_use(daemon_factory, world):
    # 1500 KiB: three 400 KiB images fit, a fourth does not.
    d = daemon_factory('[store]\nmax_size = "1500K"\nlow_water = 90\ngc_interval = 0\n')
    for name in ("a", "b", "c"):
        pull(d, world, name, check=True)
    d.alps("pin", world.refs["a"], check=True)
    d.alps("prepare", "--job", "cache1", "--user", "65534", "--image", world.refs["b"],
           check=True)
    assert images(d)[world.refs["a"]]["pinned"] is True
    assert images(d)[world.refs["b"]]["pinned"] is False
    r = d.alps("images", check=True)
    assert any(world.refs["a"] in l and l.rstrip().endswith("yes") for l in r.stdout.splitlines())

    # d needs room: c (idle, least recently used) goes; a (pinned), b (in use) stay.
    pull(d, world, "d", check=True)
    have = images(d)
    assert world.refs["c"] not in have
    for name in ("a", "b", "d"):
        assert world.refs[name] in have
    used = store_consistent(d)
    assert used <= 1500 * KIB
    assert "evicted 1 images to make room" in d.read_log()

    # The large one cannot fit even with d evicted: refused before any
    # download, naming what is pinned and what is in use.
    before = len(world.registry.blob_gets())
    r = pull(d, world, "big")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "needs about" in r.stderr and "limit" in r.stderr, r.stderr
    assert world.refs["a"] in r.stderr and "job cache1" in r.stderr, r.stderr
    big_layer = world.layouts["big"].manifest("big")["layers"][0]["digest"]
    assert not [p for p in world.registry.blob_gets()[before:] if p.endswith(big_layer)]
    assert world.refs["big"] not in images(d)
    store_consistent(d)

    d.alps("release", "--job", "cache1", check=True)
    d.alps("unpin", world.refs["a"], check=True)
    assert images(d)[world.refs["a"]]["pinned"] is False


def test_gc_on_demand(daemon_factory, world):
    d = daemon_factory("[store]\ngc_interval = 0\n")
    for name in ("a", "b", "c"):
        pull(d, world, name, check=True)
        time.sleep(0.01)
    d.alps("pin", world.refs["c"], check=True)
    # Dry run: says what would go (a then b, least recently used first), removes nothing.
    r = d.alps("--json", "gc", "--dry-run", "--max-size", "0", check=True)
    j = json.loads(r.stdout)
    assert j["dry_run"] is True
    assert [i["name"] for i in j["images"]] == [world.refs["a"], world.refs["b"]]
    assert world.refs["c"] in j["kept"]
    assert len(images(d)) == 3
    # --max-size: the least recently used goes until the rest fits.
    used = store_consistent(d)
    r = d.alps("--json", "gc", "--max-size", str(used - 100 * KIB), check=True)
    j = json.loads(r.stdout)
    assert [i["name"] for i in j["images"]] == [world.refs["a"]]
    assert j["bytes_freed"] > 390 * KIB and j["used_after"] == store_consistent(d)
    # --older-than: images unused that long go whatever the size.
    r = d.alps("--json", "gc", "--older-than", "1h", check=True)
    assert json.loads(r.stdout)["images"] == []
    time.sleep(1.1)
    r = d.alps("--json", "gc", "--older-than", "1s", check=True)
    assert [i["name"] for i in json.loads(r.stdout)["images"]] == [world.refs["b"]]
    assert set(images(d)) == {world.refs["c"]}
    store_consistent(d)
    # Bad input changes nothing.
    for bad in (["--max-size", "lots"], ["--older-than", "-1h"], ["--older-than", "3x"],
                ["extra"]):
        r = d.alps("gc", *bad)
        assert r.returncode == 2, (bad, r.stderr)
    r = d.alps("pin", "sha256:" + "0" * 64)
    assert r.returncode == 1 and "no such image" in r.stderr
    assert set(images(d)) == {world.refs["c"]}


def test_gc_pin_unpin_are_for_admins(daemon, world, users):
    pull(daemon, world, "a", check=True)
    for argv in (["pin", world.refs["a"]], ["unpin", world.refs["a"]], ["gc"],
                 ["gc", "--max-size", "0"]):
        r = users.attacker.run([binary("alps"), "--socket", daemon.socket] + argv)
        assert r.returncode == 1 and "administrators" in r.stderr, (argv, r.stderr)
    assert images(daemon)[world.refs["a"]]["pinned"] is False
    assert world.refs["a"] in images(daemon)


def test_timer_evicts_over_the_limit(daemon_factory, world):
    d = daemon_factory("[store]\ngc_interval = 0\n")
    for name in ("a", "b", "c"):
        pull(d, world, name, check=True)
        time.sleep(0.01)
    d.stop()
    # The limit lowered (a restart; a reload would do too): the timer brings
    # the store down to the low-water mark, least recently used first.
    with open(d.config, "w") as f:
        f.write('[store]\nmax_size = "1000K"\nlow_water = 50\ngc_interval = 1\n')
    d.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(images(d)) > 1:
        time.sleep(0.2)
    assert set(images(d)) == {world.refs["c"]}
    assert store_consistent(d) <= 500 * KIB
    assert "event=evict trigger=timer images=2" in d.read_log()


def test_max_size_percentage(daemon_factory, world):
    d = daemon_factory('[store]\nmax_size = "50%"\nlow_water = 80\ngc_interval = 0\n')
    st = os.statvfs(d.state_dir)
    fs = st.f_blocks * st.f_frsize
    r = d.alps("--json", "gc", "--dry-run", check=True)
    want = fs // 100 * 50
    assert json.loads(r.stdout)["target"] == want // 100 * 80 + want % 100 * 80 // 100
    for i, bad in enumerate(('"0%"', '"101%"', '"5%%"', '"x%"', "-5")):
        bd = daemon_factory(f"[store]\nmax_size = {bad}\n", start=False, subdir=f"bad{i}")
        with pytest.raises(RuntimeError, match="max_size"):
            bd.start(timeout=5)


def test_concurrent_pull_and_gc(daemon_factory, world):
    d = daemon_factory("[store]\ngc_interval = 0\n")
    stop = threading.Event()
    failures = []

    def collector():
        while not stop.is_set():
            r = d.alps("gc", "--max-size", "0")
            if r.returncode != 0:
                failures.append(r.stderr)

    t = threading.Thread(target=collector)
    t.start()
    try:
        for round_ in range(3):
            for name in ("a", "b", "c", "d"):
                r = pull(d, world, name)
                if r.returncode != 0:
                    failures.append(r.stderr)
    finally:
        stop.set()
        t.join()
    assert not failures, failures
    d.alps("gc", "--max-size", "0", check=True)
    assert images(d) == {}
    rows, files, used = layer_rows_and_files(d)
    assert rows == set() and files == set() and used == 0
    d.check_log_clean()


# ---- what a failed or cancelled pull leaves ----

def blob_file(world, digest):
    return os.path.join(world.registry.storage, "docker/registry/v2/blobs/sha256",
                        digest[7:9], digest[7:], "data")


def gc_dry(d):
    return json.loads(d.alps("--json", "gc", "--dry-run", check=True).stdout)


def test_failed_pull_keeps_only_visible_layers(daemon_factory, world, tmp_path):
    layout = rf.build_image(tmp_path, "f", [{"one": rf.random_bytes(100 * KIB, "f1")},
                                            {"two": rf.random_bytes(300 * KIB, "f2")}])
    rf.push(layout, "f", world.registry.host, "cache/fail", "v1")
    ref = f"{world.registry.host}/cache/fail:v1"
    first, second = [l["digest"] for l in layout.manifest("f")["layers"]]
    with open(blob_file(world, second), "r+b") as f:
        good = f.read()
        f.seek(5000)
        f.write(b"CORRUPT")
    d = daemon_factory("[store]\ngc_interval = 0\n")
    r = d.alps("pull", ref)
    assert r.returncode == 1 and second in r.stderr
    # The good layer is kept: a row, counted, shown by gc --dry-run as
    # collectable, reused by the next pull; the bad one left nothing.
    used = store_consistent(d)
    rows, files, _ = layer_rows_and_files(d)
    assert files == {first.replace(":", "-") + ".sqfs"}
    j = gc_dry(d)
    assert j["layers_removed"] == 1 and j["bytes_freed"] == used and j["images"] == []
    with open(blob_file(world, second), "wb") as f:
        f.write(good)
    before = len(world.registry.blob_gets())
    r = d.alps("--json", "pull", ref, check=True)
    assert json.loads(r.stdout.splitlines()[-1])["layers_fetched"] == 1
    assert not [p for p in world.registry.blob_gets()[before:] if p.endswith(first)]
    store_consistent(d)
    assert gc_dry(d)["layers_removed"] == 0
    # A failure again, then gc: the orphan goes.
    d.alps("rm", ref, check=True)
    with open(blob_file(world, second), "r+b") as f:
        f.seek(5000)
        f.write(b"CORRUPT")
    assert d.alps("pull", ref).returncode == 1
    assert layer_rows_and_files(d)[1]
    j = json.loads(d.alps("--json", "gc", check=True).stdout)
    assert j["layers_removed"] == 1
    assert layer_rows_and_files(d)[:2] == (set(), set())
    with open(blob_file(world, second), "wb") as f:
        f.write(good)


def test_cancelled_pull_leaves_nothing_unseen(daemon_factory, world, tmp_path):
    """SIGTERM mid-pull: the half-converted layer goes at once, before the
    restart; what was committed has its row."""
    import http.server
    import signal
    import subprocess
    from test_pull import _SlowHandler
    layout = rf.build_image(tmp_path, "k", [{"a": rf.random_bytes(64 * KIB, "ca")},
                                            {"b": rf.random_bytes(4 << 20, "cb")}])
    rf.push(layout, "k", world.registry.host, "cache/cancel", "v1")
    port = rf.free_port()
    proxy = http.server.ThreadingHTTPServer((rf.LOOPBACK, port), _SlowHandler)
    proxy.upstream = world.registry.host
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        d = daemon_factory("[daemon]\nshutdown_grace = 0\n[store]\ngc_interval = 0\n")
        ref = f"{rf.LOOPBACK}:{port}/cache/cancel:v1"
        p = subprocess.Popen([binary("alps"), "--socket", d.socket, "--json", "pull", ref],
                             stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            ev = json.loads(line)
            if ev.get("event") == "progress" and ev["compressed_done"] > 1 << 20:
                break
        assert d.stop(signal.SIGTERM) == 0
        p.wait(30)
        # Not restarted yet: nothing under tmp/, every file has its row.
        store_consistent(d)
        d.start()
        store_consistent(d)
        # Cancelled: no image; the small layer, if it was done, is kept
        # and gc --dry-run counts it.
        assert images(d) == {}
        j = gc_dry(d)
        assert j["layers_removed"] == len(layer_rows_and_files(d)[0]) <= 1
    finally:
        proxy.shutdown()
        proxy.server_close()


# ---- layers deduplicated by content ----

def test_gzip_zstd_twins_stored_once(daemon_factory, world, tmp_path):
    layout = rf.build_image(tmp_path, "t", [{"twin/data": rf.random_bytes(500 * KIB, "twin")}])
    # zstd first, to its own repository: skopeo would reuse the gzip blob.
    rf.push(layout, "t", world.registry.host, "cache/twinz", "zst", compress="zstd")
    rf.push(layout, "t", world.registry.host, "cache/twin", "gz")
    gz = f"{world.registry.host}/cache/twin:gz"
    zst = f"{world.registry.host}/cache/twinz:zst"
    d = daemon_factory("[store]\ngc_interval = 0\n")
    d.alps("pull", gz, check=True)
    one = store_consistent(d)
    r = d.alps("--json", "inspect", zst)
    assert r.returncode == 1
    d.alps("pull", zst, check=True)
    have = images(d)
    assert gz in have and zst in have and have[gz]["digest"] != have[zst]["digest"]
    # Two blobs (gzip, zstd), one layer file, the same bytes counted once.
    j = json.loads(d.alps("--json", "inspect", zst, check=True).stdout)
    blobs = [l["digest"] for l in j["manifest"]["layers"]]
    assert len(blobs) == 1 and "zstd" in j["manifest"]["layers"][0]["mediaType"]
    assert len(os.listdir(os.path.join(d.state_dir, "layers"))) == 1
    assert store_consistent(d) == one
    assert "stored once" in d.read_log()
    # Each image keeps it: rm of one leaves the other whole and usable.
    d.alps("rm", gz, check=True)
    assert store_consistent(d) == one
    d.alps("prepare", "--job", "twin1", "--user", "65534", "--image", zst, check=True)
    d.alps("release", "--job", "twin1", check=True)
    d.alps("rm", zst, check=True)
    assert store_consistent(d) == 0


# ---- alps df ----

def test_df_figures(daemon_factory, world, tmp_path, users):
    import subprocess
    layout = rf.build_image(tmp_path, "s", [{"s/one": rf.random_bytes(300 * KIB, "s1")},
                                            {"s/two": rf.random_bytes(200 * KIB, "s2")}])
    rf.push(layout, "s", world.registry.host, "cache/share", "a")

    def add_top(root):
        os.makedirs(f"{root}/top", exist_ok=True)
        with open(f"{root}/top/b", "wb") as f:
            f.write(rf.random_bytes(100 * KIB, "top"))

    import images as imgs
    imgs.umoci_modify(layout, "s", tmp_path, add_top, "share-b")
    rf.push(layout, "s", world.registry.host, "cache/share", "b")
    a, b = (f"{world.registry.host}/cache/share:{t}" for t in ("a", "b"))
    d = daemon_factory('[store]\nmax_size = "100M"\nlow_water = 50\ngc_interval = 0\n')
    d.alps("pull", a, check=True)
    d.alps("pull", b, check=True)
    d.alps("pull", a, check=True)
    d.alps("pin", b, check=True)
    j = json.loads(d.alps("--json", "df", check=True).stdout)
    layers_dir = os.path.join(d.state_dir, "layers")
    du = subprocess.run(["du", "-b", "-c"] + [os.path.join(layers_dir, f)
                                               for f in os.listdir(layers_dir)],
                        capture_output=True, text=True, check=True)
    total = int(du.stdout.splitlines()[-1].split()[0])
    assert j["store_bytes"] == total == store_consistent(d)
    assert j["limit"] == 100 << 20 and j["low_water"] == 50 << 20
    st = os.statvfs(d.state_dir)
    assert j["fs_size"] == st.f_blocks * st.f_frsize
    assert abs(j["fs_avail"] - st.f_bavail * st.f_frsize) < 64 << 20
    assert (j["images"], j["pinned_images"], j["tags"], j["layers"]) == (2, 1, 2, 3)
    assert j["orphan_layers"] == 0 and j["pulls_in_flight"] == 0 and j["reserved_bytes"] == 0
    # The two bottom layers are shared; a is neither pinned nor in use, but
    # its layers are all b's: gc would free nothing.
    db = sqlite3.connect(os.path.join(d.state_dir, "alps.db"))
    shared = db.execute("SELECT sum(squashfs_size) FROM layers WHERE refcount > 1").fetchone()[0]
    db.close()
    assert j["shared_bytes"] == shared and shared > 490 * KIB
    assert j["reclaimable_bytes"] == 0
    # Misses: 2 (a) + 1 (b's top); hits: 2 (b's bottom two) + 2 (a again).
    assert (j["layer_misses"], j["layer_hits"]) == (3, 4)
    d.alps("unpin", b, check=True)
    j2 = json.loads(d.alps("--json", "df", check=True).stdout)
    assert j2["reclaimable_bytes"] == total
    dry = json.loads(d.alps("--json", "gc", "--dry-run", "--max-size", "0", check=True).stdout)
    assert dry["bytes_freed"] == total
    # Any user may look; the text form names the same figures.
    r = users.attacker.run([binary("alps"), "--socket", d.socket, "df"])
    assert r.returncode == 0 and "3 hits" not in r.stdout and "4 hits, 3 misses" in r.stdout
    assert d.alps("df", "extra").returncode == 2


# ---- alps verify ----

def layer_path(d, ref):
    j = json.loads(d.alps("--json", "inspect", ref, check=True).stdout)
    digest = j["manifest"]["layers"][0]["digest"]
    return digest, os.path.join(d.state_dir, "layers", digest.replace(":", "-") + ".sqfs")


def test_verify_flipped_byte_then_prepare_refetches(daemon_factory, world, users):
    d = daemon_factory("[store]\ngc_interval = 0\n")
    pull(d, world, "a", check=True)
    pull(d, world, "b", check=True)
    j = json.loads(d.alps("--json", "verify", check=True).stdout)
    assert j["layers_checked"] == 2 and j["damaged"] == [] and j["checksums_recorded"] == 0
    digest, path = layer_path(d, world.refs["a"])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    # Of one image: only its layer; of all: the damaged one is named.
    r = d.alps("verify", world.refs["b"])
    assert r.returncode == 0 and "1 layer(s)" in r.stdout
    r = d.alps("--json", "verify")
    assert r.returncode == 1
    j = json.loads(r.stdout)
    assert [x["digest"] for x in j["damaged"]] == [digest]
    assert "checksum" in j["damaged"][0]["problem"]
    # A user is not given the image to mount; prepare fetches the layer again.
    r = users.victim.run([binary("alps"), "--socket", d.socket, "inspect", world.refs["a"]])
    assert r.returncode == 1 and "damaged" in r.stderr
    before = len(world.registry.blob_gets())
    d.alps("prepare", "--job", "v1", "--user", "65534", "--image", world.refs["a"], check=True)
    assert [p for p in world.registry.blob_gets()[before:] if p.endswith(digest)]
    assert "fetched again and replaced" in d.read_log()
    d.alps("release", "--job", "v1", check=True)
    j = json.loads(d.alps("--json", "verify", check=True).stdout)
    assert j["damaged"] == []
    store_consistent(d)
    # A broken superblock, and a truncated file: a pull repairs these too.
    with open(path, "r+b") as f:
        f.write(b"XXXX")
    r = d.alps("verify", world.refs["a"])
    assert r.returncode == 1 and "squashfs magic" in r.stdout
    pull(d, world, "a", check=True)
    assert d.alps("verify").returncode == 0
    os.truncate(path, size - 10)
    r = d.alps("verify")
    assert r.returncode == 1 and f"size {size - 10}, recorded {size}" in r.stdout
    pull(d, world, "a", check=True)
    assert d.alps("verify").returncode == 0
    # Admins only.
    r = users.attacker.run([binary("alps"), "--socket", d.socket, "verify"])
    assert r.returncode == 1 and "administrators" in r.stderr
    assert d.alps("verify", "a", "b").returncode == 2


# ---- alps squash ----

def test_squash_as_the_user(users, tmp_path):
    import shutil
    import subprocess
    import images as imgs
    user = users.victim
    src = os.path.join(user.home, "sq-src")
    out = os.path.join(user.home, "sq.sqsh")
    for p in (src, out):
        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else (
            os.path.exists(p) and os.unlink(p))
    r = user.run(["sh", "-c", f"""set -e
        mkdir -p {src}/lib/pkg {src}/data/deep/er {src}/empty
        printf 'VALUE = 42\\n' > {src}/lib/pkg/__init__.py
        head -c 200000 /dev/urandom > {src}/data/blob
        ln -s ../data/blob {src}/lib/blob-link
        ln {src}/data/blob {src}/data/blob-hard
        for i in $(seq 1 300); do echo $i > {src}/data/deep/er/f$i; done
        chmod 700 {src}/data/deep; chmod 640 {src}/data/blob"""])
    assert r.returncode == 0, r.stderr
    r = user.run([binary("alps"), "--json", "squash", src, out])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["entries"] >= 300
    st = os.stat(out)
    assert st.st_uid == user.uid
    ext = str(tmp_path / "ext")
    subprocess.run(["unsquashfs", "-q", "-n", "-d", ext, out], check=True,
                   capture_output=True)
    want, want_links = imgs.tree(src)
    got, got_links = imgs.tree(ext)
    assert got == want
    assert got_links == want_links and want_links
    # And back with alps unsquash, as the user: the same tree.
    back = os.path.join(user.home, "sq-back")
    subprocess.run(["rm", "-rf", back], check=True)
    r = user.run([binary("alps"), "--json", "unsquash", out, back])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == 302
    got, got_links = imgs.tree(back)
    assert got == want and got_links == want_links
    r = user.run([binary("alps"), "unsquash", out, back])
    assert r.returncode == 1 and "exists" in r.stderr
    # Again: the output exists, refused; a file the user cannot read fails
    # the run naming it, and leaves no output.
    r = user.run([binary("alps"), "squash", src, out])
    assert r.returncode == 1 and "exists" in r.stderr
    secret = os.path.join(src, "secret")
    with open(secret, "w") as f:
        f.write("root only\n")
    os.chmod(secret, 0o600)
    out2 = out + ".2"
    r = user.run([binary("alps"), "squash", src, out2])
    assert r.returncode == 1 and "secret" in r.stderr, r.stderr
    assert not os.path.exists(out2)
    os.unlink(secret)


def test_squash_python_venv_imports_from_the_mount(users, tmp_path):
    import subprocess
    user = users.victim
    venv = os.path.join(user.home, "sq-venv")
    out = os.path.join(user.home, "venv.sqsh")
    subprocess.run(["rm", "-rf", venv, out], check=True)
    r = user.run(["sh", "-c", f"""set -e
        python3 -m venv --without-pip {venv}
        site=$({venv}/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        mkdir -p $site/alpspkg
        printf 'def answer():\\n    return 42\\n' > $site/alpspkg/__init__.py"""])
    assert r.returncode == 0, r.stderr
    r = user.run([binary("alps"), "squash", venv, out])
    assert r.returncode == 0, r.stderr
    mnt = os.path.join(user.home, "venv-mnt")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "squashfs", "-o", "loop,ro,nosuid,nodev", out, mnt],
                   check=True)
    try:
        r = user.run([f"{mnt}/bin/python3", "-c",
                      "import alpspkg, sys; print(alpspkg.answer(), sys.prefix)"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["42", mnt]
    finally:
        subprocess.run(["umount", mnt], check=True)
        os.rmdir(mnt)


def test_unsquash_someone_elses_file(users, tmp_path):
    """A squashfs made by root with a device node, a set-uid root file and a
    symbolic link out of the tree: the user gets their own files, no set-id
    bit, no device, and nothing is written through the link."""
    import subprocess
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "suid").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "d" / "suid", 0o4755)
    os.symlink("/etc", src / "etc-link")
    img = os.path.join(users.victim.home, "root-made.sqsh")   # root's file, 0644
    subprocess.run(["rm", "-f", img], check=True)
    subprocess.run(["mksquashfs", str(src), img, "-no-progress", "-quiet", "-p",
                    "null c 666 0 0 1 3"], check=True, capture_output=True)
    os.chmod(img, 0o644)
    dest = os.path.join(users.victim.home, "unsq-x")
    subprocess.run(["rm", "-rf", dest], check=True)
    r = users.victim.run([binary("alps"), "--json", "unsquash", img, dest])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == 1
    st = os.lstat(os.path.join(dest, "d", "suid"))
    assert st.st_uid == users.victim.uid and st.st_mode & 0o7777 == 0o755
    assert os.readlink(os.path.join(dest, "etc-link")) == "/etc"
    assert not os.path.exists(os.path.join(dest, "null"))
    r = users.victim.run([binary("alps"), "unsquash", "/etc/passwd", dest + "2"])
    assert r.returncode == 1 and "not a squashfs file" in r.stderr
    assert not os.path.exists(dest + "2")
