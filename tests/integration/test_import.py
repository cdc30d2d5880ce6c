"""alps import: docker archives, OCI layouts (directory and tar), SIF files
and plain squashfs files into the store, and what it refuses.

Every format round-trips: import, inspect, prepare a job on it and read a
file inside.  A user's import is private to that user; the client opens
the file with the user's rights (a file only root can read fails, which
shows the daemon does not open it); hostile inputs fail with a precise
error and leave no rows and no files."""
import gzip
import io
import json
import os
import random
import shutil
import socket
import sqlite3
import stat
import struct
import subprocess
import tarfile
import time

import pytest

import images
import registry_fixture as rf

NOBODY = 65534
MARKER = b"imported by alps\n"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """One busybox image, in every format."""
    rf.require_tools("umoci", "skopeo", "busybox", "siftool", "mksquashfs")
    if os.geteuid() != 0:
        pytest.skip("jobs need root")
    w = type("Sources", (), {})()
    d = tmp_path_factory.mktemp("import")
    os.chmod(d, 0o755)
    w.dir = str(d)
    # A file over the 4 MiB an archive's first pass keeps in memory: its
    # layer is streamed from the archive by a second pass.
    big = random.Random(13).randbytes(5 << 20)
    layout = rf.build_image(d, "bb", [{"etc/marker": MARKER, "opt/big": big}])
    images.umoci_modify(layout, "bb", d, images.busybox_root, "bb")
    rf.run(["umoci", "gc", "--layout", layout.path])
    w.oci_dir = layout.path
    w.oci_tar = os.path.join(w.dir, "oci.tar")
    rf.run(["tar", "-C", layout.path, "-cf", w.oci_tar, "."])
    w.docker = os.path.join(w.dir, "docker.tar")
    rf.run(["skopeo", "copy", "-q", f"oci:{layout.path}:bb",
            f"docker-archive:{w.docker}:test/imported:v1"])
    rootfs = os.path.join(w.dir, "bundle")
    rf.run(["umoci", "unpack", "--image", f"{layout.path}:bb", rootfs])
    w.root = os.path.join(rootfs, "rootfs")
    os.link(os.path.join(w.root, "etc", "marker"), os.path.join(w.root, "bin", "marker"))
    w.sqsh = os.path.join(w.dir, "root.sqsh")
    rf.run(["mksquashfs", w.root, w.sqsh, "-noappend", "-quiet", "-comp", "gzip"])
    w.sif = os.path.join(w.dir, "root.sif")
    rf.run(["siftool", "new", w.sif])
    rf.run(["siftool", "add", w.sif, w.sqsh, "--datatype", "4", "--parttype", "2",
            "--partfs", "1", "--partarch", "2"])
    for p in (w.oci_tar, w.docker, w.sqsh, w.sif):
        os.chmod(p, 0o644)
    return w


def store_rows(daemon):
    db = sqlite3.connect(f"file:{daemon.state_dir}/alps.db?mode=ro", uri=True)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("images", "tags", "layers", "layer_aliases", "image_access")}
    finally:
        db.close()


def store_files(daemon):
    return {sub: sorted(os.listdir(os.path.join(daemon.state_dir, sub)))
            for sub in ("layers", "tmp")}


def as_user(daemon, user, *args):
    return user.run([os.path.join(os.environ["ALPS_BUILDDIR"], "alps"), "--socket",
                     daemon.socket] + list(args))


def run_cat(daemon, ref, job, path="/etc/marker"):
    daemon.alps("prepare", "--job", job, "--user", str(NOBODY), "--image", ref, check=True)
    try:
        r = daemon.alps("exec", "--job", job, "--", "cat", path, user=NOBODY)
        assert r.returncode == 0, r.stderr
        return r.stdout.encode()
    finally:
        daemon.alps("release", "--job", job, check=True)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci-dir", "sif",
                                 "squashfs"])
def test_roundtrip(daemon, src, fmt, tmp_path):
    path = {"docker-archive": src.docker, "oci-archive": src.oci_tar, "oci-dir": src.oci_dir,
            "sif": src.sif, "squashfs": src.sqsh}[fmt]
    ref = f"local/{fmt}:1"
    r = daemon.alps("--json", "import", "--tag", ref, path, check=True)
    done = json.loads(r.stdout.strip().splitlines()[-1])
    assert done["ok"] and done["format"] == fmt and done["private"] is False
    assert done["reference"] == f"docker.io/{ref}"
    info = json.loads(daemon.alps("--json", "inspect", ref, check=True).stdout)
    assert info["digest"] == done["digest"]
    assert len(info["layers"]) == done["layer_count"]
    assert run_cat(daemon, ref, f"imp-{fmt}") == MARKER
    if fmt == "sif":
        # The squashfs rewritten by the converter holds the source's tree.
        out = tmp_path / "x"
        rf.run(["unsquashfs", "-no-xattrs", "-q", "-d", str(out), info["layers"][0]["file"]])
        assert images.tree(str(out)) == images.tree(src.root)
    if fmt == "docker-archive":
        # Again: the same image, nothing new.
        before = store_rows(daemon)
        r2 = daemon.alps("--json", "import", "--tag", ref, path, check=True)
        assert json.loads(r2.stdout.strip().splitlines()[-1])["digest"] == done["digest"]
        assert store_rows(daemon) == before


