"""alps export: an image as one squashfs file.  The oracle is the kernel:
the image's layer files stacked with overlayfs, as a job sees them, against
the exported file loop-mounted; Debian's unsquashfs reads it too.  The
image has a whiteout, an opaque directory, a directory replaced by a file,
hard links, compressible and incompressible data, a file's tail in a
fragment, and an empty file."""
import base64
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import pytest

import images
import registry_fixture as rf

PASSWORD = "exp0rt-pw"


def rand_bytes(n, seed):
    return random.Random(seed).randbytes(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory, users):
    rf.require_tools("docker-registry", "umoci", "skopeo", "unsquashfs")
    if os.geteuid() != 0:
        pytest.skip("export tests loop-mount squashfs files: run as root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("exportworld")
    os.chmod(w.dir, 0o755)
    pw = rf.htpasswd_file(w.dir, {"victim": PASSWORD})
    w.registry = rf.Registry(w.dir, htpasswd=pw, name="exportreg").start()
    text = b"".join(b"line %d of a compressible file\n" % i for i in range(20000))
    w.layout = rf.build_image(w.dir, "base", [{
        "etc/a": b"a\n", "etc/b": b"b\n", "keep/x": b"x\n",
        "opq/old1": b"old1\n", "opq/sub/old2": b"old2\n",
        "big/random": rand_bytes(300 * 1024 + 77, 1), "big/text": text,
        "dir2/f": b"f\n", "gone/deep/file": b"deep\n",
    }])
    raw, blob = images.tar_layer([
        ("etc/.wh.a", "file", b"", {}),                 # whiteout
        ("opq/", "dir", None, {}),
        ("opq/.wh..wh..opq", "file", b"", {}),          # opaque directory
        ("opq/new", "file", b"new\n", {}),
        ("dir2", "file", b"dir2 is a file now\n", {}),  # over a directory
        ("gone/.wh.deep", "file", b"", {}),             # a whole subtree
        ("keep/y", "file", rand_bytes(5000, 2), {}),
        ("keep/empty", "file", b"", {}),
        ("hl/one", "file", rand_bytes(200 * 1024, 3), {}),
        ("hl/two", "hardlink", "hl/one", {}),
        ("hl/sym", "symlink", "one", {}),
    ])
    images.append_layer(w.layout, "base", "top", raw, blob)
    raw, blob = images.tar_layer([
        ("etc/a", "file", b"a is back\n", {}),          # over a whiteout
        ("hl/two", "file", b"no longer a link\n", {}),
    ])
    images.append_layer(w.layout, "top", "top2", raw, blob)
    rf.push(w.layout, "top2", w.registry.host, "victim/app", "v1", creds=f"victim:{PASSWORD}")
    w.ref = f"{w.registry.host}/victim/app:v1"
    cfg = os.path.join(users.victim.home, ".docker")
    os.makedirs(cfg, exist_ok=True)
    auth = base64.b64encode(f"victim:{PASSWORD}".encode()).decode()
    with open(os.path.join(cfg, "config.json"), "w") as f:
        json.dump({"auths": {w.registry.host: {"auth": auth}}}, f)
    subprocess.run(["chown", "-R", f"{users.victim.uid}:{users.victim.gid}", cfg], check=True)
    yield w
    w.registry.stop()


def alps_as(daemon, user, *args):
    alps = os.path.join(os.path.dirname(daemon.argv()[0]), "alps")
    return user.run([alps, "--socket", daemon.socket] + list(args))


@pytest.fixture(scope="module")
def pulled(world, users, pb):
    """One daemon for the module, with the victim's private image pulled by
    the victim (a daemon and a pull per test cost seconds each)."""
    import conftest
    d = tempfile.mkdtemp(prefix="alps-", dir="/tmp")
    os.chmod(d, 0o755)
    dm = conftest.Daemon(d)
    dm.start()
    try:
        r = alps_as(dm, users.victim, "pull", "--quiet", world.ref)
        assert r.returncode == 0, r.stderr
        yield dm
        assert dm.stop() == 0, dm.read_log()[-4000:]
        dm.check_log_clean()
    finally:
        dm.stop()
        conftest.unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def layer_files(daemon, ref):
    j = json.loads(daemon.alps("--json", "inspect", ref, check=True).stdout)
    return [l["file"] for l in j["layers"]]


def mounted_tree(sqsh, mp):
    os.makedirs(mp)
    subprocess.run(["mount", "-t", "squashfs", "-o", "loop,ro", sqsh, mp], check=True)
    try:
        got = images.tree(mp)
        try:
            opaque = os.listxattr(os.path.join(mp, "opq"))
        except OSError:         # EOPNOTSUPP: the file has no xattrs at all
            opaque = []
    finally:
        subprocess.run(["umount", mp], check=True)
    return got, opaque


def export_as(daemon, user, ref, out, *opts):
    r = alps_as(daemon, user, "--json", "export", *opts, ref, out)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def check_tree(daemon, world, tmp_path, out):
    os.makedirs(tmp_path)
    with images.Overlay(layer_files(daemon, world.ref), str(tmp_path / "ov")) as ov:
        want = images.tree(ov.root)
    got, opaque = mounted_tree(out, str(tmp_path / "mnt"))
    assert got == want
    names = want[0]
    # The oracle is sane: the whiteouts and the opaque directory acted.
    assert "etc/b" in names and names["etc/a"][4] == len(b"a is back\n")
    assert "opq/old1" not in names and "opq/sub" not in names and "opq/new" in names
    assert "gone/deep" not in names and "gone" in names
    assert names["dir2"][0] == 0o100000
    assert not any(".wh." in n for n in names)
    assert not any(k.startswith("trusted.overlay.") for k in opaque)
    ls = subprocess.run(["unsquashfs", "-lls", out], capture_output=True, text=True, check=True)
    assert "squashfs-root/opq/new" in ls.stdout and ".wh." not in ls.stdout
    assert "squashfs-root/opq/old1" not in ls.stdout


def test_export_equals_the_overlay_copied_or_recompressed(pulled, world, users, tmp_path):
    """One daemon and pull for the three ways (a pull costs seconds)."""
    out = os.path.join(users.victim.home, "copy.sqsh")
    j = export_as(pulled, users.victim, world.ref, out)
    assert j["ok"] and j["layer_count"] == 3
    assert j["blocks_copied"] > 0 and j["blocks_recompressed"] == 0, j
    st = os.stat(out)
    assert st.st_uid == users.victim.uid and st.st_size == j["bytes"]
    assert st.st_mode & 0o777 == 0o644
    check_tree(pulled, world, tmp_path / "copy", out)
    for name, opts in (("re", ("--recompress",)), ("gz", ("--compressor", "gzip"))):
        out = os.path.join(users.victim.home, f"{name}.sqsh")
        j = export_as(pulled, users.victim, world.ref, out, *opts)
        assert j["blocks_copied"] == 0 and j["blocks_recompressed"] > 0, j
        check_tree(pulled, world, tmp_path / name, out)
    assert j["compressor"] == "gzip"
    sb = subprocess.run(["unsquashfs", "-s", out], capture_output=True, text=True)
    assert "Compression gzip" in sb.stdout


def test_refusals(pulled, world, users, tmp_path):
    """Another user's private image (by name and by digest), an existing
    file, and output fds the daemon must not write."""
    digest = json.loads(pulled.alps("--json", "inspect", world.ref, check=True).stdout)["digest"]
    for what in (world.ref, digest):
        out = os.path.join(users.attacker.home, "stolen.sqsh")
        r = alps_as(pulled, users.attacker, "export", what, out)
        assert r.returncode != 0
        assert "not found" in r.stderr.lower() or "no such image" in r.stderr.lower(), r.stderr
        assert not os.path.exists(out), "the failed export left its file"
    out = os.path.join(users.victim.home, "exists.sqsh")
    with open(out, "w") as f:
        f.write("mine\n")
    os.chown(out, users.victim.uid, users.victim.gid)
    r = alps_as(pulled, users.victim, "export", world.ref, out)
    assert r.returncode != 0 and "exists" in r.stderr, r.stderr
    with open(out) as f:
        assert f.read() == "mine\n"
    for kind in ("nonempty", "writeonly", "directory", "append", "proc", "notmine"):
        bad_output_fd(pulled, world, tmp_path / kind, kind)


def raw_export(daemon, fd, ref):
    """An ExportRequest with fd, straight on the socket (any fd at all)."""
    import alpsclient
    pb = alpsclient.load_proto(os.environ.get("ALPS_SRCDIR", "."))
    req = pb.Request(id=7)
    req.export.reference = ref
    payload = req.SerializeToString()
    with alpsclient.Conn(daemon.socket, timeout=60) as c:
        socket.send_fds(c.sock, [struct.pack(">I", len(payload)) + payload], [fd])
        while True:
            resp = c.recv()
            if resp is None or resp.final:
                return resp


def bad_output_fd(daemon, world, d, kind):
    os.makedirs(d)
    path = str(d / "f")
    if kind == "directory":
        fd = os.open(str(d), os.O_RDONLY | os.O_DIRECTORY)
    elif kind == "proc":        # regular, empty, writable: but a kernel interface
        fd = os.open("/proc/self/comm", os.O_RDWR)
    elif kind == "notmine":
        with open(path, "wb"):
            pass
        os.chown(path, 12345, 12345)
        fd = os.open(path, os.O_RDWR)
    else:
        with open(path, "wb") as f:
            f.write(b"keep me" if kind == "nonempty" else b"")
        flags = {"writeonly": os.O_WRONLY, "append": os.O_RDWR | os.O_APPEND}
        fd = os.open(path, flags.get(kind, os.O_RDWR))
    try:
        resp = raw_export(daemon, fd, world.ref)
    finally:
        os.close(fd)
    assert resp is not None and resp.status != 0
    assert {"nonempty": "not empty", "writeonly": "reading and writing",
            "append": "not appending", "directory": "not a regular file",
            "proc": "kernel interface", "notmine": "not to you"}[kind] in resp.message
    if kind not in ("directory", "proc"):
        with open(path, "rb") as f:
            assert f.read() == (b"keep me" if kind == "nonempty" else b"")


def importer_binary(daemon):
    return os.path.join(os.path.dirname(daemon.argv()[0]), "client", "importer", "alps-importer")


def pyxis_call(daemon, user, rt, args, job="4242", step="0", uid=None, wait=True):
    """Run alps-importer as pyxis's importer_exec() does: as the job's user
    (its own groups), stdin /dev/null, stdout a pipe for the path, stderr
    the log, the step's environment, in slurmstepd's directory."""
    env = {"PATH": "/usr/bin:/bin", "HOME": user.home, "USER": user.name,
           "PYXIS_RUNTIME_PATH": rt, "PYXIS_VERSION": "0.21.0",
           "SLURM_JOB_UID": str(user.uid if uid is None else uid), "SLURM_JOB_ID": job,
           "SLURM_STEP_ID": step, "SLURM_JOB_GID": str(user.gid),
           "ENROOT_RUNTIME_PATH": "/run/enroot/user-" + str(user.uid),
           "ALPS_SOCKET": daemon.socket,
           "ALPS_CLIENT": os.path.join(os.path.dirname(daemon.argv()[0]), "alps")}
    argv = [importer_binary(daemon)] + list(args)
    kw = dict(user=user.uid, group=user.gid, extra_groups=[], env=env, cwd="/",
              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
              text=True)
    if not wait:
        return subprocess.Popen(argv, **kw)
    return subprocess.run(argv, timeout=120, **kw)


@pytest.fixture
def pyxis_rt():
    """Where pyxis's runtime_path goes (pytest's tmp_path is root's 0700)."""
    top = tempfile.mkdtemp(prefix="alps-pyxis-")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def pyxis_runtime(top, user):
    """runtime_path as pyxis's slurmd makes it (0755, root's), and the
    user's directory as its slurmstepd does (0700, chowned)."""
    rt = os.path.join(top, "pyxis")
    os.mkdir(rt, 0o755)
    d = os.path.join(rt, str(user.uid))
    os.mkdir(d, 0o700)
    os.chown(d, user.uid, user.gid)
    return rt, d


def test_importer_as_pyxis_calls_it(pulled, world, users, pyxis_rt):
    v = users.victim
    rt, d = pyxis_runtime(pyxis_rt, v)
    host, repo = world.ref.split("/", 1)
    r = pyxis_call(pulled, v, rt, ["get", f"docker://{host}#{repo}"])
    assert r.returncode == 0, r.stderr
    path = os.path.join(d, "alps-4242.0.sqsh")
    assert r.stdout == path + "\n"
    st = os.stat(path)
    assert st.st_uid == v.uid and st.st_size > 0
    ls = subprocess.run(["unsquashfs", "-l", path], capture_output=True, text=True, check=True)
    assert "squashfs-root/opq/new" in ls.stdout and "squashfs-root/opq/old1" not in ls.stdout
    # release twice (after enroot create, at task cleanup): both succeed.
    for _ in range(2):
        r = pyxis_call(pulled, v, rt, ["release"])
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(path)
    # get SIGKILLed part way, then release: nothing stays, nothing comes back.
    p = pyxis_call(pulled, v, rt, ["get", f"docker://{world.ref}"], step="1", wait=False)
    time.sleep(0.3)
    p.kill()
    p.communicate()
    r = pyxis_call(pulled, v, rt, ["release"], step="1")
    assert r.returncode == 0, r.stderr
    time.sleep(1.0)
    assert os.listdir(d) == []
    # Another user's step, or a uid the importer does not run as: refused.
    r = pyxis_call(pulled, users.attacker, rt, ["release"], uid=v.uid)
    assert r.returncode != 0 and "SLURM_JOB_UID" in r.stderr
    r = pyxis_call(pulled, v, rt, ["get", "podman://ubuntu"])
    assert r.returncode != 0 and "unsupported image URI" in r.stderr


def test_export_obeys_the_file_systems_reserve(pulled, world, users, tmpdir_short):
    """alpsd writes the user's file as root: the space ext4 keeps for root
    (and a quota) must still bind it, as they bind the user writing it."""
    img = os.path.join(tmpdir_short, "fs.img")
    mp = os.path.join(tmpdir_short, "fs")
    with open(img, "wb") as f:
        f.truncate(4 << 20)
    rf.run(["mkfs.ext4", "-q", "-b", "1024", "-m", "50", "-N", "64", "-O", "^has_journal", img])
    os.makedirs(mp)
    subprocess.run(["mount", "-o", "loop", img, mp], check=True)
    try:
        d = os.path.join(mp, "u")
        os.mkdir(d)
        os.chown(d, users.victim.uid, users.victim.gid)
        # The user fills what is theirs; 2 MiB stay reserved for root.
        users.victim.run(["dd", "if=/dev/zero", f"of={d}/fill", "bs=64k"])
        sv = os.statvfs(mp)
        assert sv.f_bavail * sv.f_frsize < 64 << 10 and sv.f_bfree * sv.f_frsize > 1 << 20
        out = os.path.join(d, "big.sqsh")
        r = alps_as(pulled, users.victim, "export", world.ref, out)
        assert r.returncode != 0, "the export wrote into root's reserve"
        assert "No space left" in r.stderr, r.stderr
        assert not os.path.exists(out)
    finally:
        subprocess.run(["umount", mp], check=True)
