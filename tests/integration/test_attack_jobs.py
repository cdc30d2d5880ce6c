"""Attacks on one-shot 'alps run' jobs and on the daemon's loop through the
store: an unprivileged user floods the node with run jobs, leaves them
behind with a SIGKILLed client or across a daemon restart, or keeps them
forever; a locked alps.db must not stall requests that do not need it.
Root only (real mounts), with the session's unprivileged test users."""
import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

import images
import registry_fixture as rf
from conftest import binary, mounts_under


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rf.require_tools("docker-registry", "umoci", "skopeo", "busybox")
    if os.geteuid() != 0:
        pytest.skip("job containers need root")
    w = type("World", (), {})()
    w.dir = tmp_path_factory.mktemp("attackjobs")
    os.chmod(w.dir, 0o755)
    w.registry = rf.Registry(w.dir).start()
    layout = rf.build_image(w.dir, "bb", [{"etc/base": b"base\n"}],
                            config={"config.env": ["PATH=/bin:/usr/bin"]})
    images.umoci_modify(layout, "bb", w.dir, images.busybox_root, "bb")
    rf.push(layout, "bb", w.registry.host, "test/bb", "v1")
    w.ref = f"{w.registry.host}/test/bb:v1"
    yield w
    w.registry.stop()


def start(daemon_factory, world, config=""):
    d = daemon_factory(config)
    d.alps("pull", "--quiet", world.ref, check=True)
    return d


def alps_bg(d, user, *args):
    """alps ARGS as user, in the background.  Output goes to a file: the
    command in the job holds the client's stdout and stderr, so a pipe
    would not see its end when the client's comes."""
    out = open(os.path.join(d.dir, f"bg-{time.monotonic_ns()}.out"), "w+")
    p = subprocess.Popen([binary("alps"), "--socket", d.socket] + list(args),
                         user=user.uid, group=user.gid, extra_groups=[], cwd=user.home,
                         env=dict(os.environ, **user.env()), stdout=out, stderr=out)
    p.out = out
    return p


def output(p):
    p.out.seek(0)
    return p.out.read()


def run_jobs(d, uid=None):
    jobs = json.loads(d.alps("--json", "jobs", check=True).stdout)["jobs"]
    return [j for j in jobs if j["job"].startswith("run-") and (uid is None or j["uid"] == uid)]


