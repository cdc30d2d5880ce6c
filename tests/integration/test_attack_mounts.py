"""Attacks on the job namespace builder by an unprivileged user (issue 8,
items 1, 13, 14 and the tmpfs sizes).  Root runs alpsd; users.attacker
writes the EDF and runs `alps run`, or root prepares the attacker's EDF the
way the Slurm prolog would.  Each attack asserts that it failed with a
precise error and changed nothing on the host."""
import json
import os
import re

import pytest

import images
import registry_fixture as rf
from conftest import binary, mounts_under

SECRET_ENV = "ALPS_TEST_SECRET"
SECRET_VALUE = "s3cr3t-proxy-password-4711"
NOBODY = 65534


def add_df(root):
    images.busybox_root(root)
    os.symlink("busybox", f"{root}/bin/df")


def root_only_sysfs_file():
    """A root-only (0400) sysfs file with some content, whatever the kernel."""
    for top in ("/sys/kernel/slab", "/sys/kernel", "/sys/module"):
        for dirpath, _, files in os.walk(top):
            for name in sorted(files):
                p = os.path.join(dirpath, name)
                try:
                    st = os.stat(p)
                    if (st.st_mode & 0o777) != 0o400 or st.st_uid != 0:
                        continue
                    with open(p) as f:
                        text = f.read().strip()
                except OSError:
                    continue
                if len(text) >= 2:
                    return p
    pytest.skip("no root-only sysfs file with content on this kernel")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    if os.geteuid() != 0:
        pytest.skip("job containers need root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("attackworld")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    layout = rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}],
                            config={"config.env": ["PATH=/bin:/usr/bin"]})
    images.umoci_modify(layout, "bb", w.dir, add_df, "bb")
    rf.push(layout, "bb", w.registry.host, "test/bb", "v1")
    w.ref = f"{w.registry.host}/test/bb:v1"
    # Hostile images: /etc/passwd (or /etc/group) a link to a root-only
    # sysfs file, which is the host's once /sys is mounted in the root.
    w.sysfs_file = root_only_sysfs_file()
    w.evil = {}
    for which in ("passwd", "group"):
        def evil(root, which=which):
            images.busybox_root(root)
            os.unlink(f"{root}/etc/{which}")
            os.symlink(w.sysfs_file, f"{root}/etc/{which}")
        images.umoci_modify(layout, "bb", w.dir, evil, f"evil-{which}")
        rf.push(layout, "bb", w.registry.host, f"test/evil-{which}", "v1")
        w.evil[which] = f"{w.registry.host}/test/evil-{which}:v1"
        # the next image starts from the original again
        rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}], layout=layout)
        images.umoci_modify(layout, "bb", w.dir, add_df, f"bb-again-{which}")
    yield w
    w.registry.stop()


@pytest.fixture
def jd(daemon_factory, world):
    d = daemon_factory(env={SECRET_ENV: SECRET_VALUE})
    d.alps("pull", "--quiet", world.ref, check=True)
    return d


def snapshot(top):
    """Every entry below top (not following links): path -> (mode, uid, target)."""
    out = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            target = os.readlink(p) if os.path.islink(p) else None
            out[p] = (st.st_mode, st.st_uid, target)
    return out


@pytest.fixture
def hostdir(tmpdir_short):
    """A root-owned directory the attacker can read, with a 0700 root-only
    directory and a root-owned dangling symlink in it."""
    pub = os.path.join(tmpdir_short, "pub")
    os.makedirs(os.path.join(pub, "secret"))
    os.chmod(pub, 0o755)
    os.chmod(os.path.join(pub, "secret"), 0o700)
    os.symlink("/nonexistent-alps-target", os.path.join(pub, "dangle"))
    return pub


def attacker_edf(users, tmpdir_short, name, text):
    d = os.path.join(tmpdir_short, "edf")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, users.attacker.uid, users.attacker.gid)
    os.chmod(path, 0o644)
    return path


