"""`alps exec` attacked and checked as an unprivileged user: a stopped
squashfuse must not freeze the daemon (issue 8 item 2); the exec'd process
is the caller's own: cgroups (item 7), limits, affinity, nice, umask and
oom_score_adj (item 8); release ends every process of the job, whatever
namespaces it made (item 11); the exit codes of issue 14.  Root only."""
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import binary
from test_job import bbworld  # noqa: F401  (the image fixture)

EXEC_TIMEOUT = 3


def job_daemon(daemon_factory, bbworld, config=""):
    d = daemon_factory(config)
    d.alps("pull", "--quiet", bbworld.ref, check=True)
    d.ref = bbworld.ref
    return d


def prepare_for(d, job, user, *args):
    return d.alps("prepare", "--job", job, "--user", str(user.uid), *args, check=True)


def alps_argv(d, *args):
    return [binary("alps"), "--socket", d.socket] + list(args)


def status_answers_within(d, seconds):
    t0 = time.monotonic()
    try:
        r = d.alps("status", timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and time.monotonic() - t0 < seconds


def squashfuse_of(user):
    r = subprocess.run(["pgrep", "-u", str(user.uid), "-x", "squashfuse"],
                       capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


# ---- item 2: a stopped squashfuse -------------------------------------------

def test_stopped_squashfuse_does_not_freeze_daemon(daemon_factory, bbworld, users):
    u = users.attacker
    d = job_daemon(daemon_factory, bbworld, f"[jobs]\nexec_timeout = {EXEC_TIMEOUT}\n")
    # The attacker's own squashfs image, served by the attacker's squashfuse.
    src = os.path.join(u.home, "sq")
    u.run(["mkdir", "-p", src], check=True)
    u.run(["sh", "-c", f"printf '#!/bin/sh\\necho hi\\n' > {src}/prog; chmod 755 {src}/prog"],
          check=True)
    img = os.path.join(u.home, "mine.sqsh")
    u.run(["mksquashfs", src, img, "-quiet", "-noappend"], check=True)
    edf = os.path.join(u.home, "e.toml")
    u.run(["sh", "-c", f"printf 'image = \"{d.ref}\"\\nmounts = [\"{img}:/data:sqsh\"]\\n' > {edf}"],
          check=True)
    prepare_for(d, "901", u, "--environment", edf)
    fuse = squashfuse_of(u)
    assert fuse, "no squashfuse runs for the user"
    try:
        for p in fuse:
            u.run(["kill", "-STOP", str(p)], check=True)
        t0 = time.monotonic()
        stuck = subprocess.Popen(alps_argv(d, "exec", "--job", "901", "--", "/data/prog"),
                                 user=u.uid, group=u.gid, extra_groups=[],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        # Everyone else is still served while the exec hangs in the FUSE lookup.
        assert status_answers_within(d, 2.0), "the daemon froze behind a stopped squashfuse"
        try:
            out, errtext = stuck.communicate(timeout=EXEC_TIMEOUT + 15)
        except subprocess.TimeoutExpired:
            stuck.kill()
            stuck.communicate()
            pytest.fail("the stuck exec never ended")
        assert time.monotonic() - t0 < EXEC_TIMEOUT + 10
        assert stuck.returncode == 125, (stuck.returncode, errtext)
        assert "did not start within" in errtext, errtext
    finally:
        for p in fuse:
            subprocess.run(["kill", "-CONT", str(p)], capture_output=True)
    d.alps("release", "--job", "901", check=True)


# ---- items 7 and 8: the caller's cgroups, limits, affinity, nice, umask ------

def v1_hierarchies():
    """Mount points of the v1 hierarchies with a controller named."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ")
            fstype, _src, opts = right.split()[:3]
            if fstype == "cgroup":
                for c in ("memory", "pids"):
                    if c in opts.split(","):
                        out[c] = left.split()[4]
    return out


def unified_root():
    if os.path.exists("/sys/fs/cgroup/cgroup.procs") and not os.path.isdir(
            "/sys/fs/cgroup/unified"):
        return "/sys/fs/cgroup"
    return "/sys/fs/cgroup/unified"


@pytest.fixture
def test_cgroups():
    name = f"alps-test-{os.getpid()}"
    dirs = {"unified": os.path.join(unified_root(), name)}
    for c, mp in v1_hierarchies().items():
        dirs[c] = os.path.join(mp, name)
    for p in dirs.values():
        os.makedirs(p, exist_ok=True)
    yield name, dirs
    for p in dirs.values():
        for sub in sorted((os.path.join(r, x) for r, ds, _ in os.walk(p) for x in ds),
                          key=len, reverse=True):
            os.rmdir(sub)
        for _ in range(50):
            try:
                os.rmdir(p)
                break
            except OSError:
                time.sleep(0.1)


def test_exec_is_the_callers_own(daemon_factory, bbworld, users, test_cgroups):
    u = users.victim
    name, dirs = test_cgroups
    d = job_daemon(daemon_factory, bbworld)
    prepare_for(d, "902", u, "--image", d.ref)
    joins = "; ".join(f"echo $$ > {p}/cgroup.procs" for p in dirs.values())
    # Root puts itself in the test's cgroups, sets limits, then becomes the
    # user, who runs alps exec with its own affinity, nice value and umask.
    script = (f"{joins}; ulimit -n 256; echo 345 > /proc/self/oom_score_adj; "
              f"exec setpriv --reuid {u.uid} --regid {u.gid} --clear-groups "
              "taskset -c 1 nice -n 7 sh -c 'umask 027; exec \"$@\"' sh \"$@\"")
    show = ("cat /proc/self/cgroup /proc/self/limits /proc/self/status "
            "/proc/self/oom_score_adj; echo stat: $(cat /proc/self/stat)")
    r = subprocess.run(["sh", "-c", script, "sh"] +
                       alps_argv(d, "exec", "--job", "902", "--", "sh", "-c", show),
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, **u.env()))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    cg = dict(re.findall(r"^\d+:([^:]*):(.*)$", out, re.M))
    # The unified hierarchy: the job's cgroup below the caller's own.
    assert cg[""].startswith(f"/{name}/"), out
    for c in dirs:
        if c != "unified":
            assert cg[c] == f"/{name}", (c, out)
    assert re.search(r"^Max open files\s+256\s+256\s", out, re.M), out
    assert re.search(r"^Cpus_allowed_list:\s+1$", out, re.M), out
    assert re.search(r"^Umask:\s+0027$", out, re.M), out
    assert re.search(r"^345$", out, re.M), out
    stat = re.search(r"^stat: (.*)$", out, re.M).group(1)
    nice = int(stat[stat.rindex(")") + 2:].split()[16])
    assert nice == 7, stat
    d.alps("release", "--job", "902", check=True)


def test_exec_refused_when_the_cgroup_cannot_be_joined(daemon_factory, bbworld, users,
                                                      test_cgroups):
    u = users.victim
    name, dirs = test_cgroups
    d = job_daemon(daemon_factory, bbworld)
    prepare_for(d, "903", u, "--image", d.ref)
    # The caller's unified cgroup may have no child: the job's cgroup
    # cannot be made below it, so the command must not run at all (it
    # would otherwise run outside the caller's cgroup, or in none of the job).
    uni = dirs["unified"]
    with open(f"{uni}/cgroup.max.descendants", "w") as f:
        f.write("0")
    script = (f"echo $$ > {uni}/cgroup.procs; "
              f"exec setpriv --reuid {u.uid} --regid {u.gid} --clear-groups \"$@\"")
    r = subprocess.run(["sh", "-c", script, "sh"] +
                       alps_argv(d, "exec", "--job", "903", "--", "echo", "ran"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 125 and "ran" not in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert "cgroup" in r.stderr, r.stderr
    d.alps("release", "--job", "903", check=True)


# ---- item 11: release ends what unshared itself ------------------------------

def loops_of(run_dir):
    """The loop devices of the daemon's layer mounts (below its run dir).
    Their backing_file names no store path (the store attaches layers
    through a detached mount), so they are found by the mount table."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point, source = left.split()[4], right.split()[1]
            if point.startswith(run_dir + "/") and source.startswith("/dev/loop"):
                out.append(os.path.basename(source))
    return out


def attached(loops):
    return [l for l in loops if os.path.exists(f"/sys/block/{l}/loop/backing_file")]


def test_release_ends_unshared_processes(daemon_factory, bbworld, users):
    u = users.victim
    d = job_daemon(daemon_factory, bbworld, "[jobs]\nrelease_grace = 1\n")
    prepare_for(d, "904", u, "--image", d.ref)
    r = d.alps("exec", "--job", "904", "--", "sh", "-c",
               "busybox unshare -Urm sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
               user=u.uid)
    assert r.returncode == 0, r.stderr
    time.sleep(0.5)
    pids = subprocess.run(["pgrep", "-u", str(u.uid), "-x", "sleep"], capture_output=True,
                          text=True).stdout.split()
    assert pids, "the unshared process did not start"
    loops = loops_of(d.run_dir)
    assert loops
    d.alps("release", "--job", "904", check=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    for p in alive:
        os.kill(int(p), signal.SIGKILL)
    assert not alive, "a process of the job survived release"
    assert attached(loops) == [], "loop devices still attached after release"


def test_release_terms_then_kills(daemon_factory, bbworld, users):
    u = users.victim
    d = job_daemon(daemon_factory, bbworld, "[jobs]\nrelease_grace = 2\n")
    prepare_for(d, "905", u, "--image", d.ref)
    # One process ends on SIGTERM, the other ignores it and needs SIGKILL.
    polite = subprocess.Popen(alps_argv(d, "exec", "--job", "905", "--", "sleep", "300"),
                              user=u.uid, stderr=subprocess.PIPE, text=True)
    stubborn = subprocess.Popen(alps_argv(d, "exec", "--job", "905", "--", "sh", "-c",
                                          "trap '' TERM; sleep 300 & wait; wait"),
                                user=u.uid, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    t0 = time.monotonic()
    d.alps("release", "--job", "905", check=True)
    took = time.monotonic() - t0
    assert polite.wait(20) == 128 + signal.SIGTERM
    assert stubborn.wait(20) == 128 + signal.SIGKILL
    assert 1.5 < took < 10, took
    assert "released" in polite.stderr.read()


# ---- issue 14: exit codes ----------------------------------------------------

def test_exit_codes(daemon_factory, bbworld, users):
    u = users.victim
    d = job_daemon(daemon_factory, bbworld)
    prepare_for(d, "906", u, "--image", d.ref)

    def ex(job, *cmd, user=u):
        return d.alps("exec", "--job", job, "--", *cmd, user=user.uid)
    assert ex("906", "true").returncode == 0
    assert ex("906", "sh", "-c", "exit 42").returncode == 42
    r = ex("906", "no-such-command")
    assert r.returncode == 127 and "not found" in r.stderr, (r.returncode, r.stderr)
    r = ex("906", "/etc/os-release")
    assert r.returncode == 126, (r.returncode, r.stderr)
    r = ex("999", "true")
    assert r.returncode == 125 and "no such job" in r.stderr.lower(), (r.returncode, r.stderr)
    r = ex("906", "true", user=users.attacker)
    assert r.returncode == 125 and "may not enter" in r.stderr, (r.returncode, r.stderr)
    r = d.alps("run", "/nonexistent/image.sqsh", "--", "true", user=u.uid)
    assert r.returncode == 125, (r.returncode, r.stderr)
    d.alps("release", "--job", "906", check=True)


# ---- the helper root runs ----------------------------------------------------

def test_callers_environment_never_reaches_alps_enter(daemon_factory, bbworld, users,
                                                      tmpdir_short):
    # alps-enter runs as root: the caller's environment is passed to the
    # command inside its request, never as alps-enter's own environment,
    # where the dynamic loader would act on it as root.
    u = users.victim
    d = job_daemon(daemon_factory, bbworld)
    prepare_for(d, "907", u, "--image", d.ref)
    r = d.alps("exec", "--job", "907", "--", "sh", "-c", "echo $LD_PRELOAD; ls /proc/self/fd",
               user=u.uid, env={"LD_PRELOAD": "/nonexistent/evil.so",
                                "LD_LIBRARY_PATH": "/nonexistent"})
    assert r.returncode == 0, r.stderr
    # One complaint of the loader: the alps client's own (it is dynamic and
    # runs as the user); alps-enter would add a second, busybox is static.
    assert r.stderr.count("ld.so") == 1, r.stderr
    # The command still gets it (its own business), and only its stdio.
    lines = r.stdout.split()
    assert lines[0] == "/nonexistent/evil.so"
    assert lines[1:] == ["0", "1", "2", "3"], r.stdout     # 3: ls's own directory
    d.alps("release", "--job", "907", check=True)