def test_default_tag(daemon, src):
    """The archive's own name (RepoTags), else --tag is required."""
    r = daemon.alps("--json", "import", src.docker, check=True)
    assert json.loads(r.stdout.strip().splitlines()[-1])["reference"] == \
        "docker.io/test/imported:v1"
    r = daemon.alps("import", src.sqsh)
    assert r.returncode != 0 and "give --tag REF" in r.stderr, r.stderr


def give(user, src, name):
    """A copy of src (a file or a directory) in user's home, theirs."""
    dst = os.path.join(user.home, name)
    if os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy(src, dst)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", dst], check=True)
    return dst


def test_user_import_is_private(daemon, src, users):
    """A user's import (here a directory, streamed by the client) is the
    user's only, and its tag cannot be taken by another user."""
    own = give(users.victim, src.oci_dir, "layout")
    r = as_user(daemon, users.victim, "--json", "import", "--tag", "victim/own:1", own)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["private"] is True
    mine = json.loads(as_user(daemon, users.victim, "--json", "images").stdout)["images"]
    assert [i["references"] for i in mine] == [["docker.io/victim/own:1"]]
    theirs = json.loads(as_user(daemon, users.attacker, "--json", "images").stdout)["images"]
    assert theirs == []
    r = as_user(daemon, users.attacker, "inspect", "victim/own:1")
    assert r.returncode != 0 and "no such image" in r.stderr
    # Nor may another user's import take the name.
    theirs = give(users.attacker, src.docker, "other.tar")
    r = as_user(daemon, users.attacker, "import", "--tag", "victim/own:1", theirs)
    assert r.returncode != 0 and "names another image" in r.stderr, r.stderr


def test_daemon_takes_no_path(daemon, pb):
    """The request names no file the daemon would open: without an fd it
    is refused, whatever source says."""
    with daemon.conn() as c:
        c.hello()
        req = pb.Request()
        getattr(req, "import_image").source = "/etc/shadow"
        _, r = c.call(req)
        assert r.status == pb.INVALID_ARGUMENT and "as one fd, got 0" in r.message


def test_client_reads_as_user(daemon, src, users, tmp_path):
    """The client opens the file as the user: a root-only file fails there,
    with the user's permission error, before the daemon is asked.  A
    directory is read by the client too, links not followed."""
    secret = os.path.join(str(tmp_path), "secret.sif")
    shutil.copy(src.sif, secret)
    os.chmod(secret, 0o600)
    os.chmod(str(tmp_path), 0o755)
    r = as_user(daemon, users.victim, "import", "--tag", "victim/stolen:1", secret)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    assert store_rows(daemon)["images"] == 0
    # A blob of a user's layout that is a symbolic link (to a root-only
    # file) is sent as a link, never followed, and refused.
    own = give(users.victim, src.oci_dir, "linked")
    with open(os.path.join(own, "index.json")) as f:
        mdigest = json.load(f)["manifests"][0]["digest"]
    with open(os.path.join(own, "blobs", "sha256", mdigest[7:])) as f:
        config = json.load(f)["config"]["digest"]
    blob = os.path.join(own, "blobs", "sha256", config[7:])
    os.unlink(blob)
    os.symlink("/etc/shadow", blob)
    before = store_rows(daemon), store_files(daemon)
    r = as_user(daemon, users.victim, "import", "--tag", "victim/linked:1", own)
    assert r.returncode != 0 and "a symbolic link in the archive" in r.stderr, r.stderr
    assert (store_rows(daemon), store_files(daemon)) == before


def expect_refused(daemon, path, words, *extra):
    before_rows, before_files = store_rows(daemon), store_files(daemon)
    r = daemon.alps("import", "--tag", "local/bad:1", *extra, path)
    assert r.returncode != 0 and words in r.stderr, r.stderr
    assert store_rows(daemon) == before_rows
    assert store_files(daemon) == before_files


