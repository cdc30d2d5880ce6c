"""Test images for pulls: built with umoci (every file type, deletions) and
hand-made layers (opaque dirs, hostile tarballs) appended to OCI layouts,
and the tree comparison used as the oracle."""
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile

import registry_fixture as rf


def umoci_modify(layout, tag, workdir, change, name):
    """Unpack tag, call change(rootfs), repack as a new layer of tag."""
    image = f"{layout.path}:{tag}"
    bundle = os.path.join(str(workdir), f"bundle-{name}")
    shutil.rmtree(bundle, ignore_errors=True)
    rf.run(["umoci", "unpack", "--image", image, bundle])
    change(os.path.join(bundle, "rootfs"))
    rf.run(["umoci", "repack", "--image", image, bundle])
    shutil.rmtree(bundle, ignore_errors=True)


def rich_base(root):
    """A layer with every file type and attribute the converter keeps."""
    os.makedirs(f"{root}/etc/deep/er/still", exist_ok=True)
    with open(f"{root}/etc/os-release", "w") as f:
        f.write('NAME="alps test"\nID=alpstest\n')
    with open(f"{root}/etc/deep/er/still/file", "wb") as f:
        f.write(b"x" * 70000)
    os.symlink("os-release", f"{root}/etc/link-rel")
    os.symlink("/etc/os-release", f"{root}/etc/link-abs")
    os.symlink("../../nowhere/../../../etc/shadow", f"{root}/etc/link-out")
    with open(f"{root}/etc/hard1", "w") as f:
        f.write("hard\n")
    os.link(f"{root}/etc/hard1", f"{root}/etc/hard2")
    os.link(f"{root}/etc/hard1", f"{root}/etc/deep/hard3")
    os.mkfifo(f"{root}/etc/fifo")
    os.mknod(f"{root}/etc/null-copy", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(f"{root}/etc/blockdev", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    with open(f"{root}/etc/setuid", "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(f"{root}/etc/setuid", 0o4755)
    os.makedirs(f"{root}/tmp", exist_ok=True)
    os.chmod(f"{root}/tmp", 0o1777)
    os.makedirs(f"{root}/srv/owned", exist_ok=True)
    with open(f"{root}/srv/owned/f", "w") as f:
        f.write("owned\n")
    os.chown(f"{root}/srv/owned", 1234, 5678)
    os.chown(f"{root}/srv/owned/f", 4321, 8765)
    os.utime(f"{root}/srv/owned/f", (1000000000, 1000000000))
    with open(f"{root}/srv/sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"middle")
    with open(f"{root}/srv/xattr", "w") as f:
        f.write("x\n")
    os.setxattr(f"{root}/srv/xattr", "user.alps", b"value")
    long = "n" * 200
    os.makedirs(f"{root}/srv/{long}/{long}", exist_ok=True)
    with open(f"{root}/srv/{long}/{long}/{long}", "w") as f:
        f.write("long\n")
    os.makedirs(f"{root}/data/keep", exist_ok=True)
    for i in range(50):
        with open(f"{root}/data/keep/f{i}", "w") as f:
            f.write(str(i))
    os.makedirs(f"{root}/data/gone", exist_ok=True)
    with open(f"{root}/data/gone/x", "w") as f:
        f.write("x")


def rich_change(root):
    """A second layer: deletions (whiteouts), replacements, new files."""
    os.unlink(f"{root}/etc/hard2")
    shutil.rmtree(f"{root}/data/gone")
    os.unlink(f"{root}/etc/link-rel")
    with open(f"{root}/etc/link-rel", "w") as f:
        f.write("now a file\n")
    os.chmod(f"{root}/etc/os-release", 0o600)
    with open(f"{root}/data/keep/new", "w") as f:
        f.write("new\n")


def tar_layer(entries, compress="gzip"):
    """A layer tarball from entries: (name, kind, data/target, extra dict)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, payload, extra in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            ti.mode = extra.get("mode", 0o644 if kind == "file" else 0o755)
            if kind == "file":
                ti.size = len(payload)
                t.addfile(ti, io.BytesIO(payload))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                       "hardlink": tarfile.LNKTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                ti.linkname = payload
            t.addfile(ti)
    raw = buf.getvalue()
    return raw, (gzip.compress(raw, 6) if compress == "gzip" else raw)


def append_layer(layout, tag, new_tag, raw, blob,
                 media="application/vnd.oci.image.layer.v1.tar+gzip"):
    """Append a hand-made layer (raw tar, compressed blob) to tag as new_tag."""
    m = layout.manifest(tag)
    cfg = json.loads(layout.blob(m["config"]["digest"]))
    cfg["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(raw).hexdigest())
    cfg.setdefault("history", []).append({"created_by": "alps test"})
    cdata = json.dumps(cfg).encode()
    m["config"] = {"mediaType": m["config"]["mediaType"], "digest": layout.write_blob(cdata),
                   "size": len(cdata)}
    m["layers"].append({"mediaType": media, "digest": layout.write_blob(blob),
                        "size": len(blob)})
    mdata = json.dumps(m).encode()
    mdigest = layout.write_blob(mdata)
    idx = layout.index()
    idx["manifests"] = [e for e in idx["manifests"] if e.get("annotations", {}).get(
        "org.opencontainers.image.ref.name") != new_tag]
    idx["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                             "digest": mdigest, "size": len(mdata),
                             "annotations": {"org.opencontainers.image.ref.name": new_tag}})
    with open(os.path.join(layout.path, "index.json"), "w") as f:
        json.dump(idx, f)
    return mdigest


def tree(root):
    """{path: (type, mode, uid, gid, size, sha256|target|rdev, xattrs)} and
    hard-link groups, for comparing two trees."""
    out, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            what = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what = (os.major(st.st_rdev), os.minor(st.st_rdev))
            try:
                xattrs = {k: os.getxattr(p, k, follow_symlinks=False)
                          for k in os.listxattr(p, follow_symlinks=False) if k.startswith("user.")}
            except OSError:
                xattrs = {}
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            mtime = int(st.st_mtime) if not stat.S_ISDIR(st.st_mode) else None
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, what,
                        xattrs, mtime)
    groups = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out, groups


class Overlay:
    """The image as a container sees it: its layer squashfs files
    loop-mounted read-only and stacked with overlayfs."""

    def __init__(self, layer_files, workdir):
        self.dir = workdir
        self.mounts = []
        lowers = []
        for i, f in enumerate(layer_files):
            mp = os.path.join(workdir, f"l{i}")
            os.makedirs(mp)
            subprocess.run(["mount", "-t", "squashfs", "-o", "loop,ro", f, mp], check=True)
            self.mounts.append(mp)
            lowers.append(mp)
        self.root = os.path.join(workdir, "root")
        os.makedirs(self.root)
        if len(lowers) == 1:
            subprocess.run(["mount", "--bind", lowers[0], self.root], check=True)
        else:
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            "ro,lowerdir=" + ":".join(reversed(lowers)), self.root], check=True)
        self.mounts.append(self.root)

    def close(self):
        for mp in reversed(self.mounts):
            subprocess.run(["umount", mp], check=False)
        self.mounts = []

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


BUSYBOX_APPLETS = ("sh", "cat", "id", "ls", "touch", "env", "pwd", "echo", "sleep", "mount",
                   "stat", "test", "true", "false", "rm", "mkdir", "kill", "grep", "wc")


def busybox_root(root, os_release='NAME="alps busybox"\nID=alpsbb\n'):
    """A minimal runnable image: Debian's static busybox and its applets."""
    os.makedirs(f"{root}/bin", exist_ok=True)
    shutil.copy("/usr/bin/busybox", f"{root}/bin/busybox")
    os.chmod(f"{root}/bin/busybox", 0o755)
    for a in BUSYBOX_APPLETS:
        if not os.path.exists(f"{root}/bin/{a}"):
            os.symlink("busybox", f"{root}/bin/{a}")
    for d in ("etc", "tmp", "proc", "sys", "dev", "home", "root", "usr/bin"):
        os.makedirs(f"{root}/{d}", exist_ok=True)
    os.chmod(f"{root}/tmp", 0o1777)
    with open(f"{root}/etc/os-release", "w") as f:
        f.write(os_release)
    with open(f"{root}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(f"{root}/etc/group", "w") as f:
        f.write("root:x:0:\n")
