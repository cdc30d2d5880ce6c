"""MPI injection, the image's ld.so.cache and the node's injection cache
(doc/hooks.md), against fake host stacks the tests build with cc: a fake
MPICH (libmpi.so.12) of a compatible and of incompatible ABIs, a
dependency library, the CXI stack of test_hooks; an image with its own
MPICH, glibc's loader and ldconfig, and a program linked against
libmpi.so.12 that says which library it got; and an Alpine-like image with
no ldconfig.  Real alpsd, real registry, real mounts; root only."""
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time

import pytest

import images
import registry_fixture as rf
from test_hooks import _stack

NOBODY = 65534
MULTI = "/usr/lib/x86_64-linux-gnu"
# Outside the loader's default directories: found through the image's
# /etc/ld.so.conf.d and its ld.so.cache, which therefore must keep it.
MPICH = "/opt/mpich/lib"

MPI_C = r'''
const char *pmi_who(void);
const char *mpi_who(void) { return WHO; }
const char *mpi_dep(void) { return pmi_who(); }
'''
MPI_IMG_C = 'const char *mpi_who(void) { return WHO; }\n'
PMI_C = 'const char *pmi_who(void) { return "host-pmi"; }\n'
PROBE_C = r'''
#include <stdio.h>
#include <string.h>
const char *mpi_who(void);
int main(void)
{
	char l[4096];
	printf("mpi=%s\n", mpi_who());
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(l, sizeof(l), f))
		if (strstr(l, "libmpi"))
			fputs(strchr(l, '/'), stdout);
	return 0;
}
'''
FAB_PROBE_C = r'''
#include <stdio.h>
const char *fab_who(void);
int main(void) { printf("fabric=%s\n", fab_who()); return 0; }
'''


# An image's ldconfig that tries to leave its box: change the injected
# libraries, write the image's root, and hand the daemon the host's own
# ld.so.cache (which has glibc's magic) through a link.
EVIL_LDCONFIG = """#!/bin/sh
echo "uid=$(id -u)"
echo x > /opt/alps/lib/libfabric.so.1 || echo "lib: refused"
touch /etc/evil || echo "root: refused"
ln -s /etc/ld.so.cache /run/alps-ldcache/ld.so.cache
exit 0
"""


def _cc(*args):
    subprocess.run(["cc", *args], check=True)


