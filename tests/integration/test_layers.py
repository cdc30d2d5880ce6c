"""Layers as real tools write them, and hostile layers that cost CPU rather
than bytes, pulled by a real alpsd from a real registry.  The oracle is
`umoci unpack` of the same image, or the kernel reading the layer's
squashfs file."""
import gzip
import io
import json
import os
import shutil
import tarfile

import pytest

import images
import registry_fixture as rf

SPARSE_SIZE = 64 << 30          # apparent size of the hostile sparse file
SPARSE_MID = (32 << 30) + 5     # where its second region is


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo")
    if os.geteuid() != 0:
        pytest.skip("layer tests loop-mount squashfs files: run as root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("layersworld")
    w.registry = rf.Registry(w.dir).start()
    # A directory that becomes a symlink: umoci writes "d -> t" and then
    # whiteouts of d's old entries below the link (d/.wh.x, d/.wh.y).
    w.symlink = rf.build_image(w.dir / "symlink", "base",
                               [{"d/x": b"x\n", "d/y": b"y\n", "t/z": b"z\n"}])

    def dir_to_symlink(root):
        shutil.rmtree(f"{root}/d")
        os.symlink("t", f"{root}/d")

    images.umoci_modify(w.symlink, "base", w.dir, dir_to_symlink, "dir-to-symlink")
    rf.push(w.symlink, "base", w.registry.host, "test/dirlink", "v1")
    w.sparse = rf.build_image(w.dir / "sparse", "base", [{"etc/base": b"base\n"}])
    raw = sparse_tar("big", SPARSE_SIZE, [(0, b"head"), (SPARSE_MID, b"mid")])
    w.sparse_blob = gzip.compress(raw, 9)
    images.append_layer(w.sparse, "base", "sparse", raw, w.sparse_blob)
    rf.push(w.sparse, "sparse", w.registry.host, "test/sparse", "v1")
    yield w
    w.registry.stop()


def sparse_tar(name, size, regions):
    """A tar holding one GNU sparse 1.0 (pax) file, as GNU tar writes it: a
    map of decimal lines, then the data of each region."""
    lines = [str(len(regions))] + [str(v) for off, data in regions for v in (off, len(data))]
    body = ("\n".join(lines) + "\n").encode()
    body += b"\0" * (-len(body) % 512) + b"".join(d for _, d in regions)
    ti = tarfile.TarInfo("GNUSparseFile.0/" + name)
    ti.size = len(body)
    ti.mtime = 1700000000
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                      "GNU.sparse.name": name, "GNU.sparse.realsize": str(size)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


def layer_files(daemon, ref):
    j = json.loads(daemon.alps("--json", "inspect", ref, check=True).stdout)
    return [os.path.join(daemon.state_dir, "layers", l["digest"].replace(":", "-") + ".sqfs")
            for l in j["manifest"]["layers"]]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_dir_becomes_symlink_like_umoci(daemon, world, tmp_path):
    ref = f"{world.registry.host}/test/dirlink:v1"
    r = daemon.alps("pull", ref)
    assert r.returncode == 0, r.stderr      # was: "has a parent 'd' that is not a directory"
    bundle = tmp_path / "bundle"
    rf.run(["umoci", "unpack", "--image", f"{world.symlink.path}:base", str(bundle)])
    want, _ = images.tree(str(bundle / "rootfs"))
    assert want["d"][0] == 0o120000 and want["d"][5] == "t"     # the oracle is sane
    with images.Overlay(layer_files(daemon, ref), str(tmp_path / "ov")) as ov:
        got, _ = images.tree(ov.root)
        # The whiteouts were dropped, not applied through the link.
        assert not os.path.lexists(os.path.join(ov.mounts[1], "t"))
    assert got == want
    assert "dropping whiteout 'd/.wh.x' below a non-directory" in daemon.read_log()


def test_sparse_bomb_costs_no_cpu(daemon, world, tmp_path):
    """Issue 8 #15: a few hundred bytes of gzip claiming a 64 GiB sparse
    file made the daemon push 64 GiB of zeros through the converter."""
    assert len(world.sparse_blob) < 1024
    ref = f"{world.registry.host}/test/sparse:v1"
    before = cpu_seconds(daemon.pid)
    daemon.alps("pull", ref, check=True, timeout=600)
    used = cpu_seconds(daemon.pid) - before
    assert used < 2.0, f"the pull took {used:.1f} s of daemon CPU"
    top = layer_files(daemon, ref)[-1]
    assert os.path.getsize(top) < (1 << 20)
    with images.Overlay([top], str(tmp_path / "ov")) as ov:
        path = os.path.join(ov.root, "big")
        assert os.path.getsize(path) == SPARSE_SIZE
        with open(path, "rb") as f:
            assert os.pread(f.fileno(), 8, 0) == b"head\0\0\0\0"
            assert os.pread(f.fileno(), 4096, 1 << 30) == b"\0" * 4096
            assert os.pread(f.fileno(), 8, SPARSE_MID - 5) == b"\0" * 5 + b"mid"
            assert os.pread(f.fileno(), 4096, SPARSE_MID + 3) == b"\0" * 4096
            assert os.pread(f.fileno(), 4096, SPARSE_SIZE - 4096) == b"\0" * 4096
            assert os.pread(f.fileno(), 10, SPARSE_SIZE) == b""