def wait_for(what, cond, timeout=30, d=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    log = d.read_log()[-4000:] if d else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


def sleepers(uid, tag):
    """pids of `sleep TAG` processes of uid (the commands run in the jobs)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            st = os.stat(f"/proc/{pid}")
        except OSError:
            continue
        if st.st_uid == uid and argv[:2] == [b"sleep", tag.encode()]:
            out.append(int(pid))
    return out


def kill_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(30)
        p.out.close()


def test_run_quota_stops_the_flood_not_others(daemon_factory, world, users):
    d = start(daemon_factory, world, "[jobs]\nmax_run_jobs_per_user = 3\n")
    att = users.attacker
    procs = [alps_bg(d, att, "run", world.ref, "--", "sleep", "301") for _ in range(3)]
    try:
        wait_for("3 run jobs of the attacker", lambda: len(run_jobs(d, att.uid)) == 3)
        t0 = time.monotonic()
        r = att.run([binary("alps"), "--socket", d.socket, "run", world.ref, "--", "true"],
                    timeout=60)
        assert r.returncode != 0, r.stdout
        assert "max_run_jobs_per_user" in r.stderr and "3" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 5
        assert len(run_jobs(d, att.uid)) == 3
        # Another user is not affected by the attacker's count.
        r = users.victim.run([binary("alps"), "--socket", d.socket, "run", world.ref, "--",
                              "echo", "victim-ran"], timeout=60)
        assert r.returncode == 0 and "victim-ran" in r.stdout, r.stderr
    finally:
        kill_all(procs)
    # The attacker's clients are gone: so are their jobs, and the quota frees.
    wait_for("the attacker's jobs released", lambda: run_jobs(d, att.uid) == [])
    r = att.run([binary("alps"), "--socket", d.socket, "run", world.ref, "--", "true"],
                timeout=60)
    assert r.returncode == 0, r.stderr


def test_sigkilled_run_client_leaves_nothing(daemon_factory, world, users):
    d = start(daemon_factory, world)
    att = users.attacker
    p = alps_bg(d, att, "run", world.ref, "--", "sleep", "302")
    try:
        wait_for("the run job", lambda: len(run_jobs(d, att.uid)) == 1)
        wait_for("its command", lambda: sleepers(att.uid, "302"))
        # Another user cannot release it, nor make it escape its end by trying.
        job = run_jobs(d, att.uid)[0]["job"]
        r = users.victim.run([binary("alps"), "--socket", d.socket, "release", "--job", job],
                             timeout=60)
        assert r.returncode != 0 and "owner of an 'alps run' job" in r.stderr, r.stderr
        t0 = time.monotonic()
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        wait_for("the job released", lambda: run_jobs(d, att.uid) == [], timeout=20,
                 d=d)
        wait_for("its command killed", lambda: not sleepers(att.uid, "302"), timeout=20)
        assert time.monotonic() - t0 < 20
        assert mounts_under(d.run_dir + "/jobs") == []
        assert "its client's connection closed" in d.read_log()
    finally:
        kill_all([p])


def test_restart_releases_run_job_whose_client_died(daemon_factory, world, users):
    d = start(daemon_factory, world)
    att = users.attacker
    p = alps_bg(d, att, "run", world.ref, "--", "sleep", "303")
    try:
        wait_for("the run job", lambda: len(run_jobs(d, att.uid)) == 1)
        wait_for("its command", lambda: sleepers(att.uid, "303"))
        # The daemon dies; its client (which would wait for its command)
        # dies too while no daemon is there to release the job: the job is
        # left to the next start.
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait()
        d.log.close()
        d.proc = None
        p.kill()
        p.wait(30)
        assert sleepers(att.uid, "303"), "the command should outlive the daemon"
        d.start()
        wait_for("the orphaned job released", lambda: run_jobs(d, att.uid) == [], timeout=30,
                 d=d)
        wait_for("its command killed", lambda: not sleepers(att.uid, "303"), timeout=20)
        assert mounts_under(d.run_dir + "/jobs") == []
        assert "its client went while alpsd was down" in d.read_log()
    finally:
        kill_all([p])


def test_restart_keeps_run_job_whose_client_lives(daemon_factory, world, users):
    """The other side of the restart check: a live owner keeps its job (until
    that process ends)."""
    d = start(daemon_factory, world)
    # A client that prepares a run job and stays alive without a connection
    # to the new daemon: a real one is the simplest to hold on to.
    att = users.attacker
    p = alps_bg(d, att, "run", world.ref, "--", "sleep", "304")
    try:
        wait_for("the run job", lambda: len(run_jobs(d, att.uid)) == 1)
        wait_for("its command", lambda: sleepers(att.uid, "304"))
        os.kill(p.pid, signal.SIGSTOP)      # alive, frozen: it cannot act on the EOF
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait()
        d.log.close()
        d.proc = None
        d.start()
        time.sleep(2)
        assert len(run_jobs(d, att.uid)) == 1, "a live owner's job was released:\n" + \
            d.read_log()[-4000:]
        os.kill(p.pid, signal.SIGKILL)
        wait_for("the job released once its owner is gone",
                 lambda: run_jobs(d, att.uid) == [], timeout=20,
                 d=d)
    finally:
        kill_all([p])


def test_run_ttl_reaps_old_run_jobs(daemon_factory, world, users):
    d = start(daemon_factory, world, "[jobs]\nrun_ttl = 2\n")
    att = users.attacker
    p = alps_bg(d, att, "run", world.ref, "--", "sleep", "305")
    try:
        wait_for("the run job", lambda: len(run_jobs(d, att.uid)) == 1)
        t0 = time.monotonic()
        wait_for("the job reaped", lambda: run_jobs(d, att.uid) == [], timeout=20,
                 d=d)
        assert time.monotonic() - t0 < 10
        # Release ends what runs: SIGTERM first, SIGKILL after jobs.release_grace.
        assert p.wait(20) in (128 + signal.SIGTERM, 128 + signal.SIGKILL), output(p)
        assert not sleepers(att.uid, "305")
        assert "older than jobs.run_ttl" in d.read_log()
    finally:
        kill_all([p])


def hold_store_lock(d):
    """Take alps.db's write lock (the store is in WAL mode: readers go on,
    every write waits for sqlite's busy timeout)."""
    db = sqlite3.connect(os.path.join(d.state_dir, "alps.db"), isolation_level=None,
                         timeout=10)
    db.execute("BEGIN EXCLUSIVE")
    db.execute("UPDATE stats SET value = value WHERE 0")
    return db


def test_status_answers_while_the_store_is_locked(daemon_factory, world):
    d = start(daemon_factory, world)
    db = hold_store_lock(d)
    try:
        prep = subprocess.Popen([binary("alps"), "--socket", d.socket, "prepare", "--job",
                                 "locked", "--user", "65534", "--image", world.ref],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lister = subprocess.Popen([binary("alps"), "--socket", d.socket, "jobs"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)         # the prepare is in the daemon, its insert waiting
        for _ in range(3):
            t0 = time.monotonic()
            r = d.alps("status", timeout=2)
            assert r.returncode == 0, r.stderr
            assert time.monotonic() - t0 < 2
        assert prep.poll() is None, "the prepare did not wait on the lock"
    finally:
        db.close()
    out, err = prep.communicate(timeout=60)
    assert prep.returncode == 0 or "locked" in err, err
    lister.communicate(timeout=60)
    # Once the lock is gone the store serves again.
    d.alps("jobs", check=True)
    d.alps("release", "--job", "locked", check=True)
    assert mounts_under(d.run_dir + "/jobs") == []


def test_prepare_says_what_it_cannot_honour(daemon_factory, world):
    d = start(daemon_factory, world)
    # --tasks 0 means nothing: refused by the client with a usage error.
    r = d.alps("prepare", "--job", "t0", "--user", "65534", "--image", world.ref,
               "--tasks", "0")
    assert r.returncode == 2 and "--tasks must be at least 1" in r.stderr, r.stderr
    # More tasks than the node has cores: an error that says why.
    r = d.alps("prepare", "--job", "t1", "--user", "65534", "--image", world.ref,
               "--tasks", "100000")
    assert r.returncode != 0 and "cannot be placed" in r.stderr and "cores" in r.stderr, \
        r.stderr
    assert json.loads(d.alps("--json", "jobs", check=True).stdout)["jobs"] == []
    # --nodes with the fabric off: prepared, with a warning (printed, and in JSON).
    r = d.alps("prepare", "--job", "t2", "--user", "65534", "--image", world.ref,
               "--nodes", "n1,n2", "--tasks", "1")
    assert r.returncode == 0, r.stderr
    assert "warning: --nodes is ignored: the fabric is off" in r.stderr, r.stderr
    d.alps("release", "--job", "t2", check=True)
    r = d.alps("--json", "prepare", "--job", "t3", "--user", "65534", "--image", world.ref,
               "--nodes", "n1")
    j = json.loads(r.stdout)
    assert j["ok"] and any("fabric is off" in w for w in j["warnings"]), j
    d.alps("release", "--job", "t3", check=True)