def _mpich(d, who, real, soname="libmpi.so.12", pmi=None):
    """A fake MPICH: real (e.g. libmpi.so.12.5.0) with soname, link soname -> real."""
    os.makedirs(d, exist_ok=True)
    src = os.path.join(d, "mpi.c")
    with open(src, "w") as f:
        f.write(MPI_C if pmi else MPI_IMG_C)
    extra = [f"-L{pmi}", "-l:libpmi.so.0"] if pmi else []
    _cc("-shared", "-fPIC", f'-DWHO="{who}"', f"-Wl,-soname,{soname}", "-o", f"{d}/{real}",
        src, *extra)
    os.unlink(src)
    if real != soname:
        os.symlink(real, f"{d}/{soname}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox", "cc")
    if os.geteuid() != 0:
        pytest.skip("job containers need root")
    if not os.path.exists("/sbin/ldconfig"):
        pytest.skip("no ldconfig on this host to put into the test image")
    w = type("World", (), {})()
    w.dir = str(tmp_path_factory.mktemp("mpiworld"))
    os.chmod(w.dir, 0o755)
    w.host = os.path.join(w.dir, "host")
    _stack(f"{w.host}/lib", "host")
    os.makedirs(f"{w.host}/pmi")
    with open(f"{w.host}/pmi/pmi.c", "w") as f:
        f.write(PMI_C)
    _cc("-shared", "-fPIC", "-Wl,-soname,libpmi.so.0", "-o", f"{w.host}/pmi/libpmi.so.0",
        f"{w.host}/pmi/pmi.c")
    pmi = f"{w.host}/pmi"
    # Cray's naming: the file's own soname is not the image's
    _mpich(f"{w.host}/ok", "host-mpich", "libmpi_gnu_123.so.12.5.0", "libmpi_gnu_123.so.12",
           pmi=pmi)
    _mpich(f"{w.host}/ok", "host-mpicxx", "libmpicxx.so.12.5.0", "libmpicxx.so.12", pmi=pmi)
    _mpich(f"{w.host}/old", "old-mpich", "libmpi.so.12.0.3", pmi=pmi)
    _mpich(f"{w.host}/v13", "v13-mpich", "libmpi.so.13.0.0", "libmpi.so.13", pmi=pmi)
    # The image: busybox, glibc's loader, libc and ldconfig, its own MPICH
    # 12.1.1 (no libmpicxx), probes.
    img = os.path.join(w.dir, "img")
    _mpich(f"{img}{MPICH}", "image-mpich", "libmpi.so.12.1.1")
    os.makedirs(f"{img}/opt", exist_ok=True)
    for name, text, lib in (("mpiprobe", PROBE_C, [f"-L{img}{MPICH}", "-l:libmpi.so.12"]),
                            ("fabprobe", FAB_PROBE_C, [f"-L{w.host}/lib", "-l:libfabric.so.1",
                                                       "-l:libcxi.so.1"])):
        with open(f"{w.dir}/{name}.c", "w") as f:
            f.write(text)
        _cc("-o", f"{img}/opt/{name}", f"{w.dir}/{name}.c", *lib)
    w.registry = rf.Registry(w.dir).start()

    def glibc(root):
        images.busybox_root(root)
        shutil.copytree(img, root, dirs_exist_ok=True, symlinks=True)
        for lib in ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"):
            os.makedirs(os.path.dirname(root + lib), exist_ok=True)
            shutil.copy(os.path.realpath(lib), root + lib)
        os.makedirs(f"{root}/sbin", exist_ok=True)
        shutil.copy("/sbin/ldconfig", f"{root}/sbin/ldconfig")
        os.makedirs(f"{root}/etc/ld.so.conf.d", exist_ok=True)
        with open(f"{root}/etc/ld.so.conf", "w") as f:
            f.write("include /etc/ld.so.conf.d/*.conf\n")
        with open(f"{root}/etc/ld.so.conf.d/mpich.conf", "w") as f:
            f.write(f"# MPICH\n{MPICH}\n")
        subprocess.run(["ldconfig", "-r", root], check=True)

    def alpine(root):
        images.busybox_root(root, 'NAME="Alpine-like"\nID=alpine\n')

    def hostile(root):
        images.busybox_root(root)
        os.makedirs(f"{root}/sbin")
        with open(f"{root}/sbin/ldconfig", "w") as f:
            f.write(EVIL_LDCONFIG)
        os.chmod(f"{root}/sbin/ldconfig", 0o755)

    def slow(root):
        images.busybox_root(root)
        os.makedirs(f"{root}/sbin")
        with open(f"{root}/sbin/ldconfig", "w") as f:
            f.write("#!/bin/sh\nexec sleep 60\n")
        os.chmod(f"{root}/sbin/ldconfig", 0o755)

    w.refs = {}
    for tag, content in (("mpi", glibc), ("musl", alpine), ("evil", hostile), ("slow", slow)):
        layout = rf.build_image(w.dir, tag, [{"etc/base": b"base\n"}],
                                config={"config.env": ["PATH=/bin:/usr/bin:/sbin"]})
        images.umoci_modify(layout, tag, w.dir, content, tag)
        rf.push(layout, tag, w.registry.host, f"test/{tag}", "v1")
        w.refs[tag] = f"{w.registry.host}/test/{tag}:v1"
    yield w
    w.registry.stop()


def _conf(w, mpi_lib):
    return textwrap.dedent(f"""\
        [hooks.cxi]
        libraries = {json.dumps([f"{w.host}/lib/libfabric.so.1", f"{w.host}/lib/libcxi.so.1"])}
        devices = []
        [hooks.mpi]
        libraries = {json.dumps([mpi_lib, f"{w.host}/ok/libmpicxx.so.12"])}
        dependencies = {json.dumps([f"{w.host}/pmi/libpmi.so.0"])}
        env = ["MPICH_GPU_SUPPORT_ENABLED=0"]
        """)


@pytest.fixture(scope="module")
def md(pb, world):
    from conftest import Daemon, unmount_under
    d = tempfile.mkdtemp(prefix="alps-mpi-", dir="/tmp")
    os.chmod(d, 0o755)
    os.makedirs(os.path.join(d, "daemon"))
    dm = Daemon(os.path.join(d, "daemon"),
                _conf(world, f"libmpi.so.12={world.host}/ok/libmpi_gnu_123.so.12"))
    dm.start()
    dm.w, dm.tmp = world, d
    try:
        for ref in world.refs.values():
            dm.alps("pull", "--quiet", ref, check=True)
        yield dm
    finally:
        dm.stop()
        dm.check_log_clean()
        unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def _prepare(d, job, annotations, image="mpi", check=True):
    e = os.path.join(d.tmp, f"{job}.toml")
    with open(e, "w") as f:
        f.write(f'image = "{d.w.refs[image]}"\n[annotations]\n' +
                "".join(f'"com.hooks.{k}.enabled" = "{v}"\n' for k, v in annotations.items()))
    os.chmod(e, 0o644)
    r = d.alps("prepare", "--job", job, "--user", str(NOBODY), "--environment", e)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _exec(d, job, *cmd):
    return d.alps("exec", "--job", job, "--", *cmd, user=NOBODY)