def attacker_sqsh(users, tmpdir_short, good):
    """A squashfs file of the attacker's (or a file that is not one)."""
    d = os.path.join(tmpdir_short, "edf")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    path = os.path.join(d, "tools.sqsh" if good else "bad.sqsh")
    if good:
        src = os.path.join(tmpdir_short, "sqsh-src")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "marker"), "w") as f:
            f.write("sqsh\n")
        rf.run(["mksquashfs", src, path, "-quiet", "-noappend", "-all-root"])
    else:
        with open(path, "w") as f:
            f.write("not a squashfs file\n")
    os.chown(path, users.attacker.uid, users.attacker.gid)
    os.chmod(path, 0o644)
    return path


def mounts_edf(ref, mounts):
    return f'image = "{ref}"\nmounts = [{", ".join(json.dumps(m) for m in mounts)}]\n'


def alps_as(d, user, *args):
    return user.run([binary("alps"), "--socket", d.socket] + list(args), timeout=120)


# Each attack: the mounts after a bind of the host directory ({pub}), and
# the destination that must be named in the error.
ATTACKS = {
    "file-in-host-dir": (["{pub}:/h", "/etc/hostname:/h/created"], "/h/created"),
    "dirs-in-host-dir": (["{pub}:/h", "/tmp:/h/new/sub"], "/h/new/sub"),
    "file-in-root-only-dir": (["{pub}:/h", "/etc/hostname:/h/secret/created"],
                              "/h/secret/created"),
    "replace-dangling-link": (["{pub}:/h", "/etc/hostname:/h/dangle"], "/h/dangle"),
    "anywhere-through-slash": (["/:/host", "/etc/hostname:/host{pub}/viaroot"],
                               "/host{pub}/viaroot"),
    "failed-sqsh": (["{pub}:/h", "{bad}:/h/sq/dir:sqsh"], "/h/sq/dir"),
    "good-sqsh": (["{pub}:/h", "{good}:/h/sq/dir:sqsh"], "/h/sq/dir"),
}


def check_nothing_changed(jd, hostdir, before, r, dst):
    print(r.stderr)
    assert r.returncode != 0, r.stdout + r.stderr
    assert snapshot(hostdir) == before, "the host directory changed"
    assert os.path.islink(os.path.join(hostdir, "dangle"))
    assert dst in r.stderr, r.stderr
    assert json.loads(jd.alps("--json", "jobs", check=True).stdout)["jobs"] == []
    assert mounts_under(jd.run_dir + "/jobs") == []


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_no_mount_point_created_on_the_host_via_run(jd, world, users, tmpdir_short, hostdir,
                                                     attack):
    mounts, dst = ATTACKS[attack]
    fill = {"pub": hostdir, "bad": "", "good": ""}
    if "sqsh" in attack:
        fill["bad"] = attacker_sqsh(users, tmpdir_short, False)
        fill["good"] = attacker_sqsh(users, tmpdir_short, True)
    mounts = [m.format(**fill) for m in mounts]
    dst = dst.format(**fill)
    e = attacker_edf(users, tmpdir_short, "attack.toml", mounts_edf(world.ref, mounts))
    before = snapshot(hostdir)
    r = alps_as(jd, users.attacker, "run", "--environment", e, "--", "true")
    check_nothing_changed(jd, hostdir, before, r, dst)
    if attack != "file-in-root-only-dir":
        assert "own file system" in r.stderr, r.stderr


@pytest.mark.parametrize("attack", ["file-in-host-dir", "replace-dangling-link",
                                    "anywhere-through-slash"])
