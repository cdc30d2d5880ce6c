"""An EDF is expanded in the job user's world (alps-edf(5)): root's
`alps prepare --user U` (a Slurm prolog) finds a bare EDF name in U's
~/.edf, reads it with U's rights, and expands ${USER} and ${HOME} as U,
never as root.  Real alpsd, real registry, real mounts; root only."""
import os
import subprocess

import pytest

from test_job import bbworld, jd  # noqa: F401  (fixtures)


def _own(path, u, mode):
    os.chown(path, u.uid, u.gid)
    os.chmod(path, mode)


@pytest.fixture
def victim_edf(users, bbworld):  # noqa: F811
    v = users.victim
    edfdir = os.path.join(v.home, ".edf")
    data = os.path.join(v.home, "data")
    for d in (edfdir, data):
        os.makedirs(d, exist_ok=True)
        _own(d, v, 0o700)
    with open(os.path.join(data, "marker"), "w") as f:
        f.write("victim's data\n")
    _own(os.path.join(data, "marker"), v, 0o600)
    path = os.path.join(edfdir, "mine.toml")
    with open(path, "w") as f:
        f.write(f'image = "{bbworld.ref}"\n'
                'mounts = ["${HOME}/data:/data:ro", "${HOME}/data"]\n'
                '[env]\nWHO = "${USER}"\nWHERE = "${HOME}"\nNAME = "${LOGNAME}"\n'
                'ID = "${UID}"\n'
                '[annotations]\ncom.hooks.ssh.authorize_ssh_key = "${HOME}/.ssh/keys"\n')
    _own(path, v, 0o600)     # only the victim (and root) can read it
    yield v
    subprocess.run(["rm", "-rf", edfdir, data])


def test_root_prepare_expands_as_the_user(jd, victim_edf, tmp_path):  # noqa: F811
    v = victim_edf
    # Root's own world: a decoy mine.toml in root's ~/.edf that must not be
    # read, and root's USER/HOME that must not be expanded.
    roothome = tmp_path / "roothome"
    (roothome / ".edf").mkdir(parents=True)
    (roothome / ".edf" / "mine.toml").write_text('image = "decoy/never:1"\n')
    env = {"HOME": str(roothome), "USER": "root", "LOGNAME": "root", "UID": "0"}
    env.pop("EDF_PATH", None)
    os.environ.pop("EDF_PATH", None)
    r = jd.alps("prepare", "--job", "eu1", "--user", v.name, "--environment", "mine",
                env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        r = jd.alps("exec", "--job", "eu1", "--", "sh", "-c",
                    'echo "$WHO|$WHERE|$NAME|$ID"; cat /data/marker; cat ' + v.home +
                    '/data/marker', user=v.uid)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == f"{v.name}|{v.home}|{v.name}|{v.uid}", r.stdout
        assert lines[1:] == ["victim's data", "victim's data"], r.stdout
    finally:
        jd.alps("release", "--job", "eu1", check=True)


def test_root_prepare_undefined_variable_names_the_place(jd, victim_edf):  # noqa: F811
    v = victim_edf
    bad = os.path.join(v.home, ".edf", "bad.toml")
    with open(bad, "w") as f:
        f.write('image = "x/y:1"\nmounts = ["${NOPE}/x:/x"]\n')
    _own(bad, v, 0o600)
    r = jd.alps("prepare", "--job", "eu2", "--user", v.name, "--environment", "bad")
    assert r.returncode != 0
    assert "bad.toml:2:11: mounts[0]: ${NOPE} is not defined" in r.stderr, r.stderr


def test_edf_check_text_and_json(jd, victim_edf):  # noqa: F811
    v = victim_edf
    bad = os.path.join(v.home, "two.toml")
    with open(bad, "w") as f:
        f.write('image = "x/y:1"\nmounts = ["/a:/b:shared", "/c:/d:noexec"]\n')
    _own(bad, v, 0o600)
    r = v.run([_alps(), "edf", "check", "./two.toml"])
    assert r.returncode == 1
    assert ("error: ./two.toml:2:11: mounts[0]: mount flag 'shared': propagation is not "
            "supported") in r.stderr, r.stderr
    assert "error: ./two.toml:2:27: mounts[1]: mount flag 'noexec'" in r.stderr, r.stderr
    good = os.path.join(v.home, "good.toml")
    with open(good, "w") as f:
        f.write('image = "x/y:1"\nmounts = ["${HOME}/data"]\n')
    _own(good, v, 0o600)
    r = v.run([_alps(), "edf", "check", "./good.toml"])
    assert r.returncode == 0, r.stderr
    assert f"mount:      {v.home}/data -> {v.home}/data (rbind)" in r.stdout, r.stdout
    r = v.run([_alps(), "edf", "check", "--json", "./good.toml"])
    assert r.returncode == 0 and r.stdout.lstrip().startswith("{"), r.stdout


def _alps():
    from conftest import binary
    return binary("alps")


def test_default_mounts_checked_at_start(daemon_factory):
    d = daemon_factory(config_text='[jobs]\ndefault_mounts = ["/opt:/opt", "${NOPE}/x:/x"]\n',
                       start=False)
    with pytest.raises(RuntimeError, match=r"jobs\.default_mounts\[1\]: \$\{NOPE\} is not "
                                           r"defined"):
        d.start(timeout=10)
    d = daemon_factory(config_text='[jobs]\ndefault_mounts = ["./rel:/x"]\n', start=False,
                       subdir="rel")
    with pytest.raises(RuntimeError, match=r"jobs\.default_mounts\[0\]: relative source"):
        d.start(timeout=10)


def test_default_mounts_expand_as_the_user(daemon_factory, bbworld, victim_edf):  # noqa: F811
    v = victim_edf
    d = daemon_factory(config_text='[jobs]\ndefault_mounts = ["${HOME}/data:/site/${USER}:ro"]\n')
    d.alps("pull", "--quiet", bbworld.ref, check=True)
    r = d.alps("prepare", "--job", "eu3", "--user", v.name, "--image", bbworld.ref,
               env={"HOME": "/root", "USER": "root"})
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        r = d.alps("exec", "--job", "eu3", "--", "cat", f"/site/{v.name}/marker", user=v.uid)
        assert r.returncode == 0 and r.stdout == "victim's data\n", r.stdout + r.stderr
    finally:
        d.alps("release", "--job", "eu3", check=True)


def test_environment_precedence(jd, victim_edf):  # noqa: F811
    """Decided (alps-edf(5)): host < image < [env]; expansion reads the host
    side only (the job's environment at prepare)."""
    v = victim_edf
    path = os.path.join(v.home, "prec.toml")
    with open(path, "w") as f:
        f.write(f'image = "{jd.ref}"\n[env]\nBOTH = "edf"\nFROMHOST = "${{ATPREP}}"\n')
    _own(path, v, 0o600)
    r = jd.alps("prepare", "--job", "eu4", "--user", v.name, "--environment", path,
                env={"ATPREP": "prep"})
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        r = jd.alps("exec", "--job", "eu4", "--", "sh", "-c",
                    'echo "$HOSTONLY $IMGVAR $BOTH $FROMHOST"', user=v.uid,
                    env={"HOSTONLY": "host", "IMGVAR": "host", "BOTH": "host"})
        assert r.stdout.strip() == "host image edf prep", r.stdout + r.stderr
    finally:
        jd.alps("release", "--job", "eu4", check=True)