def _release(d, job):
    d.alps("release", "--job", job, check=True)


def _ldconfig_runs(d):
    return d.read_log().count("injection cache: the image's ldconfig ran")


def test_mpi_compatible_injected(md):
    _prepare(md, "m1", {"mpi": "true"})
    try:
        r = _exec(md, "m1", "/opt/mpiprobe")
        lines = r.stdout.splitlines()
        assert lines[0] == "mpi=host-mpich", r.stdout + r.stderr
        # the image's own file, its content the host's (bound over it)
        assert f"{MPICH}/libmpi.so.12.1.1" in lines[1:], r.stdout
        # the dependency is in lib_dir; libmpicxx, absent from the image, is not injected
        r = _exec(md, "m1", "sh", "-c", "ls /opt/alps/lib; echo $MPICH_GPU_SUPPORT_ENABLED; "
                  f"ls {MPICH}")
        assert r.stdout.split() == ["libpmi.so.0", "0", "libmpi.so.12",
                                    "libmpi.so.12.1.1"], r.stdout + r.stderr
    finally:
        _release(md, "m1")


def test_mpi_off_keeps_the_image_library(md):
    for job, ann in (("m2", {"mpi": "false"}), ("m3", {})):
        _prepare(md, job, ann)
        try:
            r = _exec(md, job, "/opt/mpiprobe")
            assert r.stdout.splitlines()[0] == "mpi=image-mpich", r.stdout + r.stderr
        finally:
            _release(md, job)


@pytest.mark.parametrize("lib,why", [
    ("old/libmpi.so.12", "(version 12.0.3, {host}/old/libmpi.so.12.0.3) is not ABI-compatible "
     "with the image's (version 12.1.1, " + MPICH + "/libmpi.so.12.1.1): the host's minor "
     "version is older than the image's"),
    ("libmpi.so.12=HOST/v13/libmpi.so.13", "(version 13.0.0, {host}/v13/libmpi.so.13.0.0) is "
     "not ABI-compatible with the image's (version 12.1.1, " + MPICH + "/libmpi.so.12.1.1): "
     "the major versions differ"),
], ids=["minor", "major"])
def test_mpi_incompatible_refused(world, daemon_factory, lib, why):
    w = world
    entry = lib.replace("HOST", w.host) if "=" in lib else f"{w.host}/{lib}"
    d = daemon_factory(config_text=_conf(w, entry), subdir="bad" + lib[-8:].replace("/", "_"))
    d.alps("pull", "--quiet", w.refs["mpi"], check=True)
    d.w, d.tmp = w, d.dir
    os.chmod(d.dir, 0o755)
    r = _prepare(d, "bad1", {"mpi": "true"}, check=False)
    assert r.returncode != 0
    assert "the mpi hook: the host's libmpi.so.12 " + why.format(host=w.host) in r.stderr, \
        r.stderr
    # nothing left: no cache entry, no job, no namespace
    assert not os.path.exists(os.path.join(d.state_dir, "injcache")) or not any(
        n for _, _, files in os.walk(os.path.join(d.state_dir, "injcache")) for n in files)
    assert "bad1" not in d.alps("jobs", check=True).stdout
    assert not os.path.exists(os.path.join(d.run_dir, "jobs", "bad1"))
    _prepare(d, "bad1", {})
    _release(d, "bad1")


def test_ldcache_regenerated_for_cxi(md):
    """The image's own loader finds the injected libfabric without
    LD_LIBRARY_PATH: through the ld.so.cache the image's ldconfig made."""
    _prepare(md, "c1", {"cxi": "true"})
    try:
        r = _exec(md, "c1", "env", "-u", "LD_LIBRARY_PATH", "/opt/fabprobe")
        assert r.stdout.splitlines() == ["fabric=host+host"], r.stdout + r.stderr
        r = _exec(md, "c1", "sh", "-c", "ldconfig -p | grep libfabric")
        assert "/opt/alps/lib/libfabric.so.1" in r.stdout, r.stdout + r.stderr
    finally:
        _release(md, "c1")


def test_alpine_like_image_without_ldconfig(md):
    _prepare(md, "a1", {"cxi": "true"}, image="musl")
    try:
        r = _exec(md, "a1", "sh", "-c", 'echo "$LD_LIBRARY_PATH"; ls /opt/alps/lib; '
                  "ls /etc/ld.so.cache")
        assert r.stdout.splitlines() == ["/opt/alps/lib", "libcxi.so.1", "libfabric.so.1"], \
            r.stdout + r.stderr
        assert "ld.so.cache" in r.stderr
    finally:
        _release(md, "a1")
    assert "no ld.so.cache for" in md.read_log() and "the image has no ldconfig" in md.read_log()