def tar_of(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            if isinstance(data, str):
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_hostile_archives(daemon, src, tmp_path):
    with tarfile.open(src.oci_tar) as t:
        members = [(m.name, t.extractfile(m).read()) for m in t.getmembers() if m.isfile()]
    dotdot = write(tmp_path / "dotdot.tar", tar_of(members + [("../../etc/evil", b"x")]))
    expect_refused(daemon, str(dotdot), "'..' component")
    twice = write(tmp_path / "twice.tar", tar_of(members + [("index.json", b"{}")]))
    expect_refused(daemon, str(twice), "'index.json' appears twice")
    # The manifest names a layer whose bytes are not in the archive: the
    # blob file holds other bytes (same size).  It is the big first layer,
    # streamed by the second pass after the small ones were committed from
    # memory: those go again.
    idx = json.loads(dict(members)["./index.json"])
    mname = "./blobs/sha256/" + idx["manifests"][0]["digest"][7:]
    manifest = json.loads(dict(members)[mname])
    lname = "./blobs/sha256/" + manifest["layers"][0]["digest"][7:]
    swapped = [(n, d if n != lname else bytes(len(d))) for n, d in members]
    bad = write(tmp_path / "mismatch.tar", tar_of(swapped))
    expect_refused(daemon, str(bad), "its manifest names")
    # A blob that is a symbolic link (to a file elsewhere in the archive).
    linked = [(n, d) for n, d in members if n != lname] + [(lname, "../../oci-layout")]
    expect_refused(daemon, str(write(tmp_path / "link.tar", tar_of(linked))),
                   "a symbolic link in the archive")
    raw = open(src.docker, "rb").read()
    expect_refused(daemon, str(write(tmp_path / "trunc.tar", raw[:len(raw) // 2])),
                   "truncated")
    expect_refused(daemon, str(write(tmp_path / "badjson.tar", tar_of(
        [("manifest.json", b"[{\"Config\": ")]))), "manifest.json")
    # A docker archive whose layer tar is not the config's diff_id.
    with tarfile.open(src.docker) as t:
        dm = [(m.name, t.extractfile(m).read()) for m in t.getmembers() if m.isfile()]
    mj = json.loads(dict(dm)["manifest.json"])
    layer = mj[0]["Layers"][-1]
    other = images.tar_layer([("x", "file", b"other", {})], compress=None)[0]
    dm = [(n, d if n != layer else other) for n, d in dm]
    expect_refused(daemon, str(write(tmp_path / "diffid.tar", tar_of(dm))),
                   "not the diff_id")


def test_hostile_squashfs(daemon, src, tmp_path):
    # A truncated SIF: its partition goes past the end.
    raw = open(src.sif, "rb").read()
    expect_refused(daemon, str(write(tmp_path / "trunc.sif", raw[:len(raw) - 1000])),
                   "does not fit in the file")
    # A SIF with no squashfs partition.
    nopart = str(tmp_path / "empty.sif")
    rf.run(["siftool", "new", nopart])
    rf.run(["siftool", "add", nopart, src.sqsh, "--datatype", "7"])
    expect_refused(daemon, nopart, "no primary system partition")
    # A squashfs with a device node.
    root = tmp_path / "devroot"
    os.makedirs(root / "dev")
    os.mknod(root / "dev" / "mem", 0o666 | stat.S_IFCHR, os.makedev(1, 1))
    dev = str(tmp_path / "dev.sqsh")
    rf.run(["mksquashfs", str(root), dev, "-noappend", "-quiet"])
    expect_refused(daemon, dev, "'dev/mem': a device node")
    # A truncated plain squashfs.
    raw = open(src.sqsh, "rb").read()
    expect_refused(daemon, str(write(tmp_path / "trunc.sqsh", raw[:len(raw) // 2])),
                   "truncated")
    expect_refused(daemon, str(write(tmp_path / "junk", b"\0" * 4096)),
                   "not a docker archive")


def test_store_limit(daemon_factory, src):
    """An import is admitted under store.max_size as a pull is: one that
    cannot fit fails before converting anything."""
    d = daemon_factory('[store]\nmax_size = "100K"\ngc_interval = 0\n')
    r = d.alps("import", "--tag", "local/big:1", src.docker)
    assert r.returncode != 0 and "import of" in r.stderr, r.stderr
    # A directory's stream is cut at the limit while it is copied.
    r = d.alps("import", "--tag", "local/big:1", src.oci_dir)
    assert r.returncode != 0 and "the stream is over 102400 bytes" in r.stderr, r.stderr
    assert store_rows(d)["layers"] == 0 and store_files(d) == {"layers": [], "tmp": []}


def test_stop_ends_a_stalled_import(daemon_factory, pb):
    """A client that streams a few bytes and stalls holds an import on the
    pool; a stop makes it give up once the grace of in-flight requests is
    over (not after the stall timeout, 60 s), leaving nothing."""
    daemon = daemon_factory("[daemon]\nshutdown_grace = 1\n")
    r, w = os.pipe()
    try:
        with daemon.conn() as c:
            req = pb.Request(id=7)
            getattr(req, "import_image").tag = "local/stall:1"
            getattr(req, "import_image").from_directory = True
            data = req.SerializeToString()
            socket.send_fds(c.sock, [struct.pack(">I", len(data)) + data], [r])
            os.write(w, b"x" * 1000)
            time.sleep(1.0)
            t0 = time.monotonic()
            daemon.stop()
            assert time.monotonic() - t0 < 6
    finally:
        os.close(r)
        os.close(w)
    assert "alpsd is stopping" in daemon.read_log()
    daemon.check_log_clean()
    assert store_rows(daemon)["layers"] == 0