def test_no_mount_point_created_on_the_host_via_prolog(jd, world, users, tmpdir_short, hostdir,
                                                        attack):
    mounts, dst = ATTACKS[attack]
    mounts = [m.format(pub=hostdir) for m in mounts]
    dst = dst.format(pub=hostdir)
    e = attacker_edf(users, tmpdir_short, "attack.toml", mounts_edf(world.ref, mounts))
    before = snapshot(hostdir)
    r = jd.alps("prepare", "--job", "a1", "--user", str(users.attacker.uid), "--environment", e)
    check_nothing_changed(jd, hostdir, before, r, dst)
    assert "job a1" in r.stderr


def test_root_only_existence_not_probed(jd, world, users, tmpdir_short, hostdir):
    """Mounting over a path inside a directory the user cannot search
    fails the same way whether the path exists or not."""
    os.makedirs(os.path.join(hostdir, "secret", "there"))
    errors = []
    for name in ("there", "not-there"):
        dst = f"/h/secret/{name}"
        e = attacker_edf(users, tmpdir_short, "probe.toml",
                         mounts_edf(world.ref, [f"{hostdir}:/h", f"/tmp:{dst}"]))
        r = alps_as(jd, users.attacker, "run", "--environment", e, "--", "true")
        assert r.returncode != 0 and dst in r.stderr, r.stderr
        errors.append(re.sub(r"run-[0-9-]+", "JOB", r.stderr.replace(name, "NAME")))
    assert errors[0] == errors[1], errors
    print(errors[0])
    assert "ermission denied" in errors[0]


def test_root_only_existence_not_probed_by_workdir(jd, world, users, tmpdir_short, hostdir):
    os.makedirs(os.path.join(hostdir, "secret", "there"))
    errors = []
    for name in ("there", "not-there"):
        wd = f"/h/secret/{name}"
        e = attacker_edf(users, tmpdir_short, "probe.toml",
                         mounts_edf(world.ref, [f"{hostdir}:/h"]) + f'workdir = "{wd}"\n')
        r = alps_as(jd, users.attacker, "run", "--environment", e, "--", "true")
        assert r.returncode != 0 and wd in r.stderr, r.stderr
        errors.append(re.sub(r"run-[0-9-]+", "JOB", r.stderr.replace(name, "NAME")))
    assert errors[0] == errors[1], errors
    print(errors[0])
    assert "ermission denied" in errors[0]


def test_legit_mounts_inside_a_bind_still_work(jd, world, users, tmpdir_short, hostdir):
    """Mounting over what exists inside a bind, and creating mount points on
    the container's own root and /tmp, are fine."""
    sub = os.path.join(hostdir, "sub")
    os.makedirs(sub)
    os.chmod(sub, 0o755)
    e = attacker_edf(users, tmpdir_short, "ok.toml",
                     mounts_edf(world.ref, [f"{hostdir}:/h", "/etc:/h/sub",
                                            "/etc:/brand/new/dir", "/etc:/tmp/x/etc"]))
    before = snapshot(hostdir)
    r = alps_as(jd, users.attacker, "run", "--environment", e, "--",
                "sh", "-c", "test -f /h/sub/hostname && test -f /brand/new/dir/hostname && "
                "test -f /tmp/x/etc/hostname && echo ok")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    assert snapshot(hostdir) == before


@pytest.mark.parametrize("which", ["passwd", "group"])
def test_image_etc_file_linked_to_root_only_sysfs(jd, world, users, which):
    with open(world.sysfs_file) as f:
        secret = f.read().strip()
    jd.alps("pull", "--quiet", world.evil[which], check=True)
    r = jd.alps("prepare", "--job", "e1", "--user", str(users.attacker.uid),
                "--image", world.evil[which])
    leaked = []
    for dirpath, _, files in os.walk(os.path.join(jd.run_dir, "jobs")):
        for name in files:
            if name.startswith("file"):
                with open(os.path.join(dirpath, name), errors="replace") as f:
                    text = f.read()
                if secret in text:
                    leaked.append(name)
    if r.returncode == 0:
        jd.alps("release", "--job", "e1", check=True)
    assert not leaked, f"{world.sysfs_file} copied into {leaked}"
    assert r.returncode != 0
    assert f"/etc/{which}" in r.stderr and "symbolic link" in r.stderr, r.stderr
    assert json.loads(jd.alps("--json", "jobs", check=True).stdout)["jobs"] == []
    assert mounts_under(jd.run_dir + "/jobs") == []