def test_cache_reused_then_invalidated_then_collected(md):
    both = {"mpi": "true", "cxi": "true"}
    _prepare(md, "r1", both)
    _release(md, "r1")
    runs = _ldconfig_runs(md)
    reused = md.read_log().count("injection cache: reusing")
    _prepare(md, "r2", both)
    try:
        assert _ldconfig_runs(md) == runs, "the second prepare ran ldconfig"
        assert md.read_log().count("injection cache: reusing") == reused + 1
        r = _exec(md, "r2", "env", "-u", "LD_LIBRARY_PATH", "/opt/mpiprobe")
        assert r.stdout.splitlines()[0] == "mpi=host-mpich", r.stdout + r.stderr
    finally:
        _release(md, "r2")
    # a changed host library: a new entry, ldconfig again
    lib = f"{md.w.host}/lib/libcxi.so.1"
    st = os.stat(lib)
    os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    _prepare(md, "r3", both)
    _release(md, "r3")
    assert _ldconfig_runs(md) == runs + 1
    # collected with the image
    cache = os.path.join(md.state_dir, "injcache")
    assert len(os.listdir(cache)) >= 2     # the glibc and the musl image
    md.alps("rm", md.w.refs["musl"], check=True)
    md.alps("rm", md.w.refs["mpi"], check=True)
    assert os.listdir(cache) == []
    for ref in md.w.refs.values():
        md.alps("pull", "--quiet", ref, check=True)


def test_attack_image_ldconfig_stays_in_its_box(md):
    """A hostile image's ldconfig runs as nobody in a read-only tree: the
    node's cached libraries stay the host's, and a link it leaves as its
    ld.so.cache (to the host's own cache) is not followed by the daemon."""
    _prepare(md, "e1", {"cxi": "true"}, image="evil")
    try:
        r = _exec(md, "e1", "sh", "-c", "ls /etc/ld.so.cache /etc/evil; ls /opt/alps/lib")
        assert "/etc/ld.so.cache" in r.stderr and "/etc/evil" in r.stderr, r.stdout + r.stderr
        assert r.stdout.split() == ["libcxi.so.1", "libfabric.so.1"], r.stdout
    finally:
        _release(md, "e1")
    log = md.read_log()
    assert "wrote no glibc ld.so.cache" in log, log[-3000:]
    assert "uid=65534" in log and "lib: refused" in log and "root: refused" in log, log[-3000:]
    with open(f"{md.w.host}/lib/libfabric.so.1.2.3", "rb") as f:
        host = f.read()
    entries = [os.path.join(dp, n) for dp, _, fs in os.walk(os.path.join(md.state_dir, "injcache"))
               for n in fs if n == "libfabric.so.1"]
    assert entries and all(open(e, "rb").read() == host for e in entries)


def test_ldconfig_time_limit(world, daemon_factory):
    w = world
    d = daemon_factory(config_text="[hooks]\nldconfig_timeout = 1\n" +
                       _conf(w, f"{w.host}/old/libmpi.so.12"), subdir="slow")
    d.alps("pull", "--quiet", w.refs["slow"], check=True)
    d.w, d.tmp = w, d.dir
    os.chmod(d.dir, 0o755)
    t0 = time.monotonic()
    r = _prepare(d, "s1", {"cxi": "true"}, image="slow", check=False)
    assert r.returncode != 0 and time.monotonic() - t0 < 15
    assert "the image's ldconfig was killed after its time limit of 1 s " \
           "(hooks.ldconfig_timeout)" in r.stderr, r.stderr
    # nothing left: no entry, no build directory, no namespace of the build
    cache = os.path.join(d.state_dir, "injcache")
    assert not os.path.exists(cache) or all(not os.listdir(os.path.join(cache, x))
                                            for x in os.listdir(cache))
    assert os.listdir(os.path.join(d.run_dir, "jobs")) == []


def test_mpi_image_without_mpich(md, world, daemon_factory):
    """Asked for by the EDF: refused; on by the site's default: the image
    runs, with a warning."""
    r = _prepare(md, "w1", {"mpi": "true"}, image="musl", check=False)
    assert r.returncode != 0
    assert "the mpi hook: the image has no MPICH-ABI library to replace (libmpi.so.12 " \
           "searched in" in r.stderr, r.stderr
    d = daemon_factory(config_text=_conf(world, f"{world.host}/old/libmpi.so.12").replace(
        "[hooks.mpi]\n", "[hooks.mpi]\nenabled = true\n"), subdir="mpidefault")
    d.alps("pull", "--quiet", world.refs["musl"], check=True)
    d.w, d.tmp = world, d.dir
    os.chmod(d.dir, 0o755)
    for job in ("w2", "w3"):        # built, then reused: the warning both times
        r = _prepare(d, job, {}, image="musl")
        assert "found no MPICH-ABI library in the image: nothing replaced" in r.stderr, r.stderr
        _release(d, job)
