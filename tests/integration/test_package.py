"""The Debian packages: build them from the source tree with
dpkg-buildpackage, install them with dpkg -i, check the binaries, paths and
the conffile, then purge them and check nothing of theirs is left."""
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import SRCDIR

PKGS = ("alpsd", "alps", "alps-slurm")


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def installed(pkg):
    r = run(["dpkg-query", "-W", "-f=${Status}", pkg])
    return r.returncode == 0 and "install ok installed" in r.stdout


def source_copy(dst):
    """The tree as a clean checkout has it: tracked files (and new, not
    ignored ones while developing), never a build directory."""
    if os.path.isdir(os.path.join(SRCDIR, ".git")) or os.path.isfile(os.path.join(SRCDIR, ".git")):
        files = run(["git", "-C", SRCDIR, "ls-files", "-co", "--exclude-standard", "-z"],
                    check=True).stdout.split("\0")
        for rel in filter(None, files):
            src = os.path.join(SRCDIR, rel)
            if not os.path.isfile(src):
                continue
            os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel), follow_symlinks=False)
    else:
        shutil.copytree(SRCDIR, dst, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns("build*", "*.o", ".deps"))


@pytest.fixture(scope="module")
def debs():
    if os.geteuid() != 0:
        pytest.skip("installing packages needs root")
    if not shutil.which("dpkg-buildpackage") or not shutil.which("dh"):
        pytest.skip("dpkg-dev/debhelper not installed (tests/deps.sh installs them)")
    for p in PKGS:
        if installed(p):
            pytest.skip(f"{p} is installed on this machine; not touching it")
    top = tempfile.mkdtemp(prefix="alps-pkg-")
    tree = os.path.join(top, "alps")
    os.makedirs(tree)
    source_copy(tree)
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=tree,
            env=dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2"), timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    made = {p: os.path.join(top, f"{p}_0.1.0_amd64.deb") for p in PKGS}
    for p, path in made.items():
        assert os.path.exists(path), f"{p} package not built: {os.listdir(top)}"
    yield made
    run(["dpkg", "--purge"] + list(PKGS))
    shutil.rmtree(top, ignore_errors=True)


def dpkg(args, wait=120):
    """dpkg, waiting while another package manager holds its lock (an
    apt-get of the test run's own dependencies may still be finishing)."""
    import time
    deadline = time.monotonic() + wait
    while True:
        r = run(["dpkg"] + args, timeout=300)
        if r.returncode == 0 or "lock" not in r.stderr or time.monotonic() > deadline:
            return r
        time.sleep(2)


def contents(deb):
    out = run(["dpkg-deb", "-c", deb], check=True).stdout
    return {line.split()[-1].lstrip(".") for line in out.splitlines()}


def test_packages_hold_what_they_should(debs):
    d = contents(debs["alpsd"])
    for f in ("/usr/sbin/alpsd", "/lib/systemd/system/alpsd.service",
              "/lib/systemd/system/alpsd.socket", "/usr/lib/tmpfiles.d/alps.conf",
              "/etc/alps/alpsd.conf", "/usr/share/man/man8/alpsd.8.gz",
              "/usr/share/man/man5/alpsd.conf.5.gz"):
        assert f in d, f"{f} missing from alpsd: {sorted(d)}"
    c = contents(debs["alps"])
    for f in ("/usr/bin/alps", "/usr/share/man/man1/alps.1.gz"):
        assert f in c, f"{f} missing from alps: {sorted(c)}"
    s = contents(debs["alps-slurm"])
    assert any(f.endswith("/alps/alps_spank.so") for f in s), sorted(s)
    for f in ("/usr/libexec/alps/slurm-prolog", "/usr/libexec/alps/slurm-epilog"):
        assert f in s, f"{f} missing from alps-slurm: {sorted(s)}"
    conff = run(["dpkg-deb", "-f", debs["alpsd"], "Conffiles"]).stdout
    ctrl = run(["dpkg-deb", "-I", debs["alpsd"], "conffiles"]).stdout
    assert "/etc/alps/alpsd.conf" in conff + ctrl


def test_install_check_purge(debs):
    created = [p for p in ("/run/alps", "/var/lib/alps") if not os.path.exists(p)]
    try:
        r = dpkg(["-i", debs["alpsd"], debs["alps"], debs["alps-slurm"]])
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(installed(p) for p in PKGS)
        v = run(["/usr/sbin/alpsd", "--version"])
        assert v.returncode == 0 and "0.1.0" in v.stdout + v.stderr
        v = run(["/usr/bin/alps", "--version"])
        assert v.returncode == 0 and "0.1.0" in v.stdout + v.stderr
        # The runtime paths the units and tmpfiles use, whatever the prefix.
        assert "/run/alps/alpsd.sock" in run(["/usr/bin/alps", "--help"]).stdout
        cfg = run(["/usr/sbin/alpsd", "--print-config", "--config", "/etc/alps/alpsd.conf"])
        assert cfg.returncode == 0, cfg.stderr
        assert 'state_dir = "/var/lib/alps"' in cfg.stdout
        assert 'socket = "/run/alps/alpsd.sock"' in cfg.stdout
        unit = open("/lib/systemd/system/alpsd.service").read()
        assert "ExecStart=/usr/sbin/alpsd" in unit
        # Without a daemon the client names the socket it tried.
        r = run(["/usr/bin/alps", "status"], env=dict(os.environ, ALPS_SOCKET=""))
        assert r.returncode == 3 and "/run/alps/alpsd.sock" in r.stderr
    finally:
        r = dpkg(["--purge"] + list(PKGS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not any(installed(p) for p in PKGS)
    for f in ("/usr/sbin/alpsd", "/usr/bin/alps", "/etc/alps/alpsd.conf",
              "/lib/systemd/system/alpsd.service", "/usr/libexec/alps/slurm-prolog"):
        assert not os.path.exists(f), f"{f} left after purge"
    for p in created:
        subprocess.run(["rm", "-rf", "--one-file-system", p])