def squashfuse_pids_in(pin):
    ns = os.stat(pin).st_ino
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) != "squashfuse":
                continue
            if os.stat(f"/proc/{pid}/ns/mnt").st_ino == ns:
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_squashfuse_gets_no_daemon_environment(jd, world, users, tmpdir_short):
    with open(f"/proc/{jd.pid}/environ", "rb") as f:
        assert SECRET_ENV.encode() in f.read()      # the marker is in the daemon's
    tools = attacker_sqsh(users, tmpdir_short, True)
    e = attacker_edf(users, tmpdir_short, "sq.toml",
                     mounts_edf(world.ref, [f"{tools}:/tools:sqsh"]))
    jd.alps("prepare", "--job", "s1", "--user", str(users.attacker.uid), "--environment", e,
            check=True)
    try:
        pids = squashfuse_pids_in(os.path.join(jd.run_dir, "jobs", "s1", "mnt"))
        assert len(pids) == 1
        # What the attacker reads of its own squashfuse.
        r = users.attacker.run(["cat", f"/proc/{pids[0]}/environ"])
        assert r.returncode == 0, r.stderr
        env = [v for v in r.stdout.split("\0") if v]
        assert not [v for v in env if SECRET_ENV in v or SECRET_VALUE in v], env
        assert [v.split("=")[0] for v in env] == ["PATH"], env
    finally:
        jd.alps("release", "--job", "s1", check=True)


def df_kib(d, job, path):
    r = d.alps("exec", "--job", job, "--", "df", "-k", path, user=NOBODY)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.splitlines()[-1].split()[1])


def test_tmpfs_sizes_configured(daemon_factory, world):
    d = daemon_factory('[jobs]\ntmp_size = "3m"\nshm_size = "5m"\nupper_size = "7m"\n')
    d.alps("pull", "--quiet", world.ref, check=True)
    d.alps("prepare", "--job", "z1", "--user", "65534", "--image", world.ref, check=True)
    try:
        assert df_kib(d, "z1", "/tmp") == 3 * 1024
        assert df_kib(d, "z1", "/dev/shm") == 5 * 1024
        assert df_kib(d, "z1", "/") == 7 * 1024
        # The limit holds.
        r = d.alps("exec", "--job", "z1", "--", "sh", "-c",
                   "cat /bin/busybox /bin/busybox /bin/busybox /bin/busybox > /tmp/big",
                   user=65534)
        assert r.returncode != 0 and "No space left" in r.stderr, r.stderr
    finally:
        d.alps("release", "--job", "z1", check=True)


def test_tmpfs_sizes_default_to_a_share_of_memory(jd, world):
    jd.alps("prepare", "--job", "z2", "--user", "65534", "--image", world.ref, check=True)
    try:
        with open("/proc/meminfo") as f:
            total = int(f.readline().split()[1])
        tmp, shm = df_kib(jd, "z2", "/tmp"), df_kib(jd, "z2", "/dev/shm")
        assert abs(tmp - total * 25 // 100) < total // 100, (tmp, total)
        assert abs(shm - total * 50 // 100) < total // 100, (shm, total)
    finally:
        jd.alps("release", "--job", "z2", check=True)


@pytest.mark.parametrize("value", ["lots", "0", "101%", "5x", ""])
def test_bad_tmpfs_size_refused_at_start(daemon_factory, value):
    d = daemon_factory(f'[jobs]\ntmp_size = "{value}"\n', start=False)
    with pytest.raises(RuntimeError) as e:
        d.start(timeout=10)
    assert "jobs.tmp_size" in str(e.value)
    d.proc = None
